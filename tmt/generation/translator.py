"""`Translator`: the Python API behind `tmt translate`.

    tr = Translator.from_checkpoint("exp/tmt")
    [res] = tr.translate(["speech.wav"], tgt="image")
    res.image.save("out.png")

It loads the model, `vocab.json`, and the tokenizers named there (refusing a
tokenizer whose fingerprint differs from the one the model was trained with),
encodes inputs with the source modality's tokenizer, decodes with `Generator`,
and turns the output tokens back into media: text strings, PIL images (the VQ
decoder), waveforms (the unit vocoder, when one is given; otherwise the units).

Speech and text inputs longer than the model's source limit are split into pieces that fit
(speech at pauses, text at sentence ends: `tmt.generation.segment`), translated piece by piece
and joined (texts with spaces, waveforms with a short silence, units end to end); the result
keeps the pieces in `.pieces`. `GenerationConfig.segment.enabled = False` refuses such inputs
instead, and image targets always do (one image per input).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast, overload

import numpy as np

from tmt.core.errors import TmtError
from tmt.core.tokenizer import ImageTokenizerLike, SpeechTokenizerLike, TextTokenizerLike, Tokenizer
from tmt.generation.generator import GenerationConfig, Generator, Hypothesis
from tmt.generation.inputs import (
    TranslateError,
    _default_ids,
    _read_text_input,
    check_modality,
    infer_modality,
)
from tmt.generation.rerank import Aligner
from tmt.generation.segment import (
    join_texts,
    join_tokens,
    join_waveforms,
    piece_budget,
    split_speech,
    split_text,
    split_tokens,
)
from tmt.generation.translation import Translation
from tmt.vocab import JointVocab

log = logging.getLogger(__name__)

class Translator:
    """Translate any modality into any other with a trained tmt model."""

    def __init__(
        self,
        model: Any,
        vocab: JointVocab,
        *,
        tokenizers: Mapping[str, Tokenizer] | None = None,
        tokenizer_dirs: Mapping[str, str | Path] | None = None,
        vocoder: Any = None,
        vocoder_dir: str | Path | None = None,
        config: GenerationConfig | None = None,
        model_dir: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.vocab = vocab
        self.config = config or GenerationConfig()
        vocab.voice_token(self.config.voice)  # an unknown voice is refused before any input is read
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.device = device
        self._tokenizers: dict[str, Tokenizer] = dict(tokenizers or {})
        self._tokenizer_dirs = {m: Path(d) for m, d in (tokenizer_dirs or {}).items()}
        for m in self._tokenizer_dirs:
            check_modality(m, "--tokenizer")
        self._vocoder = vocoder
        self._vocoder_dir = Path(vocoder_dir) if vocoder_dir is not None else None
        self._generator: Generator | None = None
        self._trained: list[str] | None = None  # the directions model_dir's config.yaml says it trained
        for m, tok in self._tokenizers.items():
            self._check_tokenizer(m, tok, "given")

    @classmethod
    def from_checkpoint(
        cls,
        model_dir: str | Path,
        *,
        device: str = "cpu",
        tokenizers: Mapping[str, str | Path] | None = None,
        vocoder: str | Path | None = None,
        config: GenerationConfig | None = None,
    ) -> Translator:
        """Load `model_dir` (model.pt, config.yaml, vocab.json). Tokenizers are found from
        vocab.json's path hints unless `tokenizers={"speech": DIR, ...}` overrides them; they
        load on first use and must match vocab.json's fingerprints."""
        from tmt.models.checkpoint import load_model

        model = load_model(model_dir, device)
        return cls(
            model, model.vocab, tokenizer_dirs=tokenizers, vocoder_dir=vocoder, config=config,
            model_dir=model_dir, device=device,
        )

    # ---- components ----------------------------------------------------------
    def _check_tokenizer(self, m: str, tok: Tokenizer, where: str) -> None:
        if getattr(tok, "modality", m) != m:
            raise TranslateError(f"the {m} tokenizer {where} is a {tok.modality} tokenizer")
        self.vocab.check_fingerprints({m: str(tok.fingerprint)}, what=f"{m} tokenizer ({where})")
        if int(tok.vocab_size) != self.vocab.sizes[m]:
            raise TranslateError(
                f"the {m} tokenizer ({where}) has {tok.vocab_size} ids but vocab.json's {m} range has "
                f"{self.vocab.sizes[m]}; use the tokenizer the model was trained with"
            )

    def _tokenizer_candidates(self, m: str) -> list[Path]:
        if m in self._tokenizer_dirs:
            return [self._tokenizer_dirs[m]]
        info = self.vocab.tokenizers.get(m)
        hint = info.path if info is not None else None
        if not hint:
            return []
        p = Path(hint)
        out = [p]
        if not p.is_absolute() and self.model_dir is not None:
            out.append(self.model_dir / p)
        return out

    @overload
    def tokenizer(self, m: Literal["speech"]) -> SpeechTokenizerLike: ...
    @overload
    def tokenizer(self, m: Literal["image"]) -> ImageTokenizerLike: ...
    @overload
    def tokenizer(self, m: Literal["text"]) -> TextTokenizerLike: ...
    @overload
    def tokenizer(self, m: str) -> Tokenizer: ...

    def tokenizer(self, m: str) -> Tokenizer:
        """The (fingerprint-checked) tokenizer of modality `m`, loaded on first use."""
        check_modality(m, "tokenizer")
        if m in self._tokenizers:
            return self._tokenizers[m]
        if m not in self.vocab.tokenizers or self.vocab.sizes[m] == 0:
            raise TranslateError(f"the model's vocabulary has no {m} tokens; it cannot handle {m}")
        cands = self._tokenizer_candidates(m)
        found = next((c for c in cands if (c / "tokenizer.json").is_file()), None)
        if found is None:
            named = f" (vocab.json / --tokenizer names {', '.join(map(str, cands))})" if cands else ""
            raise TranslateError(
                f"no fitted {m} tokenizer found{named}; pass --tokenizer {m}=DIR "
                f"(Python: tokenizers={{'{m}': DIR}})"
            )
        from tmt.tokenizers.base import load_tokenizer

        tok = load_tokenizer(found)
        self._check_tokenizer(m, tok, str(found))
        self._tokenizers[m] = tok
        return tok

    def vocoder(self) -> Any:
        """The unit vocoder, or None when none was given."""
        if self._vocoder is None and self._vocoder_dir is not None:
            from tmt.vocoder import load_vocoder

            fp = self.vocab.tokenizers["speech"].fingerprint if "speech" in self.vocab.tokenizers else None
            self._vocoder = load_vocoder(self._vocoder_dir, self.device, expected_fingerprint=fp or None)
            voice = self.speech_voice
            if self._vocoder.voices and voice is not None and voice not in self._vocoder.voices:
                raise TranslateError(
                    f"the vocoder {self._vocoder_dir} has no voice '{voice}' (it knows: {', '.join(self._vocoder.voices)}); "
                    "choose one of those with --voice, or a vocoder trained on this voice"
                )
        return self._vocoder

    @property
    def speech_voice(self) -> str | None:
        """The voice speech targets are made in (`--voice`, else the vocabulary's default; None without voices)."""
        return self.config.voice or self.vocab.default_voice

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = Generator(self.model, self.vocab, self.config)
        return self._generator

    def caption_aligner(self) -> Aligner:
        """The image tokenizer's own image-caption alignment, as `rerank_align` reads it."""
        itok = self.tokenizer("image")
        if getattr(itok, "caption_judge", None) is None:
            raise TranslateError(
                f"--rerank-align {self.config.rerank_align} judges image candidates by the image tokenizer's caption "
                f"alignment, which '{itok.name}' does not have (image-aligned cards train one; any image tokenizer "
                "gets one with `tmt tokenize image fit-judge`); use --rerank-align 0 or fit a judge")
        align = cast(Any, itok).caption_alignment  # present where caption_judge is (not in the protocol)
        ttok = self.tokenizer("text")

        def aligner(images: Sequence[np.ndarray], captions: Sequence[np.ndarray]) -> np.ndarray:
            return np.asarray(align(images, [str(t) for t in ttok.decode(list(captions))]), dtype=np.float64)

        return aligner

    def _image_len(self) -> int:
        if self.config.image_len:
            return int(self.config.image_len)
        return int(self.tokenizer("image").tokens_per_image)

    # ---- encoding / decoding -----------------------------------------------------
    def encode(self, inputs: Sequence[Any], src: str, ids: Sequence[str]) -> list[np.ndarray]:
        """Inputs of one modality -> tokenizer-local token arrays (errors name the input)."""
        for item, name in zip(inputs, ids, strict=True):
            if isinstance(item, str | Path) and (src != "text" or isinstance(item, Path)):
                if not Path(item).is_file():
                    raise TranslateError(f"{src} input not found: {item}")
            if src == "text" and isinstance(item, str) and not item.strip():
                raise TranslateError(f"{name}: the text is empty; nothing to translate")
        texts = [_read_text_input(x) for x in inputs] if src == "text" else list(inputs)
        if src == "text":
            for t, name in zip(texts, ids, strict=True):
                if not str(t).strip():
                    raise TranslateError(f"{name}: the text is empty; nothing to translate")
        tok = self.tokenizer(src)
        try:
            toks = tok.encode(texts)
        except TmtError:
            raise
        except Exception as e:  # a reader library's own error: name the input
            names = ", ".join(ids[:3]) + (" ..." if len(ids) > 3 else "")
            raise TranslateError(f"cannot read {src} input ({names}): {e}") from None
        out = []
        for t, name in zip(toks, ids, strict=True):
            a = np.asarray(t, dtype=np.int64).reshape(-1)
            if a.size == 0:
                raise TranslateError(f"{name}: the {src} input produced no tokens (empty or silent?)")
            out.append(a)
        return out

    def detokenize(self, results: list[Translation]) -> None:
        """Fill in text / image / waveform for results of one target modality."""
        if not results:
            return
        tgt = results[0].tgt
        if tgt == "text":
            texts = self.tokenizer("text").decode([r.tokens for r in results])
            for r, t in zip(results, texts, strict=True):
                r.text = str(t)
        elif tgt == "image":
            imgs = self.tokenizer("image").decode([r.tokens for r in results])
            for r, im in zip(results, imgs, strict=True):
                r.image = im
        else:
            voc = self.vocoder()
            if voc is not None:
                wavs = voc.synthesize([r.tokens for r in results], voice=self.speech_voice)
                for r, w in zip(results, wavs, strict=True):
                    r.waveform = np.asarray(w, dtype=np.float32)
                    r.sample_rate = int(voc.sample_rate)

    # ---- translation ---------------------------------------------------------------
    def translate(
        self,
        inputs: Sequence[Any],
        *,
        tgt: str,
        src: str | None = None,
        via: str | None = None,
        ids: Sequence[str] | None = None,
        detokenize: bool = True,
    ) -> list[Translation]:
        """Translate `inputs` (paths, strings, PIL images, waveforms) into `tgt`.

        `src` defaults to each input's inferred modality; `via` runs a cascade
        (src -> via -> tgt) and keeps the intermediate result in `.pivot`."""
        check_modality(tgt, "target")
        if via is not None:
            check_modality(via, "pivot")
            first = self.translate_many(inputs, tgts=[via], src=src, ids=ids, detokenize=detokenize)
            mids = [r[via] for r in first]
            if any(r.src == via for r in mids) or via == tgt:
                raise TranslateError(f"--via {via} must differ from the source and the target ({tgt})")
            texts = [r.text for r in mids] if via == "text" else None  # long pivots split at sentences
            second = [
                r[tgt] for r in self._translate_tokens(
                    [r.tokens for r in mids], via, [tgt], [r.id for r in mids], detokenize, items=texts
                )
            ]
            for r, mid in zip(second, mids, strict=True):
                r.src, r.via, r.pivot = mid.src, via, mid
            return second
        return [r[tgt] for r in self.translate_many(inputs, tgts=[tgt], src=src, ids=ids, detokenize=detokenize)]

    def translate_many(
        self,
        inputs: Sequence[Any],
        *,
        tgts: Sequence[str],
        src: str | None = None,
        ids: Sequence[str] | None = None,
        detokenize: bool = True,
    ) -> list[dict[str, Translation]]:
        """Translate each input into every modality in `tgts`; each batch is encoded once."""
        inputs = list(inputs)
        if not inputs:
            return []
        ids = list(ids) if ids is not None else _default_ids(inputs)
        if len(ids) != len(inputs):
            raise TranslateError(f"{len(ids)} ids for {len(inputs)} inputs")
        srcs = [src] * len(inputs) if src is not None else [infer_modality(x) for x in inputs]
        for m in srcs:
            check_modality(m, "source")
        for t in tgts:
            check_modality(t, "target")
        out: list[dict[str, Translation]] = [{} for _ in inputs]
        for m in dict.fromkeys(srcs):  # group by source modality, keep order
            idx = [i for i, s in enumerate(srcs) if s == m]
            toks = self.encode([inputs[i] for i in idx], m, [ids[i] for i in idx])
            items = [inputs[i] for i in idx]
            res = self._translate_tokens(toks, m, list(tgts), [ids[i] for i in idx], detokenize, items=items)
            for i, r in zip(idx, res, strict=True):
                out[i] = r
        return out

    def translate_tokens(
        self,
        tokens: Sequence[np.ndarray],
        *,
        src: str,
        tgt: str,
        ids: Sequence[str] | None = None,
        detokenize: bool = True,
    ) -> list[Translation]:
        """Translate already tokenized inputs (tokenizer-local ids of `src`)."""
        check_modality(src, "source")
        check_modality(tgt, "target")
        ids = list(ids) if ids is not None else [f"input-{i + 1:04d}" for i in range(len(tokens))]
        return [r[tgt] for r in self._translate_tokens(list(tokens), src, [tgt], ids, detokenize)]

    def _check_rerank(self, src: str, tgt: str) -> None:
        """Reranking reads the model's reverse direction: refuse it when the experiment's config.yaml
        says the model never trained that direction (a single-direction model, say)."""
        from tmt.generation.rerank import rerank_directions

        needed = rerank_directions(self.config, src, tgt)
        if not needed or self.model_dir is None:
            return
        if self._trained is None:  # read once per translator, not per batch ([]: no config.yaml, unknown)
            self._trained = trained_directions(self.model_dir) or []
        missing = [d for d in needed if self._trained and d not in self._trained]
        if missing:
            raise TranslateError(
                f"--rerank {self.config.rerank} scores {src}->{tgt} candidates with the model's {', '.join(missing)}, "
                f"which {self.model_dir} was not trained on (it trained {', '.join(self._trained)}); "
                "translate with --rerank 0")

    def _translate_tokens(
        self, toks: list[np.ndarray], src: str, tgts: list[str], ids: list[str], detokenize: bool,
        items: Sequence[Any] | None = None,
    ) -> list[dict[str, Translation]]:
        """Decode token sequences; a too-long one is cut into pieces (`items`: the inputs the
        tokens came from, the media the cuts are found in) whose results are joined."""
        for t in tgts:
            if t == src:
                raise TranslateError(f"source and target are both {src}; pick another --to")
        gen = self.generator
        if "image" in tgts:
            gen.image_len = self._image_len()
            if self.config.rerank_align > 0 and gen.aligner is None:
                gen.aligner = self.caption_aligner()
        for t in tgts:
            self._check_rerank(src, t)
        pieces = self._pieces(toks, src, tgts, ids, items)
        flat = [p for ps in pieces for p in ps]
        owner = [(i, k) for i, ps in enumerate(pieces) for k in range(len(ps))]
        names = [ids[i] if len(pieces[i]) == 1 else f"{ids[i]} (piece {k + 1}/{len(pieces[i])})" for i, k in owner]
        hyps = gen.generate(flat, src, tgts, names=names)
        done: list[dict[str, Translation]] = []
        for (i, k), h in zip(owner, hyps, strict=True):
            pid = ids[i] if len(pieces[i]) == 1 else f"{ids[i]}.{k + 1}"
            done.append({
                t: Translation(id=pid, src=src, tgt=t, tokens=h[t][0].tokens, score=h[t][0].score, nbest=h[t])
                for t in tgts
            })
        if detokenize:
            for t in tgts:
                self.detokenize([o[t] for o in done])
        out: list[dict[str, Translation]] = []
        pos = 0
        for i, ps in enumerate(pieces):
            group = done[pos : pos + len(ps)]
            pos += len(ps)
            out.append(group[0] if len(ps) == 1 else {t: self._join(ids[i], [g[t] for g in group]) for t in tgts})
        return out

    # ---- long inputs -------------------------------------------------------------------
    def source_limit(self) -> int:
        """Most source tokens the model reads (its max_source_seq_len less the <eos>)."""
        return int(getattr(self.model, "max_source_seq_len", 1 << 30)) - 1

    def piece_budget(self, tgts: Sequence[str]) -> int:
        """Source tokens per piece when a long input is split for these targets: the source
        limit, lowered so each piece's longest allowed output fits the decoder (see
        `segment.piece_budget`), or `segment.max_tokens`."""
        cap = int(getattr(self.model, "max_target_seq_len", 1 << 30)) - 2
        limit = self.source_limit()
        budget = limit
        for t in tgts:
            lim = self.config.lengths.get(t)
            budget = min(budget, piece_budget(
                limit, target_cap=cap, length_rule=(lim.a, lim.b), max_tokens=self.config.segment.max_tokens
            ))
        return budget

    def _pieces(
        self, toks: list[np.ndarray], src: str, tgts: list[str], ids: list[str], items: Sequence[Any] | None
    ) -> list[list[np.ndarray]]:
        """Per input: [its tokens], or the pieces of a too-long speech / text input."""
        limit = self.source_limit()
        out: list[list[np.ndarray]] = []
        for i, t in enumerate(toks):
            if len(t) <= limit:
                out.append([t])
                continue
            if "image" in tgts:
                raise TranslateError(
                    f"{ids[i]}: {len(t)} {src} tokens exceed the model's source limit ({limit}); an image "
                    f"target is one image per input, so long inputs are not split: shorten the input to at "
                    f"most {limit} {src} tokens"
                )
            if not self.config.segment.enabled or src == "image":
                out.append([t])  # the generator refuses it, naming the limit
                continue
            budget = self.piece_budget(tgts)
            item = items[i] if items is not None else None
            parts = self._split(t, src, budget, item)
            log.info("%s: %d %s tokens exceed the model's source limit (%d); translating it in %d pieces "
                     "of at most %d tokens", ids[i], len(t), src, limit, len(parts), budget)
            out.append(parts)
        return out

    def _split(self, tokens: np.ndarray, src: str, budget: int, item: Any) -> list[np.ndarray]:
        """Pieces of one long input: speech cut at pauses, text at sentence ends; tokens with no
        media behind them (a speech pivot) in equal parts."""
        if src == "speech" and item is not None:
            from tmt.core.audio import as_waveform

            tok = self.tokenizer("speech")
            wav, _ = as_waveform(item)
            res = split_speech(wav, lambda ws: tok.encode(ws), budget, tokens=tokens,
                               min_pause_s=self.config.segment.min_pause_s)
            return [p for _, p in res]
        if src == "text":
            ttok = self.tokenizer("text")
            text = _read_text_input(item) if isinstance(item, str | Path) else None
            if text is None:
                text = str(ttok.decode([tokens])[0])
            return [p for _, p in split_text(str(text), lambda ts: ttok.encode(ts), budget)]
        return split_tokens(tokens, budget)

    def _join(self, id: str, parts: list[Translation]) -> Translation:
        """One result from the pieces' results: tokens end to end, texts with spaces, waveforms
        with `segment.join_silence_s` of silence; the score is the token-weighted mean."""
        first = parts[0]
        tokens = join_tokens([p.tokens for p in parts])
        weights = np.array([max(1, len(p.tokens)) for p in parts], dtype=np.float64)
        score = float((weights * np.array([p.score for p in parts])).sum() / weights.sum())
        r = Translation(id=id, src=first.src, tgt=first.tgt, tokens=tokens, score=score,
                        nbest=[Hypothesis(tokens=tokens, score=score)], pieces=parts)
        if all(p.text is not None for p in parts):
            r.text = join_texts([str(p.text) for p in parts])
        if all(p.waveform is not None for p in parts):
            sr = int(first.sample_rate or 16000)
            r.waveform = join_waveforms([np.asarray(p.waveform) for p in parts], sr, self.config.segment.join_silence_s)
            r.sample_rate = sr
        return r


def trained_directions(model_dir: str | Path) -> list[str] | None:
    """The directions (short names) an experiment trained, from its config.yaml (`data.directions`,
    empty = all six); None when the directory has no config.yaml."""
    from tmt.core.io import read_yaml_object
    from tmt.core.modality import ALL_DIRECTIONS, parse_directions

    p = Path(model_dir) / "config.yaml"
    if not p.is_file():
        return None
    data = read_yaml_object(p, what="experiment config", error=TranslateError, fix="give a directory written by `tmt train`")
    section = data.get("data")
    dirs = section.get("directions") if isinstance(section, dict) else None
    return [d.short for d in parse_directions(dirs, error=TranslateError)] if dirs else list(ALL_DIRECTIONS)
