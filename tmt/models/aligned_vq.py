"""A text-aligned image tokenizer model: few image tokens that carry what captions say.

    image (B, 3, H, W) in [-1, 1]
      -> Encoder (tmt.models.vq)        strided convs + residual blocks  -> (B, D, h, w)
      [layout=queries: num_queries learned queries read the (h, w) feature map in a small
       transformer (TiTok/SEED style 1-D tokens), so the tokens need not tile the image]
      -> quantizer                      FSQ or EMA VQ from `vector-quantize-pytorch` -> ids (B, N), N <= 32
      [layout=queries: learned map tokens read the quantized queries back onto the (h, w) map]
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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

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

    layout: Literal["grid", "queries"] = "grid"
    """grid: one token per cell of the conv encoder's (h, w) map (h * w <= max_tokens);
    queries: `num_queries` 1-D tokens, each free to describe any part of the image (learned
    queries attend to the whole feature map; the decoder's map tokens attend to the codes)."""
    num_queries: int = 32
    """layout=queries: tokens per image."""
    query_dim: int = 128
    """layout=queries: width of the query transformers (and of the conv encoder's output)."""
    query_layers: int = 2
    """layout=queries: transformer layers on each side (reading the map, writing it back)."""
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

    def feature_grid(self) -> tuple[int, int]:
        """(h, w) of the conv encoder's output map (image_size / factor)."""
        return super().grid()

    def grid(self) -> tuple[int, int]:
        """Token layout: the feature map for `grid`, (1, num_queries) for `queries`."""
        return (1, self.num_queries) if self.layout == "queries" else self.feature_grid()

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
        if self.layout == "queries" and (self.num_queries < 1 or self.query_dim % 4 or self.query_layers < 1):
            raise TmtError(f"image-aligned card: layout=queries needs num_queries >= 1, query_layers >= 1 and a "
                           f"query_dim divisible by 4 (attention heads); got {self.num_queries}, "
                           f"{self.query_layers}, {self.query_dim}")
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


def _transformer(width: int, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def word_swap_negatives(captions: list[str], generator: torch.Generator | None = None) -> list[str]:
    """One hard negative per caption: one of its words replaced by the word at the same place in
    another caption of the batch (one of the same length if there is one), where the two differ.
    Captions written from the same pattern differ in the words that describe the image (a shape,
    a colour), so the image must prefer its caption to one that is wrong in one detail, which the
    rest of the batch rarely asks (NegCLIP-style hard negatives; no labels are read). A caption
    that no other caption differs from keeps its text, a negative the loss cannot reward."""
    words = [c.split() for c in captions]
    out = []
    for i, w in enumerate(words):
        order = torch.randperm(len(words), generator=generator).tolist()
        order.sort(key=lambda j: len(words[j]) != len(w))  # same length first: likely the same pattern
        swap = None
        for j in order:
            places = [k for k in range(min(len(w), len(words[j]))) if words[j][k] != w[k]] if j != i else []
            if places:
                k = places[int(torch.randint(len(places), (1,), generator=generator))]
                swap = [*w[:k], words[j][k], *w[k + 1:]]
                break
        out.append(" ".join(swap) if swap is not None else captions[i])
    return out


class CaptionSpec(Protocol):
    """The config fields a caption encoder reads (`AlignedVQConfig`, `CaptionJudgeConfig`)."""

    text_dim: int
    text_layers: int
    max_caption_bytes: int
    embed_dim: int


class CaptionEncoder(nn.Module):
    """Bytes -> embedding: byte + position embeddings, a tiny transformer, masked mean pooling."""

    def __init__(self, cfg: CaptionSpec) -> None:
        super().__init__()
        d = cfg.text_dim
        self.embed = nn.Embedding(PAD_BYTE + 1, d, padding_idx=PAD_BYTE)
        self.pos = nn.Parameter(torch.randn(cfg.max_caption_bytes, d) * 0.02)
        self.layers = _transformer(d, cfg.text_layers)
        self.proj = nn.Linear(d, cfg.embed_dim)

    def forward(self, ids: Tensor) -> Tensor:
        longest = int((ids != PAD_BYTE).sum(1).max()) if ids.numel() else 0
        ids = ids[:, : max(1, longest)]  # no compute on columns that are padding in every row
        pad = ids == PAD_BYTE
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        x = self.layers(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return self.proj((x * keep).sum(1) / keep.sum(1).clamp(min=1.0))


class QueryCodec(nn.Module):
    """The 1-D token layout: `read` turns the conv feature map into `num_queries` latents (learned
    queries, concatenated with the map's cells, go through a transformer); `write` turns quantized
    latents back into a feature map (learned map tokens read them the same way)."""

    def __init__(self, cfg: AlignedVQConfig) -> None:
        super().__init__()
        h, w = cfg.feature_grid()
        d, n = cfg.query_dim, cfg.num_queries
        self.cells = h * w
        self.map_hw = (h, w)
        self.map_pos = nn.Parameter(torch.randn(h * w, d) * 0.02)
        self.queries = nn.Parameter(torch.randn(n, d) * 0.02)
        self.reader = _transformer(d, cfg.query_layers)
        self.to_code = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.code_dim))
        self.from_code = nn.Linear(cfg.code_dim, d)
        self.code_pos = nn.Parameter(torch.randn(n, d) * 0.02)
        self.map_tokens = nn.Parameter(torch.randn(h * w, d) * 0.02)
        self.writer = _transformer(d, cfg.query_layers)
        self.out_norm = nn.LayerNorm(d)

    def read(self, feat: Tensor) -> Tensor:
        """(B, d, h, w) feature map -> (B, num_queries, code_dim) latents."""
        x = feat.flatten(2).transpose(1, 2) + self.map_pos
        q = self.queries.expand(len(x), -1, -1)
        return self.to_code(self.reader(torch.cat([x, q], 1))[:, self.cells:])

    def write(self, codes: Tensor) -> Tensor:
        """(B, num_queries, code_dim) quantized latents -> (B, d, h, w) feature map."""
        z = self.from_code(codes) + self.code_pos
        m = self.map_tokens.expand(len(z), -1, -1)
        y = self.out_norm(self.writer(torch.cat([m, z], 1))[:, : self.cells])
        return y.transpose(1, 2).reshape(len(z), -1, *self.map_hw)


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
        self.codec: QueryCodec | None = None
        if cfg.layout == "queries":  # the convs end (and start) at query_dim; the codec maps to codes
            conv_cfg = replace(cfg, code_dim=cfg.query_dim)
            self.encoder, self.decoder = Encoder(conv_cfg), Decoder(conv_cfg)
            self.codec = QueryCodec(cfg)
        else:
            self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
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

    def _latents(self, x: Tensor) -> Tensor:
        """Images -> (B, N, code_dim) latents, one per token."""
        feat = self.encoder(x)
        return self.codec.read(feat) if self.codec is not None else feat.flatten(2).transpose(1, 2)

    def _render(self, q: Tensor) -> Tensor:
        """(B, N, code_dim) quantized latents -> images."""
        return self.decoder(self.codec.write(q) if self.codec is not None else self._to_map(q))

    def _quantize(self, seq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, D) latents -> quantized (B, N, D), ids (B, N), commitment loss."""
        if self.cfg.quantizer == "fsq":
            q, ids = self.quantizer(seq)
            return q, ids.long(), seq.new_zeros(())
        q, ids, commit = self.quantizer(seq)
        return q, ids.long(), commit.sum()

    def _continuous(self, seq: Tensor) -> Tensor:
        """The quantizer's input as the decoder sees it in the warm-up: for FSQ the bounded latent
        (the formula of vector_quantize_pytorch's `FSQ.bound`, which the library does not expose
        without its rounding) plus, in training, uniform noise of one quantization step instead of
        the rounding (the relaxation of scalar quantization of Balle et al.): what the decoder can
        read survives the later rounding, so the latents spread over the levels from the start.
        For the EMA VQ the latents themselves (its codebook is k-means initialised afterwards)."""
        if not isinstance(self.quantizer, FSQ):
            return seq
        fsq = self.quantizer
        z = fsq.project_in(seq)
        levels = fsq._levels
        half_l = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        bounded = torch.tanh(z + torch.atanh(offset / half_l)) * half_l - offset
        if self.training:
            bounded = bounded + torch.rand_like(bounded) - 0.5
        return fsq.project_out(bounded / (levels // 2))

    def _to_map(self, q: Tensor) -> Tensor:
        h, w = self.grid
        return q.transpose(1, 2).reshape(q.shape[0], -1, h, w)

    def forward(self, x: Tensor, quantize: bool = True) -> AlignedOutput:
        """Training forward; `quantize=False` is the warm-up (`train.warmup_continuous`): no rounding
        (`_continuous`), so every latent reaches the decoder from the first step (ids are then zeros)."""
        seq = self._latents(x)
        if quantize:
            q, ids, commit = self._quantize(seq)
        else:
            q, ids, commit = self._continuous(seq), seq.new_zeros(seq.shape[:2], dtype=torch.long), seq.new_zeros(())
        emb = self.image_head(q.flatten(1))
        return AlignedOutput(self._render(q), ids, commit, emb)

    def contrastive_loss(self, image_embedding: Tensor, captions: Tensor, negatives: Tensor | None = None) -> Tensor:
        """Symmetric InfoNCE between image embeddings (B, E) and caption byte ids (B, L); `negatives`
        (N, L), e.g. `word_swap_negatives` of the captions, are extra wrong captions for every image."""
        a = F.normalize(image_embedding, dim=-1)
        texts = captions if negatives is None else torch.cat([captions, negatives])
        b = F.normalize(self.text(texts), dim=-1)
        logits = a @ b.t() * self.logit_scale.clamp(max=math.log(100.0)).exp()
        target = torch.arange(len(a))
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : len(a)].t(), target))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, h, w) code ids."""
        _, ids, _ = self._quantize(self._latents(x))
        h, w = self.grid
        return ids.view(-1, h, w)

    def refine(self, x: Tensor, loss: Callable[[Tensor, Tensor], Tensor], steps: int, lr: float) -> Tensor:
        """Analysis-by-synthesis encoding: (B, C, H, W) images -> (B, h, w) code ids whose decoded
        images score at least as well under `loss(recon, x) -> (B,)` as the encoder's codes.

        The encoder maps each image to latents in one pass, trained to do well on average over the
        training images; here each image's latents are then moved by `steps` Adam steps against
        its own decoded image (straight through the quantizer's rounding, as in training), and the
        codes of the best step are kept, the encoder's own included. The weights are not touched;
        images are refined independently (batching does not change the result beyond rounding).
        Written here because no library searches a quantized decoder's codes by gradient."""
        with torch.no_grad():
            z = self._latents(x).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        best = torch.full((len(x),), math.inf)
        best_ids = torch.zeros(z.shape[:2], dtype=torch.long)
        for step in range(steps + 1):  # step 0 scores the encoder's own codes
            last = step == steps  # the final latents are scored, not moved
            with torch.set_grad_enabled(not last):
                q, ids, _ = self._quantize(z)
                if not isinstance(self.quantizer, FSQ):  # the library's EMA VQ passes no gradient in eval mode
                    q = z + (q - z).detach()
                scores = loss(self._render(q), x)
                if not last:  # the gradient of the latents only, not of the weights
                    (z.grad,) = torch.autograd.grad(scores.sum(), [z])
            better = scores.detach() < best
            best = torch.where(better, scores.detach(), best)
            best_ids[better] = ids[better]
            if not last:
                opt.step()
        h, w = self.grid
        return best_ids.view(-1, h, w)

    def _codes(self, flat_ids: Tensor) -> Tensor:
        """(B, N) code ids -> (B, N, code_dim) quantized latents."""
        if isinstance(self.quantizer, FSQ):
            return self.quantizer.indices_to_codes(flat_ids)
        return self.quantizer.get_output_from_indices(flat_ids)

    @torch.no_grad()
    def code_features(self) -> Tensor:
        """(num_codes, F) features of every code id, for starting a translation model's image-token
        embeddings where the codes are (`tmt.training.code_init`). FSQ: one one-hot block per latent
        dimension (a code id is a tuple of levels, and with these features a model scores each level
        on its own before it learns their combinations); EMA VQ: the codebook vectors."""
        ids = torch.arange(self.cfg.num_codes())
        if isinstance(self.quantizer, FSQ):
            levels = self.quantizer.indices_to_level_indices(ids).long()
            return torch.cat([F.one_hot(levels[:, i], n).float() for i, n in enumerate(self.cfg.fsq_levels)], dim=1)
        return self._codes(ids[None])[0].float()

    @torch.no_grad()
    def code_embedding(self, ids: Tensor) -> Tensor:
        """(B, h, w) or (B, N) code ids -> (B, embed_dim) unit image embeddings: the image head on the
        quantized codes, as in the contrastive term."""
        return F.normalize(self.image_head(self._codes(ids.reshape(ids.shape[0], -1)).flatten(1)), dim=-1)

    @torch.no_grad()
    def caption_embedding(self, captions: Tensor) -> Tensor:
        """(B, L) caption byte ids -> (B, embed_dim) unit caption embeddings."""
        return F.normalize(self.text(captions), dim=-1)

    @torch.no_grad()
    def decode(self, ids: Tensor) -> Tensor:
        """(B, h, w) code ids -> (B, C, H, W) images in [-1, 1] (clamped)."""
        return self._render(self._codes(ids.reshape(ids.shape[0], -1))).clamp(-1, 1)
