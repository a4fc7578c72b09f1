"""`tmt tokenize image`: fit the VQ image tokenizer, encode manifests into stores, decode tokens to PNGs."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from tmt.cli._common import (
    CONTEXT,
    REFINE_HELP,
    echo_json,
    encode_options,
    load_image_tokenizer,
    merge_command,
    run_encode,
    set_threads,
    split_filter,
)
from tmt.config import config_options
from tmt.core.progress import progress_enabled

log = logging.getLogger(__name__)

EPILOG = """\b
Examples:
  tmt tokenize image fit --card tokenizers/image-vq-f8-512.yaml --manifest data/scenes/train.jsonl.gz --out exp/tok/image
  tmt tokenize image fit --card tokenizers/image-vq-f8-512.yaml --manifest m.jsonl.gz --out exp/tok/image --set train.steps=200
  tmt tokenize image fit --card tokenizers/image-vq-f8-512.yaml --manifest m.jsonl.gz --out exp/tok/image --set train.max_minutes=30
  tmt tokenize image encode --tokenizer exp/tok/image --manifest data/scenes/train.jsonl.gz --store data/store/train
  tmt tokenize image encode --tokenizer exp/tok/image --manifest m.jsonl.gz --store data/store/train --shard 0/4
  tmt tokenize image merge --store data/store/train --parts 4
  tmt tokenize image fit-judge --tokenizer exp/tok/image --manifest data/scenes/train.jsonl.gz --set train.steps=1500
  tmt tokenize image decode --tokenizer exp/tok/image --store data/store/test --out-dir out/png --limit 8
  echo "3 17 ... (64 ids)" | tmt tokenize image decode --tokenizer exp/tok/image --tokens - --out-dir out/png
"""


@click.group(context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """Images: VQ codes (the VQ decoder is the image detokenizer)."""


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--card", required=True, type=click.Path(dir_okay=False), help="Tokenizer card (tokenizers/image-vq-*.yaml or image-aligned-*.yaml).")
@click.option("--manifest", required=True, type=click.Path(dir_okay=False), help="Raw manifest whose images to fit on.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output tokenizer directory.")
@click.option("--split", default="train", help="Manifest split to fit on ('all' for every row).")
@click.option("--max-images", type=int, default=0, help="Fit on at most this many distinct images (0: all).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--no-resume", is_flag=True, help="Start over even if OUT holds a checkpoint.")
@config_options
def fit(card: str, manifest: str, out_dir: str, split: str, max_images: int, threads: int | None,
        no_resume: bool, config_file: str | None, overrides: tuple[str, ...], dump_config: bool) -> None:
    """Train the image tokenizer on the manifest's images; write OUT (tokenizer.json, weights, samples/).

    An image-aligned card also trains on the rows' captions (image-caption contrastive term).

    Card values can be changed with --config FILE / --set train.steps=N. Progress bar on
    stderr (TMT_PROGRESS=1 forces it); reconstruction grids in OUT/samples/; rerunning
    resumes from OUT/checkpoints/last.pt. Prints the codebook usage report as JSON.
    """
    from tmt.config import dump_yaml, resolve
    from tmt.tokenizers import image, image_aligned
    from tmt.tokenizers.base import load_card

    raw = load_card(card)
    aligned = raw.get("class") == image_aligned.CLASS_NAME
    mod: Any = image_aligned if aligned else image
    cfg = resolve(mod.parse_card(raw), config_file, overrides, spellings=mod.SPELLINGS)
    if dump_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    set_threads(threads)
    captions = image_captions(manifest, split, max_images)
    paths = list(captions)
    if aligned:
        from tmt.tokenizers.image_aligned_fit import fit_aligned_tokenizer

        tok: Any = fit_aligned_tokenizer(mod.card_dict(cfg), paths, [captions[p] for p in paths], out_dir,
                                         resume=not no_resume, progress=progress_enabled())
    else:
        from tmt.tokenizers.image_fit import fit_image_tokenizer

        tok = fit_image_tokenizer(mod.card_dict(cfg), paths, out_dir, resume=not no_resume, progress=progress_enabled())
    echo_json({"tokenizer": out_dir, "name": tok.name, "vocab_size": tok.vocab_size, "grid": list(tok.grid),
               "tokens_per_image": tok.tokens_per_image, "fingerprint": tok.fingerprint, **tok.stats})


def image_captions(manifest: str, split: str, max_images: int) -> dict[str, list[str]]:
    """Image path -> the captions of its rows (in manifest order), for at most `max_images` images."""
    from tmt.store.manifest import media_path, read_manifest
    from tmt.tokenizers.base import TokenizerError

    captions: dict[str, list[str]] = {}
    for r in read_manifest(manifest, split=split_filter(split)):
        if r.get("image"):
            captions.setdefault(str(media_path(manifest, r["image"])), []).append(str(r.get("text") or ""))
    if max_images:
        captions = dict(list(captions.items())[:max_images])
    if not captions:
        raise TokenizerError(f"{manifest}: no rows with an image in split '{split}' (use --split all?)")
    log.info("%d images from %s", len(captions), manifest)
    return captions


@cli.command("fit-judge", context_settings=CONTEXT, epilog=EPILOG)
@click.option("--tokenizer", "tok_dir", required=True, type=click.Path(file_okay=False), help="Fitted image tokenizer directory (the judge is saved into it).")
@click.option("--manifest", required=True, type=click.Path(dir_okay=False), help="Raw manifest of image-caption pairs to fit on.")
@click.option("--split", default="train", help="Manifest split to fit on ('all' for every row).")
@click.option("--max-images", type=int, default=0, help="Fit on at most this many distinct images (0: all).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@config_options
def fit_judge(tok_dir: str, manifest: str, split: str, max_images: int, threads: int | None,
              config_file: str | None, overrides: tuple[str, ...], dump_config: bool) -> None:
    """Fit a pixel caption judge for an image tokenizer; reranking reads it (`--rerank-align`).

    A small CNN and caption encoder trained contrastively on the tokenizer's reconstructions of the
    manifest's images, in batches of captions that differ in one word. Saved into the tokenizer
    directory without changing the tokenizer (same fingerprint, stores and models stay valid);
    refitting replaces it. Settings: --set train.steps=N, train.max_minutes=M, model.width=W.
    Prints the judge's stats (held-out neighbour accuracy) as JSON.
    """
    from tmt.config import dump_yaml, resolve
    from tmt.tokenizers.image_judge import JudgeCard
    from tmt.tokenizers.image_judge_fit import fit_caption_judge

    card = resolve(JudgeCard(), config_file, overrides)
    if dump_config:
        click.echo(dump_yaml(card), nl=False)
        return
    set_threads(threads)
    tok = load_image_tokenizer(tok_dir, 0)
    if getattr(tok, "modality", None) != "image":
        raise click.BadParameter(f"{tok_dir} holds a {tok.modality} tokenizer; give an image tokenizer directory",
                                 param_hint="--tokenizer")
    captions = image_captions(manifest, split, max_images)
    stats = fit_caption_judge(tok, tok_dir, list(captions), list(captions.values()), card,
                              progress=progress_enabled())
    echo_json({"tokenizer": tok_dir, "judge": stats})


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--tokenizer", "tok_dir", required=True, type=click.Path(file_okay=False), help="Fitted image tokenizer directory.")
@click.option("--refine-steps", type=int, default=0, help=REFINE_HELP)
@encode_options(batch_size=32, batch_help="Rows per encoder call.", skip_what="image")
def encode(tok_dir: str, refine_steps: int, manifest: str, store: str, split: str, shard: str | None,
           batch_size: int, skip_bad: bool, overwrite: bool, threads: int | None) -> None:
    """Encode the manifest's images into a token store (sharded with --shard, resumable)."""
    tok = load_image_tokenizer(tok_dir, refine_steps)
    run_encode(manifest, store, {"image": tok}, {"image": tok_dir}, split=split,
               shard=shard, batch_size=batch_size, skip_bad=skip_bad, overwrite=overwrite, threads=threads)


cli.add_command(merge_command(EPILOG))


def read_token_lines(source: str) -> list[tuple[str, list[int]]]:
    """Lines of whitespace-separated ids, optionally `id<TAB>ids` -> [(id, ids)]; '-' is stdin."""
    from tmt.tokenizers.base import TokenizerError

    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    out: list[tuple[str, list[int]]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, _, ids = line.rpartition("\t")
        try:
            out.append((name or f"{len(out):06d}", [int(x) for x in ids.split()]))
        except ValueError:
            raise TokenizerError(f"{source}:{n}: expected whitespace-separated integer ids") from None
    return out


def store_tokens(store: str, modality: str, limit: int) -> list[tuple[str, Any]]:
    """[(row id, tokens)] of the store's rows that have `modality`."""
    from tmt.store.token_store import TokenStore

    st = TokenStore(store)
    out: list[tuple[str, Any]] = []
    for i in range(len(st)):
        t = st.tokens(i, modality)
        if len(t):
            out.append((str(st.meta(i)["id"]), t))
            if limit and len(out) >= limit:
                break
    return out


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--tokenizer", "tok_dir", required=True, type=click.Path(file_okay=False), help="Fitted image tokenizer directory.")
@click.option("--store", default=None, type=click.Path(file_okay=False), help="Decode the image tokens of this store.")
@click.option("--tokens", "tokens_file", default=None, help="Or a file ('-': stdin) of lines '[id<TAB>]ids...'.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Where to write <id>.png.")
@click.option("--limit", type=int, default=0, help="Decode at most N rows (0: all).")
def decode(tok_dir: str, store: str | None, tokens_file: str | None, out_dir: str, limit: int) -> None:
    """Turn image tokens into PNG files (the VQ decoder is the image detokenizer)."""
    from tmt.core.io import atomic_open
    from tmt.tokenizers.base import TokenizerError, load_tokenizer
    from tmt.tokenizers.image import ImageTokenizer

    if (store is None) == (tokens_file is None):
        raise TokenizerError("give exactly one of --store or --tokens")
    tok = load_tokenizer(tok_dir)
    if not isinstance(tok, ImageTokenizer):
        raise TokenizerError(f"{tok_dir} is not an image tokenizer")
    items = store_tokens(store, "image", limit) if store else read_token_lines(str(tokens_file))
    if limit:
        items = items[:limit]
    out = Path(out_dir)
    written = []
    for start in range(0, len(items), 64):
        chunk = items[start:start + 64]
        images = tok.decode([t for _, t in chunk])
        for (name, _), img in zip(chunk, images, strict=True):
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            path = out / f"{safe}.png"
            with atomic_open(path, "wb") as f:
                img.save(f, format="PNG")
            written.append(str(path))
    click.echo(json.dumps({"written": len(written), "out_dir": str(out)}))
