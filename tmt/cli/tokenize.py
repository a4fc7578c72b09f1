"""`tmt tokenize`: one sub-group per modality, each in its own module.

    tmt tokenize speech fit|encode|merge|import-km   (tmt/cli/tokenize_speech.py)
    tmt tokenize image  fit|encode|decode|merge      (tmt/cli/tokenize_image.py)
    tmt tokenize text   fit|encode|decode|merge      (tmt/cli/tokenize_text.py)
    tmt tokenize all    (one store with every modality of each row; tmt/cli/tokenize_all.py)
"""

from __future__ import annotations

import click

from tmt.cli import tokenize_all, tokenize_image, tokenize_speech, tokenize_text
from tmt.cli._common import CONTEXT, TableGroup

SUBGROUPS: dict[str, tuple[click.Command, str]] = {
    "speech": (tokenize_speech.cli, "Speech: 50 Hz features + k-means units."),
    "image": (tokenize_image.cli, "Images: VQ codes (the VQ decoder is the image detokenizer)."),
    "text": (tokenize_text.cli, "Text: WordPiece / SentencePiece."),
    "all": (tokenize_all.cli, "Encode every modality of a manifest into one store."),
}

EPILOG = """\b
Examples:
  tmt tokenize speech fit --card tokenizers/speech-mfcc-km200.yaml --manifest data/scenes/train.jsonl.gz --out exp/tok/speech
  tmt tokenize speech encode --tokenizer exp/tok/speech --manifest data/scenes/train.jsonl.gz --store data/store/train
  tmt tokenize image fit --card tokenizers/image-vq-f8-512.yaml --manifest data/scenes/train.jsonl.gz --out exp/tok/image
  tmt tokenize text fit --card tokenizers/text-wordpiece-trained.yaml --manifest data/scenes/train.jsonl.gz --out exp/tok/text
"""


class _Modalities(TableGroup):
    """Sub-groups in the order of `SUBGROUPS`, with the table's short help."""

    table = SUBGROUPS


@click.group(cls=_Modalities, context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """Fit tokenizers and encode manifests into token stores (sharded, resumable)."""
