"""`tmt backtranslate`: pseudo pairs for partial data (images only, speech+text, ...)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from tmt.cli._common import CONTEXT, echo_json, shard_option
from tmt.config import config_options

log = logging.getLogger("tmt.backtranslate")

EPILOG = """\b
Examples:
  tmt backtranslate --model exp/tmt --store data/store/images_only --out data/store/bt_images
  tmt backtranslate --model exp/tmt --manifest data/scenes/speech_text_only.jsonl.gz --out data/store/bt_speech_text
  tmt backtranslate --model exp/tmt --store data/store/images_only --out data/store/bt \\
      --strategy sample --num-per-source 2 --round-trip-threshold -2.5 --max-ratio 0.5 --real-store data/store/train
  tmt backtranslate --model exp/tmt --store data/store/images_only --out data/store/bt --shard 0/4   # then:
  tmt manifest merge-parts data/store/bt --parts 4
  tmt manifest stats data/store/bt          # counts synthetic rows per direction
"""


@click.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("-m", "--model", "model_dir", required=True, type=click.Path(file_okay=False), help="Experiment directory of the generating model.")
@click.option("--store", "in_store", type=click.Path(file_okay=False), help="Partial token store to complete.")
@click.option("--manifest", type=click.Path(dir_okay=False), help="Or a raw manifest (tokenized first with the model's tokenizers).")
@click.option("--split", default=None, help="With --manifest: only rows of this split.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output token store of synthetic rows.")
@click.option("--strategy", type=click.Choice(["beam", "sample"]), default=None, help="Beam search or sampling.")
@click.option("--num-per-source", type=int, default=None, help="Pseudo targets per source row.")
@click.option("--guidance", type=float, default=None, help="Image targets: classifier-free guidance scale (0: off; needs a model trained with null sources).")
@click.option("--rerank", type=int, default=None, help="Image targets: keep the best of K sampled candidates by forward + reverse score (0: off).")
@click.option("--rerank-forward", type=float, default=None, metavar="W", help="Weight of the forward score in reranking (default 1; 0: the reverse score alone).")
@click.option("--rerank-align", type=float, default=None, metavar="A", help="Image targets: add A x the image tokenizer's image-caption cosine to the reranking score (a pixel judge from `tmt tokenize image fit-judge`, else an image-aligned card's own; default 0: off).")
@click.option("--round-trip-threshold", type=float, default=None, help="Keep a pseudo target only if back-translation scores the source >= this (mean log-prob per token).")
@click.option("--max-ratio", type=float, default=None, help="Cap synthetic:real rows (with --real-store).")
@click.option("--real-store", multiple=True, type=click.Path(file_okay=False), help="Real training store(s), to count real rows for --max-ratio.")
@click.option("--tokenizer", "tokenizer_dirs", multiple=True, metavar="MODALITY=DIR", help="Override a tokenizer directory named in vocab.json.")
@click.option("--device", default="cpu", help="cpu or cuda.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output store instead of resuming it.")
@shard_option
@config_options
def cli(
    model_dir: str, in_store: str | None, manifest: str | None, split: str | None, out: str,
    strategy: str | None, num_per_source: int | None, guidance: float | None, rerank: int | None,
    rerank_forward: float | None, rerank_align: float | None, round_trip_threshold: float | None,
    max_ratio: float | None, real_store: tuple[str, ...], tokenizer_dirs: tuple[str, ...], device: str,
    overwrite: bool, shard: str | None, config_file: str | None, overrides: tuple[str, ...], dump_config: bool,
) -> None:
    """Generate every missing modality of partial rows with a trained model.

    Images only -> text + speech; speech+text -> image; speech+image without text ->
    text (the pivot case). Output rows are marked synthetic with the checkpoint and
    direction; sharded (--shard k/N) and resumable.
    """
    from tmt.backtranslation import BacktranslateConfig, backtranslate, count_real_rows
    from tmt.config import dump_yaml, merge, resolve

    cfg = resolve(BacktranslateConfig(), config_file, overrides)
    explicit = {
        "strategy": strategy, "num_per_source": num_per_source, "guidance": guidance, "rerank": rerank,
        "rerank_forward": rerank_forward, "rerank_align": rerank_align, "round_trip_threshold": round_trip_threshold, "max_ratio": max_ratio,
    }
    cfg = merge(cfg, {k: v for k, v in explicit.items() if v is not None})
    if dump_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    if (in_store is None) == (manifest is None):
        raise click.UsageError("give exactly one of --store or --manifest")
    from tmt.generation import Translator

    dirs = _tokenizer_dirs(tokenizer_dirs)
    translator = Translator.from_checkpoint(model_dir, device=device, tokenizers=dirs or None)
    input_part = None
    if manifest is not None:
        from tmt.core.shards import parse_shard_spec, part_dir
        from tmt.tokenizers.encode import encode_with_tokenizers

        # each --shard worker tokenizes only its own rows, into its own part of <out>.src
        src_store = Path(out).with_name(Path(out).name + ".src")
        mods = [m for m in ("text", "speech", "image") if translator.vocab.sizes.get(m)]
        log.info("tokenizing %s into %s", manifest, src_store)
        encode_with_tokenizers(
            manifest, src_store, {m: translator.tokenizer(m) for m in mods}, split=split, shard=shard,
        )
        if shard is not None:
            input_part = parse_shard_spec(shard)
            in_store = str(part_dir(src_store, *input_part))
            shard = None
        else:
            in_store = str(src_store)
    assert in_store is not None
    real = count_real_rows(real_store) if real_store else None
    stats = backtranslate(
        model_dir, in_store, out, cfg, translator=translator, real_rows=real, shard=shard,
        input_part=input_part, overwrite=overwrite, device=device,
    )
    echo_json(stats)


def _tokenizer_dirs(items: tuple[str, ...]) -> dict[str, str]:
    """--tokenizer MODALITY=DIR options as {modality: dir}."""
    from tmt import TmtError

    dirs: dict[str, str] = {}
    for item in items:
        m, sep, d = item.partition("=")
        if not sep:
            raise TmtError(f"--tokenizer expects MODALITY=DIR, got '{item}'")
        dirs[m] = d
    return dirs
