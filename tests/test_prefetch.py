"""Loading one batch ahead in a worker thread: order, overlap, errors and early stops."""

from __future__ import annotations

import threading

import pytest

from i0tscore.prefetch import prefetch

WAIT_S = 10.0


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("i0tscore-prefetch")]


@pytest.mark.parametrize("count", [0, 1, 2, 7])
def test_yields_items_in_order(count):
    got = list(prefetch(range(count), lambda item: item * item))
    assert got == [(item, item * item) for item in range(count)]


def test_accepts_a_one_pass_iterator():
    got = list(prefetch(iter("abc"), str.upper))
    assert got == [("a", "A"), ("b", "B"), ("c", "C")]


def test_loads_off_the_calling_thread():
    caller = threading.get_ident()
    loaders = [thread for _, thread in prefetch(range(3), lambda _: threading.get_ident())]
    assert caller not in loaders


def test_loads_next_item_during_use():
    second_started = threading.Event()

    def load(item):
        if item == 1:
            second_started.set()
        return item

    for item, _ in prefetch(range(3), load):
        if item == 0:
            # A loader that ran only on demand would deadlock here; the timeout
            # turns that into a failure.
            assert second_started.wait(WAIT_S), "item 1 did not start loading while item 0 was held"


def test_loads_at_most_one_item_ahead():
    loaded = []
    consumed = []

    def load(item):
        loaded.append(item)
        return item

    for item, _ in prefetch(range(6), load):
        consumed.append(item)
        assert len(loaded) <= len(consumed) + 1


def test_load_error_after_earlier_items():
    def load(item):
        if item == 3:
            raise ValueError(f"cannot load {item}")
        return item

    received = []
    with pytest.raises(ValueError, match="cannot load 3"):
        for item, _ in prefetch(range(6), load):
            received.append(item)
    assert received == [0, 1, 2]
    assert not _prefetch_threads()


def test_early_close_stops_loading():
    loaded = []
    started = threading.Event()
    release = threading.Event()

    def load(item):
        loaded.append(item)
        if item == 1:
            started.set()
            release.wait(WAIT_S)
        return item

    items = prefetch(range(100), load)
    assert next(items) == (0, 0)
    assert started.wait(WAIT_S)
    release.set()
    items.close()
    assert not _prefetch_threads()
    assert loaded == [0, 1]


def test_caller_error_stops_loading():
    loaded = []

    def load(item):
        loaded.append(item)
        return item

    def consume():
        for item, _ in prefetch(range(100), load):
            if item == 2:
                raise RuntimeError("caller failed")

    with pytest.raises(RuntimeError, match="caller failed"):
        consume()
    assert max(loaded) <= 3
    assert not _prefetch_threads()
