"""Six-direction training of the tmt model (DESIGN section 7).

One optimizer step covers every enabled direction: for each batch of store
rows, each source modality is encoded once and its encoder output decoded into
every other enabled modality; the step loss is the mean over directions of each
direction's per-token loss (cross-entropy over the target modality's slice +
<eos>, label smoothing 0.1 by default) times its weight (uniform by default;
temperature, fixed and a direction schedule in `tmt.training.weights`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tmt import TmtError
from tmt.core.budget import TimeBudget
from tmt.models.checkpoint import save_model
from tmt.store.pipeline import BatchReader, RowBatch, parse_directions
from tmt.training import checkpoint as ckpt
from tmt.training.config import TrainConfig
from tmt.training.distributed import (
    DistInfo,
    barrier,
    setup_distributed,
    teardown,
)
from tmt.training.metrics import plot_metrics
from tmt.training.state import Run, check_vocab_matches, save_run, setup_run
from tmt.training.steps import StepStats, optimizer_step
from tmt.training.validation import bcast_flag, mean, validate
from tmt.vocab import JointVocab

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    exp_dir: Path
    step: int
    train: dict[str, dict[str, float]]
    valid: dict[str, dict[str, float]] | None
    best: dict[str, Any] | None


def train(
    cfg: TrainConfig,
    exp_dir: str | Path,
    *,
    resume: bool = False,
    init_from: str | Path | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train (or continue training) into `exp_dir`. Collective under torchrun."""
    cfg.validate()
    exp = Path(exp_dir)
    info = setup_distributed(cfg.device)
    try:
        return _train(cfg, exp, info, resume=resume, init_from=init_from, stop_after=stop_after)
    finally:
        teardown(info)


def _train(
    cfg: TrainConfig,
    exp: Path,
    info: DistInfo,
    *,
    resume: bool,
    init_from: str | Path | None,
    stop_after: int | None,
) -> TrainResult:
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if not cfg.data.vocab:
        raise TmtError("no vocabulary given: pass --vocab vocab.json (built by `tmt vocab build`)")
    if not cfg.data.stores:
        raise TmtError("no training store given: pass --store PATH (repeatable; PATH=WEIGHT to weight it)")
    vocab = JointVocab.load(cfg.data.vocab)
    directions = parse_directions(cfg.data.directions)
    steps_done = ckpt.list_steps(exp)
    if steps_done and not resume:
        raise TmtError(
            f"{exp} already holds checkpoints (up to step {steps_done[-1]}); pass --resume to continue, "
            "or choose a new experiment directory"
        )
    if resume and (exp / "vocab.json").is_file():
        check_vocab_matches(vocab, JointVocab.load(exp / "vocab.json"), str(exp))

    # data first: it refuses stores whose fingerprints differ from vocab.json
    common = dict(
        directions=directions, max_tokens=cfg.data.max_tokens, max_seq_len=cfg.model.max_seq_len,
        seed=cfg.seed, rank=info.rank, world_size=info.world_size,
    )
    reader = BatchReader(
        cfg.data.stores, vocab, train=True, prefetch=cfg.data.prefetch,
        **common,  # type: ignore[arg-type]
    )
    valid_reader = (
        BatchReader(cfg.data.valid_stores, vocab, train=False, prefetch=0, **common)  # type: ignore[arg-type]
        if cfg.data.valid_stores else None
    )
    try:
        run = setup_run(cfg, exp, info, vocab, directions, reader, valid_reader, init_from=init_from,
                     resume=resume, steps_done=steps_done)
        return _run(run, stop_after=stop_after)
    finally:
        reader.close()
        if valid_reader is not None:
            valid_reader.close()


def _run(run: Run, *, stop_after: int | None) -> TrainResult:
    """The training loop: optimizer steps until max_steps, --stop-after or the time budget."""
    cfg, info, exp = run.cfg, run.info, run.exp
    batches: Iterator[RowBatch] = iter(run.reader)
    window = StepStats()
    last_train: dict[str, dict[str, float]] = {}
    last_valid: dict[str, dict[str, float]] | None = None
    t0 = time.perf_counter()
    steps_in_window = 0
    start = run.step
    saved_at = -1
    budget = TimeBudget(cfg.max_minutes, run.prior_seconds)  # the time budget spans resumed runs
    out_of_time = budget.spent_before_start()  # a resumed run whose budget is already spent trains no further
    while run.step < cfg.max_steps and (stop_after is None or run.step - start < stop_after) and not out_of_time:
        if run.mix is not None and run.mix.switches_at(run.step) and info.is_main:
            p = run.mix.phase_at(run.step)
            log.info("step %d: training %s", run.step + 1, ",".join(p.directions) if p else "the full mixture")
        grad_norm = optimizer_step(run, batches, window)
        run.step += 1
        steps_in_window += 1
        step = run.step
        if cfg.max_minutes is not None:  # rank 0's clock decides, so every rank stops together
            out_of_time = bcast_flag(budget.exhausted(), info)
            if out_of_time and info.is_main:
                log.info("time budget of %.1f min spent at step %d; stopping", cfg.max_minutes, step)
        last = step == cfg.max_steps or (stop_after is not None and step - start >= stop_after) or out_of_time

        if step % cfg.log_every == 0 or last:
            last_train = _log_train(run, window, grad_norm, time.perf_counter() - t0, steps_in_window)
            window = StepStats()
            t0 = time.perf_counter()
            steps_in_window = 0

        is_best = False
        if run.valid_reader is not None and (step % cfg.valid_every == 0 or last):
            last_valid, is_best = validate(run, run.valid_reader)

        if step % cfg.save_every == 0 or last or is_best:
            save_run(run, write_model=is_best or run.valid_reader is None, train_seconds=budget.spent())
            saved_at = step

    _finish(run, saved_at, budget, finished=run.step >= cfg.max_steps or out_of_time)
    return TrainResult(exp_dir=exp, step=run.step, train=last_train, valid=last_valid, best=ckpt.read_best(exp))


def _log_train(
    run: Run, window: StepStats, grad_norm: float, dt: float, steps_in_window: int
) -> dict[str, dict[str, float]]:
    """Reduce the window's stats over ranks, write and log them; the per-direction stats."""
    cfg, info = run.cfg, run.info
    per_dir = window.reduce(run.directions, info, info.device)
    tokens = sum(v["tokens"] for v in per_dir.values())
    rec: dict[str, Any] = {
        "step": run.step, "split": "train", "lr": run.sched.get_last_lr()[0], "grad_norm": grad_norm,
        "loss": mean([v["loss"] for v in per_dir.values()]),
        "ce": mean([v["ce"] for v in per_dir.values()]),
        "target_tokens_per_s": tokens / dt if dt > 0 else 0.0,
        "steps_per_s": steps_in_window / dt if dt > 0 else 0.0,
    }
    for d, v in per_dir.items():  # tokens/<d>: the window's target tokens (compute comparisons)
        rec[f"ce/{d}"], rec[f"acc/{d}"], rec[f"tokens/{d}"] = v["ce"], v["acc"], int(v["tokens"])
    run.metrics.write(rec)
    if info.is_main:
        log.info("step %d/%d lr %.2e loss %.3f | %s | %.0f tok/s", run.step, cfg.max_steps, rec["lr"], rec["loss"],
                 " ".join(f"{d} {v['ce']:.3f}/{v['acc']:.2f}" for d, v in per_dir.items()),
                 rec["target_tokens_per_s"])
    return per_dir


def _finish(run: Run, saved_at: int, budget: TimeBudget, *, finished: bool) -> None:
    """The last checkpoint (if the loop did not just write it), model.pt (averaged over the last
    checkpoints when the run is finished and `average_last` asks) and the curves."""
    info, exp = run.info, run.exp
    if saved_at != run.step and run.step > 0:  # resumed at max_steps: nothing ran
        save_run(run, write_model=run.valid_reader is None, train_seconds=budget.spent())
    if info.is_main and not (exp / "model.pt").is_file():
        save_model(run.model, exp)
    if info.is_main and finished and run.cfg.average_last > 0:
        ckpt.write_average(exp, run.cfg.average_last)
    if run.cfg.plot and info.is_main:
        plot_metrics(exp / "metrics.jsonl", exp / "curves.png")
    barrier(info)
