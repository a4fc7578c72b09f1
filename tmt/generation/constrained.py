"""Decoding restricted to one target modality, with per-row length constraints.

The generator (fairseq2's beam search or sampler) never sees the joint
vocabulary. It sees a small *local* vocabulary for the target modality::

    0 <pad>   1 <unk>   2 <eos>   3 <bos:tgt>   4 .. 4+K   the K target tokens
    4+K .. 4+K+V   speech targets of a vocabulary with voices: the V voice tokens

`RestrictedSeq2Seq` wraps the translation model: it maps local ids to joint ids
before the model runs, and returns logits over the local vocabulary only, with
pad/unk/bos at -inf. The generator's softmax therefore runs over the target
slice plus <eos>, so hypothesis scores are proper log-probabilities of that
restricted distribution (a step processor would see log-probs normalised over
the whole joint vocabulary instead: fairseq2 gotcha 5). Shrinking the
vocabulary also makes every step cheaper: where the model exposes its
submodules (a fairseq2 `TransformerModel`), only the target rows of the output
projection are multiplied, and log_softmax / top-k run over K+4 entries
instead of the whole joint vocabulary.

Per-row constraints (minimum and maximum number of tokens before <eos>) are
applied to the logits, so rows with different source lengths or target
modalities' rules can share one batch and still decode exactly as they would
alone. A voice token is never chosen by the model: the prompt gives it after
`<bos:speech>` (`forced`), and the wrapper puts all of that position's
probability on it, so it adds nothing to a hypothesis' score. The wrapper follows the generator's reordering of rows (beam
selection, finished rows dropped) through an `IncrementalState` registered in
the generator's state bag, which is reordered together with the model's
key/value caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from fairseq2.data.tokenizers import VocabularyInfo
from fairseq2.models.seq2seq import Seq2SeqModel
from fairseq2.nn import BatchLayout, IncrementalState, IncrementalStateBag
from torch import Tensor
from torch.nn import Module
from torch.nn.functional import linear

from tmt.vocab import EOS, PAD, UNK, JointVocab

LOCAL_PAD, LOCAL_UNK, LOCAL_EOS, LOCAL_BOS = 0, 1, 2, 3
LOCAL_OFFSET = 4
"""Local id of the first target token."""


@dataclass(frozen=True)
class TargetSpace:
    """The local vocabulary of one target modality and its mapping to joint ids."""

    modality: str
    joint_ids: Tensor
    """(K+4,) local id -> joint id."""
    start: int
    """First joint id of the modality's range."""
    num_tokens: int = -1
    """K, the number of target tokens (local ids past 4+K are control tokens: voices)."""

    @classmethod
    def of(cls, vocab: JointVocab, modality: str, device: torch.device | None = None) -> TargetSpace:
        start, end = vocab.range(modality)
        if end <= start:
            raise ValueError(f"the vocabulary has no {modality} tokens")
        voices = vocab.voice_offset + torch.arange(len(vocab.voices) if modality == "speech" else 0)
        ids = torch.cat([
            torch.tensor([PAD, UNK, EOS, vocab.bos(modality)], dtype=torch.int64),
            torch.arange(start, end, dtype=torch.int64),
            voices.to(torch.int64),
        ])
        return cls(modality=modality, joint_ids=ids.to(device), start=start, num_tokens=end - start)

    def local_voice(self, joint: int) -> int:
        """The local id of a voice token's joint id."""
        hits = (self.joint_ids == joint).nonzero()
        if self.num_tokens < 0 or hits.numel() == 0 or int(hits[0, 0]) < LOCAL_OFFSET + self.num_tokens:
            raise ValueError(f"joint id {joint} is not a voice token of the {self.modality} space")
        return int(hits[0, 0])

    @property
    def size(self) -> int:
        return int(self.joint_ids.numel())

    def vocab_info(self) -> VocabularyInfo:
        # unk is masked by the wrapper; no UNK penalty is needed
        return VocabularyInfo(size=self.size, unk_idx=None, bos_idx=LOCAL_BOS, eos_idx=LOCAL_EOS, pad_idx=LOCAL_PAD)

    def to_tokenizer_ids(self, local: Tensor) -> Tensor:
        """Local ids of generated target tokens (no specials) -> tokenizer-local ids."""
        return local - LOCAL_OFFSET


class _RowState(IncrementalState):
    """Which input each generator row belongs to, plus the encoder output for the decoder.

    The decoder's cross-attention caches its keys/values after the first step, so
    from then on only the encoder output's *layout* (padding) matters: the state
    then keeps a zero-width view of the encoder output, which makes following
    the beam's reordering nearly free, and it reuses layouts for repeated length
    orders instead of rebuilding them every step.
    """

    def __init__(self, rows: Tensor, encoder_output: Tensor | None, seq_lens: list[int] | None) -> None:
        self.rows = rows
        self.encoder_output = encoder_output
        self.seq_lens = seq_lens
        self._layout: BatchLayout | None = None
        self._layouts: dict[tuple[int, ...], BatchLayout] = {}

    def layout(self) -> BatchLayout:
        assert self.encoder_output is not None
        if self._layout is None:
            if self.seq_lens is None:
                self._layout = BatchLayout.of(self.encoder_output)
            else:
                key = tuple(self.seq_lens)
                if key not in self._layouts:
                    self._layouts[key] = BatchLayout.of(self.encoder_output, self.seq_lens)
                self._layout = self._layouts[key]
        return self._layout

    def release_encoder_output(self) -> None:
        """Keep only the shape (cross-attention keys/values are cached by the decoder now)."""
        if self.encoder_output is not None and self.encoder_output.size(-1) > 0:
            self.encoder_output = self.encoder_output[..., :0]

    def reorder(self, new_order: Tensor) -> None:
        self.rows = self.rows.index_select(0, new_order)
        if self.encoder_output is not None:
            self.encoder_output = self.encoder_output.index_select(0, new_order)
            if self.seq_lens is not None:
                order = new_order.tolist()
                self.seq_lens = [self.seq_lens[i] for i in order]
            self._layout = None  # looked up again at the next step

    def size_bytes(self) -> int:
        return self.capacity_bytes()

    def capacity_bytes(self) -> int:
        n = self.rows.numel() * self.rows.itemsize
        if self.encoder_output is not None:
            n += self.encoder_output.numel() * self.encoder_output.itemsize
        return int(n)


@dataclass
class EncoderOutput:
    """An encoded source batch, reusable across target modalities."""

    output: Tensor
    """(N, S, D) encoder output."""
    seq_lens: list[int] | None
    """Source lengths when the batch is padded, else None."""


def has_fast_path(model: Module) -> bool:
    """True if the encoder, decoder and output projection can be called separately.

    Either tmt's `TmtModel` (`encode` / `decode` methods) or a fairseq2
    `TransformerModel` (frontends and stacks as attributes), with the output
    projection's weight reachable as `final_proj.weight`.
    """
    proj = getattr(model, "final_proj", None)
    if not isinstance(getattr(proj, "weight", None), Tensor):
        return False
    if callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None)):
        return True
    return all(hasattr(model, n) for n in ("encoder_frontend", "encoder", "decoder_frontend", "decoder"))


def encode(model: Module, seqs: Tensor, layout: BatchLayout) -> EncoderOutput:
    """Run the encoder once (fast path only)."""
    m: Any = model
    if callable(getattr(m, "encode", None)):
        out, _ = m.encode(seqs, layout)
    else:
        x, x_layout = m.encoder_frontend(seqs, layout)
        out = m.encoder(x, x_layout)
    return EncoderOutput(out, list(layout.seq_lens) if layout.padded else None)


def decode_hidden(
    model: Module,
    enc: Tensor,
    enc_layout: BatchLayout,
    seqs: Tensor,
    layout: BatchLayout,
    state_bag: IncrementalStateBag | None,
) -> Tensor:
    """Decoder hidden states (fast path only)."""
    m: Any = model
    if callable(getattr(m, "decode", None)) and callable(getattr(m, "encode", None)):
        out: Tensor = m.decode(enc, enc_layout, seqs, layout, state_bag=state_bag)
        return out
    x, x_layout = m.decoder_frontend(seqs, layout, state_bag=state_bag)
    out = m.decoder(x, x_layout, enc, enc_layout, state_bag=state_bag)
    return out


def _static_cross_attention(model: Module) -> bool:
    """True if every decoder layer's encoder-decoder attention caches its keys/values
    (fairseq2's StandardTransformerDecoderLayer with a StandardMultiheadAttention)."""
    from fairseq2.models.transformer import (
        StandardMultiheadAttention,
        StandardTransformerDecoderLayer,
    )

    decoder = getattr(model, "decoder", None)
    layers = list(getattr(decoder, "layers", []) or [])
    return bool(layers) and all(
        isinstance(layer, StandardTransformerDecoderLayer)
        and isinstance(getattr(layer, "encoder_decoder_attn", None), StandardMultiheadAttention)
        and getattr(layer.encoder_decoder_attn, "state_factory", None) is None
        for layer in layers
    )


class RestrictedSeq2Seq(Seq2SeqModel):
    """A seq2seq model whose output is restricted to one target modality.

    Call it the way fairseq2 generators call a `Seq2SeqModel`; target ids are
    local ids (see the module docstring). `min_lens[i]` / `max_lens[i]` bound
    the number of target tokens before <eos> for input row i: <eos> is banned
    before `min_lens[i]` tokens and forced once `max_lens[i]` tokens exist.
    """

    def __init__(
        self,
        model: Module,
        space: TargetSpace,
        min_lens: Tensor,
        max_lens: Tensor,
        *,
        encoded: EncoderOutput | None = None,
        fast: bool | None = None,
        forced: Tensor | None = None,
    ) -> None:
        super().__init__(
            int(getattr(model, "max_source_seq_len", 1 << 30)), int(getattr(model, "max_target_seq_len", 1 << 30))
        )
        self.model = model
        self.space = space
        self.min_lens = min_lens
        self.max_lens = max_lens
        self.fast = has_fast_path(model) if fast is None else fast
        if encoded is not None and not self.fast:
            raise ValueError("a precomputed encoder output needs the fast path")
        self.encoded = encoded
        self.forced = forced  # (N,) local id of the token the prompt gives after <bos> per input row (a voice)
        self.release_encoder = self.fast and _static_cross_attention(model)
        bias = torch.zeros(space.size, device=space.joint_ids.device)
        bias[[LOCAL_PAD, LOCAL_UNK, LOCAL_BOS]] = -torch.inf
        if space.num_tokens >= 0:
            bias[LOCAL_OFFSET + space.num_tokens :] = -torch.inf  # control tokens are given, never chosen
        self.bias = bias
        # rows of the output projection for the local vocabulary (fast path)
        self._w: Tensor | None = None
        self._b: Tensor | None = None
        if self.fast:
            proj: Any = model.final_proj
            self._w = proj.weight.index_select(0, space.joint_ids)
            b = getattr(proj, "bias", None)
            self._b = b.index_select(0, space.joint_ids) if isinstance(b, Tensor) else None

    def forward(  # type: ignore[override]
        self,
        source_seqs: Tensor,
        source_seqs_layout: BatchLayout,
        target_seqs: Tensor,
        target_seqs_layout: BatchLayout,
        *,
        state_bag: IncrementalStateBag | None = None,
    ) -> Tensor:
        joint = self.space.joint_ids[target_seqs]  # (N, S) local -> joint ids
        state = state_bag.maybe_get_state(self, _RowState) if state_bag is not None else None
        step0 = state_bag.step_nr if state_bag is not None else 0
        n = target_seqs.size(0)
        if self.fast:
            if state is None:
                enc = self.encoded if self.encoded is not None else encode(self.model, source_seqs, source_seqs_layout)
                if enc.output.size(0) != n:
                    raise RuntimeError(f"encoder rows {enc.output.size(0)} != decoder rows {n}")
                state = _RowState(torch.arange(n, device=target_seqs.device), enc.output, enc.seq_lens)
                if state_bag is not None:
                    state_bag.set_state(self, state)
            assert state.encoder_output is not None
            x = decode_hidden(self.model, state.encoder_output, state.layout(), joint, target_seqs_layout, state_bag)
            if state_bag is not None and self.release_encoder:
                state.release_encoder_output()
            assert self._w is not None
            logits = linear(x, self._w, self._b)  # (N, S, K+4)
        else:
            if state is None:
                state = _RowState(torch.arange(n, device=target_seqs.device), None, None)
                if state_bag is not None:
                    state_bag.set_state(self, state)
            full = self.model(source_seqs, source_seqs_layout, joint, target_seqs_layout, state_bag=state_bag)
            logits = full.index_select(-1, self.space.joint_ids)
        return self._constrain(logits.float(), state.rows, step0)

    def _constrain(self, logits: Tensor, rows: Tensor, step0: int) -> Tensor:
        logits = logits + self.bias
        s = logits.size(1)
        # number of target tokens already generated before each position (the given prefix is not counted)
        lead = 0 if self.forced is None else 1
        pos = torch.arange(step0, step0 + s, device=logits.device)
        done = (pos - lead)[None, :]  # (1, S)
        ban_eos = done < self.min_lens[rows][:, None]  # (N, S)
        if bool(ban_eos.any()):
            logits[..., LOCAL_EOS] = logits[..., LOCAL_EOS].masked_fill(ban_eos, -torch.inf)
        force_eos = done >= self.max_lens[rows][:, None]
        if bool(force_eos.any()):
            eos = logits[..., LOCAL_EOS].clone()
            logits = logits.masked_fill(force_eos[..., None], -torch.inf)
            logits[..., LOCAL_EOS] = torch.where(force_eos, torch.zeros_like(eos), eos)
        if self.forced is not None and bool((pos < lead).any()):
            # the position after <bos> predicts the given voice token: all its probability there
            given = torch.full_like(logits, -torch.inf)
            given.scatter_(-1, self.forced[rows][:, None, None].expand(-1, s, 1), 0.0)
            logits = torch.where((pos < lead)[None, :, None], given, logits)
        return logits
