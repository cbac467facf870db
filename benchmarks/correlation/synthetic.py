"""Synthetic human-judgment benchmark on the synthclip checkpoint and its rendered scenes.

For each held-out scene, candidate captions get 0 to ``max_wrong`` wrong
attributes (``scenes.corrupt``), and the "human" rating is the number of
correct attributes (6 minus the number wrong). References are other correct
captions of the same scene, written with other templates and synonyms. The
report gives Kendall τ-c, τ-b and Pearson r for every metric.

Usage:
    python benchmarks/correlation/synthetic.py --small --out synthetic.json
    python benchmarks/correlation/synthetic.py --scenes 500 --seed 0 --markdown synthetic.md
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Optional

import numpy as np

if __package__ in (None, ""):
    # Run as a script: make the `correlation` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from correlation.loaders import RatedCaption  # noqa: E402
from correlation.metrics import correlations  # noqa: E402
from correlation.report import correlation_table, environment, write_json  # noqa: E402
from correlation.scoring import METRICS, BenchmarkScorer  # noqa: E402
from i0tscore.fileio import atomic_write  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SYNTHCLIP = REPO / "tests" / "assets" / "synthclip"
SMALL = {"scenes": 32, "max_wrong": 3, "references": 3}
"""Settings of --small: 32 scenes × 4 candidates = 128 rated captions."""


def load_scenes_module(path: Path) -> ModuleType:
    """Import the synthclip scene generator from its file, without installing it."""
    if not path.is_file():
        raise FileNotFoundError(f"scene generator not found at {path}; pass --scenes-module")
    spec = importlib.util.spec_from_file_location("synthclip_scenes", path)
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolves string annotations through sys.modules, so register first.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_rows(scenes: ModuleType, n_scenes: int, max_wrong: int, n_references: int, seed: int) -> tuple[list[RatedCaption], dict]:
    """Build the rated captions and the rendered images of ``n_scenes`` held-out scenes.

    Returns:
        The rows (``image`` is a key into the image dict) and key → PIL image.
    """
    if not 0 < max_wrong <= len(scenes.ATTRIBUTES):
        raise ValueError(f"max_wrong must be 1 to {len(scenes.ATTRIBUTES)}, got {max_wrong}")
    split = scenes.make_split("heldout", n_scenes, seed=seed)
    rows, images = [], {}
    for index, scene in enumerate(split.scenes):
        key = f"heldout-{seed}-{index}"
        images[key] = split.images[index]
        references = _references(scenes, scene, split.captions[index], n_references, (seed, index))
        for n_wrong in range(max_wrong + 1):
            changed = scenes.corrupt(scene, n_wrong, np.random.default_rng([seed, index, n_wrong]))
            # The same caption seed repeats the template and synonyms of the correct caption.
            text = scenes.caption(changed, np.random.default_rng(split.caption_seeds[index]))
            rating = scenes.count_correct(changed, scene)
            rows.append(RatedCaption(key, text, references, float(rating), key))
    return rows, images


def _references(scenes: ModuleType, scene, correct: str, count: int, seed: tuple[int, int]) -> tuple[str, ...]:
    """Correct captions of ``scene`` other than ``correct``, from fresh caption seeds."""
    references: list[str] = []
    for draw in range(100 * count):
        text = scenes.caption(scene, np.random.default_rng([*seed, 1_000_000 + draw]))
        if text != correct and text not in references:
            references.append(text)
        if len(references) == count:
            return tuple(references)
    raise RuntimeError(f"could not draw {count} distinct references for scene {seed}")


def run(model: Path, n_scenes: int, max_wrong: int, n_references: int, seed: int, scenes_module: Path, device: Optional[str]) -> dict:
    """Score the synthetic benchmark and return the JSON report."""
    start = time.perf_counter()
    scenes = load_scenes_module(scenes_module)
    rows, images = build_rows(scenes, n_scenes, max_wrong, n_references, seed)
    keys = [row.image for row in rows]
    captions = [row.candidate for row in rows]
    references = [list(row.references) for row in rows]

    scorer = BenchmarkScorer(str(model), stats="auto", device=device)
    scorer.encode(list(images.values()), captions + [ref for refs in references for ref in refs], image_keys=list(images))
    scorer.fix_statistics(keys, captions)
    scores = scorer.score(keys, captions, references)
    ratings = [row.rating for row in rows]
    results = {metric: correlations(scores[metric], ratings) for metric in METRICS}
    return {
        "benchmark": "synthetic",
        "settings": {
            "model": str(model),
            "scenes": n_scenes,
            "max_wrong": max_wrong,
            "references": n_references,
            "seed": seed,
            "split": "heldout",
            "rows": len(rows),
        },
        "statistics": scorer.stats_mode,
        "signatures": scorer.signatures(),
        "environment": environment(),
        "results": results,
        "mean_score_by_rating": _means_by_rating(scores, ratings),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _means_by_rating(scores: dict[str, np.ndarray], ratings: list[float]) -> dict[str, dict[str, float]]:
    ratings_array = np.asarray(ratings)
    return {
        metric: {f"{rating:g}": float(values[ratings_array == rating].mean()) for rating in sorted(set(ratings), reverse=True)}
        for metric, values in scores.items()
    }


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SYNTHCLIP / "model", help="CLIP checkpoint folder (default: the synthclip checkpoint)")
    parser.add_argument("--scenes-module", type=Path, default=SYNTHCLIP / "scenes.py", help="the synthclip scene generator")
    parser.add_argument("--scenes", type=int, default=500, help="number of held-out scenes (default: 500)")
    parser.add_argument("--max-wrong", type=int, default=4, help="candidates per scene have 0 to this many wrong attributes (default: 4)")
    parser.add_argument("--references", type=int, default=4, help="reference captions per scene (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the corruptions (default: 0)")
    parser.add_argument("--small", action="store_true", help="32 scenes, 0-3 wrong attributes, 3 references: a CI run of a few seconds")
    parser.add_argument("--device", default=None, help="cpu, cuda, or unset for the first available")
    parser.add_argument("--out", type=Path, default=None, help="JSON report file (default: standard output)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    if args.small:
        args.scenes, args.max_wrong, args.references = SMALL["scenes"], SMALL["max_wrong"], SMALL["references"]
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if not (args.model / "config.json").is_file():
        print(f"error: no CLIP checkpoint at {args.model} (config.json not found). Train it with "
              f"`python tests/assets/synthclip/train.py --out {args.model}` or pass --model.", file=sys.stderr)
        return 2
    report = run(args.model, args.scenes, args.max_wrong, args.references, args.seed, args.scenes_module, args.device)
    table = correlation_table(report["results"], "tau_c", published={})
    header = (f"Synthetic benchmark: {report['settings']['rows']} captions of {args.scenes} held-out scenes, "
              f"seed {args.seed}, statistics: {report['statistics']}.\n\n")
    if args.markdown is not None:
        atomic_write(args.markdown, header + table)
    print(header + table, file=sys.stderr)
    write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
