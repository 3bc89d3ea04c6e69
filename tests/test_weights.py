"""Weights (``--weight COL`` / ``BatchNorm(weight=...)``): frequency weights with
scikit-learn's ``sample_weight`` semantics, checked against the real
StandardScaler and an independent exact (``fractions``) / plain numpy reference.

Reference formulas (written from the definition, not from the engine), per
column, over the rows whose value is valid (not null, not NaN) with weight w:

* ``W = sum(w)``; ``mean = sum(w*x)/W``; ``var = sum(w*(x-mean)^2)/W`` (biased,
  StandardScaler's ``var_``); unbiased ``sum(w*(x-mean)^2)/(W-1)`` for W > 1.
* Running statistics: PyTorch's recurrence fed with each batch's weighted mean
  and unbiased weighted variance; a batch with W <= 1 does not update.
* ``count`` is the number of valid values whatever their weight.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bnorm_cli import BatchNorm
from bnorm_cli.cli.app import app
from bnorm_cli.core.errors import DataError, StatsFileError, UsageError
from bnorm_cli.core.model import merge
from bnorm_cli.io import stats_file

runner = CliRunner()


# -- the independent reference ---------------------------------------------------------------
def exact_weighted(x: np.ndarray, w: np.ndarray) -> tuple[Fraction, Fraction, Fraction] | None:
    """(W, mean, biased var) in exact rational arithmetic; None without weight."""
    keep = ~np.isnan(x) & (w > 0)
    if not keep.any():
        return None
    xs = [Fraction(float(v)) for v in x[keep]]
    ws = [Fraction(float(v)) for v in w[keep]]
    total = sum(ws, Fraction(0))
    mean = sum((a * b for a, b in zip(ws, xs, strict=True)), Fraction(0)) / total
    var = sum((a * (b - mean) ** 2 for a, b in zip(ws, xs, strict=True)), Fraction(0)) / total
    return total, mean, var


def numpy_batch(x: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """(W, mean, biased var) of one batch in plain float64 (np.average)."""
    keep = ~np.isnan(x) & (w > 0)
    xs, ws = x[keep], w[keep]
    if not ws.size:
        return 0.0, math.nan, math.nan
    mean = float(np.average(xs, weights=ws))
    return float(ws.sum()), mean, float(np.average((xs - mean) ** 2, weights=ws))


def reference_running(
    x: np.ndarray, w: np.ndarray, size: int, m: float | None
) -> tuple[float, float, int]:
    r_mean, r_var, k = 0.0, 1.0, 0
    for s in range(0, len(x), size):
        total, mean, var = numpy_batch(x[s : s + size], w[s : s + size])
        if total <= 1:
            continue
        k += 1
        f = 1.0 / k if m is None else m
        r_mean = (1 - f) * r_mean + f * mean
        r_var = (1 - f) * r_var + f * var * total / (total - 1)
    return r_mean, r_var, k


def data(n: int = 2000, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, n)
    x[::13] = np.nan
    w = rng.exponential(2.0, n)
    w[::7] = 0.0
    frame = pl.DataFrame({"x": x, "k": rng.integers(-50, 50, n), "w": w})
    return frame, x, w


def close(got: float, want: Fraction | float, rel: float) -> bool:
    want = float(want)
    return abs(got - want) <= rel * max(abs(want), 1e-300)


def var_close(got: float, want: Fraction, x: np.ndarray) -> bool:
    """A variance to 1e-11 relative, or to (1e-14 |x|)^2 absolute: a float64 mean is
    off by about an ulp, which bounds how small a variance can be resolved (a batch
    whose weights differ by 1e300 has a true variance of 1e-300 that way)."""
    top = float(np.nanmax(np.abs(x)))
    return abs(Fraction(got) - want) <= Fraction(1e-11) * want + Fraction(1e-28 * top * top)


# -- against scikit-learn's StandardScaler(sample_weight=...) --------------------------------
@pytest.mark.parametrize("batch_size", [1, 2, 7, 50, 256, 2000, 2042])
def test_fit_matches_standard_scaler_with_sample_weight(batch_size: int) -> None:
    sk = pytest.importorskip("sklearn.preprocessing")
    frame, _, w = data()
    x2 = frame.select("x", "k").cast(pl.Float64).to_numpy()
    scaler = sk.StandardScaler().fit(x2, sample_weight=w)
    model = BatchNorm(batch_size=batch_size, weight="w").fit(frame)
    assert model.columns_ == ["x", "k"]  # the weight column is never normalized
    for j, c in enumerate(model.columns_):
        pop = model.population_[c]
        assert pop.mean == pytest.approx(scaler.mean_[j], rel=1e-14)
        assert pop.var == pytest.approx(scaler.var_[j], rel=1e-13)
        seen = np.atleast_1d(scaler.n_samples_seen_)
        assert pop.weight == pytest.approx(float(seen[j if seen.size > 1 else 0]), rel=1e-14)
        assert pop.n == int(np.count_nonzero(~np.isnan(x2[:, j])))  # count stays a count
    out = model.transform(frame)
    want = (x2 - scaler.mean_) / np.sqrt(scaler.var_ + model.eps)
    got = out.select("x", "k").to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert out.get_column("w").to_list() == frame.get_column("w").to_list()


@pytest.mark.parametrize("chunk", [1, 3, 64, 500, 1999])
def test_partial_fit_matches_standard_scaler_partial_fit(chunk: int) -> None:
    sk = pytest.importorskip("sklearn.preprocessing")
    frame, _, w = data(1200, seed=3)
    # no NaN here: scikit-learn's partial_fit turns a column's variance into NaN for
    # good when a chunk has no weight on its valid values (bnorm's handling of those
    # is checked against the exact reference below)
    frame = frame.with_columns(pl.col("x").fill_nan(1.5))
    x2 = frame.select("x", "k").cast(pl.Float64).to_numpy()
    scaler = sk.StandardScaler()
    model = BatchNorm(batch_size=2000, weight="w")
    for s in range(0, frame.height, chunk):
        if w[s : s + chunk].any():  # scikit-learn refuses a chunk of zero weights
            scaler.partial_fit(x2[s : s + chunk], sample_weight=w[s : s + chunk])
        model.partial_fit(frame[s : s + chunk])
    for j, c in enumerate(model.columns_):
        pop = model.population_[c]
        assert pop.mean == pytest.approx(scaler.mean_[j], rel=1e-13)
        assert pop.var == pytest.approx(scaler.var_[j], rel=1e-12)


# -- against the exact reference, on hostile columns ------------------------------------------
def hostile(n: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    x = 1e9 + rng.uniform(-1e-3, 1e-3, n)
    w = rng.exponential(1.0, n)
    w[::5] = 0.0
    cols["offset"] = (x, w)
    cols["huge_w"] = (rng.normal(0, 1, n), np.ldexp(1.0, 900) * rng.uniform(0.5, 4, n))
    cols["tiny_w"] = (rng.normal(-7, 3, n), rng.uniform(1, 2, n) * 1e-300)
    mixed = rng.uniform(0, 1, n) * np.where(rng.uniform(0, 1, n) < 0.5, 1e150, 1e-150)
    cols["mixed_w"] = (rng.normal(5, 1, n), mixed)
    xs = rng.normal(1e200, 1e140, n)
    xs[::3] = np.nan  # a row with NaN weighs nothing for this column
    cols["big_x"] = (xs, rng.integers(0, 5, n).astype(float))
    cancel = np.tile([1e16, 1.0, -1e16, 3.0], n // 4 + 1)[:n]
    cols["cancel"] = (cancel, np.tile([2.0, 1.0, 2.0, 0.5], n // 4 + 1)[:n])
    const = np.full(n, 0.1)
    const[::4] = 99.0  # only weight-0 rows differ: the weighted column is constant
    cw = np.ones(n)
    cw[::4] = 0.0
    cols["const"] = (const, cw)
    return cols


@pytest.mark.parametrize("batch_size", [1, 3, 64, 100, 999, 1000])
def test_hostile_columns_against_exact_fractions(batch_size: int) -> None:
    n = 600
    for name, (x, w) in hostile(n, seed=batch_size).items():
        frame = pl.DataFrame({"x": x, "w": w})
        model = BatchNorm(batch_size=batch_size, weight="w").fit(frame)
        pop = model.population_["x"]
        ref = exact_weighted(x, w)
        assert ref is not None
        total, mean, var = ref
        assert close(pop.weight, total, 1e-15), name  # type: ignore[arg-type]
        # the mean to a tiny fraction of the spread (double-double), the variance to ~1e-12
        spread = math.sqrt(float(var)) if var else abs(float(mean))
        assert abs(Fraction(pop.mean_hi) + Fraction(pop.mean_lo) - mean) <= Fraction(
            1e-13 * spread + 1e-300
        ), name
        if var == 0:
            assert pop.var == 0.0 and pop.mean == float(mean), name
        else:
            assert var_close(pop.var, var, x), name


@pytest.mark.parametrize("batch_size", [2, 5, 64, 600])
def test_batch_mode_uses_each_batch_weighted_statistics(batch_size: int) -> None:
    for name, (x, w) in hostile(600, seed=7).items():
        frame = pl.DataFrame({"x": x, "w": w})
        model = BatchNorm(batch_size=batch_size, weight="w", eps=0.0)
        model.start(frame.schema)
        table = model.moments(frame)
        for i, s in enumerate(range(0, len(x), batch_size)):
            ref = exact_weighted(x[s : s + batch_size], w[s : s + batch_size])
            rec = table.moments(i)["x"]
            if ref is None:
                assert rec.weight == 0.0 and rec.mean is None, name
                continue
            total, mean, var = ref
            spread = math.sqrt(float(var)) if var else abs(float(mean))
            assert close(rec.weight, total, 1e-15), name  # type: ignore[arg-type]
            got = Fraction(rec.mean_hi) + Fraction(rec.mean_lo)
            assert abs(got - mean) <= Fraction(1e-12 * spread + 1e-300), (name, i)
            if var:
                assert var_close(rec.biased_var, var, x[s : s + batch_size]), (name, i)
            else:
                assert rec.biased_var == 0.0


def test_normalize_batch_and_running_modes_match_the_reference() -> None:
    frame, x, w = data(1000, seed=5)
    size = 64
    model = BatchNorm(batch_size=size, weight="w")
    model.start(frame.schema)
    got, _, _ = model.normalize_batches(frame, "batch")
    y = got.get_column("x").to_numpy()
    for s in range(0, len(x), size):
        _, mean, var = numpy_batch(x[s : s + size], w[s : s + size])
        want = (x[s : s + size] - mean) / np.sqrt(var + model.eps)
        np.testing.assert_allclose(y[s : s + size], want, rtol=1e-11, atol=1e-12)
    for momentum in (0.1, "cumulative"):
        model = BatchNorm(batch_size=size, weight="w", momentum=momentum).fit(frame)
        m = None if momentum == "cumulative" else 0.1
        r_mean, r_var, k = reference_running(x, w, size, m)
        run = model.running_["x"]
        assert run.updates == k
        assert run.mean == pytest.approx(r_mean, rel=1e-13)
        assert run.var == pytest.approx(r_var, rel=1e-12)


def test_running_skips_batches_whose_weights_sum_to_at_most_one() -> None:
    x = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 13.0])
    w = np.array([0.25, 0.25, 2.0, 0.0, 0.5, 0.5])  # W = 0.5, 2 (one value), 1.0
    model = BatchNorm(batch_size=2, weight="w").fit(pl.DataFrame({"x": x, "w": w}))
    run = model.running_["x"]
    assert run.updates == 1  # only the middle batch: W = 2 > 1, variance 0
    assert run.mean == pytest.approx(0.1 * 3.0) and run.var == pytest.approx(0.9)


def test_integer_weights_equal_repeated_rows() -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(10, 3, 500)
    reps = rng.integers(0, 4, 500)
    weighted = BatchNorm(batch_size=10_000, weight="w").fit(
        pl.DataFrame({"x": x, "w": reps.astype(float)})
    )
    repeated = BatchNorm(batch_size=10_000).fit(pl.DataFrame({"x": np.repeat(x, reps)}))
    a, b = weighted.population_["x"], repeated.population_["x"]
    assert a.mean == pytest.approx(b.mean, rel=1e-14)
    assert a.var == pytest.approx(b.var, rel=1e-13)
    assert a.weight == float(reps.sum()) and a.n == 500 and b.n == reps.sum()


def test_statistics_do_not_depend_on_the_chunking() -> None:
    frame, _, _ = data(3000, seed=2)
    whole = BatchNorm(batch_size=32, weight="w").fit(frame)
    pieces = BatchNorm(batch_size=32, weight="w").fit(
        [frame[s : s + 101] for s in range(0, frame.height, 101)]
    )
    assert stats_file.dumps(whole) == stats_file.dumps(pieces)


def test_merge_of_weighted_fits_equals_the_whole() -> None:
    frame, x, w = data(1500, seed=9)
    for cut in (640, 700):
        parts = [frame[:cut], frame[cut:]]
        fits = [BatchNorm(batch_size=64, weight="w").fit(p) for p in parts]
        merged = merge(fits)
        whole = BatchNorm(batch_size=64, weight="w").fit(frame)
        for c in ("x", "k"):
            got, want = merged.population_[c], whole.population_[c]
            assert (got.n, got.missing) == (want.n, want.missing)
            assert got.weight == pytest.approx(want.weight, rel=1e-15)
            assert got.mean == pytest.approx(want.mean, rel=1e-15)
            assert got.var == pytest.approx(want.var, rel=1e-13)
        ref = exact_weighted(x, w)
        assert ref is not None
        assert merged.population_["x"].var == pytest.approx(float(ref[2]), rel=1e-13)
    unweighted = BatchNorm(batch_size=64, exclude=["w"]).fit(frame[:cut])
    with pytest.raises(StatsFileError, match="weight column"):
        merge([fits[0], unweighted])


# -- rows, errors, files -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "said"),
    [(-1.0, "-1.0 is negative"), (math.nan, "is NaN"), (None, "is missing"), (math.inf, "inf")],
)
def test_bad_weights_name_the_row(bad: Any, said: str) -> None:
    w: list[Any] = [1.0] * 10
    w[6] = bad
    frame = pl.DataFrame({"x": np.arange(10.0), "w": pl.Series(w, dtype=pl.Float64)})
    with pytest.raises(DataError, match=f'weight column "w", row 7: the weight {said}'):
        BatchNorm(batch_size=4, weight="w").fit(frame)


def test_a_column_without_weight_has_no_statistics(tmp_path: Path) -> None:
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0], "y": [4.0, None, 6.0], "w": [0.0, 1.0, 0.0]})
    model = BatchNorm(batch_size=2, weight="w").fit(frame)
    pop = model.population_["y"]
    assert pop.n == 2 and pop.weight == 0.0 and pop.mean is None and pop.var is None
    path = tmp_path / "s.json"
    stats_file.save(model, path)
    doc = json.loads(path.read_text())
    assert doc["columns"]["y"]["mean"] is None and doc["columns"]["y"]["min"] == 4.0
    again = stats_file.load(path)
    assert stats_file.dumps(again) == path.read_text()


def test_statistics_file_round_trip_and_requires(tmp_path: Path, monkeypatch: Any) -> None:
    frame, _, _ = data(500)
    model = BatchNorm(batch_size=64, weight="w").fit(frame)
    path = tmp_path / "s.json"
    stats_file.save(model, path)
    doc = json.loads(path.read_text())
    assert doc["weight"] == "w" and doc["requires"] == ["weights"]
    assert "weight_sum" in doc["columns"]["x"] and "w" not in doc["columns"]
    loaded = stats_file.load(path)
    assert loaded.weight == "w" and stats_file.dumps(loaded) == path.read_text()
    # a bnorm that does not know weights refuses the file instead of applying it
    monkeypatch.setattr(stats_file, "KNOWN_FEATURES", frozenset())
    with pytest.raises(StatsFileError, match="requires weights"):
        stats_file.load(path)
    monkeypatch.undo()
    for edit in (
        lambda d: d.pop("requires"),
        lambda d: d["columns"]["x"].pop("weight_sum"),
    ):
        broken = json.loads(path.read_text())
        edit(broken)
        with pytest.raises(StatsFileError, match="inconsistent"):
            stats_file.from_dict(broken)
    plain = BatchNorm(batch_size=64).fit(frame.drop("w"))
    text = stats_file.dumps(plain)
    assert '"weight"' not in text and "weight_sum" not in text and "requires" not in text


# -- the CLI -------------------------------------------------------------------------------------
def run(args: list[str | Path], code: int = 0) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def test_cli_fit_normalize_and_merge(tmp_path: Path) -> None:
    frame, x, w = data(3000, seed=4)
    pq, csv = tmp_path / "d.parquet", tmp_path / "d.csv"
    frame.write_parquet(pq)
    frame.write_csv(csv)
    for src in (pq, csv):
        run(["fit", src, "-s", tmp_path / "s.json", "--weight", "w", "-b", "100", "-q"])
        doc = json.loads((tmp_path / "s.json").read_text())
        ref = exact_weighted(x, w)
        assert ref is not None
        assert doc["columns"]["x"]["mean"] == pytest.approx(float(ref[1]), rel=1e-14)
        assert doc["columns"]["x"]["var"] == pytest.approx(float(ref[2]), rel=1e-13)
        assert list(doc["columns"]) == ["x", "k"]
    out = tmp_path / "n.csv"
    run(["normalize", csv, "-o", out, "--weight", "w", "-b", "100", "-q"])
    back = pl.read_csv(out)
    assert back.get_column("w").to_list() == pl.read_csv(csv).get_column("w").to_list()
    _, mean, var = numpy_batch(x[:100], w[:100])
    want = (x[:100] - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(back.get_column("x").to_numpy()[:100], want, rtol=1e-10)
    # merge of two weighted statistics files equals the whole fit
    frame[:1200].write_parquet(tmp_path / "a.parquet")
    frame[1200:].write_parquet(tmp_path / "b.parquet")
    for p in ("a", "b"):
        args = ["-s", tmp_path / f"{p}.json", "--weight", "w", "-b", "100", "-q"]
        run(["fit", tmp_path / f"{p}.parquet", *args])
    run(["merge", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "m.json"])
    got = json.loads((tmp_path / "m.json").read_text())
    run(["fit", pq, "-s", tmp_path / "whole.json", "--weight", "w", "-b", "100", "-q"])
    want_doc = json.loads((tmp_path / "whole.json").read_text())
    for key in ("weight_sum", "mean", "var", "running_mean", "running_var"):
        assert got["columns"]["x"][key] == pytest.approx(want_doc["columns"]["x"][key], rel=1e-13)
    # transform applies it; the weight column passes through untouched
    run(["transform", pq, "-s", tmp_path / "m.json", "-o", tmp_path / "t.parquet", "-q"])
    assert pl.read_parquet(tmp_path / "t.parquet").get_column("w").equals(frame.get_column("w"))


def test_cli_errors(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("x,w\n1,1\n2,2\n3,-4\n4,1\n")
    bad = run(["fit", csv, "-s", tmp_path / "s.json", "--weight", "w"], 1)
    line = bad.stderr.strip()
    assert "\n" not in line
    assert str(csv) in line and 'weight column "w", row 3' in line and ">= 0" in line
    csv.write_text("x,w\n1,1\n2,\n")
    assert (
        "row 2: the weight is missing"
        in run(["fit", csv, "-s", tmp_path / "s.json", "--weight", "w"], 1).stderr
    )
    csv.write_text("x,w\n1,1\n2,2\n")
    assert (
        'no column "v"' in run(["fit", csv, "-s", tmp_path / "s.json", "--weight", "v"], 2).stderr
    )
    assert (
        "never normalized"
        in run(["fit", csv, "-s", tmp_path / "s.json", "--weight", "w", "-c", "x,w"], 2).stderr
    )
    pq = tmp_path / "d.parquet"
    pl.read_csv(csv).write_parquet(pq)
    run(["fit", pq, "-s", tmp_path / "s.json", "--weight", "w", "-q"])
    # (fit and normalize --weight on the Dask engine: tests/test_engines.py)
    args = ["-s", tmp_path / "s.json", "-o", tmp_path / "out", "--weight", "w"]
    dask = run(["transform", pq, *args, "--engine", "dask"], 2)
    assert "--engine serial" in dask.stderr


def test_cli_transform_report_drift_and_export(tmp_path: Path) -> None:
    frame, x, w = data(800, seed=6)
    csv, stats = tmp_path / "d.csv", tmp_path / "s.json"
    frame.write_csv(csv)
    run(["fit", csv, "-s", stats, "--weight", "w", "-q"])
    report = tmp_path / "r.json"
    run(["transform", csv, "-s", stats, "-o", tmp_path / "t.csv", "--report", report, "-q"])
    shown = json.loads(report.read_text())
    text = json.dumps(shown)
    ref = exact_weighted(x, w)
    assert ref is not None
    assert repr(float(ref[1]))[:12] in text  # the input statistics are weighted too
    out = pl.read_csv(tmp_path / "t.csv")
    assert out.get_column("w").to_list() == pl.read_csv(csv).get_column("w").to_list()
    np.testing.assert_allclose(
        out.get_column("x").to_numpy(),
        (x - float(ref[1])) / np.sqrt(float(ref[2]) + 1e-5),
        rtol=1e-12,
    )
    run(["fit", csv, "-s", tmp_path / "h.json", "--weight", "w", "--report", tmp_path / "h.html"])
    assert (tmp_path / "h.html").stat().st_size > 0
    run(["transform", csv, "-s", stats, "-o", tmp_path / "t.csv", "--weight", "x"], 2)
    run(["transform", csv, "-s", stats, "-o", tmp_path / "t.csv", "--weight", "nope"], 2)
    assert "--weight" in run(["drift", stats, csv], 2).stderr
    run(["transform", csv, "-s", stats, "-o", tmp_path / "t.csv", "--drift"], 2)
    exported = run(["export", stats, "--to", "sklearn", "-o", "-", "-q"]).stdout
    assert json.loads(exported)["n_samples_seen_"][0] == pytest.approx(float(ref[0]), rel=1e-15)


def test_cli_wide_input_fitted_by_column_groups(tmp_path: Path) -> None:
    """A wide Parquet file is fitted column group by column group; each reads the weights."""
    rng = np.random.default_rng(8)
    n, width = 700, 200
    cols = {f"c{i}": rng.normal(i, 1 + i % 7, n) for i in range(width)}
    w = rng.integers(0, 5, n).astype(float)
    frame = pl.DataFrame({**cols, "w": w})
    path = tmp_path / "wide.parquet"
    frame.write_parquet(path)
    stats = tmp_path / "s.json"
    run(["fit", path, "-s", stats, "--weight", "w", "-b", "64", "-q"])
    got = json.loads(stats.read_text())["columns"]
    want = json.loads(stats_file.dumps(BatchNorm(batch_size=64, weight="w").fit(frame)))
    assert list(got) == list(cols) and got == want["columns"]
    ref = exact_weighted(cols["c150"], w)
    assert ref is not None
    assert got["c150"]["var"] == pytest.approx(float(ref[2]), rel=1e-13)


@pytest.mark.parametrize("choice", [{"scale": "iqr"}, {"center": "median"}])
def test_weighted_quantiles_refused(choice: dict[str, str]) -> None:
    with pytest.raises(UsageError, match="weighted quantiles"):
        BatchNorm(weight="w", **choice)  # type: ignore[arg-type]
