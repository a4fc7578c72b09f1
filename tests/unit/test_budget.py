"""The shared training time budget and the atomic checkpoint save/load helpers (tmt.core)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tmt.core.budget import TimeBudget, check_max_minutes
from tmt.core.errors import TmtError
from tmt.core.io import load_torch, save_torch


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_budget_counts_prior_seconds_and_stops_at_the_limit() -> None:
    clock = _Clock()
    b = TimeBudget(2.0, prior_seconds=60.0, clock=clock)  # 1 of 2 minutes spent before the resume
    assert b.spent() == 60.0 and b.fraction() == 0.5 and not b.exhausted() and not b.spent_before_start()
    clock.t += 59.0
    assert not b.exhausted() and b.fraction() == pytest.approx(119 / 120)
    clock.t += 1.0
    assert b.exhausted() and b.fraction() == 1.0 and b.spent() == 120.0
    assert TimeBudget(1.0, prior_seconds=60.0, clock=clock).spent_before_start()


def test_no_limit_never_runs_out() -> None:
    clock = _Clock()
    b = TimeBudget(None, prior_seconds=5.0, clock=clock)
    clock.t += 1e9
    assert b.limit_seconds is None and b.fraction() == 0.0 and not b.exhausted() and not b.spent_before_start()
    assert b.spent() == pytest.approx(1e9 + 5.0)


def test_one_meaning_of_max_minutes() -> None:
    assert check_max_minutes(None) is None
    assert check_max_minutes(1.5) == 1.5
    assert check_max_minutes(0) is None  # the old "0 = no limit", with a warning
    with pytest.raises(TmtError, match=r"train\.max_minutes must be > 0"):
        check_max_minutes(-1, "train.max_minutes")


def test_save_and_load_torch(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "state.pt"
    save_torch(p, {"w": torch.arange(3), "step": 7})
    state = load_torch(p)
    assert state["step"] == 7 and torch.equal(state["w"], torch.arange(3))
    assert not (tmp_path / "sub" / "state.pt.tmp").exists()
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(TmtError, match=r"cannot load checkpoint .*state\.pt"):
        load_torch(p)


# ---- one spelling and one meaning in the three training loops' configs (via their CLIs) ----------
_CARD = str(Path(__file__).resolve().parents[2] / "tokenizers" / "image-vq-f8-512.yaml")
_COMMANDS = {
    "translator": ["train", "--preset", "tiny", "-o", "never", "--dump-config"],
    "vocoder": ["vocoder", "train", "--config", "tiny", "--dump-config"],
    "image-vq": ["tokenize", "image", "fit", "--card", _CARD, "--manifest", "m.jsonl", "--out", "never", "--dump-config"],
}


def _dumped(args: list[str]) -> tuple[int, dict, str]:
    """-> (exit code, the dumped config, stderr; or the output when it failed) of a `--dump-config` command."""
    import yaml
    from click.testing import CliRunner

    from tmt.cli import cli

    r = CliRunner().invoke(cli, args)
    if r.exit_code != 0:
        return r.exit_code, {}, r.output
    return 0, yaml.safe_load(r.stdout), r.stderr


def _dumped_budget(loop: str, *sets: str) -> tuple[int, object, str]:
    """-> (exit code, the resolved max_minutes, stderr) of `--dump-config` with `--set` items."""
    code, cfg, text = _dumped([*_COMMANDS[loop], *(a for item in sets for a in ("--set", item))])
    if code != 0:
        return code, None, text
    return 0, (cfg if loop == "translator" else cfg["train"])["max_minutes"], text


@pytest.mark.parametrize("loop", list(_COMMANDS))
def test_one_spelling_and_meaning_in_every_loop(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import tmt.config

    monkeypatch.setattr(tmt.config, "_warned_spellings", set())
    assert _dumped_budget(loop, "train.max_minutes=2.5") == (0, 2.5, "")
    assert _dumped_budget(loop, "train.max_minutes=null") == (0, None, "")
    # 0 (the image fit's old "no limit") means no limit, with a warning
    code, value, err = _dumped_budget(loop, "train.max_minutes=0")
    assert (code, value) == (0, None) and "max_minutes=0 for 'no time limit' is deprecated" in err
    # a negative budget is one clear error
    code, _, out = _dumped_budget(loop, "train.max_minutes=-1")
    assert code != 0 and "train.max_minutes must be > 0" in out and "Traceback" not in out
    # the translator's old spelling works in every loop, with a warning (once) naming the new one
    code, value, err = _dumped_budget(loop, "max_minutes=7")
    assert (code, value) == (0, 7.0) and "config key 'max_minutes' is deprecated; spell it 'train.max_minutes'" in err
    assert _dumped_budget(loop, "max_minutes=8") == (0, 8.0, "")
    # given both ways, the new spelling wins
    assert _dumped_budget(loop, "max_minutes=7", "train.max_minutes=3")[:2] == (0, 3.0)


def test_threads_have_the_vocoders_spelling_in_the_translator(monkeypatch: pytest.MonkeyPatch) -> None:
    import tmt.config

    monkeypatch.setattr(tmt.config, "_warned_spellings", set())
    code, cfg, err = _dumped([*_COMMANDS["translator"], "--set", "train.threads=3"])
    assert (code, cfg["num_threads"], err) == (0, 3, "")
    code, cfg, _ = _dumped([*_COMMANDS["vocoder"], "--set", "train.threads=3"])
    assert (code, cfg["train"]["threads"]) == (0, 3)
    # the old spelling still works, with a warning naming the new one; the new one wins over it
    code, cfg, err = _dumped([*_COMMANDS["translator"], "--set", "num_threads=2"])
    assert (code, cfg["num_threads"]) == (0, 2) and "spell it 'train.threads'" in err
    code, cfg, _ = _dumped([*_COMMANDS["translator"], "--set", "num_threads=2", "--set", "train.threads=4"])
    assert (code, cfg["num_threads"]) == (0, 4)
