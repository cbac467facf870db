"""Modality statistics: the image and text means that I0T-S subtracts.

A statistics file is JSON (never pickle). It contains the mean of L2-normalized
image embeddings and the mean of L2-normalized text embeddings over a corpus,
per-dimension standard deviations for diagnostics, and the provenance needed to
trust it: model id, revision and weights fingerprint, corpus, pair count,
caption prefix, package version. A SHA-256 of the canonical payload is stored in
the file and checked on load, so a hand-edited file is rejected.

Files shipped with the package live in the top-level ``stats/`` folder of the
source tree, are installed as ``i0tscore._stats`` and are found with
:mod:`importlib.resources`; ``stats/index.json`` maps model ids to files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from i0tscore._version import __version__
from i0tscore.fileio import atomic_write, sha256_bytes

FORMAT = "i0tscore-statistics"
FORMAT_VERSION = 1
INDEX_FORMAT = "i0tscore-statistics-index"
DEFAULT_PREFIX = "A photo depicts "
"""Caption prefix of CLIP-S (Hessel et al., 2021); text means must be built with the prefix used to score."""

CORPUS = "corpus"
"""The ``stats`` value that takes the means from the set being scored."""

BUILD_HINT = (
    "Build statistics with `i0tscore stats build --model MODEL --data CORPUS --out FILE` "
    "and pass stats=FILE (or --stats FILE), or pass stats='corpus' to take the means "
    "from the set being scored."
)


class StatisticsError(ValueError):
    """A statistics file is invalid, corrupted, or made for another model."""


@dataclass(frozen=True)
class ModelIdentity:
    """Identity of a CLIP checkpoint, used to match statistics to it.

    ``model_id`` is the hub id, or the folder name for a local checkpoint.
    ``weights_sha256`` fingerprints the weights file of a local checkpoint, so
    statistics follow the weights wherever the folder is copied.
    """

    model_id: str
    revision: Optional[str] = None
    weights_sha256: Optional[str] = None

    def describe(self) -> str:
        parts = [self.model_id]
        if self.revision:
            parts.append(f"revision {self.revision}")
        if self.weights_sha256:
            parts.append(f"weights sha256 {self.weights_sha256[:12]}")
        return ", ".join(parts)


@dataclass(frozen=True, eq=False)
class Statistics:
    """Image and text means of L2-normalized embeddings for one model.

    Attributes:
        image_mean: (D,) float64 mean image embedding x̄.
        text_mean: (D,) float64 mean text embedding ȳ.
        model: the checkpoint the embeddings came from.
        corpus: a name for the corpus the means were taken over.
        num_pairs: image–caption pairs read from the corpus.
        num_images: distinct images averaged into ``image_mean``.
        num_texts: captions averaged into ``text_mean``.
        prefix: caption prefix used when encoding the texts.
        normalized: whether embeddings were L2-normalized before averaging
            (always True for files this package writes).
        image_std: (D,) per-dimension standard deviation of image embeddings,
            for diagnostics only; I0T-S does not use it.
        text_std: the same for text embeddings.
        provenance: free-form facts about how the file was built (date,
            corpus path, dtype, device, package version).
        sums: the exact running sums behind the means (see
            :class:`StatisticsAccumulator`), so that files built on shards of a
            corpus merge exactly; None for statistics made another way.
        source: where the statistics were loaded from; not stored in the file.
    """

    image_mean: np.ndarray
    text_mean: np.ndarray
    model: ModelIdentity
    corpus: str
    num_pairs: int
    num_images: int
    num_texts: int
    prefix: str = DEFAULT_PREFIX
    normalized: bool = True
    image_std: Optional[np.ndarray] = None
    text_std: Optional[np.ndarray] = None
    provenance: dict = field(default_factory=dict)
    sums: Optional[dict] = None
    source: str = "memory"

    def __post_init__(self) -> None:
        for name in ("image_mean", "text_mean", "image_std", "text_std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, np.asarray(value, dtype=np.float64))
        _check_vectors(self)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.image_mean.shape[0])

    @property
    def checksum(self) -> str:
        """SHA-256 of the canonical payload: the statistics' identity in signatures."""
        return sha256_bytes(_canonical(self._payload()))

    @property
    def centroid_distance(self) -> float:
        """‖x̄ − ȳ‖, the modality gap of the corpus the means were taken over."""
        return float(np.linalg.norm(self.image_mean - self.text_mean))

    def _payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_id": self.model.model_id,
            "revision": self.model.revision,
            "weights_sha256": self.model.weights_sha256,
            "dim": self.dim,
            "corpus": self.corpus,
            "num_pairs": int(self.num_pairs),
            "num_images": int(self.num_images),
            "num_texts": int(self.num_texts),
            "prefix": self.prefix,
            "normalized": bool(self.normalized),
            "provenance": dict(sorted(self.provenance.items())),
            "image_mean": _floats(self.image_mean),
            "text_mean": _floats(self.text_mean),
            "image_std": None if self.image_std is None else _floats(self.image_std),
            "text_std": None if self.text_std is None else _floats(self.text_std),
            "sums": self.sums,
        }

    def to_json(self) -> str:
        """Serialize to the file format, checksum included; the same statistics give the same text."""
        payload = self._payload()
        payload["sha256"] = sha256_bytes(_canonical(payload))
        return json.dumps(payload, indent=1, ensure_ascii=False) + "\n"

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the statistics to ``path`` atomically."""
        atomic_write(path, self.to_json())

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Statistics":
        """Read and verify a statistics file.

        Raises:
            FileNotFoundError: the file does not exist.
            StatisticsError: not a statistics file, checksum mismatch, or
                non-finite or inconsistent values.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Statistics file not found: {path}. {BUILD_HINT}")
        return cls.from_json(path.read_bytes(), source=str(path))

    @classmethod
    def from_json(cls, data: Union[bytes, str], *, source: str = "memory") -> "Statistics":
        """Parse and verify the JSON text of a statistics file."""
        try:
            payload = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise StatisticsError(f"Statistics file {source} is not valid JSON: {err}.") from err
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise StatisticsError(
                f"{source} is not an i0tscore statistics file: expected a JSON object with "
                f'"format": "{FORMAT}". {BUILD_HINT}'
            )
        if payload.get("format_version") != FORMAT_VERSION:
            raise StatisticsError(
                f"Statistics file {source} has format_version {payload.get('format_version')!r}; "
                f"this version of i0tscore reads version {FORMAT_VERSION}."
            )

        stored = payload.pop("sha256", None)
        actual = sha256_bytes(_canonical(payload))
        if stored != actual:
            raise StatisticsError(
                f"Checksum mismatch in statistics file {source}: the file stores sha256 {stored}, "
                f"its content hashes to {actual}. The file was edited or corrupted after it was "
                f"written; rebuild it with `i0tscore stats build`."
            )

        try:
            stats = cls(
                image_mean=_vector(payload["image_mean"], "image_mean", source),
                text_mean=_vector(payload["text_mean"], "text_mean", source),
                image_std=None if payload.get("image_std") is None else _vector(payload["image_std"], "image_std", source),
                text_std=None if payload.get("text_std") is None else _vector(payload["text_std"], "text_std", source),
                model=ModelIdentity(payload["model_id"], payload.get("revision"), payload.get("weights_sha256")),
                corpus=payload["corpus"],
                num_pairs=payload["num_pairs"],
                num_images=payload["num_images"],
                num_texts=payload["num_texts"],
                prefix=payload["prefix"],
                normalized=payload["normalized"],
                provenance=payload.get("provenance") or {},
                sums=payload.get("sums"),
                source=source,
            )
        except KeyError as err:
            raise StatisticsError(f"Statistics file {source} is missing the key {err.args[0]!r}.") from err
        if stats.dim != payload.get("dim"):
            raise StatisticsError(
                f"Statistics file {source} declares dim {payload.get('dim')} but its means have {stats.dim} values."
            )
        return stats

    @classmethod
    def from_embeddings(
        cls,
        image_embeds: np.ndarray,
        text_embeds: np.ndarray,
        *,
        model: ModelIdentity,
        corpus: str,
        prefix: str = DEFAULT_PREFIX,
        num_pairs: Optional[int] = None,
    ) -> "Statistics":
        """Take the means of in-memory embeddings (rows are L2-normalized here first)."""
        accumulator = StatisticsAccumulator(int(np.shape(image_embeds)[1]))
        accumulator.add_images(image_embeds)
        accumulator.add_texts(text_embeds)
        accumulator.num_pairs = int(num_pairs if num_pairs is not None else len(text_embeds))
        return accumulator.finalize(model=model, corpus=corpus, prefix=prefix)

    def check_model(self, model: ModelIdentity, dim: int, *, allow_model_mismatch: bool = False) -> None:
        """Raise if these statistics do not fit ``model`` of embedding dimension ``dim``.

        The dimension must always match. The model must match too unless
        ``allow_model_mismatch`` is set: same weights fingerprint when both sides
        have one, otherwise the same model id and, when both are known, revision.
        """
        if dim != self.dim:
            raise StatisticsError(
                f"Statistics {self.source} have dimension {self.dim} ({self.model.describe()}), "
                f"but the model {model.describe()} produces embeddings of dimension {dim}. "
                f"Use statistics built for this model. {BUILD_HINT}"
            )
        if allow_model_mismatch or _same_model(self.model, model):
            return
        raise StatisticsError(
            f"Statistics {self.source} were built for {self.model.describe()}, not for "
            f"{model.describe()}. Means of another model do not remove this model's modality gap. "
            f"{BUILD_HINT} To use them anyway, pass allow_model_mismatch=True "
            f"(--allow-model-mismatch)."
        )

    def with_source(self, source: str) -> "Statistics":
        return replace(self, source=source)


def _same_model(a: ModelIdentity, b: ModelIdentity) -> bool:
    if a.weights_sha256 and b.weights_sha256:
        return a.weights_sha256 == b.weights_sha256
    if a.model_id != b.model_id:
        return False
    return not (a.revision and b.revision and a.revision != b.revision)


def _check_vectors(stats: Statistics) -> None:
    if stats.image_mean.ndim != 1 or stats.text_mean.ndim != 1:
        raise StatisticsError(
            f"Statistics {stats.source}: means must be 1-D vectors, got shapes "
            f"{stats.image_mean.shape} (image) and {stats.text_mean.shape} (text)."
        )
    if stats.image_mean.shape != stats.text_mean.shape:
        raise StatisticsError(
            f"Statistics {stats.source}: the image mean has {stats.image_mean.shape[0]} values "
            f"but the text mean has {stats.text_mean.shape[0]}; both must have the model's dimension."
        )
    for name in ("image_mean", "text_mean", "image_std", "text_std"):
        value = getattr(stats, name)
        if value is not None and not np.all(np.isfinite(value)):
            bad = int(np.flatnonzero(~np.isfinite(value))[0])
            raise StatisticsError(
                f"Statistics {stats.source}: {name} contains a non-finite value ({value[bad]}) at "
                f"dimension {bad}. Rebuild the statistics."
            )


def _floats(vector: np.ndarray) -> list[float]:
    # Python's float repr round-trips float64 exactly, so save→load is lossless.
    return [float(v) for v in vector]


def _vector(value: Any, name: str, source: str) -> np.ndarray:
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
        raise StatisticsError(f"Statistics file {source}: {name} must be a list of numbers.")
    return np.asarray(value, dtype=np.float64)


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True).encode()


# Sums are kept as exact integers in units of 2**-FIXED_POINT_BITS: an L2-normalized
# float32 value is rounded once to that grid (an error below 1e-12), and from then
# on addition is exact. So the result does not depend on batch order, and shards
# merge to bit-identical statistics.
FIXED_POINT_BITS = 40
_SCALE = float(2**FIXED_POINT_BITS)


class StatisticsAccumulator:
    """Running sums of L2-normalized embeddings, mergeable and resumable.

    Memory is O(D) whatever the corpus size. Sums and sums of squares are exact
    integers (see ``FIXED_POINT_BITS``), so ``merge`` is exact and associative.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.image_sum = [0] * dim
        self.image_sumsq = [0] * dim
        self.image_count = 0
        self.text_sum = [0] * dim
        self.text_sumsq = [0] * dim
        self.text_count = 0
        self.num_pairs = 0

    def add_images(self, embeds: Any) -> None:
        """Add image embeddings (N, D); rows are L2-normalized first."""
        self.image_count += self._add(embeds, self.image_sum, self.image_sumsq)

    def add_texts(self, embeds: Any) -> None:
        """Add text embeddings (N, D); rows are L2-normalized first."""
        self.text_count += self._add(embeds, self.text_sum, self.text_sumsq)

    def _add(self, embeds: Any, sums: list[int], sumsqs: list[int]) -> int:
        array = np.asarray(embeds, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"Expected embeddings of shape (N, {self.dim}), got {array.shape}.")
        if array.shape[0] == 0:
            return 0
        if not np.all(np.isfinite(array)):
            raise ValueError("Embeddings contain NaN or infinity; the model produced invalid output.")
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        array = array / np.maximum(norms, 1e-12)

        # int64 can contain a batch sum of up to 2**23 rows of values in [-2**40, 2**40].
        for start in range(0, array.shape[0], 1 << 22):
            chunk = array[start : start + (1 << 22)]
            batch_sum = np.rint(chunk * _SCALE).astype(np.int64).sum(axis=0)
            batch_sumsq = np.rint(chunk * chunk * _SCALE).astype(np.int64).sum(axis=0)
            for d in range(self.dim):
                sums[d] += int(batch_sum[d])
                sumsqs[d] += int(batch_sumsq[d])
        return int(array.shape[0])

    def merge(self, other: "StatisticsAccumulator") -> None:
        """Add another accumulator's sums and counts into this one (exact)."""
        if other.dim != self.dim:
            raise ValueError(f"Cannot merge running sums of dimension {other.dim} into dimension {self.dim}.")
        for mine, theirs in (
            (self.image_sum, other.image_sum),
            (self.image_sumsq, other.image_sumsq),
            (self.text_sum, other.text_sum),
            (self.text_sumsq, other.text_sumsq),
        ):
            for d in range(self.dim):
                mine[d] += theirs[d]
        self.image_count += other.image_count
        self.text_count += other.text_count
        self.num_pairs += other.num_pairs

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state (exact integers), for checkpoints and shards."""
        return {
            "dim": self.dim,
            "fixed_point_bits": FIXED_POINT_BITS,
            "image_sum": self.image_sum,
            "image_sumsq": self.image_sumsq,
            "image_count": self.image_count,
            "text_sum": self.text_sum,
            "text_sumsq": self.text_sumsq,
            "text_count": self.text_count,
            "num_pairs": self.num_pairs,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "StatisticsAccumulator":
        """Rebuild an accumulator from :meth:`to_state` output."""
        if state.get("fixed_point_bits") != FIXED_POINT_BITS:
            raise ValueError(
                f"Running sums use fixed_point_bits {state.get('fixed_point_bits')!r}; expected {FIXED_POINT_BITS}."
            )
        accumulator = cls(int(state["dim"]))
        for name in ("image_sum", "image_sumsq", "text_sum", "text_sumsq"):
            values = state[name]
            if len(values) != accumulator.dim or not all(isinstance(v, int) for v in values):
                raise ValueError(f"Running sums: {name} must be {accumulator.dim} integers.")
            setattr(accumulator, name, list(values))
        accumulator.image_count = int(state["image_count"])
        accumulator.text_count = int(state["text_count"])
        accumulator.num_pairs = int(state["num_pairs"])
        return accumulator

    def finalize(
        self,
        *,
        model: ModelIdentity,
        corpus: str,
        prefix: str = DEFAULT_PREFIX,
        provenance: Optional[dict[str, Any]] = None,
    ) -> Statistics:
        """Turn the sums into :class:`Statistics`."""
        if self.image_count == 0 or self.text_count == 0:
            raise ValueError(
                f"Cannot compute statistics from {self.image_count} images and {self.text_count} captions; "
                f"the corpus must contain at least one of each."
            )
        image_mean, image_std = _mean_std(self.image_sum, self.image_sumsq, self.image_count)
        text_mean, text_std = _mean_std(self.text_sum, self.text_sumsq, self.text_count)
        info = {"package_version": __version__, "fixed_point_bits": FIXED_POINT_BITS}
        info.update(provenance or {})
        return Statistics(
            image_mean=image_mean,
            text_mean=text_mean,
            image_std=image_std,
            text_std=text_std,
            model=model,
            corpus=corpus,
            num_pairs=self.num_pairs,
            num_images=self.image_count,
            num_texts=self.text_count,
            prefix=prefix,
            normalized=True,
            provenance=info,
            sums=self.to_state(),
        )


def _mean_std(sums: list[int], sumsqs: list[int], count: int) -> tuple[np.ndarray, np.ndarray]:
    # Exact integer division first, then one rounding to float64.
    mean = np.array([s / count / _SCALE for s in sums], dtype=np.float64)
    mean_sq = np.array([s / count / _SCALE for s in sumsqs], dtype=np.float64)
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    return mean, std


# ---------------------------------------------------------------------------
# Shipped statistics


@dataclass(frozen=True)
class ShippedEntry:
    """One row of ``stats/index.json``."""

    name: str
    file: str
    model_id: str
    revision: Optional[str]
    weights_sha256: Optional[str]
    sha256: str
    corpus: str
    num_pairs: int


def _stats_root():
    return resources.files("i0tscore._stats")


def shipped_entries() -> list[ShippedEntry]:
    """Read the index of statistics files installed with the package (``stats/index.json``)."""
    index_file = _stats_root().joinpath("index.json")
    if not index_file.is_file():
        return []
    index = json.loads(index_file.read_text(encoding="utf-8"))
    if index.get("format") != INDEX_FORMAT:
        raise StatisticsError("The installed stats/index.json is not an i0tscore statistics index; reinstall i0tscore.")
    return [ShippedEntry(**entry) for entry in index["entries"]]


def load_shipped(name: str) -> Statistics:
    """Load a shipped statistics file by index name or model id, verifying both checksums.

    Raises:
        StatisticsError: unknown name, or a file whose bytes do not match the index.
    """
    for entry in shipped_entries():
        if name in (entry.name, entry.model_id):
            data = _stats_root().joinpath(entry.file).read_bytes()
            actual = sha256_bytes(data)
            if actual != entry.sha256:
                raise StatisticsError(
                    f"Shipped statistics {entry.file} hash to sha256 {actual}, but the index records "
                    f"{entry.sha256}. The installation is corrupted; reinstall i0tscore."
                )
            return Statistics.from_json(data, source=f"shipped:{entry.name}")
    raise StatisticsError(f"No shipped statistics named {name!r}. {describe_shipped()}")


def find_shipped(model: ModelIdentity) -> Optional[ShippedEntry]:
    """Find the shipped entry built for ``model``, matched by weights fingerprint or model id."""
    for entry in shipped_entries():
        shipped = ModelIdentity(entry.model_id, entry.revision, entry.weights_sha256)
        if model.weights_sha256 and entry.weights_sha256:
            if model.weights_sha256 == entry.weights_sha256:
                return entry
        elif _same_model(shipped, model):
            return entry
    return None


def describe_shipped() -> str:
    entries = shipped_entries()
    if not entries:
        return "No statistics are shipped with this installation."
    listed = ", ".join(f"{e.name} (model {e.model_id})" for e in entries)
    return f"Shipped statistics: {listed}."


def write_index(folder: Union[str, os.PathLike], files: Iterable[tuple[str, str]]) -> None:
    """Write ``index.json`` in ``folder`` for ``(name, file name)`` pairs, hashing each file."""
    folder = Path(folder)
    entries = []
    for name, file_name in sorted(files):
        data = (folder / file_name).read_bytes()
        stats = Statistics.from_json(data, source=str(folder / file_name))
        entries.append(
            {
                "name": name,
                "file": file_name,
                "model_id": stats.model.model_id,
                "revision": stats.model.revision,
                "weights_sha256": stats.model.weights_sha256,
                "sha256": sha256_bytes(data),
                "corpus": stats.corpus,
                "num_pairs": stats.num_pairs,
            }
        )
    atomic_write(folder / "index.json", json.dumps({"format": INDEX_FORMAT, "entries": entries}, indent=1) + "\n")


def resolve_statistics(
    spec: Union[None, str, os.PathLike, Statistics],
    model: ModelIdentity,
) -> Union[Statistics, str]:
    """Turn a user's ``stats`` argument into :class:`Statistics` or the string ``"corpus"``.

    ``None`` looks up the shipped statistics for ``model``; a string is
    ``"corpus"``, a shipped name or a file path. Model and dimension checks
    happen later, when the model's dimension is known.
    """
    if isinstance(spec, Statistics):
        return spec
    if spec is None:
        entry = find_shipped(model)
        if entry is None:
            raise StatisticsError(
                f"No statistics are shipped for the model {model.describe()}, and none were passed. "
                f"{describe_shipped()} {BUILD_HINT}"
            )
        return load_shipped(entry.name)
    if isinstance(spec, str) and spec == CORPUS:
        return CORPUS
    path = Path(spec)
    if path.suffix.lower() == ".json" or path.exists() or os.sep in str(spec):
        return Statistics.load(path)
    return load_shipped(str(spec))


__all__ = [
    "BUILD_HINT",
    "CORPUS",
    "DEFAULT_PREFIX",
    "ModelIdentity",
    "ShippedEntry",
    "Statistics",
    "StatisticsAccumulator",
    "StatisticsError",
    "describe_shipped",
    "find_shipped",
    "load_shipped",
    "resolve_statistics",
    "shipped_entries",
    "write_index",
]
