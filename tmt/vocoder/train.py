"""Train a unit vocoder from a token store (speech units + durations) and the wavs.

    store (speech, durations) + raw manifest (id -> wav) ──▶ random segments ──▶ generator (+ discriminators)
                                                            └──▶ out_dir/: checkpoint.pt, vocoder.json, model.safetensors,
                                                                 train_log.jsonl, samples/step_N/{id}.wav|png

`out_dir` is itself a vocoder directory (`tmt.vocoder.load_vocoder`) as soon
as the first checkpoint is written. Checkpoints (model, discriminators,
optimizers, schedulers, step, RNG, elapsed time) are written atomically; `resume`
continues from the last one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tmt.config import from_dict, to_dict
from tmt.core.budget import TimeBudget
from tmt.core.errors import TmtError
from tmt.core.io import atomic_write_text, load_torch, make_dirs, save_torch
from tmt.core.progress import progress_bar
from tmt.vocoder.calibration import calibrated
from tmt.vocoder.config import SYNTHESIS_ONLY, VocoderConfig, VocoderError
from tmt.vocoder.data import (
    AudioCache,
    Utterance,
    assign_voices,
    collect_matching_utterances,
    collect_utterances,
    sample_batch,
)
from tmt.vocoder.ema import WeightAverage
from tmt.vocoder.mel import LogMel, mel_distance, save_mel_png
from tmt.vocoder.nets import (
    CodeHiFiGAN,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    apply_weight_norm,
    build_model,
    discriminator_loss,
    duration_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from tmt.vocoder.synthesis import UnitVocoder, save_vocoder, write_wav
from tmt.vocoder.world import frames_per_unit
from tmt.vocoder.world_net import UnitWorld, envelope_weights, sample_world_batch, world_loss

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LIVE_DIR = "live"
"""Subdirectory of a fit's output that `train.export_live` writes the last step's weights to."""


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
        self.ema = WeightAverage(self.model, t.ema_decay) if t.ema_decay else None
        self.logmel = LogMel(cfg.mel).to(self.device)
        self.cache = AudioCache()
        self.step = 0
        self.elapsed = 0.0
        self.last_valid: dict[str, float] = {}
        self.world_targets: dict[str, np.ndarray] | None = None
        """unit-world: normalised WORLD targets by utterance id (`prepare_world`)."""
        self._envelope_weights: Tensor | None = None

    def prepare_world(self, cache_dir: Path, progress: bool | None = None) -> None:
        """unit-world: analyse (or read back from `cache_dir`) the WORLD features, set the network's
        normalisation and default pitch from the training rows, and build the targets."""
        from tmt.vocoder.exemplars import build_exemplars
        from tmt.vocoder.world import FeatureJob, WorldFeatureCache
        from tmt.vocoder.world_net import feature_stats, normalise_targets, unit_prior_table

        assert isinstance(self.model, UnitWorld)
        w = self.cfg.world
        utts = {u.id: u for u in [*self.train_utts, *self.valid_utts]}
        jobs = [FeatureJob(u.id, u.wav_path, u.num_frames) for u in utts.values()]
        feats = WorldFeatureCache(cache_dir, w).ensure(jobs, workers=w.workers, progress=progress)
        voice_ids = [u.voice_id for u in self.train_utts] if self.cfg.voices else None
        stats = feature_stats([feats[u.id] for u in self.train_utts], voice_ids, len(self.cfg.voices))
        self.model.set_stats(stats)
        self.world_targets = {uid: normalise_targets(f, stats) for uid, f in feats.items()}
        if w.unit_prior and self.step == 0:  # a resumed run has the table in its checkpoint
            self.model.set_prior(unit_prior_table(self.train_utts, self.world_targets, self.cfg.num_units,
                                                  frames_per_unit(w)))
        if w.envelope_source == "exemplars" and self.model.exemplar_table() is None:  # a resumed run has it
            table = build_exemplars(
                self.train_utts, feats, columns=slice(2, None), per_frame=frames_per_unit(w), num_units=self.cfg.num_units,
                num_voices=len(self.cfg.voices), points=w.exemplar_points, segments=w.exemplar_segments,
                max_keys=w.exemplar_max_keys)
            self.model.set_exemplars(table)
            log.info("exemplar envelopes: %d contexts (%.0f MB)", len(table.keys), table.templates.nbytes / 1e6)
        log.info("WORLD features of %d utterances; median pitch %.0f Hz (log spread %.3f)",
                 len(feats), float(np.exp(stats["pitch"][0])), float(stats["pitch"][1]))

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
            "ema": self.ema.state_dict() if self.ema else {},
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
        }

    def save(self) -> None:
        """checkpoint.pt (training state) then the inference export (model.safetensors + vocoder.json), with
        `duration.gain` measured on the training rows first (`tmt.vocoder.calibration`)."""
        with self._averaged():
            self.cfg = calibrated(self.cfg, self.vocoder(), self.train_utts)
        self.model.train()
        save_torch(self.out_dir / CHECKPOINT, self.state())
        with self._averaged():
            save_vocoder(
                self.out_dir, self.model, self.cfg, speech_tokenizer=self.speech_tokenizer,
                extra={"step": self.step, "valid": self.last_valid, "ema_decay": self.cfg.train.ema_decay},
            )
        if self.ema is not None and self.cfg.train.export_live:  # the last step's weights, for a paired eval
            save_vocoder(self.out_dir / LIVE_DIR, self.model, self.cfg, speech_tokenizer=self.speech_tokenizer,
                         extra={"step": self.step, "ema_decay": 0.0, "weights_of": "the last step (live)"})

    def _averaged(self) -> contextlib.AbstractContextManager[Any]:
        """The weight average swapped into the model (train.ema_decay), or the live weights."""
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()

    def load(self, path: Path) -> None:
        try:
            st = load_torch(path, map_location=self.device)
        except TmtError as e:
            raise VocoderError(f"cannot resume: {e}") from None
        saved = from_dict(VocoderConfig, st["config"])
        for section in ("arch", "num_units", "embed_dim", "duration", "generator", "discriminator", "unit_mel", "mel",
                        "world", "voices"):
            if _structural(saved, section) != _structural(self.cfg, section):
                raise VocoderError(
                    f"cannot resume {path}: its '{section}' config differs from the one given; use the same "
                    "config (only `train.*` and `loss.*` may change) or a new --out directory"
                )
        self.model.load_state_dict(st["model"])
        if self.ema is not None and st.get("ema"):
            self.ema.load_state_dict(st["ema"])
        elif self.ema is not None:  # averaging switched on at resume: it starts from the loaded weights
            self.ema = WeightAverage(self.model, self.cfg.train.ema_decay)
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
        if self.world_targets is not None:
            batch = sample_world_batch(self.train_utts, self.world_targets, self.rng, t.batch_size, t.segment_frames,
                                       frames_per_unit(self.cfg.world))
        else:
            batch = sample_batch(self.train_utts, self.cache, self.rng, t.batch_size, t.segment_frames)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        self.model.train()
        voice = batch["voice"] if self.cfg.voices else None
        log_dur = self.model.predict_log_durations(batch["units"], batch["unit_mask"], voice)
        l_dur = duration_loss(log_dur, batch["durations"], batch["unit_mask"])
        stats: dict[str, float] = {"dur": l_dur.item()}
        dur_term = lc.duration_weight * l_dur
        if self.world_targets is not None:
            pred = self.model(batch["frames"], batch["frame_mask"], voice)
            env_dim = self.cfg.world.envelope_dim
            assert isinstance(self.model, UnitWorld)  # world targets are made for unit-world models only
            l_world, world_stats = world_loss(pred, batch["target"], batch["frame_mask"], frames_per_unit(self.cfg.world),
                                              env_dim, lc, self._env_weights())
            loss, stats = l_world + dur_term, stats | world_stats
        elif self.hifigan:
            loss = self._hifigan_loss(batch, dur_term, stats)
        else:
            loss = self._unit_mel_loss(batch, voice, dur_term, stats)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.opt_g.step()
        self.sched_g.step()
        if self.ema is not None:
            self.ema.update(self.model)
        stats["loss"] = loss.item()
        return stats

    def _env_weights(self) -> Tensor | None:
        """unit-world: `envelope_weights` for the current normalisation (computed once per fit)."""
        if self._envelope_weights is None and self.cfg.loss.envelope_loss != "normalised":
            assert isinstance(self.model, UnitWorld)
            self._envelope_weights = envelope_weights(self.model.feat_std, self.cfg.world.envelope_dim, self.cfg.loss,
                                                      self.cfg.world)
        return self._envelope_weights

    def _hifigan_loss(self, batch: dict[str, Tensor], l_dur: Tensor, stats: dict[str, float]) -> Tensor:
        """Weighted mel L1 + `l_dur`, plus (from `adversarial_start_step` on) adversarial and feature-matching losses;
        the discriminators take their own step here, on a detached generation."""
        lc = self.cfg.loss
        y = batch["audio"]
        y_hat = self.model(batch["frames"], batch["frame_mask"])
        l_mel = F.l1_loss(self.logmel(y_hat), self.logmel(y))
        loss = lc.mel_weight * l_mel + l_dur
        stats["mel"] = l_mel.item()
        if self.step >= lc.adversarial_start_step:
            y_, yh_ = y[:, None], y_hat[:, None]
            stats["disc"] = self._discriminator_step(y_, yh_.detach())
            assert self.discriminators is not None
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
        return loss

    def _discriminator_step(self, real_audio: Tensor, fake_audio: Tensor) -> float:
        """One optimizer step of the discriminators; returns their loss."""
        assert self.discriminators is not None and self.opt_d is not None
        self.opt_d.zero_grad(set_to_none=True)
        l_d = torch.zeros((), device=self.device)
        for d in self.discriminators.values():
            real, _ = d(real_audio)
            fake, _ = d(fake_audio)
            l_d = l_d + discriminator_loss(real, fake)
        l_d.backward()
        nn.utils.clip_grad_norm_(self.discriminators.parameters(), self.cfg.train.grad_clip)
        self.opt_d.step()
        return l_d.item()

    def _unit_mel_loss(self, batch: dict[str, Tensor], voice: Tensor | None, l_dur: Tensor,
                       stats: dict[str, float]) -> Tensor:
        """Weighted L1 between predicted and true log-mel frames (over valid frames) + `l_dur`."""
        mel_hat = self.model(batch["frames"], batch["frame_mask"], voice)
        target = self.logmel(batch["audio"])[:, : mel_hat.size(1)]
        mask = batch["frame_mask"].repeat_interleave(mel_hat.size(1) // batch["frames"].size(1), dim=1)
        l_mel = (torch.abs(mel_hat - target).mean(-1) * mask).sum() / mask.sum().clamp(min=1)
        stats["mel"] = l_mel.item()
        return self.cfg.loss.mel_weight * l_mel + l_dur

    # ---- validation / samples ------------------------------------------------------------
    def vocoder(self) -> UnitVocoder:
        """An inference view of the current weights (no copy; call in eval mode only)."""
        return UnitVocoder(self.model, self.cfg, {"speech_tokenizer": self.speech_tokenizer}, self.device)

    def validate(self, write_samples: bool = True) -> dict[str, float]:
        if not self.valid_utts:
            return {}
        with self._averaged():
            return self._validate(write_samples)

    def _validate(self, write_samples: bool) -> dict[str, float]:
        voc = self.vocoder()
        utts = self.valid_utts
        voices = [u.voice for u in utts]  # ignored by a vocoder without voices
        wavs = voc.synthesize([u.units for u in utts], [u.durations for u in utts], voice=voices)
        dists = [mel_distance(self.logmel.cpu(), self.cache.get(u), w) for u, w in zip(utts, wavs, strict=True)]
        self.logmel.to(self.device)
        pred = voc.predict_durations([u.units for u in utts], scale=1.0, voice=voices)  # calibrated, no rate
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
        budget = TimeBudget(t.max_minutes, self.elapsed)  # spans resumed runs
        log_path = self.out_dir / "train_log.jsonl"
        acc: dict[str, list[float]] = {}
        saved_at = self.step
        try:
            while self.step < t.max_steps and not budget.exhausted():
                stats = self.train_step()
                self.step += 1
                self.elapsed = budget.spent()
                for k, v in stats.items():
                    acc.setdefault(k, []).append(v)
                bar.update(1)
                if self.step % t.log_every == 0:
                    row = {"step": self.step, "minutes": round(self.elapsed / 60, 3),
                           "lr": self.sched_g.get_last_lr()[0]} | {k: float(np.mean(v)) for k, v in acc.items()}
                    acc = {}
                    bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in ("mel", "dur", "adv", "f0", "env")})
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
        self.elapsed = budget.spent()  # the final save records the time the budget was judged by
        if self.step < t.max_steps and budget.exhausted():
            log.info("time budget of %.1f min spent at step %d; stopping", t.max_minutes, self.step)
        if self.step % t.sample_every != 0 or not self.last_valid:
            self.last_valid = self.validate()
            self._log(log_path, {"step": self.step, **self.last_valid})
        if saved_at != self.step or not (self.out_dir / CHECKPOINT).exists():
            self.save()
        return {"step": self.step, "minutes": round(self.elapsed / 60, 2), "duration_gain": self.cfg.duration.gain,
                **self.last_valid}

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
    extra_store: str | Path | None = None,
    extra_manifest: str | Path | None = None,
    extra_rows: int = 0,
    resume: bool = False,
    device: str = "cpu",
    progress: bool | None = None,
    feature_cache: str | Path | None = None,
    voices: bool = False,
) -> dict[str, Any]:
    """Train (or resume) a vocoder into `out_dir`; returns the final step, time and validation numbers.

    unit-world analyses the speech with WORLD first, cached in `feature_cache` (default
    `out_dir/world-features`; share one directory between fits of the same corpus).
    `voices`: condition on the speaker (`VocoderConfig.voices`, filled from the training rows
    unless the config lists them already). `extra_store`: more training rows (the first `extra_rows`; 0 = all)."""
    out = Path(out_dir)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not resume:
        raise VocoderError(f"{out} already holds a vocoder checkpoint; pass --resume to continue it or choose another --out")
    utts, info = collect_utterances(store, manifest)
    cfg = _with_units(cfg, info["num_units"])
    if valid_store is not None:
        valid, train = collect_matching_utterances(valid_store, valid_manifest or manifest, info["fingerprint"]), utts
    elif len(utts) > 2 * cfg.train.valid_rows:
        train, valid = utts[: -cfg.train.valid_rows], utts[-cfg.train.valid_rows :]
    else:
        train, valid = utts, utts[: cfg.train.valid_rows]
    valid = valid[: max(cfg.train.valid_rows, cfg.train.num_samples)]
    source = {"fingerprint": info["fingerprint"], "name": info["name"], "store": str(store)}
    if extra_store is not None:  # training rows only: the held-out rows stay those of `store`
        extra = collect_matching_utterances(extra_store, extra_manifest or manifest, info["fingerprint"], extra_rows, utts)
        train, source["extra_store"], source["extra_rows"] = [*train, *extra], str(extra_store), len(extra)
    cfg = _with_voices(cfg, train, valid, store, voices)
    make_dirs(out)
    trainer = VocoderTrainer(cfg, train, valid, out, device=device, speech_tokenizer=source)
    if resume and ckpt.exists():  # first, so prepare_world keeps the checkpoint's unit prior and exemplar table
        trainer.load(ckpt)
    if cfg.arch == "unit-world":
        trainer.prepare_world(Path(feature_cache) if feature_cache else out / "world-features", progress)
    _drop_log_after(out / "train_log.jsonl", trainer.step)
    log.info("training %s vocoder (%d parameters) on %d utterances (%d held out) -> %s",
             cfg.arch, sum(p.numel() for p in trainer.model.parameters()), len(train), len(valid), out)
    return trainer.run(progress=progress)


def _drop_log_after(path: Path, step: int) -> None:
    """Drop train_log.jsonl rows after `step`: a run killed past its last checkpoint wrote them,
    and the resumed run writes them again (a fresh run, step 0, drops a stale log whole)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [x for x in lines if x.strip() and _log_step(x) <= step]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(x + "\n" for x in kept))


def _log_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a half-written last line (killed mid-write): dropped


def _structural(cfg: VocoderConfig, section: str) -> Any:
    value = getattr(cfg, section)
    if not dataclasses.is_dataclass(value):
        return value
    d = to_dict(value)
    for k in SYNTHESIS_ONLY.get(section, ()):
        d.pop(k, None)
    return d


def _with_units(cfg: VocoderConfig, num_units: int) -> VocoderConfig:
    return dataclasses.replace(cfg, num_units=int(num_units))


def _with_voices(cfg: VocoderConfig, train: Sequence[Utterance], valid: Sequence[Utterance], store: str | Path,
                 voices: bool) -> VocoderConfig:
    """`cfg` with `voices` (from the training rows when asked for and not listed) and every row's voice id."""
    from collections import Counter

    from tmt.store import StoreError
    from tmt.store.voices import voice_list

    if voices and not cfg.voices:
        try:
            names, default = voice_list(Counter(u.voice for u in train if u.voice is not None), cfg.default_voice)
        except StoreError as e:
            raise VocoderError(f"--voices: {store}: {e}") from None
        cfg = dataclasses.replace(cfg, voices=names, default_voice=default)
    if cfg.voices:
        if cfg.default_voice is None:
            cfg = dataclasses.replace(cfg, default_voice=cfg.voices[0])
        assign_voices([*train, *valid], cfg.voices, str(store))
    return cfg
