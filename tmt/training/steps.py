"""The per-step work of training: the six-direction loss of one batch, the
learning-rate schedule, the optimizer and one optimizer step over `grad_accum` batches."""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from fairseq2.nn import BatchLayout
from torch import Tensor

from tmt.core.device import autocast, resolve_dtype
from tmt.core.modality import parse_direction
from tmt.models.tmt import LossStats, TmtModel, sliced_loss
from tmt.store.pipeline import RowBatch, decoder_io
from tmt.training.config import TrainConfig
from tmt.training.distributed import (
    DistInfo,
    all_reduce_sum,
)
from tmt.training.null_source import NULL_SOURCE_TARGETS, apply_null_sources

if TYPE_CHECKING:
    from tmt.training.state import Run


@dataclass
class DirStats:
    """Sums for one direction (detached floats)."""

    loss: float = 0.0
    nll: float = 0.0
    correct: float = 0.0
    tokens: float = 0.0

    def add(self, other: DirStats) -> None:
        self.loss += other.loss
        self.nll += other.nll
        self.correct += other.correct
        self.tokens += other.tokens


@dataclass
class StepStats:
    dirs: dict[str, DirStats] = field(default_factory=lambda: defaultdict(DirStats))

    def add(self, other: StepStats) -> None:
        for d, s in other.dirs.items():
            self.dirs[d].add(s)

    def reduce(self, directions: list[str], info: DistInfo, device: torch.device) -> dict[str, dict[str, float]]:
        """Sum over ranks; {direction: {loss, ce, acc, tokens}} for directions with tokens."""
        t = torch.tensor(
            [[self.dirs[d].loss, self.dirs[d].nll, self.dirs[d].correct, self.dirs[d].tokens] for d in directions],
            dtype=torch.float64, device=device if device.type == "cuda" else torch.device("cpu"),
        )
        all_reduce_sum(t, info)
        out: dict[str, dict[str, float]] = {}
        for d, row in zip(directions, t.tolist(), strict=True):
            if row[3] > 0:
                out[d] = {"loss": row[0] / row[3], "ce": row[1] / row[3], "acc": row[2] / row[3], "tokens": row[3]}
        return out


class SixWayStep(torch.nn.Module):
    """Loss of one RowBatch over the enabled directions (what DDP wraps).

    With `lockstep=True` (FSDP) every rank runs every encoder and decoder pass of
    every enabled direction, on a 1-token dummy when its batch lacks that direction,
    so the per-layer parameter all-gathers stay matched across ranks."""

    def __init__(self, model: TmtModel, directions: list[str], *, lockstep: bool = False) -> None:
        super().__init__()
        self.model = model
        self.directions = directions
        self.lockstep = lockstep
        self.by_source: dict[str, list[str]] = defaultdict(list)
        for d in directions:
            s, t = parse_direction(d)
            self.by_source[s].append(t)

    def forward(
        self, batch: RowBatch, label_smoothing: float = 0.0, weights: dict[str, float] | None = None
    ) -> tuple[Tensor, StepStats]:
        """Step loss: sum over the batch's directions of weight * per-token loss, over their number.

        `weights` (`tmt.training.weights`; None: all 1): a direction weighing 0 is not computed.
        A generated (synthetic) modality is a source only (`RowBatch.is_target`)."""
        model = self.model
        dev = model.final_proj.weight.device
        w = weights or {}
        stats = StepStats()
        terms: list[Tensor] = []
        for src, tgts in self.by_source.items():
            live = [t for t in tgts if w.get(f"{src[0]}2{t[0]}", 1.0) > 0]
            rows = [r for r in batch.rows_with(src) if any(batch.is_target(t, r) for t in live)]
            if not rows and not self.lockstep:
                continue
            if not rows:
                x = torch.full((1, 1), 2, dtype=torch.long)  # <eos>
                lens = [1]
            else:
                x, lens = batch.source(src, rows)
            x = x.to(dev, non_blocking=True)
            enc, enc_layout = model.encode(x, BatchLayout.of(x, lens))  # each source encoded once
            for tgt in tgts:
                d = f"{src[0]}2{tgt[0]}"
                sub = [j for j, r in enumerate(rows) if batch.is_target(tgt, r)] if tgt in live else []
                if not sub and not self.lockstep:
                    continue
                st = self._decode(batch, enc, enc_layout, rows, lens, sub, src, tgt, label_smoothing)
                if not sub:  # FSDP lockstep: a pass that contributes nothing
                    terms.append(st.loss * 0.0)
                    continue
                term = st.loss / st.num_tokens  # per-token mean of this direction
                wd = w.get(d, 1.0)
                terms.append(term if wd == 1.0 else term * wd)
                stats.dirs[d].add(
                    DirStats(float(st.loss.detach()), float(st.nll), float(st.correct), float(st.num_tokens))
                )
        n_real = len(stats.dirs)
        if not terms:  # no direction in this batch: a zero loss that still touches every parameter
            return sum(p.sum() for p in model.parameters()) * 0.0, stats  # type: ignore[return-value]
        loss = torch.stack(terms).sum() / max(n_real, 1)
        return loss, stats

    def _decode(
        self, batch: RowBatch, enc: Tensor, enc_layout: BatchLayout, rows: list[int], lens: list[int],
        sub: list[int], src: str, tgt: str, label_smoothing: float,
    ) -> LossStats:
        """The sliced loss of decoding rows `sub` (indices into `rows`) into `tgt`; a 1-row
        dummy target when `sub` is empty (FSDP lockstep)."""
        model = self.model
        dev = enc.device
        if not sub:
            e, el = enc[:1], BatchLayout.of(enc[:1], lens[:1])
            ti, to, tl = decoder_io([torch.zeros(0, dtype=torch.long)], tgt)
        else:
            if len(sub) == len(rows):
                e, el = enc, enc_layout
            else:
                idx = torch.tensor(sub, device=dev)
                e = enc.index_select(0, idx)
                el = BatchLayout.of(e, [lens[j] for j in sub])
            picked = [rows[j] for j in sub]
            ti, to, tl = decoder_io([batch.seqs[tgt][r] for r in picked], tgt, batch.prefixes(tgt, picked))  # type: ignore[misc]
            if self.training and tgt in NULL_SOURCE_TARGETS and model.config.null_source_prob > 0:
                e, el = apply_null_sources(model, src, e, [lens[j] for j in sub],
                                           model.config.null_source_prob)
        ti, to = ti.to(dev, non_blocking=True), to.to(dev, non_blocking=True)
        h = model.decode(e, el, ti, BatchLayout.of(ti, tl))
        return sliced_loss(model, h, to, tgt, label_smoothing=label_smoothing)


def lr_lambda(cfg: TrainConfig) -> Any:
    o = cfg.optim
    warm = max(o.warmup_steps, 0)
    total = cfg.max_steps

    def f(step: int) -> float:
        # `step` = optimizer steps done so far; the lr used for step k+1 is lr * f(k)
        s = step + 1
        if warm and s <= warm:
            return s / warm
        if o.schedule == "constant":
            return 1.0
        if o.schedule == "inverse_sqrt":
            return math.sqrt(max(warm, 1) / s)
        progress = min(1.0, (s - warm) / max(1, total - warm))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim < 2 else decay).append(p)
    o = cfg.optim
    impl: dict[str, bool] = {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(o.adamw_impl, {})
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o.lr, betas=o.betas, eps=o.eps, **impl,
    )


def train_dtype(cfg: TrainConfig, device: torch.device) -> str:
    """`cfg.dtype` resolved for `device`, once per run (`Run.dtype`): `auto` is bfloat16 on a GPU with
    bf16 units, else float32."""
    if cfg.dtype != "auto":
        return cfg.dtype
    # on CPU float32 even with bf16 units: the demo's matrices are too small to repay the casts
    # (0.68x the speed on an AMX CPU; docs/results.md, session 11)
    return resolve_dtype("auto", "cuda") if device.type == "cuda" else "float32"


def optimizer_step(run: Run, batches: Iterator[RowBatch], window: StepStats) -> float:
    """One optimizer step over `grad_accum` batches (their stats added to `window`); the grad norm."""
    cfg, wrapped = run.cfg, run.wrapped
    accum = cfg.optim.grad_accum
    weights = run.mix.weights_at(run.step) if run.mix is not None else None
    wrapped.train()
    for micro in range(accum):
        batch = next(batches)
        sync_ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if micro < accum - 1 and hasattr(wrapped, "no_sync"):
            sync_ctx = wrapped.no_sync()  # type: ignore[operator]
        with sync_ctx:
            with autocast(run.info.device.type, run.dtype):
                loss, stats = wrapped(batch, cfg.optim.label_smoothing, weights)
            (loss / accum).backward()
        window.add(stats)
    if cfg.optim.clip_norm > 0:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(run.step_module.parameters(), cfg.optim.clip_norm))
    else:
        grad_norm = float("nan")
    run.opt.step()
    run.sched.step()
    run.opt.zero_grad(set_to_none=True)
    return grad_norm
