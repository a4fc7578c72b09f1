"""Training checkpoints: atomic step directories, keep-last-N + best, exact resume.

    exp_dir/checkpoints/step_00000300/
        trainer.pt     model, optimizer, scheduler, step, best (written by rank 0)
        rank0.pt       RNG states and data-pipeline position of rank 0
        rank1.pt       ... one per process
    exp_dir/checkpoints/best.json   {"step": ..., "loss": ...}
    exp_dir/best/<direction>/       (best_per_direction) that direction's best model and best.json
    exp_dir/average.json            (average_last) the steps whose mean model.pt is

A step directory is written as `step_XXXXXXXX.tmp/` and renamed once every rank
has written its part, so a killed run never leaves a half checkpoint that
`--resume` would pick up. Everything loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tmt import TmtError
from tmt.core.io import (
    atomic_write_json,
    fsync_dir,
    load_torch,
    make_dirs,
    read_json_object,
    save_torch,
)
from tmt.models.checkpoint import write_weights
from tmt.training.distributed import DistInfo, barrier

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
AVERAGE_FILE = "average.json"
"""Beside model.pt when it is a checkpoint average (`average_last`): {"steps": [...]}."""
_STEP_RE = re.compile(r"^step_(\d{8})$")


class CheckpointError(TmtError):
    """A checkpoint is missing, incomplete or does not fit this run."""


def step_dir(exp_dir: str | Path, step: int) -> Path:
    return Path(exp_dir) / CKPT_DIR / f"step_{step:08d}"


def list_steps(exp_dir: str | Path) -> list[int]:
    """Steps with a complete checkpoint, ascending."""
    root = Path(exp_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    steps = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / "trainer.pt").is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


BEST_DIR = "best"


def direction_best_dir(exp_dir: str | Path, direction: str) -> Path:
    """Where `best_per_direction` keeps the model best for one direction."""
    return Path(exp_dir) / BEST_DIR / direction


def _best_json(exp_dir: str | Path, direction: str | None) -> Path:
    """best.json of the run (mean over directions) or, given `direction`, of that direction."""
    if direction is None:
        return Path(exp_dir) / CKPT_DIR / "best.json"
    return direction_best_dir(exp_dir, direction) / "best.json"


def read_best(exp_dir: str | Path, direction: str | None = None) -> dict[str, Any] | None:
    p = _best_json(exp_dir, direction)
    return read_json_object(p, what="best-checkpoint record", error=CheckpointError) if p.is_file() else None


def improves_best(exp_dir: str | Path, loss: float, direction: str | None = None) -> bool:
    """True if `loss` is lower than the recorded best (or nothing is recorded yet)."""
    best = read_best(exp_dir, direction)
    return best is None or loss < best["loss"]


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and Python, in weights_only-loadable types."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(np_state[0]), torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), *map(float, np_state[2:])],
        "python": [*random.getstate()[1], random.getstate()[0]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    py = state["python"]
    random.setstate((int(py[-1]), tuple(int(x) for x in py[:-1]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    exp_dir: str | Path,
    step: int,
    info: DistInfo,
    *,
    trainer_state: dict[str, Any] | None,
    rank_state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Collective: every rank calls it; rank 0 passes `trainer_state`."""
    final = step_dir(exp_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if info.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier(info)
    save_torch(tmp / f"rank{info.rank}.pt", rank_state)
    if info.is_main:
        assert trainer_state is not None
        save_torch(tmp / "trainer.pt", trainer_state)
    barrier(info)
    if info.is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(final.parent)
        prune(exp_dir, keep_last)
    barrier(info)
    return final


def update_best(exp_dir: str | Path, step: int, loss: float) -> bool:
    """Record `step` as best if its validation loss is lower; True if it is the new best."""
    if not improves_best(exp_dir, loss):
        return False
    make_dirs(Path(exp_dir) / CKPT_DIR)
    atomic_write_json(_best_json(exp_dir, None), {"step": step, "loss": loss})
    return True


def write_direction_best(exp_dir: str | Path, direction: str, step: int, loss: float) -> None:
    """Record the step of `direction`'s best model; call it after the model itself is written,
    so best.json never names a model that is not there."""
    atomic_write_json(_best_json(exp_dir, direction), {"step": step, "loss": loss, "direction": direction})


def prune(exp_dir: str | Path, keep_last: int) -> None:
    """Delete step checkpoints except the last `keep_last` and the best one."""
    steps = list_steps(exp_dir)
    best = read_best(exp_dir)
    keep = set(steps[-keep_last:]) if keep_last > 0 else set()
    if best is not None:
        keep.add(int(best["step"]))
    for s in steps:
        if s not in keep:
            shutil.rmtree(step_dir(exp_dir, s), ignore_errors=True)
    root = Path(exp_dir) / CKPT_DIR
    for p in root.glob("step_*.tmp"):  # leftovers of a killed save
        shutil.rmtree(p, ignore_errors=True)


def average_weights(exp_dir: str | Path, steps: list[int]) -> dict[str, torch.Tensor]:
    """The mean of the model weights of the step checkpoints `steps` (fairseq's checkpoint
    averaging, Vaswani et al. 2017), summed in float64; integer buffers must agree and are kept."""
    if not steps:
        raise CheckpointError(f"no checkpoints to average in {Path(exp_dir) / CKPT_DIR}")
    first = load_weights(step_dir(exp_dir, steps[0]))
    total = {k: v.double() for k, v in first.items() if v.is_floating_point()}
    for step in steps[1:]:
        d = step_dir(exp_dir, step)
        state = load_weights(d)
        if state.keys() != first.keys():
            raise CheckpointError(f"{d}: its model has other weights than step {steps[0]}'s; average one run's checkpoints")
        for k, v in state.items():
            if k in total:
                total[k] += v.double()
            elif not torch.equal(first[k], v):
                raise CheckpointError(f"{d}: buffer {k} differs from step {steps[0]}'s and cannot be averaged")
    return {k: (total[k] / len(steps)).to(v.dtype) if k in total else v for k, v in first.items()}


def write_average(exp_dir: str | Path, last: int) -> list[int]:
    """Write `model.pt` as the average of the last `last` step checkpoints and `average.json`
    naming them; returns the steps (fewer than `last` when the run saved fewer)."""
    steps = list_steps(exp_dir)[-last:]
    write_weights(exp_dir, average_weights(exp_dir, steps))
    atomic_write_json(Path(exp_dir) / AVERAGE_FILE, {"steps": steps})
    log.info("model.pt: the average of %d checkpoints (steps %s)", len(steps), ", ".join(map(str, steps)))
    return steps


def load_checkpoint(
    exp_dir: str | Path, info: DistInfo, step: int | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(trainer state, this rank's state or None) of `step` (default: the latest)."""
    steps = list_steps(exp_dir)
    if not steps:
        raise CheckpointError(f"no checkpoint in {Path(exp_dir) / CKPT_DIR}")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise CheckpointError(f"no checkpoint for step {step} in {exp_dir} (have {steps})")
    d = step_dir(exp_dir, step)
    fix = f"delete {d} to resume from the previous checkpoint"
    trainer = load_torch(d / "trainer.pt", what="training checkpoint", error=CheckpointError, fix=fix)
    rank_path = d / f"rank{info.rank}.pt"
    rank = load_torch(rank_path, what="training checkpoint", error=CheckpointError, fix=fix) if rank_path.is_file() else None
    return trainer, rank


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from an experiment dir (its model.pt), a step dir, or a .pt file
    (plain state dict or a trainer checkpoint with a `model` entry)."""
    p = Path(path)
    if p.is_dir():
        if (p / "trainer.pt").is_file():
            p = p / "trainer.pt"
        elif (p / "model.pt").is_file():
            p = p / "model.pt"
        else:
            steps = list_steps(p)
            if not steps:
                raise CheckpointError(f"{path}: no model.pt, trainer.pt or checkpoints/ found")
            p = step_dir(p, steps[-1]) / "trainer.pt"
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    state = load_torch(p, what="checkpoint", error=CheckpointError)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} does not hold a state dict")
    return state
