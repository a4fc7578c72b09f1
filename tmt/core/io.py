"""Small file helpers: atomic writes (also of torch checkpoints), checked readers, hashing, gzip
jsonl (the bottom floor: imports only `tmt.core.errors`).

Every file tmt writes goes through `atomic_open` (or its wrappers), whose OS errors (parent is a
file, directory not writable, disk full) become a `TmtError` naming the path. Every JSON/YAML
object tmt reads goes through `read_json_object` / `read_yaml_object`, and every torch file
through `load_torch`: a missing, binary, malformed or wrongly shaped file is one
`TmtError` naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tmt.core.errors import TmtError

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
"""OS errors of the write itself (disk full, quota, file too big, read-only file system)."""


def write_error(path: str | Path, e: OSError, *, error: type[TmtError] = TmtError) -> TmtError:
    """The `TmtError` for an OS error while creating or writing `path`."""
    reason = e.strerror or str(e)
    hint = "choose another output path"
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        hint = "a parent of the output path is a file, not a directory: choose another output path"
    elif e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some disk space or write elsewhere"
    elif isinstance(e, PermissionError) or e.errno == errno.EROFS:
        hint = "the directory is not writable: choose a writable output path"
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
    return error(f"cannot write {path}: {reason}{where}; {hint}")


def make_dirs(path: str | Path, *, error: type[TmtError] = TmtError) -> Path:
    """`mkdir -p path`; an OS error (a parent is a file, not writable) becomes a `TmtError` naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e, error=error) from None
    return path


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to `path.tmp`, fsync, then rename over `path`; on error remove the tmp file.

    OS errors of the file itself (its directory cannot be made or written, the disk is full)
    are raised as a `TmtError` naming `path`; other errors of the caller's block pass through."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(tmp, mode)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        try:
            yield f
        except OSError as e:
            if e.errno in _DISK_ERRNOS and e.filename is None:
                raise write_error(path, e) from None
            raise
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, path)
        except OSError as e:
            raise write_error(path, e) from None
        fsync_dir(path.parent)
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed); imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = 100) -> Path:
    """Lay out a matplotlib figure, write it to `path` as PNG atomically, and close it."""
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    pyplot().close(fig)
    return Path(path)


# ----------------------------------------------------------------------------- checked readers
def _type_name(t: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
             bool: "true/false", type(None): "null"}
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(names.get(x, x.__name__) for x in ts)


def _value_name(v: Any) -> str:
    for t in (bool, dict, list, str, int, float):
        if isinstance(v, t):
            return _type_name(t)
    return "null" if v is None else type(v).__name__


def check_object(
    data: Any,
    source: str | Path,
    *,
    what: str = "file",
    required: Iterable[str] | dict[str, type | tuple[type, ...]] = (),
    error: type[TmtError] = TmtError,
    fix: str = "",
) -> dict[str, Any]:
    """`data` if it is a JSON-style object holding the `required` keys (with their types when
    `required` maps key -> type); else one `error` naming `source`, what is wrong, and `fix`."""
    tail = f"; {fix}" if fix else ""
    if not isinstance(data, dict):
        raise error(f"{source}: {what} must be a JSON/YAML object (key: value pairs), not {_value_name(data)}{tail}")
    types = required if isinstance(required, dict) else dict.fromkeys(required)
    missing = [k for k in types if k not in data]
    if missing:
        raise error(f"{source}: {what} lacks the key(s) {', '.join(map(repr, missing))}{tail}")
    for k, t in types.items():
        if t is None:
            continue
        v = data[k]
        bad = not isinstance(v, t) or (isinstance(v, bool) and bool not in (t if isinstance(t, tuple) else (t,)))
        if bad:
            raise error(f"{source}: {what} key {k!r} must be {_type_name(t)}, not {_value_name(v)} ({v!r:.60}){tail}")
    return data


def read_text_file(path: str | Path, *, what: str = "file", error: type[TmtError] = TmtError, fix: str = "") -> str:
    """The UTF-8 text of `path`; missing, unreadable or binary -> one `error` naming the file."""
    p = Path(path)
    tail = f"; {fix}" if fix else ""
    if not p.exists():
        raise error(f"{what} not found: {p}{tail}")
    if p.is_dir():
        raise error(f"{p}: {what} is a directory, expected a file{tail}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{p}: {what} is not UTF-8 text (binary or another encoding: byte {e.start}){tail}") from None
    except OSError as e:
        raise error(f"{p}: cannot read {what} ({e.strerror or e}){tail}") from None


def read_json_object(
    path: str | Path,
    *,
    what: str = "file",
    required: Iterable[str] | dict[str, type | tuple[type, ...]] = (),
    error: type[TmtError] = TmtError,
    fix: str = "",
) -> dict[str, Any]:
    """A JSON file that must hold one object with the `required` keys (and types, when a dict
    key -> type is given). Missing file, not UTF-8, invalid JSON, not an object, missing keys
    or wrong types: one `error` naming the file, what is wrong and `fix`."""
    p = Path(path)
    text = read_text_file(p, what=what, error=error, fix=fix)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        tail = f"; {fix}" if fix else ""
        raise error(f"{p}:{e.lineno}: {what} is not valid JSON ({e.msg}){tail}") from None
    return check_object(data, p, what=what, required=required, error=error, fix=fix)


def read_yaml_object(
    path: str | Path,
    *,
    what: str = "file",
    required: Iterable[str] | dict[str, type | tuple[type, ...]] = (),
    error: type[TmtError] = TmtError,
    fix: str = "",
    empty_ok: bool = True,
) -> dict[str, Any]:
    """Like `read_json_object` for YAML (JSON is YAML too); an empty file is `{}` when `empty_ok`."""
    import yaml

    p = Path(path)
    text = read_text_file(p, what=what, error=error, fix=fix)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        tail = f"; {fix}" if fix else ""
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"{p}{line}: {what} is not valid YAML ({problem}){tail}") from None
    if data is None and empty_ok:
        data = {}
    return check_object(data, p, what=what, required=required, error=error, fix=fix)


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


def save_torch(path: str | Path, obj: Any) -> None:
    """`torch.save` to `path` atomically (a killed run never leaves half a checkpoint)."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load_torch(path: str | Path, *, what: str = "checkpoint", error: type[TmtError] = TmtError,
               map_location: Any = "cpu", fix: str = "delete it to start over") -> Any:
    """`torch.load(path, weights_only=True)`: the one reader of torch files. A missing, truncated,
    non-torch or pickle-with-code file is one `error` naming the file, what it should be and `fix`."""
    import pickle

    import torch

    p = Path(path)
    tail = f"; {fix}" if fix else ""
    if not p.is_file():
        raise error(f"{what} not found: {p}{tail}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError, OSError, UnicodeDecodeError,
            AttributeError, ImportError, IndexError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"cannot load {what} {p} (truncated, not a torch file, or not weights only: "
                    f"{first[:200]}){tail}") from None
