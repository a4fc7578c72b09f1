"""HuBERT-style pretraining of the next speech feature model: masked prediction of a fitted speech
tokenizer's frame units (`tmt tokenize speech pretrain`).

HuBERT's recipe (Hsu et al., 2021): k-means units of simple features (MFCC) are the targets of a
transformer that sees the speech with spans of frames masked; k-means on one of its layers then
gives the next, better units, and the next iteration may start from them. This loop trains the
fbank HuBERT of `ssl.py` (log-mel frames in; the waveform convolutions are what a CPU cannot pay
for) on a teacher tokenizer's frame-level units:

    log-mel [B, T, 80] -> projection -> spans masked (mask embedding) -> transformer
                       -> final projection -> cosine logits against one embedding per unit / 0.1
                       -> cross-entropy on the masked frames (HuBERT's alpha = 1)

The masking is torchaudio's `MaskGenerator` (HuBERT's span masking); the logits are written out
because torchaudio's `LogitGenerator` expands a [units, frames, dim] tensor (a gigabyte a step at
1000 units), where one matmul of normalised vectors gives the same numbers.

Output directory::

    model.safetensors      the encoder (torchaudio naming, dropouts off) + its architecture in metadata:
                           a speech card's `hubert.weights` (features: hubert)
    pretrain.json          config, teacher name + fingerprint, steps, minutes, loss and accuracy curves
    curves.png             training loss and held-out masked accuracy
    checkpoints/last.pt    model + optimizer + step + seconds spent (`--resume` continues exactly)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tmt.config import to_dict
from tmt.core.audio import FRAME_RATE, as_waveform
from tmt.core.batching import length_batches
from tmt.core.budget import TimeBudget, check_max_minutes
from tmt.core.io import (
    atomic_open,
    atomic_write_json,
    load_torch,
    pyplot,
    read_json_object,
    save_figure,
    save_torch,
)
from tmt.core.progress import progress_bar
from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.speech.mfcc import log_mel_batch
from tmt.tokenizers.speech.ssl import ARCH_METADATA, build_fbank_model, fbank_arch, pad_frames

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoints/last.pt"
CHECKPOINT_CONFIG = "checkpoints/config.json"
WEIGHTS = "model.safetensors"
RESUMABLE_CHANGES = ("steps", "max_minutes", "checkpoint_every")
"""Training settings a `--resume` may change."""


@dataclass(kw_only=True)
class PretrainModelConfig:
    """The fbank HuBERT being pretrained."""

    num_mel_bins: int = 80
    """Log-mel channels of the input frames (50 Hz, the speech tokenizer's framing)."""
    embed_dim: int = 256
    """Transformer width (HuBERT-Base: 768)."""
    num_layers: int = 4
    """Transformer layers (HuBERT-Base: 12)."""
    num_heads: int = 4
    """Attention heads."""
    ff_dim: int = 1024
    """Feed-forward width."""
    pos_conv_kernel: int = 128
    """Kernel of the convolutional position embedding (frames), as HuBERT."""
    pos_conv_groups: int = 16
    """Groups of the convolutional position embedding."""
    dropout: float = 0.1
    """Dropout in the transformer during pretraining (the saved model has none)."""
    final_dim: int = 128
    """Width of the projected outputs and unit embeddings the cosine logits compare (HuBERT-Base: 256)."""


@dataclass(kw_only=True)
class PretrainTrainConfig:
    """The pretraining loop."""

    steps: int = 20000
    """Upper bound on optimizer steps; on CPU the time budget usually ends training first."""
    max_minutes: float | None = 30.0
    """Wall-clock budget in minutes (None: no limit); the learning rate decays over it."""
    batch_seconds: float = 48.0
    """Seconds of speech per batch (utterances of similar length batched together)."""
    lr: float = 5e-4
    """Peak learning rate (AdamW)."""
    warmup_steps: int = 300
    """Linear warm-up steps; then linear decay to 0 at the end of the steps or the time budget."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    clip_norm: float = 10.0
    """Gradient norm clipping."""
    mask_prob: float = 0.8
    """HuBERT's span-start probability (x frames / mask_length spans; about half the frames end up masked)."""
    mask_length: int = 10
    """Frames per masked span."""
    logit_temperature: float = 0.1
    """Temperature of the cosine logits."""
    valid_files: int = 100
    """Utterances held out for the masked-prediction accuracy (not trained on)."""
    checkpoint_every: int = 250
    """Steps between checkpoints (and held-out accuracy)."""
    seed: int = 0
    """Seed of the initialisation, the batch order and the masks (each step reseeds: resume is exact)."""


@dataclass(kw_only=True)
class PretrainConfig:
    """`tmt tokenize speech pretrain`: a fbank HuBERT trained on a teacher tokenizer's units."""

    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    """The network."""
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    """The training loop."""

    def arch(self) -> dict[str, Any]:
        """The torchaudio architecture of the saved encoder (no dropout)."""
        m = self.model
        return fbank_arch(fbank_bins=m.num_mel_bins, encoder_embed_dim=m.embed_dim, encoder_num_layers=m.num_layers,
                          encoder_num_heads=m.num_heads, encoder_ff_interm_features=m.ff_dim,
                          encoder_pos_conv_kernel=m.pos_conv_kernel, encoder_pos_conv_groups=m.pos_conv_groups)

    def check(self) -> None:
        """Refuse settings the loop cannot run with, naming the key."""
        m, t = self.model, self.train
        if m.embed_dim % m.num_heads or m.embed_dim % m.pos_conv_groups:
            raise TokenizerError(f"model.embed_dim {m.embed_dim} must divide by model.num_heads ({m.num_heads}) "
                                 f"and model.pos_conv_groups ({m.pos_conv_groups})")
        if t.batch_seconds <= 0 or t.steps < 1 or t.mask_length < 1 or not 0 < t.mask_prob <= 1:
            raise TokenizerError("train.batch_seconds > 0, train.steps >= 1, train.mask_length >= 1 and "
                                 f"0 < train.mask_prob <= 1 are needed (got {to_dict(t)})")
        t.max_minutes = check_max_minutes(t.max_minutes)


class MaskedPredictor(torch.nn.Module):
    """The fbank HuBERT with span masking and the cosine-logit head over the teacher's units."""

    def __init__(self, cfg: PretrainConfig, num_units: int) -> None:
        super().__init__()
        from torchaudio.models.wav2vec2 import components

        m, t = cfg.model, cfg.train
        arch = cfg.arch() | {"encoder_dropout": m.dropout, "encoder_attention_dropout": m.dropout,
                             "encoder_ff_interm_dropout": m.dropout, "encoder_projection_dropout": m.dropout}
        self.wav2vec2 = build_fbank_model(arch)
        self.masker = components.MaskGenerator(m.embed_dim, t.mask_prob, "static", 0.0, t.mask_length, False, 1,
                                               0.0, "static", 0.0, 10, False, 1)
        self.final_proj = torch.nn.Linear(m.embed_dim, m.final_dim)
        self.unit_embeddings = torch.nn.Parameter(torch.empty(num_units, m.final_dim).uniform_())
        self.temperature = t.logit_temperature

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor
                ) -> tuple[torch.Tensor, int, int]:
        """-> (mean cross-entropy over the masked frames, masked frames predicted right, masked frames)."""
        from torchaudio.models.wav2vec2 import components

        enc = self.wav2vec2.encoder
        x, attention_mask = enc._preprocess(feats, lengths)
        padding = components._get_padding_mask(x, lengths)
        x, mask = self.masker(x, padding)
        x = enc.transformer(x, attention_mask=attention_mask)
        chosen = mask & ~padding
        proj = F.normalize(self.final_proj(x[chosen]), dim=-1)
        logits = proj @ F.normalize(self.unit_embeddings, dim=-1).T / self.temperature  # -> [masked, units]
        target = labels[chosen]
        if not target.numel():  # no frame of this batch was masked (utterances shorter than a span)
            return logits.sum() * 0.0, 0, 0
        loss = F.cross_entropy(logits, target)
        return loss, int((logits.argmax(-1) == target).sum()), int(target.numel())


@dataclass(kw_only=True)
class PretrainData:
    """Every utterance's log-mel frames and teacher units, in memory (7000 utterances: ~300 MB)."""

    feats: list[np.ndarray]
    """[frames, bins] float32 per utterance."""
    units: list[np.ndarray]
    """[frames] int64 teacher units per utterance (same frames)."""

    def frames(self) -> int:
        return int(sum(len(u) for u in self.units))

    def subset(self, idx: Sequence[int]) -> PretrainData:
        return PretrainData(feats=[self.feats[i] for i in idx], units=[self.units[i] for i in idx])


def prepare_data(teacher: Any, paths: Sequence[str], num_mel_bins: int, *, voices: Sequence[str | None] | None = None,
                 batch_size: int = 32, progress: bool = False) -> PretrainData:
    """Log-mel frames (the model's input) and the teacher's frame units (its targets) of `paths`."""
    feats: list[np.ndarray] = []
    units: list[np.ndarray] = []
    with progress_bar(total=len(paths), desc="features + teacher units", unit="file", enabled=progress) as bar:
        for i in range(0, len(paths), batch_size):
            wavs = [as_waveform(p, silence_peak=teacher.cfg.silence_peak)[0] for p in paths[i:i + batch_size]]
            vs = None if voices is None else list(voices[i:i + batch_size])
            for f, u in zip(log_mel_batch(wavs, num_mel_bins), teacher.frame_units(wavs, voices=vs), strict=True):
                n = min(len(f), len(u))
                if n:
                    feats.append(f[:n])
                    units.append(np.asarray(u[:n], dtype=np.int64))
            bar.update(len(wavs))
    if not units:
        raise TokenizerError("no speech frames to pretrain on (every file shorter than one 25 ms window?)")
    return PretrainData(feats=feats, units=units)


def _split(data: PretrainData, valid_files: int, seed: int) -> tuple[PretrainData, PretrainData]:
    n = len(data.units)
    hold = min(valid_files, n // 10)
    order = np.random.default_rng(seed).permutation(n)
    return data.subset(sorted(order[hold:].tolist())), data.subset(sorted(order[:hold].tolist()))


def _collate(data: PretrainData, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    feats = pad_frames([data.feats[i] for i in idx])
    labels = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(data.units[i]) for i in idx], batch_first=True)
    return feats, torch.tensor([len(data.units[i]) for i in idx]), labels


def _batch_at(step: int, batches: list[list[int]], seed: int) -> list[int]:
    """The batch of optimizer step `step`: epoch e visits every batch in the order of seed + e."""
    epoch, k = divmod(step, len(batches))
    return batches[int(np.random.default_rng(seed + 1 + epoch).permutation(len(batches))[k])]


def _lr(step: int, progress: float, t: PretrainTrainConfig) -> float:
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    return t.lr * max(0.0, 1.0 - progress)


@torch.no_grad()
def masked_accuracy(model: MaskedPredictor, data: PretrainData, batches: list[list[int]], seed: int) -> float:
    """Share of masked held-out frames whose teacher unit is the model's best guess (the masks of `seed`)."""
    model.eval()
    torch.manual_seed(seed)
    right, total = 0, 0
    for b in batches:
        feats, lengths, labels = _collate(data, b)
        _, hits, masked = model(feats, lengths, labels)
        right += hits
        total += masked
    model.train()
    return right / max(1, total)


@dataclass(eq=False)
class _Run:
    """One pretraining run: model, optimizer, data and the step reached."""

    cfg: PretrainConfig
    """The resolved config."""
    out: Path
    """Output directory."""
    model: MaskedPredictor
    """The network being trained."""
    opt: torch.optim.Optimizer
    """Its optimizer."""
    train: PretrainData
    """Training utterances."""
    held: PretrainData
    """Held-out utterances (masked accuracy)."""
    batches: list[list[int]]
    """Training batches (indices into `train`)."""
    held_batches: list[list[int]]
    """Held-out batches (indices into `held`)."""
    step: int = 0
    """Optimizer steps done, resumed runs included."""
    budget: TimeBudget = field(default_factory=lambda: TimeBudget(None))
    """The time budget, counting the seconds of the runs it resumes."""
    curve: list[dict[str, float]] = field(default_factory=list)
    """One point per checkpoint: step, minutes, mean training loss since the last point, held-out accuracy."""

    def accuracy(self) -> float:
        return masked_accuracy(self.model, self.held, self.held_batches,
                               self.cfg.train.seed)

    def checkpoint(self) -> None:
        save_torch(self.out / CHECKPOINT, {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                                           "step": self.step, "elapsed": self.budget.spent(),
                                           "curve": json.dumps(self.curve)})


def _resume(run: _Run, key: dict[str, Any], resume: bool) -> None:
    """Continue from out/checkpoints/last.pt when resuming with the same config and teacher; record them."""
    ckpt, saved = run.out / CHECKPOINT, run.out / CHECKPOINT_CONFIG
    prior = 0.0
    if resume and ckpt.is_file():
        old = read_json_object(saved, what="checkpoint config", error=TokenizerError) if saved.is_file() else None
        changed = {k for k in key if old is None or old.get(k) != key[k]}
        if changed:
            raise TokenizerError(f"{ckpt} was made with another {' / '.join(sorted(changed))}; pretrain into a new "
                                 f"--out directory or delete {run.out / 'checkpoints'}")
        state = load_torch(ckpt, what="pretraining checkpoint", error=TokenizerError)
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["opt"])
        run.step, prior = int(state["step"]), float(state["elapsed"])
        run.curve = json.loads(state["curve"])
        log.info("resumed from %s at step %d (%.1f min spent)", ckpt, run.step, prior / 60)
    atomic_write_json(saved, key)
    run.budget = TimeBudget(run.cfg.train.max_minutes, prior)


def _train(run: _Run, progress: bool) -> None:
    t = run.cfg.train
    losses: list[float] = []
    with progress_bar(total=t.steps, desc="pretrain", unit="step", enabled=progress) as bar:
        bar.update(run.step)
        while run.step < t.steps and not run.budget.exhausted():
            torch.manual_seed(t.seed + run.step)  # masks and dropout of this step: a resumed run draws the same
            feats, lengths, labels = _collate(run.train, _batch_at(run.step, run.batches, t.seed))
            for g in run.opt.param_groups:
                g["lr"] = _lr(run.step, max(run.step / t.steps, run.budget.fraction()), t)
            loss, _, _ = run.model(feats, lengths, labels)
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.clip_norm)
            run.opt.step()
            run.step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            if run.step % t.checkpoint_every == 0:
                _point(run, losses)
                losses = []
    if losses or not run.curve:
        _point(run, losses)


def _point(run: _Run, losses: list[float]) -> None:
    acc = run.accuracy()
    run.curve.append({"step": run.step, "minutes": round(run.budget.spent() / 60, 2),
                      "loss": float(np.mean(losses)) if losses else float("nan"), "valid_accuracy": round(acc, 4)})
    log.info("step %d: loss %.3f, held-out masked accuracy %.3f", run.step, run.curve[-1]["loss"], acc)
    run.checkpoint()


def _save(run: _Run, teacher_info: dict[str, Any]) -> dict[str, Any]:
    from safetensors.torch import save

    arch = run.cfg.arch()
    state = {k: v.detach().contiguous() for k, v in run.model.wav2vec2.state_dict().items()}
    meta = {ARCH_METADATA: json.dumps(arch), "teacher": json.dumps(teacher_info)}
    with atomic_open(run.out / WEIGHTS, "wb") as f:
        f.write(save(state, metadata=meta))
    info = {"weights": str(run.out / WEIGHTS), "arch": arch, "config": to_dict(run.cfg), "teacher": teacher_info,
            "steps": run.step, "minutes": round(run.budget.spent() / 60, 2), "train_utterances": len(run.train.units),
            "train_frames": run.train.frames(), "held_out_utterances": len(run.held.units),
            "valid_accuracy": run.curve[-1]["valid_accuracy"], "curve": run.curve}
    atomic_write_json(run.out / "pretrain.json", info)
    _plot(run.curve, run.out / "curves.png")
    return info


def _plot(curve: list[dict[str, float]], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [p["step"] for p in curve]
    ax[0].plot(steps, [p["loss"] for p in curve], marker=".")
    ax[0].set(xlabel="step", ylabel="masked cross-entropy", title="training loss")
    ax[1].plot(steps, [100 * p["valid_accuracy"] for p in curve], marker=".", color="C1")
    ax[1].set(xlabel="step", ylabel="% of masked frames", title="held-out unit accuracy")
    save_figure(fig, path)


def pretrain(cfg: PretrainConfig, data: PretrainData, out_dir: str | Path, *, num_units: int,
             teacher_info: dict[str, Any], resume: bool = False, progress: bool = False) -> dict[str, Any]:
    """Train an fbank HuBERT on `data` (log-mel frames -> teacher units) into `out_dir`; -> pretrain.json's content."""
    cfg.check()
    top = max(int(u.max()) for u in data.units if len(u))
    if top >= num_units:
        raise TokenizerError(f"teacher unit {top} is out of range for {num_units} units")
    if data.feats[0].shape[1] != cfg.model.num_mel_bins:
        raise TokenizerError(f"frames have {data.feats[0].shape[1]} bins, model.num_mel_bins is {cfg.model.num_mel_bins}")
    t = cfg.train
    train, held = _split(data, t.valid_files, t.seed)
    torch.manual_seed(t.seed)
    model = MaskedPredictor(cfg, num_units)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=t.weight_decay)
    max_frames = int(t.batch_seconds * FRAME_RATE)
    batches = length_batches([len(u) for u in train.units], max_frames)
    run = _Run(cfg=cfg, out=Path(out_dir), model=model, opt=opt, train=train, held=held, batches=batches,
               held_batches=length_batches([len(u) for u in held.units], max_frames))
    config = to_dict(cfg)
    for k in RESUMABLE_CHANGES:  # a resumed run may train longer or checkpoint more often
        config["train"].pop(k)
    key = {"config": config, "teacher": teacher_info, "utterances": len(data.units), "frames": data.frames()}
    _resume(run, key, resume)
    if run.budget.spent_before_start() or run.step >= t.steps:
        log.info("nothing left to train (step %d, %.1f min spent)", run.step, run.budget.spent() / 60)
    log.info("pretraining on %d utterances (%.1f h, %d batches an epoch), %d held out", len(train.units),
             train.frames() / FRAME_RATE / 3600, len(batches), len(held.units))
    _train(run, progress)
    return _save(run, teacher_info)

