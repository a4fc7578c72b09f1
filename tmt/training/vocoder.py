"""Train a unit vocoder from a token store (speech units + durations) and the wavs.

    store (speech, durations) + raw manifest (id -> wav) ──▶ random segments ──▶ generator (+ discriminators)
                                                            └──▶ out_dir/: checkpoint.pt, vocoder.json, model.safetensors,
                                                                 train_log.jsonl, samples/step_N/{id}.wav|png

`out_dir` is itself a vocoder directory (`tmt.models.vocoder.load_vocoder`) as soon
as the first checkpoint is written. Checkpoints (model, discriminators,
optimizers, schedulers, step, RNG, elapsed time) are written atomically; `resume`
continues from the last one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tmt.config import from_dict, to_dict
from tmt.core.audio import FRAME_HOP, SAMPLE_RATE, load_audio
from tmt.core.io import make_dirs
from tmt.core.progress import progress_bar
from tmt.io import atomic_open
from tmt.models.vocoder import (
    LogMel,
    UnitVocoder,
    VocoderConfig,
    VocoderError,
    build_model,
    save_vocoder,
)
from tmt.models.vocoder_nets import (
    CodeHiFiGAN,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    apply_weight_norm,
    discriminator_loss,
    duration_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    sequence_mask,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
@dataclass
class Utterance:
    """One training row: deduplicated units, their run lengths (frames) and the wav."""

    id: str
    units: np.ndarray
    durations: np.ndarray
    wav_path: Path
    text: str | None = None

    @property
    def num_frames(self) -> int:
        return int(self.durations.sum())


class AudioCache:
    """Loads wavs on first use and keeps up to `capacity` of them (cropped/padded to their units)."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, utt: Utterance) -> np.ndarray:
        wav = self._cache.get(utt.id)
        if wav is None:
            wav = align_audio(load_audio(utt.wav_path), utt.num_frames, utt.id)
            self._cache[utt.id] = wav
            if len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(utt.id)
        return wav


def align_audio(wav: np.ndarray, num_frames: int, uid: str = "") -> np.ndarray:
    """Crop or zero-pad a wav to num_frames * 320 samples (units were made with that hop)."""
    want = num_frames * FRAME_HOP
    if abs(len(wav) - want) > 4 * FRAME_HOP:
        log.debug("%s: wav has %d samples, units cover %d", uid, len(wav), want)
    if len(wav) >= want:
        return wav[:want]
    return np.pad(wav, (0, want - len(wav)))


def collect_utterances(store_path: str | Path, manifest: str | Path) -> tuple[list[Utterance], dict[str, Any]]:
    """Rows of `store_path` with speech units, matched by id to the wavs of the raw manifest."""
    from tmt.store.manifest import iter_manifest, media_path
    from tmt.store.token_store import TokenStore

    store = TokenStore(store_path)
    for s in ("speech", "durations"):
        if s not in store.streams:
            raise VocoderError(
                f"token store {store_path} has no '{s}' stream; tokenize speech with run lengths kept "
                "(`tmt tokenize speech`) before training a vocoder"
            )
    wavs: dict[str, tuple[str, str | None]] = {}
    for row in iter_manifest(manifest):
        if row.get("speech"):
            wavs[str(row["id"])] = (str(row["speech"]), row.get("text"))
    utts: list[Utterance] = []
    unmatched = 0
    for i in range(len(store)):
        units = store.tokens(i, "speech")
        if units.size == 0:
            continue
        rid = str(store.meta(i)["id"])
        if rid not in wavs:
            unmatched += 1
            continue
        path, text = wavs[rid]
        durs = store.tokens(i, "durations").astype(np.int64)
        utts.append(Utterance(rid, units.astype(np.int64), durs, media_path(manifest, path), text))
    if not utts:
        raise VocoderError(
            f"no row of {store_path} with speech units has a wav in {manifest} (ids matched: 0, unmatched: {unmatched}); "
            "pass the raw manifest the store was tokenized from"
        )
    if unmatched:
        log.warning("%d rows of %s have no wav in %s and are skipped", unmatched, store_path, manifest)
    tok = (store.index.get("tokenizers") or {}).get("speech") or {}
    info = {
        "num_units": store.vocab_sizes["speech"],
        "fingerprint": store.fingerprints.get("speech"),
        "name": tok.get("name") if isinstance(tok, dict) else None,
    }
    return utts, info


def sample_batch(
    utts: Sequence[Utterance], cache: AudioCache, rng: np.random.Generator, batch_size: int, segment_frames: int
) -> dict[str, Tensor]:
    """Random segments (frame-level units + audio) and the chosen utterances' full unit sequences."""
    chosen = [utts[int(i)] for i in rng.integers(0, len(utts), batch_size)]
    frames = np.zeros((batch_size, segment_frames), dtype=np.int64)
    fmask = np.zeros((batch_size, segment_frames), dtype=bool)
    audio = np.zeros((batch_size, segment_frames * FRAME_HOP), dtype=np.float32)
    for b, u in enumerate(chosen):
        fr = np.repeat(u.units, u.durations)
        wav = cache.get(u)
        start = int(rng.integers(0, len(fr) - segment_frames + 1)) if len(fr) > segment_frames else 0
        seg = fr[start : start + segment_frames]
        frames[b, : len(seg)] = seg
        fmask[b, : len(seg)] = True
        a = wav[start * FRAME_HOP : (start + len(seg)) * FRAME_HOP]
        audio[b, : len(a)] = a
    max_t = max(len(u.units) for u in chosen)
    units = np.zeros((batch_size, max_t), dtype=np.int64)
    durs = np.zeros((batch_size, max_t), dtype=np.int64)
    for b, u in enumerate(chosen):
        units[b, : len(u.units)] = u.units
        durs[b, : len(u.units)] = u.durations
    lengths = torch.tensor([len(u.units) for u in chosen])
    return {
        "frames": torch.from_numpy(frames),
        "frame_mask": torch.from_numpy(fmask),
        "audio": torch.from_numpy(audio),
        "units": torch.from_numpy(units),
        "durations": torch.from_numpy(durs),
        "unit_mask": sequence_mask(lengths, max_t),
    }


# ---------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------
def write_wav(path: Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    import soundfile as sf

    with atomic_open(path, "wb") as f:
        sf.write(f, np.clip(wav, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")


def save_mel_png(path: Path, mels: Sequence[tuple[str, np.ndarray]]) -> None:
    """One panel per (title, log-mel (frames, n_mels)) pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(mels), 1, figsize=(8, 2.2 * len(mels)), squeeze=False)
    for ax, (title, mel) in zip(axes[:, 0], mels, strict=True):
        ax.imshow(mel.T, origin="lower", aspect="auto", interpolation="none", vmin=-11.5, vmax=max(2.0, float(mel.max())))
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel")
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)


def mel_distance(logmel: LogMel, ref: np.ndarray, hyp: np.ndarray) -> float:
    """Mean absolute log-mel difference over the common length."""
    n = min(len(ref), len(hyp))
    if n < FRAME_HOP:
        return float("nan")
    with torch.no_grad():
        a = logmel(torch.from_numpy(np.ascontiguousarray(ref[:n]))[None])
        b = logmel(torch.from_numpy(np.ascontiguousarray(hyp[:n]))[None])
    return float(torch.mean(torch.abs(a - b)))


# ---------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------
class VocoderTrainer:
    """Holds the model, discriminators, optimizers and data; `run()` trains to the configured end."""

    def __init__(
        self,
        cfg: VocoderConfig,
        train: Sequence[Utterance],
        valid: Sequence[Utterance],
        out_dir: str | Path,
        *,
        speech_tokenizer: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> None:
        self.cfg = cfg
        self.train_utts = list(train)
        self.valid_utts = list(valid)
        self.out_dir = Path(out_dir)
        self.speech_tokenizer = dict(speech_tokenizer or {})
        self.device = torch.device(device)
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        self.rng = np.random.default_rng(t.seed)
        self.model = build_model(cfg).to(self.device)
        self.hifigan = isinstance(self.model, CodeHiFiGAN)
        self.discriminators: nn.ModuleDict | None = None
        if isinstance(self.model, CodeHiFiGAN):
            apply_weight_norm(self.model.generator)
            d = cfg.discriminator
            self.discriminators = nn.ModuleDict(
                {
                    "mpd": MultiPeriodDiscriminator(d.periods, d.channel_scale),
                    "msd": MultiScaleDiscriminator(d.num_scales, d.channel_scale),
                }
            ).to(self.device)
        self.opt_g = torch.optim.AdamW(self.model.parameters(), t.lr, betas=(t.betas[0], t.betas[1]), weight_decay=t.weight_decay)
        self.opt_d = (
            torch.optim.AdamW(self.discriminators.parameters(), t.lr, betas=(t.betas[0], t.betas[1]), weight_decay=t.weight_decay)
            if self.discriminators is not None
            else None
        )
        self.sched_g = torch.optim.lr_scheduler.StepLR(self.opt_g, t.decay_every, t.lr_decay)
        self.sched_d = torch.optim.lr_scheduler.StepLR(self.opt_d, t.decay_every, t.lr_decay) if self.opt_d else None
        self.logmel = LogMel(cfg.mel).to(self.device)
        self.cache = AudioCache()
        self.step = 0
        self.elapsed = 0.0
        self.last_valid: dict[str, float] = {}

    # ---- checkpointing --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "config": to_dict(self.cfg),
            "model": self.model.state_dict(),
            "discriminators": self.discriminators.state_dict() if self.discriminators is not None else {},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d else {},
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict() if self.sched_d else {},
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
        }

    def save(self) -> None:
        """checkpoint.pt (training state) then the inference export (model.safetensors + vocoder.json)."""
        with atomic_open(self.out_dir / CHECKPOINT, "wb") as f:
            torch.save(self.state(), f)
        save_vocoder(
            self.out_dir, self.model, self.cfg, speech_tokenizer=self.speech_tokenizer,
            extra={"step": self.step, "valid": self.last_valid},
        )

    def load(self, path: Path) -> None:
        try:
            st = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:
            raise VocoderError(f"cannot resume from {path}: {e}; delete it to start over") from None
        saved = from_dict(VocoderConfig, st["config"])
        for section in ("arch", "num_units", "embed_dim", "duration", "generator", "discriminator", "unit_mel", "mel"):
            if to_dict(getattr(saved, section)) != to_dict(getattr(self.cfg, section)):
                raise VocoderError(
                    f"cannot resume {path}: its '{section}' config differs from the one given; use the same "
                    "config (only `train.*` and `loss.*` may change) or a new --out directory"
                )
        self.model.load_state_dict(st["model"])
        if self.discriminators is not None:
            self.discriminators.load_state_dict(st["discriminators"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.sched_g.load_state_dict(st["sched_g"])
        if self.opt_d is not None and self.sched_d is not None:
            self.opt_d.load_state_dict(st["opt_d"])
            self.sched_d.load_state_dict(st["sched_d"])
        torch.set_rng_state(st["torch_rng"])
        self.rng.bit_generator.state = json.loads(st["numpy_rng"])
        self.step = int(st["step"])
        self.elapsed = float(st["elapsed"])
        log.info("resumed %s at step %d (%.1f min trained)", path, self.step, self.elapsed / 60)

    # ---- one step ---------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        t, lc = self.cfg.train, self.cfg.loss
        batch = {k: v.to(self.device) for k, v in sample_batch(
            self.train_utts, self.cache, self.rng, t.batch_size, t.segment_frames).items()}
        self.model.train()
        log_dur = self.model.predict_log_durations(batch["units"], batch["unit_mask"])
        l_dur = duration_loss(log_dur, batch["durations"], batch["unit_mask"])
        stats: dict[str, float] = {"dur": l_dur.item()}
        if self.hifigan:
            assert self.discriminators is not None and self.opt_d is not None
            y = batch["audio"]
            y_hat = self.model(batch["frames"], batch["frame_mask"])
            l_mel = F.l1_loss(self.logmel(y_hat), self.logmel(y))
            loss = lc.mel_weight * l_mel + lc.duration_weight * l_dur
            stats["mel"] = l_mel.item()
            if self.step >= lc.adversarial_start_step:
                y_, yh_ = y[:, None], y_hat[:, None]
                # discriminators first, on a detached generation
                self.opt_d.zero_grad(set_to_none=True)
                l_d = torch.zeros((), device=self.device)
                for d in self.discriminators.values():
                    real, _ = d(y_)
                    fake, _ = d(yh_.detach())
                    l_d = l_d + discriminator_loss(real, fake)
                l_d.backward()
                nn.utils.clip_grad_norm_(self.discriminators.parameters(), t.grad_clip)
                self.opt_d.step()
                stats["disc"] = l_d.item()
                l_adv = torch.zeros((), device=self.device)
                l_fm = torch.zeros((), device=self.device)
                for d in self.discriminators.values():
                    _, fm_real = d(y_)
                    fake, fm_fake = d(yh_)
                    l_adv = l_adv + generator_adversarial_loss(fake)
                    l_fm = l_fm + feature_matching_loss(fm_real, fm_fake)
                loss = loss + lc.adversarial_weight * l_adv + lc.feature_weight * l_fm
                stats["adv"], stats["fm"] = l_adv.item(), l_fm.item()
                if self.sched_d is not None:
                    self.sched_d.step()
        else:
            mel_hat = self.model(batch["frames"], batch["frame_mask"])
            target = self.logmel(batch["audio"])[:, : mel_hat.size(1)]
            mask = batch["frame_mask"].repeat_interleave(mel_hat.size(1) // batch["frames"].size(1), dim=1)
            l_mel = (torch.abs(mel_hat - target).mean(-1) * mask).sum() / mask.sum().clamp(min=1)
            loss = lc.mel_weight * l_mel + lc.duration_weight * l_dur
            stats["mel"] = l_mel.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.opt_g.step()
        self.sched_g.step()
        stats["loss"] = loss.item()
        return stats

    # ---- validation / samples ------------------------------------------------------------
    def vocoder(self) -> UnitVocoder:
        """An inference view of the current weights (no copy; call in eval mode only)."""
        return UnitVocoder(self.model, self.cfg, {"speech_tokenizer": self.speech_tokenizer}, self.device)

    def validate(self, write_samples: bool = True) -> dict[str, float]:
        if not self.valid_utts:
            return {}
        voc = self.vocoder()
        utts = self.valid_utts
        wavs = voc.synthesize([u.units for u in utts], [u.durations for u in utts])
        dists = [mel_distance(self.logmel.cpu(), self.cache.get(u), w) for u, w in zip(utts, wavs, strict=True)]
        self.logmel.to(self.device)
        pred = voc.predict_durations([u.units for u in utts])
        dur_err = float(np.mean([np.abs(p - u.durations).mean() for p, u in zip(pred, utts, strict=True)]))
        res = {"valid_mel_l1": float(np.nanmean(dists)), "valid_dur_abs_err": dur_err}
        if write_samples:
            sdir = self.out_dir / "samples" / f"step_{self.step:07d}"
            with torch.no_grad():
                for u, w in list(zip(utts, wavs, strict=True))[: self.cfg.train.num_samples]:
                    ref = self.cache.get(u)
                    write_wav(sdir / f"{u.id}.wav", w)
                    m_ref = self.logmel.cpu()(torch.from_numpy(ref)[None])[0].numpy()
                    m_hyp = self.logmel(torch.from_numpy(w)[None])[0].numpy()
                    save_mel_png(sdir / f"{u.id}.png", [(f"{u.id}: reference", m_ref), (f"step {self.step}: resynthesised", m_hyp)])
            self.logmel.to(self.device)
        self.model.train()
        return res

    # ---- loop --------------------------------------------------------------------------
    def run(self, *, progress: bool | None = None) -> dict[str, Any]:
        t = self.cfg.train
        bar = progress_bar(total=t.max_steps, initial=self.step, desc="vocoder", unit="step", enabled=progress)
        budget = t.max_minutes * 60 if t.max_minutes is not None else math.inf
        log_path = self.out_dir / "train_log.jsonl"
        start = time.monotonic() - self.elapsed
        acc: dict[str, list[float]] = {}
        saved_at = self.step
        try:
            while self.step < t.max_steps and self.elapsed < budget:
                stats = self.train_step()
                self.step += 1
                self.elapsed = time.monotonic() - start
                for k, v in stats.items():
                    acc.setdefault(k, []).append(v)
                bar.update(1)
                if self.step % t.log_every == 0:
                    row = {"step": self.step, "minutes": round(self.elapsed / 60, 3),
                           "lr": self.sched_g.get_last_lr()[0]} | {k: float(np.mean(v)) for k, v in acc.items()}
                    acc = {}
                    bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in ("mel", "dur", "adv")})
                    self._log(log_path, row)
                if self.step % t.sample_every == 0:
                    self.last_valid = self.validate()
                    self._log(log_path, {"step": self.step, **self.last_valid})
                    log.info("step %d: %s", self.step, self.last_valid)
                if self.step % t.save_every == 0:
                    self.save()
                    saved_at = self.step
        finally:
            bar.close()
        if self.step % t.sample_every != 0 or not self.last_valid:
            self.last_valid = self.validate()
            self._log(log_path, {"step": self.step, **self.last_valid})
        if saved_at != self.step or not (self.out_dir / CHECKPOINT).exists():
            self.save()
        return {"step": self.step, "minutes": round(self.elapsed / 60, 2), **self.last_valid}

    def _log(self, path: Path, row: dict[str, Any]) -> None:
        make_dirs(path.parent)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def train_vocoder(
    cfg: VocoderConfig,
    store: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    *,
    valid_store: str | Path | None = None,
    valid_manifest: str | Path | None = None,
    resume: bool = False,
    device: str = "cpu",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train (or resume) a vocoder into `out_dir`; returns the final step, time and validation numbers."""
    out = Path(out_dir)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not resume:
        raise VocoderError(f"{out} already holds a vocoder checkpoint; pass --resume to continue it or choose another --out")
    utts, info = collect_utterances(store, manifest)
    cfg = _with_units(cfg, info["num_units"])
    if valid_store is not None:
        valid, vinfo = collect_utterances(valid_store, valid_manifest or manifest)
        if vinfo["fingerprint"] != info["fingerprint"]:
            raise VocoderError(f"{valid_store} was tokenized by a different speech tokenizer than {store}")
        train = utts
    elif len(utts) > 2 * cfg.train.valid_rows:
        train, valid = utts[: -cfg.train.valid_rows], utts[-cfg.train.valid_rows :]
    else:
        train, valid = utts, utts[: cfg.train.valid_rows]
    valid = valid[: max(cfg.train.valid_rows, cfg.train.num_samples)]
    make_dirs(out)
    trainer = VocoderTrainer(
        cfg, train, valid, out, device=device,
        speech_tokenizer={"fingerprint": info["fingerprint"], "name": info["name"], "store": str(store)},
    )
    if resume and ckpt.exists():
        trainer.load(ckpt)
    log.info("training %s vocoder (%d parameters) on %d utterances (%d held out) -> %s",
             cfg.arch, sum(p.numel() for p in trainer.model.parameters()), len(train), len(valid), out)
    return trainer.run(progress=progress)


def _with_units(cfg: VocoderConfig, num_units: int) -> VocoderConfig:
    import dataclasses

    return dataclasses.replace(cfg, num_units=int(num_units))


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------
def transcribe_with_judge(wavs: Sequence[np.ndarray]) -> tuple[list[str] | None, dict[str, Any] | str]:
    """Transcripts from the evaluation ASR judge, or (None, reason) when it is unavailable."""
    try:
        from tmt.evaluation.asr import load_asr_judge
    except ImportError as e:
        return None, f"the ASR judge module is missing ({e})"
    judge, reason = load_asr_judge()
    if judge is None:
        return None, reason
    return judge.transcribe([(w, SAMPLE_RATE) for w in wavs]), judge.describe()


def transcribe_with_model(model_dir: str | Path, wav_paths: Sequence[Path]) -> tuple[list[str] | None, str]:
    """Transcripts from a tmt translation model (speech -> text), or (None, reason)."""
    try:
        from tmt.generation.translator import Translator
    except ImportError as e:
        return None, f"the translation model code is missing ({e})"
    tr = Translator.from_checkpoint(model_dir)
    res = tr.translate([str(p) for p in wav_paths], tgt="text", src="speech")
    return [r.text or "" for r in res], ""


def evaluate_vocoder(
    vocoder_dir: str | Path,
    store: str | Path,
    manifest: str | Path,
    *,
    limit: int | None = None,
    gt_durations: bool = False,
    model: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Resynthesise a held-out store's units; WER against the manifest texts and mel distance to the wavs.

    WER comes from the evaluation ASR judge when installed, else from `model`
    (a tmt speech->text model) when given; otherwise it is reported as
    unavailable, with the reason, never estimated. The ASR judge's WER on the
    original recordings is reported beside it as the ceiling.
    """
    import tempfile

    from tmt.models.vocoder import load_vocoder

    utts, info = collect_utterances(store, manifest)
    utts = utts[:limit] if limit else utts
    voc = load_vocoder(vocoder_dir, expected_fingerprint=info["fingerprint"])
    t0 = time.perf_counter()
    wavs = voc.synthesize([u.units for u in utts], [u.durations for u in utts] if gt_durations else None)
    synth_s = time.perf_counter() - t0
    audio_s = sum(len(w) for w in wavs) / SAMPLE_RATE
    cache = AudioCache()
    refs_audio = [cache.get(u) for u in utts]
    logmel = LogMel(voc.cfg.mel)
    res: dict[str, Any] = {
        "vocoder": str(vocoder_dir),
        "arch": voc.arch,
        "rows": len(utts),
        "durations": "ground truth" if gt_durations else "predicted",
        "audio_seconds": round(audio_s, 2),
        "rtf_x": round(audio_s / max(synth_s, 1e-9), 2),
        "mel_l1": round(float(np.nanmean([mel_distance(logmel, r, w) for r, w in zip(refs_audio, wavs, strict=True)])), 4),
    }
    texts = [u.text or "" for u in utts]
    keep = out_dir is not None
    wav_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="tmt-vocoder-eval-"))
    paths = []
    for u, w in zip(utts, wavs, strict=True):
        write_wav(wav_dir / f"{u.id}.wav", w)
        paths.append(wav_dir / f"{u.id}.wav")
    from tmt.evaluation.metrics import wer_cer

    hyps, judge = transcribe_with_judge(wavs)
    if hyps is not None:
        m = wer_cer(hyps, texts)
        res["wer"] = round(m.values.get("wer", float("nan")), 2)
        res["cer"] = round(m.values.get("cer", float("nan")), 2)
        ref_hyps, _ = transcribe_with_judge(refs_audio)
        assert ref_hyps is not None
        m_ref = wer_cer(ref_hyps, texts)
        res["wer_original_audio"] = round(m_ref.values.get("wer", float("nan")), 2)
        res["judge"] = judge
        res["examples"] = [{"id": u.id, "ref": t, "hyp": h} for u, t, h in list(zip(utts, texts, hyps, strict=True))[:5]]
    else:
        res["wer"] = f"unavailable: {judge}"
        if model is not None:
            mh, why = transcribe_with_model(model, paths)
            if mh is not None:
                res["wer_model"] = round(wer_cer(mh, texts).values.get("wer", float("nan")), 2)
                res["model"] = str(model)
            else:
                res["wer_model"] = f"unavailable: {why}"
    if not keep:
        import shutil

        shutil.rmtree(wav_dir, ignore_errors=True)
    return res
