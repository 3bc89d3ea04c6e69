"""The package's layers: imports point down only, Rich and Typer stay in their rooms.

Layers, bottom up: ``version`` < ``core`` < ``io`` < ``engines``, ``report`` < ``api``
< ``cli`` and ``sklearn`` (the estimator). A module may import its own layer and the
layers below it; ``engines`` and ``report`` are peers that do not import each other.
Within a layer the modules import each other without a cycle (an import inside a
function, or under ``TYPE_CHECKING``, counts as much as one at the top).
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


def _from(node: ast.ImportFrom, package: str) -> str:
    """The absolute name of the module a ``from ... import`` reads (in ``package``)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``module`` imports (absolute names), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _from(node, package)
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


def _module_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its file.

    ``from .io import stats_file`` is an edge to ``io.stats_file`` (the module named),
    ``from .io.readers import Source`` one to ``io.readers``; a package's
    ``__init__`` is a node of its own, reached only when a name is taken from it.
    """
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = _from(node, package)
                for a in node.names:
                    found.add(f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target)
        graph[module] = {m for m in found if m in modules and m != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_round(graph, group) for group in groups]


def _path_round(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest way from the group's first module back to itself, inside the group."""
    start = min(group)
    came: dict[str, str] = {start: start}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came[path[-1]])
                    return [*reversed(path), start]
                if w not in came:
                    came[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def test_no_import_cycle() -> None:
    cycles = _cycles(_module_graph(MODULES))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    """The rule can fail: `a` imports `b` at the top, `b` imports `a` inside a function."""
    pkg = tmp_path / "bnorm_cli" / "cli"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from . import b\n", encoding="utf-8")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n", encoding="utf-8")
    (pkg / "c.py").write_text("from . import a\n", encoding="utf-8")
    modules = {f"bnorm_cli.cli.{n}": pkg / f"{n}.py" for n in "abc"}
    graph = _module_graph(modules)
    assert graph["bnorm_cli.cli.b"] == {"bnorm_cli.cli.a"}
    assert _cycles(graph) == [["bnorm_cli.cli.a", "bnorm_cli.cli.b", "bnorm_cli.cli.a"]]
    (pkg / "b.py").write_text("def f():\n    from . import c\n", encoding="utf-8")
    assert _cycles(_module_graph(modules)) == [
        ["bnorm_cli.cli.a", "bnorm_cli.cli.b", "bnorm_cli.cli.c", "bnorm_cli.cli.a"]
    ]


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
