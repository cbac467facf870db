"""Shared fixtures: small CLIP checkpoints built offline, statistics for them, real photos."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# The tests never reach the Hugging Face hub. huggingface_hub reads this variable
# once, at import, so it is set before anything imports transformers.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
EXAMPLES = REPO / "examples"
REAL_FEATURES = REPO.parent / "shared" / "data" / "real-clip-features" / "coco-val2017-500-pairs.npy"

sys.path.insert(0, str(TESTS))

from tinyclip import build_tiny_clip  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A random-weight CLIP checkpoint folder (projection dim 32, 32 px images, 32 tokens)."""
    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip", seed=0)


@pytest.fixture(scope="session")
def other_tiny_clip(tmp_path_factory) -> Path:
    """A second random checkpoint with other weights and the same dimension."""
    return build_tiny_clip(tmp_path_factory.mktemp("models") / "other-clip", seed=1)


@pytest.fixture(scope="session")
def example_images() -> list[Path]:
    """The real photographs under examples/images, in several formats and modes."""
    images = sorted((EXAMPLES / "images").iterdir())
    assert len(images) >= 6, f"expected the example photos in {EXAMPLES / 'images'}"
    return images


@pytest.fixture(scope="session")
def tiny_stats(tiny_clip, tmp_path_factory, example_images):
    """Statistics for ``tiny_clip``, built by the package over the example photos and captions."""
    from i0tscore.build import build_statistics
    from i0tscore.inputs import read_corpus
    from i0tscore.model import load_clip

    pairs = read_corpus(EXAMPLES / "coco_annotations.json", images=EXAMPLES / "images")
    stats = build_statistics(load_clip(tiny_clip, device="cpu"), pairs, corpus="examples", corpus_path="examples", progress=False)
    path = tmp_path_factory.mktemp("stats") / "tiny-clip.json"
    stats.save(path)
    return path


@pytest.fixture(scope="session")
def real_features() -> tuple[np.ndarray, np.ndarray]:
    """Real CLIP image and text embeddings of 500 COCO pairs (each row L2-normalized)."""
    if not REAL_FEATURES.is_file():
        pytest.fail(f"Real CLIP features not found at {REAL_FEATURES}; they live in shared/data beside the repository.")
    array = np.load(REAL_FEATURES, allow_pickle=False)
    return array[0].astype(np.float64), array[1].astype(np.float64)
