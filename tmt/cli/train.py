"""`tmt train`: six-direction training from token stores into an experiment directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tmt.cli._common import CONTEXT, echo_json
from tmt.config import ConfigError, config_options
from tmt.models.config import PRESETS

if TYPE_CHECKING:
    from tmt.training.config import TrainConfig

EPILOG = """\b
Stores: --store PATH (repeatable); PATH=WEIGHT sets its sampling weight,
e.g. --store data/store/train --store data/store/bt=0.5 (real data twice as often).
\b
Examples:
  tmt train --preset tiny --vocab data/vocab.json --store data/store/train -o exp/tiny
  tmt train --preset demo --vocab data/vocab.json --store data/store/train \\
      --valid-store data/store/valid -o exp/demo
  tmt train -o exp/demo --resume                      # continue exactly where it stopped
  tmt train ... --set train.max_minutes=75 --resume    # a time budget spanning resumed runs
  tmt train --preset demo --vocab data/vocab.json --store data/store/train \\
      --store data/store/bt=0.5 --init-from exp/demo --lr 2e-4 -o exp/demo-bt
  tmt train ... --directions i2t,s2t                  # single-task baselines
  tmt train ... --set keep_last=4 --set average_last=4 # model.pt = mean of the last 4 checkpoints
  tmt train -o exp/demo --resume --set keep_last=4 --set average_last=4   # average a finished run
  torchrun --nproc-per-node 2 -m tmt train --preset demo ... -o exp/ddp
  tmt train --preset paper --dump-config              # print the resolved config
"""


@click.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("-o", "--exp-dir", required=True, type=click.Path(file_okay=False),
              help="Experiment directory (config.yaml, vocab.json, model.pt, checkpoints/, metrics.jsonl, curves.png).")
@click.option("--preset", default="demo", type=click.Choice(list(PRESETS)),
              help="Model size and matching optimisation defaults.")
@click.option("--vocab", default=None, type=click.Path(dir_okay=False), help="Joint vocabulary (vocab.json).")
@click.option("--store", "stores", multiple=True, metavar="PATH[=WEIGHT]", help="Training token store (repeatable).")
@click.option("--valid-store", "valid_stores", multiple=True, metavar="PATH", help="Validation token store (repeatable).")
@click.option("--directions", default=None, help="Comma list of directions to train, e.g. i2t,s2t (default: all six).")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps in total.")
@click.option("--lr", type=float, default=None, help="Peak learning rate.")
@click.option("--seed", type=int, default=None, help="Random seed.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --exp-dir (its config.yaml is the base).")
@click.option("--init-from", type=click.Path(exists=True), default=None,
              help="Start from these weights (experiment dir, checkpoint dir or .pt) with a fresh optimizer and schedule.")
@click.option("--stop-after", type=int, default=None, help="Stop after N steps of this run (resume later); the schedule still ends at --max-steps.")
@config_options
def cli(
    exp_dir: str, preset: str, vocab: str | None, stores: tuple[str, ...], valid_stores: tuple[str, ...],
    directions: str | None, max_steps: int | None, lr: float | None, seed: int | None, device: str | None,
    resume: bool, init_from: str | None, stop_after: int | None,
    config_file: str | None, overrides: tuple[str, ...], dump_config: bool,
) -> None:
    """Train the translation model on all six directions (or those chosen).

    Order of settings: preset (or, with --resume, the experiment's config.yaml) <
    --config FILE < --set KEY=VALUE < the explicit options above.
    """
    from tmt.config import dump_yaml, resolve
    from tmt.training.config import SPELLINGS

    exp = Path(exp_dir)
    cfg = resolve(_base_config(exp, preset, resume), config_file, overrides, spellings=SPELLINGS)
    cfg = _apply_options(cfg, vocab=vocab, stores=stores, valid_stores=valid_stores, directions=directions,
                         lr=lr, max_steps=max_steps, seed=seed, device=device)
    if dump_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    from tmt.training.trainer import train

    result = train(cfg, exp, resume=resume, init_from=init_from, stop_after=stop_after)
    if int(os.environ.get("RANK", "0")) == 0:
        echo_json({
            "exp_dir": str(result.exp_dir), "step": result.step,
            "train_ce": {d: round(v["ce"], 4) for d, v in result.train.items()},
            "valid_ce": {d: round(v["ce"], 4) for d, v in (result.valid or {}).items()},
            "best": result.best,
        })


def _base_config(exp: Path, preset: str, resume: bool) -> TrainConfig:
    """The experiment's config.yaml when resuming (if it has one), else the preset's config."""
    from tmt.config import from_dict
    from tmt.core.io import read_yaml_object
    from tmt.training.config import TrainConfig, train_preset

    saved = exp / "config.yaml"
    if resume and saved.is_file():
        return from_dict(TrainConfig, read_yaml_object(saved, what="experiment config", error=ConfigError),
                         where="config.yaml")
    return train_preset(preset)


def _apply_options(
    cfg: TrainConfig, *, vocab: str | None, stores: tuple[str, ...], valid_stores: tuple[str, ...],
    directions: str | None, lr: float | None, max_steps: int | None, seed: int | None, device: str | None,
) -> TrainConfig:
    """The explicit command-line options, which win over --config and --set."""
    from dataclasses import replace

    data = cfg.data
    if vocab is not None:
        data = replace(data, vocab=str(vocab))
    if stores:
        data = replace(data, stores=list(stores))
    if valid_stores:
        data = replace(data, valid_stores=list(valid_stores))
    if directions is not None:
        from tmt.store.pipeline import parse_directions

        data = replace(data, directions=parse_directions(directions))
    cfg = replace(cfg, data=data)
    if lr is not None:
        cfg = replace(cfg, optim=replace(cfg.optim, lr=lr))
    if max_steps is not None:
        cfg = replace(cfg, max_steps=max_steps)
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    if device is not None:
        cfg = replace(cfg, device=device)
    return cfg
