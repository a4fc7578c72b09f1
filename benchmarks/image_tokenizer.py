"""Image tokenizer benchmark: speed, size and (with a fitted tokenizer) scene-graph fidelity.

Runs on the same scene images, on 2 threads:

* tmt VQ (the card's tokenizer): encode images/s (file -> tokens) and decode images/s
  (tokens -> RGB array); bytes of the stored tokens (uint16) and bits of the codes;
* the peers: PIL PNG and JPEG (q=75) codecs on the same pixels (encode = array -> file
  bytes, decode = bytes -> array), and the paper's SEED-2 ratio (32 tokens x 13 bits for a
  224x224 RGB image = 0.035% of the raw bits) for the size column;
* `--tokenizer DIR` (repeatable: one table per fitted tokenizer, any image class such as
  image-vq or image-aligned): the scenes quality bar — the fraction of test and test_novel
  images whose full scene graph `tmt.corpora.scenes.parse_scene` recovers from the
  reconstruction (encode + decode), per attribute, next to the same parser on the original
  images; plus codebook usage and token entropy on the scored images;
* `--generation-steps N` (with `--tokenizer`): generation-friendliness, the comparison that
  decides the default card: per card, a text->image model of the same preset trained for the
  same N optimizer steps on that card's tokens (same corpus, seed and decoding; train plus the
  corpus' train_extra at weight 0.5, the recipes' pool: `--generation-extra-weight`), scored by the
  scene parser on test and test_novel (`benchmarks/_friendliness.py`).

    python benchmarks/image_tokenizer.py --quick
    python benchmarks/image_tokenizer.py --scenes data/scenes --tokenizer exp/tok/image --tokenizer exp/tok/aligned
    python benchmarks/image_tokenizer.py --scenes data/scenes --tokenizer A --tokenizer B --generation-steps 3000

Writes benchmarks/results/image_tokenizer.json.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tmt.cli._common import format_table  # noqa: E402

PAPER = {"tokens": 32, "codebook": 8192, "image": (224, 224)}


def get_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--card", default=str(ROOT / "tokenizers" / "image-vq-f8-512.yaml"), help="Card (used when no --tokenizer).")
    p.add_argument("--tokenizer", action="append", default=[],
                   help="Fitted image tokenizer dir (enables the scene-graph quality bar); repeat to compare cards.")
    p.add_argument("--scenes", default=None, help="Scenes corpus dir (default: draw one into a temp dir, no speech).")
    p.add_argument("--num-images", type=int, default=400, help="Images timed.")
    p.add_argument("--threads", type=int, default=2, help="torch threads.")
    p.add_argument("--quick", action="store_true", help="Small run (60 images, 200-scene corpus).")
    p.add_argument("--splits", default="test,test_novel", help="Splits scored for the quality bar.")
    p.add_argument("--refine-steps", default="0",
                   help="Comma list: score (and, with --generation-steps, train on) each image-aligned --tokenizer "
                        "encoding with these analysis-by-synthesis steps, e.g. 0,10 (image-vq cards: 0 only).")
    p.add_argument("--generation-steps", type=int, default=0,
                   help="Generation-friendliness: train a text->image model for N steps per --tokenizer (0: off).")
    p.add_argument("--generation-preset", default="demo", help="Model preset of those text->image models.")
    p.add_argument("--generation-limit", type=int, default=150, help="Test rows each model translates per split.")
    p.add_argument("--generation-extra-weight", type=float, default=0.5,
                   help="Sampling weight of the corpus' train_extra split in those models' training, beside train's 1 "
                        "(the recipes' default; 0: train only).")
    p.add_argument("--generation-code-init", type=float, default=1.0,
                   help="`image_code_init` of those models: their image-token rows start from the card's code "
                        "features (1.0, as the quick preset trains; 0: random rows, as full and mid do).")
    p.add_argument("--work-dir", default=None,
                   help="Stores, models and outputs of the generation runs (default: a temp dir; give one to resume).")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "image_tokenizer.json"))
    return p.parse_args()


def scene_images(corpus: Path, splits: list[str]) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """split -> [(image path, scene graph)] (one entry per image, not per caption)."""
    from tmt.store.manifest import media_path, read_manifest

    out: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for s in splits:
        m = corpus / f"{s}.jsonl.gz"
        if not m.is_file():
            continue
        seen: dict[str, tuple[Path, dict[str, Any]]] = {}
        for r in read_manifest(m):
            if r.get("image") and r["image"] not in seen:
                seen[r["image"]] = (media_path(m, r["image"]), r["scene"])
        out[s] = list(seen.values())
    return out


def label(tok: Any) -> str:
    """The tokenizer's name, with its analysis-by-synthesis steps where it encodes with some."""
    r = getattr(tok, "refine_steps", 0)
    return f"{tok.name} refine {r}" if r else str(tok.name)


def timed(fn: Any, n: int, repeat: int = 2) -> float:
    """Best-of-`repeat` items per second."""
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    args = get_args()
    import torch

    from tmt.tokenizers.base import load_card, resolve_class

    torch.set_num_threads(args.threads)
    n = 60 if args.quick else args.num_images
    tmp = None
    if args.scenes:
        corpus = Path(args.scenes)
    else:
        from tmt.corpora.scenes import prepare_scenes

        tmp = tempfile.TemporaryDirectory()
        corpus = Path(tmp.name) / "scenes"
        prepare_scenes(corpus, num_scenes=200 if args.quick else 2000, speech=False, progress=False)
    all_imgs = [p for ps in scene_images(corpus, ["train", "valid", "test", "test_novel", "images_only"]).values() for p, _ in ps]
    paths = all_imgs[:n]
    runs: list[tuple[str, Any, bool]] = []
    if args.tokenizer:
        from tmt.tokenizers.base import load_tokenizer

        for d in args.tokenizer:
            for r in sorted({int(x) for x in args.refine_steps.split(",")}):
                tok = load_tokenizer(d, refine_steps=r) if r else load_tokenizer(d)
                if getattr(tok, "refine_steps", 0) == r:
                    runs.append((d, tok, True))
                else:  # image-vq cards have no refinement: say so rather than leave a row out silently
                    print(f"{d}: refine {r} skipped (only image-aligned tokenizers refine)", file=sys.stderr)
    else:  # speed and size do not depend on the weights
        card = load_card(args.card)
        runs = [(args.card, resolve_class(str(card.get("class", "image-vq")))(card), False)]
    cards = {}
    for source, tok, trained in runs:
        cards[label(tok)] = bench_one(args, tok, trained, corpus, paths) | {
            "tokenizer": source, "refine_steps": getattr(tok, "refine_steps", 0)}
    if args.generation_steps > 0 and args.tokenizer:
        generation(args, corpus, cards)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    first = next(iter(cards.values()))
    out.write_text(json.dumps({"images": len(paths), "threads": args.threads, "corpus": str(corpus), **first,
                               "cards": cards}, indent=2) + "\n")
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()


def bench_one(args: argparse.Namespace, tok: Any, trained: bool, corpus: Path, paths: list[Path]) -> dict[str, Any]:
    """Speed, size and (trained) reconstruction quality of one image tokenizer -> its json entry."""
    from PIL import Image

    h, w = tok.image_size
    raw_bits = h * w * 24

    # ---- ours: file -> tokens, tokens -> pixels
    ids: list[np.ndarray] = []

    def enc() -> None:
        ids[:] = tok.encode(paths)

    enc_ips = timed(enc, len(paths))
    dec_ips = timed(lambda: tok.decode_array(ids), len(paths))
    token_bits = tok.tokens_per_image * math.log2(tok.vocab_size)
    stored = tok.tokens_per_image * (2 if tok.vocab_size < 65500 else 4)
    file_bytes = float(np.mean([p.stat().st_size for p in paths]))

    # ---- peers: PIL PNG / JPEG on the same pixels
    pixels = tok.load_images(paths)
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}

    def codec(fmt: str, **kw: Any) -> tuple[float, float, float]:
        blobs: list[bytes] = []

        def e() -> None:
            blobs.clear()
            for a in pixels:
                b = io.BytesIO()
                Image.fromarray(a).save(b, format=fmt, **kw)
                blobs.append(b.getvalue())

        def d() -> None:
            for b in blobs:
                np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))

        ei = timed(e, len(pixels))
        di = timed(d, len(pixels))
        return ei, di, float(np.mean([len(b) for b in blobs]))

    ours = {"encode_ips": enc_ips, "decode_ips": dec_ips, "bytes_per_image": stored, "bits_per_image": token_bits,
            "pct_of_raw_bits": 100 * token_bits / raw_bits, "pct_of_png_file": 100 * stored / file_bytes}
    results[f"tmt {label(tok)}"] = ours
    rows.append([f"tmt {label(tok)} ({tok.tokens_per_image} tok)", enc_ips, dec_ips, stored, 100 * token_bits / raw_bits,
                 100 * stored / file_bytes])
    for name, fmt, kw in (("PIL PNG", "PNG", {}), ("PIL JPEG q75", "JPEG", {"quality": 75})):
        ei, di, nbytes = codec(fmt, **kw)
        results[name] = {"encode_ips": ei, "decode_ips": di, "bytes_per_image": nbytes,
                         "pct_of_raw_bits": 100 * nbytes * 8 / raw_bits, "pct_of_png_file": 100 * nbytes / file_bytes}
        rows.append([name, ei, di, nbytes, 100 * nbytes * 8 / raw_bits, 100 * nbytes / file_bytes])
    ph, pw = PAPER["image"]
    paper_pct = 100 * PAPER["tokens"] * math.log2(PAPER["codebook"]) / (ph * pw * 24)
    results["paper SEED-2"] = {"pct_of_raw_bits": paper_pct}
    rows.append(["paper SEED-2 (32 tok, 8192 codes, 224px)", "-", "-", PAPER["tokens"] * 2, paper_pct, "-"])
    print(f"\n{len(paths)} scene images of {h}x{w}, {args.threads} threads; corpus {corpus}")
    print(format_table(rows, ["method", "encode img/s", "decode img/s", "bytes/img", "% raw bits", "% of PNG file"]))
    print(f"ours vs paper (share of raw bits): {ours['pct_of_raw_bits'] / paper_pct:.1f}x "
          f"({ours['pct_of_raw_bits']:.3f}% vs {paper_pct:.3f}%); ours encodes at "
          f"{enc_ips / results['PIL PNG']['encode_ips']:.2f}x and decodes at {dec_ips / results['PIL PNG']['decode_ips']:.2f}x PNG speed")
    quality = scene_quality(args, tok, corpus) if trained else {}
    return {"image_size": [h, w], "tokens_per_image": tok.tokens_per_image, "vocab_size": tok.vocab_size,
            "results": results, "quality": quality, "fit_stats": tok.stats if trained else None}


def scene_quality(args: argparse.Namespace, tok: Any, corpus: Path) -> dict[str, Any]:
    """Scene graphs parsed from reconstructions of each split (all + per attribute), codebook usage."""
    import torch
    from PIL import Image

    from tmt.corpora.scenes import ATTRIBUTES, compare_scenes, parse_scene
    from tmt.models.vq import codebook_usage

    h, w = tok.image_size
    quality: dict[str, Any] = {}
    qrows = []
    for split, items in scene_images(corpus, args.splits.split(",")).items():
        ps = [p for p, _ in items]
        ids = tok.encode(ps)
        recon = tok.decode(ids)
        usage = codebook_usage(torch.from_numpy(np.stack(ids)), tok.vocab_size)
        entropy = math.log2(max(usage["perplexity"], 1.0))
        res_rec = [compare_scenes(parse_scene(im), sc) for im, (_, sc) in zip(recon, items, strict=True)]
        res_org = [compare_scenes(parse_scene(Image.open(p)), sc) for p, sc in items]
        org = float(np.mean([r["all"] for r in res_org]))
        rec = float(np.mean([r["all"] for r in res_rec]))
        per_attr = {a: float(np.mean([r[a] for r in res_rec])) for a in ATTRIBUTES}
        psnr = float(np.mean([_psnr(np.asarray(Image.open(p).convert("RGB").resize((w, h))), np.asarray(im))
                              for p, im in zip(ps, recon, strict=True)]))
        quality[split] = {"images": len(items), "original_full_graph": org, "reconstruction_full_graph": rec,
                          "reconstruction_per_attribute": per_attr, "psnr_db": psnr,
                          "codes_used_pct": usage["codes_used_pct"], "token_entropy_bits": entropy}
        qrows.append([split, len(items), 100 * org, 100 * rec, psnr, usage["codes_used_pct"], entropy]
                     + [100 * per_attr[a] for a in ATTRIBUTES])
    print(f"\n{label(tok)}: scene graph recovered by parse_scene (%), originals vs reconstructions:")
    print(format_table(qrows, ["split", "images", "original", "reconstructed", "PSNR dB", "codes used %",
                               "entropy bits", *ATTRIBUTES]))
    if "test" in quality:
        ok = quality["test"]["reconstruction_full_graph"] >= 0.95
        print(f"quality bar (>= 95% of test reconstructions): {'PASS' if ok else 'FAIL'} "
              f"({100 * quality['test']['reconstruction_full_graph']:.1f}%)")
    print(f"fit stats: {json.dumps(tok.stats)}")
    return quality


def generation(args: argparse.Namespace, corpus: Path, cards: dict[str, Any]) -> None:
    """Generation-friendliness of every --tokenizer: fills cards[name]["generation"], prints one table."""
    from _friendliness import FriendlinessConfig, friendliness, text_tokenizer

    work_tmp = None if args.work_dir else tempfile.TemporaryDirectory()
    work = Path(args.work_dir or work_tmp.name)  # type: ignore[union-attr]
    cfg = FriendlinessConfig(corpus=corpus, work_dir=work, steps=args.generation_steps, preset=args.generation_preset,
                             limit=args.generation_limit, threads=args.threads, extra_weight=args.generation_extra_weight,
                             code_init=args.generation_code_init)
    text_tok = text_tokenizer(cfg)
    rows = []
    for i, (name, card) in enumerate(cards.items()):
        print(f"generation-friendliness: {name}: t2i model, {cfg.steps} steps ...", file=sys.stderr)
        g = friendliness(cfg, f"{i}-{Path(card['tokenizer']).name}", Path(card["tokenizer"]), text_tok,
                         card["refine_steps"])
        card["generation"] = g
        test, novel = g.get("test", {}), g.get("test_novel", {})
        best = g["best_valid"]
        rows.append([name, card["tokens_per_image"], cfg.steps, g["valid_ce"] if g["valid_ce"] is not None else "-",
                     f"{best['ce']:.3f} @ {best['step']}" if best else "-",
                     test.get("scene_exact", "-"), novel.get("scene_exact", "-"), test.get("scene_shape", "-"),
                     test.get("scene_count", "-"), test.get("scene_colour", "-")])
    extra = cfg.extra_weight > 0 and (corpus / "train_extra.jsonl.gz").is_file()
    pool = f"train + train_extra at weight {cfg.extra_weight}" if extra else "train"
    print(f"\ngeneration-friendliness: text->image {cfg.preset} model per card, {cfg.steps} steps on {pool}, seed {cfg.seed}, "
          f"image_code_init {cfg.code_init}, "
          f"top-k 16 sampling; scene parser on {cfg.limit or 'all'} rows per split (%); work dir {work}")
    print(format_table(rows, ["card", "tokens", "steps", "valid CE", "lowest valid CE", "test exact", "test_novel exact",
                              "test shape", "test count", "test colour"]))
    if work_tmp is not None:
        work_tmp.cleanup()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


if __name__ == "__main__":
    main()
