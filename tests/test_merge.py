"""Merging statistics files (`bnorm merge`) and adding data to a fit (`fit --update`).

A merge of fits of consecutive parts equals the fit of the whole: counts and
batches exactly, population and running statistics to rounding (the running
statistics compose by design.md §5's affine rule). ``fit --update`` continues
the saved fit batch by batch, so its running statistics are the one-shot fit's
bits, and so is everything when the saved fit ends on a 65,536-row group.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bnorm_cli import BatchNorm
from bnorm_cli.cli.app import app
from bnorm_cli.core import fold as fd
from bnorm_cli.core.errors import DataError, StatsFileError
from bnorm_cli.core.model import merge

runner = CliRunner()


def data(n: int = 1000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(1e6, 0.5, n)
    x[::17] = np.nan
    return pl.DataFrame({"x": x, "k": rng.integers(-9, 9, n), "t": ["a"] * n})


def run(args: list[str | Path], code: int = 0) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def reference_running(parts: list[np.ndarray], batch_size: int, m: float | None) -> tuple:
    """PyTorch's recurrence over each part's batches (each part batched from its start)."""
    r_mean, r_var, k = 0.0, 1.0, 0
    for x in parts:
        for s in range(0, len(x), batch_size):
            b = x[s : s + batch_size]
            b = b[~np.isnan(b)]
            if b.size < 2:
                continue
            k += 1
            f = 1.0 / k if m is None else m
            r_mean = (1 - f) * r_mean + f * float(np.mean(b))
            r_var = (1 - f) * r_var + f * float(np.var(b, ddof=1))
    return r_mean, r_var, k


@pytest.mark.parametrize("momentum", [0.1, 0.0, 1.0, "cumulative"])
@pytest.mark.parametrize("cut", [640, 650, 0, 1000])
def test_merge_equals_the_fit_of_the_whole(momentum: Any, cut: int) -> None:
    frame, size = data(), 64
    parts = [frame[:cut], frame[cut:]]
    fits = [BatchNorm(batch_size=size, momentum=momentum).fit(p) for p in parts]
    merged = merge(fits)
    whole = BatchNorm(batch_size=size, momentum=momentum).fit(frame)
    assert merged.rows_ == whole.rows_ == frame.height
    short = cut % size != 0 and 0 < cut < frame.height
    assert merged.segments_ == ([cut, frame.height - cut] if short else [frame.height])
    assert merged.num_batches_tracked_ == sum(-(-len(p) // size) for p in parts)
    m = None if momentum == "cumulative" else momentum
    for c in ("x", "k"):
        got, want = merged.population_[c], whole.population_[c]
        assert (got.n, got.missing, got.min, got.max) == (want.n, want.missing, want.min, want.max)
        assert got.mean == pytest.approx(want.mean, rel=1e-15)
        assert got.var == pytest.approx(want.var, rel=1e-12)
        x = [p.get_column(c).cast(pl.Float64).to_numpy() for p in parts]
        r_mean, r_var, k = reference_running(x, size, m)
        run_ = merged.running_[c]
        assert run_.updates == k
        assert run_.mean == pytest.approx(r_mean, rel=1e-13)
        assert run_.var == pytest.approx(r_var, rel=1e-13)


def test_merge_running_is_the_affine_composition() -> None:
    a = fd.RunningState(np.array([3.0, 0.0]), np.array([2.0, 1.0]), np.array([4, 0]))
    b = fd.RunningState(np.array([1.0, 5.0]), np.array([0.5, 3.0]), np.array([2, 3]))
    out = fd.merge_running(a, b, 0.5)
    # B's 2 updates scale A by 0.25 and B's start (0 / 1) by the same factor
    assert out.mean.tolist() == [0.25 * 3.0 + 1.0, 5.0]
    assert out.var.tolist() == [0.25 * 2.0 + (0.5 - 0.25), 3.0]
    assert out.updates.tolist() == [6, 3]
    cum = fd.merge_running(a, b, None)
    assert cum.mean.tolist() == [(4 * 3.0 + 2 * 1.0) / 6, 5.0]


def test_merge_refuses_different_options() -> None:
    frame = data()
    a = BatchNorm(batch_size=64).fit(frame)
    for other in (
        BatchNorm(batch_size=32).fit(frame),
        BatchNorm(batch_size=64, momentum=0.2).fit(frame),
        BatchNorm(batch_size=64, eps=1e-3).fit(frame),
        BatchNorm(batch_size=64, gamma=2.0).fit(frame),
        BatchNorm(batch_size=64, columns=["x"]).fit(frame),
    ):
        with pytest.raises(StatsFileError, match=r"b\.json: its .* differs from a\.json's"):
            merge([a, other], ["a.json", "b.json"])


def test_segments_round_trip_and_are_checked(tmp_path: Path) -> None:
    frame = data()
    merged = merge([BatchNorm(batch_size=64).fit(p) for p in (frame[:650], frame[650:])])
    path = tmp_path / "m.json"
    merged.save(path)
    doc = json.loads(path.read_text())
    assert doc["segments"] == [650, 350] and doc["num_batches_tracked"] == 11 + 6
    again = BatchNorm.load(path)
    assert again.segments_ == [650, 350]
    assert again.running_ == merged.running_ and again.population_ == merged.population_
    for segments, needle in (([640, 360], "whole batches"), ([650, 300], "add up")):
        path.write_text(json.dumps({**doc, "segments": segments}))
        with pytest.raises(StatsFileError, match=needle):
            BatchNorm.load(path)
    # a plain fit has one segment and writes none
    BatchNorm(batch_size=64).fit(frame).save(path)
    assert "segments" not in json.loads(path.read_text())


# -- the CLI ----------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    frame = data(3 * 4096 + 5)
    paths = []
    for name, part in (("a", frame[:8192]), ("b", frame[8192:]), ("w", frame)):
        paths.append(tmp_path / f"{name}.parquet")
        part.write_parquet(paths[-1])
    return paths[0], paths[1], paths[2]


def test_cli_merge(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    a, b, w = files
    for p in files:
        run(["fit", p, "-s", p.with_suffix(".json"), "-b", "1024", "-q"])
    out = tmp_path / "m.json"
    shown = run(["merge", a.with_suffix(".json"), b.with_suffix(".json"), "-o", out])
    assert "merge" in shown.stderr and not shown.stdout
    got, want = json.loads(out.read_text()), json.loads(w.with_suffix(".json").read_text())
    assert got["rows"] == want["rows"] and got["num_batches_tracked"] == want["num_batches_tracked"]
    for c in ("x", "k"):
        for key in ("mean", "var", "running_mean", "running_var"):
            assert got["columns"][c][key] == pytest.approx(want["columns"][c][key], rel=1e-12)
    # the distribution summaries (exact counts) merge to the whole fit's
    assert [got["columns"][c]["sketch"] for c in ("x", "k")] == [
        want["columns"][c]["sketch"] for c in ("x", "k")
    ]
    printed = run(["merge", a.with_suffix(".json"), b.with_suffix(".json"), "-o", "-", "-q"])
    assert json.loads(printed.stdout) == got
    # never onto an input; a missing file is named
    run(["merge", a.with_suffix(".json"), b.with_suffix(".json"), "-o", a.with_suffix(".json")], 1)
    missing = run(["merge", a.with_suffix(".json"), tmp_path / "nope.json", "-o", out], 1)
    assert "nope.json" in missing.stderr


def test_cli_fit_update_continues_the_fit(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    a, b, w = files
    stats, whole = tmp_path / "s.json", tmp_path / "w.json"
    run(["fit", a, "-s", stats, "-b", "1024", "--momentum", "cumulative", "-q"])
    run(["fit", b, "-s", stats, "--update", "-q"])
    run(["fit", w, "-s", whole, "-b", "1024", "--momentum", "cumulative", "-q"])
    # a ends after 8,192 rows, not on a 65,536-row group: running bits equal, population close
    got, want = json.loads(stats.read_text()), json.loads(whole.read_text())
    for c in ("x", "k"):
        g, e = got["columns"][c], want["columns"][c]
        assert (g["running_mean"], g["running_var"]) == (e["running_mean"], e["running_var"])
        assert g["mean"] + g["mean_residual"] == pytest.approx(e["mean"], rel=1e-15)
        assert g["var"] == pytest.approx(e["var"], rel=1e-12)
    assert {k: v for k, v in got.items() if k != "columns"} == {
        k: v for k, v in want.items() if k != "columns"
    }


def test_cli_fit_update_on_a_group_boundary_is_bit_identical(tmp_path: Path) -> None:
    frame = data(65536 + 300)
    a, w = tmp_path / "a.parquet", tmp_path / "w.parquet"
    frame[:65536].write_parquet(a)
    b = tmp_path / "b.csv"
    frame[65536:].write_csv(b)
    frame.write_parquet(w)
    stats, whole = tmp_path / "s.json", tmp_path / "w.json"
    run(["fit", a, "-s", stats, "-b", "4096", "-q"])
    run(["fit", b, "-s", stats, "--update", "-q"])
    run(["fit", w, "-s", whole, "-b", "4096", "-q"])
    assert stats.read_text() == whole.read_text()


def test_cli_fit_update_errors(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    a, b, _ = files
    stats = tmp_path / "s.json"
    absent = run(["fit", b, "-s", stats, "--update"], 1)
    assert "not found" in absent.stderr
    run(["fit", a, "-s", stats, "-q"])
    before = stats.read_text()
    given = run(["fit", b, "-s", stats, "--update", "-b", "10", "--eps", "1"], 2)
    assert "--batch-size: differs from the fit saved in" in given.stderr
    assert "batch size 65536" in given.stderr
    for flag, value, field in (
        ("--momentum", "0.2", "momentum 0.1"),
        ("--eps", "1e-3", "eps 1e-05"),
        ("-c", "k", "columns ['x', 'k']"),
        ("-x", "k", "exclude ['x', 'k']"),
        ("--gamma", "2", "gamma {'x': 1.0, 'k': 1.0}"),
    ):
        differs = run(["fit", b, "--update", stats, "-s", tmp_path / "o.json", flag, value], 2)
        assert "differs from the fit saved in" in differs.stderr
        assert field in differs.stderr, differs.stderr
    # the options OLD already holds may be repeated
    run(
        [
            "fit",
            b,
            "-s",
            tmp_path / "same.json",
            "--update",
            stats,
            "-b",
            "65536",
            "-c",
            "x,k",
            "--momentum",
            "0.1",
            "-q",
        ]
    )
    other = tmp_path / "other.parquet"
    pl.DataFrame({"y": [1.0, 2.0]}).write_parquet(other)
    gone = run(["fit", other, "-s", stats, "--update"], 1)
    assert 'column "x" was fitted but is missing' in gone.stderr
    assert stats.read_text() == before  # a failed update leaves the file as it was
    assert math.isfinite(json.loads(before)["columns"]["x"]["mean"])


def test_cli_fit_update_old_into_new(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    """``fit NEW --update OLD.json -s OUT.json``: OLD is kept, OUT is what updating OLD
    in place gives; ``-s`` may name OLD itself (written atomically)."""
    a, b, w = files
    old, new, inplace, whole = (tmp_path / f"{n}.json" for n in ("old", "new", "in", "w"))
    run(["fit", a, "-s", old, "-b", "1024", "-q"])
    before = old.read_text()
    run(["fit", b, "--update", old, "-s", new, "-q"])
    assert old.read_text() == before  # OLD is an input here
    inplace.write_text(before)
    run(["fit", b, "--update", inplace, "-s", inplace, "-q"])
    assert inplace.read_text() == new.read_text()
    flag = tmp_path / "flag.json"
    flag.write_text(before)
    run(["fit", b, "-s", flag, "--update", "-q"])  # the flag form: STATS is OLD
    assert flag.read_text() == new.read_text()
    # a's 8,192 rows are whole 1,024-row batches: the update is the fit of a + b
    run(["fit", w, "-s", whole, "-b", "1024", "-q"])
    got, want = json.loads(new.read_text()), json.loads(whole.read_text())
    assert got["rows"] == want["rows"] and got["num_batches_tracked"] == want["num_batches_tracked"]
    for c in ("x", "k"):
        assert got["columns"][c]["sketch"] == want["columns"][c]["sketch"]  # carried along
        for key in ("running_mean", "running_var"):
            assert got["columns"][c][key] == want["columns"][c][key]
        for key in ("mean", "var"):
            assert got["columns"][c][key] == pytest.approx(want["columns"][c][key], rel=1e-13)
    missing = run(["fit", b, "--update", tmp_path / "nope.json", "-s", new], 1)
    assert "nope.json" in missing.stderr


def test_partial_fit_batches_save_and_load(tmp_path: Path) -> None:
    """Batches shorter than batch_size, one per partial_fit call, are segments of
    their own: the file loads (before segments it was refused as inconsistent)."""
    model = BatchNorm()
    for i in range(3):
        model.partial_fit(pl.DataFrame({"x": [1.0, 2.0, 3.0 + i]}))
    path = tmp_path / "p.json"
    model.save(path)
    again = BatchNorm.load(path)
    assert again.segments_ == [3, 3, 3] and again.num_batches_tracked_ == 3
    assert again.running_ == model.running_ and again.population_ == model.population_
    longer = BatchNorm(batch_size=4).partial_fit(pl.DataFrame({"x": np.arange(9.0)}))
    with pytest.raises(DataError, match="longest partial_fit batch"):
        longer.save(tmp_path / "q.json")
    assert not (tmp_path / "q.json").exists()


# -- exactness of the running statistics' composition ------------------------------------------
def test_merge_keeps_a_tiny_running_var_exact(tmp_path: Path) -> None:
    """var 1e-10 and k_B = 3: rebuilding B's from-zero part from running_var would lose
    ~1e-7 relative; the stored additive parts keep the merge within 1e-13 of one fit."""
    rng = np.random.default_rng(11)
    size = 64
    x = rng.normal(5.0, 1e-5, size * 400 + size * 3)  # A forgets its start
    frame = pl.DataFrame({"x": x})
    a, b = frame[: size * 400], frame[size * 400 :]
    fits = [BatchNorm(batch_size=size).fit(p) for p in (a, b)]
    assert fits[1].running_["x"].updates == 3
    merged = merge(fits)
    whole = BatchNorm(batch_size=size).fit(frame)
    got, want = merged.running_["x"], whole.running_["x"]
    assert got.var == pytest.approx(want.var, rel=1e-13)
    assert got.mean == pytest.approx(want.mean, rel=1e-13)
    # the test can fail: the subtracting rule (what a file without the parts gets)
    keep = 0.9**3
    old_rule = keep * fits[0].running_["x"].var + (fits[1].running_["x"].var - keep)
    assert abs(old_rule - want.var) / want.var > 1e-9
    # and a file written before the parts were kept still loads and merges
    old = BatchNorm.load(_without_parts(fits[1], tmp_path / "old.json"))
    assert old.running_["x"].var_from_zero is None
    assert merge([fits[0], old]).running_["x"].var == pytest.approx(old_rule, rel=1e-15)


def _without_parts(model: BatchNorm, path: Path) -> Path:
    doc = json.loads(_dumps(model))
    for col in doc["columns"].values():
        del col["running_var_from_zero"], col["running_start_weight"]
    path.write_text(json.dumps(doc))
    return path


def _dumps(model: BatchNorm) -> str:
    from bnorm_cli.io import stats_file

    return stats_file.dumps(model)


def exact_running(parts: list[np.ndarray], size: int, m: float) -> tuple[Any, Any]:
    """PyTorch's recurrence in exact rationals (of the float momentum and 1 - momentum)."""
    from fractions import Fraction as F

    f, keep = F(m), F(1.0 - m)
    r_mean, r_var = F(0), F(1)
    for x in parts:
        for s in range(0, len(x), size):
            b = [F(v) for v in x[s : s + size] if not np.isnan(v)]
            if len(b) < 2:
                continue
            mu = sum(b) / len(b)
            var = sum((v - mu) ** 2 for v in b) / (len(b) - 1)
            r_mean, r_var = keep * r_mean + f * mu, keep * r_var + f * var
    return r_mean, r_var


@pytest.mark.parametrize("m", [0.1, 0.5])
def test_merge_against_exact_rationals_on_hostile_columns(m: float) -> None:
    size = 8
    n = size * 12 + 5  # shards of 5, 3 and 4 batches, the last one short
    rng = np.random.default_rng(2)
    near = 1e9 + rng.uniform(-1e-3, 1e-3, n)
    near[::5] = np.nan
    jump = np.where(np.arange(n) < n // 2, 0.0, 1e9)
    tiny = 3.0 + rng.normal(0, 1e-5, n)
    frame = pl.DataFrame(
        {"near": near, "jump": jump, "const": np.full(n, 7.25), "tiny": tiny}
    ).with_columns(
        pl.when(pl.int_range(n) % 7 == 2).then(None).otherwise(pl.col("tiny")).alias("tiny")
    )
    cuts = [0, size * 5, size * 8, n]
    shards = [frame[lo:hi] for lo, hi in itertools.pairwise(cuts)]
    merged = merge([BatchNorm(batch_size=size, momentum=m).fit(s) for s in shards])
    for c in frame.columns:
        parts = [s.get_column(c).cast(pl.Float64).fill_null(np.nan).to_numpy() for s in shards]
        mean, var = exact_running(parts, size, m)
        got = merged.running_[c]
        assert got.mean == pytest.approx(float(mean), rel=1e-13, abs=0), c
        assert got.var == pytest.approx(float(var), rel=1e-13, abs=0), c
