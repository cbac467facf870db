"""A cache of image embeddings, kept in memory and optionally on disk.

An entry is keyed by the image's content (see :func:`image_content_hash`) and by
everything else that decides its embedding. These are the model id, revision
and weights fingerprint, the dtype, the image processor's class and
configuration, and the versions of Pillow and transformers, which decode and
preprocess the image. When any of these changes, the key changes and the old
entry is never served.

On disk, each entry is one file, ``<folder>/<key[:2]>/<key>.emb``::

    magic (8 bytes) | header length (uint32, little-endian) | JSON header | float32 payload (little-endian)

The JSON header records the key, the dimension and the SHA-256 of the payload.
A file is written to a temporary name in its destination folder and renamed
into place with ``os.replace``, so concurrent readers see the old file, the new
file or none, never part of one. Two processes writing the same key both write
a complete file, and the last rename wins. A file that fails any check (magic,
header, key, length, checksum, finite values, dimension) is logged and treated
as a miss. Entries are never pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from i0tscore.fileio import sha256_file
from i0tscore.images import ImageInput

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the entry format and key layout. It is part of every key, so raising it retires all old entries."""

MAGIC = b"I0TEMB1\n"
_LENGTH = struct.Struct("<I")
_MAX_HEADER_BYTES = 4096
_KEY_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = ".emb"
_COMMIT_PATTERN = re.compile(r"^[0-9a-f]{40}$")

CacheLike = Union[None, str, "os.PathLike[str]", "EmbeddingCache"]


@dataclass(frozen=True)
class CacheStats:
    """Counts of cache lookups and failures since the cache object was created.

    Attributes:
        hits: lookups served from memory or disk.
        misses: lookups with no usable entry, corrupt entries included.
        disk_hits: the part of ``hits`` read from disk.
        corrupt: disk entries rejected by a check and treated as misses.
        write_errors: disk writes that failed; the entry was kept in memory only.
    """

    hits: int = 0
    misses: int = 0
    disk_hits: int = 0
    corrupt: int = 0
    write_errors: int = 0


class EmbeddingCache:
    """Image embeddings by key, in memory and optionally in ``folder``.

    The cache is safe to share between threads. Several processes may share
    one ``folder``, because every file is written atomically and checked on
    read.

    Args:
        folder: where entries are stored on disk; None keeps them in memory only.
            The folder is created when the first entry is written.
        max_memory_items: keep at most this many entries in memory, dropping
            the least recently used; None keeps all. Disk entries are never removed.

    Example:
        >>> cache = EmbeddingCache("~/.cache/i0tscore/embeddings")  # doctest: +SKIP
        >>> key = cache.key(image_content_hash("cat.jpg"), scorer.encoder)  # doctest: +SKIP
        >>> cache.get(key)  # doctest: +SKIP
    """

    def __init__(self, folder: Union[None, str, "os.PathLike[str]"] = None, *, max_memory_items: Optional[int] = None) -> None:
        if max_memory_items is not None and (not isinstance(max_memory_items, int) or max_memory_items < 0):
            raise ValueError(f"max_memory_items must be None or a non-negative integer, got {max_memory_items!r}.")
        self.folder: Optional[Path] = Path(folder).expanduser() if folder is not None else None
        self.max_memory_items = max_memory_items
        self._memory: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._lock = threading.Lock()
        self._counts = {field: 0 for field in CacheStats.__dataclass_fields__}

    def __repr__(self) -> str:
        return f"EmbeddingCache(folder={str(self.folder) if self.folder else None!r}, max_memory_items={self.max_memory_items!r})"

    # ------------------------------------------------------------------ keys

    @staticmethod
    def key(content_hash: str, encoder: Any) -> str:
        """Combine an image's content hash with what decides its embedding under ``encoder``.

        Args:
            content_hash: the value of :func:`image_content_hash` for the image.
            encoder: a :class:`~i0tscore.model.ClipEncoder` (or any object with
                ``identity``, ``dtype_name`` and ``image_processor``).

        Returns:
            64 hexadecimal digits, used as the file name on disk.

        Raises:
            ValueError: the encoder's model cannot be pinned down (see :meth:`check_encoder`).
        """
        if not isinstance(content_hash, str) or not content_hash:
            raise ValueError(f"content_hash must be a non-empty string, got {content_hash!r}.")
        return _combine(encoder_fingerprint(encoder), content_hash)

    @staticmethod
    def check_encoder(encoder: Any) -> None:
        """Raise ValueError unless the encoder's weights are pinned by a fingerprint or a commit.

        A hub model loaded by branch or tag name without a resolved commit has
        no weights fingerprint, so its weights could change under the same key.
        """
        identity = encoder.identity
        if identity.weights_sha256:
            return
        if identity.revision and _COMMIT_PATTERN.match(identity.revision):
            return
        raise ValueError(
            f"Cannot cache embeddings of {identity.describe()}: the model has no weights fingerprint and "
            f"revision {identity.revision!r} is not a commit hash, so its weights could change under the "
            f"same key. Pass a local checkpoint folder or revision=<40-digit commit hash>, or use cache=None."
        )

    def keys_for(self, images: Sequence[ImageInput], encoder: Any) -> list[Optional[str]]:
        """Key each image, or None where the image cannot be hashed.

        An image that cannot be hashed (a missing file, an unsupported type) is
        left to the loader, which reports it in the usual way.
        """
        fingerprint = encoder_fingerprint(encoder)
        keys: list[Optional[str]] = []
        for image in images:
            try:
                content = image_content_hash(image)
            except (OSError, TypeError, ValueError) as err:
                logger.debug("Not caching an image that cannot be hashed: %s", err)
                keys.append(None)
                continue
            keys.append(_combine(fingerprint, content))
        return keys

    # ------------------------------------------------------------------ lookups

    def get(self, key: str, *, dim: Optional[int] = None) -> Optional[np.ndarray]:
        """Return a float32 copy of the embedding stored under ``key``, or None.

        Args:
            key: a key from :meth:`key`.
            dim: when given, an entry of another dimension is treated as a miss.
        """
        _check_key(key)
        with self._lock:
            vector = self._memory.get(key)
            if vector is not None and (dim is None or vector.shape[0] == dim):
                self._memory.move_to_end(key)
                self._counts["hits"] += 1
                return vector.copy()

        vector = self._read(key, dim) if self.folder is not None else None
        with self._lock:
            if vector is None:
                self._counts["misses"] += 1
                return None
            self._counts["hits"] += 1
            self._counts["disk_hits"] += 1
            self._remember(key, vector)
        return vector.copy()

    def put(self, key: str, embedding: Any) -> None:
        """Store a 1-D finite embedding under ``key``, in memory and on disk.

        A failed disk write is logged and counted in ``stats.write_errors``; the
        entry then stays in memory only.

        Raises:
            ValueError: an invalid key, or an embedding that is not 1-D, empty or not finite.
        """
        _check_key(key)
        vector = _as_vector(embedding)
        with self._lock:
            self._remember(key, vector)
        if self.folder is not None:
            self._write(key, vector)

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the hit, miss and error counts."""
        with self._lock:
            return CacheStats(**self._counts)

    def clear_memory(self) -> None:
        """Drop every entry held in memory; entries on disk stay."""
        with self._lock:
            self._memory.clear()

    def __len__(self) -> int:
        """Number of entries held in memory."""
        with self._lock:
            return len(self._memory)

    # ------------------------------------------------------------------ encoding

    def encode_images(
        self,
        images: Sequence[ImageInput],
        encoder: Any,
        encode_misses: Callable[[list[ImageInput]], tuple[Any, dict[int, str]]],
        progress: Any = None,
    ) -> tuple[Any, dict[int, str]]:
        """Embed ``images``, taking hits from the cache and encoding only the misses.

        Args:
            images: the images to embed.
            encoder: the :class:`~i0tscore.model.ClipEncoder` that produced or
                will produce the embeddings.
            encode_misses: a function that encodes a list of M images. It
                returns an (M, D) float32 tensor and a dict from row to error
                message for the images that failed to load. Failed rows are
                neither used nor cached.
            progress: an optional tqdm-like bar, advanced by the number of hits.

        Returns:
            An (N, D) float32 tensor in the order of ``images``, and a dict from
            row to error message for the images that failed.
        """
        import torch

        keys = self.keys_for(images, encoder)
        embeds = torch.zeros((len(images), encoder.dim), dtype=torch.float32)
        missing: list[int] = []
        for row, key in enumerate(keys):
            vector = self.get(key, dim=encoder.dim) if key is not None else None
            if vector is None:
                missing.append(row)
            else:
                embeds[row] = torch.from_numpy(vector)
        if progress is not None and len(images) > len(missing):
            progress.update(len(images) - len(missing))
        if not missing:
            return embeds, {}

        encoded, failed = encode_misses([images[row] for row in missing])
        failures = {missing[index]: message for index, message in failed.items()}
        for index, row in enumerate(missing):
            if index in failed:
                continue
            embeds[row] = encoded[index]
            if keys[row] is not None:
                self.put(keys[row], encoded[index].numpy())
        return embeds, failures

    # ------------------------------------------------------------------ memory and disk

    def _remember(self, key: str, vector: np.ndarray) -> None:
        # Called with self._lock held.
        if self.max_memory_items == 0:
            return
        self._memory[key] = vector
        self._memory.move_to_end(key)
        if self.max_memory_items is not None:
            while len(self._memory) > self.max_memory_items:
                self._memory.popitem(last=False)

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}{_SUFFIX}"

    def _read(self, key: str, dim: Optional[int]) -> Optional[np.ndarray]:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        except OSError as err:
            logger.warning("Cannot read cache entry %s (%s); treating it as a miss.", path, err)
            return None
        try:
            return decode_entry(data, key, dim)
        except ValueError as err:
            with self._lock:
                self._counts["corrupt"] += 1
            logger.warning("Ignoring corrupt cache entry %s: %s. It is replaced when the image is encoded again.", path, err)
            return None

    def _write(self, key: str, vector: np.ndarray) -> None:
        path = self._path(key)
        tmp_name = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(encode_entry(key, vector))
            # No fsync: a file cut short by a crash fails the checksum on read
            # and counts as a miss, so durability would only cost time.
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as err:
            with self._lock:
                self._counts["write_errors"] += 1
                first = self._counts["write_errors"] == 1
            # The first failure is a warning; repeats (a full or read-only disk) go to debug.
            log = logger.warning if first else logger.debug
            log("Cannot write cache entry %s (%s); keeping it in memory only.", path, err)
        finally:
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass


# ---------------------------------------------------------------------- entries


def encode_entry(key: str, vector: np.ndarray) -> bytes:
    """Serialize one entry: magic, header length, JSON header, little-endian float32 payload."""
    payload = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "format": FORMAT_VERSION,
            "key": key,
            "dim": int(vector.shape[0]),
            "dtype": "float32",
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        },
        sort_keys=True,
    ).encode("utf-8")
    return MAGIC + _LENGTH.pack(len(header)) + header + payload


def decode_entry(data: bytes, key: str, dim: Optional[int] = None) -> np.ndarray:
    """Parse and check one entry written by :func:`encode_entry`.

    Raises:
        ValueError: the data is truncated, altered, written for another key,
            of another dimension than ``dim``, or not finite.
    """
    prefix = len(MAGIC) + _LENGTH.size
    if len(data) < prefix or not data.startswith(MAGIC):
        raise ValueError(f"missing the {MAGIC!r} file signature ({len(data)} bytes)")
    (header_length,) = _LENGTH.unpack_from(data, len(MAGIC))
    if header_length > _MAX_HEADER_BYTES or len(data) < prefix + header_length:
        raise ValueError(f"header of {header_length} bytes is longer than the file allows")
    try:
        header = json.loads(data[prefix : prefix + header_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"unreadable header ({err})") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    if header.get("format") != FORMAT_VERSION or header.get("dtype") != "float32":
        raise ValueError(
            f"format {header.get('format')!r} with dtype {header.get('dtype')!r}; expected format {FORMAT_VERSION} and float32"
        )
    if header.get("key") != key:
        raise ValueError(f"entry was written for key {header.get('key')!r}")
    entry_dim = header.get("dim")
    if not isinstance(entry_dim, int) or entry_dim < 1:
        raise ValueError(f"invalid dimension {entry_dim!r}")
    if dim is not None and entry_dim != dim:
        raise ValueError(f"dimension {entry_dim}, but the model's is {dim}")

    payload = data[prefix + header_length :]
    if len(payload) != 4 * entry_dim:
        raise ValueError(f"payload is {len(payload)} bytes; expected {4 * entry_dim} for dimension {entry_dim}")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise ValueError("payload checksum does not match the header")
    vector = np.frombuffer(payload, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        raise ValueError("payload contains NaN or infinite values")
    return vector


# ---------------------------------------------------------------------- hashing


def image_content_hash(image: ImageInput) -> str:
    """Hash an image input by its content, prefixed with the kind of input.

    * a path: SHA-256 of the file's bytes (``file-sha256:…``);
    * a PIL image: SHA-256 of its mode, size, pixel bytes, and the palette,
      transparency and EXIF orientation that the loader applies (``pil-sha256:…``);
    * a numpy array or torch tensor: SHA-256 of its dtype, shape and bytes
      (``array-sha256:…`` or ``tensor-sha256:…``). Arrays are read as (H, W, C)
      and tensors as (C, H, W), so the two never share a hash.

    Raises:
        OSError: the file cannot be read.
        TypeError: an unsupported input type.
    """
    if isinstance(image, (str, os.PathLike)):
        return "file-sha256:" + sha256_file(image)

    from PIL import Image

    if isinstance(image, Image.Image):
        return "pil-sha256:" + _pil_digest(image)
    if isinstance(image, np.ndarray):
        return "array-sha256:" + _buffer_digest(str(image.dtype), image.shape, np.ascontiguousarray(image).tobytes())
    if type(image).__module__.startswith("torch"):
        import torch

        # A byte view hashes every dtype, even those numpy lacks (bfloat16).
        tensor = image.detach().cpu().contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        return "tensor-sha256:" + _buffer_digest(str(tensor.dtype), tuple(tensor.shape), raw)
    raise TypeError(f"Cannot hash an image input of type {type(image).__name__}.")


def _buffer_digest(dtype: str, shape: Sequence[int], raw: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(f"{dtype}|{tuple(int(n) for n in shape)}|".encode("ascii"))
    digest.update(raw)
    return digest.hexdigest()


def _pil_digest(image: Any) -> str:
    # The loader converts with the palette, the transparency entry and the
    # EXIF orientation, none of which are in the pixel bytes.
    palette = image.getpalette() if image.mode in ("P", "PA") else None
    try:
        orientation = image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - Pillow raises many types for malformed EXIF
        orientation = "unreadable"
    transparency = image.info.get("transparency")
    digest = hashlib.sha256()
    digest.update(f"{image.mode}|{image.size}|{orientation!r}|{transparency!r}|{palette!r}|".encode("utf-8"))
    digest.update(image.tobytes())
    return digest.hexdigest()


def encoder_fingerprint(encoder: Any) -> dict[str, Any]:
    """Collect the key parts that describe the encoder: model, weights, dtype, image processor, library versions.

    Raises:
        ValueError: the model's weights are not pinned (see :meth:`EmbeddingCache.check_encoder`).
    """
    import PIL
    import transformers

    EmbeddingCache.check_encoder(encoder)
    processor = encoder.image_processor
    processor_class = f"{type(processor).__module__}.{type(processor).__qualname__}"
    config = processor.to_dict() if hasattr(processor, "to_dict") else vars(processor)
    return {
        "format": FORMAT_VERSION,
        "model_id": encoder.identity.model_id,
        "revision": encoder.identity.revision,
        "weights_sha256": encoder.identity.weights_sha256,
        "dtype": encoder.dtype_name,
        "processor_class": processor_class,
        # default=repr turns enums and other non-JSON values into stable strings.
        "processor_config": json.dumps(config, sort_keys=True, default=repr),
        "pillow": PIL.__version__,
        "transformers": transformers.__version__,
    }


def _combine(fingerprint: dict[str, Any], content_hash: str) -> str:
    parts = dict(fingerprint, content=content_hash)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def resolve_cache(cache: CacheLike) -> Optional[EmbeddingCache]:
    """Accept None, an :class:`EmbeddingCache` or a folder path, as ``I0TScore(cache=...)`` does."""
    if cache is None or isinstance(cache, EmbeddingCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return EmbeddingCache(cache)
    raise TypeError(f"cache must be None, an EmbeddingCache or a folder path, got {type(cache).__name__}.")


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_PATTERN.match(key):
        raise ValueError(f"Invalid cache key {key!r}; expected 64 hexadecimal digits from EmbeddingCache.key().")


def _as_vector(embedding: Any) -> np.ndarray:
    if hasattr(embedding, "detach"):
        embedding = embedding.detach().cpu().float().numpy()
    vector = np.array(embedding, dtype=np.float32)
    if vector.ndim != 1 or vector.shape[0] == 0:
        raise ValueError(f"Embedding must be a non-empty 1-D vector, got shape {vector.shape}.")
    if not np.isfinite(vector).all():
        raise ValueError("Embedding contains NaN or infinite values; it is not cached.")
    vector.setflags(write=False)
    return vector
