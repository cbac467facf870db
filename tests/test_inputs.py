"""Tests of i0tscore.inputs on the real example files and on malformed files written in tmp_path."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from i0tscore.inputs import (
    InputFormatError,
    Item,
    Pair,
    read_candidates,
    read_corpus,
    read_references,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMAGES = EXAMPLES / "images"
STEMS = ["astronaut", "coffee", "rocket", "cat", "camera", "hubble", "retina", "brick"]


def load_json(path: Path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_png(path: Path) -> Path:
    Image.new("RGB", (2, 2), (10, 20, 30)).save(path)
    return path


# ---------------------------------------------------------------------- example candidates


def test_clipscore_examples_items():
    captions = load_json(EXAMPLES / "captions.json")

    items = read_candidates(EXAMPLES / "captions.json", images=IMAGES)

    assert len(items) == 8
    assert [item.id for item in items] == list(captions)
    assert all(isinstance(item, Item) for item in items)
    assert {item.id: item.caption for item in items} == captions
    assert all(item.image.is_file() for item in items)
    assert all(item.image.stem == item.id for item in items)
    assert all(item.references is None for item in items)


def test_clipscore_upper_case_suffix():
    items = read_candidates(EXAMPLES / "captions.json", images=IMAGES)

    coffee = next(item for item in items if item.id == "coffee")

    assert coffee.image == IMAGES / "coffee.JPG"


def test_clipscore_needs_images():
    with pytest.raises(InputFormatError, match="--images"):
        read_candidates(EXAMPLES / "captions.json")


def test_coco_results_with_annotations():
    results = load_json(EXAMPLES / "coco_results.json")
    annotations = load_json(EXAMPLES / "coco_annotations.json")
    file_names = {str(image["id"]): image["file_name"] for image in annotations["images"]}

    items = read_candidates(
        EXAMPLES / "coco_results.json", images=IMAGES, annotations=EXAMPLES / "coco_annotations.json"
    )

    assert len(items) == 8
    assert [item.id for item in items] == [str(entry["image_id"]) for entry in results]
    assert [item.caption for item in items] == [entry["caption"] for entry in results]
    assert all(item.image == IMAGES / file_names[item.id] for item in items)
    assert all(item.image.is_file() for item in items)


def test_coco_results_annotations_folder_default(tmp_path):
    # Without images=, file names are taken relative to the annotations file's folder.
    write_png(tmp_path / "a.png")
    annotations = write_json(tmp_path / "annotations.json", {"images": [{"id": 5, "file_name": "a.png"}]})
    results = write_json(tmp_path / "results.json", [{"image_id": 5, "caption": "A square."}])

    items = read_candidates(results, annotations=annotations)

    assert items[0].image == tmp_path / "a.png"


def test_jsonl_examples_items():
    lines = [json.loads(line) for line in (EXAMPLES / "candidates.jsonl").read_text(encoding="utf-8").splitlines()]

    items = read_candidates(EXAMPLES / "candidates.jsonl")

    assert len(items) == 16
    assert [item.id for item in items] == [str(n) for n in range(1, 17)]
    assert [item.caption for item in items] == [line["caption"] for line in lines]
    assert [item.references for item in items] == [line["references"] for line in lines]
    assert [item.image for item in items] == [EXAMPLES / line["image"] for line in lines]
    assert all(item.image.is_file() for item in items)


def test_jsonl_images_folder_overrides(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"image": "cat.png", "caption": "A cat."})])

    items = read_candidates(path, images=IMAGES)

    assert items[0].image == IMAGES / "cat.png"


def test_jsonl_absolute_path_kept(tmp_path):
    image = IMAGES / "cat.png"
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"id": "x", "image": str(image), "caption": "A cat."})])

    items = read_candidates(path)

    assert items[0].id == "x"
    assert items[0].image == image


def test_references_attached_by_id():
    references = load_json(EXAMPLES / "references.json")

    items = read_candidates(EXAMPLES / "captions.json", images=IMAGES, references=EXAMPLES / "references.json")

    assert all(item.references == references[item.id] for item in items)
    assert all(len(item.references) == 3 for item in items)


def test_references_by_image_stem():
    # COCO results ids are numbers, so references keyed by name match the image stem.
    references = load_json(EXAMPLES / "references.json")

    items = read_candidates(
        EXAMPLES / "coco_results.json",
        images=IMAGES,
        annotations=EXAMPLES / "coco_annotations.json",
        references=EXAMPLES / "references.json",
    )

    assert all(item.references == references[item.image.stem] for item in items)


def test_references_replace_jsonl_ones(tmp_path):
    refs = write_json(tmp_path / "refs.json", {stem: [f"Other {stem}."] for stem in STEMS})

    items = read_candidates(EXAMPLES / "candidates.jsonl", references=refs)

    assert all(item.references == [f"Other {item.image.stem}."] for item in items)


def test_references_coco_annotations():
    annotations = load_json(EXAMPLES / "coco_annotations.json")

    references = read_references(EXAMPLES / "coco_annotations.json")

    assert sorted(references) == [str(n) for n in range(1, 9)]
    assert all(len(captions) == 3 for captions in references.values())
    assert references["1"][0] == annotations["annotations"][0]["caption"]


def test_references_missing_id(tmp_path):
    refs = write_json(tmp_path / "refs.json", {"cat": ["A cat."]})

    with pytest.raises(InputFormatError) as raised:
        read_candidates(EXAMPLES / "captions.json", images=IMAGES, references=refs)

    assert str(refs) in str(raised.value)
    assert "'astronaut'" in str(raised.value)


# ---------------------------------------------------------------------- COCO ids in a folder


@pytest.fixture
def coco_folder(tmp_path) -> Path:
    folder = tmp_path / "val2014"
    folder.mkdir()
    write_png(folder / "COCO_val2014_000000000042.jpg")
    write_png(folder / "000000000007.png")
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    return folder


def test_coco_folder_prefixed_name(tmp_path, coco_folder):
    results = write_json(tmp_path / "results.json", [{"image_id": 42, "caption": "A square."}])

    items = read_candidates(results, images=coco_folder)

    assert items[0].id == "42"
    assert items[0].image == coco_folder / "COCO_val2014_000000000042.jpg"


def test_coco_folder_padded_name(tmp_path, coco_folder):
    results = write_json(tmp_path / "results.json", [{"image_id": 7, "caption": "A square."}])

    items = read_candidates(results, images=coco_folder)

    assert items[0].image == coco_folder / "000000000007.png"


def test_coco_folder_string_id(tmp_path, coco_folder):
    results = write_json(tmp_path / "results.json", [{"image_id": "42", "caption": "A square."}])

    items = read_candidates(results, images=coco_folder)

    assert items[0].image == coco_folder / "COCO_val2014_000000000042.jpg"


def test_coco_repeated_ids_numbered(tmp_path, coco_folder):
    results = write_json(
        tmp_path / "results.json",
        [
            {"image_id": 42, "caption": "One."},
            {"image_id": 7, "caption": "Two."},
            {"image_id": 42, "caption": "Three."},
        ],
    )

    items = read_candidates(results, images=coco_folder)

    assert [item.id for item in items] == ["42#1", "7", "42#2"]
    assert items[2].image == coco_folder / "COCO_val2014_000000000042.jpg"


def test_coco_folder_missing_id(tmp_path, coco_folder):
    results = write_json(tmp_path / "results.json", [{"image_id": 7, "caption": "A."}, {"image_id": 8, "caption": "B."}])

    with pytest.raises(InputFormatError) as raised:
        read_candidates(results, images=coco_folder)

    message = str(raised.value)
    assert str(results) in message
    assert "item 1" in message
    assert "8" in message
    assert str(coco_folder) in message


def test_coco_bool_id_rejected(tmp_path, coco_folder):
    # JSON true is a Python bool, which is also an int.
    results = write_json(tmp_path / "results.json", [{"image_id": True, "caption": "A square."}])

    with pytest.raises(InputFormatError, match=re.escape(str(results))):
        read_candidates(results, images=coco_folder)


def test_clipscore_superscript_key(tmp_path, coco_folder):
    # "²".isdigit() is True but int("²") fails.
    path = write_json(tmp_path / "captions.json", {"²": "A square."})

    with pytest.raises(InputFormatError, match=re.escape(str(path))):
        read_candidates(path, images=coco_folder)


# ---------------------------------------------------------------------- malformed candidates


def test_error_clipscore_list_of_strings(tmp_path):
    path = write_json(tmp_path / "captions.json", ["A cat.", "A dog."])

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path, images=IMAGES)

    message = str(raised.value)
    assert str(path) in message
    assert "item 0" in message
    assert "str" in message


def test_error_coco_missing_caption(tmp_path):
    path = write_json(tmp_path / "results.json", [{"image_id": 1, "caption": "A."}, {"image_id": 2}])

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path, images=IMAGES, annotations=EXAMPLES / "coco_annotations.json")

    message = str(raised.value)
    assert str(path) in message
    assert "item 1" in message
    assert "'caption'" in message


def test_error_coco_unknown_annotation_id(tmp_path):
    path = write_json(tmp_path / "results.json", [{"image_id": 99, "caption": "A."}])

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path, images=IMAGES, annotations=EXAMPLES / "coco_annotations.json")

    assert "99" in str(raised.value)
    assert "item 0" in str(raised.value)


def test_error_coco_needs_images(tmp_path):
    path = write_json(tmp_path / "results.json", [{"image_id": 1, "caption": "A."}])

    with pytest.raises(InputFormatError, match="--images"):
        read_candidates(path)


def test_error_jsonl_bad_line(tmp_path):
    good = json.dumps({"image": "cat.png", "caption": "A cat."})
    path = write_lines(tmp_path / "c.jsonl", [good, good, '{"image": "cat.png", "caption": ', good])

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path, images=IMAGES)

    assert str(path) in str(raised.value)
    assert "line 3" in str(raised.value)


def test_error_jsonl_blank_lines_counted(tmp_path):
    good = json.dumps({"image": "cat.png", "caption": "A cat."})
    path = write_lines(tmp_path / "c.jsonl", [good, "", "   ", "[1, 2]"])

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path, images=IMAGES)

    assert "line 4" in str(raised.value)
    assert "list" in str(raised.value)


def test_error_jsonl_missing_image(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"image": "cat.png", "caption": "A."}), json.dumps({"caption": "B."})])

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path)

    message = str(raised.value)
    assert str(path) in message
    assert "line 2" in message
    assert "'image'" in message


def test_error_jsonl_caption_number(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"image": "cat.png", "caption": 3.5})])

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path)

    assert "line 1" in str(raised.value)
    assert "caption" in str(raised.value)
    assert "float" in str(raised.value)


def test_error_jsonl_references_string(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"image": "cat.png", "caption": "A.", "references": "B."})])

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path)

    assert "line 1" in str(raised.value)
    assert "references" in str(raised.value)


def test_error_clipscore_caption_number(tmp_path):
    path = write_json(tmp_path / "captions.json", {"cat": 42})

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path, images=IMAGES)

    message = str(raised.value)
    assert str(path) in message
    assert "'cat'" in message
    assert "int" in message


def test_error_references_list(tmp_path):
    refs = write_json(tmp_path / "refs.json", ["A cat.", "A dog."])

    with pytest.raises(InputFormatError) as raised:
        read_candidates(EXAMPLES / "captions.json", images=IMAGES, references=refs)

    assert str(refs) in str(raised.value)
    assert "list" in str(raised.value)


def test_error_references_not_list(tmp_path):
    refs = write_json(tmp_path / "refs.json", {"cat": "A cat."})

    with pytest.raises(InputFormatError) as raised:
        read_references(refs)

    assert str(refs) in str(raised.value)
    assert "'cat'" in str(raised.value)


def test_error_id_without_image(tmp_path):
    path = write_json(tmp_path / "captions.json", {"cat": "A cat.", "dog": "A dog."})

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path, images=IMAGES)

    message = str(raised.value)
    assert str(path) in message
    assert "'dog'" in message
    assert str(IMAGES) in message


def test_error_empty_object(tmp_path):
    path = write_json(tmp_path / "captions.json", {})

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path, images=IMAGES)

    assert str(path) in str(raised.value)
    assert "no candidates" in str(raised.value)


def test_error_empty_jsonl(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n\n", encoding="utf-8")

    with pytest.raises(InputFormatError, match="no candidates"):
        read_candidates(path)


def test_error_invalid_json_syntax(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text('{\n  "cat": "A cat.",\n  "dog" "A dog."\n}\n', encoding="utf-8")

    with pytest.raises(InputFormatError) as raised:
        read_candidates(path, images=IMAGES)

    message = str(raised.value)
    assert str(path) in message
    assert "line 3" in message
    assert "column 9" in message


def test_error_json_scalar(tmp_path):
    path = write_json(tmp_path / "captions.json", "A cat.")

    with pytest.raises(InputFormatError, match=re.escape(str(path))):
        read_candidates(path, images=IMAGES)


def test_error_annotations_as_candidates():
    with pytest.raises(InputFormatError, match="--annotations"):
        read_candidates(EXAMPLES / "coco_annotations.json", images=IMAGES)


def test_error_json_not_utf8(tmp_path):
    path = tmp_path / "captions.json"
    path.write_bytes('{"cat": "café"}'.encode("latin-1"))

    with pytest.raises(InputFormatError, match=re.escape(str(path))):
        read_candidates(path, images=IMAGES)


def test_error_jsonl_not_utf8(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes('{"image": "cat.png", "caption": "café"}\n'.encode("latin-1"))

    with pytest.raises(InputFormatError, match=re.escape(str(path))):
        read_candidates(path)


def test_error_json_huge_integer(tmp_path):
    # Python 3.11 rejects int conversion of more than 4300 digits with ValueError,
    # and json calls int() on each number.
    path = tmp_path / "captions.json"
    path.write_text('{"cat": ' + "9" * 5000 + "}", encoding="utf-8")

    with pytest.raises(InputFormatError, match=re.escape(str(path))):
        read_candidates(path, images=IMAGES)


@pytest.mark.parametrize("name", ["missing.json", "missing.jsonl"])
def test_error_missing_candidates(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / name))):
        read_candidates(tmp_path / name, images=IMAGES)


def test_error_missing_references(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "refs.json"))):
        read_candidates(EXAMPLES / "captions.json", images=IMAGES, references=tmp_path / "refs.json")


def test_error_missing_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        read_candidates(EXAMPLES / "captions.json", images=tmp_path / "nowhere")


# ---------------------------------------------------------------------- corpora

TRICKY_CAPTIONS = [
    'A "quoted" word, and a comma.',
    "café crème on a table",
    "東京の夜景",
    "Line one\nline two",
]


def test_corpus_coco_annotations():
    annotations = load_json(EXAMPLES / "coco_annotations.json")

    pairs = read_corpus(EXAMPLES / "coco_annotations.json", images=IMAGES)

    assert len(pairs) == 24
    assert all(isinstance(pair, Pair) for pair in pairs)
    assert len({pair.image for pair in pairs}) == 8
    assert all(pair.image.is_file() for pair in pairs)
    assert sorted(pair.caption for pair in pairs) == sorted(a["caption"] for a in annotations["annotations"])


def test_corpus_coco_default_folder():
    pairs = read_corpus(EXAMPLES / "coco_annotations.json")

    assert pairs[0].image == EXAMPLES / "astronaut.jpg"


def test_corpus_coco_missing_image_entry(tmp_path):
    path = write_json(
        tmp_path / "corpus.json",
        {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 2, "caption": "A."}]},
    )

    with pytest.raises(InputFormatError) as raised:
        read_corpus(path)

    assert str(path) in str(raised.value)
    assert "image_id 2" in str(raised.value)


def test_corpus_jsonl(tmp_path):
    lines = [json.dumps({"image": f"img{n}.png", "caption": caption}, ensure_ascii=False) for n, caption in enumerate(TRICKY_CAPTIONS)]
    path = write_lines(tmp_path / "corpus.jsonl", lines)

    pairs = read_corpus(path)

    assert [pair.caption for pair in pairs] == TRICKY_CAPTIONS
    assert [pair.image for pair in pairs] == [tmp_path / f"img{n}.png" for n in range(len(TRICKY_CAPTIONS))]


def test_corpus_jsonl_images_folder(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [json.dumps({"image": "cat.png", "caption": "A cat."})])

    pairs = read_corpus(path, images=IMAGES)

    assert pairs == [Pair(IMAGES / "cat.png", "A cat.")]


def test_corpus_jsonl_missing_caption(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [json.dumps({"image": "a.png", "caption": "A."}), json.dumps({"image": "b.png"})])

    with pytest.raises(InputFormatError) as raised:
        read_corpus(path)

    assert "line 2" in str(raised.value)
    assert "'caption'" in str(raised.value)


def write_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with open(path, "w", encoding=encoding, newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_corpus_csv(tmp_path):
    absolute = str(IMAGES / "cat.png")
    rows = [["image", "caption", "source"]]
    rows += [[f"img{n}.png", caption, "test"] for n, caption in enumerate(TRICKY_CAPTIONS)]
    rows.append([absolute, "A cat.", "test"])
    path = write_csv(tmp_path / "corpus.csv", rows)

    pairs = read_corpus(path)

    assert [pair.caption for pair in pairs] == TRICKY_CAPTIONS + ["A cat."]
    assert pairs[0].image == tmp_path / "img0.png"
    assert pairs[-1].image == Path(absolute)


def test_corpus_csv_images_folder(tmp_path):
    path = write_csv(tmp_path / "corpus.csv", [["caption", "image"], ["A cat.", "cat.png"]])

    pairs = read_corpus(path, images=IMAGES)

    assert pairs == [Pair(IMAGES / "cat.png", "A cat.")]


def test_corpus_csv_excel_bom(tmp_path):
    # Spreadsheet programs save "CSV UTF-8" with a byte order mark.
    path = write_csv(tmp_path / "corpus.csv", [["image", "caption"], ["a.png", "café crème"]], encoding="utf-8-sig")

    pairs = read_corpus(path)

    assert pairs == [Pair(tmp_path / "a.png", "café crème")]


def test_error_csv_missing_column(tmp_path):
    path = write_csv(tmp_path / "corpus.csv", [["image", "text"], ["a.png", "A."]])

    with pytest.raises(InputFormatError) as raised:
        read_corpus(path)

    message = str(raised.value)
    assert str(path) in message
    assert "caption" in message
    assert "'text'" in message


def test_error_csv_empty_image(tmp_path):
    path = write_csv(tmp_path / "corpus.csv", [["image", "caption"], ["a.png", "A."], ["", "B."]])

    with pytest.raises(InputFormatError) as raised:
        read_corpus(path)

    assert str(path) in str(raised.value)
    assert "line 3" in str(raised.value)


def test_error_csv_line_after_multiline(tmp_path):
    # The quoted caption on record 1 spans file lines 2 and 3, so the bad row is on line 4.
    path = write_csv(tmp_path / "corpus.csv", [["image", "caption"], ["a.png", "Line one\nline two"], ["", "B."]])

    with pytest.raises(InputFormatError) as raised:
        read_corpus(path)

    assert "line 4" in str(raised.value)


def test_error_csv_not_utf8(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_bytes("image,caption\na.png,café\n".encode("latin-1"))

    with pytest.raises(InputFormatError, match=re.escape(str(path))):
        read_corpus(path)


def test_error_corpus_unknown_suffix(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_text("image\tcaption\n", encoding="utf-8")

    with pytest.raises(InputFormatError, match=re.escape("'.tsv'")):
        read_corpus(path)


@pytest.mark.parametrize("name", ["corpus.json", "corpus.jsonl", "corpus.csv"])
def test_error_corpus_missing(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / name))):
        read_corpus(tmp_path / name)


# ---------------------------------------------------------------------- fuzzing

KEYS = ["image_id", "caption", "image", "references", "annotations", "images", "id", "file_name", "cat", "42", "7"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(KEYS)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)
# Values shaped like each supported file, with arbitrary values at the leaves,
# so the fuzzer reaches past the first type check of each parser.
COCO_RESULTS = st.lists(st.fixed_dictionaries({"image_id": SCALARS}, optional={"caption": SCALARS}), max_size=4)
CLIPSCORE = st.dictionaries(st.text(max_size=8) | st.sampled_from(KEYS), SCALARS | st.lists(SCALARS, max_size=2), max_size=4)
COCO_ANNOTATIONS = st.fixed_dictionaries(
    {},
    optional={
        "images": st.lists(st.fixed_dictionaries({"id": SCALARS}, optional={"file_name": SCALARS}), max_size=3),
        "annotations": st.lists(st.fixed_dictionaries({"image_id": SCALARS}, optional={"caption": SCALARS}), max_size=3),
    },
)
FUZZ_DOCUMENTS = JSON_VALUES | COCO_RESULTS | CLIPSCORE | COCO_ANNOTATIONS
ACCEPTED = (InputFormatError, FileNotFoundError)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def call_parser(parser, *args, **kwargs):
    """Run a parser, accepting a result or one of the documented exceptions."""
    try:
        return parser(*args, **kwargs)
    except ACCEPTED:
        return None


@FUZZ
@given(value=FUZZ_DOCUMENTS)
def test_fuzz_json_parsers(tmp_path, coco_folder, value):
    path = write_json(tmp_path / "fuzz.json", value)

    call_parser(read_candidates, path, images=coco_folder)
    call_parser(read_candidates, path, annotations=path)
    call_parser(read_candidates, EXAMPLES / "coco_results.json", annotations=path)
    call_parser(read_candidates, EXAMPLES / "captions.json", images=IMAGES, references=path)
    call_parser(read_references, path)
    call_parser(read_corpus, path)


JSONL_LINES = st.lists(
    st.text(max_size=30) | JSON_VALUES.map(json.dumps) | st.dictionaries(st.sampled_from(KEYS), SCALARS).map(json.dumps),
    max_size=6,
)


@FUZZ
@given(lines=JSONL_LINES)
def test_fuzz_jsonl_parsers(tmp_path, lines):
    path = write_lines(tmp_path / "fuzz.jsonl", lines)

    call_parser(read_candidates, path)
    call_parser(read_corpus, path)


CSV_LINES = st.lists(
    st.text(max_size=30) | st.sampled_from(["image,caption", "caption,image", 'a.png,"x, y"', ",", '"', "a.png"]),
    max_size=6,
)


@FUZZ
@given(lines=CSV_LINES)
def test_fuzz_csv_corpus(tmp_path, lines):
    path = write_lines(tmp_path / "fuzz.csv", lines)

    pairs = call_parser(read_corpus, path)

    if pairs is not None:
        assert all(isinstance(pair.caption, str) for pair in pairs)
