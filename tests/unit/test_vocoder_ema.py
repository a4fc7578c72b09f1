"""The vocoder's weight average (train.ema_decay): the arithmetic, the swap, export and exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tmt.config import merge
from tmt.vocoder import (
    CHECKPOINT,
    VocoderError,
    check_config,
    load_vocoder,
    tiny_config,
    train_vocoder,
)
from tmt.vocoder.ema import WeightAverage
from tmt.vocoder.train import LIVE_DIR

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _set(model: nn.Linear, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(-value)


def test_average_follows_the_warm_up_decays_by_hand() -> None:
    lin = nn.Linear(3, 2)
    _set(lin, 1.0)
    avg = WeightAverage(lin, decay=0.5)
    expected = 1.0
    for n, value in enumerate([3.0, -2.0, 5.0, 0.5]):
        decay = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.18, 0.25, 0.31 ... then capped at 0.5
        assert avg.current_decay() == pytest.approx(decay)
        _set(lin, value)
        avg.update(lin)
        expected = decay * expected + (1 - decay) * value
    shadow = avg.state_dict()["shadow"]
    torch.testing.assert_close(shadow["weight"], torch.full((2, 3), expected))
    torch.testing.assert_close(shadow["bias"], torch.full((2,), -expected))
    assert avg.state_dict()["updates"] == 4
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(lin, decay=1.0)


def test_applied_swaps_the_average_in_and_the_live_weights_back() -> None:
    lin = nn.Linear(3, 2)
    _set(lin, 2.0)
    avg = WeightAverage(lin, decay=0.9)
    _set(lin, 7.0)
    with avg.applied(lin) as m:
        assert torch.all(m.weight == 2.0) and torch.all(m.bias == -2.0)
    assert torch.all(lin.weight == 7.0)
    with pytest.raises(RuntimeError, match="inside"), avg.applied(lin):
        raise RuntimeError("inside")
    assert torch.all(lin.weight == 7.0) and torch.all(lin.bias == -7.0)


def test_trainer_exports_the_average_and_resumes_it_exactly(corpus: dict, tmp_path: Path) -> None:
    cfg = merge(tiny_config("unit-world"),
                {"train": {"max_steps": 4, "sample_every": 100, "save_every": 2, "ema_decay": 0.6,
                          "export_live": True}})
    common = {"progress": False, "feature_cache": tmp_path / "features"}
    train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path / "a", **common)
    half = merge(cfg, {"train": {"max_steps": 2}})
    train_vocoder(half, corpus["store"], corpus["manifest"], tmp_path / "b", **common)
    train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path / "b", resume=True, **common)
    a = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)
    assert a["ema"]["updates"] == b["ema"]["updates"] == 4
    for k, v in a["ema"]["shadow"].items():
        torch.testing.assert_close(v, b["ema"]["shadow"][k])
    # the exported vocoder is the average, not the last step's weights
    exported = load_vocoder(tmp_path / "a").model.state_dict()
    differ = 0
    for k, v in a["ema"]["shadow"].items():
        torch.testing.assert_close(exported[k], v)
        differ += int(not torch.allclose(v, a["model"][k]))
    assert differ > 0
    # export_live: OUT/live holds the last step's own weights beside the average
    live = load_vocoder(tmp_path / "a" / LIVE_DIR).model.state_dict()
    for k, v in a["model"].items():
        torch.testing.assert_close(live[k], v)
    buffers = [k for k in a["model"] if k not in a["ema"]["shadow"]]
    assert "pitch" in buffers and "feat_std" in buffers
    for k in buffers:  # the normalisation and tables are the live model's
        torch.testing.assert_close(exported[k], a["model"][k])


def test_average_switched_on_at_resume_starts_from_the_loaded_weights(corpus: dict, tmp_path: Path) -> None:
    plain = merge(tiny_config("unit-mel"), {"train": {"max_steps": 2, "sample_every": 100, "save_every": 2}})
    train_vocoder(plain, corpus["store"], corpus["manifest"], tmp_path, progress=False)
    loaded = torch.load(tmp_path / CHECKPOINT, weights_only=True)["model"]
    on = merge(plain, {"train": {"max_steps": 3, "ema_decay": 0.999}})
    train_vocoder(on, corpus["store"], corpus["manifest"], tmp_path, resume=True, progress=False)
    st = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert st["ema"]["updates"] == 1
    # one update at the warm-up decay 0.1 from the loaded weights
    for k, v in st["ema"]["shadow"].items():
        torch.testing.assert_close(v, 0.1 * loaded[k] + 0.9 * st["model"][k], rtol=1e-5, atol=1e-6)
    assert np.isfinite(float(next(iter(st["ema"]["shadow"].values())).sum()))


def test_bad_decay_is_refused() -> None:
    for bad in (1.0, -0.1):
        with pytest.raises(VocoderError, match=r"train\.ema_decay"):
            check_config(merge(tiny_config(), {"train": {"ema_decay": bad}}))
    with pytest.raises(VocoderError, match=r"export_live .*train\.ema_decay"):
        check_config(merge(tiny_config(), {"train": {"export_live": True}}))
