"""Hand fitted statistics to PyTorch and scikit-learn, without importing either.

* torch: a ``BatchNorm1d`` state_dict (``weight``, ``bias``, ``running_mean``,
  ``running_var``, ``num_batches_tracked``) in a safetensors file; a layer built
  with the same number of features and ``eps`` loads it as is, and in eval mode
  reproduces ``bnorm transform --use running``.
* sklearn: the fitted attributes of the matching scaler as JSON (for mean/std
  a ``StandardScaler``: ``mean_``, ``var_``, ``scale_``, ``n_samples_seen_``,
  ``feature_names_in_``, ...) whose ``transform`` reproduces ``bnorm transform``
  (population statistics). ``scale_`` includes eps and gamma, and ``mean_``
  absorbs beta, so that ``(x - mean_) / scale_`` is exactly bnorm's map. Other
  centre/scale choices name their class in ``"scaler"``: ``MinMaxScaler``
  (``--scale range``), ``RobustScaler`` (``--scale iqr``), ``MaxAbsScaler``
  (``--scale maxabs`` without a centre or beta); any other choice is a
  ``StandardScaler`` with the map's centre and scale, which expresses every
  affine map. Only the population map is exported: torch refuses a choice that
  is not mean/std, whose BatchNorm1d layer could not apply it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.errors import StatsFileError, UsageError, did_you_mean, phrase
from ..core.model import BatchNorm


def pick_columns(model: BatchNorm, columns: Sequence[str] | None) -> list[str]:
    if not columns:
        return list(model.columns_)
    for c in columns:
        if c not in model.columns_:
            raise UsageError(
                f'-c: "{c}" is not a column of the statistics file{did_you_mean(c, model.columns_)}'
            )
    return list(columns)


def _require(model: BatchNorm, held: str, to: str) -> None:
    """Imported statistics hold one kind only (`FitState.imported`): refuse the other."""
    imported = model.imported_
    if imported is not None and imported["statistics"] != held:
        other = "sklearn" if to == "torch" else "torch"
        raise StatsFileError(
            f"the statistics imported from {imported['file']} ({imported['from']}) are"
            f" {imported['statistics']} statistics only; --to {to} needs {held} statistics:"
            f" export them --to {other}"
        )


def torch_state_dict(model: BatchNorm, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays named as in ``torch.nn.BatchNorm1d(len(columns)).state_dict()``."""
    _require(model, "running", "torch")
    if not model.scaling.is_default:
        raise UsageError(
            f"--to torch: a BatchNorm1d layer subtracts a mean and divides by a std, so it"
            f" cannot apply this file's {phrase(model.scaling.describe(), cli=True)}; export it"
            " with --to sklearn, or fit with --center mean --scale std"
        )
    return {
        "weight": np.array([model.gamma_[c] for c in columns], dtype=np.float64),
        "bias": np.array([model.beta_[c] for c in columns], dtype=np.float64),
        "running_mean": np.array([model.running_[c].mean for c in columns], dtype=np.float64),
        "running_var": np.array([model.running_[c].var for c in columns], dtype=np.float64),
        "num_batches_tracked": np.array(model.num_batches_tracked_, dtype=np.int64),
    }


def torch_metadata(model: BatchNorm, columns: Sequence[str]) -> dict[str, str]:
    """safetensors metadata (strings only): what the layer must be built with."""
    momentum = "cumulative" if model.momentum is None else repr(model.momentum)
    return {
        "format": "pt",
        "bnorm": "BatchNorm1d state_dict",
        "num_features": str(len(columns)),
        "eps": repr(model.eps),
        "momentum": momentum,
        "columns": json.dumps(list(columns)),
    }


def save_torch(model: BatchNorm, columns: Sequence[str], path: str) -> None:
    from safetensors.numpy import save

    from .atomic import write_bytes

    # as bytes, then written by bnorm: atomically, or through to a device or FIFO
    state = torch_state_dict(model, columns)
    write_bytes(path, save(state, metadata=torch_metadata(model, columns)))


def sklearn_attributes(model: BatchNorm, columns: Sequence[str]) -> dict[str, Any]:
    """The fitted attributes of the scikit-learn scaler reproducing bnorm's population map.

    For mean/std, ``scale_`` is ``sqrt(var + eps) / gamma`` (StandardScaler's
    ``sqrt(var_)`` when eps is 0 and gamma 1), and the key ``bnorm`` holds what the
    attributes fold together (eps, the two-float mean, gamma, beta, counts, a
    weighted fit's weight sums), so that ``bnorm import`` restores the statistics
    exactly; `load_sklearn_scaler` skips it."""
    _require(model, "population", "sklearn")
    maps = model.maps("population")
    centers, scales, betas = [], [], []
    for c in columns:
        m = maps[c]
        if m.scale == 0.0:
            raise StatsFileError(
                f'column "{c}": gamma is 0; a scikit-learn scaler cannot express it'
            )
        if not model.population_[c].weighs:
            raise StatsFileError(f'column "{c}": no valid values were fitted; leave it out with -c')
        centers.append(m.center_hi + m.center_lo)
        scales.append(m.scale)
        betas.append(m.beta)
    c_, s_, b_ = np.array(centers), np.array(scales), np.array(betas)
    pop = [model.population_[c] for c in columns]
    # scikit-learn's n_samples_seen_ is the weight sum of a fit with sample_weight
    counts: list[float | None] = [  # < 0: not known (imported)
        (p.n if p.n >= 0 else None) if p.weight is None else p.weight for p in pop
    ]
    common: dict[str, Any] = {
        "n_samples_seen_": counts[0] if len(set(counts)) == 1 else counts,
        "n_features_in_": len(columns),
        "feature_names_in_": list(columns),
    }
    choice = model.scaling
    no_shift = choice.center == "none" and not b_.any()
    if choice.scale == "range":  # X * scale_ + min_
        lo, hi = np.array([p.min for p in pop]), np.array([p.max for p in pop])
        return {
            "scaler": "MinMaxScaler",
            "feature_range": list(choice.feature_range),
            "copy": True,
            "clip": False,
            "min_": (b_ - c_ * s_).tolist(),
            "scale_": s_.tolist(),
            "data_min_": lo.tolist(),
            "data_max_": hi.tolist(),
            "data_range_": (hi - lo).tolist(),
            **common,
        }
    if choice.scale == "maxabs" and no_shift:  # X / scale_
        return {
            "scaler": "MaxAbsScaler",
            "copy": True,
            "scale_": (1.0 / s_).tolist(),
            "max_abs_": [max(abs(p.min), abs(p.max)) for p in pop],
            **common,
        }
    center_ = c_ - b_ * (1.0 / s_)  # (x - c) * s + b == (x - center_) / (1 / s)
    if choice.scale == "iqr":  # (X - center_) / scale_
        return {
            "scaler": "RobustScaler",
            "with_centering": not no_shift,
            "with_scaling": True,
            "quantile_range": list(choice.quantile_range),
            "copy": True,
            "unit_variance": False,
            "center_": None if no_shift else center_.tolist(),
            "scale_": (1.0 / s_).tolist(),
            **common,
        }
    return {
        "with_mean": True,
        "with_std": True,
        "copy": True,
        **_standard(model, columns, center_, s_, choice.is_default),
        **common,
    }


def _standard(
    model: BatchNorm, columns: Sequence[str], center: np.ndarray, scale: np.ndarray, exact: bool
) -> dict[str, Any]:
    """A StandardScaler's ``mean_``, ``var_``, ``scale_`` (and, for mean/std, ``bnorm``)."""
    pops = [model.population_[c] for c in columns]
    out: dict[str, Any] = {
        "mean_": center.tolist(),
        "var_": [p.var for p in pops],
        "scale_": (1.0 / scale).tolist(),
    }
    if not exact:
        return out
    means, scales = [], []
    for c, p in zip(columns, pops, strict=True):
        total = p.biased_var + model.eps
        sd = (math.sqrt(total) if total > 0.0 else 1.0) / model.gamma_[c]  # maps.build's rule
        means.append((p.mean_hi + p.mean_lo) - model.beta_[c] * sd)
        scales.append(sd)
    nulls = [p.missing if p.missing >= 0 else None for p in pops]
    out["mean_"], out["scale_"] = means, scales
    out["bnorm"] = {
        "eps": model.eps,
        "mean": [p.mean_hi for p in pops],
        "mean_residual": [p.mean_lo for p in pops],
        "gamma": [model.gamma_[c] for c in columns],
        "beta": [model.beta_[c] for c in columns],
        "count": [p.n if p.n >= 0 else None for p in pops],
        "null_count": nulls,
        "rows": model.rows_ if None not in nulls else None,
        "min": [None if math.isnan(p.min) else p.min for p in pops],
        "max": [None if math.isnan(p.max) else p.max for p in pops],
        **(
            {"weight": model.weight, "weight_sum": [p.weight for p in pops]}
            if model.weight is not None
            else {}
        ),
    }
    return out


def sklearn_json(model: BatchNorm, columns: Sequence[str]) -> str:
    return json.dumps(sklearn_attributes(model, columns), indent=2, allow_nan=False) + "\n"


def load_sklearn_scaler(path: str) -> Any:
    """The fitted scikit-learn scaler of ``bnorm export --to sklearn`` (its ``"scaler"``
    class, by default ``StandardScaler``)."""
    from sklearn import preprocessing

    with open(path, encoding="utf-8") as f:
        attrs = json.load(f)
    cls = attrs.pop("scaler", "StandardScaler")
    if cls not in ("StandardScaler", "MinMaxScaler", "RobustScaler", "MaxAbsScaler"):
        raise StatsFileError(f'{path}: "scaler" {cls!r} is not a scaler bnorm exports')
    scaler = getattr(preprocessing, cls)()
    for key, value in attrs.items():
        if key == "bnorm":  # bnorm's own record, for `bnorm import`
            continue
        if key in ("feature_range", "quantile_range"):
            value = tuple(value)
        elif key == "feature_names_in_":
            value = np.asarray(value, dtype=object)
        elif isinstance(value, list):
            value = np.asarray(value)
        setattr(scaler, key, value)
    return scaler
