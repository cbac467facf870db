"""Hard inputs and untrusted files: extreme images, very long captions, no unpickling anywhere."""

from __future__ import annotations

import ast
import warnings

import numpy as np
import pytest
from PIL import Image

from i0tscore import I0TScore

from conftest import REPO

PACKAGE = REPO / "i0tscore"


@pytest.fixture(scope="module")
def scorer(tiny_clip, tiny_stats):
    return I0TScore(str(tiny_clip), stats=str(tiny_stats), device="cpu", progress=False)


@pytest.mark.parametrize("size", [(1, 1), (1, 2000), (2000, 1)])
def test_extreme_image_shapes_score_finite(scorer, tmp_path, size):
    path = tmp_path / f"{size[0]}x{size[1]}.png"
    Image.new("RGB", size, (200, 30, 30)).save(path)

    result = scorer.score([path], ["a red picture"])

    assert np.isfinite(result.i0t_s).all()
    assert np.isfinite(result.clip_s).all()


def test_long_caption_scores_as_truncated_prefix(scorer):
    # Single-letter words are one token each with the tiny character-level
    # tokenizer, so the cut falls on a word boundary and the kept prefix is
    # itself a caption: "A photo depicts " takes 13 tokens, start and end 2,
    # which leaves 17 of the model's 32 positions.
    long_caption = "a " * 5000
    kept = " ".join(["a"] * 17)
    image = REPO / "examples" / "images" / "cat.png"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = scorer.score([image, image], [long_caption, kept])

    assert len(long_caption) == 10_000
    assert result.truncated.tolist() == [True, False]
    assert result.i0t_s[0] == pytest.approx(result.i0t_s[1], abs=1e-6)
    assert sum("truncated" in str(w.message) for w in caught) == 1


def test_empty_caption_rejected(scorer):
    image = REPO / "examples" / "images" / "cat.png"

    with pytest.raises(ValueError, match=r"captions\[1\] is empty"):
        scorer.score([image, image], ["a cat", "   "])


def test_length_mismatch_names_counts(scorer):
    image = REPO / "examples" / "images" / "cat.png"

    with pytest.raises(ValueError, match="2 images and 1 captions"):
        scorer.score([image, image], ["a cat"])


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = ast.unparse(func)
            found.append((name, node))
    return found


def test_package_never_unpickles():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                if any(module.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "shelve") for module in modules):
                    offenders.append(f"{path.name}:{node.lineno} imports a pickle module")
        for name, call in _calls(tree):
            if name.endswith("torch.load"):
                offenders.append(f"{path.name}:{call.lineno} calls {name}")
            for keyword in call.keywords:
                if keyword.arg in ("allow_pickle", "trust_remote_code") and ast.unparse(keyword.value) != "False":
                    offenders.append(f"{path.name}:{call.lineno} passes {keyword.arg}={ast.unparse(keyword.value)}")
                if keyword.arg == "use_safetensors" and ast.unparse(keyword.value) != "True":
                    offenders.append(f"{path.name}:{call.lineno} passes use_safetensors={ast.unparse(keyword.value)}")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                if not any(k.arg == "allow_pickle" for k in call.keywords):
                    offenders.append(f"{path.name}:{call.lineno} calls {name} without allow_pickle=False")

    assert offenders == []


def test_pickle_scan_catches_offender(tmp_path):
    # The scan above must be able to fail: run its checks on a file that unpickles.
    source = "import numpy as np\nimport torch\nx = torch.load('f')\ny = np.load('g', allow_pickle=True)\n"
    tree = ast.parse(source)
    names = [name for name, _ in _calls(tree)]

    assert "torch.load" in names
    assert any(k.arg == "allow_pickle" and ast.unparse(k.value) == "True" for _, call in _calls(tree) for k in call.keywords)


def test_model_loading_is_safetensors_only(tiny_clip, tmp_path):
    import shutil

    from i0tscore.model import ModelLoadError, load_clip

    folder = tmp_path / "bin-only"
    shutil.copytree(tiny_clip, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")

    with pytest.raises(ModelLoadError, match="safetensors"):
        load_clip(folder, device="cpu")
