"""Guidance and self-reranking of image targets on the synthetic stores (issue 18, section 2).

Each synthetic text has exactly one right image (`tmt.training.synthetic.scene_tokens`), so
exact image-token match measures how often a decoding setting finds it. Train the model first:

    python -c "from tmt.training.synthetic import make_synthetic_store, synthetic_vocab; \\
      make_synthetic_store('st', num_scenes=60); synthetic_vocab().save('vocab.json')"
    tmt train -o exp --preset tiny --vocab vocab.json --store st --directions t2i,i2t --max-steps 200 \\
      --seed 0 --device cpu [--set model.null_source_prob=0.1]
    python benchmarks/image_decoding.py exp --seed 0 --out image_decoding.json

Prints a table (exact match and token accuracy per setting) and writes json. Settings with
guidance are skipped for a model trained without null sources (it refuses them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tmt.generation.generator import GenerationConfig, Generator
from tmt.models.checkpoint import load_model
from tmt.training.synthetic import scene_tokens

SETTINGS: list[dict[str, float]] = [
    {"guidance": 0.0}, {"guidance": 0.5}, {"guidance": 1.0}, {"guidance": 2.0},
    {"guidance": 0.0, "rerank": 4}, {"guidance": 0.5, "rerank": 4}, {"guidance": 1.0, "rerank": 4},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exp", help="model directory trained on the synthetic stores (t2i at least)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument("--out", default="benchmarks/results/image_decoding.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.exp)
    toks = [scene_tokens(i % 20, (i // 20 + i) % 9) for i in range(60)]
    src, ref = [t["text"] for t in toks], [t["image"] for t in toks]
    rows = []
    for kw in SETTINGS:
        if kw["guidance"] and model.config.null_source_prob == 0:
            continue
        cfg = GenerationConfig(strategy="sample", top_k=16, seed=args.seed, batch_size=16, **kw)  # type: ignore[arg-type]
        out = Generator(model, model.vocab, cfg, image_len=len(ref[0])).generate(src, "text", "image")
        hyp = [o["image"][0].tokens for o in out]
        rows.append({**kw, "exact": float(np.mean([np.array_equal(h, r) for h, r in zip(hyp, ref, strict=True)])),
                     "token_acc": float(np.mean([np.mean(h == r) for h, r in zip(hyp, ref, strict=True)]))})
    print(f"model {args.exp} (null_source_prob {model.config.null_source_prob}), seed {args.seed}, 60 texts")
    print(f"{'guidance':>8} {'rerank':>6} {'exact':>6} {'token':>6}")
    for r in rows:
        print(f"{r['guidance']:>8} {int(r.get('rerank', 0)):>6} {r['exact']:>6.3f} {r['token_acc']:>6.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"exp": args.exp, "seed": args.seed, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
