"""File helpers; they live in `tmt.core.io` (the bottom floor) and are re-exported here."""

from __future__ import annotations

from tmt.core.io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_object,
    fsync_dir,
    gzip_jsonl_bytes,
    load_pickled_torch,
    load_torch,
    make_dirs,
    open_text,
    read_json_object,
    read_text_file,
    read_yaml_object,
    save_torch,
    sha256_bytes,
    sha256_file,
    write_error,
)

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_object",
    "fsync_dir",
    "gzip_jsonl_bytes",
    "load_pickled_torch",
    "load_torch",
    "make_dirs",
    "open_text",
    "read_json_object",
    "read_text_file",
    "read_yaml_object",
    "save_torch",
    "sha256_bytes",
    "sha256_file",
    "write_error",
]
