"""The public Python API: the core `BatchNorm` plus reading and writing its statistics file.

The model itself (`core.model`) does no I/O; saving and loading live here, one
layer up, so the core never imports the file formats.
"""

from __future__ import annotations

import os

from .core import model as _core
from .io import stats_file


class BatchNorm(_core.BatchNorm):
    __doc__ = _core.BatchNorm.__doc__

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics file (atomically)."""
        stats_file.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BatchNorm:
        """Read a statistics file written by ``save`` or ``bnorm fit``."""
        return stats_file.load(path, cls)
