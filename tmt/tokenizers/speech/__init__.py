"""Speech units: 50 Hz features (MFCC or HuBERT) + k-means, run-length deduplicated.

Pipeline for one utterance::

    path -> load_audio (16 kHz mono)                        # -> float32 [samples]
         -> features: mfcc | hubert layer L (chunked)       # -> float32 [frames, dim], 50 Hz
         -> faiss nearest centroid                          # -> int64 [frames] in 0..K-1
         -> run-length dedup                                # -> units [n], durations [n] (frames per unit)

A fitted tokenizer is a directory (see `tmt.tokenizers.base`)::

    tokenizer.json          kind/class/name/card/vocab_size/fingerprint + feature dim, frame rate, hubert arch
    centroids.safetensors   {"centroids": float32 [K, dim]}
    hubert.safetensors      HuBERT weights (torchaudio layout, only the layers used), features=hubert only

The package, bottom to top:

    card.py       SpeechCard (MFCC/HuBERT settings, k-means size), framing constants
    mfcc.py       Kaldi-style MFCC of many waveforms at once
    ssl.py        the fbank HuBERT (log-mel frames into HuBERT's encoder) that tmt pretrains itself
    hubert.py     HuBERT weights from torchaudio / fairseq / Hugging Face / tmt files; batched forward
    kmeans.py     faiss k-means, nearest-centroid assignment, km.bin centroids
    tokenizer.py  SpeechTokenizer: encode, fingerprint, save/load (no fitting)
    fit.py        fit_speech_tokenizer (k-means on sampled frames), import_km
    pretrain.py   HuBERT-style masked prediction of a teacher tokenizer's units (the next iteration's features)
"""

from __future__ import annotations

from tmt.tokenizers.speech.card import (
    CLASS_NAME,
    HOP,
    WINDOW,
    HubertConfig,
    MfccConfig,
    SpeechCard,
    card_from_dict,
    card_to_dict,
    load_speech_card,
)
from tmt.tokenizers.speech.fit import fit_speech_tokenizer, import_km, iter_speech_paths
from tmt.tokenizers.speech.hubert import (
    HUBERT_BASE_ARCH,
    convert_fairseq_state,
    detect_weights_format,
    hubert_forward,
    load_hubert,
)
from tmt.tokenizers.speech.kmeans import (
    kmeans_assign,
    kmeans_fit,
    kmeans_inertia,
    read_km_centroids,
)
from tmt.tokenizers.speech.mfcc import mfcc_batch, mfcc_features
from tmt.tokenizers.speech.tokenizer import SpeechTokenizer, expand_runs, run_length

__all__ = [
    "CLASS_NAME",
    "HOP",
    "HUBERT_BASE_ARCH",
    "WINDOW",
    "HubertConfig",
    "MfccConfig",
    "SpeechCard",
    "SpeechTokenizer",
    "card_from_dict",
    "card_to_dict",
    "convert_fairseq_state",
    "detect_weights_format",
    "expand_runs",
    "fit_speech_tokenizer",
    "hubert_forward",
    "import_km",
    "iter_speech_paths",
    "kmeans_assign",
    "kmeans_fit",
    "kmeans_inertia",
    "load_hubert",
    "load_speech_card",
    "mfcc_batch",
    "mfcc_features",
    "read_km_centroids",
    "run_length",
]
