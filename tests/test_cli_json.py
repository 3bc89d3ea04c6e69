"""Machine-readable output for scripts: fit --json, inspect --json, --version."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bnorm_cli import __version__
from bnorm_cli.cli.app import app

runner = CliRunner()
SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "sensors.parquet"


def test_fit_json_summary_on_stdout(tmp_path: Path) -> None:
    stats = tmp_path / "s.json"
    result = runner.invoke(app, ["fit", str(SAMPLE), "-s", str(stats), "-b", "999", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    saved = json.loads(stats.read_text())
    assert summary["stats"] == str(stats)
    assert summary["rows"] == saved["rows"] == 5000 and summary["batches"] == 6
    by_name = {c["column"]: c for c in summary["columns"]}
    assert list(by_name) == list(saved["columns"])
    for name, col in by_name.items():
        assert col["mean"] == saved["columns"][name]["mean"]
        assert col["count"] == saved["columns"][name]["count"]
    assert "bnorm fit" in result.stderr  # the table still goes to stderr


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"bnorm {__version__}"


def test_shell_completion_is_offered() -> None:
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout
