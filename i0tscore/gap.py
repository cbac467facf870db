"""Measure CLIP's modality gap before and after I0T standardization.

The measures follow Liang et al., "Mind the Gap" (NeurIPS 2022) and An et al.,
"I0T: Embedding Standardization Method Towards Zero Modality Gap" (ACL 2025):
the centroid distance between the modality means, the linear separability of the
two modalities, matched and mismatched cosines, and recall@1 in both directions.
Each is computed on the L2-normalized embeddings ("before") and on the
standardized embeddings x' = (x − x̄) / ‖x − x̄‖ ("after").

Every computation runs in float64 on the CPU.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from i0tscore.functional import centroid_distance, cosine, l2_normalize, standardize

SEVERE_GAP = 0.63
"""Centroid distance from which a modality gap counts as severe."""

MODERATE_GAP = 0.19
"""Centroid distance from which a modality gap counts as moderate (below it: low)."""

MIN_PAIRS = 4
"""Minimum number of pairs `modality_gap` accepts, so that every split keeps a pair on each side."""

TRAIN_FRACTION_TENTHS = 7
"""Linear separability trains on 7/10 of the pairs (rounded down) and tests on the rest."""

IMAGE_LABEL = 1.0
"""Regression target of image rows in the linear-separability fit."""

TEXT_LABEL = 0.0
"""Regression target of text rows in the linear-separability fit."""

LOADABLE_SUFFIXES = (".npz", ".safetensors", ".npy")
"""File suffixes `load_embeddings` reads."""

_RECALL_BLOCK_ROWS = 1024
"""Query rows per similarity block, which bounds memory at 1024 × N float64 values."""

MeansSource = Literal["in-sample", "out-of-sample", "split"]


@dataclass(frozen=True)
class GapMeasures:
    """Modality-gap measures of one set of paired embeddings."""

    centroid_distance: float
    """‖x̄ − ȳ‖ between the image and text means of the rows measured."""

    linear_separability: float
    """1 − MSE of a least-squares modality classifier on held-out pairs, which can be negative."""

    matched_cosine: float
    """Mean cosine of the matched pairs (row i with row i)."""

    mismatched_cosine: float
    """Mean cosine over all image i, text j with i ≠ j."""

    recall_at_1_image_to_text: float
    """Fraction of images whose own caption has a strictly higher cosine than every other caption."""

    recall_at_1_text_to_image: float
    """Fraction of captions whose own image has a strictly higher cosine than every other image."""

    severity: str
    """"severe", "moderate" or "low", from the centroid distance (see `gap_severity`)."""


@dataclass(frozen=True)
class GapReport:
    """Modality-gap measures before and after standardization, with how they were taken."""

    before: GapMeasures
    """Measures of the L2-normalized embeddings."""

    after: GapMeasures
    """Measures of the standardized embeddings."""

    n_pairs: int
    """Number of pairs measured, which in "split" mode is only the measured half."""

    dim: int
    """Embedding dimension D."""

    means: MeansSource
    """Source of the modality means: "in-sample", "out-of-sample" or "split"."""

    seed: int
    """Seed of the linear-separability split and, in "split" mode, of the halves."""

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain Python values, ready for `json.dumps`."""
        report = asdict(self)
        for stage in ("before", "after"):
            report[stage] = {
                name: value if isinstance(value, str) else float(value) for name, value in report[stage].items()
            }
        return report

    def format_table(self) -> str:
        """Return a text table with one row per measure and before/after columns."""
        header = f"Modality gap: {self.n_pairs} pairs, dim {self.dim}, {self.means} means, seed {self.seed}"
        lines = [header, f"{'measure':<28}{'before':>10}{'after':>10}"]

        for name, label in _MEASURE_LABELS:
            before = getattr(self.before, name)
            after = getattr(self.after, name)
            lines.append(f"{label:<28}{before:>10.4f}{after:>10.4f}")

        lines.append(f"{'severity':<28}{self.before.severity:>10}{self.after.severity:>10}")
        return "\n".join(lines)


_MEASURE_LABELS = (
    ("centroid_distance", "centroid distance"),
    ("linear_separability", "linear separability"),
    ("matched_cosine", "matched cosine"),
    ("mismatched_cosine", "mismatched cosine"),
    ("recall_at_1_image_to_text", "R@1 image to text"),
    ("recall_at_1_text_to_image", "R@1 text to image"),
)


def gap_severity(centroid_dist: float) -> str:
    """Classify a centroid distance as "severe" (≥ 0.63), "moderate" (≥ 0.19) or "low"."""
    if centroid_dist >= SEVERE_GAP:
        return "severe"
    if centroid_dist >= MODERATE_GAP:
        return "moderate"
    return "low"


def modality_gap(
    image_embeds: Any,
    text_embeds: Any,
    stats: Any = None,
    *,
    split: bool = False,
    seed: int = 0,
) -> GapReport:
    """Measure the modality gap of paired embeddings before and after standardization.

    Rows are L2-normalized first. The modality means used for standardization come
    from the pairs themselves ("in-sample"), from ``stats`` ("out-of-sample"), or,
    with ``split=True``, from a seeded random half of the pairs while the measures
    cover only the other half ("split"). In split mode the pairs are shuffled with
    ``numpy.random.default_rng(seed).permutation(N)``: the first N // 2 give the
    means and the rest, in their original order, are measured.

    Args:
        image_embeds: (N, D) image embeddings, a numpy array, torch tensor or nested list.
        text_embeds: (N, D) text embeddings; row i is the caption of image i.
        stats: None, or any object with attributes ``image_mean`` and ``text_mean``,
            1-D arrays of length D holding the means of L2-normalized embeddings.
        split: take the means from one half of the pairs and measure the other half.
        seed: seed of the split into halves and of the linear-separability split.

    Returns:
        A `GapReport` with the measures before and after standardization.

    Raises:
        ValueError: if the inputs are not two (N, D) arrays of the same shape with
            N ≥ 4, contain non-finite values, if ``stats`` has the wrong dimension,
            or if both ``stats`` and ``split=True`` are given.
        TypeError: if ``stats`` lacks ``image_mean`` or ``text_mean``.
    """
    images, texts = _validate_pairs(image_embeds, text_embeds)
    images = l2_normalize(images)
    texts = l2_normalize(texts)

    if stats is not None and split:
        raise ValueError("pass either stats or split=True, not both: split mode takes its means from the data")

    if split:
        mean_rows, measured_rows = _split_halves(images.shape[0], seed)
        image_mean = images[mean_rows].mean(dim=0)
        text_mean = texts[mean_rows].mean(dim=0)
        images = images[measured_rows]
        texts = texts[measured_rows]
        means: MeansSource = "split"
    elif stats is not None:
        image_mean, text_mean = _means_from_stats(stats, images.shape[1])
        means = "out-of-sample"
    else:
        image_mean = images.mean(dim=0)
        text_mean = texts.mean(dim=0)
        means = "in-sample"

    before = _measure(images, texts, seed)
    after = _measure(standardize(images, image_mean), standardize(texts, text_mean), seed)
    return GapReport(
        before=before, after=after, n_pairs=images.shape[0], dim=images.shape[1], means=means, seed=seed
    )


def _to_float64(values: Any) -> torch.Tensor:
    """Copy an array-like (numpy, torch or nested lists) into a float64 CPU tensor."""
    if isinstance(values, torch.Tensor):
        return values.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


def _validate_pairs(image_embeds: Any, text_embeds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert both inputs to float64 and check that they form N ≥ 4 finite (N, D) pairs."""
    images = _to_float64(image_embeds)
    texts = _to_float64(text_embeds)

    if images.ndim != 2 or texts.ndim != 2 or images.shape != texts.shape:
        raise ValueError(
            f"expected image and text embeddings of the same shape (N, D), row i of each a matched pair; "
            f"got image shape {tuple(images.shape)} and text shape {tuple(texts.shape)}"
        )
    if images.shape[0] < MIN_PAIRS:
        raise ValueError(f"expected at least {MIN_PAIRS} pairs; got shape {tuple(images.shape)}")
    if not (torch.isfinite(images).all() and torch.isfinite(texts).all()):
        raise ValueError("the embeddings contain NaN or infinite values")

    return images, texts


def _means_from_stats(stats: Any, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``stats.image_mean`` and ``stats.text_mean`` as float64 vectors of length ``dim``."""
    if not (hasattr(stats, "image_mean") and hasattr(stats, "text_mean")):
        raise TypeError(
            f"stats must have attributes image_mean and text_mean (1-D arrays of length D); "
            f"got an object of type {type(stats).__name__}"
        )

    vectors = []
    for name in ("image_mean", "text_mean"):
        vector = _to_float64(getattr(stats, name))
        if vector.ndim != 1 or vector.shape[0] != dim:
            raise ValueError(
                f"stats.{name} has shape {tuple(vector.shape)} but the embeddings have dimension {dim}; "
                f"use statistics computed with the same model"
            )
        if not torch.isfinite(vector).all():
            raise ValueError(f"stats.{name} contains NaN or infinite values")
        vectors.append(vector)

    return vectors[0], vectors[1]


def _split_halves(n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted row indices of the means half (N // 2 pairs) and of the measured half."""
    order = np.random.default_rng(seed).permutation(n_pairs)
    half = n_pairs // 2
    return np.sort(order[:half]), np.sort(order[half:])


def _measure(images: torch.Tensor, texts: torch.Tensor, seed: int) -> GapMeasures:
    """Compute every gap measure of unit-row (N, D) image and text embeddings."""
    centroid_dist = float(centroid_distance(images, texts))
    recall_image_to_text = _recall_at_1(images, texts)
    recall_text_to_image = _recall_at_1(texts, images)

    return GapMeasures(
        centroid_distance=centroid_dist,
        linear_separability=_linear_separability(images, texts, seed),
        matched_cosine=float(cosine(images, texts).mean()),
        mismatched_cosine=_mismatched_cosine(images, texts),
        recall_at_1_image_to_text=recall_image_to_text,
        recall_at_1_text_to_image=recall_text_to_image,
        severity=gap_severity(centroid_dist),
    )


def _mismatched_cosine(images: torch.Tensor, texts: torch.Tensor) -> float:
    """Mean of x_i · y_j over i ≠ j, from column sums instead of the N × N matrix."""
    n_pairs = images.shape[0]
    all_pairs_sum = images.sum(dim=0) @ texts.sum(dim=0)
    matched_sum = cosine(images, texts).sum()
    return float((all_pairs_sum - matched_sum) / (n_pairs * (n_pairs - 1)))


def _recall_at_1(queries: torch.Tensor, candidates: torch.Tensor) -> float:
    """Fraction of queries whose own candidate (same row) has the highest cosine.

    A tie with any other candidate counts as a miss, so the result does not depend
    on row order.
    """
    n_pairs = queries.shape[0]
    hits = 0

    for start in range(0, n_pairs, _RECALL_BLOCK_ROWS):
        rows = torch.arange(start, min(start + _RECALL_BLOCK_ROWS, n_pairs))
        similarities = queries[rows] @ candidates.T
        local_rows = torch.arange(rows.shape[0])

        own = similarities[local_rows, rows].clone()
        similarities[local_rows, rows] = float("-inf")
        hits += int((own > similarities.max(dim=1).values).sum())

    return hits / n_pairs


def _linear_separability(images: torch.Tensor, texts: torch.Tensor, seed: int) -> float:
    """Return 1 − MSE on held-out pairs of a least-squares fit predicting the modality.

    Pairs are shuffled with ``numpy.random.default_rng(seed).permutation(N)``. The
    first 7N // 10 pairs (at least one, at most N − 1) train and the rest test, so
    both rows of a pair stay on the same side. The fit has an intercept and targets
    1 for images and 0 for texts. When there are fewer training rows than D + 1, `torch.linalg.lstsq`
    returns the minimum-norm solution, which fits the training rows exactly.
    """
    n_pairs = images.shape[0]
    order = np.random.default_rng(seed).permutation(n_pairs)
    n_train = min(max(n_pairs * TRAIN_FRACTION_TENTHS // 10, 1), n_pairs - 1)
    train_rows = torch.as_tensor(order[:n_train])
    test_rows = torch.as_tensor(order[n_train:])

    train_features, train_labels = _modality_design(images[train_rows], texts[train_rows])
    test_features, test_labels = _modality_design(images[test_rows], texts[test_rows])

    # gelsd is SVD-based, so rank-deficient designs still get the minimum-norm solution.
    weights = torch.linalg.lstsq(train_features, train_labels.unsqueeze(1), driver="gelsd").solution
    predictions = (test_features @ weights).squeeze(1)
    mse = ((predictions - test_labels) ** 2).mean()
    return float(1.0 - mse)


def _modality_design(images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack image rows over text rows with a column of ones, and their modality labels."""
    rows = torch.cat([images, texts])
    features = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype)], dim=1)
    labels = torch.cat(
        [
            torch.full((images.shape[0],), IMAGE_LABEL, dtype=rows.dtype),
            torch.full((texts.shape[0],), TEXT_LABEL, dtype=rows.dtype),
        ]
    )
    return features, labels


def load_embeddings(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Load paired image and text embeddings from a file, without unpickling anything.

    Accepted layouts:

    - ``.npz`` or ``.safetensors`` with arrays named ``image`` and ``text``, each (N, D);
    - ``.npy`` with one array of shape (2, N, D): ``[0]`` images, ``[1]`` texts, the
      layout of the "Mind the Gap" feature files.

    Args:
        path: the file to read.

    Returns:
        The (N, D) image and text arrays, in the floating-point dtype of the file.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the suffix is not one of ``.npz``, ``.safetensors``, ``.npy``,
            the file cannot be read, contains pickled objects, lacks the expected keys or
            shape, is not floating point, or contains non-finite values.
        ImportError: for ``.safetensors`` when the safetensors package is missing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LOADABLE_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported suffix {path.suffix!r}, expected one of {', '.join(LOADABLE_SUFFIXES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"embedding file not found: {path}")

    if suffix == ".npy":
        images, texts = _read_npy(path)
    else:
        arrays = _read_npz(path) if suffix == ".npz" else _read_safetensors(path)
        images, texts = _pick_image_and_text(path, arrays)

    _check_loaded(path, images, texts)
    return images, texts


def _read_npy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a (2, N, D) ``.npy`` array and split it into images and texts."""
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        # numpy raises ValueError both for object arrays (which would need pickle) and for corrupt headers.
        raise ValueError(
            f"{path}: failed to read a numeric .npy array without unpickling ({error}); save a plain float array"
        ) from error

    if array.ndim != 3 or array.shape[0] != 2:
        raise ValueError(
            f"{path}: found an array of shape {array.shape}; expected (2, N, D) with images at [0] and texts at [1]"
        )
    return array[0], array[1]


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` archive, rejecting pickled object arrays."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{path}: failed to read a numeric .npz archive without unpickling ({error}); save plain float arrays"
        ) from error


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read every tensor of a ``.safetensors`` file as numpy arrays."""
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
    except ImportError as error:
        raise ImportError("reading .safetensors files needs the safetensors package: pip install safetensors") from error

    try:
        return load_file(path)
    except SafetensorError as error:
        raise ValueError(f"{path}: failed to read as a .safetensors file: {error}") from error


def _pick_image_and_text(path: Path, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Return the arrays named ``image`` and ``text``, or raise naming the keys found."""
    missing = [name for name in ("image", "text") if name not in arrays]
    if missing:
        raise ValueError(
            f"{path}: missing array(s) {', '.join(missing)}; found keys {sorted(arrays)}; "
            f"expected arrays named 'image' and 'text', each of shape (N, D)"
        )
    return arrays["image"], arrays["text"]


def _check_loaded(path: Path, images: np.ndarray, texts: np.ndarray) -> None:
    """Check that loaded images and texts are finite floating-point (N, D) arrays of one shape."""
    if images.ndim != 2 or images.shape != texts.shape:
        raise ValueError(
            f"{path}: found image shape {images.shape} and text shape {texts.shape}; "
            f"expected two arrays of the same shape (N, D)"
        )
    for name, array in (("image", images), ("text", texts)):
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{path}: the {name} array has dtype {array.dtype}; expected floating point")
        if not np.isfinite(array).all():
            raise ValueError(f"{path}: the {name} array contains NaN or infinite values")


def plot_gap(
    image_embeds: Any,
    text_embeds: Any,
    stats: Any = None,
    *,
    out: str | os.PathLike[str],
    seed: int = 0,
    max_pairs: int = 500,
) -> Path:
    """Draw both modalities before and after standardization as two 2-D PCA panels.

    Each panel projects its own stacked image and text embeddings onto their first
    two principal components. Images and texts get different colours, and thin grey
    lines join matched pairs. Each title gives the centroid distance of all the
    pairs. When there are more than ``max_pairs`` pairs, a seeded random subset of
    ``max_pairs`` is drawn, but the means and distances still use every pair.

    Args:
        image_embeds: (N, D) image embeddings.
        text_embeds: (N, D) text embeddings; row i is the caption of image i.
        stats: None for the pairs' own means, or an object with ``image_mean`` and
            ``text_mean`` (as for `modality_gap`).
        out: path of the PNG to write; its folder must exist.
        seed: seed of the subset drawn when there are more than ``max_pairs`` pairs.
        max_pairs: most pairs drawn per panel.

    Returns:
        The path written.

    Raises:
        MissingExtraError: if matplotlib is missing (an ImportError).
        ValueError: for invalid embeddings or stats (as `modality_gap`), a
            ``max_pairs`` below 1, or an ``out`` whose suffix is not ``.png``.
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out must be a .png path; got {out}")
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be at least 1; got {max_pairs}")
    from i0tscore.plots import new_figure, save_png

    figure = new_figure(12, 5.5)
    from matplotlib.collections import LineCollection

    images, texts = _validate_pairs(image_embeds, text_embeds)
    images = l2_normalize(images)
    texts = l2_normalize(texts)
    if stats is None:
        image_mean, text_mean = images.mean(dim=0), texts.mean(dim=0)
    else:
        image_mean, text_mean = _means_from_stats(stats, images.shape[1])
    panels = [
        ("before standardization", images, texts),
        ("after standardization", standardize(images, image_mean), standardize(texts, text_mean)),
    ]

    shown_rows = _subsample_rows(images.shape[0], max_pairs, seed)
    for axes, (title, panel_images, panel_texts) in zip(figure.subplots(1, 2), panels):
        distance = float(centroid_distance(panel_images, panel_texts))
        _draw_panel(
            axes, LineCollection, panel_images[shown_rows].numpy(), panel_texts[shown_rows].numpy()
        )
        axes.set_title(f"{title}: centroid distance {distance:.3f}")

    return save_png(figure, out)


def _subsample_rows(n_pairs: int, max_pairs: int, seed: int) -> np.ndarray:
    """Return all row indices, or a sorted seeded random subset of ``max_pairs`` of them."""
    if n_pairs <= max_pairs:
        return np.arange(n_pairs)
    return np.sort(np.random.default_rng(seed).choice(n_pairs, size=max_pairs, replace=False))


def _pca_2d(rows: np.ndarray) -> np.ndarray:
    """Project rows onto their first two principal components, via SVD of the centred rows."""
    centred = rows - rows.mean(axis=0)
    _, _, right_vectors = np.linalg.svd(centred, full_matrices=False)
    return centred @ right_vectors[:2].T


def _draw_panel(axes: Any, line_collection_class: Any, images: np.ndarray, texts: np.ndarray) -> None:
    """Scatter one panel's PCA projection of images and texts, joining matched pairs."""
    n_pairs = images.shape[0]
    projected = _pca_2d(np.concatenate([images, texts]))
    image_points = projected[:n_pairs]
    text_points = projected[n_pairs:]

    segments = np.stack([image_points, text_points], axis=1)
    axes.add_collection(line_collection_class(segments, colors="grey", linewidths=0.3, alpha=0.5, zorder=1))
    axes.scatter(image_points[:, 0], image_points[:, 1], s=8, color="tab:blue", label="image", zorder=2)
    axes.scatter(text_points[:, 0], text_points[:, 1], s=8, color="tab:orange", label="text", zorder=2)

    axes.set_xlabel("principal component 1")
    axes.set_ylabel("principal component 2")
    axes.legend(loc="best")


