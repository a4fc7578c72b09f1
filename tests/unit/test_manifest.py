from __future__ import annotations

import gzip
import json

import pytest

from tmt.store import StoreError
from tmt.store.manifest import media_path, read_manifest, split_rows, validate_rows, write_manifest


def sample_rows(tmp_path, n=6):
    (tmp_path / "img").mkdir(exist_ok=True)
    out = []
    for i in range(n):
        p = tmp_path / "img" / f"{i // 2}.png"
        p.write_bytes(b"png")
        out.append({"id": f"u{i}", "group": f"im{i // 2}", "split": "train", "image": f"img/{i // 2}.png",
                    "speech": None, "text": f"caption {i}"})
    return out


def test_write_read_round_trip_and_determinism(tmp_path):
    rows = sample_rows(tmp_path)
    write_manifest(tmp_path / "m.jsonl.gz", rows)
    first = (tmp_path / "m.jsonl.gz").read_bytes()
    write_manifest(tmp_path / "m.jsonl.gz", rows)
    assert (tmp_path / "m.jsonl.gz").read_bytes() == first
    assert read_manifest(tmp_path / "m.jsonl.gz") == rows
    assert media_path(tmp_path / "m.jsonl.gz", "img/0.png") == (tmp_path / "img" / "0.png").resolve()


def test_validate_rows_counts_and_errors(tmp_path):
    rows = sample_rows(tmp_path)
    info = validate_rows(rows, manifest=tmp_path / "m.jsonl.gz")
    assert info["splits"]["train"] == {"rows": 6, "text": 6, "speech": 0, "image": 6}
    with pytest.raises(StoreError, match="duplicate id 'u0'"):
        validate_rows([*rows, rows[0]])
    with pytest.raises(StoreError, match="no image, speech or text"):
        validate_rows([{"id": "a", "group": "g", "split": "s"}])
    (tmp_path / "img" / "1.png").unlink()
    with pytest.raises(StoreError, match="2 media file"):
        validate_rows(rows, manifest=tmp_path / "m.jsonl.gz")


def test_bad_json_line_names_line(tmp_path):
    p = tmp_path / "bad.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(json.dumps({"id": "a"}) + "\n{oops\n")
    with pytest.raises(StoreError, match=r"bad.jsonl.gz:2: not valid JSON"):
        read_manifest(p)


def test_split_keeps_groups_together(tmp_path):
    rows = sample_rows(tmp_path, 40)
    parts = split_rows(rows, {"train": 0.8, "test": 0.2}, seed=1)
    assert sum(len(v) for v in parts.values()) == 40
    g_train = {r["group"] for r in parts["train"]}
    g_test = {r["group"] for r in parts["test"]}
    assert not g_train & g_test
    assert len(g_test) == 4
    assert all(r["split"] == "test" for r in parts["test"])
