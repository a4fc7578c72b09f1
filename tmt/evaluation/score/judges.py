"""The judges of `tmt score`, loaded once on first use and shared by every direction.

The ASR judge (`tmt.evaluation.asr`) transcribes speech outputs, the unit
vocoder turns unit-only outputs and ground-truth units into audio, CLIP
(`tmt.evaluation.images`) compares images of non-scene corpora, and the token
store given as `--ref-store` provides ground-truth tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt.evaluation.score.config import ScoreConfig, ScoreError


class Judges:
    """Judges loaded once, on first use, and shared by every direction."""

    def __init__(self, cfg: ScoreConfig) -> None:
        self.cfg = cfg
        self._asr: Any = None
        self._asr_reason: str | None = None
        self._vocoder: Any = None
        self._vocoder_reason: str | None = None
        self._clip: Any = None
        self._store: Any = None
        self._store_index: dict[str, int] | None = None
        self._transcripts: dict[str, str] = {}

    def asr(self) -> tuple[Any, str]:
        if self._asr is None and self._asr_reason is None:
            from tmt.evaluation.asr import AsrJudgeConfig, load_asr_judge

            judge, reason = load_asr_judge(AsrJudgeConfig(model_dir=self.cfg.asr_model_dir, prompt=self.cfg.asr_prompt,
                                                          no_repeat_ngram_size=self.cfg.asr_no_repeat_ngram))
            self._asr, self._asr_reason = judge, (reason if judge is None else "")
        return self._asr, self._asr_reason or ""

    def transcribe(self, items: Sequence[Any]) -> list[str]:
        """The ASR judge on `items`; files already transcribed in this run are not redone."""
        judge, why = self.asr()
        if judge is None:
            raise ScoreError(f"ASR judge unavailable: {why}")
        keys = [str(Path(i).resolve()) if isinstance(i, (str, Path)) else None for i in items]
        todo = [i for i, k in enumerate(keys) if k is None or k not in self._transcripts]
        texts = judge.transcribe([items[i] for i in todo]) if todo else []
        out: list[str | None] = [None if k is None else self._transcripts.get(k) for k in keys]
        for i, t in zip(todo, texts, strict=True):
            out[i] = t
            if keys[i] is not None:
                self._transcripts[keys[i]] = t  # type: ignore[index]
        return [t or "" for t in out]

    def vocoder(self) -> tuple[Any, str]:
        if not self.cfg.vocoder:
            return None, "no --vocoder given"
        if self._vocoder is None and self._vocoder_reason is None:
            from tmt.vocoder import load_vocoder

            self._vocoder = load_vocoder(self.cfg.vocoder)
            self._vocoder_reason = ""
        return self._vocoder, self._vocoder_reason or ""

    def vocode(
        self, units: Sequence[np.ndarray], durations: Sequence[np.ndarray] | None = None, *, voice: Any = None,
    ) -> list[tuple[str, list[tuple[np.ndarray, int]]]]:
        """`units` as audio, once per noise realisation (`cfg.realisations`), each named as
        `tmt vocoder eval --realisations` names it ("world", "seed-1", ...); durations are predicted once,
        so every realisation voices the same frames."""
        from tmt.evaluation.vocoder import each_realisation

        voc, why = self.vocoder()
        if voc is None:
            raise ScoreError(f"cannot vocode units: {why}")
        names = each_realisation(voc, self.cfg.realisations)
        if durations is None and self.cfg.realisations > 1:
            durations = voc.predict_durations(units, voice=voice)
        return [(name, [(np.asarray(w, dtype=np.float32), int(voc.sample_rate))
                        for w in voc.synthesize(units, durations, voice=voice)]) for name in names]

    def clip(self) -> Any:
        if self._clip is None and self.cfg.clip:
            from tmt.evaluation.images import ClipJudge

            self._clip = ClipJudge(self.cfg.clip)
        return self._clip

    def store_tokens(self, row_id: str, stream: str) -> np.ndarray | None:
        """Ground-truth tokens of one row from --ref-store (None when absent)."""
        if not self.cfg.ref_store:
            return None
        if self._store is None:
            from tmt.store.token_store import TokenStore

            self._store = TokenStore(self.cfg.ref_store)
            self._store_index = {str(m["id"]): i for i, m in enumerate(self._store.iter_meta())}
        assert self._store_index is not None
        i = self._store_index.get(row_id)
        if i is None or stream not in self._store.streams:
            return None
        toks = np.asarray(self._store.tokens(i, stream))
        return toks if len(toks) else None

