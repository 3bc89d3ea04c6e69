"""`bnorm export`: PyTorch BatchNorm1d and scikit-learn StandardScaler reproduce bnorm."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bnorm_cli.cli.app import app

runner = CliRunner()


@pytest.fixture
def fitted(tmp_path: Path) -> tuple[Path, Path, pl.DataFrame]:
    rng = np.random.default_rng(3)
    n = 1000
    frame = pl.DataFrame(
        {
            "name": [f"n{i}" for i in range(n)],
            "a": rng.normal(5.0, 2.0, n),
            "b": 1e6 + rng.normal(0.0, 0.5, n),
            "c": rng.integers(0, 100, n),
        }
    )
    data = tmp_path / "data.parquet"
    frame.write_parquet(data)
    stats = tmp_path / "stats.json"
    args = ["fit", str(data), "-s", str(stats), "-b", "64", "-q"]
    args += ["--gamma", "a=2", "--beta", "b=-1", "--eps", "1e-3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return data, stats, frame


def test_torch_state_dict_reproduces_running_transform(
    tmp_path: Path, fitted: tuple[Path, Path, pl.DataFrame]
) -> None:
    torch = pytest.importorskip("torch", exc_type=ImportError)
    from safetensors.torch import load_file

    data, stats, frame = fitted
    out = tmp_path / "bn.safetensors"
    result = runner.invoke(app, ["export", str(stats), "--to", "torch", "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(stats.read_text())
    bn = torch.nn.BatchNorm1d(3, eps=doc["eps"], dtype=torch.float64)
    bn.load_state_dict(load_file(str(out)))  # strict: every key, right shapes
    assert int(bn.num_batches_tracked) == doc["num_batches_tracked"]
    bn.eval()
    x = torch.tensor(frame.select("a", "b", "c").cast(pl.Float64).to_numpy())
    expected = tmp_path / "running.parquet"
    args = ["transform", str(data), "-s", str(stats), "-o", str(expected), "--use", "running", "-q"]
    assert runner.invoke(app, args).exit_code == 0
    want = pl.read_parquet(expected).select("a", "b", "c").to_numpy()
    with torch.no_grad():
        got = bn(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


def test_sklearn_scaler_reproduces_population_transform(
    tmp_path: Path, fitted: tuple[Path, Path, pl.DataFrame]
) -> None:
    pytest.importorskip("sklearn", exc_type=ImportError)
    from bnorm_cli.io.export import load_sklearn_scaler

    data, stats, frame = fitted
    out = tmp_path / "scaler.json"
    result = runner.invoke(
        app, ["export", str(stats), "--to", "sklearn", "-o", str(out), "-c", "a,b"]
    )
    assert result.exit_code == 0, result.output
    scaler = load_sklearn_scaler(str(out))
    assert list(scaler.feature_names_in_) == ["a", "b"]
    expected = tmp_path / "pop.parquet"
    assert (
        runner.invoke(
            app, ["transform", str(data), "-s", str(stats), "-o", str(expected), "-q"]
        ).exit_code
        == 0
    )
    want = pl.read_parquet(expected).select("a", "b").to_numpy()
    with warnings.catch_warnings():  # numpy input has no feature names; that is fine here
        warnings.simplefilter("ignore", UserWarning)
        got = scaler.transform(frame.select("a", "b").to_numpy())
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)


def test_sklearn_json_to_stdout_and_unknown_column(fitted: tuple[Path, Path, pl.DataFrame]) -> None:
    _, stats, _ = fitted
    result = runner.invoke(app, ["export", str(stats), "--to", "sklearn", "-o", "-"])
    assert result.exit_code == 0
    attrs = json.loads(result.stdout)
    assert attrs["feature_names_in_"] == ["a", "b", "c"] and attrs["n_samples_seen_"] == 1000
    bad = runner.invoke(app, ["export", str(stats), "--to", "sklearn", "-o", "-", "-c", "aa"])
    assert bad.exit_code == 2 and 'did you mean "a"' in bad.stderr
