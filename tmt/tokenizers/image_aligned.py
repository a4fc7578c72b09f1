"""The text-aligned image tokenizer (class `image-aligned`): <= 32 tokens per image, trained with
reconstruction plus an image-caption contrastive term; its decoder is the image detokenizer.

Same directory layout and protocol as `image-vq` (tmt.tokenizers.image)::

    tokenizer.json     kind=image, class=image-aligned, card, vocab_size, fingerprint, grid, stats
    aligned.safetensors encoder, quantizer, decoder, caption encoder and image head
    samples/*.png, checkpoints/ (last.pt, card.json) as for image-vq

Python API::

    tok = AlignedImageTokenizer.fit(card, images, captions, "exp/tok/image")  # image_aligned_fit.py
    ids = tok.encode(["a.png"])      # [array(32,)]
    imgs = tok.decode(ids)           # [PIL.Image]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch

from tmt.config import Spelling, from_dict, to_dict
from tmt.core.budget import MAX_MINUTES_KEY
from tmt.core.device import resolve_dtype
from tmt.core.io import atomic_write_bytes, atomic_write_json, make_dirs
from tmt.models.aligned_vq import AlignedVQ, AlignedVQConfig, caption_bytes
from tmt.tokenizers.base import TokenizerError, fingerprint_of, read_tokenizer_json
from tmt.tokenizers.image import (
    ImageInput,
    ImagePreprocessConfig,
    ImageTokenizer,
    VQTrainConfig,
    check_pairs,
    to_tensor,
)
from tmt.tokenizers.image_judge import kept_judge, load_judge, per_caption

CLASS_NAME = "image-aligned"
WEIGHTS = "aligned.safetensors"
REFINE_LR = 0.02
"""Default learning rate of analysis-by-synthesis encoding (10 steps at 0.02 changed 41-46% of the codes
and fixed 15 of 18 wrong test_novel reconstructions; 0.005 fixed 9, docs/results.md, session 26)."""


@dataclass(kw_only=True)
class AlignedTrainConfig(VQTrainConfig):
    """Fitting settings (the `train:` section): those of image-vq plus the alignment term.
    (`augment` of image-vq is not used by this family: flips contradict the captions;
    `warmup_continuous` trains without rounding the latents first, for both quantizers; `gan_weight`
    adds image-vq's patch-GAN term.)"""

    contrastive_weight: float = 0.1
    """Weight of the image-caption InfoNCE term (0: a plain reconstruction tokenizer)."""
    contrastive_batch: int = 0
    """Images per step for the contrastive term (0: the same batch as reconstruction)."""
    hard_negatives: bool = False
    """Add one word-swapped copy of each caption as a wrong caption for every image of the batch
    (`tmt.models.aligned_vq.word_swap_negatives`): the tokens must then tell captions apart that
    differ in one detail, e.g. the shape."""
    compile: bool = False
    """Run the model's training forward (and its backward) through `torch.compile`: inductor fuses
    the GroupNorm, activation and dtype-cast work that takes about a third of an eager CPU step.
    The compile itself (about half a minute on 2 cores) counts against `max_minutes`. Needs a C++
    compiler; results match eager up to floating-point rounding."""
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    """Autocast dtype of the forward pass (FSQ rounding and the pixel losses stay float32). `auto`:
    `bfloat16` where the CPU has bf16 matrix units (AMX, AVX512-BF16), else `float32`. On such a
    2-core machine a bare bf16 step is 1.29x faster and a 20-minute fit makes 1.16x the steps
    (docs/results.md, session 11); without them bf16 is emulated: 273 steps in 20 minutes against
    2959 in float32 on an AVX2-only CPU (session 37)."""

    def resolved_dtype(self) -> str:
        """`dtype` on this machine's CPU (`auto` resolved), the one the fit runs in."""
        return resolve_dtype(self.dtype, "cpu")


@dataclass(kw_only=True)
class AlignedCard:
    """An image-aligned tokenizer card: preprocessing, model and training settings."""

    name: str = "image-aligned"
    """Tokenizer name."""
    description: str = ""
    """Free text."""
    image: ImagePreprocessConfig = field(default_factory=ImagePreprocessConfig)
    """Input preprocessing."""
    model: AlignedVQConfig = field(default_factory=AlignedVQConfig)
    """Architecture."""
    train: AlignedTrainConfig = field(default_factory=AlignedTrainConfig)
    """Fitting settings."""


SPELLINGS = (Spelling(key=MAX_MINUTES_KEY, field="train.max_minutes", old="max_minutes"),)
"""`--set max_minutes=N` still sets `train.max_minutes`, with a warning (as for image-vq)."""


def parse_card(card: dict[str, Any] | AlignedCard) -> AlignedCard:
    """A card mapping (as read by `tmt.tokenizers.base.load_card`) -> typed card."""
    if isinstance(card, AlignedCard):
        return card
    if card.get("class", CLASS_NAME) != CLASS_NAME:
        raise TokenizerError(f"card names class '{card.get('class')}', expected '{CLASS_NAME}'")
    try:
        parsed = from_dict(AlignedCard, {k: v for k, v in card.items() if k != "class"})
    except Exception as e:  # ConfigError: name the card
        raise TokenizerError(f"image-aligned card '{card.get('name', '?')}': {e}") from None
    try:
        parsed.model.check()
    except TokenizerError:
        raise
    except Exception as e:
        raise TokenizerError(str(e)) from None
    t = parsed.train
    if t.augment:
        raise TokenizerError(f"image-aligned card '{parsed.name}': train.augment is not supported by this family "
                             "(flips contradict the captions); remove it from the card")
    return parsed


def card_dict(card: AlignedCard) -> dict[str, Any]:
    d: dict[str, Any] = {"class": CLASS_NAME}
    d.update(to_dict(card))
    return d


class AlignedImageTokenizer(ImageTokenizer):
    """Text-aligned image tokenizer: `encode` images -> <= 32 code ids; `decode` ids -> images."""

    @staticmethod
    def token_grid(card: dict[str, Any]) -> tuple[int, int] | None:
        """The feature grid of the `grid` layout; None for `queries`, whose tokens each read the whole image."""
        model = parse_card(dict(card)).model
        return model.grid() if model.layout == "grid" else None

    def __init__(self, card: dict[str, Any] | AlignedCard, model: AlignedVQ | None = None, *,
                 fingerprint: str | None = None, stats: dict[str, Any] | None = None,
                 refine_steps: int = 0, refine_lr: float = REFINE_LR) -> None:
        if refine_steps < 0 or refine_lr <= 0:
            raise TokenizerError(f"refine_steps must be >= 0 and refine_lr > 0, got {refine_steps} and {refine_lr}")
        self.refine_steps = refine_steps
        """Analysis-by-synthesis encoding (`AlignedVQ.refine`): after the encoder, this many Adam
        steps on each image's latents against the decoder's image under the fit's own pixel objective,
        keeping the best codes (never worse than the encoder's). 0: the encoder's codes. An encoding
        setting, not part of the tokenizer: the decoder, the vocabulary and the fingerprint are the
        same either way. 10 steps: exact-scene reconstructions 96/82% -> 99/97% (valid/test_novel,
        docs/results.md, session 26), at about 30x the encoding time."""
        self.refine_lr = refine_lr
        """Adam learning rate of the refinement (latent units)."""
        self.acfg = parse_card(card)
        self.card = card_dict(self.acfg)
        self.name = self.acfg.name
        self.model = model if model is not None else AlignedVQ(self.acfg.model)  # type: ignore[assignment]
        self.model.eval()
        self._fingerprint = fingerprint
        self.stats = dict(stats or {})
        self.grid = self.acfg.model.grid()
        self.tokens_per_image = self.grid[0] * self.grid[1]
        self.image_size = self.acfg.model.size_hw()
        self.batch_size = 64
        self.judge = None
        self.cfg = self.acfg  # type: ignore[assignment]  # image / model sections read by ImageTokenizer

    @property
    def vocab_size(self) -> int:
        return int(self.acfg.model.num_codes())

    def encode_array(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, tokens_per_image) int64 code ids, refined when `refine_steps` > 0."""
        if self.refine_steps <= 0:
            return super().encode_array(images)
        from tmt.tokenizers.image_fit import pixel_objective

        train = self.acfg.train

        def objective(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return pixel_objective(recon, x, train)

        model = cast(AlignedVQ, self.model)
        out = [np.zeros((0, self.tokens_per_image), dtype=np.int64)]
        for i in range(0, len(images), self.batch_size):
            ids = model.refine(to_tensor(images[i:i + self.batch_size]), objective, self.refine_steps,
                                    self.refine_lr)
            out.append(ids.reshape(ids.shape[0], -1).numpy())  # int64 already
        return np.concatenate(out)

    @property
    def caption_judge(self) -> str | None:
        """What `caption_alignment` reads: the pixel judge where one was fitted, else the card's own
        code head and caption encoder (trained by the contrastive term)."""
        return "pixel judge" if self.judge is not None else "code head"

    def caption_alignment(self, codes: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
        """(n,) cosine between the image embedding of each code sequence and the embedding of its caption:
        how well an image matches a caption (reranking). With a fitted pixel judge the judge scores the
        decoded images (ImageTokenizer.caption_alignment); without, the card's own contrastive embeddings
        of the codes do."""
        if self.judge is not None:
            return super().caption_alignment(codes, captions)
        check_pairs(codes, captions)
        model = cast(AlignedVQ, self.model)
        ids = torch.from_numpy(self._check_tokens(codes))
        if not len(ids):
            return np.zeros(0, dtype=np.float64)
        max_len, b = self.acfg.model.max_caption_bytes, self.batch_size
        text = per_caption(captions, lambda c: model.caption_embedding(caption_bytes(c, max_len)), b)
        image = torch.cat([model.code_embedding(ids[i:i + b]) for i in range(0, len(ids), b)])
        return (image * text).sum(-1).double().numpy()

    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save as save_safetensors

        d = Path(directory)
        make_dirs(d)
        tensors = {k: v.detach().contiguous().clone() for k, v in self.model.state_dict().items()}
        atomic_write_bytes(d / WEIGHTS, save_safetensors(tensors))
        self._fingerprint = fingerprint_of(self.card, [d / WEIGHTS])
        atomic_write_json(d / "tokenizer.json", {
            "kind": self.modality, "class": CLASS_NAME, "name": self.name, "card": self.card,
            "vocab_size": self.vocab_size, "fingerprint": self._fingerprint, "grid": list(self.grid),
            "tokens_per_image": self.tokens_per_image, "image_size": list(self.image_size),
            "assets": [WEIGHTS], "stats": self.stats, **kept_judge(d, self._fingerprint),
        })

    @classmethod
    def load(cls, directory: str | Path, *, refine_steps: int = 0, refine_lr: float = REFINE_LR,
             **_: Any) -> AlignedImageTokenizer:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        d = Path(directory)
        info = read_tokenizer_json(d)
        if info["class"] != CLASS_NAME:
            raise TokenizerError(f"{d} holds a '{info['class']}' tokenizer, not {CLASS_NAME}")
        if not (d / WEIGHTS).is_file():
            raise TokenizerError(f"{d}: missing {WEIGHTS}; re-fit with `tmt tokenize image fit`")
        cfg = parse_card(info["card"])
        model = AlignedVQ(cfg.model)
        try:
            state = load_file(str(d / WEIGHTS))
        except (SafetensorError, OSError) as e:
            raise TokenizerError(f"{d / WEIGHTS} is not a readable safetensors file: {e}") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise TokenizerError(f"{d / WEIGHTS} does not match the card's architecture: {e}") from None
        tok = cls(info["card"], model, fingerprint=info["fingerprint"], stats=info.get("stats"),
                  refine_steps=refine_steps, refine_lr=refine_lr)
        tok.judge = load_judge(d, info)
        return tok

    @classmethod
    def fit(cls, card: dict[str, Any] | AlignedCard, images: Sequence[ImageInput],  # type: ignore[override]
            out_dir: str | Path, *, captions: Sequence[Sequence[str]], resume: bool = True,
            progress: bool = True) -> AlignedImageTokenizer:
        """Train on `images` with their `captions` (one list per image) and save to `out_dir`."""
        from tmt.tokenizers.image_aligned_fit import fit_aligned_tokenizer

        return fit_aligned_tokenizer(card, images, captions, out_dir, resume=resume, progress=progress)
