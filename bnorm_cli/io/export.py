"""Hand fitted statistics to PyTorch and scikit-learn, without importing either.

* torch: a ``BatchNorm1d`` state_dict (``weight``, ``bias``, ``running_mean``,
  ``running_var``, ``num_batches_tracked``) in a safetensors file; a layer built
  with the same number of features and ``eps`` loads it as is, and in eval mode
  reproduces ``bnorm transform --use running``.
* sklearn: the fitted attributes of a ``StandardScaler`` as JSON (``mean_``,
  ``var_``, ``scale_``, ``n_samples_seen_``, ``feature_names_in_``, ...) whose
  ``transform`` reproduces ``bnorm transform`` (population statistics).
  ``scale_`` includes eps and gamma, and ``mean_`` absorbs beta, so that
  ``(x - mean_) / scale_`` is exactly bnorm's map.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.errors import StatsFileError, UsageError, did_you_mean
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


def torch_state_dict(model: BatchNorm, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays named as in ``torch.nn.BatchNorm1d(len(columns)).state_dict()``."""
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
    """A StandardScaler's fitted attributes reproducing bnorm's population map."""
    maps = model.maps("population")
    means, scales = [], []
    for c in columns:
        m = maps[c]
        if m.scale == 0.0:
            raise StatsFileError(f'column "{c}": gamma is 0; a StandardScaler cannot express it')
        if not model.population_[c].weighs:
            raise StatsFileError(f'column "{c}": no valid values were fitted; leave it out with -c')
        scale = 1.0 / m.scale
        means.append((m.center_hi + m.center_lo) - m.beta * scale)
        scales.append(scale)
    # scikit-learn's n_samples_seen_ is the weight sum of a fit with sample_weight
    pops = [model.population_[c] for c in columns]
    counts = [p.n if p.weight is None else p.weight for p in pops]
    return {
        "with_mean": True,
        "with_std": True,
        "copy": True,
        "mean_": means,
        "var_": [model.population_[c].var for c in columns],
        "scale_": scales,
        "n_samples_seen_": counts[0] if len(set(counts)) == 1 else counts,
        "n_features_in_": len(columns),
        "feature_names_in_": list(columns),
    }


def sklearn_json(model: BatchNorm, columns: Sequence[str]) -> str:
    return json.dumps(sklearn_attributes(model, columns), indent=2, allow_nan=False) + "\n"


def load_sklearn_scaler(path: str) -> Any:
    """A fitted ``sklearn.preprocessing.StandardScaler`` from ``bnorm export --to sklearn``."""
    from sklearn.preprocessing import StandardScaler

    with open(path, encoding="utf-8") as f:
        attrs = json.load(f)
    scaler = StandardScaler()
    for key, value in attrs.items():
        if key == "feature_names_in_":
            value = np.asarray(value, dtype=object)
        elif isinstance(value, list):
            value = np.asarray(value)
        setattr(scaler, key, value)
    return scaler
