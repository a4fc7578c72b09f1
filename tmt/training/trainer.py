"""Six-direction training of the tmt model (DESIGN section 7).

One optimizer step covers every enabled direction with equal weight: for each
batch of store rows, each source modality is encoded once and its encoder
output decoded into every other enabled modality; the step loss is the mean
over directions of each direction's per-token loss (cross-entropy over the
target modality's slice + <eos>, label smoothing 0.1 by default).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fairseq2.nn import BatchLayout
from torch import Tensor

from tmt import TmtError
from tmt.config import dump_yaml
from tmt.core.budget import TimeBudget
from tmt.core.io import make_dirs
from tmt.core.modality import parse_direction
from tmt.io import atomic_write_text
from tmt.models.tmt import TmtModel, create_model, save_model, sliced_loss
from tmt.store.pipeline import BatchReader, RowBatch, decoder_io, parse_directions
from tmt.training import checkpoint as ckpt
from tmt.training.config import TrainConfig
from tmt.training.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    setup_distributed,
    teardown,
    wrap_data_parallel,
)
from tmt.training.metrics import MetricsWriter, plot_metrics
from tmt.vocab import JointVocab

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# the per-batch computation
# --------------------------------------------------------------------------------------
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

    def forward(self, batch: RowBatch, label_smoothing: float = 0.0) -> tuple[Tensor, StepStats]:
        model = self.model
        dev = model.final_proj.weight.device
        stats = StepStats()
        terms: list[Tensor] = []
        for src, tgts in self.by_source.items():
            rows = [r for r in batch.rows_with(src) if any(batch.seqs[t][r] is not None for t in tgts)]
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
                sub = [j for j, r in enumerate(rows) if batch.seqs[tgt][r] is not None]
                if not sub:
                    if not self.lockstep:
                        continue
                    e, el = enc[:1], BatchLayout.of(enc[:1], lens[:1])
                    ti, to, tl = decoder_io([torch.zeros(0, dtype=torch.long)], tgt)
                    weight = 0.0
                else:
                    if len(sub) == len(rows):
                        e, el = enc, enc_layout
                    else:
                        idx = torch.tensor(sub, device=dev)
                        e = enc.index_select(0, idx)
                        el = BatchLayout.of(e, [lens[j] for j in sub])
                    ti, to, tl = decoder_io([batch.seqs[tgt][rows[j]] for j in sub], tgt)  # type: ignore[misc]
                    weight = 1.0
                ti, to = ti.to(dev, non_blocking=True), to.to(dev, non_blocking=True)
                h = model.decode(e, el, ti, BatchLayout.of(ti, tl))
                st = sliced_loss(model, h, to, tgt, label_smoothing=label_smoothing)
                if weight == 0.0:
                    terms.append(st.loss * 0.0)
                    continue
                terms.append(st.loss / st.num_tokens)  # per-token mean: every direction weighs the same
                stats.dirs[d].add(
                    DirStats(float(st.loss.detach()), float(st.nll), float(st.correct), float(st.num_tokens))
                )
        n_real = len(stats.dirs)
        if not terms:  # no direction in this batch: a zero loss that still touches every parameter
            return sum(p.sum() for p in model.parameters()) * 0.0, stats  # type: ignore[return-value]
        loss = torch.stack(terms).sum() / max(n_real, 1)
        return loss, stats


# --------------------------------------------------------------------------------------
# schedule and optimizer
# --------------------------------------------------------------------------------------
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
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o.lr, betas=o.betas, eps=o.eps,
    )


# --------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    exp_dir: Path
    step: int
    train: dict[str, dict[str, float]]
    valid: dict[str, dict[str, float]] | None
    best: dict[str, Any] | None


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _full_state(module: torch.nn.Module, opt: torch.optim.Optimizer, fsdp: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Unsharded model and optimizer state (collective under FSDP)."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        msd, osd = get_state_dict(module, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return msd, osd
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}, opt.state_dict()


def _load_full_state(module: torch.nn.Module, opt: torch.optim.Optimizer, msd: dict[str, Any], osd: dict[str, Any], fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(module, opt, model_state_dict=msd, optim_state_dict=osd,
                       options=StateDictOptions(full_state_dict=True))
        return
    module.load_state_dict(msd)
    opt.load_state_dict(osd)


def _check_vocab_matches(a: JointVocab, b: JointVocab, what: str) -> None:
    if a.size != b.size or a.fingerprints() != b.fingerprints():
        raise TmtError(
            f"{what} was trained with a different vocabulary ({b!r}) than the one given ({a!r}); "
            "use the same vocab.json"
        )


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
        _check_vocab_matches(vocab, JointVocab.load(exp / "vocab.json"), str(exp))

    # data first: it refuses stores whose fingerprints differ from vocab.json
    common = dict(
        directions=directions, max_tokens=cfg.data.max_tokens, max_seq_len=cfg.model.max_seq_len,
        seed=cfg.seed, rank=info.rank, world_size=info.world_size,
    )
    reader = BatchReader(
        cfg.data.stores, vocab, train=True, shuffle_window=cfg.data.shuffle_window, prefetch=cfg.data.prefetch,
        **common,  # type: ignore[arg-type]
    )
    valid_reader = (
        BatchReader(cfg.data.valid_stores, vocab, train=False, prefetch=0, **common)  # type: ignore[arg-type]
        if cfg.data.valid_stores else None
    )
    try:
        run = _setup(cfg, exp, info, vocab, directions, reader, valid_reader, init_from=init_from,
                     resume=resume, steps_done=steps_done)
        return _run(run, stop_after=stop_after)
    finally:
        reader.close()
        if valid_reader is not None:
            valid_reader.close()


@dataclass
class _Run:
    """What the training loop of one run works with (built by `_setup`)."""

    cfg: TrainConfig
    exp: Path
    info: DistInfo
    directions: list[str]
    reader: BatchReader
    valid_reader: BatchReader | None
    fsdp: bool
    model: TmtModel
    step_module: SixWayStep
    wrapped: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    metrics: MetricsWriter
    step: int = 0
    prior_seconds: float = 0.0
    """Seconds trained before this (resumed) run."""


def _run(run: _Run, *, stop_after: int | None) -> TrainResult:
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
        grad_norm = _optimizer_step(run, batches, window)
        run.step += 1
        steps_in_window += 1
        step = run.step
        if cfg.max_minutes is not None:  # rank 0's clock decides, so every rank stops together
            out_of_time = _bcast_flag(budget.exhausted(), info)
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
            last_valid, is_best = _validate(run, run.valid_reader)

        if step % cfg.save_every == 0 or last or is_best:
            _save(run, write_model=is_best or run.valid_reader is None, train_seconds=budget.spent())
            saved_at = step

    _finish(run, saved_at, budget)
    return TrainResult(exp_dir=exp, step=run.step, train=last_train, valid=last_valid, best=ckpt.read_best(exp))


def _setup(
    cfg: TrainConfig,
    exp: Path,
    info: DistInfo,
    vocab: JointVocab,
    directions: list[str],
    reader: BatchReader,
    valid_reader: BatchReader | None,
    *,
    init_from: str | Path | None,
    resume: bool,
    steps_done: list[int],
) -> _Run:
    """Write the run's files, build model and optimizer, and load the checkpoint when resuming."""
    fsdp = cfg.distributed == "fsdp" and info.distributed
    if fsdp and cfg.best_per_direction:
        raise TmtError("best_per_direction is not supported with distributed=fsdp (each rank holds a shard); "
                       "use distributed=ddp or drop --set best_per_direction=true")
    if info.is_main:
        make_dirs(exp)
        atomic_write_text(exp / "config.yaml", dump_yaml(cfg))
        vocab.save(exp / "vocab.json")
    barrier(info)

    torch.manual_seed(cfg.seed)  # identical initialisation on every rank
    model = create_model(cfg.model, vocab)
    if init_from is not None and not (resume and steps_done):
        _init_weights(model, init_from, vocab)
    model.to(info.device)
    if info.is_main:
        log.info("model: %s, %.2fM parameters, vocab %d; directions %s; %d processes",
                 cfg.preset, model.num_params() / 1e6, vocab.size, ",".join(directions), info.world_size)
    step_module = SixWayStep(model, directions, lockstep=fsdp)
    wrapped = wrap_data_parallel(step_module, info, cfg.distributed)
    opt = make_optimizer(step_module, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    torch.manual_seed(cfg.seed + 1 + info.rank)  # dropout differs per rank
    run = _Run(cfg=cfg, exp=exp, info=info, directions=directions, reader=reader, valid_reader=valid_reader,
               fsdp=fsdp, model=model, step_module=step_module, wrapped=wrapped, opt=opt, sched=sched,
               metrics=MetricsWriter(exp / "metrics.jsonl", enabled=info.is_main))
    if resume and steps_done:
        _resume(run)
    elif resume and info.is_main:
        log.info("--resume: no checkpoint in %s yet; starting from scratch", exp)
    return run


def _init_weights(model: TmtModel, init_from: str | Path, vocab: JointVocab) -> None:
    """--init-from: start from another run's weights (same vocabulary and architecture)."""
    state = ckpt.load_weights(init_from)
    src_vocab = Path(init_from) / "vocab.json" if Path(init_from).is_dir() else None
    if src_vocab is not None and src_vocab.is_file():
        _check_vocab_matches(vocab, JointVocab.load(src_vocab), str(init_from))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise TmtError(
            f"--init-from {init_from}: weights do not fit this model config ({str(e).splitlines()[0]}); "
            "use the same preset/model settings as the run it comes from"
        ) from None
    log.info("initialised weights from %s", init_from)


def _resume(run: _Run) -> None:
    """Load the latest checkpoint: weights, optimizer, schedule, step, seconds trained, data and RNG."""
    exp, info = run.exp, run.info
    trainer_state, rank_state = ckpt.load_checkpoint(exp, info)
    if int(trainer_state.get("world_size", 1)) != info.world_size or rank_state is None:
        raise TmtError(
            f"checkpoint in {exp} was written by {trainer_state.get('world_size')} processes; "
            f"resume with the same number (got {info.world_size}), or start a new run with --init-from"
        )
    _load_full_state(
        run.step_module, run.opt, _load_module_state(run.step_module, trainer_state["model"]),
        trainer_state["optimizer"], run.fsdp,
    )
    run.sched.load_state_dict(trainer_state["scheduler"])
    run.step = int(trainer_state["step"])
    run.prior_seconds = float(trainer_state.get("train_seconds", 0.0))
    run.reader.load_state_dict(rank_state["data"])
    ckpt.set_rng_state(rank_state["rng"])
    run.metrics.truncate_after(run.step)
    if info.is_main:
        log.info("resumed from step %d", run.step)


def _optimizer_step(run: _Run, batches: Iterator[RowBatch], window: StepStats) -> float:
    """One optimizer step over `grad_accum` batches (their stats added to `window`); the grad norm."""
    cfg, wrapped = run.cfg, run.wrapped
    accum = cfg.optim.grad_accum
    wrapped.train()
    for micro in range(accum):
        batch = next(batches)
        sync_ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if micro < accum - 1 and hasattr(wrapped, "no_sync"):
            sync_ctx = wrapped.no_sync()  # type: ignore[operator]
        with sync_ctx:
            with _autocast(cfg, run.info.device):
                loss, stats = wrapped(batch, cfg.optim.label_smoothing)
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


def _log_train(
    run: _Run, window: StepStats, grad_norm: float, dt: float, steps_in_window: int
) -> dict[str, dict[str, float]]:
    """Reduce the window's stats over ranks, write and log them; the per-direction stats."""
    cfg, info = run.cfg, run.info
    per_dir = window.reduce(run.directions, info, info.device)
    tokens = sum(v["tokens"] for v in per_dir.values())
    rec: dict[str, Any] = {
        "step": run.step, "split": "train", "lr": run.sched.get_last_lr()[0], "grad_norm": grad_norm,
        "loss": _mean([v["loss"] for v in per_dir.values()]),
        "ce": _mean([v["ce"] for v in per_dir.values()]),
        "target_tokens_per_s": tokens / dt if dt > 0 else 0.0,
        "steps_per_s": steps_in_window / dt if dt > 0 else 0.0,
    }
    for d, v in per_dir.items():
        rec[f"ce/{d}"], rec[f"acc/{d}"] = v["ce"], v["acc"]
    run.metrics.write(rec)
    if info.is_main:
        log.info("step %d/%d lr %.2e loss %.3f | %s | %.0f tok/s", run.step, cfg.max_steps, rec["lr"], rec["loss"],
                 " ".join(f"{d} {v['ce']:.3f}/{v['acc']:.2f}" for d, v in per_dir.items()),
                 rec["target_tokens_per_s"])
    return per_dir


def _validate(run: _Run, valid_reader: BatchReader) -> tuple[dict[str, dict[str, float]], bool]:
    """Validate, write and log the result, keep the best models; (per-direction stats, is best)."""
    cfg, info, exp, step = run.cfg, run.info, run.exp, run.step
    valid = evaluate(run.step_module, valid_reader, info, cfg, run.directions)
    vloss = _mean([v["ce"] for v in valid.values()])
    rec: dict[str, Any] = {"step": step, "split": "valid", "ce": vloss}
    for d, v in valid.items():
        rec[f"ce/{d}"], rec[f"acc/{d}"] = v["ce"], v["acc"]
    run.metrics.write(rec)
    is_best = False
    if info.is_main:
        log.info("valid step %d: ce %.3f | %s", step, vloss,
                 " ".join(f"{d} {v['ce']:.3f}/{v['acc']:.2f}" for d, v in valid.items()))
        is_best = ckpt.update_best(exp, step, vloss)
        if cfg.best_per_direction:
            _keep_direction_bests(exp, step, run.model, valid, cfg)
    is_best = bool(_bcast_flag(is_best, info))
    if cfg.plot and info.is_main:
        plot_metrics(exp / "metrics.jsonl", exp / "curves.png")
    return valid, is_best


def _finish(run: _Run, saved_at: int, budget: TimeBudget) -> None:
    """The last checkpoint (if the loop did not just write it), model.pt and the curves."""
    info, exp = run.info, run.exp
    if saved_at != run.step and run.step > 0:  # resumed at max_steps: nothing ran
        _save(run, write_model=run.valid_reader is None, train_seconds=budget.spent())
    if info.is_main and not (exp / "model.pt").is_file():
        save_model(run.model, exp)
    if run.cfg.plot and info.is_main:
        plot_metrics(exp / "metrics.jsonl", exp / "curves.png")
    barrier(info)


def _keep_direction_bests(
    exp: Path, step: int, model: TmtModel, valid: dict[str, dict[str, float]], cfg: TrainConfig
) -> None:
    """best_per_direction: write best/<d>/ for every direction whose validation CE is a new low."""
    for d, v in valid.items():
        if ckpt.improves_best(exp, v["ce"], direction=d):
            dest = ckpt.direction_best_dir(exp, d)
            save_model(model, dest, train_config=cfg)
            ckpt.write_direction_best(exp, d, step, v["ce"])
            log.info("valid step %d: new best for %s (ce %.3f) -> %s", step, d, v["ce"], dest)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _bcast_flag(flag: bool, info: DistInfo) -> bool:
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


def _save(run: _Run, *, write_model: bool, train_seconds: float) -> None:
    """Collective: a checkpoint of the run at its current step (and model.pt when `write_model`)."""
    exp, info, cfg, step_module = run.exp, run.info, run.cfg, run.step_module
    msd, osd = _full_state(step_module, run.opt, run.fsdp)
    # state keys are "model.<...>" (the SixWayStep wrapper); store the bare model's keys
    model_sd = {k.removeprefix("model."): v for k, v in msd.items()}
    trainer_state = None
    if info.is_main:
        trainer_state = {
            "model": model_sd, "optimizer": osd, "scheduler": run.sched.state_dict(), "step": run.step,
            "world_size": info.world_size, "best": ckpt.read_best(exp), "train_seconds": train_seconds,
        }
    rank_state = {"rng": ckpt.rng_state(), "data": run.reader.state_dict(),
                  "params_sha256": None if run.fsdp else params_digest(step_module.model)}
    ckpt.save_checkpoint(exp, run.step, info, trainer_state=trainer_state, rank_state=rank_state,
                         keep_last=cfg.keep_last)
    if write_model and info.is_main:
        save_model(step_module.model, exp)
        atomic_write_text(exp / "config.yaml", dump_yaml(cfg))


def params_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes: equal on all DDP ranks while they stay in sync."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _load_module_state(step_module: SixWayStep, model_sd: dict[str, Any]) -> dict[str, Any]:
    return {f"model.{k}": v for k, v in model_sd.items()}


@torch.no_grad()
def evaluate(
    step_module: SixWayStep, reader: BatchReader, info: DistInfo, cfg: TrainConfig, directions: list[str]
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
        with _autocast(cfg, info.device):
            _, stats = step_module(batch, 0.0)
        if i < len(batches):
            total.add(stats)
    if was_training:
        step_module.train()
    return total.reduce(directions, info, info.device)
