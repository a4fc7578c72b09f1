"""Raw manifests: gzip JSON lines, one example per line (DESIGN section 4).

    {"id": str, "group": str, "split": str, "image": path|null, "speech": path|null,
     "text": str|null, ...extra fields (scene graph, tts engine/voice, ...)}

Media paths are relative to the manifest's directory (or absolute);
`media_path` resolves them. `group` ties together the rows of one image.
The format's one definition is `tmt/store/schemas/manifest_row.schema.json`
(copied to `data_manifests/`); `validate_rows` checks every row against it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tmt import MODALITIES
from tmt.core.io import atomic_write_bytes, gzip_jsonl_bytes
from tmt.core.jsonl import iter_jsonl_numbered
from tmt.store import StoreError
from tmt.store.schema import check


def iter_manifest(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the rows of a raw manifest (`.jsonl.gz` or plain `.jsonl`)."""
    for _, row in iter_manifest_lines(path):
        yield row


def iter_manifest_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, row) for the rows of a raw manifest (blank lines skipped)."""
    return iter_jsonl_numbered(path, what="manifest", error=StoreError)


def read_manifest(path: str | Path, *, split: str | None = None) -> list[dict[str, Any]]:
    rows = list(iter_manifest(path))
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
    return rows


def write_manifest(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows atomically as `.jsonl.gz`; returns the row count."""
    data = [dict(r) for r in rows]
    atomic_write_bytes(path, gzip_jsonl_bytes(data))
    return len(data)


def media_path(manifest: str | Path, value: str) -> Path:
    """Resolve a media path stored in a manifest (relative to the manifest's directory)."""
    p = Path(value)
    return p if p.is_absolute() else Path(manifest).resolve().parent / p


def present_modalities(row: Mapping[str, Any]) -> list[str]:
    return [m for m in MODALITIES if row.get(m) not in (None, "")]


def validate_rows(
    rows: Sequence[Mapping[str, Any]],
    *,
    manifest: str | Path | None = None,
    check_files: bool = True,
    lines: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Check each row against the manifest-row schema, then unique ids, at least one
    modality, non-blank text and (with `check_files`) media files present.

    `lines` (the rows' line numbers in `manifest`) makes messages read
    `<manifest>:<line>: ...`; without it they name the row's position.
    Raises StoreError naming the first problem; returns counts per split and modality, and the
    rows with and without speech (`rows_with_speech`, `rows_without_speech`).
    """
    where = str(manifest) if manifest else "manifest"
    if lines is not None and len(lines) != len(rows):
        raise ValueError(f"{len(lines)} line numbers for {len(rows)} rows")
    ids: set[str] = set()
    counts: dict[str, dict[str, int]] = {}
    missing: list[str] = []
    for n, r in enumerate(rows, 1):
        at = f"{where}:{lines[n - 1]}" if lines is not None else f"{where} row {n}"
        check(r, "manifest_row", at)
        if r["id"] in ids:
            raise StoreError(f"{at}: duplicate id '{r['id']}'")
        ids.add(r["id"])
        mods = present_modalities(r)
        if not mods:
            raise StoreError(f"{at} ('{r['id']}'): no image, speech or text")
        if "text" in mods and not r["text"].strip():
            raise StoreError(f"{at} ('{r['id']}'): text must not be blank")
        if check_files and manifest is not None:
            for m in ("image", "speech"):
                if m in mods and not media_path(manifest, r[m]).is_file():
                    missing.append(f"{r['id']}: {r[m]}")
        c = counts.setdefault(r["split"], {"rows": 0} | {m: 0 for m in MODALITIES})
        c["rows"] += 1
        for m in mods:
            c[m] += 1
    if missing:
        raise StoreError(
            f"{where}: {len(missing)} media file(s) missing, e.g. {'; '.join(missing[:3])}"
        )
    with_speech = sum(c["speech"] for c in counts.values())
    return {"rows": len(rows), "splits": counts, "rows_with_speech": with_speech, "rows_without_speech": len(rows) - with_speech}


def validate_manifest(path: str | Path, *, check_files: bool = True) -> dict[str, Any]:
    """Read and check a raw manifest file (see `validate_rows`); messages name its lines."""
    numbered = list(iter_manifest_lines(path))
    return validate_rows(
        [r for _, r in numbered], manifest=path, check_files=check_files, lines=[n for n, _ in numbered]
    )


def split_rows(
    rows: Sequence[Mapping[str, Any]],
    fractions: Mapping[str, float],
    *,
    seed: int = 0,
    by: str = "group",
) -> dict[str, list[dict[str, Any]]]:
    """Split rows by `group` (so one image's rows stay together) into named fractions."""
    total = sum(fractions.values())
    if total <= 0:
        raise StoreError("split fractions must add up to a positive number")
    keys = sorted({str(r.get(by, r["id"])) for r in rows})
    random.Random(seed).shuffle(keys)
    names = list(fractions)
    bounds, acc = [], 0.0
    for name in names:
        acc += fractions[name] / total
        bounds.append(round(acc * len(keys)))
    assign: dict[str, str] = {}
    start = 0
    for name, end in zip(names, bounds, strict=True):
        for k in keys[start:end]:
            assign[k] = name
        start = end
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in rows:
        name = assign[str(r.get(by, r["id"]))]
        out[name].append(dict(r) | {"split": name})
    return out
