"""COCO + SpokenCOCO from a local copy, into raw manifests (Karpathy train/valid/test).

Expected layout (each piece can also be given explicitly):

    <coco_dir>/train2014/*.jpg, <coco_dir>/val2014/*.jpg     COCO 2014 images
    <coco_dir>/dataset_coco.json                              Karpathy splits (or <spokencoco_dir>/dataset_coco.json)
    <spokencoco_dir>/SpokenCOCO_train.json                    {"data": [{"image": "train2014/x.jpg",
    <spokencoco_dir>/SpokenCOCO_val.json                        "captions": [{"text", "wav", "speaker", "uttid"}]}]}
    <spokencoco_dir>/wavs/...                                 wav paths in the json are relative to <spokencoco_dir>

Karpathy `restval` images go to train unless `restval=False` (then they are left out).
One row per (image, caption k, recording k): id `<cocoid>_<k>`, group = COCO image id.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tmt.corpora.common import (
    CorpusError,
    MissingFiles,
    karpathy_splits,
    load_json,
    rel_to,
    require_file,
    write_splits,
)

log = logging.getLogger(__name__)


def _coco_id(image_key: str) -> str:
    stem = Path(image_key).stem  # COCO_val2014_000000391895
    tail = stem.rsplit("_", 1)[-1]
    return str(int(tail)) if tail.isdigit() else stem


def _index_entries(path: Path) -> list[Any]:
    """The `data` list of a SpokenCOCO_{train,val}.json index."""
    data = load_json(path, "SpokenCOCO index")
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise CorpusError(f"{path}: expected {{\"data\": [{{\"image\": ..., \"captions\": [...]}}]}}")
    return entries


def _row(key: str, k: int, cap: dict[str, Any], split: str, image: str, speech: str) -> dict[str, Any]:
    """The manifest row of caption `k` of COCO image `key` (paths already written as the manifest wants)."""
    group = _coco_id(key)
    row = {
        "id": f"{group}_{k}",
        "group": group,
        "split": split,
        "image": image,
        "speech": speech,
        "text": str(cap["text"]).strip(),
        "caption_index": k,
        "corpus": "spokencoco",
    }
    if cap.get("speaker"):
        row["speaker"] = cap["speaker"]
    if cap.get("uttid"):
        row["uttid"] = cap["uttid"]
    return row


def prepare_spokencoco(
    coco_dir: str | Path,
    spokencoco_dir: str | Path,
    out_dir: str | Path,
    *,
    split_file: str | Path | None = None,
    restval: bool = True,
    allow_missing: bool = False,
    absolute_paths: bool = False,
) -> dict[str, Any]:
    """Write `out_dir/{train,valid,test}.jsonl.gz`; returns a summary (row counts, skipped)."""
    coco, spoken, out = Path(coco_dir), Path(spokencoco_dir), Path(out_dir)
    for d, what in ((coco, "COCO images folder (holding train2014/ and val2014/)"), (spoken, "SpokenCOCO folder")):
        if not d.is_dir():
            raise CorpusError(f"{what} not found: {d}")
    if split_file is None:
        split_file = next((p for p in (coco / "dataset_coco.json", spoken / "dataset_coco.json") if p.is_file()), coco / "dataset_coco.json")
    splits = karpathy_splits(require_file(Path(split_file), "Karpathy split file dataset_coco.json", "pass it with --split-file"), restval=restval)

    missing = MissingFiles()
    rows: list[dict[str, Any]] = []
    not_in_split = 0
    for part in ("train", "val"):
        path = require_file(spoken / f"SpokenCOCO_{part}.json", f"SpokenCOCO index SpokenCOCO_{part}.json")
        for n, entry in enumerate(_index_entries(path)):
            try:
                key, caps = entry["image"], entry["captions"]
            except (KeyError, TypeError):
                raise CorpusError(f"{path}: data[{n}] lacks 'image' or 'captions'") from None
            split = splits.get(key)
            if split is None:
                not_in_split += 1
                continue
            image = coco / key
            have_image = missing.check(image)
            for k, cap in enumerate(caps):
                if not isinstance(cap, dict) or "text" not in cap or "wav" not in cap:
                    raise CorpusError(f"{path}: data[{n}].captions[{k}] lacks 'text' or 'wav'")
                wav = spoken / cap["wav"]
                if not missing.check(wav) or not have_image:  # wavs checked too: one full summary
                    continue
                rows.append(_row(key, k, cap, split, rel_to(image, out, absolute_paths), rel_to(wav, out, absolute_paths)))
    missing.raise_or_warn("spokencoco", allow_missing)
    if not_in_split:
        log.info("spokencoco: %d image(s) are not in the chosen Karpathy splits; left out", not_in_split)
    if not rows:
        raise CorpusError(f"spokencoco: no rows to write from {spoken} and {coco} (check the split file and image paths)")
    counts = write_splits(out, rows)
    return {"out": str(out), "rows": counts, "missing_skipped": len(missing), "not_in_split": not_in_split}
