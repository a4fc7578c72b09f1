"""The `tmt` command line: one root click group, verb groups loaded lazily.

Each verb group lives in its own module under `tmt/cli/` and exposes a click
command named `cli`. Modules are imported only when their verb runs, so
`tmt --help` stays fast (torch and fairseq2 are never imported for it).
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from tmt import TmtError, __version__

# verb -> (module, one-line help). A module that does not exist yet is listed by
# `tmt --help` as "(not available in this build)".
VERBS: dict[str, tuple[str, str]] = {
    "manifest": ("tmt.cli.manifest", "Inspect, validate, combine and split manifests and token stores."),
    "prepare": ("tmt.cli.prepare", "Prepare corpora into raw manifests (scenes, flickr8k, spokencoco)."),
    "tokenize": ("tmt.cli.tokenize", "Fit tokenizers and encode manifests into token stores."),
    "vocab": ("tmt.cli.vocab", "Build and inspect the joint vocabulary (vocab.json)."),
    "train": ("tmt.cli.train", "Train the six-direction translation model."),
    "translate": ("tmt.cli.translate", "Translate any modality into any other."),
    "backtranslate": ("tmt.cli.backtranslate", "Generate synthetic pairs for partial data."),
    "vocoder": ("tmt.cli.vocoder", "Train, import and run the unit vocoder."),
    "score": ("tmt.cli.score", "Score translations in all six directions."),
}

EPILOG = """\b
Examples:
  tmt prepare scenes --num-scenes 20 --out data/scenes
  tmt manifest stats data/scenes/store/train
  tmt translate --model exp/tmt --to image speech.wav -o out.png
"""


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in VERBS:
            return None
        module_name, help_text = VERBS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise

            @click.command(name=cmd_name, help=f"{help_text} (not available in this build)")
            def missing() -> None:
                raise TmtError(f"`tmt {cmd_name}` is not available in this build yet.")

            return missing
        cmd: click.Command = module.cli
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # short help from the table, without importing every module
        rows = [(name, help_text) for name, (_, help_text) in VERBS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TmtError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception:
            # not a TmtError: a bug in tmt. Keep the traceback, ask for a report.
            import traceback

            traceback.print_exc()
            click.echo(
                "This is a bug in tmt, not in your input: please report it with the command line and the "
                "traceback above.",
                err=True,
            )
            sys.exit(3)


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tmt")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    help="Verbosity of the log on stderr.",
)
def cli(log_level: str) -> None:
    """tmt: translate between speech, images and text through discrete tokens."""
    setup_logging(log_level)


def setup_logging(level: str = "info") -> None:
    """Logs go to stderr with a timestamp; results go to stdout."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def main() -> None:
    cli(prog_name="tmt")
