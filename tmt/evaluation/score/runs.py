"""Score hypotheses directories: one direction (`score_dir`) or several at once (`score_runs`).

`score_runs` shares one set of judges across the directories, orders the
directions as the report does, and writes scores.json, report.md and scores.png.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tmt import __version__
from tmt.evaluation.metrics import MetricResult
from tmt.evaluation.score.config import DIRECTIONS, ScoreConfig, ScoreError
from tmt.evaluation.score.directions import samples, score_direction
from tmt.evaluation.score.inputs import HypRun, load_hyp_run
from tmt.evaluation.score.judges import Judges
from tmt.evaluation.score.report import headline_text, write_outputs

log = logging.getLogger(__name__)


def score_dir(hyp_dir: str | Path, cfg: ScoreConfig | None = None, *, judges: Judges | None = None) -> dict[str, Any]:
    """Score one hypotheses directory; returns the direction's entry of scores.json."""
    cfg = cfg or ScoreConfig()
    judges = judges or Judges(cfg)
    hr = load_hyp_run(hyp_dir, cfg)
    result = MetricResult(notes=list(hr.notes))
    entry = _entry_header(hr)
    transcripts, ceiling = score_direction(hr, cfg, judges, result, entry)
    entry.update(result.to_json())
    entry["ceiling"] = ceiling
    entry["samples"] = samples(hr.hyp_dir, hr.src, hr.tgt, hr.hyps, hr.refs, transcripts, cfg.samples)
    return entry


def _entry_header(hr: HypRun) -> dict[str, Any]:
    """What a direction's entry says about its inputs."""
    run = hr.run
    via = run.get("via") or next((h.get("via") for h in hr.hyps if h.get("via")), None)
    return {
        "direction": f"{hr.src}->{hr.tgt}",
        "src": hr.src,
        "tgt": hr.tgt,
        "via": via,
        "hyp_dir": str(hr.hyp_dir),
        "manifest": hr.manifest,
        "split": run.get("split"),
        "model": run.get("model"),
        "n": len(hr.hyps),
    }


def direction_key(entry: dict[str, Any]) -> str:
    key = str(entry["direction"])
    return f"{key} (via {entry['via']})" if entry.get("via") else key


def score_runs(
    hyp_dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    cfg: ScoreConfig | None = None,
) -> dict[str, Any]:
    """Score each hypotheses directory and write scores.json, report.md and scores.png to `out_dir`.

    `out_dir` defaults to the directory itself (one input) or the inputs' common parent.
    """
    cfg = cfg or ScoreConfig()
    if not hyp_dirs:
        raise ScoreError("give at least one hypotheses directory")
    out = Path(out_dir) if out_dir else default_out_dir(hyp_dirs)
    judges = Judges(cfg)
    directions: dict[str, Any] = {}
    for d in hyp_dirs:
        entry = score_dir(d, cfg, judges=judges)
        key = direction_key(entry)
        if key in directions:
            key = f"{key} [{Path(d).name}]"
        directions[key] = entry
        log.info("%s: %s", key, headline_text(entry))
    scores = {
        "tmt_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "directions": {k: directions[k] for k in _ordered(directions)},
    }
    write_outputs(scores, out)
    return scores


def default_out_dir(hyp_dirs: Sequence[str | Path]) -> Path:
    if len(hyp_dirs) == 1:
        return Path(hyp_dirs[0])
    return Path(os.path.commonpath([str(Path(p).resolve()) for p in hyp_dirs]))


def _ordered(directions: dict[str, Any]) -> list[str]:
    rank = {d: i for i, d in enumerate(DIRECTIONS)}
    return sorted(directions, key=lambda k: (rank.get(directions[k]["direction"], 99), k))

