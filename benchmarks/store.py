"""Token store vs fairseq speech-to-unit style TSV (units inline as text).

Rows shaped like the paper's data: speech 100-400 units, image 32 codes, text ~15
wordpieces. Measures write and read throughput (rows/s, MB/s), the time to scan
every row's lengths (what bucketing needs), and bytes per row.

    python benchmarks/store.py            # 1M rows (a few minutes, ~2 GB of temp files)
    python benchmarks/store.py --quick    # 50k rows
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json

from tmt.store.token_store import TokenStore, TokenStoreWriter

SIZES = {"text": 30522, "speech": 200, "image": 8192}


def make_rows(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sp_len = rng.integers(100, 401, n)
    tx_len = np.clip(rng.normal(15, 4, n).astype(int), 5, 40)
    for i in range(n):
        yield (
            f"utt{i:07d}",
            rng.integers(0, SIZES["text"], tx_len[i], dtype=np.int64),
            rng.integers(0, SIZES["speech"], sp_len[i], dtype=np.int64),
            rng.integers(0, SIZES["image"], 32, dtype=np.int64),
        )


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def bench_store(root: Path, n: int) -> dict:
    t0 = time.perf_counter()
    with TokenStoreWriter(root, streams=SIZES, shard_rows=200_000) as w:
        for rid, tx, sp, im in make_rows(n):
            w.add({"id": rid, "group": rid}, {"text": tx, "speech": sp, "image": im})
    write_s = time.perf_counter() - t0
    size = dir_bytes(root)

    t0 = time.perf_counter()
    s = TokenStore(root)
    lens = {m: s.lengths(m) for m in SIZES}
    scan_s = time.perf_counter() - t0
    assert int(lens["image"].sum()) == 32 * n

    t0 = time.perf_counter()
    s = TokenStore(root)
    tokens = 0
    for sh in range(len(s.shards)):
        bins = {m: s._bin(sh, m) for m in SIZES}
        for j in range(len(bins["text"])):
            for m in SIZES:
                tokens += len(bins[m][j])
    read_s = time.perf_counter() - t0
    return {"write_s": write_s, "scan_s": scan_s, "read_s": read_s, "bytes": size, "tokens": tokens}


def bench_tsv(path: Path, n: int) -> dict:
    # fairseq speech-to-unit manifests keep units inline as space-separated text
    t0 = time.perf_counter()
    with open(path, "w") as f:
        f.write("id\ttgt_text\ttgt_audio\timage\n")
        for rid, tx, sp, im in make_rows(n):
            f.write(f"{rid}\t{' '.join(map(str, tx))}\t{' '.join(map(str, sp))}\t{' '.join(map(str, im))}\n")
    write_s = time.perf_counter() - t0
    size = path.stat().st_size

    t0 = time.perf_counter()
    lens: list[tuple[int, int, int]] = []
    with open(path) as f:
        next(f)
        for line in f:
            _, a, b, c = line.rstrip("\n").split("\t")
            lens.append((a.count(" ") + 1, b.count(" ") + 1, c.count(" ") + 1))
    scan_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    tokens = 0
    with open(path) as f:
        next(f)
        for line in f:
            for col in line.rstrip("\n").split("\t")[1:]:
                tokens += len(np.array(col.split(), dtype=np.int64))
    read_s = time.perf_counter() - t0
    return {"write_s": write_s, "scan_s": scan_s, "read_s": read_s, "bytes": size, "tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="50k rows")
    ap.add_argument("--tmp", default=None, help="directory for the temporary files")
    args = ap.parse_args()
    n = 50_000 if args.quick else args.rows
    tmp = Path(tempfile.mkdtemp(dir=args.tmp, prefix="tmt-bench-store-"))
    try:
        print(f"{n:,} rows, speech 100-400 units, image 32, text ~15; temp dir {tmp}", file=sys.stderr)
        ours = bench_store(tmp / "store", n)
        tsv = bench_tsv(tmp / "units.tsv", n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert ours["tokens"] == tsv["tokens"]
    rows = []
    for name, r in (("tmt store (.bin/.idx)", ours), ("fairseq-style TSV", tsv)):
        rows.append([
            name, r["bytes"] / n, n / r["write_s"], r["bytes"] / r["write_s"] / 1e6,
            n / r["read_s"], r["bytes"] / r["read_s"] / 1e6, r["scan_s"],
        ])
    print_table(rows, ["format", "bytes/row", "write rows/s", "write MB/s", "read rows/s", "read MB/s", "length scan s"],
                title=f"Token store vs inline-unit TSV, {n:,} rows")
    ratios = {
        "size_ratio_tsv_over_store": tsv["bytes"] / ours["bytes"],
        "scan_speedup": tsv["scan_s"] / ours["scan_s"],
        "read_speedup": tsv["read_s"] / ours["read_s"],
        "write_speedup": tsv["write_s"] / ours["write_s"],
    }
    print_table([[k, v] for k, v in ratios.items()], ["ratio", "value"], title="Ratios (goal: size >= 3x, scan >= 10x)")
    write_json("store", {"rows": n, "store": ours, "tsv": tsv, "ratios": ratios})


if __name__ == "__main__":
    main()
