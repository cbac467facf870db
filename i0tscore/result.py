"""The result of scoring: per-item scores, flags, explanations and a signature."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from i0tscore import functional as F


@dataclass(frozen=True)
class Contribution:
    """One embedding dimension's share of an item's I0T-S.

    Attributes:
        dim: index of the embedding dimension.
        image_value: standardized image embedding x'_d.
        text_value: standardized caption embedding y'_d.
        contribution: x'_d · y'_d; the contributions of all dimensions sum to the cosine x'·y'.
        share: contribution divided by the cosine x'·y' (NaN when the cosine is 0).
    """

    dim: int
    image_value: float
    text_value: float
    contribution: float
    share: float


@dataclass(eq=False)
class ScoreResult:
    """Scores of N image–caption items.

    Scores are float64 numpy arrays of length N. An item that failed to load
    (only with ``on_error="skip"``) has NaN scores and a message in ``errors``.

    Attributes:
        i0t_s: I0T-S per item. With the ``default`` preset the cosine x'·y'
            in [−1, 1]; with the ``paper`` preset 2 · max(x'·y', 0).
        clip_s: CLIP-S = 2.5 · max(x·y, 0) per item.
        ref_clip_s: RefCLIP-S per item, when references were given.
        ref_i0t_s: Ref-I0T-S per item, when references were given.
        truncated: True where the caption was cut to the model's maximum length.
        errors: item index → error message, for items skipped on error.
        signature: the package version, model, revision, statistics checksum,
            prefix, preset and dtype that produced these scores.
    """

    i0t_s: np.ndarray
    clip_s: np.ndarray
    truncated: np.ndarray
    signature: str
    ref_clip_s: Optional[np.ndarray] = None
    ref_i0t_s: Optional[np.ndarray] = None
    errors: dict[int, str] = field(default_factory=dict)

    # Per-item embeddings (float64, N×D) and the means used, kept for explanations.
    image_embeds: Optional[torch.Tensor] = field(default=None, repr=False)
    text_embeds: Optional[torch.Tensor] = field(default=None, repr=False)
    image_mean: Optional[torch.Tensor] = field(default=None, repr=False)
    text_mean: Optional[torch.Tensor] = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.i0t_s.shape[0])

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask of items that were scored (not skipped on error)."""
        return ~np.isnan(self.i0t_s)

    @property
    def mean_i0t_s(self) -> float:
        """Mean I0T-S over scored items."""
        return float(np.nanmean(self.i0t_s)) if self.valid.any() else float("nan")

    @property
    def mean_clip_s(self) -> float:
        """Mean CLIP-S over scored items."""
        return float(np.nanmean(self.clip_s)) if self.valid.any() else float("nan")

    def _require_embeddings(self) -> None:
        if self.image_embeds is None:
            raise ValueError("This result contains no embeddings, so it cannot explain its scores.")
        if self.image_mean is None:
            raise ValueError(
                "Scores from I0T_async layers have no modality means, so they have no per-dimension "
                "contributions or cosine split. Score with statistics (stats=...) to explain them."
            )

    def standardized_cosine(self) -> np.ndarray:
        """Return the cosine x'·y' per item, before the preset's weight and clipping."""
        self._require_embeddings()
        return F.i0t_score(self.image_embeds, self.text_embeds, self.image_mean, self.text_mean).numpy()

    def contributions(self) -> np.ndarray:
        """Per-dimension contributions x'_d · y'_d, shape (N, D); row n sums to item n's cosine x'·y'."""
        self._require_embeddings()
        std_image = F.standardize(self.image_embeds, self.image_mean)
        std_text = F.standardize(self.text_embeds, self.text_mean)
        return F.contributions(std_image, std_text).numpy()

    def top_contributions(self, index: int, k: int = 10) -> list[Contribution]:
        """The k dimensions with the largest |contribution| for item ``index``."""
        self._require_embeddings()
        std_image = F.standardize(self.image_embeds[index : index + 1], self.image_mean)[0]
        std_text = F.standardize(self.text_embeds[index : index + 1], self.text_mean)[0]
        contribs = std_image * std_text
        total = float(contribs.sum())
        dims, values = F.top_contributions(contribs, k)
        return [
            Contribution(
                dim=int(d),
                image_value=float(std_image[d]),
                text_value=float(std_text[d]),
                contribution=float(v),
                share=float(v) / total if total != 0 else float("nan"),
            )
            for d, v in zip(dims.tolist(), values.tolist())
        ]

    def cosine_split(self) -> F.CosineSplit:
        """The raw cosine x·y per item, split into the part standardization keeps and the part the means add."""
        self._require_embeddings()
        split = F.cosine_split(self.image_embeds, self.text_embeds, self.image_mean, self.text_mean)
        return F.CosineSplit(kept=split.kept.numpy(), from_means=split.from_means.numpy())

    def to_records(self, *, ids: Optional[list[Any]] = None) -> list[dict[str, Any]]:
        """One JSON-ready dict per item; skipped items carry ``error`` and no scores."""
        records = []
        for n in range(len(self)):
            record: dict[str, Any] = {"id": ids[n] if ids is not None else n}
            if n in self.errors:
                record["error"] = self.errors[n]
            else:
                record["i0t_s"] = float(self.i0t_s[n])
                record["clip_s"] = float(self.clip_s[n])
                if self.ref_i0t_s is not None:
                    record["ref_i0t_s"] = float(self.ref_i0t_s[n])
                if self.ref_clip_s is not None:
                    record["ref_clip_s"] = float(self.ref_clip_s[n])
            record["truncated"] = bool(self.truncated[n])
            records.append(record)
        return records
