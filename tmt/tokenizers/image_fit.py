"""Fitting the image tokenizer: the VQ-VAE training loop (resumable, time-budgeted) and its report.

`fit_image_tokenizer(card, images, out_dir)` trains the VQ-VAE of an image-vq card and saves the
tokenizer (see `tmt.tokenizers.image` for the directory layout). While training it writes
reconstruction grids to `out_dir/samples/` and a resumable checkpoint to `out_dir/checkpoints/`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tmt import TmtError
from tmt.core.budget import TimeBudget
from tmt.core.io import (
    atomic_open,
    atomic_write_text,
    load_torch,
    make_dirs,
    read_json_object,
    save_torch,
)
from tmt.models.vq import (
    VQVAE,
    PatchDiscriminator,
    codebook_usage,
    gradient_loss,
    hinge_d_loss,
    reconstruction_loss,
)
from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.image import (
    ImageInput,
    ImageTokenizer,
    ImageVQCard,
    VQTrainConfig,
    card_dict,
    parse_card,
    to_tensor,
    to_uint8,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoints/last.pt"
CHECKPOINT_CARD = "checkpoints/card.json"


def image_grid(rows: Sequence[np.ndarray], pad: int = 2) -> Image.Image:
    """Rows of (N, H, W, 3) uint8 images -> one PNG-able grid image."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    out = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = img
    return Image.fromarray(out)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _progress(step: int, budget: TimeBudget, t: VQTrainConfig) -> float:
    """Share of the training used, by steps or (with a time budget) by time, whichever is further:
    the learning-rate schedule and the continuous warm-up read it, so they fit into the budget."""
    return min(1.0, max(step / max(1, t.steps), budget.fraction()))


def _lr_at(step: int, progress: float, t: VQTrainConfig) -> float:
    if step < t.warmup_steps:
        return t.lr * (step + 1) / max(1, t.warmup_steps)
    warm = t.warmup_steps / max(1, t.steps)
    frac = (progress - warm) / max(1e-9, 1 - warm)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, frac)))))


def _pixel_weights(x: torch.Tensor, t: VQTrainConfig) -> torch.Tensor | None:
    """(B, 1, H, W) loss weights emphasising pixels far from the image's median colour."""
    if t.fg_weight <= 0:
        return None
    med = x.flatten(2).median(dim=2).values[:, :, None, None]  # (B, 3, 1, 1)
    dist = (x - med).pow(2).sum(1, keepdim=True).sqrt()
    fg = (dist / t.fg_scale).clamp(max=1.0)
    if t.fg_dilate > 0:
        fg = torch.nn.functional.max_pool2d(fg, 2 * t.fg_dilate + 1, stride=1, padding=t.fg_dilate)
    w = 1.0 + t.fg_weight * fg
    return w / w.mean(dim=(1, 2, 3), keepdim=True)  # keep the loss scale comparable


def pixel_objective(recon: torch.Tensor, x: torch.Tensor, t: VQTrainConfig) -> torch.Tensor:
    """(B,) the fit's pixel objective per image: the weighted reconstruction loss (`recon_loss`,
    `fg_weight`) plus the `edge_weight` term. What analysis-by-synthesis encoding minimises
    (`AlignedImageTokenizer.refine_steps`), so it looks for what the fit taught the decoder to value."""
    loss = reconstruction_loss(recon, x, t.recon_loss, _pixel_weights(x, t), per_image=True)
    if t.edge_weight > 0:
        loss = loss + t.edge_weight * gradient_loss(recon, x, per_image=True)
    return loss


def _dihedral(x: torch.Tensor) -> torch.Tensor:
    """Per image: random horizontal flip, vertical flip and (square images) transpose."""
    flips = torch.rand(3, x.shape[0]) < 0.5
    x = torch.where(flips[0, :, None, None, None], x.flip(3), x)
    x = torch.where(flips[1, :, None, None, None], x.flip(2), x)
    if x.shape[2] == x.shape[3]:
        x = torch.where(flips[2, :, None, None, None], x.transpose(2, 3), x)
    return x


_RESUMABLE_CHANGES = ("steps", "max_minutes", "sample_every", "checkpoint_every", "usage_images")
"""Train settings that may change between a run and its resumption (e.g. train longer; a run saved
with the deprecated max_minutes 0.0 resumes under None)."""


def _resume_key(card: dict[str, Any]) -> dict[str, Any]:
    c = json.loads(json.dumps(card))
    for k in _RESUMABLE_CHANGES:
        c.get("train", {}).pop(k, None)
    return dict(c)


def _kmeans_init(model: VQVAE, pixels: torch.Tensor, max_images: int = 256) -> None:
    """k-means codebook init on the encoder outputs of (up to) `max_images` random training images."""
    idx = torch.randint(0, len(pixels), (min(max_images, len(pixels)),))
    with torch.no_grad():
        z = model.encoder(pixels[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1.0))
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    model.quantizer.init_kmeans(flat)
    log.info("quantization on: codebook initialised by k-means on %d encoder outputs", len(flat))




@dataclass(eq=False)
class PatchGan:
    """The patch-GAN term of a tokenizer fit (`train.gan_weight` > 0): the discriminator, its
    optimizer and the step it starts at. Shared by the image-vq and image-aligned trainers."""

    disc: PatchDiscriminator
    """One real/fake logit per patch."""
    opt: torch.optim.Optimizer
    """The discriminator's optimizer."""
    weight: float
    """Weight of the generator's hinge loss."""
    start: int
    """First step with the GAN term."""

    @classmethod
    def create(cls, t: VQTrainConfig, in_channels: int) -> PatchGan | None:
        """The card's GAN (None when gan_weight is 0)."""
        if t.gan_weight <= 0:
            return None
        disc = PatchDiscriminator(in_channels)
        return cls(disc, torch.optim.Adam(disc.parameters(), lr=t.lr, betas=(0.5, 0.9)), t.gan_weight, t.gan_start)

    @staticmethod
    def at(gan: PatchGan | None, step: int) -> PatchGan | None:
        """`gan` when its term is on at `step`, else None."""
        return gan if gan is not None and step >= gan.start else None

    def generator_loss(self, recon: torch.Tensor) -> torch.Tensor:
        """The weighted generator term for the autoencoder's loss."""
        return -self.weight * self.disc(recon).mean()

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """One discriminator step on a batch of real images and (detached) reconstructions."""
        d_loss = hinge_d_loss(self.disc(real), self.disc(fake.detach()))
        self.opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt.step()

    def state(self) -> dict[str, Any]:
        return {"disc": self.disc.state_dict(), "opt_d": self.opt.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        if "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.opt.load_state_dict(state["opt_d"])


@dataclass(eq=False)
class _Run:
    """One fitting run: the model and optimizers, the step reached and the clock."""

    cfg: ImageVQCard
    """The card being fitted."""
    out: Path
    """Output directory (samples/, checkpoints/, the saved tokenizer)."""
    model: VQVAE
    """The VQ-VAE being trained."""
    opt: torch.optim.Optimizer
    """Its optimizer."""
    gan: PatchGan | None
    """The patch-GAN term (gan_weight > 0)."""
    fixed: np.ndarray
    """The images whose reconstructions are written to samples/."""
    step: int = 0
    """Optimizer steps done (including those of a resumed run)."""
    budget: TimeBudget = field(default_factory=lambda: TimeBudget(None))
    """The time budget (`train.max_minutes`), counting the seconds of the runs it resumes."""

    def checkpoint(self) -> None:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                 "rng": torch.get_rng_state(), "elapsed": self.budget.spent()}
        if self.gan is not None:
            state |= self.gan.state()
        save_torch(self.out / CHECKPOINT, state)

    def sample(self, tag: str) -> None:
        self.model.eval()
        with torch.inference_mode():
            rec = to_uint8(self.model.decode(self.model.encode(to_tensor(self.fixed))))
        self.model.train()
        path = self.out / "samples" / f"{tag}.png"
        with atomic_open(path, "wb") as f:
            image_grid([self.fixed, rec]).save(f, format="PNG")


def _training_data(tok: ImageTokenizer, images: Sequence[ImageInput] | np.ndarray) -> np.ndarray:
    """Every training image in memory as (N, H, W, 3) uint8 (2000 images of 64x64 are 24 MB)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        data = np.ascontiguousarray(images, dtype=np.uint8)
    else:
        data = tok.load_images(list(images))
    if len(data) == 0:
        raise TokenizerError("no images to fit the image tokenizer on (is the manifest's train split empty?)")
    if data.shape[1:3] != tok.image_size:
        raise TokenizerError(f"image array has size {data.shape[1:3]}, the card needs {tok.image_size}")
    return data


def _new_run(cfg: ImageVQCard, out: Path, data: np.ndarray) -> _Run:
    """A freshly initialised model (seeded) with its optimizer and, with gan_weight > 0, the discriminator."""
    t = cfg.train
    torch.manual_seed(t.seed)
    model = VQVAE(cfg.model)
    model.train()
    # channels-last activations: faster conv steps on CPU (oneDNN; 147 vs 180 ms per batch-16 step, 1 thread)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (missing from the stubs)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(0.9, 0.99))
    gan = PatchGan.create(t, cfg.model.in_channels)
    return _Run(cfg=cfg, out=out, model=model, opt=opt, gan=gan, fixed=data[: min(8, len(data))])


def load_resume_state(
    out: Path, card: dict[str, Any], resume: bool, normalise: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any] | None:
    """The state of out/checkpoints/last.pt when resuming and it was made with the same card
    (else None), after recording `card` as the checkpoint's card. Shared by every image fit loop.
    `normalise` reads the recorded card as this version's card (card_dict(parse_card(.))): a
    setting added since the checkpoint was made takes its default, which is what that run did."""
    ckpt, ckpt_card = out / CHECKPOINT, out / CHECKPOINT_CARD
    state = None
    if resume and ckpt.is_file():
        old_card = read_json_object(ckpt_card, what="checkpoint card", error=TokenizerError) if ckpt_card.is_file() else None
        if old_card is not None and _resume_key(_read_as_now(old_card, normalise)) != _resume_key(card):
            raise TokenizerError(
                f"{ckpt} was made with a different card; fit into a new --out directory or delete {out / 'checkpoints'}"
            )
        state = load_torch(ckpt, what="image tokenizer checkpoint", error=TokenizerError,
                           fix=f"delete {ckpt} to start over")
        log.info("resuming from %s at step %d", ckpt, int(state["step"]))
    atomic_write_text(ckpt_card, json.dumps(card, sort_keys=True))
    return state


def _read_as_now(card: dict[str, Any], normalise: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """A recorded card as this version reads it, or as recorded where it no longer parses (a removed
    setting: then it differs from every card of this version)."""
    try:
        return normalise(card)
    except TmtError:  # a card error, or a model check that this version's card no longer passes
        return card


def _resume(run: _Run, resume: bool) -> float:
    """Continue from out/checkpoints/last.pt when it was made with the same card; record the card.
    -> seconds trained before (0 for a fresh run)."""
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


def _train_step(run: _Run, pixels: torch.Tensor) -> dict[str, float]:
    """One optimizer step (and one discriminator step once the GAN is on) -> metrics."""
    t, model, step = run.cfg.train, run.model, run.step
    idx = torch.randint(0, len(pixels), (t.batch_size,))
    x = pixels[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # NHWC memory: channels-last
    if t.augment:
        x = _dihedral(x)
    lr = _lr_at(step, _progress(step, run.budget, t), t)
    for g in run.opt.param_groups:
        g["lr"] = lr
    quantize = _progress(step, run.budget, t) >= t.warmup_continuous
    if quantize and not bool(model.quantizer.initialized) and t.warmup_continuous > 0:
        _kmeans_init(model, pixels)
    o = model(x, quantize=quantize)
    rec = reconstruction_loss(o.recon, x, t.recon_loss, _pixel_weights(x, t))
    loss = rec + o.commitment_loss
    if t.edge_weight > 0:
        loss = loss + t.edge_weight * gradient_loss(o.recon, x)
    gan = PatchGan.at(run.gan, step)
    if gan is not None:
        loss = loss + gan.generator_loss(o.recon)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    run.opt.step()
    if gan is not None:
        gan.update(x, o.recon)
    run.step += 1
    return {"loss": float(loss.detach()), "recon": float(rec.detach()), "commit": float(o.commitment_loss.detach()),
            "ppl": float(o.perplexity), "restarts": float(o.restarted), "lr": lr}


def _train(run: _Run, pixels: torch.Tensor, progress: bool,
           on_step: Callable[[int, dict[str, float]], None] | None) -> dict[str, float]:
    """Train until `steps` or the time budget is used up; samples and checkpoints on the way.
    -> the last step's metrics."""
    from tqdm import tqdm

    t = run.cfg.train
    bar = tqdm(total=t.steps, initial=run.step, desc=f"fit {run.cfg.name}", unit="step", disable=not progress,
               dynamic_ncols=True)
    metrics: dict[str, float] = {}
    while run.step < t.steps and not run.budget.exhausted():
        metrics = _train_step(run, pixels)
        step = run.step
        bar.update(1)
        if step % 10 == 0 or step == t.steps:
            bar.set_postfix(recon=f"{metrics['recon']:.4f}", ppl=f"{metrics['ppl']:.0f}", dead=int(metrics["restarts"]))
        if on_step is not None:
            on_step(step, metrics)
        if t.sample_every and step % t.sample_every == 0:
            run.sample(f"step{step:06d}")
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.steps:
            run.checkpoint()
    bar.close()
    return metrics


def _report(run: _Run, data: np.ndarray, elapsed: float, stopped_early: bool,
            metrics: dict[str, float]) -> ImageTokenizer:
    """Save the fitted tokenizer, with its codebook usage and PSNR over (up to) `usage_images` training images."""
    run.model.eval()
    tok = ImageTokenizer(run.cfg, run.model)
    sub = data[: max(1, min(len(data), run.cfg.train.usage_images))]
    ids = tok.encode_array(sub)
    recon = tok.decode_array(list(ids))
    usage = codebook_usage(torch.from_numpy(ids), tok.vocab_size)
    step = run.step
    tok.stats = {
        "steps": step, "stopped_early": stopped_early, "train_images": len(data),
        "fit_seconds": round(elapsed, 1), "steps_per_second": round(step / max(elapsed, 1e-9), 3) if step else 0.0,
        "final_recon_loss": metrics.get("recon"), "usage": usage,
        "psnr_db": round(float(np.mean([psnr(a, b) for a, b in zip(sub, recon, strict=True)])), 2),
    }
    tok.save(run.out)
    log.info("codebook usage: perplexity %.1f, %d/%d codes used (%.1f%%), PSNR %.2f dB",
             usage["perplexity"], usage["codes_used"], usage["codebook_size"], usage["codes_used_pct"],
             tok.stats["psnr_db"])
    return tok


def fit_image_tokenizer(card: dict[str, Any] | ImageVQCard, images: Sequence[ImageInput] | np.ndarray,
                        out_dir: str | Path, *, resume: bool = True, progress: bool = True,
                        on_step: Callable[[int, dict[str, float]], None] | None = None) -> ImageTokenizer:
    """Fit an image-vq tokenizer and save it (tokenizer.json + vq.safetensors) to `out_dir`.

    `images`: paths / PIL images / arrays, or an (N, H, W, 3) uint8 array already at the card's size.
    Writes reconstruction grids to `out_dir/samples/` and a resumable checkpoint to
    `out_dir/checkpoints/last.pt`; with `resume=True` an existing checkpoint made with the same
    card continues where it stopped (bit-exact on the same machine and thread count).
    """
    cfg = copy.deepcopy(parse_card(card))
    t = cfg.train
    out = Path(out_dir)
    make_dirs(out)
    tok = ImageTokenizer(cfg)
    tok.model.train()
    data = _training_data(tok, images)
    pixels = torch.from_numpy(data)  # (N, H, W, 3) uint8
    log.info("fitting %s on %d images of %dx%d -> %dx%d=%d tokens, %d codes",
             cfg.name, len(data), *tok.image_size, *tok.grid, tok.tokens_per_image, tok.vocab_size)

    run = _new_run(cfg, out, data)
    run.budget = TimeBudget(t.max_minutes, _resume(run, resume))
    metrics = _train(run, pixels, progress, on_step)
    elapsed = run.budget.spent()
    stopped_early = run.step < t.steps
    if stopped_early:
        log.warning("time budget max_minutes=%s used up at step %d of %d", t.max_minutes, run.step, t.steps)
    run.checkpoint()
    run.sample("final")
    return _report(run, data, elapsed, stopped_early, metrics)
