from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from tmt.config import ConfigError, dump_yaml, field_docs, from_dict, parse_overrides, resolve


@dataclass(kw_only=True)
class Optim:
    lr: float = 1e-3
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas."""


@dataclass(kw_only=True)
class Train:
    name: str = "x"
    """Experiment name."""
    steps: int = 10
    """Number of optimizer steps."""
    directions: list[str] = field(default_factory=lambda: ["i2t", "t2i"])
    """Directions trained."""
    bf16: bool = False
    """bf16 autocast."""
    device: str | None = None
    """cpu or cuda."""
    optim: Optim = field(default_factory=Optim)
    """Optimizer settings."""


def test_defaults_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"steps": 20, "optim": {"lr": 0.5}}))
    cfg = resolve(Train(), f, ["optim.lr=3e-4", "directions=s2t,t2s", "bf16=true", "device=cuda"])
    assert cfg.steps == 20
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.optim.betas == (0.9, 0.98)
    assert cfg.directions == ["s2t", "t2s"]
    assert cfg.bf16 is True and cfg.device == "cuda"


def test_unknown_key_names_key_and_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'; valid keys here: lr, betas"):
        resolve(Train(), None, ["optim.lrr=1"])
    f = tmp_path / "c.yaml"
    f.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match=r"'stepz'.*steps"):
        resolve(Train(), f)


def test_type_errors_are_clear():
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        resolve(Train(), None, ["steps=ten"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])


def test_dump_round_trips():
    cfg = resolve(Train(), None, ["optim.lr=0.25", "name=demo"])
    again = from_dict(Train, yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg


def test_field_docs_are_read_from_source():
    docs = field_docs(Train)
    assert docs["steps"] == "Number of optimizer steps."
    assert field_docs(Optim)["lr"] == "Peak learning rate."


def test_device_names():
    import torch

    from tmt import TmtError
    from tmt.core.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(TmtError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(TmtError, match="CUDA is not available"):
            resolve_device("cuda")


def test_respell_moves_shared_and_deprecated_keys(monkeypatch, caplog) -> None:
    import tmt.config
    from tmt.config import Spelling, respell

    monkeypatch.setattr(tmt.config, "_warned_spellings", set())
    top = (Spelling(key="train.max_minutes", field="max_minutes", old="max_minutes"),)
    nested = (Spelling(key="train.max_minutes", field="train.max_minutes", old="max_minutes"),)
    with caplog.at_level("WARNING", logger="tmt.config"):
        assert respell({"train": {"max_minutes": 3}, "seed": 1}, top) == {"max_minutes": 3, "seed": 1}
        assert respell({"max_minutes": 3}, top, from_file=True) == {"max_minutes": 3}  # a saved config's layout
        assert not caplog.records
        assert respell({"max_minutes": 4, "train": {"lr": 1}}, nested) == {"train": {"lr": 1, "max_minutes": 4}}
        assert respell({"max_minutes": 5}, top) == {"max_minutes": 5}
    assert [r.getMessage() for r in caplog.records] == [
        "config key 'max_minutes' is deprecated; spell it 'train.max_minutes' (e.g. --set train.max_minutes=...)"
    ]
    data = {"train": {"max_minutes": 1}}
    respell(data, top)
    assert data == {"train": {"max_minutes": 1}}  # the input is not changed
