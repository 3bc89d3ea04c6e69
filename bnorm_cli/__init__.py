"""bnorm: Batch Normalization for tabular data larger than memory."""

__version__ = "0.1.0"

from .model import BatchNorm

__all__ = ["BatchNorm", "__version__"]
