"""The speech tokenizer's card (`tokenizers/speech-*.yaml`, class `speech-kmeans`) and its framing constants."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tmt.config import ConfigError, from_dict, merge, to_dict
from tmt.core.audio import FRAME_HOP, SILENCE_PEAK
from tmt.tokenizers.base import TokenizerError, load_card

CLASS_NAME = "speech-kmeans"
HOP = FRAME_HOP
"""Samples per frame hop (320)."""
WINDOW = 400
"""Samples per analysis window (25 ms); HuBERT's receptive field is the same."""


@dataclass(kw_only=True)
class MfccConfig:
    """Kaldi-style MFCC at 50 Hz (torchaudio.compliance.kaldi, as fairseq's dump_mfcc_feature)."""

    num_ceps: int = 13
    """Cepstral coefficients per frame."""
    num_mel_bins: int = 23
    """Mel filterbank channels."""
    deltas: int = 2
    """Delta orders appended (2: MFCC + deltas + delta-deltas = 39 dims for 13 ceps)."""
    cmvn: bool = True
    """Per-utterance mean/variance normalisation of every dimension."""


@dataclass(kw_only=True)
class HubertConfig:
    """A HuBERT(-Base) feature extractor loaded from local weights."""

    weights: str | None = None
    """Path to the weights: torchaudio state dict (.pt/.pth/.safetensors), fairseq checkpoint
    (hubert_base_ls960.pt) or Hugging Face HubertModel directory. Needed to fit; the fitted
    tokenizer keeps its own converted copy."""
    weights_format: Literal["auto", "torchaudio", "fairseq", "hf"] = "auto"
    """Format of `weights`; auto detects it."""
    layer: int = 6
    """Transformer layer (1-based) whose output is the feature (fairseq's output_layer)."""
    arch: dict[str, Any] = field(default_factory=dict)
    """Overrides of torchaudio `wav2vec2_model` arguments (e.g. encoder_num_heads) where the
    weights do not say them; a torchaudio state dict only tells shapes."""
    normalize_waveform: bool = False
    """Layer-normalise each waveform chunk first (True for HuBERT-Large; False for Base)."""
    max_chunk_s: float = 30.0
    """Longer audio is cut into chunks of this many seconds whose features are concatenated."""


@dataclass(kw_only=True)
class SpeechCard:
    """A speech tokenizer card (`tokenizers/speech-*.yaml`, class `speech-kmeans`)."""

    name: str = "speech-kmeans"
    """Tokenizer name recorded in stores and vocabularies."""
    description: str = ""
    """Free text."""
    features: Literal["mfcc", "hubert"] = "mfcc"
    """Feature extractor: `mfcc` (no weights) or `hubert` (needs hubert.weights)."""
    mfcc: MfccConfig = field(default_factory=MfccConfig)
    """MFCC settings (features: mfcc)."""
    hubert: HubertConfig = field(default_factory=HubertConfig)
    """HuBERT settings (features: hubert)."""
    clusters: int = 200
    """k-means clusters = number of speech units (the speech vocabulary size)."""
    sample_size: int = 200_000
    """Feature frames sampled (uniformly, seeded) to train k-means."""
    iterations: int = 50
    """k-means iterations (faiss niter)."""
    n_init: int = 1
    """k-means restarts keeping the best (faiss nredo)."""
    seed: int = 0
    """Seed for frame sampling and k-means initialisation."""
    dedup: bool = True
    """Merge consecutive duplicate units, keeping the run lengths (False: frame-level units)."""
    speaker_norm: bool = False
    """Normalise features with each speaker's (voice's) mean/variance before k-means, fitted over its
    utterances and kept with the tokenizer; encoding reads a row's `voice`/`tts`/`speaker` field, and
    an unknown speaker (or a plain file) is normalised with its own utterance's statistics. Use it
    with `mfcc.cmvn: false`: per-utterance CMVN already centres every utterance, which leaves the
    per-speaker statistics nothing to change."""
    silence_peak: float = SILENCE_PEAK
    """Audio whose peak |amplitude| is below this is refused as silent."""
    max_batch_seconds: float = 120.0
    """Upper bound on padded audio seconds per HuBERT forward pass (memory)."""


def card_from_dict(card: dict[str, Any], where: str = "card") -> SpeechCard:
    data = {k: v for k, v in card.items() if k != "class"}
    if card.get("class", CLASS_NAME) != CLASS_NAME:
        raise TokenizerError(f"{where}: class is '{card.get('class')}', expected '{CLASS_NAME}'")
    try:
        return from_dict(SpeechCard, data)
    except ConfigError as e:
        raise TokenizerError(f"{where}: {e}") from None


def card_to_dict(card: SpeechCard) -> dict[str, Any]:
    d: dict[str, Any] = {"class": CLASS_NAME}
    d.update(to_dict(card))
    return d


def load_speech_card(path: str | Path, overrides: dict[str, Any] | None = None) -> SpeechCard:
    """Read a card YAML, apply nested overrides (e.g. from --set) and validate it."""
    raw = load_card(path)
    card = card_from_dict(raw, str(path))
    if overrides:
        try:
            card = merge(card, overrides)
        except ConfigError as e:
            raise TokenizerError(f"{path}: {e}") from None
    return card


def _fingerprint_card(card: SpeechCard) -> dict[str, Any]:
    """The card as hashed: where the weights were read from does not matter, their bytes do."""
    d = card_to_dict(card)
    d["hubert"] = {k: v for k, v in d["hubert"].items() if k not in ("weights", "weights_format")}
    if card.features != "hubert":
        d.pop("hubert")
    else:
        d.pop("mfcc")
    for k in ("description", "max_batch_seconds"):
        d.pop(k, None)
    if not card.speaker_norm:
        d.pop("speaker_norm", None)  # tokenizers fitted before the option keep their fingerprints
    return d

