"""Reused work arrays, one set per thread.

A fresh chunk-sized array (64k float64 = 512 KB) is allocated by the C library
with new pages from the kernel, so every call pays a page fault per 4 KB: for a
pass such as ``dev * dev`` that costs several times the arithmetic. The moments
and the sketch write their temporaries into these arrays instead (``out=``).
Their content never leaks into a result: a caller writes every element it reads.
"""

from __future__ import annotations

import threading

import numpy as np

#: Arrays above this many bytes are not kept (a huge batch's would stay allocated).
KEEP_BYTES = 64 << 20

_local = threading.local()


def scratch(name: str, size: int, dtype: type = np.float64) -> np.ndarray:
    """A work array of ``size`` elements for ``name`` in this thread (uninitialized).

    Two names never share memory; the same name returns the same memory, so a
    caller uses one name per temporary it holds at once.
    """
    arrays: dict[str, np.ndarray] | None = getattr(_local, "arrays", None)
    if arrays is None:
        arrays = _local.arrays = {}
    have = arrays.get(name)
    if have is None or have.size < size or have.dtype != dtype:
        have = np.empty(size, dtype)
        if have.nbytes > KEEP_BYTES:
            return have
        arrays[name] = have
    return have[:size]
