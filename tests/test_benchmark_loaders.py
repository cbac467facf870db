"""Benchmark loaders, agreement measures and the synthetic benchmark, on small files written here."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from correlation import loaders  # noqa: E402
from correlation.metrics import (  # noqa: E402
    correlations,
    foil_references,
    pairwise_accuracy,
    pascal_accuracy,
    pascal_human_prefers_a,
)
from correlation.scoring import METRICS  # noqa: E402

TRAINED_MODEL = REPO / "tests" / "assets" / "synthclip" / "model"

TOKENS = {
    "a.jpg": ["a dog runs", "a brown dog", "dog on grass", "a dog outside", "an animal"],
    "b.jpg": ["two kids play", "children at a park", "kids on a slide", "a playground", "two children"],
}


def write_tokens(folder: Path) -> Path:
    path = folder / "Flickr8k.token.txt"
    lines = [f"{image}#{n}\t{text}" for image, texts in TOKENS.items() for n, text in enumerate(texts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ Flickr8k JSON


def test_flickr8k_json_counts_and_overlap(tmp_path):
    data = {
        "a": {
            "image_path": "Flicker8k_Dataset/a.jpg",
            "ground_truth": ["a dog runs", "a brown  dog"],
            "human_judgement": [
                {"caption": "a cat sleeps", "rating": 1.0, "image_path": "Flicker8k_Dataset/a.jpg"},
                {"caption": "a  brown dog", "rating": 4.0, "image_path": "Flicker8k_Dataset/a.jpg"},
                {"caption": "a dog", "rating": float("nan"), "image_path": "Flicker8k_Dataset/a.jpg"},
            ],
        },
        "b": {
            "image_path": "Flicker8k_Dataset/b.jpg",
            "ground_truth": ["two kids play"],
            "human_judgement": [{"caption": "kids", "rating": 3.0, "image_path": "Flicker8k_Dataset/b.jpg"}],
        },
    }
    path = tmp_path / "flickr8k.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    dataset = loaders.load_flickr8k_json(path, tmp_path / "flickr8k")

    assert len(dataset.rows) == 2
    assert dataset.dropped_overlap == 1  # "a  brown dog" equals a reference after whitespace normalization
    assert dataset.dropped_other == 1  # the NaN rating
    assert dataset.rows[0].image == str(tmp_path / "flickr8k" / "Flicker8k_Dataset" / "a.jpg")
    assert dataset.rows[0].references == ("a dog runs", "a brown dog")
    assert [row.rating for row in dataset.rows] == [1.0, 3.0]


def test_flickr8k_json_missing_key_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"a": {"image_path": "a.jpg", "human_judgement": []}}), encoding="utf-8")
    with pytest.raises(loaders.LayoutError, match=r"bad\.json.*missing key.*ground_truth"):
        loaders.load_flickr8k_json(path)


def test_flickr8k_json_not_an_object_error(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(loaders.LayoutError, match="expected a JSON object"):
        loaders.load_flickr8k_json(path)


# ------------------------------------------------------------------ Flickr8k original text files


def test_expert_txt_three_rows_per_pair(tmp_path):
    tokens = write_tokens(tmp_path)
    annotations = tmp_path / "ExpertAnnotations.txt"
    annotations.write_text(
        "a.jpg\tb.jpg#0\t1\t1\t2\n"  # another image's caption: kept
        "a.jpg\ta.jpg#2\t4\t4\t4\n"  # the image's own caption: dropped
        "b.jpg\ta.jpg#4\t1\t2\t1\n",
        encoding="utf-8",
    )

    dataset = loaders.load_flickr8k_expert_txt(annotations, tokens, tmp_path / "images")

    assert len(dataset.rows) == 6
    assert dataset.dropped_overlap == 3
    assert [row.rating for row in dataset.rows[:3]] == [1.0, 1.0, 2.0]
    assert dataset.rows[0].candidate == "two kids play"
    assert dataset.rows[0].references == tuple(TOKENS["a.jpg"])
    assert dataset.rows[3].image == str(tmp_path / "images" / "b.jpg")


def test_expert_txt_wrong_columns_error(tmp_path):
    tokens = write_tokens(tmp_path)
    annotations = tmp_path / "ExpertAnnotations.txt"
    annotations.write_text("a.jpg\tb.jpg#0\t1\t1\n", encoding="utf-8")
    with pytest.raises(loaders.LayoutError, match=r"ExpertAnnotations\.txt: line 1: expected 5"):
        loaders.load_flickr8k_expert_txt(annotations, tokens)


def test_expert_txt_unknown_caption_error(tmp_path):
    tokens = write_tokens(tmp_path)
    annotations = tmp_path / "ExpertAnnotations.txt"
    annotations.write_text("a.jpg\tc.jpg#0\t1\t1\t1\n", encoding="utf-8")
    with pytest.raises(loaders.LayoutError, match=r"'c\.jpg#0' is not in"):
        loaders.load_flickr8k_expert_txt(annotations, tokens)


def test_expert_txt_score_range_error(tmp_path):
    tokens = write_tokens(tmp_path)
    annotations = tmp_path / "ExpertAnnotations.txt"
    annotations.write_text("a.jpg\tb.jpg#0\t1\t5\t1\n", encoding="utf-8")
    with pytest.raises(loaders.LayoutError, match="1-4"):
        loaders.load_flickr8k_expert_txt(annotations, tokens)


def test_crowdflower_txt_removes_rated_references(tmp_path):
    tokens = write_tokens(tmp_path)
    annotations = tmp_path / "CrowdFlowerAnnotations.txt"
    annotations.write_text(
        "a.jpg\ta.jpg#0\t1.0\t3\t0\n"
        "a.jpg\tb.jpg#1\t0.25\t1\t3\n"
        "b.jpg\tb.jpg#2\t0.666667\t2\t1\n",
        encoding="utf-8",
    )

    dataset = loaders.load_flickr8k_crowdflower_txt(annotations, tokens)

    assert len(dataset.rows) == 3
    assert dataset.dropped_overlap == 0
    assert [row.rating for row in dataset.rows] == pytest.approx([1.0, 0.25, 0.666667])
    # Every rated caption of image a (only "a dog runs") leaves a's references, for every row of a.
    assert dataset.rows[0].references == tuple(TOKENS["a.jpg"][1:])
    assert dataset.rows[1].references == tuple(TOKENS["a.jpg"][1:])
    assert "kids on a slide" not in dataset.rows[2].references


def test_crowdflower_txt_drop_policy(tmp_path):
    tokens = write_tokens(tmp_path)
    annotations = tmp_path / "CrowdFlowerAnnotations.txt"
    annotations.write_text("a.jpg\ta.jpg#0\t1.0\t3\t0\na.jpg\tb.jpg#1\t0.25\t1\t3\n", encoding="utf-8")
    dataset = loaders.load_flickr8k_crowdflower_txt(annotations, tokens, overlap="drop")
    assert len(dataset.rows) == 1
    assert dataset.dropped_overlap == 1


def test_crowdflower_txt_inconsistent_fraction_error(tmp_path):
    tokens = write_tokens(tmp_path)
    annotations = tmp_path / "CrowdFlowerAnnotations.txt"
    annotations.write_text("a.jpg\ta.jpg#0\t3\t1.0\t0\n", encoding="utf-8")
    with pytest.raises(loaders.LayoutError, match="fraction of yes"):
        loaders.load_flickr8k_crowdflower_txt(annotations, tokens)


def test_token_file_layout_error(tmp_path):
    path = tmp_path / "Flickr8k.token.txt"
    path.write_text("a.jpg a dog\n", encoding="utf-8")
    with pytest.raises(loaders.LayoutError, match=r"line 1: expected '<image>#<n>' TAB caption"):
        loaders.read_flickr8k_tokens(path)


# ------------------------------------------------------------------ Composite


def write_composite(path: Path, rows: list[list[str]], header=("image_id", "candidate", "references", "score")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_composite_csv_counts(tmp_path):
    path = write_composite(
        tmp_path / "composite.csv",
        [
            ["img1", "a man rides", "a man rides a horse|||a rider", "4"],
            ["img1", "a rider", "a man rides a horse|||a rider", "5"],  # candidate is a reference
            ["img2", "a cat", json.dumps(["a cat sleeps", "a kitten"]), "2.5"],
        ],
    )

    dataset = loaders.load_composite_csv(path, tmp_path, image_suffix=".jpg")

    assert len(dataset.rows) == 2
    assert dataset.dropped_overlap == 1
    assert dataset.rows[0].references == ("a man rides a horse", "a rider")
    assert dataset.rows[1].references == ("a cat sleeps", "a kitten")
    assert dataset.rows[1].image == str(tmp_path / "img2.jpg")
    assert dataset.rows[1].rating == 2.5


def test_composite_missing_column_error(tmp_path):
    path = write_composite(tmp_path / "c.csv", [["img1", "a", "b", "1"]], header=("image", "candidate", "references", "score"))
    with pytest.raises(loaders.LayoutError, match=r"c\.csv: missing column.*image_id"):
        loaders.load_composite_csv(path)


def test_composite_empty_references_error(tmp_path):
    path = write_composite(tmp_path / "c.csv", [["img1", "a", "", "1"]])
    with pytest.raises(loaders.LayoutError, match="line 2: the references cell is empty"):
        loaders.load_composite_csv(path)


# ------------------------------------------------------------------ Pascal-50S


def write_pascal(folder: Path, pairs: list[tuple[str, str, str, int, list[int]]]) -> tuple[Path, Path]:
    """Write pair and consensus files. Each pair: image, caption A, caption B, category, 48 votes (1 = A)."""
    inputs = np.array([(image, a, b) for image, a, b, _, _ in pairs], dtype=[("image", object), ("a", object), ("b", object)])
    triplets = []
    for index, (_, a, b, _, votes) in enumerate(pairs):
        for judge, vote in enumerate(votes):
            # Alternate the order of the two captions, so the vote code must be read per triplet.
            code = 1 if vote == 1 else -1
            first, second = a, b
            if judge % 2 == 1:
                first, second, code = b, a, -code
            triplets.append((f"reference {index}-{judge}", first, second, float(code)))
    consensus = np.array(triplets, dtype=[("A", object), ("B", object), ("C", object), ("D", object)])
    pair_path, consensus_path = folder / "pair_pascal.mat", folder / "consensus_pascal.mat"
    savemat(pair_path, {"new_input": inputs, "category": np.array([[pair[3] for pair in pairs]], dtype=np.uint8)})
    savemat(consensus_path, {"triplets": consensus})
    return pair_path, consensus_path


PASCAL_PAIRS = [
    ("1.jpg", "a red bus", "a blue car", 1, [1] * 30 + [0] * 18),
    ("2.jpg", "a dog", "a plane", 2, [0] * 40 + [1] * 8),
    ("3.jpg", "a boat", "a ship", 3, [1] * 24 + [0] * 24),  # tied votes
    ("4.jpg", "two cats", "one cat", 4, [1] * 48),
]


def test_pascal_loader_votes_and_references(tmp_path):
    pair_path, consensus_path = write_pascal(tmp_path, PASCAL_PAIRS)

    pairs = loaders.load_pascal50s(pair_path, consensus_path, tmp_path)

    assert len(pairs) == 4
    assert [(pair.votes_a, pair.votes_b) for pair in pairs] == [(30, 18), (8, 40), (24, 24), (48, 0)]
    assert [pair.category for pair in pairs] == [1, 2, 3, 4]
    assert len(pairs[0].references) == 48
    assert pairs[1].references[0] == "reference 1-0"
    assert pairs[2].image == str(tmp_path / "3.jpg")


def test_pascal_accuracy_hand_example(tmp_path):
    pairs = loaders.load_pascal50s(*write_pascal(tmp_path, PASCAL_PAIRS))
    prefers_a = pascal_human_prefers_a(pairs, np.random.default_rng(0))
    prefers_a[2] = True  # fix the tie's coin so the expected accuracy is known

    # Humans prefer A, B, A, A. The metric agrees on pair 1, disagrees on pair 2,
    # agrees on pair 3 and ties on pair 4.
    scores_a = np.array([0.9, 0.8, 0.7, 0.5])
    scores_b = np.array([0.1, 0.2, 0.3, 0.5])

    accuracy = pascal_accuracy(pairs, scores_a, scores_b, prefers_a)

    assert accuracy == {"HC": 100.0, "HI": 0.0, "HM": 100.0, "MM": 50.0, "mean": 62.5}


def test_pascal_human_tie_break_is_seeded(tmp_path):
    pairs = loaders.load_pascal50s(*write_pascal(tmp_path, PASCAL_PAIRS))
    first = pascal_human_prefers_a(pairs, np.random.default_rng(5))
    second = pascal_human_prefers_a(pairs, np.random.default_rng(5))
    assert first.tolist() == second.tolist()
    assert first[[0, 1, 3]].tolist() == [True, False, True]


def test_pascal_missing_variable_error(tmp_path):
    path = tmp_path / "pair_pascal.mat"
    savemat(path, {"new_input": np.zeros((1, 3))})
    with pytest.raises(loaders.LayoutError, match=r"pair_pascal\.mat: missing variable.*category"):
        loaders.load_pascal50s(path, path)


def test_pascal_wrong_triplet_count_error(tmp_path):
    pair_path, consensus_path = write_pascal(tmp_path, PASCAL_PAIRS)
    short = tmp_path / "short.mat"
    savemat(short, {"triplets": np.array([("r", "a red bus", "a blue car", 1.0)], dtype=[("A", object), ("B", object), ("C", object), ("D", object)])})
    with pytest.raises(loaders.LayoutError, match="expected 48 triplets per pair"):
        loaders.load_pascal50s(pair_path, short)


def test_pascal_foreign_vote_error(tmp_path):
    pair_path, _ = write_pascal(tmp_path, [("1.jpg", "a red bus", "a blue car", 1, [1] * 48)])
    other = tmp_path / "other"
    other.mkdir()
    _, consensus_path = write_pascal(other, [("1.jpg", "a tree", "a car", 1, [1] * 48)])
    with pytest.raises(loaders.LayoutError, match="neither caption of the pair"):
        loaders.load_pascal50s(pair_path, consensus_path)


# ------------------------------------------------------------------ FOIL


def write_foil(folder: Path) -> tuple[Path, Path]:
    foil = {
        "images": [{"id": 7, "file_name": "COCO_val2014_000000000007.jpg"}],
        "annotations": [
            {"id": 100, "image_id": 7, "caption": "A dog on a sofa.", "foil": False},
            {"id": 100, "image_id": 7, "caption": "A cat on a sofa.", "foil": True},
            {"id": 101, "image_id": 9, "caption": "A man with a kite.", "foil": False},
            {"id": 101, "image_id": 9, "caption": "A man with a surfboard.", "foil": True},
            {"id": 102, "image_id": 9, "caption": "A bus on a road.", "foil": True},  # no true caption
        ],
    }
    coco = {
        "annotations": [
            {"id": 5, "image_id": 7, "caption": "A dog lies on a couch."},
            {"id": 1, "image_id": 7, "caption": "A  dog on a sofa."},  # the true caption
            {"id": 3, "image_id": 7, "caption": "A brown dog resting."},
            {"id": 4, "image_id": 7, "caption": "Dog sleeping indoors."},
            {"id": 2, "image_id": 7, "caption": "A pet on furniture."},
            {"id": 8, "image_id": 9, "caption": "A man with a kite."},
            {"id": 6, "image_id": 9, "caption": "Someone flies a kite."},
        ]
    }
    foil_path, coco_path = folder / "foilv1.0_test_2017.json", folder / "captions_val2014.json"
    foil_path.write_text(json.dumps(foil), encoding="utf-8")
    coco_path.write_text(json.dumps(coco), encoding="utf-8")
    return foil_path, coco_path


def test_foil_pairs_and_references(tmp_path):
    pairs, unpaired = loaders.load_foil(*write_foil(tmp_path), tmp_path / "val2014")

    assert len(pairs) == 2
    assert unpaired == 1
    assert pairs[0].original == "A dog on a sofa."
    assert pairs[0].foil == "A cat on a sofa."
    # Ordered by COCO annotation id, without the true caption.
    assert pairs[0].references == ("A pet on furniture.", "A brown dog resting.", "Dog sleeping indoors.", "A dog lies on a couch.")
    assert pairs[0].image == str(tmp_path / "val2014" / "COCO_val2014_000000000007.jpg")
    assert pairs[1].image == str(tmp_path / "val2014" / "COCO_val2014_000000000009.jpg")
    assert pairs[1].references == ("Someone flies a kite.",)


def test_foil_references_one_and_four(tmp_path):
    pairs, _ = loaders.load_foil(*write_foil(tmp_path))
    assert foil_references(pairs, 1) == [["A pet on furniture."], ["Someone flies a kite."]]
    assert [len(refs) for refs in foil_references(pairs, 4)] == [4, 1]


def test_foil_accuracy_one_and_four_references(tmp_path):
    pairs, _ = loaders.load_foil(*write_foil(tmp_path))

    def word_overlap(caption: str, references: list[str]) -> float:
        words = set(caption.lower().strip(".").split())
        return max(len(words & set(ref.lower().strip(".").split())) for ref in references)

    accuracies = {}
    for count in (1, 4):
        refs = foil_references(pairs, count)
        originals = [word_overlap(pair.original, r) for pair, r in zip(pairs, refs)]
        foils = [word_overlap(pair.foil, r) for pair, r in zip(pairs, refs)]
        accuracies[count] = pairwise_accuracy(originals, foils)

    # 1 reference: pair 0 ties (1 word each with "A pet on furniture"), pair 1 wins ("kite").
    # 4 references: pair 0 wins with "A dog lies on a couch" (dog), pair 1 still wins.
    assert accuracies == {1: 75.0, 4: 100.0}


def test_foil_missing_flag_error(tmp_path):
    foil_path, coco_path = write_foil(tmp_path)
    data = json.loads(foil_path.read_text())
    del data["annotations"][0]["foil"]
    foil_path.write_text(json.dumps(data))
    with pytest.raises(loaders.LayoutError, match=r"foilv1\.0_test_2017\.json: annotations\[0\] is missing key.*foil"):
        loaders.load_foil(foil_path, coco_path)


def test_coco_captions_missing_annotations_error(tmp_path):
    foil_path, coco_path = write_foil(tmp_path)
    coco_path.write_text(json.dumps({"images": []}))
    with pytest.raises(loaders.LayoutError, match=r"captions_val2014\.json: top level is missing key.*annotations"):
        loaders.load_foil(foil_path, coco_path)


# ------------------------------------------------------------------ agreement measures


def test_correlations_without_ties():
    # Pairs: 5 concordant, 1 discordant, no ties: τ-b = τ-c = (5 - 1) / 6.
    # Pearson: Σdx·dy = 4, Σdx² = Σdy² = 5, so r = 0.8.
    result = correlations([1, 2, 3, 4], [1, 3, 2, 4])
    assert result["tau_b"] == pytest.approx(100 * 4 / 6)
    assert result["tau_c"] == pytest.approx(100 * 4 / 6)
    assert result["pearson"] == pytest.approx(80.0)
    assert result["n"] == 4


def test_correlations_with_ties():
    # x has 2 distinct values: 4 concordant pairs, 2 tied in x, none discordant.
    # τ-b = 4 / sqrt((6 - 2) · 6); τ-c = 2·4 / (n² (m - 1) / m) with n = 4, m = 2, so 1.
    # Pearson: Σdx·dy = 2, Σdx² = 1, Σdy² = 5, so r = 2 / sqrt(5).
    result = correlations([1, 1, 2, 2], [1, 2, 3, 4])
    assert result["tau_b"] == pytest.approx(100 * 4 / math.sqrt(24))
    assert result["tau_c"] == pytest.approx(100.0)
    assert result["pearson"] == pytest.approx(100 * 2 / math.sqrt(5))


def test_correlations_reject_nan():
    with pytest.raises(ValueError, match="NaN"):
        correlations([1.0, float("nan")], [1.0, 2.0])


def test_pairwise_accuracy_counts_ties_as_half():
    assert pairwise_accuracy([2, 1, 3, 0], [1, 1, 2, 1]) == pytest.approx(62.5)


# ------------------------------------------------------------------ synthetic benchmark end to end


def test_synthetic_small_end_to_end(tmp_path):
    if not (TRAINED_MODEL / "config.json").is_file():
        pytest.fail(
            f"The trained synthclip checkpoint is missing at {TRAINED_MODEL}; the synthetic benchmark needs it. "
            f"Train it with `python tests/assets/synthclip/train.py --out {TRAINED_MODEL}`."
        )
    out = tmp_path / "synthetic.json"
    command = [sys.executable, str(REPO / "benchmarks" / "correlation" / "synthetic.py"), "--small", "--model", str(TRAINED_MODEL), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]

    report = json.loads(out.read_text())
    assert report["statistics"] in ("shipped", "corpus")
    assert report["settings"]["rows"] == 32 * 4
    assert set(report["signatures"]) == {"default", "paper"}
    for metric in METRICS:
        for measure in ("tau_c", "tau_b", "pearson"):
            value = report["results"][metric][measure]
            assert value is not None and math.isfinite(value), f"{metric} {measure} is {value}"
