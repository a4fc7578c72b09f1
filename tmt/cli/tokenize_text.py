"""`tmt tokenize text`: build the text tokenizer (WordPiece / SentencePiece), encode, decode."""

from __future__ import annotations

import click

from tmt.cli._common import CONTEXT, echo_json, merge_command, run_encode, shard_option

EPILOG = """\b
Examples:
  tmt tokenize text fit --card tokenizers/text-wordpiece-trained.yaml --manifest data/scenes/train.jsonl.gz --out exp/tok/text
  tmt tokenize text fit --card tokenizers/text-wordpiece-trained.yaml --manifest m.jsonl.gz --vocab-size 2000 --out exp/tok/text
  tmt tokenize text fit --card tokenizers/text-bert-vocab.yaml --vocab /models/bert-base-uncased/vocab.txt --out exp/tok/bert
  tmt tokenize text fit --card tokenizers/text-spm-unigram.yaml --manifest m.jsonl.gz --out exp/tok/spm
  tmt tokenize text encode --tokenizer exp/tok/text --manifest m.jsonl.gz --split train --store data/store/train
  tmt tokenize text decode --tokenizer exp/tok/text --store data/store/train --limit 5
  echo "a red ball (big)" | tmt tokenize text encode --tokenizer exp/tok/text --text -
"""


@click.group(context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """Text: WordPiece / SentencePiece over the paper's normalised captions."""


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--card", required=True, type=click.Path(dir_okay=False), help="Tokenizer card (tokenizers/text-*.yaml).")
@click.option("--manifest", default=None, type=click.Path(dir_okay=False), help="Manifest whose captions to train on (not needed with --vocab).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output tokenizer directory.")
@click.option("--split", default="train", help="Manifest split to train on ('all' for every row).")
@click.option("--vocab-size", type=int, default=None, help="Override the card's target vocabulary size.")
@click.option("--vocab", default=None, help="Use this existing vocab.txt / tokenizer dir / .model instead of training.")
def fit(card: str, manifest: str | None, out_dir: str, split: str, vocab_size: int | None, vocab: str | None) -> None:
    """Train the text tokenizer on the captions, or adopt an existing vocabulary; write OUT."""
    from tmt.store.manifest import read_manifest
    from tmt.tokenizers.base import TokenizerError, load_card
    from tmt.tokenizers.text import fit_text_tokenizer

    c = load_card(card)
    texts = None
    if not (vocab or c.get("vocab")):
        if manifest is None:
            raise TokenizerError(f"card {card} trains a vocabulary: give --manifest (or --vocab PATH to use an existing one)")
        rows = read_manifest(manifest, split=None if split == "all" else split)
        texts = [r["text"] for r in rows if isinstance(r.get("text"), str) and r["text"].strip()]
        if not texts:
            raise TokenizerError(f"{manifest}: no captions in split '{split}' (use --split all?)")
    tok = fit_text_tokenizer(c, texts, out_dir, vocab=vocab, vocab_size=vocab_size)
    echo_json({"tokenizer": out_dir, "name": tok.name, "class": tok.class_name, "vocab_size": tok.vocab_size,
               "fingerprint": tok.fingerprint, "captions": len(texts) if texts else 0})


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--tokenizer", "tok_dir", required=True, type=click.Path(file_okay=False), help="Fitted text tokenizer directory.")
@click.option("--manifest", default=None, type=click.Path(dir_okay=False), help="Raw manifest to encode into --store.")
@click.option("--store", default=None, type=click.Path(file_okay=False), help="Token store directory to write.")
@click.option("--text", "text_file", default=None, help="Or encode the lines of this file ('-': stdin) and print ids.")
@click.option("--split", default="all", help="Only rows of this split ('all': every row).")
@shard_option
@click.option("--batch-size", type=int, default=256, help="Rows per encoder call.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store instead of resuming it.")
def encode(tok_dir: str, manifest: str | None, store: str | None, text_file: str | None, split: str,
           shard: str | None, batch_size: int, overwrite: bool) -> None:
    """Encode captions into a token store (sharded, resumable), or lines of text to ids on stdout."""
    from tmt.core.io import open_text
    from tmt.tokenizers.base import TokenizerError, load_tokenizer

    tok = load_tokenizer(tok_dir)
    if tok.modality != "text":
        raise TokenizerError(f"{tok_dir} is a {tok.modality} tokenizer, not a text one")
    if text_file is not None:
        with open_text(text_file) as f:
            lines = [ln.rstrip("\n") for ln in f]
        for ids in tok.encode(lines):
            click.echo(" ".join(str(int(i)) for i in ids))
        return
    if manifest is None or store is None:
        raise TokenizerError("give --manifest and --store (or --text FILE)")
    run_encode(manifest, store, {"text": tok}, {"text": tok_dir}, split=split, shard=shard, batch_size=batch_size,
               overwrite=overwrite)


cli.add_command(merge_command(EPILOG))


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--tokenizer", "tok_dir", required=True, type=click.Path(file_okay=False), help="Fitted text tokenizer directory.")
@click.option("--store", default=None, type=click.Path(file_okay=False), help="Decode the text tokens of this store.")
@click.option("--tokens", "tokens_file", default=None, help="Or a file ('-': stdin) of lines '[id<TAB>]ids...'.")
@click.option("--limit", type=int, default=0, help="Decode at most N rows (0: all).")
def decode(tok_dir: str, store: str | None, tokens_file: str | None, limit: int) -> None:
    """Print `id<TAB>text` per row: wordpieces joined back into normalised text."""
    import numpy as np

    from tmt.cli.tokenize_image import read_token_lines, store_tokens
    from tmt.tokenizers.base import TokenizerError, load_tokenizer

    if (store is None) == (tokens_file is None):
        raise TokenizerError("give exactly one of --store or --tokens")
    tok = load_tokenizer(tok_dir)
    items = store_tokens(store, "text", limit) if store else read_token_lines(str(tokens_file))
    if limit:
        items = items[:limit]
    for (name, _), text in zip(items, tok.decode([np.asarray(t) for _, t in items]), strict=True):
        click.echo(f"{name}\t{text}")
