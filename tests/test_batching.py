"""`batching.Behind`: work that follows a stream on its own thread, in order."""

from __future__ import annotations

import threading
import time

import pytest

from bnorm_cli.core.batching import Behind


def test_calls_run_in_submission_order_on_one_thread() -> None:
    seen: list[int] = []
    threads: set[int] = set()

    def work(i: int) -> None:
        time.sleep(0.001 * (i % 3))  # uneven work must not reorder the calls
        seen.append(i)
        threads.add(threading.get_ident())

    behind = Behind(work, depth=3)
    for i in range(50):
        behind.submit(i)
    behind.close()
    assert seen == list(range(50))
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_the_submitter_waits_when_depth_calls_are_pending() -> None:
    release = threading.Event()
    started: list[int] = []

    def work(i: int) -> None:
        started.append(i)
        release.wait(5)

    behind = Behind(work, depth=2)
    behind.submit(0)
    behind.submit(1)
    done = threading.Event()

    def third() -> None:
        behind.submit(2)  # three pending: waits until the first is done
        done.set()

    t = threading.Thread(target=third)
    t.start()
    assert not done.wait(0.2)
    release.set()
    assert done.wait(5)
    t.join()
    behind.close()
    assert started == [0, 1, 2]


def test_an_error_reaches_the_submitter_and_later_calls_do_not_run() -> None:
    ran: list[int] = []

    def work(i: int) -> None:
        if i == 3:
            raise ValueError("piece 3")
        ran.append(i)

    behind = Behind(work, depth=1)
    with pytest.raises(ValueError, match="piece 3"):
        for i in range(100):
            behind.submit(i)
    behind.cancel()
    time.sleep(0.05)
    assert 3 not in ran and len(ran) < 10


def test_close_raises_the_error_of_a_pending_call() -> None:
    def work(i: int) -> None:
        raise KeyError(i)

    behind = Behind(work, depth=4)
    behind.submit(7)
    with pytest.raises(KeyError):
        behind.close()


def test_joined_frames_reach_their_rows_or_bytes_and_keep_every_row() -> None:
    """Small pieces are joined (a wide file's), large ones pass alone; rows of frames
    without columns still count; the joined frame is the pieces in order."""
    import numpy as np
    import polars as pl

    from bnorm_cli.core.batching import Joined

    def piece(first: int, n: int, width: int = 2) -> pl.DataFrame:
        values = {f"c{j}": np.arange(first, first + n) * (j + 1.0) for j in range(width)}
        return pl.DataFrame(values)

    joined = Joined(rows=100, nbytes=10_000)
    out = [joined.add(piece(0, 40), 0, 40), joined.add(piece(40, 40), 40, 40)]
    assert out == [None, None]
    full = joined.add(piece(80, 30), 80, 30)
    assert full is not None
    frame, first, rows = full
    assert (first, rows) == (0, 110) and frame.equals(piece(0, 110))
    assert frame["c0"].n_chunks() == 1  # one contiguous chunk per column
    alone = joined.add(piece(110, 150), 110, 150)  # enough rows on its own
    assert alone is not None and alone[1:] == (110, 150)
    wide = joined.add(piece(260, 20, width=100), 260, 20)  # 16,000 bytes: full by size
    assert wide is not None and wide[1:] == (260, 20)
    assert joined.add(pl.DataFrame(), 280, 60) is None  # no columns: rows counted
    rest = joined.flush()
    assert rest is not None and rest[1:] == (280, 60)
    assert joined.flush() is None
