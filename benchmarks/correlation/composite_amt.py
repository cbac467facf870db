"""Convert the raw Composite result files to the flat CSV that ``run.py composite`` reads.

Composite (Aditya et al. 2015) ships ``8k_correctness.csv``, ``30k_correctness.csv``
and ``coco_correctness.csv``: Amazon Mechanical Turk batch results, one row per
worker assignment. Each assignment shows one image and 3 (Flickr8k) or 4
(Flickr30k, COCO) captions and requests a correctness score for each. Besides
MTurk's bookkeeping columns (``HITId``, ``WorkerId`` and so on), the HIT's fields
are ``Input.<name>`` columns, the image URL first and then the captions, and the
worker's scores are ``Answer.<name>`` columns, in the same order as the captions.
The delimiter is read from the header line, since public loaders of these files
split them at semicolons.

NOTE: the raw files could not be downloaded where this was written. The layout
above comes from public loaders of the files and from MTurk's batch result
format, and the tests use files written to it. If a real file has other column
names, name the columns with ``--image-column``, ``--caption-columns`` and
``--score-columns``.

The files hold no references, so they come from the source corpus of each file,
looked up by image file name (the last part of the image URL). Three layouts are
read:

* ``Flickr8k.token.txt`` or Flickr30k's ``results_20130124.token``:
  ``<image>#<n>`` TAB caption;
* a Karpathy split file (``dataset_flickr8k.json``, ``dataset_flickr30k.json``,
  ``dataset_coco.json``): ``images[].filename`` and ``images[].sentences[].raw``;
* COCO ``captions_val2014.json``: ``images[].file_name`` and
  ``annotations[].caption``.

A rated caption can be one of the image's source captions. As in the CLIPScore
repository's CrowdFlower file, every rated caption of an image is removed from
that image's references, and every rating is kept. Captions match when they are
equal after lowercasing and dropping punctuation and extra spaces. Each
worker's score is one output row, as each expert score is one Flickr8k-Expert row.

Usage (one ``--amt``, ``--references`` and ``--image-folder`` per raw file, in the
same order):

    python benchmarks/correlation/composite_amt.py \\
        --amt AMT_eval/8k_correctness.csv --references Flickr8k_text/Flickr8k.token.txt --image-folder flickr8k \\
        --amt AMT_eval/30k_correctness.csv --references flickr30k/results_20130124.token --image-folder flickr30k \\
        --amt AMT_eval/coco_correctness.csv --references annotations/captions_val2014.json --image-folder val2014 \\
        --out composite.csv
    python benchmarks/correlation/run.py composite --csv composite.csv --image-root images --stats corpus

The image id written to the flat CSV is ``<image folder>/<file name>``, so
``--image-root`` is the folder that contains the three image folders.

Nothing is unpickled; the files are read as text.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Sequence
from urllib.parse import urlparse

if __package__ in (None, ""):
    # Run as a script: make the `correlation` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from correlation import loaders  # noqa: E402
from correlation.loaders import LayoutError, PathLike, normalize  # noqa: E402
from i0tscore.fileio import atomic_open  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
REFERENCE_LAYOUTS = (
    "Expected a Flickr token file ('<image>#<n>' TAB caption), a Karpathy split JSON "
    "('images' with 'filename' and 'sentences') or a COCO captions JSON ('images' and 'annotations')"
)
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ","}
"""Spellings of --delimiter that a shell passes as more than one character."""
FLAT_COLUMNS = ("image_id", "candidate", "references", "score", "source", "worker")
"""Columns of the flat CSV. ``load_composite_csv`` reads the first four, and the last two record where each row came from."""


@dataclass(frozen=True)
class AmtColumns:
    """Names of the image, caption and score columns of a raw result file, and of the worker id column."""

    image: str
    captions: tuple[str, ...]
    scores: tuple[str, ...]
    worker: Optional[str]


@dataclass(frozen=True)
class Rating:
    """One worker's correctness score for one caption of one image."""

    image_name: str
    caption: str
    score: float
    worker: str


@dataclass
class Conversion:
    """Rows of the flat CSV and what was left out of one raw file.

    Attributes:
        source: the raw file.
        columns: the columns that were read.
        rows: one dict per rating, keyed by ``FLAT_COLUMNS``.
        skipped_blank_scores: ratings left out because the score cell was empty.
        skipped_no_references: ratings left out because the image has no references
            left (it is missing from the references file, or all its captions were rated).
        images_without_references: image names missing from the references file.
        images_without_rated_reference: images none of whose references matches a
            rated caption. Where a file rates a human caption of every image, these
            point to captions edited before rating or to the wrong references file.
    """

    source: str
    columns: AmtColumns
    rows: list[dict[str, str]]
    skipped_blank_scores: int = 0
    skipped_no_references: int = 0
    images_without_references: tuple[str, ...] = ()
    images_without_rated_reference: tuple[str, ...] = ()


def match_key(text: str) -> str:
    """Reduce a caption to the form in which two captions match: lowercase, no punctuation, single spaces."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def image_name(url_or_path: str) -> str:
    """Return the file name at the end of an image URL or path, without a query string."""
    text = url_or_path.strip()
    path = urlparse(text).path if "://" in text else text.replace("\\", "/")
    return PurePosixPath(path).name


# ------------------------------------------------------------------ references


def read_references(path: PathLike) -> dict[str, list[str]]:
    """Read the source captions of each image, keyed by image file name.

    Accepts a Flickr token file, a Karpathy split JSON or a COCO captions JSON
    (see the module docstring).

    Raises:
        LayoutError: the file has none of the three layouts.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise LayoutError(path, f"is not valid UTF-8 ({error}); convert the references file to UTF-8") from None
    if not text.lstrip().startswith(("{", "[")):
        try:
            return dict(loaders._captions_by_image(loaders.read_flickr8k_tokens(path)))
        except LayoutError as error:
            raise LayoutError(path, f"{error.problem}. {REFERENCE_LAYOUTS}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LayoutError(path, f"invalid JSON ({error})") from error
    if isinstance(data, dict) and "annotations" in data:
        return _coco_references(path, data)
    if isinstance(data, dict) and "images" in data:
        return _karpathy_references(path, data)
    found = f"a JSON {type(data).__name__}" + (f" with keys {sorted(data)[:8]}" if isinstance(data, dict) else "")
    raise LayoutError(path, f"found {found}. {REFERENCE_LAYOUTS}")


def _coco_references(path: PathLike, data: dict[str, Any]) -> dict[str, list[str]]:
    names = {}
    for index, image in enumerate(loaders._list(path, data.get("images"), "'images'")):
        entry = loaders._require_keys(path, image, ["id", "file_name"], f"images[{index}]")
        names[entry["id"]] = str(entry["file_name"])
    references = {}
    for image_id, captions in loaders._coco_captions_by_image(path, data).items():
        if image_id not in names:
            raise LayoutError(path, f"an annotation names image id {image_id!r}, which is not in 'images'")
        references[names[image_id]] = captions
    return references


def _karpathy_references(path: PathLike, data: dict[str, Any]) -> dict[str, list[str]]:
    references: dict[str, list[str]] = {}
    for index, image in enumerate(loaders._list(path, data["images"], "'images'")):
        entry = loaders._require_keys(path, image, ["filename", "sentences"], f"images[{index}]")
        sentences = loaders._list(path, entry["sentences"], f"images[{index}].sentences")
        texts = []
        for number, sentence in enumerate(sentences):
            sentence = loaders._require_keys(path, sentence, ["raw"], f"images[{index}].sentences[{number}]")
            texts.append(normalize(sentence["raw"]))
        references[str(entry["filename"])] = texts
    return references


# ------------------------------------------------------------------ raw result files


def read_amt(path: PathLike, *, delimiter: Optional[str] = None, encoding: str = "utf-8-sig") -> tuple[list[str], list[dict[str, str]]]:
    """Read a raw result file: its header and one dict per assignment.

    The delimiter is the most frequent of ``;``, ``,`` and TAB in the header
    line unless given.

    Raises:
        LayoutError: the file cannot be decoded, is empty, or has a row with a
            different number of cells than the header.
    """
    delimiter = DELIMITER_NAMES.get(delimiter.lower(), delimiter) if delimiter is not None else None
    if delimiter is not None and len(delimiter) != 1:
        raise LayoutError(path, f"the delimiter {delimiter!r} is not one character; use one, or 'tab', 'semicolon' or 'comma'")
    try:
        with open(path, newline="", encoding=encoding) as handle:
            lines = handle.read().splitlines(keepends=True)
    except UnicodeDecodeError as error:
        raise LayoutError(path, f"cannot be decoded as {encoding} ({error}); pass --encoding latin-1 if the file is Latin-1") from None
    except LookupError:
        raise LayoutError(path, f"unknown text encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1") from None
    if not lines:
        raise LayoutError(path, "the file is empty")
    if delimiter is None:
        delimiter = max(";,\t", key=lines[0].count)
    reader = csv.reader(lines, delimiter=delimiter)
    header = [name.strip() for name in next(reader)]
    if len(header) == 1:
        raise LayoutError(path, f"the header line splits into one column at {delimiter!r}; set the delimiter with --delimiter")
    records = []
    for number, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise LayoutError(
                path,
                f"row {number} has {len(cells)} cells and the header {len(header)}; check the delimiter "
                f"({delimiter!r} was used, set it with --delimiter)",
            )
        records.append(dict(zip(header, cells)))
    if not records:
        raise LayoutError(path, "the file has a header and no rows")
    return header, records


def find_columns(
    path: PathLike,
    header: Sequence[str],
    records: Sequence[dict[str, str]],
    *,
    image: Optional[str] = None,
    captions: Optional[Sequence[str]] = None,
    scores: Optional[Sequence[str]] = None,
) -> AmtColumns:
    """Pick the image, caption and score columns, from the names given or from the MTurk layout.

    Without names, the image column is the first ``Input.`` column whose cells
    end in an image file name. The captions are the other ``Input.`` columns.
    The scores are the ``Answer.`` columns with at least one number and
    otherwise only empty cells. Captions and scores pair up in header order.

    Raises:
        LayoutError: a named column is missing, a column cannot be found, or
            the numbers of caption and score columns differ.
    """
    for name in [image, *(captions or ()), *(scores or ())]:
        if name is not None and name not in header:
            raise LayoutError(path, f"no column named {name!r}; the header has {list(header)}")
    inputs = [name for name in header if name.startswith("Input.")]
    answers = [name for name in header if name.startswith("Answer.")]
    if image is None:
        image = next((name for name in inputs if all(_looks_like_image(record[name]) for record in records)), None)
        if image is None:
            raise LayoutError(
                path,
                f"no 'Input.' column holds image file names or URLs in every row (Input columns: {inputs}); "
                "name it with --image-column",
            )
    if captions is None:
        captions = [name for name in inputs if name != image]
    if scores is None:
        scores = [name for name in answers if _holds_scores([record[name] for record in records])]
    if not captions or len(captions) != len(scores):
        passed_over = [_why_not_scores(name, records) for name in answers if name not in scores]
        raise LayoutError(
            path,
            f"found {len(captions)} caption column(s) {list(captions)} and {len(scores)} score column(s) "
            f"{list(scores)}; they must pair up in order"
            + (f". Answer columns not taken as scores: {'; '.join(passed_over)}" if passed_over else "")
            + ". Name the columns with --caption-columns and --score-columns",
        )
    worker = "WorkerId" if "WorkerId" in header else None
    return AmtColumns(image, tuple(captions), tuple(scores), worker)


def ratings_from_amt(path: PathLike, records: Sequence[dict[str, str]], columns: AmtColumns) -> tuple[list[Rating], int]:
    """Collect every (image, caption, score) in the file, and count the empty score cells.

    Raises:
        LayoutError: a score cell that is not a number, or an empty caption next to a score.
    """
    ratings = []
    blank = 0
    for number, record in enumerate(records, start=2):
        name = image_name(record[columns.image])
        worker = record[columns.worker].strip() if columns.worker else str(number)
        for caption_column, score_column in zip(columns.captions, columns.scores):
            cell = record[score_column].strip()
            if not cell:
                blank += 1
                continue
            score = loaders._number(path, cell, f"row {number} column {score_column!r}")
            caption = normalize(record[caption_column])
            if not caption:
                raise LayoutError(path, f"row {number}: column {caption_column!r} is empty but {score_column!r} has a score")
            ratings.append(Rating(name, caption, score, worker))
    return ratings, blank


def convert(
    amt: PathLike,
    references_file: PathLike,
    *,
    image_folder: str = "",
    delimiter: Optional[str] = None,
    encoding: str = "utf-8-sig",
    image_column: Optional[str] = None,
    caption_columns: Optional[Sequence[str]] = None,
    score_columns: Optional[Sequence[str]] = None,
) -> Conversion:
    """Convert one raw result file with the references of its source corpus.

    Args:
        amt: the raw result file, e.g. ``8k_correctness.csv``.
        references_file: the source corpus captions (see :func:`read_references`).
        image_folder: written before the image file name in the image id.
        delimiter: the raw file's delimiter; found from the header when None.
        encoding: the raw file's text encoding.
        image_column, caption_columns, score_columns: column names, when the
            file does not follow the MTurk ``Input.``/``Answer.`` naming.

    Raises:
        LayoutError: see :func:`read_amt`, :func:`find_columns`,
            :func:`ratings_from_amt` and :func:`read_references`.
    """
    header, records = read_amt(amt, delimiter=delimiter, encoding=encoding)
    columns = find_columns(amt, header, records, image=image_column, captions=caption_columns, scores=score_columns)
    ratings, blank = ratings_from_amt(amt, records, columns)
    corpus = read_references(references_file)

    rated: dict[str, set[str]] = defaultdict(set)
    for rating in ratings:
        rated[rating.image_name].add(match_key(rating.caption))

    rows = []
    no_references = 0
    missing: set[str] = set()
    no_rated_reference = sorted(
        name for name in rated if name in corpus and not any(match_key(ref) in rated[name] for ref in corpus[name])
    )
    for rating in ratings:
        if rating.image_name not in corpus:
            missing.add(rating.image_name)
        references = [ref for ref in corpus.get(rating.image_name, []) if match_key(ref) not in rated[rating.image_name]]
        if not references:
            no_references += 1
            continue
        image_id = f"{image_folder.rstrip('/')}/{rating.image_name}" if image_folder else rating.image_name
        rows.append(
            {
                "image_id": image_id,
                "candidate": rating.caption,
                "references": json.dumps(references, ensure_ascii=False),
                "score": _format_score(rating.score),
                "source": Path(amt).name,
                "worker": rating.worker,
            }
        )
    if ratings and not rows:
        raise LayoutError(
            amt,
            f"none of its {len(ratings)} ratings has references: {len(missing)} of its images are not in "
            f"{references_file}. Check that each --references file belongs to the --amt file at the same position",
        )
    return Conversion(str(amt), columns, rows, blank, no_references, tuple(sorted(missing)), tuple(no_rated_reference))


def write_flat_csv(path: PathLike, rows: Sequence[dict[str, str]]) -> None:
    """Write the rows with a header, comma-separated, UTF-8, atomically."""
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=FLAT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _looks_like_image(cell: str) -> bool:
    return image_name(cell).lower().endswith(IMAGE_SUFFIXES)


def _holds_scores(cells: Sequence[str]) -> bool:
    """Tell whether a column has at least one number and nothing else but empty cells."""
    filled = [cell for cell in cells if cell.strip()]
    try:
        [float(cell) for cell in filled]
    except ValueError:
        return False
    return bool(filled)


def _why_not_scores(name: str, records: Sequence[dict[str, str]]) -> str:
    for number, record in enumerate(records, start=2):
        cell = record[name].strip()
        if cell and not _holds_scores([cell]):
            return f"{name!r} (row {number} is {cell[:40]!r})"
    return f"{name!r} (empty in every row)"


def _format_score(score: float) -> str:
    return str(int(score)) if float(score).is_integer() else repr(float(score))


def _split_names(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [name.strip() for name in value.split(",") if name.strip()]


def _per_file(parser: argparse.ArgumentParser, values: Optional[list[str]], option: str, count: int) -> list[Optional[str]]:
    """Give each --amt file its value of a repeatable option: none, one for all, or one each."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        parser.error(f"give {option} once for all --amt files or once for each: {count} --amt, {len(values)} {option}")
    return values


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--amt", type=Path, action="append", required=True, help="a raw result file; repeat for each")
    parser.add_argument("--references", type=Path, action="append", required=True, help="the source captions of the --amt file at the same position")
    parser.add_argument("--image-folder", action="append", help="folder of that file's images, written before each image file name")
    parser.add_argument("--out", type=Path, required=True, help="the flat CSV to write")
    parser.add_argument("--delimiter", help="delimiter of the raw files: one character, or tab, semicolon or comma (default: found from the header line)")
    parser.add_argument("--encoding", default="utf-8-sig", help="text encoding of the raw files (default: UTF-8)")
    columns = parser.add_argument_group(
        "column names", "Each option applies to all --amt files when given once, or to the --amt file at the same position when given once per file."
    )
    columns.add_argument("--image-column", action="append", help="column with the image URL or file name")
    columns.add_argument("--caption-columns", action="append", help="comma-separated caption columns, in the order of --score-columns")
    columns.add_argument("--score-columns", action="append", help="comma-separated score columns, in the order of --caption-columns")
    args = parser.parse_args(argv)

    count = len(args.amt)
    folders = args.image_folder or [""] * count
    if not count == len(args.references) == len(folders):
        parser.error(
            f"give one --references and one --image-folder (or none at all) for each --amt file: "
            f"{count} --amt, {len(args.references)} --references, {len(args.image_folder or [])} --image-folder"
        )
    image_columns = _per_file(parser, args.image_column, "--image-column", count)
    caption_columns = _per_file(parser, args.caption_columns, "--caption-columns", count)
    score_columns = _per_file(parser, args.score_columns, "--score-columns", count)

    rows: list[dict[str, str]] = []
    try:
        for index, (amt, references, folder) in enumerate(zip(args.amt, args.references, folders)):
            result = convert(
                amt,
                references,
                image_folder=folder,
                delimiter=args.delimiter,
                encoding=args.encoding,
                image_column=image_columns[index],
                caption_columns=_split_names(caption_columns[index]),
                score_columns=_split_names(score_columns[index]),
            )
            rows.extend(result.rows)
            _print_summary(result, references)
        write_flat_csv(args.out, rows)
    except (LayoutError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    return 0


def _print_summary(result: Conversion, references: Path) -> None:
    columns = result.columns
    print(
        f"{result.source}: {len(result.rows)} ratings; image column {columns.image!r}, "
        f"{len(columns.captions)} captions per assignment",
        file=sys.stderr,
    )
    if result.skipped_blank_scores:
        print(f"  {result.skipped_blank_scores} empty score cells left out", file=sys.stderr)
    if result.skipped_no_references:
        examples = ", ".join(result.images_without_references[:5])
        detail = f" ({len(result.images_without_references)} image(s) not in {references}, e.g. {examples})" if examples else ""
        print(f"  {result.skipped_no_references} ratings left out: no references left for their image{detail}", file=sys.stderr)
    if result.images_without_rated_reference:
        examples = ", ".join(result.images_without_rated_reference[:5])
        print(
            f"  {len(result.images_without_rated_reference)} image(s) keep all their references because no rated "
            f"caption matches one, e.g. {examples}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    raise SystemExit(main())
