"""Build modality statistics over an image–caption corpus, streaming and resumable."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from i0tscore._version import __version__
from i0tscore.fileio import atomic_write
from i0tscore.images import ImageLoadError, load_rgb
from i0tscore.inputs import Pair
from i0tscore.model import ClipEncoder
from i0tscore.prefetch import prefetch
from i0tscore.statistics import DEFAULT_PREFIX, Statistics, StatisticsAccumulator

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "i0tscore-statistics-checkpoint"
CHECKPOINT_EVERY = 20
"""Batches between two checkpoints of the running sums."""


def subsample(pairs: Sequence[Pair], limit: Optional[int], seed: int) -> list[Pair]:
    """Pick a seeded subset of ``limit`` pairs, kept in corpus order; all pairs when ``limit`` is None."""
    if limit is None or limit >= len(pairs):
        return list(pairs)
    if limit < 1:
        raise ValueError(f"--limit must be a positive number of pairs, got {limit}.")
    chosen = np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False)
    return [pairs[i] for i in sorted(chosen.tolist())]


def group_by_image(pairs: Sequence[Pair]) -> list[tuple[Path, list[str]]]:
    """Pairs grouped by image, in order of first appearance, so each image is encoded once."""
    groups: dict[str, tuple[Path, list[str]]] = {}
    for pair in pairs:
        key = os.path.normpath(str(pair.image))
        groups.setdefault(key, (pair.image, []))[1].append(pair.caption)
    return list(groups.values())


def build_date() -> str:
    """Return the build date (UTC): from SOURCE_DATE_EPOCH when set, for reproducible builds, else today."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch else _dt.datetime.now(_dt.timezone.utc)
    return moment.date().isoformat()


def build_statistics(
    encoder: ClipEncoder,
    pairs: Sequence[Pair],
    *,
    corpus: str,
    corpus_path: str,
    prefix: str = DEFAULT_PREFIX,
    batch_size: int = 64,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    resume: bool = False,
    on_error: str = "raise",
    progress: Optional[bool] = None,
    shard: Optional[tuple[int, int]] = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    extra_provenance: Optional[dict[str, Any]] = None,
) -> Statistics:
    """Accumulate the means of L2-normalized image and text embeddings over ``pairs``.

    Memory stays O(batch + D) whatever the corpus size: embeddings are added to
    exact running sums and dropped. Each distinct image is encoded once.

    Args:
        encoder: the loaded CLIP model.
        pairs: the corpus, e.g. from :func:`i0tscore.inputs.read_corpus`.
        corpus: a short name for the corpus, stored in the file.
        corpus_path: where the corpus was read from, stored in the file.
        prefix: caption prefix; must match the prefix used when scoring.
        batch_size: images per forward pass (their captions follow in batches of the same size).
        checkpoint: file for the running sums, rewritten atomically every
            ``checkpoint_every`` batches; removed on success.
        resume: continue from ``checkpoint`` instead of starting over.
        on_error: ``"raise"`` stops at an unreadable image; ``"skip"`` leaves
            out that image and its captions and counts it in the provenance.
        progress: show a progress bar (None: when stderr is a terminal).
        shard: ``(k, n)`` to take only every n-th image starting at the k-th
            (0-based), so n processes can share a corpus; merge the n files
            with :func:`merge_statistics`.
        checkpoint_every: batches between two checkpoints.
        extra_provenance: more facts to record (e.g. seed and limit).

    Raises:
        ImageLoadError: an unreadable image, with ``on_error="raise"``.
        ValueError: a checkpoint made for another corpus, model or setting.
    """
    from tqdm.auto import tqdm

    groups = group_by_image(pairs)
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"Shard {index}/{count} is invalid; expected K/N with 0 <= K < N.")
        groups = groups[index::count]
    fingerprint = _fingerprint(encoder, groups, prefix, batch_size)
    accumulator = StatisticsAccumulator(encoder.dim)
    done_groups = 0
    skipped: list[str] = []
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        accumulator, done_groups, skipped = _load_checkpoint(checkpoint, fingerprint)
        logger.info("Resuming from %s after %d of %d images", checkpoint, done_groups, len(groups))

    done_pairs = sum(len(captions) for _, captions in groups[:done_groups])
    total_pairs = sum(len(captions) for _, captions in groups)
    enabled = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=total_pairs, initial=done_pairs, disable=not enabled, unit="pair", desc="stats build") as bar:
        starts = range(done_groups, len(groups), batch_size)
        loaded = prefetch(starts, lambda start: _load_batch(encoder, groups[start : start + batch_size], prefix, on_error))
        for batch_number, (start, (pixels, captions, batch_skipped)) in enumerate(loaded, start=1):
            _add_batch(encoder, accumulator, pixels, captions, batch_size)
            skipped.extend(batch_skipped)
            batch = groups[start : start + batch_size]
            bar.update(sum(len(texts) for _, texts in batch))
            if checkpoint is not None and batch_number % checkpoint_every == 0:
                _save_checkpoint(checkpoint, fingerprint, accumulator, start + len(batch), skipped)

    provenance = {
        "corpus_path": corpus_path,
        "date": build_date(),
        "package_version": __version__,
        "dtype": encoder.dtype_name,
        "device": encoder.device.type,
        "batch_size": batch_size,
        "skipped_images": len(skipped),
    }
    provenance.update(extra_provenance or {})
    stats = accumulator.finalize(model=encoder.identity, corpus=corpus, prefix=prefix, provenance=provenance)
    if checkpoint is not None and Path(checkpoint).exists():
        Path(checkpoint).unlink()
    return stats


def _load_batch(
    encoder: ClipEncoder, batch: list[tuple[Path, list[str]]], prefix: str, on_error: str
) -> tuple[Optional[Any], list[str], list[str]]:
    """Decode and preprocess one batch of images: (pixels or None, captions with prefix, skipped paths)."""
    images, captions, skipped = [], [], []
    for path, texts in batch:
        try:
            images.append(load_rgb(path))
        except ImageLoadError as err:
            if on_error == "raise":
                raise
            logger.warning("Skipping %s and its %d caption(s): %s", path, len(texts), err)
            skipped.append(str(path))
            continue
        captions.extend(prefix + text for text in texts)
    pixels = encoder.preprocess(images) if images else None
    return pixels, captions, skipped


def _add_batch(
    encoder: ClipEncoder, accumulator: StatisticsAccumulator, pixels: Optional[Any], captions: list[str], batch_size: int
) -> None:
    if pixels is not None:
        accumulator.add_images(encoder.encode_pixels(pixels).numpy())
    for start in range(0, len(captions), batch_size):
        input_ids, attention_mask, _ = encoder.tokenize(captions[start : start + batch_size])
        accumulator.add_texts(encoder.encode_texts(input_ids, attention_mask).numpy())
    accumulator.num_pairs += len(captions)


def _fingerprint(encoder: ClipEncoder, groups: list[tuple[Path, list[str]]], prefix: str, batch_size: int) -> str:
    # A checkpoint is only valid for the same pairs in the same order, model,
    # prefix, dtype and batch size (batches decide which images share a forward pass).
    # The digest is fed group by group, so no second copy of the corpus is built.
    digest = hashlib.sha256()
    settings = {
        "model": [encoder.identity.model_id, encoder.identity.revision, encoder.identity.weights_sha256],
        "prefix": prefix,
        "dtype": encoder.dtype_name,
        "batch_size": batch_size,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for path, captions in groups:
        digest.update(json.dumps([str(path), captions]).encode())
    return digest.hexdigest()


def _save_checkpoint(
    path: Union[str, os.PathLike], fingerprint: str, accumulator: StatisticsAccumulator, done: int, skipped: list[str]
) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "done_images": done,
        "skipped": skipped,
        "sums": accumulator.to_state(),
    }
    atomic_write(path, json.dumps(state))


def _load_checkpoint(
    path: Union[str, os.PathLike], fingerprint: str
) -> tuple[StatisticsAccumulator, int, list[str]]:
    with open(path, encoding="utf-8") as handle:
        state = json.load(handle)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an i0tscore statistics checkpoint.")
    if state.get("fingerprint") != fingerprint:
        raise ValueError(
            f"The checkpoint {path} was made for another corpus, model, prefix, dtype or batch size. "
            f"Delete it to start over, or resume with the original settings."
        )
    return StatisticsAccumulator.from_state(state["sums"]), int(state["done_images"]), list(state["skipped"])


def merge_statistics(parts: Sequence[Statistics]) -> Statistics:
    """Merge statistics built on shards of one corpus by adding their exact sums.

    The result equals, bit for bit, statistics built over the union of the
    shards' embeddings.

    Raises:
        ValueError: fewer than two parts, parts without sums, or parts built
            for different models, prefixes or dimensions.
    """
    if len(parts) < 2:
        raise ValueError(f"stats merge needs at least two statistics files, got {len(parts)}.")
    first = parts[0]
    for part in parts:
        if part.sums is None:
            raise ValueError(
                f"{part.source} stores no running sums, so it cannot be merged exactly; "
                f"rebuild it with `i0tscore stats build`."
            )
        for what, mine, theirs in (
            ("model", first.model, part.model),
            ("prefix", first.prefix, part.prefix),
            ("dimension", first.dim, part.dim),
        ):
            if mine != theirs:
                raise ValueError(f"Cannot merge {first.source} and {part.source}: their {what} differs ({mine!r} vs {theirs!r}).")

    accumulator = StatisticsAccumulator.from_state(first.sums)
    for part in parts[1:]:
        accumulator.merge(StatisticsAccumulator.from_state(part.sums))
    corpora = sorted({part.corpus for part in parts})
    provenance = {
        "date": build_date(),
        "package_version": __version__,
        "merged_from": [part.checksum for part in parts],
        "corpus_path": sorted({str(part.provenance.get("corpus_path", "")) for part in parts}),
    }
    return accumulator.finalize(model=first.model, corpus=" + ".join(corpora), prefix=first.prefix, provenance=provenance)
