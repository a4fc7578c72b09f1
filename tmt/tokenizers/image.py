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

    tok = ImageTokenizer.fit(load_card("tokenizers/image-vq-f8-512.yaml"), paths, "exp/tok/image")  # image_fit.py
    ids = tok.encode(["a.png", "b.jpg"])         # [array(64,), array(64,)]
    imgs = tok.decode(ids)                       # [PIL.Image, PIL.Image]
    tok = ImageTokenizer.load("exp/tok/image")
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from tmt.config import Spelling, from_dict, to_dict
from tmt.core.budget import MAX_MINUTES_KEY, check_max_minutes
from tmt.core.io import atomic_write_bytes, atomic_write_json, make_dirs
from tmt.models.aligned_vq import caption_bytes
from tmt.models.caption_judge import CaptionJudge
from tmt.models.vq import (
    VQVAE,
    VQConfig,
)
from tmt.tokenizers.base import TokenizerError, fingerprint_of, read_tokenizer_json
from tmt.tokenizers.image_judge import kept_judge, load_judge, per_caption

log = logging.getLogger(__name__)

CLASS_NAME = "image-vq"
WEIGHTS = "vq.safetensors"

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
    max_minutes: float | None = None
    """Wall-clock budget shared by every training loop (`tmt.core.budget`): None = no limit; > 0 =
    training ends (and saves) after that many minutes, counting earlier runs it resumes, with the
    learning-rate schedule compressed to fit (progress = max(step / steps, spent / budget)); 0 is
    the deprecated spelling of None. Without a limit resuming is bit-exact."""
    warmup_continuous: float = 0.0
    """Share of the budget (0..1) trained as a plain autoencoder (no quantization) before the
    codebook is initialised by k-means on encoder outputs and quantization switches on."""
    fg_weight: float = 0.0
    """Extra loss weight on pixels that differ from their image's median colour (small objects
    on plain backgrounds): weight = 1 + fg_weight * min(1, distance / fg_scale). 0: plain loss."""
    fg_scale: float = 0.2
    """Colour distance (in [-1, 1] pixel units) at which a pixel gets the full foreground weight."""
    fg_dilate: int = 0
    """Spread the foreground weight to every pixel within this many pixels of a foreground pixel
    (a max filter of the weight map): the background between a cross's arms or a star's points
    then costs as much as the object, so a reconstruction that bleeds colour past an edge (a cross
    drawn as a square, a star as a disc) pays for it. 0: off."""
    edge_weight: float = 0.0
    """Weight of an L1 loss on horizontal and vertical pixel differences (sharper object edges). 0: off."""
    augment: bool = False
    """Random flips (and transposes of square images) of each training image: 8x more distinct
    inputs, against overfitting small image sets. Only for images whose meaning survives a flip."""
    usage_images: int = 2000
    """Images encoded after fitting for the codebook usage report and the reconstruction PSNR."""

    def __post_init__(self) -> None:
        self.max_minutes = check_max_minutes(self.max_minutes, MAX_MINUTES_KEY)


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


SPELLINGS = (Spelling(key=MAX_MINUTES_KEY, field="train.max_minutes", old="max_minutes"),)
"""`--set max_minutes=N` (the translator's old spelling) still sets `train.max_minutes`, with a warning."""


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


def _saved_card(card: dict[str, Any]) -> dict[str, Any]:
    """The card of a fitted tokenizer; one fitted before `train.max_minutes: 0` was deprecated reads
    its 0 (no limit) as null without a warning (the card is history, not a request)."""
    train = card.get("train")
    if isinstance(train, dict) and train.get("max_minutes") == 0:
        return {**card, "train": {**train, "max_minutes": None}}
    return card


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


def check_pairs(items: Sequence[Any] | np.ndarray, captions: Sequence[str], what: str = "code sequences") -> None:
    """One caption per item (code sequence or image), or a TokenizerError saying how many of each came."""
    if len(items) != len(captions):
        raise TokenizerError(f"{len(items)} {what} for {len(captions)} captions; give one caption each")


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@torch.no_grad()
def judge_alignment(judge: CaptionJudge, pixels: np.ndarray, captions: Sequence[str], batch: int = 256) -> np.ndarray:
    """(N,) cosine between each image (N, H, W, 3) uint8 and its caption under a pixel caption judge
    (`tmt.tokenizers.image_judge`)."""
    check_pairs(pixels, captions, "images")
    if not len(pixels):
        return np.zeros(0, dtype=np.float64)
    if list(pixels.shape[1:3]) != list(judge.cfg.image_size):
        raise TokenizerError(f"the caption judge reads {judge.cfg.image_size} images, got {list(pixels.shape[1:3])}")
    text = per_caption(captions, lambda c: judge.caption_embedding(caption_bytes(c, judge.cfg.max_caption_bytes)),
                       batch)
    image = torch.cat([judge.image_embedding(to_tensor(pixels[i:i + batch])) for i in range(0, len(pixels), batch)])
    return (image * text).sum(-1).double().numpy()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------- the tokenizer


class ImageTokenizer:
    """VQ image tokenizer: `encode` images -> fixed-length code ids; `decode` ids -> images."""

    modality = "image"

    @staticmethod
    def token_grid(card: dict[str, Any]) -> tuple[int, int] | None:
        """(h, w) of the image patches a card's tokens stand for, row-major; None where tokens are not
        patches. Read by the object/background split of training and scoring (tmt.training.token_split)."""
        return parse_card(dict(card)).model.grid()

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
        self.judge: CaptionJudge | None = None
        """The pixel caption judge fitted beside this tokenizer (`tmt tokenize image fit-judge`), if any."""

    # -- protocol
    @property
    def vocab_size(self) -> int:
        return int(self.cfg.model.codebook_size)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            raise TokenizerError(f"image tokenizer '{self.name}' has not been fitted or saved yet (no fingerprint)")
        return self._fingerprint

    def code_features(self) -> np.ndarray:
        """(vocab_size, F) float32 features of every code id: what the model knows about how codes relate
        (FSQ levels, VQ codebook vectors), read by `tmt train --set image_code_init=W`."""
        return self.model.code_features().cpu().numpy().astype(np.float32)

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

    @property
    def caption_judge(self) -> str | None:
        """What `caption_alignment` reads: 'pixel judge', or None where this tokenizer has no judge."""
        return "pixel judge" if self.judge is not None else None

    def caption_alignment(self, codes: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        """(n,) cosine between the image each code sequence decodes to and its caption under the pixel
        judge: how well an image shows its caption (reranking, `--rerank-align`)."""
        if self.judge is None:
            raise TokenizerError(f"image tokenizer '{self.name}' has no caption judge; fit one with "
                                 "`tmt tokenize image fit-judge --tokenizer DIR --manifest TRAIN`")
        check_pairs(codes, captions)
        return judge_alignment(self.judge, self.decode_array(codes), captions, self.batch_size)

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
            **kept_judge(d, self._fingerprint),
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
        card = _saved_card(info["card"])
        cfg = parse_card(card)
        model = VQVAE(cfg.model)
        try:
            state = load_file(str(d / WEIGHTS))
        except (SafetensorError, OSError) as e:
            raise TokenizerError(f"{d / WEIGHTS} is not a readable safetensors file: {e}") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise TokenizerError(f"{d / WEIGHTS} does not match the card's architecture: {e}") from None
        tok = cls(card, model, fingerprint=info["fingerprint"], stats=info.get("stats"))
        tok.judge = load_judge(d, info)
        return tok

    # -- fitting
    @classmethod
    def fit(cls, card: dict[str, Any] | ImageVQCard, images: Sequence[ImageInput], out_dir: str | Path, *,
            resume: bool = True, progress: bool = True,
            on_step: Callable[[int, dict[str, float]], None] | None = None) -> ImageTokenizer:
        """Train the VQ-VAE on `images` and save the tokenizer to `out_dir`
        (`tmt.tokenizers.image_fit.fit_image_tokenizer`)."""
        from tmt.tokenizers.image_fit import fit_image_tokenizer

        return fit_image_tokenizer(card, images, out_dir, resume=resume, progress=progress, on_step=on_step)
