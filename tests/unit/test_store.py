from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmt.core.shards import ShardSpecError, parse_shard_spec, part_dir, shard_range
from tmt.store import StoreError
from tmt.store.ops import combine_stores, merge_parts, store_stats, validate_store
from tmt.store.token_store import (
    DURATION_VOCAB,
    TokenStore,
    TokenStoreWriter,
)

STREAMS = {"text": 100, "speech": 50, "image": 64, "durations": DURATION_VOCAB}


def rows(n, seed=0, prefix="r"):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        toks = {}
        if i % 3 != 1:
            toks["text"] = rng.integers(0, 100, rng.integers(1, 9))
        if i % 3 != 2:
            sp = rng.integers(0, 50, rng.integers(1, 30))
            toks["speech"] = sp
            toks["durations"] = rng.integers(1, 6, len(sp))
        if i % 2 == 0:
            toks["image"] = rng.integers(0, 64, 8)
        out.append(({"id": f"{prefix}{i}", "group": f"g{i // 2}", "split": "train"}, toks))
    return out


def write_store(path, data, shard_rows=4, **kw):
    with TokenStoreWriter(path, streams=STREAMS, fingerprints={"text": "t" * 64}, shard_rows=shard_rows, **kw) as w:
        for meta, toks in data:
            w.add(meta, toks)
    return path


def test_round_trip_with_absent_modalities(tmp_path):
    data = rows(11)
    write_store(tmp_path / "s", data)
    s = TokenStore(tmp_path / "s")
    assert len(s) == 11 and len(s.shards) == 3
    for i, (meta, toks) in enumerate(data):
        row = s[i]
        assert row.id == meta["id"] and row.meta["group"] == meta["group"]
        for stream in STREAMS:
            want = toks.get(stream, np.zeros(0))
            np.testing.assert_array_equal(row.tokens[stream], want)
        assert row.meta["modalities"] == [m for m in ("text", "speech", "image") if m in toks]
    np.testing.assert_array_equal(s.lengths("speech"), [len(t.get("speech", [])) for _, t in data])
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    assert index["complete"] and index["rows"] == 11
    assert index["tokens"]["image"] == 8 * 6
    assert all(len(f["sha256"]) == 64 for sh in index["shards"] for f in sh["files"].values())
    validate_store(tmp_path / "s")


def test_lengths_scan_never_reads_bin(tmp_path):
    write_store(tmp_path / "s", rows(9))
    for p in (tmp_path / "s").glob("*.bin"):
        p.unlink()
    s = TokenStore(tmp_path / "s")
    assert s.lengths("text").shape == (9,)
    with pytest.raises(StoreError, match="data file missing"):
        s.tokens(0, "text")


def test_writer_validates_rows(tmp_path):
    with TokenStoreWriter(tmp_path / "s", streams=STREAMS) as w:
        with pytest.raises(StoreError, match="outside"):
            w.add({"id": "a"}, {"text": [100]})
        with pytest.raises(StoreError, match="aligned"):
            w.add({"id": "b"}, {"speech": [1, 2], "durations": [1]})
        with pytest.raises(StoreError, match="not declared"):
            w.add({"id": "c"}, {"video": [1]})
        w.add({"id": "d"}, {"text": [1]})
        with pytest.raises(StoreError, match="duplicate row id"):
            w.add({"id": "d"}, {"text": [1]})
    assert len(TokenStore(tmp_path / "s")) == 1


def test_existing_store_needs_resume_or_overwrite(tmp_path):
    write_store(tmp_path / "s", rows(3))
    with pytest.raises(StoreError, match="--resume"):
        TokenStoreWriter(tmp_path / "s", streams=STREAMS)
    write_store(tmp_path / "s", rows(2, prefix="z"), overwrite=True)
    assert [m["id"] for m in TokenStore(tmp_path / "s").iter_meta()] == ["z0", "z1"]


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate_bin", "truncated"),
        ("flip_bin", "sha256"),
        ("drop_meta", "missing"),
        ("bad_index", "not valid JSON"),
        ("idx_garbage", "sha256|not a valid MMIDIDX"),
    ],
)
def test_corruption_is_detected(tmp_path, damage, message):
    root = write_store(tmp_path / "s", rows(8))
    if damage == "truncate_bin":
        p = root / "speech.00000.bin"
        p.write_bytes(p.read_bytes()[:-4])
    elif damage == "flip_bin":
        p = root / "text.00001.bin"
        b = bytearray(p.read_bytes())
        b[0] ^= 0xFF
        p.write_bytes(bytes(b))
    elif damage == "drop_meta":
        (root / "meta.00001.jsonl.gz").unlink()
    elif damage == "bad_index":
        (root / "index.json").write_text("{not json")
    elif damage == "idx_garbage":
        p = root / "image.00000.idx"
        b = bytearray(p.read_bytes())
        b[20] ^= 0x55
        p.write_bytes(bytes(b))
    with pytest.raises(StoreError, match=message):
        validate_store(root)


def test_validate_catches_meta_idx_disagreement_without_checksums(tmp_path):
    root = write_store(tmp_path / "s", rows(4))
    import gzip

    p = root / "meta.00000.jsonl.gz"
    lines = gzip.open(p, "rt").read().splitlines()
    m = json.loads(lines[0])
    m["lengths"]["text"] = 999
    lines[0] = json.dumps(m)
    with gzip.open(p, "wt") as f:
        f.write("\n".join(lines) + "\n")
    index = json.loads((root / "index.json").read_text())
    index["shards"][0]["files"]["meta.00000.jsonl.gz"]["bytes"] = p.stat().st_size
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(StoreError, match="length 999"):
        validate_store(root, checksums=False)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np
    from tmt.store.token_store import TokenStoreWriter
    w = TokenStoreWriter(sys.argv[1], streams={"text": 100, "speech": 50}, shard_rows=5, source={"m": "x"})
    for i in range(8):
        w.add({"id": f"r{i}"}, {"text": np.arange(i % 7 + 1), "speech": np.arange(3)})
    print("ready", flush=True)   # shard 0 is flushed, shard 1 is half written
    time.sleep(60)
    """
)


def test_writer_killed_mid_shard_leaves_previous_state(tmp_path):
    root = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    s = TokenStore(root)
    assert len(s) == 5 and not s.complete
    assert [m["id"] for m in s.iter_meta()] == [f"r{i}" for i in range(5)]
    validate_store(root)
    assert any(p.name.endswith(".tmp") for p in root.iterdir())  # the half shard never became visible
    # resume: the orphaned partial shard is cleaned up and writing continues
    with TokenStoreWriter(root, streams={"text": 100, "speech": 50}, shard_rows=5, source={"m": "x"}, resume=True) as w:
        assert w.rows_done == 5
        for i in range(5, 8):
            w.add({"id": f"r{i}"}, {"text": np.arange(i % 7 + 1), "speech": np.arange(3)})
    s = TokenStore(root)
    assert len(s) == 8 and s.complete
    assert not any(p.name.endswith(".tmp") for p in root.iterdir())
    np.testing.assert_array_equal(s.tokens(7, "text"), np.arange(1))
    validate_store(root)


def test_resume_refuses_other_source(tmp_path):
    write_store(tmp_path / "s", rows(3), source={"manifest": "a"})
    with pytest.raises(StoreError, match="different source"):
        TokenStoreWriter(tmp_path / "s", streams=STREAMS, source={"manifest": "b"}, resume=True)


def test_sharded_workers_merge_in_order(tmp_path):
    data = rows(13)
    store = tmp_path / "train"
    n = 3
    for k in range(n):
        part = [data[i] for i in shard_range(len(data), k, n)]
        write_store(part_dir(store, k, n), part, source={"shard": f"{k}/{n}"})
    index = merge_parts(store, n)
    assert index["rows"] == 13
    s = TokenStore(store)
    assert [m["id"] for m in s.iter_meta()] == [m["id"] for m, _ in data]
    np.testing.assert_array_equal(s.tokens(12, "speech"), data[12][1].get("speech", []))
    validate_store(store)
    assert not (tmp_path / "train.parts").exists()


def test_merge_refuses_missing_part(tmp_path):
    store = tmp_path / "train"
    write_store(part_dir(store, 0, 2), rows(2))
    with pytest.raises(StoreError, match="1 of 2 parts are missing"):
        merge_parts(store, 2)


def test_combine_refuses_duplicates_and_fingerprint_clash(tmp_path):
    a = write_store(tmp_path / "a", rows(3))
    b = write_store(tmp_path / "b", rows(3))
    with pytest.raises(StoreError, match="more than one input"):
        combine_stores([a, b], tmp_path / "c")
    with TokenStoreWriter(tmp_path / "d", streams=STREAMS, fingerprints={"text": "u" * 64}) as w:
        w.add({"id": "x"}, {"text": [1]})
    with pytest.raises(StoreError, match="fingerprint"):
        combine_stores([a, tmp_path / "d"], tmp_path / "e")
    c = write_store(tmp_path / "c2", rows(2, prefix="q"))
    combine_stores([a, c], tmp_path / "ac")
    assert len(TokenStore(tmp_path / "ac")) == 5


def test_stats_counts_synthetic(tmp_path):
    with TokenStoreWriter(tmp_path / "s", streams=STREAMS) as w:
        w.add({"id": "a"}, {"text": [1, 2]})
        w.add({"id": "b", "synthetic": True, "direction": "image->text"}, {"text": [3]})
    st_ = store_stats(tmp_path / "s")
    assert st_["synthetic_rows"] == 1 and st_["real_rows"] == 1
    assert st_["synthetic_by_direction"] == {"image->text": 1}
    assert st_["streams"]["text"]["tokens"] == 3


def test_shard_spec_parsing():
    assert parse_shard_spec("2/4") == (2, 4)
    assert parse_shard_spec(None) == (0, 1)
    for bad in ("4/4", "a/b", "1", "-1/2"):
        with pytest.raises(ShardSpecError):
            parse_shard_spec(bad)
    assert sum(len(shard_range(10, k, 3)) for k in range(3)) == 10


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["index.json", "meta.00000.jsonl.gz", "text.00000.idx", "text.00000.bin"]), st.binary(max_size=300))
def test_random_bytes_in_any_file_give_store_errors(tmp_path_factory, name, junk):
    root = write_store(tmp_path_factory.mktemp("fz") / "s", rows(4))
    (root / name).write_bytes(junk)
    try:
        validate_store(root)
    except StoreError:
        return
    raise AssertionError("corrupted store validated")
