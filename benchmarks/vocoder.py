"""Unit vocoder synthesis speed: real-time factor (audio seconds per wall second), one core by default.

For each config (`demo`, `paper`, `unit-mel`, `unit-world`) the same utterances (random units,
durations 1..6 frames, fixed seed) are synthesised batched (one padded batch)
and one by one; the table gives both real-time factors, their ratio, and whether batched
synthesis meets issue 19's target (>= 50x real time on one core). Preset weights
are untrained: durations are given, so the audio length does not depend on them, and
for `hifigan` and `unit-mel` neither does the time. `unit-world`'s does: WORLD spends
one pulse per F0 period in voiced frames and 500 pulses a second in unvoiced ones, and
an untrained network votes unvoiced for about half the frames (real speech: ~28%). So
`--vocoder DIR --store S` also times trained vocoders on a store's real units and durations
(the first utterances of S), the numbers a user gets. Every unit-world row is timed with each
WORLD synthesizer (`--synthesizers`): `pyworld.synthesize` (the peer) and tmt's batched one.

    .venv/bin/python benchmarks/vocoder.py            # 16 utterances of ~3 s
    .venv/bin/python benchmarks/vocoder.py --quick    # 4 utterances of ~1.5 s
    .venv/bin/python benchmarks/vocoder.py --configs unit-world --set world.synthesis_fft=512
    .venv/bin/python benchmarks/vocoder.py --configs unit-world --vocoder exp/vocoder-world \
        --store data/store/valid             # + a trained vocoder on real units

Writes benchmarks/results/vocoder.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tmt.cli._common import format_table
from tmt.core.audio import SAMPLE_RATE
from tmt.vocoder import UnitVocoder, build_model, load_vocoder, resolve_config
from tmt.vocoder.synthesis import read_vocoder_json
from tmt.vocoder.testing import random_units

TARGET_RTF = 50.0
"""Issue 19: batched synthesis at least this many times faster than real time on one core."""


def _time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _inputs(store: str | None, n_utts: int, n_units: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(units, durations) of the first `n_utts` utterances of `store`, else random ones."""
    if store is None:
        rng = np.random.default_rng(0)
        pairs = [random_units(rng, 200, int(rng.integers(n_units // 2, n_units + 1))) for _ in range(n_utts)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    from tmt.store.token_store import TokenStore

    ts = TokenStore(store)
    take = np.flatnonzero(ts.lengths("speech") > 0)[:n_utts]  # from the index files: no row read twice
    return [np.asarray(ts.tokens(int(i), "speech")) for i in take], [np.asarray(ts.tokens(int(i), "durations")) for i in take]


def _vocoder(name: str, overrides: list[str], *, trained: bool, num_units: int) -> UnitVocoder:
    """A preset with untrained weights (`num_units` units, as many as the input has), or a trained vocoder
    directory with the overrides applied (synthesis settings only, e.g. world.synthesis_fft) and WORLD in
    this one process."""
    if not trained:
        cfg = resolve_config(name, None, [f"num_units={num_units}", *overrides])
        return UnitVocoder(build_model(cfg), cfg)
    one_core = ["world.workers=1"] if _arch(name) == "unit-world" else []
    return load_vocoder(name, settings=one_core + overrides)


def _arch(name: str) -> str:
    """A preset's or a trained vocoder directory's arch (from its vocoder.json: no weights read)."""
    return str(read_vocoder_json(name)["arch"]) if Path(name).is_dir() else resolve_config(name).arch


def _rows(names: list[str], synthesizers: list[str]) -> list[tuple[str, str]]:
    """(config or vocoder dir, WORLD synthesizer or "") per table row: unit-world ones once per synthesizer."""
    rows = []
    for name in names:
        rows += [(name, s) for s in synthesizers] if _arch(name) == "unit-world" else [(name, "")]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run (4 short utterances, 1 repeat)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the target is for one core)")
    ap.add_argument("--configs", default="demo,paper,unit-mel,unit-world")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value of every config, e.g. world.synthesis_fft=512")
    ap.add_argument("--vocoder", action="append", default=[], metavar="DIR",
                    help="also time this trained vocoder directory (repeatable; needs --store)")
    ap.add_argument("--synthesizers", default="batched,pyworld",
                    help="unit-world rows: time each of these world.synthesizer values (default: both)")
    ap.add_argument("--store", help="token store with speech + durations: its first utterances are the input "
                                    "of every row (default: random units)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "vocoder.json"))
    args = ap.parse_args()
    if args.vocoder and not args.store:
        ap.error("--vocoder needs --store (a trained vocoder is timed on real units)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # best of 5: on the 2-core machine the same synthesis ran 1.5x faster from one round to the next
    n_utts, n_units, repeats = (4, 40, 1) if args.quick else (16, 80, 5)
    units, durs = _inputs(args.store, n_utts, n_units)
    audio_s = sum(int(d.sum()) for d in durs) * 320 / SAMPLE_RATE
    rows, results = [], []
    for name, synthesizer in _rows(args.configs.split(",") + args.vocoder, args.synthesizers.split(",")):
        extra = [f"world.synthesizer={synthesizer}"] if synthesizer else []
        voc = _vocoder(name, args.overrides + extra, trained=name in args.vocoder,
                       num_units=max(200, max(int(u.max()) for u in units) + 1))
        cfg = voc.cfg
        label = f"{name} [{synthesizer}]" if synthesizer else name
        voc.synthesize(units[:1], durs[:1])  # warm-up
        t_batch = _time(lambda: voc.synthesize(units, durs, max_frames_per_batch=10**9), repeats)  # noqa: B023
        t_single = _time(lambda: [voc.synthesize([u], [d]) for u, d in zip(units, durs, strict=True)], repeats)  # noqa: B023
        params = sum(p.numel() for p in voc.model.parameters())
        r = {
            "config": name, "synthesizer": synthesizer or None, "arch": cfg.arch, "trained": name in args.vocoder, "input": args.store or "random units",
            "parameters": params, "utterances": len(units), "audio_seconds": round(audio_s, 2),
            "rtf_batched": audio_s / t_batch, "rtf_one_by_one": audio_s / t_single, "batched_speedup": t_single / t_batch,
        }
        results.append(r)
        r["meets_50x"] = bool(r["rtf_batched"] >= TARGET_RTF)
        rows.append([label, f"{params / 1e6:.2f}M", r["rtf_batched"], r["rtf_one_by_one"], r["batched_speedup"],
                     "yes" if r["meets_50x"] else "no"])
        print(f"{label}: done", flush=True)
    print(f"\nsynthesis real-time factor (audio s / wall s, higher is faster), {args.threads} threads, "
          f"{len(units)} utterances ({args.store or 'random units'}), {audio_s:.1f} s of audio")
    print(format_table(rows, ["config", "params", "rtf batched", "rtf one-by-one", "batched / one-by-one",
                              f">= {TARGET_RTF:.0f}x"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "vocoder synthesis RTF", "quick": args.quick, "threads": args.threads, "overrides": args.overrides,
        "torch": torch.__version__, "machine": platform.machine(), "results": results,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
