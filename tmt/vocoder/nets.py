"""Networks and losses of the unit vocoders (see `tmt.vocoder` for the public API).

Shapes follow the convention ``B`` batch, ``T`` deduplicated units, ``F`` frames
(units repeated by their durations, 50 Hz), ``S`` samples (16 kHz, ``F * 320``).

* `DurationPredictor` (in `tmt.vocoder.duration`): predicts log(1 + duration)
  per deduplicated unit; both architectures carry one.
* `HifiGanGenerator`: HiFi-GAN V1 layout (conv_pre, transposed-conv upsampling,
  multi-receptive-field residual blocks, conv_post, tanh). The parameter layout
  matches fairseq / speech-resynthesis so their checkpoints map onto it 1:1.
* `CodeHiFiGAN`: unit embedding + duration predictor + generator.
* `MultiPeriodDiscriminator` / `MultiScaleDiscriminator` and the losses
  (least-squares GAN, feature matching, mel L1, duration MSE).
* `UnitMel`: the fast CPU alternative: unit embedding + duration predictor +
  a small conv/Transformer network regressing log-mel frames.
* `build_model`: the generator side of a `VocoderConfig` (what is exported).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize, spectral_norm

from tmt.core.audio import FRAME_HOP
from tmt.vocoder.config import VocoderConfig, check_config
from tmt.vocoder.duration import DurationPredictor

LRELU_SLOPE = 0.1


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


# ---------------------------------------------------------------------------------------
# weight norm helpers
# ---------------------------------------------------------------------------------------
def _convs(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.Conv1d | nn.ConvTranspose1d | nn.Conv2d)]


def apply_weight_norm(module: nn.Module) -> None:
    """Weight-normalise every convolution in `module` (training form)."""
    for m in _convs(module):
        if not parametrize.is_parametrized(m, "weight"):
            parametrizations.weight_norm(m)


# ---------------------------------------------------------------------------------------
# HiFi-GAN generator
# ---------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """HiFi-GAN "resblock 1": pairs of (dilated conv, conv) with residual connections."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_padding(kernel_size, d)) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=_padding(kernel_size)) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            h = c1(F.leaky_relu(x, LRELU_SLOPE))
            h = c2(F.leaky_relu(h, LRELU_SLOPE))
            x = x + h
        return x


class HifiGanGenerator(nn.Module):
    """Frame features (B, C, F) -> waveform (B, 1, F * prod(upsample_rates))."""

    def __init__(
        self,
        in_dim: int,
        upsample_initial_channel: int,
        upsample_rates: Sequence[int],
        upsample_kernel_sizes: Sequence[int],
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
    ) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        ch = upsample_initial_channel
        self.conv_pre = nn.Conv1d(in_dim, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes, strict=True)):
            c_in, c_out = ch // (2**i), ch // (2 ** (i + 1))
            self.ups.append(nn.ConvTranspose1d(c_in, c_out, kernel, rate, padding=(kernel - rate) // 2))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True):
                self.resblocks.append(ResBlock(c_out, k, d))
        self.conv_post = nn.Conv1d(ch // (2 ** len(upsample_rates)), 1, 7, padding=3)
        for m in [*self.ups, *self.resblocks.modules(), self.conv_post]:
            if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
                nn.init.normal_(m.weight, 0.0, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum((blk(x) for blk in blocks), torch.zeros_like(x)) / self.num_kernels
        # fairseq's generator uses leaky_relu's default slope (0.01) here; kept for checkpoint parity
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x)


class CodeHiFiGAN(nn.Module):
    """Unit HiFi-GAN: unit embedding, duration predictor, HiFi-GAN generator."""

    def __init__(
        self,
        *,
        num_units: int,
        embed_dim: int,
        duration_hidden: int,
        duration_kernel: int,
        duration_dropout: float,
        upsample_initial_channel: int,
        upsample_rates: Sequence[int],
        upsample_kernel_sizes: Sequence[int],
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        has_duration_predictor: bool = True,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_units, embed_dim)
        self.duration_predictor = (
            DurationPredictor(embed_dim, duration_hidden, duration_kernel, duration_dropout)
            if has_duration_predictor
            else None
        )
        self.generator = HifiGanGenerator(
            embed_dim,
            upsample_initial_channel,
            upsample_rates,
            upsample_kernel_sizes,
            resblock_kernel_sizes,
            resblock_dilation_sizes,
        )

    # `voice` keeps the signature of UnitMel's; hifigan has no voice conditioning (check_config refuses it)
    def predict_log_durations(self, units: Tensor, mask: Tensor, voice: Tensor | None = None) -> Tensor:
        if self.duration_predictor is None:
            raise RuntimeError("this vocoder has no duration predictor; pass durations")
        return self.duration_predictor(self.embed(units), mask)

    def forward(self, frames: Tensor, frame_mask: Tensor, voice: Tensor | None = None) -> Tensor:
        # frames: (B, F) unit ids at 50 Hz -> waveform (B, F * hop)
        x = self.embed(frames) * frame_mask[..., None]
        return self.generator(x.transpose(1, 2)).squeeze(1)


# ---------------------------------------------------------------------------------------
# discriminators
# ---------------------------------------------------------------------------------------
def _scaled(channels: int, scale: float, multiple: int = 1) -> int:
    c = max(multiple, round(channels * scale))
    return max(multiple, (c // multiple) * multiple)


def _score_with_features(convs: nn.ModuleList, conv_post: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Run a discriminator's conv stack: flattened scores and every layer's output (for feature matching)."""
    fmaps = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        fmaps.append(x)
    x = conv_post(x)
    fmaps.append(x)
    return x.flatten(1), fmaps


class PeriodDiscriminator(nn.Module):
    """Looks at the waveform folded into (S / period, period) columns with 2-D convs."""

    def __init__(self, period: int, scale: float = 1.0) -> None:
        super().__init__()
        self.period = period
        chans = [1] + [_scaled(c, scale) for c in (32, 128, 512, 1024, 1024)]
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)) for i in range(5)
        )
        self.conv_post = nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0))
        apply_weight_norm(self)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        # x: (B, 1, S)
        b, c, s = x.shape
        if s % self.period:
            x = F.pad(x, (0, self.period - s % self.period), mode="reflect")
            s = x.size(-1)
        return _score_with_features(self.convs, self.conv_post, x.view(b, c, s // self.period, self.period))


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), scale: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, scale) for p in periods)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        outs = [d(x) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class ScaleDiscriminator(nn.Module):
    """Grouped strided 1-D convs over the (possibly average-pooled) waveform."""

    def __init__(self, scale: float = 1.0, use_spectral_norm: bool = False) -> None:
        super().__init__()
        c = [_scaled(v, scale, 16) for v in (128, 128, 256, 512, 1024, 1024, 1024)]
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(1, c[0], 15, 1, padding=7),
                nn.Conv1d(c[0], c[1], 41, 2, groups=4, padding=20),
                nn.Conv1d(c[1], c[2], 41, 2, groups=16, padding=20),
                nn.Conv1d(c[2], c[3], 41, 4, groups=16, padding=20),
                nn.Conv1d(c[3], c[4], 41, 4, groups=16, padding=20),
                nn.Conv1d(c[4], c[5], 41, 1, groups=16, padding=20),
                nn.Conv1d(c[5], c[6], 5, 1, padding=2),
            ]
        )
        self.conv_post = nn.Conv1d(c[6], 1, 3, 1, padding=1)
        if use_spectral_norm:
            for m in [*self.convs, self.conv_post]:
                spectral_norm(m)
        else:
            apply_weight_norm(self)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return _score_with_features(self.convs, self.conv_post, x)


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, num_scales: int = 3, scale: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(scale, use_spectral_norm=(i == 0)) for i in range(num_scales)
        )
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        scores, fmaps = [], []
        for i, d in enumerate(self.discriminators):
            if i:
                x = self.pool(x)
            s, f = d(x)
            scores.append(s)
            fmaps.append(f)
        return scores, fmaps


# ---------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------
def discriminator_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    """Least-squares GAN: real scores towards 1, generated towards 0."""
    return torch.stack([torch.mean((1 - r) ** 2) + torch.mean(g**2) for r, g in zip(real, fake, strict=True)]).sum()


def generator_adversarial_loss(fake: Sequence[Tensor]) -> Tensor:
    """Least-squares GAN: generated scores towards 1."""
    return torch.stack([torch.mean((1 - g) ** 2) for g in fake]).sum()


def feature_matching_loss(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]]) -> Tensor:
    """L1 between discriminator feature maps of real and generated audio (x2 as in HiFi-GAN)."""
    terms = [
        torch.mean(torch.abs(r.detach() - g))
        for rs, gs in zip(real, fake, strict=True)
        for r, g in zip(rs, gs, strict=True)
    ]
    return 2 * torch.stack(terms).sum()


def duration_loss(log_pred: Tensor, durations: Tensor, mask: Tensor) -> Tensor:
    """MSE between predicted log(1+d) and the true log(1+d), over valid units."""
    target = torch.log1p(durations.float())
    err = (log_pred - target) ** 2 * mask
    return err.sum() / mask.sum().clamp(min=1)


# ---------------------------------------------------------------------------------------
# unit -> mel regressor (the fast arch)
# ---------------------------------------------------------------------------------------
class _ConvBlock(nn.Module):
    def __init__(self, dim: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # x: (B, F, C)
        h = self.conv((x * mask[..., None]).transpose(1, 2)).transpose(1, 2)
        return x + self.dropout(F.gelu(self.norm(h)))


class UnitMel(nn.Module):
    """Units at 50 Hz -> log-mel frames (``mel_per_frame`` mel frames per unit frame)."""

    def __init__(
        self,
        *,
        num_units: int,
        embed_dim: int,
        duration_hidden: int,
        duration_kernel: int,
        duration_dropout: float,
        hidden_dim: int,
        conv_layers: int,
        conv_kernel: int,
        transformer_layers: int,
        heads: int,
        dropout: float,
        n_mels: int,
        mel_per_frame: int,
        num_voices: int = 0,
    ) -> None:
        super().__init__()
        self.n_mels, self.mel_per_frame = n_mels, mel_per_frame
        self.embed = nn.Embedding(num_units, embed_dim)
        # one vector per voice, added to every unit embedding (`VocoderConfig.voices`)
        self.voice_embed = nn.Embedding(num_voices, embed_dim) if num_voices else None
        self.duration_predictor = DurationPredictor(embed_dim, duration_hidden, duration_kernel, duration_dropout)
        self.inp = nn.Linear(embed_dim, hidden_dim)
        self.convs = nn.ModuleList(_ConvBlock(hidden_dim, conv_kernel, dropout) for _ in range(conv_layers))
        layer = nn.TransformerEncoderLayer(
            hidden_dim, heads, 2 * hidden_dim, dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.transformer = (
            nn.TransformerEncoder(layer, transformer_layers, enable_nested_tensor=False) if transformer_layers else None
        )
        self.out = nn.Linear(hidden_dim, n_mels * mel_per_frame)

    def embed_units(self, units: Tensor, voice: Tensor | None = None) -> Tensor:
        """Unit ids (B, T) [+ voice ids (B,)] -> embeddings (B, T, embed_dim)."""
        e = self.embed(units)
        if self.voice_embed is None:
            return e
        if voice is None:
            raise ValueError("this network is voice-conditioned: pass voice ids (B,)")
        return e + self.voice_embed(voice)[:, None, :]

    def predict_log_durations(self, units: Tensor, mask: Tensor, voice: Tensor | None = None) -> Tensor:
        return self.duration_predictor(self.embed_units(units, voice), mask)

    def forward(self, frames: Tensor, frame_mask: Tensor, voice: Tensor | None = None) -> Tensor:
        # frames (B, F) -> log-mel (B, F * mel_per_frame, n_mels)
        x = self.inp(self.embed_units(frames, voice)) * frame_mask[..., None]
        for blk in self.convs:
            x = blk(x, frame_mask)
        if self.transformer is not None:
            x = self.transformer(x, src_key_padding_mask=~frame_mask)
        y = self.out(x)
        b, f, _ = y.shape
        return y.view(b, f * self.mel_per_frame, self.n_mels)


# ---------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------
VocoderModel = CodeHiFiGAN | UnitMel
"""(`tmt.vocoder.world_net.UnitWorld`, the unit-world network, is a `UnitMel`.)"""


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
    if cfg.arch == "unit-world":
        from tmt.vocoder.world import feature_dim, frames_per_unit
        from tmt.vocoder.world_net import UnitWorld

        w = cfg.world
        return UnitWorld(
            num_units=cfg.num_units, embed_dim=cfg.embed_dim,
            duration_hidden=d.hidden_dim, duration_kernel=d.kernel_size, duration_dropout=d.dropout,
            hidden_dim=w.hidden_dim, conv_layers=w.conv_layers, conv_kernel=w.conv_kernel,
            transformer_layers=w.transformer_layers, heads=w.heads, dropout=w.dropout,
            feature_dim=feature_dim(w), per_frame=frames_per_unit(w), unit_prior=w.unit_prior,
            exemplar_points=w.exemplar_points if w.envelope_source == "exemplars" else 0,
            num_voices=len(cfg.voices),
        )
    u = cfg.unit_mel
    return UnitMel(
        num_units=cfg.num_units, embed_dim=cfg.embed_dim,
        duration_hidden=d.hidden_dim, duration_kernel=d.kernel_size, duration_dropout=d.dropout,
        hidden_dim=u.hidden_dim, conv_layers=u.conv_layers, conv_kernel=u.conv_kernel,
        transformer_layers=u.transformer_layers, heads=u.heads, dropout=u.dropout,
        n_mels=cfg.mel.n_mels, mel_per_frame=FRAME_HOP // cfg.mel.hop_length, num_voices=len(cfg.voices),
    )
