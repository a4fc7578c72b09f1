"""`tmt tokenize all`: encode every modality of a manifest into one token store."""

from __future__ import annotations

import click

from tmt.cli._common import CONTEXT, echo_json, shard_option

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
@click.option("--manifest", required=True, type=click.Path(dir_okay=False), help="Raw manifest to encode.")
@click.option("--store", required=True, type=click.Path(file_okay=False), help="Token store directory to write.")
@click.option("--split", default="all", help="Only rows of this split ('all': every row).")
@shard_option
@click.option("--batch-size", type=int, default=16, help="Rows per encoder call.")
@click.option("--skip-bad", is_flag=True, help="Skip (and count) rows whose media cannot be read instead of failing.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store instead of resuming it.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
def cli(speech_dir: str | None, image_dir: str | None, text_dir: str | None, manifest: str, store: str, split: str,
        shard: str | None, batch_size: int, skip_bad: bool, overwrite: bool, threads: int | None) -> None:
    """Encode the manifest's speech, images and text (each with its fitted tokenizer) into ONE store.

    Each row keeps every modality it has; rows with none of the given modalities are skipped
    and counted. Sharded with --shard k/N (merge with `tmt manifest merge-parts`), resumable.
    """
    from tmt import TmtError
    from tmt.tokenizers.base import load_tokenizer
    from tmt.tokenizers.encode import encode_with_tokenizers

    dirs = {m: d for m, d in (("text", text_dir), ("speech", speech_dir), ("image", image_dir)) if d}
    if not dirs:
        raise TmtError("give at least one of --speech, --image, --text (fitted tokenizer directories)")
    if threads:
        import torch

        torch.set_num_threads(threads)
    toks = {m: load_tokenizer(d) for m, d in dirs.items()}
    for m, t in toks.items():
        if getattr(t, "modality", m) != m:
            raise TmtError(f"--{m} {dirs[m]} is a {t.modality} tokenizer")
    counts = encode_with_tokenizers(
        manifest, store, toks, paths=dirs, split=None if split in ("all", "") else split, shard=shard,
        batch_size=batch_size, skip_bad=skip_bad, overwrite=overwrite, progress=True,
    )
    echo_json(counts)
