"""`explain` and the `i0tscore explain` command, checked against plain numpy on the scorer's own embeddings."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES

# Short enough that the tiny model (32 tokens, one per character) does not truncate it.
CAPTION = "a tabby cat"
IMAGE = EXAMPLES / "images" / "cat.png"


@pytest.fixture(scope="module")
def scorer(tiny_clip, tiny_stats):
    from i0tscore import I0TScore

    return I0TScore(tiny_clip, stats=tiny_stats, device="cpu", progress=False)


@pytest.fixture(scope="module")
def reference(scorer, tiny_stats):
    """x, y, x̄, ȳ, x', y' in float64 numpy, from the scorer's encoders and the statistics file."""
    from i0tscore.statistics import Statistics

    stats = Statistics.load(tiny_stats)
    x = scorer.encode_images([IMAGE])[0].double().numpy()
    y = scorer.encode_texts([CAPTION])[0][0].double().numpy()
    x = x / np.linalg.norm(x)
    y = y / np.linalg.norm(y)
    x_mean, y_mean = stats.image_mean, stats.text_mean
    x_std = (x - x_mean) / np.linalg.norm(x - x_mean)
    y_std = (y - y_mean) / np.linalg.norm(y - y_mean)
    return {"x": x, "y": y, "x_mean": x_mean, "y_mean": y_mean, "x_std": x_std, "y_std": y_std}


@pytest.fixture(scope="module")
def full(scorer):
    """An explanation that lists every dimension (k = D)."""
    from i0tscore.explain import explain

    return explain(scorer, IMAGE, CAPTION, k=scorer.encoder.dim)


def run_explain_command(argv: list[str]) -> int:
    """Parse ``explain ARGV`` with the command's own parser and run it, as cli.main does."""
    from i0tscore.explain import add_explain_parser, run_explain

    parser = argparse.ArgumentParser(prog="i0tscore")
    add_explain_parser(parser.add_subparsers(dest="command", required=True))
    return run_explain(parser.parse_args(["explain", *argv]))


@pytest.fixture(scope="module")
def model_args(tiny_clip, tiny_stats) -> list[str]:
    return ["--model", str(tiny_clip), "--stats", str(tiny_stats), "--device", "cpu", "--no-progress"]


# ---------------------------------------------------------------------- values


def test_scores_match_numpy(full, reference):
    cosine_std = float(reference["x_std"] @ reference["y_std"])
    raw = float(reference["x"] @ reference["y"])

    assert full.cosine == pytest.approx(cosine_std, abs=1e-6)
    assert full.i0t_s == pytest.approx(cosine_std, abs=1e-6)
    assert full.raw_cosine == pytest.approx(raw, abs=1e-6)
    assert full.clip_s == pytest.approx(2.5 * max(raw, 0.0), abs=1e-6)


def test_contributions_match_numpy(full, reference):
    expected = reference["x_std"] * reference["y_std"]
    dims = [c.dim for c in full.top]

    assert sorted(dims) == list(range(expected.size))
    for c in full.top:
        assert c.image_value == pytest.approx(reference["x_std"][c.dim], abs=1e-6)
        assert c.text_value == pytest.approx(reference["y_std"][c.dim], abs=1e-6)
        assert c.contribution == pytest.approx(expected[c.dim], abs=1e-6)
    assert sum(c.contribution for c in full.top) == pytest.approx(full.cosine, abs=1e-9)
    assert sum(c.share for c in full.top) == pytest.approx(1.0, abs=1e-9)


def test_top_k_order(scorer, full, reference):
    from i0tscore.explain import explain

    magnitudes = np.abs(reference["x_std"] * reference["y_std"])
    expected_order = list(np.argsort(-magnitudes, kind="stable"))
    top5 = explain(scorer, IMAGE, CAPTION, k=5).top

    assert [c.dim for c in full.top] == expected_order
    assert [c.dim for c in top5] == expected_order[:5]
    assert all(abs(a.contribution) >= abs(b.contribution) for a, b in zip(full.top, full.top[1:]))


def test_cosine_split_sums_to_raw_cosine(full, reference):
    x, y, x_mean, y_mean = reference["x"], reference["y"], reference["x_mean"], reference["y_mean"]

    assert full.kept == pytest.approx(float((x - x_mean) @ (y - y_mean)), abs=1e-6)
    assert full.from_means == pytest.approx(float(x_mean @ y + x @ y_mean - x_mean @ y_mean), abs=1e-6)
    assert full.kept + full.from_means == pytest.approx(float(x @ y), abs=1e-9)


def test_peaks_are_largest_means(full, reference):
    magnitude = np.abs(reference["x_mean"]) + np.abs(reference["y_mean"])
    expected = list(np.argsort(-magnitude, kind="stable"))

    assert [p.dim for p in full.peaks] == expected
    for p in full.peaks:
        assert p.image_mean == pytest.approx(reference["x_mean"][p.dim], abs=1e-12)
        assert p.text_mean == pytest.approx(reference["y_mean"][p.dim], abs=1e-12)
        assert p.clip_s_term == pytest.approx(2.5 * reference["x"][p.dim] * reference["y"][p.dim], abs=1e-6)
        assert p.contribution == pytest.approx(reference["x_std"][p.dim] * reference["y_std"][p.dim], abs=1e-6)


def test_clip_s_terms_sum_to_weighted_cosine(full):
    assert sum(p.clip_s_term for p in full.peaks) == pytest.approx(2.5 * full.raw_cosine, abs=1e-9)


def test_references_add_ref_scores(scorer):
    from i0tscore.explain import explain

    with_refs = explain(scorer, IMAGE, CAPTION, ["a cat", "a pet"], k=3)
    without = explain(scorer, IMAGE, CAPTION, k=3)

    assert with_refs.ref_i0t_s is not None
    assert with_refs.ref_clip_s is not None
    assert without.ref_i0t_s is None
    assert with_refs.references == ("a cat", "a pet")


def test_corpus_statistics_rejected(tiny_clip):
    from i0tscore import I0TScore
    from i0tscore.explain import explain

    corpus_scorer = I0TScore(tiny_clip, stats="corpus", device="cpu", progress=False)
    with pytest.raises(ValueError, match="corpus"):
        explain(corpus_scorer, IMAGE, CAPTION)


def test_to_dict_is_strict_json(full):
    data = full.to_dict()
    text = json.dumps(data, allow_nan=False)

    assert json.loads(text)["scores"]["i0t_s"] == pytest.approx(full.i0t_s)
    assert len(data["top_contributions"]) == len(full.top)
    assert data["peak_ranking"] == "|x̄_d| + |ȳ_d|"


# ---------------------------------------------------------------------- command


def test_command_text(model_args, capsys, full):
    code = run_explain_command([str(IMAGE), CAPTION, "--k", "4", *model_args])
    out = capsys.readouterr().out

    assert code == 0
    assert CAPTION in out
    assert "I0T-S" in out
    assert "CLIP-S" in out
    assert f"{full.i0t_s:9.4f}" in out
    assert "top 4 dimensions" in out
    assert "peak dimensions" in out
    # One row per listed dimension: the dimension index starts each row.
    top_rows = out.split("top 4 dimensions")[1].split("peak dimensions")[0].strip().splitlines()[2:]
    assert [int(row.split()[0]) for row in top_rows] == [c.dim for c in full.top[:4]]


def test_command_json(model_args, capsys, full):
    code = run_explain_command([str(IMAGE), CAPTION, "--k", "3", "--format", "json", "--references", "a cat", *model_args])
    data = json.loads(capsys.readouterr().out)

    assert code == 0
    assert data["caption"] == CAPTION
    assert data["references"] == ["a cat"]
    assert data["scores"]["i0t_s"] == pytest.approx(full.i0t_s, abs=1e-6)
    assert data["scores"]["ref_i0t_s"] is not None
    assert [c["dim"] for c in data["top_contributions"]] == [c.dim for c in full.top[:3]]
    assert len(data["peak_dimensions"]) == 3
    assert data["signature"] == full.signature


def test_command_plot_writes_png(model_args, tmp_path, capsys):
    out = tmp_path / "contributions.png"
    code = run_explain_command([str(IMAGE), CAPTION, "--k", "6", "--plot", str(out), *model_args])

    assert code == 0
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.width > 300
        assert image.height > 100
        # Bars in two colours plus axes and text: far more than a blank canvas.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16)) > 10
    assert not list(tmp_path.glob(".*.tmp")), "the atomic write left a temporary file"


def test_command_rejects_k_zero(model_args):
    with pytest.raises(SystemExit):
        run_explain_command([str(IMAGE), CAPTION, "--k", "0", *model_args])


# ---------------------------------------------------------------------- without matplotlib


def test_plot_without_matplotlib_names_extra(full, tmp_path, monkeypatch):
    from i0tscore.plots import MissingExtraError, plot_contributions

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'i0tscore\[plot\]'"):
        plot_contributions(full, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_command_without_matplotlib(model_args, tmp_path, monkeypatch, capsys):
    from i0tscore.plots import MissingExtraError

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert issubclass(MissingExtraError, ImportError)
    with pytest.raises(MissingExtraError, match="i0tscore\\[plot\\]"):
        run_explain_command([str(IMAGE), CAPTION, "--plot", str(tmp_path / "x.png"), *model_args])

    # Text output needs no matplotlib.
    assert run_explain_command([str(IMAGE), CAPTION, *model_args]) == 0
    assert "I0T-S" in capsys.readouterr().out
