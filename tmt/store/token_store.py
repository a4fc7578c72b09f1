"""The sharded token store (DESIGN section 4).

A store is one directory per corpus split::

    index.json             what is visible: shards, rows, token totals, fingerprints, sha256 per file
    meta.00000.jsonl.gz    one JSON line per row (id, group, modalities, lengths, synthetic, source, ...)
    text.00000.bin/.idx    token sequences (MMIDIDX), one entry per row; absent modality = empty entry
    speech.00000.bin/.idx
    image.00000.bin/.idx
    durations.00000.bin/.idx   optional: run lengths of the deduplicated speech units (aligned with speech)

Row *i* of `meta.N` is row *i* of every `<stream>.N.idx`. Ids are the
tokenizer's own (0-based); the joint offset is applied when batching. A
shard's files are written as `*.tmp`, fsynced and renamed, and only then is
`index.json` rewritten (atomically) to name the shard: a reader never sees a
partial shard, and a writer killed at any point leaves the previous good state.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tmt.core.io import (
    atomic_write_json,
    fsync_dir,
    gzip_jsonl_bytes,
    make_dirs,
    read_json_object,
    sha256_bytes,
)
from tmt.core.modality import MODALITIES
from tmt.store import StoreError
from tmt.store.indexed import IndexedBin, IndexedWriter, IndexFile, best_dtype

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT = "tmt-token-store"
AUX_STREAMS: dict[str, str] = {"durations": "speech"}
"""Auxiliary integer streams and the modality they are aligned with."""
DURATION_VOCAB = 65499
"""Run lengths are stored as uint16 (65,498 frames of 20 ms is 21 minutes)."""


def empty_index(
    *,
    streams: list[str],
    dtypes: dict[str, str],
    vocab_sizes: dict[str, int],
    fingerprints: dict[str, str],
    tokenizers: dict[str, Any],
    source: dict[str, Any],
    complete: bool,
) -> dict[str, Any]:
    """The index.json of a store without shards yet."""
    return {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "streams": streams,
        "dtypes": dtypes,
        "vocab_sizes": vocab_sizes,
        "fingerprints": fingerprints,
        "tokenizers": tokenizers,
        "source": source,
        "complete": complete,
        "rows": 0,
        "tokens": {s: 0 for s in streams},
        "shards": [],
    }


# --------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------
class TokenStoreWriter:
    """Append rows to a store, one shard at a time.

    `streams` maps each stream written (modalities plus optional `durations`) to
    its vocabulary size, which fixes its dtype. With `resume=True` an existing
    store written with the same `source` is continued: `rows_done` tells the
    caller how many input rows to skip. Use as a context manager: on an
    exception the open shard is discarded and the index keeps the last good state.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        streams: Mapping[str, int],
        fingerprints: Mapping[str, str] | None = None,
        tokenizers: Mapping[str, Any] | None = None,
        shard_rows: int = 50_000,
        source: Mapping[str, Any] | None = None,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.root = Path(root)
        for s in streams:
            if s not in MODALITIES and s not in AUX_STREAMS:
                raise StoreError(f"unknown stream '{s}'; expected some of {list(MODALITIES) + list(AUX_STREAMS)}")
        self.streams = {s: int(streams[s]) for s in (*MODALITIES, *AUX_STREAMS) if s in streams}
        self.dtypes = {s: best_dtype(v) for s, v in self.streams.items()}
        self.shard_rows = int(shard_rows)
        if self.shard_rows < 1:
            raise StoreError("shard_rows must be >= 1")
        self.source = dict(source or {})
        self._current: dict[str, IndexedWriter] | None = None
        self._meta: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        if (self.root / "index.json").exists() and not overwrite:
            if not resume:
                raise StoreError(
                    f"store {self.root} already exists; pass --resume to continue it or --overwrite to replace it"
                )
            self._continue_existing()
        else:
            self._start_new(fingerprints, tokenizers, overwrite=overwrite)
        if resume and self.index["rows"]:
            # ids already written, to keep ids unique across a resumed run
            for i in range(len(self.index["shards"])):
                for m in read_meta_shard(self.root, self.index["shards"][i]["name"]):
                    self._ids.add(m["id"])

    def _continue_existing(self) -> None:
        """--resume: adopt the existing index after checking it was written from the same source."""
        self.index = load_index(self.root)
        if self.index.get("source", {}) != self.source:
            raise StoreError(
                f"cannot resume {self.root}: it was written from a different source "
                f"({self.index.get('source')} != {self.source}); use --overwrite"
            )
        if {k: int(v) for k, v in self.index["vocab_sizes"].items()} != self.streams:
            raise StoreError(f"cannot resume {self.root}: its streams/vocab sizes differ; use --overwrite")
        self._remove_orphans()
        log.info("resuming %s after %d rows in %d shards", self.root, self.index["rows"], len(self.index["shards"]))

    def _start_new(
        self, fingerprints: Mapping[str, str] | None, tokenizers: Mapping[str, Any] | None, *, overwrite: bool
    ) -> None:
        """An empty store (replacing the directory's old one with `overwrite`), its index written."""
        if overwrite and self.root.exists():
            shutil.rmtree(self.root)
        make_dirs(self.root)
        self._remove_orphans()
        self.index = empty_index(
            streams=list(self.streams), dtypes={s: str(d) for s, d in self.dtypes.items()},
            vocab_sizes=dict(self.streams), fingerprints=dict(fingerprints or {}),
            tokenizers=dict(tokenizers or {}), source=self.source, complete=False,
        )
        self._write_index()

    @property
    def rows_done(self) -> int:
        return int(self.index["rows"])

    @property
    def complete(self) -> bool:
        return bool(self.index.get("complete"))

    def _remove_orphans(self) -> None:
        named = {f for sh in self.index["shards"] for f in sh["files"]} if hasattr(self, "index") else set()
        named.add("index.json")
        for p in self.root.iterdir():
            if p.is_file() and p.name not in named and (p.suffix in (".tmp", ".bin", ".idx") or p.name.startswith("meta.")):
                p.unlink()

    def _open_shard(self) -> dict[str, IndexedWriter]:
        name = f"{len(self.index['shards']):05d}"
        self._current = {s: IndexedWriter(self.root / f"{s}.{name}", self.dtypes[s]) for s in self.streams}
        self._meta = []
        return self._current

    def add(self, meta: Mapping[str, Any], tokens: Mapping[str, np.ndarray | Sequence[int] | None]) -> None:
        """Add one row. `meta` needs an `id`; `tokens` maps streams to sequences (absent = None/missing)."""
        if self.complete:
            raise StoreError(f"store {self.root} is closed; open it with resume=True to append")
        rid = meta.get("id")
        if not isinstance(rid, str) or not rid:
            raise StoreError(f"every row needs a non-empty string id, got {rid!r}")
        if rid in self._ids:
            raise StoreError(f"duplicate row id '{rid}' in store {self.root}")
        extra = set(tokens) - set(self.streams)
        if extra:
            raise StoreError(f"row '{rid}': streams {sorted(extra)} were not declared for this store")
        writers = self._current or self._open_shard()
        lengths: dict[str, int] = {}
        seqs = {s: (np.asarray(tokens[s]) if tokens.get(s) is not None else None) for s in self.streams}
        for s, a in seqs.items():
            if a is not None and a.size:
                vmax = self.streams[s]
                if a.dtype.kind not in "iu":
                    raise StoreError(f"row '{rid}': {s} tokens must be integers, got {a.dtype}")
                lo, hi = int(a.min()), int(a.max())
                if lo < 0 or hi >= vmax:
                    raise StoreError(f"row '{rid}': {s} id {lo if lo < 0 else hi} outside [0, {vmax})")
        dur = seqs.get("durations")
        if dur is not None and (seqs.get("speech") is None or len(dur) != len(seqs["speech"])):  # type: ignore[arg-type]
            raise StoreError(f"row '{rid}': durations must be aligned with speech units")
        for s, w in writers.items():
            a = seqs[s]
            if a is None:
                w.add(np.zeros(0, dtype=w.dtype))
            else:
                w.add(a)
                if s in MODALITIES:
                    lengths[s] = int(a.size)
        row = dict(meta)
        row["modalities"] = [m for m in MODALITIES if m in lengths]
        row["lengths"] = lengths
        row.setdefault("synthetic", False)
        self._meta.append(row)
        self._ids.add(rid)
        if len(self._meta) >= self.shard_rows:
            self.flush()

    @property
    def progress(self) -> dict[str, Any]:
        """Caller-defined progress saved with the last flush (e.g. input rows consumed)."""
        return dict(self.index.get("progress") or {})

    def flush(self, progress: Mapping[str, Any] | None = None) -> None:
        """Finish the open shard: rename its files, then name it in index.json.

        `progress` (caller-defined, e.g. how many input rows were consumed) is
        saved in the same atomic index write, so a resumed job knows where the
        visible rows end even when some inputs produced no rows.
        """
        if progress is not None:
            self.index["progress"] = dict(progress)
        if self._current is None:
            if progress is not None:
                self._write_index()
            return
        writers, meta = self._current, self._meta
        self._current = None
        name = writers[next(iter(writers))].prefix.name.split(".")[-1]
        files: dict[str, dict[str, Any]] = {}
        tokens: dict[str, int] = {}
        for s, w in writers.items():
            h_bin, h_idx = w.finish()
            files[f"{s}.{name}.bin"] = {"sha256": h_bin, "bytes": w.bin_bytes}
            files[f"{s}.{name}.idx"] = {"sha256": h_idx, "bytes": w.tmp_idx.stat().st_size}
            tokens[s] = int(sum(w.sizes))
        meta_bytes = gzip_jsonl_bytes(meta)
        meta_tmp = self.root / f"meta.{name}.jsonl.gz.tmp"
        with open(meta_tmp, "wb") as f:
            f.write(meta_bytes)
            f.flush()
            os.fsync(f.fileno())
        files[f"meta.{name}.jsonl.gz"] = {"sha256": sha256_bytes(meta_bytes), "bytes": len(meta_bytes)}
        for s, w in writers.items():
            os.replace(w.tmp_bin, self.root / f"{s}.{name}.bin")
            os.replace(w.tmp_idx, self.root / f"{s}.{name}.idx")
        os.replace(meta_tmp, self.root / f"meta.{name}.jsonl.gz")
        fsync_dir(self.root)
        self.index["shards"].append({"name": name, "rows": len(meta), "tokens": tokens, "files": files})
        self.index["rows"] += len(meta)
        for s, n in tokens.items():
            self.index["tokens"][s] = self.index["tokens"].get(s, 0) + n
        self._write_index()

    def _write_index(self) -> None:
        self.index["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(self.root / "index.json", self.index)

    def close(self) -> None:
        """Flush the last shard and mark the store complete."""
        self.flush()
        self.index["complete"] = True
        self._write_index()

    def abort(self) -> None:
        """Discard the open shard; the index keeps the last flushed state."""
        if self._current is not None:
            for w in self._current.values():
                w.abort()
            self._current = None
        self._meta = []

    def __enter__(self) -> TokenStoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# --------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------
def load_index(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    path = root / "index.json"
    if not path.is_file():
        if not root.exists():
            raise StoreError(f"token store not found: {root}")
        raise StoreError(f"{root} is not a token store (no index.json); was tokenization interrupted before its first shard?")
    index = read_json_object(path, what="token store index", error=StoreError, fix="restore it or re-create the store")
    if index.get("format") != FORMAT:
        raise StoreError(f"{path} is not a tmt token store index")
    if index.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema_version {index.get('schema_version')} unsupported (want {SCHEMA_VERSION})")
    for key in ("streams", "shards", "rows", "vocab_sizes", "dtypes", "tokens"):
        if key not in index:
            raise StoreError(f"{path}: missing '{key}'")
    try:
        if sum(int(sh["rows"]) for sh in index["shards"]) != int(index["rows"]):
            raise StoreError(f"{path}: shard rows do not add up to {index['rows']}")
    except (TypeError, KeyError, ValueError):
        raise StoreError(f"{path}: malformed shard list") from None
    return index


def read_meta_shard(root: Path, name: str) -> list[dict[str, Any]]:
    path = root / f"meta.{name}.jsonl.gz"
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        raise StoreError(f"meta file missing: {path}") from None
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path} is corrupt ({e}); re-create the store") from None


@dataclass
class Row:
    """One row of a store: its metadata and its token sequences (tokenizer-local ids)."""

    meta: dict[str, Any]
    tokens: dict[str, np.ndarray]

    @property
    def id(self) -> str:
        return str(self.meta["id"])

    def has(self, modality: str) -> bool:
        return modality in self.meta.get("modalities", [])


class TokenStore:
    """Read access to a token store: random access by row, lengths from `.idx` only."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.index = load_index(self.root)
        self.streams: list[str] = list(self.index["streams"])
        self.shards: list[dict[str, Any]] = list(self.index["shards"])
        counts = [int(sh["rows"]) for sh in self.shards]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._bins: dict[tuple[int, str], IndexedBin] = {}
        self._idx: dict[tuple[int, str], IndexFile] = {}
        self._meta: dict[int, list[dict[str, Any]]] = {}

    # ---- summary ----------------------------------------------------
    def __len__(self) -> int:
        return int(self.index["rows"])

    @property
    def fingerprints(self) -> dict[str, str]:
        return dict(self.index.get("fingerprints", {}))

    @property
    def vocab_sizes(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.index["vocab_sizes"].items()}

    @property
    def complete(self) -> bool:
        return bool(self.index.get("complete"))

    # ---- access -----------------------------------------------------
    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for a store of {n} rows")
        s = int(np.searchsorted(self._starts, i, side="right")) - 1
        return s, i - int(self._starts[s])

    def _index_file(self, shard: int, stream: str) -> IndexFile:
        key = (shard, stream)
        if key not in self._idx:
            name = self.shards[shard]["name"]
            f = IndexFile(self.root / f"{stream}.{name}.idx")
            if len(f) != int(self.shards[shard]["rows"]):
                raise StoreError(f"{f.path}: {len(f)} entries but index.json says {self.shards[shard]['rows']} rows")
            self._idx[key] = f
        return self._idx[key]

    def _bin(self, shard: int, stream: str) -> IndexedBin:
        key = (shard, stream)
        if key not in self._bins:
            name = self.shards[shard]["name"]
            b = IndexedBin(self.root / f"{stream}.{name}")
            if len(b) != int(self.shards[shard]["rows"]):
                raise StoreError(f"{b.index.path}: {len(b)} entries but index.json says {self.shards[shard]['rows']} rows")
            self._bins[key] = b
        return self._bins[key]

    def _meta_shard(self, shard: int) -> list[dict[str, Any]]:
        if shard not in self._meta:
            rows = read_meta_shard(self.root, self.shards[shard]["name"])
            if len(rows) != int(self.shards[shard]["rows"]):
                raise StoreError(
                    f"meta.{self.shards[shard]['name']}.jsonl.gz has {len(rows)} lines, index.json says "
                    f"{self.shards[shard]['rows']}"
                )
            self._meta[shard] = rows
        return self._meta[shard]

    def tokens(self, i: int, stream: str) -> np.ndarray:
        if stream not in self.streams:
            raise StoreError(f"store {self.root} has no '{stream}' stream (it has {self.streams})")
        s, j = self._locate(i)
        return self._bin(s, stream)[j]

    def meta(self, i: int) -> dict[str, Any]:
        s, j = self._locate(i)
        return self._meta_shard(s)[j]

    def __getitem__(self, i: int) -> Row:
        s, j = self._locate(i)
        return Row(
            meta=self._meta_shard(s)[j],
            tokens={st: self._bin(s, st)[j] for st in self.streams},
        )

    def __iter__(self) -> Iterator[Row]:
        for i in range(len(self)):
            yield self[i]

    def iter_meta(self) -> Iterator[dict[str, Any]]:
        for s in range(len(self.shards)):
            yield from self._meta_shard(s)

    def lengths(self, stream: str) -> np.ndarray:
        """Token count of every row for one stream, read from the `.idx` files alone."""
        if stream not in self.streams:
            raise StoreError(f"store {self.root} has no '{stream}' stream (it has {self.streams})")
        parts = [self._index_file(s, stream).sizes for s in range(len(self.shards))]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
