"""Throughput of I0TScore.score against torchmetrics' CLIPScore, a plain loop and the forward floor.

The workload is shaped like Flickr8k: 1,000 pairs over 200 unique JPEG images
(500 x 375) with 5 captions each, about 12 words per caption. The checkpoint has
the architecture of openai/clip-vit-base-patch32 (ViT-B/32 image tower, 12-layer
text tower, 512-dimensional projection) and random weights. It builds without a
download, and speed does not depend on the weight values. Its BPE tokenizer
is trained on the benchmark's captions so that each word is one token, as in the
real tokenizer.

Measured, interleaved round by round:

* ``i0tscore``: ``I0TScore.score(paths, captions)`` with statistics from a file.
* ``torchmetrics``: ``CLIPScore.update`` in batches of 64 pairs, then ``compute``.
  The images are decoded once per round and handed over as tensors, and updates
  run under ``torch.no_grad``; both favour torchmetrics.
* ``plain``: a CLIPScore-style loop: decode and encode the unique images, encode
  all captions, take the cosine of each pair.
* ``floor``: only the two encoders' forward passes, on unique inputs that were
  decoded, preprocessed and tokenized beforehand (captions sorted by length).

Also reported is the time of standardization plus per-dimension contributions on
the 1,000 embeddings (``score_embeddings`` and ``contributions``), as a share of
``i0tscore``'s total. Each implementation's mean cosine of the pairs is reported
too, and the script stops with an error if they differ. Peak memory is what one run adds above what the set-up
left in use, measured in a fresh process per implementation. On CPU that is the
peak RSS, reset through ``/proc/self/clear_refs``, and on CUDA it is
``torch.cuda.max_memory_allocated``.

Usage:
    python benchmarks/speed.py --work /tmp/speed-bench --rounds 3
    python benchmarks/speed.py --work /tmp/speed-bench --device cuda --dtype float16
    python benchmarks/speed.py --work /tmp/speed-bench --threads 1 --skip-memory

Results go to stdout as markdown and to ``WORK/speed-DEVICE-DTYPE.json``
(``WORK/speed-DEVICE-DTYPE-threadsN.json`` with ``--threads N``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics as pystats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from i0tscore.fileio import atomic_write

REPO = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = ("i0tscore", "torchmetrics", "plain", "floor")
PREFIX = "A photo depicts "
BATCH_SIZE = 64

_SUBJECTS = ["man", "woman", "boy", "girl", "dog", "child", "biker", "skier", "player", "couple", "crowd", "puppy"]
_ADJECTIVES = ["young", "small", "brown", "black", "white", "red", "happy", "large", "wet", "old", "tall", "blue"]
_VERBS = ["running", "jumping", "sitting", "standing", "walking", "climbing", "riding", "playing", "looking", "swimming"]
_PLACES = ["grass", "beach", "street", "snow", "water", "park", "field", "rock", "road", "stage", "bench", "wall"]
_EXTRAS = ["with a ball", "near the fence", "under a tree", "by the lake", "in the sun", "next to a car", "on a hill"]


# ---------------------------------------------------------------------------------------
# Workload


def make_captions(n_images: int, per_image: int, seed: int) -> list[str]:
    """Captions of 11 to 13 words, `per_image` for each image, in image order."""
    rng = np.random.default_rng(seed)
    captions = []
    for _ in range(n_images * per_image):
        words = [
            "a",
            rng.choice(_ADJECTIVES),
            rng.choice(_SUBJECTS),
            "is",
            rng.choice(_VERBS),
            "on the",
            rng.choice(_ADJECTIVES),
            rng.choice(_PLACES),
            rng.choice(_EXTRAS),
        ]
        captions.append(" ".join(str(word) for word in words))
    return captions


def make_images(folder: Path, n_images: int, seed: int) -> list[Path]:
    """Write smooth random 500 x 375 JPEG images and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(n_images):
        path = folder / f"image-{index:04d}.jpg"
        if not path.exists():
            coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC)
            noise = rng.normal(0, 12, size=(375, 500, 3))
            pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def make_checkpoint(folder: Path, captions: list[str], seed: int) -> None:
    """Save a random-weight CLIP with the ViT-B/32 architecture, a BPE tokenizer and a processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    if (folder / "model.safetensors").exists():
        return
    spec = importlib.util.spec_from_file_location("synthclip_train", REPO / "tests" / "assets" / "synthclip" / "train.py")
    train = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = train
    spec.loader.exec_module(train)

    # BPE merges only pairs seen at least twice. Adding every word of the caption
    # grammar twice gives small workloads one token per word as well.
    words = {word for part in (_SUBJECTS, _ADJECTIVES, _VERBS, _PLACES, _EXTRAS, [PREFIX, "a is on the"]) for word in " ".join(part).split()}
    ordered = sorted(words)
    vocabulary = [" ".join(ordered[start : start + 10]) for start in range(0, len(ordered), 10)] * 2
    tokenizer = train.build_tokenizer([PREFIX + caption for caption in captions] + vocabulary, max_merges=4000)
    tokenizer.model_max_length = 77
    torch.manual_seed(seed)
    # CLIPConfig's defaults are the openai/clip-vit-base-patch32 sizes; only the
    # special token ids change, to match this tokenizer.
    config = CLIPConfig(
        text_config={
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
    )
    model = CLIPModel(config).float().eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=list(train.IMAGE_MEAN),
        image_std=list(train.IMAGE_STD),
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)


# ---------------------------------------------------------------------------------------
# Implementations


class _PooledFeatures(torch.nn.Module):
    """CLIPModel whose get_*_features return tensors, as torchmetrics 1.9 expects.

    transformers 5 returns an output object; the projected embedding is its pooler_output.
    """

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip
        self.config = clip.config

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.clip.get_image_features(pixel_values=pixel_values.to(self.clip.dtype))
        return getattr(out, "pooler_output", out)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return getattr(out, "pooler_output", out)


def _features(output: Any) -> torch.Tensor:
    return getattr(output, "pooler_output", output)


class Workload:
    """The pairs, the loaded models and the prepared inputs of every implementation."""

    def __init__(self, work: Path, device: str, dtype: str, seed: int, n_images: int, per_image: int) -> None:
        from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

        from i0tscore import I0TScore
        from i0tscore.model import load_clip
        from i0tscore.build import build_statistics
        from i0tscore.inputs import Pair

        self.device, self.dtype = device, getattr(torch, dtype)
        self.unique_paths = make_images(work / "images", n_images, seed)
        self.captions = make_captions(n_images, per_image, seed)
        self.paths = [str(self.unique_paths[index // per_image]) for index in range(len(self.captions))]
        self.image_of_pair = torch.tensor([index // per_image for index in range(len(self.captions))])
        self.model_dir = work / "clip-vit-b32-random"
        make_checkpoint(self.model_dir, self.captions, seed)

        stats_path = work / "stats.json"
        if not stats_path.exists():
            encoder = load_clip(self.model_dir, device="cpu")
            pairs = [Pair(image=path, caption=caption) for path, caption in zip(self.paths[:200], self.captions[:200])]
            build_statistics(encoder, pairs, corpus="speed-benchmark", corpus_path="generated", progress=False).save(stats_path)
        self.scorer = I0TScore(self.model_dir, stats=stats_path, device=device, dtype=dtype, batch_size=BATCH_SIZE, progress=False)

        self.model = CLIPModel.from_pretrained(self.model_dir).to(device, self.dtype).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(self.model_dir)
        self.processor = CLIPImageProcessor.from_pretrained(self.model_dir)
        clip_processor = CLIPProcessor(image_processor=self.processor, tokenizer=self.tokenizer)
        self.prefixed = [PREFIX + caption for caption in self.captions]

        from torchmetrics.multimodal import CLIPScore

        wrapped = _PooledFeatures(self.model)
        self.metric = CLIPScore(model_name_or_path=lambda: (wrapped, clip_processor)).to(device)

        # The floor's inputs: unique images preprocessed, captions tokenized, before timing.
        self.floor_pixels = []
        for start in range(0, len(self.unique_paths), BATCH_SIZE):
            images = [Image.open(p).convert("RGB") for p in self.unique_paths[start : start + BATCH_SIZE]]
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            self.floor_pixels.append(pixels.to(device, self.dtype))
        order = sorted(range(len(self.prefixed)), key=lambda i: len(self.prefixed[i]))
        self.floor_tokens = []
        for start in range(0, len(order), BATCH_SIZE):
            batch = self.tokenizer([self.prefixed[i] for i in order[start : start + BATCH_SIZE]], padding=True, truncation=True, return_tensors="pt")
            self.floor_tokens.append((batch["input_ids"].to(device), batch["attention_mask"].to(device)))

    def run(self, name: str) -> float:
        """Run one implementation over all pairs; return the mean cosine of the pairs (NaN for the floor)."""
        return getattr(self, "_run_" + name)()

    def _run_i0tscore(self) -> float:
        result = self.scorer.score(self.paths, self.captions)
        return float((result.image_embeds * result.text_embeds).sum(-1).mean())

    def _run_torchmetrics(self) -> float:
        decoded = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in self.unique_paths]
        self.metric.reset()
        with torch.no_grad():
            for start in range(0, len(self.captions), BATCH_SIZE):
                rows = range(start, min(start + BATCH_SIZE, len(self.captions)))
                self.metric.update([decoded[int(self.image_of_pair[i])] for i in rows], [self.prefixed[i] for i in rows])
            # torchmetrics reports 100 · max(mean cosine, 0): the clamp comes after the mean.
            return float(self.metric.compute()) / 100.0

    def _run_plain(self) -> float:
        with torch.inference_mode():
            image_rows = []
            for start in range(0, len(self.unique_paths), BATCH_SIZE):
                images = [Image.open(p).convert("RGB") for p in self.unique_paths[start : start + BATCH_SIZE]]
                pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
                image_rows.append(_features(self.model.get_image_features(pixel_values=pixels)).float())
            text_rows = []
            for start in range(0, len(self.prefixed), BATCH_SIZE):
                batch = self.tokenizer(self.prefixed[start : start + BATCH_SIZE], padding=True, truncation=True, return_tensors="pt").to(self.device)
                text_rows.append(_features(self.model.get_text_features(**batch)).float())
            images = torch.nn.functional.normalize(torch.cat(image_rows), dim=-1)
            texts = torch.nn.functional.normalize(torch.cat(text_rows), dim=-1)
            cosine = (images[self.image_of_pair.to(images.device)] * texts).sum(-1)
            return float(cosine.mean())

    def _run_floor(self) -> float:
        with torch.inference_mode():
            for pixels in self.floor_pixels:
                self.model.get_image_features(pixel_values=pixels)
            for input_ids, attention_mask in self.floor_tokens:
                self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return float("nan")

    def standardization_seconds(self, repeats: int = 5) -> float:
        """Median time of score_embeddings plus contributions on the workload's embeddings."""
        images = self.scorer.encode_images(self.paths)
        texts, _ = self.scorer.encode_texts(self.captions)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = self.scorer.score_embeddings(images, texts)
            result.contributions()
            times.append(time.perf_counter() - start)
        return pystats.median(times)


# ---------------------------------------------------------------------------------------
# Measurement


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(function: Callable[[], float], device: str) -> tuple[float, float]:
    _synchronize(device)
    start = time.perf_counter()
    value = function()
    _synchronize(device)
    return time.perf_counter() - start, value


def measure_memory(args: argparse.Namespace, name: str) -> float:
    """Peak memory in MiB of one run of `name`, in a fresh process."""
    command = [sys.executable, __file__, "--work", str(args.work), "--device", args.device, "--dtype", args.dtype, "--memory-child", name]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(completed.stdout.strip().splitlines()[-1])


def _status_kib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def memory_child(args: argparse.Namespace) -> None:
    """Print the peak memory (MiB) that one run adds above what the set-up left in use."""
    workload = Workload(args.work, args.device, args.dtype, args.seed, args.images, args.per_image)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        workload.run(args.memory_child)
        torch.cuda.synchronize()
        print((torch.cuda.max_memory_allocated() - before) / 2**20)
    else:
        # Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS (Linux).
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        workload.run(args.memory_child)
        print((_status_kib("VmHWM") - before) / 1024)


def environment(device: str) -> dict[str, str]:
    import tokenizers
    import torchmetrics
    import transformers

    import i0tscore

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "torchmetrics": torchmetrics.__version__,
        "i0tscore": i0tscore.__version__,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the images, checkpoint and results (reused between runs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; each runs every implementation once (default: 3)")
    parser.add_argument("--images", type=int, default=200, help="unique images (default: 200)")
    parser.add_argument("--per-image", type=int, default=5, help="captions per image (default: 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads (default: torch's own choice). With fewer threads than cores, a core "
        "stays free for decoding images, as on a GPU machine",
    )  # fmt: skip
    parser.add_argument("--memory-child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.work = args.work.resolve()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return

    workload = Workload(args.work, args.device, args.dtype, args.seed, args.images, args.per_image)
    n_pairs = len(workload.captions)

    # Warm-up: one untimed run of each, so that lazy initialisation is not timed.
    means = {name: workload.run(name) for name in IMPLEMENTATIONS}
    check_agreement(means, args.dtype)
    seconds: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    for round_index in range(args.rounds):
        # Rotate the order each round so that no implementation always runs first.
        order = IMPLEMENTATIONS[round_index % len(IMPLEMENTATIONS) :] + IMPLEMENTATIONS[: round_index % len(IMPLEMENTATIONS)]
        for name in order:
            elapsed, _ = timed(lambda: workload.run(name), args.device)
            seconds[name].append(elapsed)
            print(f"round {round_index + 1}: {name} {elapsed:.2f} s", file=sys.stderr)

    median = {name: pystats.median(times) for name, times in seconds.items()}
    standardization = workload.standardization_seconds()
    memory = {} if args.skip_memory else {name: measure_memory(args, name) for name in IMPLEMENTATIONS}

    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": environment(args.device),
        "device": args.device,
        "dtype": args.dtype,
        "pairs": n_pairs,
        "unique_images": len(workload.unique_paths),
        "rounds": args.rounds,
        "seconds": seconds,
        "median_seconds": median,
        "pairs_per_second": {name: n_pairs / median[name] for name in IMPLEMENTATIONS},
        "mean_cosine": {name: means[name] for name in IMPLEMENTATIONS if name != "floor"},
        "ratios": {
            "i0tscore_over_torchmetrics": median["torchmetrics"] / median["i0tscore"],
            "i0tscore_over_plain": median["plain"] / median["i0tscore"],
            "i0tscore_over_floor": median["floor"] / median["i0tscore"],
        },
        "standardization_and_contributions_seconds": standardization,
        "standardization_share_of_i0tscore": standardization / median["i0tscore"],
        "peak_memory_mib": memory,
    }
    suffix = "" if args.threads is None else f"-threads{args.threads}"
    out = args.work / f"speed-{args.device}-{args.dtype}{suffix}.json"
    atomic_write(out, json.dumps(results, indent=1) + "\n")
    print(render_markdown(results))
    print(f"\nwrote {out}", file=sys.stderr)


def check_agreement(means: dict[str, float], dtype: str) -> None:
    """Raise SystemExit unless the implementations computed the same mean cosine.

    torchmetrics returns max(mean, 0), so it is compared with the clamped mean.
    Half-precision runs get a wider tolerance than float32.
    """
    tolerance = 1e-5 if dtype == "float32" else 2e-3
    expected = {"plain": means["i0tscore"], "torchmetrics": max(means["i0tscore"], 0.0)}
    for name, value in expected.items():
        if abs(means[name] - value) > tolerance:
            raise SystemExit(
                f"error: {name} gives a mean cosine of {means[name]:.6f} and i0tscore {means['i0tscore']:.6f}, "
                f"a difference above {tolerance:g}; the implementations do not compute the same scores."
            )


def render_markdown(results: dict) -> str:
    memory = results["peak_memory_mib"]
    unit = "Peak CUDA memory above set-up (MiB)" if results["device"].startswith("cuda") else "Peak RSS above set-up (MiB)"
    lines = [
        f"{results['pairs']} pairs, {results['unique_images']} unique images, {results['device']} {results['dtype']}, "
        f"median of {results['rounds']} interleaved rounds.",
        "",
        f"| Implementation | Median seconds | Pairs/s | Mean cosine | {unit} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in IMPLEMENTATIONS:
        mean = results["mean_cosine"].get(name)
        lines.append(
            f"| {name} | {results['median_seconds'][name]:.2f} | {results['pairs_per_second'][name]:.1f} | "
            f"{'-' if mean is None else f'{mean:.6f}'} | {memory.get(name, float('nan')):.0f} |"
        )
    ratios = results["ratios"]
    lines += [
        "",
        f"- i0tscore / torchmetrics throughput: {ratios['i0tscore_over_torchmetrics']:.2f}x (target at least 3x)",
        f"- i0tscore / forward-only floor: {ratios['i0tscore_over_floor']:.2f}x (target at least 0.9x)",
        f"- i0tscore / plain loop: {ratios['i0tscore_over_plain']:.2f}x",
        f"- standardization plus contributions: {results['standardization_and_contributions_seconds'] * 1000:.1f} ms, "
        f"{results['standardization_share_of_i0tscore'] * 100:.2f}% of i0tscore's time (target at most 2%)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
