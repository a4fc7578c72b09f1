"""Validation during training: cross-entropy and accuracy per direction on the
validation stores, the metrics record and the best models it keeps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tmt.core.device import autocast
from tmt.models.checkpoint import save_model
from tmt.models.tmt import TmtModel
from tmt.store.pipeline import BatchReader
from tmt.training import checkpoint as ckpt
from tmt.training.config import TrainConfig
from tmt.training.distributed import (
    DistInfo,
)
from tmt.training.metrics import plot_metrics
from tmt.training.steps import SixWayStep, StepStats
from tmt.training.token_split import validation_record

if TYPE_CHECKING:
    from tmt.training.state import Run

log = logging.getLogger(__name__)


def validate(run: Run, valid_reader: BatchReader) -> tuple[dict[str, dict[str, float]], bool]:
    """Validate, write and log the result, keep the best models; (per-direction stats, is best)."""
    cfg, info, exp, step = run.cfg, run.info, run.exp, run.step
    valid = evaluate(run.step_module, valid_reader, info, run.dtype, run.directions)
    vloss = mean([v["ce"] for v in valid.values()])
    rec: dict[str, Any] = {"step": step, "split": "valid", "ce": vloss}
    for d, v in valid.items():
        rec[f"ce/{d}"], rec[f"acc/{d}"] = v["ce"], v["acc"]
    split, split_line = validation_record(run, valid_reader)  # image targets: object vs background tokens
    rec.update(split)
    stopped: dict[str, float] = {}  # directions stopped by this validation -> their lowest CE
    if run.mix is not None:
        stopped = {d: run.mix.lows[d] for d in run.mix.observe(step, {d: v["ce"] for d, v in valid.items()})}
        if run.mix.stopped:
            rec["stopped"] = sorted(run.mix.stopped)
    run.metrics.write(rec)
    is_best = False
    if info.is_main:
        log.info("valid step %d: ce %.3f | %s", step, vloss,
                 " ".join(f"{d} {v['ce']:.3f}/{v['acc']:.2f}" for d, v in valid.items()))
        if split_line:
            log.info("valid step %d: %s", step, split_line)
        for d, low in stopped.items():
            log.info("valid step %d: %s stops training (no new low in %d validations; its best ce %.3f)",
                     step, d, cfg.data.stop_patience, low)
        is_best = ckpt.update_best(exp, step, vloss)
        if cfg.best_per_direction:
            keep_direction_bests(exp, step, run.model, valid, cfg)
    is_best = bool(bcast_flag(is_best, info))
    if cfg.plot and info.is_main:
        plot_metrics(exp / "metrics.jsonl", exp / "curves.png")
    return valid, is_best


@torch.no_grad()
def evaluate(
    step_module: SixWayStep, reader: BatchReader, info: DistInfo, dtype: str, directions: list[str]
) -> dict[str, dict[str, float]]:
    """One pass over the validation stores: plain cross-entropy and token accuracy per direction."""
    was_training = step_module.training
    step_module.eval()
    reader.reset()
    batches = list(reader)
    n = len(batches)
    if info.distributed and step_module.lockstep:  # FSDP: every rank runs the same number of passes
        t = torch.tensor([n])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        n = int(t.item())
    total = StepStats()
    for i in range(n):
        batch = batches[i] if i < len(batches) else batches[0]
        with autocast(info.device.type, dtype):
            _, stats = step_module(batch, 0.0)
        if i < len(batches):
            total.add(stats)
    if was_training:
        step_module.train()
    return total.reduce(directions, info, info.device)


def keep_direction_bests(
    exp: Path, step: int, model: TmtModel, valid: dict[str, dict[str, float]], cfg: TrainConfig
) -> None:
    """best_per_direction: write best/<d>/ for every direction whose validation CE is a new low."""
    for d, v in valid.items():
        if ckpt.improves_best(exp, v["ce"], direction=d):
            dest = ckpt.direction_best_dir(exp, d)
            save_model(model, dest, train_config=cfg)
            ckpt.write_direction_best(exp, d, step, v["ce"])
            log.info("valid step %d: new best for %s (ce %.3f) -> %s", step, d, v["ce"], dest)


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def bcast_flag(flag: bool, info: DistInfo) -> bool:
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())
