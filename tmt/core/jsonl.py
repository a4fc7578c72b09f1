"""JSON lines: one reader for `*.jsonl` and `*.jsonl.gz` (one JSON object per line) and one atomic writer."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tmt.core.errors import TmtError
from tmt.core.io import atomic_write_bytes, gzip_jsonl_bytes


class JsonlError(TmtError):
    """A JSON-lines file is missing, unreadable or holds a line that is not a JSON object."""


def iter_jsonl_numbered(
    path: str | Path, *, what: str = "file", error: type[TmtError] = JsonlError
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a `.jsonl` or `.jsonl.gz` file.

    `what` names the file in errors ("manifest", "hypotheses file"); `error` is the class raised."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        f = gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else open(p, encoding="utf-8")
        with f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise error(f"{p}:{n}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise error(f"{p}:{n}: each line must be a JSON object")
                yield n, row
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise error(f"{p}: cannot read {what} ({e})") from None


def iter_jsonl(path: str | Path, *, what: str = "file", error: type[TmtError] = JsonlError) -> Iterator[dict[str, Any]]:
    """The objects of a `.jsonl` or `.jsonl.gz` file, blank lines skipped (see `iter_jsonl_numbered`)."""
    for _, row in iter_jsonl_numbered(path, what=what, error=error):
        yield row


def read_jsonl(path: str | Path, *, what: str = "file", error: type[TmtError] = JsonlError) -> list[dict[str, Any]]:
    """All objects of a `.jsonl` or `.jsonl.gz` file."""
    return list(iter_jsonl(path, what=what, error=error))


def jsonl_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows as JSON lines (UTF-8 kept readable, one object per line)."""
    return "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows)


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows atomically: gzip-compressed when `path` ends in `.gz` (byte-stable), else plain.

    Returns the row count."""
    data = [dict(r) for r in rows]
    if Path(path).suffix == ".gz":
        atomic_write_bytes(path, gzip_jsonl_bytes(data))
    else:
        atomic_write_bytes(path, jsonl_text(data).encode("utf-8"))
    return len(data)


__all__ = ["JsonlError", "iter_jsonl", "iter_jsonl_numbered", "jsonl_text", "read_jsonl", "write_jsonl"]
