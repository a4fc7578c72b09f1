"""Fitting the text-aligned image tokenizer: reconstruction + image-caption InfoNCE.

Each step draws `batch_size` distinct images and one random caption of each; the loss is
the pixel loss (optionally foreground-weighted, plus an edge term), the EMA VQ commitment
loss, and `contrastive_weight` times the symmetric InfoNCE between the pooled quantized
tokens and the caption embeddings of the batch. Checkpoints (`checkpoints/last.pt`, atomic)
make `--resume` continue bit-exactly on the same machine and thread count; `train.max_minutes`
compresses the learning-rate schedule into a time budget as for image-vq.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tmt.core.budget import TimeBudget
from tmt.core.device import autocast, native_bf16
from tmt.core.io import (
    atomic_open,
    make_dirs,
    save_torch,
)
from tmt.models.aligned_vq import PAD_BYTE, AlignedVQ, caption_bytes, word_swap_negatives
from tmt.models.vq import codebook_usage, gradient_loss, reconstruction_loss
from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.image import ImageInput, to_tensor, to_uint8
from tmt.tokenizers.image_aligned import (
    AlignedCard,
    AlignedImageTokenizer,
    AlignedTrainConfig,
    card_dict,
    parse_card,
)
from tmt.tokenizers.image_fit import (
    CHECKPOINT,
    PatchGan,
    _lr_at,
    _pixel_weights,
    _progress,
    _training_data,
    image_grid,
    load_resume_state,
    psnr,
)

log = logging.getLogger(__name__)

OnStep = Callable[[int, dict[str, float]], None]


def token_entropy(ids: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Codebook usage (perplexity, codes used) plus the unigram entropy of the tokens in bits."""
    usage = codebook_usage(torch.from_numpy(np.asarray(ids, dtype=np.int64)), vocab_size)
    usage["entropy_bits"] = math.log2(max(usage["perplexity"], 1.0))
    return usage


@dataclass(eq=False)
class _Run:
    """One fitting run: model, optimizer, training data, step and clock."""

    cfg: AlignedCard
    """The card being fitted."""
    out: Path
    """Output directory."""
    model: AlignedVQ
    """The model being trained."""
    opt: torch.optim.Optimizer
    """Its optimizer."""
    pixels: torch.Tensor
    """(N, H, W, 3) uint8 training images."""
    captions: torch.Tensor
    """(M, L) caption byte ids of every image's captions."""
    cap_start: torch.Tensor
    """(N,) first caption row of each image."""
    cap_count: torch.Tensor
    """(N,) number of captions of each image."""
    gan: PatchGan | None = None
    """The patch-GAN term (gan_weight > 0)."""
    step: int = 0
    """Optimizer steps done (including those of a resumed run)."""
    budget: TimeBudget = field(default_factory=lambda: TimeBudget(None))
    """The time budget (`train.max_minutes`)."""
    forward: Callable[..., Any] | None = None
    """The training forward when it is not the model's own (`train.compile`: the compiled model)."""
    dtype: str = "float32"
    """The forward's autocast dtype, `train.dtype` resolved once for the machine (`_fit_dtype`)."""

    def checkpoint(self) -> None:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                 "rng": torch.get_rng_state(), "elapsed": self.budget.spent()}
        save_torch(self.out / CHECKPOINT, state | (self.gan.state() if self.gan is not None else {}))

    def sample(self, tag: str) -> None:
        fixed = self.pixels[:8].numpy()
        self.model.eval()
        with torch.inference_mode():
            rec = to_uint8(self.model.decode(self.model.encode(to_tensor(fixed))))
        self.model.train()
        with atomic_open(self.out / "samples" / f"{tag}.png", "wb") as f:
            image_grid([fixed, rec]).save(f, format="PNG")


def _caption_table(captions: Sequence[Sequence[str]], n_images: int, max_len: int) -> tuple[torch.Tensor, ...]:
    if len(captions) != n_images:
        raise TokenizerError(f"got captions for {len(captions)} images but {n_images} images; give one list per image")
    empty = [i for i, c in enumerate(captions) if not any(s.strip() for s in c)]
    if empty:
        raise TokenizerError(f"{len(empty)} training images have no caption (first: #{empty[0]}); the image-aligned "
                             "tokenizer needs image-text pairs (drop those rows or use an image-vq card)")
    flat = [s for c in captions for s in c if s.strip()]
    counts = torch.tensor([sum(1 for s in c if s.strip()) for c in captions], dtype=torch.long)
    starts = torch.cumsum(counts, 0) - counts
    return caption_bytes(flat, max_len), starts, counts


def _resume(run: _Run, resume: bool) -> float:
    """Continue from checkpoints/last.pt when it was made with the same card -> seconds trained before."""
    state = load_resume_state(run.out, card_dict(run.cfg), resume, lambda c: card_dict(parse_card(c)))
    if state is None:
        return 0.0
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["opt"])
    if run.gan is not None:
        run.gan.load(state)
    torch.set_rng_state(state["rng"])
    run.step = int(state["step"])
    return float(state.get("elapsed", 0.0))


def _hard_negatives(captions: torch.Tensor, max_len: int) -> torch.Tensor:
    """Byte ids of the word-swap negatives of a batch of caption byte ids."""
    text = [bytes(int(b) for b in row if b != PAD_BYTE).decode("utf-8", "replace") for row in captions]
    return caption_bytes(word_swap_negatives(text), max_len)


def train_step(run: _Run) -> dict[str, float]:
    """One optimizer step -> metrics."""
    t, model = run.cfg.train, run.model
    n = len(run.pixels)
    idx = torch.randperm(n)[: min(t.batch_size, n)]
    x = run.pixels[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    progress = _progress(run.step, run.budget, t)
    lr = _lr_at(run.step, progress, t)
    for g in run.opt.param_groups:
        g["lr"] = lr
    with autocast("cpu", run.dtype):
        o = (run.forward or model)(x, quantize=progress >= t.warmup_continuous)
    recon = o.recon.float()
    rec = reconstruction_loss(recon, x, t.recon_loss, _pixel_weights(x, t))
    loss = rec + o.commitment_loss.float()
    if t.edge_weight > 0:
        loss = loss + t.edge_weight * gradient_loss(recon, x)
    nce = torch.zeros(())
    if t.contrastive_weight > 0 and len(idx) > 1:
        m = len(idx) if t.contrastive_batch <= 0 else min(len(idx), t.contrastive_batch)
        pick = run.cap_start[idx[:m]] + (torch.rand(m) * run.cap_count[idx[:m]]).long()
        negatives = _hard_negatives(run.captions[pick], run.cfg.model.max_caption_bytes) if t.hard_negatives else None
        with autocast("cpu", run.dtype):
            nce = model.contrastive_loss(o.image_embedding[:m], run.captions[pick], negatives).float()
        loss = loss + t.contrastive_weight * nce
    gan = PatchGan.at(run.gan, run.step)
    if gan is not None:
        loss = loss + gan.generator_loss(recon)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    run.opt.step()
    if gan is not None:
        gan.update(x, recon)
    run.step += 1
    return {"loss": float(loss.detach()), "recon": float(rec.detach()), "nce": float(nce.detach()),
            "commit": float(o.commitment_loss.detach()), "lr": lr}


def _train(run: _Run, progress: bool, on_step: OnStep | None) -> dict[str, float]:
    from tqdm import tqdm

    t = run.cfg.train
    bar = tqdm(total=t.steps, initial=run.step, desc=f"fit {run.cfg.name}", unit="step", disable=not progress,
               dynamic_ncols=True)
    metrics: dict[str, float] = {}
    while run.step < t.steps and not run.budget.exhausted():
        metrics = train_step(run)
        bar.update(1)
        if run.step % 10 == 0:
            bar.set_postfix(recon=f"{metrics['recon']:.4f}", nce=f"{metrics['nce']:.3f}")
        if t.sample_every and run.step % t.sample_every == 0:
            run.sample(f"step{run.step:06d}")
        if t.checkpoint_every and run.step % t.checkpoint_every == 0 and run.step < t.steps:
            run.checkpoint()
        if on_step is not None:
            on_step(run.step, metrics)
    bar.close()
    return metrics


def _report(run: _Run, data: np.ndarray, elapsed: float, metrics: dict[str, float]) -> AlignedImageTokenizer:
    run.model.eval()
    tok = AlignedImageTokenizer(run.cfg, run.model)
    sub = data[: max(1, min(len(data), run.cfg.train.usage_images))]
    ids = tok.encode_array(sub)
    recon = tok.decode_array(list(ids))
    usage = token_entropy(ids, tok.vocab_size)
    tok.stats = {
        "steps": run.step, "stopped_early": run.step < run.cfg.train.steps, "train_images": len(data),
        "dtype": run.dtype,
        "fit_seconds": round(elapsed, 1), "steps_per_second": round(run.step / max(elapsed, 1e-9), 3) if run.step else 0.0,
        "final_recon_loss": metrics.get("recon"), "final_nce_loss": metrics.get("nce"), "usage": usage,
        "psnr_db": round(float(np.mean([psnr(a, b) for a, b in zip(sub, recon, strict=True)])), 2),
    }
    tok.save(run.out)
    log.info("codebook usage: %d/%d codes (%.1f%%), entropy %.2f bits/token, PSNR %.2f dB", usage["codes_used"],
             usage["codebook_size"], usage["codes_used_pct"], usage["entropy_bits"], tok.stats["psnr_db"])
    return tok


def _fit_dtype(t: AlignedTrainConfig) -> str:
    """The dtype the fit runs in (`train.dtype`, `auto` resolved); a warning where bf16 is asked for on a
    CPU that can only emulate it."""
    dtype = t.resolved_dtype()
    if dtype == "bfloat16" and not native_bf16("cpu"):
        log.warning("train.dtype=bfloat16 on a CPU without bf16 units (AMX, AVX512-BF16): torch emulates it, about "
                    "11x slower than float32 (docs/results.md, session 37); set train.dtype=auto or float32")
    return dtype


def _check_compiler() -> None:
    """`train.compile` needs the C++ compiler inductor calls (`CXX` or g++): say so before fitting."""
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise TokenizerError(f"train.compile=true needs a C++ compiler for torch.compile, and '{cxx}' is not on PATH; "
                             "install one (Debian: apt-get install g++) or set train.compile=false")


def fit_aligned_tokenizer(card: dict[str, Any] | AlignedCard, images: Sequence[ImageInput] | np.ndarray,
                          captions: Sequence[Sequence[str]], out_dir: str | Path, *, resume: bool = True,
                          progress: bool = True, on_step: OnStep | None = None) -> AlignedImageTokenizer:
    """Fit an image-aligned tokenizer on `images` and their `captions` (one list of strings per
    image) and save it to `out_dir`; an existing checkpoint made with the same card is resumed."""
    cfg = copy.deepcopy(parse_card(card))
    t = cfg.train
    if t.compile:
        _check_compiler()  # before anything is written
    out = Path(out_dir)
    make_dirs(out)
    tok = AlignedImageTokenizer(cfg)
    data = _training_data(tok, images)
    caps, starts, counts = _caption_table(captions, len(data), cfg.model.max_caption_bytes)
    dtype = _fit_dtype(t)
    log.info("fitting %s on %d images (%d captions) -> %dx%d=%d tokens, %d codes, forward in %s", cfg.name,
             len(data), len(caps), *tok.grid, tok.tokens_per_image, tok.vocab_size, dtype)
    torch.manual_seed(t.seed)
    model = AlignedVQ(cfg.model)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(0.9, 0.99))
    run = _Run(cfg=cfg, out=out, model=model, opt=opt, pixels=torch.from_numpy(data), captions=caps,
               cap_start=starts, cap_count=counts, gan=PatchGan.create(t, cfg.model.in_channels), dtype=dtype)
    run.budget = TimeBudget(t.max_minutes, _resume(run, resume))
    if t.compile:
        run.forward = torch.compile(model)  # compiled on the first step, inside the budget
    metrics = _train(run, progress, on_step)
    if run.step < t.steps:
        log.warning("time budget max_minutes=%s used up at step %d of %d", t.max_minutes, run.step, t.steps)
    run.checkpoint()
    run.sample("final")
    return _report(run, data, run.budget.spent(), metrics)
