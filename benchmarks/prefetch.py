"""Time the scorer's image encoding with and without loading the next batch in a worker thread.

Three sides run interleaved, round by round, on the unique images of the speed
benchmark's workload (``speed.py``):

* ``worker thread``: ``I0TScore.encode_images`` as shipped, which decodes and
  preprocesses batch k+1 in a worker thread while the model encodes batch k.
* ``serial``: the same call with ``i0tscore.scorer.prefetch`` replaced by a
  plain loop, so decoding, preprocessing and encoding take turns.
* ``floor``: the image tower's forward passes alone, on pixels preprocessed
  before timing.

Run it with the default torch threads and with ``--threads 1``. With one thread
on a machine with two or more cores, a core stays free for the worker, as the CPU
cores are on a GPU machine.

Usage:
    python benchmarks/prefetch.py --work /tmp/speed-bench --rounds 5
    python benchmarks/prefetch.py --work /tmp/speed-bench --rounds 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics as pystats
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speed  # noqa: E402

T = TypeVar("T")
U = TypeVar("U")


def serial(items: Iterable[T], load: Callable[[T], U]) -> Iterator[tuple[T, U]]:
    """Yield ``(item, load(item))`` with no worker thread: the loop that prefetch replaces."""
    for item in items:
        yield item, load(item)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="the speed benchmark's work folder (created if missing)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; each runs the three sides once (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--images", type=int, default=200, help="unique images (default: 200)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from i0tscore import scorer as scorer_module
    from i0tscore.fileio import atomic_write
    from i0tscore.prefetch import prefetch

    workload = speed.Workload(args.work.resolve(), "cpu", "float32", 0, args.images, 5)
    paths = [str(path) for path in workload.unique_paths]

    def with_worker() -> None:
        scorer_module.prefetch = prefetch
        workload.scorer.encode_images(paths)

    def without_worker() -> None:
        scorer_module.prefetch = serial
        try:
            workload.scorer.encode_images(paths)
        finally:
            scorer_module.prefetch = prefetch

    def floor() -> None:
        with torch.inference_mode():
            for pixels in workload.floor_pixels:
                workload.model.get_image_features(pixel_values=pixels)

    sides = {"worker thread": with_worker, "serial": without_worker, "floor": floor}
    for run in sides.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            sides[name]()
            seconds[name].append(time.perf_counter() - start)
            print(f"round {round_index + 1}: {name} {seconds[name][-1]:.2f} s", file=sys.stderr)

    median = {name: pystats.median(times) for name, times in seconds.items()}
    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": speed.environment("cpu"),
        "images": len(paths),
        "rounds": args.rounds,
        "seconds": seconds,
        "median_seconds": median,
    }
    suffix = "" if args.threads is None else f"-threads{args.threads}"
    out = args.work / f"prefetch-cpu{suffix}.json"
    atomic_write(out, json.dumps(results, indent=1) + "\n")

    print(f"{len(paths)} images, {torch.get_num_threads()} torch threads, median of {args.rounds} interleaved rounds.\n")
    print("| Side | Median seconds | Per-round seconds |")
    print("| --- | --- | --- |")
    for name, times in seconds.items():
        print(f"| {name} | {median[name]:.2f} | {', '.join(f'{value:.2f}' for value in times)} |")
    print(f"\n- floor / worker thread: {median['floor'] / median['worker thread']:.3f}")
    print(f"- floor / serial: {median['floor'] / median['serial']:.3f}")
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
