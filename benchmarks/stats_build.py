"""Benchmark `i0tscore stats build`: peak memory against corpus size, throughput against the scorer.

Writes a synthetic corpus of small PNG images with five captions each, then runs,
each in a fresh process so that peak memory (max RSS) is measured per run:

* `i0tscore stats build` over 10k and over 100k pairs;
* `I0TScore.score` and `stats build` over the same 10k pairs, interleaved, for pairs/s.

Usage:
    python benchmarks/stats_build.py --model tests/assets/synthclip/model --work /tmp/stats-bench

The model only needs to be a CLIP checkpoint; memory flatness does not depend on
its weights. Results go to stdout as a markdown table with the command, machine
and library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

CAPTIONS_PER_IMAGE = 5
WORDS = "a the red green blue small large cat dog car tree house on near under with two three bright dark photo".split()


def write_corpus(folder: Path, n_images: int, seed: int = 0) -> Path:
    """Write n_images PNGs and a JSONL corpus with five captions each; reuse files already there."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    corpus = folder / f"corpus-{n_images}.jsonl"
    with open(corpus, "w", encoding="utf-8") as handle:
        for n in range(n_images):
            path = images / f"{n:06d}.png"
            if not path.exists():
                colour = rng.integers(0, 256, size=3, dtype=np.uint8)
                pixels = np.clip(colour + rng.integers(-20, 21, size=(48, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(path)
            for _ in range(CAPTIONS_PER_IMAGE):
                caption = " ".join(rng.choice(WORDS, size=rng.integers(8, 14)))
                handle.write(json.dumps({"image": f"images/{path.name}", "caption": caption}) + "\n")
    return corpus


def run_measured(command: list[str]) -> tuple[float, float]:
    """Run a command in a child process; return (wall seconds, peak RSS in MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024.0


SCORE_SNIPPET = """
import json, sys, time
from pathlib import Path
from i0tscore import I0TScore
corpus, model, stats = sys.argv[1], sys.argv[2], sys.argv[3]
base = Path(corpus).parent
rows = [json.loads(line) for line in open(corpus, encoding="utf-8")]
scorer = I0TScore(model, stats=stats, device="cpu", progress=False)
start = time.perf_counter()
scorer.score([base / row["image"] for row in rows], [row["caption"] for row in rows])
print(time.perf_counter() - start)
"""

BUILD_SNIPPET = """
import sys, time
from i0tscore.build import build_statistics
from i0tscore.inputs import read_corpus
from i0tscore.model import load_clip
corpus, model = sys.argv[1], sys.argv[2]
pairs = read_corpus(corpus)
encoder = load_clip(model, device="cpu")
start = time.perf_counter()
build_statistics(encoder, pairs, corpus="bench", corpus_path=corpus, progress=False)
print(time.perf_counter() - start)
"""


def timed_snippet(snippet: str, *args: str) -> float:
    completed = subprocess.run([sys.executable, "-c", snippet, *args], capture_output=True, text=True, check=True)
    return float(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="CLIP checkpoint folder or hub id")
    parser.add_argument("--work", default="/tmp/i0tscore-stats-bench", help="folder for the synthetic corpus")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved throughput runs per side")
    args = parser.parse_args()

    work = Path(args.work)
    small = write_corpus(work, 10_000 // CAPTIONS_PER_IMAGE)
    large = write_corpus(work, 100_000 // CAPTIONS_PER_IMAGE)

    memory = {}
    for name, corpus in (("10k", small), ("100k", large)):
        out = work / f"stats-{name}.json"
        seconds, peak = run_measured(["i0tscore", "stats", "build", "--model", args.model, "--data", str(corpus), "--out", str(out), "--no-progress"])
        memory[name] = (seconds, peak)
        print(f"stats build {name}: {seconds:.1f} s, peak RSS {peak:.0f} MiB", file=sys.stderr)

    stats_file = str(work / "stats-10k.json")
    score_times, build_times = [], []
    for _ in range(args.repeats):
        score_times.append(timed_snippet(SCORE_SNIPPET, str(small), args.model, stats_file))
        build_times.append(timed_snippet(BUILD_SNIPPET, str(small), args.model))
    score_rate = 10_000 / np.median(score_times)
    build_rate = 10_000 / np.median(build_times)

    import torch
    import transformers

    print(f"Command: `python benchmarks/stats_build.py --model {args.model}`\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}\n")
    print("| run | wall s | peak RSS MiB |\n|---|---|---|")
    for name, (seconds, peak) in memory.items():
        print(f"| stats build, {name} pairs | {seconds:.1f} | {peak:.0f} |")
    print(f"\nPeak memory ratio 100k / 10k: {memory['100k'][1] / memory['10k'][1]:.3f}\n")
    print("| encoder loop (10k pairs, 2k images, median of %d) | pairs/s |\n|---|---|" % args.repeats)
    print(f"| I0TScore.score | {score_rate:.0f} |")
    print(f"| stats build | {build_rate:.0f} |")
    print(f"\nThroughput ratio stats build / scorer: {build_rate / score_rate:.3f}")


if __name__ == "__main__":
    main()
