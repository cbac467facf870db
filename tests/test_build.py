"""Building statistics: equal to numpy means, each image once, resumable after an interruption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from i0tscore.build import build_statistics, group_by_image, subsample
from i0tscore.inputs import read_corpus
from i0tscore.model import load_clip
from i0tscore.statistics import Statistics

from conftest import EXAMPLES


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    return load_clip(tiny_clip, device="cpu")


@pytest.fixture(scope="module")
def pairs():
    return read_corpus(EXAMPLES / "coco_annotations.json", images=EXAMPLES / "images")


class Interrupt(Exception):
    pass


def test_build_means_match_direct_encoding(encoder, pairs):
    from i0tscore.images import load_rgb

    stats = build_statistics(encoder, pairs, corpus="examples", corpus_path="examples", progress=False)

    groups = group_by_image(pairs)
    images = encoder.encode_pixels(encoder.preprocess([load_rgb(path) for path, _ in groups])).double().numpy()
    ids, mask, _ = encoder.tokenize(["A photo depicts " + pair.caption for pair in pairs])
    texts = encoder.encode_texts(ids, mask).double().numpy()
    np.testing.assert_allclose(stats.image_mean, images.mean(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(stats.text_mean, texts.mean(axis=0), rtol=0, atol=1e-6)
    assert stats.num_pairs == 24
    assert stats.num_images == 8
    assert stats.num_texts == 24


def test_build_encodes_each_image_once(encoder, pairs, monkeypatch):
    encoded = []
    original = encoder.encode_pixels

    def counting(pixels):
        encoded.append(pixels.shape[0])
        return original(pixels)

    monkeypatch.setattr(encoder, "encode_pixels", counting)
    build_statistics(encoder, pairs, corpus="examples", corpus_path="examples", progress=False)

    assert sum(encoded) == 8


def test_build_resumes_without_recomputing(encoder, pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    checkpoint = tmp_path / "stats.json.partial.json"
    reference = build_statistics(encoder, pairs, corpus="c", corpus_path="c", batch_size=1, progress=False)

    original = encoder.encode_pixels
    calls = []

    def failing(pixels):
        calls.append(pixels.shape[0])
        if len(calls) == 6:
            raise Interrupt()
        return original(pixels)

    monkeypatch.setattr(encoder, "encode_pixels", failing)
    with pytest.raises(Interrupt):
        build_statistics(encoder, pairs, corpus="c", corpus_path="c", batch_size=1, checkpoint=checkpoint, checkpoint_every=2, progress=False)
    state = json.loads(checkpoint.read_text(encoding="utf-8"))
    assert state["done_images"] == 4

    calls.clear()
    monkeypatch.setattr(encoder, "encode_pixels", lambda pixels: calls.append(pixels.shape[0]) or original(pixels))
    resumed = build_statistics(encoder, pairs, corpus="c", corpus_path="c", batch_size=1, checkpoint=checkpoint, resume=True, progress=False)

    assert sum(calls) == 4
    assert resumed.to_json() == reference.to_json()
    assert not checkpoint.exists()


def test_resume_rejects_other_settings(encoder, pairs, tmp_path, monkeypatch):
    checkpoint = tmp_path / "stats.json.partial.json"
    original = encoder.encode_pixels
    calls = []

    def failing(pixels):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupt()
        return original(pixels)

    monkeypatch.setattr(encoder, "encode_pixels", failing)
    with pytest.raises(Interrupt):
        build_statistics(encoder, pairs, corpus="c", corpus_path="c", batch_size=1, checkpoint=checkpoint, checkpoint_every=2, progress=False)
    monkeypatch.setattr(encoder, "encode_pixels", original)

    with pytest.raises(ValueError, match="another corpus, model, prefix"):
        build_statistics(encoder, pairs, corpus="c", corpus_path="c", batch_size=1, prefix="A picture of ", checkpoint=checkpoint, resume=True, progress=False)


def test_build_skips_unreadable_image(encoder, pairs, tmp_path):
    from i0tscore.inputs import Pair

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    corpus = list(pairs) + [Pair(broken, "a broken file")]

    stats = build_statistics(encoder, corpus, corpus="c", corpus_path="c", on_error="skip", progress=False)

    assert stats.num_pairs == 24
    assert stats.provenance["skipped_images"] == 1


def test_build_unreadable_image_names_file(encoder, pairs, tmp_path):
    from i0tscore.images import ImageLoadError
    from i0tscore.inputs import Pair

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")

    with pytest.raises(ImageLoadError, match="broken.jpg"):
        build_statistics(encoder, [Pair(broken, "a broken file")], corpus="c", corpus_path="c", progress=False)


def test_subsample_seeded(pairs):
    first = subsample(pairs, 5, seed=1)
    again = subsample(pairs, 5, seed=1)
    other = subsample(pairs, 5, seed=2)

    assert first == again
    assert first != other
    assert len(first) == 5


def test_saved_file_loads(encoder, pairs, tmp_path):
    stats = build_statistics(encoder, pairs, corpus="c", corpus_path="c", progress=False)
    stats.save(tmp_path / "s.json")

    assert Statistics.load(tmp_path / "s.json").checksum == stats.checksum
