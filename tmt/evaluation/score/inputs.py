"""What one direction is scored on: a hypotheses directory and the manifest rows it answers.

The directory format itself (run.json + hypotheses.jsonl) is `tmt.core.hypotheses`;
here it is paired with its references: the manifest row of each hypothesis id
and, for caption metrics, the texts of every row of the same `group`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tmt.core.hypotheses import read_hyp_dir
from tmt.evaluation.score.config import ScoreConfig, ScoreError


class References:
    """Manifest rows by id, and the captions of each group."""

    def __init__(self, manifest: str | Path) -> None:
        from tmt.store.manifest import read_manifest

        self.path = Path(manifest)
        rows = read_manifest(self.path)
        self.rows: dict[str, dict[str, Any]] = {str(r["id"]): r for r in rows}
        self.group_rows: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            self.group_rows.setdefault(str(r.get("group") or r["id"]), []).append(r)

    def captions(self, group: str, *, exclude_id: str | None = None) -> list[str]:
        return [
            str(r["text"]) for r in self.group_rows.get(group, [])
            if isinstance(r.get("text"), str) and r["text"].strip() and r["id"] != exclude_id
        ]

    def media(self, value: str | None) -> Path | None:
        if not value:
            return None
        from tmt.store.manifest import media_path

        return media_path(self.path, value)


def group_of(h: dict[str, Any], row: dict[str, Any]) -> str:
    return str(h.get("group") or row.get("group") or row["id"])



@dataclass(kw_only=True)
class HypRun:
    """One hypotheses directory, ready to score."""

    hyp_dir: Path
    """The directory."""
    run: dict[str, Any]
    """Its run.json (src and tgt always set)."""
    manifest: str
    """The manifest holding the references."""
    refs: References
    """The manifest's rows."""
    hyps: list[dict[str, Any]]
    """The hypotheses that are scored (with a manifest row; one per image for image sources)."""
    notes: list[str] = field(default_factory=list)
    """What was skipped and why, for the report."""

    @property
    def src(self) -> str:
        return str(self.run["src"])

    @property
    def tgt(self) -> str:
        return str(self.run["tgt"])

    def row(self, h: dict[str, Any]) -> dict[str, Any]:
        """The manifest row of hypothesis `h`."""
        return self.refs.rows[str(h["id"])]


def load_hyp_run(hyp_dir: str | Path, cfg: ScoreConfig) -> HypRun:
    """Read a hypotheses directory and its manifest; keep the hypotheses that can be scored."""
    d = Path(hyp_dir)
    run, hyps = read_hyp_dir(d, error=ScoreError)
    manifest = cfg.manifest or run.get("manifest")
    if not manifest:
        raise ScoreError(f"{d}/run.json names no manifest; pass --manifest with the references")
    refs = References(manifest)
    if cfg.max_items:
        hyps = hyps[: cfg.max_items]
    found = [h for h in hyps if str(h["id"]) in refs.rows]
    if not found:
        raise ScoreError(
            f"none of the {len(hyps)} hypothesis ids of {d} are in {manifest}; pass the manifest they were translated from"
        )
    notes: list[str] = []
    if len(found) < len(hyps):
        notes.append(f"{len(hyps) - len(found)} hypotheses have no row in the manifest and were skipped")
    if str(run["src"]) == "image":
        found = _one_per_image(found, refs, notes)
    return HypRun(hyp_dir=d, run=run, manifest=str(manifest), refs=refs, hyps=found, notes=notes)


def _one_per_image(hyps: list[dict[str, Any]], refs: References, notes: list[str]) -> list[dict[str, Any]]:
    """The rows of one image share it (one row per caption): score one output per image,
    against all of its captions, as COCO caption evaluation does."""
    seen: set[str] = set()
    uniq = []
    for h in hyps:
        g = group_of(h, refs.rows[str(h["id"])])
        if g not in seen:
            seen.add(g)
            uniq.append(h)
    if len(uniq) < len(hyps):
        notes.append(f"{len(hyps) - len(uniq)} further outputs for an already scored image were ignored (one per image)")
    return uniq
