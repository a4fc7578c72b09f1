"""`recipes/scenes/run.sh` stages 7 and 11 (vocoder, single-direction baselines), run against a
stand-in `tmt` that records its command lines: which baselines train, which calls get a vocoder,
when the unified-vs-single comparison runs, and the vocoder's step cap."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE_TMT = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$TMT_CALLS"
if [ "$1" = translate ]; then
  while [ $# -gt 0 ]; do [ "$1" = --output-dir ] && mkdir -p "$2"; shift; done
fi
if [ "$1 $2" = "score compare" ]; then echo "the comparison table"; fi
exit 0
"""


def _stage11(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    return _recipe(tmp_path, "--stage", "11", "--stop-stage", "11", "--single-task", "true",
                   "--single-minutes", "0.5", *extra)


def _recipe(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    fake = bin_dir / "tmt"
    fake.write_text(FAKE_TMT)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMT_CALLS": str(calls)}
    r = subprocess.run(
        ["bash", str(REPO / "recipes" / "scenes" / "run.sh"), "--preset", "quick", "--out", str(tmp_path / "out"),
         *args],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    return r, calls.read_text().splitlines() if calls.exists() else []


def test_only_the_chosen_baselines_train_and_only_speech_targets_get_the_vocoder(tmp_path: Path) -> None:
    r, calls = _stage11(tmp_path, "--single-directions", "s2t i2s")
    assert r.returncode == 0, r.stderr
    trained = [c.split("--directions ")[1].split()[0] for c in calls if c.startswith("train ")]
    assert trained == ["i2s", "s2t"]  # the recipe's direction order, not the option's
    assert all("--set train.max_minutes=0.5" in c for c in calls if c.startswith("train "))
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


def test_adding_a_baseline_later_scores_again_and_an_unchanged_rerun_does_not(tmp_path: Path) -> None:
    r, calls = _stage11(tmp_path, "--single-directions", "t2i")
    assert r.returncode == 0, r.stderr
    assert len([c for c in calls if c.startswith("score run ")]) == 1
    # a second run that adds a baseline: the earlier one is not retrained, both are scored
    r, calls = _stage11(tmp_path, "--single-directions", "t2i s2t")
    assert r.returncode == 0, r.stderr
    assert [c.split("--directions ")[1].split()[0] for c in calls if c.startswith("train ")] == ["t2i", "s2t"]
    [_, second] = [c for c in calls if c.startswith("score run ")]
    assert "hyp/single/test/speech-text" in second and "hyp/single/test/text-image" in second
    # nothing new: no scoring
    r, calls = _stage11(tmp_path, "--single-directions", "t2i s2t")
    assert r.returncode == 0, r.stderr
    assert len([c for c in calls if c.startswith("score run ")]) == 2


def test_vocoder_steps_caps_the_vocoder_fit_only_when_given(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "7", "--stop-stage", "7", "--vocoder-minutes", "9")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert train.startswith("vocoder train ") and "train.max_minutes=9" in train and "max_steps" not in train
    r, calls = _recipe(tmp_path / "b", "--stage", "7", "--stop-stage", "7", "--vocoder-steps", "6850")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "--set train.max_steps=6850" in train and "train.max_minutes=3" in train  # quick preset's budget


def test_vocoder_config_chooses_the_arch(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "7", "--stop-stage", "7")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "--config unit-mel " in train  # the preset's default
    r, calls = _recipe(tmp_path / "b", "--stage", "7", "--stop-stage", "7", "--vocoder-config", "unit-world")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "--config unit-world " in train and "train.max_minutes=3" in train


def test_per_direction_best_translates_each_direction_with_its_own_checkpoint(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "4", "--stop-stage", "8", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    [stage4, stage6] = [c for c in calls if c.startswith("train ")]
    assert "--set best_per_direction=true" in stage4  # stage 4 always keeps them
    assert "best_per_direction" not in stage6
    models = {c.split("-m ")[1].split()[0].split("/exp/")[1] for c in calls if c.startswith("translate ")}
    assert models == {"tmt", "tmt_bt"}
    r, calls = _recipe(tmp_path / "b", "--stage", "8", "--stop-stage", "8", "--jobs", "1",
                       "--per-direction-best", "true")
    assert r.returncode == 0, r.stderr
    by_dir = {}
    for c in calls:
        if c.startswith("translate ") and "/hyp/tmt_dir/" in c:
            src, tgt = c.split("--from ")[1].split()[0], c.split("--to ")[1].split()[0]
            by_dir[f"{src[0]}2{tgt[0]}"] = c.split("-m ")[1].split()[0]
    assert sorted(by_dir) == ["i2s", "i2t", "s2i", "s2t", "t2i", "t2s"]
    for short, model in by_dir.items():
        assert model == str(tmp_path / "b" / "out" / "exp" / "tmt" / "best" / short)


def test_stage11_also_compares_the_per_direction_checkpoints_when_scored(tmp_path: Path) -> None:
    for model in ("tmt", "tmt_dir"):
        scored = tmp_path / "out" / "scores" / model / "test"
        scored.mkdir(parents=True)
        (scored / "scores.json").write_text("{}")
    r, calls = _stage11(tmp_path, "--single-directions", "s2t")
    assert r.returncode == 0, r.stderr
    compares = [c for c in calls if c.startswith("score compare")]
    assert [c.split()[3].split("/scores/")[1] for c in compares] == ["tmt/test", "tmt_dir/test"]
    assert (tmp_path / "out" / "scores" / "unified_dir_vs_single_test.txt").read_text() == "the comparison table\n"


def test_manifest_dir_moves_only_the_raw_manifests(tmp_path: Path) -> None:
    shared = tmp_path / "data_manifests" / "scenes-quick"
    r, calls = _recipe(tmp_path, "--stop-stage", "3", "--manifest-dir", str(shared))
    assert r.returncode == 0, r.stderr
    prepare = [c for c in calls if c.startswith("prepare scenes ")]
    assert len(prepare) == 1 and prepare[0].endswith(f"--out {shared}")
    tokenize = [c for c in calls if c.startswith("tokenize all ")]
    assert tokenize and all(f"--manifest {shared}/" in c for c in tokenize)
    assert all(f"--store {tmp_path / 'out' / 'data' / 'store'}/" in c for c in tokenize)  # stores stay in --out
    assert any(c.startswith("vocab build ") and c.endswith(f"-o {tmp_path / 'out' / 'data' / 'vocab.json'}") for c in calls)
    # without the option everything stays under --out
    r, calls = _recipe(tmp_path / "b", "--stop-stage", "0")
    assert r.returncode == 0, r.stderr
    assert next(c for c in calls if c.startswith("prepare ")).endswith(f"--out {tmp_path / 'b' / 'out' / 'data' / 'scenes'}")
