"""A convolutional VQ-VAE: the image tokenizer (encoder + quantizer) and detokenizer (decoder).

    image (B, 3, H, W) in [-1, 1]
      -> Encoder      strided 4x4 convs, one stride-2 step per halving of H and/or W,
                      then residual blocks at the latent resolution -> (B, D, h, w)
      -> EMAQuantizer nearest codebook entry per latent vector; EMA codebook updates,
                      dead-code restarts, commitment loss               -> ids (B, h, w)
      -> Decoder      mirror of the encoder with transposed convs       -> (B, 3, H, W)

The downsampling factor can differ between height and width (`factor: [16, 8]` on a
64x64 image gives a 4x8 grid = 32 tokens), so any fixed token count that is a product
of two powers-of-two divisors of the image size is reachable.

Written here rather than taken from a library: the well-kept VQ implementations
(taming-transformers, vector-quantize-pytorch) are not part of the pinned stack and
bring GAN/perceptual-loss machinery that needs pretrained weights we cannot download.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tmt import TmtError


@dataclass(kw_only=True)
class VQConfig:
    """Architecture of the image VQ-VAE (the `model:` section of an image-vq card)."""

    image_size: int | list[int] = 64
    """Input size in pixels: one int (square) or [height, width]."""
    in_channels: int = 3
    """Image channels (3 = RGB)."""
    factor: int | list[int] = 8
    """Downsampling factor: one power of two, or [factor_h, factor_w]. The grid is image_size / factor."""
    channels: list[int] = field(default_factory=lambda: [64, 128, 128])
    """Conv channels after each downsampling step (the last value repeats if the list is short)."""
    head_channels: int = 0
    """Decoder: >0 ends with a transposed conv to this many channels plus a 3x3 conv at full resolution; 0: the last transposed conv writes the image."""
    num_res_blocks: int = 2
    """Residual blocks at the latent resolution, in both encoder and decoder."""
    encoder_code_kernel: Literal[1, 3] = 3
    """Encoder convs at the latent resolution (its first conv there and its residual blocks): 3 lets every code
    see neighbouring patches (with the default blocks, the whole 64-px image); 1 keeps each code to what its own
    patch's strided stem sees (22 px), so a patch of plain background gets the same code wherever objects are."""
    codebook_size: int = 512
    """Number of codes (the image vocabulary size)."""
    code_dim: int = 64
    """Dimension of each code vector."""
    commitment: float = 0.25
    """Weight of the commitment loss ||z - sg(q)||^2."""
    ema_decay: float = 0.99
    """Decay of the EMA codebook statistics."""
    dead_code_threshold: float = 0.1
    """A code whose EMA usage count (vectors per step) is below this is restarted from a random encoder output.
    Keep it well below the mean count (batch_size * tokens_per_image / codebook_size): near the
    mean, half the codebook is restarted every step and reconstructions stay blurry."""
    cosine_codes: bool = False
    """l2-normalise encoder outputs and codes and look codes up by cosine similarity (ViT-VQGAN
    style; pair with a small code_dim such as 16-32, the factorised low-dimensional lookup)."""
    up_res_blocks: int = 0
    """Decoder: residual blocks after each intermediate upsampling step (e.g. at 16x16 and 32x32)."""
    decoder_channels: list[int] = field(default_factory=list)
    """Decoder conv channels per stage, same layout as `channels` (empty: the same as `channels`)."""
    activation: Literal["relu", "silu"] = "relu"
    """Non-linearity of encoder and decoder."""
    norm: Literal["none", "group"] = "none"
    """Normalisation before each activation: none or GroupNorm (8 groups, or fewer for thin layers)."""
    padding: Literal["zeros", "replicate"] = "zeros"
    """How the padded convs of encoder and decoder pad: `replicate` repeats the edge pixels, so
    border patches of a plain background look like inner ones and get the same codes; `zeros`
    (the default of cards written before this option, whose weights were fitted with it) pads
    with zeros, which gives border and corner patches codes of their own."""

    def size_hw(self) -> tuple[int, int]:
        return _pair(self.image_size, "image_size")

    def factor_hw(self) -> tuple[int, int]:
        return _pair(self.factor, "factor")

    def grid(self) -> tuple[int, int]:
        """(h, w) of the latent grid: the number of tokens per image is h * w."""
        (ih, iw), (fh, fw) = self.size_hw(), self.factor_hw()
        return ih // fh, iw // fw

    def strides(self) -> list[tuple[int, int]]:
        """Per-stage (stride_h, stride_w): 2 while that dimension still has halvings left, else 1."""
        fh, fw = self.factor_hw()
        nh, nw = int(math.log2(fh)), int(math.log2(fw))
        return [(2 if i < nh else 1, 2 if i < nw else 1) for i in range(max(nh, nw))]

    def stage_channels(self, decoder: bool = False) -> list[int]:
        n = max(1, len(self.strides()))
        ch = list(self.decoder_channels if decoder and self.decoder_channels else self.channels) or [64]
        return (ch + [ch[-1]] * n)[:n]

    def check(self) -> None:
        (ih, iw), (fh, fw) = self.size_hw(), self.factor_hw()
        for name, f in (("factor_h", fh), ("factor_w", fw)):
            if f < 1 or f & (f - 1):
                raise TmtError(f"VQ card: {name}={f} must be a power of two (1, 2, 4, 8, 16, ...)")
        if ih % fh or iw % fw:
            raise TmtError(f"VQ card: image_size {ih}x{iw} is not divisible by factor {fh}x{fw}")
        if self.codebook_size < 2 or self.code_dim < 1:
            raise TmtError("VQ card: codebook_size must be >= 2 and code_dim >= 1")
        if self.padding not in ("zeros", "replicate"):
            raise TmtError(f"VQ card: padding '{self.padding}' is not one of zeros, replicate")
        if self.encoder_code_kernel not in (1, 3):
            raise TmtError(f"VQ card: encoder_code_kernel {self.encoder_code_kernel!r} is not 1 (local codes) or 3")


def _pair(v: int | list[int] | tuple[int, ...], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    vals = list(v)
    if len(vals) == 1:
        return int(vals[0]), int(vals[0])
    if len(vals) != 2:
        raise TmtError(f"VQ card: {name} must be an int or [height, width], got {v!r}")
    return int(vals[0]), int(vals[1])


def _conv(cfg: VQConfig, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int | tuple[int, int] = 1,
          padding: int = 0) -> nn.Conv2d:
    """A conv that pads (when it does) as the card says; the weights do not depend on it."""
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, padding_mode=cfg.padding if padding else "zeros")


def _act(cfg: VQConfig, channels: int) -> nn.Module:
    """(norm +) activation as set by the card."""
    act: nn.Module = nn.SiLU() if cfg.activation == "silu" else nn.ReLU()
    if cfg.norm == "group":
        return nn.Sequential(nn.GroupNorm(math.gcd(8, channels), channels), act)
    return act


class ResBlock(nn.Module):
    """x + conv1x1(act(convKxK(act(x)))), K = `kernel` (3 in the original VQ-VAE; 1 in a local encoder)."""

    def __init__(self, channels: int, cfg: VQConfig | None = None, kernel: int = 3) -> None:
        super().__init__()
        cfg = cfg or VQConfig()
        self.act1 = _act(cfg, channels)
        self.conv1 = _conv(cfg, channels, channels, kernel, padding=kernel // 2)
        self.act2 = _act(cfg, channels)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))


def _kernel(stride: tuple[int, int]) -> tuple[int, int]:
    # 4x4 / stride 2 / padding 1 halves a dimension exactly; 3 / stride 1 / padding 1 keeps it
    return (4 if stride[0] == 2 else 3, 4 if stride[1] == 2 else 3)


class Encoder(nn.Module):
    """Strided 4x4 convs (one per halving; the first one reads the image directly, so no conv
    runs at full resolution: ~4x cheaper on CPU), then residual blocks, then a 1x1 to code_dim."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        ch = cfg.stage_channels()
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        for i, stride in enumerate(cfg.strides()):
            if i:
                layers.append(_act(cfg, c_in))
            layers.append(_conv(cfg, c_in, ch[i], _kernel(stride), stride=stride, padding=1))
            c_in = ch[i]
        k = cfg.encoder_code_kernel
        layers.append(_conv(cfg, c_in, ch[-1], k, padding=k // 2))
        layers += [ResBlock(ch[-1], cfg, k) for _ in range(cfg.num_res_blocks)]
        layers += [_act(cfg, ch[-1]), nn.Conv2d(ch[-1], cfg.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # -> (B, D, h, w)


class Decoder(nn.Module):
    """Mirror of the encoder: 3x3 conv from code_dim, residual blocks, then one 4x4 transposed
    conv per doubling (the last one writes the image), optionally with residual blocks after
    each intermediate doubling (`up_res_blocks`: sharper small objects for little compute)."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        ch = cfg.stage_channels(decoder=True)
        layers: list[nn.Module] = [_conv(cfg, cfg.code_dim, ch[-1], 3, padding=1)]
        layers += [ResBlock(ch[-1], cfg) for _ in range(cfg.num_res_blocks)]
        strides = cfg.strides()
        c_in = ch[-1]
        head = cfg.head_channels
        for i in reversed(range(len(strides))):
            c_out = ch[i - 1] if i else (head or cfg.in_channels)
            layers += [_act(cfg, c_in), nn.ConvTranspose2d(c_in, c_out, _kernel(strides[i]), stride=strides[i], padding=1)]
            if i:
                layers += [ResBlock(c_out, cfg) for _ in range(cfg.up_res_blocks)]
            c_in = c_out
        if head or not strides:  # a thin 3x3 conv at full resolution sharpens edges
            layers += [_act(cfg, c_in), _conv(cfg, c_in, cfg.in_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # -> (B, C, H, W), roughly in [-1, 1]


@dataclass
class QuantizerOutput:
    quantized: Tensor
    """Straight-through quantized latents (B, D, h, w)."""
    indices: Tensor
    """Code ids (B, h, w), int64."""
    commitment_loss: Tensor
    """commitment * ||z - sg(q)||^2 (the codebook itself is learned by EMA, not by this loss)."""
    perplexity: Tensor
    """exp(entropy) of the code histogram of this batch."""
    restarted: int
    """How many dead codes were restarted in this call."""


class EMAQuantizer(nn.Module):
    """Nearest-neighbour vector quantizer whose codebook follows an EMA of its assigned vectors.

    On the first training batch the codebook is initialised from random encoder outputs
    (data-dependent init: far fewer dead codes than a random normal init). Codes whose
    EMA usage count falls below `dead_code_threshold` are moved onto random encoder
    outputs of the current batch (dead-code restart).
    """

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        k, d = cfg.codebook_size, cfg.code_dim
        self.codebook_size, self.code_dim = k, d
        self.decay = cfg.ema_decay
        self.commitment = cfg.commitment
        self.threshold = cfg.dead_code_threshold
        self.cosine = cfg.cosine_codes
        self.eps = 1e-5
        self.register_buffer("embed", torch.randn(k, d) * 0.1)
        self.register_buffer("cluster_size", torch.zeros(k))
        self.register_buffer("embed_sum", self.embed.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.embed: Tensor
        self.cluster_size: Tensor
        self.embed_sum: Tensor
        self.initialized: Tensor

    def prepare(self, z: Tensor, dim: int = 1) -> Tensor:
        """Encoder outputs as the quantizer sees them: l2-normalised along `dim` in cosine mode."""
        return F.normalize(z, dim=dim) if self.cosine else z

    def nearest(self, flat: Tensor) -> Tensor:
        """(N, D) -> (N,) ids of the nearest codes (squared L2; for unit vectors = highest cosine)."""
        flat = self.prepare(flat)
        e = self.embed
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None, :]
        return dist.argmin(1)

    def lookup(self, ids: Tensor) -> Tensor:
        """(B, h, w) ids -> (B, D, h, w) code vectors."""
        return F.embedding(ids, self.embed).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def init_kmeans(self, flat: Tensor, iters: int = 10) -> None:
        """Initialise the codebook by k-means on encoder outputs (N, D) (used after a continuous warm-up)."""
        flat = self.prepare(flat)
        embed = self._sample(flat, self.codebook_size)
        for _ in range(iters):
            ids = torch.cdist(flat, embed).argmin(1)
            counts = torch.bincount(ids, minlength=self.codebook_size).float()
            sums = torch.zeros_like(embed).index_add_(0, ids, flat)
            empty = counts == 0
            embed = torch.where(empty[:, None], embed, sums / counts.clamp(min=1)[:, None])
            if bool(empty.any()):
                embed[empty] = self._sample(flat, int(empty.sum()))
            embed = self.prepare(embed)  # spherical k-means in cosine mode
        self.embed.copy_(embed)
        self.embed_sum.copy_(embed)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    def _sample(self, flat: Tensor, n: int) -> Tensor:
        idx = torch.randint(0, flat.shape[0], (n,))
        return self.prepare(flat[idx] + 1e-3 * torch.randn(n, flat.shape[1]))

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, ids: Tensor) -> int:
        if not bool(self.initialized):
            self.embed.copy_(self._sample(flat, self.codebook_size))
            self.embed_sum.copy_(self.embed)
            self.cluster_size.fill_(1.0)
            self.initialized.fill_(True)
        onehot = F.one_hot(ids, self.codebook_size).to(flat.dtype)  # (N, K)
        counts = onehot.sum(0)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n  # Laplace smoothing
        self.embed.copy_(self.prepare(self.embed_sum / smoothed[:, None]))
        # dead-code restart (as in Jukebox): every code still under the threshold gets a fresh
        # random encoder output each step until vectors start being assigned to it
        dead = self.cluster_size < self.threshold
        num_dead = int(dead.sum())
        if num_dead:
            new = self._sample(flat, num_dead)
            self.embed[dead] = new
            self.embed_sum[dead] = new * smoothed[dead][:, None]
        return num_dead

    def forward(self, z: Tensor) -> QuantizerOutput:
        z = self.prepare(z)
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        ids = self.nearest(flat.detach())
        restarted = 0
        if self.training:
            restarted = self._ema_update(flat.detach(), ids)
        q = F.embedding(ids, self.embed).view(b, h, w, d).permute(0, 3, 1, 2)
        commit = self.commitment * F.mse_loss(z, q.detach())
        quantized = z + (q - z).detach()  # straight-through estimator
        probs = torch.bincount(ids, minlength=self.codebook_size).float() / ids.numel()
        ppl = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return QuantizerOutput(quantized, ids.view(b, h, w), commit, ppl, restarted)


@dataclass
class VQOutput:
    recon: Tensor
    indices: Tensor
    commitment_loss: Tensor
    perplexity: Tensor
    restarted: int


class VQVAE(nn.Module):
    """Encoder + EMA quantizer + decoder."""

    def __init__(self, cfg: VQConfig) -> None:
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = EMAQuantizer(cfg)
        self.decoder = Decoder(cfg)

    @property
    def grid(self) -> tuple[int, int]:
        return self.cfg.grid()

    @torch.no_grad()
    def code_features(self) -> Tensor:
        """(codebook_size, code_dim): the codebook vectors, one row per code id (see `AlignedVQ.code_features`)."""
        return self.quantizer.embed.detach().float().clone()

    def forward(self, x: Tensor, *, quantize: bool = True) -> VQOutput:
        """`quantize=False` (warm-up) feeds the continuous latents to the decoder."""
        z = self.encoder(x)
        if not quantize:
            z = self.quantizer.prepare(z)
            b, _, h, w = z.shape
            zero = z.new_zeros(())
            return VQOutput(self.decoder(z), torch.zeros(b, h, w, dtype=torch.long), zero, zero, 0)
        q = self.quantizer(z)
        return VQOutput(self.decoder(q.quantized), q.indices, q.commitment_loss, q.perplexity, q.restarted)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, h, w) code ids."""
        z = self.encoder(x)
        b, d, h, w = z.shape
        return self.quantizer.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)

    @torch.no_grad()
    def decode(self, ids: Tensor) -> Tensor:
        """(B, h, w) code ids -> (B, C, H, W) images in [-1, 1] (clamped)."""
        return self.decoder(self.quantizer.lookup(ids)).clamp(-1, 1)


class PatchDiscriminator(nn.Module):
    """A small PatchGAN discriminator (pix2pix style): one real/fake logit per receptive-field patch."""

    def __init__(self, in_channels: int = 3, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, c * 2, 4, 2, 1), nn.GroupNorm(8, c * 2), nn.LeakyReLU(0.2)]
            c *= 2
        mods += [nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def reconstruction_loss(recon: Tensor, target: Tensor, kind: Literal["l1", "l2", "l1+l2"],
                        weights: Tensor | None = None, *, per_image: bool = False) -> Tensor:
    """Pixel loss, optionally weighted per pixel by `weights` (B, 1, H, W) with mean 1; a scalar,
    or with `per_image` one value per image (B,)."""
    diff = recon - target
    per_pixel = {"l1": diff.abs(), "l2": diff.pow(2), "l1+l2": diff.abs() + diff.pow(2)}[kind]
    if weights is not None:
        per_pixel = per_pixel * weights
    return per_pixel.flatten(1).mean(1) if per_image else per_pixel.mean()


def gradient_loss(recon: Tensor, target: Tensor, *, per_image: bool = False) -> Tensor:
    """L1 distance between the horizontal and vertical pixel differences of two image batches
    (a scalar, or with `per_image` one value per image)."""
    dx = (recon[..., :, 1:] - recon[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (recon[..., 1:, :] - recon[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    if per_image:
        return dx.abs().flatten(1).mean(1) + dy.abs().flatten(1).mean(1)
    return dx.abs().mean() + dy.abs().mean()


def codebook_usage(ids: Tensor, codebook_size: int) -> dict[str, float]:
    """Perplexity and share of codes used over a set of code ids."""
    counts = torch.bincount(ids.reshape(-1), minlength=codebook_size).float()
    probs = counts / counts.sum().clamp(min=1)
    ppl = float(torch.exp(-(probs * torch.log(probs + 1e-10)).sum()))
    used = int((counts > 0).sum())
    return {"perplexity": ppl, "codes_used": used, "codes_used_pct": 100.0 * used / codebook_size,
            "codebook_size": codebook_size, "tokens": int(counts.sum())}
