"""Judge a unit vocoder: resynthesise a held-out store's units, then measure intelligibility
(WER of the evaluation ASR judge against the manifest texts, the judge's WER on the original
recordings beside it as the ceiling) and closeness to the recordings (log-mel L1).

    store units (+ durations) ──▶ vocoder ──▶ wavs ──▶ ASR judge ──▶ WER / CER
                                                  └──▶ log-mel L1 to the original wavs
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt.core.audio import SAMPLE_RATE
from tmt.evaluation.metrics import wer_cer
from tmt.vocoder import (
    AudioCache,
    LogMel,
    UnitVocoder,
    Utterance,
    collect_utterances,
    load_vocoder,
    mel_distance,
    write_wav,
)


def transcribe_with_judge(wavs: Sequence[np.ndarray]) -> tuple[list[str] | None, dict[str, Any] | str]:
    """Transcripts from the evaluation ASR judge, or (None, reason) when it is unavailable."""
    from tmt.evaluation.asr import load_asr_judge

    judge, reason = load_asr_judge()
    if judge is None:
        return None, reason
    return judge.transcribe([(w, SAMPLE_RATE) for w in wavs]), judge.describe()


def transcribe_with_model(model_dir: str | Path, wav_paths: Sequence[Path]) -> tuple[list[str] | None, str]:
    """Transcripts from a tmt translation model (speech -> text), or (None, reason)."""
    from tmt.generation.translator import Translator

    tr = Translator.from_checkpoint(model_dir)
    res = tr.translate([str(p) for p in wav_paths], tgt="text", src="speech")
    return [r.text or "" for r in res], ""


def evaluate_vocoder(
    vocoder_dir: str | Path,
    store: str | Path,
    manifest: str | Path,
    *,
    limit: int | None = None,
    gt_durations: bool = False,
    model: str | Path | None = None,
    out_dir: str | Path | None = None,
    settings: Sequence[str] = (),
) -> dict[str, Any]:
    """Resynthesise a held-out store's units; WER against the manifest texts and mel distance to the wavs
    (`settings`: synthesis-only `KEY=VALUE` overrides of the vocoder, as `load_vocoder` takes them).

    WER comes from the evaluation ASR judge when installed, else from `model`
    (a tmt speech->text model) when given; otherwise it is reported as
    unavailable, with the reason, never estimated. The ASR judge's WER on the
    original recordings is reported beside it as the ceiling.
    """
    utts, info = collect_utterances(store, manifest)
    utts = utts[:limit] if limit else utts
    voc = load_vocoder(vocoder_dir, expected_fingerprint=info["fingerprint"], settings=settings)
    wavs, res = _resynthesise(voc, utts, gt_durations)
    res = {"vocoder": str(vocoder_dir), "arch": voc.arch, "rows": len(utts), **res}
    cache = AudioCache()
    refs_audio = [cache.get(u) for u in utts]
    logmel = LogMel(voc.cfg.mel)
    dists = [mel_distance(logmel, r, w) for r, w in zip(refs_audio, wavs, strict=True)]
    res["mel_l1"] = round(float(np.nanmean(dists)), 4)
    if out_dir is not None:
        res |= _transcription_scores(utts, wavs, refs_audio, model, Path(out_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="tmt-vocoder-eval-") as tmp:
            res |= _transcription_scores(utts, wavs, refs_audio, model, Path(tmp))
    return res


def _resynthesise(voc: UnitVocoder, utts: Sequence[Utterance], gt_durations: bool) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The wavs of the utterances' units, with the duration source, audio length and speed."""
    t0 = time.perf_counter()
    wavs = voc.synthesize([u.units for u in utts], [u.durations for u in utts] if gt_durations else None,
                          voice=[u.voice for u in utts])
    synth_s = time.perf_counter() - t0
    audio_s = sum(len(w) for w in wavs) / SAMPLE_RATE
    return wavs, {
        "durations": "ground truth" if gt_durations else "predicted",
        "audio_seconds": round(audio_s, 2),
        "rtf_x": round(audio_s / max(synth_s, 1e-9), 2),
    }


def _transcription_scores(
    utts: Sequence[Utterance], wavs: Sequence[np.ndarray], refs_audio: Sequence[np.ndarray],
    model: str | Path | None, wav_dir: Path,
) -> dict[str, Any]:
    """Write the wavs to `wav_dir`; WER/CER from the ASR judge, else (with `model`) from a tmt model."""
    texts = [u.text or "" for u in utts]
    paths = []
    for u, w in zip(utts, wavs, strict=True):
        write_wav(wav_dir / f"{u.id}.wav", w)
        paths.append(wav_dir / f"{u.id}.wav")
    hyps, judge = transcribe_with_judge(wavs)
    if hyps is None:
        res: dict[str, Any] = {"wer": f"unavailable: {judge}"}
        if model is not None:
            res |= _model_wer(model, paths, texts)
        return res
    m = wer_cer(hyps, texts)
    ref_hyps, _ = transcribe_with_judge(refs_audio)
    assert ref_hyps is not None
    return {
        "wer": round(m.values.get("wer", float("nan")), 2),
        "cer": round(m.values.get("cer", float("nan")), 2),
        "wer_original_audio": round(wer_cer(ref_hyps, texts).values.get("wer", float("nan")), 2),
        "judge": judge,
        "examples": [{"id": u.id, "ref": t, "hyp": h} for u, t, h in list(zip(utts, texts, hyps, strict=True))[:5]],
    }


def _model_wer(model: str | Path, paths: Sequence[Path], texts: Sequence[str]) -> dict[str, Any]:
    """WER of a tmt speech->text model's transcripts of the resynthesised wavs."""
    hyps, why = transcribe_with_model(model, paths)
    if hyps is None:
        return {"wer_model": f"unavailable: {why}"}
    return {"wer_model": round(wer_cer(hyps, list(texts)).values.get("wer", float("nan")), 2), "model": str(model)}
