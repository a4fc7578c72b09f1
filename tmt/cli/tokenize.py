"""`tmt tokenize`: one sub-group per modality, each in its own module.

    tmt tokenize speech fit|encode|merge|import-km   (tmt/cli/tokenize_speech.py)
    tmt tokenize image  fit|encode|decode|merge      (tmt/cli/tokenize_image.py)
    tmt tokenize text   fit|encode|decode|merge      (tmt/cli/tokenize_text.py)
    tmt tokenize all    (one store with every modality of each row; tmt/cli/tokenize_all.py)
"""

from __future__ import annotations

import importlib

import click

from tmt.cli._common import CONTEXT

SUBGROUPS: dict[str, tuple[str, str]] = {
    "speech": ("tmt.cli.tokenize_speech", "Speech: 50 Hz features + k-means units."),
    "image": ("tmt.cli.tokenize_image", "Images: VQ codes (the VQ decoder is the image detokenizer)."),
    "text": ("tmt.cli.tokenize_text", "Text: WordPiece / SentencePiece."),
    "all": ("tmt.cli.tokenize_all", "Encode every modality of a manifest into one store."),
}

EPILOG = """\b
Examples:
  tmt tokenize speech fit --card tokenizers/speech-mfcc-km200.yaml --manifest data/scenes/train.jsonl.gz --out exp/tok/speech
  tmt tokenize speech encode --tokenizer exp/tok/speech --manifest data/scenes/train.jsonl.gz --store data/store/train
  tmt tokenize image fit --card tokenizers/image-vq-f8-512.yaml --manifest data/scenes/train.jsonl.gz --out exp/tok/image
  tmt tokenize text fit --card tokenizers/text-wordpiece-trained.yaml --manifest data/scenes/train.jsonl.gz --out exp/tok/text
"""


class _Lazy(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBGROUPS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBGROUPS:
            return None
        module_name, help_text = SUBGROUPS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise

            @click.command(name=cmd_name, help=f"{help_text} (not available in this build)")
            def missing() -> None:
                from tmt import TmtError

                raise TmtError(f"`tmt tokenize {cmd_name}` is not available in this build yet.")

            return missing
        cmd: click.Command = module.cli
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(n, h) for n, (_, h) in SUBGROUPS.items()])


@click.group(cls=_Lazy, context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """Fit tokenizers and encode manifests into token stores (sharded, resumable)."""
