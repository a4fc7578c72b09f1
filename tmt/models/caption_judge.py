"""An image-caption judge on pixels: a small CNN and a byte-level caption encoder trained contrastively
(CLIP's recipe at toy scale), for reranking generated images by how well they show their caption.

    image (B, 3, H, W) in [-1, 1] -> stride-2 conv stages (GroupNorm + SiLU) -> MLP -> unit embedding
    caption bytes (B, L)          -> CaptionEncoder (tmt.models.aligned_vq)  -> unit embedding
    score = cosine of the two

It is fitted on an image tokenizer's own reconstructions of the training images
(`tmt.tokenizers.image_judge_fit`), so it judges images the way that tokenizer's decoder draws them,
which is how every generated image looks. Unlike the image-aligned card's own head, which reads the
quantized codes, it sees what the scene parser sees: the shapes' outlines in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tmt import TmtError
from tmt.models.aligned_vq import CaptionEncoder


@dataclass(kw_only=True)
class CaptionJudgeConfig:
    """Architecture of the pixel judge (the `model` part of a tokenizer directory's `judge` entry)."""

    image_size: list[int] = field(default_factory=lambda: [64, 64])
    """[height, width] of the images it reads: set to the tokenizer's decoded size when fitted."""
    width: int = 32
    """Channels of the first conv stage (then 2x, 4x, 4x)."""
    stages: int = 4
    """Stride-2 conv stages (each halves the image)."""
    embed_dim: int = 128
    """Dimension of the shared image-caption embedding."""
    text_dim: int = 64
    """Width of the caption encoder."""
    text_layers: int = 1
    """Transformer layers of the caption encoder."""
    max_caption_bytes: int = 96
    """Captions are cut to this many UTF-8 bytes."""

    def check(self) -> None:
        h, w = self.image_size
        scale = 2 ** self.stages
        if self.stages < 1 or h % scale or w % scale:
            raise TmtError(f"caption judge: image_size {h}x{w} must be divisible by 2**stages = {scale}")
        if self.width % 8 or self.text_dim % 4:
            raise TmtError(f"caption judge: width must be a multiple of 8 (GroupNorm) and text_dim of 4 "
                           f"(attention heads); got {self.width}, {self.text_dim}")


class PixelEncoder(nn.Module):
    """(B, 3, H, W) -> (B, embed_dim): conv stages, then an MLP over the final map (position matters:
    captions say where things are)."""

    def __init__(self, cfg: CaptionJudgeConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for k in range(cfg.stages):
            o = cfg.width * min(2 ** k, 4)
            layers += [nn.Conv2d(c, o, 3, 2, 1), nn.GroupNorm(8, o), nn.SiLU(),
                       nn.Conv2d(o, o, 3, 1, 1), nn.GroupNorm(8, o), nn.SiLU()]
            c = o
        self.convs = nn.Sequential(*layers)
        h, w = (s // 2 ** cfg.stages for s in cfg.image_size)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 256), nn.SiLU(), nn.Linear(256, cfg.embed_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.convs(x))


class CaptionJudge(nn.Module):
    """Pixel encoder + caption encoder + learned temperature."""

    def __init__(self, cfg: CaptionJudgeConfig) -> None:
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.image = PixelEncoder(cfg)
        self.text = CaptionEncoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def image_embedding(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, embed_dim) unit vectors."""
        return F.normalize(self.image(x), dim=-1)

    def caption_embedding(self, captions: Tensor) -> Tensor:
        """(B, L) caption byte ids -> (B, embed_dim) unit vectors."""
        return F.normalize(self.text(captions), dim=-1)

    def loss(self, x: Tensor, captions: Tensor, same: Tensor) -> Tensor:
        """Symmetric InfoNCE over a batch of (image, caption) pairs; `same` (B, B) marks pairs whose
        captions are the same text, which are not counted as wrong (a caption can fit many images)."""
        logits = self.image_embedding(x) @ self.caption_embedding(captions).t()
        logits = logits * self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = logits.masked_fill(same & ~torch.eye(len(x), dtype=torch.bool, device=x.device), -1e4)
        target = torch.arange(len(x), device=x.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
