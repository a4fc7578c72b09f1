"""Training-step throughput: tmt's six-way step vs two reference-style implementations.

All three use the same fairseq2 encoder/decoder blocks, the paper's vocabulary sizes
(text 30522, speech 200, image 8192; 16 specials), a small d_model, the same batch of
rows (each row has text, speech and image) and AdamW; 2 CPU threads.

- ours: each source modality encoded once, decoded into both others; output projected
  onto the target modality's slice (+ <eos>) at non-pad positions only.
- (a) "released code": six independent encoder+decoder passes per step, one untied output
  head per target modality, logits at every (padded) position.
- (b) "paper text": six independent passes, softmax over the full joint vocabulary.

Reported: target tokens/s of a full step (forward, backward, optimizer), the speed-up over
(a) and (b), and model FLOPs utilisation (FLOPs counted with torch's FlopCounterMode,
divided by the measured fp32 matmul peak of this machine at the same thread count).

    python benchmarks/training.py            # d 256, 3+3 layers, 8 rows
    python benchmarks/training.py --quick    # d 128, 2+2 layers, 4 rows
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from fairseq2.nn import BatchLayout
from torch.utils.flop_counter import FlopCounterMode

from tmt.core.modality import ALL_DIRECTIONS, parse_direction
from tmt.models.config import TmtModelConfig
from tmt.models.tmt import TmtModel, create_model
from tmt.store.pipeline import RowBatch, decoder_io
from tmt.training.steps import SixWayStep
from tmt.vocab import PAD, PAPER_SIZES, JointVocab

ROOT = Path(__file__).resolve().parent


def make_batch(vocab: JointVocab, rows: int, *, image_len: int, seed: int = 0) -> RowBatch:
    g = torch.Generator().manual_seed(seed)
    lens = {"text": (10, 24), "speech": (80, 160), "image": (image_len, image_len + 1)}
    b = RowBatch(ids=[f"r{i}" for i in range(rows)], seqs={m: [] for m in lens})
    for _ in range(rows):
        for m, (lo, hi) in lens.items():
            n = int(torch.randint(lo, hi, (1,), generator=g))
            s, e = vocab.range(m)
            b.seqs[m].append(torch.randint(s, e, (n,), generator=g))
    return b


class SixPasses(torch.nn.Module):
    """Reference style: one full encoder+decoder pass per direction, padded logits."""

    def __init__(self, model: TmtModel, heads: str) -> None:
        super().__init__()
        self.model = model
        self.mode = heads
        if heads == "per_modality":
            # the released code's way: a separate output layer per target modality
            self.heads = torch.nn.ModuleDict({
                m: torch.nn.Linear(model.model_dim, model.vocab.sizes[m] + 1, bias=False)
                for m in ("text", "speech", "image")
            })

    def forward(self, batch: RowBatch, label_smoothing: float = 0.1) -> tuple[torch.Tensor, None]:
        m = self.model
        losses = []
        for d in ALL_DIRECTIONS:
            src, tgt = parse_direction(d)
            rows = list(range(len(batch)))
            x, lens = batch.source(src, rows)
            enc, lay = m.encode(x, BatchLayout.of(x, lens))
            ti, to, tl = decoder_io([batch.seqs[tgt][i] for i in rows], tgt)  # type: ignore[misc]
            h = m.decode(enc, lay, ti, BatchLayout.of(ti, tl))
            if self.mode == "per_modality":
                logits = self.heads[tgt](h)
                local = m.to_slice_targets(to, tgt)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), local.flatten(), ignore_index=-100,
                                       label_smoothing=label_smoothing)
            else:
                logits = m.final_proj(h)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), to.flatten(), ignore_index=PAD,
                                       label_smoothing=label_smoothing)
            losses.append(loss)
        return torch.stack(losses).mean(), None


def matmul_peak(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def bench(module: torch.nn.Module, batch: RowBatch, steps: int) -> dict[str, float]:
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        loss, _ = module(batch, 0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    with FlopCounterMode(display=False) as fc:
        step()
    flops = float(fc.get_total_flops())
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"step_s": statistics.median(times), "flops": flops}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small model and batch, few steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "results" / "training.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = JointVocab.from_sizes(PAPER_SIZES)
    if args.quick:
        cfg = TmtModelConfig(model_dim=128, num_encoder_layers=2, num_decoder_layers=2, num_heads=4,
                             ffn_inner_dim=512, dropout_p=0.0)
        rows, image_len, steps = 4, 32, args.steps or 3
    else:
        cfg = TmtModelConfig(model_dim=256, num_encoder_layers=3, num_decoder_layers=3, num_heads=4,
                             ffn_inner_dim=1024, dropout_p=0.0)
        rows, image_len, steps = 8, 64, args.steps or 8
    batch = make_batch(vocab, rows, image_len=image_len)
    target_tokens = sum(
        len(batch.seqs[parse_direction(d)[1]][i]) + 1 for d in ALL_DIRECTIONS for i in range(rows)
    )
    peak = matmul_peak()
    impls: dict[str, torch.nn.Module] = {
        "ours (encode once, sliced softmax)": SixWayStep(create_model(cfg, vocab), list(ALL_DIRECTIONS)),
        "(a) six passes, head per modality": SixPasses(create_model(cfg, vocab), "per_modality"),
        "(b) six passes, full 38930 softmax": SixPasses(create_model(cfg, vocab), "full"),
    }
    results: dict[str, dict[str, float]] = {}
    for name, mod in impls.items():
        mod.train()
        r = bench(mod, batch, steps)
        r["tokens_per_s"] = target_tokens / r["step_s"]
        r["mfu"] = r["flops"] / r["step_s"] / peak
        results[name] = r
        print(f"  {name}: {r['step_s']*1000:.0f} ms/step", file=sys.stderr)
    ours = results["ours (encode once, sliced softmax)"]
    a = results["(a) six passes, head per modality"]
    header = ["implementation", "ms/step", "target tok/s", "GFLOP/step", "MFU", "ours speed-up"]
    rows_out = []
    for name, r in results.items():
        rows_out.append([name, f"{r['step_s']*1000:.0f}", f"{r['tokens_per_s']:.0f}", f"{r['flops']/1e9:.2f}",
                         f"{100*r['mfu']:.1f}%", f"{r['step_s'] and ours['tokens_per_s']/r['tokens_per_s']:.2f}x"])
    widths = [max(len(str(x[i])) for x in [header, *rows_out]) for i in range(len(header))]
    print(f"training step, d {cfg.model_dim}, {cfg.num_encoder_layers}+{cfg.num_decoder_layers} layers, {rows} rows "
          f"({target_tokens} target tokens over 6 directions), {args.threads} threads, "
          f"matmul peak {peak/1e9:.1f} GFLOP/s")
    for i, row in enumerate([header, *rows_out]):
        print("  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    speedup = ours["tokens_per_s"] / a["tokens_per_s"]
    print(f"goal: >= 1.5x of (a): {speedup:.2f}x -> {'met' if speedup >= 1.5 else 'NOT met'}")
    out: dict[str, Any] = {
        "benchmark": "training", "quick": args.quick, "threads": args.threads, "model": cfg.__dict__,
        "rows": rows, "target_tokens": target_tokens, "matmul_peak_flops": peak, "results": results,
        "speedup_vs_a": speedup, "speedup_vs_b": ours["tokens_per_s"] / results["(b) six passes, full 38930 softmax"]["tokens_per_s"],
        "machine": platform.platform(), "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
