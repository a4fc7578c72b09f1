"""MMIDIDX indexed token files (`.bin` + `.idx`), the layout of fairseq's and
Megatron's memory-mapped indexed datasets, so their readers can open our shards.

`.idx` layout (little endian)::

    9 bytes   magic  b"MMIDIDX\\x00\\x00"
    uint64    version (1)
    uint8     dtype code (fairseq/Megatron table: 1 uint8, 2 int8, 3 int16, 4 int32,
              5 int64, 6 float64, 7 float32, 8 uint16)
    uint64    number of sequences N
    uint64    number of document-index entries D
    int32[N]  sequence sizes (tokens)
    int64[N]  byte offset of each sequence in `.bin`
    int64[D]  document index (sequence numbers where documents start; we write 0..N)

`.bin` is the concatenation of all sequences in that dtype. Vocabularies of at
most 256 ids (speech units: 200 in the paper) are stored as uint8, which halves
the dominant stream; below 65,500 ids uint16 (as fairseq's
`best_fitting_int_dtype` does); larger vocabularies use int32, the widest
integer code both readers know (the MMIDIDX code table has no uint32).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import numpy as np

from tmt.store import StoreError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, N, D
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    6: np.dtype(np.float64),
    7: np.dtype(np.float32),
    8: np.dtype(np.uint16),
}
CODE_OF: dict[np.dtype, int] = {v: k for k, v in DTYPE_CODES.items()}
UINT16_LIMIT = 65500


def best_dtype(vocab_size: int) -> np.dtype:
    """uint8 up to 256 ids, uint16 under 65,500 ids, else int32."""
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    if vocab_size < UINT16_LIMIT:
        return np.dtype(np.uint16)
    if vocab_size <= np.iinfo(np.int32).max:
        return np.dtype(np.int32)
    raise StoreError(f"vocabulary of {vocab_size} ids does not fit an MMIDIDX integer dtype")


def encode_index(sizes: np.ndarray, dtype: np.dtype, doc_idx: np.ndarray | None = None) -> bytes:
    """Bytes of a `.idx` file for sequences of the given sizes."""
    sizes = np.asarray(sizes, dtype=np.int32)
    n = len(sizes)
    pointers = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(sizes[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    if doc_idx is None:
        doc_idx = np.arange(n + 1, dtype=np.int64)
    doc_idx = np.asarray(doc_idx, dtype=np.int64)
    header = HEADER.pack(MAGIC, VERSION, CODE_OF[np.dtype(dtype)], n, len(doc_idx))
    return header + sizes.tobytes() + pointers.tobytes() + doc_idx.tobytes()


class IndexFile:
    """A parsed `.idx`: dtype, sizes, pointers, document index. Validates everything it reads."""

    def __init__(self, path: str | Path, data: bytes | None = None) -> None:
        self.path = Path(path)
        if data is None:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                raise StoreError(f"index file missing: {self.path}") from None
        self._parse(data)

    def _fail(self, why: str) -> StoreError:
        return StoreError(f"{self.path}: not a valid MMIDIDX index ({why}); re-create the store")

    def _parse(self, data: bytes) -> None:
        if len(data) < HEADER.size:
            raise self._fail(f"{len(data)} bytes, shorter than the {HEADER.size}-byte header")
        magic, version, code, n, d = HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise self._fail(f"bad magic {magic!r}")
        if version != VERSION:
            raise self._fail(f"unsupported version {version}")
        if code not in DTYPE_CODES:
            raise self._fail(f"unknown dtype code {code}")
        expected = HEADER.size + n * 4 + n * 8 + d * 8
        if expected != len(data):
            raise self._fail(f"{len(data)} bytes but the header promises {expected} (N={n}, D={d}); truncated?")
        self.dtype = DTYPE_CODES[code]
        off = HEADER.size
        self.sizes = np.frombuffer(data, dtype=np.int32, count=n, offset=off)
        off += n * 4
        self.pointers = np.frombuffer(data, dtype=np.int64, count=n, offset=off)
        off += n * 8
        self.doc_idx = np.frombuffer(data, dtype=np.int64, count=d, offset=off)
        if n and int(self.sizes.min()) < 0:
            raise self._fail("negative sequence size")
        isz = self.dtype.itemsize
        if n:
            if int(self.pointers[0]) != 0:
                raise self._fail("first pointer is not 0")
            steps = np.diff(self.pointers)
            if not np.array_equal(steps, self.sizes[:-1].astype(np.int64) * isz):
                raise self._fail("pointers do not follow the sizes")
        self.total_tokens = int(self.sizes.sum(dtype=np.int64))

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def bin_bytes(self) -> int:
        return self.total_tokens * self.dtype.itemsize


class IndexedBin:
    """Random access to sequences of one `.bin`/`.idx` pair (memory-mapped, read lazily)."""

    def __init__(self, prefix: str | Path) -> None:
        prefix = Path(prefix)
        self.bin_path = prefix.with_name(prefix.name + ".bin")
        self.index = IndexFile(prefix.with_name(prefix.name + ".idx"))
        if not self.bin_path.is_file():
            raise StoreError(f"data file missing: {self.bin_path}")
        actual = self.bin_path.stat().st_size
        if actual != self.index.bin_bytes:
            raise StoreError(
                f"{self.bin_path}: {actual} bytes but its index describes {self.index.bin_bytes}; "
                "the file is truncated or does not belong to this index"
            )
        self._mmap: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:
        if self._mmap is None:
            if self.index.total_tokens == 0:
                self._mmap = np.zeros(0, dtype=self.index.dtype)
            else:
                self._mmap = np.memmap(self.bin_path, dtype=self.index.dtype, mode="r")
        return self._mmap

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.index.pointers[i]) // self.index.dtype.itemsize
        return np.asarray(self.data[start : start + int(self.index.sizes[i])])


class IndexedWriter:
    """Streams sequences to `<prefix>.bin.tmp`, hashing as it goes; `finish()` writes
    `<prefix>.idx.tmp`. The caller renames both (see TokenStoreWriter)."""

    def __init__(self, prefix: Path, dtype: np.dtype) -> None:
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self.tmp_bin = prefix.with_name(prefix.name + ".bin.tmp")
        self.tmp_idx = prefix.with_name(prefix.name + ".idx.tmp")
        self._f: IO[bytes] = open(self.tmp_bin, "wb")
        self._hash = hashlib.sha256()
        self.sizes: list[int] = []
        self._lo = 0 if self.dtype.kind == "u" else int(np.iinfo(self.dtype).min)
        self._hi = int(np.iinfo(self.dtype).max)
        self.bin_bytes = 0

    def add(self, seq: np.ndarray | Iterable[int]) -> None:
        a = np.asarray(seq)
        if a.ndim != 1:
            raise StoreError(f"token sequences must be 1-D, got shape {a.shape}")
        if a.size:
            if a.dtype.kind not in "iu":
                raise StoreError(f"token sequences must hold integers, got {a.dtype}")
            lo, hi = int(a.min()), int(a.max())
            if lo < self._lo or hi > self._hi:
                raise StoreError(f"token id {lo if lo < self._lo else hi} does not fit {self.dtype}")
        b = a.astype(self.dtype, copy=False).tobytes()
        self._f.write(b)
        self._hash.update(b)
        self.bin_bytes += len(b)
        self.sizes.append(int(a.size))

    def finish(self) -> tuple[str, str]:
        """Close the `.bin.tmp`, write the `.idx.tmp`; return their sha256."""
        import os

        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        idx = encode_index(np.asarray(self.sizes, dtype=np.int32), self.dtype)
        with open(self.tmp_idx, "wb") as f:
            f.write(idx)
            f.flush()
            os.fsync(f.fileno())
        return self._hash.hexdigest(), hashlib.sha256(idx).hexdigest()

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        for p in (self.tmp_bin, self.tmp_idx):
            p.unlink(missing_ok=True)
