"""Loaders for caption-evaluation benchmarks with human judgments.

Every loader returns plain dataclasses (no model, no images opened), so the
files can be checked on a machine without the images. A file with an
unexpected layout raises :class:`LayoutError` naming the file and what is
missing. Nothing is unpickled: JSON, CSV and text are parsed as text, and
MATLAB files go through ``scipy.io.loadmat``.

Layouts and conventions follow the public releases:

* Flickr8k (Hodosh et al., JAIR 2013): ``Flickr8k.token.txt`` lines are
  ``<image>#<n>\\t<caption>``. ``ExpertAnnotations.txt`` columns are image,
  caption id, and three expert scores from 1 to 4. ``CrowdFlowerAnnotations.txt``
  columns are image, caption id, fraction of "yes", count of "yes", count of "no".
* CLIPScore repository (Hessel et al. 2021), ``flickr8k_example/download.py``:
  ``flickr8k.json`` drops Expert candidates that are among their image's
  references and keeps one row per expert score. ``crowdflower_flickr8k.json``
  keeps every CrowdFlower row and removes rated captions from the references.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, Path]
Overlap = Literal["drop", "remove"]

PASCAL_CATEGORIES = {1: "HC", 2: "HI", 3: "HM", 4: "MM"}
"""Pascal-50S pair categories: human-correct, human-incorrect, human-machine, machine-machine."""

PASCAL_JUDGMENTS_PER_PAIR = 48
"""Triplets (reference, caption A, caption B, vote) per Pascal-50S pair in consensus_pascal.mat."""


class LayoutError(ValueError):
    """A benchmark file does not have the expected layout."""

    def __init__(self, path: PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class RatedCaption:
    """One human rating of a candidate caption.

    Attributes:
        image: path of the image (image root joined with the file's image name).
        candidate: the rated caption, whitespace-normalized.
        references: reference captions of the image, whitespace-normalized.
        rating: the human score (Expert 1-4, CrowdFlower fraction of "yes",
            Composite correctness).
        group: what rows share: the image and caption ids for Flickr8k, the image id
            for Composite, the scene for the synthetic benchmark.
    """

    image: str
    candidate: str
    references: tuple[str, ...]
    rating: float
    group: str


@dataclass(frozen=True)
class RatedDataset:
    """Rows of a correlation benchmark and what loading left out.

    Attributes:
        name: dataset name.
        rows: one row per human rating.
        sources: the files read.
        dropped_overlap: rows dropped because the candidate is one of the image's references.
        dropped_other: rows dropped for a missing rating or no references left.
    """

    name: str
    rows: list[RatedCaption]
    sources: list[str]
    dropped_overlap: int = 0
    dropped_other: int = 0


@dataclass(frozen=True)
class PascalPair:
    """One Pascal-50S pair: two captions of an image and the human votes between them.

    Attributes:
        image: path of the image.
        caption_a: first candidate.
        caption_b: second candidate.
        category: 1-4, see ``PASCAL_CATEGORIES``.
        references: the 48 reference captions, in file order.
        votes_a: judgments that found caption A closer to the reference.
        votes_b: judgments that found caption B closer to the reference.
    """

    image: str
    caption_a: str
    caption_b: str
    category: int
    references: tuple[str, ...]
    votes_a: int
    votes_b: int


@dataclass(frozen=True)
class FoilPair:
    """One FOIL pair: a true COCO caption and a copy with one word replaced.

    Attributes:
        image: path of the COCO val2014 image.
        original: the true caption.
        foil: the foiled caption.
        references: other COCO captions of the image (the true caption excluded),
            ordered by COCO annotation id.
        pair_id: the annotation id that the two captions share.
    """

    image: str
    original: str
    foil: str
    references: tuple[str, ...]
    pair_id: int


def normalize(text: str) -> str:
    """Collapse runs of whitespace and strip the ends, as the CLIPScore Flickr8k scripts do."""
    return " ".join(str(text).split())


# ------------------------------------------------------------------ Flickr8k


def load_flickr8k_json(
    path: PathLike,
    image_root: Optional[PathLike] = None,
    *,
    name: str = "flickr8k",
    overlap: Overlap = "drop",
) -> RatedDataset:
    """Load Flickr8k-Expert or -CF in the JSON layout of the CLIPScore and PAC-S repositories.

    The layout is ``{key: {image_path, ground_truth: [refs], human_judgement:
    [{caption, rating, image_path}]}}``. Rows with a NaN rating are dropped.

    Args:
        path: ``flickr8k.json`` (Expert) or ``crowdflower_flickr8k.json`` (CF).
        image_root: folder that the ``image_path`` entries are relative to.
        name: dataset name for the result.
        overlap: ``"drop"`` removes rows whose candidate is among the references;
            ``"remove"`` keeps them and takes the candidate out of the references.
            The published files already contain no overlap, so both give the same rows.

    Raises:
        LayoutError: the file is not a JSON object of entries with these keys.
    """
    data = _read_json(path)
    if not isinstance(data, dict):
        raise LayoutError(path, f"expected a JSON object keyed by image, found {type(data).__name__}")

    rows: list[RatedCaption] = []
    dropped_overlap = dropped_other = 0
    for key, entry in data.items():
        where = f"entry {key!r}"
        _require_keys(path, entry, ("image_path", "ground_truth", "human_judgement"), where)
        references = _string_list(path, entry["ground_truth"], f"{where} 'ground_truth'")
        for index, judgement in enumerate(_list(path, entry["human_judgement"], f"{where} 'human_judgement'")):
            _require_keys(path, judgement, ("caption", "rating"), f"{where} human_judgement[{index}]")
            rating = _number(path, judgement["rating"], f"{where} human_judgement[{index}] 'rating'")
            if math.isnan(rating):
                dropped_other += 1
                continue
            image = _join(image_root, judgement.get("image_path", entry["image_path"]))
            row = _rated_row(image, judgement["caption"], references, rating, f"{key}|{index}", overlap)
            if row is None:
                dropped_overlap += 1
            elif not row.references:
                dropped_other += 1
            else:
                rows.append(row)
    if not rows:
        raise LayoutError(path, "no rated captions found")
    return RatedDataset(name, rows, [str(path)], dropped_overlap, dropped_other)


def read_flickr8k_tokens(path: PathLike) -> dict[str, str]:
    """Read ``Flickr8k.token.txt`` into caption id (``<image>#<n>``) → caption.

    Raises:
        LayoutError: a line is not ``<image>#<n>`` TAB caption.
    """
    captions: dict[str, str] = {}
    for number, fields in _tab_lines(path):
        if len(fields) != 2 or "#" not in fields[0]:
            raise LayoutError(path, f"line {number}: expected '<image>#<n>' TAB caption, found {len(fields)} fields")
        captions[fields[0].strip()] = normalize(fields[1])
    if not captions:
        raise LayoutError(path, "no captions found")
    return captions


def load_flickr8k_expert_txt(
    annotations: PathLike,
    tokens: PathLike,
    image_root: Optional[PathLike] = None,
    *,
    overlap: Overlap = "drop",
) -> RatedDataset:
    """Load Flickr8k-Expert from the original ``ExpertAnnotations.txt`` and ``Flickr8k.token.txt``.

    Each line gives one row per expert score (three rows per pair). References
    are the image's five captions from the token file.

    Args:
        annotations: ``ExpertAnnotations.txt``: image, caption id, three scores 1-4.
        tokens: ``Flickr8k.token.txt``.
        image_root: the folder with the Flickr8k images.
        overlap: ``"drop"`` (the CLIPScore convention for Expert) or ``"remove"``.

    Raises:
        LayoutError: wrong column count, a score outside 1-4, or an unknown caption id.
    """
    captions = read_flickr8k_tokens(tokens)
    by_image = _captions_by_image(captions)
    rows: list[RatedCaption] = []
    dropped_overlap = 0
    for number, fields in _tab_lines(annotations):
        if len(fields) != 5:
            raise LayoutError(annotations, f"line {number}: expected 5 tab-separated columns (image, caption id, 3 expert scores), found {len(fields)}")
        image, caption_id = fields[0].strip(), fields[1].strip()
        candidate = _lookup_caption(annotations, tokens, captions, caption_id, number)
        scores = [_number(annotations, value, f"line {number} expert score") for value in fields[2:]]
        if any(not 1 <= score <= 4 for score in scores):
            raise LayoutError(annotations, f"line {number}: expert scores must be 1-4, found {scores}")
        references = by_image.get(image, [])
        for expert, score in enumerate(scores):
            row = _rated_row(_join(image_root, image), candidate, references, score, f"{image}|{caption_id}", overlap)
            if row is None:
                dropped_overlap += 1
            else:
                rows.append(row)
    return RatedDataset("flickr8k-expert", rows, [str(annotations), str(tokens)], dropped_overlap, 0)


def load_flickr8k_crowdflower_txt(
    annotations: PathLike,
    tokens: PathLike,
    image_root: Optional[PathLike] = None,
    *,
    overlap: Overlap = "remove",
) -> RatedDataset:
    """Load Flickr8k-CF from the original ``CrowdFlowerAnnotations.txt`` and ``Flickr8k.token.txt``.

    The rating is the fraction of "yes" votes. With ``overlap="remove"`` (the
    default, as in the CLIPScore repository's ``crowdflower_flickr8k.json``),
    every row is kept and the references of an image exclude every caption of
    that image that is rated as a candidate.

    Args:
        annotations: ``CrowdFlowerAnnotations.txt``: image, caption id, fraction
            of "yes", count of "yes", count of "no".
        tokens: ``Flickr8k.token.txt``.
        image_root: the folder with the Flickr8k images.
        overlap: ``"remove"`` or ``"drop"`` (drop rows whose candidate is a reference).

    Raises:
        LayoutError: wrong column count, counts that disagree with the fraction,
            or an unknown caption id.
    """
    captions = read_flickr8k_tokens(tokens)
    by_image = _captions_by_image(captions)
    parsed: list[tuple[str, str, str, float]] = []
    for number, fields in _tab_lines(annotations):
        if len(fields) != 5:
            raise LayoutError(annotations, f"line {number}: expected 5 tab-separated columns (image, caption id, fraction yes, yes, no), found {len(fields)}")
        image, caption_id = fields[0].strip(), fields[1].strip()
        fraction = _number(annotations, fields[2], f"line {number} fraction of yes")
        yes = _number(annotations, fields[3], f"line {number} count of yes")
        no = _number(annotations, fields[4], f"line {number} count of no")
        # The fraction column is yes / (yes + no); a mismatch means shifted columns.
        if yes + no <= 0 or abs(fraction - yes / (yes + no)) > 1e-4:
            raise LayoutError(annotations, f"line {number}: fraction of yes {fraction} does not equal yes/(yes+no) = {yes}/{yes + no}")
        parsed.append((image, caption_id, _lookup_caption(annotations, tokens, captions, caption_id, number), fraction))

    rated_by_image: dict[str, set[str]] = defaultdict(set)
    for image, _, candidate, _ in parsed:
        rated_by_image[image].add(candidate)

    rows: list[RatedCaption] = []
    dropped_overlap = dropped_other = 0
    for image, caption_id, candidate, fraction in parsed:
        references = by_image.get(image, [])
        if overlap == "remove":
            references = [ref for ref in references if ref not in rated_by_image[image]]
        row = _rated_row(_join(image_root, image), candidate, references, fraction, f"{image}|{caption_id}", overlap)
        if row is None:
            dropped_overlap += 1
        elif not row.references:
            dropped_other += 1
        else:
            rows.append(row)
    return RatedDataset("flickr8k-cf", rows, [str(annotations), str(tokens)], dropped_overlap, dropped_other)


# ------------------------------------------------------------------ Composite


def load_composite_csv(
    path: PathLike,
    image_root: Optional[PathLike] = None,
    *,
    columns: Sequence[str] = ("image_id", "candidate", "references", "score"),
    image_suffix: str = "",
    reference_separator: str = "|||",
    overlap: Overlap = "drop",
) -> RatedDataset:
    """Load Composite (Aditya et al. 2015) flattened to one CSV row per rated caption.

    Args:
        path: CSV with a header row.
        image_root: folder with the images.
        columns: header names of the image id, candidate, references and
            correctness score columns, in that order.
        image_suffix: text appended to the image id to form the file name (``".jpg"``).
        reference_separator: separator of the references cell, unless the cell
            is a JSON array of strings.
        overlap: ``"drop"`` or ``"remove"`` candidates that are among the references.

    Raises:
        LayoutError: a missing column, an empty references cell, or a non-numeric score.
    """
    image_column, candidate_column, references_column, score_column = columns
    rows: list[RatedCaption] = []
    dropped_overlap = 0
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in columns if name not in (reader.fieldnames or [])]
        if missing:
            raise LayoutError(path, f"missing column(s) {missing}; the header has {reader.fieldnames}")
        for number, record in enumerate(reader, start=2):
            references = _split_references(path, record[references_column], reference_separator, number)
            score = _number(path, record[score_column], f"line {number} column {score_column!r}")
            image_id = record[image_column].strip()
            image = _join(image_root, image_id + image_suffix)
            row = _rated_row(image, record[candidate_column], references, score, image_id, overlap)
            if row is None:
                dropped_overlap += 1
            else:
                rows.append(row)
    if not rows:
        raise LayoutError(path, "no rows found")
    return RatedDataset("composite", rows, [str(path)], dropped_overlap, 0)


# ------------------------------------------------------------------ Pascal-50S


def load_pascal50s(pair_mat: PathLike, consensus_mat: PathLike, image_root: Optional[PathLike] = None) -> list[PascalPair]:
    """Load Pascal-50S (Vedantam et al., CVPR 2015) from its two MATLAB files.

    ``pair_pascal.mat`` contains ``new_input`` (per pair: image name, caption A,
    caption B) and ``category`` (1-4). ``consensus_pascal.mat`` contains
    ``triplets``, 48 per pair in pair order, each (reference, caption, caption,
    vote), where vote 1 picks the first caption of the triplet and any other
    value the second.

    Raises:
        LayoutError: a missing variable, a count that is not 48 triplets per
            pair, a category outside 1-4, or a vote for a caption that is not in the pair.
    """
    pair_data = _loadmat(pair_mat, ("new_input", "category"))
    triplets = _mat_entries(_loadmat(consensus_mat, ("triplets",))["triplets"])
    inputs = _mat_entries(pair_data["new_input"])
    categories = np.asarray(pair_data["category"]).ravel()
    if len(categories) != len(inputs):
        raise LayoutError(pair_mat, f"'category' has {len(categories)} entries but 'new_input' has {len(inputs)}")
    if len(triplets) != PASCAL_JUDGMENTS_PER_PAIR * len(inputs):
        raise LayoutError(consensus_mat, f"expected {PASCAL_JUDGMENTS_PER_PAIR} triplets per pair ({PASCAL_JUDGMENTS_PER_PAIR * len(inputs)} for {len(inputs)} pairs), found {len(triplets)}")

    pairs = []
    for index, entry in enumerate(inputs):
        fields = _mat_fields(pair_mat, entry, 3, f"new_input[{index}]")
        image, caption_a, caption_b = (normalize(_mat_item(field)) for field in fields)
        category = int(_mat_item(categories[index]))
        if category not in PASCAL_CATEGORIES:
            raise LayoutError(pair_mat, f"category[{index}] is {category}; expected 1-4")
        block = triplets[index * PASCAL_JUDGMENTS_PER_PAIR : (index + 1) * PASCAL_JUDGMENTS_PER_PAIR]
        references, votes_a, votes_b = _pascal_votes(consensus_mat, block, index, caption_a, caption_b)
        pairs.append(PascalPair(_join(image_root, image), caption_a, caption_b, category, references, votes_a, votes_b))
    return pairs


def _pascal_votes(path: PathLike, block: Sequence[Any], index: int, caption_a: str, caption_b: str) -> tuple[tuple[str, ...], int, int]:
    references, votes_a, votes_b = [], 0, 0
    for offset, triplet in enumerate(block):
        reference, first, second, vote = _mat_fields(path, triplet, 4, f"triplets[{index * PASCAL_JUDGMENTS_PER_PAIR + offset}]")
        references.append(normalize(_mat_item(reference)))
        winner = normalize(_mat_item(first if float(_mat_item(vote)) == 1 else second))
        if winner == caption_a:
            votes_a += 1
        elif winner == caption_b:
            votes_b += 1
        else:
            raise LayoutError(path, f"triplet {offset} of pair {index} votes for {winner!r}, which is neither caption of the pair in pair_pascal.mat")
    return tuple(references), votes_a, votes_b


# ------------------------------------------------------------------ FOIL


def load_foil(foil_json: PathLike, coco_captions: PathLike, image_root: Optional[PathLike] = None) -> tuple[list[FoilPair], int]:
    """Load FOIL-COCO (Shekhar et al., ACL 2017) test pairs with COCO references.

    Annotations that share an ``id`` form pairs: each foiled caption
    (``foil: true``) is paired with the true caption of that id. References are
    the image's captions in ``captions_val2014.json`` other than the true one.

    Returns:
        The pairs, and the number of foiled captions without a true caption of the same id.

    Raises:
        LayoutError: missing ``annotations``, ``id``, ``image_id``, ``caption`` or ``foil``.
    """
    foil = _read_json(foil_json)
    coco = _read_json(coco_captions)
    originals, foils = _foil_groups(foil_json, foil)
    coco_by_image = _coco_captions_by_image(coco_captions, coco)
    file_names = {entry.get("id"): entry.get("file_name") for entry in foil.get("images", []) if isinstance(entry, dict)}

    pairs, unpaired = [], 0
    for pair_id, image_id, foiled in foils:
        if pair_id not in originals:
            unpaired += 1
            continue
        true_caption = originals[pair_id]
        references = tuple(text for text in coco_by_image.get(image_id, []) if text.lower() != true_caption.lower())
        name = file_names.get(image_id) or f"COCO_val2014_{int(image_id):012d}.jpg"
        pairs.append(FoilPair(_join(image_root, name), true_caption, foiled, references, pair_id))
    if not pairs:
        raise LayoutError(foil_json, "no pairs of a true and a foiled caption with the same 'id' found")
    return pairs, unpaired


def _foil_groups(path: PathLike, data: Any) -> tuple[dict[int, str], list[tuple[int, Any, str]]]:
    annotations = _require_keys(path, data, ("annotations",), "top level")["annotations"]
    originals: dict[int, str] = {}
    foils: list[tuple[int, Any, str]] = []
    for index, entry in enumerate(_list(path, annotations, "'annotations'")):
        _require_keys(path, entry, ("id", "image_id", "caption", "foil"), f"annotations[{index}]")
        if entry["foil"]:
            foils.append((entry["id"], entry["image_id"], normalize(entry["caption"])))
        else:
            originals[entry["id"]] = normalize(entry["caption"])
    return originals, foils


def _coco_captions_by_image(path: PathLike, data: Any) -> dict[Any, list[str]]:
    annotations = _require_keys(path, data, ("annotations",), "top level")["annotations"]
    entries = []
    for index, entry in enumerate(_list(path, annotations, "'annotations'")):
        _require_keys(path, entry, ("image_id", "caption"), f"annotations[{index}]")
        entries.append((entry.get("id", index), entry["image_id"], normalize(entry["caption"])))
    by_image: dict[Any, list[str]] = defaultdict(list)
    for _, image_id, text in sorted(entries, key=lambda item: item[0]):
        by_image[image_id].append(text)
    return by_image


# ------------------------------------------------------------------ helpers


def _rated_row(image: str, candidate: Any, references: Iterable[str], rating: float, group: str, overlap: Overlap) -> Optional[RatedCaption]:
    """Build a row, or return None when ``overlap="drop"`` and the candidate is a reference."""
    if overlap not in ("drop", "remove"):
        raise ValueError(f"overlap must be 'drop' or 'remove', got {overlap!r}")
    text = normalize(candidate)
    refs = tuple(normalize(ref) for ref in references)
    if text in refs:
        if overlap == "drop":
            return None
        refs = tuple(ref for ref in refs if ref != text)
    return RatedCaption(image, text, refs, float(rating), group)


def _captions_by_image(captions: dict[str, str]) -> dict[str, list[str]]:
    by_image: dict[str, list[str]] = defaultdict(list)
    for caption_id, text in captions.items():
        by_image[caption_id.split("#")[0]].append(text)
    return by_image


def _lookup_caption(annotations: PathLike, tokens: PathLike, captions: dict[str, str], caption_id: str, number: int) -> str:
    if caption_id not in captions:
        raise LayoutError(annotations, f"line {number}: caption id {caption_id!r} is not in {tokens}")
    return captions[caption_id]


def _tab_lines(path: PathLike) -> Iterable[tuple[int, list[str]]]:
    # utf-8-sig drops a byte-order mark, which would otherwise become part of the first image name.
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.rstrip("\r\n").split("\t")


def _read_json(path: PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise LayoutError(path, f"invalid JSON ({error})") from error


def _require_keys(path: PathLike, value: Any, keys: Sequence[str], where: str) -> dict:
    if not isinstance(value, dict):
        raise LayoutError(path, f"{where} is a {type(value).__name__}; expected an object with keys {list(keys)}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise LayoutError(path, f"{where} is missing key(s) {missing}")
    return value


def _list(path: PathLike, value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise LayoutError(path, f"{where} is a {type(value).__name__}; expected a list")
    return value


def _string_list(path: PathLike, value: Any, where: str) -> list[str]:
    items = _list(path, value, where)
    if not all(isinstance(item, str) for item in items):
        raise LayoutError(path, f"{where} must be a list of strings")
    return items


def _number(path: PathLike, value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LayoutError(path, f"{where} is {value!r}; expected a number") from None


def _split_references(path: PathLike, cell: Optional[str], separator: str, number: int) -> list[str]:
    text = (cell or "").strip()
    if text.startswith("["):
        try:
            references = json.loads(text)
        except json.JSONDecodeError as error:
            raise LayoutError(path, f"line {number}: references cell is not a valid JSON array ({error})") from error
    else:
        references = text.split(separator)
    references = [normalize(ref) for ref in references if isinstance(ref, str) and ref.strip()]
    if not references:
        raise LayoutError(path, f"line {number}: the references cell is empty")
    return references


def _join(root: Optional[PathLike], name: str) -> str:
    return str(Path(root) / name) if root is not None else str(name)


def _loadmat(path: PathLike, variables: Sequence[str]) -> dict[str, Any]:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        data = loadmat(path)
    except (MatReadError, ValueError) as error:
        raise LayoutError(path, f"not a readable MATLAB file ({error})") from error
    missing = [name for name in variables if name not in data]
    if missing:
        present = sorted(key for key in data if not key.startswith("__"))
        raise LayoutError(path, f"missing variable(s) {missing}; the file has {present}")
    return data


def _mat_entries(value: Any) -> list[Any]:
    """Entries of a MATLAB struct or cell array loaded as an (1, N) or (N,) numpy array."""
    return list(np.asarray(value).ravel())


def _mat_fields(path: PathLike, entry: Any, count: int, where: str) -> list[Any]:
    """Fields of one struct record or cell row, in file order."""
    if isinstance(entry, np.void) and entry.dtype.names:
        fields = [entry[name] for name in entry.dtype.names]
    else:
        fields = list(np.asarray(entry, dtype=object).ravel())
        if len(fields) == 1 and isinstance(fields[0], np.ndarray):
            return _mat_fields(path, fields[0], count, where)
    if len(fields) != count:
        raise LayoutError(path, f"{where} has {len(fields)} fields; expected {count}")
    return fields


def _mat_item(value: Any) -> Any:
    """Unwrap the single-element arrays that loadmat puts around strings and numbers."""
    while isinstance(value, np.ndarray):
        if value.size == 0:
            return ""
        if value.size != 1:
            if value.dtype.kind == "U":
                return "".join(value.ravel())
            raise ValueError(f"expected a single value, found an array of shape {value.shape}")
        value = value.ravel()[0]
    if isinstance(value, (np.str_, str)):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
