"""Tests of I0TScore against independent paths: plain transformers + numpy, and torchmetrics.

The reference path below loads the tiny checkpoint with transformers itself,
preprocesses and tokenizes the photos and captions itself, reads the means from
the statistics JSON with ``json``, and writes every formula out in numpy float64.
"""

from __future__ import annotations

import json
import re
import warnings
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from i0tscore import I0TScore, ModelIdentity, Statistics, StatisticsError
from i0tscore.images import ImageLoadError
from i0tscore.model import ModelLoadError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHIPPED_INDEX = Path(__file__).resolve().parents[1] / "stats" / "index.json"

PREFIX = "A photo depicts "
MAX_TOKENS = 32
"""Maximum caption length of the tiny checkpoint, start and end-of-text tokens included."""

ATOL_REFERENCE = 1e-5
"""Tolerance between scores from two float32 encoder runs (package and reference path), which batch inputs differently."""

ATOL_SAME_EMBEDDINGS = 1e-10
"""Two float64 computations from the same embeddings differ only by rounding."""

# Short captions that fit in 32 tokens with the prefix: the tiny tokenizer makes one token per character.
SHORT_CAPTIONS = {
    "astronaut": "an astronaut",
    "brick": "a brick wall",
    "camera": "a man filming",
    "cat": "a tabby cat",
    "coffee": "an espresso cup",
    "hubble": "distant galaxies",
    "retina": "a human retina",
    "rocket": "a rocket at dusk",
}

LONG_CAPTION = "a tabby cat with green eyes and a pink nose sleeps on a blanket"


# --- Independent reference path: transformers + numpy ----------------------------------


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def _harmonic_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    total = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total == 0, 0.0, 2 * a * b / total)


def _rgb_photo(path: Path) -> Image.Image:
    """Open a photo upright, with transparent pixels composited over white."""
    with Image.open(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened)
    has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return image.convert("RGB")
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return Image.fromarray(np.rint(rgb).astype(np.uint8), mode="RGB")


class ReferencePath:
    """The tiny checkpoint loaded with plain transformers, encoding without i0tscore."""

    def __init__(self, folder: Path) -> None:
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        self.model = CLIPModel.from_pretrained(folder).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(folder)
        self.processor = CLIPImageProcessor.from_pretrained(folder)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, truncation=True, max_length=MAX_TOKENS, padding=True, return_tensors="pt")

    @torch.inference_mode()
    def image_embeds(self, paths: list[Path]) -> np.ndarray:
        """Projected image embeddings (N, D) as float64, not normalized."""
        pixels = self.processor(images=[_rgb_photo(path) for path in paths], return_tensors="pt")["pixel_values"]
        output = self.model.get_image_features(pixel_values=pixels)
        return output.pooler_output.numpy().astype(np.float64)

    @torch.inference_mode()
    def text_embeds_from_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
        output = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return output.pooler_output.numpy().astype(np.float64)

    def text_embeds(self, captions: list[str]) -> np.ndarray:
        """Projected embeddings (N, D) of the prefixed captions, as float64, not normalized."""
        encoded = self.tokenize([PREFIX + caption for caption in captions])
        return self.text_embeds_from_ids(encoded["input_ids"], encoded["attention_mask"])


def _numpy_scores(
    image_embeds: np.ndarray,
    text_embeds: np.ndarray,
    image_mean: np.ndarray,
    text_mean: np.ndarray,
    reference_embeds: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every score of the method, written out from its definitions in numpy float64."""
    x = _unit_rows(image_embeds)
    y = _unit_rows(text_embeds)
    x_std = _unit_rows(x - image_mean)
    y_std = _unit_rows(y - text_mean)

    standardized_cosine = np.sum(x_std * y_std, axis=1)
    scores = {
        "cosine": np.sum(x * y, axis=1),
        "i0t_s": standardized_cosine,
        "paper": 2.0 * np.maximum(standardized_cosine, 0.0),
        "clip_s": 2.5 * np.maximum(np.sum(x * y, axis=1), 0.0),
        "x_std": x_std,
        "y_std": y_std,
    }
    if reference_embeds is None:
        return scores

    best_raw = np.empty(len(x))
    best_std = np.empty(len(x))
    for n, block in enumerate(reference_embeds):
        refs = _unit_rows(block)
        best_raw[n] = np.max(refs @ y[n])
        # Each text is standardized exactly once with the text mean.
        best_std[n] = np.max(_unit_rows(refs - text_mean) @ y_std[n])
    scores["ref_clip_s"] = _harmonic_mean(scores["clip_s"], np.maximum(best_raw, 0.0))
    scores["ref_i0t_s"] = _harmonic_mean(np.maximum(standardized_cosine, 0.0), np.maximum(best_std, 0.0))
    return scores


# --- Fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tiny_clip) -> ReferencePath:
    return ReferencePath(tiny_clip)


@pytest.fixture(scope="module")
def stats_json(tiny_stats) -> dict:
    """The statistics file of tiny_clip, read with json only."""
    return json.loads(Path(tiny_stats).read_text(encoding="utf-8"))


def _means(stats_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Image and text means of a statistics file, read with json only."""
    payload = json.loads(Path(stats_path).read_text(encoding="utf-8"))
    return np.asarray(payload["image_mean"], dtype=np.float64), np.asarray(payload["text_mean"], dtype=np.float64)


@pytest.fixture(scope="module")
def means(tiny_stats) -> tuple[np.ndarray, np.ndarray]:
    return _means(tiny_stats)


@pytest.fixture(scope="module")
def make_scorer(tiny_clip, tiny_stats):
    """Build scorers on tiny_clip, each set of options loaded once per module."""
    cache: dict[tuple, I0TScore] = {}

    def make(**options) -> I0TScore:
        options = {"stats": str(tiny_stats), **options}
        key = tuple(sorted(options.items()))
        if key not in cache:
            cache[key] = I0TScore(model=str(tiny_clip), device="cpu", progress=False, **options)
        return cache[key]

    return make


@pytest.fixture(scope="module")
def scorer(make_scorer) -> I0TScore:
    return make_scorer()


@pytest.fixture(scope="module")
def photos() -> dict[str, Path]:
    """Example photo paths by name (file stem)."""
    return {path.stem: path for path in sorted((EXAMPLES / "images").iterdir())}


@pytest.fixture(scope="module")
def other_stats(other_tiny_clip, tmp_path_factory) -> Path:
    """Statistics built by the package for other_tiny_clip, over the example corpus."""
    from i0tscore.build import build_statistics
    from i0tscore.inputs import read_corpus
    from i0tscore.model import load_clip

    pairs = read_corpus(EXAMPLES / "coco_annotations.json", images=EXAMPLES / "images")
    stats = build_statistics(
        load_clip(other_tiny_clip, device="cpu"), pairs, corpus="examples", corpus_path="examples", progress=False
    )
    path = tmp_path_factory.mktemp("other-stats") / "other-clip.json"
    stats.save(path)
    return path


@pytest.fixture(scope="module")
def other_checkpoint(other_tiny_clip, other_stats) -> SimpleNamespace:
    """other_tiny_clip with its statistics: unlike tiny_clip, it gives many pairs a positive raw cosine."""
    return SimpleNamespace(
        name="other_tiny_clip",
        folder=other_tiny_clip,
        stats=other_stats,
        scorer=I0TScore(model=str(other_tiny_clip), stats=str(other_stats), device="cpu", progress=False),
        reference=ReferencePath(other_tiny_clip),
        means=_means(other_stats),
    )


@pytest.fixture(scope="module", params=["tiny_clip", "other_tiny_clip"])
def checkpoint(request, tiny_clip, tiny_stats, scorer, reference, means) -> SimpleNamespace:
    """A checkpoint with its scorer, reference path and means.

    All raw cosines of tiny_clip on the example set are negative, so CLIP-S and
    RefCLIP-S are 0 there. other_tiny_clip covers positive values.
    """
    if request.param == "tiny_clip":
        return SimpleNamespace(
            name="tiny_clip", folder=tiny_clip, stats=tiny_stats, scorer=scorer, reference=reference, means=means
        )
    return request.getfixturevalue("other_checkpoint")


@pytest.fixture(scope="module")
def examples(photos) -> dict[str, list]:
    """The example set: photos with their captions and reference captions, in one order."""
    captions = json.loads((EXAMPLES / "captions.json").read_text(encoding="utf-8"))
    references = json.loads((EXAMPLES / "references.json").read_text(encoding="utf-8"))
    names = sorted(captions)
    return {
        "names": names,
        "images": [photos[name] for name in names],
        "captions": [captions[name] for name in names],
        "references": [references[name] for name in names],
    }


@pytest.fixture(scope="module")
def example_result(checkpoint, examples):
    # Every example caption is longer than the tiny models' 32 tokens, so scoring warns.
    with pytest.warns(UserWarning, match="truncated"):
        return checkpoint.scorer.score(examples["images"], examples["captions"], examples["references"])


@pytest.fixture(scope="module")
def example_embeds(checkpoint, examples) -> dict[str, object]:
    """Reference-path embeddings of the example set."""
    reference = checkpoint.reference
    return {
        "images": reference.image_embeds(examples["images"]),
        "captions": reference.text_embeds(examples["captions"]),
        "references": [reference.text_embeds(refs) for refs in examples["references"]],
    }


@pytest.fixture(scope="module")
def expected(checkpoint, example_embeds) -> dict[str, np.ndarray]:
    """Numpy scores of the example set with the statistics file's means."""
    return _numpy_scores(
        example_embeds["images"],
        example_embeds["captions"],
        *checkpoint.means,
        reference_embeds=example_embeds["references"],
    )


@pytest.fixture(scope="module")
def short_items(photos) -> tuple[list[Path], list[str]]:
    """The example photos with short captions that fit the tiny model (no truncation)."""
    names = sorted(SHORT_CAPTIONS)
    return [photos[name] for name in names], [SHORT_CAPTIONS[name] for name in names]


# --- Scores against the numpy reference -------------------------------------------------


def test_reference_set_covers_both_signs(checkpoint, expected):
    # The comparisons below need scores on both sides of the clipping at 0 to mean something.
    assert np.any(expected["i0t_s"] > 0)
    assert np.any(expected["i0t_s"] < 0)
    assert np.any(expected["ref_i0t_s"] > 0)
    if checkpoint.name == "other_tiny_clip":
        assert np.any(expected["clip_s"] > 0)
        assert np.any(expected["clip_s"] == 0)
        assert np.any(expected["ref_clip_s"] > 0)


def test_i0t_s_matches_numpy(example_result, expected):
    np.testing.assert_allclose(example_result.i0t_s, expected["i0t_s"], rtol=0, atol=ATOL_REFERENCE)


def test_clip_s_matches_numpy(example_result, expected):
    np.testing.assert_allclose(example_result.clip_s, expected["clip_s"], rtol=0, atol=ATOL_REFERENCE)


def test_ref_clip_s_matches_numpy(example_result, expected):
    np.testing.assert_allclose(example_result.ref_clip_s, expected["ref_clip_s"], rtol=0, atol=ATOL_REFERENCE)


def test_ref_i0t_s_matches_numpy(example_result, expected):
    np.testing.assert_allclose(example_result.ref_i0t_s, expected["ref_i0t_s"], rtol=0, atol=ATOL_REFERENCE)


def test_paper_preset_matches_numpy(checkpoint, examples, expected):
    paper = I0TScore(model=str(checkpoint.folder), stats=str(checkpoint.stats), device="cpu", preset="paper")

    with pytest.warns(UserWarning, match="truncated"):
        result = paper.score(examples["images"], examples["captions"])

    np.testing.assert_allclose(result.i0t_s, expected["paper"], rtol=0, atol=ATOL_REFERENCE)
    np.testing.assert_allclose(result.clip_s, expected["clip_s"], rtol=0, atol=ATOL_REFERENCE)


def test_examples_flagged_truncated(example_result):
    assert example_result.truncated.tolist() == [True] * len(example_result)


# --- Explanations -----------------------------------------------------------------------


def test_contributions_sum_to_cosine(example_result):
    row_sums = example_result.contributions().sum(axis=1)

    np.testing.assert_allclose(row_sums, example_result.standardized_cosine(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(row_sums, example_result.i0t_s, rtol=0, atol=1e-6)


def test_contributions_match_numpy(example_result, expected):
    numpy_contributions = expected["x_std"] * expected["y_std"]

    np.testing.assert_allclose(example_result.contributions(), numpy_contributions, rtol=0, atol=ATOL_REFERENCE)


def test_contributions_float32_sum(checkpoint, example_result, example_embeds):
    image_mean, text_mean = (mean.astype(np.float32) for mean in checkpoint.means)
    x = example_embeds["images"].astype(np.float32)
    y = example_embeds["captions"].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    x_std = (x - image_mean) / np.linalg.norm(x - image_mean, axis=1, keepdims=True)
    y_std = (y - text_mean) / np.linalg.norm(y - text_mean, axis=1, keepdims=True)

    products = x_std * y_std
    assert products.dtype == np.float32
    np.testing.assert_allclose(products.sum(axis=1), example_result.i0t_s, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [1, 5, 32])
def test_top_contributions_order(example_result, expected, k):
    numpy_contributions = expected["x_std"] * expected["y_std"]

    for index in range(len(example_result)):
        top = example_result.top_contributions(index, k)
        order = np.argsort(-np.abs(numpy_contributions[index]), kind="stable")[:k]

        assert len(top) == k
        assert [entry.dim for entry in top] == order.tolist()
        np.testing.assert_allclose(
            [entry.contribution for entry in top], numpy_contributions[index, order], rtol=0, atol=ATOL_REFERENCE
        )


def test_cosine_split_parts(checkpoint, example_result, example_embeds, expected):
    image_mean, text_mean = checkpoint.means
    x = _unit_rows(example_embeds["images"])
    y = _unit_rows(example_embeds["captions"])
    split = example_result.cosine_split()

    np.testing.assert_allclose(split.kept + split.from_means, expected["cosine"], rtol=0, atol=ATOL_REFERENCE)
    np.testing.assert_allclose(
        split.kept, np.sum((x - image_mean) * (y - text_mean), axis=1), rtol=0, atol=ATOL_REFERENCE
    )


# --- torchmetrics -----------------------------------------------------------------------


class _PooledFeatures(torch.nn.Module):
    """A CLIPModel whose feature methods return tensors, as torchmetrics 1.9 expects.

    transformers 5 returns an output object from get_image_features and
    get_text_features; torchmetrics divides the result by its norm directly.
    torchmetrics also reads ``config.text_config.max_position_embeddings``.
    """

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.clip = clip

    @property
    def config(self):
        return self.clip.config

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.clip.get_image_features(pixel_values=pixel_values).pooler_output

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def test_clip_s_matches_torchmetrics(other_checkpoint, photos):
    from torchmetrics.multimodal import CLIPScore
    from transformers import CLIPProcessor

    # other_tiny_clip, because every raw cosine of tiny_clip on these photos is negative.
    reference = other_checkpoint.reference
    processor = CLIPProcessor(image_processor=reference.processor, tokenizer=reference.tokenizer)
    metric = CLIPScore(model_name_or_path=lambda: (_PooledFeatures(reference.model), processor))

    # Four photos against four short captions: 16 pairs, about half with a positive cosine.
    names = ["astronaut", "cat", "hubble", "rocket"]
    pairs = [(image, caption) for image in names for caption in names]
    result = other_checkpoint.scorer.score(
        [photos[image] for image, _ in pairs], [SHORT_CAPTIONS[caption] for _, caption in pairs]
    )

    # torchmetrics clamps the mean at 0, so one pair per update gives max(100·cos, 0) of that pair.
    # It adds no prefix, so the captions carry it already. Images go in as uint8 (C, H, W) tensors.
    pixels = {name: torch.from_numpy(np.array(_rgb_photo(photos[name]))).permute(2, 0, 1).contiguous() for name in names}
    torchmetrics_clip_s = []
    for image, caption in pairs:
        metric.reset()
        metric.update(pixels[image], PREFIX + SHORT_CAPTIONS[caption])
        torchmetrics_clip_s.append(float(metric.compute()) / 100.0 * 2.5)

    assert np.any(result.clip_s > 0)
    assert np.any(result.clip_s == 0)
    np.testing.assert_allclose(result.clip_s, torchmetrics_clip_s, rtol=0, atol=1e-4)


# --- Deduplication ----------------------------------------------------------------------


@pytest.fixture
def encoder_rows(scorer, monkeypatch) -> dict[str, list[int]]:
    """Rows passed to each call of the scorer's encode_pixels and encode_texts."""
    rows: dict[str, list[int]] = {"pixels": [], "texts": []}
    encode_pixels = scorer.encoder.encode_pixels
    encode_texts = scorer.encoder.encode_texts

    def counting_pixels(pixel_values, *args, **kwargs):
        rows["pixels"].append(int(pixel_values.shape[0]))
        return encode_pixels(pixel_values, *args, **kwargs)

    def counting_texts(input_ids, *args, **kwargs):
        rows["texts"].append(int(input_ids.shape[0]))
        return encode_texts(input_ids, *args, **kwargs)

    monkeypatch.setattr(scorer.encoder, "encode_pixels", counting_pixels)
    monkeypatch.setattr(scorer.encoder, "encode_texts", counting_texts)
    return rows


def test_dedup_repeated_paths(scorer, encoder_rows, photos):
    images = [photos["cat"], photos["cat"], photos["rocket"], photos["cat"]]
    captions = ["a tabby cat", "a tabby cat", "a rocket at dusk", "a brick wall"]

    scorer.score(images, captions)

    assert encoder_rows["pixels"] == [2]
    assert encoder_rows["texts"] == [3]


def test_dedup_same_pil_object(scorer, encoder_rows, photos):
    cat = Image.open(photos["cat"])
    coffee = Image.open(photos["coffee"])

    scorer.score([cat, coffee, cat, cat], ["a tabby cat"] * 4)

    assert encoder_rows["pixels"] == [2]
    assert encoder_rows["texts"] == [1]


def test_dedup_reference_equal_caption(scorer, encoder_rows, photos):
    scorer.score(
        [photos["cat"], photos["coffee"]],
        ["a tabby cat", "an espresso cup"],
        [["a tabby cat", "a brick wall"], ["a brick wall"]],
    )

    assert encoder_rows["texts"] == [3]


def test_dedup_scores_unchanged(scorer, photos):
    single = scorer.score([photos["cat"]], ["a tabby cat"])
    repeated = scorer.score([photos["cat"]] * 3, ["a tabby cat"] * 3)

    np.testing.assert_allclose(repeated.i0t_s, np.repeat(single.i0t_s, 3), rtol=0, atol=1e-12)


# --- Truncation -------------------------------------------------------------------------


def test_truncation_flag_and_warning(scorer, reference, photos):
    assert len(reference.tokenizer(PREFIX + LONG_CAPTION)["input_ids"]) > MAX_TOKENS

    with pytest.warns(UserWarning) as record:
        result = scorer.score(
            [photos["cat"], photos["cat"], photos["rocket"]], ["a tabby cat", LONG_CAPTION, "a rocket at dusk"]
        )

    truncation_warnings = [str(w.message) for w in record if "truncated" in str(w.message)]
    assert result.truncated.tolist() == [False, True, False]
    assert len(truncation_warnings) == 1
    assert re.match(r"1\b", truncation_warnings[0])


def test_truncation_keeps_end_of_text(scorer, reference):
    input_ids, attention_mask, cut = scorer.encoder.tokenize([PREFIX + LONG_CAPTION])
    expected_ids = reference.tokenizer(PREFIX + LONG_CAPTION, truncation=True, max_length=MAX_TOKENS)["input_ids"]

    assert cut == [True]
    assert input_ids[0].tolist() == expected_ids
    assert int(input_ids[0, -1]) == reference.tokenizer.eos_token_id
    assert attention_mask[0].tolist() == [1] * MAX_TOKENS


def test_truncated_caption_score(scorer, reference, photos, means):
    encoded = reference.tokenize([PREFIX + LONG_CAPTION])
    text = reference.text_embeds_from_ids(encoded["input_ids"], encoded["attention_mask"])
    image = reference.image_embeds([photos["cat"]])
    expected = _numpy_scores(image, text, *means)

    with pytest.warns(UserWarning, match="truncated"):
        result = scorer.score([photos["cat"]], [LONG_CAPTION])

    np.testing.assert_allclose(result.i0t_s, expected["i0t_s"], rtol=0, atol=ATOL_REFERENCE)
    np.testing.assert_allclose(result.clip_s, expected["clip_s"], rtol=0, atol=ATOL_REFERENCE)


# --- Batch invariance -------------------------------------------------------------------


@pytest.mark.parametrize("case", ["batch_size_1", "batch_size_3", "shuffled", "with_other_items"])
def test_batch_invariance(make_scorer, short_items, photos, case):
    images, captions = short_items
    baseline = make_scorer(batch_size=64).score(images, captions).i0t_s

    if case == "batch_size_1":
        scores = make_scorer(batch_size=1).score(images, captions).i0t_s
    elif case == "batch_size_3":
        scores = make_scorer(batch_size=3).score(images, captions).i0t_s
    elif case == "shuffled":
        order = np.random.default_rng(0).permutation(len(images))
        shuffled = make_scorer(batch_size=3).score([images[i] for i in order], [captions[i] for i in order]).i0t_s
        scores = np.empty_like(shuffled)
        scores[order] = shuffled
    else:
        extra_images = [photos["cat"], photos["hubble"], photos["brick"]]
        extra_captions = ["a cup on a table", "a night sky", "grey stones"]
        scores = make_scorer(batch_size=3).score(extra_images + images, extra_captions + captions).i0t_s[3:]

    np.testing.assert_allclose(scores, baseline, rtol=0, atol=1e-6)


# --- score_embeddings -------------------------------------------------------------------


def test_score_embeddings_matches_numpy(checkpoint, example_embeds, expected):
    result = checkpoint.scorer.score_embeddings(
        example_embeds["images"], example_embeds["captions"], reference_embeds=example_embeds["references"]
    )

    np.testing.assert_allclose(result.i0t_s, expected["i0t_s"], rtol=0, atol=ATOL_SAME_EMBEDDINGS)
    np.testing.assert_allclose(result.clip_s, expected["clip_s"], rtol=0, atol=ATOL_SAME_EMBEDDINGS)
    np.testing.assert_allclose(result.ref_clip_s, expected["ref_clip_s"], rtol=0, atol=ATOL_SAME_EMBEDDINGS)
    np.testing.assert_allclose(result.ref_i0t_s, expected["ref_i0t_s"], rtol=0, atol=ATOL_SAME_EMBEDDINGS)


# --- stats="corpus" ---------------------------------------------------------------------


def test_corpus_means_from_distinct_items(make_scorer, reference, photos):
    names = ["cat", "cat", "coffee", "rocket", "hubble"]
    captions = ["a tabby cat", "a brick wall", "a brick wall", "a rocket at dusk", "distant galaxies"]
    distinct_names = ["cat", "coffee", "rocket", "hubble"]
    distinct_captions = ["a tabby cat", "a brick wall", "a rocket at dusk", "distant galaxies"]

    image_embeds = reference.image_embeds([photos[name] for name in names])
    text_embeds = reference.text_embeds(captions)
    image_mean = _unit_rows(reference.image_embeds([photos[name] for name in distinct_names])).mean(axis=0)
    text_mean = _unit_rows(reference.text_embeds(distinct_captions)).mean(axis=0)
    expected = _numpy_scores(image_embeds, text_embeds, image_mean, text_mean)
    # Means over all five pairs, duplicates counted, give other scores, so the test can tell them apart.
    with_duplicates = _numpy_scores(
        image_embeds, text_embeds, _unit_rows(image_embeds).mean(axis=0), _unit_rows(text_embeds).mean(axis=0)
    )

    with pytest.warns(UserWarning, match="corpus"):
        result = make_scorer(stats="corpus").score([photos[name] for name in names], captions)

    assert np.max(np.abs(with_duplicates["i0t_s"] - expected["i0t_s"])) > 1e-3
    np.testing.assert_allclose(result.i0t_s, expected["i0t_s"], rtol=0, atol=ATOL_REFERENCE)


def test_corpus_warns_below_32_pairs(make_scorer, short_items):
    images, captions = short_items

    with pytest.warns(UserWarning, match="corpus") as record:
        make_scorer(stats="corpus").score(images, captions)

    messages = [str(w.message) for w in record if "corpus" in str(w.message)]
    assert len(messages) == 1
    assert re.search(r"\b8 pairs\b", messages[0])


def test_corpus_quiet_at_32_pairs(make_scorer, short_items):
    images, captions = short_items
    # 8 photos × 4 captions each: 32 pairs.
    pair_images = [image for image in images for _ in range(4)]
    pair_captions = [captions[(n + k) % len(captions)] for n in range(len(images)) for k in range(4)]

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        make_scorer(stats="corpus").score(pair_images, pair_captions)

    assert len(pair_images) == 32
    assert [str(w.message) for w in record if "corpus" in str(w.message)] == []


def test_corpus_signature(make_scorer, short_items):
    images, captions = short_items

    with pytest.warns(UserWarning, match="corpus"):
        result = make_scorer(stats="corpus").score(images, captions)

    assert "corpus" in result.signature
    assert "corpus" in make_scorer(stats="corpus").signature


# --- Statistics errors ------------------------------------------------------------------


def test_no_statistics_raises(tiny_clip):
    with pytest.raises(StatisticsError) as raised:
        I0TScore(model=str(tiny_clip), device="cpu")

    message = str(raised.value)
    assert "i0tscore stats build" in message
    if SHIPPED_INDEX.is_file():
        for entry in json.loads(SHIPPED_INDEX.read_text(encoding="utf-8"))["entries"]:
            assert entry["name"] in message
    else:
        assert "No statistics are shipped" in message


def test_other_model_stats_raise(tiny_clip, other_tiny_clip, other_stats):
    with pytest.raises(StatisticsError) as raised:
        I0TScore(model=str(tiny_clip), stats=str(other_stats), device="cpu")

    message = str(raised.value)
    assert tiny_clip.name in message
    assert other_tiny_clip.name in message
    assert "allow_model_mismatch" in message


def test_other_model_stats_allowed(tiny_clip, other_stats, photos):
    scorer = I0TScore(model=str(tiny_clip), stats=str(other_stats), device="cpu", allow_model_mismatch=True)

    result = scorer.score([photos["cat"]], ["a tabby cat"])

    assert np.isfinite(result.i0t_s).all()


def test_other_dimension_stats_raise(tiny_clip):
    rng = np.random.default_rng(0)
    stats = Statistics(
        image_mean=rng.normal(size=16) / 16,
        text_mean=rng.normal(size=16) / 16,
        model=ModelIdentity("tiny-clip"),
        corpus="hand-made",
        num_pairs=1,
        num_images=1,
        num_texts=1,
    )

    with pytest.raises(StatisticsError) as raised:
        I0TScore(model=str(tiny_clip), stats=stats, device="cpu", allow_model_mismatch=True)

    message = str(raised.value)
    assert re.search(r"\b16\b", message)
    assert re.search(r"\b32\b", message)


def test_edited_stats_rejected(tiny_clip, tiny_stats, tmp_path):
    text = Path(tiny_stats).read_text(encoding="utf-8")
    start = text.index('"image_mean"')
    digit_at = next(i for i in range(start, len(text)) if text[i].isdigit())
    edited_digit = str((int(text[digit_at]) + 1) % 10)
    edited = text[:digit_at] + edited_digit + text[digit_at + 1 :]
    path = tmp_path / "edited.json"
    path.write_text(edited, encoding="utf-8")

    assert json.loads(edited)["image_mean"] != json.loads(text)["image_mean"]
    with pytest.raises(StatisticsError, match="(?i)checksum"):
        I0TScore(model=str(tiny_clip), stats=str(path), device="cpu")


def test_nan_mean_names_dimension():
    image_mean = np.zeros(32)
    image_mean[5] = np.nan

    with pytest.raises(StatisticsError, match=r"dimension 5\b"):
        Statistics(
            image_mean=image_mean,
            text_mean=np.zeros(32),
            model=ModelIdentity("tiny-clip"),
            corpus="hand-made",
            num_pairs=1,
            num_images=1,
            num_texts=1,
        )


# --- Argument errors --------------------------------------------------------------------


def test_float16_on_cpu_raises(tiny_clip, tiny_stats):
    with pytest.raises(ValueError, match="(?i)float16.*cpu"):
        I0TScore(model=str(tiny_clip), stats=str(tiny_stats), device="cpu", dtype="float16")


def test_unknown_preset_raises(tiny_clip, tiny_stats):
    with pytest.raises(ValueError, match="no-such-preset"):
        I0TScore(model=str(tiny_clip), stats=str(tiny_stats), device="cpu", preset="no-such-preset")


def test_mismatched_lengths_raise(scorer, photos):
    with pytest.raises(ValueError) as raised:
        scorer.score([photos["cat"], photos["coffee"]], ["a tabby cat", "an espresso cup", "a brick wall"])

    message = str(raised.value)
    assert re.search(r"\b2 images\b", message)
    assert re.search(r"\b3 captions\b", message)


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_caption_raises(scorer, photos, blank):
    with pytest.raises(ValueError, match=r"captions\[1\]"):
        scorer.score([photos["cat"], photos["coffee"]], ["a tabby cat", blank])


def test_empty_reference_list_raises(scorer, photos):
    with pytest.raises(ValueError, match=r"references\[1\]"):
        scorer.score([photos["cat"], photos["coffee"]], ["a tabby cat", "an espresso cup"], [["a cat"], []])


# --- Unreadable images ------------------------------------------------------------------


def test_skip_missing_image(scorer, photos, tmp_path):
    missing = tmp_path / "missing-photo.jpg"
    without = scorer.score([photos["cat"], photos["rocket"]], ["a tabby cat", "a rocket at dusk"])

    result = scorer.score(
        [photos["cat"], missing, photos["rocket"]], ["a tabby cat", "an espresso cup", "a rocket at dusk"], on_error="skip"
    )

    assert list(result.errors) == [1]
    assert missing.name in result.errors[1]
    assert np.isnan(result.i0t_s[1])
    assert np.isnan(result.clip_s[1])
    np.testing.assert_allclose(result.i0t_s[[0, 2]], without.i0t_s, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.clip_s[[0, 2]], without.clip_s, rtol=0, atol=1e-6)


def test_raise_missing_image(scorer, photos, tmp_path):
    missing = tmp_path / "missing-photo.jpg"

    with pytest.raises(ImageLoadError, match="missing-photo.jpg"):
        scorer.score([photos["cat"], missing], ["a tabby cat", "an espresso cup"], on_error="raise")


def test_skip_across_loaded_ahead_batches(make_scorer, photos, tmp_path):
    # Batches of 2: the second batch fails whole and the third in part, while
    # the batch after each is already loading.
    missing_paths = [tmp_path / f"gone-{n}.jpg" for n in range(3)]
    images = [photos["cat"], photos["rocket"], *missing_paths, photos["coffee"], photos["cat"]]
    captions = ["a tabby cat", "a rocket at dusk", "x", "y", "z", "an espresso cup", "a cat"]
    readable_rows = [0, 1, 5, 6]
    expected = make_scorer(batch_size=64).score([images[i] for i in readable_rows], [captions[i] for i in readable_rows])

    result = make_scorer(batch_size=2).score(images, captions, on_error="skip")

    assert sorted(result.errors) == [2, 3, 4]
    for row, path in zip([2, 3, 4], missing_paths):
        assert path.name in result.errors[row]
    np.testing.assert_allclose(result.clip_s[readable_rows], expected.clip_s, rtol=0, atol=1e-6)


def test_raise_from_a_later_batch(make_scorer, photos, tmp_path):
    missing = tmp_path / "late-missing.jpg"
    images = [photos["cat"], photos["rocket"], photos["coffee"], missing]
    with pytest.raises(ImageLoadError, match="late-missing.jpg"):
        make_scorer(batch_size=1).score(images, ["a", "b", "c", "d"], on_error="raise")


# --- Model loading errors ---------------------------------------------------------------


@pytest.fixture
def hub_offline(monkeypatch):
    """Hugging Face hub offline mode, so that no test sends a request."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return huggingface_hub.constants.HF_HUB_CACHE


@pytest.mark.parametrize("kind", ["missing_folder", "unknown_hub_id"])
def test_model_load_error_message(hub_offline, tiny_stats, tmp_path, kind):
    model = str(tmp_path / "no-such-model") if kind == "missing_folder" else "i0tscore-tests/no-such-clip"

    with pytest.raises(ModelLoadError) as raised:
        I0TScore(model=model, stats=str(tiny_stats), device="cpu")

    message = str(raised.value)
    assert model in message
    assert str(hub_offline) in message
    assert "local folder" in message
    assert "model=" in message


# --- Signature --------------------------------------------------------------------------


def test_signature_parts(scorer, stats_json, photos):
    result = scorer.score([photos["cat"]], ["a tabby cat"])

    for signature in (result.signature, scorer.signature):
        assert metadata.version("i0tscore") in signature
        assert "tiny-clip" in signature
        assert stats_json["sha256"][:12] in signature
        assert repr(PREFIX) in signature
        assert "default" in signature
        assert "float32" in signature


def test_signature_paper_preset(make_scorer):
    assert "paper" in make_scorer(preset="paper").signature


# --- Image input types ------------------------------------------------------------------


# rocket.jpeg carries an EXIF orientation, cat.png is RGBA and camera.png is greyscale.
@pytest.mark.parametrize("name", ["rocket", "cat", "camera"])
@pytest.mark.parametrize("kind", ["pil", "numpy", "tensor"])
def test_image_input_types(scorer, photos, name, kind):
    path = photos[name]
    by_path = scorer.score([path], ["a tabby cat"])

    with Image.open(path) as opened:
        opened.load()
        upright = ImageOps.exif_transpose(opened)
    if kind == "pil":
        image = upright
    elif kind == "numpy":
        image = np.array(upright)
    else:
        pixels = np.array(upright)
        image = torch.from_numpy(pixels if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0).copy())

    result = scorer.score([image], ["a tabby cat"])

    np.testing.assert_allclose(result.i0t_s, by_path.i0t_s, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.clip_s, by_path.clip_s, rtol=0, atol=1e-6)
