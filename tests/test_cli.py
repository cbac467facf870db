"""The installed ``i0tscore`` command, run as a user runs it, on the real example files."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES, REPO

SYNTHCLIP = REPO / "tests" / "assets" / "synthclip" / "model"


def run_cli(*args: str, cwd: Path = EXAMPLES, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``i0tscore ARGS`` in this process (fast), capturing its output and exit code."""
    from i0tscore.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    os.environ.update(env or {})
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(list(args))
            except SystemExit as exit_:
                code = exit_.code
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def run_installed(*args: str, cwd: Path = EXAMPLES, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``i0tscore`` executable in a child process."""
    executable = shutil.which("i0tscore")
    assert executable, "the i0tscore command is not installed; run pip install -e ."
    return subprocess.run([executable, *args], cwd=cwd, capture_output=True, text=True, env=dict(os.environ, **(env or {})))


@pytest.fixture(scope="module")
def model_args(tiny_clip, tiny_stats) -> list[str]:
    return ["--model", str(tiny_clip), "--stats", str(tiny_stats), "--no-progress"]


def test_score_clipscore_json(model_args):
    completed = run_cli("score", "captions.json", "--images", "images", *model_args)

    assert completed.returncode == 0, completed.stderr
    output = json.loads(completed.stdout)
    assert len(output["items"]) == 8
    assert {item["id"] for item in output["items"]} >= {"coffee", "rocket", "cat"}
    assert all(np.isfinite(item["i0t_s"]) for item in output["items"])
    assert "clip_s" not in output["items"][0]
    assert "mean I0T-S" in completed.stderr
    assert "signature" in completed.stderr


def test_score_compare_adds_clip_s(model_args):
    completed = run_cli("score", "captions.json", "--images", "images", "--compare", *model_args)

    assert completed.returncode == 0, completed.stderr
    item = json.loads(completed.stdout)["items"][0]
    assert "clip_s" in item
    assert "CLIP-S" in completed.stderr


def test_score_coco_results_with_annotations(model_args):
    completed = run_cli("score", "coco_results.json", "--annotations", "coco_annotations.json", "--images", "images", *model_args)

    assert completed.returncode == 0, completed.stderr
    assert len(json.loads(completed.stdout)["items"]) == 8


def test_score_jsonl_with_references_to_csv(model_args, tmp_path):
    out = tmp_path / "scores.csv"

    completed = run_cli("score", "candidates.jsonl", "--compare", "--out", str(out), *model_args)

    assert completed.returncode == 0, completed.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 16
    assert {"i0t_s", "clip_s", "ref_i0t_s", "ref_clip_s", "truncated"} <= set(rows[0])
    assert completed.stdout == ""


def test_score_matches_python_api(model_args, tiny_clip, tiny_stats):
    from i0tscore import I0TScore
    from i0tscore.inputs import read_candidates

    completed = run_cli("score", "captions.json", "--images", "images", *model_args)
    items = read_candidates(EXAMPLES / "captions.json", images=EXAMPLES / "images")
    result = I0TScore(str(tiny_clip), stats=str(tiny_stats), device="cpu").score([i.image for i in items], [i.caption for i in items])

    cli_scores = [item["i0t_s"] for item in json.loads(completed.stdout)["items"]]
    np.testing.assert_allclose(cli_scores, result.i0t_s, rtol=0, atol=1e-6)


def test_score_output_deterministic(model_args, tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"

    run_cli("score", "captions.json", "--images", "images", "--out", str(first), *model_args)
    run_cli("score", "captions.json", "--images", "images", "--out", str(second), *model_args)

    assert first.read_bytes() == second.read_bytes()


def test_score_cache_reused_across_runs(model_args, tmp_path):
    cache = tmp_path / "cache"
    first, second = tmp_path / "a.json", tmp_path / "b.json"

    run_cli("score", "captions.json", "--images", "images", "--out", str(first), "--cache", str(cache), *model_args)
    entries = sorted(p.name for p in cache.rglob("*.emb"))
    # A second run must take every image from disk: make the model's image encoder fail if it is reached.
    from i0tscore import model as model_module

    original = model_module.ClipEncoder.encode_pixels
    model_module.ClipEncoder.encode_pixels = lambda self, pixels: (_ for _ in ()).throw(AssertionError("image encoded again"))
    try:
        completed = run_cli("score", "captions.json", "--images", "images", "--out", str(second), "--cache", str(cache), *model_args)
    finally:
        model_module.ClipEncoder.encode_pixels = original

    assert completed.returncode == 0, completed.stderr
    assert len(entries) == len(list((EXAMPLES / "images").iterdir()))
    assert first.read_bytes() == second.read_bytes()


def test_missing_image_fails_with_exit_2(model_args, tmp_path):
    lines = [{"image": str(EXAMPLES / "images" / "cat.png"), "caption": "a cat"}, {"image": str(tmp_path / "gone.jpg"), "caption": "nothing"}]
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")

    completed = run_installed("score", str(candidates), *model_args)

    assert completed.returncode == 2
    assert "gone.jpg" in completed.stderr
    assert "--on-error skip" in completed.stderr


def test_missing_image_skipped_on_request(model_args, tmp_path):
    lines = [{"image": str(EXAMPLES / "images" / "cat.png"), "caption": "a cat"}, {"image": str(tmp_path / "gone.jpg"), "caption": "nothing"}]
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")

    completed = run_cli("score", str(candidates), "--on-error", "skip", *model_args)

    assert completed.returncode == 0, completed.stderr
    items = json.loads(completed.stdout)["items"]
    assert "i0t_s" in items[0]
    assert "gone.jpg" in items[1]["error"]
    assert "i0t_s" not in items[1]
    assert "1 skipped" in completed.stderr


def test_malformed_candidates_exit_2(model_args, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.jpg", "caption": "x"}\n{not json\n', encoding="utf-8")

    completed = run_cli("score", str(bad), *model_args)

    assert completed.returncode == 2
    assert "line 2" in completed.stderr


def test_no_statistics_exit_2(tiny_clip):
    completed = run_cli("score", "captions.json", "--images", "images", "--model", str(tiny_clip))

    assert completed.returncode == 2
    assert "stats build" in completed.stderr


def test_missing_model_exit_2(tmp_path):
    completed = run_cli("score", "captions.json", "--images", "images", "--model", "no-such-org/no-such-clip")

    assert completed.returncode == 2
    assert "no-such-org/no-such-clip" in completed.stderr
    assert "local folder" in completed.stderr


def test_bad_usage_exit_2():
    completed = run_cli("score")

    assert completed.returncode == 2


def test_corpus_stats_warns_small_set(tiny_clip):
    completed = run_cli("score", "captions.json", "--images", "images", "--model", str(tiny_clip), "--stats", "corpus", "--no-progress")

    assert completed.returncode == 0, completed.stderr
    assert "fewer than 32" in completed.stderr
    assert "stats=corpus:" in completed.stderr


# ---------------------------------------------------------------------- stats commands


def test_stats_build_deterministic(tiny_clip, tmp_path):
    outputs = []
    for name in ("a.json", "b.json"):
        out = tmp_path / name
        completed = run_cli(
            "stats", "build", "--model", str(tiny_clip), "--data", "coco_annotations.json", "--images", "images",
            "--out", str(out), "--no-progress", env={"SOURCE_DATE_EPOCH": "1700000000"},
        )
        assert completed.returncode == 0, completed.stderr
        outputs.append(out.read_bytes())

    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["provenance"]["date"] == "2023-11-14"


def test_stats_build_shards_merge(tiny_clip, tmp_path):
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    common = ["--model", str(tiny_clip), "--data", "coco_annotations.json", "--images", "images", "--no-progress", "--batch-size", "1"]
    for k in range(2):
        completed = run_cli("stats", "build", *common, "--shard", f"{k}/2", "--out", str(tmp_path / f"shard{k}.json"), env=env)
        assert completed.returncode == 0, completed.stderr
    run_cli("stats", "build", *common, "--out", str(tmp_path / "whole.json"), env=env)

    completed = run_cli("stats", "merge", str(tmp_path / "shard0.json"), str(tmp_path / "shard1.json"), "--out", str(tmp_path / "merged.json"), env=env)

    assert completed.returncode == 0, completed.stderr
    merged = json.loads((tmp_path / "merged.json").read_text(encoding="utf-8"))
    whole = json.loads((tmp_path / "whole.json").read_text(encoding="utf-8"))
    assert merged["num_pairs"] == whole["num_pairs"] == 24
    assert merged["image_mean"] == whole["image_mean"]
    assert merged["text_mean"] == whole["text_mean"]


def test_stats_build_jsonl_with_limit(tiny_clip, tmp_path):
    out = tmp_path / "limited.json"

    completed = run_cli("stats", "build", "--model", str(tiny_clip), "--data", "candidates.jsonl", "--limit", "5", "--seed", "3", "--out", str(out), "--no-progress")

    assert completed.returncode == 0, completed.stderr
    payload = json.loads(out.read_text(encoding="utf-8"))
    assert payload["num_pairs"] == 5
    assert payload["provenance"]["seed"] == 3


def test_stats_show_file(tiny_stats):
    completed = run_cli("stats", "show", str(tiny_stats))

    assert completed.returncode == 0, completed.stderr
    shown = json.loads(completed.stdout)
    assert shown["dim"] == 32
    assert shown["num_pairs"] == 24


def test_stats_list_runs():
    completed = run_cli("stats", "list")

    assert completed.returncode == 0, completed.stderr


def test_main_job_on_examples(tmp_path):
    """The README's main job: the committed checkpoint with its shipped statistics, offline."""
    out = tmp_path / "scores.json"

    completed = run_installed(
        "score", "captions.json", "--images", "images", "--references", "references.json",
        "--model", str(SYNTHCLIP), "--compare", "--out", str(out), env={"HF_HUB_OFFLINE": "1"},
    )

    assert completed.returncode == 0, completed.stderr
    scores = json.loads(out.read_text(encoding="utf-8"))
    assert len(scores["items"]) == 8
    assert "model=synthclip" in scores["summary"]["signature"] or "model=model" in scores["summary"]["signature"]
    assert all(np.isfinite(item["ref_i0t_s"]) for item in scores["items"])


def test_module_entry_point(model_args):
    completed = subprocess.run([sys.executable, "-m", "i0tscore.cli", "--version"], capture_output=True, text=True)

    assert completed.returncode == 0
    assert completed.stdout.startswith("i0tscore ")


# ---------------------------------------------------------------------- resuming


def test_score_resumes_after_interruption(model_args, tmp_path, monkeypatch):
    from i0tscore.scorer import I0TScore

    reference = tmp_path / "reference.json"
    run_cli("score", "candidates.jsonl", "--compare", "--chunk-size", "4", "--out", str(reference), *model_args)
    out = tmp_path / "scores.json"
    original = I0TScore.score
    scored_items = []

    def interrupted(self, images, captions, references=None, **kwargs):
        if len(scored_items) >= 2:
            raise KeyboardInterrupt()
        scored_items.append(len(images))
        return original(self, images, captions, references, **kwargs)

    monkeypatch.setattr(I0TScore, "score", interrupted)
    completed = run_cli("score", "candidates.jsonl", "--compare", "--chunk-size", "4", "--out", str(out), *model_args)
    assert completed.returncode == 1
    assert not out.exists()
    partial = tmp_path / "scores.json.partial.jsonl"
    assert len(partial.read_text(encoding="utf-8").splitlines()) == 1 + 8

    counted = []
    monkeypatch.setattr(I0TScore, "score", lambda self, images, *a, **k: counted.append(len(images)) or original(self, images, *a, **k))
    completed = run_cli("score", "candidates.jsonl", "--compare", "--chunk-size", "4", "--out", str(out), "--resume", *model_args)

    assert completed.returncode == 0, completed.stderr
    assert sum(counted) == 8
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(reference.read_text(encoding="utf-8"))
    assert not partial.exists()


def test_score_partial_without_resume_rejected(model_args, tmp_path):
    out = tmp_path / "scores.json"
    (tmp_path / "scores.json.partial.jsonl").write_text("{}\n", encoding="utf-8")

    completed = run_cli("score", "captions.json", "--images", "images", "--out", str(out), *model_args)

    assert completed.returncode == 2
    assert "--resume" in completed.stderr


def test_score_resume_other_input_rejected(model_args, tmp_path, monkeypatch):
    from i0tscore.scorer import I0TScore

    out = tmp_path / "scores.json"
    original = I0TScore.score

    def interrupted(self, images, *args, **kwargs):
        original(self, images, *args, **kwargs)
        raise KeyboardInterrupt()

    monkeypatch.setattr(I0TScore, "score", interrupted)
    run_cli("score", "candidates.jsonl", "--chunk-size", "4", "--out", str(out), *model_args)
    monkeypatch.setattr(I0TScore, "score", original)

    completed = run_cli("score", "captions.json", "--images", "images", "--out", str(out), "--resume", *model_args)

    assert completed.returncode == 2
    assert "other items" in completed.stderr


# ---------------------------------------------------------------------- gap


def test_gap_on_real_embeddings_json(real_features, tmp_path):
    from conftest import REAL_FEATURES

    completed = run_cli("gap", "--embeddings", str(REAL_FEATURES), "--format", "json")

    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    image, text = real_features
    expected = np.linalg.norm(image.mean(axis=0) - text.mean(axis=0))
    assert report["before"]["centroid_distance"] == pytest.approx(expected, rel=1e-6)
    assert report["before"]["severity"] == "severe"
    assert report["after"]["severity"] == "low"


def test_gap_table_and_plot(tmp_path):
    from PIL import Image

    from conftest import REAL_FEATURES

    plot = tmp_path / "gap.png"
    completed = run_cli("gap", "--embeddings", str(REAL_FEATURES), "--split", "--plot", str(plot))

    assert completed.returncode == 0, completed.stderr
    assert "centroid distance" in completed.stdout
    with Image.open(plot) as image:
        assert image.width > image.height


def test_gap_encodes_corpus_with_stats(tiny_clip, tiny_stats):
    completed = run_cli("gap", "--model", str(tiny_clip), "--data", "coco_annotations.json", "--images", "images", "--stats", str(tiny_stats), "--format", "json", "--no-progress")

    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["means"] == "out-of-sample"
    assert report["n_pairs"] == 24


def test_gap_bad_embeddings_exit_2(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 4)))

    completed = run_cli("gap", "--embeddings", str(bad))

    assert completed.returncode == 2
    assert "bad.npy" in completed.stderr
