"""Small file helpers: atomic writes (also of torch checkpoints), hashing, gzip jsonl (the bottom floor)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to `path.tmp`, fsync, then rename over `path`; on error remove the tmp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    f = open(tmp, mode)
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gzip_jsonl_bytes(rows: Iterable[dict[str, Any]]) -> bytes:
    """Serialise rows as gzip-compressed JSON lines (mtime 0: same rows, same bytes)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        for r in rows:
            gz.write((json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
    return buf.getvalue()


def open_text(path: str | Path) -> IO[str]:
    """Open a text file, transparently gunzipping `.gz`; `-` is stdin."""
    import sys

    if str(path) == "-":
        return sys.stdin
    p = Path(path)
    if p.suffix == ".gz":
        return gzip.open(p, "rt", encoding="utf-8")
    return open(p, encoding="utf-8")


def load_pickled_torch(path: str | Path) -> Any:
    """Fully unpickle a torch file. Only for files the user vouched for with an explicit
    `--trust-pickle` (pickles can run code); everything else uses weights_only=True."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def save_torch(path: str | Path, obj: Any) -> None:
    """`torch.save` to `path` atomically (a killed run never leaves half a checkpoint)."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load_torch(path: str | Path, *, map_location: Any = "cpu") -> Any:
    """`torch.load(weights_only=True)` of a checkpoint; a corrupt or foreign file raises one clear
    TmtError naming it (callers may catch it to re-raise their own error type)."""
    import torch

    from tmt.core.errors import TmtError

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt, truncated or not a weights-only file
        raise TmtError(f"cannot load checkpoint {path}: {e}; delete it to start over") from None
