"""Text tokenizers: BERT WordPiece (the paper's) and SentencePiece (unigram / BPE).

Both apply the paper's normalisation first (`normalize_text`): lowercase, drop bracketed
spans, every punctuation mark except the apostrophe becomes a space, spaces collapse.
`decode` returns exactly `normalize_text(original)` whenever every word is covered by
the vocabulary (always for vocabularies trained here; for a given BERT vocab.txt,
words with characters outside it become [UNK]).

A fitted text tokenizer is a directory::

    tokenizer.json   kind=text, class=text-wordpiece|text-sentencepiece, name, card, vocab_size, fingerprint
    vocab.txt        (wordpiece) one token per line, line number = id
    spm.model        (sentencepiece) the serialized SentencePiece model

Python API::

    tok = WordPieceTokenizer.fit(load_card("tokenizers/text-wordpiece-trained.yaml"), captions)
    ids = tok.encode(["A red ball (left) is next to a cube."])   # -> [array([...])]
    tok.decode(ids)                                              # -> ["a red ball is next to a cube"]
    tok.save("exp/tok/text"); tok = WordPieceTokenizer.load("exp/tok/text")
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tmt.config import from_dict, to_dict
from tmt.core.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    make_dirs,
    read_json_object,
)
from tmt.tokenizers.base import TokenizerError, fingerprint_of, read_tokenizer_json

log = logging.getLogger(__name__)

APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"}
_BRACKETS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]|\{[^{}]*\}")
_SPACES = re.compile(r"\s+")


def _is_punct(ch: str) -> bool:
    """BERT's definition: ASCII non-alphanumeric printable characters plus Unicode P* categories."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def normalize_text(text: str, *, lowercase: bool = True, strip_accents: bool = False,
                   drop_brackets: bool = True) -> str:
    """The paper's caption normalisation.

    "A dog (brown) runs; it's FAST!" -> "a dog runs it's fast"
    """
    for a, b in APOSTROPHES.items():
        text = text.replace(a, b)
    if lowercase:
        text = text.lower()
    if strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    if drop_brackets:
        prev = None
        while prev != text:  # innermost first, so nested spans go too
            prev, text = text, _BRACKETS.sub(" ", text)
    chars = []
    for c in text:
        if c == "'":
            chars.append(c)
        elif _is_punct(c) or unicodedata.category(c)[0] == "C":
            chars.append(" ")
        else:
            chars.append(c)
    return _SPACES.sub(" ", "".join(chars)).strip()


@dataclass(kw_only=True)
class TextCard:
    """Settings shared by the text tokenizer cards."""

    name: str = "text"
    """Tokenizer name."""
    description: str = ""
    """Free text."""
    vocab: str | None = None
    """Existing vocabulary to use instead of training one: a BERT vocab.txt / HF tokenizer directory (wordpiece) or a .model file (sentencepiece)."""
    vocab_size: int = 8000
    """Target vocabulary size when training (an upper bound on small corpora)."""
    lowercase: bool = True
    """Lowercase before tokenizing (the paper: yes)."""
    strip_accents: bool = False
    """Remove combining accents (set true for BERT uncased vocabularies)."""
    drop_brackets: bool = True
    """Drop (...), [...] and {...} spans (the paper: yes)."""


@dataclass(kw_only=True)
class WordPieceCard(TextCard):
    """A text-wordpiece card."""

    unk_token: str = "[UNK]"
    """Token for words the vocabulary cannot spell."""
    min_frequency: int = 1
    """Training: minimum pair frequency for a merge."""
    max_input_chars_per_word: int = 100
    """Longer words become the unknown token."""


@dataclass(kw_only=True)
class SentencePieceCard(TextCard):
    """A text-sentencepiece card."""

    model_type: Literal["unigram", "bpe"] = "unigram"
    """SentencePiece algorithm."""
    character_coverage: float = 1.0
    """Share of characters covered by the vocabulary (1.0: all; lower for large-alphabet languages)."""


def _parse(card: dict[str, Any] | TextCard, cls: type[Any], class_name: str) -> Any:
    if isinstance(card, cls):
        return card
    assert isinstance(card, dict)
    if card.get("class", class_name) != class_name:
        raise TokenizerError(f"card names class '{card.get('class')}', expected '{class_name}'")
    try:
        return from_dict(cls, {k: v for k, v in card.items() if k != "class"})
    except Exception as e:  # ConfigError: name the card
        raise TokenizerError(f"{class_name} card '{card.get('name', '?')}': {e}") from None


def _training_texts(texts: Iterable[str], cfg: TextCard, what: str) -> list[str]:
    """The non-empty normalised captions a vocabulary is trained on (`what` names it in the error)."""
    norm = [normalize_text(t, lowercase=cfg.lowercase, strip_accents=cfg.strip_accents,
                           drop_brackets=cfg.drop_brackets) for t in texts]
    norm = [t for t in norm if t]
    if not norm:
        raise TokenizerError(f"no non-empty captions to train the {what} on")
    return norm


class _TextBase:
    modality = "text"
    class_name = ""
    asset = ""
    cfg: TextCard

    def normalize(self, text: str) -> str:
        c = self.cfg
        return normalize_text(text, lowercase=c.lowercase, strip_accents=c.strip_accents, drop_brackets=c.drop_brackets)

    @property
    def card(self) -> dict[str, Any]:
        d: dict[str, Any] = {"class": self.class_name}
        d.update(to_dict(self.cfg))
        return d

    @property
    def name(self) -> str:
        return self.cfg.name

    def _fingerprint_card(self) -> dict[str, Any]:
        # the vocabulary's location is not part of its identity; its bytes are (in the asset)
        return {k: v for k, v in self.card.items() if k != "vocab"}

    def _write_info(self, d: Path, fingerprint: str, extra: dict[str, Any]) -> None:
        info = {"kind": "text", "class": self.class_name, "name": self.name, "card": self.card,
                "vocab_size": int(self.vocab_size), "fingerprint": fingerprint, "assets": [self.asset], **extra}
        atomic_write_json(d / "tokenizer.json", info)

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError


# ---------------------------------------------------------------- WordPiece


def read_vocab_txt(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read vocabulary {path}: {e}") from None
    if lines and lines[-1] == "":
        lines.pop()
    tokens = [ln.rstrip("\r") for ln in lines]
    if not tokens:
        raise TokenizerError(f"vocabulary {path} is empty")
    dup = len(tokens) - len(set(tokens))
    if dup:
        raise TokenizerError(f"vocabulary {path} has {dup} duplicate tokens; it is not a BERT vocab.txt")
    return tokens


def _vocab_from_path(path: str | Path) -> list[str]:
    """A BERT vocab.txt, or a Hugging Face tokenizer directory (vocab.txt or tokenizer.json with a WordPiece model)."""
    p = Path(path)
    if p.is_dir():
        if (p / "vocab.txt").is_file():
            return read_vocab_txt(p / "vocab.txt")
        hf = p / "tokenizer.json"
        if hf.is_file():
            model = read_json_object(hf, what="Hugging Face tokenizer.json", error=TokenizerError).get("model", {})
            if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
                raise TokenizerError(f"{hf} is not a WordPiece tokenizer (model type {model.get('type')!r})")
            vocab: dict[str, int] = model["vocab"]
            return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        raise TokenizerError(f"{p} holds neither vocab.txt nor a Hugging Face tokenizer.json")
    if not p.is_file():
        raise TokenizerError(f"vocabulary not found: {p} (give a BERT vocab.txt or a tokenizer directory, e.g. --vocab)")
    return read_vocab_txt(p)


CONTROL_TOKENS = frozenset({"[PAD]", "[CLS]", "[SEP]", "[MASK]"})
"""BERT vocabulary entries that mark structure, not text: skipped when decoding."""


class WordPieceTokenizer(_TextBase):
    """BERT WordPiece over normalised text (HF `tokenizers` does the greedy longest-match)."""

    class_name = "text-wordpiece"
    asset = "vocab.txt"

    def __init__(self, card: dict[str, Any] | WordPieceCard, vocab: Sequence[str], *,
                 fingerprint: str | None = None) -> None:
        # (mypy run from the repo root sees the tokenizers/ cards folder as a namespace package)
        from tokenizers import Tokenizer, models, pre_tokenizers

        self.cfg: WordPieceCard = _parse(card, WordPieceCard, self.class_name)
        tokens = list(vocab)
        if self.cfg.unk_token not in tokens:
            raise TokenizerError(f"vocabulary lacks the unknown token '{self.cfg.unk_token}' (set unk_token in the card)")
        if "##'" not in tokens and "'" in tokens:
            # BERT splits "don't" into three words; we keep words whole so decoding is exact,
            # which needs the apostrophe as a continuation piece. Appended: earlier ids stay put.
            log.info("adding the continuation piece \"##'\" to the vocabulary (id %d)", len(tokens))
            tokens.append("##'")
        self.tokens = tokens
        self.ids = {t: i for i, t in enumerate(tokens)}
        model = models.WordPiece(vocab=self.ids, unk_token=self.cfg.unk_token,
                                 max_input_chars_per_word=self.cfg.max_input_chars_per_word)
        self.hf = Tokenizer(model)
        self.hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # normalisation is ours (normalize_text)
        self._fingerprint = fingerprint or fingerprint_of(self._fingerprint_card(), asset_bytes=[self._vocab_bytes()])

    def _vocab_bytes(self) -> bytes:
        return ("\n".join(self.tokens) + "\n").encode("utf-8")

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def unk_id(self) -> int:
        return self.ids[self.cfg.unk_token]

    @classmethod
    def fit(cls, card: dict[str, Any] | WordPieceCard, texts: Iterable[str] | None = None, *,
            vocab: str | Path | None = None) -> WordPieceTokenizer:
        """Load the card's (or `vocab`) existing vocabulary, or train one on `texts` (normalised first)."""
        cfg: WordPieceCard = _parse(card, WordPieceCard, cls.class_name)
        if vocab is not None:
            cfg.vocab = str(vocab)
        if cfg.vocab:
            return cls(cfg, _vocab_from_path(cfg.vocab))
        if texts is None:
            raise TokenizerError("no captions to train the wordpiece vocabulary on, and no vocab path given")
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        norm = _training_texts(texts, cfg, "wordpiece vocabulary")
        hf = Tokenizer(models.WordPiece(unk_token=cfg.unk_token))
        hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                            special_tokens=[cfg.unk_token], continuing_subword_prefix="##",
                                            show_progress=False)
        hf.train_from_iterator(norm, trainer=trainer)
        v = hf.get_vocab()
        tokens = [t for t, _ in sorted(v.items(), key=lambda kv: kv[1])]
        log.info("trained wordpiece vocabulary: %d tokens from %d captions", len(tokens), len(norm))
        return cls(cfg, tokens)

    def tokenize(self, text: str) -> list[str]:
        """Normalise, then split into wordpieces (continuations start with ##)."""
        return list(self.hf.encode(self.normalize(text), add_special_tokens=False).tokens)

    def encode(self, batch: Sequence[str]) -> list[np.ndarray]:
        texts = [self.normalize(t) for t in batch]
        encs = self.hf.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]

    def decode(self, tokens: Sequence[np.ndarray | Sequence[int]]) -> list[str]:
        """Join wordpieces: '##x' continues the previous word, anything else starts a new one."""
        out = []
        n = len(self.tokens)
        for seq in tokens:
            words: list[str] = []
            for i in np.asarray(seq, dtype=np.int64).reshape(-1).tolist():
                if not 0 <= i < n:
                    raise TokenizerError(f"text id {i} outside the vocabulary [0, {n})")
                t = self.tokens[i]
                if t in CONTROL_TOKENS:
                    continue  # BERT's control tokens never stand for text (encode never emits them)
                if t.startswith("##") and words:
                    words[-1] += t[2:]
                else:
                    words.append(t)
            out.append(" ".join(words))
        return out

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        make_dirs(d)
        atomic_write_bytes(d / self.asset, self._vocab_bytes())
        self._write_info(d, self._fingerprint, {"unk_id": self.unk_id})

    @classmethod
    def load(cls, directory: str | Path, **_: Any) -> WordPieceTokenizer:
        d = Path(directory)
        info = read_tokenizer_json(d)
        if info["class"] != cls.class_name:
            raise TokenizerError(f"{d} holds a '{info['class']}' tokenizer, not {cls.class_name}")
        tok = cls(info["card"], read_vocab_txt(d / cls.asset), fingerprint=info["fingerprint"])
        if tok.vocab_size != info["vocab_size"]:
            raise TokenizerError(f"{d}: vocab.txt has {tok.vocab_size} tokens, tokenizer.json says {info['vocab_size']}")
        return tok


# ---------------------------------------------------------------- SentencePiece


class SentencePieceTokenizer(_TextBase):
    """SentencePiece (unigram or BPE) over normalised text."""

    class_name = "text-sentencepiece"
    asset = "spm.model"

    def __init__(self, card: dict[str, Any] | SentencePieceCard, model_proto: bytes, *,
                 fingerprint: str | None = None) -> None:
        import sentencepiece as spm

        self.cfg: SentencePieceCard = _parse(card, SentencePieceCard, self.class_name)
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"not a SentencePiece model: {e}") from None
        self._fingerprint = fingerprint or fingerprint_of(self._fingerprint_card(), asset_bytes=[model_proto])

    @property
    def vocab_size(self) -> int:
        return int(self.sp.GetPieceSize())

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @classmethod
    def fit(cls, card: dict[str, Any] | SentencePieceCard, texts: Iterable[str] | None = None, *,
            vocab: str | Path | None = None) -> SentencePieceTokenizer:
        """Load the card's (or `vocab`) .model file, or train a model on `texts` (normalised first)."""
        cfg: SentencePieceCard = _parse(card, SentencePieceCard, cls.class_name)
        if vocab is not None:
            cfg.vocab = str(vocab)
        if cfg.vocab:
            p = Path(cfg.vocab)
            if p.is_dir():
                models = sorted(p.glob("*.model"))
                if not models:
                    raise TokenizerError(f"{p} holds no SentencePiece *.model file")
                p = models[0]
            if not p.is_file():
                raise TokenizerError(f"SentencePiece model not found: {p}")
            return cls(cfg, p.read_bytes())
        if texts is None:
            raise TokenizerError("no captions to train the SentencePiece model on, and no model path given")
        import sentencepiece as spm

        norm = _training_texts(texts, cfg, "SentencePiece model")
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(norm), model_writer=buf, vocab_size=cfg.vocab_size,
                model_type=cfg.model_type, character_coverage=cfg.character_coverage,
                normalization_rule_name="identity",  # normalize_text already ran
                hard_vocab_limit=False, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
                minloglevel=2, num_threads=1,
            )
        except RuntimeError as e:
            raise TokenizerError(f"SentencePiece training failed: {e}") from None
        return cls(cfg, buf.getvalue())

    def tokenize(self, text: str) -> list[str]:
        return list(self.sp.EncodeAsPieces(self.normalize(text)))

    def encode(self, batch: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(self.sp.EncodeAsIds(self.normalize(t)), dtype=np.int64) for t in batch]

    def decode(self, tokens: Sequence[np.ndarray | Sequence[int]]) -> list[str]:
        n = self.vocab_size
        out = []
        for seq in tokens:
            ids = [int(i) for i in np.asarray(seq, dtype=np.int64).reshape(-1)]
            bad = [i for i in ids if not 0 <= i < n]
            if bad:
                raise TokenizerError(f"text id {bad[0]} outside the vocabulary [0, {n})")
            out.append(self.sp.DecodeIds(ids))
        return out

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        make_dirs(d)
        atomic_write_bytes(d / self.asset, self.proto)
        atomic_write_text(d / "vocab.txt", "\n".join(self.sp.IdToPiece(i) for i in range(self.vocab_size)) + "\n")
        self._write_info(d, self._fingerprint, {"model_type": self.cfg.model_type})

    @classmethod
    def load(cls, directory: str | Path, **_: Any) -> SentencePieceTokenizer:
        d = Path(directory)
        info = read_tokenizer_json(d)
        if info["class"] != cls.class_name:
            raise TokenizerError(f"{d} holds a '{info['class']}' tokenizer, not {cls.class_name}")
        p = d / cls.asset
        if not p.is_file():
            raise TokenizerError(f"{d}: missing {cls.asset}; re-fit with `tmt tokenize text fit`")
        return cls(info["card"], p.read_bytes(), fingerprint=info["fingerprint"])


TEXT_CLASSES: dict[str, type[WordPieceTokenizer] | type[SentencePieceTokenizer]] = {
    WordPieceTokenizer.class_name: WordPieceTokenizer,
    SentencePieceTokenizer.class_name: SentencePieceTokenizer,
}


def fit_text_tokenizer(card: dict[str, Any], texts: Iterable[str] | None, out_dir: str | Path | None = None, *,
                       vocab: str | Path | None = None, vocab_size: int | None = None) -> WordPieceTokenizer | SentencePieceTokenizer:
    """Build the text tokenizer a card describes (existing vocabulary or trained on `texts`); save it if `out_dir`."""
    cls = TEXT_CLASSES.get(str(card.get("class")))
    if cls is None:
        raise TokenizerError(f"not a text tokenizer card: class '{card.get('class')}' (expected one of {', '.join(TEXT_CLASSES)})")
    card = dict(card)
    if vocab_size is not None:
        card["vocab_size"] = int(vocab_size)
    tok = cls.fit(card, texts, vocab=vocab)
    if out_dir is not None:
        tok.save(out_dir)
    return tok
