"""Flickr8k + Flickr8kAudio preparer on a tiny tree in the official layout."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tmt.cli import cli as tmt_cli
from tmt.corpora.common import CorpusError
from tmt.corpora.flickr8k import prepare_flickr8k
from tmt.store.manifest import media_path, read_manifest, validate_rows
from tmt.testing.fixtures import make_flickr8k_tree


@pytest.fixture
def tree(tmp_path):
    return make_flickr8k_tree(tmp_path / "flickr8k", ("train", "train", "train", "val", "test"))


def test_rows_splits_and_paths(tree, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(tmt_cli, ["prepare", "flickr8k", "--root", str(tree), "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["rows"] == {"train": 15, "valid": 5, "test": 5}
    karpathy = json.loads((tree / "dataset_flickr8k.json").read_text())["images"]
    tokens = dict(line.split("\t") for line in (tree / "Flickr8k.token.txt").read_text().splitlines())
    wav2capt = {tuple(line.split()[1:]): line.split()[0] for line in (tree / "flickr_audio" / "wav2capt.txt").read_text().splitlines()}
    for split, want in (("train", "train"), ("valid", "val"), ("test", "test")):
        path = out / f"{split}.jsonl.gz"
        rows = read_manifest(path)
        validate_rows(rows, manifest=path)
        names = {im["filename"] for im in karpathy if im["split"] == want}
        assert {r["group"] + ".jpg" for r in rows} == names
        for r in rows:
            name = r["group"] + ".jpg"
            k = r["caption_index"]
            assert r["id"] == f"{r['group']}_{k}" and r["split"] == split
            assert r["text"] == tokens[f"{name}#{k}"].strip()
            assert media_path(path, r["image"]).resolve() == (tree / "Flicker8k_Dataset" / name).resolve()
            assert media_path(path, r["speech"]).resolve() == (tree / "flickr_audio" / "wavs" / wav2capt[(name, f"#{k}")]).resolve()
            assert not r["image"].startswith("/") and r["speaker"]
    res = CliRunner().invoke(tmt_cli, ["manifest", "validate", str(out / "train.jsonl.gz")])
    assert res.exit_code == 0, res.output


def test_missing_files_are_summarised_then_skipped(tree, tmp_path):
    # two recordings of the third image and the first image itself
    for w in ("19214_0000.wav", "19214_0003.wav"):
        (tree / "flickr_audio" / "wavs" / w).unlink()
    first_image = sorted((tree / "Flicker8k_Dataset").iterdir())[0]
    first_image.unlink()
    res = CliRunner().invoke(tmt_cli, ["prepare", "flickr8k", "--root", str(tree), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "3 media file(s) missing" in res.output and "19214_0000.wav" in res.output and "--allow-missing" in res.output
    assert not (tmp_path / "o" / "train.jsonl.gz").exists()
    s = prepare_flickr8k(tree, tmp_path / "o", allow_missing=True)
    assert sum(s["rows"].values()) == 25 - 5 - 2
    rows = read_manifest(tmp_path / "o" / "train.jsonl.gz")
    assert first_image.stem not in {r["group"] for r in rows}


def test_bad_or_absent_metadata_is_one_clear_error(tree, tmp_path):
    (tree / "dataset_flickr8k.json").unlink()
    with pytest.raises(CorpusError, match=r"dataset_flickr8k\.json"):
        prepare_flickr8k(tree, tmp_path / "o")
    make_flickr8k_tree(tree)
    (tree / "Flickr8k.token.txt").write_text("no tab here\n")
    with pytest.raises(CorpusError, match=r"Flickr8k.token.txt:1: expected"):
        prepare_flickr8k(tree, tmp_path / "o")
    with pytest.raises(CorpusError, match="root folder not found"):
        prepare_flickr8k(tmp_path / "nowhere", tmp_path / "o")


def test_captions_without_recording_keep_text_and_image(tree, tmp_path):
    lines = (tree / "flickr_audio" / "wav2capt.txt").read_text().splitlines()
    (tree / "flickr_audio" / "wav2capt.txt").write_text("\n".join(lines[1:]) + "\n")
    s = prepare_flickr8k(tree, tmp_path / "o", absolute_paths=True)
    assert s["captions_without_speech"] == 1 and sum(s["rows"].values()) == 25
    rows = [r for sp in ("train", "valid", "test") for r in read_manifest(tmp_path / "o" / f"{sp}.jsonl.gz")]
    assert sum(r["speech"] is None for r in rows) == 1
    assert all(r["image"].startswith("/") for r in rows)
