"""saltseg.utils.threads.prefetch: order kept, errors raised where they happen, early exit stops it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from saltseg.utils.threads import prefetch


def test_prefetch_keeps_order_and_reads_ahead() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(10):
            produced.append(i)
            yield i

    got = []
    for item in prefetch(items(), depth=2):
        if item == 0:
            deadline = time.monotonic() + 5
            while len(produced) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(produced) >= 3  # item 0 taken, two more waiting: read ahead of the consumer
        got.append(item)
    assert got == list(range(10))


def test_prefetch_raises_the_producers_error_at_its_item() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("tile 3 is corrupt")

    got = []
    with pytest.raises(ValueError, match="tile 3 is corrupt"):
        for item in prefetch(items()):
            got.append(item)
    assert got == [1, 2]


def test_leaving_early_stops_the_producer() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    gen = prefetch(items(), depth=2)
    assert next(gen) == 0
    gen.close()
    time.sleep(0.2)
    assert len(produced) <= 5
    assert not any(t.name == "saltseg-prefetch" and t.is_alive() for t in threading.enumerate())
