"""The formulas of i0tscore.functional against plain numpy, on real CLIP embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from i0tscore import functional as F


def _normalize(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def pairs(real_features):
    image, text = real_features
    return image[:200], text[:200], image.mean(axis=0), text.mean(axis=0)


def test_i0t_score_matches_numpy(pairs):
    image, text, image_mean, text_mean = pairs
    expected = np.sum(_normalize(image - image_mean) * _normalize(text - text_mean), axis=1)

    actual = F.i0t_score(torch.from_numpy(image), torch.from_numpy(text), torch.from_numpy(image_mean), torch.from_numpy(text_mean))

    np.testing.assert_allclose(actual.numpy(), expected, rtol=0, atol=1e-12)


def test_i0t_score_centres_mismatched_pairs_on_real_clip(pairs):
    # With the gap removed, unrelated pairs score about 0 instead of about 0.16,
    # so matched pairs stand further above them than under the raw cosine.
    image, text, image_mean, text_mean = pairs
    off_diagonal = ~np.eye(len(image), dtype=bool)
    raw = image @ text.T
    x = F.standardize(torch.from_numpy(image), torch.from_numpy(image_mean)).numpy()
    y = F.standardize(torch.from_numpy(text), torch.from_numpy(text_mean)).numpy()
    standardized = x @ y.T

    assert raw[off_diagonal].mean() > 0.1
    assert abs(standardized[off_diagonal].mean()) < 0.02
    raw_margin = np.diag(raw).mean() - raw[off_diagonal].mean()
    standardized_margin = np.diag(standardized).mean() - standardized[off_diagonal].mean()
    assert standardized_margin > raw_margin + 0.1


def test_clip_score_clips_each_pair():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    text = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)

    scores = F.clip_score(image, text)

    np.testing.assert_allclose(scores.numpy(), [2.5, 0.0, 2.5 * 0.8], atol=1e-15)


def test_harmonic_mean_zero_when_both_zero():
    a = torch.tensor([0.0, 0.0, 1.0, 0.5], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0, 1.0, 0.25], dtype=torch.float64)

    result = F.harmonic_mean(a, b).numpy()

    assert not np.isnan(result).any()
    np.testing.assert_allclose(result, [0.0, 0.0, 1.0, 2 * 0.5 * 0.25 / 0.75], atol=1e-15)


def test_max_reference_cosine_per_owner(pairs):
    image, text, _, _ = pairs
    candidates = torch.from_numpy(text[:3])
    references = torch.from_numpy(text[3:9])
    owner = torch.tensor([0, 0, 1, 2, 2, 2])

    best = F.max_reference_cosine(candidates, references, owner).numpy()

    expected = [
        max(text[0] @ text[3], text[0] @ text[4]),
        text[1] @ text[5],
        max(text[2] @ text[6], text[2] @ text[7], text[2] @ text[8]),
    ]
    np.testing.assert_allclose(best, expected, atol=1e-12)


def test_contributions_sum_to_score_float64(pairs):
    image, text, image_mean, text_mean = pairs
    x = F.standardize(torch.from_numpy(image), torch.from_numpy(image_mean))
    y = F.standardize(torch.from_numpy(text), torch.from_numpy(text_mean))

    contribs = F.contributions(x, y)

    score = F.cosine(x, y)
    assert torch.max(torch.abs(contribs.sum(dim=1) - score)).item() < 1e-6


def test_contributions_sum_to_score_float32(pairs):
    image, text, image_mean, text_mean = (np.asarray(a, dtype=np.float32) for a in pairs)
    x = F.standardize(torch.from_numpy(image), torch.from_numpy(image_mean))
    y = F.standardize(torch.from_numpy(text), torch.from_numpy(text_mean))

    contribs = F.contributions(x, y)

    expected = np.sum(_normalize(pairs[0] - pairs[2]) * _normalize(pairs[1] - pairs[3]), axis=1)
    assert np.max(np.abs(contribs.sum(dim=1).numpy().astype(np.float64) - expected)) < 1e-5


def test_top_contributions_order(pairs):
    image, text, image_mean, text_mean = pairs
    x = _normalize(image[:1] - image_mean)
    y = _normalize(text[:1] - text_mean)
    products = (x * y)[0]
    expected = np.argsort(-np.abs(products))[:5]

    dims, values = F.top_contributions(torch.from_numpy(x * y), 5)

    assert dims[0].tolist() == expected.tolist()
    np.testing.assert_allclose(values[0].numpy(), products[expected], atol=1e-15)


def test_cosine_split_parts(pairs):
    image, text, image_mean, text_mean = pairs

    split = F.cosine_split(torch.from_numpy(image), torch.from_numpy(text), torch.from_numpy(image_mean), torch.from_numpy(text_mean))

    raw = np.sum(image * text, axis=1)
    kept = np.sum((image - image_mean) * (text - text_mean), axis=1)
    np.testing.assert_allclose(split.kept.numpy(), kept, atol=1e-12)
    np.testing.assert_allclose(split.kept.numpy() + split.from_means.numpy(), raw, atol=1e-12)


def test_cosine_split_means_dominate_real_clip(pairs):
    # On real CLIP most of a matched pair's raw cosine comes from the modality means.
    image, text, image_mean, text_mean = pairs
    split = F.cosine_split(torch.from_numpy(image), torch.from_numpy(text), torch.from_numpy(image_mean), torch.from_numpy(text_mean))
    assert split.from_means.mean().item() > split.kept.mean().item()


def test_centroid_distance_matches_numpy(real_features):
    image, text = real_features

    distance = F.centroid_distance(torch.from_numpy(image), torch.from_numpy(text)).item()

    assert distance == pytest.approx(np.linalg.norm(image.mean(axis=0) - text.mean(axis=0)), abs=1e-12)
    assert 0.8 < distance < 0.9


def test_standardize_removes_gap(real_features):
    image, text = real_features
    x = F.standardize(torch.from_numpy(image), torch.from_numpy(image.mean(axis=0)))
    y = F.standardize(torch.from_numpy(text), torch.from_numpy(text.mean(axis=0)))

    # Renormalization moves the means a little off zero; the gap itself is gone.
    assert F.centroid_distance(x, y).item() < 0.05
