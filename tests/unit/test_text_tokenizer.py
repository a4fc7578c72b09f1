"""Text tokenizers: the paper's normalisation, exact round trips, vocab by path, save/load, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tmt.tokenizers.base import TokenizerError, load_card, load_tokenizer
from tmt.tokenizers.text import (
    SentencePieceTokenizer,
    WordPieceTokenizer,
    fit_text_tokenizer,
    normalize_text,
)

CAPTIONS = [
    "A small red circle (near the edge) is above a big blue square.",
    "The green triangle's left of the [tiny] yellow star!",
    "Two objects: a purple diamond; an orange cross.",
    "rock 'n' roll, the dogs' bones -- don't touch",
    "A white STAR is at the top-left.",
    "café naïve coöperate",
] * 4
CARDS = Path(__file__).resolve().parents[2] / "tokenizers"


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("A dog (brown) runs; it's FAST!", "a dog runs it's fast"),
        ("nested (a (b) c) brackets [x] {y} end", "nested brackets end"),
        ("unmatched ( bracket", "unmatched bracket"),
        ("well-known   co-op...", "well known co op"),
        ("It\u2019s   the dogs' toy", "it's the dogs' toy"),
        ("  tabs\tand\nnewlines  ", "tabs and newlines"),
        ("(only brackets)", ""),
        ("50% off $5 #1 @home", "50 off 5 1 home"),
    ],
)
def test_normalisation(raw: str, norm: str) -> None:
    assert normalize_text(raw) == norm


def test_normalisation_options() -> None:
    assert normalize_text("Café (x)", lowercase=False, drop_brackets=False) == "Café x"
    assert normalize_text("Café naïve", strip_accents=True) == "cafe naive"


@pytest.fixture(scope="module")
def wordpiece() -> WordPieceTokenizer:
    return WordPieceTokenizer.fit(load_card(CARDS / "text-wordpiece-trained.yaml") | {"vocab_size": 80}, CAPTIONS)


def test_wordpiece_round_trip_is_exact(wordpiece: WordPieceTokenizer) -> None:
    ids = wordpiece.encode(CAPTIONS)
    assert all(a.dtype == np.int64 and a.size and a.max() < wordpiece.vocab_size for a in ids)
    assert wordpiece.decode(ids) == [normalize_text(c) for c in CAPTIONS]
    assert wordpiece.vocab_size <= 80
    pieces = wordpiece.tokenize("The dogs' bones")
    assert any(p.startswith("##") for p in pieces)  # a small vocabulary splits words into pieces
    assert wordpiece.unk_id not in np.concatenate(ids)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["red", "circle", "the", "dog's", "bones", "'n'", "a", "naïve"]), max_size=8))
def test_wordpiece_round_trip_property(wordpiece: WordPieceTokenizer, words: list[str]) -> None:
    text = " ".join(words)
    assert wordpiece.decode(wordpiece.encode([text])) == [normalize_text(text)]


def test_wordpiece_save_load(wordpiece: WordPieceTokenizer, tmp_path: Path) -> None:
    wordpiece.save(tmp_path)
    info = json.loads((tmp_path / "tokenizer.json").read_text())
    assert info["kind"] == "text" and info["class"] == "text-wordpiece" and info["vocab_size"] == wordpiece.vocab_size
    again = load_tokenizer(tmp_path)
    assert isinstance(again, WordPieceTokenizer) and again.fingerprint == wordpiece.fingerprint
    assert all((a == b).all() for a, b in zip(again.encode(CAPTIONS), wordpiece.encode(CAPTIONS), strict=True))


def test_wordpiece_existing_vocab_txt_and_hf_dir(tmp_path: Path) -> None:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "'", "a", "red", "ball", "don", "##t", "##s", "b", "##a", "##l"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = fit_text_tokenizer(load_card(CARDS / "text-bert-vocab.yaml"), None, vocab=tmp_path / "vocab.txt")
    assert isinstance(tok, WordPieceTokenizer)
    assert tok.tokens[: len(vocab)] == vocab and tok.tokens[-1] == "##'"  # appended, ids unchanged
    ids = tok.encode(["A red ball. Don't (x) balls!"])[0]
    assert tok.decode([ids]) == ["a red ball don't balls"]
    assert [tok.tokens[i] for i in ids] == ["a", "red", "ball", "don", "##'", "##t", "ball", "##s"]
    # out-of-vocabulary words become [UNK]
    assert tok.decode(tok.encode(["a zebra"])) == ["a [UNK]"]
    # a Hugging Face tokenizer directory with only tokenizer.json
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {t: i for i, t in enumerate(vocab)}}}))
    tok2 = WordPieceTokenizer.fit(load_card(CARDS / "text-bert-vocab.yaml"), vocab=hf)
    assert tok2.tokens == tok.tokens and tok2.fingerprint == tok.fingerprint
    with pytest.raises(TokenizerError, match="vocabulary not found"):
        WordPieceTokenizer.fit({"class": "text-wordpiece"}, vocab=tmp_path / "nope.txt")
    (hf / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(TokenizerError, match="not a WordPiece"):
        WordPieceTokenizer.fit({"class": "text-wordpiece"}, vocab=hf)


def test_wordpiece_errors(wordpiece: WordPieceTokenizer) -> None:
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        wordpiece.decode([np.array([wordpiece.vocab_size])])
    with pytest.raises(TokenizerError, match="no non-empty captions"):
        WordPieceTokenizer.fit({"class": "text-wordpiece"}, ["(all dropped)", "!!!"])
    with pytest.raises(TokenizerError, match="unknown config key 'vocabsize'"):
        WordPieceTokenizer.fit({"class": "text-wordpiece", "vocabsize": 3}, CAPTIONS)
    assert wordpiece.encode([""])[0].size == 0 and wordpiece.decode([np.zeros(0, np.int64)]) == [""]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trip_and_save_load(model_type: str, tmp_path: Path) -> None:
    card = load_card(CARDS / "text-spm-unigram.yaml") | {"model_type": model_type, "vocab_size": 60}
    tok = SentencePieceTokenizer.fit(card, CAPTIONS)
    ids = tok.encode(CAPTIONS)
    assert tok.decode(ids) == [normalize_text(c) for c in CAPTIONS]
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, SentencePieceTokenizer) and again.fingerprint == tok.fingerprint
    # an existing .model given by path
    by_path = SentencePieceTokenizer.fit({"class": "text-sentencepiece"}, vocab=tmp_path / "spm.model")
    assert [a.tolist() for a in by_path.encode(CAPTIONS[:3])] == [a.tolist() for a in ids[:3]]


def test_cli_fit_encode_decode(tmp_path: Path) -> None:
    from tmt.cli import cli
    from tmt.store.manifest import write_manifest
    from tmt.store.token_store import TokenStore

    rows = [{"id": f"r{i}", "group": f"g{i}", "split": "train" if i < 20 else "test", "image": None, "speech": None,
             "text": c} for i, c in enumerate(CAPTIONS)]
    manifest = tmp_path / "m.jsonl.gz"
    write_manifest(manifest, rows)
    r = CliRunner()
    out = tmp_path / "tok"
    res = r.invoke(cli, ["tokenize", "text", "fit", "--card", str(CARDS / "text-wordpiece-trained.yaml"),
                         "--manifest", str(manifest), "--out", str(out), "--vocab-size", "90"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["captions"] == 20
    store = tmp_path / "store"
    res = r.invoke(cli, ["tokenize", "text", "encode", "--tokenizer", str(out), "--manifest", str(manifest),
                         "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert len(TokenStore(store)) == len(CAPTIONS)
    res = r.invoke(cli, ["tokenize", "text", "decode", "--tokenizer", str(out), "--store", str(store), "--limit", "3"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [f"r{i}\t{normalize_text(CAPTIONS[i])}" for i in range(3)]
    res = r.invoke(cli, ["tokenize", "text", "encode", "--tokenizer", str(out), "--text", "-"], input="A red circle (x).\n")
    assert res.exit_code == 0
    ids = res.stdout.strip()
    res = r.invoke(cli, ["tokenize", "text", "decode", "--tokenizer", str(out), "--tokens", "-"], input=ids + "\n")
    assert res.stdout.strip().split("\t")[1] == "a red circle"
    res = r.invoke(cli, ["tokenize", "text", "fit", "--card", str(CARDS / "text-bert-vocab.yaml"), "--out", str(tmp_path / "b"),
                         "--vocab", str(tmp_path / "missing.txt")])
    assert res.exit_code == 1 and "vocabulary not found" in res.output


def test_bert_control_tokens_are_not_decoded_as_text(tmp_path):
    from tmt.tokenizers.text import WordPieceTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "ball", "##s"]
    tok = WordPieceTokenizer({"class": "text-wordpiece", "name": "t"}, vocab)
    ids = tok.encode(["a red balls"])[0]
    assert tok.decode([ids]) == ["a red balls"]
    assert tok.decode([[2, *ids.tolist(), 3, 0]]) == ["a red balls"]
