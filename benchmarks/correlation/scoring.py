"""Score benchmark rows with every metric while encoding each image and text once.

Uses only the public API of ``i0tscore``. The model runs once per distinct image
and text, and the six metrics come from ``I0TScore.score_embeddings`` with one
scorer per preset that share fixed statistics.
"""

from __future__ import annotations

from typing import Hashable, Optional, Sequence

import numpy as np
import torch

from i0tscore import I0TScore, Statistics, StatisticsError

METRICS = ("clip_s", "ref_clip_s", "i0t_s", "i0t_s_paper", "ref_i0t_s", "ref_i0t_s_paper")
"""Metric keys: I0T-S and Ref-I0T-S under the ``default`` preset, and with ``_paper`` under ``paper``."""

METRIC_LABELS = {
    "clip_s": "CLIP-S",
    "ref_clip_s": "RefCLIP-S",
    "i0t_s": "I0T-S (default)",
    "i0t_s_paper": "I0T-S (paper)",
    "ref_i0t_s": "Ref-I0T-S (default)",
    "ref_i0t_s_paper": "Ref-I0T-S (paper)",
}


class BenchmarkScorer:
    """Encode a benchmark's images and texts once, then score rows with all metrics.

    Args:
        model: hub id or local CLIP folder.
        stats: as ``I0TScore(stats=...)``. ``"auto"`` takes the shipped
            statistics and falls back to ``"corpus"`` when none are shipped.
        device: ``cpu``, ``cuda`` or None for the first available.
        batch_size: images or texts per forward pass.

    With ``"corpus"`` statistics the means come from the distinct images and
    candidate captions passed to :meth:`fix_statistics`, as ``I0TScore.score``
    takes them from the scored set.
    """

    def __init__(self, model: str, stats: Optional[str] = "auto", *, device: Optional[str] = None, batch_size: int = 64) -> None:
        self.model = str(model)
        self.device = device
        self.batch_size = batch_size
        self.stats_mode = stats
        if stats == "auto":
            try:
                self.encoder = I0TScore(model, stats=None, device=device, batch_size=batch_size)
                self.stats_mode = "shipped"
            except StatisticsError:
                self.encoder = I0TScore(model, stats="corpus", device=device, batch_size=batch_size)
                self.stats_mode = "corpus"
        else:
            self.encoder = I0TScore(model, stats=stats, device=device, batch_size=batch_size)
        self._images: dict[Hashable, torch.Tensor] = {}
        self._texts: dict[str, torch.Tensor] = {}
        self.scorers: dict[str, I0TScore] = {}

    @property
    def uses_corpus(self) -> bool:
        """Whether the means come from the scored set rather than from a statistics file."""
        return not isinstance(self.encoder.stats, Statistics)

    def encode(self, images: Sequence, texts: Sequence[str], image_keys: Optional[Sequence[Hashable]] = None) -> None:
        """Encode the images and texts not encoded yet. Keys default to the images themselves (paths)."""
        keys = list(image_keys) if image_keys is not None else list(images)
        new_images = {key: image for key, image in zip(keys, images) if key not in self._images}
        if new_images:
            embeds = self.encoder.encode_images(list(new_images.values()))
            self._images.update(zip(new_images, embeds))
        new_texts = sorted(set(texts) - set(self._texts))
        if new_texts:
            embeds, _ = self.encoder.encode_texts(new_texts)
            self._texts.update(zip(new_texts, embeds))

    def fix_statistics(self, image_keys: Sequence[Hashable], captions: Sequence[str]) -> None:
        """Create the two preset scorers with statistics fixed for the whole benchmark.

        Args:
            image_keys: keys of the scored images (distinct ones count once).
            captions: the candidate captions (distinct ones count once).
        """
        stats = self.encoder.stats
        if self.uses_corpus:
            image_rows = torch.stack([self._images[key] for key in dict.fromkeys(image_keys)])
            text_rows = torch.stack([self._texts[text] for text in dict.fromkeys(captions)])
            stats = Statistics.from_embeddings(
                image_rows.numpy(),
                text_rows.numpy(),
                model=self.encoder.encoder.identity,
                corpus="scored set",
                prefix=self.encoder.prefix,
                num_pairs=len(captions),
            )
        # NOTE: each new I0TScore loads the model again (up to three copies with
        # corpus statistics), because the public API has no way to share an encoder.
        if self.uses_corpus:
            self.scorers["default"] = I0TScore(self.model, stats=stats, device=self.device, batch_size=self.batch_size)
        else:
            self.scorers["default"] = self.encoder
        self.scorers["paper"] = I0TScore(self.model, stats=stats, device=self.device, batch_size=self.batch_size, preset="paper")

    def score(self, image_keys: Sequence[Hashable], captions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Return every metric in ``METRICS`` per row, from the cached embeddings."""
        if not self.scorers:
            raise RuntimeError("call fix_statistics() before score()")
        images = torch.stack([self._images[key] for key in image_keys])
        texts = torch.stack([self._texts[text] for text in captions])
        refs = [torch.stack([self._texts[text] for text in row]) for row in references]
        default = self.scorers["default"].score_embeddings(images, texts, reference_embeds=refs)
        paper = self.scorers["paper"].score_embeddings(images, texts, reference_embeds=refs)
        return {
            "clip_s": default.clip_s,
            "ref_clip_s": default.ref_clip_s,
            "i0t_s": default.i0t_s,
            "i0t_s_paper": paper.i0t_s,
            "ref_i0t_s": default.ref_i0t_s,
            "ref_i0t_s_paper": paper.ref_i0t_s,
        }

    def signatures(self) -> dict[str, str]:
        """Scorer signature per preset (model, revision, statistics checksum, prefix, preset, dtype)."""
        return {preset: scorer.signature for preset, scorer in self.scorers.items()}
