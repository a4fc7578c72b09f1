"""Classifier-free guidance for image targets (issue 18, section 2).

A model trained with null sources (`model.null_source_prob > 0`,
`tmt.training.null_source`) knows both p(image | source) and p(image | null
source). At decoding `GuidedSeq2Seq` stacks every source row with its null
source (`<bos:src> <eos>`), so one batched forward of 2N rows gives the
conditional and the unconditional logits, and returns

    guided = cond + scale * (cond - uncond)

to the fairseq2 generator: scale 0 is plain conditional decoding (and then the
generator runs without this wrapper, so no unconditional pass is spent), larger
scales favour tokens that the source makes likelier. Positions masked by the
length rules are -inf in both halves and stay -inf.

The generator sees N rows; the wrapped model keeps 2N. A private state bag
holds the wrapped model's caches, and the wrapper's own incremental state
reorders it (rows `order` and `order + N`) whenever the generator reorders its
rows (beam selection, finished rows dropped, samples fanned out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from fairseq2.models.seq2seq import Seq2SeqModel
from fairseq2.nn import BatchLayout, IncrementalState, IncrementalStateBag
from torch import Tensor
from torch.nn import Module

from tmt.core.errors import TmtError
from tmt.training.null_source import NULL_SOURCE_TARGETS, null_source_ids
from tmt.vocab import PAD, JointVocab


class GuidanceError(TmtError):
    """Guidance was asked of a model (or a target) that cannot give it."""


def check_guidance(model: Module, scale: float) -> None:
    """Refuse a non-zero `scale` for a model trained without null sources."""
    if scale == 0:
        return
    if scale < 0:
        raise GuidanceError(f"guidance must be >= 0 (0: off), got {scale}")
    cfg = getattr(model, "config", None)
    prob = float(getattr(cfg, "null_source_prob", 0.0) or 0.0)
    if prob <= 0:
        raise GuidanceError(
            f"guidance {scale} needs a model trained with null sources, and this one was not "
            "(its config has model.null_source_prob = 0); retrain with --set model.null_source_prob=0.1 "
            "or decode with --guidance 0"
        )


def uses_guidance(scale: float, tgt: str) -> bool:
    """True when decoding into `tgt` runs the guided (2N-row) model."""
    return scale != 0 and tgt in NULL_SOURCE_TARGETS


def guided_logits(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """cond + scale * (cond - uncond), keeping the -inf entries of `cond` (masked tokens)."""
    finite = torch.isfinite(cond) & torch.isfinite(uncond)
    mixed = cond + scale * (cond - torch.where(finite, uncond, cond))
    return torch.where(torch.isfinite(cond), mixed, cond)


def stack_null_sources(seqs: Tensor, lens: list[int], vocab: JointVocab, srcs: Sequence[str]) -> tuple[Tensor, list[int]]:
    """The (N, S) padded source batch followed by each row's null source: (2N, max(S, 2))."""
    nulls = [null_source_ids(vocab, s) for s in srcs]
    width = max(seqs.size(1), max(len(n) for n in nulls))
    out = torch.full((2 * seqs.size(0), width), PAD, dtype=seqs.dtype, device=seqs.device)
    out[: seqs.size(0), : seqs.size(1)] = seqs
    for r, n in enumerate(nulls):
        out[seqs.size(0) + r, : len(n)] = torch.from_numpy(np.asarray(n)).to(seqs.device)
    return out, list(lens) + [len(n) for n in nulls]


class _GuideState(IncrementalState):
    """The wrapped model's own state bag and the current number of generator rows."""

    def __init__(self, bag: IncrementalStateBag, rows: int) -> None:
        self.bag = bag
        self.rows = rows

    def reorder(self, new_order: Tensor) -> None:
        self.bag.reorder(torch.cat([new_order, new_order + self.rows]))
        self.rows = int(new_order.numel())

    def size_bytes(self) -> int:
        return self.bag.size_bytes()

    def capacity_bytes(self) -> int:
        return self.bag.capacity_bytes()


class GuidedSeq2Seq(Seq2SeqModel):
    """Guided logits of `inner`, a model called on the stacked batch (cond rows, then null rows).

    `inner` is a `RestrictedSeq2Seq` built for 2N rows (its length limits repeated for the
    null rows); `stacked` / `stacked_layout` are its source batch. The generator calls this
    wrapper with the N conditional rows only; their source tensors are not used."""

    def __init__(self, inner: Any, stacked: Tensor, stacked_layout: BatchLayout, scale: float) -> None:
        super().__init__(inner.max_source_seq_len, inner.max_target_seq_len)
        self.inner = inner
        self.stacked = stacked
        self.stacked_layout = stacked_layout
        self.scale = scale

    def forward(  # type: ignore[override]
        self,
        source_seqs: Tensor,
        source_seqs_layout: BatchLayout,
        target_seqs: Tensor,
        target_seqs_layout: BatchLayout,
        *,
        state_bag: IncrementalStateBag | None = None,
    ) -> Tensor:
        n = target_seqs.size(0)
        both = torch.cat([target_seqs, target_seqs])
        both_layout = BatchLayout.of(both, list(target_seqs_layout.seq_lens) * 2 if target_seqs_layout.padded else None)
        inner_bag: IncrementalStateBag | None = None
        if state_bag is not None:
            state = state_bag.maybe_get_state(self, _GuideState)
            if state is None:
                state = _GuideState(
                    IncrementalStateBag(state_bag.max_num_steps, capacity_increment=state_bag.capacity_increment), n
                )
                state_bag.set_state(self, state)
            inner_bag = state.bag
            if state_bag.step_nr > inner_bag.step_nr:
                inner_bag.increment_step_nr(state_bag.step_nr - inner_bag.step_nr)
        logits: Tensor = self.inner(self.stacked, self.stacked_layout, both, both_layout, state_bag=inner_bag)
        return guided_logits(logits[:n], logits[n:], self.scale)
