"""Helpers shared by the real-corpus preparers (Flickr8k, SpokenCOCO)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tmt import TmtError
from tmt.core.io import make_dirs

log = logging.getLogger(__name__)

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "valid", "test": "test"}
"""Karpathy split name -> tmt split name (`restval` joins train unless told otherwise)."""


class CorpusError(TmtError):
    """A corpus on disk is missing files or is not in the expected format."""


def require_file(path: Path, what: str, hint: str = "") -> Path:
    """The path if it is a file, else one clear error naming it."""
    if not path.is_file():
        raise CorpusError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    return path


def find_dir(root: Path, candidates: Sequence[str], what: str, option: str) -> Path:
    """The first existing `root/<candidate>` directory."""
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    raise CorpusError(
        f"{what} folder not found under {root} (looked for {', '.join(candidates)}); pass it with {option}"
    )


def load_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{what} {path} is not valid JSON (line {e.lineno}: {e.msg})") from None
    except OSError as e:
        raise CorpusError(f"cannot read {what} {path}: {e}") from None


def karpathy_splits(path: Path, *, restval: bool = True) -> dict[str, str]:
    """Image key (`filepath/filename`, or `filename` when no filepath) -> tmt split, from a
    Karpathy `dataset_*.json`. With `restval=False` the `restval` images are left out."""
    data = load_json(path, "Karpathy split file")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise CorpusError(f"{path}: expected a Karpathy split file with an 'images' list")
    out: dict[str, str] = {}
    for n, img in enumerate(images):
        try:
            name, split = img["filename"], img["split"]
        except (KeyError, TypeError):
            raise CorpusError(f"{path}: images[{n}] lacks 'filename' or 'split'") from None
        if split == "restval" and not restval:
            continue
        if split not in KARPATHY_SPLITS:
            raise CorpusError(f"{path}: images[{n}] has unknown split '{split}' (expected {', '.join(KARPATHY_SPLITS)})")
        key = f"{img['filepath']}/{name}" if img.get("filepath") else name
        out[key] = KARPATHY_SPLITS[split]
    return out


class MissingFiles:
    """Collects missing media so that one error lists them all (count and first examples)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def check(self, path: Path) -> bool:
        if path.is_file():
            return True
        self.paths.append(str(path))
        return False

    def __len__(self) -> int:
        return len(self.paths)

    def raise_or_warn(self, corpus: str, allow_missing: bool) -> None:
        if not self.paths:
            return
        examples = "; ".join(self.paths[:5])
        msg = f"{corpus}: {len(self.paths)} media file(s) missing, e.g. {examples}"
        if not allow_missing:
            raise CorpusError(f"{msg}; fix the paths or pass --allow-missing to skip those rows")
        log.warning("%s; skipped them (--allow-missing)", msg)


def rel_to(path: Path, base: Path, absolute: bool) -> str:
    """A media path as stored in a manifest under `base` (relative unless `absolute`)."""
    p = path.resolve()
    return str(p) if absolute else os.path.relpath(p, base.resolve())


def write_splits(
    out_dir: Path, rows: Iterable[Mapping[str, Any]], splits: Sequence[str] = ("train", "valid", "test")
) -> dict[str, int]:
    """Validate and write one raw manifest per split (`<split>.jsonl.gz`); returns row counts."""
    from tmt.store.manifest import validate_rows, write_manifest

    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in splits}
    for r in rows:
        by_split.setdefault(r["split"], []).append(dict(r))
    make_dirs(out_dir)
    counts = {}
    for s, rs in by_split.items():
        path = out_dir / f"{s}.jsonl.gz"
        validate_rows(rs, manifest=path, check_files=True)
        counts[s] = write_manifest(path, rs)
    return counts
