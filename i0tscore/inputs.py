"""Read the caption files people already have.

Candidate files for ``i0tscore score``:

* CLIPScore-style JSON, an object ``{image_id: caption}``; image ids are file
  stems in an image folder (``--images``);
* COCO results JSON, a list ``[{"image_id": int, "caption": str}, ...]``; images
  are found through a COCO annotations file (``images[].file_name``) or by id in
  the image folder (``123.jpg``, ``000000000123.jpg`` or ``COCO_val2014_000000000123.jpg``);
* JSONL, one object per line ``{"image": path, "caption": str, "references": [...]}``,
  with ``id`` optional; relative image paths are taken from the image folder if
  given, else from the JSONL file's folder.

Reference files (``--references``): a CLIPScore-style ``{image_id: [captions]}``
JSON, or a COCO captions annotations file.

Corpus files for ``i0tscore stats build``: a COCO captions annotations file, a
JSONL file, or a CSV file with ``image`` and ``caption`` columns.

Every parser reads JSON with :mod:`json` and CSV with :mod:`csv`: nothing is
ever unpickled. Errors name the file and the line or key.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from i0tscore.images import IMAGE_SUFFIXES

PathLike = Union[str, "os.PathLike[str]"]


class InputFormatError(ValueError):
    """An input file is malformed; the message names the file and the line or key."""


@dataclass
class Item:
    """One image–caption pair to score."""

    id: str
    image: Path
    caption: str
    references: Optional[list[str]] = field(default=None)


# ---------------------------------------------------------------------- JSON helpers


def read_json(path: PathLike) -> Any:
    """Parse a JSON file, naming the file and line on a syntax error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Input file not found: {path}.")
    try:
        # utf-8-sig also reads files that start with a byte order mark.
        with open(path, encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise InputFormatError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}.") from err
    except UnicodeDecodeError as err:
        raise InputFormatError(f"{path}: not UTF-8 text ({err}). Save the file as UTF-8.") from err
    except ValueError as err:
        # e.g. an integer literal longer than Python's conversion limit.
        raise InputFormatError(f"{path}: invalid JSON: {err}.") from err


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Input file not found: {path}.")
    with open(path, encoding="utf-8-sig") as handle:
        number = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError as err:
                raise InputFormatError(f"{path}, line {number + 1}: not UTF-8 text ({err}). Save the file as UTF-8.") from err
            if not line:
                return
            number += 1
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputFormatError(f"{path}, line {number}: invalid JSON: {err.msg}.") from err
            except ValueError as err:
                raise InputFormatError(f"{path}, line {number}: invalid JSON: {err}.") from err
            if not isinstance(value, dict):
                raise InputFormatError(
                    f"{path}, line {number}: expected a JSON object, got {type(value).__name__}."
                )
            yield number, value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputFormatError(f"{where}: expected a string, got {type(value).__name__} {value!r:.60}.")
    return value


def _string_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list):
        raise InputFormatError(f"{where}: expected a list of strings, got {type(value).__name__}.")
    return [_string(v, f"{where}[{n}]") for n, v in enumerate(value)]


# ---------------------------------------------------------------------- image folders


class ImageFolder:
    """Find image files in a folder by id: file stem, or a COCO-style numbered name."""

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"Image folder not found: {self.folder}.")
        self._by_stem: dict[str, Path] = {}
        for path in sorted(self.folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                self._by_stem.setdefault(path.stem, path)

    def find(self, image_id: Any) -> Optional[Path]:
        key = str(image_id)
        if key in self._by_stem:
            return self._by_stem[key]
        # bool is an int subclass, and str.isdigit() accepts digits such as "²" that int() rejects.
        numeric = isinstance(image_id, int) and not isinstance(image_id, bool)
        if numeric or (key.isascii() and key.isdigit()):
            padded = f"{int(key):012d}"
            if padded in self._by_stem:
                return self._by_stem[padded]
            for stem, path in self._by_stem.items():
                if stem.endswith("_" + padded):
                    return path
        return None

    def require(self, image_id: Any, where: str) -> Path:
        path = self.find(image_id)
        if path is None:
            raise InputFormatError(
                f"{where}: no image for id {image_id!r} in {self.folder} (looked for a file named "
                f"{image_id}{{{','.join(IMAGE_SUFFIXES)}}} in any letter case)."
            )
        return path


# ---------------------------------------------------------------------- references


def read_references(path: PathLike) -> dict[str, list[str]]:
    """Read references as ``{image id (as a string): [captions]}``.

    Accepts a CLIPScore-style JSON object or a COCO captions annotations file.
    """
    data = read_json(path)
    if isinstance(data, dict) and "annotations" in data:
        return {key: refs for key, refs in _coco_captions(data, path).items()}
    if not isinstance(data, dict):
        raise InputFormatError(
            f"{path}: a references file must be a JSON object {{image_id: [captions]}} or a COCO "
            f"annotations file, got a {type(data).__name__}."
        )
    return {str(key): _string_list(refs, f"{path}, key {key!r}") for key, refs in data.items()}


def _coco_captions(data: dict[str, Any], path: PathLike) -> dict[str, list[str]]:
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        raise InputFormatError(f"{path}: 'annotations' must be a list of objects.")
    captions: dict[str, list[str]] = {}
    for n, annotation in enumerate(annotations):
        where = f"{path}, annotations[{n}]"
        if not isinstance(annotation, dict) or "image_id" not in annotation or "caption" not in annotation:
            raise InputFormatError(f"{where}: expected an object with 'image_id' and 'caption'.")
        captions.setdefault(str(annotation["image_id"]), []).append(_string(annotation["caption"], f"{where}.caption"))
    return captions


def _coco_image_files(data: Any, path: PathLike) -> dict[str, str]:
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputFormatError(f"{path}: a COCO annotations file needs an 'images' list of {{id, file_name}}.")
    files: dict[str, str] = {}
    for n, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise InputFormatError(f"{path}, images[{n}]: expected an object with 'id' and 'file_name'.")
        files[str(image["id"])] = _string(image["file_name"], f"{path}, images[{n}].file_name")
    return files


# ---------------------------------------------------------------------- candidates


def read_candidates(
    path: PathLike,
    *,
    images: Optional[PathLike] = None,
    annotations: Optional[PathLike] = None,
    references: Optional[PathLike] = None,
) -> list[Item]:
    """Read a candidates file in any supported format into items.

    Args:
        path: the candidates file (``.json`` or ``.jsonl``).
        images: the image folder; required for CLIPScore JSON, and for COCO
            results without ``annotations``.
        annotations: a COCO annotations file mapping image ids to file names.
        references: a references file (see :func:`read_references`); its
            references replace any given in a JSONL file.

    Raises:
        FileNotFoundError: a file or folder does not exist.
        InputFormatError: the file is malformed or an image cannot be found.
    """
    path = Path(path)
    refs = read_references(references) if references is not None else None
    if path.suffix.lower() == ".jsonl":
        items = _read_jsonl_candidates(path, images)
    else:
        data = read_json(path)
        if isinstance(data, dict):
            items = _read_clipscore_candidates(path, data, images)
        elif isinstance(data, list):
            items = _read_coco_results(path, data, images, annotations)
        else:
            raise InputFormatError(
                f"{path}: expected a JSON object {{image_id: caption}} (CLIPScore format) or a list of "
                f"{{image_id, caption}} (COCO results), got a {type(data).__name__}."
            )
    if refs is not None:
        _attach_references(items, refs, references)
    if not items:
        raise InputFormatError(f"{path}: the file contains no candidates.")
    return items


def _read_clipscore_candidates(path: Path, data: dict[str, Any], images: Optional[PathLike]) -> list[Item]:
    if images is None:
        raise InputFormatError(
            f"{path} is a CLIPScore-style candidates file {{image_id: caption}}; pass the image folder "
            f"with --images DIR (image ids are file stems)."
        )
    if "annotations" in data or "images" in data:
        raise InputFormatError(
            f"{path} looks like a COCO annotations file, not a candidates file; pass it with --annotations "
            f"or --references."
        )
    folder = ImageFolder(images)
    items = []
    for key, caption in data.items():
        where = f"{path}, key {key!r}"
        if isinstance(caption, list) and len(caption) == 1:
            caption = caption[0]
        items.append(Item(id=str(key), image=folder.require(key, where), caption=_string(caption, where)))
    return items


def _read_coco_results(
    path: Path, data: list[Any], images: Optional[PathLike], annotations: Optional[PathLike]
) -> list[Item]:
    if images is None and annotations is None:
        raise InputFormatError(
            f"{path} is a COCO results file; pass --images DIR (and --annotations FILE when the file "
            f"names are not derived from the image ids)."
        )
    file_names = _coco_image_files(read_json(annotations), annotations) if annotations is not None else None
    base = Path(images) if images is not None else Path(annotations).parent
    folder = ImageFolder(base) if file_names is None else None

    items = []
    for n, entry in enumerate(data):
        where = f"{path}, item {n}"
        if not isinstance(entry, dict):
            raise InputFormatError(f"{where}: expected an object with 'image_id' and 'caption', got {type(entry).__name__}.")
        for key in ("image_id", "caption"):
            if key not in entry:
                raise InputFormatError(f"{where}: missing key {key!r}; COCO results need 'image_id' and 'caption'.")
        image_id = entry["image_id"]
        if file_names is not None:
            if str(image_id) not in file_names:
                raise InputFormatError(f"{where}: image_id {image_id!r} is not in the annotations file {annotations}.")
            image = base / file_names[str(image_id)]
        else:
            image = folder.require(image_id, where)
        items.append(Item(id=f"{image_id}", image=image, caption=_string(entry["caption"], f"{where}.caption")))
    _number_repeated_ids(items)
    return items


def _read_jsonl_candidates(path: Path, images: Optional[PathLike]) -> list[Item]:
    base = Path(images) if images is not None else path.parent
    items = []
    for number, entry in iter_jsonl(path):
        where = f"{path}, line {number}"
        for key in ("image", "caption"):
            if key not in entry:
                raise InputFormatError(f"{where}: missing key {key!r}; each line needs 'image' and 'caption'.")
        image = Path(_string(entry["image"], f"{where}.image"))
        references = entry.get("references")
        items.append(
            Item(
                id=str(entry.get("id", number)),
                image=image if image.is_absolute() else base / image,
                caption=_string(entry["caption"], f"{where}.caption"),
                references=None if references is None else _string_list(references, f"{where}.references"),
            )
        )
    return items


def _number_repeated_ids(items: list[Item]) -> None:
    # COCO results may hold several captions per image; keep ids unique in the output.
    counts: dict[str, int] = {}
    for item in items:
        counts[item.id] = counts.get(item.id, 0) + 1
    seen: dict[str, int] = {}
    for item in items:
        if counts[item.id] > 1:
            seen[item.id] = seen.get(item.id, 0) + 1
            item.id = f"{item.id}#{seen[item.id]}"


def _attach_references(items: list[Item], refs: dict[str, list[str]], source: PathLike) -> None:
    for item in items:
        key = item.id.split("#", 1)[0]
        if key not in refs:
            key = item.image.stem
        if key not in refs:
            raise InputFormatError(f"{source}: no references for image id {item.id!r}.")
        item.references = refs[key]


# ---------------------------------------------------------------------- corpora


@dataclass(frozen=True)
class Pair:
    """One image–caption pair of a corpus."""

    # Slots keep a 100k-pair corpus listing small: no per-pair __dict__.
    __slots__ = ("image", "caption")

    image: Path
    caption: str


def read_corpus(path: PathLike, *, images: Optional[PathLike] = None) -> list[Pair]:
    """Read an image–caption corpus: COCO captions annotations, JSONL or CSV.

    Only paths and captions are held in memory, never images or embeddings.
    Relative image paths are resolved against ``images`` if given, else against
    the corpus file's folder.
    """
    path = Path(path)
    base = Path(images) if images is not None else path.parent
    resolve = _PathResolver(base)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        pairs = []
        for number, entry in iter_jsonl(path):
            where = f"{path}, line {number}"
            for key in ("image", "caption"):
                if key not in entry:
                    raise InputFormatError(f"{where}: missing key {key!r}; each line needs 'image' and 'caption'.")
            pairs.append(Pair(resolve(_string(entry["image"], where)), _string(entry["caption"], where)))
        return pairs
    if suffix == ".csv":
        return _read_csv_corpus(path, resolve)
    if suffix == ".json":
        data = read_json(path)
        file_names = _coco_image_files(data, path)
        pairs = []
        for image_id, captions in _coco_captions(data, path).items():
            if image_id not in file_names:
                raise InputFormatError(f"{path}: annotation for image_id {image_id} has no entry in 'images'.")
            pairs.extend(Pair(resolve(file_names[image_id]), caption) for caption in captions)
        return pairs
    raise InputFormatError(f"{path}: unknown corpus format {suffix!r}; expected .json (COCO captions), .jsonl or .csv.")


def _read_csv_corpus(path: Path, resolve: "_PathResolver") -> list[Pair]:
    if not path.is_file():
        raise FileNotFoundError(f"Input file not found: {path}.")
    try:
        # utf-8-sig reads the byte order mark that spreadsheet programs write.
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"image", "caption"} - set(reader.fieldnames or [])
            if missing:
                raise InputFormatError(
                    f"{path}: missing column(s) {', '.join(sorted(missing))}; found {reader.fieldnames}. "
                    f"A CSV corpus needs 'image' and 'caption' columns."
                )
            pairs = []
            for row in reader:
                # line_num counts physical lines, so quoted captions spanning lines are accounted for.
                if not row["image"] or row["caption"] is None:
                    raise InputFormatError(f"{path}, line {reader.line_num}: empty 'image' or missing 'caption'.")
                pairs.append(Pair(resolve(row["image"]), row["caption"]))
            return pairs
    except UnicodeDecodeError as err:
        raise InputFormatError(f"{path}: not UTF-8 text ({err}). Save the file as UTF-8.") from err
    except csv.Error as err:
        raise InputFormatError(f"{path}: invalid CSV: {err}.") from err


class _PathResolver:
    """Resolve image names against a folder, sharing one Path object per distinct name.

    Corpora list each image once per caption (5 times in COCO), so sharing the
    Path objects keeps the listing of a large corpus several times smaller.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self._paths: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        path = self._paths.get(name)
        if path is None:
            path = self._paths[name] = _resolve(self.base, name)
        return path


def _resolve(base: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else base / path
