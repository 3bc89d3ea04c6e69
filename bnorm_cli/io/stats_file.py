"""The versioned statistics file (design.md §3): JSON, validated by a schema.

Beyond the fields design.md fixes, each column has ``mean_residual``: the exact
mean is ``mean + mean_residual`` (two float64s), which keeps the centering of a
column like ``1e9 + noise`` exact to the last bit of the noise. Readers that
ignore it get the correctly rounded mean.

A file written by ``normalize --mode renorm`` has a top-level ``renorm`` object
(its options); its running statistics are then batch renormalization's moving
mean and ``std**2 - eps`` (`core.renorm`), applied like any others.

Writing is atomic; loading validates the whole document against `SCHEMA` and
then its internal consistency, so a file that was truncated, hand-edited into
nonsense or written by a newer bnorm is refused with one line naming the file.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, TypeVar, overload

import numpy as np

from ..core.errors import DataError, StatsFileError, UsageError
from ..core.fold import UNKNOWN, Fold, Population, Running, RunningState
from ..core.model import DEFAULT_BATCH_SIZE, BatchNorm, FitState
from ..core.moments import Moments
from ..core.renorm import Moving
from ..core.scalers import CENTERS, SCALES, Quantiles, from_record, params
from ..core.sketch import Histogram, Summary, from_runs, to_runs
from ..version import __version__
from . import storage
from .atomic import write_text

M = TypeVar("M", bound=BatchNorm)

FORMAT = "bnorm-stats"
VERSION = 1

_num = {"type": "number"}
_num_or_null = {"type": ["number", "null"]}
_count = {"type": "integer", "minimum": 0}
#: null: not known (statistics imported by `bnorm import`, see `IMPORTED`)
_count_or_null = {"type": ["integer", "null"], "minimum": 0}

_COLUMN = {
    "type": "object",
    "required": [
        "dtype",
        "count",
        "null_count",
        "mean",
        "var",
        "std",
        "min",
        "max",
        "running_mean",
        "running_var",
        "gamma",
        "beta",
    ],
    "properties": {
        "dtype": {"type": "string"},
        "count": _count_or_null,
        "null_count": _count_or_null,
        "mean": _num_or_null,
        "mean_residual": _num_or_null,
        "weight_sum": {"type": "number", "minimum": 0},
        "var": {"type": ["number", "null"], "minimum": 0},
        "std": {"type": ["number", "null"], "minimum": 0},
        "min": _num_or_null,
        "max": _num_or_null,
        "running_mean": _num_or_null,
        "running_var": {"type": ["number", "null"], "minimum": 0},
        "running_updates": _count,
        # running_var's additive parts (design.md §5), for merges that never subtract
        "running_var_from_zero": {"type": "number", "minimum": 0},
        "running_start_weight": {"type": "number", "minimum": 0, "maximum": 1},
        "gamma": _num,
        "beta": _num,
        "quantiles": {"type": "array", "items": _num_or_null},
        "sketch": {
            "type": "object",
            "required": ["exp", "nulls", "nans", "zeros", "buckets"],
            "properties": {
                "exp": {"type": "integer", "minimum": -1200, "maximum": 1023},
                "width": {"type": "number", "minimum": 0},
                "nulls": _count,
                "nans": _count,
                "zeros": _count,
                "buckets": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        # the counts' items are checked by `_count_error`: through the
                        # schema they took seconds for a file of 1,000 columns
                        "prefixItems": [{"type": "integer"}, {"type": "array"}],
                        "minItems": 2,
                        "maxItems": 2,
                    },
                },
            },
        },
    },
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "format",
        "version",
        "batch_size",
        "momentum",
        "eps",
        "rows",
        "num_batches_tracked",
        "columns",
    ],
    "properties": {
        "format": {"const": FORMAT},
        "version": {"type": "integer"},
        "batch_size": {"type": ["integer", "null"], "minimum": 1},
        "momentum": {
            "oneOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"const": "cumulative"},
                {"type": "null"},
            ]
        },
        "eps": {"type": "number", "minimum": 0},
        "rows": _count_or_null,
        "num_batches_tracked": _count_or_null,
        "imported": {
            "type": "object",
            "required": ["from", "file", "statistics"],
            "properties": {
                "from": {"enum": ["torch", "sklearn", "keras"]},
                "file": {"type": "string"},
                "statistics": {"enum": ["population", "running"]},
            },
        },
        "inf": {"enum": ["error", "missing"]},
        "input_columns": {"type": "object", "additionalProperties": {"type": "string"}},
        "requires": {"type": "array", "items": {"type": "string"}},
        "weight": {"type": "string", "minLength": 1},
        "center": {"enum": [*CENTERS, "min"]},
        "scale": {"enum": list(SCALES)},
        "feature_range": {"type": "array", "items": _num, "minItems": 2, "maxItems": 2},
        "quantile_range": {"type": "array", "items": _num, "minItems": 2, "maxItems": 2},
        "quantiles": {
            "type": "object",
            "required": ["probs", "exact", "rank_error"],
            "properties": {
                "probs": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
                "exact": {"type": "boolean"},
                "rank_error": {"type": "number", "minimum": 0},
            },
        },
        "by": {"type": "object", "required": ["keys", "sidecar", "sidecar_id", "groups"]},
        "reading": {"type": "object"},
        "segments": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2},
        "columns": {"type": "object", "additionalProperties": _COLUMN},
        "renorm": {
            "type": "object",
            "required": ["momentum", "rmax", "dmax", "warmup", "ramp"],
            "properties": {
                "momentum": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "rmax": {"oneOf": [{"type": "number", "minimum": 1}, {"const": "inf"}]},
                "dmax": {"oneOf": [{"type": "number", "minimum": 0}, {"const": "inf"}]},
                "warmup": _count,
                "ramp": _count,
            },
        },
    },
}


_VALIDATOR: list[Any] = []  # SCHEMA's validator, made once (checking SCHEMA takes time)


def _schema_error(doc: Any) -> str | None:
    """Where and how ``doc`` breaks `SCHEMA` (jsonschema's best match), or None."""
    if _accepted(doc):
        return _count_error(doc)
    if not _VALIDATOR:
        import jsonschema  # imported here: ~70 ms that only loading needs

        _VALIDATOR.append(jsonschema.validators.validator_for(SCHEMA)(SCHEMA))
    from jsonschema.exceptions import best_match

    e = best_match(_VALIDATOR[0].iter_errors(doc))
    if e is not None:
        return f"{'/'.join(str(p) for p in e.absolute_path) or 'top level'}: {e.message}"
    return _count_error(doc)


def _accepted(doc: Any) -> bool:
    """Whether `stats_validator` (SCHEMA as generated code) accepts ``doc``: then jsonschema
    would too, and a valid file loads without importing it (~70 ms). It may refuse what
    jsonschema accepts, so a refusal, or a crash on an odd value, is jsonschema's to judge."""
    from . import stats_validator  # imported here: only loading needs it

    try:
        stats_validator.validate(doc)
    except Exception:
        return False
    return True


def _count_error(doc: dict[str, Any]) -> str | None:
    """The first sketch count that is not a non-negative integer, as the schema would
    word it (an integral float counts as an integer there too)."""
    for c, col in doc["columns"].items():
        for i, (_, counts) in enumerate(col.get("sketch", {}).get("buckets", ())):
            if all(type(x) is int for x in counts) and min(counts, default=0) >= 0:
                continue  # the usual case, fast
            for j, x in enumerate(counts):
                integral = (type(x) is int) or (type(x) is float and x.is_integer())
                if not integral:
                    problem = f"{x!r} is not of type 'integer'"
                elif x < 0:
                    problem = f"{x!r} is less than the minimum of 0"
                else:
                    continue
                return f"columns/{c}/sketch/buckets/{i}/1/{j}: {problem}"
    return None


def to_dict(model: BatchNorm) -> dict[str, Any]:
    """The statistics file's content for a fitted model."""
    if model.imported_ is not None:
        raise StatsFileError(
            f"these statistics were imported from {model.imported_['file']}; only"
            " `bnorm import` writes them (run it again for another statistics file)"
        )
    size = model.batch_size
    if sum(-(-rows // size) for rows in model.segments_) != model.num_batches_tracked_:
        raise DataError(
            f"{model.num_batches_tracked_} batches of {model.rows_} rows do not fit batch size"
            f" {size} (a partial_fit batch longer than it); a statistics file cannot record"
            " that: make batch_size at least the longest partial_fit batch"
        )
    columns: dict[str, Any] = {}
    for c in model.columns_:
        pop = model.population_[c]
        run = model.running_[c]
        var = pop.var
        if pop.weight is not None and not math.isfinite(pop.weight):
            raise DataError(
                f'column "{c}": its weights sum beyond the float64 range; scale the weight'
                f" column {model.weight} down"
            )
        if (var is not None and not math.isfinite(var)) or not math.isfinite(run.var):
            raise DataError(
                f'column "{c}": its variance exceeds the float64 range (values from {pop.min:.6g}'
                f" to {pop.max:.6g}); rescale the column or leave it out with -x {c}"
            )
        columns[c] = {
            "dtype": model.dtypes_[c],
            "count": pop.n,
            "null_count": pop.missing,
            **({"weight_sum": pop.weight} if pop.weight is not None else {}),
            "mean": pop.mean,
            "mean_residual": pop.mean_lo if pop.weighs else None,
            "var": var,
            "std": pop.std,
            "min": pop.min if pop.n else None,
            "max": pop.max if pop.n else None,
            "running_mean": run.mean,
            "running_var": run.var,
            "running_updates": run.updates,
            "gamma": model.gamma_[c],
            "beta": model.beta_[c],
        }
        if model.momentum is not None and run.start_weight is not None:  # an EMA's parts
            columns[c]["running_var_from_zero"] = run.var_from_zero
            columns[c]["running_start_weight"] = run.start_weight
    q = model.state_.quantiles if model.state_ is not None else None
    if q is not None:
        for i, c in enumerate(model.columns_):
            columns[c]["quantiles"] = [None if math.isnan(v) else float(v) for v in q.values[:, i]]
    requires: list[str] = []  # features a reader must know (KNOWN_FEATURES), in order
    if model.weight is not None:
        requires.append(WEIGHTS)
    scaling = _scaling(model, requires)
    summary = model.summary_
    if summary is not None:
        for j, c in enumerate(model.columns_):
            h = summary.hist[j]
            exp = h.exp if h.index.size else 0
            columns[c]["sketch"] = {
                "exp": exp,
                "width": math.ldexp(1.0, exp),
                "nulls": int(summary.nulls[j]),
                "nans": int(columns[c]["null_count"] - summary.nulls[j]),
                "zeros": int(summary.zeros[j]),
                "buckets": to_runs(h),
            }
    return {
        "format": FORMAT,
        "version": VERSION,
        "bnorm_version": __version__,
        "batch_size": model.batch_size,
        "momentum": "cumulative" if model.momentum is None else model.momentum,
        "eps": model.eps,
        "inf": model.inf,
        **({"weight": model.weight} if model.weight is not None else {}),
        "rows": model.rows_,
        "num_batches_tracked": model.num_batches_tracked_,
        **({"segments": segments} if len(segments := model.segments_) > 1 else {}),
        **({"requires": requires} if requires else {}),
        **scaling,
        **({"renorm": model.renorm.as_dict()} if _renormalized(model) else {}),
        "input_columns": dict(model.input_schema_),
        **({"reading": dict(model.reading_)} if model.reading_ else {}),
        "columns": columns,
    }


def _scaling(model: BatchNorm, requires: list[str]) -> dict[str, Any]:
    """The centre/scale choice, when not mean/std: required, so that an older bnorm
    refuses the file rather than apply it as mean/std; and how its quantiles were found."""
    record = model.scaling.record()
    if not record:
        return {}
    requires.append(SCALER_FEATURE)
    q = model.state_.quantiles if model.state_ is not None else None
    if model.scaling.needs_quantiles and q is None:
        raise UsageError(
            f"{model.scaling.describe()}: this model has no quantiles to save (they come from"
            " fit, which reads all the data; not from partial_fit or normalize); fit it first"
        )
    if q is not None:
        record["quantiles"] = {"probs": list(q.probs), "exact": q.exact, "rank_error": q.rank_error}
    return record


_RENORM = ("momentum", "rmax", "dmax", "warmup", "ramp")


def _renormalized(model: BatchNorm) -> bool:
    return model.state_ is not None and model.state_.moving is not None


def dumps(model: BatchNorm, extra: dict[str, Any] | None = None) -> str:
    """The file's text; ``extra``: more top-level fields (a per-key fit's, `groups_file`;
    its ``requires`` is added to the file's)."""
    doc = to_dict(model)
    extra = dict(extra or {})
    if "requires" in extra:
        doc["requires"] = [*doc.get("requires", []), *extra.pop("requires")]
    full = {**doc, **extra}
    held: list[list[list[Any]]] = []  # the sketches' runs, written below
    if isinstance(full.get("columns"), dict):
        full["columns"] = {c: _hold_runs(col, held) for c, col in full["columns"].items()}
    text = json.dumps(full, indent=2, allow_nan=False)
    # a sketch's runs of counts on one line each, not one count per line (4x smaller)
    text = _INT_LIST.sub(_one_line, text)
    return _HELD.sub(lambda m: m[1] + _runs_text(held[int(m[2])], m[1]), text) + "\n"


def _one_line(m: re.Match[str]) -> str:
    return "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"


def _hold_runs(col: Any, held: list[list[list[Any]]]) -> Any:
    """``col`` with its sketch's runs replaced by a mark: json's indenting encoder (pure
    Python) took ~0.8 s over the counts of 1,000 columns; `_runs_text` writes them."""
    sketch = col.get("sketch") if isinstance(col, dict) else None
    if not isinstance(sketch, dict) or not isinstance(sketch.get("buckets"), list):
        return col
    held.append(sketch["buckets"])
    return {**col, "sketch": {**sketch, "buckets": f"\0runs {len(held) - 1}\0"}}


#: A held sketch's mark as json wrote it, after the indentation of its line.
_HELD = re.compile(r'^( *"buckets": )"\\u0000runs (\d+)\\u0000"', re.MULTILINE)


def _runs_text(runs: list[list[Any]], key: str) -> str:
    """``runs`` as json.dumps(indent=2) and `_one_line` write them on a line that
    starts with ``key`` (its indentation, then the key)."""
    if not runs:
        return "[]"
    outer = " " * (len(key) - len(key.lstrip(" ")))
    inner = outer + "  "
    items = [
        f"[\n{inner}  {first},\n{inner}  [{', '.join(map(str, counts))}]\n{inner}]"
        for first, counts in runs
    ]
    return "[\n" + inner + (",\n" + inner).join(items) + "\n" + outer + "]"


#: A JSON array of integers spread over lines by ``indent``.
_INT_LIST = re.compile(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]")


def save(model: BatchNorm, path: str | os.PathLike[str]) -> None:
    if model.state_ is not None and model.state_.groups is not None:
        from . import groups_file  # per-key statistics: a Parquet sidecar beside

        groups_file.save(model, str(path), dumps)
        return
    write_text(path, dumps(model))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    """JSON numbers beyond the float64 range (1e999) would load as inf: refuse them."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is outside the float64 range")
    return value


#: A JSON integer of 19 or more digits (not a float's digits: 0.0014263280326600831)
_LONG_DIGITS = re.compile(r"(?<![\d.])[1-9]\d{18,}(?![\d.eE])")


def _bounded_int(text: str) -> int:
    """Integers must fit int64 (counts) and float64 (statistics written without a point)."""
    value = int(text)
    if abs(value) >= 2**63:
        shown = text if len(text) <= 30 else text[:27] + "..."
        raise ValueError(f"integer {shown} is too large")
    return value


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused if it holds a key twice (which value would count?)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


@overload
def load(path: str | os.PathLike[str]) -> BatchNorm: ...
@overload
def load(path: str | os.PathLike[str], cls: type[M]) -> M: ...
def load(path: str | os.PathLike[str], cls: type[BatchNorm] = BatchNorm) -> BatchNorm:
    """Read and validate a statistics file (a local path, or a URL: `storage`)."""
    try:
        if storage.is_url(str(path)):
            with storage.open_binary(str(path)) as f:
                text = f.read().decode("utf-8")
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except FileNotFoundError:
        raise StatsFileError(f"{path}: statistics file not found; run `bnorm fit` first") from None
    except UnicodeDecodeError:
        raise StatsFileError(
            f"{path}: not a valid statistics file (not UTF-8 JSON text); re-create it with"
            " `bnorm fit`"
        ) from None
    except OSError as e:
        raise StatsFileError(f"{path}: cannot read statistics file ({e})") from None
    try:
        doc = json.loads(
            text,
            object_pairs_hook=unique_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            # an integer of up to 18 digits fits int64: checked only if one is longer
            # (a Python hook per count took ~1 s on a file of 1,000 columns' sketches)
            parse_int=_bounded_int if _LONG_DIGITS.search(text) else None,
        )
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise StatsFileError(
            f"{path}: not a valid statistics file (JSON error: {e}); re-create it with `bnorm fit`"
        ) from None
    model = from_dict(doc, str(path), cls)
    if isinstance(doc, dict) and ("by" in doc or "by" in (doc.get("requires") or [])):
        from . import groups_file

        groups_file.attach(model, doc, str(path))
    return model


def from_dict(
    doc: Any, source: str = "<statistics>", cls: type[BatchNorm] = BatchNorm
) -> BatchNorm:
    """Validate a parsed statistics document and build the fitted model."""
    if (
        isinstance(doc, dict)
        and doc.get("format") == FORMAT
        and "version" in doc  # a missing version is reported by the schema
        and doc["version"] != VERSION
    ):
        if str(doc["version"]).strip() == str(VERSION):
            raise StatsFileError(
                f"{source}: version is {doc['version']!r} (a string); it must be the number"
                f' {VERSION}: write "version": {VERSION}, or re-create the file with `bnorm fit`'
            )
        raise StatsFileError(
            f"{source}: statistics file version {doc.get('version')!r} is not supported by this"
            f" bnorm (it reads version {VERSION}); upgrade bnorm, or re-create the file"
            " with `bnorm fit`"
        )
    _check_requires(doc, source)
    error = _schema_error(doc)
    if error is not None:
        raise StatsFileError(
            f"{source}: not a valid statistics file ({error}); re-create it with `bnorm fit`"
        )
    _check_consistent(doc, source)
    try:
        scaling = from_record(doc)
    except UsageError as e:
        raise StatsFileError(f"{source}: not a valid statistics file ({e}); re-create it") from None
    imported = doc.get("imported")
    if imported is not None:
        _check_imported(doc, source)
    model = cls(
        batch_size=doc["batch_size"] or DEFAULT_BATCH_SIZE,  # null: imported, unknown
        momentum=0.1 if doc["momentum"] is None else doc["momentum"],
        eps=doc["eps"],
        columns=list(doc["columns"]),
        inf=doc.get("inf", "error"),
        weight=doc.get("weight"),
        **params(scaling),
        # its known fields only: a later bnorm may add some (the extension rule)
        renorm={k: doc["renorm"][k] for k in _RENORM} if "renorm" in doc else None,
    )
    columns = list(doc["columns"])
    cols = [doc["columns"][c] for c in columns]
    population = _imported_population(cols, imported) if imported else None
    running = _imported_running(cols, imported) if imported else None
    population = population or Population.of(
        [
            Moments(
                n=col["count"],
                missing=col["null_count"],
                mean_hi=col["mean"] if col["mean"] is not None else 0.0,
                mean_lo=(col.get("mean_residual") or 0.0) if col["mean"] is not None else 0.0,
                biased_var=col["var"] if col["var"] is not None else 0.0,  # var, not var *
                # count: M2 of a column with var 1e308 would overflow
                min=col["min"] if col["count"] else math.nan,
                max=col["max"] if col["count"] else math.nan,
                weight=col.get("weight_sum"),
            )
            for col in cols
        ]
    )
    running = running or RunningState.of(
        [
            Running(
                col["running_mean"],
                col["running_var"],
                col.get("running_updates", 0),
                col.get("running_var_from_zero"),  # absent from files before they were kept
                col.get("running_start_weight"),
            )
            for col in cols
        ]
    )
    summary = None
    if cols and all("sketch" in col for col in cols):
        summary = Summary(
            [
                from_runs(col["sketch"]["exp"], col["sketch"]["buckets"])
                if col["count"]
                else Histogram.empty()
                for col in cols
            ],
            np.array([col["sketch"]["nulls"] for col in cols], np.int64),
            np.array([col["sketch"]["zeros"] for col in cols], np.int64),
        )
    fold = Fold(
        columns,
        model.batch_size,
        model.momentum,
        population,
        running,
        batches=doc["num_batches_tracked"] or 0,
        rows=doc["rows"] or 0,
        summary=summary,
        sketch=False,
        segments=doc.get("segments"),
        weighted="weight" in doc,
    )
    model.state_ = FitState(
        columns=columns,
        dtypes={c: col["dtype"] for c, col in zip(columns, cols, strict=True)},
        input_schema=dict(doc.get("input_columns", {})),
        gamma=np.array([float(col["gamma"]) for col in cols], np.float64),
        beta=np.array([float(col["beta"]) for col in cols], np.float64),
        fold=fold,
        quantiles=_quantiles(doc, cols, source),
        moving=Moving(
            running.mean,
            np.sqrt(running.var + model.eps),
            running.updates,
        )
        if "renorm" in doc
        else None,
        imported=dict(imported) if imported else None,
    )
    model.reading_ = dict(doc.get("reading", {}))
    return model


def _imported_population(cols: list[dict[str, Any]], imported: dict[str, str]) -> Population:
    """The population of an imported file: its mean and var, counts it lacks `UNKNOWN`;
    a file holding running statistics only has none (NaN, never applied)."""
    held = imported["statistics"] == "population"

    def count(value: int | None) -> int:
        return UNKNOWN if value is None else value

    return Population.of(
        [
            Moments(
                n=count(col["count"]) if held else UNKNOWN,
                missing=count(col["null_count"]),
                mean_hi=col["mean"] if held else math.nan,
                mean_lo=(col.get("mean_residual") or 0.0) if held else 0.0,
                biased_var=col["var"] if held else math.nan,
                min=math.nan if col["min"] is None else col["min"],
                max=math.nan if col["max"] is None else col["max"],
                weight=col.get("weight_sum"),
            )
            for col in cols
        ]
    )


def _imported_running(cols: list[dict[str, Any]], imported: dict[str, str]) -> RunningState:
    """The running statistics of an imported file (the 0/1 start, never applied, when it
    holds population statistics only)."""
    if imported["statistics"] == "running":
        return RunningState.of(
            [
                Running(col["running_mean"], col["running_var"], col.get("running_updates", 0))
                for col in cols
            ]
        )
    return RunningState.start(len(cols))


def _check_imported(doc: dict[str, Any], source: str) -> None:
    """An imported file holds the statistics its ``imported.statistics`` names."""
    held = doc["imported"]["statistics"]
    keys = ("mean", "var", "std") if held == "population" else ("running_mean", "running_var")
    for c, col in doc["columns"].items():
        for key in keys:
            if col[key] is None:
                raise StatsFileError(
                    f'{source}: column "{c}": {key} is null, but the file holds {held}'
                    " statistics; run `bnorm import` again"
                )
        if held == "population" and not math.isclose(
            col["std"], math.sqrt(col["var"]), rel_tol=1e-9, abs_tol=1e-300
        ):
            raise StatsFileError(
                f'{source}: column "{c}": std is not sqrt(var); run `bnorm import` again'
            )


#: Features a statistics file may require (``"requires": [...]``) that this bnorm
#: knows how to apply. A field that only adds information keeps version 1 and is
#: not listed; a field that changes how the file must be applied (another scaler,
#: per-key statistics, weights) is listed, and a reader that does not know it
#: refuses the file rather than apply it as mean/std.
#: The feature of a weighted fit (``"weight"``: the weight column, and each column's
#: ``weight_sum``): its mean and variance are weighted, its counts are not.
WEIGHTS = "weights"
SCALER_FEATURE = "scaler"  # "center"/"scale" other than mean/std (core/scalers.py)
#: by: per-key statistics (`groups_file`)
KNOWN_FEATURES: frozenset[str] = frozenset({WEIGHTS, SCALER_FEATURE, "by"})


def _quantiles(doc: dict[str, Any], cols: list[dict[str, Any]], source: str) -> Quantiles | None:
    """The recorded quantiles, checked against what the file's choice needs."""
    needed = from_record(doc).probs
    meta = doc.get("quantiles")
    if not needed:
        return None
    if meta is None or tuple(meta["probs"]) != needed or any("quantiles" not in c for c in cols):
        raise StatsFileError(
            f"{source}: inconsistent statistics file ({doc.get('center')}/{doc.get('scale')}"
            f" needs the quantiles {list(needed)} of every column); re-create it with `bnorm fit`"
        )
    values = np.full((len(needed), len(cols)), np.nan)
    for j, col in enumerate(cols):
        q = col["quantiles"]
        if len(q) != len(needed) or (col["count"] > 0) != all(v is not None for v in q):
            raise StatsFileError(
                f"{source}: inconsistent statistics file (a column's quantiles do not fit its"
                " count); re-create it with `bnorm fit`"
            )
        values[:, j] = [math.nan if v is None else v for v in q]
    return Quantiles(needed, values, bool(meta["exact"]), float(meta["rank_error"]))


def _check_requires(doc: Any, source: str) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("requires"), list):
        return
    unknown = [f for f in doc["requires"] if f not in KNOWN_FEATURES]
    if unknown:
        raise StatsFileError(
            f"{source}: this statistics file requires {', '.join(map(str, unknown))}, which"
            f" this bnorm ({__version__}) does not know how to apply; upgrade bnorm"
            " (pip install -U bnorm), or re-create the file with this version's `bnorm fit`"
        )


def _unknown_fields(doc: dict[str, Any]) -> list[str]:
    """The fields an imported file leaves null (not known where it came from)."""
    top = ["batch_size", "momentum", "rows", "num_batches_tracked"]
    out = [k for k in top if doc[k] is None]
    per_column = ["count", "null_count", "running_mean", "running_var"]
    for c, col in doc["columns"].items():
        out += [f'column "{c}": {k}' for k in per_column if col[k] is None]
    return out


def _check_consistent(doc: dict[str, Any], source: str) -> None:
    """Facts the schema cannot express: counts add up, statistics agree."""

    def bad(what: str) -> StatsFileError:
        return StatsFileError(
            f"{source}: inconsistent statistics file ({what}); re-create it with `bnorm fit`"
        )

    unknown = _unknown_fields(doc)
    if unknown and "imported" not in doc:
        raise bad(f"{unknown[0]} is null; only statistics imported by `bnorm import` omit it")
    if "imported" in doc:
        return  # what it holds is checked by `_check_imported`
    rows, size = doc["rows"], doc["batch_size"]
    segments = doc.get("segments", [rows])
    if sum(segments) != rows:
        raise bad(f"segments add up to {sum(segments)} rows, not rows ({rows})")
    if any(s % size == 0 for s in segments[:-1]):
        raise bad("segments: a segment of whole batches does not start another")
    if doc["num_batches_tracked"] != sum(-(-s // size) for s in segments):
        raise bad(f"num_batches_tracked {doc['num_batches_tracked']} does not fit {rows} rows")
    weighted = "weight" in doc
    if weighted != (WEIGHTS in doc.get("requires", [])):
        raise bad('"weight" and "requires": ["weights"] go together')
    for c, col in doc["columns"].items():
        if col["count"] + col["null_count"] != rows:
            raise bad(f'column "{c}": count + null_count is not rows ({rows})')
        if weighted != ("weight_sum" in col):
            raise bad(f'column "{c}": weight_sum is {"missing" if weighted else "unexpected"}')
        stats = [col[k] for k in ("mean", "var", "std", "min", "max")]
        if weighted and col["count"] and not col["weight_sum"]:
            # values, but none with weight: a range and no mean or variance
            if any(v is not None for v in stats[:3]) or None in stats[3:]:
                raise bad(f'column "{c}": weight_sum is 0 but mean, var or std is given')
            continue
        if weighted and not col["count"] and col["weight_sum"]:
            raise bad(f'column "{c}": weight_sum is not 0 although count is 0')
        if col["count"] == 0:
            if any(v is not None for v in stats):
                raise bad(f'column "{c}": count is 0 but statistics are given')
            continue
        if any(v is None for v in stats):
            raise bad(f'column "{c}": a statistic is null although count is {col["count"]}')
        if not col["min"] <= col["mean"] <= col["max"]:
            raise bad(f'column "{c}": mean is outside [min, max]')
        if abs(col.get("mean_residual") or 0.0) > abs(col["mean"]) * 2.0**-52:
            raise bad(f'column "{c}": mean_residual is larger than an ulp of mean')
        if not math.isclose(col["std"], math.sqrt(col["var"]), rel_tol=1e-9, abs_tol=1e-300):
            raise bad(f'column "{c}": std is not sqrt(var)')
        if col.get("running_updates", 0) > doc["num_batches_tracked"]:
            raise bad(f'column "{c}": running_updates exceeds num_batches_tracked')
    for c, col in doc["columns"].items():
        sketch = col.get("sketch")
        if sketch is None:
            continue
        total = sum(sum(counts) for _, counts in sketch["buckets"])
        if total != col["count"]:
            raise bad(f'column "{c}": the sketch counts {total} values, not count')
        if sketch["nulls"] + sketch["nans"] != col["null_count"]:
            raise bad(f'column "{c}": sketch nulls + nans is not null_count')
        if sketch["zeros"] > col["count"]:
            raise bad(f'column "{c}": sketch zeros exceed count')
        if "width" in sketch and sketch["width"] != math.ldexp(1.0, sketch["exp"]):
            raise bad(f'column "{c}": sketch width is not 2^exp')
