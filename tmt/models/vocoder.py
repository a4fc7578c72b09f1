"""Unit vocoders: deduplicated speech units -> 16 kHz waveforms (DESIGN section 9).

Two architectures share the unit embedding and the duration predictor:

* ``hifigan`` - the unit HiFi-GAN ("CodeHiFiGAN") of fairseq / speech-resynthesis:
  HiFi-GAN generator upsampling 50 Hz unit frames by 320 to samples, trained with
  multi-period and multi-scale discriminators. Presets ``paper`` and ``demo``.
* ``unit-mel`` - a fast CPU alternative: a small conv/Transformer network
  regressing 80-bin log-mel frames (L1), turned into a waveform by Griffin-Lim.

A vocoder directory holds ``vocoder.json`` (arch, config, unit vocabulary size,
the fingerprint of the speech tokenizer whose units it was trained on) and
``model.safetensors`` (inference weights, weight norm folded). Load it with
`load_vocoder`; `UnitVocoder.synthesize` is batched (padding + masks) and
predicts durations when none are given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from tmt import TmtError
from tmt.config import from_dict, to_dict
from tmt.core.audio import FRAME_HOP, SAMPLE_RATE
from tmt.core.io import load_torch_weights, make_dirs, read_json_object
from tmt.io import atomic_open, atomic_write_json
from tmt.models.vocoder_nets import (
    DURATION_ROUNDINGS,
    CodeHiFiGAN,
    UnitMel,
    durations_from_log,
    expand_units,
    sequence_mask,
)

log = logging.getLogger(__name__)

VOCODER_FORMAT = "tmt-unit-vocoder"
VOCODER_VERSION = 1
WEIGHTS_FILE = "model.safetensors"


class VocoderError(TmtError):
    """A vocoder directory, checkpoint or input is invalid."""


# ---------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class DurationConfig:
    """The duration predictor (two conv blocks and a linear head on log(1 + d))."""

    hidden_dim: int = 128
    """Channels of the two conv1d layers."""
    kernel_size: int = 3
    """Kernel size of the two conv1d layers."""
    dropout: float = 0.5
    """Dropout after each LayerNorm."""


@dataclass(kw_only=True)
class GeneratorConfig:
    """HiFi-GAN generator; the upsample rates must multiply to 320 (50 Hz -> 16 kHz)."""

    upsample_initial_channel: int = 512
    """Channels after conv_pre; halved by every upsampling layer."""
    upsample_rates: list[int] = field(default_factory=lambda: [5, 4, 4, 2, 2])
    """Stride of each transposed convolution."""
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [11, 8, 8, 4, 4])
    """Kernel of each transposed convolution."""
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    """Kernels of the parallel residual blocks (multi-receptive-field fusion)."""
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    """Dilations of each residual block."""


@dataclass(kw_only=True)
class DiscriminatorConfig:
    """Multi-period and multi-scale discriminators (hifigan arch only)."""

    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    """Periods of the multi-period discriminator."""
    num_scales: int = 3
    """Number of multi-scale discriminators (raw, /2, /4 average-pooled)."""
    channel_scale: float = 1.0
    """Width multiplier of every discriminator (1.0 = HiFi-GAN; smaller for CPU)."""


@dataclass(kw_only=True)
class UnitMelConfig:
    """The fast unit -> log-mel regressor (unit-mel arch only)."""

    hidden_dim: int = 192
    """Model width."""
    conv_layers: int = 3
    """Residual conv blocks before the Transformer."""
    conv_kernel: int = 5
    """Kernel of the conv blocks."""
    transformer_layers: int = 2
    """Pre-LN Transformer encoder layers (0 = conv only)."""
    heads: int = 2
    """Attention heads."""
    dropout: float = 0.1
    """Dropout in conv blocks and Transformer."""
    griffin_lim_iters: int = 64
    """Griffin-Lim iterations at synthesis (64 gave 7 points lower ASR WER than 32 on scenes, at half the speed)."""


@dataclass(kw_only=True)
class MelConfig:
    """Log-mel features: the unit-mel target, the HiFi-GAN mel loss, plots and mel distance."""

    n_fft: int = 1024
    """FFT size."""
    win_length: int = 1024
    """Window length in samples."""
    hop_length: int = 160
    """Hop in samples; must divide 320 (unit-mel predicts 320 / hop frames per unit frame)."""
    n_mels: int = 80
    """Mel bins."""
    f_min: float = 0.0
    """Lowest mel frequency (Hz)."""
    f_max: float = 8000.0
    """Highest mel frequency (Hz)."""


@dataclass(kw_only=True)
class LossConfig:
    """Loss weights."""

    mel_weight: float = 45.0
    """Weight of the mel L1 loss (HiFi-GAN uses 45; unit-mel uses its L1 with weight 1)."""
    feature_weight: float = 1.0
    """Weight of the feature-matching loss (which already carries HiFi-GAN's factor 2)."""
    adversarial_weight: float = 1.0
    """Weight of the least-squares generator loss."""
    duration_weight: float = 1.0
    """Weight of the duration MSE on log(1 + d)."""
    adversarial_start_step: int = 0
    """Train the generator on mel (+duration) loss alone before this step, no discriminators (CPU budgets)."""


@dataclass(kw_only=True)
class TrainConfig:
    """The vocoder training loop."""

    batch_size: int = 16
    """Segments per step."""
    segment_frames: int = 28
    """Frames (20 ms) per random training segment (28 = 8960 samples, as speech-resynthesis)."""
    lr: float = 2e-4
    """AdamW learning rate (generator and discriminators)."""
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lr_decay: float = 0.999
    """Exponential learning-rate decay applied every `decay_every` steps."""
    decay_every: int = 200
    """Steps between learning-rate decays."""
    grad_clip: float = 1000.0
    """Gradient-norm clip."""
    max_steps: int = 400_000
    """Stop after this many steps."""
    max_minutes: float | None = None
    """Stop (after saving) once training has run this long; None = no time limit."""
    log_every: int = 50
    """Steps between log lines (train_log.jsonl)."""
    save_every: int = 1000
    """Steps between checkpoints (and vocoder exports)."""
    sample_every: int = 1000
    """Steps between sample wavs, mel plots and validation mel distance."""
    num_samples: int = 3
    """Validation utterances synthesised at each sample step."""
    valid_rows: int = 8
    """Rows held out from the training store for validation when no --valid-store is given."""
    seed: int = 1234
    """Random seed."""
    threads: int = 0
    """torch threads (0 = leave torch's default)."""


Arch = Literal["hifigan", "unit-mel"]


@dataclass(kw_only=True)
class VocoderConfig:
    """A unit vocoder: architecture, features, losses and training."""

    arch: Arch = "hifigan"
    """`hifigan` (unit HiFi-GAN) or `unit-mel` (log-mel regressor + Griffin-Lim)."""
    num_units: int = 200
    """Speech units (the speech tokenizer's vocabulary size; set from the store when training)."""
    embed_dim: int = 128
    """Unit embedding size."""
    duration: DurationConfig = field(default_factory=DurationConfig)
    """Duration predictor."""
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    """HiFi-GAN generator (hifigan)."""
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    """Discriminators (hifigan)."""
    unit_mel: UnitMelConfig = field(default_factory=UnitMelConfig)
    """Unit-to-mel network (unit-mel)."""
    mel: MelConfig = field(default_factory=MelConfig)
    """Log-mel features."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Loss weights."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training loop."""


def paper_config() -> VocoderConfig:
    """The published unit HiFi-GAN (V1 generator, full discriminators)."""
    return VocoderConfig()


def demo_config() -> VocoderConfig:
    """A unit HiFi-GAN small enough to train on 2 CPU cores in 20-30 minutes."""
    return VocoderConfig(
        embed_dim=128,
        duration=DurationConfig(hidden_dim=128, dropout=0.3),
        generator=GeneratorConfig(
            upsample_initial_channel=128,
            upsample_rates=[5, 4, 4, 2, 2],
            upsample_kernel_sizes=[11, 8, 8, 4, 4],
            resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
        ),
        discriminator=DiscriminatorConfig(periods=[2, 3, 5, 7, 11], num_scales=2, channel_scale=0.125),
        loss=LossConfig(adversarial_start_step=1500),
        train=TrainConfig(
            batch_size=8, segment_frames=24, lr=1e-3, lr_decay=0.99, decay_every=100, max_steps=20_000,
            max_minutes=25.0, log_every=25, save_every=250, sample_every=500,
        ),
    )


def unit_mel_config() -> VocoderConfig:
    """The fast unit -> log-mel regressor with Griffin-Lim; trains in minutes on a CPU."""
    return VocoderConfig(
        arch="unit-mel",
        embed_dim=128,
        duration=DurationConfig(hidden_dim=128, dropout=0.3),
        unit_mel=UnitMelConfig(hidden_dim=192, conv_layers=3, transformer_layers=2, heads=2),
        loss=LossConfig(mel_weight=1.0),
        train=TrainConfig(
            batch_size=16, segment_frames=100, lr=1e-3, betas=[0.9, 0.98], weight_decay=0.01, lr_decay=0.98,
            decay_every=100, max_steps=20_000, max_minutes=10.0, log_every=25, save_every=250, sample_every=500,
        ),
    )


def tiny_config(arch: Arch = "hifigan", num_units: int = 20) -> VocoderConfig:
    """For tests: a few thousand parameters."""
    return VocoderConfig(
        arch=arch,
        num_units=num_units,
        embed_dim=16,
        duration=DurationConfig(hidden_dim=16, dropout=0.0),
        generator=GeneratorConfig(
            upsample_initial_channel=32,
            upsample_rates=[5, 4, 4, 4],
            upsample_kernel_sizes=[11, 8, 8, 8],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
        ),
        discriminator=DiscriminatorConfig(periods=[2, 3], num_scales=2, channel_scale=0.0625),
        unit_mel=UnitMelConfig(hidden_dim=32, conv_layers=1, transformer_layers=1, heads=2, dropout=0.0, griffin_lim_iters=4),
        loss=LossConfig(mel_weight=45.0 if arch == "hifigan" else 1.0),
        train=TrainConfig(
            batch_size=4, segment_frames=8, lr=1e-3, max_steps=4, log_every=1, save_every=2, sample_every=2,
            num_samples=2, valid_rows=2,
        ),
    )


PRESETS = {"paper": paper_config, "demo": demo_config, "unit-mel": unit_mel_config, "tiny": tiny_config}
"""Named configs for `tmt vocoder train --config NAME`."""


def preset(name: str) -> VocoderConfig:
    if name not in PRESETS:
        raise VocoderError(f"unknown vocoder preset '{name}'; choose one of {', '.join(PRESETS)} or give a YAML file")
    return PRESETS[name]()


def check_config(cfg: VocoderConfig) -> None:
    """Refuse configs that cannot work, naming the field."""
    if cfg.arch == "hifigan":
        hop = math.prod(cfg.generator.upsample_rates)
        if hop != FRAME_HOP:
            raise VocoderError(
                f"generator.upsample_rates {cfg.generator.upsample_rates} multiply to {hop}; they must multiply to "
                f"{FRAME_HOP} (50 Hz units -> 16 kHz)"
            )
        g = cfg.generator
        if len(g.upsample_rates) != len(g.upsample_kernel_sizes):
            raise VocoderError("generator.upsample_rates and upsample_kernel_sizes must have the same length")
        if len(g.resblock_kernel_sizes) != len(g.resblock_dilation_sizes):
            raise VocoderError("generator.resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
    if FRAME_HOP % cfg.mel.hop_length:
        raise VocoderError(f"mel.hop_length {cfg.mel.hop_length} must divide {FRAME_HOP}")
    if cfg.num_units < 1:
        raise VocoderError("num_units must be >= 1")


# ---------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------
VocoderModel = CodeHiFiGAN | UnitMel


def build_model(cfg: VocoderConfig, *, has_duration_predictor: bool = True) -> VocoderModel:
    """The generator side (what is exported); discriminators are built by the trainer."""
    check_config(cfg)
    d = cfg.duration
    if cfg.arch == "hifigan":
        g = cfg.generator
        return CodeHiFiGAN(
            num_units=cfg.num_units, embed_dim=cfg.embed_dim,
            duration_hidden=d.hidden_dim, duration_kernel=d.kernel_size, duration_dropout=d.dropout,
            upsample_initial_channel=g.upsample_initial_channel, upsample_rates=g.upsample_rates,
            upsample_kernel_sizes=g.upsample_kernel_sizes, resblock_kernel_sizes=g.resblock_kernel_sizes,
            resblock_dilation_sizes=g.resblock_dilation_sizes, has_duration_predictor=has_duration_predictor,
        )
    u = cfg.unit_mel
    return UnitMel(
        num_units=cfg.num_units, embed_dim=cfg.embed_dim,
        duration_hidden=d.hidden_dim, duration_kernel=d.kernel_size, duration_dropout=d.dropout,
        hidden_dim=u.hidden_dim, conv_layers=u.conv_layers, conv_kernel=u.conv_kernel,
        transformer_layers=u.transformer_layers, heads=u.heads, dropout=u.dropout,
        n_mels=cfg.mel.n_mels, mel_per_frame=FRAME_HOP // cfg.mel.hop_length,
    )


class LogMel(nn.Module):
    """Waveform (B, S) -> natural-log mel magnitudes (B, frames, n_mels), frames = S / hop + 1."""

    def __init__(self, cfg: MelConfig, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        import torchaudio

        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length,
            f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels, power=1.0, norm="slaney", mel_scale="slaney",
        )

    def forward(self, wav: Tensor) -> Tensor:
        return torch.log(torch.clamp(self.mel(wav), min=1e-5)).transpose(-1, -2)


class GriffinLimInverter(nn.Module):
    """Log-mel (B, frames, n_mels) -> waveform (B, S): mel pseudo-inverse, then Griffin-Lim."""

    def __init__(self, cfg: MelConfig, n_iter: int, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        import torchaudio

        n_stft = cfg.n_fft // 2 + 1
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=n_stft, n_mels=cfg.n_mels, sample_rate=sample_rate, f_min=cfg.f_min, f_max=cfg.f_max,
            norm="slaney", mel_scale="slaney",
        )
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length, power=1.0, n_iter=n_iter,
            momentum=0.99, rand_init=False,
        )

    def forward(self, log_mel: Tensor) -> Tensor:
        mag = self.inverse_mel(torch.exp(log_mel).transpose(-1, -2).float())
        return self.griffin_lim(mag)


# ---------------------------------------------------------------------------------------
# the inference object
# ---------------------------------------------------------------------------------------
class UnitVocoder:
    """Turns deduplicated unit sequences into 16 kHz float32 waveforms (batched)."""

    sample_rate: int = SAMPLE_RATE

    def __init__(self, model: VocoderModel, cfg: VocoderConfig, info: Mapping[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.info = dict(info or {})
        from tmt.core.device import resolve_device

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.num_units = cfg.num_units
        self._inverter: GriffinLimInverter | None = None

    @property
    def arch(self) -> str:
        return self.cfg.arch

    @property
    def fingerprint(self) -> str | None:
        fp = (self.info.get("speech_tokenizer") or {}).get("fingerprint")
        return str(fp) if fp else None

    @property
    def has_duration_predictor(self) -> bool:
        return getattr(self.model, "duration_predictor", None) is not None

    # ---- helpers ----------------------------------------------------------
    def _check_units(self, units: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for i, u in enumerate(units):
            a = np.asarray(u)
            if a.ndim != 1:
                raise VocoderError(f"units[{i}] must be a 1-D sequence, got shape {a.shape}")
            if a.size and (a.dtype.kind not in "iu" or int(a.min()) < 0 or int(a.max()) >= self.num_units):
                raise VocoderError(
                    f"units[{i}] has ids outside [0, {self.num_units}) (min {a.min()}, max {a.max()}): "
                    "pass tokenizer-local speech ids (subtract the joint-vocabulary offset)"
                )
            out.append(a.astype(np.int64))
        return out

    def _pad(self, seqs: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        t = torch.zeros(len(seqs), int(lengths.max()) if len(seqs) else 0, dtype=torch.long)
        for i, s in enumerate(seqs):
            t[i, : len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
        return t.to(self.device), sequence_mask(lengths, t.size(1)).to(self.device)

    @torch.inference_mode()
    def predict_durations(
        self, units: Sequence[np.ndarray], *, scale: float = 1.0, batch_size: int = 64, rounding: str = "diffuse"
    ) -> list[np.ndarray]:
        """Frames (20 ms) per unit, predicted; at least 1 each.

        `rounding`: `diffuse` keeps each utterance's predicted length; `per-unit` rounds
        every unit on its own, exactly as fairseq's CodeHiFiGAN does (see `durations_from_log`).
        """
        if rounding not in DURATION_ROUNDINGS:
            raise VocoderError(f"duration rounding must be one of {DURATION_ROUNDINGS}, got {rounding!r}")
        units = self._check_units(units)
        if not self.has_duration_predictor:
            raise VocoderError("this vocoder has no duration predictor; pass durations to synthesize()")
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(units)
        idx = [i for i, u in enumerate(units) if len(u)]
        for s in range(0, len(idx), batch_size):
            chunk = idx[s : s + batch_size]
            u, m = self._pad([units[i] for i in chunk])
            d = durations_from_log(self.model.predict_log_durations(u, m), scale, m, rounding)
            for row, i in enumerate(chunk):
                out[i] = d[row, : len(units[i])].cpu().numpy()
        return out

    @torch.inference_mode()
    def synthesize(
        self,
        units: Sequence[np.ndarray],
        durations: Sequence[np.ndarray] | None = None,
        *,
        duration_scale: float = 1.0,
        duration_rounding: str = "diffuse",
        max_frames_per_batch: int = 4000,
    ) -> list[np.ndarray]:
        """Units (tokenizer-local ids, deduplicated) -> float32 waveforms at 16 kHz.

        Durations (frames of 20 ms per unit) are predicted when not given. Inputs
        are grouped by length into padded batches of at most
        `max_frames_per_batch` frames (batch x longest); outputs come back in
        input order, each cut to its own length (frames x 320 samples).
        """
        units = self._check_units(units)
        if durations is None:
            durs = self.predict_durations(units, scale=duration_scale, rounding=duration_rounding)
        else:
            if len(durations) != len(units):
                raise VocoderError(f"got {len(durations)} duration sequences for {len(units)} unit sequences")
            durs = []
            for i, (u, d) in enumerate(zip(units, durations, strict=True)):
                a = np.asarray(d, dtype=np.int64)
                if a.shape != u.shape:
                    raise VocoderError(f"durations[{i}] has {a.size} entries for {u.size} units")
                if a.size and a.min() < 0:
                    raise VocoderError(f"durations[{i}] has negative values")
                durs.append(a)
        n_frames = [int(d.sum()) for d in durs]
        out: list[np.ndarray] = [np.zeros(n * FRAME_HOP, dtype=np.float32) for n in n_frames]
        order = sorted((i for i in range(len(units)) if n_frames[i] > 0), key=lambda i: n_frames[i])
        batch: list[int] = []
        for i in [*order, -1]:
            if i >= 0 and (not batch or (len(batch) + 1) * n_frames[i] <= max_frames_per_batch):
                batch.append(i)
                continue
            if batch:
                for j, wav in zip(batch, self._synth_batch([units[j] for j in batch], [durs[j] for j in batch]), strict=True):
                    out[j] = wav
            batch = [i]
        return out

    def _synth_batch(self, units: list[np.ndarray], durs: list[np.ndarray]) -> list[np.ndarray]:
        u, m = self._pad(units)
        d, _ = self._pad(durs)
        frames, fmask = expand_units(u, d, m)
        lengths = fmask.sum(dim=1).tolist()
        if isinstance(self.model, CodeHiFiGAN):
            wav = self.model(frames, fmask)
        else:
            mel = self.model(frames, fmask)
            if self._inverter is None:
                self._inverter = GriffinLimInverter(self.cfg.mel, self.cfg.unit_mel.griffin_lim_iters).to(self.device)
            # silence (log 1e-5) where padded so Griffin-Lim sees nothing there
            mel_mask = fmask.repeat_interleave(self.model.mel_per_frame, dim=1)
            mel = mel.masked_fill(~mel_mask[..., None], math.log(1e-5))
            wav = self._inverter(mel)
        wav = wav.float().cpu().numpy()
        res = []
        for row, n in enumerate(lengths):
            w = wav[row, : int(n) * FRAME_HOP]
            if w.shape[0] < int(n) * FRAME_HOP:
                w = np.pad(w, (0, int(n) * FRAME_HOP - w.shape[0]))
            # Griffin-Lim output is not bounded; keep every arch in [-1, 1] for 16-bit wavs
            res.append(np.ascontiguousarray(np.clip(w, -1.0, 1.0), dtype=np.float32))
        return res


# ---------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------
def inference_state_dict(model: VocoderModel) -> dict[str, Tensor]:
    """The model's weights with weight norm folded (copy; the model is not changed)."""
    # (not deepcopy + remove_parametrizations: the parametrized class is shared between copies,
    # and removing it from the copy would break the original)
    out = {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if ".parametrizations.weight.original" not in k
    }
    with torch.no_grad():
        for name, m in model.named_modules():
            if parametrize.is_parametrized(m, "weight"):
                out[f"{name}.weight"] = m.weight.detach().cpu().clone()
    return out


def save_vocoder(
    directory: str | Path,
    model: VocoderModel | Mapping[str, Tensor],
    cfg: VocoderConfig,
    *,
    speech_tokenizer: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model.safetensors` then `vocoder.json` (the latter last: it marks the dir complete)."""
    from safetensors.torch import save as st_save

    directory = Path(directory)
    make_dirs(directory)
    state = dict(model) if isinstance(model, Mapping) else inference_state_dict(model)
    with atomic_open(directory / WEIGHTS_FILE, "wb") as f:
        f.write(st_save({k: v.contiguous() for k, v in state.items()}))
    has_dp = any(k.startswith("duration_predictor.") for k in state)
    info = {
        "format": VOCODER_FORMAT,
        "version": VOCODER_VERSION,
        "arch": cfg.arch,
        "num_units": cfg.num_units,
        "sample_rate": SAMPLE_RATE,
        "frame_hop": FRAME_HOP,
        "has_duration_predictor": has_dp,
        "speech_tokenizer": dict(speech_tokenizer or {}),
        "weights": WEIGHTS_FILE,
        "config": to_dict(cfg),
        **dict(extra or {}),
    }
    atomic_write_json(directory / "vocoder.json", info)
    return directory


def read_vocoder_json(directory: str | Path) -> dict[str, Any]:
    p = Path(directory) / "vocoder.json"
    if not p.is_file():
        if not Path(directory).exists():
            raise VocoderError(f"vocoder directory not found: {directory}")
        raise VocoderError(
            f"{directory} is not a vocoder directory (no vocoder.json); train one with `tmt vocoder train` "
            "or convert a fairseq checkpoint with `tmt vocoder import-fairseq`"
        )
    info = read_json_object(p, what="vocoder description", error=VocoderError, fix="retrain or re-import the vocoder")
    if info.get("format") != VOCODER_FORMAT:
        raise VocoderError(f"{p} is not a tmt vocoder description (format != {VOCODER_FORMAT})")
    return info


def load_weights(path: Path) -> dict[str, Tensor]:
    """safetensors, or a torch state dict loaded with weights_only=True."""
    if not path.is_file():
        raise VocoderError(f"vocoder weights missing: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise VocoderError(f"{path} is not a readable safetensors file ({e})") from None
    obj = load_torch_weights(path, what="vocoder weights file", error=VocoderError)
    if not isinstance(obj, Mapping):
        raise VocoderError(f"{path} does not hold a state dict")
    return dict(obj)


def check_vocoder_fingerprint(info: Mapping[str, Any], expected: str | None, where: str) -> None:
    """Refuse a vocoder trained on units from a different speech tokenizer."""
    if not expected:
        return
    st = info.get("speech_tokenizer") or {}
    have = st.get("fingerprint")
    if not have:
        log.warning("%s records no speech tokenizer fingerprint; cannot check it matches %s", where, expected[:12])
        return
    if have != expected:
        raise VocoderError(
            f"vocoder {where} was trained on units of speech tokenizer {str(have)[:12]} ({st.get('name', '?')}), "
            f"but these units come from tokenizer {expected[:12]}: units from one k-means cannot be voiced by a "
            "vocoder trained on another. Use the vocoder trained with this tokenizer, or retrain one with "
            "`tmt vocoder train` on a store made by it."
        )


def load_vocoder(
    directory: str | Path, device: str | torch.device = "cpu", *, expected_fingerprint: str | None = None
) -> UnitVocoder:
    """Load a vocoder directory; with `expected_fingerprint`, refuse one made for another speech tokenizer."""
    directory = Path(directory)
    info = read_vocoder_json(directory)
    check_vocoder_fingerprint(info, expected_fingerprint, str(directory))
    try:
        cfg = from_dict(VocoderConfig, info["config"])
    except (KeyError, TmtError) as e:
        raise VocoderError(f"{directory}/vocoder.json: bad config ({e})") from None
    state = load_weights(directory / str(info.get("weights", WEIGHTS_FILE)))
    has_dp = any(k.startswith("duration_predictor.") for k in state)
    model = build_model(cfg, has_duration_predictor=has_dp)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VocoderError(
            f"{directory}: weights do not match the config (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]})"
        )
    return UnitVocoder(model, cfg, info, device)


def config_summary(cfg: VocoderConfig) -> dict[str, Any]:
    """A few headline numbers for logs."""
    model = build_model(cfg)
    return {"arch": cfg.arch, "parameters": sum(p.numel() for p in model.parameters())}


__all__ = [
    "FRAME_HOP",
    "PRESETS",
    "SAMPLE_RATE",
    "DiscriminatorConfig",
    "DurationConfig",
    "GeneratorConfig",
    "GriffinLimInverter",
    "LogMel",
    "LossConfig",
    "MelConfig",
    "TrainConfig",
    "UnitMelConfig",
    "UnitVocoder",
    "VocoderConfig",
    "VocoderError",
    "build_model",
    "check_vocoder_fingerprint",
    "load_vocoder",
    "preset",
    "save_vocoder",
]
