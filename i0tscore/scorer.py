"""The I0T-S scorer: one class that encodes, standardizes and scores."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from i0tscore import functional as F
from i0tscore._version import __version__
from i0tscore.asyncnorm import AsyncNorm, async_score
from i0tscore.cache import CacheLike, EmbeddingCache, resolve_cache
from i0tscore.images import ImageInput, ImageLoadError, content_key, describe, load_rgb
from i0tscore.model import DEFAULT_MODEL, ClipEncoder, load_clip
from i0tscore.prefetch import prefetch
from i0tscore.result import ScoreResult
from i0tscore.statistics import DEFAULT_PREFIX, Statistics, resolve_statistics

logger = logging.getLogger(__name__)

MIN_CORPUS_PAIRS = 32
"""Below this many pairs, means taken from the scored set are noisy (An et al. 2025 measure a
centroid distance of 0.19 left after standardizing with 32 pairs, 0.01 with 1,000)."""


@dataclass(frozen=True)
class Preset:
    """How the standardized cosine x'·y' becomes the reported I0T-S: weight · (clip ? max(c, 0) : c)."""

    weight: float
    clip: bool


PRESETS = {
    "default": Preset(weight=1.0, clip=False),
    # The I0T authors' correlation code: 2.0 · max(x'·y', 0) with the CLIP-S prefix.
    "paper": Preset(weight=F.PAPER_WEIGHT, clip=True),
}


class I0TScore:
    """Score captions against images with I0T-S, CLIP-S and their reference-based variants.

    The model is loaded once, on construction. Statistics are resolved once too:
    ``stats=None`` takes the statistics shipped for the model, a path or a
    shipped name loads a file, and ``"corpus"`` takes the means from each set
    passed to :meth:`score` (so scores then depend on the rest of the set).

    Args:
        model: a hub id or a local folder with a CLIP checkpoint (safetensors).
        stats: None, a statistics file path, a shipped name, ``"corpus"``, or a
            :class:`~i0tscore.statistics.Statistics`.
        layers: instead of statistics, a file of I0T_async normalization
            layers trained for the model (``i0tscore train-async``). Single
            pairs are then scored without corpus statistics.
        revision: hub revision of the model.
        device: ``cuda``, ``mps``, ``cpu``, or None for the first available.
        dtype: ``float32`` (default), ``bfloat16``, or ``float16`` on a GPU.
        preset: ``default`` (I0T-S = x'·y', no weight, no clipping) or
            ``paper`` (2.0 · max(x'·y', 0), as the I0T authors computed their tables).
        prefix: text put before every caption and reference. None uses the
            prefix the statistics were built with (``"A photo depicts "`` for
            the shipped ones and for ``"corpus"``).
        batch_size: images or captions per forward pass.
        progress: show a progress bar; None shows one when stderr is a terminal
            and there are more than ``batch_size`` inputs to encode.
        allow_model_mismatch: accept statistics built for another model.
        cache: keep image embeddings between calls: a folder (kept on disk
            and in memory), an :class:`~i0tscore.cache.EmbeddingCache`, or
            None (no cache). Entries are keyed by image content, model,
            weights, dtype and preprocessing, so a changed file or model
            never gets a stale embedding. Evaluation loops that score the same
            validation images every epoch then encode each image once.

    Raises:
        StatisticsError: no statistics for this model, or statistics for
            another model or dimension.
        ModelLoadError: the model cannot be found or loaded.

    Example:
        >>> scorer = I0TScore(model="tests/assets/synthclip/model")  # doctest: +SKIP
        >>> result = scorer.score(["examples/images/cat.png"], ["a cat on a blanket"])  # doctest: +SKIP
        >>> result.i0t_s, result.clip_s, result.signature  # doctest: +SKIP

    Note:
        Text embeddings depend on the caption prefix, so statistics must be
        built with the prefix used for scoring. Means taken over another image
        and caption distribution than the scored one leave part of the modality
        gap in place; ``i0tscore gap`` measures how much.
    """

    def __init__(
        self,
        model: Union[str, "os.PathLike[str]"] = DEFAULT_MODEL,
        *,
        stats: Union[None, str, "os.PathLike[str]", Statistics] = None,
        layers: Union[None, str, "os.PathLike[str]", AsyncNorm] = None,
        revision: Optional[str] = None,
        device: Union[None, str, torch.device] = None,
        dtype: Union[str, torch.dtype] = "float32",
        preset: str = "default",
        prefix: Optional[str] = None,
        batch_size: int = 64,
        progress: Optional[bool] = None,
        allow_model_mismatch: bool = False,
        cache: CacheLike = None,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; expected one of {', '.join(PRESETS)}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")

        self.encoder: ClipEncoder = load_clip(model, revision=revision, device=device, dtype=dtype)
        self.layers: Optional[AsyncNorm] = None
        if layers is not None:
            if stats is not None:
                raise ValueError("Pass either stats (I0T_post) or layers (I0T_async), not both.")
            self.layers = layers if isinstance(layers, AsyncNorm) else AsyncNorm.load(layers)
            self.layers.check_model(self.encoder.identity, self.encoder.dim, allow_model_mismatch=allow_model_mismatch)
            self.stats = None
        else:
            self.stats = resolve_statistics(stats, self.encoder.identity)
            if isinstance(self.stats, Statistics):
                self.stats.check_model(self.encoder.identity, self.encoder.dim, allow_model_mismatch=allow_model_mismatch)

        self.prefix = self._choose_prefix(prefix)
        self.preset_name = preset
        self.preset = PRESETS[preset]
        self.batch_size = batch_size
        self.progress = progress
        self.cache: Optional[EmbeddingCache] = resolve_cache(cache)
        if self.cache is not None:
            EmbeddingCache.check_encoder(self.encoder)

    def _choose_prefix(self, prefix: Optional[str]) -> str:
        trained = self.layers if self.layers is not None else self.stats
        stats_prefix = trained.prefix if isinstance(trained, (Statistics, AsyncNorm)) else DEFAULT_PREFIX
        if prefix is None:
            return stats_prefix
        if isinstance(trained, (Statistics, AsyncNorm)) and prefix != stats_prefix:
            warnings.warn(
                f"Caption prefix {prefix!r} differs from the prefix {stats_prefix!r} that the statistics "
                f"{trained.source} were built with; the text mean will not match the captions. "
                f"Build statistics with --prefix {prefix!r}, or leave the prefix unset.",
                stacklevel=3,
            )
        return prefix

    # ------------------------------------------------------------------ public API

    @property
    def uses_corpus_means(self) -> bool:
        """True with ``stats="corpus"``: each score then depends on the rest of the scored set."""
        return self.layers is None and not isinstance(self.stats, Statistics)

    @property
    def signature(self) -> str:
        """What produced the scores: package, model, revision, statistics, prefix, preset, dtype.

        With ``stats="corpus"`` the statistics part reads ``corpus``; each
        result's own signature adds the checksum of the means it used.
        """
        return self._signature(self.stats if isinstance(self.stats, Statistics) else None)

    def score(
        self,
        images: Sequence[ImageInput],
        captions: Sequence[str],
        references: Optional[Sequence[Sequence[str]]] = None,
        *,
        on_error: str = "raise",
    ) -> ScoreResult:
        """Score each caption against its image.

        Identical images (same path, same PIL object, or same array bytes) and
        identical captions are encoded once per call.

        Args:
            images: N images (paths, PIL images, uint8 arrays or tensors).
            captions: N candidate captions.
            references: optional N lists of reference captions, each non-empty;
                adds RefCLIP-S and Ref-I0T-S.
            on_error: ``"raise"`` stops at the first image that cannot be read;
                ``"skip"`` gives that item NaN scores and an entry in ``errors``.

        Raises:
            ValueError: mismatched lengths, empty captions or reference lists.
            ImageLoadError: an unreadable image, with ``on_error="raise"``.
        """
        _check_inputs(images, captions, references)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")

        image_keys = [content_key(image) for image in images]
        unique_images, image_rows = _unique(images, image_keys)
        texts = [self.prefix + caption for caption in captions]
        ref_texts, ref_owner = _flatten_references(references, self.prefix)
        unique_texts, text_rows = _unique(texts + ref_texts, texts + ref_texts)

        with self._progress_bar(len(unique_images) + len(unique_texts)) as bar:
            image_embeds, failures = self._encode_images(unique_images, on_error, bar)
            text_embeds, text_truncated = self._encode_texts(unique_texts, bar)

        caption_rows = text_rows[: len(texts)]
        truncated = np.array([text_truncated[row] for row in caption_rows], dtype=bool)
        self._warn_truncated(truncated, [text_truncated[row] for row in text_rows[len(texts) :]])

        errors = {n: failures[row] for n, row in enumerate(image_rows) if row in failures}
        valid = np.array([n not in errors for n in range(len(images))], dtype=bool)
        stats = self._statistics_for(image_embeds, text_embeds, image_rows, caption_rows, valid)

        reference_embeds = text_embeds[text_rows[len(texts) :]] if references is not None else None
        return self._score(
            image_embeds[image_rows],
            text_embeds[caption_rows],
            stats,
            truncated=truncated,
            reference_embeds=reference_embeds,
            reference_owner=ref_owner,
            errors=errors,
        )

    def score_embeddings(
        self,
        image_embeds: Any,
        text_embeds: Any,
        *,
        reference_embeds: Optional[Sequence[Any]] = None,
    ) -> ScoreResult:
        """Score precomputed embeddings of this scorer's model.

        Args:
            image_embeds: (N, D) image embeddings (normalized here).
            text_embeds: (N, D) caption embeddings, encoded with this scorer's prefix.
            reference_embeds: optional N arrays of shape (R_n, D), each R_n ≥ 1.

        Raises:
            ValueError: shapes that do not match each other or the model's dimension.
        """
        images = _as_embeddings(image_embeds, "image_embeds", self.encoder.dim)
        texts = _as_embeddings(text_embeds, "text_embeds", self.encoder.dim)
        if images.shape[0] != texts.shape[0]:
            raise ValueError(
                f"image_embeds has {images.shape[0]} rows but text_embeds has {texts.shape[0]}; "
                f"row n of each must be a matched pair."
            )

        refs, owner = None, None
        if reference_embeds is not None:
            if len(reference_embeds) != images.shape[0]:
                raise ValueError(
                    f"reference_embeds has {len(reference_embeds)} entries for {images.shape[0]} items; "
                    f"give one (R, D) array per item."
                )
            blocks = [_as_embeddings(block, f"reference_embeds[{n}]", self.encoder.dim) for n, block in enumerate(reference_embeds)]
            for n, block in enumerate(blocks):
                if block.shape[0] == 0:
                    raise ValueError(f"reference_embeds[{n}] is empty; every item needs at least one reference.")
            refs = torch.cat(blocks)
            owner = torch.cat([torch.full((b.shape[0],), n, dtype=torch.long) for n, b in enumerate(blocks)])

        valid = np.ones(images.shape[0], dtype=bool)
        rows = np.arange(images.shape[0])
        stats = self._statistics_for(images, texts, rows, rows, valid)
        return self._score(
            images,
            texts,
            stats,
            truncated=np.zeros(images.shape[0], dtype=bool),
            reference_embeds=refs,
            reference_owner=owner,
            errors={},
        )

    def encode_images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """L2-normalized image embeddings (N, D), float32, each distinct image encoded once."""
        unique_images, rows = _unique(images, [content_key(image) for image in images])
        with self._progress_bar(len(unique_images)) as bar:
            embeds, _ = self._encode_images(unique_images, "raise", bar)
        return embeds[rows]

    def encode_texts(self, captions: Sequence[str]) -> tuple[torch.Tensor, np.ndarray]:
        """L2-normalized caption embeddings (N, D) with the scorer's prefix, and truncation flags."""
        _check_captions(captions)
        texts = [self.prefix + caption for caption in captions]
        unique_texts, rows = _unique(texts, texts)
        with self._progress_bar(len(unique_texts)) as bar:
            embeds, truncated = self._encode_texts(unique_texts, bar)
        flags = np.array([truncated[row] for row in rows], dtype=bool)
        self._warn_truncated(flags, [])
        return embeds[rows], flags

    # ------------------------------------------------------------------ encoding

    def _encode_images(self, images: list[ImageInput], on_error: str, bar: Any) -> tuple[torch.Tensor, dict[int, str]]:
        if self.cache is None:
            return self._encode_uncached(images, on_error, bar)
        return self.cache.encode_images(
            images, self.encoder, lambda misses: self._encode_uncached(misses, on_error, bar), progress=bar
        )

    def _encode_uncached(self, images: list[ImageInput], on_error: str, bar: Any) -> tuple[torch.Tensor, dict[int, str]]:
        embeds = torch.zeros((len(images), self.encoder.dim), dtype=torch.float32)
        failures: dict[int, str] = {}

        def load(rows: range) -> tuple[list[int], Optional[torch.Tensor], dict[int, str]]:
            batch_rows, batch_images, batch_failures = [], [], {}
            for row in rows:
                try:
                    batch_images.append(load_rgb(images[row]))
                    batch_rows.append(row)
                except ImageLoadError as err:
                    if on_error == "raise":
                        raise
                    logger.warning("Skipping image %s: %s", describe(images[row]), err)
                    batch_failures[row] = str(err)
            pixels = self.encoder.preprocess(batch_images) if batch_images else None
            return batch_rows, pixels, batch_failures

        starts = range(0, len(images), self.batch_size)
        batches = (range(start, min(start + self.batch_size, len(images))) for start in starts)
        for rows, (batch_rows, pixels, batch_failures) in prefetch(batches, load):
            failures.update(batch_failures)
            if pixels is not None:
                embeds[batch_rows] = self.encoder.encode_pixels(pixels)
            bar.update(len(rows))
        return embeds, failures

    def _encode_texts(self, texts: list[str], bar: Any) -> tuple[torch.Tensor, list[bool]]:
        embeds = torch.zeros((len(texts), self.encoder.dim), dtype=torch.float32)
        # Sorting by length keeps padding short within a batch; the order of
        # rows in the output is unaffected.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        flags = [False] * len(texts)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            input_ids, attention_mask, cut = self.encoder.tokenize([texts[i] for i in rows])
            embeds[rows] = self.encoder.encode_texts(input_ids, attention_mask)
            for row, flag in zip(rows, cut):
                flags[row] = flag
            bar.update(len(rows))
        return embeds, flags

    def _progress_bar(self, total: int):
        from tqdm.auto import tqdm

        enabled = self.progress
        if enabled is None:
            enabled = sys.stderr.isatty() and total > self.batch_size
        return tqdm(total=total, disable=not enabled, desc="encoding", unit="input", leave=False)

    def _warn_truncated(self, caption_flags: np.ndarray, reference_flags: list[bool]) -> None:
        count = int(caption_flags.sum()) + sum(reference_flags)
        if count:
            warnings.warn(
                f"{count} caption(s) or reference(s) exceeded the model's maximum of {self.encoder.max_length} "
                f"tokens (prefix included) and were truncated, keeping the end-of-text token last. "
                f"The per-item 'truncated' flag marks the captions.",
                stacklevel=3,
            )

    # ------------------------------------------------------------------ scoring

    def _statistics_for(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        image_rows: np.ndarray,
        caption_rows: np.ndarray,
        valid: np.ndarray,
    ) -> Optional[Statistics]:
        if self.layers is not None:
            return None
        if isinstance(self.stats, Statistics):
            return self.stats

        # stats="corpus": each distinct valid image and caption of the set counts once.
        used_images = np.unique(image_rows[valid])
        used_texts = np.unique(caption_rows[valid])
        pairs = int(valid.sum())
        if pairs < MIN_CORPUS_PAIRS:
            warnings.warn(
                f"stats='corpus' takes the modality means from only {pairs} pairs (fewer than "
                f"{MIN_CORPUS_PAIRS}); the means are noisy and part of the modality gap remains. "
                f"Score a larger set at once, or pass statistics built on a corpus.",
                stacklevel=4,
            )
        if pairs == 0:
            raise ValueError("stats='corpus' needs at least one scored pair, but every item failed.")
        return Statistics.from_embeddings(
            image_embeds[used_images].numpy(),
            text_embeds[used_texts].numpy(),
            model=self.encoder.identity,
            corpus="scored set",
            prefix=self.prefix,
            num_pairs=pairs,
        )

    def _score(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        stats: Optional[Statistics],
        *,
        truncated: np.ndarray,
        reference_embeds: Optional[torch.Tensor],
        reference_owner: Optional[torch.Tensor],
        errors: dict[int, str],
    ) -> ScoreResult:
        # Scores are computed in float64 on the CPU: N×D is small next to the
        # encoders, and float64 keeps each item's score independent of the batch.
        x = F.l2_normalize(image_embeds.double())
        y = F.l2_normalize(text_embeds.double())
        x_mean = y_mean = None
        if self.layers is not None:
            cosine_std = async_score(self.layers, x, y)
        else:
            x_mean = torch.from_numpy(stats.image_mean)
            y_mean = torch.from_numpy(stats.text_mean)
            cosine_std = F.i0t_score(x, y, x_mean, y_mean)
        i0t = self._apply_preset(cosine_std)
        clip = F.clip_score(x, y)

        ref_clip = ref_i0t = None
        if reference_embeds is not None:
            refs = F.l2_normalize(reference_embeds.double())
            best_raw = F.max_reference_cosine(y, refs, reference_owner).clamp_min(0.0)
            ref_clip = F.harmonic_mean(clip, best_raw)

            if self.layers is not None:
                std_refs, std_y = self.layers.transform_text(refs), self.layers.transform_text(y)
            else:
                std_refs, std_y = F.standardize(refs, y_mean), F.standardize(y, y_mean)
            best_std = F.max_reference_cosine(std_y, std_refs, reference_owner)
            # The harmonic mean needs non-negative terms, so both are clipped at 0 here.
            ref_i0t = F.harmonic_mean(i0t.clamp_min(0.0), best_std.clamp_min(0.0))

        def masked(values: Optional[torch.Tensor]) -> Optional[np.ndarray]:
            if values is None:
                return None
            array = values.numpy().copy()
            array[list(errors)] = np.nan
            return array

        return ScoreResult(
            i0t_s=masked(i0t),
            clip_s=masked(clip),
            ref_clip_s=masked(ref_clip),
            ref_i0t_s=masked(ref_i0t),
            truncated=truncated,
            signature=self._signature(stats),
            errors=errors,
            image_embeds=x,
            text_embeds=y,
            image_mean=x_mean,
            text_mean=y_mean,
        )

    def _apply_preset(self, cosine_std: torch.Tensor) -> torch.Tensor:
        values = cosine_std.clamp_min(0.0) if self.preset.clip else cosine_std
        return self.preset.weight * values

    def _signature(self, stats: Optional[Statistics]) -> str:
        identity = self.encoder.identity
        revision = identity.revision or (f"sha256:{identity.weights_sha256[:12]}" if identity.weights_sha256 else "unknown")
        if self.layers is not None:
            stats_part = f"async:{self.layers.checksum[:12]}"
        elif stats is None:
            stats_part = "corpus"
        elif stats.corpus == "scored set":
            stats_part = f"corpus:{stats.checksum[:12]}"
        else:
            stats_part = stats.checksum[:12]
        clip = "clip0" if self.preset.clip else "noclip"
        return (
            f"i0tscore={__version__}|model={identity.model_id}|revision={revision}|stats={stats_part}"
            f"|prefix={self.prefix!r}|preset={self.preset_name}:w{self.preset.weight:g}:{clip}"
            f"|dtype={self.encoder.dtype_name}"
        )


# ---------------------------------------------------------------------- helpers


def _check_captions(captions: Sequence[str], what: str = "captions") -> None:
    if isinstance(captions, str):
        raise TypeError(f"{what} must be a sequence of strings, not a single string.")
    for n, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TypeError(f"{what}[{n}] is a {type(caption).__name__}; expected a string.")
        if not caption.strip():
            raise ValueError(
                f"{what}[{n}] is empty or whitespace only ({caption!r}). An empty caption has no meaning "
                f"to score; remove the item or give it a caption."
            )


def _check_inputs(
    images: Sequence[ImageInput],
    captions: Sequence[str],
    references: Optional[Sequence[Sequence[str]]],
) -> None:
    if isinstance(images, (str, os.PathLike)) or not hasattr(images, "__len__"):
        raise TypeError("images must be a sequence (list or tuple) of images, one per caption.")
    _check_captions(captions)
    if len(images) != len(captions):
        raise ValueError(
            f"Got {len(images)} images and {len(captions)} captions; pass one image per caption "
            f"(repeat an image to score several captions against it)."
        )
    if references is None:
        return
    if len(references) != len(captions):
        raise ValueError(
            f"Got {len(references)} reference lists for {len(captions)} captions; pass one list per caption."
        )
    for n, refs in enumerate(references):
        if isinstance(refs, str):
            raise TypeError(f"references[{n}] is a string; expected a list of reference captions.")
        if len(refs) == 0:
            raise ValueError(f"references[{n}] is empty; every item needs at least one reference caption.")
        _check_captions(refs, what=f"references[{n}]")


def _unique(values: Sequence[Any], keys: Sequence[Any]) -> tuple[list[Any], np.ndarray]:
    """Distinct values by key, and for each input the row of its distinct value."""
    first: dict[Any, int] = {}
    unique: list[Any] = []
    rows = np.empty(len(values), dtype=np.int64)
    for n, (value, key) in enumerate(zip(values, keys)):
        if key not in first:
            first[key] = len(unique)
            unique.append(value)
        rows[n] = first[key]
    return unique, rows


def _flatten_references(
    references: Optional[Sequence[Sequence[str]]], prefix: str
) -> tuple[list[str], Optional[torch.Tensor]]:
    if references is None:
        return [], None
    texts = [prefix + ref for refs in references for ref in refs]
    owner = torch.tensor([n for n, refs in enumerate(references) for _ in refs], dtype=torch.long)
    return texts, owner


def _as_embeddings(value: Any, name: str, dim: int) -> torch.Tensor:
    tensor = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if tensor.ndim != 2 or tensor.shape[1] != dim:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected (N, {dim}) for this model.")
    if not torch.is_floating_point(tensor):
        raise ValueError(f"{name} has dtype {tensor.dtype}; expected floating-point embeddings.")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return tensor.double()
