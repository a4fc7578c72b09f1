"""The format schemas (tmt/store/schemas, copied to data_manifests/) and the checks built on them."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tmt.cli import cli
from tmt.store import StoreError
from tmt.store.manifest import validate_manifest, validate_rows, write_manifest
from tmt.store.ops import validate_store
from tmt.store.schema import KINDS, SCHEMA_DIR, check, errors, load_schema, schema_path
from tmt.store.token_store import DURATION_VOCAB, TokenStoreWriter

REPO = Path(__file__).resolve().parents[2]

GOOD_ROW = {
    "id": "scene_000007_0", "group": "scene_000007", "split": "train", "image": "images/scene_000007.png",
    "speech": None, "text": "a red circle left of a blue square", "caption_index": 0, "scene": {"objects": []},
}


def _write_lines(path: Path, rows: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    with TokenStoreWriter(root, streams={"text": 30, "speech": 20, "durations": DURATION_VOCAB},
                          fingerprints={"text": "a" * 64, "speech": "b" * 64}, shard_rows=2,
                          source={"manifest": "m.jsonl.gz"}) as w:
        for i in range(3):
            w.add({"id": f"u{i}", "group": "g", "split": "train", "source": "train", "text": "hi"},
                  {"text": np.arange(i + 1), "speech": np.arange(3), "durations": np.ones(3, dtype=int)})
    return root


def test_package_schemas_are_the_data_manifests_copies():
    for kind in KINDS:
        pkg = schema_path(kind)
        top = REPO / "data_manifests" / pkg.name
        assert pkg.parent == SCHEMA_DIR and top.is_file(), top
        assert top.read_bytes() == pkg.read_bytes(), f"{top} differs from {pkg}: copy the package file over it"
        schema = load_schema(kind)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["additionalProperties"] is True


def test_schemas_are_valid_draft_2020_12():
    from jsonschema import Draft202012Validator

    for kind in KINDS:
        Draft202012Validator.check_schema(load_schema(kind))


def test_readme_names_every_schema():
    readme = (REPO / "data_manifests" / "README.md").read_text()
    for kind in KINDS:
        assert f"{kind}.schema.json" in readme


def test_valid_row_index_and_meta_pass(store, tmp_path):
    check(GOOD_ROW, "manifest_row", "row")
    check(GOOD_ROW | {"extra_field": [1, 2], "speaker": "s1"}, "manifest_row", "row")  # new fields allowed
    index = json.loads((store / "index.json").read_text())
    assert errors(index, "store_index") == []
    with gzip.open(store / "meta.00000.jsonl.gz", "rt") as f:
        metas = [json.loads(line) for line in f]
    assert metas and all(errors(m, "store_meta") == [] for m in metas)
    assert validate_store(store)["rows"] == 3
    m = write_manifest(tmp_path / "ok.jsonl.gz", [GOOD_ROW, GOOD_ROW | {"id": "x", "text": None, "speech": "a.wav"}])
    assert m == 2
    assert validate_manifest(tmp_path / "ok.jsonl.gz", check_files=False)["rows"] == 2


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"id": None}, "id", "missing (required)"),
        ({"id": 7}, "id", "must be string, got 7"),
        ({"id": ""}, "id", "non-empty string"),
        ({"group": ["g"]}, "group", "must be string"),
        ({"split": "tr ain"}, "split", "must match"),
        ({"split": 3}, "split", "must be string"),
        ({"text": 5}, "text", "must be string or null, got 5"),
        ({"image": {"path": "x.png"}}, "image", "must be string or null"),
        ({"synthetic": "yes"}, "synthetic", "must be boolean"),
        ({"caption_index": -1}, "caption_index", "must be >= 0"),
    ],
)
def test_bad_row_names_line_and_field(tmp_path, change, field, expected):
    row = {k: v for k, v in (GOOD_ROW | change).items() if v is not None or k != "id"}
    path = _write_lines(tmp_path / "m.jsonl.gz", [GOOD_ROW | {"id": "first"}, row])
    with pytest.raises(StoreError) as e:
        validate_manifest(path, check_files=False)
    msg = str(e.value)
    assert msg.startswith(f"{path}:2: field '{field}'"), msg
    assert expected in msg and "manifest_row.schema.json" in msg


def test_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(GOOD_ROW) + "\n\n" + json.dumps(GOOD_ROW | {"id": "b", "split": "a/b"}) + "\n")
    with pytest.raises(StoreError, match=r"m.jsonl:3: field 'split' must match"):
        validate_manifest(path, check_files=False)


def test_checks_beyond_the_schema_are_kept(tmp_path):
    with pytest.raises(StoreError, match=r"row 2: duplicate id"):
        validate_rows([GOOD_ROW, GOOD_ROW], check_files=False)
    with pytest.raises(StoreError, match="no image, speech or text"):
        validate_rows([GOOD_ROW | {"image": None, "text": ""}], check_files=False)
    with pytest.raises(StoreError, match="text must not be blank"):
        validate_rows([GOOD_ROW | {"text": "   "}], check_files=False)


def test_unknown_modality_in_meta_and_index():
    meta = {"id": "a", "modalities": ["text", "video"], "lengths": {"text": 2}, "synthetic": False}
    with pytest.raises(StoreError, match=r"meta.00000.jsonl.gz:4: field 'modalities\[1\]' must be one of text, speech, image"):
        check(meta, "store_meta", "meta.00000.jsonl.gz:4")
    assert errors(meta | {"modalities": ["text"], "lengths": {"video": 2}}, "store_meta") == [
        "field 'lengths' has key 'video', expected one of text, speech, image"
    ]
    assert any("'direction' must match" in e for e in errors(meta | {"modalities": [], "direction": "a->b"}, "store_meta"))
    assert errors({"id": "a", "modalities": []}, "store_meta") == [
        "field 'lengths' is missing (required)", "field 'synthetic' is missing (required)"
    ]


def test_bad_store_index_and_meta_fail_validation(store):
    index = json.loads((store / "index.json").read_text())
    bad = index | {"streams": ["text", "video"]}
    assert "field 'streams[1]' must be one of text, speech, image, durations" in errors(bad, "store_index")[0]
    bad = index | {"vocab_sizes": index["vocab_sizes"] | {"text": "30"}}
    assert errors(bad, "store_index") == ["field 'vocab_sizes.text' must be integer, got \"30\""]
    (store / "index.json").write_text(json.dumps(index | {"fingerprints": {"video": "x"}}))
    with pytest.raises(StoreError, match=r"index.json: field 'fingerprints' has key 'video'"):
        validate_store(store, checksums=False)
    (store / "index.json").write_text(json.dumps(index))
    with gzip.open(store / "meta.00001.jsonl.gz", "rt") as f:
        lines = [json.loads(x) for x in f]
    lines[0]["synthetic"] = "no"
    data = gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode())
    (store / "meta.00001.jsonl.gz").write_bytes(data)
    index["shards"][1]["files"]["meta.00001.jsonl.gz"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (store / "index.json").write_text(json.dumps(index))
    with pytest.raises(StoreError, match=r"meta.00001.jsonl.gz:1: field 'synthetic' must be boolean"):
        validate_store(store, checksums=False)


def test_cli_validate_bad_manifest_exits_with_one_line(tmp_path):
    path = _write_lines(tmp_path / "bad.jsonl.gz", [GOOD_ROW, GOOD_ROW | {"id": "b", "split": ""}])
    r = CliRunner().invoke(cli, ["manifest", "validate", str(path)])
    assert r.exit_code != 0
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1, r.output
    assert f"{path}:2: field 'split'" in lines[0] and "Traceback" not in r.output


def test_cli_validate_good_manifest(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "scene_000007.png").write_bytes(b"png")
    path = _write_lines(tmp_path / "ok.jsonl.gz", [GOOD_ROW])
    r = CliRunner().invoke(cli, ["manifest", "validate", str(path)])
    assert r.exit_code == 0 and f"ok: {path}: 1 rows" in r.output
