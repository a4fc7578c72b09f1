"""Batch translation into an output directory (manifest mode of `tmt translate`).

The directory's format (hypotheses.jsonl, run.json, one media file per input) is owned by
`tmt.core.hypotheses`. Nothing is half-written: media go to a staging folder inside D and
are moved into place only after every input translated; the hypotheses and run files are
written atomically last (per shard with `--shard k/N`, merged by the last worker).
A run does not resume: rerun after an interruption (even `kill -9`), it removes the
staging folder the killed run of its shard left and translates every input again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tmt.core.errors import TmtError
from tmt.core.hypotheses import (
    HYPOTHESES,
    RUN_JSON,
    merge_hypothesis_parts,
    part_tag,
    write_hypotheses,
)
from tmt.core.io import make_dirs
from tmt.generation.translator import TranslateError, Translation, Translator

log = logging.getLogger(__name__)

def default_source(tgt: str, via: str | None = None) -> str:
    """The source used when a manifest run names none: text for speech/image targets, speech for text."""
    for m in (("speech", "image") if tgt == "text" else ("text", "image", "speech")):
        if m not in (tgt, via):
            return m
    raise TranslateError(f"no source modality left for --to {tgt} --via {via}")


def hypothesis_line(r: Translation, group: str | None, media: str | None) -> dict[str, Any]:
    return {
        "id": r.id,
        "group": group if group is not None else r.id,
        "src": r.src,
        "tgt": r.tgt,
        "hyp": r.text if r.tgt == "text" else media,
        "tokens": [int(t) for t in r.tokens],
        "score": round(float(r.score), 6),
        "via": r.via,
    }


class OutputDir:
    """Collects results, stages media, and publishes everything at `close()`."""

    def __init__(self, root: str | Path, *, shard: tuple[int, int] = (0, 1)) -> None:
        self.root = Path(root)
        self.k, self.n = shard
        self._created = not self.root.exists()
        make_dirs(self.root)
        tag = part_tag(self.k, self.n)
        for stale in self.root.glob(f".staging-{tag}-*"):  # left by a killed run of this shard: start over
            log.info("removing %s, left by an interrupted run", stale)
            shutil.rmtree(stale, ignore_errors=True)
        self.staging = self.root / f".staging-{tag}-{os.getpid()}"
        self.staging.mkdir()
        self.lines: list[dict[str, Any]] = []
        self._media: list[str] = []

    def add(self, results: Iterable[Translation], groups: dict[str, str] | None = None) -> None:
        for r in results:
            media = None
            if r.tgt != "text":
                media = r.output_name()
                r.save(self.staging / media)
                self._media.append(media)
            self.lines.append(hypothesis_line(r, (groups or {}).get(r.id), media))

    def close(self, run_info: dict[str, Any]) -> Path:
        """Move staged media into place, then write the hypotheses and run files."""
        for name in self._media:
            os.replace(self.staging / name, self.root / name)
        shutil.rmtree(self.staging, ignore_errors=True)
        return write_hypotheses(self.root, self.lines, run_info, shard=(self.k, self.n))

    def abort(self) -> None:
        """Remove the staged media; a directory this run created is removed too when left empty."""
        shutil.rmtree(self.staging, ignore_errors=True)
        if self._created:
            with contextlib.suppress(OSError):
                self.root.rmdir()


def translate_to_dir(
    translator: Translator,
    inputs: Sequence[Any],
    ids: Sequence[str],
    *,
    src: str,
    tgt: str,
    via: str | None,
    output_dir: str | Path,
    run_info: dict[str, Any],
    groups: dict[str, str] | None = None,
    shard: tuple[int, int] = (0, 1),
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
    skip_bad: bool = False,
) -> Path:
    """Translate `inputs` chunk by chunk into `output_dir`; all-or-nothing.

    The first bad input (unreadable, empty, too short, silent) stops the run with its error and
    leaves no output. With `skip_bad`, a chunk that fails is retried input by input: the bad ones
    are logged and skipped, and their count and ids are recorded in run.json (`skipped`,
    `skipped_ids`); a run where every input is bad still fails."""
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if list(ids).count(i) > 1)
        raise TranslateError(f"input id '{dup}' appears twice; ids name the output files and must be unique")
    out = OutputDir(output_dir, shard=shard)
    skipped: list[str] = []
    try:
        for s in range(0, len(inputs), chunk):
            part, part_ids = list(inputs[s : s + chunk]), list(ids[s : s + chunk])
            try:
                res = translator.translate(part, tgt=tgt, src=src, via=via, ids=part_ids)
            except TmtError:
                if not skip_bad:
                    raise
                res = []
                for item, rid in zip(part, part_ids, strict=True):
                    try:
                        res.extend(translator.translate([item], tgt=tgt, src=src, via=via, ids=[rid]))
                    except TmtError as e:
                        log.warning("skipped %s: %s", rid, e)
                        skipped.append(rid)
            out.add(res, groups)
            if progress is not None:
                progress(len(part))
        if skip_bad:
            if skipped and len(skipped) == len(inputs):
                raise TranslateError(f"all {len(inputs)} inputs were bad and skipped (first: {skipped[0]}); nothing written")
            if skipped:
                log.warning("--skip-bad: skipped %d of %d inputs (ids in run.json)", len(skipped), len(inputs))
            run_info = {**run_info, "skipped": len(skipped), "skipped_ids": skipped}
        return out.close(run_info)
    except BaseException:
        out.abort()
        raise


def manifest_inputs(
    manifest: str | Path,
    split: str | None,
    src: str,
    shard: tuple[int, int] = (0, 1),
    limit: int | None = None,
    *,
    one_per_group: bool = False,
) -> tuple[list[Any], list[str], dict[str, str]]:
    """Rows of `split` that have the source modality -> (inputs, ids, {id: group}) for shard k/N.

    `one_per_group` keeps the first row of each group: the rows of one image (one per caption)
    share the image, so an image source needs translating once, and scoring keeps one output
    per image anyway. `limit` then keeps the first N rows, before sharding, so N shards together
    cover exactly the rows one unsharded run would."""
    from tmt.core.shards import shard_range
    from tmt.store.manifest import media_path, read_manifest

    mp = Path(manifest)
    if not mp.is_file():
        raise TranslateError(f"manifest not found: {mp}")
    rows = read_manifest(mp, split=split)
    if not rows:
        raise TranslateError(f"{mp} has no rows{f' in split {split!r}' if split else ''}; check --split")
    rows = [r for r in rows if r.get(src) not in (None, "")]
    if not rows:
        raise TranslateError(f"no row of {mp}{f' (split {split})' if split else ''} has {src}; pick another --from")
    if one_per_group:
        seen: set[str] = set()
        kept = []
        for r in rows:
            g = str(r.get("group") or r["id"])
            if g not in seen:
                seen.add(g)
                kept.append(r)
        rows = kept
    if limit is not None:
        rows = rows[:limit]
    k, n = shard
    rows = [rows[i] for i in shard_range(len(rows), k, n)]
    inputs: list[Any] = [r[src] if src == "text" else media_path(mp, r[src]) for r in rows]
    ids = [str(r["id"]) for r in rows]
    groups = {str(r["id"]): str(r.get("group") or r["id"]) for r in rows}
    return inputs, ids, groups


__all__ = [
    "HYPOTHESES",
    "RUN_JSON",
    "OutputDir",
    "default_source",
    "manifest_inputs",
    "merge_hypothesis_parts",
    "translate_to_dir",
]
