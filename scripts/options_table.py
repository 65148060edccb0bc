"""README's option tables, generated from the command line's own parsers, so that they cannot drift.

Each table sits between ``<!-- options: COMMAND -->`` and ``<!-- /options -->``
in README.md (COMMAND: ``streamcam``, ``streamcam doctor``, ``streamcam export``, ``streamcam train`` or
``streamcam batch``); this script
rewrites what is between them, and tests/test_docs.py fails while README differs.

    python scripts/options_table.py          # rewrite README.md's tables
    python scripts/options_table.py --check  # exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- options: (?P<command>[\w ]+) -->\n)(?P<table>.*?)(<!-- /options -->)", re.S)


def parsers() -> dict[str, argparse.ArgumentParser]:
    from streamcam.cli import (
        build_batch_parser,
        build_doctor_parser,
        build_export_parser,
        build_parser,
        build_train_parser,
    )

    return {"streamcam": build_parser(), "streamcam doctor": build_doctor_parser(),
            "streamcam export": build_export_parser(), "streamcam train": build_train_parser(),
            "streamcam batch": build_batch_parser()}


def option_name(action: argparse.Action) -> str:
    """``-o, --output PATH``, ``--boxes``, ``INPUT ...``: the option as a user types it."""
    if not action.option_strings:
        many = " ..." if action.nargs in ("*", "+") else ""
        return f"{action.metavar or action.dest.upper()}{many}"
    metavar = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
    return ", ".join(action.option_strings) + metavar


def option_table(parser: argparse.ArgumentParser) -> str:
    """A Markdown table with one row per option, in the parser's order (help and version left out)."""
    rows = ["| option | meaning |", "|---|---|"]
    for action in parser._actions:  # argparse keeps its options here and offers no public accessor
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)) or action.help == argparse.SUPPRESS:
            continue
        name = option_name(action).replace("|", "\\|")
        meaning = (action.help or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {meaning} |")
    return "\n".join(rows) + "\n"


def render(readme: str) -> str:
    """``readme`` with every option table regenerated."""
    tables = parsers()

    def table(match: re.Match) -> str:
        return match.group(1) + option_table(tables[match["command"]]) + match.group(4)

    return BLOCK.sub(table, readme)


def main() -> int:
    check = "--check" in sys.argv[1:]
    current = README.read_text(encoding="utf-8")
    wanted = render(current)
    if check:
        if wanted != current:
            print("README.md's option tables differ from the parsers: run python scripts/options_table.py")
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
