"""The fbank HuBERT: HuBERT's transformer encoder reading 80-dim log-mel frames at 50 Hz instead of
raw waveforms through its seven-layer convolutional front end.

Models pretrained by `tmt tokenize speech pretrain` use it. The front end is the one part of
HuBERT-Base that does not fit a CPU budget: at a small encoder (d 256, 4 layers) the waveform
convolutions cost about nine times the transformer per second of audio (4.5 s against 0.46 s a
step of 48 s of audio, two threads), while log-mel frames are what speech models such as
w2v-BERT read anyway. The encoder, the layer-L feature path and the weights' naming are
torchaudio's (`Wav2Vec2Model`), so a fitted tokenizer stores and loads it like any HuBERT.

Its architecture travels with the weights: `model.safetensors` carries it as JSON in the
`tmt_arch` metadata entry (a state dict alone cannot tell a log-mel front end from a conv one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.speech.mfcc import log_mel_batch

FBANK_MODE = "fbank"
"""`extractor_mode` of an fbank HuBERT's architecture."""
ARCH_METADATA = "tmt_arch"
"""safetensors metadata key holding the architecture as JSON."""

FBANK_ARCH: dict[str, Any] = {
    "extractor_mode": FBANK_MODE,
    "fbank_bins": 80,
    "extractor_conv_layer_config": [],
    "extractor_conv_bias": False,
    "encoder_embed_dim": 256,
    "encoder_projection_dropout": 0.0,
    "encoder_pos_conv_kernel": 128,
    "encoder_pos_conv_groups": 16,
    "encoder_num_layers": 4,
    "encoder_num_heads": 4,
    "encoder_attention_dropout": 0.0,
    "encoder_ff_interm_features": 1024,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.0,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.0,
}
"""Defaults of an fbank HuBERT's architecture (`--set` keys of the pretraining config map onto them)."""


class FbankFrontEnd(torch.nn.Module):
    """Waveforms -> per-utterance normalised log-mel frames (the feature extractor of an fbank
    HuBERT; no parameters). Pretraining feeds precomputed frames to the encoder directly."""

    def __init__(self, num_mel_bins: int) -> None:
        super().__init__()
        self.num_mel_bins = int(num_mel_bins)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        wavs = [x[i, : int(lengths[i])] if lengths is not None else x[i] for i in range(x.shape[0])]
        feats = log_mel_batch([w.detach().float().cpu().numpy() for w in wavs], self.num_mel_bins)
        return pad_frames(feats, x.device), (None if lengths is None else
                                             torch.tensor([len(f) for f in feats], device=x.device))


def pad_frames(feats: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """[frames_i, bins] arrays -> one zero-padded float32 tensor [batch, max frames, bins]."""
    return torch.nn.utils.rnn.pad_sequence([torch.from_numpy(np.ascontiguousarray(f)) for f in feats],
                                           batch_first=True).to(device)


def fbank_arch(**overrides: Any) -> dict[str, Any]:
    """`FBANK_ARCH` with `overrides`; unknown keys are refused (they would be silently ignored)."""
    unknown = sorted(set(overrides) - set(FBANK_ARCH))
    if unknown:
        raise TokenizerError(f"unknown fbank HuBERT architecture keys {unknown}; known: {sorted(FBANK_ARCH)}")
    return dict(FBANK_ARCH) | overrides


def build_fbank_model(arch: dict[str, Any]) -> Any:
    """The torchaudio `Wav2Vec2Model` of an fbank architecture: FbankFrontEnd + the HuBERT encoder."""
    from torchaudio.models import Wav2Vec2Model
    from torchaudio.models.wav2vec2 import components

    a = fbank_arch(**{k: v for k, v in arch.items() if k in FBANK_ARCH})
    encoder = components._get_encoder(
        in_features=int(a["fbank_bins"]), embed_dim=int(a["encoder_embed_dim"]),
        dropout_input=float(a["encoder_projection_dropout"]), pos_conv_kernel=int(a["encoder_pos_conv_kernel"]),
        pos_conv_groups=int(a["encoder_pos_conv_groups"]), num_layers=int(a["encoder_num_layers"]),
        num_heads=int(a["encoder_num_heads"]), attention_dropout=float(a["encoder_attention_dropout"]),
        ff_interm_features=int(a["encoder_ff_interm_features"]), ff_interm_dropout=float(a["encoder_ff_interm_dropout"]),
        dropout=float(a["encoder_dropout"]), layer_norm_first=bool(a["encoder_layer_norm_first"]),
        layer_drop=float(a["encoder_layer_drop"]),
    )
    return Wav2Vec2Model(FbankFrontEnd(int(a["fbank_bins"])), encoder, None)
