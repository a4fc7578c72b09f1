"""`tmt prepare scenes` end to end: media, manifests, determinism, reruns, errors."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner
from PIL import Image

from tmt.cli import cli as tmt_cli
from tmt.corpora.scenes import SPLITS, parse_scene, prepare_scenes, scene_matches
from tmt.corpora.tts import ESPEAK_VOICES, TtsError, Voice, available_engines, synthesize
from tmt.store.manifest import media_path, read_manifest, validate_rows

HAVE_TTS = any(shutil.which(e) for e in ("espeak-ng", "flite"))
needs_tts = pytest.mark.skipif(not HAVE_TTS, reason="needs espeak-ng or flite (apt-get install espeak-ng flite)")


@pytest.fixture(scope="module")
def corpus20(tmp_path_factory) -> tuple[Path, dict, float]:
    out = tmp_path_factory.mktemp("scenes") / "scenes20"
    t0 = time.perf_counter()
    res = CliRunner().invoke(tmt_cli, ["prepare", "scenes", "--num-scenes", "20", "--out", str(out), "--jobs", "2"])
    dt = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout), dt


@needs_tts
def test_twenty_scenes_make_valid_corpus(corpus20, capsys):
    out, summary, dt = corpus20
    with capsys.disabled():
        print(f"\ntmt prepare scenes --num-scenes 20 --jobs 2: {dt:.1f} s")
    assert summary["images"] == 20 and summary["captions"] == 100 and summary["wavs"] == 100
    assert len(list((out / "images").glob("*.png"))) == 20
    wavs = sorted((out / "speech").glob("*.wav"))
    assert len(wavs) == 100
    for w in wavs[:10]:
        info = sf.info(str(w))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.duration > 0.5
    groups, engines, voices = set(), set(), set()
    for split in SPLITS:
        path = out / f"{split}.jsonl.gz"
        rows = read_manifest(path)
        validate_rows(rows, manifest=path, check_files=True)
        res = CliRunner().invoke(tmt_cli, ["manifest", "validate", str(path)])
        assert res.exit_code == 0 and res.output.startswith("ok:"), res.output
        for r in rows:
            assert r["split"] == split and r["group"] not in groups - {r["group"]}
            assert not Path(r["image"] or "x").is_absolute() and not Path(r["speech"] or "x").is_absolute()
            if split == "images_only":
                assert r["image"] and r["speech"] is None and r["text"] is None
            elif split == "speech_text_only":
                assert r["image"] is None and r["speech"] and r["text"]
            else:
                assert r["image"] and r["speech"] and r["text"]
                assert r["id"] == f"{r['group']}_{r['caption_index']}"
            if r["speech"]:
                engines.add(r["tts"]["engine"])
                voices.add((r["tts"]["engine"], r["tts"]["voice"]))
                assert media_path(path, r["speech"]).is_file()
        groups |= {r["group"] for r in rows}
    assert len(groups) == 20  # splits are disjoint by image
    assert engines == set(available_engines())
    assert len(voices) >= 8
    readme = (out / "README.md").read_text()
    assert "| train | 14 | 70 |" in readme and "Caption vocabulary" in readme
    # the stored scene graph is what the judge reads back from the png
    row = read_manifest(out / "test.jsonl.gz")[0]
    assert scene_matches(parse_scene(Image.open(out / row["image"])), row["scene"])


@needs_tts
def test_rerun_skips_finished_work_and_refuses_other_settings(corpus20):
    out, summary, _ = corpus20
    png = next((out / "images").glob("*.png"))
    mtime = png.stat().st_mtime_ns
    again = prepare_scenes(out, num_scenes=20, progress=False)
    assert again == summary
    assert png.stat().st_mtime_ns == mtime
    res = CliRunner().invoke(tmt_cli, ["prepare", "scenes", "--num-scenes", "21", "--out", str(out)])
    assert res.exit_code == 1 and "other settings" in res.output and "Traceback" not in res.output


@needs_tts
def test_same_seed_same_bytes_with_and_without_workers(tmp_path):
    a = prepare_scenes(tmp_path / "a", num_scenes=6, seed=3, jobs=1, progress=False)
    b = prepare_scenes(tmp_path / "b", num_scenes=6, seed=3, jobs=2, progress=False)
    assert a["rows"] == b["rows"]
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 30
    for f in files_a:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_missing_engines_name_the_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TtsError, match="apt-get install espeak-ng flite"):
        prepare_scenes(tmp_path / "x", num_scenes=2, progress=False)
    res = CliRunner().invoke(tmt_cli, ["prepare", "scenes", "--num-scenes", "2", "--out", str(tmp_path / "y")])
    assert res.exit_code == 1 and "apt-get install espeak-ng flite" in res.output
    assert not (tmp_path / "x").exists()
    # without speech no engine is needed
    s = prepare_scenes(tmp_path / "z", num_scenes=8, speech=False, progress=False)
    assert s["wavs"] == 0 and s["images"] == 8
    rows = read_manifest(tmp_path / "z" / "train.jsonl.gz")
    assert all(r["speech"] is None and r["text"] for r in rows)


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="needs espeak-ng")
def test_espeak_voices_sound_different():
    waves = {v: synthesize("a red circle", Voice("espeak-ng", v, 160.0, 50))[0].tobytes() for v in ESPEAK_VOICES}
    assert len(set(waves.values())) == len(ESPEAK_VOICES) >= 8


def test_make_scenes_corpus_caches(tmp_path, monkeypatch):
    from tmt.testing.fixtures import make_scenes_corpus

    monkeypatch.setenv("TMT_TEST_CACHE", str(tmp_path / "cache"))
    a = make_scenes_corpus(tmp_path / "t1", num_scenes=8, speech=False)
    assert len(list((a / "images").glob("*.png"))) == 8
    cached = next((tmp_path / "cache").iterdir())
    assert json.loads((cached / "prepare.json").read_text())["complete"]
    (cached / "README.md").write_text("from the cache\n")
    b = make_scenes_corpus(tmp_path / "t2", num_scenes=8, speech=False)
    assert (b / "README.md").read_text() == "from the cache\n" and a != b
    assert os.listdir(tmp_path / "cache") == [cached.name]


def test_dump_config_and_help():
    res = CliRunner().invoke(tmt_cli, ["prepare", "scenes", "--out", "unused", "--num-scenes", "7", "--dump-config"])
    assert res.exit_code == 0 and "num_scenes: 7" in res.output
    for verb in ("scenes", "flickr8k", "spokencoco"):
        res = CliRunner().invoke(tmt_cli, ["prepare", verb, "--help"])
        assert res.exit_code == 0 and "Examples:" in res.output


@needs_tts
def test_extra_speech_speaks_the_first_captions_of_each_extra_scene(tmp_path: Path) -> None:
    out = tmp_path / "c"
    summary = prepare_scenes(out, num_scenes=6, extra_scenes=3, extra_speech=1, jobs=1, progress=False)
    extra = read_manifest(out / "train_extra.jsonl.gz")
    spoken = [r for r in extra if r["speech"] is not None]
    assert len(extra) == 15 and len(spoken) == 3  # one recording per extra scene
    assert {r["caption_index"] for r in spoken} == {0} and len({r["group"] for r in spoken}) == 3
    for r in spoken:
        assert r["tts"] and r["duration"] > 0.3 and sf.info(str(media_path(out / "train_extra.jsonl.gz", r["speech"]))).frames
    assert all(r["tts"] is None and r["duration"] is None for r in extra if r["speech"] is None)
    assert summary["wavs"] == 6 * 5 + 3
    assert "first 1 caption(s) of each also spoken" in (out / "README.md").read_text()
    res = CliRunner().invoke(tmt_cli, ["manifest", "stats", str(out / "train_extra.jsonl.gz"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows_with_speech"] == 3
