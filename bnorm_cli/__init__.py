"""bnorm: Batch Normalization for tabular data larger than memory.

The package is layered; imports point down only (tests/test_layers.py):
``core`` (moments, fold, maps, the model: no I/O) < ``io`` (plan, readers,
writers, statistics file) < ``engines`` (serial) and ``report`` < ``api`` (the
public `BatchNorm` with save/load) < ``cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:
    from .api import BatchNorm

__all__ = ["BatchNorm", "__version__"]


def __getattr__(name: str) -> object:
    """`BatchNorm` is imported on first use, so that importing a subpackage (the
    command line, `cli`) does not load numpy before that subpackage sets it up."""
    if name == "BatchNorm":
        from .api import BatchNorm

        globals()["BatchNorm"] = BatchNorm
        return BatchNorm
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
