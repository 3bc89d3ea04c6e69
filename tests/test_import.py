"""`bnorm import`: statistics fitted elsewhere (PyTorch, scikit-learn, Keras) become a
statistics file that `transform` applies; round trips with `export` keep the bits."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from bnorm_cli import BatchNorm
from bnorm_cli.cli.app import app
from bnorm_cli.core.errors import StatsFileError, UsageError

runner = CliRunner()


def run(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: Any) -> Any:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result: Any, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    n = 900
    frame = pl.DataFrame(
        {
            "name": [f"r{i}" for i in range(n)],
            "a": rng.normal(5.0, 2.0, n),
            "b": 1e9 + rng.normal(0.0, 1e-3, n),  # the centring trap: needs the mean residual
            "c": pl.Series(rng.integers(0, 100, n), dtype=pl.Int32),
            "d": np.where(rng.random(n) < 0.3, np.nan, rng.standard_t(3, n)),
            "k": np.full(n, 7.5),  # constant
        }
    ).with_columns(pl.when(pl.col("c") < 5).then(None).otherwise(pl.col("c")).alias("c"))
    path = tmp_path / "data.parquet"
    frame.write_parquet(path)
    return path


def fit(data: Path, stats: Path, *extra: str) -> Path:
    ok("fit", data, "-s", stats, "-b", "64", "-q", *extra)
    return stats


def transform(data: Path, stats: Path, out: Path, *extra: str) -> pl.DataFrame:
    ok("transform", data, "-s", stats, "-o", out, "-q", *extra)
    return pl.read_parquet(out)


OPTIONS = [
    (),
    ("--gamma", "a=2", "--beta", "b=-1", "--eps", "1e-3"),
    ("--eps", "0", "--momentum", "cumulative", "-x", "k"),
    ("--weight", "k"),  # weighted: n_samples_seen_ is the weight sum, counts come back too
]


@pytest.mark.parametrize("options", OPTIONS)
def test_sklearn_export_import_transform_gives_the_same_bits(
    tmp_path: Path, data: Path, options: tuple[str, ...]
) -> None:
    stats = fit(data, tmp_path / "s.json", *options)
    ok("export", stats, "--to", "sklearn", "-o", tmp_path / "sk.json")
    ok("import", tmp_path / "sk.json", "-o", tmp_path / "imp.json")
    want = transform(data, stats, tmp_path / "o1.parquet")
    got = transform(data, tmp_path / "imp.json", tmp_path / "o2.parquet")
    assert got.equals(want)  # every bit, NaN and null where they were
    doc = json.loads((tmp_path / "imp.json").read_text())
    orig = json.loads(stats.read_text())
    assert doc["imported"] == {
        "from": "sklearn",
        "file": str(tmp_path / "sk.json"),
        "statistics": "population",
    }
    assert doc["eps"] == orig["eps"] and doc["rows"] == orig["rows"]
    for c, col in doc["columns"].items():
        for key in (
            "count",
            "null_count",
            "mean",
            "mean_residual",
            "var",
            "min",
            "max",
            "gamma",
            "beta",
        ):
            assert col[key] == orig["columns"][c][key], (c, key)
        assert col["running_mean"] is None and col["running_var"] is None
    # and back: import -> export gives the same attributes
    ok("export", tmp_path / "imp.json", "--to", "sklearn", "-o", tmp_path / "sk2.json")
    assert json.loads((tmp_path / "sk2.json").read_text()) == json.loads(
        (tmp_path / "sk.json").read_text()
    )


@pytest.mark.parametrize("options", OPTIONS)
def test_torch_export_import_transform_gives_the_same_bits(
    tmp_path: Path, data: Path, options: tuple[str, ...]
) -> None:
    stats = fit(data, tmp_path / "s.json", *options)
    ok("export", stats, "--to", "torch", "-o", tmp_path / "bn.safetensors")
    ok("import", tmp_path / "bn.safetensors", "-o", tmp_path / "imp.json")
    want = transform(data, stats, tmp_path / "o1.parquet", "--use", "running")
    got = transform(data, tmp_path / "imp.json", tmp_path / "o2.parquet", "--use", "running")
    assert got.equals(want)
    ok("export", tmp_path / "imp.json", "--to", "torch", "-o", tmp_path / "bn2.safetensors")
    first, second = load_file(tmp_path / "bn.safetensors"), load_file(tmp_path / "bn2.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        assert first[key].dtype == second[key].dtype and first[key].shape == second[key].shape
        np.testing.assert_array_equal(first[key], second[key])
    doc = json.loads((tmp_path / "imp.json").read_text())
    assert doc["imported"]["statistics"] == "running"
    assert doc["num_batches_tracked"] == json.loads(stats.read_text())["num_batches_tracked"]
    assert all(col["count"] is None and col["mean"] is None for col in doc["columns"].values())


def torch_reference(
    x: np.ndarray, sd: dict[str, np.ndarray], eps: float, pre: str = ""
) -> np.ndarray:
    """BatchNorm1d in eval mode, in float64 from the stored values (plain numpy)."""
    f = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    w = f.get(pre + "weight", np.ones(x.shape[1]))
    b = f.get(pre + "bias", np.zeros(x.shape[1]))
    return (x - f[pre + "running_mean"]) / np.sqrt(f[pre + "running_var"] + eps) * w + b


@pytest.mark.parametrize("prefix", ["", "encoder.bn."])
@pytest.mark.parametrize("affine", [True, False])
def test_plain_state_dict_needs_columns_and_eps(
    tmp_path: Path, data: Path, prefix: str, affine: bool
) -> None:
    rng = np.random.default_rng(1)
    sd = {
        prefix + "running_mean": np.array([5.1, 1e9, 40.0], np.float32),
        prefix + "running_var": rng.uniform(0.5, 4.0, 3).astype(np.float32),
        prefix + "num_batches_tracked": np.array(12, np.int64),
    }
    if affine:
        sd[prefix + "weight"] = rng.normal(1, 0.1, 3).astype(np.float32)
        sd[prefix + "bias"] = rng.normal(0, 0.1, 3).astype(np.float32)
    src = tmp_path / "bn.safetensors"
    save_file(sd, src)
    out = tmp_path / "imp.json"
    one_line_error(run("import", src, "-o", out, "--eps", "1e-5"), 2, "--columns", "3 feature")
    one_line_error(run("import", src, "-o", out, "-c", "a,b,c"), 2, "--eps", str(src))
    one_line_error(
        run("import", src, "-o", out, "-c", "a,b", "--eps", "1e-5"), 2, "2 column", "3 features"
    )
    assert not out.exists()
    ok("import", src, "-o", out, "-c", "a,b,c", "--eps", "1e-5")
    got = transform(data, out, tmp_path / "o.parquet", "--use", "running")
    frame = pl.read_parquet(data)
    x = frame.select("a", "b", "c").cast(pl.Float64).fill_null(np.nan).to_numpy()
    want = torch_reference(x, sd, 1e-5, prefix)
    np.testing.assert_allclose(
        got.select("a", "b", "c").fill_null(np.nan).to_numpy(), want, rtol=1e-12, atol=1e-12
    )
    assert got["d"].equals(frame["d"]) and got["name"].equals(frame["name"])  # passed through
    ok(
        "transform",
        data,
        "-s",
        out,
        "-o",
        tmp_path / "r.parquet",
        "--use",
        "running",
        "--report",
        tmp_path / "r.html",
        "-q",
    )  # the HTML report has no population to show
    assert (tmp_path / "r.html").stat().st_size > 0
    one_line_error(run("drift", out, data), 1, "no distribution summary (it was imported)")
    one_line_error(
        run("transform", data, "-s", out, "-o", tmp_path / "p.parquet"),
        2,
        "running statistics only",
        "--use running",
    )
    assert not (tmp_path / "p.parquet").exists()
    doc = json.loads(out.read_text())
    assert doc["momentum"] is None and doc["batch_size"] is None and doc["rows"] is None
    assert doc["num_batches_tracked"] == 12


def test_real_standard_scaler_attributes(tmp_path: Path) -> None:
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    X = np.column_stack(
        [
            rng.normal(3, 2, 500),
            np.full(500, 1e6),
            rng.normal(-7, 1e-3, 500),
            rng.exponential(1, 500),
        ]
    )
    X[rng.random(500) < 0.1, 3] = np.nan
    scaler = StandardScaler().fit(X)
    names = ["p", "q", "r", "s"]
    attrs = {
        "mean_": scaler.mean_.tolist(),
        "var_": scaler.var_.tolist(),
        "scale_": scaler.scale_.tolist(),
        "n_samples_seen_": scaler.n_samples_seen_.tolist(),
        "n_features_in_": 4,
        "with_mean": True,
        "with_std": True,
    }
    src = tmp_path / "scaler.json"
    src.write_text(json.dumps(attrs))
    out = tmp_path / "imp.json"
    one_line_error(run("import", src, "-o", out), 2, "--columns")
    ok("import", src, "-o", out, "-c", ",".join(names))
    frame = pl.DataFrame({n: X[:, j] for j, n in enumerate(names)})
    got = BatchNorm.load(out).transform(frame).to_numpy()
    want = scaler.transform(X)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
    doc = json.loads(out.read_text())
    assert [doc["columns"][n]["count"] for n in names] == scaler.n_samples_seen_.tolist()
    assert doc["eps"] == 0.0 and doc["rows"] is None
    ok("export", out, "--to", "sklearn", "-o", tmp_path / "back.json")
    back = json.loads((tmp_path / "back.json").read_text())
    for key in ("mean_", "scale_", "n_samples_seen_"):
        assert back[key] == attrs[key], key
    assert back["var_"] == attrs["var_"]  # the constant column's var_ is 0 here too
    assert back["feature_names_in_"] == names
    # with feature names in the file, --columns is not needed (and an integer count works)
    scaler = StandardScaler().fit(X[:, :3])
    src.write_text(
        json.dumps(
            {
                "mean_": scaler.mean_.tolist(),
                "var_": scaler.var_.tolist(),
                "n_samples_seen_": int(scaler.n_samples_seen_),
                "feature_names_in_": ["u", "v", "w"],
            }
        )
    )
    ok("import", src, "-o", out)
    doc = json.loads(out.read_text())
    assert list(doc["columns"]) == ["u", "v", "w"] and doc["rows"] == 500
    assert all(c["count"] == 500 and c["null_count"] == 0 for c in doc["columns"].values())


@pytest.mark.parametrize(
    "layout",
    [
        {"mean": [1.5, -2.0, 1e6], "variance": [4.0, 0.25, 1e-6]},
        {"mean": [[1.5, -2.0, 1e6]], "variance": [[4.0, 0.25, 1e-6]], "axis": -1},
    ],
)
def test_keras_mean_variance(tmp_path: Path, layout: dict[str, Any]) -> None:
    src = tmp_path / "keras.json"
    src.write_text(json.dumps(layout))
    out = tmp_path / "imp.json"
    one_line_error(run("import", src, "-o", out), 2, "--columns")
    ok("import", src, "-o", out, "-c", "x,y,z")
    rng = np.random.default_rng(0)
    X = rng.normal(0, 3, (50, 3)) + np.array([0, 0, 1e6])
    frame = pl.DataFrame({n: X[:, j] for j, n in enumerate("xyz")})
    got = BatchNorm.load(out).transform(frame).to_numpy()
    mean = np.array([1.5, -2.0, 1e6])
    var = np.array([4.0, 0.25, 1e-6])
    np.testing.assert_allclose(got, (X - mean) / np.sqrt(var), rtol=1e-13)
    ok("export", out, "--to", "sklearn", "-o", tmp_path / "sk.json")
    sk = json.loads((tmp_path / "sk.json").read_text())
    assert sk["mean_"] == mean.tolist() and sk["var_"] == var.tolist()
    assert sk["n_samples_seen_"] is None


def test_keras_scalars_broadcast_to_the_columns(tmp_path: Path) -> None:
    src = tmp_path / "keras.json"
    src.write_text(json.dumps({"mean": 2.0, "variance": 9.0}))
    ok("import", src, "-o", tmp_path / "imp.json", "-c", "a,b", "--eps", "0.5")
    doc = json.loads((tmp_path / "imp.json").read_text())
    assert [c["mean"] for c in doc["columns"].values()] == [2.0, 2.0]
    assert doc["eps"] == 0.5
    m = BatchNorm.load(tmp_path / "imp.json")
    assert m.maps()["b"].scale == 1.0 / math.sqrt(9.5)


def bad_json(tmp_path: Path, doc: Any, name: str = "in.json") -> Path:
    src = tmp_path / name
    src.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return src


@pytest.mark.parametrize(
    ("doc", "needles"),
    [
        ({"mean_": [1.0, 2.0], "var_": [1.0]}, ["var_", "2 numbers"]),
        ({"mean_": [1.0, 2.0]}, ["missing key var_"]),
        ('{"mean_": [1.0, NaN], "var_": [1.0, 1.0]}', ["mean_[1]", "finite"]),
        ({"mean_": [1.0, 2.0], "var_": [1.0, -1.0]}, ["var_[1]", "negative"]),
        ({"mean_": [1.0], "var_": [4.0], "scale_": [3.0]}, ["scale_[0]", "--eps"]),
        ({"mean_": [1.0], "var_": [4.0], "with_mean": False}, ["with_mean"]),
        ({"mean_": [1.0], "var_": [4.0], "n_features_in_": 2}, ["n_features_in_"]),
        ({"mean": [1.0, 2.0], "variance": [1.0, 2.0, 3.0]}, ["variance", "3 values"]),
        ({"mean": [1.0], "variance": [-2.0]}, ["variance[0]", "negative"]),
        ({"mean": [1.0], "variance": [1.0], "invert": True}, ["invert"]),
        ({"mean": [1.0]}, ["missing key variance"]),
        ({"hello": 1}, ["not a file bnorm import reads"]),
        ("{not json", ["not valid JSON"]),
        ('{"mean_": [1.0], "var_": [1.0], "var_": [2.0]}', ["var_", "twice"]),
    ],
)
def test_bad_json_is_one_line_naming_file_and_key(
    tmp_path: Path, doc: Any, needles: list[str]
) -> None:
    src = bad_json(tmp_path, doc)
    out = tmp_path / "out.json"
    one_line_error(run("import", src, "-o", out, "-c", "a"), 1, str(src), *needles)
    assert not out.exists()


@pytest.mark.parametrize(
    ("tensors", "needles"),
    [
        ({"running_var": np.ones(2)}, ["missing key running_mean"]),
        ({"running_mean": np.ones(2)}, ["missing key running_var"]),
        ({"running_mean": np.ones(2), "running_var": np.ones(3)}, ["running_var", "(2,)"]),
        (
            {"running_mean": np.ones(2), "running_var": np.ones(2), "weight": np.ones((2, 1))},
            ["weight"],
        ),
        (
            {"running_mean": np.array([1.0, np.inf]), "running_var": np.ones(2)},
            ["running_mean[1]", "finite"],
        ),
        (
            {"running_mean": np.ones(2), "running_var": np.array([1.0, -0.5])},
            ["running_var[1]", "negative"],
        ),
        (
            {
                "a.running_mean": np.ones(2),
                "a.running_var": np.ones(2),
                "b.running_mean": np.ones(2),
                "b.running_var": np.ones(2),
            },
            ["2 BatchNorm layers", "a, b"],
        ),
        (
            {
                "running_mean": np.ones(2),
                "running_var": np.ones(2),
                "num_batches_tracked": np.array(1.5),
            },
            ["num_batches_tracked"],
        ),
    ],
)
def test_bad_state_dict_is_one_line_naming_file_and_key(
    tmp_path: Path, tensors: dict[str, np.ndarray], needles: list[str]
) -> None:
    src = tmp_path / "bn.safetensors"
    save_file(tensors, src)
    out = tmp_path / "out.json"
    one_line_error(
        run("import", src, "-o", out, "-c", "a,b", "--eps", "1e-5"), 1, str(src), *needles
    )
    assert not out.exists()


def test_bad_eps_is_a_usage_error(tmp_path: Path) -> None:
    src = bad_json(tmp_path, {"mean": [1.0], "variance": [1.0]})
    one_line_error(
        run("import", src, "-o", tmp_path / "o.json", "-c", "a", "--eps", "-1"), 2, "--eps"
    )
    assert not (tmp_path / "o.json").exists()


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    src = bad_json(tmp_path, "garbage", "bn.safetensors")
    one_line_error(
        run("import", src, "-o", tmp_path / "o.json", "-c", "a", "--eps", "0"),
        1,
        str(src),
        "safetensors",
    )
    one_line_error(run("import", tmp_path / "none.json", "-o", tmp_path / "o.json"), 1, "not found")


def test_output_is_atomic_and_never_an_input(tmp_path: Path) -> None:
    src = bad_json(tmp_path, {"mean": [1.0], "variance": [1.0]})
    before = src.read_text()
    one_line_error(run("import", src, "-o", src, "-c", "a"), 1, "also an input")
    assert src.read_text() == before
    out = tmp_path / "s.json"
    out.write_text("old")
    bad = bad_json(tmp_path, {"mean": [1.0], "variance": [-1.0]}, "bad.json")
    assert run("import", bad, "-o", out, "-c", "a").exit_code == 1
    assert out.read_text() == "old"  # a failed import leaves the target as it was
    result = ok("import", src, "-o", "-", "-c", "a")
    assert json.loads(result.stdout)["imported"]["from"] == "keras"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_imported_files_refuse_what_they_cannot_do(tmp_path: Path, data: Path) -> None:
    stats = fit(data, tmp_path / "s.json")
    src = bad_json(tmp_path, {"mean": [1.0], "variance": [4.0]})
    imp = tmp_path / "imp.json"
    ok("import", src, "-o", imp, "-c", "a")
    one_line_error(run("merge", imp, stats, "-o", tmp_path / "m.json"), 1, "imported")
    one_line_error(run("fit", data, "-s", imp, "--update", "-q"), 2, "--update", "imported")
    one_line_error(run("export", imp, "--to", "torch", "-o", tmp_path / "bn.st"), 1, "--to sklearn")
    one_line_error(
        run("transform", data, "-s", imp, "-o", tmp_path / "o.parquet", "--use", "running"),
        2,
        "population statistics only",
        "--use population",
    )
    ok("inspect", imp)
    assert json.loads(ok("inspect", imp, "--json").stdout)["imported"]["from"] == "keras"
    model = BatchNorm.load(imp)
    assert model.imported_ == {"from": "keras", "file": str(src), "statistics": "population"}
    with pytest.raises(UsageError, match="use='population'"):
        model.transform(pl.DataFrame({"a": [1.0]}), use="running")
    with pytest.raises(StatsFileError, match="only `bnorm import` writes them"):
        model.save(tmp_path / "again.json")


def test_unknown_fields_only_in_imported_files(tmp_path: Path, data: Path) -> None:
    """A bnorm-written file with a null count is refused: only imports leave them unknown
    (a bnorm before import refuses imported files by its schema, never applies them)."""
    stats = fit(data, tmp_path / "s.json")
    doc = json.loads(stats.read_text())
    doc["columns"]["a"]["count"] = None
    stats.write_text(json.dumps(doc))
    one_line_error(run("inspect", stats), 1, "only statistics imported by `bnorm import` omit it")


def test_import_help() -> None:
    result = runner.invoke(app, ["import", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for needle in ("BatchNorm1d", "StandardScaler", "--columns", "--eps", "-o"):
        assert needle in result.stdout
