"""Scenes corpus backgrounds (random / constant / tones) and extra speech-less scenes (issue 18
sections 0 and 3): the old corpus byte for byte, no noise on plain backgrounds, tones said in
captions and read back from captions and pixels, train_extra rows counted without speech."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tmt import TmtError
from tmt.cli import cli
from tmt.corpora.scenes import (
    CONSTANT_GREY,
    TONES,
    caption_to_scene,
    compare_scenes,
    parse_scene,
    prepare_scenes,
    scene_matches,
)
from tmt.store.manifest import read_manifest

# sha256 over the files of `prepare_scenes(out, num_scenes=12, speech=False, max_objects=3)` written
# before the background option existed (images, decompressed manifests, README; not prepare.json)
RANDOM_CORPUS_SHA256 = "3a17f8fa06119eeff6f0894d80bca0bd426b5d02d92e82d6caa267e43118f487"


def _corpus_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "prepare.json":
            data = p.read_bytes()
            if p.suffix == ".gz":
                data = gzip.decompress(data)
            h.update(str(p.relative_to(root)).encode())
            h.update(data)
    return h.hexdigest()


def _rows(root: Path, *splits: str) -> list[dict]:
    return [r for s in splits for r in read_manifest(root / f"{s}.jsonl.gz")]


def test_random_background_is_the_old_corpus_byte_for_byte(tmp_path: Path) -> None:
    prepare_scenes(tmp_path / "c", num_scenes=12, speech=False, max_objects=3, background="random", progress=False)
    assert _corpus_hash(tmp_path / "c") == RANDOM_CORPUS_SHA256
    stamp = json.loads((tmp_path / "c" / "prepare.json").read_text())
    assert "background" not in stamp["settings"]["config"]  # the old stamp: a rerun counts as the same settings
    assert "extra_scenes" not in stamp["settings"]["config"]
    assert not (tmp_path / "c" / "train_extra.jsonl.gz").exists()


def test_constant_background_has_no_pixel_noise(tmp_path: Path) -> None:
    prepare_scenes(tmp_path / "c", num_scenes=12, speech=False, background="constant", progress=False)
    images = sorted((tmp_path / "c" / "images").glob("*.png"))
    assert len(images) == 12
    for p in images:
        a = np.asarray(Image.open(p).convert("RGB"))
        border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        assert (border == CONSTANT_GREY).all(), p  # objects keep clear of the border (MARGIN)
        assert (a == CONSTANT_GREY).all(axis=2).mean() > 0.5  # most pixels are exactly the grey
    rows = _rows(tmp_path / "c", "train", "test")
    assert all("background" not in r["scene"] for r in rows)
    assert all(scene_matches(parse_scene(Image.open(tmp_path / "c" / r["image"])), r["scene"]) for r in rows)
    assert "one grey (110)" in (tmp_path / "c" / "README.md").read_text()


def test_tones_are_said_in_captions_and_read_back(tmp_path: Path) -> None:
    prepare_scenes(tmp_path / "c", num_scenes=30, speech=False, background="tones", progress=False)
    rows = _rows(tmp_path / "c", "train", "valid", "test", "test_novel", "speech_text_only")
    tones = {r["scene"]["background"] for r in rows}
    assert tones == set(TONES)
    for r in rows:
        tone = r["scene"]["background"]
        said = caption_to_scene(r["text"])
        assert said is not None and scene_matches(said, r["scene"]), r["text"]
        if tone == "grey":
            assert "background" not in r["text"] and "background" not in said
        else:
            assert f"{tone} background" in r["text"] and said["background"] == tone
        if r["image"]:
            a = np.asarray(Image.open(tmp_path / "c" / r["image"]).convert("RGB"))
            assert (a[0] == TONES[tone]).all()  # no pixel noise
            parsed = parse_scene(a)
            assert parsed["background"] == tone and scene_matches(parsed, r["scene"])
    readme = (tmp_path / "c" / "README.md").read_text()
    assert "--background tones" in readme and "dark (70)" in readme


def test_a_wrong_tone_is_a_wrong_scene_and_an_unsaid_one_is_not_judged() -> None:
    ref = {"objects": [{"shape": "circle", "colour": "red", "size": "small"}], "position": "left",
           "relations": [], "background": "dark"}
    said = caption_to_scene("a small red circle on the left on a light background")
    assert said is not None and said["background"] == "light"
    cmp = compare_scenes(said, ref)
    assert cmp["shape"] and cmp["position"] and not cmp["background"] and not cmp["all"]
    unsaid = caption_to_scene("a small red circle on the left")
    assert unsaid is not None and "background" not in unsaid
    assert compare_scenes(unsaid, ref)["all"]
    # a parsed image that names no tone is wrong on it
    assert not compare_scenes({**unsaid, "background": None}, ref)["background"]
    # references without a tone (random / constant corpora) keep the old keys
    assert "background" not in compare_scenes(said, {k: v for k, v in ref.items() if k != "background"})


def test_extra_scenes_are_a_split_without_speech(tmp_path: Path) -> None:
    prepare_scenes(tmp_path / "base", num_scenes=20, speech=False, progress=False)
    prepare_scenes(tmp_path / "c", num_scenes=20, speech=False, extra_scenes=4, progress=False)
    for split in ("train", "valid", "test", "test_novel", "images_only", "speech_text_only"):
        assert _rows(tmp_path / "base", split) == _rows(tmp_path / "c", split)  # the others are untouched
    extra = _rows(tmp_path / "c", "train_extra")
    assert len(extra) == 4 * 5 and {r["split"] for r in extra} == {"train_extra"}
    assert all(r["image"] and r["text"] and r["speech"] is None and r["tts"] is None for r in extra)
    assert len({r["group"] for r in extra}) == 4
    assert all((tmp_path / "c" / r["image"]).is_file() for r in extra)
    assert "`train_extra` holds 4 extra scenes" in (tmp_path / "c" / "README.md").read_text()


def test_manifest_stats_count_rows_without_speech(tmp_path: Path) -> None:
    prepare_scenes(tmp_path / "c", num_scenes=20, speech=False, extra_scenes=3, progress=False)
    runner = CliRunner()
    r = runner.invoke(cli, ["manifest", "stats", str(tmp_path / "c" / "train_extra.jsonl.gz"), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["rows"] == 15 and info["rows_with_speech"] == 0 and info["rows_without_speech"] == 15
    r = runner.invoke(cli, ["manifest", "stats", str(tmp_path / "c" / "train_extra.jsonl.gz")])
    assert r.exit_code == 0, r.output
    assert "15 rows (0 with speech, 15 without)" in r.output and "no speech" in r.output


def test_cli_options_and_bad_values(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["prepare", "scenes", "--num-scenes", "10", "--no-speech", "--background", "tones",
                            "--extra-scenes", "2", "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"]["train_extra"] == 10
    r = runner.invoke(cli, ["prepare", "scenes", "--out", str(tmp_path / "d"), "--set", "background=tones",
                            "--dump-config"])
    assert r.exit_code == 0 and "background: tones" in r.output
    with pytest.raises(TmtError, match="unknown --background 'plaid'"):
        prepare_scenes(tmp_path / "e", num_scenes=5, speech=False, background="plaid", progress=False)
    with pytest.raises(TmtError, match="--extra-scenes must be 0 or more"):
        prepare_scenes(tmp_path / "f", num_scenes=5, speech=False, extra_scenes=-1, progress=False)
    with pytest.raises(TmtError, match="--extra-speech must be 0 to 5"):
        prepare_scenes(tmp_path / "g", num_scenes=5, speech=False, extra_scenes=2, extra_speech=6, progress=False)
    assert not (tmp_path / "g").exists()  # refused before anything is written
