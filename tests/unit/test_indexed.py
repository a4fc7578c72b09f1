"""The .idx layout is checked with `struct`, independently of the writer."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmt.store import StoreError
from tmt.store.indexed import IndexedBin, IndexedWriter, IndexFile, best_dtype, encode_index


def parse_idx(data: bytes):
    """An independent MMIDIDX reader following fairseq's documented layout."""
    assert data[:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack("<Q", data[9:17])
    (code,) = struct.unpack("<B", data[17:18])
    (n,) = struct.unpack("<Q", data[18:26])
    (d,) = struct.unpack("<Q", data[26:34])
    off = 34
    sizes = list(struct.unpack(f"<{n}i", data[off : off + 4 * n]))
    off += 4 * n
    pointers = list(struct.unpack(f"<{n}q", data[off : off + 8 * n]))
    off += 8 * n
    doc = list(struct.unpack(f"<{d}q", data[off : off + 8 * d]))
    off += 8 * d
    assert off == len(data)
    return version, code, sizes, pointers, doc


def write(tmp_path, seqs, vocab=1000):
    w = IndexedWriter(tmp_path / "x", best_dtype(vocab))
    for s in seqs:
        w.add(np.asarray(s))
    w.finish()
    (tmp_path / "x.bin.tmp").rename(tmp_path / "x.bin")
    (tmp_path / "x.idx.tmp").rename(tmp_path / "x.idx")
    return tmp_path / "x"


def test_idx_bytes_follow_mmidx_layout(tmp_path):
    seqs = [[1, 2, 3], [], [7], [65000, 4, 5, 6]]
    prefix = write(tmp_path, seqs, vocab=65499)
    version, code, sizes, pointers, doc = parse_idx((tmp_path / "x.idx").read_bytes())
    assert version == 1
    assert code == 8  # uint16
    assert sizes == [3, 0, 1, 4]
    assert pointers == [0, 6, 6, 8]  # byte offsets, 2 bytes per token
    assert doc == [0, 1, 2, 3, 4]
    raw = np.frombuffer((tmp_path / "x.bin").read_bytes(), dtype="<u2")
    assert raw.tolist() == [1, 2, 3, 7, 65000, 4, 5, 6]
    b = IndexedBin(prefix)
    assert [b[i].tolist() for i in range(4)] == seqs


def test_large_vocab_uses_int32(tmp_path):
    assert best_dtype(200) == np.uint8
    assert best_dtype(257) == np.uint16
    assert best_dtype(65499) == np.uint16
    assert best_dtype(65500) == np.int32
    write(tmp_path, [[70000, 1]], vocab=100_000)
    _, code, sizes, pointers, _ = parse_idx((tmp_path / "x.idx").read_bytes())
    assert code == 4 and sizes == [2] and pointers == [0]


def test_writer_refuses_ids_that_do_not_fit(tmp_path):
    w = IndexedWriter(tmp_path / "y", best_dtype(100))
    with pytest.raises(StoreError, match="does not fit"):
        w.add(np.array([70000]))
    w.abort()
    assert not list(tmp_path.iterdir())


def test_truncated_index_and_bin_give_clear_errors(tmp_path):
    prefix = write(tmp_path, [[1, 2, 3], [4, 5]])
    idx = tmp_path / "x.idx"
    idx.write_bytes(idx.read_bytes()[:-3])
    with pytest.raises(StoreError, match="truncated"):
        IndexFile(idx)
    write(tmp_path, [[1, 2, 3], [4, 5]])
    binf = tmp_path / "x.bin"
    binf.write_bytes(binf.read_bytes()[:-2])
    with pytest.raises(StoreError, match="truncated or does not belong"):
        IndexedBin(prefix)


def test_bad_magic(tmp_path):
    data = bytearray(encode_index(np.array([1, 2], dtype=np.int32), np.dtype(np.uint16)))
    data[0:1] = b"X"
    with pytest.raises(StoreError, match="bad magic"):
        IndexFile(tmp_path / "z.idx", bytes(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(data):
    try:
        f = IndexFile("fuzz.idx", data)
    except StoreError:
        return
    # if it parsed, it must be self-consistent
    assert len(f.sizes) == len(f.pointers)
    assert f.total_tokens >= 0


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=200))
def test_mutated_valid_index_is_refused_or_consistent(junk, pos):
    good = encode_index(np.array([3, 0, 5, 2], dtype=np.int32), np.dtype(np.uint16))
    pos = min(pos, len(good))
    data = good[:pos] + junk + good[pos + len(junk) :]
    try:
        f = IndexFile("fuzz.idx", data)
    except StoreError:
        return
    steps = np.diff(f.pointers)
    assert np.array_equal(steps, f.sizes[:-1].astype(np.int64) * f.dtype.itemsize)
