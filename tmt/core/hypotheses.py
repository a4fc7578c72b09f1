"""The hypothesis directory: what `tmt translate` (manifest mode) writes and `tmt score` reads.

Layout::

    D/hypotheses.jsonl   one line per input: {"id", "group", "src", "tgt", "hyp", "tokens", "score", "via"}
                         hyp: the text for text targets, else the media file's path relative to D
    D/run.json           {"src", "tgt", "via", "manifest", "split", "model", "beam_size", "num", ...}
    D/<id>.png | D/<id>.wav | D/<id>.units.txt    one media file per input (image / speech targets)

Both files are written atomically. With `--shard k/N`, worker k writes
`hypotheses.<k>-of-<N>.jsonl` / `run.<k>-of-<N>.json`; `merge_hypothesis_parts` joins the N
parts (in k order) into `hypotheses.jsonl` / `run.json` once all are present.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tmt.core.errors import TmtError
from tmt.core.io import atomic_write_json, atomic_write_text, read_json_object
from tmt.core.jsonl import iter_jsonl_numbered, jsonl_text

log = logging.getLogger(__name__)

HYPOTHESES = "hypotheses.jsonl"
"""The hypotheses file of a directory."""
RUN_JSON = "run.json"
"""The run description of a directory."""
REQUIRED_FIELDS = ("id", "src", "tgt", "hyp")
"""Fields every hypothesis line must have."""


class HypothesisDirError(TmtError):
    """A hypothesis directory is missing, malformed or inconsistent."""


def part_tag(k: int, n: int) -> str:
    """`00002-of-00004`: how the files of shard k of n are tagged."""
    return f"{k:05d}-of-{n:05d}"


def write_hypotheses(
    root: str | Path, lines: Iterable[Mapping[str, Any]], run_info: Mapping[str, Any], *, shard: tuple[int, int] = (0, 1)
) -> Path:
    """Write the hypothesis lines and run.json (with `num`) of shard k/N; returns the hypotheses file.

    Unsharded: `hypotheses.jsonl` / `run.json`. Sharded: the tagged part files, then the merged
    files when this was the last part to finish (the part file is returned while others are missing)."""
    root = Path(root)
    lines = list(lines)
    body = jsonl_text(lines)
    info = dict(run_info, num=len(lines))
    k, n = shard
    if n == 1:
        atomic_write_text(root / HYPOTHESES, body)
        atomic_write_json(root / RUN_JSON, info)
        return root / HYPOTHESES
    tag = part_tag(k, n)
    atomic_write_text(root / f"hypotheses.{tag}.jsonl", body)
    atomic_write_json(root / f"run.{tag}.json", dict(info, shard=f"{k}/{n}"))
    merged = merge_hypothesis_parts(root, n)
    return merged if merged is not None else root / f"hypotheses.{tag}.jsonl"


MERGE_LOCK = ".merge.lock"
"""Lock file of a sharded hypothesis directory: one shard merges at a time."""


def merge_hypothesis_parts(root: str | Path, n: int) -> Path | None:
    """Merge the N shard outputs of a hypothesis directory once all are present; None while some are missing.

    Two shards that finish together both see every part and both merge: an exclusive lock on
    `MERGE_LOCK` makes them take turns (each writes the same merged files), where they would
    otherwise share the temporary file of the atomic write and one rename would fail."""
    root = Path(root)
    tags = [part_tag(k, n) for k in range(n)]
    if not all((root / f"run.{t}.json").is_file() for t in tags):
        return None
    with open(root / MERGE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _merge(root, tags)


def _merge(root: Path, tags: list[str]) -> Path:
    n = len(tags)
    body = "".join((root / f"hypotheses.{t}.jsonl").read_text(encoding="utf-8") for t in tags)
    runs = [read_json_object(root / f"run.{t}.json", what="shard run file", required={"num": int}, error=HypothesisDirError)
            for t in tags]
    info = {k: v for k, v in runs[0].items() if k != "shard"}
    info["num"] = sum(int(r["num"]) for r in runs)
    if any("skipped" in r for r in runs):  # --skip-bad counts, summed over the shards
        info["skipped"] = sum(int(r.get("skipped", 0)) for r in runs)
        info["skipped_ids"] = [i for r in runs for i in r.get("skipped_ids", [])]
    info["shards"] = n
    atomic_write_text(root / HYPOTHESES, body)
    atomic_write_json(root / RUN_JSON, info)
    log.info("merged %d shard outputs into %s", n, root / HYPOTHESES)
    return root / HYPOTHESES


def read_hyp_dir(
    hyp_dir: str | Path, *, error: type[TmtError] = HypothesisDirError
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """run.json and the hypotheses of one hypothesis directory (one direction), checked."""
    d = Path(hyp_dir)
    run_path, hyp_path = d / RUN_JSON, d / HYPOTHESES
    if not hyp_path.is_file():
        raise error(f"{hyp_path} not found; give the --output-dir of `tmt translate` batch mode")
    run: dict[str, Any] = {}
    if run_path.is_file():
        run = read_json_object(run_path, what="run file", error=error, fix="rerun `tmt translate --output-dir`")
    hyps: list[dict[str, Any]] = []
    for n, h in iter_jsonl_numbered(hyp_path, what="hypotheses file", error=error):
        for k in REQUIRED_FIELDS:
            if k not in h:
                raise error(f"{hyp_path}:{n}: missing field '{k}'")
        hyps.append(h)
    if not hyps:
        raise error(f"{hyp_path} holds no hypotheses")
    pairs = {(h["src"], h["tgt"]) for h in hyps}
    if len(pairs) > 1:
        raise error(f"{hyp_path} mixes directions {sorted(pairs)}; score one direction per directory")
    src, tgt = next(iter(pairs))
    if run.get("src", src) != src or run.get("tgt", tgt) != tgt:
        raise error(f"{run_path} says {run.get('src')}->{run.get('tgt')} but the hypotheses are {src}->{tgt}")
    run.setdefault("src", src)
    run.setdefault("tgt", tgt)
    return run, hyps


__all__ = [
    "HYPOTHESES",
    "RUN_JSON",
    "HypothesisDirError",
    "merge_hypothesis_parts",
    "part_tag",
    "read_hyp_dir",
    "write_hypotheses",
]
