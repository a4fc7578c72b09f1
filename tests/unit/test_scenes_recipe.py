"""`recipes/scenes/run.sh` stage 11 (single-direction baselines), run against a stand-in `tmt`
that records its command lines: which baselines train, which calls get a vocoder, and when the
unified-vs-single comparison runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE_TMT = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$TMT_CALLS"
if [ "$1 $2" = "score compare" ]; then echo "the comparison table"; fi
exit 0
"""


def _stage11(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "tmt"
    fake.write_text(FAKE_TMT)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMT_CALLS": str(calls)}
    r = subprocess.run(
        ["bash", str(REPO / "recipes" / "scenes" / "run.sh"), "--preset", "quick", "--out", str(tmp_path / "out"),
         "--stage", "11", "--stop-stage", "11", "--single-task", "true", "--single-minutes", "0.5", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    return r, calls.read_text().splitlines() if calls.exists() else []


def test_only_the_chosen_baselines_train_and_only_speech_targets_get_the_vocoder(tmp_path: Path) -> None:
    r, calls = _stage11(tmp_path, "--single-directions", "s2t i2s")
    assert r.returncode == 0, r.stderr
    trained = [c.split("--directions ")[1].split()[0] for c in calls if c.startswith("train ")]
    assert trained == ["i2s", "s2t"]  # the recipe's direction order, not the option's
    assert all("max_minutes=0.5" in c for c in calls if c.startswith("train "))
    translate = [c for c in calls if c.startswith("translate ")]
    assert len(translate) == 4  # two directions x two shards (--jobs 2) on the test split
    for c in translate:
        assert ("--vocoder" in c) == ("--to speech" in c), c
    assert any(c.startswith("score run ") for c in calls)
    # no unified scores yet (stages 8-9 not run): the comparison is skipped, not failed
    assert not any(c.startswith("score compare") for c in calls)
    assert "not comparing" in r.stderr
    assert not (tmp_path / "out" / "scores" / "unified_vs_single_test.txt").exists()


def test_the_comparison_runs_when_unified_scores_exist(tmp_path: Path) -> None:
    unified = tmp_path / "out" / "scores" / "tmt" / "test"
    unified.mkdir(parents=True)
    (unified / "scores.json").write_text("{}")
    (tmp_path / "out" / "report.md").write_text("# report\n")
    r, calls = _stage11(tmp_path, "--single-directions", "t2i")
    assert r.returncode == 0, r.stderr
    [compare] = [c for c in calls if c.startswith("score compare")]
    assert f"{unified} " in compare + " " and compare.endswith("scores/single/test")
    table = tmp_path / "out" / "scores" / "unified_vs_single_test.txt"
    assert table.read_text() == "the comparison table\n"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Unified model against single-direction models" in report and "the comparison table" in report
