"""Saving and loading a trained tmt model: the files of an experiment directory.

Files read/written here::

    model.pt      plain state dict (inference weights), torch.load(weights_only=True)
    config.yaml   the full training config; the model config under key `model`
    vocab.json    the joint vocabulary
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tmt.core.io import load_torch, make_dirs, read_yaml_object
from tmt.models.config import ModelError, TmtModelConfig
from tmt.models.tmt import TmtModel
from tmt.vocab import JointVocab

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.yaml"
VOCAB_FILE = "vocab.json"


def save_model(model: TmtModel, exp_dir: str | Path, *, train_config: Any | None = None) -> Path:
    """Write `model.pt` (plain state dict), `vocab.json` and `config.yaml` (key `model`,
    plus the full training config when given) atomically into `exp_dir`."""
    import yaml

    from tmt.config import dump_yaml, to_dict
    from tmt.core.io import atomic_write_text

    exp = Path(exp_dir)
    make_dirs(exp)
    raw: TmtModel = getattr(model, "module", model)  # tolerate a DDP wrapper
    write_weights(exp, raw.state_dict())
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


def write_weights(exp_dir: str | Path, state: dict[str, torch.Tensor]) -> Path:
    """Write `state` (a plain state dict, moved to the CPU) as `exp_dir/model.pt`, atomically."""
    from tmt.core.io import atomic_open

    path = Path(exp_dir) / MODEL_FILE
    with atomic_open(path, "wb") as f:
        torch.save({k: v.detach().cpu() for k, v in state.items()}, f)
    return path


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
