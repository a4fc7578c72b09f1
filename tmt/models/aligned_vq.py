"""A text-aligned image tokenizer model: few image tokens that carry what captions say.

    image (B, 3, H, W) in [-1, 1]
      -> Encoder (tmt.models.vq)        strided convs + residual blocks  -> (B, D, h, w), h * w <= 32
      -> quantizer                      FSQ or EMA VQ from `vector-quantize-pytorch` -> ids (B, h * w)
      -> Decoder (tmt.models.vq)        the image detokenizer            -> (B, 3, H, W)
    quantized tokens -> flatten -> MLP -> image embedding  \
                                                             InfoNCE over the batch (training only)
    caption bytes -> CaptionEncoder (tiny transformer) ->   /

The caption encoder reads UTF-8 bytes (no vocabulary to fit), so the alignment term works
for any image-text corpus. It is trained jointly and kept in the weights (an image-text
embedding for free), but encoding and decoding images never run it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vector_quantize_pytorch import FSQ, VectorQuantize

from tmt import TmtError
from tmt.models.vq import Decoder, Encoder, VQConfig

PAD_BYTE = 256
"""Padding id of the caption byte sequences (bytes are 0..255)."""


@dataclass(kw_only=True)
class AlignedVQConfig(VQConfig):
    """Architecture of the text-aligned tokenizer (the `model:` section of an image-aligned card).

    The conv fields are those of `VQConfig`; `codebook_size` is used by the EMA VQ only (FSQ has
    prod(fsq_levels) codes)."""

    quantizer: Literal["fsq", "vq"] = "fsq"
    """fsq: finite scalar quantization (no codebook to collapse); vq: EMA VQ with k-means init
    and dead-code expiry."""
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    """FSQ levels per latent dimension; the vocabulary is their product (8*5*5*5 = 1000)."""
    kmeans_init: bool = True
    """EMA VQ: initialise the codebook by k-means on the first batch."""
    max_tokens: int = 32
    """Refuse cards whose grid gives more tokens than this."""
    embed_dim: int = 128
    """Dimension of the shared image-caption embedding."""
    text_dim: int = 64
    """Width of the caption encoder."""
    text_layers: int = 1
    """Transformer layers of the caption encoder."""
    max_caption_bytes: int = 96
    """Captions are cut to this many UTF-8 bytes."""

    def num_codes(self) -> int:
        """The image vocabulary size."""
        return math.prod(self.fsq_levels) if self.quantizer == "fsq" else self.codebook_size

    def check(self) -> None:
        super().check()
        h, w = self.grid()
        if h * w > self.max_tokens:
            raise TmtError(f"image-aligned card: grid {h}x{w} gives {h * w} tokens, more than max_tokens={self.max_tokens}")
        if self.quantizer == "fsq" and (not self.fsq_levels or min(self.fsq_levels) < 2):
            raise TmtError(f"image-aligned card: fsq_levels must be a non-empty list of ints >= 2, got {self.fsq_levels}")
        if self.text_dim % 4:
            raise TmtError(f"image-aligned card: text_dim={self.text_dim} must be divisible by 4 (attention heads)")


def caption_bytes(captions: list[str], max_len: int) -> Tensor:
    """Captions -> (N, max_len) int64 byte ids, padded with PAD_BYTE (lower-cased, cut to max_len)."""
    out = torch.full((len(captions), max_len), PAD_BYTE, dtype=torch.long)
    for i, c in enumerate(captions):
        b = c.strip().lower().encode("utf-8")[:max_len]
        if b:
            out[i, :len(b)] = torch.tensor(list(b), dtype=torch.long)
    return out


class CaptionEncoder(nn.Module):
    """Bytes -> embedding: byte + position embeddings, a tiny transformer, masked mean pooling."""

    def __init__(self, cfg: AlignedVQConfig) -> None:
        super().__init__()
        d = cfg.text_dim
        self.embed = nn.Embedding(PAD_BYTE + 1, d, padding_idx=PAD_BYTE)
        self.pos = nn.Parameter(torch.randn(cfg.max_caption_bytes, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.proj = nn.Linear(d, cfg.embed_dim)

    def forward(self, ids: Tensor) -> Tensor:
        longest = int((ids != PAD_BYTE).sum(1).max()) if ids.numel() else 0
        ids = ids[:, : max(1, longest)]  # no compute on columns that are padding in every row
        pad = ids == PAD_BYTE
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        x = self.layers(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.proj((x * keep).sum(1) / keep.sum(1).clamp(min=1.0))


@dataclass
class AlignedOutput:
    recon: Tensor
    """Reconstruction (B, C, H, W)."""
    indices: Tensor
    """Code ids (B, h * w)."""
    commitment_loss: Tensor
    """EMA VQ commitment loss (0 for FSQ)."""
    image_embedding: Tensor
    """(B, embed_dim) from the quantized tokens (input of the contrastive term)."""


class AlignedVQ(nn.Module):
    """Encoder + FSQ/EMA-VQ quantizer + decoder, with the caption encoder and image head of the alignment term."""

    def __init__(self, cfg: AlignedVQConfig) -> None:
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer: FSQ | VectorQuantize
        if cfg.quantizer == "fsq":
            self.quantizer = FSQ(levels=list(cfg.fsq_levels), dim=cfg.code_dim)
        else:
            self.quantizer = VectorQuantize(
                dim=cfg.code_dim, codebook_size=cfg.codebook_size, decay=cfg.ema_decay, kmeans_init=cfg.kmeans_init,
                threshold_ema_dead_code=cfg.dead_code_threshold, commitment_weight=cfg.commitment,
                use_cosine_sim=cfg.cosine_codes)
        h, w = cfg.grid()
        self.image_head = nn.Sequential(nn.Linear(h * w * cfg.code_dim, 256), nn.GELU(), nn.Linear(256, cfg.embed_dim))
        self.text = CaptionEncoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def grid(self) -> tuple[int, int]:
        return self.cfg.grid()

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, D, h, w) -> quantized (B, h*w, D), ids (B, h*w), commitment loss."""
        seq = z.flatten(2).transpose(1, 2)
        if self.cfg.quantizer == "fsq":
            q, ids = self.quantizer(seq)
            return q, ids.long(), z.new_zeros(())
        q, ids, commit = self.quantizer(seq)
        return q, ids.long(), commit.sum()

    def _to_map(self, q: Tensor) -> Tensor:
        h, w = self.grid
        return q.transpose(1, 2).reshape(q.shape[0], -1, h, w)

    def forward(self, x: Tensor) -> AlignedOutput:
        q, ids, commit = self._quantize(self.encoder(x))
        emb = self.image_head(q.flatten(1))
        return AlignedOutput(self.decoder(self._to_map(q)), ids, commit, emb)

    def contrastive_loss(self, image_embedding: Tensor, captions: Tensor) -> Tensor:
        """Symmetric InfoNCE between image embeddings (B, E) and caption byte ids (B, L)."""
        a = F.normalize(image_embedding, dim=-1)
        b = F.normalize(self.text(captions), dim=-1)
        logits = a @ b.t() * self.logit_scale.clamp(max=math.log(100.0)).exp()
        target = torch.arange(len(a))
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, h, w) code ids."""
        _, ids, _ = self._quantize(self.encoder(x))
        h, w = self.grid
        return ids.view(-1, h, w)

    @torch.no_grad()
    def decode(self, ids: Tensor) -> Tensor:
        """(B, h, w) code ids -> (B, C, H, W) images in [-1, 1] (clamped)."""
        flat = ids.reshape(ids.shape[0], -1)
        if isinstance(self.quantizer, FSQ):
            q = self.quantizer.indices_to_codes(flat)
        else:
            q = self.quantizer.get_output_from_indices(flat)
        return self.decoder(self._to_map(q)).clamp(-1, 1)
