"""docs/cli.md is generated from `--help` by docs/gen_cli.py; it must match the CLI as it is now."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _gen_cli() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    expected = _gen_cli().render()
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    if current != expected:
        diff = "".join(list(difflib.unified_diff(current.splitlines(True), expected.splitlines(True),
                                                 "docs/cli.md", "tmt --help"))[:60])
        raise AssertionError(f"docs/cli.md is stale; regenerate it with `python docs/gen_cli.py`:\n{diff}")


def test_reference_covers_every_command() -> None:
    import click

    from tmt.cli import cli

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    ctx = click.Context(cli, info_name="tmt")
    for name in cli.list_commands(ctx):
        assert f"\n## tmt {name}\n" in text
    for path in ("tmt tokenize speech fit", "tmt manifest merge-parts", "tmt vocoder import-fairseq"):
        assert f"\n## {path}\n" in text and f"Usage: {path} [OPTIONS]" in text


def test_check_mode(tmp_path: Path) -> None:
    gen = _gen_cli()
    out = tmp_path / "cli.md"
    assert gen.main(["--check", "-o", str(out)]) == 1  # missing file is stale
    assert gen.main(["-o", str(out)]) == 0
    assert gen.main(["--check", "-o", str(out)]) == 0
    out.write_text(out.read_text() + "edited by hand\n")
    assert gen.main(["--check", "-o", str(out)]) == 1
