"""The model side of the server: one `Translator`, decoding-option variants of it, and the
batch function the worker calls.

    engine = Engine(Translator.from_checkpoint("exp/tmt", vocoder="exp/vocoder"))
    engine.modalities                     # ('text', 'speech', 'image'): those with a tokenizer
    engine.run_batch(key, [(id, value), ...])

A request kind is `BatchKey(src, tgt, via, options)`; a batch of one kind is one
`Translator.translate` call. When that call fails, each input of the batch is retried alone,
so one bad input fails only its own request.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tmt import MODALITIES, TmtError
from tmt.generation.translator import Translator
from tmt.serve.config import DecodeOptions

log = logging.getLogger(__name__)


class BatchKey(NamedTuple):
    """Requests with equal keys are decoded together."""

    src: str
    tgt: str
    via: str | None
    options: DecodeOptions


class Engine:
    """A loaded model with its tokenizers and vocoder, used from the worker thread only
    (except `info`, which reads what was loaded at start-up)."""

    def __init__(self, translator: Translator, *, vocoder_dir: str | Path | None = None,
                 cached_translators: int = 8) -> None:
        self.base = translator
        self.vocoder_dir = str(vocoder_dir) if vocoder_dir is not None else None
        self.cached = max(1, cached_translators)
        self._variants: OrderedDict[DecodeOptions, Translator] = OrderedDict()
        self._lock = threading.Lock()
        self.tokenizers: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}
        for m in MODALITIES:  # load now: fail at start-up, not on the first request
            try:
                self.tokenizers[m] = translator.tokenizer(m)
            except TmtError as e:
                self.unavailable[m] = str(e)
                log.warning("%s is not available: %s", m, e)
        self.vocoder = translator.vocoder()
        if len(self.tokenizers) < 2:
            raise TmtError(
                "the model has fewer than two usable modalities: "
                + "; ".join(f"{m}: {why}" for m, why in self.unavailable.items())
            )

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.tokenizers)

    def directions(self) -> list[tuple[str, str]]:
        return [(s, t) for s in self.modalities for t in self.modalities if s != t]

    def translator_for(self, options: DecodeOptions) -> Translator:
        """The base translator, or a sibling sharing its model, tokenizers and vocoder with
        these decoding options (kept in a small LRU cache)."""
        if options.is_default():
            return self.base
        with self._lock:
            tr = self._variants.get(options)
            if tr is not None:
                self._variants.move_to_end(options)
                return tr
        changes = options.changes()
        if changes.get("strategy") == "greedy":
            changes["beam_size"] = 1
        cfg = dataclasses.replace(self.base.config, **changes)
        if cfg.nbest > cfg.beam_size:
            cfg = dataclasses.replace(cfg, nbest=cfg.beam_size)
        tr = Translator(
            self.base.model, self.base.vocab, tokenizers=self.tokenizers, vocoder=self.vocoder, config=cfg,
            model_dir=self.base.model_dir, device=self.base.device,
        )
        with self._lock:
            self._variants[options] = tr
            while len(self._variants) > self.cached:
                self._variants.popitem(last=False)
        return tr

    def run_batch(self, key: Any, payloads: Sequence[Any]) -> list[Any]:
        """Translate `[(id, value), ...]` of one kind; one Translation or exception per input."""
        k = BatchKey(*key)
        ids = [p[0] for p in payloads]
        values = [p[1] for p in payloads]
        tr = self.translator_for(k.options)
        if k.options.seed is not None:  # a seed makes a request reproducible: each batch starts its stream
            tr.generator.restart_sampling()
        try:
            return list(tr.translate(values, tgt=k.tgt, src=k.src, via=k.via, ids=ids))
        except Exception as e:
            if len(values) == 1:
                return [e]
            log.info("a batch of %d failed (%s); translating its inputs one by one", len(values), e)
        out: list[Any] = []
        for i, v in zip(ids, values, strict=True):
            try:
                out.extend(tr.translate([v], tgt=k.tgt, src=k.src, via=k.via, ids=[i]))
            except Exception as e:
                out.append(e)
        return out

    def info(self) -> dict[str, Any]:
        """Directions, tokenizers with their fingerprints, the vocoder, the decoding defaults."""
        vocab = self.base.vocab
        toks: dict[str, Any] = {}
        for m, tok in self.tokenizers.items():
            entry = getattr(vocab, "tokenizers", {}).get(m)
            toks[m] = {
                "name": str(getattr(tok, "name", "")),
                "fingerprint": str(getattr(tok, "fingerprint", "")),
                "vocab_size": int(getattr(tok, "vocab_size", 0)),
                "path": str(getattr(entry, "path", "") or ""),
            }
            if m == "image" and hasattr(tok, "tokens_per_image"):
                toks[m]["tokens_per_image"] = int(tok.tokens_per_image)
        voc = None
        if self.vocoder is not None:
            voc = {"path": self.vocoder_dir, "sample_rate": int(getattr(self.vocoder, "sample_rate", 0) or 0),
                   "kind": type(self.vocoder).__name__}
        cfg = self.base.config
        return {
            "model": str(self.base.model_dir) if self.base.model_dir is not None else None,
            "device": str(self.base.device),
            "modalities": list(self.modalities),
            "directions": [list(d) for d in self.directions()],
            "unavailable": self.unavailable,
            "tokenizers": toks,
            "vocoder": voc,
            "speech_output": "wav" if voc is not None else "units",
            "decoding": {"strategy": cfg.strategy, "beam_size": cfg.beam_size, "beam_patience": cfg.beam_patience,
                         "temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p},
        }
