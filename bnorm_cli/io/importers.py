"""`bnorm import`: statistics fitted elsewhere, as a bnorm statistics file.

Three sources, told apart by the file (``.safetensors``, or the keys of a JSON
object):

* torch: a ``BatchNorm1d`` state_dict in safetensors (``running_mean``,
  ``running_var``; ``weight``/``bias`` when affine, else gamma 1 / beta 0;
  ``num_batches_tracked``), keys bare or under one module prefix
  (``bn.running_mean``). It holds *running* statistics only. It has no column
  names or eps unless ``bnorm export --to torch`` wrote them (metadata).
* sklearn: a fitted ``StandardScaler``'s attributes as a JSON object:
  ``mean_`` and ``var_`` (lists, required), ``scale_`` (checked to be
  ``sqrt(var_)``, or 1 where StandardScaler treats a feature as constant: that
  feature's variance is imported as 0, which applies the same map),
  ``n_samples_seen_`` (an integer: no NaN was seen, so every count is it; or a
  list per feature), ``feature_names_in_``, ``n_features_in_``, ``with_mean`` /
  ``with_std`` (must be true). Other keys are ignored. ``bnorm export --to
  sklearn`` writes this layout plus a ``bnorm`` key (eps, the two-float mean,
  gamma, beta, counts, a weighted fit's weight sums) from which the statistics
  are restored exactly. eps: 0
  (StandardScaler adds none) unless the file or ``--eps`` says otherwise.
* keras: ``{"mean": ..., "variance": ...}`` as ``keras.layers.Normalization(
  mean=, variance=)`` takes them (a number, or one value per feature in any
  shape with one non-1 axis); optional ``columns`` (names), ``axis`` (-1 only),
  ``invert`` (false only). eps: 0 unless ``--eps`` (Keras divides by
  ``max(sqrt(variance), 1e-7)``, which no eps reproduces exactly: they differ
  only for variances below 1e-14).

Sklearn and Keras give *population* statistics. The result is a statistics
document (`stats_file.SCHEMA`) with ``"imported": {"from", "file",
"statistics"}``; what the source does not know (counts, batch size, momentum,
the other kind of statistics) is null. Any error is one line naming the file
and the key (`StatsFileError`, exit 1); a missing ``--columns``/``--eps``, or
one that does not fit the file, is a `UsageError` (exit 2).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.errors import StatsFileError, UsageError
from ..version import __version__
from . import stats_file

Kind = str  # "torch" | "sklearn" | "keras"

_TORCH_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def kind_of(path: str, doc: Any = None) -> Kind:
    """Which source ``path`` is (``doc``: its parsed JSON, when it is JSON)."""
    if path.endswith(".safetensors"):
        return "torch"
    if isinstance(doc, dict) and ("mean_" in doc or "var_" in doc):
        return "sklearn"
    if isinstance(doc, dict) and ("mean" in doc or "variance" in doc):
        return "keras"
    raise StatsFileError(
        f"{path}: not a file bnorm import reads: give a BatchNorm1d state_dict (.safetensors),"
        ' a StandardScaler\'s attributes (JSON with "mean_" and "var_") or a Keras'
        ' Normalization mean/variance (JSON with "mean" and "variance")'
    )


def import_document(path: str, columns: Sequence[str] | None, eps: float | None) -> dict[str, Any]:
    """The statistics document for the file at ``path``."""
    if path.endswith(".safetensors"):
        return _torch(path, columns, eps)
    doc = _read_json(path)
    if kind_of(path, doc) == "sklearn":
        return _sklearn(path, doc, columns, eps)
    return _keras(path, doc, columns, eps)


# -- readers -------------------------------------------------------------------------
def _torch(path: str, columns: Sequence[str] | None, eps: float | None) -> dict[str, Any]:
    try:
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except FileNotFoundError:
        raise StatsFileError(f"{path}: file not found") from None
    except Exception as e:  # safetensors' own error types vary between versions
        reason = " ".join(str(e).split()) or type(e).__name__
        raise StatsFileError(f"{path}: not a readable safetensors file ({reason})") from None
    prefixes = sorted({k[: -len("running_mean")] for k in tensors if k.endswith("running_mean")})
    if not prefixes:
        raise StatsFileError(
            f"{path}: missing key running_mean (a BatchNorm1d state_dict has"
            f" {', '.join(_TORCH_KEYS)}; a layer with track_running_stats=False has none)"
        )
    if len(prefixes) > 1:
        shown = ", ".join(p.rstrip(".") or "(none)" for p in prefixes)
        raise StatsFileError(
            f"{path}: holds {len(prefixes)} BatchNorm layers ({shown}); save one layer's"
            " state_dict (layer.state_dict()) and import that"
        )
    pre = prefixes[0]
    rm = _vector(path, tensors, pre + "running_mean")
    width = rm.size
    rv = _vector(path, tensors, pre + "running_var", width, nonnegative=True)
    weight = _vector(path, tensors, pre + "weight", width, default=1.0)
    bias = _vector(path, tensors, pre + "bias", width, default=0.0)
    batches = None
    if pre + "num_batches_tracked" in tensors:
        nbt = np.asarray(tensors[pre + "num_batches_tracked"])
        if nbt.size != 1 or nbt.dtype.kind not in "iu" or int(nbt.reshape(-1)[0]) < 0:
            raise StatsFileError(
                f"{path}: key {pre}num_batches_tracked: expected one integer >= 0, got"
                f" {nbt.dtype} of shape {tuple(nbt.shape)}"
            )
        batches = int(nbt.reshape(-1)[0])
    names = _names(path, columns, _meta_columns(path, meta), width, "running_mean")
    given_eps = _meta_float(path, meta, "eps")
    if eps is None and given_eps is None:
        raise UsageError(
            f"--eps: {path} does not record the layer's eps; give it (PyTorch's default:"
            " --eps 1e-05)"
        )
    momentum: Any = None
    if meta.get("momentum") == "cumulative":
        momentum = "cumulative"
    elif "momentum" in meta:
        momentum = _meta_float(path, meta, "momentum")
    cols = {}
    for j, c in enumerate(names):
        cols[c] = {
            **_nulls(),
            "running_mean": float(rm[j]),
            "running_var": float(rv[j]),
            **({"running_updates": batches} if batches is not None else {}),
            "gamma": float(weight[j]),
            "beta": float(bias[j]),
        }
    return _document(
        path, "torch", "running", eps if eps is not None else given_eps, cols, batches, momentum
    )


def _sklearn(
    path: str, doc: dict[str, Any], columns: Sequence[str] | None, eps: float | None
) -> dict[str, Any]:
    for key in ("with_mean", "with_std"):
        if doc.get(key, True) is not True:
            raise StatsFileError(
                f"{path}: key {key} is {doc[key]!r}; only a StandardScaler that centres and"
                " scales (with_mean=True, with_std=True) can be imported"
            )
    mean = _list(path, doc, "mean_")
    width = mean.size
    var = _list(path, doc, "var_", width, nonnegative=True)
    if "n_features_in_" in doc and doc["n_features_in_"] != width:
        raise StatsFileError(
            f"{path}: key n_features_in_ is {doc['n_features_in_']!r}, but mean_ has {width} values"
        )
    feature_names = None
    if doc.get("feature_names_in_") is not None:
        feature_names = _strings(path, doc, "feature_names_in_", width)
    names = _names(path, columns, feature_names, width, "mean_")
    extras = doc.get("bnorm")
    if extras is not None and not isinstance(extras, dict):
        raise StatsFileError(f"{path}: key bnorm: expected an object, got {type(extras).__name__}")
    n = doc.get("n_samples_seen_")
    if extras is not None and "count" in extras:  # the row counts (n_samples_seen_ may be
        n = None  # a weight sum), restored from bnorm's own record below
    if n is None:
        counts: list[int | None] = [None] * width
    elif isinstance(n, int) and not isinstance(n, bool) and n >= 0:
        counts = [n] * width
    else:
        counts = [int(v) for v in _list(path, doc, "n_samples_seen_", width, integer=True)]
    nulls: list[int | None] = [0] * width if isinstance(n, int) else [None] * width
    rows: int | None = n if isinstance(n, int) else None
    lo = np.zeros(width)
    gamma, beta = np.ones(width), np.zeros(width)
    lows: list[float | None] = [None] * width
    highs: list[float | None] = [None] * width
    file_eps = 0.0
    if extras is not None:  # written by `bnorm export --to sklearn`: the exact statistics
        where = f"{path}: key bnorm"
        file_eps = _number(where, extras, "eps", nonnegative=True)
        mean = _list(where, extras, "mean", width)
        lo = _list(where, extras, "mean_residual", width)
        gamma = _list(where, extras, "gamma", width)
        beta = _list(where, extras, "beta", width)
        nulls = _optional_counts(where, extras, "null_count", width)
        if "count" in extras:
            counts = _optional_counts(where, extras, "count", width)
        lows = _optional_list(where, extras, "min", width)
        highs = _optional_list(where, extras, "max", width)
        rows = extras.get("rows") if isinstance(extras.get("rows"), int) else None
    eps_used = file_eps if eps is None else eps
    if "scale_" in doc and extras is None:
        scale = _list(path, doc, "scale_", width)
        for j in range(width):
            std = math.sqrt(var[j] + eps_used)
            if math.isclose(scale[j], std if std > 0 else 1.0, rel_tol=1e-9):
                continue
            if scale[j] == 1.0 and eps_used == 0.0:  # StandardScaler's near-constant rule:
                var[j] = 0.0  # variance 0 applies its map, (x - mean_) / 1
                continue
            raise StatsFileError(
                f"{path}: key scale_[{j}] ({names[j]}) is {scale[j]!r}, not sqrt(var_ + eps)"
                f" = {std!r}; give the eps it was made with (--eps), or drop scale_ to import"
                " mean_ and var_ alone"
            )
    cols = {}
    for j, c in enumerate(names):
        cols[c] = {
            **_nulls(),
            "count": counts[j],
            "null_count": nulls[j],
            "mean": float(mean[j]),
            "mean_residual": float(lo[j]),
            "var": float(var[j]),
            "std": math.sqrt(var[j]),
            "min": lows[j],
            "max": highs[j],
            "gamma": float(gamma[j]),
            "beta": float(beta[j]),
        }
    out = _document(path, "sklearn", "population", eps_used, cols, None, None)
    out["rows"] = rows
    if extras is not None and isinstance(extras.get("weight"), str):  # a weighted bnorm fit
        sums = _optional_list(f"{path}: key bnorm", extras, "weight_sum", width)
        out["weight"], out["requires"] = extras["weight"], [stats_file.WEIGHTS]
        for c, w in zip(names, sums, strict=True):
            cols[c]["weight_sum"] = w
    return out


def _keras(
    path: str, doc: dict[str, Any], columns: Sequence[str] | None, eps: float | None
) -> dict[str, Any]:
    if doc.get("axis", -1) not in (-1, None, [-1]):
        raise StatsFileError(
            f"{path}: key axis is {doc['axis']!r}; only per-feature statistics on the last"
            " axis (axis=-1) can be imported"
        )
    if doc.get("invert", False) is not False:
        raise StatsFileError(f"{path}: key invert is {doc['invert']!r}; import the forward layer")
    for key in ("mean", "variance"):
        if key not in doc:
            raise StatsFileError(f"{path}: missing key {key} (Normalization(mean=, variance=))")
    own = _strings(path, doc, "columns", None) if doc.get("columns") is not None else None
    sizes = [int(np.asarray(doc[k], dtype=object).size) for k in ("mean", "variance")]
    if min(sizes) > 1 and sizes[0] != sizes[1]:
        raise StatsFileError(
            f"{path}: key variance has {sizes[1]} values, but mean has {sizes[0]}; give one of"
            " each per feature"
        )
    width = max(sizes) if max(sizes) > 1 else len(columns or own or [None])
    mean = _values(path, "mean", doc["mean"], width)
    var = _values(path, "variance", doc["variance"], width, nonnegative=True)
    names = _names(path, columns, own, width, "mean")
    cols = {}
    for j, c in enumerate(names):
        cols[c] = {
            **_nulls(),
            "mean": float(mean[j]),
            "mean_residual": 0.0,
            "var": float(var[j]),
            "std": math.sqrt(var[j]),
            "gamma": 1.0,
            "beta": 0.0,
        }
    return _document(path, "keras", "population", 0.0 if eps is None else eps, cols, None, None)


# -- building the document -------------------------------------------------------------
def _nulls() -> dict[str, Any]:
    """A column's fields, all unknown."""
    return {
        "dtype": "Float64",
        "count": None,
        "null_count": None,
        "mean": None,
        "mean_residual": None,
        "var": None,
        "std": None,
        "min": None,
        "max": None,
        "running_mean": None,
        "running_var": None,
    }


def _document(
    path: str,
    kind: Kind,
    held: str,
    eps: float | None,
    columns: dict[str, Any],
    batches: int | None,
    momentum: Any,
) -> dict[str, Any]:
    assert eps is not None
    return {
        "format": stats_file.FORMAT,
        "version": stats_file.VERSION,
        "bnorm_version": __version__,
        "batch_size": None,
        "momentum": momentum,
        "eps": eps,
        "inf": "error",
        "rows": None,
        "num_batches_tracked": batches,
        "imported": {"from": kind, "file": path, "statistics": held},
        "columns": columns,
    }


# -- checked values ----------------------------------------------------------------------
def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise StatsFileError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise StatsFileError(f"{path}: not UTF-8 JSON text") from None
    except OSError as e:
        raise StatsFileError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        # NaN/Infinity parse, to be refused by key below; a key given twice is refused here
        return json.loads(text, parse_constant=float, object_pairs_hook=stats_file.unique_keys)
    except (ValueError, RecursionError) as e:
        raise StatsFileError(f"{path}: not valid JSON ({e})") from None


def _names(
    path: str,
    given: Sequence[str] | None,
    own: Sequence[str] | None,
    width: int,
    key: str,
) -> list[str]:
    """Column names: ``--columns`` if given, else the file's own; one per feature."""
    if given:
        if len(given) != width:
            raise UsageError(
                f"--columns names {len(given)} column(s), but {path} has {width} features"
                f" ({key}); name each of them, in order"
            )
        names = list(given)
    elif own is not None:
        names = list(own)
    else:
        raise UsageError(
            f"--columns: {path} has no column names; name its {width} feature(s) in order:"
            f" --columns {','.join(f'c{j}' for j in range(min(width, 3)))}"
            f"{',...' if width > 3 else ''}"
        )
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise UsageError(f'--columns: "{dupes[0]}" is named twice; give each feature its own name')
    return names


def _meta_columns(path: str, meta: dict[str, str]) -> list[str] | None:
    if "columns" not in meta:
        return None
    try:
        names = json.loads(meta["columns"])
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StatsFileError(f"{path}: metadata columns: expected a JSON list of names")
    return names


def _meta_float(path: str, meta: dict[str, str], key: str) -> float | None:
    if key not in meta:
        return None
    try:
        value = float(meta[key])
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise StatsFileError(f"{path}: metadata {key}: expected a number >= 0, got {meta[key]!r}")
    return value


def _vector(
    path: str,
    tensors: dict[str, np.ndarray],
    key: str,
    width: int | None = None,
    nonnegative: bool = False,
    default: float | None = None,
) -> np.ndarray:
    if key not in tensors:
        if default is None:
            raise StatsFileError(f"{path}: missing key {key}")
        assert width is not None
        return np.full(width, default)
    t = np.asarray(tensors[key])
    if t.ndim != 1 or (width is not None and t.size != width) or t.dtype.kind not in "fiu":
        want = f"({width},)" if width is not None else "one dimension"
        raise StatsFileError(
            f"{path}: key {key}: expected a float tensor of shape {want}, got {t.dtype}"
            f" of shape {tuple(t.shape)}"
        )
    return _checked(f"{path}: key {key}", t.astype(np.float64), nonnegative)


def _checked(where: str, values: np.ndarray, nonnegative: bool) -> np.ndarray:
    bad = ~np.isfinite(values)
    if bad.any():
        j = int(np.argmax(bad))
        raise StatsFileError(f"{where}[{j}] is {values[j]!r}; statistics must be finite")
    if nonnegative and (values < 0).any():
        j = int(np.argmax(values < 0))
        raise StatsFileError(f"{where}[{j}] is {values[j]!r}; a variance cannot be negative")
    return values


def _values(path: str, key: str, value: Any, width: int, nonnegative: bool = False) -> np.ndarray:
    """A number (broadcast to ``width``) or ``width`` numbers in a shape with one
    non-1 axis (Keras' mean/variance)."""
    where = f"{path}: key {key}"
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise StatsFileError(f"{where}: expected numbers, got {value!r:.60}") from None
    if arr.ndim and sum(d != 1 for d in arr.shape) > 1:
        raise StatsFileError(f"{where}: expected one value per feature, got shape {arr.shape}")
    flat = arr.reshape(-1)
    if flat.size == 1:
        flat = np.full(width, flat[0])
    elif flat.size != width:
        raise StatsFileError(f"{where}: has {flat.size} values, expected {width}")
    return _checked(where, flat, nonnegative)


def _list(
    where: str,
    doc: dict[str, Any],
    key: str,
    width: int | None = None,
    nonnegative: bool = False,
    integer: bool = False,
) -> np.ndarray:
    if key not in doc:
        raise StatsFileError(f"{where}: missing key {key}")
    value = doc[key]
    ok = isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )
    if not ok or (width is not None and len(value) != width):
        n = f"{width} " if width is not None else ""
        raise StatsFileError(f"{where}: key {key}: expected a list of {n}numbers")
    arr = _checked(f"{where}: key {key}", np.array(value, dtype=np.float64), nonnegative)
    if integer and not ((arr >= 0) & (arr == np.floor(arr)) & (arr < 2.0**63)).all():
        # (StandardScaler keeps per-feature counts as floats: integral ones are counts)
        raise StatsFileError(f"{where}: key {key}: expected counts (integers >= 0)")
    return arr


def _optional_list(where: str, doc: dict[str, Any], key: str, width: int) -> list[float | None]:
    value = doc.get(key)
    if value is None:
        return [None] * width
    if not isinstance(value, list) or len(value) != width:
        raise StatsFileError(f"{where}: key {key}: expected a list of {width} numbers or nulls")
    return [
        None
        if v is None
        else float(_checked(f"{where}: key {key}", np.array([v], float), False)[0])
        for v in value
    ]


def _optional_counts(where: str, doc: dict[str, Any], key: str, width: int) -> list[int | None]:
    value = doc.get(key)
    if value is None:
        return [None] * width
    if (
        not isinstance(value, list)
        or len(value) != width
        or not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in value
        )
    ):
        raise StatsFileError(f"{where}: key {key}: expected a list of {width} counts or nulls")
    return list(value)


def _number(where: str, doc: dict[str, Any], key: str, nonnegative: bool = False) -> float:
    value = doc.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise StatsFileError(f"{where}: key {key}: expected a number")
    return float(_checked(f"{where}: key {key}", np.array([value], float), nonnegative)[0])


def _strings(path: str, doc: dict[str, Any], key: str, width: int | None) -> list[str]:
    value = doc[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StatsFileError(f"{path}: key {key}: expected a list of names")
    if width is not None and len(value) != width:
        raise StatsFileError(f"{path}: key {key} has {len(value)} names, expected {width}")
    return list(value)
