"""Score a list of items in resumable chunks, for long command-line runs.

Items are split into chunks of whole image groups, so an image shared by several
captions is still encoded once. After each chunk its records are appended to a
partial file (JSON lines, flushed and synced). An interrupted run started again
with ``resume=True`` reads that file and scores only the items it lacks.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from i0tscore.fileio import sha256_bytes
from i0tscore.images import ImageLoadError, content_key
from i0tscore.inputs import Item
from i0tscore.scorer import I0TScore

logger = logging.getLogger(__name__)

PARTIAL_FORMAT = "i0tscore-scores-partial"
DEFAULT_CHUNK_SIZE = 1024
"""Items per chunk: the most work an interruption can lose."""


def chunk_by_image(items: Sequence[Item], chunk_size: int) -> list[list[int]]:
    """Item indices in chunks of about ``chunk_size``, never splitting an image's items."""
    groups: dict[Any, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(content_key(item.image), []).append(index)

    chunks: list[list[int]] = [[]]
    for indices in groups.values():
        if chunks[-1] and len(chunks[-1]) + len(indices) > chunk_size:
            chunks.append([])
        chunks[-1].extend(indices)
    return [chunk for chunk in chunks if chunk]


def _fingerprint(items: Sequence[Item], signature: str) -> str:
    listing = [[item.id, str(item.image), item.caption, item.references] for item in items]
    return sha256_bytes(json.dumps({"items": listing, "signature": signature}, sort_keys=True).encode())


def score_items(
    scorer: I0TScore,
    items: Sequence[Item],
    *,
    partial: Optional[Union[str, os.PathLike]] = None,
    resume: bool = False,
    on_error: str = "raise",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[dict[str, Any]]:
    """Score ``items`` and return one record per item, in input order.

    Args:
        scorer: the scorer to use.
        items: the items, e.g. from :func:`i0tscore.inputs.read_candidates`.
        partial: a JSON-lines file that receives each finished chunk; None
            scores everything in one call and keeps nothing on disk.
        resume: continue from ``partial`` instead of starting over.
        on_error: ``"raise"`` or ``"skip"``, as in :meth:`I0TScore.score`.
        chunk_size: items per chunk.

    Raises:
        ValueError: ``resume`` with ``stats="corpus"`` (the means depend on the
            whole set), or a partial file written for other items or settings.
        ImageLoadError: an unreadable image, with ``on_error="raise"``.
    """
    references_given = items[0].references is not None if items else False
    if scorer.uses_corpus_means:
        # Means taken from the scored set need every item at once.
        if resume:
            raise ValueError("--resume needs fixed statistics; with --stats corpus every score depends on the whole set.")
        return _score_chunk(scorer, items, list(range(len(items))), references_given, on_error)

    fingerprint = _fingerprint(items, scorer.signature)
    done: dict[int, dict[str, Any]] = {}
    if partial is not None and resume and Path(partial).is_file():
        done = _read_partial(partial, fingerprint)
        logger.info("Resuming from %s: %d of %d items already scored", partial, len(done), len(items))

    handle = _open_partial(partial, fingerprint, append=bool(done)) if partial is not None else None
    try:
        for chunk in chunk_by_image(items, chunk_size):
            todo = [index for index in chunk if index not in done]
            if not todo:
                continue
            records = _score_chunk(scorer, items, todo, references_given, on_error)
            for index, record in zip(todo, records):
                done[index] = record
                if handle is not None:
                    handle.write(json.dumps({"index": index, "record": record}, ensure_ascii=False) + "\n")
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
    finally:
        if handle is not None:
            handle.close()
    return [done[index] for index in range(len(items))]


def _score_chunk(
    scorer: I0TScore, items: Sequence[Item], indices: list[int], references_given: bool, on_error: str
) -> list[dict[str, Any]]:
    chunk = [items[index] for index in indices]
    references = [item.references for item in chunk] if references_given else None
    try:
        result = scorer.score([item.image for item in chunk], [item.caption for item in chunk], references, on_error=on_error)
    except ImageLoadError as err:
        failed = next((item for item in chunk if str(item.image) in str(err)), None)
        where = f"item {failed.id!r}: " if failed is not None else ""
        raise ImageLoadError(f"{where}{err}") from err

    records = []
    for item, record in zip(chunk, result.to_records(ids=[item.id for item in chunk])):
        record.pop("id")
        records.append({"id": item.id, "image": str(item.image), "caption": item.caption, "signature": result.signature, **record})
    return records


def _open_partial(path: Union[str, os.PathLike], fingerprint: str, *, append: bool):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if append:
        return open(path, "a", encoding="utf-8")
    handle = open(path, "w", encoding="utf-8")
    handle.write(json.dumps({"format": PARTIAL_FORMAT, "fingerprint": fingerprint}) + "\n")
    return handle


def _read_partial(path: Union[str, os.PathLike], fingerprint: str) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = {}
    if header.get("format") != PARTIAL_FORMAT or header.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{path} contains scores of other items, model, statistics or settings. Delete it to start over, "
            f"or resume with the original input and options."
        )
    for line in lines[1:]:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            # The run was interrupted while writing this line; its chunk is scored again.
            logger.info("Ignoring an incomplete line in %s", path)
            break
        done[int(entry["index"])] = entry["record"]
    return done


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts, mean I0T-S, mean CLIP-S and the signature of scored records."""
    scored = [record for record in records if "error" not in record]

    def mean(key: str) -> float:
        values = [record[key] for record in scored if key in record]
        return math.fsum(values) / len(values) if values else float("nan")

    signatures = sorted({record["signature"] for record in scored})
    return {
        "items": len(records),
        "scored": len(scored),
        "skipped": len(records) - len(scored),
        "truncated": sum(1 for record in records if record.get("truncated")),
        "mean_i0t_s": mean("i0t_s"),
        "mean_clip_s": mean("clip_s"),
        "signature": signatures[0] if len(signatures) == 1 else signatures,
    }
