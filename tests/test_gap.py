"""Tests of i0tscore.gap against an independent numpy implementation on real CLIP features."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from i0tscore.gap import GapReport, gap_severity, load_embeddings, modality_gap, plot_gap

REAL_FEATURES = Path(__file__).resolve().parents[2] / "shared/data/real-clip-features/coco-val2017-500-pairs.npy"

MEASURE_NAMES = (
    "centroid_distance",
    "linear_separability",
    "matched_cosine",
    "mismatched_cosine",
    "recall_at_1_image_to_text",
    "recall_at_1_text_to_image",
)

RELATIVE_TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def real_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Image and text embeddings of 500 COCO pairs, as stored (float32, unit rows)."""
    if not REAL_FEATURES.is_file():
        pytest.fail(
            f"real CLIP features not found at {REAL_FEATURES}; "
            f"these tests need coco-val2017-500-pairs.npy in ../shared/data/real-clip-features/ beside the repository"
        )
    features = np.load(REAL_FEATURES, allow_pickle=False)
    return features[0], features[1]


# --- Independent reference implementation (numpy, float64) -----------------------------


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _standardized(rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return _unit_rows(rows - mean)


def _reference_measures(images: np.ndarray, texts: np.ndarray, seed: int) -> dict[str, float | str]:
    """Every gap measure of unit rows, written out in numpy from the definitions."""
    n = images.shape[0]
    similarities = images @ texts.T
    off_diagonal = ~np.eye(n, dtype=bool)
    matched = np.diag(similarities)

    # A pair is a hit only when its own cosine beats every other candidate strictly.
    best_other_text = np.where(off_diagonal, similarities, -np.inf).max(axis=1)
    best_other_image = np.where(off_diagonal, similarities, -np.inf).max(axis=0)

    order = np.random.default_rng(seed).permutation(n)
    n_train = min(max(n * 7 // 10, 1), n - 1)
    train, test = order[:n_train], order[n_train:]

    def design(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        stacked = np.vstack([images[rows], texts[rows]])
        with_intercept = np.hstack([stacked, np.ones((stacked.shape[0], 1))])
        labels = np.concatenate([np.ones(len(rows)), np.zeros(len(rows))])
        return with_intercept, labels

    train_x, train_y = design(train)
    test_x, test_y = design(test)
    weights = np.linalg.lstsq(train_x, train_y, rcond=None)[0]
    mse = np.mean((test_x @ weights - test_y) ** 2)

    distance = float(np.linalg.norm(images.mean(axis=0) - texts.mean(axis=0)))
    severity = "low"
    if distance >= 0.19:
        severity = "moderate"
    if distance >= 0.63:
        severity = "severe"
    return {
        "centroid_distance": distance,
        "linear_separability": float(1.0 - mse),
        "matched_cosine": float(matched.mean()),
        "mismatched_cosine": float(similarities[off_diagonal].mean()),
        "recall_at_1_image_to_text": float(np.mean(matched > best_other_text)),
        "recall_at_1_text_to_image": float(np.mean(matched > best_other_image)),
        "severity": severity,
    }


def _assert_matches_reference(report: GapReport, images: np.ndarray, texts: np.ndarray, image_mean, text_mean) -> None:
    expected = {
        "before": _reference_measures(images, texts, report.seed),
        "after": _reference_measures(
            _standardized(images, image_mean), _standardized(texts, text_mean), report.seed
        ),
    }
    for stage in ("before", "after"):
        measures = getattr(report, stage)
        for name in MEASURE_NAMES:
            got = getattr(measures, name)
            want = expected[stage][name]
            assert got == pytest.approx(want, rel=RELATIVE_TOLERANCE, abs=0.0), f"{stage}.{name}: {got} != {want}"
        assert measures.severity == expected[stage]["severity"], f"{stage}.severity"


# --- modality_gap on real features --------------------------------------------------------


def test_in_sample_matches_numpy(real_pairs):
    images, texts = (_unit_rows(rows) for rows in real_pairs)

    report = modality_gap(*real_pairs, seed=0)

    assert report.means == "in-sample"
    assert report.n_pairs == 500
    assert report.dim == 512
    _assert_matches_reference(report, images, texts, images.mean(axis=0), texts.mean(axis=0))


def test_in_sample_sanity_figures(real_pairs):
    report = modality_gap(*real_pairs)

    assert 0.8 < report.before.centroid_distance < 0.9
    assert report.before.matched_cosine == pytest.approx(0.31, abs=0.01)
    assert report.before.recall_at_1_image_to_text == pytest.approx(0.55, abs=0.01)
    assert report.before.severity == "severe"
    assert report.after.severity == "low"


def test_in_sample_centring_before_renormalizing(real_pairs):
    """Centring zeroes both means exactly, but renormalizing reweights rows, so a small distance remains."""
    images, texts = (_unit_rows(rows) for rows in real_pairs)
    centred_images = images - images.mean(axis=0)
    centred_texts = texts - texts.mean(axis=0)

    report = modality_gap(*real_pairs)

    assert np.linalg.norm(centred_images.mean(axis=0) - centred_texts.mean(axis=0)) < 1e-6
    assert report.after.centroid_distance < 0.05
    assert report.after.centroid_distance < report.before.centroid_distance / 10


def test_out_of_sample_matches_numpy(real_pairs):
    images, texts = (_unit_rows(rows) for rows in real_pairs)
    stats = SimpleNamespace(image_mean=images[:250].mean(axis=0), text_mean=texts[:250].mean(axis=0))

    report = modality_gap(real_pairs[0][250:], real_pairs[1][250:], stats, seed=1)

    assert report.means == "out-of-sample"
    assert report.n_pairs == 250
    _assert_matches_reference(report, images[250:], texts[250:], stats.image_mean, stats.text_mean)


def test_split_matches_numpy(real_pairs):
    images, texts = (_unit_rows(rows) for rows in real_pairs)
    order = np.random.default_rng(7).permutation(500)
    mean_rows, measured_rows = np.sort(order[:250]), np.sort(order[250:])

    report = modality_gap(*real_pairs, split=True, seed=7)

    assert report.means == "split"
    assert report.n_pairs == 250
    _assert_matches_reference(
        report,
        images[measured_rows],
        texts[measured_rows],
        images[mean_rows].mean(axis=0),
        texts[mean_rows].mean(axis=0),
    )


def test_split_deterministic_and_differs(real_pairs):
    first = modality_gap(*real_pairs, split=True, seed=3)
    second = modality_gap(*real_pairs, split=True, seed=3)
    other_seed = modality_gap(*real_pairs, split=True, seed=4)
    in_sample = modality_gap(*real_pairs, seed=3)

    assert first == second
    assert first.after != other_seed.after
    assert first.after.centroid_distance != in_sample.after.centroid_distance
    assert first.before != in_sample.before


def test_torch_input_unnormalized(real_pairs):
    scaled_images = torch.from_numpy(real_pairs[0] * 3.0)
    scaled_texts = torch.from_numpy(real_pairs[1] * 0.5)

    from_torch = modality_gap(scaled_images, scaled_texts)
    from_numpy = modality_gap(*real_pairs)

    for stage in ("before", "after"):
        for name in MEASURE_NAMES:
            got = getattr(getattr(from_torch, stage), name)
            want = getattr(getattr(from_numpy, stage), name)
            assert got == pytest.approx(want, rel=1e-6), f"{stage}.{name}"


def test_report_to_dict_and_table(real_pairs):
    report = modality_gap(*real_pairs)

    as_dict = report.to_dict()
    table = report.format_table()

    assert json.loads(json.dumps(as_dict)) == as_dict
    assert type(as_dict["before"]["centroid_distance"]) is float
    assert as_dict["after"]["severity"] == "low"
    assert as_dict["means"] == "in-sample"
    assert "before" in table
    assert "after" in table
    assert f"{report.before.centroid_distance:.4f}" in table
    assert f"{report.after.linear_separability:.4f}" in table
    assert "severe" in table


# --- modality_gap edge cases and input checks ------------------------------------------------


def test_recall_ties_count_as_misses():
    images = np.tile([1.0, 0.0, 0.0], (4, 1))
    texts = np.tile([0.0, 1.0, 0.0], (4, 1))

    report = modality_gap(images, texts)

    assert report.before.recall_at_1_image_to_text == 0.0
    assert report.before.recall_at_1_text_to_image == 0.0
    assert report.before.centroid_distance == pytest.approx(np.sqrt(2.0))


def test_gap_severity_thresholds():
    assert gap_severity(0.63) == "severe"
    assert gap_severity(0.6299) == "moderate"
    assert gap_severity(0.19) == "moderate"
    assert gap_severity(0.1899) == "low"


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(6, 3\).*\(6, 4\)"):
        modality_gap(np.ones((6, 3)), np.ones((6, 4)))
    with pytest.raises(ValueError, match=r"\(6,\)"):
        modality_gap(np.ones(6), np.ones(6))


def test_rejects_too_few_pairs():
    with pytest.raises(ValueError, match=r"at least 4 pairs.*\(3, 5\)"):
        modality_gap(np.eye(3, 5), np.eye(3, 5))


def test_rejects_non_finite_embeddings():
    images = np.eye(5)
    images[2, 1] = np.nan

    with pytest.raises(ValueError, match="NaN or infinite"):
        modality_gap(images, np.eye(5))


def test_rejects_stats_dimension_mismatch():
    stats = SimpleNamespace(image_mean=np.zeros(768), text_mean=np.zeros(768))

    with pytest.raises(ValueError, match=r"\(768,\).*dimension 5"):
        modality_gap(np.eye(5), np.eye(5), stats)


def test_rejects_stats_without_means():
    with pytest.raises(TypeError, match="image_mean and text_mean"):
        modality_gap(np.eye(5), np.eye(5), SimpleNamespace(image_mean=np.zeros(5)))


def test_rejects_stats_with_split():
    stats = SimpleNamespace(image_mean=np.zeros(5), text_mean=np.zeros(5))

    with pytest.raises(ValueError, match="either stats or split"):
        modality_gap(np.eye(5), np.eye(5), stats, split=True)


# --- load_embeddings -------------------------------------------------------------------------


_UNPICKLE_CALLS: list[int] = []


def _record_unpickling() -> int:
    _UNPICKLE_CALLS.append(1)
    return 0


class _UnpickleProbe:
    """An object whose unpickling appends to _UNPICKLE_CALLS."""

    def __reduce__(self):
        return (_record_unpickling, ())


@pytest.fixture()
def small_pairs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)


def test_load_npz_round_trip(tmp_path, small_pairs):
    path = tmp_path / "pairs.npz"
    np.savez(path, image=small_pairs[0], text=small_pairs[1])

    images, texts = load_embeddings(path)

    np.testing.assert_array_equal(images, small_pairs[0])
    np.testing.assert_array_equal(texts, small_pairs[1])


def test_load_safetensors_round_trip(tmp_path, small_pairs):
    from safetensors.numpy import save_file

    path = tmp_path / "pairs.safetensors"
    save_file({"image": small_pairs[0], "text": small_pairs[1]}, str(path))

    images, texts = load_embeddings(str(path))

    np.testing.assert_array_equal(images, small_pairs[0])
    np.testing.assert_array_equal(texts, small_pairs[1])


def test_load_npy_round_trip(tmp_path, small_pairs):
    path = tmp_path / "pairs.npy"
    np.save(path, np.stack(small_pairs))

    images, texts = load_embeddings(path)

    np.testing.assert_array_equal(images, small_pairs[0])
    np.testing.assert_array_equal(texts, small_pairs[1])


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_load_rejects_pickled_objects(tmp_path, suffix):
    path = tmp_path / f"objects{suffix}"
    probes = np.array([[_UnpickleProbe()]], dtype=object)
    if suffix == ".npy":
        np.save(path, probes, allow_pickle=True)
    else:
        np.savez(path, image=probes, text=probes)
    _UNPICKLE_CALLS.clear()

    with pytest.raises(ValueError, match=rf"objects\{suffix}: .*without unpickling"):
        load_embeddings(path)

    assert _UNPICKLE_CALLS == []


def test_load_wrong_key_names_file(tmp_path, small_pairs):
    path = tmp_path / "wrong-key.npz"
    np.savez(path, images=small_pairs[0], text=small_pairs[1])

    with pytest.raises(ValueError, match="wrong-key.npz") as error:
        load_embeddings(path)

    assert "'images'" in str(error.value)
    assert "missing array(s) image" in str(error.value)


def test_load_wrong_npy_shape_names_file(tmp_path, small_pairs):
    path = tmp_path / "three.npy"
    np.save(path, np.stack([small_pairs[0], small_pairs[1], small_pairs[0]]))

    with pytest.raises(ValueError, match=r"three\.npy.*\(3, 6, 4\).*\(2, N, D\)"):
        load_embeddings(path)


def test_load_mismatched_pair_shapes(tmp_path, small_pairs):
    path = tmp_path / "mismatch.safetensors"
    from safetensors.numpy import save_file

    save_file({"image": small_pairs[0], "text": small_pairs[1][:5]}, str(path))

    with pytest.raises(ValueError, match=r"mismatch\.safetensors.*\(6, 4\).*\(5, 4\)"):
        load_embeddings(path)


def test_load_rejects_non_finite(tmp_path, small_pairs):
    path = tmp_path / "nan.npz"
    texts = small_pairs[1].copy()
    texts[0, 0] = np.inf
    np.savez(path, image=small_pairs[0], text=texts)

    with pytest.raises(ValueError, match=r"nan\.npz.*text.*NaN or infinite"):
        load_embeddings(path)


def test_load_rejects_unknown_suffix(tmp_path):
    path = tmp_path / "pairs.pt"
    path.write_bytes(b"")

    with pytest.raises(ValueError, match=r"pairs\.pt.*\.npz, \.safetensors, \.npy"):
        load_embeddings(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        load_embeddings(tmp_path / "absent.npz")


# --- plot_gap --------------------------------------------------------------------------------


def test_plot_writes_two_panel_png(tmp_path, real_pairs):
    from PIL import Image

    out = tmp_path / "gap.png"

    written = plot_gap(*real_pairs, out=out, max_pairs=200)

    assert written == out
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 1.5 * height
    assert [path.name for path in tmp_path.iterdir()] == ["gap.png"]


def test_plot_rejects_non_png(tmp_path, real_pairs):
    with pytest.raises(ValueError, match=r"\.png"):
        plot_gap(*real_pairs, out=tmp_path / "gap.jpg")


def test_plot_without_matplotlib(tmp_path, real_pairs, monkeypatch):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.collections"):
        monkeypatch.setitem(sys.modules, module, None)

    with pytest.raises(ImportError, match=r"i0tscore\[plot\]"):
        plot_gap(*real_pairs, out=tmp_path / "gap.png")

    assert not (tmp_path / "gap.png").exists()
