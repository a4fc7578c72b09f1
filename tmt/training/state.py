"""One training run's state: building it (model, optimizer, schedule), starting
from other weights, resuming from the latest checkpoint and saving a checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tmt import TmtError
from tmt.config import dump_yaml
from tmt.core.io import atomic_write_text, make_dirs
from tmt.models.checkpoint import save_model
from tmt.models.tmt import TmtModel, create_model
from tmt.store.pipeline import BatchReader
from tmt.training import checkpoint as ckpt
from tmt.training.code_init import init_code_rows
from tmt.training.config import TrainConfig
from tmt.training.distributed import (
    DistInfo,
    barrier,
    wrap_data_parallel,
)
from tmt.training.metrics import MetricsWriter
from tmt.training.steps import SixWayStep, lr_lambda, make_optimizer, train_dtype
from tmt.training.weights import DirectionMix, make_mix
from tmt.vocab import JointVocab

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What the training loop of one run works with (built by `setup_run`)."""

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
    mix: DirectionMix | None = None
    """Per-direction loss weights and the direction schedule (None: all directions weigh 1)."""
    dtype: str = "float32"
    """The forward's autocast dtype: `cfg.dtype` resolved once for the device (`train_dtype`)."""


def setup_run(
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
) -> Run:
    """Write the run's files, build model and optimizer, and load the checkpoint when resuming."""
    fsdp = cfg.distributed == "fsdp" and info.distributed
    if fsdp and cfg.best_per_direction:
        raise TmtError("best_per_direction is not supported with distributed=fsdp (each rank holds a shard); "
                       "use distributed=ddp or drop --set best_per_direction=true")
    d = cfg.data
    mix = make_mix(d.direction_weighting, directions, reader.direction_rows, temperature=d.temperature,
                   fixed=d.direction_weights, phases=d.direction_phases, patience=d.stop_patience)
    if info.is_main:
        log.info("%s (%s)", mix.describe(), d.direction_weighting)
        make_dirs(exp)
        atomic_write_text(exp / "config.yaml", dump_yaml(cfg))
        vocab.save(exp / "vocab.json")
    barrier(info)

    torch.manual_seed(cfg.seed)  # identical initialisation on every rank
    model = create_model(cfg.model, vocab)
    if init_from is not None and not (resume and steps_done):
        _init_weights(model, init_from, vocab)
    elif not (resume and steps_done):
        for m, w, where in (("image", cfg.image_code_init, cfg.image_tokenizer),
                            ("speech", cfg.speech_code_init, cfg.speech_tokenizer)):
            if w > 0:
                init_code_rows(model, vocab, m, w, where, cfg.seed)
    model.to(info.device)
    dtype = train_dtype(cfg, info.device)
    if info.is_main:
        log.info("model: %s, %.2fM parameters, vocab %d; directions %s; %d processes; %s",
                 cfg.preset, model.num_params() / 1e6, vocab.size, ",".join(directions), info.world_size, dtype)
    step_module = SixWayStep(model, directions, lockstep=fsdp)
    wrapped = wrap_data_parallel(step_module, info, cfg.distributed)
    opt = make_optimizer(step_module, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    torch.manual_seed(cfg.seed + 1 + info.rank)  # dropout differs per rank
    run = Run(cfg=cfg, exp=exp, info=info, directions=directions, reader=reader, valid_reader=valid_reader,
               fsdp=fsdp, model=model, step_module=step_module, wrapped=wrapped, opt=opt, sched=sched,
               metrics=MetricsWriter(exp / "metrics.jsonl", enabled=info.is_main), mix=mix,
               dtype=dtype)
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
        check_vocab_matches(vocab, JointVocab.load(src_vocab), str(init_from))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise TmtError(
            f"--init-from {init_from}: weights do not fit this model config ({str(e).splitlines()[0]}); "
            "use the same preset/model settings as the run it comes from"
        ) from None
    log.info("initialised weights from %s", init_from)


def _resume(run: Run) -> None:
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
    if run.mix is not None:  # directions stopped early stay stopped
        run.mix.load_state_dict(trainer_state.get("mix", {}))
    run.reader.load_state_dict(rank_state["data"])
    ckpt.set_rng_state(rank_state["rng"])
    run.metrics.truncate_after(run.step)
    if info.is_main:
        log.info("resumed from step %d", run.step)


def check_vocab_matches(a: JointVocab, b: JointVocab, what: str) -> None:
    if a.size != b.size or a.fingerprints() != b.fingerprints():
        raise TmtError(
            f"{what} was trained with a different vocabulary ({b!r}) than the one given ({a!r}); "
            "use the same vocab.json"
        )


def save_run(run: Run, *, write_model: bool, train_seconds: float) -> None:
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
            "mix": run.mix.state_dict() if run.mix is not None else {},
        }
    rank_state = {"rng": ckpt.rng_state(), "data": run.reader.state_dict(),
                  "params_sha256": None if run.fsdp else params_digest(step_module.model)}
    ckpt.save_checkpoint(exp, run.step, info, trainer_state=trainer_state, rank_state=rank_state,
                         keep_last=cfg.keep_last)
    if write_model and info.is_main:
        save_model(step_module.model, exp)
        (exp / ckpt.AVERAGE_FILE).unlink(missing_ok=True)  # model.pt is one checkpoint's again
        atomic_write_text(exp / "config.yaml", dump_yaml(cfg))


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
