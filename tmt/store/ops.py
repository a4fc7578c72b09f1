"""Operations on whole token stores: combine several into one, merge the parts of a sharded
encode, validate a store end to end, and summarise it (`tmt manifest combine|validate|stats`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt.core.io import atomic_write_json, fsync_dir, make_dirs, sha256_file
from tmt.core.modality import MODALITIES
from tmt.core.shards import part_dir
from tmt.store import StoreError
from tmt.store.schema import check
from tmt.store.token_store import TokenStore, empty_index, load_index, read_meta_shard


def _compatible(indexes: Sequence[dict[str, Any]], roots: Sequence[Path]) -> None:
    first = indexes[0]
    for idx, root in zip(indexes[1:], roots[1:], strict=True):
        if idx["streams"] != first["streams"] or idx["vocab_sizes"] != first["vocab_sizes"]:
            raise StoreError(f"{root} has streams/vocab sizes {idx['vocab_sizes']}, {roots[0]} has {first['vocab_sizes']}")
        for m, fp in idx.get("fingerprints", {}).items():
            other = first.get("fingerprints", {}).get(m)
            if other and fp and other != fp:
                raise StoreError(
                    f"{root}: {m} tokenizer fingerprint {fp[:12]} differs from {roots[0]}'s {other[:12]}; "
                    "stores made with different tokenizers cannot be combined"
                )


def combine_stores(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    move: bool = False,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Concatenate complete stores (in order) into `out`, renumbering shards.

    With `move=True` files are renamed instead of copied (used to merge the parts
    written by `--shard k/N` workers). The output index is written last.
    """
    roots = [Path(p) for p in inputs]
    if not roots:
        raise StoreError("nothing to combine")
    indexes = [load_index(r) for r in roots]
    for idx, r in zip(indexes, roots, strict=True):
        if not idx.get("complete"):
            raise StoreError(f"{r} is not complete (its writer did not finish); finish or re-run that job first")
    _compatible(indexes, roots)
    out = Path(out)
    if (out / "index.json").exists():
        raise StoreError(f"output store {out} already exists; remove it first")
    make_dirs(out)
    first = indexes[0]
    index = empty_index(
        streams=first["streams"], dtypes=first["dtypes"], vocab_sizes=first["vocab_sizes"],
        fingerprints={k: v for idx in indexes for k, v in idx.get("fingerprints", {}).items() if v},
        tokenizers={k: v for idx in indexes for k, v in idx.get("tokenizers", {}).items()},
        source=dict(source) if source is not None else {"combined": [str(r) for r in roots]},
        complete=True,
    )
    _check_unique_ids(roots)
    for r, idx in zip(roots, indexes, strict=True):
        for sh in idx["shards"]:
            _append_shard(index, r, sh, out, move=move)
    fsync_dir(out)
    atomic_write_json(out / "index.json", index)
    return index


def _check_unique_ids(roots: Sequence[Path]) -> None:
    """Refuse stores that share a row id."""
    seen: set[str] = set()
    for r in roots:
        ids = [m["id"] for sh in load_index(r)["shards"] for m in read_meta_shard(r, sh["name"])]
        dup = seen.intersection(ids)
        if dup:
            raise StoreError(f"row id '{sorted(dup)[0]}' appears in more than one input store")
        seen.update(ids)


def _append_shard(index: dict[str, Any], root: Path, sh: dict[str, Any], out: Path, *, move: bool) -> None:
    """Copy (or move) shard `sh` of the store at `root` into `out` as its next shard, counted in `index`."""
    new = f"{len(index['shards']):05d}"
    files = {}
    for fname, info in sh["files"].items():
        stem, _, rest = fname.partition(f".{sh['name']}.")
        target = out / f"{stem}.{new}.{rest}"
        if move:
            os.replace(root / fname, target)
        else:
            shutil.copyfile(root / fname, target)
        files[target.name] = info
    index["shards"].append({"name": new, "rows": sh["rows"], "tokens": sh["tokens"], "files": files})
    index["rows"] += int(sh["rows"])
    for s, n in sh["tokens"].items():
        index["tokens"][s] += int(n)


def merge_parts(store: str | Path, num_parts: int) -> dict[str, Any]:
    """Merge the parts written by workers 0..N-1 (`--shard k/N`) into `store`."""
    parts = [part_dir(store, k, num_parts) for k in range(num_parts)]
    missing = [str(p) for p in parts if not (p / "index.json").is_file()]
    if missing:
        raise StoreError(f"cannot merge: {len(missing)} of {num_parts} parts are missing, e.g. {missing[0]}")
    source = {"merged_parts": num_parts} | {
        k: v for k, v in load_index(parts[0]).get("source", {}).items() if k != "shard"
    }
    index = combine_stores(parts, store, move=True, source=source)
    shutil.rmtree(parts[0].parent)
    return index


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
def validate_store(root: str | Path, *, checksums: bool = True, check_ids: bool = True) -> dict[str, Any]:
    """Check a store end to end; raise StoreError naming the first problem.

    Checks: index.json against its schema, every named file present with its size
    and sha256, each `.idx` well formed with one entry per row, `.bin` sizes, every
    meta line against its schema and aligned with the `.idx` lengths, ids inside
    each stream's vocabulary, unique row ids.
    """
    root = Path(root)
    index = load_index(root)
    check(index, "store_index", str(root / "index.json"))
    store = TokenStore(root)
    seen: set[str] = set()
    for si, sh in enumerate(index["shards"]):
        for fname, info in sh["files"].items():
            p = root / fname
            if not p.is_file():
                raise StoreError(f"{p}: named in index.json but missing")
            if p.stat().st_size != int(info["bytes"]):
                raise StoreError(f"{p}: {p.stat().st_size} bytes, index.json says {info['bytes']} (truncated or changed)")
            if checksums and sha256_file(p) != info["sha256"]:
                raise StoreError(f"{p}: sha256 differs from index.json (the file is corrupt or was changed)")
        meta = store._meta_shard(si)
        meta_file = root / f"meta.{sh['name']}.jsonl.gz"
        for j, m in enumerate(meta, 1):
            check(m, "store_meta", f"{meta_file}:{j}")
        for stream in store.streams:
            b = store._bin(si, stream)
            if int(b.index.total_tokens) != int(sh["tokens"].get(stream, 0)):
                raise StoreError(f"{b.bin_path}: {b.index.total_tokens} tokens, index.json says {sh['tokens'].get(stream)}")
            if stream in MODALITIES:
                for j, m in enumerate(meta):
                    want = int(m.get("lengths", {}).get(stream, 0))
                    if want != int(b.index.sizes[j]):
                        raise StoreError(
                            f"meta.{sh['name']}.jsonl.gz row {j} ('{m.get('id')}'): {stream} length {want} "
                            f"but the .idx says {int(b.index.sizes[j])}"
                        )
            if check_ids and b.index.total_tokens:
                data = b.data
                vmax = int(index["vocab_sizes"][stream])
                lo, hi = int(data.min()), int(data.max())
                if lo < 0 or hi >= vmax:
                    raise StoreError(f"{b.bin_path}: token id {hi if hi >= vmax else lo} outside [0, {vmax})")
        for m in meta:
            rid = str(m.get("id"))
            if rid in seen:
                raise StoreError(f"duplicate row id '{rid}' (shard {sh['name']})")
            seen.add(rid)
    return index


def store_stats(root: str | Path) -> dict[str, Any]:
    """Rows, tokens per stream, length percentiles, bytes, synthetic counts."""
    store = TokenStore(root)
    out: dict[str, Any] = {
        "store": str(store.root),
        "rows": len(store),
        "shards": len(store.shards),
        "complete": store.complete,
        "fingerprints": {k: v[:12] for k, v in store.fingerprints.items()},
        "bytes": sum(int(f["bytes"]) for sh in store.shards for f in sh["files"].values()),
        "streams": {},
    }
    for s in store.streams:
        lens = store.lengths(s)
        present = lens[lens > 0]
        pct = np.percentile(present, [5, 50, 95]).tolist() if present.size else [0, 0, 0]
        out["streams"][s] = {
            "rows_present": int(present.size),
            "tokens": int(lens.sum()),
            "len_min": int(present.min()) if present.size else 0,
            "len_p5": pct[0],
            "len_p50": pct[1],
            "len_p95": pct[2],
            "len_max": int(present.max()) if present.size else 0,
            "vocab_size": store.vocab_sizes[s],
        }
    synthetic = 0
    sources: dict[str, int] = {}
    for m in store.iter_meta():
        if m.get("synthetic"):
            synthetic += 1
            key = str(m.get("direction") or m.get("source") or "synthetic")
            sources[key] = sources.get(key, 0) + 1
    out["synthetic_rows"] = synthetic
    out["real_rows"] = len(store) - synthetic
    out["synthetic_by_direction"] = sources
    out["bytes_per_row"] = out["bytes"] / max(1, len(store))
    return out
