"""Centre and scale choices against the real scikit-learn scalers (core/scalers.py).

Each choice is fitted at many batch sizes on columns with nulls, NaN, a constant,
an all-null column, a large offset, tiny and huge magnitudes, and compared with
StandardScaler(with_mean/with_std), MinMaxScaler, MaxAbsScaler and RobustScaler
on the same values. The tolerance is the rounding float64 itself imposes on a
map evaluated at |x| (scikit-learn folds MinMaxScaler into ``x * s + m``, and
its means are summed less exactly than bnorm's), nothing looser.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bnorm_cli import BatchNorm
from bnorm_cli.cli.app import app
from bnorm_cli.core.errors import StatsFileError, UsageError
from bnorm_cli.engines import quantiles as quantiles_module
from bnorm_cli.engines import serial
from bnorm_cli.io import stats_file

pytest.importorskip("sklearn", exc_type=ImportError)
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    RobustScaler,
    StandardScaler,
)

runner = CliRunner()
N = 157
BATCH_SIZES = [1, 2, 7, N, N + 42]
EPS64 = np.finfo(np.float64).eps


def make_frame(n: int = N, seed: int = 11) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    with_nan = rng.normal(-5.0, 10.0, n)
    with_nan[rng.random(n) < 0.15] = np.nan
    nulls = rng.standard_t(2, n).tolist()  # heavy tails
    for i in rng.choice(n, n // 5, replace=False):
        nulls[i] = None
    return pl.DataFrame(
        {
            "label": [f"r{i}" for i in range(n)],
            "normal": rng.normal(3.0, 2.0, n),
            "offset": 1e9 + rng.normal(0.0, 1e-3, n),
            "tiny": rng.normal(0.0, 1e-9, n),
            "huge": rng.normal(0.0, 1e150, n),  # its variance, 1e300, still fits float64
            "with_nan": with_nan,
            "nulls": pl.Series(nulls, dtype=pl.Float64),
            "constant": np.full(n, 42.5),
            "all_null": pl.Series([None] * n, dtype=pl.Float64),
            "ties": np.repeat(rng.integers(0, 5, n // 10 + 1), 10)[:n].astype(np.float64),
            "ints": rng.integers(-1000, 1000, n),
        },
        nan_to_null=False,
    )


NUMERIC = ["normal", "offset", "tiny", "huge", "with_nan", "nulls", "constant", "all_null"]
NUMERIC += ["ties", "ints"]

#: bnorm options -> the scikit-learn scaler that must agree (eps 0: scikit-learn has none)
CHOICES: list[tuple[dict[str, Any], Callable[[], Any]]] = [
    ({"eps": 0.0}, lambda: StandardScaler()),
    ({"eps": 0.0, "center": "none"}, lambda: StandardScaler(with_mean=False)),
    ({"scale": "none"}, lambda: StandardScaler(with_std=False)),
    ({"center": "none", "scale": "none"}, lambda: StandardScaler(with_mean=False, with_std=False)),
    ({"scale": "range"}, lambda: MinMaxScaler()),
    ({"scale": "range", "feature_range": (-3.0, 0.5)}, lambda: MinMaxScaler((-3.0, 0.5))),
    ({"scale": "maxabs"}, lambda: MaxAbsScaler()),
    ({"scale": "iqr"}, lambda: RobustScaler()),
    ({"center": "median", "scale": "iqr"}, lambda: RobustScaler()),
    (
        {"scale": "iqr", "quantile_range": (10.0, 95.0)},
        lambda: RobustScaler(quantile_range=(10.0, 95.0)),
    ),
    ({"center": "none", "scale": "iqr"}, lambda: RobustScaler(with_centering=False)),
    ({"center": "median", "scale": "none"}, lambda: RobustScaler(with_scaling=False)),
]
IDS = [",".join(f"{k}={v}" for k, v in kw.items()) for kw, _ in CHOICES]


def values(frame: pl.DataFrame, columns: list[str] = NUMERIC) -> np.ndarray:
    """The columns as float64 with null -> NaN (scikit-learn's missing value)."""
    return frame.select(pl.col(c).cast(pl.Float64).fill_null(np.nan) for c in columns).to_numpy()


def sklearn_fit_transform(make: Callable[[], Any], x: np.ndarray) -> tuple[Any, np.ndarray]:
    with warnings.catch_warnings():  # an all-NaN column: "All-NaN slice", "Mean of empty"
        warnings.simplefilter("ignore", RuntimeWarning)
        scaler = make()
        return scaler, scaler.fit_transform(x)


def assert_float64_close(got: np.ndarray, want: np.ndarray, x: np.ndarray, scale: Any) -> None:
    """Equal up to float64 rounding of a map evaluated at |x|: a few ulps of
    ``|x| * |scale|`` (+1 for the centre's), NaN exactly where NaN."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    s = np.abs(np.asarray(scale, np.float64)) if scale is not None else 1.0
    with np.errstate(over="ignore"):
        bound = 64 * EPS64 * (np.nanmax(np.abs(x), axis=0, initial=0.0) * s + 1.0)
    ok = np.isnan(got) | (np.abs(got - want) <= bound)
    assert ok.all(), (
        np.argwhere(~ok)[:3],
        got[~ok][:3],
        want[~ok][:3],
        np.broadcast_to(bound, got.shape)[~ok][:3],
    )


def multiplier(scaler: Any) -> Any:
    """What multiplies ``x`` in the scaler's map (MinMaxScaler's ``scale_``, the others'
    ``1 / scale_``; 1 without one)."""
    scale = getattr(scaler, "scale_", None)
    if scale is None:
        return 1.0
    return np.asarray(scale) if isinstance(scaler, MinMaxScaler) else 1.0 / np.asarray(scale)


def test_reference_tolerance_can_fail() -> None:
    x = np.array([[1.0], [2.0]])
    with pytest.raises(AssertionError):
        assert_float64_close(np.array([[0.0], [1.0 + 1e-9]]), np.array([[0.0], [1.0]]), x, 1.0)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize(("options", "make"), CHOICES, ids=IDS)
def test_transform_matches_sklearn(
    options: dict[str, Any], make: Callable[[], Any], batch_size: int
) -> None:
    frame = make_frame()
    x = values(frame)
    scaler, want = sklearn_fit_transform(make, x)
    model = BatchNorm(batch_size=batch_size, **options).fit(frame)
    out = model.transform(frame)
    assert out.get_column("label").equals(frame.get_column("label"))
    got = values(out)
    assert_float64_close(got, want, x, multiplier(scaler))
    # a constant or all-null column stays finite (a zero spread is 1); nulls stay null
    assert np.isfinite(out.get_column("constant").to_numpy()).all()
    assert out.get_column("all_null").null_count() == N
    assert out.get_column("nulls").null_count() == frame.get_column("nulls").null_count()


@pytest.mark.parametrize(("options", "make"), CHOICES, ids=IDS)
def test_inverse_restores_values_and_types(
    options: dict[str, Any], make: Callable[[], Any]
) -> None:
    frame = make_frame().with_columns(pl.col("ints").cast(pl.Int32))
    model = BatchNorm(batch_size=7, **options).fit(frame)
    back = model.inverse_transform(model.transform(frame))
    assert back.schema == frame.schema  # Int32 stays Int32
    assert back.get_column("ints").equals(frame.get_column("ints"))
    x = values(frame)
    got = values(back)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(x))
    bound = 64 * EPS64 * np.nanmax(np.abs(x), axis=0, initial=1.0)
    assert (np.isnan(x) | (np.abs(got - x) <= bound)).all()


@pytest.mark.parametrize(("options", "make"), CHOICES, ids=IDS)
def test_batch_mode_is_sklearn_on_each_batch(
    options: dict[str, Any], make: Callable[[], Any]
) -> None:
    """normalize --mode batch: every batch by its own centre and scale."""
    frame = make_frame(60)
    cols = [c for c in NUMERIC if c != "huge"]  # a batch of 1e300 values: its var overflows
    model = BatchNorm(batch_size=7, columns=cols, **options)
    model.start(frame.schema)
    out, _, _ = model.normalize_batches(frame.select(cols), "batch", rows=frame.height)
    got = values(out, cols)
    for start in range(0, frame.height, 7):
        x = values(frame.slice(start, 7), cols)
        scaler, want = sklearn_fit_transform(make, x)
        assert_float64_close(got[start : start + 7], want, x, multiplier(scaler))


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_exact_against_fractions_where_sklearn_rounds(batch_size: int) -> None:
    """1e9 + noise: scikit-learn's folded MinMaxScaler loses 5 digits there; bnorm's
    ``(x - min) * scale`` is within 2 ulps of the exactly computed value."""
    from fractions import Fraction

    frame = make_frame()
    for options in (
        {"scale": "range"},
        {"center": "median", "scale": "iqr"},
        {"scale": "maxabs", "center": "median"},
    ):
        out = BatchNorm(batch_size=batch_size, **options).fit(frame).transform(frame)
        x = values(frame, ["offset"])[:, 0]
        exact = [Fraction(v) for v in x]
        lo, hi = min(exact), max(exact)
        q = np.quantile(x, [0.25, 0.5, 0.75])  # numpy's linear quantiles, exactly rounded inputs
        if options["scale"] == "range":
            want = [(v - lo) / (hi - lo) for v in exact]
        elif options["scale"] == "iqr":
            med = Fraction(q[1])
            want = [(v - med) / (Fraction(q[2]) - Fraction(q[0])) for v in exact]
        else:
            med = Fraction(q[1])
            spread = max(hi - med, med - lo)
            want = [(v - med) / Fraction(float(spread)) for v in exact]
        got = out.get_column("offset").to_numpy()
        ulps = np.abs(got - np.array([float(w) for w in want])) / np.spacing(np.abs(got) + 1e-300)
        assert ulps.max() <= 2, (options, ulps.max())


@pytest.mark.parametrize("seed", range(12))
def test_batch_quantiles_are_numpys_bits(seed: int) -> None:
    """normalize --mode batch's per-batch quantiles (all batches sorted at once) are
    np.quantile of each batch's valid values, bit for bit: ties, NaN, +/-inf, 1-row
    batches, a short last batch, an all-missing batch."""
    from bnorm_cli.core.scalers import batch_quantiles

    rng = np.random.default_rng(seed)
    n, size = int(rng.integers(1, 300)), int(rng.integers(1, 40))
    x = rng.standard_t(2, (n, 3))
    x[rng.random((n, 3)) < 0.3] = np.nan
    x[:, 2] = np.round(x[:, 2])  # ties
    x[: min(n, 3), 1] = [np.inf, -np.inf, np.inf][: min(n, 3)]
    x[:size, 0] = np.nan  # the first batch has no valid value of c0
    frame = pl.DataFrame({f"c{j}": x[:, j] for j in range(3)}, nan_to_null=False)
    rows = np.array([size] * (n // size) + ([n % size] if n % size else []))
    probs = (0.0, 0.1, 0.25, 0.5, 0.75, 0.95, 1.0)
    for inf_missing in (False, True):
        got = batch_quantiles(frame, ["c0", "c1", "c2"], rows, probs, inf_missing).values
        start = 0
        for i, r in enumerate(rows):
            for j in range(3):
                v = x[start : start + r, j]
                v = v[~(np.isnan(v) | (inf_missing & np.isinf(v)))]
                with np.errstate(invalid="ignore"):
                    want = np.quantile(v, probs) if v.size else np.full(len(probs), np.nan)
                np.testing.assert_array_equal(got[:, i, j], want)
            start += r


EXTREME = [(kw, make) for kw, make in CHOICES if kw.get("scale") in ("range", "maxabs", "iqr")]


@pytest.mark.parametrize(("options", "make"), EXTREME, ids=[str(kw) for kw, _ in EXTREME])
def test_extreme_magnitudes(options: dict[str, Any], make: Callable[[], Any]) -> None:
    """Values near 1e300 (their variance is beyond float64, their range is not)."""
    rng = np.random.default_rng(5)
    frame = pl.DataFrame({"x": rng.normal(0.0, 1e300, 101), "y": 1e300 + np.arange(101.0) * 1e285})
    x = values(frame, ["x", "y"])
    scaler, want = sklearn_fit_transform(make, x)
    got = values(BatchNorm(batch_size=7, **options).fit(frame).transform(frame), ["x", "y"])
    assert_float64_close(got, want, x, multiplier(scaler))


def test_a_range_beyond_float64_is_refused_naming_the_column() -> None:
    from bnorm_cli.core.errors import DataError

    frame = pl.DataFrame({"ok": [1.0, 2.0], "wide": [-1.5e308, 1.5e308]})
    with pytest.raises(DataError, match='column "wide": its population range exceeds'):
        BatchNorm(scale="range").fit(frame).transform(frame)


def test_a_model_without_its_quantiles_cannot_be_saved() -> None:
    from bnorm_cli.core.model import BatchNorm as CoreBatchNorm

    core = CoreBatchNorm(scale="iqr").fit(make_frame())  # the core does no quantile pass
    with pytest.raises(UsageError, match="no quantiles to save"):
        stats_file.dumps(core)
    with pytest.raises(UsageError, match="needs quantiles, which this model has not computed"):
        core.transform(make_frame())
    partial = BatchNorm(scale="maxabs", batch_size=N).partial_fit(make_frame())
    loaded = stats_file.from_dict(json.loads(stats_file.dumps(partial)))
    assert loaded.transform(make_frame()).equals(partial.transform(make_frame()))


def test_train_step_uses_the_batch_own_median_and_iqr() -> None:
    frame = make_frame()
    model = BatchNorm(center="median", scale="iqr", columns=["normal", "ties", "with_nan"])
    for start in range(0, N, 50):
        batch = frame.slice(start, 50)
        got = values(model.train_step(batch), ["normal", "ties", "with_nan"])
        x = values(batch, ["normal", "ties", "with_nan"])
        scaler, want = sklearn_fit_transform(RobustScaler, x)
        assert_float64_close(got, want, x, multiplier(scaler))
    assert model.rows_ == N
    with pytest.raises(UsageError, match="no quantiles to save"):
        stats_file.dumps(model)


def test_range_maps_min_to_a_and_max_to_b_with_gamma_and_beta() -> None:
    frame = pl.DataFrame({"x": [3.0, None, -1.0, 7.0, float("nan")]}, nan_to_null=False)
    out = BatchNorm(scale="range", feature_range=(2.0, 5.0)).fit(frame).transform(frame)
    assert out.get_column("x").to_list()[:4] == [3.5, None, 2.0, 5.0]
    model = BatchNorm(scale="range", feature_range=(2.0, 5.0), gamma=2.0, beta=1.0).fit(frame)
    # gamma * ((x - min) / range * (b - a) + a) + beta
    assert model.transform(frame).get_column("x").to_list()[:4] == [8.0, None, 5.0, 11.0]


def test_maxabs_with_a_centre_is_the_largest_distance() -> None:
    frame = pl.DataFrame({"x": [0.0, 1.0, 2.0, 10.0]})
    out = BatchNorm(center="median", scale="maxabs").fit(frame).transform(frame)
    want = [-1.5 / 8.5, -0.5 / 8.5, 0.5 / 8.5, 1.0]
    np.testing.assert_allclose(out.get_column("x").to_numpy(), want, rtol=2 * EPS64, atol=0)


def test_eps_applies_to_std_only() -> None:
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    for scale in ("range", "maxabs", "iqr", "none"):
        a = BatchNorm(scale=scale, eps=0.0).fit(frame).transform(frame)
        b = BatchNorm(scale=scale, eps=100.0).fit(frame).transform(frame)
        assert a.equals(b), scale
    a = BatchNorm(eps=0.0).fit(frame).transform(frame)
    assert not a.equals(BatchNorm(eps=100.0).fit(frame).transform(frame))


def test_options_are_validated_in_the_constructor() -> None:
    cases = [
        ({"scale": "minmax"}, "scale must be one of"),
        ({"center": "mode"}, "center must be one of"),
        ({"scale": "range", "center": "mean"}, "centres on the minimum"),
        ({"feature_range": (0, 1)}, "feature_range is the output range"),
        ({"quantile_range": (25, 75)}, "quantile_range sets the percentiles"),
        ({"scale": "range", "feature_range": (1, 1)}, "a < b"),
        ({"scale": "range", "feature_range": (0, float("inf"))}, "finite"),
        ({"scale": "iqr", "quantile_range": (30, 101)}, "0 <= lo < hi <= 100"),
        ({"scale": "iqr", "quantile_range": (1, 2, 3)}, "two numbers"),
    ]
    for options, message in cases:
        with pytest.raises(UsageError, match=message):
            BatchNorm(**options)


def test_running_statistics_refuse_other_choices() -> None:
    frame = make_frame()
    model = BatchNorm(scale="range").fit(frame)
    with pytest.raises(UsageError, match="running statistics are a mean and a variance"):
        model.transform(frame, use="running")
    with pytest.raises(UsageError, match="running"):
        BatchNorm(scale="maxabs").train_step(frame, mode="running")
    # the none variants exist for running statistics
    BatchNorm(center="none").fit(frame).transform(frame, use="running")


def test_partial_fit_refuses_quantiles_but_updates_min_max() -> None:
    frame = make_frame()
    with pytest.raises(UsageError, match="partial_fit: center='median' scale='iqr' needs"):
        BatchNorm(center="median", scale="iqr").partial_fit(frame)
    model = BatchNorm(scale="range", batch_size=N)
    sk = MinMaxScaler()
    x = values(frame, ["normal", "with_nan"])
    for start in range(0, N, 40):
        model.partial_fit(frame.slice(start, 40))
        sk.partial_fit(x[start : start + 40])
    got = values(model.transform(frame), ["normal", "with_nan"])
    assert_float64_close(got, sk.transform(x), x, sk.scale_)


def test_fit_of_an_iterator_reads_once_and_is_approximate_when_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-pass input gives column_quantiles one_pass=True; its exact=False is kept."""
    seen: list[bool] = []
    real = quantiles_module.column_quantiles

    def spy(passes: Any, columns: Any, probs: Any, budget_bytes: int = 1, one_pass: bool = False):  # type: ignore[no-untyped-def]
        seen.append(one_pass)
        r = real(passes, columns, probs, one_pass=one_pass)
        if one_pass:
            return quantiles_module.QuantileResult(r.probs, r.columns, r.values, False, 0.01, 1)
        return r

    import bnorm_cli.api as api

    monkeypatch.setattr(api, "column_quantiles", spy)
    frame = make_frame()
    exact = BatchNorm(scale="iqr", batch_size=7).fit(frame)
    model = BatchNorm(scale="iqr", batch_size=7).fit(iter([frame.slice(0, 50), frame.slice(50)]))
    assert seen == [False, True]
    assert model.warnings_ and "approximate" in model.warnings_[0]
    assert model.transform(frame).equals(exact.transform(frame))  # same values, here
    assert model.rows_ == N


def test_statistics_file_records_the_choice(tmp_path: Path) -> None:
    frame = make_frame()
    model = BatchNorm(center="median", scale="iqr", quantile_range=(10, 90), batch_size=7)
    model.fit(frame)
    path = tmp_path / "s.json"
    model.save(path)
    doc = json.loads(path.read_text())
    assert doc["requires"] == ["scaler"]
    assert (doc["center"], doc["scale"], doc["quantile_range"]) == ("median", "iqr", [10.0, 90.0])
    assert doc["quantiles"] == {"probs": [0.1, 0.5, 0.9], "exact": True, "rank_error": 0.0}
    x = values(frame, ["normal"])[:, 0]
    assert doc["columns"]["normal"]["quantiles"] == np.quantile(x, [0.1, 0.5, 0.9]).tolist()
    assert doc["columns"]["all_null"]["quantiles"] == [None, None, None]
    loaded = BatchNorm.load(path)
    assert loaded.transform(frame).equals(model.transform(frame))
    assert path.read_text() == stats_file.dumps(loaded)
    # a bnorm that does not know the feature refuses the file rather than apply mean/std
    old = stats_file.KNOWN_FEATURES
    try:
        stats_file.KNOWN_FEATURES = frozenset()
        with pytest.raises(StatsFileError, match="requires scaler"):
            BatchNorm.load(path)
    finally:
        stats_file.KNOWN_FEATURES = old
    # a file whose quantiles do not fit its choice is refused
    doc["quantile_range"] = [25.0, 75.0]
    path.write_text(json.dumps(doc))
    with pytest.raises(StatsFileError, match="needs the quantiles"):
        BatchNorm.load(path)


def test_default_file_has_no_new_fields() -> None:
    doc = stats_file.to_dict(BatchNorm(batch_size=7).fit(make_frame()))
    for key in ("requires", "center", "scale", "feature_range", "quantile_range", "quantiles"):
        assert key not in doc
    assert all("quantiles" not in col for col in doc["columns"].values())


def test_merge_refuses_quantiles_and_different_choices() -> None:
    from bnorm_cli.core.model import merge

    frame = make_frame()
    a = BatchNorm(scale="iqr").fit(frame)
    with pytest.raises(StatsFileError, match="do not merge"):
        merge([a, BatchNorm(scale="iqr").fit(frame)])
    with pytest.raises(StatsFileError, match="centre/scale"):
        merge([BatchNorm(scale="range").fit(frame), BatchNorm().fit(frame)])
    merged = merge(
        [
            BatchNorm(scale="range").fit(frame.head(50)),
            BatchNorm(scale="range").fit(frame.tail(107)),
        ]
    )
    assert merged.transform(frame).equals(BatchNorm(scale="range").fit(frame).transform(frame))


# -- the command line ------------------------------------------------------------
def invoke(args: list[Any], code: int = 0, **kw: Any) -> Any:
    result = runner.invoke(app, [str(a) for a in args], **kw)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, pl.DataFrame]:
    frame = make_frame().drop("huge")
    path = tmp_path / "data.parquet"
    frame.write_parquet(path, row_group_size=40)
    return path, frame


CLI_CHOICES = [
    (["--scale", "range", "--range", "-1,1"], MinMaxScaler((-1, 1))),
    (["--scale", "maxabs"], MaxAbsScaler()),
    (
        ["--center", "median", "--scale", "iqr", "--quantile-range", "5,95"],
        RobustScaler(quantile_range=(5, 95)),
    ),
    (["--center", "none", "--eps", "0"], StandardScaler(with_mean=False)),
]


@pytest.mark.parametrize(
    ("flags", "scaler"), CLI_CHOICES, ids=[" ".join(f) for f, _ in CLI_CHOICES]
)
def test_cli_fit_transform_export_inverse(
    tmp_path: Path, data: tuple[Path, pl.DataFrame], flags: list[str], scaler: Any
) -> None:
    from bnorm_cli.io.export import load_sklearn_scaler

    path, frame = data
    stats, out, back = tmp_path / "s.json", tmp_path / "out.parquet", tmp_path / "back.parquet"
    cols = [c for c in NUMERIC if c != "huge"]
    invoke(["fit", path, "-s", stats, "-b", 7, "-q", *flags])
    invoke(["transform", path, "-s", stats, "-o", out, "-q"])
    x = values(frame, cols)
    scaler, want = sklearn_fit_transform(lambda: scaler, x)
    assert_float64_close(values(pl.read_parquet(out), cols), want, x, multiplier(scaler))
    # export --to sklearn: the matching class, which reproduces bnorm's output
    exported = tmp_path / "scaler.json"
    fitted = [c for c in cols if c != "all_null"]
    invoke(["export", stats, "--to", "sklearn", "-o", exported, "-c", ",".join(fitted)])
    loaded = load_sklearn_scaler(str(exported))
    assert type(loaded) is type(scaler)
    y = values(pl.read_parquet(out), fitted)
    xf = values(frame, fitted)
    with warnings.catch_warnings():  # numpy input has no feature names; that is fine here
        warnings.simplefilter("ignore", UserWarning)
        assert_float64_close(loaded.transform(xf), y, xf, multiplier(loaded))
    # torch refuses with the reason; --inverse restores values and types
    refused = invoke(["export", stats, "--to", "torch", "-o", tmp_path / "bn.st"], 2)
    assert "BatchNorm1d layer subtracts a mean and divides by a std" in refused.stderr
    invoke(["transform", out, "-s", stats, "-o", back, "--inverse", "-q"])
    restored = pl.read_parquet(back)
    assert restored.schema == frame.schema
    assert restored.get_column("ints").equals(frame.get_column("ints"))


def test_cli_pipe_is_one_pass_and_warns_when_approximate(
    tmp_path: Path, data: tuple[Path, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, frame = data
    calls: list[bool] = []
    real = quantiles_module.column_quantiles

    def approx(
        passes: Any, columns: Any, probs: Any, budget_bytes: int = 1, one_pass: bool = False
    ):  # type: ignore[no-untyped-def]
        calls.append(one_pass)
        r = real(passes, columns, probs, one_pass=one_pass)
        return quantiles_module.QuantileResult(
            r.probs, r.columns, r.values, not one_pass, 0.003 if one_pass else 0.0, 1
        )

    monkeypatch.setattr(serial, "column_quantiles", approx)
    csv = frame.write_csv()
    stats = tmp_path / "s.json"
    result = invoke(["fit", "-", "-s", stats, "--scale", "iqr", "-b", 7], input=csv)
    assert calls == [True]
    assert "approximate" in result.stderr and "fit a file" in result.stderr
    doc = json.loads(stats.read_text())
    assert doc["quantiles"]["exact"] is False and doc["quantiles"]["rank_error"] == 0.003
    file_stats = tmp_path / "f.json"
    csv_file = tmp_path / "d.csv"
    csv_file.write_text(csv)
    invoke(["fit", csv_file, "-s", file_stats, "--scale", "iqr", "-b", 7, "-q"])
    assert calls == [True, False]
    assert json.loads(file_stats.read_text())["quantiles"]["exact"] is True
    # the same values either way (the placeholder is exact): same columns' quantiles
    assert (
        doc["columns"]["normal"]["quantiles"]
        == json.loads(file_stats.read_text())["columns"]["normal"]["quantiles"]
    )


def test_cli_usage_errors(tmp_path: Path, data: tuple[Path, pl.DataFrame]) -> None:
    path, _ = data
    stats = tmp_path / "s.json"
    out = tmp_path / "o.parquet"
    r = invoke(["normalize", path, "-o", out, "--mode", "running", "--scale", "range"], 2)
    assert "running statistics are a mean and a variance" in r.stderr
    r = invoke(["fit", path, "-s", stats, "--scale", "range", "--center", "mean"], 2)
    assert "--scale range centres on the minimum" in r.stderr
    r = invoke(["fit", path, "-s", stats, "--range", "0,2"], 2)
    assert "--range is the output range of --scale range" in r.stderr
    r = invoke(["fit", path, "-s", stats, "--scale", "range", "--range", "0"], 2)
    assert "expected two numbers" in r.stderr
    r = invoke(["fit", path, "-s", stats, "--scale", "iqr", "--engine", "dask"], 2)
    assert "--engine dask: a median or IQR" in r.stderr
    invoke(["fit", path, "-s", stats, "--scale", "iqr", "-q"])
    r = invoke(["transform", path, "-s", stats, "-o", out, "--use", "running"], 2)
    assert "--use running" in r.stderr
    r = invoke(["fit", path, "-s", stats, "--update"], 2)
    assert "--update" in r.stderr and "quantiles" in r.stderr
    r = invoke(["normalize", path, "-o", out, "-s", tmp_path / "n.json", "--scale", "iqr"], 2)
    assert "normalize (one pass, per-batch statistics) does not compute" in r.stderr
    assert not out.exists()


def test_cli_normalize_batch_median_iqr(tmp_path: Path, data: tuple[Path, pl.DataFrame]) -> None:
    path, frame = data
    out = tmp_path / "o.parquet"
    invoke(["normalize", path, "-o", out, "--center", "median", "--scale", "iqr", "-b", 7, "-q"])
    got = values(pl.read_parquet(out), ["normal", "ties"])
    for start in range(0, N, 7):
        x = values(frame.slice(start, 7), ["normal", "ties"])
        scaler, want = sklearn_fit_transform(RobustScaler, x)
        assert_float64_close(got[start : start + 7], want, x, multiplier(scaler))


# -- types back (--dtype same, --inverse) -------------------------------------------
def test_dtype_same_keeps_float32_and_inverse_restores_integers(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "f32": pl.Series([1.5, None, -2.25, 8.0], dtype=pl.Float32),
            "i32": pl.Series([3, 7, None, -100], dtype=pl.Int32),
            "u8": pl.Series([0, 255, 17, 4], dtype=pl.UInt8),
            "f64": [1.0, 2.0, 3.0, 4.0],
        }
    )
    path, stats = tmp_path / "d.parquet", tmp_path / "s.json"
    frame.write_parquet(path)
    invoke(["fit", path, "-s", stats, "-q"])
    same, f64, back = tmp_path / "same.parquet", tmp_path / "f64.parquet", tmp_path / "back.parquet"
    invoke(["transform", path, "-s", stats, "-o", same, "--dtype", "same", "-q"])
    assert pl.read_parquet(same).schema == {
        "f32": pl.Float32,
        "i32": pl.Float64,
        "u8": pl.Float64,
        "f64": pl.Float64,
    }
    invoke(["transform", path, "-s", stats, "-o", f64, "-q"])
    assert set(pl.read_parquet(f64).schema.values()) == {pl.Float64}
    invoke(["transform", f64, "-s", stats, "-o", back, "--inverse", "-q"])
    restored = pl.read_parquet(back)
    assert restored.schema == frame.schema
    assert restored.select("i32", "u8").equals(frame.select("i32", "u8"))
    np.testing.assert_allclose(
        restored.get_column("f32").to_numpy(), frame.get_column("f32").to_numpy(), rtol=1e-6
    )
    floats = tmp_path / "floats.parquet"
    invoke(["transform", f64, "-s", stats, "-o", floats, "--inverse", "--dtype", "float64", "-q"])
    assert set(pl.read_parquet(floats).schema.values()) == {pl.Float64}
    # a value mapped back beyond its integer type: one line naming the column
    pl.DataFrame({"f32": [0.0], "i32": [0.0], "u8": [1e6], "f64": [0.0]}).write_parquet(
        tmp_path / "big.parquet"
    )
    r = invoke(
        [
            "transform",
            tmp_path / "big.parquet",
            "-s",
            stats,
            "-o",
            tmp_path / "x.parquet",
            "--inverse",
        ],
        1,
    )
    assert 'column "u8"' in r.stderr and "--dtype float64" in r.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_normalize_dtype_same(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"f32": pl.Series([1.5, 2.0, -2.25, 8.0], dtype=pl.Float32), "i": [1, 2, 3, 4]}
    )
    path = tmp_path / "d.parquet"
    frame.write_parquet(path)
    out = tmp_path / "o.parquet"
    invoke(["normalize", path, "-o", out, "--dtype", "same", "--scale", "range", "-q"])
    got = pl.read_parquet(out)
    assert got.schema == {"f32": pl.Float32, "i": pl.Float64}
    assert got.get_column("i").to_list() == [0.0, 1 / 3, 2 / 3, 1.0]


@pytest.mark.parametrize("choice", [["--scale", "iqr"], ["--scale", "range"], ["--center", "none"]])
def test_fit_report_does_not_flag_unused_running_statistics(
    tmp_path: Path, choice: list[str]
) -> None:
    """Running statistics are never applied with these choices: no 'not converged' footer."""
    path = tmp_path / "d.csv"
    pl.DataFrame({"a": np.arange(1000.0)}).write_csv(path)
    args = ["fit", str(path), "-s", str(tmp_path / "s.json"), "-b", "100"]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0 and "not converged" in plain.stderr
    chosen = runner.invoke(app, [*args, *choice])
    assert chosen.exit_code == 0, chosen.stderr
    said = " ".join(chosen.stderr.split())  # the table's caption wraps
    assert ("not converged" in said) == (choice == ["--center", "none"])


def test_fit_report_names_the_choice(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pl.DataFrame({"a": np.arange(1000.0)}).write_csv(path)
    args = ["fit", str(path), "-s", str(tmp_path / "s.json")]
    assert "maps:" not in runner.invoke(app, args).stderr
    robust = runner.invoke(app, [*args, "--scale", "iqr"])
    assert robust.exit_code == 0, robust.stderr
    assert "maps: --center median --scale iqr" in " ".join(robust.stderr.split())
