"""README says what the code does: its option tables are the parsers' own help texts."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_option_tables_are_generated_from_the_parsers():
    tables = load_script("options_table")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [match["command"] for match in tables.BLOCK.finditer(readme)]
    assert commands == list(tables.parsers())  # one table per command, none missing
    assert tables.render(readme) == readme, "README.md's option tables are stale: run python scripts/options_table.py"


def test_every_option_is_in_its_table():
    tables = load_script("options_table")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = {match["command"]: match["table"] for match in tables.BLOCK.finditer(readme)}
    for command, parser in tables.parsers().items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:  # kept for old scripts, documented as gone
                continue
            for option in action.option_strings:
                if option not in ("-h", "--help", "--version"):
                    assert f"`{option}" in blocks[command] or f", {option}" in blocks[command], (command, option)


def test_readme_names_every_run_option():
    """The Python API section lists run()'s options: every RunConfig field but the source and output."""
    import re
    from dataclasses import fields

    from streamcam.config import RunConfig

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = readme[readme.index("`streamcam.RunConfig` ("):readme.index("or `explainer=` to reuse")]
    names = set(re.findall(r"`(\w+)`", listed))
    assert {f.name for f in fields(RunConfig)} - {"inputs", "output"} <= names
