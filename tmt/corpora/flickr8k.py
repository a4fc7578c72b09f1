"""Flickr8k + Flickr8kAudio from a local copy, into raw manifests (train/valid/test).

Expected layout under `root` (each piece can also be given explicitly):

    Flickr8k.token.txt            image.jpg#k<TAB>caption          (or Flickr8k_text/Flickr8k.token.txt)
    dataset_flickr8k.json         Karpathy splits ({"images": [{"filename", "split", ...}]})
    Flicker8k_Dataset/*.jpg       images (also Flickr8k_Dataset/, Images/, images/)
    flickr_audio/wav2capt.txt     wav image.jpg #k
    flickr_audio/wavs/*.wav       the spoken captions
    flickr_audio/wav2spk.txt      optional: wav speaker

One row per (image, caption k, recording k): id `<image stem>_<k>`, group = image stem,
`speaker` when wav2spk.txt is there. Captions without a recording keep `speech: null`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tmt.corpora.common import (
    CorpusError,
    MissingFiles,
    find_dir,
    karpathy_splits,
    rel_to,
    require_file,
    write_splits,
)

log = logging.getLogger(__name__)

IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "images")


def read_token_file(path: Path) -> dict[str, dict[int, str]]:
    """image file name -> {k: caption} from `Flickr8k.token.txt`."""
    out: dict[str, dict[int, str]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, sep, caption = line.partition("\t")
            name, hash_, k = key.rpartition("#")
            if not sep or not hash_ or not k.isdigit():
                raise CorpusError(f"{path}:{n}: expected 'image.jpg#k<TAB>caption', got {line[:80]!r}")
            out.setdefault(name, {})[int(k)] = caption.strip()
    return out


def read_wav2capt(path: Path) -> dict[tuple[str, int], str]:
    """(image file name, k) -> wav file name from `wav2capt.txt`."""
    out: dict[tuple[str, int], str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or not parts[2].lstrip("#").isdigit():
                raise CorpusError(f"{path}:{n}: expected 'file.wav image.jpg #k', got {line.strip()[:80]!r}")
            out[(parts[1], int(parts[2].lstrip("#")))] = parts[0]
    return out


def read_wav2spk(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0]] = parts[1]
    return out


@dataclass
class _Sources:
    """The Flickr8k files one prepare run reads."""

    token_path: Path
    split_path: Path
    img_dir: Path
    wav_dir: Path
    wav2capt: dict[tuple[str, int], str]
    speakers: dict[str, str]


def prepare_flickr8k(
    root: str | Path,
    out_dir: str | Path,
    *,
    images_dir: str | Path | None = None,
    token_file: str | Path | None = None,
    split_file: str | Path | None = None,
    audio_dir: str | Path | None = None,
    allow_missing: bool = False,
    absolute_paths: bool = False,
) -> dict[str, Any]:
    """Write `out_dir/{train,valid,test}.jsonl.gz`; returns a summary (row counts, skipped)."""
    root = Path(root)
    out = Path(out_dir)
    if not root.is_dir():
        raise CorpusError(f"Flickr8k root folder not found: {root}")
    src = _find_sources(root, images_dir, token_file, split_file, audio_dir)
    missing = MissingFiles()
    rows, no_caption, no_wav = _rows(src, missing, out, absolute_paths)
    missing.raise_or_warn("flickr8k", allow_missing)
    if no_caption:
        log.warning("flickr8k: %d image(s) of %s have no caption in %s; skipped",
                    no_caption, src.split_path, src.token_path)
    if no_wav:
        log.warning("flickr8k: %d caption(s) have no recording in wav2capt.txt; kept without speech", no_wav)
    if not rows:
        raise CorpusError(f"flickr8k: no rows to write from {root} (check the split file and image names)")
    counts = write_splits(out, rows)
    return {"out": str(out), "rows": counts, "missing_skipped": len(missing), "captions_without_speech": no_wav}


def _find_sources(
    root: Path,
    images_dir: str | Path | None,
    token_file: str | Path | None,
    split_file: str | Path | None,
    audio_dir: str | Path | None,
) -> _Sources:
    """Locate captions, split file, images and recordings (defaults under `root`), or say which is missing."""
    if token_file is None:
        token_file = next(
            (p for p in (root / "Flickr8k.token.txt", root / "Flickr8k_text" / "Flickr8k.token.txt") if p.is_file()),
            root / "Flickr8k.token.txt",
        )
    token_path = require_file(Path(token_file), "caption file Flickr8k.token.txt", "pass it with --token-file")
    split_path = require_file(
        Path(split_file) if split_file else root / "dataset_flickr8k.json",
        "Karpathy split file dataset_flickr8k.json",
        "pass it with --split-file",
    )
    img_dir = Path(images_dir) if images_dir else find_dir(root, IMAGE_DIRS, "Flickr8k image", "--images-dir")
    aud_dir = Path(audio_dir) if audio_dir else root / "flickr_audio"
    wav2capt = read_wav2capt(require_file(aud_dir / "wav2capt.txt", "Flickr8kAudio index wav2capt.txt", "pass --audio-dir"))
    speakers = read_wav2spk(aud_dir / "wav2spk.txt") if (aud_dir / "wav2spk.txt").is_file() else {}
    return _Sources(token_path, split_path, img_dir, aud_dir / "wavs", wav2capt, speakers)


def _rows(
    src: _Sources, missing: MissingFiles, out: Path, absolute_paths: bool
) -> tuple[list[dict[str, Any]], int, int]:
    """One row per caption of each split image; (rows, images without caption, captions without wav)."""
    captions = read_token_file(src.token_path)
    rows: list[dict[str, Any]] = []
    no_caption = no_wav = 0
    for name, split in karpathy_splits(src.split_path).items():
        caps = captions.get(name)
        if not caps:
            no_caption += 1
            continue
        image = src.img_dir / name
        have_image = missing.check(image)
        stem = Path(name).stem
        for k in sorted(caps):
            wav = src.wav2capt.get((name, k))
            speech = None
            if wav is None:
                no_wav += 1
            else:
                if not missing.check(src.wav_dir / wav):  # checked even without the image: one full summary
                    continue
                speech = rel_to(src.wav_dir / wav, out, absolute_paths)
            if not have_image:
                continue
            row = {
                "id": f"{stem}_{k}",
                "group": stem,
                "split": split,
                "image": rel_to(image, out, absolute_paths),
                "speech": speech,
                "text": caps[k],
                "caption_index": k,
                "corpus": "flickr8k",
            }
            if wav is not None and wav in src.speakers:
                row["speaker"] = src.speakers[wav]
            rows.append(row)
    return rows, no_caption, no_wav
