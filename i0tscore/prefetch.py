"""Load the next batch of inputs in a background thread while the model runs the current one.

Pillow releases the GIL while it decodes and resizes an image, and torch
releases it inside each operator, so one worker thread can prepare pixels while
the encoders run. The time this hides matters most on a GPU, where the forward
pass is fast next to decoding on the CPU.

NOTE: measured on CPU only (``benchmarks/prefetch.py``): with a core left free it
hides most of the decoding, and with every core running torch it gains little.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional, TypeVar

T = TypeVar("T")
U = TypeVar("U")

__all__ = ["prefetch"]


def prefetch(items: Iterable[T], load: Callable[[T], U]) -> Iterator[tuple[T, U]]:
    """Yield ``(item, load(item))`` in order, loading the next item while the caller works.

    One item is loaded ahead, so at most two loaded items exist at a time: the
    one the caller is using and the next. An exception raised by ``load`` reaches
    the caller when it requests that item, after every earlier item was yielded,
    exactly as a plain loop would raise it. When the caller stops early (an
    exception of its own, ``break``, or closing the generator), the item
    loading in the background is finished and dropped.
    """
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="i0tscore-prefetch") as pool:
        pending = _submit_next(pool, iterator, load)
        while pending is not None:
            item, future = pending
            result = future.result()
            pending = _submit_next(pool, iterator, load)
            try:
                yield item, result
            except GeneratorExit:
                if pending is not None:
                    pending[1].cancel()
                raise


def _submit_next(
    pool: ThreadPoolExecutor, iterator: Iterator[T], load: Callable[[T], U]
) -> Optional[tuple[T, "Future[U]"]]:
    for item in iterator:
        return item, pool.submit(load, item)
    return None
