"""bnorm: Batch Normalization for tabular data larger than memory.

The package is layered; imports point down only (tests/test_layers.py):
``core`` (moments, fold, maps, the model: no I/O) < ``io`` (plan, readers,
writers, statistics file) < ``engines`` (serial) and ``report`` < ``api`` (the
public `BatchNorm` with save/load) < ``cli``.
"""

from .api import BatchNorm
from .version import __version__

__all__ = ["BatchNorm", "__version__"]
