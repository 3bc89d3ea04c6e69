"""The public Python API: the core `BatchNorm` plus reading and writing its statistics file.

The model itself (`core.model`) does no I/O; saving and loading live here, one
layer up, so the core never imports the file formats.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import polars as pl
import pyarrow as pa

from .core import model as _core
from .core.scalers import Quantiles
from .engines.quantiles import column_quantiles
from .io import stats_file


class BatchNorm(_core.BatchNorm):
    __doc__ = _core.BatchNorm.__doc__

    def fit(self, data: _core.Data | Iterable[_core.Data]) -> BatchNorm:
        """Reset, then account for every batch of ``batch_size`` rows. A median or
        IQR choice also needs quantiles: a frame or a sequence of frames is read
        again (exact); a one-pass iterator gives approximate ones (see warnings_)."""
        if not self.scaling.needs_quantiles:
            super().fit(data)
            return self
        probs = self.scaling.probs
        if isinstance(data, pl.DataFrame | pa.Table | pa.RecordBatch | Sequence):
            super().fit(data)
            columns = self.columns_

            def passes() -> Iterator[pl.DataFrame]:
                for chunk in self.iter_batches(data, _core.chunk_rows(self.batch_size)):
                    yield self.fitted_values(chunk)

            result = column_quantiles(passes, columns, probs)
        else:
            chunks = self.fitting(data)
            first = next(chunks, None)  # the columns are known once the first chunk is in

            def one_pass() -> Iterator[pl.DataFrame]:
                if first is not None:
                    yield self.fitted_values(first)
                for chunk in chunks:
                    yield self.fitted_values(chunk)

            if first is None:
                return self
            result = column_quantiles(one_pass, self.columns_, probs, one_pass=True)
            for _ in chunks:  # the statistics need every row, whatever the quantiles read
                pass
        q = Quantiles(probs, result.values, result.exact, result.rank_error)
        self.set_quantiles(q, "fit", "for exact ones pass a frame or a list of frames")
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics file (atomically)."""
        stats_file.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BatchNorm:
        """Read a statistics file written by ``save`` or ``bnorm fit``."""
        return stats_file.load(path, cls)
