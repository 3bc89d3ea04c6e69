"""The package's layers: imports point down only, Rich and Typer stay in their rooms.

Layers, bottom up: ``version`` < ``core`` < ``io`` < ``engines``, ``report`` < ``api``
< ``cli`` and ``sklearn`` (the estimator). A module may import its own layer and the
layers below it; ``engines`` and ``report`` are peers that do not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bnorm_cli"

RANK = {
    "version": 0,
    "core": 1,
    "io": 2,
    "engines": 3,
    "report": 3,
    "api": 4,
    "cli": 5,
    "sklearn": 5,
}
TOP = {"__init__": 6, "__main__": 6}


def _layer(module: str) -> str:
    """``bnorm_cli.io.readers`` -> ``io``; ``bnorm_cli.api`` -> ``api``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out[".".join(rel.parts)] = path
    return out


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``module`` imports (absolute names), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            if node.module is None or node.level:
                found += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return found


def _rank(module: str) -> int:
    layer = _layer(module)
    return RANK.get(layer, TOP.get(layer, 99))


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    mine = _rank(module)
    for target, line in _imports(module, MODULES[module]):
        if not target.startswith("bnorm_cli.") or target not in MODULES:
            continue  # third-party, or a name imported from a module (checked as the module)
        theirs = _rank(target)
        peers = _layer(target) == _layer(module)
        assert peers or theirs < mine, (
            f"{MODULES[module].name}:{line}: {module} (layer {_layer(module)}) imports"
            f" {target} (layer {_layer(target)}), which is not below it"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_rich_and_typer_stay_in_their_rooms(module: str) -> None:
    for target, line in _imports(module, MODULES[module]):
        top = target.split(".")[0]
        if top == "rich":
            assert module == "bnorm_cli.cli.console", f"{module}:{line} imports rich"
        if top in ("typer", "click"):
            assert _layer(module) == "cli", f"{module}:{line} imports {top}"


def test_core_does_no_io() -> None:
    banned = {"os", "sys", "io", "shutil", "tempfile", "subprocess", "pathlib", "socket"}
    for module, path in MODULES.items():
        if _layer(module) != "core":
            continue
        for target, line in _imports(module, path):
            assert target.split(".")[0] not in banned, f"{module}:{line} imports {target}"
        text = path.read_text(encoding="utf-8")
        assert "open(" not in text.replace("open(...)", ""), f"{module} opens a file"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule can fail: a core module importing io is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..io import readers\n", encoding="utf-8")
    imports = _imports("bnorm_cli.core.bad", bad)
    assert ("bnorm_cli.io.readers", 1) in imports
    assert _rank("bnorm_cli.io.readers") > _rank("bnorm_cli.core.bad")


def test_core_messages_name_options_without_cli_flags() -> None:
    """The core writes `opt(...)`; the CLI phrases flags, Python gets parameter names."""
    import re

    from bnorm_cli.core.errors import DataError, opt, phrase

    flag = re.compile(r"(^|[\s(\"'])-(-[a-z]|[a-z]\b)")
    for module, path in MODULES.items():
        if _layer(module) != "core":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) in docstrings or node.value.startswith("-"):  # CLI_FLAGS values
                    continue
                assert not flag.search(node.value), f"{path.name}:{node.lineno}: {node.value!r}"
    text = f"use {opt('inf', 'missing')}, {opt('exclude', 'x')} or a smaller {opt('batch_size')}"
    assert phrase(text, cli=True) == "use --inf missing, -x x or a smaller --batch-size"
    assert phrase(text) == "use inf='missing', exclude=['x'] or a smaller batch_size"
    err = DataError(f"bad; {opt('eps', 0)}")
    assert str(err) == "bad; eps=0" and err.cli_message() == "bad; --eps 0"
