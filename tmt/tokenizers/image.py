"""The image tokenizer: a VQ-VAE trained by tmt; its decoder is the image detokenizer.

A fitted image tokenizer is a directory::

    tokenizer.json     kind=image, class=image-vq, name, card (resolved), vocab_size,
                       fingerprint, grid [h, w], tokens_per_image, fit stats (usage, psnr)
    vq.safetensors     encoder, EMA codebook and decoder weights
    samples/*.png      reconstruction grids written during fitting (top: input, bottom: output)
    checkpoints/       last.pt (resumable training state) and the card it was made with

Every image (any mode, any size) is converted to RGB (alpha composited on a background
colour), resized with bicubic filtering (optionally after a center crop to the target
aspect ratio) and mapped to exactly `tokens_per_image` = h * w code ids, row-major.

Python API::

    tok = ImageTokenizer.fit(load_card("tokenizers/image-vq-f8-512.yaml"), paths, "exp/tok/image")
    ids = tok.encode(["a.png", "b.jpg"])         # [array(64,), array(64,)]
    imgs = tok.decode(ids)                       # [PIL.Image, PIL.Image]
    tok = ImageTokenizer.load("exp/tok/image")
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from tmt.config import from_dict, to_dict
from tmt.core.io import make_dirs
from tmt.io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json_object,
)
from tmt.models.vq import (
    VQVAE,
    PatchDiscriminator,
    VQConfig,
    codebook_usage,
    gradient_loss,
    hinge_d_loss,
    reconstruction_loss,
)
from tmt.tokenizers.base import TokenizerError, fingerprint_of, read_tokenizer_json

log = logging.getLogger(__name__)

CLASS_NAME = "image-vq"
WEIGHTS = "vq.safetensors"
CHECKPOINT = "checkpoints/last.pt"
CHECKPOINT_CARD = "checkpoints/card.json"

ImageInput = str | Path | Image.Image | np.ndarray
"""What `encode` accepts: a path, a PIL image or an (H, W[, C]) uint8 array."""


@dataclass(kw_only=True)
class ImagePreprocessConfig:
    """How raw images are turned into the model's input (the `image:` section of the card)."""

    center_crop: bool = True
    """Scale the shorter side to fit, then crop the center (keeps aspect ratio); false: stretch to size."""
    background: list[int] = field(default_factory=lambda: [255, 255, 255])
    """RGB colour that transparent pixels (RGBA, LA, palette with transparency) are composited on."""


@dataclass(kw_only=True)
class VQTrainConfig:
    """How the VQ-VAE is fitted (the `train:` section of the card)."""

    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 32
    """Images per step."""
    lr: float = 2e-3
    """Peak learning rate (Adam)."""
    warmup_steps: int = 100
    """Linear warm-up steps; then cosine decay to `min_lr_ratio * lr`."""
    min_lr_ratio: float = 0.05
    """Final learning rate as a fraction of `lr`."""
    grad_clip: float = 1.0
    """Gradient norm clipping (0 disables)."""
    recon_loss: Literal["l1", "l2", "l1+l2"] = "l1+l2"
    """Pixel reconstruction loss."""
    gan_weight: float = 0.0
    """Weight of the patch-GAN (hinge) generator loss; 0 (default) disables the discriminator."""
    gan_start: int = 1000
    """Step at which the patch-GAN term switches on (when gan_weight > 0)."""
    seed: int = 0
    """Seed for init, batch sampling and code restarts."""
    sample_every: int = 500
    """Write a reconstruction grid PNG to samples/ every N steps (0: only at the end)."""
    checkpoint_every: int = 500
    """Write checkpoints/last.pt every N steps (and always at the end)."""
    max_minutes: float = 0.0
    """Time budget: training ends (and saves) after this many minutes, with the learning-rate
    schedule compressed to fit (progress = max(step / steps, elapsed / budget)). 0: no limit,
    and resuming is then bit-exact."""
    warmup_continuous: float = 0.0
    """Share of the budget (0..1) trained as a plain autoencoder (no quantization) before the
    codebook is initialised by k-means on encoder outputs and quantization switches on."""
    fg_weight: float = 0.0
    """Extra loss weight on pixels that differ from their image's median colour (small objects
    on plain backgrounds): weight = 1 + fg_weight * min(1, distance / fg_scale). 0: plain loss."""
    fg_scale: float = 0.2
    """Colour distance (in [-1, 1] pixel units) at which a pixel gets the full foreground weight."""
    edge_weight: float = 0.0
    """Weight of an L1 loss on horizontal and vertical pixel differences (sharper object edges). 0: off."""
    augment: bool = False
    """Random flips (and transposes of square images) of each training image: 8x more distinct
    inputs, against overfitting small image sets. Only for images whose meaning survives a flip."""
    usage_images: int = 2000
    """Images encoded after fitting for the codebook usage report and the reconstruction PSNR."""


@dataclass(kw_only=True)
class ImageVQCard:
    """An image-vq tokenizer card: preprocessing, model and training settings."""

    name: str = "image-vq"
    """Tokenizer name."""
    description: str = ""
    """Free text."""
    image: ImagePreprocessConfig = field(default_factory=ImagePreprocessConfig)
    """Input preprocessing."""
    model: VQConfig = field(default_factory=VQConfig)
    """VQ-VAE architecture."""
    train: VQTrainConfig = field(default_factory=VQTrainConfig)
    """Fitting settings."""


def parse_card(card: dict[str, Any] | ImageVQCard) -> ImageVQCard:
    """A card mapping (as read by `tmt.tokenizers.base.load_card`) -> typed card."""
    if isinstance(card, ImageVQCard):
        return card
    data = {k: v for k, v in card.items() if k != "class"}
    if card.get("class", CLASS_NAME) != CLASS_NAME:
        raise TokenizerError(f"card names class '{card.get('class')}', expected '{CLASS_NAME}'")
    try:
        parsed = from_dict(ImageVQCard, data)
    except Exception as e:  # ConfigError: name the card
        raise TokenizerError(f"image-vq card '{card.get('name', '?')}': {e}") from None
    parsed.model.check()
    return parsed


def card_dict(card: ImageVQCard) -> dict[str, Any]:
    d: dict[str, Any] = {"class": CLASS_NAME}
    d.update(to_dict(card))
    return d


# ---------------------------------------------------------------- image loading
MAX_IMAGE_PIXELS = 64_000_000
"""Largest image (width x height) tmt decodes; a bigger file is refused before decoding (memory)."""


def load_image(src: ImageInput, size: tuple[int, int], *, center_crop: bool = True,
               background: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """Any image -> (H, W, 3) uint8 RGB of `size` = (height, width).

    Handles RGB, RGBA/LA/palette (alpha composited on `background`), grayscale, 16-bit and
    float images, CMYK, EXIF rotation. Unreadable files raise TokenizerError naming the file.
    """
    if isinstance(src, np.ndarray):
        im = _from_array(src)
    elif isinstance(src, Image.Image):
        im = src
    else:
        p = Path(src)
        try:
            with Image.open(p) as opened:
                if opened.width * opened.height > MAX_IMAGE_PIXELS:
                    raise TokenizerError(
                        f"{p}: image of {opened.width}x{opened.height} pixels exceeds the limit of "
                        f"{MAX_IMAGE_PIXELS:,} pixels; downscale it first or remove it from the manifest"
                    )
                opened.load()
                im = ImageOps.exif_transpose(opened) or opened
                if im is opened:
                    im = opened.copy()
        except FileNotFoundError:
            raise TokenizerError(f"image not found: {p} (check the manifest's image path)") from None
        except IsADirectoryError:
            raise TokenizerError(f"image path is a directory, not a file: {p}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise TokenizerError(
                f"cannot read image {p}: {e}. Re-save it as PNG/JPEG or remove it from the manifest."
            ) from None
    im = _to_rgb(im, background)
    h, w = size
    if im.size != (w, h):
        if center_crop:
            im = ImageOps.fit(im, (w, h), method=Image.Resampling.BICUBIC)
        else:
            im = im.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def _from_array(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise TokenizerError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.asarray(a, dtype=np.float32)
        if a.max(initial=0.0) <= 1.0:
            a = a * 255.0
        a = np.clip(a + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def _to_rgb(im: Image.Image, background: Sequence[int]) -> Image.Image:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float32)
        top = 65535.0 if a.max(initial=0.0) > 255 else 255.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    has_alpha = im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*[int(c) for c in background[:3]], 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_grid(rows: Sequence[np.ndarray], pad: int = 2) -> Image.Image:
    """Rows of (N, H, W, 3) uint8 images -> one PNG-able grid image."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    out = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = img
    return Image.fromarray(out)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


# ---------------------------------------------------------------- the tokenizer


class ImageTokenizer:
    """VQ image tokenizer: `encode` images -> fixed-length code ids; `decode` ids -> images."""

    modality = "image"

    def __init__(self, card: dict[str, Any] | ImageVQCard, model: VQVAE | None = None, *,
                 fingerprint: str | None = None, stats: dict[str, Any] | None = None) -> None:
        self.cfg = parse_card(card)
        self.card: dict[str, Any] = card_dict(self.cfg)
        self.name: str = self.cfg.name
        self.model = model if model is not None else VQVAE(self.cfg.model)
        self.model.eval()
        self._fingerprint = fingerprint
        self.stats: dict[str, Any] = dict(stats or {})
        self.grid: tuple[int, int] = self.cfg.model.grid()
        """(h, w) of the code grid."""
        self.tokens_per_image: int = self.grid[0] * self.grid[1]
        """Exactly this many tokens per image."""
        self.image_size: tuple[int, int] = self.cfg.model.size_hw()
        """(height, width) of encoded and decoded images."""
        self.batch_size = 64

    # -- protocol
    @property
    def vocab_size(self) -> int:
        return int(self.cfg.model.codebook_size)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            raise TokenizerError(f"image tokenizer '{self.name}' has not been fitted or saved yet (no fingerprint)")
        return self._fingerprint

    def load_images(self, batch: Sequence[ImageInput]) -> np.ndarray:
        """Inputs -> (N, H, W, 3) uint8 at the card's size."""
        h, w = self.image_size
        if not len(batch):
            return np.zeros((0, h, w, 3), dtype=np.uint8)
        pre = self.cfg.image
        return np.stack([load_image(x, (h, w), center_crop=pre.center_crop, background=pre.background) for x in batch])

    def encode_array(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, h * w) int64 code ids."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                ids = self.model.encode(to_tensor(images[i:i + self.batch_size]))
                out.append(ids.reshape(ids.shape[0], -1).numpy())
        if not out:
            return np.zeros((0, self.tokens_per_image), dtype=np.int64)
        return np.concatenate(out).astype(np.int64)

    def encode(self, batch: Sequence[ImageInput]) -> list[np.ndarray]:
        """Images (paths, PIL images or arrays) -> one array of exactly `tokens_per_image` ids each."""
        return list(self.encode_array(self.load_images(batch)))

    def _check_tokens(self, tokens: Sequence[np.ndarray | Sequence[int]]) -> np.ndarray:
        arrs = []
        for i, t in enumerate(tokens):
            a = np.asarray(t).reshape(-1)
            if a.size != self.tokens_per_image:
                raise TokenizerError(
                    f"image tokens #{i}: got {a.size} ids, the tokenizer '{self.name}' needs exactly "
                    f"{self.tokens_per_image} ({self.grid[0]}x{self.grid[1]})"
                )
            if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
                raise TokenizerError(f"image tokens #{i}: ids must be in [0, {self.vocab_size}), got {a.min()}..{a.max()}")
            arrs.append(a.astype(np.int64))
        h, w = self.grid
        return np.stack(arrs).reshape(-1, h, w) if arrs else np.zeros((0, h, w), dtype=np.int64)

    def decode_array(self, tokens: Sequence[np.ndarray | Sequence[int]]) -> np.ndarray:
        """Token arrays -> (N, H, W, 3) uint8."""
        ids = self._check_tokens(tokens)
        out = []
        with torch.inference_mode():
            for i in range(0, len(ids), self.batch_size):
                out.append(to_uint8(self.model.decode(torch.from_numpy(ids[i:i + self.batch_size]))))
        h, w = self.image_size
        return np.concatenate(out) if out else np.zeros((0, h, w, 3), dtype=np.uint8)

    def decode(self, tokens: Sequence[np.ndarray | Sequence[int]]) -> list[Image.Image]:
        """Token arrays (each `tokens_per_image` ids, row-major) -> RGB PIL images."""
        return [Image.fromarray(a) for a in self.decode_array(tokens)]

    def reconstruct(self, batch: Sequence[ImageInput]) -> list[Image.Image]:
        """encode then decode: what the translation model's image outputs can look like at best."""
        return self.decode(self.encode(batch))

    # -- persistence
    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save as save_safetensors

        d = Path(directory)
        make_dirs(d)
        tensors = {k: v.detach().contiguous().clone() for k, v in self.model.state_dict().items()}
        atomic_write_bytes(d / WEIGHTS, save_safetensors(tensors))
        self._fingerprint = fingerprint_of(self.card, [d / WEIGHTS])
        info = {
            "kind": self.modality, "class": CLASS_NAME, "name": self.name, "card": self.card,
            "vocab_size": self.vocab_size, "fingerprint": self._fingerprint,
            "grid": list(self.grid), "tokens_per_image": self.tokens_per_image,
            "image_size": list(self.image_size), "assets": [WEIGHTS], "stats": self.stats,
        }
        atomic_write_json(d / "tokenizer.json", info)

    @classmethod
    def load(cls, directory: str | Path, **_: Any) -> ImageTokenizer:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory)
        info = read_tokenizer_json(d)
        if info["class"] != CLASS_NAME:
            raise TokenizerError(f"{d} holds a '{info['class']}' tokenizer, not {CLASS_NAME}")
        if not (d / WEIGHTS).is_file():
            raise TokenizerError(f"{d}: missing {WEIGHTS}; re-fit with `tmt tokenize image fit`")
        cfg = parse_card(info["card"])
        model = VQVAE(cfg.model)
        try:
            state = load_file(str(d / WEIGHTS))
        except (SafetensorError, OSError) as e:
            raise TokenizerError(f"{d / WEIGHTS} is not a readable safetensors file: {e}") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise TokenizerError(f"{d / WEIGHTS} does not match the card's architecture: {e}") from None
        return cls(info["card"], model, fingerprint=info["fingerprint"], stats=info.get("stats"))

    # -- fitting
    @classmethod
    def fit(cls, card: dict[str, Any] | ImageVQCard, images: Sequence[ImageInput], out_dir: str | Path, *,
            resume: bool = True, progress: bool = True,
            on_step: Callable[[int, dict[str, float]], None] | None = None) -> ImageTokenizer:
        """Train the VQ-VAE on `images` and save the tokenizer to `out_dir` (see `fit_image_tokenizer`)."""
        return fit_image_tokenizer(card, images, out_dir, resume=resume, progress=progress, on_step=on_step)


def _progress(step: int, elapsed: float, t: VQTrainConfig) -> float:
    """Share of the training budget used: by steps, or by time when a time budget is set."""
    p = step / max(1, t.steps)
    if t.max_minutes:
        p = max(p, elapsed / (60.0 * t.max_minutes))
    return min(1.0, p)


def _lr_at(step: int, progress: float, t: VQTrainConfig) -> float:
    if step < t.warmup_steps:
        return t.lr * (step + 1) / max(1, t.warmup_steps)
    warm = t.warmup_steps / max(1, t.steps)
    frac = (progress - warm) / max(1e-9, 1 - warm)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, frac)))))


def _pixel_weights(x: torch.Tensor, t: VQTrainConfig) -> torch.Tensor | None:
    """(B, 1, H, W) loss weights emphasising pixels far from the image's median colour."""
    if t.fg_weight <= 0:
        return None
    med = x.flatten(2).median(dim=2).values[:, :, None, None]  # (B, 3, 1, 1)
    dist = (x - med).pow(2).sum(1, keepdim=True).sqrt()
    w = 1.0 + t.fg_weight * (dist / t.fg_scale).clamp(max=1.0)
    return w / w.mean(dim=(1, 2, 3), keepdim=True)  # keep the loss scale comparable


def _dihedral(x: torch.Tensor) -> torch.Tensor:
    """Per image: random horizontal flip, vertical flip and (square images) transpose."""
    flips = torch.rand(3, x.shape[0]) < 0.5
    x = torch.where(flips[0, :, None, None, None], x.flip(3), x)
    x = torch.where(flips[1, :, None, None, None], x.flip(2), x)
    if x.shape[2] == x.shape[3]:
        x = torch.where(flips[2, :, None, None, None], x.transpose(2, 3), x)
    return x


_RESUMABLE_CHANGES = ("steps", "max_minutes", "sample_every", "checkpoint_every", "usage_images")
"""Train settings that may change between a run and its resumption (e.g. train longer)."""


def _resume_key(card: dict[str, Any]) -> dict[str, Any]:
    c = json.loads(json.dumps(card))
    for k in _RESUMABLE_CHANGES:
        c.get("train", {}).pop(k, None)
    return dict(c)


def _kmeans_init(model: VQVAE, pixels: torch.Tensor, max_images: int = 256) -> None:
    """k-means codebook init on the encoder outputs of (up to) `max_images` random training images."""
    idx = torch.randint(0, len(pixels), (min(max_images, len(pixels)),))
    with torch.no_grad():
        z = model.encoder(pixels[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1.0))
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    model.quantizer.init_kmeans(flat)
    log.info("quantization on: codebook initialised by k-means on %d encoder outputs", len(flat))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign file
        raise TokenizerError(f"cannot load checkpoint {path}: {e}; delete it to start over") from None
    return state


def fit_image_tokenizer(card: dict[str, Any] | ImageVQCard, images: Sequence[ImageInput] | np.ndarray,
                        out_dir: str | Path, *, resume: bool = True, progress: bool = True,
                        on_step: Callable[[int, dict[str, float]], None] | None = None) -> ImageTokenizer:
    """Fit an image-vq tokenizer and save it (tokenizer.json + vq.safetensors) to `out_dir`.

    `images`: paths / PIL images / arrays, or an (N, H, W, 3) uint8 array already at the card's size.
    Writes reconstruction grids to `out_dir/samples/` and a resumable checkpoint to
    `out_dir/checkpoints/last.pt`; with `resume=True` an existing checkpoint made with the same
    card continues where it stopped (bit-exact on the same machine and thread count).
    """
    from tqdm import tqdm

    cfg = copy.deepcopy(parse_card(card))
    t = cfg.train
    out = Path(out_dir)
    make_dirs(out)
    tok = ImageTokenizer(cfg)
    tok.model.train()

    # data: everything in memory as uint8 (2000 images of 64x64 are 24 MB)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        data = np.ascontiguousarray(images, dtype=np.uint8)
    else:
        data = tok.load_images(list(images))
    if len(data) == 0:
        raise TokenizerError("no images to fit the image tokenizer on (is the manifest's train split empty?)")
    if data.shape[1:3] != tok.image_size:
        raise TokenizerError(f"image array has size {data.shape[1:3]}, the card needs {tok.image_size}")
    pixels = torch.from_numpy(data)  # (N, H, W, 3) uint8
    log.info("fitting %s on %d images of %dx%d -> %dx%d=%d tokens, %d codes",
             cfg.name, len(data), *tok.image_size, *tok.grid, tok.tokens_per_image, tok.vocab_size)

    torch.manual_seed(t.seed)
    model = VQVAE(cfg.model)
    model.train()
    # channels-last activations: faster conv steps on CPU (oneDNN; 147 vs 180 ms per batch-16 step, 1 thread)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (missing from the stubs)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(0.9, 0.99))
    disc: PatchDiscriminator | None = None
    opt_d: torch.optim.Optimizer | None = None
    if t.gan_weight > 0:
        disc = PatchDiscriminator(cfg.model.in_channels)
        opt_d = torch.optim.Adam(disc.parameters(), lr=t.lr, betas=(0.5, 0.9))

    ckpt, ckpt_card = out / CHECKPOINT, out / CHECKPOINT_CARD
    card_json = json.dumps(card_dict(cfg), sort_keys=True)
    step = 0
    elapsed_before = 0.0
    if resume and ckpt.is_file():
        old_card = read_json_object(ckpt_card, what="checkpoint card", error=TokenizerError) if ckpt_card.is_file() else None
        if old_card is not None and _resume_key(old_card) != _resume_key(card_dict(cfg)):
            raise TokenizerError(
                f"{ckpt} was made with a different card; fit into a new --out directory or delete {out / 'checkpoints'}"
            )
        state = _load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if disc is not None and opt_d is not None and "disc" in state:
            disc.load_state_dict(state["disc"])
            opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["rng"])
        step = int(state["step"])
        elapsed_before = float(state.get("elapsed", 0.0))
        log.info("resuming from %s at step %d", ckpt, step)
    atomic_write_text(ckpt_card, card_json)

    def checkpoint() -> None:
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "rng": torch.get_rng_state(),
                 "elapsed": time.monotonic() - t0}
        if disc is not None and opt_d is not None:
            state |= {"disc": disc.state_dict(), "opt_d": opt_d.state_dict()}
        _save_checkpoint(ckpt, state)

    fixed = data[: min(8, len(data))]

    def sample(tag: str) -> None:
        model.eval()
        with torch.inference_mode():
            rec = to_uint8(model.decode(model.encode(to_tensor(fixed))))
        model.train()
        path = out / "samples" / f"{tag}.png"
        with atomic_open(path, "wb") as f:
            image_grid([fixed, rec]).save(f, format="PNG")

    t0 = time.monotonic() - elapsed_before
    bar = tqdm(total=t.steps, initial=step, desc=f"fit {cfg.name}", unit="step", disable=not progress, dynamic_ncols=True)
    metrics: dict[str, float] = {}
    stopped_early = False
    while step < t.steps and _progress(step, time.monotonic() - t0, t) < 1.0:
        idx = torch.randint(0, len(pixels), (t.batch_size,))
        x = pixels[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # NHWC memory: channels-last
        if t.augment:
            x = _dihedral(x)
        lr = _lr_at(step, _progress(step, time.monotonic() - t0, t), t)
        for g in opt.param_groups:
            g["lr"] = lr
        quantize = _progress(step, time.monotonic() - t0, t) >= t.warmup_continuous
        if quantize and not bool(model.quantizer.initialized) and t.warmup_continuous > 0:
            _kmeans_init(model, pixels)
        o = model(x, quantize=quantize)
        rec = reconstruction_loss(o.recon, x, t.recon_loss, _pixel_weights(x, t))
        loss = rec + o.commitment_loss
        if t.edge_weight > 0:
            loss = loss + t.edge_weight * gradient_loss(o.recon, x)
        use_gan = disc is not None and opt_d is not None and step >= t.gan_start
        if use_gan:
            assert disc is not None
            g_loss = -disc(o.recon).mean()
            loss = loss + t.gan_weight * g_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        if use_gan:
            assert disc is not None and opt_d is not None
            d_loss = hinge_d_loss(disc(x), disc(o.recon.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        step += 1
        metrics = {"loss": float(loss.detach()), "recon": float(rec.detach()), "commit": float(o.commitment_loss.detach()),
                   "ppl": float(o.perplexity), "restarts": float(o.restarted), "lr": lr}
        bar.update(1)
        if step % 10 == 0 or step == t.steps:
            bar.set_postfix(recon=f"{metrics['recon']:.4f}", ppl=f"{metrics['ppl']:.0f}", dead=int(o.restarted))
        if on_step is not None:
            on_step(step, metrics)
        if t.sample_every and step % t.sample_every == 0:
            sample(f"step{step:06d}")
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.steps:
            checkpoint()
    bar.close()
    elapsed = time.monotonic() - t0
    if step < t.steps:
        stopped_early = True
        log.warning("time budget max_minutes=%s used up at step %d of %d", t.max_minutes, step, t.steps)
    checkpoint()
    sample("final")

    # usage report over (up to) usage_images training images
    model.eval()
    tok = ImageTokenizer(cfg, model)
    sub = data[: max(1, min(len(data), t.usage_images))]
    ids = tok.encode_array(sub)
    recon = tok.decode_array(list(ids))
    usage = codebook_usage(torch.from_numpy(ids), tok.vocab_size)
    tok.stats = {
        "steps": step, "stopped_early": stopped_early, "train_images": len(data),
        "fit_seconds": round(elapsed, 1), "steps_per_second": round(step / max(elapsed, 1e-9), 3) if step else 0.0,
        "final_recon_loss": metrics.get("recon"), "usage": usage,
        "psnr_db": round(float(np.mean([psnr(a, b) for a, b in zip(sub, recon, strict=True)])), 2),
    }
    tok.save(out)
    log.info("codebook usage: perplexity %.1f, %d/%d codes used (%.1f%%), PSNR %.2f dB",
             usage["perplexity"], usage["codes_used"], usage["codebook_size"], usage["codes_used_pct"],
             tok.stats["psnr_db"])
    return tok
