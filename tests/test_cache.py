"""Tests of the image-embedding cache: keys, memory, disk entries, concurrency, and use by the scorer."""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import json
import multiprocessing
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i0tscore import I0TScore
from i0tscore.cache import (
    EmbeddingCache,
    decode_entry,
    encode_entry,
    image_content_hash,
    resolve_cache,
)
from i0tscore.statistics import ModelIdentity

CACHE_SOURCE = Path(__file__).resolve().parents[1] / "i0tscore" / "cache.py"
KEY = "ab" * 32


@pytest.fixture(scope="module")
def scorer(tiny_clip, tiny_stats):
    return I0TScore(tiny_clip, stats=tiny_stats, device="cpu", progress=False, batch_size=4)


@pytest.fixture
def count_encoded(scorer, monkeypatch):
    """Count the image rows that reach the model's image encoder."""
    counter = {"rows": 0}
    original = scorer.encoder.encode_pixels

    def counting(pixels):
        counter["rows"] += int(pixels.shape[0])
        return original(pixels)

    monkeypatch.setattr(scorer.encoder, "encode_pixels", counting)
    return counter


def unit_vector(dim: int, seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


# ---------------------------------------------------------------------- memory


def test_memory_hit_miss_counts():
    cache = EmbeddingCache()
    assert cache.get(KEY) is None
    cache.put(KEY, unit_vector(8, 0))
    assert cache.get(KEY) is not None
    assert cache.get(KEY) is not None
    assert cache.stats.hits == 2
    assert cache.stats.misses == 1
    assert cache.stats.disk_hits == 0


def test_get_returns_stored_copy():
    cache = EmbeddingCache()
    vector = unit_vector(8, 0)
    cache.put(KEY, vector)
    first = cache.get(KEY)
    first[:] = 0.0
    np.testing.assert_array_equal(cache.get(KEY), vector)


def test_memory_limit_drops_least_recent():
    cache = EmbeddingCache(max_memory_items=2)
    keys = [f"{n:064x}" for n in range(3)]
    for n, key in enumerate(keys):
        cache.put(key, unit_vector(4, n))
    assert len(cache) == 2
    assert cache.get(keys[0]) is None
    assert cache.get(keys[2]) is not None


def test_clear_memory_keeps_disk(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put(KEY, unit_vector(8, 1))
    cache.clear_memory()
    assert len(cache) == 0
    np.testing.assert_array_equal(cache.get(KEY), unit_vector(8, 1))
    assert cache.stats.disk_hits == 1


def test_get_with_other_dimension_misses():
    cache = EmbeddingCache()
    cache.put(KEY, unit_vector(8, 0))
    assert cache.get(KEY, dim=16) is None


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan]), np.array([np.inf, 0.0]), np.zeros((2, 2)), np.zeros(0)])
def test_put_rejects_invalid_embedding(bad):
    with pytest.raises(ValueError):
        EmbeddingCache().put(KEY, bad)


@pytest.mark.parametrize("key", ["", "abc", "../" + "a" * 61, "G" * 64])
def test_invalid_key_rejected(key):
    with pytest.raises(ValueError, match="Invalid cache key"):
        EmbeddingCache().get(key)


def test_resolve_cache_accepts_folder(tmp_path):
    assert resolve_cache(None) is None
    cache = EmbeddingCache()
    assert resolve_cache(cache) is cache
    assert resolve_cache(tmp_path).folder == tmp_path
    with pytest.raises(TypeError):
        resolve_cache(3)


# ---------------------------------------------------------------------- content hashes


def test_content_hash_of_file_is_its_sha256(example_images):
    path = example_images[0]
    assert image_content_hash(path) == "file-sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_content_hash_array_and_tensor_differ():
    array = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    tensor = torch.from_numpy(array.copy())
    assert image_content_hash(array) != image_content_hash(tensor)
    assert image_content_hash(array) == image_content_hash(array.copy())
    assert image_content_hash(tensor) == image_content_hash(tensor.clone())


def test_content_hash_shape_and_dtype_matter():
    array = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert image_content_hash(array) != image_content_hash(array.reshape(4, 12))
    assert image_content_hash(array) != image_content_hash(array.view(np.int8))
    assert image_content_hash(np.asfortranarray(array)) == image_content_hash(array)


def test_content_hash_pil_follows_pixels_and_palette():
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    image = Image.fromarray(pixels)
    assert image_content_hash(image) == image_content_hash(Image.fromarray(pixels.copy()))
    changed = pixels.copy()
    changed[0, 0, 0] ^= 1
    assert image_content_hash(image) != image_content_hash(Image.fromarray(changed))

    indexed = Image.fromarray(np.zeros((4, 4), dtype=np.uint8), mode="P")
    indexed.putpalette([255, 0, 0] * 256)
    recoloured = indexed.copy()
    recoloured.putpalette([0, 0, 255] * 256)
    assert image_content_hash(indexed) != image_content_hash(recoloured)


def test_content_hash_pil_follows_exif_orientation():
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    rotated = image.copy()
    rotated.getexif()[0x0112] = 6
    assert image_content_hash(image) != image_content_hash(rotated)


def test_content_hash_rejects_unknown_type():
    with pytest.raises(TypeError):
        image_content_hash(object())


# ---------------------------------------------------------------------- key parts


def test_key_changes_with_each_part(scorer):
    encoder = scorer.encoder
    content = image_content_hash(np.zeros((4, 4, 3), dtype=np.uint8))
    base = EmbeddingCache.key(content, encoder)
    identity = encoder.identity

    renamed = dataclasses.replace(encoder, identity=dataclasses.replace(identity, model_id="another-model"))
    revised = dataclasses.replace(encoder, identity=dataclasses.replace(identity, revision="f" * 40))
    reweighted = dataclasses.replace(encoder, identity=dataclasses.replace(identity, weights_sha256="0" * 64))
    retyped = dataclasses.replace(encoder, dtype=torch.bfloat16)
    resized = dataclasses.replace(encoder, image_processor=copy.deepcopy(encoder.image_processor))
    resized.image_processor.crop_size = {"height": 16, "width": 16}
    renormalized = dataclasses.replace(encoder, image_processor=copy.deepcopy(encoder.image_processor))
    renormalized.image_processor.image_mean = [0.5, 0.5, 0.5]
    other_content = image_content_hash(np.ones((4, 4, 3), dtype=np.uint8))

    variants = {
        "model id": EmbeddingCache.key(content, renamed),
        "revision": EmbeddingCache.key(content, revised),
        "weights": EmbeddingCache.key(content, reweighted),
        "dtype": EmbeddingCache.key(content, retyped),
        "crop size": EmbeddingCache.key(content, resized),
        "image mean": EmbeddingCache.key(content, renormalized),
        "image bytes": EmbeddingCache.key(other_content, encoder),
    }
    for part, key in variants.items():
        assert key != base, f"changing the {part} kept the key"
    assert len(set(variants.values())) == len(variants)
    assert EmbeddingCache.key(content, encoder) == base


def test_changed_key_part_misses_on_disk(scorer, tmp_path):
    encoder = scorer.encoder
    content = image_content_hash(np.zeros((4, 4, 3), dtype=np.uint8))
    EmbeddingCache(tmp_path).put(EmbeddingCache.key(content, encoder), unit_vector(encoder.dim, 0))

    retyped = dataclasses.replace(encoder, dtype=torch.bfloat16)
    fresh = EmbeddingCache(tmp_path)
    assert fresh.get(EmbeddingCache.key(content, retyped)) is None
    assert fresh.get(EmbeddingCache.key(content, encoder)) is not None


def test_unpinned_hub_model_rejected(scorer):
    floating = dataclasses.replace(
        scorer.encoder, identity=ModelIdentity(model_id="openai/clip-vit-base-patch32", revision="main")
    )
    with pytest.raises(ValueError, match="commit hash"):
        EmbeddingCache.key("file-sha256:00", floating)
    pinned = dataclasses.replace(
        scorer.encoder, identity=ModelIdentity(model_id="openai/clip-vit-base-patch32", revision="a" * 40)
    )
    assert len(EmbeddingCache.key("file-sha256:00", pinned)) == 64


# ---------------------------------------------------------------------- disk entries


def test_disk_entry_survives_new_cache(tmp_path):
    vector = unit_vector(32, 3)
    EmbeddingCache(tmp_path).put(KEY, vector)
    fresh = EmbeddingCache(tmp_path)
    np.testing.assert_array_equal(fresh.get(KEY), vector)
    assert fresh.stats.disk_hits == 1
    assert fresh.stats.misses == 0


def test_disk_folder_has_no_temporary_files(tmp_path):
    cache = EmbeddingCache(tmp_path)
    for n in range(5):
        cache.put(f"{n:064x}", unit_vector(8, n))
    names = [path.name for path in tmp_path.rglob("*") if path.is_file()]
    assert len(names) == 5
    assert all(name.endswith(".emb") and not name.startswith(".") for name in names)


def entry_path(folder: Path, key: str) -> Path:
    paths = list(folder.rglob(f"{key}.emb"))
    assert len(paths) == 1
    return paths[0]


def damage_truncate(data: bytes) -> bytes:
    return data[:-5]


def damage_flip_payload_bit(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[-3] ^= 0x10
    return bytes(damaged)


def damage_flip_header_bit(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[20] ^= 0x01
    return bytes(damaged)


def damage_empty(data: bytes) -> bytes:
    return b""


def damage_magic(data: bytes) -> bytes:
    return b"X" + data[1:]


def damage_extra_bytes(data: bytes) -> bytes:
    return data + b"\0\0\0\0"


@pytest.mark.parametrize(
    "damage",
    [damage_truncate, damage_flip_payload_bit, damage_flip_header_bit, damage_empty, damage_magic, damage_extra_bytes],
)
def test_damaged_entry_is_miss(tmp_path, damage, caplog):
    EmbeddingCache(tmp_path).put(KEY, unit_vector(32, 4))
    path = entry_path(tmp_path, KEY)
    path.write_bytes(damage(path.read_bytes()))

    fresh = EmbeddingCache(tmp_path)
    with caplog.at_level("WARNING", logger="i0tscore.cache"):
        assert fresh.get(KEY) is None
    assert fresh.stats.misses == 1
    assert fresh.stats.corrupt == 1
    assert "corrupt cache entry" in caplog.text


def test_damaged_entry_replaced_on_put(tmp_path):
    EmbeddingCache(tmp_path).put(KEY, unit_vector(32, 4))
    path = entry_path(tmp_path, KEY)
    path.write_bytes(damage_truncate(path.read_bytes()))
    EmbeddingCache(tmp_path).put(KEY, unit_vector(32, 5))
    np.testing.assert_array_equal(EmbeddingCache(tmp_path).get(KEY), unit_vector(32, 5))


def test_entry_under_other_key_is_miss(tmp_path):
    other = "cd" * 32
    EmbeddingCache(tmp_path).put(KEY, unit_vector(32, 6))
    target = tmp_path / other[:2] / f"{other}.emb"
    target.parent.mkdir(parents=True)
    target.write_bytes(entry_path(tmp_path, KEY).read_bytes())
    assert EmbeddingCache(tmp_path).get(other) is None


def test_non_finite_payload_rejected():
    # A NaN payload with a matching checksum, as a buggy writer could produce.
    payload = np.array([np.nan, 0, 0, 0], dtype="<f4").tobytes()
    header = json.dumps(
        {"format": 1, "key": KEY, "dim": 4, "dtype": "float32", "payload_sha256": hashlib.sha256(payload).hexdigest()},
        sort_keys=True,
    ).encode()
    entry = b"I0TEMB1\n" + struct.pack("<I", len(header)) + header + payload
    with pytest.raises(ValueError, match="NaN"):
        decode_entry(entry, KEY)


def test_entry_round_trip():
    vector = unit_vector(4, 0)
    np.testing.assert_array_equal(decode_entry(encode_entry(KEY, vector), KEY), vector)


def test_unwritable_folder_keeps_memory(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = EmbeddingCache(blocker)
    with caplog.at_level("WARNING", logger="i0tscore.cache"):
        cache.put(KEY, unit_vector(8, 0))
    assert cache.stats.write_errors == 1
    assert cache.get(KEY) is not None
    assert "Cannot write cache entry" in caplog.text


# ---------------------------------------------------------------------- concurrency


WRITERS = 3
ROUNDS = 150
SHARED_KEYS = [f"{n:064x}" for n in range(6)]
BIG_DIM = 8192


def writer_value(writer: int, key_index: int) -> float:
    return float(writer * 100 + key_index + 1)


def write_and_read(folder: str, writer: int, barrier, queue) -> None:
    """Write every shared key with this writer's values, then read each back from disk."""
    from i0tscore.cache import EmbeddingCache

    # Start together, so that the writes overlap despite uneven process start-up.
    barrier.wait(timeout=120)
    writer_cache = EmbeddingCache(folder, max_memory_items=0)
    torn, missing = 0, 0
    allowed = [{writer_value(w, k) for w in range(WRITERS)} for k in range(len(SHARED_KEYS))]
    for _ in range(ROUNDS):
        for k, key in enumerate(SHARED_KEYS):
            writer_cache.put(key, np.full(BIG_DIM, writer_value(writer, k), dtype=np.float32))
            vector = EmbeddingCache(folder).get(key, dim=BIG_DIM)
            if vector is None:
                missing += 1
            elif len(set(vector.tolist())) != 1 or float(vector[0]) not in allowed[k]:
                torn += 1
    queue.put((writer, torn, missing))


def test_concurrent_writers_never_tear(tmp_path):
    # The writers use only numpy and the file system, so fork is safe on Linux and
    # saves each process the seconds that spawn spends importing torch again.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    queue = context.Queue()
    barrier = context.Barrier(WRITERS)
    processes = [
        context.Process(target=write_and_read, args=(str(tmp_path), w, barrier, queue)) for w in range(WRITERS)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    for writer, torn, missing in results:
        assert torn == 0, f"writer {writer} read {torn} mixed vectors"
        assert missing == 0, f"writer {writer} found {missing} entries missing or corrupt after writing them"
    leftovers = [path.name for path in tmp_path.rglob("*.tmp")]
    assert leftovers == []


# ---------------------------------------------------------------------- source scan


def test_cache_source_has_no_pickle():
    tree = ast.parse(CACHE_SOURCE.read_text(encoding="utf-8"))
    unsafe_modules = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
            assert not names & unsafe_modules, f"cache.py imports {names & unsafe_modules}"
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in unsafe_modules, f"cache.py imports from {node.module}"
        if isinstance(node, ast.Attribute) and node.attr in ("load", "loads") and isinstance(node.value, ast.Name):
            assert node.value.id not in {"torch", "np", "numpy", "pickle"}, f"cache.py calls {node.value.id}.{node.attr}"
        if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
            assert isinstance(node.value, ast.Constant) and node.value.value is False


# ---------------------------------------------------------------------- through the scorer


def test_image_encoded_once_across_ten_calls(scorer, count_encoded, example_images):
    scorer.cache = EmbeddingCache()
    images = list(example_images)
    for call in range(10):
        captions = [f"caption {call} for image {n}" for n in range(len(images))]
        scorer.score(images, captions)
    assert count_encoded["rows"] == len(images)
    assert scorer.cache.stats.misses == len(images)
    assert scorer.cache.stats.hits == 9 * len(images)


def test_cached_scores_match_uncached(scorer, example_images, tmp_path):
    captions = [f"a photo number {n}" for n in range(len(example_images))]
    scorer.cache = None
    plain = scorer.score(example_images, captions)

    scorer.cache = EmbeddingCache(tmp_path)
    first = scorer.score(example_images, captions)
    scorer.cache = EmbeddingCache(tmp_path)
    from_disk = scorer.score(example_images, captions)

    np.testing.assert_array_equal(first.i0t_s, plain.i0t_s)
    np.testing.assert_array_equal(from_disk.i0t_s, plain.i0t_s)
    np.testing.assert_array_equal(from_disk.clip_s, plain.clip_s)
    assert scorer.cache.stats.disk_hits == len(example_images)


def test_partial_hits_keep_order(scorer, count_encoded, example_images):
    scorer.cache = EmbeddingCache()
    scorer.score(example_images[::2], ["a caption"] * len(example_images[::2]))
    encoded_before = count_encoded["rows"]

    result = scorer.score(example_images, [f"caption {n}" for n in range(len(example_images))])
    assert count_encoded["rows"] - encoded_before == len(example_images[1::2])

    scorer.cache = None
    expected = scorer.score(example_images, [f"caption {n}" for n in range(len(example_images))])
    np.testing.assert_allclose(result.i0t_s, expected.i0t_s, atol=1e-6)


def test_failed_image_not_cached(scorer, example_images, tmp_path):
    scorer.cache = EmbeddingCache()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    images = [example_images[0], broken, example_images[1]]
    result = scorer.score(images, ["a", "b", "c"], on_error="skip")
    assert set(result.errors) == {1}
    assert np.isnan(result.i0t_s[1])
    assert len(scorer.cache) == 2

    again = scorer.score(images, ["a", "b", "c"], on_error="skip")
    assert set(again.errors) == {1}
    np.testing.assert_array_equal(again.i0t_s[[0, 2]], result.i0t_s[[0, 2]])


def test_missing_file_still_reported(scorer, tmp_path):
    scorer.cache = EmbeddingCache()
    with pytest.raises(Exception, match="not found"):
        scorer.score([tmp_path / "absent.png"], ["a caption"])


def test_changed_file_bytes_miss(scorer, count_encoded, tmp_path, example_images):
    scorer.cache = EmbeddingCache()
    path = tmp_path / "image.png"
    Image.open(example_images[0]).convert("RGB").save(path)
    scorer.score([path], ["a caption"])
    Image.open(example_images[1]).convert("RGB").save(path)
    scorer.score([path], ["a caption"])
    assert count_encoded["rows"] == 2
    assert scorer.cache.stats.misses == 2


def test_scorer_takes_cache_folder(tiny_clip, tiny_stats, example_images, tmp_path):
    # Two scorers built with the same folder: the second reads what the first wrote.
    paths = [str(p) for p in example_images[:3]]
    captions = ["a photo"] * len(paths)
    first = I0TScore(tiny_clip, stats=tiny_stats, device="cpu", progress=False, cache=tmp_path / "cache")
    expected = first.score(paths, captions)
    second = I0TScore(tiny_clip, stats=tiny_stats, device="cpu", progress=False, cache=str(tmp_path / "cache"))

    result = second.score(paths, captions)

    assert second.cache.stats.disk_hits == len(paths)
    assert np.array_equal(result.i0t_s, expected.i0t_s)


def test_scorer_rejects_cache_of_wrong_type(tiny_clip, tiny_stats):
    with pytest.raises(TypeError, match="cache must be None, an EmbeddingCache or a folder path"):
        I0TScore(tiny_clip, stats=tiny_stats, device="cpu", cache=3)
