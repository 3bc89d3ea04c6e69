"""Batch renormalization (``normalize --mode renorm``, core/renorm.py) against
references written from the formulas, not from the engine:

* `reference`: plain numpy/math on the raw values, one column and one batch at a
  time, the whole recurrence with its schedule and clipping;
* `exact`: the same in `fractions` (square roots to 60 digits with `decimal`);
* `keras3`: a transcription of Keras 3's ``BatchNormalization(renorm=True)``
  training step (keras/src/layers/normalization/batch_normalization.py), to check
  where bnorm agrees with it (README "Batch renormalization": they agree when
  Keras' moving statistics start at the first batch's and rmin = 1/rmax).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, getcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from bnorm_cli import BatchNorm
from bnorm_cli.cli.app import app
from bnorm_cli.core import renorm as rn
from bnorm_cli.core.errors import UsageError
from bnorm_cli.io import stats_file

runner = CliRunner()


# -- the references ------------------------------------------------------------------
def limits(k: int, rmax: float, dmax: float, warmup: int, ramp: int) -> tuple[float, float]:
    """The schedule as README states it, for batch ``k`` (from 0)."""
    if k < warmup:
        return 1.0, 0.0
    if ramp == 0 or k - warmup + 1 >= ramp:
        return rmax, dmax
    p = (k - warmup + 1) / ramp
    return 1.0 + p * (rmax - 1.0), p * dmax


def clip(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def ratio(num: float, den: float, neutral: float) -> float:
    """num / den, with c/0 = +-inf and 0/0 = neutral (zero spread, eps = 0)."""
    if den == 0.0:
        return neutral if num == 0.0 else math.copysign(math.inf, num)
    return num / den


def reference(
    x: np.ndarray,
    size: int,
    eps: float = 1e-5,
    gamma: float = 1.0,
    beta: float = 0.0,
    alpha: float = 0.01,
    rmax: float = 3.0,
    dmax: float = 5.0,
    warmup: int = 0,
    ramp: int = 0,
) -> dict[str, Any]:
    """One column (NaN = missing): output, per-batch r and d, final moving mean/std."""
    y = np.full(x.size, math.nan)
    mu = sd = None
    rs, ds = [], []
    for k, start in enumerate(range(0, x.size, size)):
        xb = x[start : start + size]
        valid = xb[~np.isnan(xb)]
        if valid.size == 0:
            rs.append(math.nan)
            ds.append(math.nan)
            continue
        mu_b = math.fsum(valid.tolist()) / valid.size
        v_b = math.fsum(((valid - mu_b) ** 2).tolist()) / valid.size
        if (valid == valid[0]).all():  # design.md: a constant batch's mean is the constant
            mu_b, v_b = float(valid[0]), 0.0
        s_b = math.sqrt(v_b + eps)
        if mu is None or sd is None:
            mu, sd = mu_b, s_b
        rk, dk = limits(k, rmax, dmax, warmup, ramp)
        r = clip(ratio(s_b, sd, 1.0), 1.0 / rk, rk)
        d = clip(ratio(mu_b - mu, sd, 0.0), -dk, dk)
        r, d = (r if math.isfinite(r) else 1.0), (d if math.isfinite(d) else 0.0)
        rs.append(r)
        ds.append(d)
        # sigma_B = 0 (eps = 0): maps.build's rule, scale 1; for a constant batch z = 0,
        # and for values whose variance underflows (5e-324) z stays finite
        z = (xb - mu_b) / (s_b if s_b > 0 else 1.0)
        y[start : start + xb.size] = np.where(np.isnan(xb), np.nan, gamma * (z * r + d) + beta)
        mu += alpha * (mu_b - mu)
        sd += alpha * (s_b - sd)
    return {"y": y, "r": np.array(rs), "d": np.array(ds), "mean": mu, "std": sd}


def _sqrt(q: Fraction) -> Fraction:
    getcontext().prec = 60
    return Fraction(Decimal(q.numerator).sqrt() / Decimal(q.denominator).sqrt())


def exact(
    x: list[int], size: int, eps: Fraction, alpha: Fraction, rmax: int, dmax: int, ramp: int
) -> tuple[list[Fraction], Fraction, Fraction]:
    """The recurrence in rationals (warmup 0): outputs, final moving mean and std."""
    out: list[Fraction] = []
    mu = sd = None
    for k, start in enumerate(range(0, len(x), size)):
        xb = [Fraction(v) for v in x[start : start + size]]
        mu_b = sum(xb, Fraction(0)) / len(xb)
        v_b = sum(((v - mu_b) ** 2 for v in xb), Fraction(0)) / len(xb)
        s_b = _sqrt(v_b + eps)
        if mu is None or sd is None:
            mu, sd = mu_b, s_b
        p = Fraction(1) if ramp == 0 else min(Fraction(1), Fraction(k + 1, ramp))
        rk, dk = 1 + p * (rmax - 1), p * dmax
        r = min(max(s_b / sd, 1 / rk), rk)
        d = min(max((mu_b - mu) / sd, -dk), dk)
        out += [(v - mu_b) / s_b * r + d for v in xb]
        mu += alpha * (mu_b - mu)
        sd += alpha * (s_b - sd)
    assert mu is not None and sd is not None
    return out, mu, sd


def keras3(
    x: np.ndarray,
    size: int,
    eps: float,
    momentum: float,
    renorm_momentum: float,
    clipping: dict[str, float],
    init_mean: float,
    init_var: float,
) -> tuple[np.ndarray, float, float]:
    """Keras 3's training step, transcribed (one column, no mask, float64): renorm_mean
    and renorm_stddev (renorm_momentum) correct the batch; moving_mean and
    moving_stddev (momentum) are updated alike and moving_variance =
    relu(moving_stddev**2 - eps) is what inference uses."""
    renorm_mean, renorm_std = init_mean, math.sqrt(init_var)
    moving_mean, moving_std = init_mean, math.sqrt(init_var)
    out = []
    for start in range(0, x.size, size):
        xb = x[start : start + size]
        mean, var = float(xb.mean()), float(xb.var())
        std = math.sqrt(var + eps)
        floor = max(renorm_std, math.sqrt(eps))  # "avoid divide by zero early on"
        r, d = std / floor, (mean - renorm_mean) / floor
        if "rmin" in clipping:
            r = max(r, clipping["rmin"])
        if "rmax" in clipping:
            r = min(r, clipping["rmax"])
        if "dmax" in clipping:
            d = clip(d, -clipping["dmax"], clipping["dmax"])
        # batch_normalization(x, mean, var, offset=d*gamma+beta, scale=r*gamma, eps)
        out.append((xb - mean) / math.sqrt(var + eps) * r + d)
        renorm_mean = renorm_mean * renorm_momentum + mean * (1 - renorm_momentum)
        renorm_std = renorm_std * renorm_momentum + std * (1 - renorm_momentum)
        moving_mean = moving_mean * momentum + mean * (1 - momentum)
        moving_std = moving_std * momentum + std * (1 - momentum)
    return np.concatenate(out), moving_mean, max(moving_std * moving_std - eps, 0.0)


# -- helpers ---------------------------------------------------------------------------
def bnorm_renorm(
    frame: pl.DataFrame, size: int, eps: float = 1e-5, **options: Any
) -> tuple[pl.DataFrame, BatchNorm]:
    gamma, beta = options.pop("gamma", 1.0), options.pop("beta", 0.0)
    model = BatchNorm(batch_size=size, eps=eps, gamma=gamma, beta=beta, renorm=options)
    model.start(frame.schema)
    out, _, _ = model.normalize_batches(frame, "renorm")
    return out, model


def column(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    if kind == "normal":
        return rng.normal(3.0, 2.0, n)
    if kind == "offset":  # |mean| >> std: the map must center first
        return 1e9 + rng.normal(0, 1e-3, n)
    if kind == "drifting":  # batch means move: r and d hit their clips
        return np.linspace(-50, 50, n) + rng.normal(0, 1, n) * np.linspace(0.1, 8, n)
    if kind == "holes":
        x = rng.standard_t(3, n)
        x[rng.random(n) < 0.3] = np.nan
        x[: min(n, 9)] = np.nan  # the first batches may have no value at all
        return x
    raise AssertionError(kind)


KINDS = ["normal", "offset", "drifting", "holes"]


# -- the schedule ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("warmup", "ramp"), [(0, 0), (0, 1), (3, 0), (2, 4), (5, 10), (0, 7), (100, 3)]
)
def test_schedule_matches_its_definition(warmup: int, ramp: int) -> None:
    options = rn.check(rmax=3.0, dmax=5.0, warmup=warmup, ramp=ramp)
    k = np.arange(130)
    rmax, dmax = options.limits(k)
    want = np.array([limits(int(i), 3.0, 5.0, warmup, ramp) for i in k])
    assert_allclose(rmax, want[:, 0], rtol=1e-15)
    assert_allclose(dmax, want[:, 1], rtol=1e-15)
    assert (rmax[:warmup] == 1.0).all() and (dmax[:warmup] == 0.0).all()
    full = warmup + max(ramp, 1) - 1  # the first batch at the full limits
    assert rmax[full] == 3.0 and dmax[full] == 5.0
    if ramp > 1:
        assert rmax[full - 1] < 3.0 and rmax[warmup] == 1.0 + 2.0 / ramp


def test_schedule_with_infinite_limits() -> None:
    rmax, dmax = rn.check(rmax=math.inf, dmax=math.inf, warmup=2, ramp=3).limits(np.arange(6))
    assert rmax.tolist() == [1.0, 1.0, math.inf, math.inf, math.inf, math.inf]
    assert dmax.tolist() == [0.0, 0.0, math.inf, math.inf, math.inf, math.inf]


# -- the recurrence against the references ----------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 3, 7, 50, 333, 1000, 4999, 5000, 5042])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_the_reference(size: int, kind: str) -> None:
    rng = np.random.default_rng(size)
    n = 5000
    x = column(rng, n, kind)
    options = {"momentum": 0.05, "rmax": 2.0, "dmax": 1.5, "warmup": 3, "ramp": 6}
    out, model = bnorm_renorm(pl.DataFrame({"x": x}), size, gamma=1.5, beta=-0.25, **options)
    alpha = options.pop("momentum")
    # renorm commutes with a shift: the reference of 1e9 + noise is that of the noise
    # (x - 1e9 is exact), which float64 holds to its last bit
    shifted = x - 1e9 if kind == "offset" else x
    ref = reference(shifted, size, gamma=1.5, beta=-0.25, alpha=alpha, **options)  # type: ignore[arg-type]
    got = out["x"].to_numpy()
    assert np.array_equal(np.isnan(got), np.isnan(ref["y"]))
    ok = ~np.isnan(got)
    assert_allclose(got[ok], ref["y"][ok], rtol=1e-11, atol=1e-11)
    trace = model.last_renorm_
    assert trace is not None
    assert np.array_equal(np.isnan(trace.r[:, 0]), np.isnan(ref["r"]))
    assert_allclose(trace.r[:, 0], ref["r"], rtol=1e-11)
    assert_allclose(trace.d[:, 0], ref["d"], rtol=1e-9, atol=1e-9)
    run = model.running_["x"]
    assert run.mean - (1e9 if kind == "offset" else 0.0) == pytest.approx(
        ref["mean"],
        rel=1e-13,
        abs=1e-7 if kind == "offset" else 0.0,  # an ulp of 1e9
    )
    assert run.var == pytest.approx(max(ref["std"] ** 2 - 1e-5, 0.0), rel=1e-9)
    assert run.updates == int(sum(1 for r in ref["r"] if not math.isnan(r)))


def test_clipping_binds_on_a_drifting_column() -> None:
    """The test above must exercise the clips: on the drifting column they bind."""
    x = column(np.random.default_rng(0), 5000, "drifting")
    _, model = bnorm_renorm(pl.DataFrame({"x": x}), 100)
    t = model.last_renorm_
    assert t is not None
    assert (np.abs(t.d[:, 0]) == 5.0).any() and (t.r[:, 0] == 3.0).any()
    assert t.r[0, 0] == 1.0 and t.d[0, 0] == 0.0  # the first batch: its own statistics


def test_matches_exact_rationals() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(-1000, 1000, 60).tolist()
    x[20:30] = [x[20]] * 10  # a constant batch (sigma_B = sqrt(eps))
    x[40:] = [v * 50 + 7000 for v in x[40:]]  # a jump: r and d clip
    eps, alpha = Fraction(1, 100000), Fraction(1, 4)
    want, mu, sd = exact(x, 10, eps, alpha, rmax=3, dmax=2, ramp=3)
    out, model = bnorm_renorm(
        pl.DataFrame({"x": [float(v) for v in x]}),
        10,
        eps=1e-5,
        momentum=0.25,
        rmax=3.0,
        dmax=2.0,
        ramp=3,
    )
    got = out["x"].to_list()
    for g, w in zip(got, want, strict=True):
        assert abs(Fraction(g) - w) <= abs(w) * Fraction(1, 10**13) + Fraction(1, 10**13)
    run = model.running_["x"]
    assert abs(Fraction(run.mean) - mu) <= abs(mu) * Fraction(1, 10**15)
    assert abs(Fraction(run.var) - (sd * sd - eps)) <= sd * sd * Fraction(1, 10**14)


@pytest.mark.parametrize("size", [4, 10, 64])
def test_agrees_with_keras3_when_they_start_alike(size: int) -> None:
    """Keras' moving statistics start at 0/1 and bnorm's at the first batch's; started
    from the first batch's statistics, with rmin = 1/rmax and momentum =
    renorm_momentum = 1 - alpha, Keras gives bnorm's output and inference statistics."""
    rng = np.random.default_rng(size)
    x = np.concatenate([rng.normal(0, 1, 200), rng.normal(4, 3, 200)])
    first = x[:size]
    eps, alpha = 1e-3, 0.1
    want, mean, var = keras3(
        x,
        size,
        eps,
        1 - alpha,
        1 - alpha,
        {"rmin": 1 / 3, "rmax": 3.0, "dmax": 5.0},
        float(first.mean()),
        float(first.var()) + eps,
    )
    out, model = bnorm_renorm(pl.DataFrame({"x": x}), size, eps=eps, momentum=alpha)
    assert_allclose(out["x"].to_numpy(), want, rtol=1e-10, atol=1e-10)
    run = model.running_["x"]
    assert run.mean == pytest.approx(mean, rel=1e-12)
    assert run.var == pytest.approx(var, rel=1e-10)


def test_differs_from_keras3_defaults_by_the_start() -> None:
    """With Keras' default start (moving mean 0, std 1) the first batches differ: Keras
    corrects them toward 0/1 (d clipped at dmax), bnorm's first batch is plain BN."""
    x = np.random.default_rng(1).normal(100.0, 10.0, 400)
    want, _, _ = keras3(x, 40, 1e-3, 0.99, 0.99, {"rmin": 1 / 3, "rmax": 3.0, "dmax": 5.0}, 0, 1)
    out, _ = bnorm_renorm(pl.DataFrame({"x": x}), 40, eps=1e-3)
    got = out["x"].to_numpy()
    assert abs(float(got[:40].mean())) < 1e-9  # plain BN
    assert float(want[:40].mean()) == pytest.approx(5.0)  # d = dmax: mean 100 vs 0


def test_chunking_and_train_step_give_the_same_bits() -> None:
    rng = np.random.default_rng(2)
    x = column(rng, 3000, "holes")
    frame = pl.DataFrame({"x": x, "y": rng.normal(size=3000)})
    whole, model = bnorm_renorm(frame, 7, ramp=20)
    stepwise = BatchNorm(batch_size=7, renorm={"ramp": 20})
    pieces = [stepwise.train_step(frame.slice(i, 7), "renorm") for i in range(0, 3000, 7)]
    assert pl.concat(pieces).equals(whole)
    assert stepwise.running_ == model.running_
    chunked = BatchNorm(batch_size=7, renorm={"ramp": 20})
    chunked.start(frame.schema)
    parts = [
        chunked.normalize_batches(frame.slice(i, 700), "renorm")[0] for i in range(0, 3000, 700)
    ]
    assert pl.concat(parts).equals(whole)


# -- awkward columns -----------------------------------------------------------------
def test_constant_and_missing_columns() -> None:
    n = 100
    frame = pl.DataFrame(
        {
            "const": np.full(n, 7.0),
            "nulls": pl.Series([None] * n, dtype=pl.Float64),
            "nan": np.full(n, np.nan),
            "one": [1.0 if i % 10 == 0 else None for i in range(n)],  # one value a batch
        }
    )
    out, model = bnorm_renorm(frame, 10, gamma=2.0, beta=0.5)
    assert (out["const"] == 0.5).all()  # every batch: r = 1, d = 0
    assert out["nulls"].null_count() == n and out["nan"].is_nan().all()
    assert out["one"].drop_nulls().to_list() == [0.5] * 10  # mu_B = x, d = 0 (mu unchanged)
    run = model.running_
    assert run["const"].mean == 7.0 and run["const"].var == 0.0  # sqrt(eps)^2 - eps
    assert run["nulls"].updates == 0 and (run["nulls"].mean, run["nulls"].var) == (0.0, 1.0)
    assert run["one"].updates == 10
    messages = model.diagnose(renorm=True)
    assert len([m for m in messages if "never started" in m]) == 1
    assert '"nulls"' in messages[-1] and '"nan"' in messages[-1]


def test_eps_zero_zero_spread() -> None:
    """eps = 0: c/0 clips to the limit, 0/0 is neutral; outputs stay finite."""
    x = np.concatenate([np.zeros(10), np.full(10, 5.0), np.arange(10.0), np.full(10, 5.0)])
    out, model = bnorm_renorm(pl.DataFrame({"x": x}), 10, eps=0.0, gamma=2.0, beta=1.0)
    ref = reference(x, 10, eps=0.0, gamma=2.0, beta=1.0)
    got = out["x"].to_numpy()
    assert np.isfinite(got).all()
    assert_allclose(got, ref["y"], rtol=1e-13, atol=1e-13)
    t = model.last_renorm_
    assert t is not None
    # batch 0: 0/0 -> r = 1, d = 0 (beta); batch 1: sigma = 0, so d = 5/0 -> dmax
    assert got[:10].tolist() == [1.0] * 10 and t.d[1, 0] == 5.0 and got[10] == 2 * 5 + 1
    # batch 2: sigma_B > 0 = sigma: r = rmax
    assert t.r[2, 0] == 3.0
    # without limits, an infinite correction is not applied (r = 1, d = 0): finite
    out, model = bnorm_renorm(
        pl.DataFrame({"x": x}), 10, eps=0.0, rmax=math.inf, dmax=math.inf, momentum=0.5
    )
    t = model.last_renorm_
    assert t is not None and np.isfinite(out["x"].to_numpy()).all()
    assert (t.r[1, 0], t.d[1, 0]) == (1.0, 0.0)  # 0/0 and 5/0


def test_an_offset_column_keeps_its_digits() -> None:
    """(x - mu_B) * scale + beta': a column at 1e9 with spread 1e-3 keeps its noise."""
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 1e-3, 4000)
    out, _ = bnorm_renorm(pl.DataFrame({"x": 1e9 + noise}), 500)
    ref = reference(noise, 500)  # the same data without the offset
    assert_allclose(out["x"].to_numpy(), ref["y"], rtol=0, atol=2e-5)


# -- sorted data: bounded, unlike running mode -------------------------------------------
def test_sorted_file_stays_bounded_unlike_running_mode(tmp_path: Path) -> None:
    x = np.sort(np.random.default_rng(7).normal(size=100_000))
    src = tmp_path / "sorted.parquet"
    pl.DataFrame({"x": x}).write_parquet(src)
    outs = {}
    for mode in ("renorm", "running", "batch"):
        out = tmp_path / f"{mode}.parquet"
        _run(["normalize", src, "-o", out, "--mode", mode, "-b", "500", "-q"])
        outs[mode] = pl.read_parquet(out)["x"].to_numpy()
    z = outs["batch"]  # (x - mu_B) / sigma_B
    # |y| <= rmax |z| + dmax for every row, a bound from the clip alone
    assert (np.abs(outs["renorm"]) <= 3.0 * np.abs(z) + 5.0 + 1e-9).all()
    # running mode: most rows beyond 8 sigma, up to tens; renorm: within rmax|z| + dmax,
    # so only the rows of the skewed tail batches (|z| up to 5 there) go beyond 8
    assert np.abs(outs["running"]).max() > 25.0 and (np.abs(outs["running"]) > 8).mean() > 0.5
    assert (np.abs(outs["renorm"]) > 8).mean() < 0.002
    assert np.percentile(np.abs(outs["renorm"]), 99) < 6.0


# -- the command line and the statistics file --------------------------------------------
def _run(args: list[Any], code: int = 0) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    n = 3000
    x = np.cumsum(rng.normal(0, 1, n)) + rng.normal(0, 1, n)
    x[::17] = np.nan
    path = tmp_path / "data.parquet"
    pl.DataFrame(
        {"x": x, "w": rng.exponential(3, n), "t": [f"r{i}" for i in range(n)]}
    ).write_parquet(path)
    return path


def test_statistics_file_and_transform_use_running(data: Path, tmp_path: Path) -> None:
    out, stats = tmp_path / "out.parquet", tmp_path / "stats.json"
    args = ["--mode", "renorm", "-b", "128", "--warmup", "2", "--ramp", "5", "--rmax", "inf"]
    _run(["normalize", data, "-o", out, "-s", stats, *args, "--renorm-momentum", "0.2", "-q"])
    doc = json.loads(stats.read_text())
    assert doc["renorm"] == {"momentum": 0.2, "rmax": "inf", "dmax": 5.0, "warmup": 2, "ramp": 5}
    frame = pl.read_parquet(data)
    for c in ("x", "w"):
        x = frame[c].fill_null(np.nan).to_numpy()
        ref = reference(x, 128, alpha=0.2, rmax=math.inf, warmup=2, ramp=5)
        col = doc["columns"][c]
        assert col["running_mean"] == pytest.approx(ref["mean"], rel=1e-12)
        assert col["running_var"] == pytest.approx(ref["std"] ** 2 - 1e-5, rel=1e-9)
        got = pl.read_parquet(out)[c].to_numpy()
        assert_allclose(got, ref["y"], rtol=1e-11, atol=1e-11)
    # inference: (x - mu) / sqrt(sigma^2 - eps + eps) = (x - mu) / sigma
    applied = tmp_path / "applied.parquet"
    _run(["transform", data, "-s", stats, "--use", "running", "-o", applied, "-q"])
    x = frame["x"].to_numpy()
    mu, var = doc["columns"]["x"]["running_mean"], doc["columns"]["x"]["running_var"]
    assert_allclose(
        pl.read_parquet(applied)["x"].to_numpy(), (x - mu) / math.sqrt(var + 1e-5), rtol=1e-12
    )
    # the file loads back, and saves to the same bytes; a field a later bnorm adds to
    # "renorm" is ignored, a bad value is refused as a bad file (exit 1)
    assert stats_file.dumps(stats_file.load(stats)) == stats.read_text()
    later = tmp_path / "later.json"
    later.write_text(json.dumps({**doc, "renorm": {**doc["renorm"], "new": 1}}))
    assert stats_file.load(later).renorm == stats_file.load(stats).renorm
    later.write_text(json.dumps({**doc, "renorm": {**doc["renorm"], "rmax": 0.5}}))
    _run(["inspect", later], code=1)
    # its running statistics do not continue or compose
    _run(["fit", data, "-s", stats, "--update", "-q"], code=2)
    result = _run(["merge", stats, stats, "-o", tmp_path / "m.json", "-q"], code=1)
    assert "batch renormalization" in result.stderr
    # and transform --use running does not warn about a 0/1 start it never had
    result = _run(["transform", data, "-s", stats, "--use", "running", "-o", applied])
    assert "converged" not in result.stderr


def test_html_report_plots_r_and_d(data: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    out = tmp_path / "out.parquet"
    _run(["normalize", data, "-o", out, "--mode", "renorm", "-b", "100", "--report", report, "-q"])
    page = report.read_text()
    assert page.count("renorm r across 30 batches") == 2 * 2  # two columns, title + label
    assert page.count("renorm d across 30 batches") == 2 * 2
    plain = tmp_path / "plain.html"
    _run(["normalize", data, "-o", out, "--mode", "batch", "-b", "100", "--report", plain, "-q"])
    assert "renorm r" not in plain.read_text()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--rmax", "0.5"], "--rmax must be a number >= 1"),
        (["--rmax", "nan"], "--rmax must be a number >= 1"),
        (["--dmax", "-1"], "--dmax must be a number >= 0"),
        (["--renorm-momentum", "0"], "--renorm-momentum must be a number in (0, 1]"),
        (["--renorm-momentum", "1.5"], "--renorm-momentum must be a number in (0, 1]"),
        (["--warmup", "-1"], "--warmup must be an integer >= 0"),
        (["--ramp", "-3"], "--ramp must be an integer >= 0"),
    ],
)
def test_option_validation(data: Path, tmp_path: Path, flags: list[str], needle: str) -> None:
    out = tmp_path / "out.parquet"
    result = _run(["normalize", data, "-o", out, "--mode", "renorm", *flags], code=2)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--rmax", "--dmax", "--renorm-momentum", "--warmup", "--ramp"])
def test_renorm_options_need_renorm_mode(data: Path, tmp_path: Path, flag: str) -> None:
    result = _run(["normalize", data, "-o", tmp_path / "o.parquet", flag, "1"], code=2)
    assert f"{flag} applies to --mode renorm only" in result.stderr


def test_python_api_validation() -> None:
    with pytest.raises(UsageError, match="rmax must be a number >= 1"):
        BatchNorm(renorm={"rmax": 0.9})
    with pytest.raises(UsageError, match="unknown option 'rmin'"):
        BatchNorm(renorm={"rmin": 0.5})
    with pytest.raises(UsageError, match="warmup must be an integer"):
        BatchNorm(renorm=rn.Renorm(warmup=1.5))  # type: ignore[arg-type]
    model = BatchNorm(batch_size=4)
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    model.train_step(frame, "batch")
    with pytest.raises(UsageError, match="another mode"):
        model.train_step(frame, "renorm")
    renormed = BatchNorm(batch_size=4)
    renormed.train_step(frame, "renorm")
    with pytest.raises(UsageError, match='after mode="renorm"'):
        renormed.train_step(frame, "running")
    with pytest.raises(UsageError, match="partial_fit"):
        renormed.partial_fit(frame)


@settings(max_examples=150, deadline=None)
@given(
    x=st.lists(
        st.one_of(
            st.floats(-1e3, 1e3, allow_nan=False), st.just(math.nan), st.sampled_from([0.0, 2.5])
        ),
        min_size=1,
        max_size=120,
    ),
    size=st.integers(1, 25),
    eps=st.sampled_from([0.0, 1e-5, 0.5]),
    alpha=st.sampled_from([0.01, 0.3, 1.0]),
    rmax=st.sampled_from([1.0, 1.7, 3.0, math.inf]),
    dmax=st.sampled_from([0.0, 0.4, 5.0, math.inf]),
    warmup=st.integers(0, 4),
    ramp=st.integers(0, 5),
)
def test_property_against_the_reference(
    x: list[float],
    size: int,
    eps: float,
    alpha: float,
    rmax: float,
    dmax: float,
    warmup: int,
    ramp: int,
) -> None:
    arr = np.array(x)
    options = {"momentum": alpha, "rmax": rmax, "dmax": dmax, "warmup": warmup, "ramp": ramp}
    out, model = bnorm_renorm(pl.DataFrame({"x": arr}), size, eps=eps, **options)
    ref = reference(arr, size, eps, alpha=alpha, rmax=rmax, dmax=dmax, warmup=warmup, ramp=ramp)
    got = out["x"].to_numpy()
    assert np.array_equal(np.isnan(got), np.isnan(arr)) and not np.isinf(got).any()
    assert np.array_equal(np.isnan(got), np.isnan(ref["y"]))
    ok = ~np.isnan(got)
    scale = max(1.0, float(np.abs(ref["y"][ok]).max())) if ok.any() else 1.0
    assert_allclose(got[ok], ref["y"][ok], rtol=1e-9, atol=1e-9 * scale)
    if ref["mean"] is not None:
        assert model.running_["x"].mean == pytest.approx(ref["mean"], rel=1e-9, abs=1e-9)
