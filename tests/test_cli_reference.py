"""docs/cli.md is the `--help` of every command, as docs/make_cli_md.py writes it."""

import runpy
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_matches_help():
    make = runpy.run_path(str(DOCS / "make_cli_md.py"))
    assert (DOCS / "cli.md").read_text() == make["reference"](), "docs/cli.md is out of date: run `python docs/make_cli_md.py`"


def test_every_command_and_option_is_in_the_reference():
    from hatrefine.cli import main

    text = (DOCS / "cli.md").read_text()
    for name, command in main.commands.items():
        assert f"## hatrefine {name}" in text
        assert all(opt in text for p in command.params for opt in p.opts)
