"""`BatchNormScaler`: bnorm's `BatchNorm` as a scikit-learn transformer.

Needs the ``sklearn`` extra (``pip install "bnorm[sklearn]"``). The numerics are
`BatchNorm`'s (no second implementation): the estimator validates ``X`` the
scikit-learn way (numeric 2-D, NaN allowed and treated as missing, inf refused,
feature names and counts checked), hands it to a `BatchNorm` as a polars frame
and returns its result as a float64 array, or a pandas/polars frame after
``set_output(transform="pandas"|"polars")``.

* ``fit(X)`` = reset + ``BatchNorm.fit``: ``X`` cut into ``batch_size``-row
  mini-batches in row order (the running statistics see one update per batch);
* ``partial_fit(X)``: ``X`` is ONE mini-batch (``BatchNorm.partial_fit``);
* ``transform``/``inverse_transform``: inference mode with the ``use``
  statistics (``"population"``: the exact mean and ddof=0 variance, as
  StandardScaler; ``"running"``: PyTorch's running statistics).

Column selection (bnorm's ``columns``/``exclude``) is not a parameter: in
scikit-learn that is ColumnTransformer's job, and every feature is scaled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .api import BatchNorm
from .core.errors import BnormError
from .core.model import DEFAULT_BATCH_SIZE, Use

__all__ = ["BatchNormScaler"]


class BatchNormScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Batch Normalization (bnorm's `BatchNorm`) as a scikit-learn transformer.

    Parameters are `BatchNorm`'s and are validated at ``fit``, as scikit-learn
    does: ``batch_size`` rows per mini-batch in ``fit``; ``momentum`` a number
    in [0, 1] or ``None``/``"cumulative"``; ``eps`` added to the variance;
    ``gamma``/``beta`` a number or ``{feature name: value}`` (``"*"`` for the
    others); ``use`` which statistics ``transform`` applies, ``"population"``
    or ``"running"``; ``sketch`` also records each feature's distribution
    summary (for ``bnorm drift`` once saved). ``center`` ("mean", "median",
    "none"; default: the scale's own), ``scale`` ("std", "iqr", "range",
    "maxabs", "none"), ``feature_range`` (for "range", default (0, 1)) and
    ``quantile_range`` (for "iqr", default (25, 75)) choose the map as
    `BatchNorm` does: StandardScaler, MinMaxScaler, MaxAbsScaler (center "none",
    scale "maxabs") and RobustScaler (center "median", scale "iqr"; ``fit`` only:
    quantiles cannot be updated one ``partial_fit`` batch at a time).

    Attributes (after fit): ``model_`` (the fitted `bnorm_cli.BatchNorm`; its
    ``save`` writes a statistics file the CLI reads), ``mean_`` and ``var_``
    (population, ddof=0), ``running_mean_``, ``running_var_``, ``scale_`` (the
    applied divisor ``sqrt(var + eps) / gamma`` of the ``use`` statistics),
    ``n_samples_seen_`` (valid values per feature; NaN not counted),
    ``num_batches_tracked_``, ``n_features_in_`` and ``feature_names_in_``.
    """

    def __init__(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        momentum: float | str | None = 0.1,
        eps: float = 1e-5,
        gamma: float | Mapping[str, float] = 1.0,
        beta: float | Mapping[str, float] = 0.0,
        use: str = "population",
        sketch: bool = True,
        center: str | None = None,
        scale: str = "std",
        feature_range: tuple[float, float] | None = None,
        quantile_range: tuple[float, float] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.momentum = momentum
        self.eps = eps
        self.gamma = gamma
        self.beta = beta
        self.use = use
        self.sketch = sketch
        self.center = center
        self.scale = scale
        self.feature_range = feature_range
        self.quantile_range = quantile_range

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN is missing: left out of the statistics, kept
        return tags

    # -- fitting --------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> BatchNormScaler:
        """Reset, then fit ``X`` in ``batch_size``-row mini-batches, in row order."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)
        frame = self._frame(X, reset=True)
        self.model_ = self._new_model()
        _bnorm(lambda: self.model_.fit(frame))
        return self._learned()

    def partial_fit(self, X: Any, y: Any = None) -> BatchNormScaler:
        """Account for ``X`` as one more mini-batch (the first call starts the fit)."""
        first = not hasattr(self, "model_")
        frame = self._frame(X, reset=first)
        if first:
            self.model_ = self._new_model()
        _bnorm(lambda: self.model_.partial_fit(frame))
        return self._learned()

    # -- transforming --------------------------------------------------------------
    def transform(self, X: Any, copy: bool | None = None) -> np.ndarray:
        """Normalize with the fitted ``use`` statistics (BN inference mode)."""
        check_is_fitted(self)
        frame = self._frame(X, reset=False)
        out = _bnorm(lambda: self.model_.transform(frame, use=self._use()))
        return _array(out)

    def inverse_transform(self, X: Any, copy: bool | None = None) -> np.ndarray:
        """Map normalized data back to the original units."""
        check_is_fitted(self)
        frame = self._frame(X, reset=False, names=False)  # as StandardScaler: X is output
        out = _bnorm(lambda: self.model_.inverse_transform(frame, use=self._use()))
        return _array(out)

    # -- helpers ---------------------------------------------------------------------
    def _use(self) -> Use:
        if self.use not in ("population", "running"):
            raise ValueError(f'use must be "population" or "running", got {self.use!r}')
        return self.use  # type: ignore[return-value]

    def _new_model(self) -> BatchNorm:
        self._use()
        return _bnorm(
            lambda: BatchNorm(
                batch_size=self.batch_size,
                momentum=self.momentum,
                eps=self.eps,
                gamma=self.gamma,
                beta=self.beta,
                sketch=self.sketch,
                center=self.center,
                scale=self.scale,
                feature_range=self.feature_range,
                quantile_range=self.quantile_range,
            )
        )

    def _frame(self, X: Any, reset: bool, names: bool = True) -> pl.DataFrame:
        """``X`` validated (numeric, 2-D, no inf) as a float64 polars frame named by
        the fitted feature names (positional names ``x0, x1, ...`` without them).
        ``names``: check X's feature names against the fitted ones."""
        how = {"dtype": np.float64, "ensure_all_finite": "allow-nan", "copy": False}
        if names:
            array = validate_data(self, X, reset=reset, **how)
        else:
            array = check_array(X, **how)
            if array.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {array.shape[1]} features, but {type(self).__name__} is expecting"
                    f" {self.n_features_in_} features as input"
                )
        if reset:
            fitted = getattr(self, "feature_names_in_", None)
            listed = [str(n) for n in fitted] if fitted is not None else []
            unique = len(set(listed)) == len(listed) == array.shape[1]
            self._columns = listed if unique else [f"x{j}" for j in range(array.shape[1])]
        return pl.DataFrame(
            [pl.Series(c, array[:, j], pl.Float64) for j, c in enumerate(self._columns)]
        )

    def _learned(self) -> BatchNormScaler:
        """The StandardScaler-like fitted attributes, read from ``model_``."""
        model, cols = self.model_, self._columns
        pop, run = model.population_, model.running_
        self.mean_ = np.array([pop[c].mean for c in cols], np.float64)
        self.var_ = np.array([pop[c].var for c in cols], np.float64)
        self.running_mean_ = np.array([run[c].mean for c in cols], np.float64)
        self.running_var_ = np.array([run[c].var for c in cols], np.float64)
        maps = model.maps(self._use())
        with np.errstate(divide="ignore"):  # gamma 0: an infinite divisor
            self.scale_ = 1.0 / np.array([maps[c].scale for c in cols], np.float64)
        self.n_samples_seen_ = np.array([pop[c].n for c in cols], np.int64)
        self.num_batches_tracked_ = model.num_batches_tracked_
        return self


def _bnorm(call: Any) -> Any:
    """Run ``call``; bnorm's errors become ValueError, as scikit-learn's callers expect."""
    try:
        return call()
    except BnormError as e:
        raise ValueError(str(e)) from e


def _array(out: pl.DataFrame) -> np.ndarray:
    return out.to_numpy().astype(np.float64, copy=False)
