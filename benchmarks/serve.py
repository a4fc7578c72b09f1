"""Load test of `tmt serve` on 127.0.0.1: latency, throughput and batching under concurrency.

Starts `tmt serve` as a subprocess on a free local port (a given experiment, or the tiny
trained pipeline the tests use, built once into a cache), then sends requests at concurrency
1, 4 and 16 in two workloads:

- mixed: all six directions in turn (real captions, wavs and pngs of the corpus: 16 of each)
- text:  text targets only (image -> text, speech -> text), where batching should pay most

Each level is bounded by a request count and a time limit. Reported per level: p50/p95
latency, requests/s, errors, the mean batch the server decoded, and the speed-up in
requests/s over concurrency 1; the server's RSS after warm-up and at the end.

    python benchmarks/serve.py                          # tiny pipeline, 512 mixed + 192 text requests per level
    python benchmarks/serve.py -m exp/scenes-quick/exp/tmt --vocoder exp/scenes-quick/exp/vocoder
    python benchmarks/serve.py --requests 100 --text-requests 50 --max-seconds 60    # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json

REPO = Path(__file__).resolve().parents[1]
MIXED = [("image", "text"), ("text", "image"), ("speech", "text"), ("text", "speech"), ("image", "speech"),
         ("speech", "image")]
TEXT_ONLY = [("image", "text"), ("speech", "text")]


def tiny_pipeline(cache: Path) -> tuple[Path, Path, Path]:
    """(experiment, vocoder, train manifest) of the tests' tiny pipeline, built once under `cache`."""
    root = cache / "serve-bench"
    if not (root / "done").is_file():
        spec = importlib.util.spec_from_file_location("_tmt_tiny_pipeline", REPO / "tests/integration/conftest.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        print(f"building the tiny pipeline into {root} (once; a minute or two)", file=sys.stderr)
        root.mkdir(parents=True, exist_ok=True)
        mod.build_tiny_pipeline(root)
        (root / "done").write_text("ok\n")
    corpus = next(root.glob("scenes-*"))
    return root / "exp", root / "vocoder", corpus / "train.jsonl.gz"  # more distinct inputs than test


def samples(manifest: Path, n: int = 16) -> dict[str, list[Any]]:
    """Up to n captions, wav bytes and png bytes from a raw manifest."""
    from tmt.store.manifest import media_path, read_manifest

    out: dict[str, list[Any]] = {"text": [], "speech": [], "image": []}
    images: set[str] = set()  # several rows (captions) share one image
    for row in read_manifest(manifest):
        if row.get("text") and len(out["text"]) < n:
            out["text"].append(row["text"])
        if row.get("speech") and len(out["speech"]) < n:
            out["speech"].append(media_path(manifest, row["speech"]).read_bytes())
        if row.get("image") and len(out["image"]) < n and row["image"] not in images:
            out["image"].append(media_path(manifest, row["image"]).read_bytes())
            images.add(row["image"])
    for m, v in out.items():
        if not v:
            raise SystemExit(f"{manifest} has no {m} rows")
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_kwargs(src: str, tgt: str, data: dict[str, list[Any]], i: int) -> dict[str, Any]:
    pool = data[src]
    item = pool[i % len(pool)]
    if src == "text":
        return {"data": {"to": tgt, "text": item}}
    name, mime = ("in.wav", "audio/wav") if src == "speech" else ("in.png", "image/png")
    return {"data": {"to": tgt}, "files": {"file": (name, item, mime)}}


async def run_level(url: str, directions: list[tuple[str, str]], data: dict[str, list[Any]], *, n: int,
                    concurrency: int, max_seconds: float) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    errors: dict[str, int] = {}
    counter = itertools.count()
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=concurrency)) as c:
        before = (await c.get("/api/health")).json()

        async def client() -> None:
            while True:
                i = next(counter)
                if i >= n or time.perf_counter() - t0 > max_seconds:
                    return
                src, tgt = directions[i % len(directions)]
                start = time.perf_counter()
                try:
                    r = await c.post("/api/translate", **request_kwargs(src, tgt, data, i))
                    ok = r.status_code == 200
                    why = f"{r.status_code}: {r.text[:120]}"
                except httpx.HTTPError as e:
                    ok, why = False, f"{type(e).__name__}: {e}"
                if ok:
                    lat.append(time.perf_counter() - start)
                else:
                    errors[why] = errors.get(why, 0) + 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        after = (await c.get("/api/health")).json()
    done = len(lat) + sum(errors.values())
    batches = after["batches"] - before["batches"]
    lat.sort()
    return {
        "concurrency": concurrency, "requests": done, "ok": len(lat), "errors": sum(errors.values()),
        "error_kinds": errors, "wall_s": round(wall, 2), "req_per_s": round(len(lat) / wall, 2) if wall else 0.0,
        "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
        "p95_ms": round(1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1) if lat else None,
        "mean_batch": round((after["requests"] - before["requests"]) / batches, 2) if batches else None,
        "largest_batch": after["largest_batch"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", type=Path, default=None, help="experiment directory (default: the tiny pipeline)")
    ap.add_argument("--vocoder", type=Path, default=None, help="unit vocoder directory (with --model)")
    ap.add_argument("--manifest", type=Path, default=None, help="raw manifest to draw inputs from (with --model)")
    ap.add_argument("--requests", type=int, default=512, help="mixed requests per concurrency level")
    ap.add_argument("--text-requests", type=int, default=192, help="text-target requests per concurrency level")
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated levels")
    ap.add_argument("--max-seconds", type=float, default=300.0, help="time limit per level")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--max-batch", type=int, default=16, help="server's --max-batch")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMT_TEST_CACHE", Path.home() / ".cache/tmt/testing")))
    args = ap.parse_args()

    if args.model is None:
        exp, vocoder, manifest = tiny_pipeline(args.cache)
    else:
        if args.manifest is None:
            raise SystemExit("--model needs --manifest (a raw manifest with text, speech and image rows)")
        exp, vocoder, manifest = args.model, args.vocoder, args.manifest
    data = samples(manifest)
    levels = [int(c) for c in args.concurrency.split(",")]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tmt", "--log-level", "warning", "serve", "-m", str(exp), "--port", str(port),
           "--threads", str(args.threads), "--max-batch", str(args.max_batch), "--queue-size", "256"]
    if vocoder is not None:
        cmd += ["--vocoder", str(vocoder)]
    log = tempfile.NamedTemporaryFile(prefix="tmt-serve-bench.", suffix=".log", delete=False)
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"tmt serve exited ({proc.returncode}); see {log.name}")
            try:
                if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"tmt serve did not start in 180 s; see {log.name}")
            time.sleep(0.5)
        info = httpx.get(url + "/api/info").json()
        # warm-up: every direction a few times, then measure memory
        asyncio.run(run_level(url, MIXED, data, n=24, concurrency=4, max_seconds=120))
        rss_before = rss_mb(proc.pid)
        results: dict[str, list[dict[str, Any]]] = {}
        for name, directions, n in (("mixed", MIXED, args.requests), ("text", TEXT_ONLY, args.text_requests)):
            results[name] = []
            for c in levels:
                r = asyncio.run(run_level(url, directions, data, n=n, concurrency=c, max_seconds=args.max_seconds))
                print(f"{name} c={c}: {r['ok']}/{r['requests']} ok, {r['req_per_s']} req/s, p50 {r['p50_ms']} ms",
                      file=sys.stderr)
                results[name].append(r)
            base = results[name][0]["req_per_s"] or float("nan")
            for r in results[name]:
                r["speedup"] = round(r["req_per_s"] / base, 2) if base else None
        rss_after = rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

    rows = [[name, r["concurrency"], r["requests"], r["errors"], r["p50_ms"], r["p95_ms"], r["req_per_s"],
             r["speedup"], r["mean_batch"]] for name, rs in results.items() for r in rs]
    print_table(rows, ["workload", "conc", "requests", "errors", "p50 ms", "p95 ms", "req/s", "speed-up", "mean batch"],
                title=f"tmt serve on 127.0.0.1 ({exp}; server threads {args.threads}, max batch {args.max_batch})")
    print(f"\nserver RSS: {rss_before} MB after warm-up, {rss_after} MB at the end "
          f"({rss_after - rss_before:+.1f} MB)")
    write_json("serve", {
        "model": str(exp), "vocoder": str(vocoder) if vocoder else None, "decoding": info.get("decoding"),
        "server_threads": args.threads, "max_batch": args.max_batch, "results": results,
        "rss_mb": {"after_warmup": rss_before, "end": rss_after, "growth": round(rss_after - rss_before, 1)},
    })


if __name__ == "__main__":
    main()
