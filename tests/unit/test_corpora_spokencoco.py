"""COCO + SpokenCOCO preparer on a tiny tree in the official layout."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tmt.cli import cli as tmt_cli
from tmt.corpora.common import CorpusError
from tmt.corpora.spokencoco import prepare_spokencoco
from tmt.store.manifest import media_path, read_manifest, validate_rows
from tmt.testing.fixtures import make_spokencoco_tree

SPLITS = ("train", "restval", "train", "val", "test", "val")


@pytest.fixture
def tree(tmp_path):
    return make_spokencoco_tree(tmp_path / "data", SPLITS)


def test_rows_splits_and_paths(tree, tmp_path):
    coco, spoken = tree
    out = tmp_path / "out"
    res = CliRunner().invoke(
        tmt_cli, ["prepare", "spokencoco", "--coco-dir", str(coco), "--spokencoco-dir", str(spoken), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"] == {"train": 15, "valid": 10, "test": 5}
    karpathy = {im["cocoid"]: im for im in json.loads((coco / "dataset_coco.json").read_text())["images"]}
    caps = {}
    for part in ("train", "val"):
        for e in json.loads((spoken / f"SpokenCOCO_{part}.json").read_text())["data"]:
            caps[e["image"]] = e["captions"]
    want = {"train": {"train", "restval"}, "valid": {"val"}, "test": {"test"}}
    for split in ("train", "valid", "test"):
        path = out / f"{split}.jsonl.gz"
        rows = read_manifest(path)
        validate_rows(rows, manifest=path)
        for r in rows:
            im = karpathy[int(r["group"])]
            assert im["split"] in want[split]
            key = f"{im['filepath']}/{im['filename']}"
            cap = caps[key][r["caption_index"]]
            assert r["text"] == cap["text"] and r["speaker"] == cap["speaker"]
            assert media_path(path, r["image"]).resolve() == (coco / key).resolve()
            assert media_path(path, r["speech"]).resolve() == (spoken / cap["wav"]).resolve()
            assert r["id"] == f"{r['group']}_{r['caption_index']}"


def test_restval_can_be_left_out(tree, tmp_path):
    coco, spoken = tree
    s = prepare_spokencoco(coco, spoken, tmp_path / "o", restval=False)
    assert s["rows"]["train"] == 10 and s["not_in_split"] == 1


def test_missing_files_are_summarised_then_skipped(tree, tmp_path):
    coco, spoken = tree
    wavs = sorted((spoken / "wavs").rglob("*.wav"))
    for w in wavs[:4]:
        w.unlink()
    with pytest.raises(CorpusError, match=r"4 media file\(s\) missing, e\.g\. .*wav.*--allow-missing"):
        prepare_spokencoco(coco, spoken, tmp_path / "o")
    res = CliRunner().invoke(
        tmt_cli,
        ["prepare", "spokencoco", "--coco-dir", str(coco), "--spokencoco-dir", str(spoken), "--out", str(tmp_path / "o"), "--allow-missing"],
    )
    assert res.exit_code == 0, res.output
    assert sum(json.loads(res.stdout)["rows"].values()) == 30 - 4


def test_bad_index_is_one_clear_error(tree, tmp_path):
    coco, spoken = tree
    (spoken / "SpokenCOCO_val.json").write_text(json.dumps({"items": []}))
    res = CliRunner().invoke(
        tmt_cli, ["prepare", "spokencoco", "--coco-dir", str(coco), "--spokencoco-dir", str(spoken), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 1 and "SpokenCOCO_val.json" in res.output and "Traceback" not in res.output
    (spoken / "SpokenCOCO_val.json").unlink()
    with pytest.raises(CorpusError, match=r"SpokenCOCO_val\.json not found"):
        prepare_spokencoco(coco, spoken, tmp_path / "o")
