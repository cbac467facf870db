"""I0T_async: frozen CLIP, lower held-out gap, reproducible and resumable training, verified files."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from i0tscore import asyncnorm_train
from i0tscore.asyncnorm import (
    AsyncNorm,
    AsyncNormError,
    async_loss,
    async_score,
    contrastive_loss,
    cyclic_losses,
)
from i0tscore.asyncnorm_train import (
    add_train_async_parser,
    checkpoint_path,
    encode_pairs,
    epoch_batches,
    run_train_async,
    split_pairs,
    train_async,
)
from i0tscore.fileio import sha256_file
from i0tscore.inputs import Pair, read_corpus
from i0tscore.model import load_clip
from i0tscore.statistics import ModelIdentity

SETTINGS = dict(epochs=6, batch_size=16, lr=1e-3, warmup_steps=4, seed=3, heldout_fraction=0.2, checkpoint_every=2)
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40), "black": (10, 10, 10)}
SHAPES = ("square", "circle", "bar", "cross")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny model gains nothing from intra-op threads. On busy shared cores,
    # waiting for those threads made one training run about 20 times slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    return load_clip(tiny_clip, device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A JSONL corpus of 40 drawn 32×32 images with 2 captions each."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = []
    for n in range(40):
        colour = list(COLOURS)[n % len(COLOURS)]
        shape = SHAPES[(n // len(COLOURS)) % len(SHAPES)]
        background = tuple(int(v) for v in rng.integers(120, 255, size=3))
        image = Image.new("RGB", (32, 32), background)
        draw = ImageDraw.Draw(image)
        offset = int(rng.integers(0, 8))
        box = (4 + offset, 4 + offset, 20 + offset, 20 + offset)
        if shape == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        elif shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        elif shape == "bar":
            draw.rectangle((2, 12, 30, 18), fill=COLOURS[colour])
        else:
            draw.line((4, 4, 28, 28), fill=COLOURS[colour], width=4)
            draw.line((4, 28, 28, 4), fill=COLOURS[colour], width=4)
        name = f"img{n:02d}.png"
        image.save(folder / name)
        lines.append({"image": name, "caption": f"a {colour} {shape}"})
        lines.append({"image": name, "caption": f"a {shape} coloured {colour} on a plain background"})
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pairs(corpus) -> list[Pair]:
    return read_corpus(corpus)


@pytest.fixture(scope="module")
def trained(encoder, pairs, tiny_clip, tmp_path_factory):
    """One reference run, with the CLIP state captured before and after it."""
    before = {name: tensor.clone() for name, tensor in encoder.model.state_dict().items()}
    weights = tiny_clip / "model.safetensors"
    file_hash = sha256_file(weights)
    out = tmp_path_factory.mktemp("layers") / "layers.safetensors"
    layers = train_async(encoder, pairs, out=out, progress=False, **SETTINGS)
    after = {name: tensor.clone() for name, tensor in encoder.model.state_dict().items()}
    return {"out": out, "layers": layers, "before": before, "after": after, "file_hash": file_hash, "weights": weights}


# ---------------------------------------------------------------------- frozen CLIP and gap


def test_training_leaves_clip_bitwise_unchanged(trained):
    assert trained["before"].keys() == trained["after"].keys()
    for name, tensor in trained["before"].items():
        assert torch.equal(tensor, trained["after"][name]), name
    assert sha256_file(trained["weights"]) == trained["file_hash"]


def test_training_trains_only_the_layers(encoder):
    assert not any(parameter.requires_grad for parameter in encoder.model.parameters())
    layers = AsyncNorm(encoder.dim, model=encoder.identity)
    optimizer, _ = asyncnorm_train.make_optimizer(layers, asyncnorm_train.TrainSettings(), total_steps=10)
    trained_ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained_ids == {id(p) for p in layers.parameters()}
    assert len(trained_ids) == 4


def test_heldout_centroid_distance_drops(trained, encoder, pairs):
    data = split_pairs(pairs, SETTINGS["heldout_fraction"], SETTINGS["seed"])
    heldout = [pairs[n] for n in data.heldout]
    image_embeds, text_embeds = encode_pairs(encoder, heldout, "A photo depicts ")
    images = image_embeds.double()[::2]  # each held-out image has 2 captions, adjacent in the corpus
    texts = text_embeds.double()

    before = torch.linalg.vector_norm(images.mean(0) - texts.mean(0)).item()
    layers = trained["layers"]
    after = torch.linalg.vector_norm(layers.transform_image(images).mean(0) - layers.transform_text(texts).mean(0)).item()

    history = layers.history
    assert after < 0.5 * before
    assert history["heldout_centroid_distance_before"] == pytest.approx(before, abs=1e-6)
    assert history["epochs"][-1]["heldout_centroid_distance"] == pytest.approx(after, abs=1e-6)
    assert len(history["epochs"]) == SETTINGS["epochs"]


# ---------------------------------------------------------------------- reproducibility and resume


def test_same_seed_gives_same_bytes(trained, encoder, pairs, tmp_path):
    out = tmp_path / "again.safetensors"
    train_async(encoder, pairs, out=out, progress=False, **SETTINGS)
    assert out.read_bytes() == trained["out"].read_bytes()


def test_other_seed_gives_other_layers(trained, encoder, pairs, tmp_path):
    out = tmp_path / "seed4.safetensors"
    train_async(encoder, pairs, out=out, progress=False, **{**SETTINGS, "seed": 4})
    assert out.read_bytes() != trained["out"].read_bytes()


class Interrupt(Exception):
    pass


def test_resume_matches_uninterrupted_run(trained, encoder, pairs, tmp_path, monkeypatch):
    original = asyncnorm_train._train_step
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 9:
            raise Interrupt()
        return original(*args, **kwargs)

    out = tmp_path / "resumed.safetensors"
    monkeypatch.setattr(asyncnorm_train, "_train_step", interrupted)
    with pytest.raises(Interrupt):
        train_async(encoder, pairs, out=out, progress=False, **SETTINGS)
    assert not out.exists()
    checkpoint = checkpoint_path(out)
    assert checkpoint.is_file()

    resumed_calls = []

    def counting(*args, **kwargs):
        resumed_calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(asyncnorm_train, "_train_step", counting)
    train_async(encoder, pairs, out=out, progress=False, resume=True, **SETTINGS)

    total_steps = trained["layers"].training_settings["steps"]
    # Checkpoints every 2 steps: the 9th call failed, so 8 finished steps were saved.
    assert len(resumed_calls) == total_steps - 8
    assert out.read_bytes() == trained["out"].read_bytes()
    assert not checkpoint.exists()


def test_resume_rejects_other_settings(encoder, pairs, tmp_path, monkeypatch):
    original = asyncnorm_train._train_step
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupt()
        return original(*args, **kwargs)

    out = tmp_path / "layers.safetensors"
    monkeypatch.setattr(asyncnorm_train, "_train_step", interrupted)
    with pytest.raises(Interrupt):
        train_async(encoder, pairs, out=out, progress=False, **SETTINGS)
    monkeypatch.setattr(asyncnorm_train, "_train_step", original)
    with pytest.raises(AsyncNormError, match="other pairs, settings"):
        train_async(encoder, pairs, out=out, progress=False, resume=True, **{**SETTINGS, "lr": 0.5})


# ---------------------------------------------------------------------- scoring


def test_scores_match_numpy_formula(trained):
    layers = AsyncNorm.load(trained["out"])
    rng = np.random.default_rng(5)
    images = rng.normal(size=(7, layers.dim))
    texts = rng.normal(size=(7, layers.dim))

    def transform(x, name):
        tensors = {key: getattr(getattr(layers, name), key).detach().double().numpy() for key in ("running_mean", "running_var", "weight", "bias")}
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        z = (x - tensors["running_mean"]) / np.sqrt(tensors["running_var"] + 1e-5) * tensors["weight"] + tensors["bias"]
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    expected = (transform(images, "image") * transform(texts, "text")).sum(axis=1)
    np.testing.assert_allclose(async_score(layers, images, texts).numpy(), expected, rtol=0, atol=1e-6)
    # The running statistics moved away from their initial values, so the check is not trivial.
    assert not torch.allclose(layers.image.running_mean, torch.zeros(layers.dim))


def test_score_of_single_pair_equals_batch(trained):
    layers = AsyncNorm.load(trained["out"])
    rng = np.random.default_rng(6)
    images = rng.normal(size=(5, layers.dim))
    texts = rng.normal(size=(5, layers.dim))
    batch = async_score(layers, images, texts).numpy()
    single = np.array([async_score(layers, images[n : n + 1], texts[n : n + 1]).item() for n in range(5)])
    np.testing.assert_array_equal(single, batch)


# ---------------------------------------------------------------------- file checks


def test_layers_for_other_model_rejected(trained, other_tiny_clip):
    layers = AsyncNorm.load(trained["out"])
    other = load_clip(other_tiny_clip, device="cpu")
    with pytest.raises(AsyncNormError) as info:
        layers.check_model(other.identity, other.dim)
    message = str(info.value)
    assert "tiny-clip" in message
    assert "other-clip" in message
    layers.check_model(other.identity, other.dim, allow_model_mismatch=True)


def test_layers_for_other_dimension_rejected(trained):
    layers = AsyncNorm.load(trained["out"])
    with pytest.raises(AsyncNormError, match="dimension 32"):
        layers.check_model(ModelIdentity("big-clip"), 512, allow_model_mismatch=True)


def test_edited_tensor_byte_rejected(trained, tmp_path):
    data = bytearray(trained["out"].read_bytes())
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    start, _ = header["text.bias"]["data_offsets"]
    data[8 + header_length + start] ^= 0x01
    edited = tmp_path / "edited.safetensors"
    edited.write_bytes(bytes(data))
    with pytest.raises(AsyncNormError, match="edited or corrupted"):
        AsyncNorm.load(edited)


def test_edited_metadata_value_rejected(trained, tmp_path):
    data = trained["out"].read_bytes()
    needle = b'\\"epochs\\":6'
    assert data.count(needle) == 1
    edited = tmp_path / "edited.safetensors"
    edited.write_bytes(data.replace(needle, b'\\"epochs\\":7'))
    with pytest.raises(AsyncNormError, match="Checksum mismatch"):
        AsyncNorm.load(edited)


def test_truncated_file_rejected(trained, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(trained["out"].read_bytes()[:-10])
    with pytest.raises(AsyncNormError, match="not a valid"):
        AsyncNorm.load(truncated)


def test_non_finite_values_rejected(tmp_path):
    layers = AsyncNorm(4, model=ModelIdentity("some-clip"))
    with torch.no_grad():
        layers.text.running_mean[2] = float("nan")
    path = tmp_path / "nan.safetensors"
    layers.save(path)
    with pytest.raises(AsyncNormError, match="non-finite"):
        AsyncNorm.load(path)


def test_save_load_round_trip(tmp_path):
    layers = AsyncNorm(4, model=ModelIdentity("some-clip", "abc"), prefix="", training={"seed": 1})
    with torch.no_grad():
        layers.image.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 1e-8]))
        layers.text.weight.copy_(torch.tensor([1.5, 0.5, 2.0, 1.0]))
    path = tmp_path / "layers.safetensors"
    layers.save(path)
    loaded = AsyncNorm.load(path)
    assert loaded.checksum == layers.checksum
    assert loaded.model == layers.model
    assert loaded.prefix == ""
    assert loaded.training_settings == {"seed": 1}
    for name, tensor in layers.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_no_pickle_when_loading_or_resuming(trained, encoder, pairs, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle-based loading was called")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    AsyncNorm.load(trained["out"])

    out = tmp_path / "layers.safetensors"
    original = asyncnorm_train._train_step
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupt()
        return original(*args, **kwargs)

    monkeypatch.setattr(asyncnorm_train, "_train_step", interrupted)
    with pytest.raises(Interrupt):
        train_async(encoder, pairs, out=out, progress=False, **{**SETTINGS, "epochs": 1})
    monkeypatch.setattr(asyncnorm_train, "_train_step", original)
    train_async(encoder, pairs, out=out, progress=False, resume=True, **{**SETTINGS, "epochs": 1})
    assert out.is_file()


def test_sources_never_unpickle():
    package = Path(asyncnorm_train.__file__).parent
    for name in ("asyncnorm.py", "asyncnorm_train.py"):
        text = (package / name).read_text(encoding="utf-8")
        assert "torch.load" not in text, name
        assert "torch.save" not in text, name
        assert "import pickle" not in text, name


# ---------------------------------------------------------------------- losses


def test_cyclic_terms_zero_for_symmetric_inputs():
    rng = np.random.default_rng(1)
    image = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(6, 5))), dim=1)
    # A Householder reflection H is orthogonal and symmetric, so T = I H keeps
    # image–image cosines (T Tᵀ = I Iᵀ) and makes I Tᵀ = I H Iᵀ symmetric.
    v = torch.from_numpy(rng.normal(size=(5, 1)))
    householder = torch.eye(5, dtype=torch.float64) - 2 * v @ v.T / (v.T @ v)
    for text in (image.clone(), image @ householder):
        in_modal, cross_modal = cyclic_losses(image, text)
        assert in_modal.item() == pytest.approx(0.0, abs=1e-12)
        assert cross_modal.item() == pytest.approx(0.0, abs=1e-12)


def test_cyclic_terms_match_hand_computation():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    text = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=torch.float64)
    # I Iᵀ − T Tᵀ off the diagonal: (0,1) 0 − 0.8, (0,2) 0.6 − 0, (1,2) 0.8 − 0.6; each twice.
    expected_in_modal = 2 * (0.8**2 + 0.6**2 + 0.2**2) / 9
    # I Tᵀ = [[1, .8, 0], [0, .6, 1], [.6, .96, .8]]; minus its transpose: .8, −.6, .04; each twice.
    expected_cross_modal = 2 * (0.8**2 + 0.6**2 + 0.04**2) / 9
    in_modal, cross_modal = cyclic_losses(image, text)
    assert in_modal.item() == pytest.approx(expected_in_modal, abs=1e-12)
    assert cross_modal.item() == pytest.approx(expected_cross_modal, abs=1e-12)


def test_async_loss_adds_weighted_cyclic_terms():
    rng = np.random.default_rng(2)
    image = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(4, 3))), dim=1)
    text = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(4, 3))), dim=1)
    in_modal, cross_modal = cyclic_losses(image, text)
    plain = contrastive_loss(image, text, 10.0)
    assert async_loss(image, text, scale=10.0, cyclic=False).item() == pytest.approx(plain.item(), abs=1e-12)
    assert async_loss(image, text, scale=10.0).item() == pytest.approx((plain + 0.25 * in_modal + 0.25 * cross_modal).item(), abs=1e-12)


def test_contrastive_loss_matches_hand_computation():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    # logits = 2 · [[1, .6], [0, .8]]; each row and column is a two-way softmax.
    rows = [-np.log(np.exp(2) / (np.exp(2) + np.exp(1.2))), -np.log(np.exp(1.6) / (np.exp(0) + np.exp(1.6)))]
    columns = [-np.log(np.exp(2) / (np.exp(2) + np.exp(0))), -np.log(np.exp(1.6) / (np.exp(1.2) + np.exp(1.6)))]
    expected = (np.mean(rows) + np.mean(columns)) / 2
    assert contrastive_loss(image, text, 2.0).item() == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------- batches and split


def test_batches_hold_distinct_images(pairs):
    data = split_pairs(pairs, 0.2, 0)
    batches = epoch_batches(data.image_of_pair, data.train, 16, 0, 0)
    for batch in batches:
        images = [data.image_of_pair[n] for n in batch]
        assert len(images) == len(set(images))
    assert sorted(n for batch in batches for n in batch) == sorted(data.train)
    assert batches == epoch_batches(data.image_of_pair, data.train, 16, 0, 0)
    assert batches != epoch_batches(data.image_of_pair, data.train, 16, 0, 1)


def test_batches_with_one_dominant_image():
    # Image 0 has 6 captions, images 1–3 one each: the packer spreads image 0 over batches.
    image_of_pair = [0, 0, 0, 0, 0, 0, 1, 2, 3]
    batches = epoch_batches(image_of_pair, list(range(9)), 4, 0, 0)
    for batch in batches:
        assert len({image_of_pair[n] for n in batch}) == len(batch)
    assert all(len(batch) >= 2 for batch in batches)


def test_split_holds_out_whole_images(pairs):
    data = split_pairs(pairs, 0.2, 0)
    train_images = {data.image_of_pair[n] for n in data.train}
    heldout_images = {data.image_of_pair[n] for n in data.heldout}
    assert not train_images & heldout_images
    assert len(heldout_images) == 8
    assert len(data.train) + len(data.heldout) == len(pairs)


def test_invalid_settings_rejected(encoder, pairs, tmp_path):
    for bad in ({"batch_size": 1}, {"lr": 0.0}, {"heldout_fraction": 1.0}, {"epochs": 0}, {"logit_scale": -1.0}):
        with pytest.raises(AsyncNormError):
            train_async(encoder, pairs, out=tmp_path / "x.safetensors", progress=False, **{**SETTINGS, **bad})


# ---------------------------------------------------------------------- command line


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="i0tscore")
    add_train_async_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_command_trains_and_rejects_stale_checkpoint(tiny_clip, corpus, tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    argv = ["train-async", "--model", str(tiny_clip), "--data", str(corpus), "--out", str(out), "--device", "cpu",
            "--epochs", "1", "--batch-size", "8", "--warmup-steps", "2", "--no-progress"]
    assert run_train_async(_parse(argv)) == 0
    layers = AsyncNorm.load(out)
    assert layers.training_settings["corpus"] == "corpus.jsonl"
    assert "wrote" in capsys.readouterr().err

    checkpoint_path(out).write_bytes(b"stale")
    with pytest.raises(AsyncNormError, match="--resume"):
        run_train_async(_parse(argv))
