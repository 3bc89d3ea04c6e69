"""Generate the README's option reference from the CLI itself (what --help shows).

    python scripts/cli_reference.py          # print the reference
    python scripts/cli_reference.py --write  # update README.md between the markers

tests/test_docs.py fails when README.md and this output differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer

from bnorm_cli.cli.app import app

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def _clean(text: str) -> str:
    text = re.sub(r"\\\[", "[", text or "")
    return " ".join(text.split()).replace("|", "\\|")


def reference() -> str:
    """Markdown: per command, its usage and each option's --help record."""
    group: Any = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="bnorm")
    out: list[str] = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        sub = cmd.context_class(cmd, info_name=name, parent=ctx)
        usage = " ".join(cmd.collect_usage_pieces(sub))
        out += [f"### `bnorm {name}`", "", _clean((cmd.help or "").split("\n\n")[0]), ""]
        out += [f"`bnorm {name} {usage}`", ""]
        out += ["| option | meaning |", "|---|---|"]
        for p in cmd.params:
            record = p.get_help_record(sub)
            if record is None or p.param_type_name == "argument":
                continue
            flags, help_text = record
            out.append(f"| `{_clean(flags)}` | {_clean(help_text)} |")
        out.append("")
    return "\n".join(out)


def updated_readme(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{reference()}{END}{tail}"


def main() -> None:
    if "--write" in sys.argv:
        README.write_text(updated_readme(README.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        sys.stdout.write(reference())


if __name__ == "__main__":
    main()
