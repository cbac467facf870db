"""Write synthetic scenes as PNG files and a JSONL caption file.

The shipped statistics for the synthclip checkpoint are built from the output of this
script, so that they come from the package's own `i0tscore stats build`, fed with files
the way a user feeds it a real corpus:

    python tests/assets/synthclip/make_corpus.py --split train --size 2000 --out /tmp/synth-train
    cd /tmp/synth-train
    i0tscore stats build --model /path/to/repo/tests/assets/synthclip/model \
        --data captions.jsonl --corpus synthclip-train-2000 \
        --out /path/to/repo/stats/synthclip.json

stats/README.md gives the full rebuild command.

Each line of `captions.jsonl` is {"image": "images/train-00000.png", "caption": "..."}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

_SCENES_PATH = Path(__file__).resolve().parent / "scenes.py"


def load_scenes_module():
    """Import `scenes.py` from this folder without installing anything."""
    spec = importlib.util.spec_from_file_location("synthclip_scenes", _SCENES_PATH)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class is created.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_corpus(split_name: str, size: int, seed: int, out: Path) -> Path:
    """Render `size` examples of a split into `out` and return the JSONL file's path."""
    scenes = load_scenes_module()
    split = scenes.make_split(split_name, size, seed=seed)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (image, text) in enumerate(zip(split.images, split.captions)):
        name = f"images/{split_name}-{index:05d}.png"
        image.save(out / name)
        lines.append(json.dumps({"image": name, "caption": text}))
    data = out / "captions.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("train", "heldout"), default="train")
    parser.add_argument("--size", type=int, default=2000, help="number of scenes (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write images/ and captions.jsonl into")
    args = parser.parse_args(argv)
    data = write_corpus(args.split, args.size, args.seed, args.out)
    print(f"wrote {args.size} scenes and {data}")


if __name__ == "__main__":
    main()
