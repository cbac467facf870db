"""The formulas of I0T-S, CLIP-S and their reference-based variants.

Pure tensor math: this module imports torch only, never transformers, so the
numbers can be checked (and reused) without a model. Every function takes
row-wise embeddings of shape (N, D) and returns one value per row unless it says
otherwise.

Notation: x is an image embedding, y a caption embedding, both L2-normalized;
x̄ and ȳ are the means of L2-normalized image and text embeddings over a
reference set (the statistics). Standardization is x' = (x − x̄) / ‖x − x̄‖.
Source: An et al., "I0T: Embedding Standardization Method Towards Zero Modality
Gap", ACL 2025; Hessel et al., "CLIPScore", EMNLP 2021.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

CLIP_S_WEIGHT = 2.5
"""Weight w of CLIP-S = w · max(cos, 0), as in Hessel et al. (2021)."""

PAPER_WEIGHT = 2.0
"""Weight the I0T authors' correlation code applied to the standardized cosine."""

_EPS = 1e-12


def l2_normalize(embeds: torch.Tensor) -> torch.Tensor:
    """Scale each row to unit L2 norm; an all-zero row stays zero."""
    norms = torch.linalg.vector_norm(embeds, dim=-1, keepdim=True)
    return embeds / norms.clamp_min(_EPS)


def standardize(embeds: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Subtract a modality mean from L2-normalized rows and renormalize.

    Args:
        embeds: (N, D) L2-normalized embeddings of one modality.
        mean: (D,) mean of L2-normalized embeddings of the same modality.

    Returns:
        (N, D) unit rows x' = (x − x̄) / ‖x − x̄‖.
    """
    return l2_normalize(embeds - mean.to(embeds.dtype))


def cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of two (N, D) arrays of unit rows (a plain dot product)."""
    return (x * y).sum(dim=-1)


def i0t_score(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    image_mean: torch.Tensor,
    text_mean: torch.Tensor,
) -> torch.Tensor:
    """I0T-S = x'·y', the cosine after standardization, in [−1, 1].

    No weight and no clipping: this is the definition in An et al. (2025).
    """
    return cosine(standardize(image_embeds, image_mean), standardize(text_embeds, text_mean))


def clip_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor, weight: float = CLIP_S_WEIGHT) -> torch.Tensor:
    """CLIP-S = w · max(x·y, 0), clipped per pair (Hessel et al., 2021)."""
    return weight * cosine(image_embeds, text_embeds).clamp_min(0.0)


def harmonic_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise 2ab / (a + b), defined as 0 where a + b is 0 (never NaN).

    Both inputs are expected to be non-negative, as clipped scores are. Where
    a negative value makes a + b vanish, the result is 0 as well.
    """
    total = a + b
    safe_total = torch.where(total == 0, torch.ones_like(total), total)
    return torch.where(total == 0, torch.zeros_like(total), 2 * a * b / safe_total)


def max_reference_cosine(
    candidate_embeds: torch.Tensor,
    reference_embeds: torch.Tensor,
    reference_owner: torch.Tensor,
) -> torch.Tensor:
    """Max cosine between each candidate and its own references.

    References of all candidates are stacked in one array; ``reference_owner``
    gives, for each reference row, the index of the candidate it belongs to.

    Args:
        candidate_embeds: (N, D) unit rows.
        reference_embeds: (R, D) unit rows.
        reference_owner: (R,) int64 indices in [0, N).

    Returns:
        (N,) maximum cosine per candidate; −inf for a candidate without references.
    """
    cosines = cosine(candidate_embeds[reference_owner], reference_embeds)
    best = torch.full(
        (candidate_embeds.shape[0],), float("-inf"), dtype=cosines.dtype, device=cosines.device
    )
    return best.scatter_reduce(0, reference_owner, cosines, reduce="amax", include_self=True)


def contributions(std_image_embeds: torch.Tensor, std_text_embeds: torch.Tensor) -> torch.Tensor:
    """Per-dimension contributions x'_d · y'_d, shape (N, D).

    Because x' and y' are unit vectors, each row sums to that pair's I0T-S.
    """
    return std_image_embeds * std_text_embeds


def top_contributions(contribs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and values of the k dimensions with the largest |contribution|, per row."""
    k = min(k, contribs.shape[-1])
    indices = contribs.abs().topk(k, dim=-1).indices
    return indices, contribs.gather(-1, indices)


class CosineSplit(NamedTuple):
    """The raw cosine x·y split into what standardization keeps and what the means add.

    ``kept + from_means == x·y`` up to rounding.
    """

    kept: torch.Tensor
    """(x − x̄)·(y − ȳ): the part of the raw cosine that survives mean removal."""

    from_means: torch.Tensor
    """x̄·y + x·ȳ − x̄·ȳ: the part the modality means contribute."""


def cosine_split(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    image_mean: torch.Tensor,
    text_mean: torch.Tensor,
) -> CosineSplit:
    """Split each pair's raw cosine into the part standardization keeps and the part the means add."""
    image_mean = image_mean.to(image_embeds.dtype)
    text_mean = text_mean.to(text_embeds.dtype)
    kept = cosine(image_embeds - image_mean, text_embeds - text_mean)
    from_means = text_embeds @ image_mean + image_embeds @ text_mean - image_mean @ text_mean
    return CosineSplit(kept=kept, from_means=from_means)


def centroid_distance(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """‖x̄ − ȳ‖: the distance between the modality means of L2-normalized embeddings."""
    return torch.linalg.vector_norm(image_embeds.mean(dim=0) - text_embeds.mean(dim=0))
