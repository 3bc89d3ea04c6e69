"""The generated validator (io/stats_validator.py) never accepts what jsonschema refuses.

`stats_file` loads a file the generated code accepts without asking jsonschema; a
refusal goes to jsonschema, which words the message. So the one danger is the
generated code accepting a document jsonschema refuses: the mutations below look for it.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bnorm_cli.cli.app import app
from bnorm_cli.core.errors import StatsFileError
from bnorm_cli.io import stats_file

ROOT = Path(__file__).resolve().parent.parent


def test_the_generated_module_is_up_to_date() -> None:
    path = ROOT / "scripts" / "stats_validator.py"
    spec = importlib.util.spec_from_file_location("stats_validator_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = (ROOT / "bnorm_cli" / "io" / "stats_validator.py").read_text(encoding="utf-8")
    assert module.code() == written, "run: python scripts/stats_validator.py --write"


def _cli(*args: Any) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def valid_docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Statistics files of several kinds of fit, as parsed from their text."""
    tmp = tmp_path_factory.mktemp("docs")
    rng = np.random.default_rng(3)
    n = 300
    x = rng.normal(5, 2, n)
    x[::17] = np.nan
    pl.DataFrame(
        {
            "x": x,
            "y": pl.Series(rng.integers(-3, 9, n), dtype=pl.Int64),
            "const": [1.5] * n,
            "empty": pl.Series([None] * n, dtype=pl.Float64),
            "w": rng.uniform(0, 2, n),
            "k": rng.choice(["a", "b"], n),
        }
    ).write_parquet(tmp / "d.parquet")
    d = tmp / "d.parquet"
    runs = {
        "plain": ("fit", d, "-b", 64, "-x", "w"),
        "cumulative": ("fit", d, d, "-b", 70, "--momentum", "cumulative", "-x", "w"),
        "weighted": ("fit", d, "-b", 64, "--weight", "w"),
        "robust": ("fit", d, "-b", 64, "--scale", "iqr", "-x", "w"),
        "range": ("fit", d, "-b", 64, "--scale", "range", "--range", "-1,1", "-x", "w"),
        "by": ("fit", d, "-b", 64, "--by", "k", "-x", "w"),
        "exportable": ("fit", d, "-b", 64, "-c", "x,y,const"),
    }
    docs = {}
    for name, args in runs.items():
        _cli(*args, "-s", tmp / f"{name}.json", "-q")
    _cli("normalize", d, "-o", tmp / "r.parquet", "--mode", "renorm", "-s", tmp / "renorm.json")
    _cli("export", tmp / "exportable.json", "--to", "sklearn", "-o", tmp / "sk.json")
    _cli("import", tmp / "sk.json", "-o", tmp / "imported.json", "-q")
    _cli("export", tmp / "exportable.json", "--to", "torch", "-o", tmp / "bn.safetensors")
    _cli("import", tmp / "bn.safetensors", "-o", tmp / "imported_running.json", "-q")
    for path in sorted(tmp.glob("*.json")):
        if path.name != "sk.json":
            docs[path.stem] = json.loads(path.read_text())
    return docs


def _jsonschema_accepts(doc: Any) -> bool:
    stats_file._schema_error({})  # makes jsonschema's validator
    return not any(True for _ in stats_file._VALIDATOR[0].iter_errors(doc))


#: Values put in place of others: wrong types (bool where a number is), signs, edges.
VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    1.0,
    -1.0,
    0.5,
    1.5,
    -0.0,
    2**64,
    -(2**64),
    10**400,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x",
    "1",
    "cumulative",
    "inf",
    "mean",
    "median",
    "iqr",
    "population",
    "sklearn",
    [],
    [1],
    [0.5, 0.5],
    [1, 2, 3],
    [None],
    [True, False],
    ["a"],
    [[0, [1]]],
    [[0, [1, -1]]],
    [[0, [1.5]]],
    [[0.5, [1]]],
    [[True, [1]]],
    [[0, "x"]],
    [[0]],
    [[0, [1], 2]],
    [0, [1]],
    {},
    {"a": 1},
    {"a": "b"},
    (1, 2),
]

#: Keys added where they may be missing (known ones, and one no schema names).
KEYS = [
    "mean_residual",
    "weight_sum",
    "running_updates",
    "running_var_from_zero",
    "running_start_weight",
    "quantiles",
    "sketch",
    "width",
    "renorm",
    "imported",
    "segments",
    "requires",
    "weight",
    "center",
    "scale",
    "feature_range",
    "quantile_range",
    "inf",
    "by",
    "reading",
    "input_columns",
    "unknown_field",
]


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into the document (dict keys, list indexes), the root excluded."""
    out: list[tuple[Any, ...]] = []
    items: Any = ()
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    for k, v in items:
        out.append((*path, k))
        out += _places(v, (*path, k))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def _mutate(doc: Any, rng: random.Random) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rng.choice((1, 1, 2, 3))):
        places = _places(doc)
        if not places:
            return rng.choice(VALUES)
        path = rng.choice(places)
        parent, key = _get(doc, path[:-1]), path[-1]
        what = rng.random()
        if what < 0.55:
            parent[key] = copy.deepcopy(rng.choice(VALUES))
        elif what < 0.7:
            del parent[key]
        elif what < 0.85:
            target = parent if isinstance(parent, dict) else _get(doc, path[:-2] or ())
            if isinstance(target, dict):
                target[rng.choice(KEYS)] = copy.deepcopy(rng.choice(VALUES))
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(rng.choice([*VALUES, parent[key]])))
        else:  # a number nudged: negative, fractional, huge, or as a bool
            v = parent[key]
            if isinstance(v, int | float) and not isinstance(v, bool):
                parent[key] = rng.choice([-v, v + 0.5, v * 2**80, float(v), v == 0, -1e-300])
    return doc


def _message(doc: Any) -> str | None:
    try:
        stats_file.from_dict(doc)
    except StatsFileError as e:
        return str(e)
    except Exception as e:  # the same crash either way, too
        return f"{type(e).__name__}: {e}"
    return None


def test_every_valid_file_is_accepted_fast(valid_docs: dict[str, dict[str, Any]]) -> None:
    assert len(valid_docs) >= 10
    for name, doc in valid_docs.items():
        assert stats_file._accepted(doc), name
        assert _jsonschema_accepts(doc), name


def test_mutations_accepted_fast_are_valid_and_load_alike(
    valid_docs: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(20261202)
    docs = list(valid_docs.values())
    fast = refused = 0
    for i in range(3000):
        doc = _mutate(rng.choice(docs), rng)
        accepted = stats_file._accepted(doc)
        valid = _jsonschema_accepts(doc)
        assert valid or not accepted, f"mutation {i}: generated code accepts, jsonschema refuses"
        fast += accepted
        refused += not valid
        if i % 10 == 0:  # and the whole load says the same, with and without the fast path
            want = _message(doc)
            with monkeypatch.context() as m:
                m.setattr(stats_file, "_accepted", lambda doc: False)
                assert _message(doc) == want, f"mutation {i}"
    assert fast > 300 and refused > 1000  # both kinds were tried
