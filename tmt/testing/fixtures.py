"""Fixtures made by code with fixed seeds: wavs, pngs, a small scenes corpus, and tiny
Flickr8k / SpokenCOCO trees in their official on-disk formats.

    from tmt.testing.fixtures import make_scenes_corpus
    corpus = make_scenes_corpus(tmp_path)          # 20 images, 100 captions, 100 wavs
    rows = read_manifest(corpus / "train.jsonl.gz")

`make_scenes_corpus` builds each (size, seed, speech) variant once into a cache
(`$TMT_TEST_CACHE`, default `~/.cache/tmt/testing`) and copies it into the test's
directory, so later tests pay only for the copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from tmt.core.io import atomic_write_bytes


def make_wav(path: str | Path, seconds: float = 1.0, sr: int = 16000, *, freq: float = 220.0, seed: int = 0) -> Path:
    """A mono PCM-16 wav: a tone with a little noise (never silent)."""
    from tmt.corpora.tts import wav_bytes

    n = max(1, round(seconds * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
    path = Path(path)
    atomic_write_bytes(path, wav_bytes(wave.astype(np.float32), sr))
    return path


def make_png(path: str | Path, size: int = 64, *, seed: int = 0) -> Path:
    """A scene image (one or two shapes) drawn by the scenes generator."""
    from tmt.corpora.scenes import png_bytes, render_scene, sample_scene

    rng = np.random.default_rng([seed, 99])
    scene = sample_scene(rng, num_objects=1 + seed % 2)
    img = render_scene(scene, {"background": 110, "noise_seed": seed}, size)
    path = Path(path)
    atomic_write_bytes(path, png_bytes(img))
    return path


def make_jpg(path: str | Path, size: int = 32, *, seed: int = 0) -> Path:
    """A small random-noise JPEG (for corpora whose images are JPEGs)."""
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path, format="JPEG", quality=85)
    return path


def _cache_root() -> Path:
    return Path(os.environ.get("TMT_TEST_CACHE", Path.home() / ".cache" / "tmt" / "testing"))


def make_scenes_corpus(
    tmp_dir: str | Path,
    num_scenes: int = 20,
    seed: int = 0,
    *,
    speech: bool = True,
    max_objects: int = 2,
    cache: bool = True,
) -> Path:
    """A scenes corpus under `tmp_dir` (see `prepare_scenes`); returns its directory.

    With speech it needs espeak-ng or flite (about 5-15 s for 20 scenes the first time,
    a copy afterwards).
    """
    from tmt.corpora.scenes import GENERATOR_VERSION, prepare_scenes
    from tmt.corpora.tts import available_engines

    engines = "-".join(available_engines()) if speech else "nospeech"
    name = f"scenes-v{GENERATOR_VERSION}-n{num_scenes}-s{seed}-o{max_objects}-{engines}"
    dest = Path(tmp_dir) / name
    if dest.is_dir():
        return dest
    kwargs = {"num_scenes": num_scenes, "seed": seed, "speech": speech, "max_objects": max_objects, "progress": False}
    if not cache:
        prepare_scenes(dest, **kwargs)  # type: ignore[arg-type]
        return dest
    cached = _cache_root() / name
    if not (cached / "prepare.json").is_file() or not json.loads((cached / "prepare.json").read_text()).get("complete"):
        cached.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=name + ".", dir=cached.parent))
        try:
            prepare_scenes(build / "c", **kwargs)  # type: ignore[arg-type]
            try:
                os.rename(build / "c", cached)
            except OSError:  # another process finished first, or a stale copy is in the way
                if not (cached / "prepare.json").is_file():
                    shutil.rmtree(cached, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        os.rename(build / "c", cached)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        if not cached.is_dir():  # cache not writable: build in place
            prepare_scenes(dest, **kwargs)  # type: ignore[arg-type]
            return dest
    shutil.copytree(cached, dest)
    return dest


# ----------------------------------------------------------------------------- real-corpus trees
_WORDS = ("a", "dog", "runs", "on", "the", "grass", "two", "children", "play", "in", "water", "man", "rides", "bike")


def _caption(rng: np.random.Generator) -> str:
    n = int(rng.integers(4, 9))
    return " ".join(_WORDS[int(i)] for i in rng.integers(len(_WORDS), size=n))


def make_flickr8k_tree(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "train", "train", "val", "test"),
    *,
    captions: int = 5,
    wav_seconds: float = 0.2,
    seed: int = 0,
) -> Path:
    """A tiny Flickr8k + Flickr8kAudio copy in the official layout; one image per entry of
    `splits` (Karpathy split names). Returns `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    images, tokens, wav2capt, wav2spk = [], [], [], []
    for i, split in enumerate(splits):
        name = f"{1000268201 + 7919 * i}_{int(rng.integers(16**10)):010x}.jpg"
        make_jpg(root / "Flicker8k_Dataset" / name, seed=seed * 1000 + i)
        sents = []
        for k in range(captions):
            text = _caption(rng)
            tokens.append(f"{name}#{k}\t{text} .")
            sents.append({"raw": text + " .", "tokens": text.split(), "imgid": i, "sentid": i * captions + k})
            wav = f"{19212 + i}_{k:04d}.wav"
            make_wav(root / "flickr_audio" / "wavs" / wav, wav_seconds, seed=i * 10 + k)
            wav2capt.append(f"{wav} {name} #{k}")
            wav2spk.append(f"{wav} {1 + (i + k) % 3}")
        images.append({"filename": name, "imgid": i, "split": split, "sentences": sents, "sentids": [s["sentid"] for s in sents]})
    (root / "Flickr8k.token.txt").write_text("\n".join(tokens) + "\n")
    (root / "dataset_flickr8k.json").write_text(json.dumps({"images": images, "dataset": "flickr8k"}))
    (root / "flickr_audio" / "wav2capt.txt").write_text("\n".join(wav2capt) + "\n")
    (root / "flickr_audio" / "wav2spk.txt").write_text("\n".join(wav2spk) + "\n")
    return root


def make_spokencoco_tree(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "restval", "train", "val", "test", "val"),
    *,
    captions: int = 5,
    wav_seconds: float = 0.2,
    seed: int = 0,
) -> tuple[Path, Path]:
    """A tiny COCO + SpokenCOCO copy in the official layout; one image per entry of `splits`
    (Karpathy names). Karpathy train/restval images live in train2014, val/test in val2014.
    Returns (coco_dir, spokencoco_dir)."""
    root = Path(root)
    coco, spoken = root / "coco", root / "SpokenCOCO"
    rng = np.random.default_rng(seed)
    karpathy = []
    data: dict[str, list[dict[str, object]]] = {"train": [], "val": []}
    for i, split in enumerate(splits):
        part = "train" if split in ("train", "restval") else "val"
        cocoid = 391895 + 1013 * i
        folder = f"{part}2014"
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        make_jpg(coco / folder / name, seed=seed * 1000 + i)
        sents, caps = [], []
        for k in range(captions):
            text = _caption(rng)
            sents.append({"raw": text, "tokens": text.split(), "imgid": i, "sentid": i * captions + k})
            spk = f"m{int(rng.integers(16**8)):08x}"
            uttid = f"{spk}-{cocoid}_{k}"
            wav = f"wavs/{part}/{i % 2}/{uttid}.wav"
            make_wav(spoken / wav, wav_seconds, seed=i * 10 + k)
            caps.append({"text": text.upper(), "speaker": spk, "uttid": uttid, "wav": wav})
        karpathy.append({"filepath": folder, "filename": name, "cocoid": cocoid, "imgid": i, "split": split, "sentences": sents})
        data[part].append({"image": f"{folder}/{name}", "captions": caps})
    coco.mkdir(parents=True, exist_ok=True)
    (coco / "dataset_coco.json").write_text(json.dumps({"images": karpathy, "dataset": "coco"}))
    for part, entries in data.items():
        (spoken / f"SpokenCOCO_{part}.json").write_text(json.dumps({"data": entries}))
    return coco, spoken
