"""Score a COCO captioning results file with I0T-S and CLIP-S, beside BLEU and CIDEr from pycocoevalcap.

Reads a results file ``[{"image_id": ..., "caption": ...}]`` (one caption per
image) and a COCO captions annotations file with the references and image file
names. The CLIP-based scores see the raw captions. BLEU and CIDEr see the
captions after pycocoevalcap's PTB tokenization, as in ``COCOEvalCap``. They
are computed only when pycocoevalcap is installed and Java is on PATH, because
its tokenizer runs Stanford CoreNLP. Otherwise the script prints the reason and
the CLIP-based columns alone.

Run offline with a local checkpoint and statistics built for it::

    python examples/coco_eval.py --model tests/assets/synthclip/model

or set ``I0TSCORE_MODEL`` (and ``I0TSCORE_STATS``). The defaults score
``examples/coco_results.json`` against ``examples/coco_annotations.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Optional

from i0tscore import I0TScore
from i0tscore.integrations.coco import I0TScorer

EXAMPLES = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=EXAMPLES / "coco_results.json", help="COCO results JSON file.")
    parser.add_argument(
        "--annotations", type=Path, default=EXAMPLES / "coco_annotations.json", help="COCO captions annotations JSON file."
    )
    parser.add_argument("--images", type=Path, default=EXAMPLES / "images", help="folder with the images named in the annotations.")
    parser.add_argument(
        "--model",
        default=os.environ.get("I0TSCORE_MODEL", "openai/clip-vit-base-patch32"),
        help="CLIP hub id or local checkpoint folder (default: $I0TSCORE_MODEL or openai/clip-vit-base-patch32).",
    )
    parser.add_argument(
        "--stats",
        default=os.environ.get("I0TSCORE_STATS"),
        help="statistics file, shipped name or 'corpus' (default: $I0TSCORE_STATS, else the statistics shipped for the model).",
    )
    parser.add_argument("--device", default=None, help="device for the CLIP model (default: the first available).")
    return parser.parse_args()


def read_coco(results_path: Path, annotations_path: Path, images: Path) -> tuple[dict, dict, dict]:
    """Build ``gts``, ``res`` and the image paths, keyed by image id, in the order of the results file."""
    annotations = json.loads(annotations_path.read_text(encoding="utf-8"))
    results = json.loads(results_path.read_text(encoding="utf-8"))

    files = {image["id"]: images / image["file_name"] for image in annotations["images"]}
    references = defaultdict(list)
    for annotation in annotations["annotations"]:
        references[annotation["image_id"]].append(annotation["caption"])

    res: dict = {}
    for entry in results:
        image_id = entry["image_id"]
        if image_id in res:
            raise SystemExit(f"{results_path}: image id {image_id!r} has more than one caption; COCO evaluation scores one per image.")
        if not references.get(image_id):
            raise SystemExit(f"{results_path}: image id {image_id!r} has no reference captions in {annotations_path}.")
        res[image_id] = [entry["caption"]]
    gts = {image_id: references[image_id] for image_id in res}
    return gts, res, files


def coco_scores(gts: dict, res: dict) -> Optional[dict]:
    """BLEU-1..4 and CIDEr from pycocoevalcap, or None with the reason printed."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        print("pycocoevalcap is not installed, so BLEU and CIDEr are skipped (pip install pycocoevalcap).")
        return None
    if shutil.which("java") is None:
        print("Java is not on PATH, so pycocoevalcap's PTB tokenizer cannot run; BLEU and CIDEr are skipped.")
        return None

    tokenizer = PTBTokenizer()
    gts_tokens = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in gts.items()})
    res_tokens = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in res.items()})
    # The tokenizer returns its own dicts; put them back in the order of gts.
    gts_tokens = {image_id: gts_tokens[image_id] for image_id in gts}
    res_tokens = {image_id: res_tokens[image_id] for image_id in gts}

    columns = {}
    bleu, bleu_items = Bleu(4).compute_score(gts_tokens, res_tokens, verbose=0)
    for n in range(4):
        columns[f"BLEU-{n + 1}"] = (bleu[n], list(bleu_items[n]))
    cider, cider_items = Cider().compute_score(gts_tokens, res_tokens)
    columns["CIDEr"] = (cider, list(cider_items))
    return columns


def main() -> None:
    args = parse_args()
    gts, res, files = read_coco(args.results, args.annotations, args.images)

    scorer = I0TScore(args.model, stats=args.stats, device=args.device, progress=False)
    columns = {}
    for score in ("i0t_s", "clip_s", "ref_i0t_s", "ref_clip_s"):
        coco_scorer = I0TScorer(files, scorer=scorer, score=score)
        mean, per_item = coco_scorer.compute_score(gts, res)
        columns[coco_scorer.method()] = (mean, list(per_item))

    text_scores = coco_scores(gts, res)
    if text_scores:
        columns.update(text_scores)

    names = list(columns)
    width = max(len(name) for name in names) + 2
    print(f"\n{'image id':<10}" + "".join(f"{name:>{width}}" for name in names))
    for row, image_id in enumerate(gts):
        print(f"{image_id!s:<10}" + "".join(f"{columns[name][1][row]:>{width}.4f}" for name in names))
    print(f"{'mean':<10}" + "".join(f"{columns[name][0]:>{width}.4f}" for name in names))
    print(f"\n{scorer.signature}")


if __name__ == "__main__":
    main()
