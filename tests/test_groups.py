"""Per-key normalization (--by): every statistic against an independent reference.

References, written from the definitions in core/groups.py's docstring and not
from the engine: polars ``group_by`` (population mean, ddof=0 variance, counts);
exact `fractions` for hostile columns; plain Python loops over the global batches
for batch mode and for the per-group PyTorch recurrence of running mode.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bnorm_cli.cli.app import app
from bnorm_cli.core import groups as gr
from bnorm_cli.core.moments import segment_moments
from bnorm_cli.io import stats_file

runner = CliRunner()
EPS = 1e-5
BATCH_SIZES = [1, 2, 7, 64, 1000, 5000]


def cli(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    return result


def make(n: int = 3000, seed: int = 0, groups: int = 12) -> pl.DataFrame:
    """Integer and string keys (with nulls), values with NaN and nulls, a group offset."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, groups, n)
    s = rng.choice(["a", "b", "c"], n).tolist()
    x = rng.normal(0, 1, n) * (1 + k) + 100.0 * k
    y = rng.normal(3, 2, n)
    x[rng.random(n) < 0.03] = np.nan
    return pl.DataFrame(
        {
            "k": pl.Series(
                [None if i % 17 == 5 else int(v) for i, v in enumerate(k)], dtype=pl.Int64
            ),
            "s": pl.Series([None if v == "c" else v for v in s], dtype=pl.String),
            "x": x,
            "y": pl.Series([None if i % 11 == 3 else float(v) for i, v in enumerate(y)]),
        }
    )


def valid(col: str) -> pl.Expr:
    return pl.col(col).filter(pl.col(col).is_not_null() & pl.col(col).is_not_nan())


def reference_population(df: pl.DataFrame, keys: list[str], col: str) -> pl.DataFrame:
    """polars group_by: count, mean and ddof=0 variance of the valid values."""
    return df.group_by(keys, maintain_order=True).agg(
        valid(col).len().alias("n"),
        valid(col).mean().alias("mean"),
        valid(col).var(ddof=0).alias("var"),
    )


def sidecar(stats: Path) -> pl.DataFrame:
    out = pl.read_parquet(stats.with_name(stats.name + ".groups.parquet"))
    return out


# -- population (fit) ---------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("keys", [["k"], ["s"], ["k", "s"]])
def test_fit_population_matches_polars_group_by(
    tmp_path: Path, batch_size: int, keys: list[str]
) -> None:
    df = make()
    src = tmp_path / "in.parquet"
    df.write_parquet(src)
    stats = tmp_path / "s.json"
    cli("fit", str(src), "-s", str(stats), "--by", ",".join(keys), "-b", str(batch_size), "-q")
    side = sidecar(stats)
    for k in keys:
        assert k not in json.loads(stats.read_text())["columns"]  # keys are never normalized
    for col in ("x", "y"):
        want = reference_population(df, keys, col)
        got = side.select(*keys, pl.col(col).struct.unnest()).join(
            want, on=keys, how="full", nulls_equal=True, coalesce=True
        )
        assert got.height == want.height == side.height
        assert (got["count"] == got["n"]).all()
        np.testing.assert_allclose(got["mean"].to_numpy(), got["mean_right"].to_numpy(), rtol=1e-13)
        np.testing.assert_allclose(
            got["var"].to_numpy(), got["var_right"].to_numpy(), rtol=1e-11, atol=1e-300
        )


def test_population_does_not_depend_on_chunking() -> None:
    """The group fold merges (batch, group) segments in batch order: chunks of whole
    batches of any size give the same bits."""
    df = make(2000)
    results = []
    for chunk in (40, 400, 2000):
        fold = gr.GroupFold(["k"], ["x", "y"], 20, 0.1)
        for start in range(0, df.height, chunk):
            part = df.slice(start, chunk)
            fold.add(part.select("k"), part.select("x", "y"), start, "error")
        order = fold.index.known.sort("k", nulls_last=True)[gr.GROUP_ID].to_numpy()  # type: ignore[union-attr]
        p, r = fold.stats.population, fold.stats.running
        results.append([a[order] for a in (p.n, p.mean_hi, p.mean_lo, p.var, r.mean, r.var)])
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


# -- hostile columns: exact references ---------------------------------------------------
def _exact(values: list[float]) -> tuple[Fraction, Fraction]:
    xs = [Fraction(v) for v in values]
    mean = sum(xs, Fraction(0)) / len(xs)
    return mean, sum(((x - mean) ** 2 for x in xs), Fraction(0)) / len(xs)


@pytest.mark.parametrize("batch_size", [1, 3, 50, 10_000])
def test_hostile_groups_against_fractions(tmp_path: Path, batch_size: int) -> None:
    rng = np.random.default_rng(3)
    n = 600
    key = np.array(["big", "const", "one", "nan", "tiny", "mixed"])[rng.integers(0, 6, n)]
    key[17] = "solo"  # a one-row group
    x = np.empty(n)
    for name, make_values in {
        "big": lambda m: 1e9 + rng.uniform(-1e-3, 1e-3, m),
        "const": lambda m: np.full(m, 7.25),
        "one": lambda m: np.full(m, -3.0),
        "nan": lambda m: np.where(rng.random(m) < 0.5, np.nan, rng.normal(size=m)),
        "tiny": lambda m: rng.normal(size=m) * 1e-150,  # scaled by 2^k before squaring
        "mixed": lambda m: np.where(rng.random(m) < 0.5, 1e16, -1e16) + rng.integers(-3, 4, m),
    }.items():
        at = key == name
        x[at] = make_values(int(at.sum()))
    x[17] = 42.0
    df = pl.DataFrame({"g": key, "x": x})
    src = tmp_path / "h.parquet"
    df.write_parquet(src)
    stats = tmp_path / "h.json"
    cli("fit", str(src), "-s", str(stats), "--by", "g", "-b", str(batch_size), "-q")
    side = sidecar(stats).select("g", pl.col("x").struct.unnest())
    for row in side.iter_rows(named=True):
        values = [v for v, k in zip(x.tolist(), key.tolist(), strict=True) if k == row["g"]]
        values = [v for v in values if not math.isnan(v)]
        mean, var = _exact(values)
        assert row["count"] == len(values)
        got = Fraction(row["mean"]) + Fraction(row["mean_residual"])
        # double-double: the error is that of the deviations, not of the magnitude
        # (1e9 + 1e-3 noise keeps its noise; float64 alone would be 1e-7 off)
        spread = Fraction(math.sqrt(float(var)))
        assert abs(got - mean) <= (abs(mean) * 2**-80 + spread * 2**-48)
        assert math.isclose(row["var"], float(var), rel_tol=1e-9, abs_tol=1e-300)
        if row["g"] in ("const", "one", "solo"):
            assert row["var"] == 0.0 and row["mean"] == values[0]


def test_segment_moments_against_numpy() -> None:
    """Runs of any length, NaN inside: the segment rule agrees with numpy per run."""
    rng = np.random.default_rng(5)
    x = rng.normal(10, 3, 500)
    x[rng.random(500) < 0.1] = np.nan
    starts = np.unique(np.concatenate([[0], rng.integers(1, 500, 40)]))
    rec = segment_moments(x, starts)
    for i, a in enumerate(starts):
        b = starts[i + 1] if i + 1 < starts.size else x.size
        part = x[a:b][~np.isnan(x[a:b])]
        assert rec["n"][i] == part.size
        if part.size:
            assert math.isclose(rec["mean_hi"][i] + rec["mean_lo"][i], part.mean(), rel_tol=1e-14)
            assert math.isclose(rec["var"][i], part.var(), rel_tol=1e-10, abs_tol=1e-14)


# -- transform ------------------------------------------------------------------------------
def _pop_map(df: pl.DataFrame, keys: list[str], col: str) -> pl.DataFrame:
    ref = reference_population(df, keys, col)
    return ref.select(*keys, "n", pl.col("mean").alias("m"), pl.col("var").alias("v"))


@pytest.mark.parametrize("min_count", [1, 150, 10_000])
def test_transform_per_group_unseen_and_min_count(tmp_path: Path, min_count: int) -> None:
    train = make(3000, seed=1, groups=10)
    test = make(800, seed=2, groups=14)  # keys 10..13 are unseen at fit
    src, other = tmp_path / "train.parquet", tmp_path / "test.parquet"
    train.write_parquet(src)
    test.write_parquet(other)
    stats = tmp_path / "s.json"
    fit = cli("fit", str(src), "-s", str(stats), "--by", "k", "--min-count", str(min_count))
    out = tmp_path / "out.parquet"
    result = cli("transform", str(other), "-s", str(stats), "-o", str(out))
    got = pl.read_parquet(out)
    assert got["k"].to_list() == test["k"].to_list()
    unseen = int((~test["k"].is_in(train["k"].unique().to_list(), nulls_equal=True)).sum())
    assert unseen > 0 and f"{unseen:,} rows in" in result.stderr.replace("\n", " ")
    for col in ("x", "y"):
        gv = train.select(valid(col))[col].to_numpy()
        gm, gvar = gv.mean(), gv.var()
        ref = _pop_map(train, ["k"], col)
        rare = ref.filter(pl.col("n") < min_count).height
        if rare and col == "x":
            assert "fewer than" in fit.stderr
        joined = test.with_row_index().join(ref, on="k", how="left", nulls_equal=True)
        joined = joined.sort("index")
        use_global = joined["n"].is_null() | (joined["n"] < min_count)
        m = np.where(use_global, gm, joined["m"].fill_null(0).to_numpy())
        v = np.where(use_global, gvar, joined["v"].fill_null(1).to_numpy())
        x = test[col].cast(pl.Float64).fill_null(np.nan).to_numpy()
        want = (x - m) / np.sqrt(v + EPS)
        np.testing.assert_allclose(
            got[col].fill_null(np.nan).to_numpy(), want, rtol=1e-9, atol=1e-12, equal_nan=True
        )


def test_transform_inverse_round_trip_and_running(tmp_path: Path) -> None:
    df = make(1500)
    src = tmp_path / "in.parquet"
    df.write_parquet(src)
    stats = tmp_path / "s.json"
    cli("fit", str(src), "-s", str(stats), "--by", "k,s", "-b", "100", "-q")
    for use in ("population", "running"):
        out, back = tmp_path / f"o-{use}.parquet", tmp_path / f"b-{use}.parquet"
        cli("transform", str(src), "-s", str(stats), "-o", str(out), "--use", use, "-q")
        cli(
            "transform",
            str(out),
            "-s",
            str(stats),
            "-o",
            str(back),
            "--use",
            use,
            "--inverse",
            "-q",
        )
        got = pl.read_parquet(back)
        np.testing.assert_allclose(
            got["x"].fill_null(np.nan).to_numpy(), df["x"].fill_null(np.nan).to_numpy(),
            rtol=1e-12, equal_nan=True,
        )  # fmt: skip


@pytest.mark.parametrize("kind", ["categorical", "csv"])
def test_categorical_and_csv_keys(tmp_path: Path, kind: str) -> None:
    df = make(900)
    src = tmp_path / "in.parquet"
    df.with_columns(pl.col("s").cast(pl.Categorical)).write_parquet(src)
    stats = tmp_path / "s.json"
    cli("fit", str(src), "-s", str(stats), "--by", "s", "-q")
    target = src
    if kind == "csv":
        target = tmp_path / "in.csv"
        df.write_csv(target)
    out = tmp_path / "out.parquet"
    cli("transform", str(target), "-s", str(stats), "-o", str(out), "-q")
    got = pl.read_parquet(out).with_columns(pl.col("s").cast(pl.String))
    # each group of the output has mean 0 and variance var/(var+eps)
    agg = got.group_by("s").agg(valid("y").mean().alias("m"), valid("y").var(ddof=0).alias("v"))
    assert agg.height == 3  # a, b and the null group
    np.testing.assert_allclose(agg["m"].to_numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(agg["v"].to_numpy(), 1.0, rtol=1e-4)


# -- normalize: batch and running ----------------------------------------------------------
def reference_normalize(
    keys: list[Any], x: np.ndarray, batch_size: int, mode: str, momentum: float | None,
    min_count: int,
) -> np.ndarray:  # fmt: skip
    """Plain loops: batch i = rows [i*B, (i+1)*B); group g's update i = its rows there."""
    out = np.full(x.size, np.nan)
    run: dict[Any, list[float]] = {}  # key -> [mean, var, updates, seen]
    grun = [0.0, 1.0, 0]
    for start in range(0, x.size, batch_size):
        rows = np.arange(start, min(start + batch_size, x.size))
        xb = x[rows]
        vb = xb[~np.isnan(xb)]
        # the global statistics of the batch (the fallback)
        if vb.size >= 2:
            f = momentum if momentum is not None else 1.0 / (grun[2] + 1)
            grun = [
                (1 - f) * grun[0] + f * vb.mean(),
                (1 - f) * grun[1] + f * vb.var(ddof=1),
                grun[2] + 1,
            ]
        gmean, gvar = (vb.mean(), vb.var()) if vb.size else (0.0, 0.0)
        for key in dict.fromkeys(keys[r] for r in rows):
            at = rows[[keys[r] == key for r in rows]]
            xv = x[at][~np.isnan(x[at])]
            st = run.setdefault(key, [0.0, 1.0, 0, 0])
            st[3] += xv.size
            if xv.size >= 2:
                f = momentum if momentum is not None else 1.0 / (st[2] + 1)
                st[0] = (1 - f) * st[0] + f * xv.mean()
                st[1] = (1 - f) * st[1] + f * xv.var(ddof=1)
                st[2] += 1
            if mode == "batch":
                rare = xv.size < min_count
                m, v = (gmean, gvar) if rare else ((xv.mean(), xv.var()) if xv.size else (0, 0))
            else:
                rare = st[3] < min_count
                m, v = (grun[0], grun[1]) if rare else (st[0], st[1])
            out[at] = (x[at] - m) / np.sqrt(v + EPS)
    return out


@pytest.mark.parametrize("mode", ["batch", "running"])
@pytest.mark.parametrize("batch_size", [1, 5, 64, 700])
@pytest.mark.parametrize("momentum", ["0.1", "cumulative"])
def test_normalize_per_group_against_loops(
    tmp_path: Path, mode: str, batch_size: int, momentum: str
) -> None:
    df = make(1400, seed=4, groups=6)
    src = tmp_path / "in.parquet"
    df.write_parquet(src)
    out, stats = tmp_path / "out.parquet", tmp_path / "s.json"
    min_count = 3
    args = ["normalize", str(src), "-o", str(out), "--by", "k", "--mode", mode]
    args += ["-b", str(batch_size), "--momentum", momentum, "--min-count", str(min_count)]
    cli(*args, "-s", str(stats), "-q")
    got = pl.read_parquet(out)
    keys = df["k"].to_list()
    m = None if momentum == "cumulative" else float(momentum)
    for col in ("x", "y"):
        x = df[col].cast(pl.Float64).fill_null(np.nan).to_numpy()
        want = reference_normalize(keys, x, batch_size, mode, m, min_count)
        np.testing.assert_allclose(
            got[col].fill_null(np.nan).to_numpy(), want, rtol=1e-8, atol=1e-9, equal_nan=True
        )
    # the saved statistics are a per-key fit: transform reads them
    assert "by" in json.loads(stats.read_text())["requires"]
    cli("transform", str(src), "-s", str(stats), "-o", str(tmp_path / "t.parquet"), "-q")


# -- the statistics file and its sidecar -----------------------------------------------------
def test_sidecar_is_required_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    df = make(500)
    src = tmp_path / "in.parquet"
    df.write_parquet(src)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    cli("fit", str(src), "-s", str(a), "--by", "k", "-q")
    cli("fit", str(src), "-s", str(b), "--by", "k", "-q")
    doc = json.loads(a.read_text())
    assert doc["requires"] == ["by"] and doc["by"]["sidecar"] == "a.json.groups.parquet"
    assert pq.read_table(tmp_path / "a.json.groups.parquet").num_rows == doc["by"]["groups"]
    out = str(tmp_path / "o.parquet")
    # another fit's sidecar
    (tmp_path / "a.json.groups.parquet").write_bytes(
        (tmp_path / "b.json.groups.parquet").read_bytes()
    )
    r = cli("transform", str(src), "-s", str(a), "-o", out, code=1)
    assert "another fit" in r.stderr
    (tmp_path / "a.json.groups.parquet").unlink()
    r = cli("transform", str(src), "-s", str(a), "-o", out, code=1)
    assert "missing" in r.stderr and not Path(out).exists()
    # an older bnorm, which does not know "by", refuses the file
    monkeypatch.setattr(stats_file, "KNOWN_FEATURES", frozenset())
    r = cli("inspect", str(b), code=1)
    assert "requires by" in r.stderr


def test_failed_fit_publishes_neither_file(tmp_path: Path) -> None:
    df = make(300).with_columns(
        pl.when(pl.int_range(pl.len()) == 250).then(float("inf")).otherwise(pl.col("x")).alias("x")
    )
    src = tmp_path / "in.parquet"
    df.write_parquet(src)
    stats = tmp_path / "s.json"
    r = cli("fit", str(src), "-s", str(stats), "--by", "k", code=1)
    assert "row 251" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_inspect_shows_largest_shifts(tmp_path: Path) -> None:
    df = make(2000, groups=8)
    src = tmp_path / "in.parquet"
    df.write_parquet(src)
    stats = tmp_path / "s.json"
    cli("fit", str(src), "-s", str(stats), "--by", "k", "-q")
    r = cli("inspect", str(stats))
    # the largest shift of x is the group farthest from the global mean (k=7 or k=0)
    xs = df.select(valid("x"))["x"]
    means = df.group_by("k").agg(valid("x").mean()).drop_nulls("k")
    far = means.with_columns(((pl.col("x") - xs.mean()).abs()).alias("d")).sort("d")[-1, "k"]
    lines = [ln for ln in r.stderr.splitlines() if "k=" in ln]
    assert lines and lines[0].split()[0] == f"k={far}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-count", "2"], "--min-count needs --by"),
        (["--by", "k", "-c", "k,x"], "never normalized"),
        (["--by", "nope"], 'error: --by: no column "nope" in the input\n'),
        (["--by", "kk"], 'error: --by: no column "kk" in the input (did you mean "k"?)\n'),
        (["--by", "k", "--min-count", "0"], "--min-count must be"),
        (["--by", "k", "--engine", "dask"], "cannot be combined with --by"),
        (["--by", "k", "--scale", "range"], "cannot be combined with --by"),
        (["--by", "k", "--weight", "y"], "cannot be combined with --by"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    src = tmp_path / "in.parquet"
    make(50).write_parquet(src)
    r = cli("fit", str(src), "-s", str(tmp_path / "s.json"), *args, code=2)
    assert message in r.stderr


def test_normalize_refuses_renorm_per_key(tmp_path: Path) -> None:
    """Per-key normalization has batch and running modes; renorm is refused, not run
    as batch mode under its name."""
    src = tmp_path / "in.parquet"
    make(50).write_parquet(src)
    out = tmp_path / "out.parquet"
    r = cli("normalize", str(src), "-o", str(out), "--by", "k", "--mode", "renorm", code=2)
    assert "--mode renorm cannot be combined with --by yet" in r.stderr
    assert not out.exists()


def test_other_commands_refuse_per_key_files(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    make(50).write_parquet(src)
    stats = tmp_path / "s.json"
    cli("fit", str(src), "-s", str(stats), "--by", "k", "-q")
    r = cli("export", str(stats), "--to", "sklearn", "-o", str(tmp_path / "e.json"), code=2)
    assert "per-key" in r.stderr
    r = cli("merge", str(stats), str(stats), "-o", str(tmp_path / "m.json"), code=2)
    assert "per-key" in r.stderr
    model = stats_file.load(stats)
    with pytest.raises(Exception, match="per key"):
        model.transform(make(10))


@pytest.mark.parametrize("batch_size", [1, 7, 200, 5000])
@pytest.mark.parametrize("momentum", ["0.3", "cumulative"])
def test_fit_running_per_group_against_loop(tmp_path: Path, batch_size: int, momentum: str) -> None:
    """Group g's k-th update is its rows in the k-th global batch where it appears."""
    df = make(1200, seed=7, groups=5)
    src = tmp_path / "in.parquet"
    df.write_parquet(src)
    stats = tmp_path / "s.json"
    cli("fit", str(src), "-s", str(stats), "--by", "k", "-b", str(batch_size),
        "--momentum", momentum, "-q")  # fmt: skip
    side = sidecar(stats).select("k", pl.col("x").struct.unnest())
    x = df["x"].fill_null(np.nan).to_numpy()
    keys = df["k"].to_list()
    m = None if momentum == "cumulative" else float(momentum)
    want: dict[Any, list[float]] = {}
    for start in range(0, x.size, batch_size):
        rows = range(start, min(start + batch_size, x.size))
        for key in dict.fromkeys(keys[r] for r in rows):
            v = np.array([x[r] for r in rows if keys[r] == key])
            v = v[~np.isnan(v)]
            st = want.setdefault(key, [0.0, 1.0, 0])
            if v.size >= 2:
                f = m if m is not None else 1.0 / (st[2] + 1)
                st[0] = (1 - f) * st[0] + f * v.mean()
                st[1] = (1 - f) * st[1] + f * v.var(ddof=1)
                st[2] += 1
    assert side.height == len(want)
    for row in side.iter_rows(named=True):
        mean, var, updates = want[row["k"]]
        assert row["running_updates"] == updates
        assert math.isclose(row["running_mean"], mean, rel_tol=1e-11, abs_tol=1e-12)
        assert math.isclose(row["running_var"], var, rel_tol=1e-11, abs_tol=1e-12)


def test_strict_makes_fallbacks_errors_and_stdin_works(tmp_path: Path) -> None:
    train, test = make(400, groups=4), make(300, seed=9, groups=6)
    src, other = tmp_path / "train.csv", tmp_path / "test.parquet"
    train.write_csv(src)
    test.write_parquet(other)
    stats = tmp_path / "s.json"
    result = runner.invoke(
        app, ["fit", "-", "-s", str(stats), "--by", "k,s", "-q"], input=src.read_text()
    )
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "out.parquet"
    r = cli("transform", str(other), "-s", str(stats), "-o", str(out), "--strict", code=1)
    assert "--strict" in r.stderr and "unseen at fit" in r.stderr and not out.exists()
    cli("transform", str(other), "-s", str(stats), "-o", str(out), "-q")
    assert pl.read_parquet(out).height == test.height


def test_empty_fit_then_every_group_is_unseen(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    make(10).head(0).write_parquet(empty)
    stats = tmp_path / "s.json"
    cli("fit", str(empty), "-s", str(stats), "--by", "k,s", "-q")
    src = tmp_path / "in.parquet"
    make(40).write_parquet(src)
    r = cli("transform", str(src), "-s", str(stats), "-o", str(tmp_path / "o.parquet"))
    assert "40 rows in" in r.stderr


def test_transform_never_overwrites_the_sidecar(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    make(50).write_parquet(src)
    stats = tmp_path / "s.json"
    cli("fit", str(src), "-s", str(stats), "--by", "k", "-q")
    side = tmp_path / "s.json.groups.parquet"
    before = side.read_bytes()
    r = cli("transform", str(src), "-s", str(stats), "-o", str(side), "--output-format", "parquet",
            code=1)  # fmt: skip
    assert "also an input" in r.stderr and side.read_bytes() == before
