"""The raw Composite result files converted to the flat CSV, on files written here in each layout."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from correlation import composite_amt, loaders  # noqa: E402
from correlation.loaders import LayoutError  # noqa: E402

SCRIPT = REPO / "benchmarks" / "correlation" / "composite_amt.py"
RUN = REPO / "benchmarks" / "correlation" / "run.py"

# The 27 columns that every Mechanical Turk batch result file starts with.
MTURK_COLUMNS = [
    "HITId", "HITTypeId", "Title", "Description", "Keywords", "Reward", "CreationTime", "MaxAssignments",
    "RequesterAnnotation", "AssignmentDurationInSeconds", "AutoApprovalDelayInSeconds", "Expiration",
    "NumberOfSimilarHITs", "LifetimeInSeconds", "AssignmentId", "WorkerId", "AssignmentStatus", "AcceptTime",
    "SubmitTime", "AutoApprovalTime", "ApprovalTime", "RejectionTime", "RequesterFeedback", "WorkTimeInSeconds",
    "LifetimeApprovalRate", "Last30DaysApprovalRate", "Last7DaysApprovalRate",
]  # fmt: skip

FLICKR8K_TOKENS = {
    "1000268201_693b08cb0e.jpg": [
        "A child in a pink dress is climbing up a set of stairs in an entry way .",
        "A girl going into a wooden building .",
        "A little girl climbing into a wooden playhouse .",
        "A little girl climbing the stairs to her playhouse .",
        "A little girl in a pink dress going into a wooden cabin .",
    ],
    "1001773457_577c3a7d70.jpg": [
        "A black dog and a spotted dog are fighting",
        "A black dog and a tri-colored dog playing with each other on the road .",
        "A black dog and a white dog with brown spots are staring at each other in the street .",
        "Two dogs of different breeds looking at each other on the road .",
        "Two dogs on pavement moving toward each other .",
    ],
}


def write_amt(path: Path, rows: list[dict[str, str]], captions: int, *, delimiter: str = ";", encoding: str = "utf-8") -> Path:
    """A result file in the MTurk layout: bookkeeping, Input.image_url, Input.textN, Answer.QN, a comment."""
    header = MTURK_COLUMNS + ["Input.image_url"] + [f"Input.text{n}" for n in range(1, captions + 1)]
    header += [f"Answer.Q{n}" for n in range(1, captions + 1)] + ["Answer.comments", "Approve", "Reject"]
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        for number, row in enumerate(rows):
            cells = {name: "" for name in header}
            cells.update(
                {
                    "HITId": f"HIT{number // 2}",
                    "Title": "Rate the captions; how correct is each?",
                    "Description": "Read the sentences, then score them, from 1 to 5",
                    "AssignmentId": f"A{number}",
                    "WorkerId": row.get("worker", f"W{number}"),
                    "AssignmentStatus": "Approved",
                }
            )
            cells.update({key: value for key, value in row.items() if key != "worker"})
            writer.writerow([cells[name] for name in header])
    return path


def flickr8k_rows() -> list[dict[str, str]]:
    url = "http://example.invalid/flickr8k/{}"
    return [
        {
            "Input.image_url": url.format("1000268201_693b08cb0e.jpg"),
            # The human caption differs from its reference only in spacing before the period.
            "Input.text1": "A little girl climbing into a wooden playhouse.",
            "Input.text2": "A girl in a pink dress runs on the grass .",
            "Input.text3": "A dog jumps over a fence .",
            "Answer.Q1": "5", "Answer.Q2": "3", "Answer.Q3": "1",
            "Answer.comments": "fine, thanks",
            "worker": "W1",
        },
        {
            "Input.image_url": url.format("1000268201_693b08cb0e.jpg"),
            "Input.text1": "A little girl climbing into a wooden playhouse.",
            "Input.text2": "A girl in a pink dress runs on the grass .",
            "Input.text3": "A dog jumps over a fence .",
            "Answer.Q1": "4", "Answer.Q2": "2", "Answer.Q3": "",
            "worker": "W2",
        },
        {
            "Input.image_url": url.format("1001773457_577c3a7d70.jpg"),
            "Input.text1": "Two dogs on pavement moving toward each other .",
            "Input.text2": "Two dogs play in the street .",
            "Input.text3": "A cat sleeps on a sofa .",
            "Answer.Q1": "5", "Answer.Q2": "4", "Answer.Q3": "1",
            "worker": "W1",
        },
    ]  # fmt: skip


def write_tokens(path: Path) -> Path:
    lines = [f"{image}#{n}\t{text}" for image, texts in FLICKR8K_TOKENS.items() for n, text in enumerate(texts)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_flat(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------ conversion


def test_flickr8k_file_with_token_references(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    result = composite_amt.convert(amt, write_tokens(tmp_path / "Flickr8k.token.txt"), image_folder="flickr8k")

    assert result.columns.image == "Input.image_url"
    assert result.columns.captions == ("Input.text1", "Input.text2", "Input.text3")
    # Answer.comments contains text, so it is not taken for a score column.
    assert result.columns.scores == ("Answer.Q1", "Answer.Q2", "Answer.Q3")
    assert result.skipped_blank_scores == 1
    assert result.skipped_no_references == 0

    rows = result.rows
    assert len(rows) == 3 + 2 + 3
    assert [row["score"] for row in rows] == ["5", "3", "1", "4", "2", "5", "4", "1"]
    assert [row["worker"] for row in rows] == ["W1"] * 3 + ["W2"] * 2 + ["W1"] * 3
    assert {row["source"] for row in rows} == {"8k_correctness.csv"}
    assert rows[0]["image_id"] == "flickr8k/1000268201_693b08cb0e.jpg"
    assert rows[0]["candidate"] == "A little girl climbing into a wooden playhouse."

    # The rated human caption is removed from its image's references, and only that one.
    girl = json.loads(rows[0]["references"])
    assert len(girl) == 4
    assert "A little girl climbing into a wooden playhouse ." not in girl
    assert girl == [text for n, text in enumerate(FLICKR8K_TOKENS["1000268201_693b08cb0e.jpg"]) if n != 2]
    dogs = json.loads(rows[5]["references"])
    assert dogs == FLICKR8K_TOKENS["1001773457_577c3a7d70.jpg"][:4]
    # Every row of an image gets the same references, whichever caption it rates.
    assert all(json.loads(row["references"]) == girl for row in rows[:5])


def test_karpathy_references_and_comma_delimiter(tmp_path):
    rows = [
        {
            "Input.image_url": "https://example.invalid/f30k/1000092795.jpg?size=large",
            "Input.text1": "Two young guys with shaggy hair look at their hands while hanging out in the yard .",
            "Input.text2": "Two men in a yard .",
            "Input.text3": "A woman rides a horse .",
            "Input.text4": "Two friends, outside, talking",
            "Answer.Q1": "5", "Answer.Q2": "4.5", "Answer.Q3": "1", "Answer.Q4": "3",
        }
    ]  # fmt: skip
    amt = write_amt(tmp_path / "30k_correctness.csv", rows, captions=4, delimiter=",")
    karpathy = {
        "images": [
            {
                "filename": "1000092795.jpg",
                "sentences": [
                    {"raw": "Two young guys with shaggy hair look at their hands while hanging out in the yard."},
                    {"raw": "Two young, White males are outside near many bushes."},
                    {"raw": "Two men in green shirts are standing in a yard."},
                    {"raw": "A man in a blue shirt standing in a garden."},
                    {"raw": "Two friends enjoy time spent together."},
                ],
            }
        ]
    }
    references = tmp_path / "dataset_flickr30k.json"
    references.write_text(json.dumps(karpathy), encoding="utf-8")

    result = composite_amt.convert(amt, references)
    assert [row["score"] for row in result.rows] == ["5", "4.5", "1", "3"]
    assert result.rows[0]["image_id"] == "1000092795.jpg"
    assert result.rows[3]["candidate"] == "Two friends, outside, talking"
    assert json.loads(result.rows[0]["references"]) == [s["raw"] for s in karpathy["images"][0]["sentences"][1:]]


def test_coco_references_by_file_name(tmp_path):
    rows = [
        {
            "Input.image_url": "http://example.invalid/val2014/COCO_val2014_000000000042.jpg",
            "Input.text1": "a bus parked by the curb",
            "Input.text2": "A red bus on a city street.",
            "Input.text3": "a plate of food",
            "Input.text4": "a bus",
            "Answer.Q1": "4", "Answer.Q2": "5", "Answer.Q3": "1", "Answer.Q4": "3",
        }
    ]  # fmt: skip
    amt = write_amt(tmp_path / "coco_correctness.csv", rows, captions=4)
    coco = {
        "images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"}, {"id": 7, "file_name": "COCO_val2014_000000000007.jpg"}],
        "annotations": [
            {"id": 3, "image_id": 42, "caption": "A red  bus on a city street. "},
            {"id": 1, "image_id": 42, "caption": "A double decker bus."},
            {"id": 2, "image_id": 42, "caption": "A bus waits at a stop."},
            {"id": 4, "image_id": 7, "caption": "A cat on a bed."},
        ],
    }
    references = tmp_path / "captions_val2014.json"
    references.write_text(json.dumps(coco), encoding="utf-8")

    result = composite_amt.convert(amt, references, image_folder="val2014/")
    assert result.rows[0]["image_id"] == "val2014/COCO_val2014_000000000042.jpg"
    # In annotation id order, without the rated caption.
    assert json.loads(result.rows[0]["references"]) == ["A double decker bus.", "A bus waits at a stop."]


def test_named_columns_override_detection(tmp_path):
    amt = tmp_path / "ratings.tsv"
    amt.write_text(
        "picture\tfirst\tsecond\tscore_a\tscore_b\n"
        "1001773457_577c3a7d70.jpg\tTwo dogs play in the street .\tA cat sleeps .\t4\t1\n",
        encoding="utf-8",
    )
    tokens = write_tokens(tmp_path / "Flickr8k.token.txt")
    with pytest.raises(LayoutError, match="--image-column"):
        composite_amt.convert(amt, tokens)

    result = composite_amt.convert(
        amt, tokens, image_column="picture", caption_columns=["first", "second"], score_columns=["score_a", "score_b"]
    )
    assert [(row["candidate"], row["score"]) for row in result.rows] == [("Two dogs play in the street .", "4"), ("A cat sleeps .", "1")]
    assert len(json.loads(result.rows[0]["references"])) == 5


def test_image_missing_from_the_references_is_counted(tmp_path):
    rows = flickr8k_rows()
    rows[2]["Input.image_url"] = "http://example.invalid/flickr8k/999_missing.jpg"
    amt = write_amt(tmp_path / "8k_correctness.csv", rows, captions=3)
    result = composite_amt.convert(amt, write_tokens(tmp_path / "Flickr8k.token.txt"))
    assert len(result.rows) == 5
    assert result.skipped_no_references == 3
    assert result.images_without_references == ("999_missing.jpg",)


# ------------------------------------------------------------------ errors


def test_unpaired_caption_and_score_columns(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    text = amt.read_text(encoding="utf-8").replace("Answer.Q3", "Answer.remark")
    text = text.replace(";1;fine, thanks;", ";not sure;fine, thanks;")
    amt.write_text(text, encoding="utf-8")
    with pytest.raises(LayoutError, match=r"3 caption column\(s\).*2 score column\(s\).*--score-columns"):
        composite_amt.convert(amt, write_tokens(tmp_path / "Flickr8k.token.txt"))


def test_non_numeric_score_names_row_and_column(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    header, records = composite_amt.read_amt(amt)
    columns = composite_amt.find_columns(amt, header, records)
    records[1]["Answer.Q2"] = "two"
    with pytest.raises(LayoutError, match=r"row 3 column 'Answer.Q2' is 'two'; expected a number"):
        composite_amt.ratings_from_amt(amt, records, columns)


def test_wrong_cell_count_suggests_delimiter(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    # An unquoted semicolon inside a caption adds one cell to row 5.
    lines = amt.read_text(encoding="utf-8").splitlines()
    lines.append(lines[-1].replace("A cat sleeps on a sofa .", "A cat sleeps; on a sofa ."))
    amt.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(LayoutError, match=r"row 5 has 38 cells and the header 37.*';'.*--delimiter"):
        composite_amt.read_amt(amt)


def test_latin1_file_needs_the_encoding_option(tmp_path):
    rows = flickr8k_rows()
    rows[0]["Input.text2"] = "A girl in a pink dress near a café ."
    amt = write_amt(tmp_path / "8k_correctness.csv", rows, captions=3, encoding="latin-1")
    tokens = write_tokens(tmp_path / "Flickr8k.token.txt")
    with pytest.raises(LayoutError, match="--encoding latin-1"):
        composite_amt.convert(amt, tokens)
    result = composite_amt.convert(amt, tokens, encoding="latin-1")
    assert result.rows[1]["candidate"] == "A girl in a pink dress near a café ."


def test_unknown_references_layout(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    references = tmp_path / "refs.json"
    references.write_text(json.dumps({"captions": {"a.jpg": ["x"]}}), encoding="utf-8")
    with pytest.raises(LayoutError, match="Karpathy split JSON"):
        composite_amt.convert(amt, references)


def test_header_only_file(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", [], captions=3)
    with pytest.raises(LayoutError, match="no rows"):
        composite_amt.read_amt(amt)


def test_tab_delimiter_by_name(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.tsv", flickr8k_rows(), captions=3, delimiter="\t")
    tokens = write_tokens(tmp_path / "Flickr8k.token.txt")
    for spelling in ("\t", "tab", "\\t"):
        result = composite_amt.convert(amt, tokens, delimiter=spelling)
        assert len(result.rows) == 8, spelling


def test_multi_character_delimiter_rejected(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    with pytest.raises(LayoutError, match=r"'::' is not one character.*'tab'"):
        composite_amt.read_amt(amt, delimiter="::")


def test_wrong_delimiter_gives_one_column(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    with pytest.raises(LayoutError, match=r"splits into one column at '\|'.*--delimiter"):
        composite_amt.read_amt(amt, delimiter="|")


def test_unknown_encoding_rejected(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    with pytest.raises(LayoutError, match=r"unknown text encoding 'latin-9x'"):
        composite_amt.read_amt(amt, encoding="latin-9x")


def test_latin1_references_file_rejected(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    tokens = tmp_path / "Flickr8k.token.txt"
    tokens.write_bytes("1000268201_693b08cb0e.jpg#0\tA girl near a caf\xe9 .\n".encode("latin-1"))
    with pytest.raises(LayoutError, match=r"Flickr8k.token.txt: is not valid UTF-8.*convert"):
        composite_amt.convert(amt, tokens)


def test_token_file_with_byte_order_mark(tmp_path):
    tokens = write_tokens(tmp_path / "Flickr8k.token.txt")
    tokens.write_bytes(b"\xef\xbb\xbf" + tokens.read_bytes())
    references = composite_amt.read_references(tokens)
    assert references["1000268201_693b08cb0e.jpg"] == FLICKR8K_TOKENS["1000268201_693b08cb0e.jpg"]


@pytest.mark.parametrize(
    ("content", "found"),
    [("[1, 2]", "a JSON list"), ("image,caption\na.jpg,a dog\n", "found 1 fields")],
)
def test_references_layout_errors_list_layouts(tmp_path, content, found):
    references = tmp_path / "refs.txt"
    references.write_text(content, encoding="utf-8")
    with pytest.raises(LayoutError) as raised:
        composite_amt.read_references(references)
    message = str(raised.value)
    assert found in message
    assert "Flickr token file" in message
    assert "Karpathy split JSON" in message
    assert "COCO captions JSON" in message


def test_wrong_references_file_fails(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    other = tmp_path / "results_20130124.token"
    other.write_text("1000092795.jpg#0\tTwo young guys .\n", encoding="utf-8")
    with pytest.raises(LayoutError, match=r"none of its 8 ratings has references: 2 of its images.*same position"):
        composite_amt.convert(amt, other)


def test_images_without_rated_reference_listed(tmp_path):
    rows = flickr8k_rows()
    for row in rows[:2]:
        row["Input.text1"] = "A small girl walks into a wooden playhouse ."
    amt = write_amt(tmp_path / "8k_correctness.csv", rows, captions=3)
    result = composite_amt.convert(amt, write_tokens(tmp_path / "Flickr8k.token.txt"))
    assert result.images_without_rated_reference == ("1000268201_693b08cb0e.jpg",)
    assert len(json.loads(result.rows[0]["references"])) == 5


def test_stray_text_score_named_in_error(tmp_path):
    rows = flickr8k_rows()
    rows[1]["Answer.Q3"] = "n/a"
    amt = write_amt(tmp_path / "8k_correctness.csv", rows, captions=3)
    with pytest.raises(LayoutError) as raised:
        composite_amt.convert(amt, write_tokens(tmp_path / "Flickr8k.token.txt"))
    message = str(raised.value)
    assert "'Answer.Q3' (row 3 is 'n/a')" in message
    assert "'Answer.comments' (row 2 is 'fine, thanks')" in message


# ------------------------------------------------------------------ command line and run.py


def run_script(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, **kwargs)


def test_command_line_unequal_repeats(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    completed = run_script([str(SCRIPT), "--amt", str(amt), "--amt", str(amt), "--references", "x", "--out", str(tmp_path / "o.csv")])
    assert completed.returncode == 2
    assert "2 --amt, 1 --references" in completed.stderr


def test_command_line_layout_error_exits_2(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    completed = run_script([str(SCRIPT), "--amt", str(amt), "--references", str(amt), "--out", str(tmp_path / "o.csv")])
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ")
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "o.csv").exists()


def test_command_line_output_is_a_folder(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    tokens = write_tokens(tmp_path / "Flickr8k.token.txt")
    out = tmp_path / "results"
    out.mkdir()
    completed = run_script([str(SCRIPT), "--amt", str(amt), "--references", str(tokens), "--out", str(out)])
    assert completed.returncode == 2
    assert completed.stderr.splitlines()[-1].startswith("error: ")
    assert "results" in completed.stderr
    assert "Traceback" not in completed.stderr
    # The failed write leaves no temporary file behind.
    assert list(out.iterdir()) == []
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


def test_command_line_creates_output_folder(tmp_path):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    tokens = write_tokens(tmp_path / "Flickr8k.token.txt")
    out = tmp_path / "new-folder" / "composite.csv"
    completed = run_script([str(SCRIPT), "--amt", str(amt), "--references", str(tokens), "--out", str(out)])
    assert completed.returncode == 0, completed.stderr
    assert len(read_flat(out)) == 8


def test_command_line_columns_per_file(tmp_path):
    tokens = write_tokens(tmp_path / "Flickr8k.token.txt")
    first = tmp_path / "first.csv"
    first.write_text("pic;cap;mark\n1001773457_577c3a7d70.jpg;Two dogs play .;4\n", encoding="utf-8")
    second = tmp_path / "second.csv"
    second.write_text(
        "photo;c1;c2;s1;s2\n1000268201_693b08cb0e.jpg;A girl climbs .;A dog runs .;5;1\n", encoding="utf-8"
    )
    out = tmp_path / "composite.csv"
    command = [str(SCRIPT), "--amt", str(first), "--references", str(tokens), "--amt", str(second), "--references", str(tokens),
               "--image-column", "pic", "--image-column", "photo", "--caption-columns", "cap", "--caption-columns", "c1,c2",
               "--score-columns", "mark", "--score-columns", "s1,s2", "--out", str(out)]  # fmt: skip
    completed = run_script(command)
    assert completed.returncode == 0, completed.stderr
    rows = read_flat(out)
    assert [(row["candidate"], row["score"]) for row in rows] == [("Two dogs play .", "4"), ("A girl climbs .", "5"), ("A dog runs .", "1")]

    wrong_count = command[:-2] + ["--image-column", "pic", "--out", str(out)]
    completed = run_script(wrong_count)
    assert completed.returncode == 2
    assert "2 --amt, 3 --image-column" in completed.stderr


def test_command_line_output_feeds_loader_and_run(tmp_path, tiny_clip, example_images):
    amt = write_amt(tmp_path / "8k_correctness.csv", flickr8k_rows(), captions=3)
    tokens = write_tokens(tmp_path / "Flickr8k.token.txt")
    out = tmp_path / "composite.csv"
    completed = run_script(
        [str(SCRIPT), "--amt", str(amt), "--references", str(tokens), "--image-folder", "flickr8k", "--out", str(out)]
    )
    assert completed.returncode == 0, completed.stderr
    assert "8 ratings" in completed.stderr
    assert "1 empty score cells left out" in completed.stderr
    assert list(read_flat(out)[0]) == list(composite_amt.FLAT_COLUMNS)

    # Real photos stand in for the two Flickr8k images.
    images = tmp_path / "images" / "flickr8k"
    images.mkdir(parents=True)
    jpegs = [path for path in example_images if path.suffix.lower() in (".jpg", ".jpeg")]
    for name, source in zip(FLICKR8K_TOKENS, jpegs):
        shutil.copy(source, images / name)

    dataset = loaders.load_composite_csv(out, tmp_path / "images")
    assert len(dataset.rows) == 8
    assert dataset.dropped_overlap == 0
    assert all(Path(row.image).is_file() for row in dataset.rows)

    report_path = tmp_path / "composite.json"
    completed = run_script(
        [str(RUN), "composite", "--csv", str(out), "--image-root", str(tmp_path / "images"), "--model", str(tiny_clip),
         "--stats", "corpus", "--device", "cpu", "--out", str(report_path)]
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report["dataset"] == "composite"
    assert report["rows"] == 8
    assert report["dropped_candidate_in_references"] == 0
    assert set(report["results"]) >= {"clip_s", "ref_clip_s"}
