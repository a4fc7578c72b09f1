"""The `tmt` command line: one root click group with one verb group per module.

Each verb group lives in its own module under `tmt/cli/` and exposes a click
command named `cli`. Verb modules import the library (torch, fairseq2) only
inside their commands, so `tmt --help` stays fast and never imports torch.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from tmt import TmtError, __version__
from tmt.cli import (
    backtranslate,
    manifest,
    prepare,
    score,
    serve,
    tokenize,
    train,
    translate,
    vocab,
    vocoder,
)
from tmt.cli._common import TableGroup

# verb -> (command, one-line help for `tmt --help`)
VERBS: dict[str, tuple[click.Command, str]] = {
    "manifest": (manifest.cli, "Inspect, validate, combine and split manifests and token stores."),
    "prepare": (prepare.cli, "Prepare corpora into raw manifests (scenes, flickr8k, spokencoco)."),
    "tokenize": (tokenize.cli, "Fit tokenizers and encode manifests into token stores."),
    "vocab": (vocab.cli, "Build and inspect the joint vocabulary (vocab.json)."),
    "train": (train.cli, "Train the six-direction translation model."),
    "translate": (translate.cli, "Translate any modality into any other."),
    "backtranslate": (backtranslate.cli, "Generate synthetic pairs for partial data."),
    "vocoder": (vocoder.cli, "Train, import and run the unit vocoder."),
    "score": (score.cli, "Score translations in all six directions."),
    "serve": (serve.cli, "Serve a trained model over HTTP: a JSON API and a web page."),
}

EPILOG = """\b
Examples:
  tmt prepare scenes --num-scenes 20 --out data/scenes
  tmt manifest stats data/scenes/store/train
  tmt translate --model exp/tmt --to image speech.wav -o out.png
"""


class RootGroup(TableGroup):
    """The root group: verbs in the order of `VERBS`; a `TmtError` becomes one line on stderr."""

    table = VERBS

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


@click.group(cls=RootGroup, epilog=EPILOG, context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
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
