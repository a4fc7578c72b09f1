"""The shell helpers every recipe sources: stage markers, logged stages, sharded jobs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "recipes" / "_shared"


def _bash(out: Path, body: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = f"""
set -euo pipefail
stage=0; stop_stage=100; out={out}
. {SHARED}/stage_utils.sh
. {SHARED}/parallel.sh
# a stand-in for a sharded verb: records its threads and shard, fails when told to
job() {{
  [ -n "${{FAIL_SHARD:-}}" ] && [ "$2" = "${{FAIL_SHARD}}" ] && {{ echo "boom in $2"; exit 3; }}
  echo "${{OMP_NUM_THREADS:-unset}} $2" >> {out}/calls.txt
}}
{body}
"""
    full_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FAIL_SHARD")}
    full_env.update(env or {})
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=full_env, check=False)


def _calls(out: Path) -> list[tuple[str, str]]:
    return sorted(tuple(line.split()) for line in (out / "calls.txt").read_text().splitlines())  # type: ignore[misc]


def test_sharded_jobs_split_the_cores_and_mark_done(tmp_path: Path) -> None:
    r = _bash(tmp_path, 'run_sharded tok "$out/logs/tok" 2 - job')
    assert r.returncode == 0, r.stderr
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert _calls(tmp_path) == [(threads, "0/2"), (threads, "1/2")]
    assert (tmp_path / ".done" / "tok").is_file()
    # done: a re-run skips the jobs
    r = _bash(tmp_path, 'run_sharded tok "$out/logs/tok" 2 - job')
    assert r.returncode == 0 and "already done" in r.stderr
    assert len(_calls(tmp_path)) == 2


def test_a_user_thread_setting_wins(tmp_path: Path) -> None:
    r = _bash(tmp_path, 'run_sharded tok "$out/logs/tok" 3 - job', env={"OMP_NUM_THREADS": "5"})
    assert r.returncode == 0, r.stderr
    assert _calls(tmp_path) == [("5", "0/3"), ("5", "1/3"), ("5", "2/3")]


def test_a_failing_shard_fails_the_stage_with_its_log(tmp_path: Path) -> None:
    r = _bash(tmp_path, 'run_sharded tok "$out/logs/tok" 2 - job', env={"FAIL_SHARD": "1/2"})
    assert r.returncode == 1
    assert "job 1/2 FAILED" in r.stderr and "boom in 1/2" in r.stderr
    assert not (tmp_path / ".done" / "tok").exists()


@pytest.mark.parametrize("rc", [0, 4])
def test_run_stage_logs_and_marks(tmp_path: Path, rc: int) -> None:
    r = _bash(tmp_path, f'run_stage one "$out/logs/one.log" bash -c "echo hello; exit {rc}"')
    assert (tmp_path / "logs" / "one.log").read_text() == "hello\n"
    if rc == 0:
        assert r.returncode == 0 and (tmp_path / ".done" / "one").is_file() and "finished in" in r.stderr
    else:
        assert r.returncode == rc and not (tmp_path / ".done" / "one").exists()
        assert "FAILED (exit 4)" in r.stderr and "hello" in r.stderr


def test_stage_window(tmp_path: Path) -> None:
    r = _bash(tmp_path, "stage=3; stop_stage=5; for s in 2 3 5 6; do stage_wanted $s && echo $s; done")
    assert r.stdout.split() == ["3", "5"]
