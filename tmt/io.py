"""File helpers; they live in `tmt.core.io` (the bottom floor) and are re-exported here."""

from __future__ import annotations

from tmt.core.io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    gzip_jsonl_bytes,
    load_pickled_torch,
    open_text,
    sha256_bytes,
    sha256_file,
)

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "gzip_jsonl_bytes",
    "load_pickled_torch",
    "open_text",
    "sha256_bytes",
    "sha256_file",
]
