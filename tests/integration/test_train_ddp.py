"""`torchrun --nproc-per-node 2 -m tmt train` on CPU (gloo): ranks stay in sync."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tmt.training.checkpoint import list_steps, step_dir
from tmt.training.synthetic import make_synthetic_store, synthetic_vocab

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "tmt", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_stay_in_sync(tmp_path: Path) -> None:
    make_synthetic_store(tmp_path / "store", num_scenes=24)
    synthetic_vocab().save(tmp_path / "vocab.json")
    common = ["--preset", "tiny", "--vocab", str(tmp_path / "vocab.json"), "--store", str(tmp_path / "store"),
              "--valid-store", str(tmp_path / "store"), "-o", str(tmp_path / "exp"), "--max-steps", "4",
              "--set", "save_every=2", "--set", "valid_every=2", "--set", "data.max_tokens=200",
              "--set", "model.dropout_p=0.1", "--set", "plot=false", "--set", "train.threads=1"]
    # one launch only (each process pays ~10 s of imports); resume itself is tested in tests/unit
    r = _torchrun(common, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["step"] == 4 and set(out["valid_ce"]) == {"i2t", "i2s", "t2i", "s2i", "s2t", "t2s"}
    assert list_steps(tmp_path / "exp") == [2, 4]
    for step in (2, 4):
        d = step_dir(tmp_path / "exp", step)
        r0 = torch.load(d / "rank0.pt", weights_only=True)
        r1 = torch.load(d / "rank1.pt", weights_only=True)
        assert r0["params_sha256"] == r1["params_sha256"]  # identical weights on both ranks
        assert not torch.equal(r0["rng"]["torch"], r1["rng"]["torch"])  # but their own dropout streams
    assert "2 processes" in r.stderr
