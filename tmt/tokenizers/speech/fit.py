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


def _waveforms(items: Sequence[Any], card: SpeechCard, skip_bad: bool, sample: _FrameSample) -> list[np.ndarray]:
    """16 kHz waveforms of `items`; bad files raise, or with `skip_bad` are counted and left out."""
    wavs = []
    for it in items:
        try:
            wavs.append(as_waveform(it, silence_peak=card.silence_peak)[0])
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
        items = [audio[int(i)] for i in order[start : start + batch_size]]
        for f in tok.features_of_waveforms(_waveforms(items, card, skip_bad, sample)):
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
) -> SpeechTokenizer:
    """Train k-means on a seeded sample of `card.sample_size` frames of `audio` (paths or arrays)."""
    if card.clusters < 2:
        raise TokenizerError(f"clusters must be >= 2, got {card.clusters}")
    if not audio:
        raise TokenizerError("no audio to fit the speech tokenizer on (no rows with speech)")
    tok = SpeechTokenizer.from_card(card, trust_pickle=trust_pickle)
    rng = np.random.default_rng(card.seed)
    sample = _sample_frames(tok, card, audio, rng, skip_bad=skip_bad, progress=progress, batch_size=batch_size)
    x = np.concatenate(sample.feats) if sample.feats else np.zeros((0, tok.feature_dim), np.float32)
    if x.shape[0] > card.sample_size:
        x = x[np.sort(rng.choice(x.shape[0], card.sample_size, replace=False))]
    log.info("k-means: %d frames x %d dims -> %d clusters (%d bad files skipped)", *x.shape, card.clusters, sample.bad)
    centroids, inertia = kmeans_fit(x, card.clusters, niter=card.iterations, nredo=card.n_init, seed=card.seed)
    log.info("k-means inertia per frame: %.4f", inertia / max(1, x.shape[0]))
    out = SpeechTokenizer(card, centroids, hubert=tok.hubert, hubert_arch=tok.hubert_arch)
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


def iter_speech_paths(manifest: str | Path, split: str | None = None) -> Iterator[str]:
    """Absolute speech paths of a raw manifest's rows (one split or all)."""
    from tmt.store.manifest import media_path, read_manifest

    for r in read_manifest(manifest, split=split):
        if r.get("speech"):
            yield str(media_path(manifest, r["speech"]))
