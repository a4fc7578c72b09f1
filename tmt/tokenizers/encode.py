"""Encode a raw manifest into a token store: the modality-agnostic driver.

Every `tmt tokenize <modality> encode` (and `tmt tokenize all`) goes through
`encode_manifest`. It reads the raw manifest (optionally one split), resolves
the media paths, hands batches of rows to one *encoder* per modality, and
writes ONE store row per manifest row holding every modality the row has::

    raw row  {"id", "group", "split", "speech": "wav/a.wav", "text": "a red ball", "scene": {...}}
      -> encoders["speech"](batch) -> {"speech": units, "durations": runs, "duration_s": 1.92}
      -> encoders["text"](batch)   -> {"text": ids}
      -> store row: meta {"id", "group", "split", "synthetic", "source", "duration_s", "text", "scene", ...}
                    tokens {"speech": units, "durations": runs, "text": ids}

An encoder is ``Callable[[list[dict]], list[dict | None]]``: it receives rows
with media paths already absolute and returns, per row, the arrays of the
streams it produces (keys that are declared streams become tokens, any other
key a scalar meta field such as ``duration_s``), or None when the row lacks
that modality. A row with none of the requested modalities is skipped and
counted. `encoder_for(tokenizer)` builds the encoder of any fitted tokenizer.

Scaling out: with ``shard="k/N"`` worker k writes rows ``shard_range(n, k, N)``
into ``part_dir(store, k, N)``; `tmt.store.ops.merge_parts` joins the
parts. Reruns resume: a finished store/part is skipped, an unfinished one
continues after its last flushed shard (``shard_rows`` sets that granularity).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt.core.errors import TmtError
from tmt.core.io import sha256_file
from tmt.core.modality import MODALITIES, check_modality
from tmt.core.progress import progress_bar
from tmt.core.shards import parse_shard_spec, part_dir, shard_range
from tmt.core.tokenizer import Tokenizer
from tmt.store import StoreError
from tmt.store.manifest import media_path, read_manifest, validate_rows
from tmt.store.token_store import (
    AUX_STREAMS,
    DURATION_VOCAB,
    TokenStore,
    TokenStoreWriter,
)
from tmt.vocab import row_voice

log = logging.getLogger(__name__)

Encoder = Callable[[list[dict[str, Any]]], list[dict[str, Any] | None]]
"""rows (media paths absolute) -> per row {stream: array, meta_key: scalar} or None."""

MEDIA_KEYS = ("speech", "image")
"""Manifest fields holding media paths (resolved relative to the manifest)."""
CORE_KEYS = ("id", "group", "split", "synthetic", "source", *MODALITIES)
"""Manifest fields handled explicitly; every other field is copied into the store meta."""


def _resolve_row(manifest: Path, row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in MEDIA_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value:
            out[key] = str(media_path(manifest, value))
    return out


def _row_meta(raw: Mapping[str, Any], default_source: str) -> dict[str, Any]:
    """Store meta of one row: ids, flags, the original media paths, raw text and extra fields."""
    meta: dict[str, Any] = {
        "id": raw["id"],
        "group": raw.get("group") or raw["id"],
        "split": raw.get("split"),
        "synthetic": bool(raw.get("synthetic", False)),
        "source": raw.get("source") or default_source,
    }
    for key in MEDIA_KEYS:
        if raw.get(key):
            meta[f"{key}_path"] = raw[key]  # as written in the manifest (relative stays relative)
    if isinstance(raw.get("text"), str) and raw["text"]:
        meta["text"] = raw["text"]  # the reference string (tokenizers may lose case/punctuation)
    for key, value in raw.items():
        if key not in CORE_KEYS and key not in meta:
            meta[key] = value
    voice = row_voice(raw) if raw.get("speech") else None
    if voice is not None:
        meta["voice"] = voice  # the speech's voice (tts engine:voice or speaker): a control token in training
    return meta


def _to_meta_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _run_encoders(
    encoders: Mapping[str, Encoder], batch: list[dict[str, Any]]
) -> list[dict[str, list[dict[str, Any] | None]]]:
    """Call every encoder on the batch -> per row {modality: result or None}."""
    results: dict[str, list[dict[str, Any] | None]] = {}
    for name, enc in encoders.items():
        out = enc(batch)
        if len(out) != len(batch):
            raise TmtError(f"encoder '{name}' returned {len(out)} results for {len(batch)} rows")
        results[name] = list(out)
    return [{name: [results[name][i]] for name in encoders} for i in range(len(batch))]


def _encode_batch(
    encoders: Mapping[str, Encoder], batch: list[dict[str, Any]], skip_bad: bool
) -> list[dict[str, dict[str, Any] | None] | TmtError]:
    """Per row {modality: result} or the TmtError that row raised (only with skip_bad)."""
    try:
        per_row = _run_encoders(encoders, batch)
        return [{k: v[0] for k, v in r.items()} for r in per_row]
    except TmtError:
        if not skip_bad:
            raise
    # one bad file spoils a batched call: redo the batch row by row to find it
    out: list[dict[str, dict[str, Any] | None] | TmtError] = []
    for row in batch:
        try:
            r = _run_encoders(encoders, [row])[0]
            out.append({k: v[0] for k, v in r.items()})
        except TmtError as e:
            out.append(e)
    return out


def _done_position(root: Path, rows: Sequence[Mapping[str, Any]]) -> int:
    """Input rows already handled by an interrupted run: up to the last row id it stored."""
    try:
        done = {m["id"] for m in TokenStore(root).iter_meta()}
    except StoreError:
        return 0
    last = -1
    for i, r in enumerate(rows):
        if r["id"] in done:
            last = i
    return last + 1


def _check_args(encoders: Mapping[str, Encoder], batch_size: int) -> None:
    if not encoders:
        raise TmtError("nothing to encode: no tokenizer/encoder given")
    for name in encoders:
        check_modality(name, "modality for an encoder", error=TmtError)
    if batch_size < 1:
        raise TmtError(f"batch size must be >= 1, got {batch_size}")


def _read_part(manifest: Path, split: str | None, shard: str | None) -> list[dict[str, Any]]:
    """The manifest rows (one split or all) of this shard ("k/N"; None: all), validated."""
    rows = read_manifest(manifest, split=split)
    if not rows:
        where = f" with split '{split}'" if split else ""
        raise StoreError(f"{manifest}: no rows{where}; check --split and the manifest")
    validate_rows(rows, manifest=manifest, check_files=False)
    k, n = parse_shard_spec(shard)
    return [rows[i] for i in shard_range(len(rows), k, n)]


def _new_counts(out: Path, shard: str | None, k: int, n: int, rows_in: int) -> dict[str, Any]:
    """The counts `encode_manifest` returns, before any row is handled."""
    return {
        "store": str(out),
        "shard": f"{k}/{n}" if shard is not None else None,
        "rows_in": rows_in,
        "written": 0,
        "skipped_bad": 0,
        "skipped_no_modality": 0,
        "resumed_after": 0,
        "already_complete": False,
        "bad": [],
    }


def _store_source(
    manifest: Path, split: str | None, encoders: Mapping[str, Encoder], fingerprints: Mapping[str, str],
    shard: str | None, k: int, n: int,
) -> dict[str, Any]:
    """What a store was made from (recorded in its index; a complete store with the same source is reused)."""
    source = {
        "manifest": str(manifest.resolve()),
        "manifest_sha256": sha256_file(manifest),
        "split": split,
        "modalities": sorted(encoders),
        "fingerprints": dict(sorted(fingerprints.items())),
    }
    if shard is not None:
        source["shard"] = f"{k}/{n}"
    return source


def _already_complete(out: Path, source: dict[str, Any]) -> bool:
    """True when `out` is a finished store made from the same source."""
    if not (out / "index.json").exists():
        return False
    try:
        return bool(TokenStore(out).complete and TokenStore(out).index.get("source") == source)
    except StoreError:
        return False


def _store_row(
    raw: Mapping[str, Any], res: Mapping[str, dict[str, Any] | None], streams: Mapping[str, int], default_source: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, tokens) of one manifest row from its encoders' results."""
    tokens: dict[str, np.ndarray] = {}
    meta = _row_meta(raw, default_source)
    for modality_result in res.values():
        if modality_result is None:
            continue
        for key, value in modality_result.items():
            if key in streams:
                tokens[key] = np.asarray(value)
            elif key in MODALITIES or key in AUX_STREAMS:
                raise TmtError(f"encoder produced stream '{key}' that the store does not declare")
            else:
                meta[key] = _to_meta_value(value)
    return meta, tokens


def _write_rows(
    writer: TokenStoreWriter, manifest: Path, todo: list[dict[str, Any]], encoders: Mapping[str, Encoder],
    streams: Mapping[str, int], counts: dict[str, Any], *, batch_size: int, skip_bad: bool, desc: str, progress: bool,
) -> None:
    """Encode `todo` batch by batch into `writer`, counting written and skipped rows in `counts`."""
    default_source = manifest.name.split(".")[0]
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = progress_bar(total=len(todo), desc=desc, unit="row", enabled=None if progress else False)
    try:
        for raw_batch in batches:
            batch = [_resolve_row(manifest, r) for r in raw_batch]
            results = _encode_batch(encoders, batch, skip_bad)
            for raw, res in zip(raw_batch, results, strict=True):
                if isinstance(res, TmtError):
                    counts["skipped_bad"] += 1
                    counts["bad"].append(f"{raw['id']}: {res}")
                    log.warning("skipping row %s: %s", raw["id"], res)
                    continue
                meta, tokens = _store_row(raw, res, streams, default_source)
                if not any(m in tokens for m in MODALITIES):
                    counts["skipped_no_modality"] += 1
                    continue
                writer.add(meta, tokens)
                counts["written"] += 1
            bar.update(len(raw_batch))
    finally:
        bar.close()


def encode_manifest(
    manifest: str | Path,
    store: str | Path,
    encoders: Mapping[str, Encoder],
    *,
    streams: Mapping[str, int],
    fingerprints: Mapping[str, str],
    tokenizers: Mapping[str, Mapping[str, Any]],
    split: str | None = None,
    shard: str | None = None,
    batch_size: int = 16,
    skip_bad: bool = False,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    shard_rows: int = 2000,
) -> dict[str, Any]:
    """Encode the rows of `manifest` (one `split`, or all) into the token store `store`.

    `encoders` maps a modality to its encoder (see the module docstring);
    `streams` maps each stream written to its vocabulary size (e.g.
    ``{"speech": 200, "durations": DURATION_VOCAB}``); `fingerprints` and
    `tokenizers` (modality -> tokenizer info dict) are recorded in the index.
    With `shard="k/N"` only that part is written, to `part_dir(store, k, N)`.
    Rows whose media fail to load raise a TmtError naming the file, or with
    `skip_bad` are skipped and counted. Returns counts for this run.
    """
    manifest = Path(manifest)
    _check_args(encoders, batch_size)
    part = _read_part(manifest, split, shard)
    k, n = parse_shard_spec(shard)
    out = part_dir(store, k, n) if shard is not None else Path(store)
    source = _store_source(manifest, split, encoders, fingerprints, shard, k, n)
    counts = _new_counts(out, shard, k, n, len(part))
    if resume and not overwrite and _already_complete(out, source):
        log.info("%s is already complete; skipping (use --overwrite to redo it)", out)
        counts["already_complete"] = True
        counts["rows_total"] = len(TokenStore(out))
        return counts
    with TokenStoreWriter(
        out,
        streams=streams,
        fingerprints=fingerprints,
        tokenizers=tokenizers,
        source=source,
        resume=resume,
        overwrite=overwrite,
        shard_rows=shard_rows,
    ) as writer:
        start = _done_position(out, part) if writer.rows_done else 0
        if start:
            log.info("resuming %s: %d of %d rows already handled", out, start, len(part))
        counts["resumed_after"] = start
        _write_rows(writer, manifest, part[start:], encoders, streams, counts, batch_size=batch_size,
                    skip_bad=skip_bad, desc=f"encode {out.name}", progress=progress)
    counts["rows_total"] = writer.rows_done
    counts["bad"] = counts["bad"][:20]
    return counts


# --------------------------------------------------------------------------------------
# tokenizer -> encoder
# --------------------------------------------------------------------------------------
def encoder_for(tokenizer: Tokenizer) -> Encoder:
    """The encoder of any fitted tokenizer, by its `modality`.

    A tokenizer may provide its own `make_encoder()` (the speech tokenizer does:
    units, run lengths and the audio duration); otherwise speech/image rows are
    encoded from their path with `tokenizer.encode([paths])` and text rows from
    their string with `tokenizer.encode([texts])`.
    """
    make = getattr(tokenizer, "make_encoder", None)
    if callable(make):
        enc: Encoder = make()
        return enc
    modality = getattr(tokenizer, "modality", None)
    if modality not in MODALITIES:
        raise TmtError(f"tokenizer {tokenizer!r} has no known modality (got {modality!r})")

    def encode(rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        idx = [i for i, r in enumerate(rows) if r.get(modality) not in (None, "")]
        out: list[dict[str, Any] | None] = [None] * len(rows)
        if not idx:
            return out
        tokens = tokenizer.encode([rows[i][modality] for i in idx])
        for i, t in zip(idx, tokens, strict=True):
            out[i] = {modality: np.asarray(t)}
        return out

    return encode


def store_spec(
    tokenizers: Mapping[str, Tokenizer], paths: Mapping[str, str | Path] | None = None
) -> tuple[dict[str, int], dict[str, str], dict[str, dict[str, Any]]]:
    """(streams, fingerprints, tokenizer infos) of a store written by these tokenizers."""
    from tmt.config import to_dict
    from tmt.tokenizers.base import tokenizer_info

    streams: dict[str, int] = {}
    fps: dict[str, str] = {}
    infos: dict[str, dict[str, Any]] = {}
    for modality, tok in tokenizers.items():
        if getattr(tok, "modality", modality) != modality:
            raise TmtError(f"the tokenizer given for {modality} is a {tok.modality} tokenizer")
        streams[modality] = int(tok.vocab_size)
        if modality == "speech" and getattr(tok, "dedup", True):
            streams["durations"] = DURATION_VOCAB
        fps[modality] = str(tok.fingerprint)
        infos[modality] = to_dict(tokenizer_info(tok, (paths or {}).get(modality)))
    return streams, fps, infos


def encode_with_tokenizers(
    manifest: str | Path,
    store: str | Path,
    tokenizers: Mapping[str, Tokenizer],
    *,
    paths: Mapping[str, str | Path] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """`encode_manifest` with the encoders/streams/fingerprints of loaded tokenizers
    (modality -> tokenizer); `paths` (modality -> tokenizer dir) is recorded in the index."""
    streams, fps, infos = store_spec(tokenizers, paths)
    encoders = {m: encoder_for(t) for m, t in tokenizers.items()}
    return encode_manifest(
        manifest, store, encoders, streams=streams, fingerprints=fps, tokenizers=infos, **kwargs
    )
