"""Token store vs fairseq's speech-to-unit (S2UT) TSV manifest, units inline as text.

Rows shaped like the paper's data: speech 100-400 units, image 32 codes, text ~15
wordpieces. Measures write and read throughput (rows/s, MB/s), the time to scan
the lengths that bucketing needs, and bytes per row.

The baseline is the manifest fairseq's `examples/speech_to_speech/preprocessing/prep_s2ut_data.py`
writes: a TSV with the header `id  src_audio  src_n_frames  tgt_audio  tgt_n_frames`, where
`tgt_audio` holds the target units as space-separated text and `tgt_n_frames` their count
(`src_audio` is a path, `src_n_frames` the source length in 10 ms frames). The text and image
streams have no place in that manifest; they are two extra columns in the same style
(`tgt_text`, as in fairseq's speech-to-text manifests, and `image`), space-separated ids.

Both sides do the same work:
- write: every row's three token streams (the TSV also its two source columns);
- length scan: the lengths of all three streams. The TSV reads speech lengths from its
  `tgt_n_frames` column (no token parsing) and counts the text and image ids, since the
  manifest has no length column for them (fairseq's dataset tokenizes `tgt_text` for it);
- read: every row's tokens as int64 arrays, summed (the store side touches every token
  byte as the TSV side parses every token).
The TSV is parsed with `str.split` (faster than the `csv` reader fairseq uses). Each phase
runs `--repeats` times, the two sides interleaved, and the median is reported.

    python benchmarks/store.py            # 1M rows (long; ~2 GB of temp files per side)
    python benchmarks/store.py --quick    # 50k rows
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json

from tmt.store.token_store import TokenStore, TokenStoreWriter

SIZES = {"text": 30522, "speech": 200, "image": 8192}
HEADER = "id\tsrc_audio\tsrc_n_frames\ttgt_audio\ttgt_n_frames\ttgt_text\timage\n"


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


# ---- tmt store --------------------------------------------------------------------
def store_write(root: Path, n: int) -> None:
    if root.exists():
        shutil.rmtree(root)
    with TokenStoreWriter(root, streams=SIZES, shard_rows=200_000) as w:
        for rid, tx, sp, im in make_rows(n):
            w.add({"id": rid, "group": rid}, {"text": tx, "speech": sp, "image": im})


def store_scan(root: Path) -> dict[str, int]:
    s = TokenStore(root)
    return {m: int(s.lengths(m).sum()) for m in SIZES}


def store_read(root: Path) -> tuple[int, int]:
    s = TokenStore(root)
    tokens = total = 0
    for sh in range(len(s.shards)):
        bins = [s._bin(sh, m) for m in ("text", "speech", "image")]
        for j in range(len(bins[0])):
            for b in bins:
                x = b[j]
                tokens += len(x)
                total += int(x.sum(dtype=np.int64))
    return tokens, total


# ---- fairseq S2UT manifest ---------------------------------------------------------
def tsv_write(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write(HEADER)
        for rid, tx, sp, im in make_rows(n):
            units = " ".join(map(str, sp))
            f.write(f"{rid}\tsrc/{rid}.wav\t{2 * len(sp)}\t{units}\t{len(sp)}\t"
                    f"{' '.join(map(str, tx))}\t{' '.join(map(str, im))}\n")


def tsv_scan(path: Path) -> dict[str, int]:
    out = {"text": 0, "speech": 0, "image": 0}
    with open(path) as f:
        next(f)
        for line in f:
            cols = line.rstrip("\n").split("\t")
            out["speech"] += int(cols[4])  # tgt_n_frames
            out["text"] += cols[5].count(" ") + 1
            out["image"] += cols[6].count(" ") + 1
    return out


def tsv_read(path: Path) -> tuple[int, int]:
    tokens = total = 0
    with open(path) as f:
        next(f)
        for line in f:
            cols = line.rstrip("\n").split("\t")
            for c in (cols[5], cols[3], cols[6]):
                x = np.array(c.split(), dtype=np.int64)
                tokens += len(x)
                total += int(x.sum(dtype=np.int64))
    return tokens, total


def _time(fn, *a):
    t = time.perf_counter()
    r = fn(*a)
    return time.perf_counter() - t, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="50k rows")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each phase per side (medians reported)")
    ap.add_argument("--tmp", default=None, help="directory for the temporary files")
    args = ap.parse_args()
    n = 50_000 if args.quick else args.rows
    tmp = Path(tempfile.mkdtemp(dir=args.tmp, prefix="tmt-bench-store-"))
    root, tsv = tmp / "store", tmp / "s2ut.tsv"
    times: dict[str, dict[str, list[float]]] = {s: {"write": [], "scan": [], "read": []} for s in ("store", "tsv")}
    try:
        print(f"{n:,} rows, speech 100-400 units, image 32, text ~15; {args.repeats} repeats; temp dir {tmp}",
              file=sys.stderr)
        for rep in range(args.repeats):
            times["store"]["write"].append(_time(store_write, root, n)[0])
            times["tsv"]["write"].append(_time(tsv_write, tsv, n)[0])
            t_s, lens_s = _time(store_scan, root)
            t_t, lens_t = _time(tsv_scan, tsv)
            assert lens_s == lens_t, (lens_s, lens_t)
            times["store"]["scan"].append(t_s)
            times["tsv"]["scan"].append(t_t)
            t_s, read_s = _time(store_read, root)
            t_t, read_t = _time(tsv_read, tsv)
            assert read_s == read_t, (read_s, read_t)  # same tokens, same sum
            times["store"]["read"].append(t_s)
            times["tsv"]["read"].append(t_t)
            print(f"repeat {rep + 1}: " + ", ".join(f"{s} {p} {v[-1]:.2f}s" for s, d in times.items()
                                                      for p, v in d.items()), file=sys.stderr)
        size = {"store": dir_bytes(root), "tsv": tsv.stat().st_size}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {s: {p: statistics.median(v) for p, v in d.items()} for s, d in times.items()}
    rows = []
    for name, key in (("tmt store (.bin/.idx)", "store"), ("fairseq S2UT TSV", "tsv")):
        r, b = med[key], size[key]
        rows.append([name, b / n, n / r["write"], b / r["write"] / 1e6, n / r["read"], b / r["read"] / 1e6, r["scan"]])
    print_table(rows, ["format", "bytes/row", "write rows/s", "write MB/s", "read rows/s", "read MB/s", "length scan s"],
                title=f"Token store vs fairseq S2UT manifest, {n:,} rows, median of {args.repeats}")
    ratios = {
        "size_ratio_tsv_over_store": size["tsv"] / size["store"],
        "scan_speedup": med["tsv"]["scan"] / med["store"]["scan"],
        "read_speedup": med["tsv"]["read"] / med["store"]["read"],
        "write_speedup": med["tsv"]["write"] / med["store"]["write"],
    }
    print_table([[k, v] for k, v in ratios.items()], ["ratio", "value"], title="Ratios (goal: size >= 3x, scan >= 10x)")
    write_json("store", {"rows": n, "repeats": args.repeats, "bytes": size, "median_s": med, "all_s": times,
                         "ratios": ratios})


if __name__ == "__main__":
    main()
