"""Fitting the speech tokenizer: k-means on a seeded sample of feature frames, or centroids imported
from fairseq's `km.bin`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tmt.config import merge
from tmt.core.audio import AudioError, as_waveform
from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.speech.card import SpeechCard
from tmt.tokenizers.speech.kmeans import kmeans_fit, read_km_centroids
from tmt.tokenizers.speech.speaker_norm import SpeakerStats
from tmt.tokenizers.speech.tokenizer import SpeechTokenizer

log = logging.getLogger(__name__)


@dataclass
class _FrameSample:
    """Feature frames kept while scanning the corpus, and the counts behind them."""

    feats: list[np.ndarray] = field(default_factory=list)
    """Kept frames, one [frames, dim] array per file."""
    kept: int = 0
    """Frames kept so far."""
    seen_frames: int = 0
    """Frames computed so far."""
    seen_files: int = 0
    """Files whose features were computed."""
    bad: int = 0
    """Files skipped as unreadable or silent (skip_bad)."""
    keep: float = 1.0
    """Fraction of each file's frames kept, estimated from the first batch."""
    files: list[int] = field(default_factory=list)
    """Index into the audio list of each array in `feats`."""


def _waveforms(
    items: Sequence[Any], idx: Sequence[int], card: SpeechCard, skip_bad: bool, sample: _FrameSample
) -> list[np.ndarray]:
    """16 kHz waveforms of `items`; bad files raise, or with `skip_bad` are counted and left out
    (`sample.files` gets the audio index of each one kept)."""
    wavs = []
    for it, i in zip(items, idx, strict=True):
        try:
            wavs.append(as_waveform(it, silence_peak=card.silence_peak)[0])
            sample.files.append(int(i))
        except AudioError as e:
            if not skip_bad:
                raise
            sample.bad += 1
            log.warning("skipping %s", e)
    return wavs


def _sample_frames(
    tok: SpeechTokenizer,
    card: SpeechCard,
    audio: Sequence[Any],
    rng: np.random.Generator,
    *,
    skip_bad: bool,
    progress: bool,
    batch_size: int,
) -> _FrameSample:
    """Sample frames while extracting: each file contributes a random fraction `keep` of its
    frames (1 for small corpora, down to 1/4 for large ones), so the sample is spread over
    many files while memory stays ~sample_size frames and at most ~4x that is computed."""
    from tqdm import tqdm

    order = rng.permutation(len(audio))
    sample = _FrameSample()
    bar = tqdm(total=len(order), desc="features", unit="file", disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = [int(i) for i in order[start : start + batch_size]]
        items = [audio[i] for i in idx]
        for f in tok.features_of_waveforms(_waveforms(items, idx, card, skip_bad, sample)):
            sample.seen_frames += len(f)
            sample.seen_files += 1
            if start == 0:  # estimate the corpus size from the first batch
                expected = sample.seen_frames / sample.seen_files * len(order)
                sample.keep = float(np.clip(card.sample_size / max(1.0, expected), 0.25, 1.0))
            if sample.keep < 1.0:
                f = f[rng.random(len(f)) < sample.keep]
            sample.feats.append(f)
            sample.kept += len(f)
        bar.update(len(items))
        if sample.kept >= card.sample_size:
            break
    bar.close()
    return sample


def fit_speech_tokenizer(
    card: SpeechCard,
    audio: Sequence[Any],
    *,
    trust_pickle: bool = False,
    skip_bad: bool = False,
    progress: bool = False,
    batch_size: int = 16,
    voices: Sequence[str | None] | None = None,
) -> SpeechTokenizer:
    """Train k-means on a seeded sample of `card.sample_size` frames of `audio` (paths or arrays).
    A `speaker_norm` card needs `voices` (each audio's speaker) for its per-speaker statistics."""
    if card.speaker_norm and (voices is None or len(voices) != len(audio)):
        raise TokenizerError(
            "the card asks for speaker_norm: give the speaker of every audio file (the manifest's `voice`, "
            "`tts` or `speaker` field)"
        )
    if card.clusters < 2:
        raise TokenizerError(f"clusters must be >= 2, got {card.clusters}")
    if not audio:
        raise TokenizerError("no audio to fit the speech tokenizer on (no rows with speech)")
    tok = SpeechTokenizer.from_card(card, trust_pickle=trust_pickle)
    rng = np.random.default_rng(card.seed)
    sample = _sample_frames(tok, card, audio, rng, skip_bad=skip_bad, progress=progress, batch_size=batch_size)
    stats = None
    if card.speaker_norm:
        assert voices is not None
        stats = SpeakerStats.fit(sample.feats, [voices[i] for i in sample.files])
        sample.feats = [stats.normalize(f, voices[i]) for f, i in zip(sample.feats, sample.files, strict=True)]
        log.info("speaker normalisation: statistics of %d speakers", len(stats.names))
    x = np.concatenate(sample.feats) if sample.feats else np.zeros((0, tok.feature_dim), np.float32)
    if x.shape[0] > card.sample_size:
        x = x[np.sort(rng.choice(x.shape[0], card.sample_size, replace=False))]
    log.info("k-means: %d frames x %d dims -> %d clusters (%d bad files skipped)", *x.shape, card.clusters, sample.bad)
    centroids, inertia = kmeans_fit(x, card.clusters, niter=card.iterations, nredo=card.n_init, seed=card.seed)
    log.info("k-means inertia per frame: %.4f", inertia / max(1, x.shape[0]))
    out = SpeechTokenizer(card, centroids, hubert=tok.hubert, hubert_arch=tok.hubert_arch, speaker_stats=stats)
    out.fit_stats = {"frames": int(x.shape[0]), "frames_seen": sample.seen_frames, "files_seen": sample.seen_files,
                     "inertia": inertia, "bad_files": sample.bad}
    return out


def import_km(
    km_path: str | Path, card: SpeechCard, *, trust_pickle: bool = False, trust_pickle_weights: bool = False
) -> SpeechTokenizer:
    """Build a tokenizer from fairseq's `km.bin` (a joblib-pickled scikit-learn MiniBatchKMeans).

    Unpickling can run arbitrary code, so this refuses unless `trust_pickle` is set; the
    centroids are then kept in safetensors and the pickle is never needed again.
    """
    centers = read_km_centroids(km_path, trust_pickle=trust_pickle)
    card = merge(card, {"clusters": int(centers.shape[0])})
    return SpeechTokenizer.from_card(card, centers, trust_pickle=trust_pickle_weights)


def speech_voices(manifest: str | Path, paths: Sequence[str]) -> list[str | None]:
    """The speaker (voice) of each speech path of a raw manifest (None where a row names none)."""
    from tmt.store.manifest import media_path, read_manifest
    from tmt.vocab import row_voice

    by_path = {str(media_path(manifest, r["speech"])): row_voice(r) for r in read_manifest(manifest) if r.get("speech")}
    return [by_path.get(p) for p in paths]


def iter_speech_paths(manifest: str | Path, split: str | None = None) -> Iterator[str]:
    """Absolute speech paths of a raw manifest's rows (one split or all)."""
    from tmt.store.manifest import media_path, read_manifest

    for r in read_manifest(manifest, split=split):
        if r.get("speech"):
            yield str(media_path(manifest, r["speech"]))
