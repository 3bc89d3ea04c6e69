"""The README cannot drift from the CLI or from .ci/run."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_option_reference_is_generated_from_help() -> None:
    path = ROOT / "scripts" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert module.updated_readme(readme) == readme, "run: python scripts/cli_reference.py --write"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^python3 -m venv .*pytest.*$", readme, flags=re.M)
    assert len(commands) == 1
    assert commands[0] in (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
