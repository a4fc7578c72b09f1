"""The tmt translation model: one encoder-decoder Transformer over the joint vocabulary.

Built from fairseq2 0.8.1 blocks (DESIGN section 6):

- pre-LN encoder and decoder (`StandardTransformerEncoder/Decoder`);
- one token embedding shared by encoder, decoder and the output projection
  (`TiedProjection`), scaled by sqrt(model_dim);
- sinusoidal (or learned) positions;
- a modality-type embedding looked up from the vocabulary's token->modality
  table (`JointVocab.type_table()`), added on encoder AND decoder inputs. The
  `<bos:m>` specials carry their modality's type, so the decoder input
  `<bos:image> v1 v2 ...` is typed "image" everywhere and no extra per-sequence
  input is needed (the generator calls the model like any fairseq2 seq2seq model).

Sequences (DESIGN section 3): encoder input `x1..xn <eos>`, decoder input
`<bos:tgt> x1..xn`, target `x1..xn <eos>`.

The output distribution of a direction covers only the target modality's
slice of the vocabulary plus `<eos>`: `restricted_logits` masks full logits
(decoding), `sliced_logits` projects onto the slice alone (training: the
softmax and loss never touch the other modalities' rows, which is also faster).

Files of an experiment directory read/written here::

    model.pt      plain state dict (inference weights), torch.load(weights_only=True)
    config.yaml   the full training config; the model config under key `model`
    vocab.json    the joint vocabulary
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from fairseq2.models.seq2seq import Seq2SeqModel
from fairseq2.models.transformer import (
    CausalAttentionBias,
    IdentityBias,
    StandardFeedForwardNetwork,
    StandardMultiheadAttention,
    StandardTransformerDecoder,
    StandardTransformerDecoderLayer,
    StandardTransformerEncoder,
    StandardTransformerEncoderLayer,
    TorchSDPA,
    TransformerFrontend,
    TransformerNormOrder,
)
from fairseq2.nn import (
    BatchLayout,
    IncrementalState,
    IncrementalStateBag,
    LearnedPositionEncoder,
    PositionEncoder,
    SinusoidalPositionEncoder,
    StandardEmbedding,
    StandardLayerNorm,
    TiedProjection,
    init_scaled_embedding,
)
from torch import Tensor
from torch.nn import Dropout

from tmt.core.errors import TmtError
from tmt.core.io import load_torch, make_dirs, read_yaml_object
from tmt.core.modality import MODALITIES, check_modality
from tmt.vocab import EOS, NEUTRAL_TYPE, PAD, JointVocab

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.yaml"
VOCAB_FILE = "vocab.json"


class ModelError(TmtError):
    """A model directory or checkpoint is missing, malformed or incompatible."""


# --------------------------------------------------------------------------------------
# config and presets
# --------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class TmtModelConfig:
    """Architecture of the tmt encoder-decoder (vocabulary size comes from vocab.json)."""

    model_dim: int = 256
    """Width of embeddings and hidden states (d_model)."""
    num_encoder_layers: int = 4
    """Number of encoder layers."""
    num_decoder_layers: int = 4
    """Number of decoder layers."""
    num_heads: int = 4
    """Attention heads per layer (model_dim must be divisible by it)."""
    ffn_inner_dim: int = 1024
    """Inner width of the feed-forward blocks."""
    dropout_p: float = 0.1
    """Dropout on embeddings and residual branches."""
    attention_dropout_p: float = 0.0
    """Dropout on attention weights."""
    ffn_inner_dropout_p: float = 0.0
    """Dropout after the feed-forward activation."""
    max_seq_len: int = 1024
    """Longest encoder input or decoder input (tokens, including <eos>/<bos>)."""
    norm_order: Literal["pre", "post"] = "pre"
    """Layer-norm placement: `pre` (stable, the default) or `post` (original Transformer)."""
    pos_encoding: Literal["sinusoidal", "learned"] = "sinusoidal"
    """Positional encoding: fixed sinusoids or a learned table of max_seq_len rows."""
    activation: Literal["relu", "gelu"] = "relu"
    """Feed-forward activation."""
    modality_embedding: bool = True
    """Add the modality-type embedding (text/speech/image/neutral) on encoder and decoder inputs."""

    def validate(self) -> None:
        if self.model_dim % self.num_heads:
            raise ModelError(f"model_dim {self.model_dim} is not divisible by num_heads {self.num_heads}")
        for name in ("model_dim", "num_encoder_layers", "num_decoder_layers", "num_heads", "ffn_inner_dim", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ModelError(f"model.{name} must be >= 1, got {getattr(self, name)}")


PRESETS: dict[str, Callable[[], TmtModelConfig]] = {}
"""Named architecture presets, filled by `@preset` (in the order defined: tiny, demo, base, paper)."""


def preset(fn: Callable[[], TmtModelConfig]) -> Callable[[], TmtModelConfig]:
    """Register `fn` under its own name as an architecture preset."""
    PRESETS[fn.__name__] = fn
    return fn


@preset
def tiny() -> TmtModelConfig:
    """Unit tests: d 32, 2+2 layers."""
    config = demo()
    config.model_dim = 32
    config.ffn_inner_dim = 64
    config.dropout_p = 0.0
    config.max_seq_len = 512
    return config


@preset
def demo() -> TmtModelConfig:
    """The scenes demo: trains on 2 CPU cores in about 10-15 minutes."""
    return TmtModelConfig(model_dim=128, num_encoder_layers=2, num_decoder_layers=2, ffn_inner_dim=512)


@preset
def base() -> TmtModelConfig:
    """12+12 layers, d 768, 12 heads."""
    config = demo()
    config.model_dim = 768
    config.num_encoder_layers = config.num_decoder_layers = 12
    config.num_heads = 12
    config.ffn_inner_dim = 3072
    return config


@preset
def paper() -> TmtModelConfig:
    """The paper's model: 12+12 layers, d 1024, ffn 4096, 16 heads.

    With the paper's vocabulary (38930 ids incl. specials) this is 392.6M parameters
    (tied embedding 39.9M, encoder 151M, decoder 201M); the paper's "~270M" does not
    fit these sizes."""
    config = base()
    config.model_dim = 1024
    config.num_heads = 16
    config.ffn_inner_dim = 4096
    return config


def get_preset(name: str) -> TmtModelConfig:
    """The named architecture preset (tiny, demo, base, paper)."""
    if name not in PRESETS:
        raise ModelError(f"unknown model preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


# --------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------
class ModalityFrontend(TransformerFrontend):
    """token embedding * sqrt(d) + modality-type embedding + positions, then dropout."""

    def __init__(
        self,
        model_dim: int,
        embed: StandardEmbedding,
        pos_encoder: PositionEncoder | None,
        type_table: Tensor,
        *,
        modality_embedding: bool = True,
        dropout_p: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = embed
        self.scale = model_dim**0.5
        self.type_embed: StandardEmbedding | None
        if modality_embedding:
            self.type_embed = StandardEmbedding(NEUTRAL_TYPE + 1, model_dim, init_fn=init_scaled_embedding)
        else:
            self.register_module("type_embed", None)
        # derived from vocab.json (saved beside the weights), so not part of the state dict
        self.token_type: Tensor
        self.register_buffer("token_type", type_table.clone(), persistent=False)
        self.pos_encoder: PositionEncoder | None
        self.register_module("pos_encoder", pos_encoder)
        self.dropout = Dropout(dropout_p) if dropout_p > 0 else None

    def forward(
        self,
        seqs: Tensor,
        seqs_layout: BatchLayout,
        *,
        state_bag: IncrementalStateBag | None = None,
    ) -> tuple[Tensor, BatchLayout]:
        # seqs: (N, S) joint ids -> (N, S, D)
        x = self.embed(seqs) * self.scale
        if self.type_embed is not None:
            x = x + self.type_embed(self.token_type[seqs])
        if self.pos_encoder is not None:
            # the state bag carries the decoding step, so incremental positions are right
            x = self.pos_encoder(x, seqs_layout, state_bag=state_bag)
        if self.dropout is not None:
            x = self.dropout(x)
        return x, seqs_layout


class _EncoderOutputState(IncrementalState):
    """Encoder output cached across incremental decoding steps (reordered by beam search)."""

    def __init__(self, enc: Tensor, layout: BatchLayout) -> None:
        self.enc = enc
        self.layout = layout

    def reorder(self, new_order: Tensor) -> None:
        self.enc = self.enc.index_select(0, new_order)
        lens = self.layout.seq_lens
        self.layout = BatchLayout.of(self.enc, [lens[i] for i in new_order.tolist()])

    def size_bytes(self) -> int:
        return self.capacity_bytes()

    def capacity_bytes(self) -> int:
        return int(self.enc.numel() * self.enc.itemsize)


class TmtModel(Seq2SeqModel):
    """Shared-vocabulary encoder-decoder; `forward` has fairseq2's seq2seq call signature.

    Attributes: `config` (TmtModelConfig), `vocab` (JointVocab), `max_source_seq_len`,
    `max_target_seq_len`.
    """

    def __init__(self, config: TmtModelConfig, vocab: JointVocab) -> None:
        config.validate()
        super().__init__(config.max_seq_len, config.max_seq_len)
        self.config = config
        self.vocab = vocab
        self.model_dim = config.model_dim
        self.pad_idx = PAD
        d = config.model_dim
        order = TransformerNormOrder.PRE if config.norm_order == "pre" else TransformerNormOrder.POST

        embed = StandardEmbedding(vocab.size, d, PAD, init_fn=init_scaled_embedding)
        pos: PositionEncoder
        if config.pos_encoding == "learned":
            pos = LearnedPositionEncoder(d, config.max_seq_len)
        else:
            pos = SinusoidalPositionEncoder(d, config.max_seq_len)
        type_table = torch.from_numpy(vocab.type_table())
        # one frontend for both sides: the vocabulary is shared
        self.frontend = ModalityFrontend(
            d, embed, pos, type_table, modality_embedding=config.modality_embedding, dropout_p=config.dropout_p
        )
        self.encoder = StandardTransformerEncoder(
            [self._encoder_layer(order) for _ in range(config.num_encoder_layers)],
            self._layer_norm() if order == TransformerNormOrder.PRE else None,
        )
        self.decoder = StandardTransformerDecoder(
            [self._decoder_layer(order) for _ in range(config.num_decoder_layers)],
            self._layer_norm() if order == TransformerNormOrder.PRE else None,
        )
        self.final_proj = TiedProjection(embed.weight, bias=None)

        # joint ids of each modality's output slice: [<eos>, start..end)
        for m in MODALITIES:
            s, e = vocab.range(m)
            ids = torch.cat([torch.tensor([EOS]), torch.arange(s, e)])
            self.register_buffer(f"_slice_{m}", ids, persistent=False)
            mask = torch.zeros(vocab.size, dtype=torch.bool)
            mask[ids] = True
            self.register_buffer(f"_allowed_{m}", mask, persistent=False)

    # ---- factory methods (one per submodule, so a variant overrides one) -----------
    def _attention(self, causal: bool) -> StandardMultiheadAttention:
        bias = CausalAttentionBias() if causal else IdentityBias()
        sdpa = TorchSDPA(bias, dropout_p=self.config.attention_dropout_p)
        return StandardMultiheadAttention(self.config.model_dim, self.config.num_heads, sdpa, bias=True)

    def _ffn(self) -> StandardFeedForwardNetwork:
        act = torch.nn.GELU() if self.config.activation == "gelu" else torch.nn.ReLU()
        return StandardFeedForwardNetwork(
            self.config.model_dim, self.config.ffn_inner_dim, bias=True, inner_activation=act,
            inner_dropout_p=self.config.ffn_inner_dropout_p,
        )

    def _layer_norm(self) -> StandardLayerNorm:
        return StandardLayerNorm(self.config.model_dim, bias=True)

    def _encoder_layer(self, order: TransformerNormOrder) -> StandardTransformerEncoderLayer:
        return StandardTransformerEncoderLayer(
            self._attention(causal=False), self._layer_norm(), self._ffn(), self._layer_norm(),
            norm_order=order, dropout_p=self.config.dropout_p,
        )

    def _decoder_layer(self, order: TransformerNormOrder) -> StandardTransformerDecoderLayer:
        return StandardTransformerDecoderLayer(
            self._attention(causal=True), self._layer_norm(),
            self._attention(causal=False), self._layer_norm(),
            self._ffn(), self._layer_norm(),
            norm_order=order, dropout_p=self.config.dropout_p,
        )

    # ---- computation ----------------------------------------------------------------
    def encode(self, source_seqs: Tensor, source_layout: BatchLayout) -> tuple[Tensor, BatchLayout]:
        """(N, S) encoder input ids `x1..xn <eos>` -> ((N, S, D) encoder output, layout)."""
        x, layout = self.frontend(source_seqs, source_layout)
        return self.encoder(x, layout), layout

    def decode(
        self,
        enc: Tensor,
        enc_layout: BatchLayout,
        target_seqs: Tensor,
        target_layout: BatchLayout,
        *,
        state_bag: IncrementalStateBag | None = None,
    ) -> Tensor:
        """Decoder hidden states (N, T, D) for decoder input `<bos:tgt> x1..xn`."""
        y, layout = self.frontend(target_seqs, target_layout, state_bag=state_bag)
        out: Tensor = self.decoder(y, layout, enc, enc_layout, state_bag=state_bag)
        return out

    def decode_logits(
        self,
        enc: Tensor,
        enc_layout: BatchLayout,
        target_seqs: Tensor,
        target_layout: BatchLayout,
        *,
        state_bag: IncrementalStateBag | None = None,
    ) -> Tensor:
        """Full-vocabulary logits (N, T, V_joint); apply `restricted_logits` for one modality."""
        out: Tensor = self.final_proj(self.decode(enc, enc_layout, target_seqs, target_layout, state_bag=state_bag))
        return out

    def forward(  # type: ignore[override]
        self,
        source_seqs: Tensor,
        source_layout: BatchLayout,
        target_seqs: Tensor,
        target_layout: BatchLayout,
        *,
        state_bag: IncrementalStateBag | None = None,
    ) -> Tensor:
        """Logits (N, T, V_joint). With a state bag (inference) the encoder output is
        computed once and reused at every decoding step, as fairseq2's TransformerModel does."""
        state = None
        if state_bag is not None and not self.training:
            state = state_bag.maybe_get_state(self, _EncoderOutputState)
        if state is None:
            enc, enc_layout = self.encode(source_seqs, source_layout)
            if state_bag is not None and not self.training:
                state_bag.set_state(self, _EncoderOutputState(enc, enc_layout))
        else:
            enc, enc_layout = state.enc, state.layout
        return self.decode_logits(enc, enc_layout, target_seqs, target_layout, state_bag=state_bag)

    # ---- output restriction -----------------------------------------------------------
    def slice_ids(self, modality: str) -> Tensor:
        """Joint ids of `modality`'s output slice: `<eos>` first, then the modality's range."""
        check_modality(modality, error=ModelError)
        ids: Tensor = getattr(self, f"_slice_{modality}")
        return ids

    def allowed_mask(self, modality: str) -> Tensor:
        """(V_joint,) bool: the ids a decoder may emit for `modality` (its range + <eos>)."""
        self.slice_ids(modality)
        mask: Tensor = getattr(self, f"_allowed_{modality}")
        return mask

    def restricted_logits(self, logits: Tensor, modality: str) -> Tensor:
        """Full logits (..., V_joint) with every id outside `modality`'s slice + <eos> set to -inf,
        so a softmax over the result is the softmax over the slice."""
        mask = self.allowed_mask(modality).to(logits.device)
        return logits.masked_fill(~mask, float("-inf"))

    def sliced_logits(self, hidden: Tensor, modality: str) -> Tensor:
        """Project decoder states (..., D) onto `modality`'s slice only -> (..., 1 + V_m).

        Column 0 is `<eos>`, column 1 + i is the modality's local token i. Cheaper than full
        logits: the other modalities' rows of the tied embedding are never multiplied."""
        w = self.final_proj.weight.index_select(0, self.slice_ids(modality).to(hidden.device))
        return F.linear(hidden, w)

    def to_slice_targets(self, targets: Tensor, modality: str) -> Tensor:
        """Joint target ids (pad, eos or the modality's range) -> slice-local ids; pad -> -100."""
        s, e = self.vocab.range(modality)
        local = targets - s + 1
        local = torch.where(targets == EOS, torch.zeros_like(local), local)
        bad = (targets != PAD) & (targets != EOS) & ((targets < s) | (targets >= e))
        if bool(bad.any()):
            raise ModelError(f"targets for {modality} contain ids outside its range [{s}, {e})")
        return torch.where(targets == PAD, torch.full_like(local, -100), local)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def create_model(config: TmtModelConfig, vocab: JointVocab, *, device: str | torch.device | None = None) -> TmtModel:
    """A freshly initialised TmtModel (uses torch's current RNG)."""
    model = TmtModel(config, vocab)
    if device is not None:
        from tmt.core.device import resolve_device

        model.to(resolve_device(device))
    return model


@dataclass
class LossStats:
    """Sums over the target tokens of one direction (divide by `num_tokens` for means)."""

    loss: Tensor
    """Summed training loss (cross-entropy with label smoothing), differentiable."""
    nll: Tensor
    """Summed plain cross-entropy (no smoothing), detached."""
    correct: Tensor
    """Number of positions whose argmax over the slice is the target."""
    num_tokens: int
    """Number of (non-pad) target tokens."""


def sliced_loss(
    model: TmtModel,
    hidden: Tensor,
    targets: Tensor,
    modality: str,
    *,
    label_smoothing: float = 0.0,
) -> LossStats:
    """Cross-entropy over `modality`'s slice (+ <eos>) at the non-pad target positions.

    hidden (N, T, D), targets (N, T) joint ids (pad=0). Only non-pad positions are
    projected, so padding never reaches the output layer. Smoothing spreads its mass
    over the slice only (the output distribution of this direction)."""
    keep = targets != PAD
    h = hidden[keep]  # (M, D)
    local = model.to_slice_targets(targets[keep], modality)  # (M,)
    lprobs = F.log_softmax(model.sliced_logits(h, modality).float(), dim=-1)  # (M, 1 + V_m)
    nll = -lprobs.gather(1, local.unsqueeze(1)).squeeze(1)
    loss = nll.sum()
    if label_smoothing > 0:
        # same formula as torch's cross_entropy(label_smoothing=eps): uniform part over the slice
        loss = (1.0 - label_smoothing) * loss - label_smoothing * lprobs.mean(dim=-1).sum()
    correct = (lprobs.detach().argmax(-1) == local).sum()
    return LossStats(loss=loss, nll=nll.detach().sum(), correct=correct, num_tokens=int(local.numel()))


# --------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------
def save_model(model: TmtModel, exp_dir: str | Path, *, train_config: Any | None = None) -> Path:
    """Write `model.pt` (plain state dict), `vocab.json` and `config.yaml` (key `model`,
    plus the full training config when given) atomically into `exp_dir`."""
    import yaml

    from tmt.config import dump_yaml, to_dict
    from tmt.io import atomic_open, atomic_write_text

    exp = Path(exp_dir)
    make_dirs(exp)
    raw: TmtModel = getattr(model, "module", model)  # tolerate a DDP wrapper
    state = {k: v.detach().cpu() for k, v in raw.state_dict().items()}
    with atomic_open(exp / MODEL_FILE, "wb") as f:
        torch.save(state, f)
    raw.vocab.save(exp / VOCAB_FILE)
    cfg_path = exp / CONFIG_FILE
    if train_config is not None:
        data = to_dict(train_config)
        data["model"] = to_dict(raw.config)
        atomic_write_text(cfg_path, dump_yaml(data))
    else:
        data = {}
        if cfg_path.is_file():
            data = read_yaml_object(cfg_path, what="experiment config", error=ModelError)
        data["model"] = to_dict(raw.config)
        atomic_write_text(cfg_path, yaml.safe_dump(data, sort_keys=False))
    return exp / MODEL_FILE


def load_model_config(exp_dir: str | Path) -> TmtModelConfig:
    """The model config stored under key `model` in `exp_dir/config.yaml`."""

    from tmt.config import from_dict

    p = Path(exp_dir) / CONFIG_FILE
    if not p.is_file():
        raise ModelError(f"{p} not found: {exp_dir} is not a tmt experiment directory (train one with `tmt train`)")
    data = read_yaml_object(p, what="experiment config", required={"model": dict}, error=ModelError,
                            fix="give a directory written by `tmt train`")
    return from_dict(TmtModelConfig, data["model"], where="model")


def load_model(exp_dir: str | Path, device: str | torch.device = "cpu", *, weights: str | Path | None = None) -> TmtModel:
    """Rebuild a TmtModel from `exp_dir` (config.yaml + vocab.json + model.pt), in eval mode.

    `weights` picks another state-dict file (e.g. a training checkpoint's `model` entry
    extracted to a file); by default `exp_dir/model.pt`."""
    exp = Path(exp_dir)
    if not exp.is_dir():
        raise ModelError(f"model directory not found: {exp}")
    cfg = load_model_config(exp)
    vocab = JointVocab.load(exp / VOCAB_FILE)
    wpath = Path(weights) if weights is not None else exp / MODEL_FILE
    if not wpath.is_file():
        raise ModelError(f"{wpath} not found; train the model first (`tmt train ... -o {exp}`)")
    state = load_torch(wpath, what="model weights file", error=ModelError, fix=f"retrain with `tmt train -o {exp}`")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a full training checkpoint
    model = TmtModel(cfg, vocab)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(
            f"{wpath} does not match {exp / CONFIG_FILE} / {exp / VOCAB_FILE}: {str(e).splitlines()[0]}"
        ) from None
    from tmt.core.device import resolve_device

    model.to(resolve_device(device))
    model.eval()
    return model


def make_layout(seqs: Tensor, seq_lens: list[int] | None = None) -> BatchLayout:
    """A fairseq2 batch layout for padded `seqs` (lets code outside tmt/models avoid fairseq2)."""
    return BatchLayout.of(seqs, seq_lens)
