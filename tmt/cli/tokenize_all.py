"""`tmt tokenize all`: encode every modality of a manifest into one token store."""

from __future__ import annotations

import click

from tmt.cli._common import (
    CONTEXT,
    REFINE_HELP,
    encode_options,
    load_image_tokenizer,
    run_encode,
    set_threads,
)

EPILOG = """\b
Examples:
  tmt tokenize all --speech exp/tok/speech --image exp/tok/image --text exp/tok/text \\
      --manifest data/scenes/manifest.jsonl.gz --split train --store data/store/train
  tmt tokenize all --speech exp/tok/speech --text exp/tok/text --manifest m.jsonl.gz --store data/store/train --shard 0/4
  tmt manifest merge-parts data/store/train --parts 4
"""


@click.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--speech", "speech_dir", type=click.Path(file_okay=False), default=None, help="Fitted speech tokenizer directory.")
@click.option("--image", "image_dir", type=click.Path(file_okay=False), default=None, help="Fitted image tokenizer directory.")
@click.option("--text", "text_dir", type=click.Path(file_okay=False), default=None, help="Fitted text tokenizer directory.")
@click.option("--image-refine-steps", type=int, default=0, help=REFINE_HELP)
@encode_options(batch_size=16, batch_help="Rows per encoder call.", skip_what="media")
def cli(speech_dir: str | None, image_dir: str | None, text_dir: str | None, image_refine_steps: int, manifest: str,
        store: str, split: str, shard: str | None, batch_size: int, skip_bad: bool, overwrite: bool,
        threads: int | None) -> None:
    """Encode the manifest's speech, images and text (each with its fitted tokenizer) into ONE store.

    Each row keeps every modality it has; rows with none of the given modalities are skipped
    and counted. Sharded with --shard k/N (merge with `tmt manifest merge-parts`), resumable.
    """
    from tmt import TmtError
    from tmt.tokenizers.base import load_tokenizer

    dirs = {m: d for m, d in (("text", text_dir), ("speech", speech_dir), ("image", image_dir)) if d}
    if not dirs:
        raise TmtError("give at least one of --speech, --image, --text (fitted tokenizer directories)")
    set_threads(threads)
    toks = {m: load_image_tokenizer(d, image_refine_steps) if m == "image" else load_tokenizer(d)
            for m, d in dirs.items()}
    for m, t in toks.items():
        if getattr(t, "modality", m) != m:
            raise TmtError(f"--{m} {dirs[m]} is a {t.modality} tokenizer")
    run_encode(manifest, store, toks, dirs, split=split, shard=shard, batch_size=batch_size, skip_bad=skip_bad,
               overwrite=overwrite)
