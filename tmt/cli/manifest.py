"""`tmt manifest`: validate, stats, head, combine, split, merge-parts.

Each verb takes either a raw manifest (`*.jsonl.gz`) or a token store directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tmt.cli._common import CONTEXT, echo_json, format_table
from tmt.store import StoreError

EPILOG = """\b
Examples:
  tmt manifest validate data/scenes/store/train
  tmt manifest validate data/scenes/train.jsonl.gz
  tmt manifest stats data/scenes/store/train
  tmt manifest head -n 3 data/scenes/store/train
  tmt manifest combine data/store/train data/store/bt -o data/store/train+bt
  tmt manifest split data/all.jsonl.gz --fractions train=0.8,valid=0.1,test=0.1 --out-dir data/
  tmt manifest merge-parts data/store/train --parts 4
"""


def _is_store(path: str) -> bool:
    return Path(path).is_dir()


@click.group(context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """Inspect, validate, combine and split raw manifests and token stores."""


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.argument("path", type=click.Path())
@click.option("--no-checksums", is_flag=True, help="Skip the sha256 check of every file (faster).")
def validate(path: str, no_checksums: bool) -> None:
    """Check a store or a raw manifest against the format schemas, and more.

    A store: index.json and every meta line against their schemas, counts,
    alignment, checksums, id ranges. A raw manifest: every row against the
    manifest-row schema, unique ids, a modality per row, media files present.
    The schemas are in data_manifests/ (README.md explains them). Exits 1
    naming the first problem (file, line, field, what is expected).
    """
    if _is_store(path):
        from tmt.store.ops import validate_store

        index = validate_store(path, checksums=not no_checksums)
        click.echo(f"ok: {path}: {index['rows']} rows in {len(index['shards'])} shards")
    else:
        from tmt.store.manifest import validate_manifest

        if not Path(path).exists():
            raise StoreError(f"not found: {path}")
        info = validate_manifest(path)
        click.echo(f"ok: {path}: {info['rows']} rows")


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats(path: str, as_json: bool) -> None:
    """Rows, tokens per modality, rows with and without speech, length percentiles, bytes, synthetic rows.

    A store's files are checked first, as `validate --no-checksums` does (a damaged store is an error)."""
    if _is_store(path):
        from tmt.store.ops import store_stats, validate_store

        validate_store(path, checksums=False, check_ids=False)
        s = store_stats(path)
        if as_json:
            echo_json(s)
            return
        click.echo(
            f"{s['store']}: {s['rows']:,} rows ({s['real_rows']:,} real, {s['synthetic_rows']:,} synthetic) "
            f"in {s['shards']} shards, {s['bytes']:,} bytes ({s['bytes_per_row']:.1f} per row)"
        )
        rows = [
            [name, v["rows_present"], v["tokens"], v["len_min"], v["len_p5"], v["len_p50"], v["len_p95"], v["len_max"], v["vocab_size"]]
            for name, v in s["streams"].items()
        ]
        click.echo(format_table(rows, ["stream", "rows", "tokens", "min", "p5", "p50", "p95", "max", "vocab"]))
        with_speech = s["streams"].get("speech", {}).get("rows_present", 0)
        click.echo(f"rows with speech: {with_speech:,}, without speech: {s['rows'] - with_speech:,}")
        if s["synthetic_by_direction"]:
            click.echo("synthetic rows: " + ", ".join(f"{k}={v}" for k, v in s["synthetic_by_direction"].items()))
    else:
        from tmt.store.manifest import validate_manifest

        info = validate_manifest(path, check_files=False)
        if as_json:
            echo_json(info)
            return
        click.echo(f"{path}: {info['rows']:,} rows ({info['rows_with_speech']:,} with speech, "
                   f"{info['rows_without_speech']:,} without)")
        rows = [[sp, c["rows"], c["text"], c["speech"], c["rows"] - c["speech"], c["image"]]
                for sp, c in sorted(info["splits"].items())]
        click.echo(format_table(rows, ["split", "rows", "text", "speech", "no speech", "image"]))


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.argument("path", type=click.Path())
@click.option("-n", "num", default=5, help="Number of rows.")
def head(path: str, num: int) -> None:
    """Print the first rows as JSON lines (stores: metadata plus tokens).

    A store's files are checked first, as `validate --no-checksums` does (a damaged store is an error)."""
    if _is_store(path):
        from tmt.store.ops import validate_store
        from tmt.store.token_store import TokenStore

        validate_store(path, checksums=False, check_ids=False)
        store = TokenStore(path)
        for i in range(min(num, len(store))):
            row = store[i]
            out = dict(row.meta)
            out["tokens"] = {k: v.tolist() for k, v in row.tokens.items() if len(v)}
            click.echo(json.dumps(out, ensure_ascii=False))
    else:
        from tmt.store.manifest import iter_manifest

        for i, raw in enumerate(iter_manifest(path)):
            if i >= num:
                break
            click.echo(json.dumps(raw, ensure_ascii=False))


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(), help="Output store directory or manifest file.")
def combine(inputs: tuple[str, ...], out: str) -> None:
    """Concatenate stores (or raw manifests) in order into one."""
    if all(_is_store(p) for p in inputs):
        from tmt.store.ops import combine_stores

        index = combine_stores(list(inputs), out)
        click.echo(f"wrote {out}: {index['rows']} rows")
    elif not any(_is_store(p) for p in inputs):
        from tmt.store.manifest import read_manifest, validate_rows, write_manifest

        rows = [r for p in inputs for r in read_manifest(p)]
        validate_rows(rows, check_files=False)
        n = write_manifest(out, rows)
        click.echo(f"wrote {out}: {n} rows")
    else:
        raise StoreError("combine takes either stores (directories) or raw manifests (files), not a mix")


def _parse_fractions(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in spec.split(","):
        name, _, val = part.partition("=")
        try:
            out[name.strip()] = float(val)
        except ValueError:
            raise StoreError(f"--fractions expects name=fraction,... got '{spec}'") from None
    return out


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.argument("path", type=click.Path())
@click.option("--fractions", required=True, help="Comma list name=fraction, e.g. train=0.9,valid=0.1.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Where the parts go.")
@click.option("--seed", default=0, help="Shuffle seed.")
def split(path: str, fractions: str, out_dir: str, seed: int) -> None:
    """Split by group (rows of one image stay together) into named parts."""
    from tmt.store.manifest import split_rows

    fr = _parse_fractions(fractions)
    out = Path(out_dir)
    if _is_store(path):
        from tmt.store.token_store import TokenStore, TokenStoreWriter

        store = TokenStore(path)
        metas = list(store.iter_meta())
        for i, m in enumerate(metas):
            m["_row"] = i
        parts = split_rows([m | {"group": m.get("group") or m["id"]} for m in metas], fr, seed=seed)
        aux = {s: store.vocab_sizes[s] for s in store.streams}
        for name, rows in parts.items():
            with TokenStoreWriter(
                out / name, streams=aux, fingerprints=store.fingerprints,
                tokenizers=store.index.get("tokenizers"), source={"split_of": str(path), "part": name},
            ) as w:
                for m in rows:
                    i = m.pop("_row")
                    m.pop("modalities", None)
                    m.pop("lengths", None)
                    w.add(m, store[i].tokens | {})
            click.echo(f"wrote {out / name}: {len(rows)} rows")
    else:
        from tmt.store.manifest import read_manifest, write_manifest

        parts = split_rows(read_manifest(path), fr, seed=seed)
        for name, rows in parts.items():
            write_manifest(out / f"{name}.jsonl.gz", rows)
            click.echo(f"wrote {out / (name + '.jsonl.gz')}: {len(rows)} rows")


@cli.command("merge-parts", context_settings=CONTEXT, epilog=EPILOG)
@click.argument("store", type=click.Path())
@click.option("--parts", "num_parts", required=True, type=int, help="N of the --shard k/N jobs.")
def merge_parts_cmd(store: str, num_parts: int) -> None:
    """Merge the parts written by `--shard k/N` jobs into STORE."""
    from tmt.store.ops import merge_parts

    index = merge_parts(store, num_parts)
    click.echo(f"merged {num_parts} parts into {store}: {index['rows']} rows")
