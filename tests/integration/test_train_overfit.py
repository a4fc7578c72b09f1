"""`tmt train --preset tiny` overfits a 20-scene store in all six directions (issue 6, done-when)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from tmt.cli import cli as root
from tmt.models.checkpoint import load_model
from tmt.training.checkpoint import list_steps
from tmt.training.synthetic import make_synthetic_store, synthetic_vocab

torch.set_num_threads(1)
pytestmark = pytest.mark.slow


@pytest.fixture()
def data(tmp_path):
    make_synthetic_store(tmp_path / "store", num_scenes=20)
    synthetic_vocab().save(tmp_path / "vocab.json")
    return tmp_path


def test_tiny_overfits_20_scenes_in_all_six_directions(data) -> None:
    exp = data / "exp_overfit"
    r = CliRunner().invoke(root, [
        "train", "--preset", "tiny", "--vocab", str(data / "vocab.json"), "--store", str(data / "store"),
        "--valid-store", str(data / "store"), "-o", str(exp),
        "--set", "optim.label_smoothing=0", "--set", "valid_every=150", "--set", "save_every=150",
    ])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["step"] == 150
    assert set(out["valid_ce"]) == {"i2t", "i2s", "t2i", "s2i", "s2t", "t2s"}
    for d, ce in out["valid_ce"].items():  # eval-mode cross-entropy on the training rows
        assert ce < 0.5, (d, ce)
    for d, ce in out["train_ce"].items():  # the last logging window of training
        assert ce < 0.8, (d, ce)
    for name in ("config.yaml", "vocab.json", "model.pt", "metrics.jsonl", "curves.png"):
        assert (exp / name).is_file(), name
    assert (exp / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recs = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in recs} == {"train", "valid"}
    assert list_steps(exp) == [150]
    model = load_model(exp)  # what `tmt translate --model exp` loads
    assert model.config.model_dim == 32
