"""Beam-5 decoding: tmt's Generator vs Hugging Face BART `generate(num_beams=5)`.

Same sizes on both sides (d_model, layers, heads, FFN width, the paper's joint
vocabulary of 38,930 ids), random weights, the same output restriction (target
slice + <eos>), and the same number of decoder steps: image targets produce
exactly `image_len` tokens; speech targets are forced to a fixed length too,
so both systems do identical work. Reported per target modality:

- throughput: output tokens/s over a batch of B sources (best hypothesis tokens, no <eos>)
- latency: seconds per single input (batch of 1)

Runs are interleaved and medians reported. A profile of tmt's image decoding
(where the time goes: encoder, decoder layers, output projection, restriction,
beam-search bookkeeping) is printed after the table.

    python benchmarks/decoding.py            # d 256, 4+4 layers, B 8, image 64 / speech 96 tokens
    python benchmarks/decoding.py --quick    # d 128, 2+2 layers, B 4, image 32 / speech 48 tokens
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json

import tmt.generation.constrained as constrained
from tmt.generation.generator import GenerationConfig, Generator, LengthLimit, LengthLimits
from tmt.models.config import TmtModelConfig
from tmt.models.tmt import create_model
from tmt.vocab import BOS, EOS, PAD, PAPER_SIZES, JointVocab


def build_hf(cfg: TmtModelConfig, vocab: JointVocab) -> Any:
    import transformers
    from transformers import BartConfig, BartForConditionalGeneration

    transformers.logging.set_verbosity_error()
    return BartForConditionalGeneration(BartConfig(
        vocab_size=vocab.size, d_model=cfg.model_dim, encoder_layers=cfg.num_encoder_layers,
        decoder_layers=cfg.num_decoder_layers, encoder_attention_heads=cfg.num_heads,
        decoder_attention_heads=cfg.num_heads, encoder_ffn_dim=cfg.ffn_inner_dim, decoder_ffn_dim=cfg.ffn_inner_dim,
        max_position_embeddings=cfg.max_seq_len, pad_token_id=PAD, bos_token_id=BOS["image"], eos_token_id=EOS,
        decoder_start_token_id=BOS["image"], forced_bos_token_id=None, forced_eos_token_id=None, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, activation_function="relu", scale_embedding=True,
    )).eval()


class SliceMask:
    """HF logits processor: -inf outside the target slice + <eos> (what tmt's restriction does)."""

    def __init__(self, vocab: JointVocab, modality: str) -> None:
        self.bias = torch.full((vocab.size,), -torch.inf)
        s, e = vocab.range(modality)
        self.bias[s:e] = 0.0
        self.bias[EOS] = 0.0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores + self.bias


def sources(vocab: JointVocab, n: int, seed: int) -> list[np.ndarray]:
    """Text sources of 10-30 tokens (captions)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab.sizes["text"], int(rng.integers(10, 31))) for _ in range(n)]


def run_tmt(gen: Generator, srcs: list[np.ndarray], tgt: str, length: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = gen.generate(srcs, "text", tgt)
    dt = time.perf_counter() - t0
    n = sum(len(o[tgt][0].tokens) for o in out)
    assert n == length * len(srcs), (n, length, len(srcs))
    return dt, n


def run_hf(hf: Any, vocab: JointVocab, srcs: list[np.ndarray], tgt: str, length: int) -> tuple[float, int]:
    from transformers import LogitsProcessorList

    lens = [len(s) + 1 for s in srcs]
    ids = torch.full((len(srcs), max(lens)), PAD, dtype=torch.long)
    for i, s in enumerate(srcs):
        ids[i, : lens[i]] = torch.from_numpy(np.concatenate([vocab.to_joint("text", s), [EOS]]))
    mask = (ids != PAD).long()
    t0 = time.perf_counter()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf.generate(
            input_ids=ids, attention_mask=mask, num_beams=5, do_sample=False, max_new_tokens=length + 1,
            min_new_tokens=length + 1, length_penalty=1.0, early_stopping=False, use_cache=True,
            decoder_start_token_id=BOS[tgt], logits_processor=LogitsProcessorList([SliceMask(vocab, tgt)]),
            no_repeat_ngram_size=0,
        )
    dt = time.perf_counter() - t0
    lo, hi = vocab.range(tgt)
    body = out[:, 1 : length + 1]
    assert body.shape[1] == length and bool(((body >= lo) & (body < hi)).all())
    return dt, length * len(srcs)


def interleaved(cands: dict[str, Callable[[], tuple[float, int]]], reps: int) -> dict[str, list[tuple[float, int]]]:
    for f in cands.values():  # warm-up
        f()
    res: dict[str, list[tuple[float, int]]] = {k: [] for k in cands}
    for r in range(reps):
        items = list(cands.items())
        if r % 2:
            items.reverse()
        for k, f in items:
            res[k].append(f())
    return res


def profile_tmt(gen: Generator, srcs: list[np.ndarray], tgt: str) -> dict[str, float]:
    """Coarse split of one decoding call: wrap the wrapper's pieces with timers."""
    acc = {"encoder": 0.0, "decoder layers": 0.0, "restriction": 0.0, "model call": 0.0}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[name] += time.perf_counter() - t0
        return inner

    orig = (constrained.encode, constrained.decode_hidden, constrained.RestrictedSeq2Seq._constrain,
            constrained.RestrictedSeq2Seq.forward)
    constrained.encode = timed("encoder", orig[0])  # type: ignore[assignment]
    constrained.decode_hidden = timed("decoder layers", orig[1])  # type: ignore[assignment]
    constrained.RestrictedSeq2Seq._constrain = timed("restriction", orig[2])  # type: ignore[method-assign]
    constrained.RestrictedSeq2Seq.forward = timed("model call", orig[3])  # type: ignore[assignment,method-assign]
    try:
        t0 = time.perf_counter()
        gen.generate(srcs, "text", tgt)
        total = time.perf_counter() - t0
    finally:
        constrained.encode, constrained.decode_hidden = orig[0], orig[1]
        constrained.RestrictedSeq2Seq._constrain = orig[2]  # type: ignore[method-assign]
        constrained.RestrictedSeq2Seq.forward = orig[3]  # type: ignore[method-assign]
    proj = acc["model call"] - acc["encoder"] - acc["decoder layers"] - acc["restriction"]
    return {
        "encoder": acc["encoder"] / total,
        "decoder layers": acc["decoder layers"] / total,
        "output projection (slice) + id mapping": proj / total,
        "restriction (masks, length rules)": acc["restriction"] / total,
        "beam search bookkeeping (fairseq2)": (total - acc["model call"]) / total,
        "total_s": total,
    }


def top_ops(gen: Generator, srcs: list[np.ndarray], tgt: str, k: int = 10) -> list[list[Any]]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        gen.generate(srcs, "text", tgt)
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev) or 1.0
    return [[e.key, e.count, e.self_cpu_time_total / 1e3, 100.0 * e.self_cpu_time_total / total] for e in ev[:k]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small model, short outputs, few repetitions")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.quick:
        cfg = TmtModelConfig(model_dim=128, num_encoder_layers=2, num_decoder_layers=2, num_heads=4,
                             ffn_inner_dim=512, dropout_p=0.0, max_seq_len=256)
        B, image_len, speech_len, reps = args.batch or 4, 32, 48, args.reps or 3
    else:
        cfg = TmtModelConfig(model_dim=256, num_encoder_layers=4, num_decoder_layers=4, num_heads=4,
                             ffn_inner_dim=1024, dropout_p=0.0, max_seq_len=512)
        B, image_len, speech_len, reps = args.batch or 8, 64, 96, args.reps or 5
    vocab = JointVocab.from_sizes(PAPER_SIZES)
    ours = create_model(cfg, vocab).eval()
    hf = build_hf(cfg, vocab)
    gcfg = GenerationConfig(beam_size=5, batch_size=B,
                            lengths=LengthLimits(**{"speech": LengthLimit(a=0.0, b=speech_len, min_len=speech_len)}))
    gen = Generator(ours, vocab, gcfg, image_len=image_len)
    full = Generator(ours, vocab, gcfg, image_len=image_len)
    full.fast = False  # full-vocabulary logits, then masked: what a plain logit-mask wrapper costs
    n_ours = sum(p.numel() for p in ours.parameters())
    n_hf = sum(p.numel() for p in hf.parameters())
    print(f"params tmt={n_ours / 1e6:.2f}M hf-bart={n_hf / 1e6:.2f}M vocab={vocab.size} d={cfg.model_dim} "
          f"layers={cfg.num_encoder_layers}+{cfg.num_decoder_layers} threads={torch.get_num_threads()} B={B}")

    batch = sources(vocab, B, seed=1)
    single = sources(vocab, 1, seed=2)
    rows: list[list[Any]] = []
    results: dict[str, Any] = {"config": {"model_dim": cfg.model_dim, "layers": cfg.num_encoder_layers,
                                          "ffn": cfg.ffn_inner_dim, "vocab": vocab.size, "batch": B,
                                          "image_len": image_len, "speech_len": speech_len, "reps": reps,
                                          "threads": args.threads, "beam": 5}, "runs": {}}
    for tgt, length in (("image", image_len), ("speech", speech_len)):
        thr = interleaved({
            "tmt (sliced projection)": partial(run_tmt, gen, batch, tgt, length),
            "tmt (full logits + mask)": partial(run_tmt, full, batch, tgt, length),
            "HF BART generate + mask": partial(run_hf, hf, vocab, batch, tgt, length),
        }, reps)
        lat = interleaved({
            "tmt (sliced projection)": partial(run_tmt, gen, single, tgt, length),
            "tmt (full logits + mask)": partial(run_tmt, full, single, tgt, length),
            "HF BART generate + mask": partial(run_hf, hf, vocab, single, tgt, length),
        }, reps)
        hf_tps = statistics.median(n / dt for dt, n in thr["HF BART generate + mask"])
        for name in thr:
            tps = statistics.median(n / dt for dt, n in thr[name])
            latency = statistics.median(dt for dt, _ in lat[name])
            rows.append([f"{tgt} ({length} tok)", name, tps, latency, tps / hf_tps])
            results["runs"][f"{tgt}/{name}"] = {
                "tokens_per_s": tps, "latency_s": latency, "vs_hf": tps / hf_tps,
                "all_tokens_per_s": [n / dt for dt, n in thr[name]], "all_latency_s": [dt for dt, _ in lat[name]],
            }
    print_table(rows, ["target", "system", "out tok/s", "latency s/input", "x HF"],
                title=f"Beam 5, B={B} text sources (10-30 tokens), {reps} interleaved runs, medians")

    prof = profile_tmt(gen, batch, "image")
    print_table([[k, 100.0 * v] for k, v in prof.items() if k != "total_s"], ["tmt image decoding: part", "% of time"],
                title=f"Where the time goes (one call, {prof['total_s']:.2f} s)")
    ops = top_ops(gen, batch, "image")
    print_table(ops, ["op", "calls", "self ms", "% self"], title="Top torch ops (self CPU time)")
    results["profile"] = prof
    results["top_ops"] = [{"op": o[0], "calls": o[1], "self_ms": o[2], "percent": o[3]} for o in ops]
    write_json("decoding" + ("_quick" if args.quick else ""), results)


if __name__ == "__main__":
    main()
