"""Track I0T-S and CLIP-S once per epoch of a toy training loop with ``I0TScoreMetric``.

The "captioning model" here is a table of logits that picks, for each of the
eight example photos, one caption out of the pool of all eight candidate
captions. It learns the right pairing with cross-entropy, and after every epoch
the metric scores the captions it currently picks. The metric loads the CLIP
model once and is reset between epochs.

Run offline with the small checkpoint committed to this repository::

    python examples/training_loop.py --model tests/assets/synthclip/model

or set ``I0TSCORE_MODEL`` (and ``I0TSCORE_STATS`` for a statistics file).
Without either, the script uses openai/clip-vit-base-patch32 from the Hugging
Face hub, which needs statistics built for it (see the README). The synthetic
checkpoint was trained on rendered scenes, so its scores on these photos show
only that the loop works, not caption quality.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from i0tscore.cache import EmbeddingCache
from i0tscore.integrations.torchmetrics import I0TScoreMetric

EXAMPLES = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=os.environ.get("I0TSCORE_MODEL", "openai/clip-vit-base-patch32"),
        help="CLIP hub id or local checkpoint folder (default: $I0TSCORE_MODEL or openai/clip-vit-base-patch32).",
    )
    parser.add_argument(
        "--stats",
        default=os.environ.get("I0TSCORE_STATS"),
        help="statistics file or shipped name (default: $I0TSCORE_STATS, else the statistics shipped for the model).",
    )
    parser.add_argument("--epochs", type=int, default=5, help="number of training epochs (default: 5).")
    parser.add_argument("--device", default="cpu", help="device for the CLIP model (default: cpu).")
    return parser.parse_args()


def load_pairs() -> tuple[list[Path], list[str]]:
    """Read the example photos and their candidate captions, matched by image id."""
    annotations = json.loads((EXAMPLES / "coco_annotations.json").read_text(encoding="utf-8"))
    results = json.loads((EXAMPLES / "coco_results.json").read_text(encoding="utf-8"))
    files = {image["id"]: EXAMPLES / "images" / image["file_name"] for image in annotations["images"]}
    images = [files[entry["image_id"]] for entry in results]
    captions = [entry["caption"] for entry in results]
    return images, captions


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    images, captions = load_pairs()
    targets = torch.arange(len(images))

    # One row of logits per image over the whole caption pool; random at first.
    logits = torch.nn.Parameter(torch.randn(len(images), len(captions)))
    optimizer = torch.optim.SGD([logits], lr=0.5)
    # The same validation images come back every epoch: an in-memory cache encodes
    # each of them once, in the first epoch.
    metric = I0TScoreMetric(args.model, stats=args.stats, device=args.device, progress=False, cache=EmbeddingCache())

    print(f"{'epoch':>5}  {'loss':>7}  {'correct':>7}  {'I0T-S':>7}  {'CLIP-S':>7}")
    for epoch in range(1, args.epochs + 1):
        for _ in range(10):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(logits, targets)
            loss.backward()
            optimizer.step()

        with torch.no_grad():
            picked = logits.argmax(dim=1)
        picked_captions = [captions[int(index)] for index in picked]
        metric.update(images, picked_captions)
        values = metric.compute()
        metric.reset()

        correct = int((picked == targets).sum())
        print(
            f"{epoch:>5}  {loss.item():>7.4f}  {correct:>4}/{len(images):<2}  "
            f"{values['i0t_s'].item():>7.4f}  {values['clip_s'].item():>7.4f}"
        )


if __name__ == "__main__":
    main()
