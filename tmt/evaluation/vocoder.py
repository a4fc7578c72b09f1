"""Judge a unit vocoder: resynthesise a held-out store's units, then measure intelligibility
(WER of the evaluation ASR judge against the manifest texts, the judge's WER on the original
recordings beside it as the ceiling) and closeness to the recordings (log-mel L1).

    store units (+ durations) ──▶ vocoder ──▶ wavs ──▶ ASR judge ──▶ WER / CER
                                                  └──▶ log-mel L1 to the original wavs
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt.core.audio import SAMPLE_RATE
from tmt.evaluation.metrics import MetricResult, mean_over_runs, wer_cer
from tmt.vocoder import (
    AudioCache,
    LogMel,
    UnitVocoder,
    Utterance,
    VocoderConfig,
    VocoderError,
    collect_utterances,
    load_vocoder,
    mel_distance,
    write_wav,
)
from tmt.vocoder.config import with_synthesis_settings


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
    realisations: int = 1,
) -> dict[str, Any]:
    """Resynthesise a held-out store's units; WER against the manifest texts and mel distance to the wavs
    (`settings`: synthesis-only `KEY=VALUE` overrides of the vocoder, as `load_vocoder` takes them).

    WER comes from the evaluation ASR judge when installed, else from `model`
    (a tmt speech->text model) when given; otherwise it is reported as
    unavailable, with the reason, never estimated. The ASR judge's WER on the
    original recordings is reported beside it as the ceiling, and for both the median utterance's WER
    (`wer_median`) and the count of utterances over 100% (`over_100`: the judge inserting more words than
    the reference has, which Whisper does on unclear audio, "thank you for watching ... bye bye bye").

    `realisations` > 1 (unit-world only): the judge hears the same predicted features with that many
    noise realisations (WORLD's own sequence, then `world.noise_seed` 1, 2, ...); `REALISATION_KEYS`
    are their means, each is listed under `realisations`, and its wavs go to
    `out_dir/noise-<name>`. One realisation moves the judge's WER by about 3 points on 100 rows
    (docs/results.md, session 13), so vocoders are compared over several.
    """
    utts, info = collect_utterances(store, manifest)
    utts = utts[:limit] if limit else utts
    voc = load_vocoder(vocoder_dir, expected_fingerprint=info["fingerprint"], settings=settings)
    names = each_realisation(voc, realisations)  # refusals before any synthesis
    voices = [u.voice for u in utts]
    # durations once: every realisation voices the same frames
    durations = ([u.durations for u in utts] if gt_durations
                 else voc.predict_durations([u.units for u in utts], voice=voices))
    cache = AudioCache()
    refs_audio = [cache.get(u) for u in utts]
    logmel = LogMel(voc.cfg.mel)
    with tempfile.TemporaryDirectory(prefix="tmt-vocoder-eval-") as tmp:
        wav_root = Path(out_dir) if out_dir is not None else Path(tmp)
        runs, heard = [], []
        for k, name in enumerate(names):
            heard.append(name)
            wavs, res = _resynthesise(voc, utts, durations, voices)
            res = {"durations": "ground truth" if gt_durations else "predicted"} | res
            dists = [mel_distance(logmel, r, w) for r, w in zip(refs_audio, wavs, strict=True)]
            res["mel_l1"] = round(float(np.nanmean(dists)), 4)
            wav_dir = wav_root if realisations == 1 else wav_root / f"noise-{name}"
            # the originals are judged once, with the first realisation
            res |= _transcription_scores(utts, wavs, refs_audio if k == 0 else None, model, wav_dir)
            runs.append(res)
    head = {"vocoder": str(vocoder_dir), "arch": voc.arch, "rows": len(utts)}
    if len(runs) == 1:
        return head | runs[0]
    return head | _mean_of_realisations(heard, runs)


def noise_variants(voc: UnitVocoder, realisations: int) -> list[tuple[str, VocoderConfig]]:
    """The synthesis configs of `realisations` noise realisations, named ("world", "seed-1", ...); refused
    where there is no noise to vary (a deterministic arch) or the vocoder's noise is already fixed."""
    if realisations < 1:
        raise VocoderError(f"realisations must be >= 1, got {realisations}")
    if realisations == 1:
        return [("world", voc.cfg)]
    if voc.arch != "unit-world":
        raise VocoderError(f"several noise realisations need a unit-world vocoder; this one is {voc.arch}, "
                           "whose synthesis draws no noise (use one realisation)")
    if voc.cfg.world.noise_seed is not None:
        raise VocoderError("give either --set world.noise_seed=N (one realisation) or several realisations, not both")
    # with world.synthesizer=pyworld the seeded configs are refused by the config check itself
    seeded = [(f"seed-{n}", with_synthesis_settings(voc.cfg, [f"world.noise_seed={n}"]))
              for n in range(1, realisations)]
    return [("world", voc.cfg), *seeded]


def each_realisation(voc: UnitVocoder, realisations: int) -> Iterator[str]:
    """Set `voc`'s synthesis config to each of `noise_variants` in turn, yielding its name, and give the
    vocoder its own config back at the end. The refusals of `noise_variants` come at the call, before
    any synthesis."""
    variants = noise_variants(voc, realisations)

    def switch() -> Iterator[str]:
        own = voc.cfg
        try:
            for name, cfg in variants:
                voc.cfg = cfg
                yield name
        finally:
            voc.cfg = own

    return switch()


REALISATION_KEYS = ("wer", "cer", "wer_median", "over_100", "mel_l1")
"""What each noise realisation reports (and the result averages over them)."""


def _mean_of_realisations(names: Sequence[str], runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from several realisations' results: the first's fields, the means of `REALISATION_KEYS`
    (a WER that is unavailable stays unavailable), and each realisation's numbers."""
    out = dict(runs[0])
    out |= mean_over_runs(runs, [k for k in REALISATION_KEYS if k != "mel_l1"])
    out |= mean_over_runs(runs, ("mel_l1",), digits=4)
    out["rtf_x"] = round(float(np.mean([r["rtf_x"] for r in runs])), 2)
    out["realisations"] = [{"noise": n} | {k: r[k] for k in REALISATION_KEYS if k in r}
                           for n, r in zip(names, runs, strict=True)]
    return out


def _resynthesise(voc: UnitVocoder, utts: Sequence[Utterance], durations: Sequence[np.ndarray],
                  voices: Sequence[str | None]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The wavs of the utterances' units with these durations, with the audio length and synthesis speed."""
    t0 = time.perf_counter()
    wavs = voc.synthesize([u.units for u in utts], durations, voice=list(voices))
    synth_s = time.perf_counter() - t0
    audio_s = sum(len(w) for w in wavs) / SAMPLE_RATE
    return wavs, {"audio_seconds": round(audio_s, 2), "rtf_x": round(audio_s / max(synth_s, 1e-9), 2)}


def _transcription_scores(
    utts: Sequence[Utterance], wavs: Sequence[np.ndarray], refs_audio: Sequence[np.ndarray] | None,
    model: str | Path | None, wav_dir: Path,
) -> dict[str, Any]:
    """Write the wavs to `wav_dir`; WER/CER from the ASR judge, else (with `model`) from a tmt model;
    the judge's WER on `refs_audio` too when given."""
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
    res = {"wer": round(m.values.get("wer", float("nan")), 2), "cer": round(m.values.get("cer", float("nan")), 2)}
    res |= _utterance_stats(m, "")
    if refs_audio is not None:
        ref_hyps, _ = transcribe_with_judge(refs_audio)
        assert ref_hyps is not None
        mo = wer_cer(ref_hyps, texts)
        res["wer_original_audio"] = round(mo.values.get("wer", float("nan")), 2)
        res |= _utterance_stats(mo, "_original_audio")
    return res | {
        "judge": judge,
        "examples": [{"id": u.id, "ref": t, "hyp": h} for u, t, h in list(zip(utts, texts, hyps, strict=True))[:5]],
    }


def _utterance_stats(m: MetricResult, suffix: str) -> dict[str, Any]:
    """The median utterance's WER and the utterances over 100% (`tmt.evaluation.metrics.utterance_wers`)."""
    u = m.extra.get("utterances")
    if not u:
        return {}
    return {f"wer_median{suffix}": round(u["median_wer"], 2), f"over_100{suffix}": u["over_100"]}


def _model_wer(model: str | Path, paths: Sequence[Path], texts: Sequence[str]) -> dict[str, Any]:
    """WER of a tmt speech->text model's transcripts of the resynthesised wavs."""
    hyps, why = transcribe_with_model(model, paths)
    if hyps is None:
        return {"wer_model": f"unavailable: {why}"}
    return {"wer_model": round(wer_cer(hyps, list(texts)).values.get("wer", float("nan")), 2), "model": str(model)}
