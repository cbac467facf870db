"""Statistics files: format, checksums, model checks, exact accumulation, shipped files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from i0tscore.statistics import (
    ModelIdentity,
    Statistics,
    StatisticsAccumulator,
    StatisticsError,
    resolve_statistics,
)

from conftest import REPO

MODEL = ModelIdentity("example/clip", revision="abc123")


def _normalize(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture()
def embeddings():
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(500, 16)).astype(np.float32)


@pytest.fixture()
def stats(embeddings) -> Statistics:
    return Statistics.from_embeddings(*embeddings, model=MODEL, corpus="random")


def test_means_match_numpy(embeddings, stats):
    image, text = embeddings

    np.testing.assert_allclose(stats.image_mean, _normalize(image.astype(np.float64)).mean(axis=0), rtol=0, atol=1e-11)
    np.testing.assert_allclose(stats.text_mean, _normalize(text.astype(np.float64)).mean(axis=0), rtol=0, atol=1e-11)
    np.testing.assert_allclose(stats.text_std, _normalize(text.astype(np.float64)).std(axis=0), rtol=0, atol=1e-9)


def test_save_load_roundtrip_exact(stats, tmp_path):
    path = tmp_path / "stats.json"
    stats.save(path)

    loaded = Statistics.load(path)

    assert np.array_equal(loaded.image_mean, stats.image_mean)
    assert np.array_equal(loaded.text_mean, stats.text_mean)
    assert loaded.checksum == stats.checksum
    assert loaded.model == MODEL
    assert loaded.to_json() == path.read_text(encoding="utf-8")


def test_file_records_provenance(stats, tmp_path):
    path = tmp_path / "stats.json"
    stats.save(path)

    payload = json.loads(path.read_text(encoding="utf-8"))

    for key in ("model_id", "revision", "dim", "num_pairs", "corpus", "normalized", "prefix", "sha256"):
        assert key in payload, key
    assert payload["provenance"]["package_version"]
    assert payload["dim"] == 16


def test_hand_edited_file_rejected(stats, tmp_path):
    path = tmp_path / "stats.json"
    stats.save(path)
    payload = json.loads(path.read_text(encoding="utf-8"))
    payload["image_mean"][3] += 0.001
    path.write_text(json.dumps(payload), encoding="utf-8")

    with pytest.raises(StatisticsError, match="Checksum mismatch"):
        Statistics.load(path)


def test_non_finite_mean_rejected():
    mean = np.zeros(8)
    mean[5] = np.nan

    with pytest.raises(StatisticsError, match="dimension 5"):
        Statistics(image_mean=mean, text_mean=np.zeros(8), model=MODEL, corpus="x", num_pairs=1, num_images=1, num_texts=1)


def test_mismatched_mean_lengths_rejected():
    with pytest.raises(StatisticsError, match="8 values but the text mean has 9"):
        Statistics(image_mean=np.zeros(8), text_mean=np.zeros(9), model=MODEL, corpus="x", num_pairs=1, num_images=1, num_texts=1)


def test_not_a_statistics_file(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}', encoding="utf-8")

    with pytest.raises(StatisticsError, match="not an i0tscore statistics file"):
        Statistics.load(path)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        Statistics.load(tmp_path / "nowhere.json")


def test_dimension_mismatch_names_both(stats):
    with pytest.raises(StatisticsError, match="dimension 16.*dimension 32"):
        stats.check_model(MODEL, 32)


def test_dimension_mismatch_not_overridable(stats):
    with pytest.raises(StatisticsError):
        stats.check_model(MODEL, 32, allow_model_mismatch=True)


def test_other_model_rejected_naming_both(stats):
    other = ModelIdentity("example/other-clip")

    with pytest.raises(StatisticsError, match="example/clip.*example/other-clip"):
        stats.check_model(other, 16)


def test_other_model_accepted_with_override(stats):
    stats.check_model(ModelIdentity("example/other-clip"), 16, allow_model_mismatch=True)


def test_other_revision_rejected(stats):
    with pytest.raises(StatisticsError, match="revision"):
        stats.check_model(ModelIdentity("example/clip", revision="def456"), 16)


def test_weights_fingerprint_decides_for_local_models():
    built = ModelIdentity("copy-a", weights_sha256="f" * 64)
    stats = Statistics(image_mean=np.ones(4), text_mean=np.ones(4), model=built, corpus="x", num_pairs=1, num_images=1, num_texts=1)

    stats.check_model(ModelIdentity("copy-b", weights_sha256="f" * 64), 4)
    with pytest.raises(StatisticsError):
        stats.check_model(ModelIdentity("copy-a", weights_sha256="0" * 64), 4)


def test_no_statistics_error_lists_available():
    with pytest.raises(StatisticsError) as error:
        resolve_statistics(None, ModelIdentity("nobody/unknown-clip"))

    message = str(error.value)
    assert "nobody/unknown-clip" in message
    assert "i0tscore stats build" in message
    assert "Shipped statistics" in message or "No statistics are shipped" in message


def test_corpus_spec_passes_through():
    assert resolve_statistics("corpus", MODEL) == "corpus"


def test_accumulator_order_independent(embeddings):
    image, text = embeddings
    forward = StatisticsAccumulator(16)
    forward.add_images(image)
    forward.add_texts(text)
    backward = StatisticsAccumulator(16)
    for start in range(0, len(image), 7):
        backward.add_images(image[::-1][start : start + 7])
    backward.add_texts(text[::-1])

    a = forward.finalize(model=MODEL, corpus="c")
    b = backward.finalize(model=MODEL, corpus="c")

    assert a.to_json() == b.to_json()


def test_shards_merge_exactly(embeddings):
    image, text = embeddings
    whole = StatisticsAccumulator(16)
    whole.add_images(image)
    whole.add_texts(text)
    whole.num_pairs = 500
    shards = []
    for k in range(3):
        shard = StatisticsAccumulator(16)
        shard.add_images(image[k::3])
        shard.add_texts(text[k::3])
        shard.num_pairs = len(text[k::3])
        shards.append(shard)
    merged = StatisticsAccumulator.from_state(json.loads(json.dumps(shards[0].to_state())))
    for shard in shards[1:]:
        merged.merge(StatisticsAccumulator.from_state(json.loads(json.dumps(shard.to_state()))))

    assert merged.to_state() == whole.to_state()
    assert merged.finalize(model=MODEL, corpus="c").to_json() == whole.finalize(model=MODEL, corpus="c").to_json()


def test_accumulator_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"\(N, 16\)"):
        StatisticsAccumulator(16).add_images(np.zeros((3, 8)))


def test_accumulator_rejects_nan():
    rows = np.ones((2, 4))
    rows[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        StatisticsAccumulator(4).add_texts(rows)


# ---------------------------------------------------------------------- shipped files, from the wheel


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The package built as a wheel and installed into a folder outside the source tree."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(root / "dist"), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next((root / "dist").glob("i0tscore-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(root / "site"), str(wheel)],
        check=True,
        capture_output=True,
    )
    return root


def _run_installed(root: Path, code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(root / "site")
    completed = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_wheel_contains_stats(installed_wheel):
    wheel = next((installed_wheel / "dist").glob("i0tscore-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()

    assert "i0tscore/_stats/index.json" in names
    assert "i0tscore/py.typed" in names


def test_wheel_contains_every_module(installed_wheel):
    # A subpackage missing from pyproject's package list installs from a checkout but
    # not from the wheel; compare against the source tree to catch it.
    wheel = next((installed_wheel / "dist").glob("i0tscore-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "i0tscore").rglob("*.py"))

    missing = [name for name in sources if name not in names]

    assert sources and not missing, missing
    modules = [name[:-3].replace("/", ".").removesuffix(".__init__") for name in sources]
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules) + "print('ok')\n"
    assert _run_installed(installed_wheel, code).strip() == "ok"


def test_shipped_stats_load_from_wheel(installed_wheel):
    code = (
        "import json, numpy as np, i0tscore, i0tscore.statistics as s\n"
        "assert 'site' in i0tscore.__file__, i0tscore.__file__\n"
        "rows = []\n"
        "for e in s.shipped_entries():\n"
        "    st = s.load_shipped(e.name)\n"
        "    rows.append([e.name, st.dim, bool(np.isfinite(st.image_mean).all() and np.isfinite(st.text_mean).all()), st.model.weights_sha256])\n"
        "print(json.dumps(rows))\n"
    )
    rows = json.loads(_run_installed(installed_wheel, code))

    assert rows, "the wheel ships no statistics"
    for name, dim, finite, _ in rows:
        assert dim > 0, name
        assert finite, name


def test_shipped_checksum_mismatch_detected(installed_wheel, tmp_path):
    # Corrupt a copy of the installed files and check that loading notices.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(installed_wheel / "site", copy / "site")
    index = json.loads((copy / "site/i0tscore/_stats/index.json").read_text(encoding="utf-8"))
    target = copy / "site/i0tscore/_stats" / index["entries"][0]["file"]
    target.write_bytes(target.read_bytes().replace(b'"corpus": "', b'"corpus": "X', 1))
    code = (
        "import i0tscore.statistics as s\n"
        "name = s.shipped_entries()[0].name\n"
        "try:\n"
        "    s.load_shipped(name)\n"
        "except s.StatisticsError as err:\n"
        "    print('rejected:', err)\n"
    )

    output = _run_installed(copy, code)

    assert "rejected:" in output
    assert "reinstall" in output


def test_shipped_stats_match_shipped_checkpoint():
    # Shipped statistics whose checkpoint is in this repository must fit it.
    from i0tscore.model import load_clip
    from i0tscore.statistics import load_shipped, shipped_entries

    checked = 0
    for entry in shipped_entries():
        folder = REPO / "tests" / "assets" / entry.name / "model"
        if not folder.is_dir():
            continue
        encoder = load_clip(folder, device="cpu")
        load_shipped(entry.name).check_model(encoder.identity, encoder.dim)
        checked += 1
    assert checked >= 1, "no shipped statistics could be checked against a checkpoint in tests/assets"
