"""Train the I0T_async BatchNorm layers on a frozen CLIP, seeded and resumable.

Training follows An et al. (ACL 2025): every CLIP parameter, the logit scale
included, stays frozen, and only the two ``BatchNorm1d`` layers of
:class:`~i0tscore.asyncnorm.AsyncNorm` learn, with AdamW, a cosine schedule
after a linear warm-up, and CLIP's contrastive loss plus CyCLIP's two
consistency terms (weight 0.25 each).

Settings: the paper trains a full-size CLIP with lr 1e-6, weight decay 0.01,
200 warm-up steps, batch 128 (64 per GPU on 2 GPUs), 3 epochs and the logit
scale fixed at 100. The defaults here are for a small CPU run of a few thousand
pairs: lr 1e-4, weight decay 0.01, 50 warm-up steps, batch 64, 5 epochs, and
the model's own frozen logit scale (100 for OpenAI's checkpoints). Pass the
paper's values to reproduce its setup.

Each training step encodes its batch with the frozen CLIP (no gradient), then
trains the layers on those embeddings, so memory stays O(batch) whatever the
corpus size. The held-out pairs are encoded once, at the start of a run.

Batches never hold the same image twice when the corpus allows it: a batch
with one image twice would make a matched caption a negative in the
contrastive loss. See :func:`epoch_batches`.

Reproducibility: with the same pairs, settings, seed, device and library
versions, the output file is the same byte for byte, and a run resumed from
its checkpoint writes the same file as an uninterrupted run. The checkpoint
``OUT.partial.safetensors`` contains the layers, the optimizer and scheduler
state, the RNG states and the position in the schedule. It is one file, so no
crash can leave half of it; it is written atomically every
``checkpoint_every`` steps and after each epoch, and removed on success.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from i0tscore.asyncnorm import CYCLIC_WEIGHT, AsyncNorm, AsyncNormError, async_loss, centroid_distance, read_safetensors_json
from i0tscore.build import build_date, subsample
from i0tscore.fileio import atomic_write, sha256_bytes
from i0tscore.images import load_rgb
from i0tscore.inputs import Pair
from i0tscore.model import DEFAULT_MODEL, ClipEncoder
from i0tscore.statistics import DEFAULT_PREFIX

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 5
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 1e-4
DEFAULT_WEIGHT_DECAY = 0.01
DEFAULT_WARMUP_STEPS = 50
DEFAULT_HELDOUT_FRACTION = 0.1
DEFAULT_CHECKPOINT_EVERY = 100
"""Training steps between two checkpoints; one is also written after each epoch."""

CHECKPOINT_FORMAT = "i0tscore-async-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_KEY = "i0tscore-checkpoint"


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained layers, stored in the output file."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    seed: int = 0
    cyclic: bool = True
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION
    logit_scale: Optional[float] = None
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs!r}"),
            (
                isinstance(self.batch_size, int) and self.batch_size >= 2,
                f"batch_size must be an integer of at least 2 (BatchNorm needs two rows), got {self.batch_size!r}",
            ),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr!r}"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0, f"weight_decay must be ≥ 0, got {self.weight_decay!r}"),
            (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, f"warmup_steps must be ≥ 0, got {self.warmup_steps!r}"),
            (0 <= self.heldout_fraction < 1, f"heldout_fraction must be in [0, 1), got {self.heldout_fraction!r}"),
            (
                self.logit_scale is None or (math.isfinite(self.logit_scale) and self.logit_scale > 0),
                f"logit_scale must be a positive number or None, got {self.logit_scale!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise AsyncNormError(message + ".")


@dataclass
class TrainState:
    """Position in the schedule and what was measured so far; stored in checkpoints."""

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    centroid_distance_before: Optional[float] = None
    epochs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainData:
    """The corpus split into training and held-out pairs, with image indices."""

    pairs: list[Pair]
    image_of_pair: list[int]
    train: list[int]
    heldout: list[int]

    @property
    def num_images(self) -> int:
        return max(self.image_of_pair) + 1 if self.image_of_pair else 0


# ---------------------------------------------------------------------- data


def split_pairs(pairs: Sequence[Pair], heldout_fraction: float, seed: int) -> TrainData:
    """Hold out the pairs of a seeded random ``heldout_fraction`` of the images.

    The split is by image, so no held-out image is seen in training. With a
    positive fraction at least one image is held out.

    Raises:
        AsyncNormError: fewer than two training images would remain.
    """
    keys: dict[str, int] = {}
    image_of_pair = [keys.setdefault(os.path.normpath(str(pair.image)), len(keys)) for pair in pairs]
    num_images = len(keys)
    num_heldout = 0 if heldout_fraction == 0 else max(1, round(heldout_fraction * num_images))
    if num_images - num_heldout < 2:
        raise AsyncNormError(
            f"The corpus has {len(pairs)} pairs of {num_images} distinct images; after holding out "
            f"{num_heldout} image(s), training needs at least 2 images. Give a larger corpus or "
            f"lower the held-out fraction."
        )
    order = np.random.default_rng([seed, 0]).permutation(num_images)
    heldout_images = set(order[:num_heldout].tolist())
    train = [n for n, image in enumerate(image_of_pair) if image not in heldout_images]
    heldout = [n for n, image in enumerate(image_of_pair) if image in heldout_images]
    return TrainData(list(pairs), image_of_pair, train, heldout)


def epoch_batches(image_of_pair: Sequence[int], pair_indices: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffle the pairs for one epoch and pack them into batches of distinct images.

    The order is a function of ``(seed, epoch)`` only, so a resumed run
    rebuilds the same batches. Packing is greedy: a pair whose image is
    already in the current batch waits for the next batch, and waiting pairs
    go first there. So no batch contains an image twice. Batches have
    ``batch_size`` pairs except near the end of the epoch. Batches of one pair
    are left out, because BatchNorm cannot train on a single row; they only
    occur when a few images hold most of the captions.

    Returns:
        Lists of indices into the corpus' pairs.
    """
    rng = np.random.default_rng([seed, 1, epoch])
    order = [pair_indices[n] for n in rng.permutation(len(pair_indices)).tolist()]
    batches = [batch for batch in _pack_distinct(order, image_of_pair, batch_size) if len(batch) >= 2]
    used = sum(len(batch) for batch in batches)
    if used < len(order):
        logger.debug("Epoch %d: left out %d pair(s) that could only form one-pair batches", epoch + 1, len(order) - used)
    return batches


def _pack_distinct(order: list[int], image_of_pair: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    waiting: list[int] = []
    source = iter(order)
    while True:
        batch: list[int] = []
        seen: set[int] = set()
        still_waiting = []
        for index in waiting:
            if len(batch) < batch_size and image_of_pair[index] not in seen:
                batch.append(index)
                seen.add(image_of_pair[index])
            else:
                still_waiting.append(index)
        waiting = still_waiting
        for index in source:
            if image_of_pair[index] in seen:
                waiting.append(index)
                continue
            batch.append(index)
            seen.add(image_of_pair[index])
            if len(batch) == batch_size:
                break
        if not batch:
            return
        yield batch


# ---------------------------------------------------------------------- encoding


def encode_pairs(encoder: ClipEncoder, pairs: Sequence[Pair], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode matched pairs with the frozen CLIP; each distinct image once per call.

    Returns:
        (N, D) image and caption embeddings, L2-normalized float32 on the CPU,
        row n of each from pair n. They are ordinary tensors that autograd
        accepts as inputs (the encoder returns inference-mode tensors).

    Raises:
        ImageLoadError: an unreadable image.
    """
    keys: dict[str, int] = {}
    paths: list[Path] = []
    rows: list[int] = []
    for pair in pairs:
        key = os.path.normpath(str(pair.image))
        if key not in keys:
            keys[key] = len(paths)
            paths.append(pair.image)
        rows.append(keys[key])
    images = [load_rgb(path) for path in paths]
    # The encoder runs under torch.inference_mode(), which also disables gradients.
    image_embeds = encoder.encode_pixels(encoder.preprocess(images))
    input_ids, attention_mask, truncated = encoder.tokenize([prefix + pair.caption for pair in pairs])
    if any(truncated):
        logger.debug("%d caption(s) truncated to %d tokens", sum(truncated), encoder.max_length)
    text_embeds = encoder.encode_texts(input_ids, attention_mask)
    return image_embeds[rows].clone(), text_embeds.clone()


def encode_heldout(encoder: ClipEncoder, data: TrainData, prefix: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode the held-out images (each once) and captions, in corpus order and fixed chunks."""
    by_image: dict[int, Pair] = {}
    for index in data.heldout:
        by_image.setdefault(data.image_of_pair[index], data.pairs[index])
    image_pairs = list(by_image.values())
    caption_pairs = [data.pairs[index] for index in data.heldout]

    images, texts = [], []
    for start in range(0, len(image_pairs), batch_size):
        chunk = image_pairs[start : start + batch_size]
        images.append(encoder.encode_pixels(encoder.preprocess([load_rgb(pair.image) for pair in chunk])))
    for start in range(0, len(caption_pairs), batch_size):
        chunk = caption_pairs[start : start + batch_size]
        input_ids, attention_mask, _ = encoder.tokenize([prefix + pair.caption for pair in chunk])
        texts.append(encoder.encode_texts(input_ids, attention_mask))
    return torch.cat(images), torch.cat(texts)


# ---------------------------------------------------------------------- optimization


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine decay towards 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(layers: AsyncNorm, settings: TrainSettings, total_steps: int):
    """AdamW over the two layers' parameters only, and its warm-up + cosine scheduler."""
    optimizer = torch.optim.AdamW(layers.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, settings.warmup_steps, total_steps)
    )
    return optimizer, scheduler


def _train_step(
    encoder: ClipEncoder,
    layers: AsyncNorm,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batch: list[Pair],
    settings: TrainSettings,
    scale: float,
) -> float:
    """Run one optimization step on one batch and return its loss."""
    device = layers.image.weight.device
    image_embeds, text_embeds = encode_pairs(encoder, batch, settings.prefix)
    image, text = layers(image_embeds.to(device), text_embeds.to(device))
    loss = async_loss(image, text, scale=scale, cyclic=settings.cyclic)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


# ---------------------------------------------------------------------- training


def train_async(
    encoder: ClipEncoder,
    pairs: Sequence[Pair],
    *,
    out: Union[str, os.PathLike],
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    warmup_steps: int = DEFAULT_WARMUP_STEPS,
    seed: int = 0,
    cyclic: bool = True,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
    logit_scale: Optional[float] = None,
    prefix: str = DEFAULT_PREFIX,
    device: Union[None, str, torch.device] = None,
    resume: bool = False,
    progress: Optional[bool] = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    corpus: Optional[str] = None,
) -> AsyncNorm:
    """Train the I0T_async layers on ``pairs`` and write them to ``out``.

    Seeds Python, numpy and torch with ``seed`` and turns on
    ``torch.use_deterministic_algorithms`` for the run (restored afterwards).

    Args:
        encoder: the frozen CLIP model; its parameters are never updated.
        pairs: the corpus, e.g. from :func:`i0tscore.inputs.read_corpus`.
        out: the layers file to write (safetensors).
        epochs: passes over the training pairs.
        batch_size: pairs per step, at least 2.
        lr: peak AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        warmup_steps: steps of linear warm-up before the cosine decay.
        seed: seed of the split, the epoch orders and the global RNGs.
        cyclic: add CyCLIP's two consistency terms (weight 0.25 each).
        heldout_fraction: share of the images whose pairs are held out to
            measure the centroid distance; 0 holds out none.
        logit_scale: the logit multiplier of the contrastive loss (the paper
            fixes 100); None uses the model's frozen exp(logit_scale).
        prefix: caption prefix; scores must use the same prefix.
        device: where the layers train; None uses the encoder's device.
        resume: continue from ``OUT.partial.safetensors`` when it exists.
            Without it, a run starts over and overwrites that checkpoint.
        progress: show a progress bar (None: when stderr is a terminal).
        checkpoint_every: steps between two checkpoints.
        corpus: a name for the corpus, stored in the file.

    Returns:
        The trained layers, in eval mode, as written to ``out``.

    Raises:
        AsyncNormError: invalid settings, too small a corpus, or a checkpoint
            made for other pairs, settings or model.
        ImageLoadError: an unreadable image.
    """
    settings = TrainSettings(epochs, batch_size, lr, weight_decay, warmup_steps, seed, cyclic, heldout_fraction, logit_scale, prefix)
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise AsyncNormError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}.")
    data = split_pairs(pairs, settings.heldout_fraction, settings.seed)
    schedule = [epoch_batches(data.image_of_pair, data.train, batch_size, seed, epoch) for epoch in range(epochs)]
    total_steps = sum(len(batches) for batches in schedule)
    if total_steps == 0:
        raise AsyncNormError("No training batch of two or more pairs with distinct images could be formed.")

    train_device = torch.device(device) if device is not None else encoder.device
    scale = settings.logit_scale if settings.logit_scale is not None else float(encoder.model.logit_scale.detach().exp())
    checkpoint = checkpoint_path(out)
    fingerprint = _fingerprint(encoder, data, settings, train_device)

    with _deterministic(settings.seed, train_device):
        layers = AsyncNorm(encoder.dim, model=encoder.identity, prefix=prefix).to(train_device).train()
        optimizer, scheduler = make_optimizer(layers, settings, total_steps)
        state = TrainState()
        if resume and checkpoint.is_file():
            state = _load_checkpoint(checkpoint, fingerprint, layers, optimizer, scheduler)
            logger.info("Resuming from %s at step %d of %d", checkpoint, state.step, total_steps)

        heldout = encode_heldout(encoder, data, prefix, batch_size) if data.heldout else None
        if heldout is not None and state.centroid_distance_before is None:
            state.centroid_distance_before = centroid_distance(*heldout)
            logger.info("Held-out centroid distance before the layers: %.4f", state.centroid_distance_before)

        loop = _Loop(encoder, layers, optimizer, scheduler, settings, scale, data, schedule, heldout, checkpoint, fingerprint, checkpoint_every)
        loop.run(state, total_steps, progress)

    layers.eval()
    layers.training_settings = _training_record(settings, data, encoder, train_device, scale, total_steps, corpus)
    layers.history = _history(state)
    layers.save(out)
    if checkpoint.exists():
        checkpoint.unlink()
    return AsyncNorm.load(out)


def checkpoint_path(out: Union[str, os.PathLike]) -> Path:
    """Return the checkpoint path of a run that writes ``out``: ``OUT.partial.safetensors`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".partial.safetensors")


@dataclass
class _Loop:
    """The epoch loop of one run; split out so each part stays short."""

    encoder: ClipEncoder
    layers: AsyncNorm
    optimizer: torch.optim.Optimizer
    scheduler: Any
    settings: TrainSettings
    scale: float
    data: TrainData
    schedule: list[list[list[int]]]
    heldout: Optional[tuple[torch.Tensor, torch.Tensor]]
    checkpoint: Path
    fingerprint: str
    checkpoint_every: int

    def run(self, state: TrainState, total_steps: int, progress: Optional[bool]) -> None:
        from tqdm.auto import tqdm

        enabled = sys.stderr.isatty() if progress is None else progress
        with tqdm(total=total_steps, initial=state.step, disable=not enabled, unit="step", desc="train-async") as bar:
            while state.epoch < self.settings.epochs:
                self._run_epoch(state, bar)

    def _run_epoch(self, state: TrainState, bar: Any) -> None:
        batches = self.schedule[state.epoch]
        for indices in batches[state.step_in_epoch :]:
            batch = [self.data.pairs[index] for index in indices]
            loss = _train_step(self.encoder, self.layers, self.optimizer, self.scheduler, batch, self.settings, self.scale)
            if not math.isfinite(loss):
                raise FloatingPointError(f"The training loss became {loss} at step {state.step + 1}; lower the learning rate.")
            state.step += 1
            state.step_in_epoch += 1
            state.loss_sum += loss
            state.loss_count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if state.step % self.checkpoint_every == 0 and state.step_in_epoch < len(batches):
                self._save(state)
        self._finish_epoch(state)

    def _finish_epoch(self, state: TrainState) -> None:
        record: dict[str, Any] = {
            "epoch": state.epoch + 1,
            "train_loss": state.loss_sum / max(1, state.loss_count),
            "heldout_centroid_distance": self._heldout_distance(),
        }
        state.epochs.append(record)
        distance = record["heldout_centroid_distance"]
        logger.info(
            "Epoch %d/%d: train loss %.4f, held-out centroid distance %s (before the layers: %s)",
            record["epoch"],
            self.settings.epochs,
            record["train_loss"],
            "n/a" if distance is None else f"{distance:.4f}",
            "n/a" if state.centroid_distance_before is None else f"{state.centroid_distance_before:.4f}",
        )
        state.epoch += 1
        state.step_in_epoch = 0
        state.loss_sum = 0.0
        state.loss_count = 0
        self._save(state)

    def _heldout_distance(self) -> Optional[float]:
        if self.heldout is None:
            return None
        image = self.layers.transform_image(self.heldout[0])
        text = self.layers.transform_text(self.heldout[1])
        return centroid_distance(image, text)

    def _save(self, state: TrainState) -> None:
        _save_checkpoint(self.checkpoint, self.fingerprint, state, self.layers, self.optimizer, self.scheduler)


# ---------------------------------------------------------------------- records


def _training_record(
    settings: TrainSettings,
    data: TrainData,
    encoder: ClipEncoder,
    device: torch.device,
    scale: float,
    total_steps: int,
    corpus: Optional[str],
) -> dict[str, Any]:
    record = asdict(settings)
    record.update(
        {
            "logit_scale_used": scale,
            "cyclic_weight": CYCLIC_WEIGHT if settings.cyclic else 0.0,
            "optimizer": "AdamW",
            "schedule": "linear warm-up, cosine decay",
            "steps": total_steps,
            "num_pairs": len(data.pairs),
            "num_images": data.num_images,
            "train_pairs": len(data.train),
            "heldout_pairs": len(data.heldout),
            "corpus": corpus,
            "encoder_dtype": encoder.dtype_name,
            "device": device.type,
        }
    )
    # Only a SOURCE_DATE_EPOCH date is recorded, so that reruns give the same file.
    if os.environ.get("SOURCE_DATE_EPOCH"):
        record["date"] = build_date()
    return record


def _history(state: TrainState) -> dict[str, Any]:
    return {"heldout_centroid_distance_before": state.centroid_distance_before, "epochs": state.epochs}


def _fingerprint(encoder: ClipEncoder, data: TrainData, settings: TrainSettings, device: torch.device) -> str:
    # A checkpoint only fits the same pairs in the same order, split, model,
    # settings and device: all of them decide the steps that follow.
    listing = {
        "pairs": [[str(pair.image), pair.caption] for pair in data.pairs],
        "heldout": data.heldout,
        "model": [encoder.identity.model_id, encoder.identity.revision, encoder.identity.weights_sha256],
        "dtype": encoder.dtype_name,
        "device": device.type,
        "settings": asdict(settings),
    }
    return sha256_bytes(json.dumps(listing, sort_keys=True).encode())


# ---------------------------------------------------------------------- determinism


@contextlib.contextmanager
def _deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seed every RNG and require deterministic torch kernels inside the block."""
    previous = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        # cuBLAS is only deterministic with a fixed workspace (CUDA ≥ 10.2); torch
        # raises without this variable once deterministic algorithms are on.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


# ---------------------------------------------------------------------- checkpoints


def _save_checkpoint(
    path: Path,
    fingerprint: str,
    state: TrainState,
    layers: AsyncNorm,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> None:
    tensors = {f"layers.{name}": value.detach().cpu().contiguous() for name, value in layers.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for param, values in optimizer_state["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{param}.{key}"] = value.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    numpy_state = np.random.get_state()
    info = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "state": asdict(state),
        "param_groups": optimizer_state["param_groups"],
        "scheduler": scheduler.state_dict(),
        "rng_python": random.getstate(),
        "rng_numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }
    # One metadata key keeps the bytes independent of safetensors' key order.
    atomic_write(path, save_safetensors(tensors, metadata={CHECKPOINT_KEY: json.dumps(info)}))


def _load_checkpoint(
    path: Path,
    fingerprint: str,
    layers: AsyncNorm,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> TrainState:
    info, tensors = read_safetensors_json(path.read_bytes(), str(path), CHECKPOINT_KEY)
    if info.get("format") != CHECKPOINT_FORMAT or info.get("format_version") != CHECKPOINT_VERSION:
        raise AsyncNormError(f"{path} is not an i0tscore train-async checkpoint of version {CHECKPOINT_VERSION}.")
    if info.get("fingerprint") != fingerprint:
        raise AsyncNormError(
            f"The checkpoint {path} was made for other pairs, settings, model or device. "
            f"Delete it to start over, or resume with the original settings."
        )
    device = layers.image.weight.device
    layers.load_state_dict({key[len("layers.") :]: value for key, value in tensors.items() if key.startswith("layers.")})

    optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param, name = key.split(".", 2)
            optimizer_state.setdefault(int(param), {})[name] = value if name == "step" else value.to(device)
    groups = [{**group, "betas": tuple(group["betas"])} for group in info["param_groups"]]
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": groups})
    scheduler.load_state_dict(info["scheduler"])

    torch.set_rng_state(tensors["rng.torch"])
    version, keys, *rest = info["rng_python"]
    random.setstate((version, tuple(keys), *rest))
    name, keys, *rest = info["rng_numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    return TrainState(**info["state"])


# ---------------------------------------------------------------------- command line


def add_train_async_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train-async`` subcommand to the ``i0tscore`` subparsers."""
    parser = subparsers.add_parser("train-async", help="train the I0T_async BatchNorm layers on a frozen CLIP")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local folder of a CLIP checkpoint (default: %(default)s)")
    parser.add_argument("--revision", default=None, help="hub branch, tag or commit of the model")
    parser.add_argument("--data", required=True, help="corpus: COCO captions annotations .json, .jsonl or .csv with image and caption")
    parser.add_argument("--images", default=None, help="folder that relative image paths are resolved against (default: the corpus file's folder)")
    parser.add_argument("--out", required=True, help="layers file to write (.safetensors)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="passes over the training pairs (default: %(default)s; paper: 3)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="pairs per step, at least 2 (default: %(default)s; paper: 128)")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="peak AdamW learning rate (default: %(default)s; paper: 1e-6)")
    parser.add_argument("--weight-decay", type=float, default=DEFAULT_WEIGHT_DECAY, help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--warmup-steps", type=int, default=DEFAULT_WARMUP_STEPS, help="linear warm-up steps before the cosine decay (default: %(default)s; paper: 200)")
    parser.add_argument("--logit-scale", type=float, default=None, help="logit multiplier of the contrastive loss (default: the model's exp(logit_scale); paper: 100)")
    parser.add_argument("--no-cyclic", action="store_true", help="train with the contrastive loss only, without CyCLIP's consistency terms")
    parser.add_argument("--heldout-fraction", type=float, default=DEFAULT_HELDOUT_FRACTION, help="share of images held out to measure the centroid distance (default: %(default)s)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="caption prefix; use the prefix you will score with (default: %(default)r)")
    parser.add_argument("--limit", type=int, default=None, help="use a seeded random subset of N pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the batch order and --limit (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the first available)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="dtype of the frozen CLIP; the layers train in float32 (default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=int, default=DEFAULT_CHECKPOINT_EVERY, help="steps between two checkpoints (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial.safetensors")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run_train_async(args: argparse.Namespace) -> int:
    """Run ``i0tscore train-async``; returns the exit code (errors propagate to the caller)."""
    from i0tscore.inputs import read_corpus
    from i0tscore.model import load_clip

    out = Path(args.out)
    checkpoint = checkpoint_path(out)
    if checkpoint.exists() and not args.resume:
        raise AsyncNormError(
            f"{checkpoint} contains the state of an interrupted run; pass --resume to continue it, or delete it to start over."
        )
    pairs = subsample(read_corpus(args.data, images=args.images), args.limit, args.seed)
    encoder = load_clip(args.model, revision=args.revision, device=args.device, dtype=args.dtype)
    layers = train_async(
        encoder,
        pairs,
        out=out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        seed=args.seed,
        cyclic=not args.no_cyclic,
        heldout_fraction=args.heldout_fraction,
        logit_scale=args.logit_scale,
        prefix=args.prefix,
        resume=args.resume,
        progress=False if args.no_progress else None,
        checkpoint_every=args.checkpoint_every,
        corpus=Path(args.data).name,
    )
    _print_summary(out, layers)
    return 0


def _print_summary(out: Path, layers: AsyncNorm) -> None:
    history = layers.history
    before = history.get("heldout_centroid_distance_before")
    after = history["epochs"][-1]["heldout_centroid_distance"] if history.get("epochs") else None
    gap = "no held-out pairs" if before is None else f"held-out centroid distance {before:.4f} -> {after:.4f}"
    print(
        f"i0tscore: wrote {out}: {layers.training_settings.get('steps')} steps on "
        f"{layers.training_settings.get('train_pairs')} pairs, {gap}, sha256 {layers.checksum[:12]}",
        file=sys.stderr,
    )


__all__ = [
    "TrainSettings",
    "add_train_async_parser",
    "checkpoint_path",
    "epoch_batches",
    "lr_factor",
    "run_train_async",
    "split_pairs",
    "train_async",
]
