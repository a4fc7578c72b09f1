"""The vocoder diagnostic ladder: one judge, one set of utterances, one table that says how much
of a speech WER comes from the vocoder itself, the units, and the durations.

    original recordings ───────────────────────────────────────────────▶ judge  (the ceiling)
    originals ──▶ WORLD analysis ──▶ coded features ──▶ WORLD synthesis ──▶ judge  (unit-world's ceiling)
    originals ──▶ log-mel ──▶ Griffin-Lim ─────────────────────────────▶ judge  (unit-mel's ceiling)
    ground-truth units + ground-truth durations ──▶ each vocoder ──────▶ judge
    ground-truth units + predicted durations ────▶ each vocoder ──────▶ judge  (as in translation)
    unit-world, ground-truth durations, one stream from the originals' WORLD analysis
        (pitch + voicing, or envelope + aperiodicity) ─────────────────▶ judge  (which stream fails)

Every rung reports WER and CER against the manifest texts, the WER as a multiple of the
originals' WER, log-mel L1 to the originals and the real-time factor of making its audio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tmt.core.audio import SAMPLE_RATE
from tmt.evaluation.metrics import wer_cer
from tmt.vocoder import (
    AudioCache,
    GriffinLimInverter,
    LogMel,
    MelConfig,
    UnitVocoder,
    Utterance,
    VocoderError,
    WorldConfig,
    collect_utterances,
    load_vocoder,
    mel_distance,
    preset,
    write_wav,
)

log = logging.getLogger(__name__)

Transcriber = Callable[[Sequence[np.ndarray]], list[str]]
"""16 kHz wavs -> one transcript each (the ASR judge, or a test double)."""


@dataclass
class Rung:
    """One line of the ladder: how its audio was made, the audio, and the wall seconds it took."""

    system: str
    """What made the audio (`original`, `world-copy`, `griffin-lim`, or a vocoder directory)."""
    durations: str
    """Where the durations came from: `-` (the recording's own), `ground truth` or `predicted`."""
    wavs: list[np.ndarray]
    """One 16 kHz float32 wav per utterance."""
    seconds: float
    """Wall seconds spent making `wavs` (0 for the originals)."""
    streams: str = "-"
    """unit-world: the predicted streams replaced by the originals' WORLD analysis (`-`: none)."""


def load_judge_transcriber() -> tuple[Transcriber, dict[str, Any]]:
    """The evaluation ASR judge, loaded once; a clear error when it is not installed."""
    from tmt.evaluation.asr import load_asr_judge

    judge, reason = load_asr_judge()
    if judge is None:
        raise VocoderError(f"the vocoder ladder needs the ASR judge: {reason}")
    return (lambda wavs: judge.transcribe([(w, SAMPLE_RATE) for w in wavs])), judge.describe()


def run_ladder(
    vocoders: Sequence[str | Path],
    store: str | Path,
    manifest: str | Path,
    *,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    transcriber: tuple[Transcriber, dict[str, Any]] | None = None,
    device: str = "cpu",
    settings: Sequence[str] = (),
) -> dict[str, Any]:
    """The ladder on the first `limit` rows of `store` (its texts and wavs from `manifest`).

    The WORLD copy synthesis codes the originals as the first given unit-world vocoder
    does (else as the `unit-world` preset); Griffin-Lim inverts the log-mels of the first
    given unit-mel vocoder (else of the `unit-mel` preset). With `out_dir`, each rung's
    wavs are kept in `out_dir/<rung>/<id>.wav`.
    """
    utts, info = collect_utterances(store, manifest)
    utts = utts[:limit] if limit else utts
    vocs = [(str(v), load_vocoder(v, device, expected_fingerprint=info["fingerprint"], settings=settings))
            for v in vocoders]
    transcribe, judge = transcriber if transcriber is not None else load_judge_transcriber()
    cache = AudioCache()
    originals = [cache.get(u) for u in utts]
    rungs = [Rung("original", "-", originals, 0.0)]
    analysed: dict[str, list[np.ndarray]] = {}  # WORLD analyses of the originals, once per analysis setting

    def analyses(cfg: WorldConfig) -> list[np.ndarray]:
        from tmt.vocoder.world import analyse, analysis_signature

        key = repr(sorted(analysis_signature(cfg).items()))
        if key not in analysed:
            analysed[key] = [analyse(w, u.num_frames, cfg) for w, u in zip(originals, utts, strict=True)]
        return analysed[key]

    copy_cfg = _world_cfg(vocs)
    rungs.append(_timed("world-copy", "-", lambda: world_copy(originals, utts, copy_cfg, analyses(copy_cfg))))
    mel_cfg, iters = _mel_cfg(vocs)
    rungs.append(_timed("griffin-lim", "-", lambda: griffin_lim_copy(originals, mel_cfg, iters)))
    voices = [u.voice for u in utts]  # each row in its own voice where the vocoder has voices
    for name, voc in vocs:
        rungs.append(_timed(name, "ground truth", lambda v=voc: v.synthesize([u.units for u in utts],  # type: ignore[misc]
                                                                                [u.durations for u in utts], voice=voices)))
        if voc.has_duration_predictor:
            rungs.append(_timed(name, "predicted",
                                lambda v=voc: v.synthesize([u.units for u in utts], voice=voices)))  # type: ignore[misc]
        if voc.arch == "unit-world":
            rungs += world_stream_rungs(name, voc, utts, originals, analyses(voc.cfg.world))
    texts = [u.text or "" for u in utts]
    logmel = LogMel(mel_cfg)
    table = [_score(r, texts, originals, transcribe, logmel) for r in rungs]
    base = table[0]["wer"]
    for row in table:
        row["wer_vs_original"] = round(row["wer"] / base, 3) if base > 0 else None
    if out_dir is not None:
        _write_rungs(Path(out_dir), rungs, utts)
    return {"store": str(store), "rows": len(utts), "judge": judge, "ladder": table}


def _timed(system: str, durations: str, make: Callable[[], list[np.ndarray]]) -> Rung:
    log.info("ladder: %s (%s durations)", system, durations)
    t0 = time.perf_counter()
    wavs = make()
    return Rung(system, durations, wavs, time.perf_counter() - t0)


WORLD_STREAMS = {"pitch+voicing": "lf0 vuv", "envelope+aperiodicity": "env ap"}
"""The ladder's stream swaps: rung label -> the streams taken from the originals' analysis."""


def world_stream_rungs(name: str, voc: UnitVocoder, utts: Sequence[Utterance], originals: Sequence[np.ndarray],
                       gts: Sequence[np.ndarray] | None = None) -> list[Rung]:
    """unit-world with ground-truth durations and one group of streams from the originals' WORLD analysis
    (`gts`, analysed here when not given): the rung that gets close to the WORLD copy names the stream
    the network has not learned."""
    from tmt.vocoder.world import LF0, VUV, analyse, feature_dim, features_to_wave

    cfg = voc.cfg.world
    pred = voc.world_features([u.units for u in utts], [u.durations for u in utts], [u.voice for u in utts])
    if gts is None:
        gts = [analyse(w, u.num_frames, cfg) for w, u in zip(originals, utts, strict=True)]
    env_end = 2 + cfg.envelope_dim
    cols = {"lf0": [LF0], "vuv": [VUV], "env": list(range(2, env_end)), "ap": list(range(env_end, feature_dim(cfg)))}
    rungs = []
    for label, streams in WORLD_STREAMS.items():
        take = [c for s in streams.split() for c in cols[s]]

        def make(take: list[int] = take) -> list[np.ndarray]:
            out = []
            for p, g, w in zip(pred, gts, originals, strict=True):
                f = p[: len(g)].copy()
                f[:, take] = g[: len(f)][:, take]
                out.append(features_to_wave(f, cfg)[: len(w)])
            return out

        rung = _timed(name, "ground truth", make)
        rung.streams = label
        rungs.append(rung)
    return rungs


def _world_cfg(vocs: Sequence[tuple[str, UnitVocoder]]) -> WorldConfig:
    return next((v.cfg.world for _, v in vocs if v.arch == "unit-world"), preset("unit-world").world)


def _mel_cfg(vocs: Sequence[tuple[str, UnitVocoder]]) -> tuple[MelConfig, int]:
    cfg = next((v.cfg for _, v in vocs if v.arch == "unit-mel"), preset("unit-mel"))
    return cfg.mel, cfg.unit_mel.griffin_lim_iters


def world_copy(wavs: Sequence[np.ndarray], utts: Sequence[Utterance], cfg: WorldConfig,
               feats: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """WORLD analysis (`feats`, analysed here when not given) -> coded features -> WORLD synthesis of
    each wav (the unit-world arch's ceiling)."""
    from tmt.vocoder.world import analyse, features_to_wave

    if feats is None:
        feats = [analyse(w, u.num_frames, cfg) for w, u in zip(wavs, utts, strict=True)]
    return [features_to_wave(f, cfg)[: len(w)] for f, w in zip(feats, wavs, strict=True)]


@torch.inference_mode()
def griffin_lim_copy(wavs: Sequence[np.ndarray], mel: MelConfig, n_iter: int) -> list[np.ndarray]:
    """Log-mel of each wav inverted with Griffin-Lim (the unit-mel arch's ceiling)."""
    logmel, inverter = LogMel(mel), GriffinLimInverter(mel, n_iter)
    out = []
    for w in wavs:
        y = inverter(logmel(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))[None]))[0].numpy()
        y = np.pad(y, (0, max(0, len(w) - len(y))))[: len(w)]
        out.append(np.clip(y, -1.0, 1.0).astype(np.float32))
    return out


def _score(rung: Rung, texts: Sequence[str], originals: Sequence[np.ndarray], transcribe: Transcriber,
           logmel: LogMel) -> dict[str, Any]:
    log.info("ladder: judging %s (%s durations)", rung.system, rung.durations)
    hyps = transcribe(rung.wavs)
    m = wer_cer(hyps, list(texts)).values
    audio_s = sum(len(w) for w in rung.wavs) / SAMPLE_RATE
    dists = [mel_distance(logmel, r, w) for r, w in zip(originals, rung.wavs, strict=True)]
    return {
        "system": rung.system,
        "durations": rung.durations,
        "streams_from_original": rung.streams,
        "wer": round(float(m.get("wer", float("nan"))), 2),
        "cer": round(float(m.get("cer", float("nan"))), 2),
        "rtf_x": round(audio_s / rung.seconds, 1) if rung.seconds > 0 else None,
        "mel_l1": round(float(np.nanmean(dists)), 4) if dists else None,
        "audio_seconds": round(audio_s, 2),
    }


def _rung_dir(i: int, rung: Rung) -> str:
    tail = {"-": "", "ground truth": "-gt-dur", "predicted": "-pred-dur"}[rung.durations]
    tail += "" if rung.streams == "-" else "-gt-" + rung.streams.replace("+", "-")
    name = Path(rung.system).name if i >= 3 else rung.system
    return f"{i:02d}-{name}{tail}"


def _write_rungs(out: Path, rungs: Sequence[Rung], utts: Sequence[Utterance]) -> None:
    for i, rung in enumerate(rungs):
        for u, w in zip(utts, rung.wavs, strict=True):
            write_wav(out / _rung_dir(i, rung) / f"{u.id}.wav", w)


LADDER_HEADER = ["system", "durations", "from the original", "WER", "CER", "x original WER", "RTF (x real time)",
                 "mel L1"]


def ladder_rows(result: dict[str, Any]) -> list[list[Any]]:
    """The ladder as table rows under `LADDER_HEADER`."""
    return [[r["system"], r["durations"], r.get("streams_from_original", "-"), r["wer"], r["cer"],
             r["wer_vs_original"] if r["wer_vs_original"] is not None else "-",
             r["rtf_x"] if r["rtf_x"] is not None else "-", r["mel_l1"]] for r in result["ladder"]]
