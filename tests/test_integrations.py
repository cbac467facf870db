"""Tests of the torchmetrics metric and the pycocoevalcap-style scorer."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import i0tscore.scorer
from i0tscore import I0TScore

REPO = Path(__file__).resolve().parents[1]

# The tiny test checkpoint reads 32 characters at most, so most captions here are truncated.
pytestmark = pytest.mark.filterwarnings("ignore:.*exceeded the model's maximum:UserWarning")

CAPTIONS = [
    "An astronaut in an orange suit.",
    "A cup of coffee on a saucer.",
    "A rocket on a launch pad.",
    "A tabby cat with green eyes.",
    "A black and white photo of a man with a camera.",
    "A telescope in orbit above the earth.",
    "A photo of the back of an eye.",
    "A wall of red bricks.",
]
REFERENCES = [[f"reference {n} of item {i}" for n in range(1 + i % 3)] for i in range(len(CAPTIONS))]


@pytest.fixture(scope="module")
def scorer(tiny_clip, tiny_stats):
    return I0TScore(tiny_clip, stats=tiny_stats, device="cpu", progress=False, batch_size=4)


@pytest.fixture(scope="module")
def items(example_images):
    assert len(example_images) == len(CAPTIONS)
    return [str(path) for path in example_images]


# ---------------------------------------------------------------------- torchmetrics


def test_metric_equals_score_means(tiny_clip, tiny_stats, scorer, items):
    from i0tscore.integrations.torchmetrics import I0TScoreMetric

    metric = I0TScoreMetric(tiny_clip, stats=tiny_stats, device="cpu", progress=False)
    for start in range(0, len(items), 3):
        metric.update(items[start : start + 3], CAPTIONS[start : start + 3], REFERENCES[start : start + 3])
    values = metric.compute()

    expected = scorer.score(items, CAPTIONS, REFERENCES)
    assert set(values) == {"i0t_s", "clip_s", "ref_i0t_s", "ref_clip_s"}
    assert values["i0t_s"].item() == pytest.approx(expected.i0t_s.mean(), abs=1e-6)
    assert values["clip_s"].item() == pytest.approx(expected.clip_s.mean(), abs=1e-6)
    assert values["ref_i0t_s"].item() == pytest.approx(expected.ref_i0t_s.mean(), abs=1e-6)
    assert values["ref_clip_s"].item() == pytest.approx(expected.ref_clip_s.mean(), abs=1e-6)


def test_metric_without_references(scorer, items):
    from i0tscore.integrations.torchmetrics import I0TScoreMetric

    metric = I0TScoreMetric(scorer=scorer)
    metric.update(items[:4], CAPTIONS[:4])
    values = metric.compute()
    assert set(values) == {"i0t_s", "clip_s"}
    assert values["i0t_s"].item() == pytest.approx(scorer.score(items[:4], CAPTIONS[:4]).i0t_s.mean(), abs=1e-6)


def test_metric_reset_and_empty(scorer, items):
    from i0tscore.integrations.torchmetrics import I0TScoreMetric

    metric = I0TScoreMetric(scorer=scorer)
    metric.update(items[:2], CAPTIONS[:2])
    metric.reset()
    assert int(metric.count) == 0
    metric.update(items[2:4], CAPTIONS[2:4])
    assert metric.compute()["i0t_s"].item() == pytest.approx(scorer.score(items[2:4], CAPTIONS[2:4]).i0t_s.mean(), abs=1e-6)

    with pytest.warns(UserWarning, match="called before"):
        empty = I0TScoreMetric(scorer=scorer).compute()
    assert torch.isnan(empty["i0t_s"])


def test_metric_loads_model_once(tiny_clip, tiny_stats, items, monkeypatch):
    from i0tscore.integrations.torchmetrics import I0TScoreMetric

    calls = []
    original = i0tscore.scorer.load_clip

    def counting_load_clip(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(i0tscore.scorer, "load_clip", counting_load_clip)
    metric = I0TScoreMetric(tiny_clip, stats=tiny_stats, device="cpu", progress=False)
    for start in range(0, len(items), 2):
        metric.update(items[start : start + 2], CAPTIONS[start : start + 2])
        metric.compute()
    metric.to("cpu")
    clone = metric.clone()
    clone.update(items[:1], CAPTIONS[:1])
    copy.deepcopy(metric)
    assert len(calls) == 1
    assert clone.scorer is metric.scorer


def test_metric_scorer_not_module_or_state(scorer):
    from i0tscore.integrations.torchmetrics import I0TScoreMetric

    metric = I0TScoreMetric(scorer=scorer)
    assert list(metric.children()) == []
    assert list(metric.parameters()) == []
    assert all(name.endswith(("_sum", "count", "num_skipped")) for name in metric._defaults)
    assert not any("model" in name for name in metric.state_dict())


def test_metric_forwards_metric_kwargs(scorer):
    from i0tscore.integrations.torchmetrics import I0TScoreMetric

    metric = I0TScoreMetric(scorer=scorer, sync_on_compute=False)
    assert metric.sync_on_compute is False
    with pytest.raises(ValueError, match="not both"):
        I0TScoreMetric(scorer=scorer, stats="corpus")
    with pytest.raises(ValueError, match="Unexpected keyword"):
        I0TScoreMetric(scorer=scorer, no_such_option=1)


def test_metric_rejects_corpus_statistics(tiny_clip):
    from i0tscore.integrations.torchmetrics import I0TScoreMetric

    with pytest.raises(ValueError, match="fixed statistics"):
        I0TScoreMetric(tiny_clip, stats="corpus", device="cpu")


def test_metric_skips_unreadable_images(scorer, items, tmp_path):
    from i0tscore.integrations.torchmetrics import I0TScoreMetric

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    metric = I0TScoreMetric(scorer=scorer, on_error="skip")
    metric.update([items[0], str(broken), items[1]], [CAPTIONS[0], "a broken file", CAPTIONS[1]])
    assert int(metric.count) == 2
    assert int(metric.num_skipped) == 1
    expected = scorer.score(items[:2], CAPTIONS[:2]).i0t_s.mean()
    assert metric.compute()["i0t_s"].item() == pytest.approx(expected, abs=1e-6)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_import_does_not_load_torchmetrics():
    done = run_python(
        "import sys, i0tscore, i0tscore.cache, i0tscore.integrations, i0tscore.integrations.coco\n"
        "assert 'torchmetrics' not in sys.modules, 'torchmetrics was imported'\n"
    )
    assert done.returncode == 0, done.stderr


def test_integration_without_torchmetrics_names_extra():
    done = run_python(
        "import sys\n"
        "sys.modules['torchmetrics'] = None\n"
        "try:\n"
        "    import i0tscore.integrations.torchmetrics\n"
        "except ImportError as err:\n"
        "    print(err)\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    assert done.returncode == 0, done.stderr
    assert "i0tscore[torchmetrics]" in done.stdout


# ---------------------------------------------------------------------- torchmetrics across processes


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gloo_worker(rank: int, world_size: int, port: int, model: str, stats: str, items: list, out_dir: str) -> None:
    """Update the metric with this rank's half of the items and write the synced result."""
    import torch.distributed as dist

    from i0tscore.integrations.torchmetrics import I0TScoreMetric

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        metric = I0TScoreMetric(model, stats=stats, device="cpu", progress=False)
        half = len(items) // world_size
        own = slice(rank * half, (rank + 1) * half)
        metric.update(items[own], CAPTIONS[own], REFERENCES[own])
        values = {name: value.item() for name, value in metric.compute().items()}
        values["local_count"] = int(metric.count)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(values))
    finally:
        dist.destroy_process_group()


def test_metric_syncs_across_two_processes(tiny_clip, tiny_stats, scorer, items, tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    # gloo binds its own sockets on the interface named here; keep them on loopback.
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    port = free_loopback_port()
    mp.spawn(
        gloo_worker,
        args=(2, port, str(tiny_clip), str(tiny_stats), items, str(tmp_path)),
        nprocs=2,
        join=True,
    )

    expected = scorer.score(items, CAPTIONS, REFERENCES)
    for rank in range(2):
        values = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert values["local_count"] == len(items) // 2, f"rank {rank} kept the synced count after compute"
        assert values["i0t_s"] == pytest.approx(expected.i0t_s.mean(), abs=1e-6), f"rank {rank}"
        assert values["clip_s"] == pytest.approx(expected.clip_s.mean(), abs=1e-6), f"rank {rank}"
        assert values["ref_i0t_s"] == pytest.approx(expected.ref_i0t_s.mean(), abs=1e-6), f"rank {rank}"
        assert values["ref_clip_s"] == pytest.approx(expected.ref_clip_s.mean(), abs=1e-6), f"rank {rank}"


# ---------------------------------------------------------------------- pycocoevalcap-style scorer


@pytest.fixture(scope="module")
def coco_inputs(items):
    # Ids in an order that is neither sorted nor the order of res, to check which one is followed.
    ids = [5, 2, 8, 1, 7, 3, 6, 4]
    paths = {image_id: items[image_id - 1] for image_id in ids}
    gts = {image_id: REFERENCES[image_id - 1] for image_id in ids}
    res = {image_id: [CAPTIONS[image_id - 1]] for image_id in sorted(ids, reverse=True)}
    return ids, paths, gts, res


def test_coco_scores_follow_gts_order(scorer, items, coco_inputs):
    from i0tscore.integrations.coco import I0TScorer

    ids, paths, gts, res = coco_inputs
    mean, per_item = I0TScorer(paths, scorer=scorer).compute_score(gts, res)

    expected = scorer.score(items, CAPTIONS)
    by_id = {image_id: expected.i0t_s[image_id - 1] for image_id in ids}
    assert isinstance(mean, float)
    assert isinstance(per_item, np.ndarray)
    np.testing.assert_allclose(per_item, [by_id[image_id] for image_id in gts], atol=1e-6)
    assert mean == pytest.approx(expected.i0t_s.mean(), abs=1e-6)


@pytest.mark.parametrize(
    ("score", "method"),
    [("i0t_s", "I0T-S"), ("clip_s", "CLIP-S"), ("ref_i0t_s", "Ref-I0T-S"), ("ref_clip_s", "RefCLIP-S")],
)
def test_coco_score_options(scorer, items, coco_inputs, score, method):
    from i0tscore.integrations.coco import I0TScorer

    ids, paths, gts, res = coco_inputs
    coco_scorer = I0TScorer(paths, scorer=scorer, score=score)
    _, per_item = coco_scorer.compute_score(gts, res)

    expected = getattr(scorer.score(items, CAPTIONS, REFERENCES), score)
    assert coco_scorer.method() == method
    np.testing.assert_allclose(per_item, [expected[image_id - 1] for image_id in gts], atol=1e-6)


def test_coco_accepts_caption_dicts(scorer, coco_inputs):
    from i0tscore.integrations.coco import I0TScorer

    ids, paths, gts, res = coco_inputs
    coco_scorer = I0TScorer(paths, scorer=scorer, score="ref_i0t_s")
    plain = coco_scorer.compute_score(gts, res)[1]
    as_dicts = coco_scorer.compute_score(
        {k: [{"caption": ref} for ref in refs] for k, refs in gts.items()},
        {k: [{"caption": caption[0]}] for k, caption in res.items()},
    )[1]
    np.testing.assert_array_equal(plain, as_dicts)


@pytest.mark.parametrize("candidates", [[], ["one", "two"], "one caption"])
def test_coco_requires_one_caption_per_id(scorer, coco_inputs, candidates):
    from i0tscore.integrations.coco import I0TScorer

    ids, paths, gts, res = coco_inputs
    bad = dict(res)
    bad[ids[0]] = candidates
    with pytest.raises(ValueError, match="exactly one candidate caption"):
        I0TScorer(paths, scorer=scorer).compute_score(gts, bad)


def test_coco_rejects_mismatched_ids(scorer, coco_inputs):
    from i0tscore.integrations.coco import I0TScorer

    ids, paths, gts, res = coco_inputs
    fewer = {k: v for k, v in res.items() if k != ids[0]}
    with pytest.raises(ValueError, match=r"Only in gts: 5; only in res: none"):
        I0TScorer(paths, scorer=scorer).compute_score(gts, fewer)


def test_coco_rejects_missing_image_path(scorer, coco_inputs):
    from i0tscore.integrations.coco import I0TScorer

    ids, paths, gts, res = coco_inputs
    partial = {k: v for k, v in paths.items() if k != ids[1]}
    with pytest.raises(ValueError, match="No image path for image id"):
        I0TScorer(partial, scorer=scorer).compute_score(gts, res)


def test_coco_rejects_empty_references(scorer, coco_inputs):
    from i0tscore.integrations.coco import I0TScorer

    ids, paths, gts, res = coco_inputs
    bad = dict(gts)
    bad[ids[2]] = []
    with pytest.raises(ValueError, match="non-empty list"):
        I0TScorer(paths, scorer=scorer).compute_score(bad, res)


def test_coco_rejects_unknown_score(scorer):
    from i0tscore.integrations.coco import I0TScorer

    with pytest.raises(ValueError, match="Unknown score"):
        I0TScorer({}, scorer=scorer, score="bleu")


def test_coco_order_matches_pycocoevalcap_bleu(scorer, coco_inputs):
    bleu_module = pytest.importorskip("pycocoevalcap.bleu.bleu")
    from i0tscore.integrations.coco import I0TScorer

    ids, paths, gts, res = coco_inputs
    # Candidates equal to a reference get BLEU-1 of 1 (up to pycocoevalcap's smoothing terms), the others less.
    exact = {ids[0], ids[3]}
    candidates = {k: [gts[k][0] if k in exact else "zzz qqq"] for k in res}
    _, bleu_items = bleu_module.Bleu(1).compute_score(gts, candidates, verbose=0)
    _, per_item = I0TScorer(paths, scorer=scorer).compute_score(gts, candidates)

    assert len(per_item) == len(bleu_items[0])
    assert [score > 0.999 for score in bleu_items[0]] == [k in exact for k in gts]
