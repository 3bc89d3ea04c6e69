"""Drift metrics against exact computations on the full data (numpy, scipy), and the gate."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bnorm_cli import BatchNorm
from bnorm_cli.cli.app import app
from bnorm_cli.core import drift as dr
from bnorm_cli.core.fold import group_population
from bnorm_cli.core.moments import table_moments
from bnorm_cli.io import stats_file

stats = pytest.importorskip("scipy.stats")
runner = CliRunner()
Gen = Callable[[np.random.Generator, int], np.ndarray]


def _fit_watch(fit: np.ndarray, new: np.ndarray, batch: int = 65536) -> dr.Watch:
    """A fitted model of ``fit``, and ``new`` accumulated in uneven pieces."""
    model = BatchNorm(batch_size=batch).fit(pl.DataFrame({"x": fit}))
    state = model.state_
    assert state is not None and model.summary_ is not None
    watch = dr.Watch(["x"], state.population, model.summary_, model.rows_)
    frame = pl.DataFrame({"x": new})
    start = 0
    for size in (1, 999, 40_000, 10**9):
        piece = frame.slice(start, size)
        if piece.height:
            watch.add(watch.table(piece, start, "error", piece.height))
        start += size
    return watch


def _one(fit: np.ndarray, new: np.ndarray, t: dr.Thresholds | None = None) -> dr.ColumnDrift:
    return _fit_watch(fit, new).results(t or dr.Thresholds())[0]


CASES: dict[str, tuple[Gen, Gen]] = {
    "same": (lambda r, n: r.normal(3, 2, n), lambda r, n: r.normal(3, 2, n)),
    "shifted": (lambda r, n: r.normal(3, 2, n), lambda r, n: r.normal(3.6, 2, n)),
    "scaled": (lambda r, n: r.normal(0, 1, n), lambda r, n: r.normal(0, 1.8, n)),
    "heavy": (lambda r, n: r.standard_t(2.5, n), lambda r, n: 1.3 * r.standard_t(2.5, n)),
    "bimodal": (
        lambda r, n: np.concatenate([r.normal(-4, 1, n // 2), r.normal(4, 1, n - n // 2)]),
        lambda r, n: np.concatenate([r.normal(-4, 1, n // 4), r.normal(4, 1, n - n // 4)]),
    ),
    "integer": (
        lambda r, n: r.poisson(4, n).astype(float),
        lambda r, n: r.poisson(5, n).astype(float),
    ),
    "far": (lambda r, n: 1e9 + r.normal(0, 1e-3, n), lambda r, n: 1e9 + r.normal(2e-4, 1e-3, n)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_metrics_against_exact_computations(case: str) -> None:
    rng = np.random.default_rng(sorted(CASES).index(case))
    make_fit, make_new = CASES[case]
    x, y = make_fit(rng, 60_000), make_new(rng, 50_000)
    d = _one(x, y)
    # SMD and variance ratio: exact from the moments (to float64 rounding; exact sums
    # here, as np.mean loses the 1e-4 shift of a column at 1e9 in its rounding)
    base = x[0]  # x - base is exact for the column at 1e9 (Sterbenz)
    mx, my = math.fsum(x - base) / x.size, math.fsum(y - base) / y.size
    sx = math.sqrt(math.fsum((x - base - mx) ** 2) / x.size)
    sy = math.sqrt(math.fsum((y - base - my) ** 2) / y.size)
    smd = (my - mx) / math.sqrt((sx**2 + sy**2) / 2)
    assert d.smd == pytest.approx(smd, rel=1e-9, abs=1e-9)
    assert d.variance_ratio == pytest.approx(sy**2 / sx**2, rel=1e-9)
    # PSI: exact for the frozen bins (the reported edges), counted by numpy on the data
    edges = np.array(d.psi_edges)
    fc = np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)
    nc = np.bincount(np.searchsorted(edges, y, side="right"), minlength=edges.size + 1)
    p = np.maximum(fc / x.size, dr.PSI_FLOOR)
    q = np.maximum(nc / y.size, dr.PSI_FLOOR)
    assert d.psi == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-12, abs=1e-15)
    assert np.allclose(d.fit_shares, fc / x.size, rtol=0, atol=1e-15)
    # the deciles are deciles: each bin holds about a tenth (exact counts, merged ties)
    assert edges.size <= 9
    # KS: never above the exact one, short of it by at most one bucket's mass
    exact_ks = stats.ks_2samp(x, y).statistic
    assert d.bin_width is not None and d.ks is not None
    width = d.bin_width
    keys = np.floor(np.concatenate([x, y]) / width)
    _, inv = np.unique(keys, return_inverse=True)
    mass = np.maximum(
        np.bincount(inv[: x.size], minlength=inv.max() + 1) / x.size,
        np.bincount(inv[x.size :], minlength=inv.max() + 1) / y.size,
    ).max()
    assert d.ks <= exact_ks + 1e-12
    assert exact_ks - d.ks <= mass + 1e-12
    # Wasserstein-1 / sigma_fit within one bucket width
    w1 = stats.wasserstein_distance(x, y)
    assert d.wasserstein is not None
    assert abs(d.wasserstein * sx - w1) <= width * (1 + 1e-9)
    # share outside the fitted [min, max]: exact
    assert d.outside == np.count_nonzero((y < x.min()) | (y > x.max())) / y.size


def test_verdicts_for_the_textbook_shifts() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 100_000)
    assert _one(x, rng.normal(0, 1, 100_000)).verdict == "ok"
    assert _one(x, rng.normal(0.15, 1, 100_000)).verdict == "warn"
    shifted = _one(x, rng.normal(0.5, 1, 100_000))
    assert shifted.verdict == "drift" and any("SMD" in r for r in shifted.reasons)
    # a pure scale change moves neither the mean nor (much) the PSI's deciles' verdict:
    # the variance ratio gates only when asked to
    scaled = rng.normal(0, 1.3, 100_000)
    assert _one(x, scaled).variance_ratio == pytest.approx(1.69, rel=0.03)
    gated = _one(x, scaled, dr.Thresholds.parse(["vr=0.8,1.25", "psi=off", "smd=off"]))
    assert gated.verdict == "drift" and "variance ratio" in gated.reasons[0]
    ks = _one(x, rng.normal(0.05, 1, 100_000), dr.Thresholds.parse(["ks=0.01"]))
    assert ks.verdict == "drift"


def test_constant_integer_and_all_null_columns() -> None:
    five = np.full(1000, 5.0)
    same = _one(five, np.full(700, 5.0))
    assert (same.verdict, same.smd, same.variance_ratio, same.psi) == ("ok", 0.0, 1.0, 0.0)
    moved = _one(five, np.full(700, 6.0))
    assert moved.verdict == "drift" and moved.smd == math.inf and moved.outside == 1.0
    nulls = _one(np.arange(100.0), np.full(50, math.nan))
    assert nulls.verdict == "drift" and nulls.new_count == 0 and nulls.null_rate_change == 1.0
    never = _one(np.full(10, math.nan), np.full(10, math.nan))
    assert never.verdict == "n/a"
    ints = _one(np.tile(np.arange(10.0), 100), np.tile(np.arange(10.0), 30))
    assert ints.psi == 0.0 and ints.ks == 0.0 and ints.verdict == "ok"


def test_no_false_alarm_in_100_seeds_of_100k_rows() -> None:
    """Two samples of one distribution never drift at the default thresholds."""
    n = 100_000
    worst_psi = worst_smd = 0.0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        x = {
            "normal": rng.normal(7, 3, n),
            "lognormal": rng.lognormal(0, 1, n),
            "poisson": rng.poisson(3, n).astype(float),
        }
        y = {
            "normal": rng.normal(7, 3, n),
            "lognormal": rng.lognormal(0, 1, n),
            "poisson": rng.poisson(3, n).astype(float),
        }
        cols = list(x)
        fit = table_moments(pl.DataFrame(x), cols, n)
        new_grid = [h.exp for h in fit.sketch or []]
        new = table_moments(
            pl.DataFrame(y),
            cols,
            n,
            grid=new_grid,
            bounds=(fit["min"][0], fit["max"][0]),
            cap=dr.DRIFT_CAP,
        )
        fp, npop = group_population(fit), group_population(new)
        assert fit.sketch is not None and new.sketch is not None
        for j, c in enumerate(cols):
            d = dr.compare(
                c,
                fp.at(j),
                n,
                fit.sketch[j],
                npop.at(j),
                n,
                new.sketch[j],
                int(new["outside"][0, j]),
                dr.Thresholds(),
            )
            assert d.verdict == "ok", (seed, c, d.reasons)
            worst_psi = max(worst_psi, d.psi or 0.0)
            worst_smd = max(worst_smd, abs(d.smd or 0.0))
    assert worst_psi < 0.01 and worst_smd < 0.05


def test_thresholds_parse_and_refuse() -> None:
    t = dr.Thresholds.parse(["ks=0.1", "psi=0.05,0.2", "vr=2", "smd=off", "w1=0.1,0.3"])
    assert t.ks == (0.1, 0.1) and t.psi == (0.05, 0.2) and t.variance_ratio == (0.5, 2.0)
    assert t.smd is None and t.wasserstein == (0.1, 0.3)
    for bad in ("nope=1", "ks", "ks=x", "psi=0.3,0.1", "vr=0,2", "ks=1,2,3"):
        with pytest.raises(dr.UsageError):
            dr.Thresholds.parse([bad])


# -- the command line -------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    n = 20_000

    def frame(shift: float) -> pl.DataFrame:
        return pl.DataFrame(
            {"a": rng.normal(shift, 1, n), "b": rng.exponential(2, n), "t": ["x"] * n}
        )

    paths = {k: tmp_path / f"{k}.parquet" for k in ("train", "same", "moved")}
    frame(0).write_parquet(paths["train"])
    frame(0).write_parquet(paths["same"])
    frame(0.6).write_parquet(paths["moved"])
    paths["stats"] = tmp_path / "stats.json"
    result = runner.invoke(app, ["fit", str(paths["train"]), "-s", str(paths["stats"]), "-q"])
    assert result.exit_code == 0, result.stderr
    return paths


def _run(args: list[object], code: int = 0):  # type: ignore[no-untyped-def]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def test_drift_command(files: dict[str, Path], tmp_path: Path) -> None:
    ok = _run(["drift", files["stats"], files["same"], "--fail-on-drift"])
    assert "no column drifted" in ok.stderr and ok.stdout == ""
    moved = _run(["drift", files["stats"], files["moved"]])
    assert 'warning: column "a" drifted' in moved.stderr and '"b"' not in moved.stderr
    failed = _run(["drift", files["stats"], files["moved"], "--fail-on-drift", "-q"], code=3)
    assert "1 column(s) drifted" in failed.stderr and "(a)" in failed.stderr
    as_json = _run(["drift", files["stats"], files["moved"], "--json", "-q"])
    doc = json.loads(as_json.stdout)
    assert doc["format"] == "bnorm-drift" and doc["drifted"] == ["a"]
    assert [c["column"] for c in doc["columns"]] == ["a", "b"]  # by severity
    only_b = _run(["drift", files["stats"], files["moved"], "-c", "b", "--fail-on-drift", "-q"])
    assert only_b.exit_code == 0


def test_drift_on_a_file_without_a_summary_says_how_to_refit(
    files: dict[str, Path], tmp_path: Path
) -> None:
    doc = json.loads(files["stats"].read_text())
    for col in doc["columns"].values():
        del col["sketch"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    result = _run(["drift", old, files["same"]], code=1)
    assert "no distribution summary" in result.stderr and "bnorm fit" in result.stderr
    _run(["transform", files["same"], "-s", old, "-o", tmp_path / "o.parquet", "-q"])


def test_transform_gate_withholds_the_output(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    report = tmp_path / "drift.json"
    failed = _run(
        [
            "transform",
            files["moved"],
            "-s",
            files["stats"],
            "-o",
            out,
            "--fail-on-drift",
            "--drift-report",
            report,
            "-q",
        ],
        code=3,
    )
    assert "the output was not written" in failed.stderr
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert json.loads(report.read_text())["drifted"] == ["a"]
    # without the flag: a warning per drifted column, and the output is written
    warned = _run(["transform", files["moved"], "-s", files["stats"], "-o", out, "--drift", "-q"])
    assert warned.stderr.count("warning:") == 1 and out.exists()
    # no drift: the gate passes and the output is the plain transform's
    plain = tmp_path / "plain.parquet"
    _run(["transform", files["same"], "-s", files["stats"], "-o", plain, "-q"])
    _run(["transform", files["same"], "-s", files["stats"], "-o", out, "--fail-on-drift", "-q"])
    assert pl.read_parquet(out).equals(pl.read_parquet(plain))


def _two_files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(11)
    n = 300_000  # 5 pieces (transform reads 65,536 rows at a time)
    jump = np.where(np.arange(n) < n // 3, 0.0, 1e9)  # pieces far apart: order shows in bits
    train = pl.DataFrame({"a": rng.normal(5, 2, n), "b": rng.standard_cauchy(n)})
    new = pl.DataFrame(
        {"a": rng.normal(5.3, 2.2, n) + np.linspace(0, 50, n), "b": 3 * rng.standard_cauchy(n)}
    ).with_columns(c=jump + rng.normal(0, 1, n))
    train = train.with_columns(c=jump + rng.normal(0, 1, n))
    paths = {k: tmp_path / f"{k}.parquet" for k in ("train", "new")}
    train.write_parquet(paths["train"])
    new.write_parquet(paths["new"], row_group_size=30_000)
    paths["stats"] = tmp_path / "stats.json"
    _run(["fit", paths["train"], "-s", paths["stats"], "-q", "-b", 4096])
    return paths


def test_transform_drift_equals_the_drift_command(tmp_path: Path) -> None:
    """transform accumulates the summary on a thread of its own, behind the writer: the
    same comparison as `bnorm drift` (exact where it comes from the sketch)."""
    paths = _two_files(tmp_path)
    a, b = tmp_path / "transform.json", tmp_path / "drift.json"
    out = tmp_path / "out.parquet"
    _run(["transform", paths["new"], "-s", paths["stats"], "-o", out, "--drift", "-q",
          "--drift-report", a])  # fmt: skip
    _run(["drift", paths["stats"], paths["new"], "-q", "--drift-report", b])
    got, want = json.loads(a.read_text()), json.loads(b.read_text())
    assert got.pop("command") == "transform" and want.pop("command") == "drift"
    assert got["rows"] == want["rows"] == 300_000
    for g, w in zip(got.pop("columns"), want.pop("columns"), strict=True):
        moments = ("smd", "variance_ratio", "wasserstein", "fit_std", "new_mean", "new_std")
        for key in moments:  # Chan merges of pieces: equal to rounding
            assert g.pop(key) == pytest.approx(w.pop(key), rel=1e-12)
        g.pop("severity"), w.pop("severity")
        assert g == w  # counts, PSI, KS, edges and shares: exact
    assert got == want


def test_wide_files_join_pieces_alike_in_both_commands(tmp_path: Path) -> None:
    """300 columns: transform reads ~7,000-row pieces, joined for the summary as
    `bnorm drift` joins them: the same report, and SMD as numpy computes it."""
    rng = np.random.default_rng(5)
    n, width = 16_000, 300
    fit_frame = pl.DataFrame({f"c{j}": rng.normal(size=n) for j in range(width)})
    new_frame = pl.DataFrame({f"c{j}": rng.normal(0.1 * (j % 3), 1.0, n) for j in range(width)})
    fit_file, new_file = tmp_path / "fit.parquet", tmp_path / "new.parquet"
    fit_frame.write_parquet(fit_file)
    new_frame.write_parquet(new_file)
    stats, a, b = tmp_path / "s.json", tmp_path / "t.json", tmp_path / "d.json"
    _run(["fit", fit_file, "-s", stats, "-q"])
    _run(["transform", new_file, "-s", stats, "-o", tmp_path / "o.parquet", "--drift", "-q",
          "--drift-report", a])  # fmt: skip
    _run(["drift", stats, new_file, "-q", "--drift-report", b])
    got, want = json.loads(a.read_text()), json.loads(b.read_text())
    assert got["columns"] == want["columns"]
    for c in got["columns"][:20]:
        x, y = fit_frame[c["column"]].to_numpy(), new_frame[c["column"]].to_numpy()
        smd = (y.mean() - x.mean()) / np.sqrt((x.var() + y.var()) / 2)
        assert c["smd"] == pytest.approx(smd, rel=1e-9, abs=1e-12)


def test_transform_drift_is_the_watch_of_the_pieces_in_order(tmp_path: Path) -> None:
    """The summary transform accumulates behind the writer is, bit for bit, the one of
    the same pieces added in order on one thread."""
    from bnorm_cli.engines import serial
    from bnorm_cli.io.inputs import open_inputs

    paths = _two_files(tmp_path)
    model = stats_file.load(paths["stats"])
    state = model.state_
    assert state is not None and model.summary_ is not None

    def watch() -> dr.Watch:
        return dr.Watch(model.columns_, state.population, model.summary_, model.rows_)

    behind = watch()
    source = open_inputs([str(paths["new"])], None, model, True, project=True)
    _, batches = serial.transform(
        model, source, "population", pl.Float64, False, None, lambda n: None, watch=behind
    )
    assert sum(b.num_rows for b in batches) == 300_000
    inline = watch()
    rows = pieces = 0
    for piece in open_inputs([str(paths["new"])], None, model, True, project=True).pieces:
        frame = pl.from_arrow(piece.select(model.columns_))
        assert isinstance(frame, pl.DataFrame)
        inline.add(inline.table(frame, rows, "error", piece.num_rows))
        rows += piece.num_rows
        pieces += 1
    assert rows == 300_000 and behind.rows == rows and pieces > 4
    assert behind.observed() == inline.observed()  # the Chan merges, in the same order
    assert behind.summary.hist == inline.summary.hist
    assert [vars(d) for d in behind.results(dr.Thresholds())] == [
        vars(d) for d in inline.results(dr.Thresholds())
    ]


def test_transform_drift_names_the_row_of_an_infinity_in_a_later_piece(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    x = rng.normal(size=200_000)  # 4 pieces of 65,536 rows (or fewer)
    train = tmp_path / "train.parquet"
    pl.DataFrame({"x": x}).write_parquet(train)
    stats_path = tmp_path / "stats.json"
    _run(["fit", train, "-s", stats_path, "-q", "-b", 1000])
    x[150_000] = -math.inf  # the third piece
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"x": x}).write_parquet(bad, row_group_size=20_000)
    out = tmp_path / "out.parquet"
    args = ["transform", bad, "-s", stats_path, "-o", out, "--drift", "-q", "-b", 1000]
    result = _run(args, code=1)
    assert 'batch 151: column "x", row 150001: value -inf' in result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp") or p.startswith("out")]


def test_fail_on_drift_needs_an_output_that_can_be_withheld(
    files: dict[str, Path], tmp_path: Path
) -> None:
    result = _run(
        ["transform", files["same"], "-s", files["stats"], "-o", "-", "--fail-on-drift"], code=2
    )
    assert "bnorm drift" in result.stderr and result.stdout == ""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = _run(
        ["transform", files["same"], "-s", files["stats"], "-o", fifo, "--fail-on-drift"], code=2
    )
    assert "cannot be withheld" in result.stderr


@pytest.mark.parametrize("suffix", [".json", ".md", ".html"])
def test_drift_reports(files: dict[str, Path], tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"drift{suffix}"
    _run(["drift", files["stats"], files["moved"], "--drift-report", path, "-q"])
    text = path.read_text()
    assert "a" in text and ("drift" in text)
    if suffix == ".html":
        assert text.count("<svg") == 2 and text.index(">a <") < text.index(">b <")


def test_drift_report_is_an_output(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    clash = _run(
        ["transform", files["same"], "-s", files["stats"], "-o", out, "--drift-report", out], code=1
    )
    assert "--drift-report" in clash.stderr and not out.exists()
    report = tmp_path / "r.md"
    args = ["-o", out, "--report", report, "--drift-report", report]
    _run(["transform", files["same"], "-s", files["stats"], *args], code=1)
    stats = _run(["drift", files["stats"], files["same"], "--drift-report", files["stats"]], code=1)
    assert "input" in stats.stderr
    _run(["drift", files["stats"], files["same"], "--drift-report", tmp_path / "x.txt"], code=2)


def test_drift_help() -> None:
    text = " ".join(runner.invoke(app, ["drift", "--help"]).stdout.split())
    for needle in ("--drift-threshold", "--fail-on-drift", "--drift-report", "PSI"):
        assert needle in text
    text = " ".join(runner.invoke(app, ["transform", "--help"]).stdout.split())
    assert "--drift" in text and "--fail-on-drift" in text


def test_statistics_file_size_per_column(files: dict[str, Path]) -> None:
    doc = json.loads(files["stats"].read_text())
    for col in doc["columns"].values():
        assert len(json.dumps(col["sketch"])) < 8000  # README: a few KB per column
    assert stats_file.load(files["stats"]).summary_ is not None


def test_drift_reads_only_the_compared_columns(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bnorm_cli.cli import app as app_module

    seen: list[list[str]] = []
    real = app_module.open_inputs

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        source = real(*args, **kwargs)
        pieces = list(source.pieces)
        seen.extend(p.schema.names for p in pieces)
        source.pieces = iter(pieces)
        return source

    monkeypatch.setattr(app_module, "open_inputs", spy)
    _run(["drift", files["stats"], files["moved"], "-c", "b", "-q"])
    assert seen and all(names == ["b"] for names in seen)


def test_the_gate_is_exit_3_under_strict(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    args = ["-o", out, "--fail-on-drift", "--strict", "-q"]
    _run(["transform", files["moved"], "-s", files["stats"], *args], code=3)
    assert not out.exists()
    _run(["transform", files["same"], "-s", files["stats"], *args])
    assert out.exists()


def test_strict_makes_a_drift_warning_an_error(files: dict[str, Path], tmp_path: Path) -> None:
    """Without the gate, --strict treats a drifted column as any other warning: exit 1,
    one line naming the column, the output not published; no drift: exit 0."""
    out, report = tmp_path / "out.parquet", tmp_path / "drift.json"
    args = ["-o", out, "--drift", "--strict", "--drift-report", report]
    failed = _run(["transform", files["moved"], "-s", files["stats"], *args], code=1)
    lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--strict:" in lines[0] and 'column "a" drifted' in lines[0]
    assert '"b"' not in lines[0] and "Traceback" not in failed.stderr
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))
    assert json.loads(report.read_text())["drifted"] == ["a"]  # the report still says why
    # without --strict: a warning, and the output is written
    warned = _run(["transform", files["moved"], "-s", files["stats"], "-o", out, "--drift", "-q"])
    assert 'warning: column "a" drifted' in warned.stderr and out.exists()
    out.unlink()
    # no drift: --strict passes
    _run(["transform", files["same"], "-s", files["stats"], "-o", out, "--drift", "--strict"])
    assert out.exists()
    # with the gate too, drift stays exit 3 (its own code wins over --strict's 1)
    out.unlink()
    _run(["transform", files["moved"], "-s", files["stats"], *args, "--fail-on-drift"], code=3)
    assert not out.exists()
