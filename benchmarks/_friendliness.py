"""Generation-friendliness of an image tokenizer: how well a small model learns to produce its tokens.

Reconstruction fidelity is the tokenizer's ceiling; what decides the default card
is how far below it a text->image model lands. For each fitted tokenizer, on the
same scenes corpus, with the same seed and the same fixed number of optimizer
steps (never minutes: the answer must not depend on machine load):

    tmt tokenize text fit     (once; shared by every card)
    tmt tokenize all          train, valid, test, test_novel -> text + image tokens
    tmt vocab build
    tmt train --directions t2i --max-steps N   (train + train_extra at the recipes' weight 0.5)
    tmt translate             test captions -> images (top-k 16 sampling, seed 0)
    tmt score run             the scene parser: exact scenes and per attribute

Every step is a `tmt` verb run as a subprocess, exactly as the recipes call it, so
the benchmark measures what users get. A finished step leaves its output behind
and is skipped when the benchmark is run again with the same `--work-dir`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SPLITS = ("train", "train_extra", "valid", "test", "test_novel")
DECODING = ("--sample", "--top-k", "16", "--seed", "0")
"""Image decoding of the single-direction model (no reranking: it needs the reverse direction)."""


@dataclass(kw_only=True)
class FriendlinessConfig:
    """What the generation-friendliness run trains and scores."""

    corpus: Path
    """Scenes corpus directory (train/valid/test/test_novel manifests beside the images)."""
    work_dir: Path
    """Where tokenizers, stores, models and hypotheses go (one subdirectory per card)."""
    steps: int
    """Optimizer steps of each text->image model (the same for every card)."""
    preset: str = "demo"
    """Model preset of the text->image models."""
    limit: int = 150
    """Test rows translated per split (0: all)."""
    threads: int = 2
    """torch threads of each `tmt` call."""
    seed: int = 0
    """Training seed (the same for every card)."""
    extra_weight: float = 0.5
    """Sampling weight of the corpus' `train_extra` split (images and captions without speech), beside
    train's 1, where the corpus has one: the recipes' default, so each card is judged on the training
    pool the `full` preset gives it (0: train only; on 1400 images the text-aligned card's model
    over-fits after 750 steps)."""
    code_init: float = 1.0
    """`tmt train --set image_code_init` of each text->image model (1.0: the rows start from the card's code
    features, as the `quick` preset trains; 0: random rows, as `full` and `mid` do and this benchmark did
    before session 27)."""


def _tmt(args: list[str], log_file: Path, threads: int) -> None:
    """Run one `tmt` verb; its output goes to `log_file`; a failure names the log."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as f:
        r = subprocess.run([sys.executable, "-m", "tmt", *args], stdout=f, stderr=subprocess.STDOUT, env=env,
                           check=False)
    if r.returncode != 0:
        raise RuntimeError(f"`tmt {' '.join(args[:3])} ...` failed (exit {r.returncode}); see {log_file}")


def _once(work: Path, step: str, args: list[str], threads: int) -> None:
    """`_tmt` unless an earlier run with the same work dir finished this step (`.done/<step>`);
    the step's output goes to `logs/<step>.log`."""
    done = work / ".done" / step
    if done.exists():
        return
    _tmt(args, work / "logs" / f"{step}.log", threads)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.touch()


def text_tokenizer(cfg: FriendlinessConfig) -> Path:
    """The WordPiece tokenizer fitted on the corpus' training captions (shared by every card)."""
    root = Path(__file__).resolve().parents[1]
    out = cfg.work_dir / "text"
    _once(cfg.work_dir, "text", ["tokenize", "text", "fit", "--card", str(root / "tokenizers/text-wordpiece-trained.yaml"),
                                 "--manifest", str(cfg.corpus / "train.jsonl.gz"), "--out", str(out)], cfg.threads)
    return out


def friendliness(cfg: FriendlinessConfig, name: str, image_tok: Path, text_tok: Path,
                 refine_steps: int = 0) -> dict[str, Any]:
    """Train and score one card's text->image model -> {split: {scene_exact, scene_<attribute>...}, valid_ce};
    `refine_steps`: the images are tokenized with that much analysis-by-synthesis (image-aligned cards)."""
    w, t = cfg.work_dir / name, cfg.threads
    stores = {s: w / "store" / s for s in SPLITS if (cfg.corpus / f"{s}.jsonl.gz").is_file()
              and (s != "train_extra" or cfg.extra_weight > 0)}
    extra = ["--store", f"{stores['train_extra']}={cfg.extra_weight}"] if "train_extra" in stores else []
    for s, st in stores.items():
        _once(w, f"tokenize-{s}", ["tokenize", "all", "--text", str(text_tok), "--image", str(image_tok),
                                   "--image-refine-steps", str(refine_steps), "--threads", str(t), "--manifest", str(cfg.corpus / f"{s}.jsonl.gz"), "--store", str(st)], t)
    vocab = w / "vocab.json"
    _once(w, "vocab", ["vocab", "build", "--text", str(text_tok), "--image", str(image_tok), "-o", str(vocab)], t)
    model = w / "t2i"
    _once(w, "train", ["train", "-o", str(model), "--preset", cfg.preset, "--vocab", str(vocab),
                               "--store", str(stores["train"]), *extra, "--valid-store", str(stores["valid"]),
                               "--directions", "t2i", "--max-steps", str(cfg.steps), "--seed", str(cfg.seed),
                               "--device", "cpu", "--set", f"train.threads={t}", "--set", "train.max_minutes=100000",
                               "--set", "optim.schedule=inverse_sqrt", "--set", f"image_code_init={cfg.code_init}",
                               "--resume"], t)
    last, best = _valid_ce(model)
    out: dict[str, Any] = {"steps": cfg.steps, "preset": cfg.preset, "extra_weight": cfg.extra_weight if extra else 0.0,
                           "code_init": cfg.code_init,
                           "valid_ce": last, "best_valid": best}
    for s in ("test", "test_novel"):
        if s not in stores:
            continue
        hyp, scores = w / "hyp" / s, w / "scores" / s
        limit = ["--limit", str(cfg.limit)] if cfg.limit > 0 else []
        _once(w, f"translate-{s}", ["translate", "-m", str(model), "--manifest", str(cfg.corpus / f"{s}.jsonl.gz"),
                                 "--split", s, "--from", "text", "--to", "image", *DECODING, *limit,
                                 "--device", "cpu", "--output-dir", str(hyp)], t)
        _once(w, f"score-{s}", ["score", "run", str(hyp), "--no-ceiling", "--out-dir", str(scores)], t)
        entry = json.loads((scores / "scores.json").read_text())["directions"]["text->image"]
        out[s] = {k: v for k, v in entry["metrics"].items() if k.startswith("scene_")} | {"n": entry["n"]}
    return out


def _valid_ce(model: Path) -> tuple[float | None, dict[str, float] | None]:
    """The text->image validation CE of the last validation record in metrics.jsonl, and the lowest
    one with its step ({"step", "ce"}); None where there is none."""
    last, best = None, None
    path = model / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("split") == "valid" and "ce/t2i" in rec:
                last = float(rec["ce/t2i"])
                if best is None or last < best["ce"]:
                    best = {"step": int(rec["step"]), "ce": last}
    return last, best
