"""Agreement between metric scores and human judgments: rank correlations and pairwise accuracies."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

from correlation.loaders import PASCAL_CATEGORIES, FoilPair, PascalPair


def correlations(metric: Sequence[float], human: Sequence[float]) -> dict[str, float]:
    """Kendall τ-c, Kendall τ-b and Pearson r between metric scores and human ratings, all × 100.

    Flickr8k-Expert and Composite are reported as τ-c and Flickr8k-CF as τ-b
    (Hessel et al. 2021, following Anderson et al. 2016); the other two are
    given beside for comparison.

    Raises:
        ValueError: the inputs differ in length, have fewer than 2 rows, or contain NaN.
    """
    x = np.asarray(metric, dtype=np.float64)
    y = np.asarray(human, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"need two 1-D arrays of the same length (at least 2), got shapes {x.shape} and {y.shape}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("metric or human scores contain NaN; drop unscored rows first")
    return {
        "tau_c": 100 * float(stats.kendalltau(x, y, variant="c").statistic),
        "tau_b": 100 * float(stats.kendalltau(x, y, variant="b").statistic),
        "pearson": 100 * float(stats.pearsonr(x, y).statistic),
        "n": int(x.size),
    }


def pairwise_accuracy(preferred: Sequence[float], other: Sequence[float]) -> float:
    """Fraction of pairs where the metric scores the human-preferred caption higher, × 100.

    A tie counts as half, the expected value of breaking it at random.
    """
    a = np.asarray(preferred, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two non-empty arrays of the same shape, got {a.shape} and {b.shape}")
    return 100 * float(np.mean((a > b) + 0.5 * (a == b)))


def pascal_human_prefers_a(pairs: Sequence[PascalPair], rng: np.random.Generator) -> np.ndarray:
    """Return whether the human majority prefers caption A, breaking equal votes at random with ``rng``."""
    votes_a = np.array([pair.votes_a for pair in pairs])
    votes_b = np.array([pair.votes_b for pair in pairs])
    coin = rng.random(len(pairs)) < 0.5
    return np.where(votes_a == votes_b, coin, votes_a > votes_b)


def pascal_accuracy(pairs: Sequence[PascalPair], scores_a: np.ndarray, scores_b: np.ndarray, prefers_a: np.ndarray) -> dict[str, float]:
    """Pascal-50S accuracy per category (HC, HI, HM, MM) and their mean, × 100.

    Args:
        pairs: the pairs, for their categories.
        scores_a: metric score of caption A per pair.
        scores_b: metric score of caption B per pair.
        prefers_a: human preference per pair (see :func:`pascal_human_prefers_a`).
    """
    scores_a, scores_b = np.asarray(scores_a), np.asarray(scores_b)
    preferred = np.where(prefers_a, scores_a, scores_b)
    other = np.where(prefers_a, scores_b, scores_a)
    categories = np.array([pair.category for pair in pairs])
    result = {}
    for code, name in PASCAL_CATEGORIES.items():
        mask = categories == code
        result[name] = pairwise_accuracy(preferred[mask], other[mask]) if mask.any() else float("nan")
    present = [value for value in result.values() if not np.isnan(value)]
    result["mean"] = float(np.mean(present))
    return result


def sample_references(references: Sequence[Sequence[str]], count: int, rng: np.random.Generator) -> list[list[str]]:
    """Draw ``count`` references per item without replacement (all of them where fewer exist)."""
    sampled = []
    for refs in references:
        order = rng.permutation(len(refs))[:count]
        sampled.append([refs[index] for index in sorted(order)])
    return sampled


def foil_references(pairs: Sequence[FoilPair], count: int) -> list[list[str]]:
    """Return the first ``count`` references of each FOIL pair, in COCO annotation-id order."""
    return [list(pair.references[:count]) for pair in pairs]
