"""The unit-world network: units at 50 Hz -> WORLD parameters per WORLD frame, and what it is trained on.

The body is unit-mel's (unit embedding, conv blocks, Transformer); the head predicts,
per WORLD frame, the columns of a `tmt.vocoder.world` feature matrix:

    0  log-F0, normalised per utterance ((lf0 - utterance mean) / utterance std, voiced frames)
    1  V/UV logit
    2+ coded envelope and band aperiodicity, normalised by the training set's mean / std

Per-utterance F0 normalisation means no speaker identity is needed; at synthesis the
pitch is put back with a mean and spread (the training speech's medians by default, kept
in the `pitch` buffer, so they travel with the weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tmt.core.audio import FRAME_HOP
from tmt.vocoder.config import LossConfig, WorldConfig
from tmt.vocoder.data import Utterance, voice_ids
from tmt.vocoder.duration import sequence_mask
from tmt.vocoder.exemplars import ExemplarTable, exemplar_frames
from tmt.vocoder.nets import UnitMel
from tmt.vocoder.world import (
    LF0,
    VUV,
    frames_per_unit,
    log_envelope_basis,
    scale_envelope_contrast,
    smooth_tracks,
    synth_job,
    synthesize_many,
)

MIN_LF0_STD = 0.02
"""Floor of an utterance's log-F0 spread (a monotone utterance would divide by ~0)."""


class UnitWorld(UnitMel):
    """Units (B, F) -> WORLD parameters (B, F * frames_per_unit, 2 + envelope + aperiodicity bands)."""

    feat_mean: Tensor
    feat_std: Tensor
    pitch: Tensor
    voice_pitch: Tensor | None
    prior: Tensor | None
    exemplar_keys: Tensor | None
    exemplar_templates: Tensor | None

    def __init__(self, *, feature_dim: int, per_frame: int, unit_prior: bool = False, exemplar_points: int = 0,
                 **body: int | float) -> None:
        super().__init__(n_mels=feature_dim, mel_per_frame=per_frame, **body)  # type: ignore[arg-type]
        self.num_voices = int(body.get("num_voices", 0))
        self.register_buffer("feat_mean", torch.zeros(feature_dim - 2))
        self.register_buffer("feat_std", torch.ones(feature_dim - 2))
        # log-F0: median over utterances of their mean and of their spread
        self.register_buffer("pitch", torch.tensor([math.log(120.0), 0.15]))
        # the same per voice (VocoderConfig.voices), so each voice speaks at its own pitch
        num_voices = int(body.get("num_voices", 0))
        self.register_buffer("voice_pitch", self.pitch.repeat(num_voices, 1) if num_voices else None)
        # each unit's mean normalised target (world.unit_prior); the network adds its residual
        self.register_buffer("prior", torch.zeros(self.embed.num_embeddings, feature_dim) if unit_prior else None)
        # world.envelope_source=exemplars: context keys and their templates (`tmt.vocoder.exemplars`); the
        # table's size is the data's, so loading resizes these to the saved ones
        ex = exemplar_points > 0
        self.register_buffer("exemplar_keys", torch.zeros(0, dtype=torch.long) if ex else None)
        self.register_buffer("exemplar_templates",
                             torch.zeros(0, exemplar_points, feature_dim - 2, dtype=torch.float16) if ex else None)

    @property
    def per_frame(self) -> int:
        return self.mel_per_frame

    def set_stats(self, stats: Mapping[str, np.ndarray]) -> None:
        with torch.no_grad():
            self.feat_mean.copy_(torch.as_tensor(stats["feat_mean"]))
            self.feat_std.copy_(torch.as_tensor(stats["feat_std"]))
            self.pitch.copy_(torch.as_tensor(stats["pitch"]))
            if self.voice_pitch is not None:
                self.voice_pitch.copy_(torch.as_tensor(stats["voice_pitch"]))

    def set_prior(self, prior: np.ndarray) -> None:
        """The per-unit table (num_units, feature_dim) of `unit_prior_table`; only with world.unit_prior."""
        if self.prior is None:
            raise ValueError("this unit-world network was built without world.unit_prior")
        with torch.no_grad():
            self.prior.copy_(torch.as_tensor(prior))

    def set_exemplars(self, table: ExemplarTable) -> None:
        """The exemplar table of `build_exemplars`; only with world.envelope_source=exemplars."""
        if self.exemplar_keys is None:
            raise ValueError("this unit-world network was built without world.envelope_source=exemplars")
        device = self.exemplar_keys.device
        self.exemplar_keys = torch.from_numpy(table.keys).to(device)
        self.exemplar_templates = torch.from_numpy(table.templates).to(device)

    def exemplar_table(self) -> ExemplarTable | None:
        """The exemplar table, or None (network envelopes, or not built yet)."""
        if self.exemplar_keys is None or self.exemplar_templates is None or not len(self.exemplar_keys):
            return None
        return ExemplarTable(self.exemplar_keys.cpu().numpy(), self.exemplar_templates.cpu().numpy())

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        for name in ("exemplar_keys", "exemplar_templates"):
            saved = state_dict.get(prefix + name)
            if saved is not None and getattr(self, name) is not None:
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, frames: Tensor, frame_mask: Tensor, voice: Tensor | None = None) -> Tensor:
        y = super().forward(frames, frame_mask, voice)
        if self.prior is not None:
            y = y + self.prior[frames].repeat_interleave(self.per_frame, dim=1)
        return y


# ---------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------
def _lf0_moments(f: np.ndarray) -> tuple[float, float] | None:
    v = f[:, VUV] > 0.5
    if v.sum() < 2:
        return None
    lf0 = f[v, LF0]
    return float(lf0.mean()), max(float(lf0.std()), MIN_LF0_STD)


def _median_pitch(moments: Sequence[tuple[float, float] | None], default: np.ndarray) -> np.ndarray:
    have = [m for m in moments if m is not None]
    return np.median(np.asarray(have), axis=0) if have else default


def feature_stats(feats: Sequence[np.ndarray], voice_ids: Sequence[int] | None = None,
                  num_voices: int = 0) -> dict[str, np.ndarray]:
    """Normalisation of the envelope / aperiodicity columns and the median pitch (log-F0 mean and
    spread) of the training speech; with `voice_ids` (one per matrix) also each voice's (a voice
    without voiced speech gets the overall one)."""
    allf = np.concatenate(list(feats))[:, 2:].astype(np.float64)
    moments = [_lf0_moments(f) for f in feats]
    pitch = _median_pitch(moments, np.array([math.log(120.0), 0.15]))
    out = {
        "feat_mean": allf.mean(0).astype(np.float32),
        "feat_std": np.maximum(allf.std(0), 1e-3).astype(np.float32),
        "pitch": pitch.astype(np.float32),
    }
    if voice_ids is not None:
        out["voice_pitch"] = np.stack([
            _median_pitch([m for m, v in zip(moments, voice_ids, strict=True) if v == k], pitch) for k in range(num_voices)
        ]).astype(np.float32).reshape(num_voices, 2)
    return out


def normalise_targets(f: np.ndarray, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """A feature matrix -> the network's target (per-utterance z-scored log-F0, 0/1 V/UV, z-scored rest)."""
    out = np.empty_like(f, dtype=np.float32)
    m = _lf0_moments(f) or (float(stats["pitch"][0]), float(stats["pitch"][1]))
    voiced = f[:, VUV] > 0.5
    out[:, LF0] = np.where(voiced, (f[:, LF0] - m[0]) / m[1], 0.0)
    out[:, VUV] = voiced
    out[:, 2:] = (f[:, 2:] - stats["feat_mean"]) / stats["feat_std"]
    return out


def unit_prior_table(utts: Sequence[Utterance], targets: Mapping[str, np.ndarray], num_units: int,
                     per_frame: int) -> np.ndarray:
    """Each unit's mean normalised target over the training rows -> (num_units, feature_dim), in the
    network's output space: log-F0 averaged over voiced frames, V/UV as the logit of the voiced share
    (kept within 2%..98%), the rest plain means; units never seen stay 0."""
    dim = next(iter(targets.values())).shape[1]
    sums, counts = np.zeros((num_units, dim)), np.zeros(num_units)
    f0_sum, voiced = np.zeros(num_units), np.zeros(num_units)
    for u in utts:
        t = targets[u.id].astype(np.float64)
        unit = np.repeat(np.repeat(u.units, u.durations), per_frame)[: len(t)]
        t = t[: len(unit)]
        np.add.at(sums, unit, t)
        np.add.at(counts, unit, 1.0)
        v = t[:, VUV] > 0.5
        np.add.at(f0_sum, unit[v], t[v, LF0])
        np.add.at(voiced, unit[v], 1.0)
    seen = counts > 0
    out = np.zeros((num_units, dim))
    out[seen] = sums[seen] / counts[seen, None]
    out[:, LF0] = np.where(voiced > 0, f0_sum / np.maximum(voiced, 1.0), 0.0)
    share = np.clip(np.where(seen, voiced / np.maximum(counts, 1.0), 0.5), 0.02, 0.98)
    out[:, VUV] = np.where(seen, np.log(share / (1.0 - share)), 0.0)
    return out.astype(np.float32)


def sample_world_batch(utts: Sequence[Utterance], targets: Mapping[str, np.ndarray], rng: np.random.Generator,
                       batch_size: int, segment_frames: int, per_frame: int) -> dict[str, Tensor]:
    """Random segments: frame-level units, their WORLD-frame targets, and the full unit sequences."""
    chosen = [utts[int(i)] for i in rng.integers(0, len(utts), batch_size)]
    dim = next(iter(targets.values())).shape[1]
    frames = np.zeros((batch_size, segment_frames), dtype=np.int64)
    fmask = np.zeros((batch_size, segment_frames), dtype=bool)
    target = np.zeros((batch_size, segment_frames * per_frame, dim), dtype=np.float32)
    for b, u in enumerate(chosen):
        fr = np.repeat(u.units, u.durations)
        start = int(rng.integers(0, len(fr) - segment_frames + 1)) if len(fr) > segment_frames else 0
        seg = fr[start : start + segment_frames]
        frames[b, : len(seg)], fmask[b, : len(seg)] = seg, True
        t = targets[u.id][start * per_frame : (start + len(seg)) * per_frame]
        target[b, : len(t)] = t
    max_t = max(len(u.units) for u in chosen)
    units = np.zeros((batch_size, max_t), dtype=np.int64)
    durs = np.zeros((batch_size, max_t), dtype=np.int64)
    for b, u in enumerate(chosen):
        units[b, : len(u.units)], durs[b, : len(u.units)] = u.units, u.durations
    return {
        "frames": torch.from_numpy(frames), "frame_mask": torch.from_numpy(fmask),
        "target": torch.from_numpy(target), "units": torch.from_numpy(units), "durations": torch.from_numpy(durs),
        "unit_mask": sequence_mask(torch.tensor([len(u.units) for u in chosen]), max_t),
        "voice": voice_ids(chosen),
    }


def envelope_weights(feat_std: Tensor, env_dim: int, lc: LossConfig, cfg: WorldConfig | None = None) -> Tensor | None:
    """How the envelope's normalised code errors count in its L1 (`lc.envelope_loss`): None for
    `normalised`; for `spectral` a weight per dimension (its training spread over the mean spread,
    so an error counts in the codes' own units); for `log-mel` a matrix (env_dim, envelope_points)
    taking a normalised code error to the log-envelope error at mel-spaced frequencies."""
    if lc.envelope_loss == "normalised":
        return None
    std = feat_std[:env_dim].float()
    if lc.envelope_loss == "spectral":
        return std / std.mean().clamp(min=1e-8)
    basis = log_envelope_basis(env_dim, lc.envelope_points, (cfg or WorldConfig()).synthesis_fft)
    return std[:, None] * torch.from_numpy(basis).to(std.device)


def world_loss(pred: Tensor, target: Tensor, frame_mask: Tensor, per_frame: int, env_dim: int,
               lc: LossConfig, env_weights: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """L1 on log-F0 (voiced frames only), BCE on V/UV, L1 on envelope (each dimension weighted by
    `env_weights`, see `envelope_weights`) and aperiodicity; all over valid frames."""
    mask = frame_mask.repeat_interleave(per_frame, dim=1).float()
    n = mask.sum().clamp(min=1)
    voiced = target[..., VUV] * mask
    l_f0 = (torch.abs(pred[..., LF0] - target[..., LF0]) * voiced).sum() / voiced.sum().clamp(min=1)
    l_vuv = (F.binary_cross_entropy_with_logits(pred[..., VUV], target[..., VUV], reduction="none") * mask).sum() / n
    env_diff = pred[..., 2 : 2 + env_dim] - target[..., 2 : 2 + env_dim]
    if env_weights is not None and env_weights.dim() == 2:  # log-mel: the decoded log-envelope error
        env_err = torch.abs(env_diff @ env_weights)
    else:
        env_err = torch.abs(env_diff) if env_weights is None else torch.abs(env_diff) * env_weights
    l_env = (env_err.mean(-1) * mask).sum() / n
    l_ap = (torch.abs(pred[..., 2 + env_dim :] - target[..., 2 + env_dim :]).mean(-1) * mask).sum() / n
    loss = lc.f0_weight * l_f0 + lc.vuv_weight * l_vuv + lc.envelope_weight * l_env + lc.aperiodicity_weight * l_ap
    return loss, {"f0": l_f0.item(), "vuv": l_vuv.item(), "env": l_env.item(), "ap": l_ap.item()}


# ---------------------------------------------------------------------------------------
# prediction -> waveform
# ---------------------------------------------------------------------------------------
def world_feature_rows(model: UnitWorld, pred: Tensor, lengths: Sequence[int], cfg: WorldConfig, *,
                       pitch_mean_hz: float | None = None, pitch_range: float | None = None,
                       voice: Tensor | None = None,
                       units: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> list[np.ndarray]:
    """Network output (B, F * per_frame, D) and each row's unit-frame count -> one feature matrix per
    row in `tmt.vocoder.world.analyse`'s layout (log-F0 where voiced else 0, V/UV 0/1, envelope,
    aperiodicity), with the output pitch put back (mean and spread: the row's voice's with `voice`
    ids on a voice-conditioned network, else the training speech's; `pitch_mean_hz` overrides the mean).
    A network with an exemplar table takes envelope and aperiodicity from it, given each row's
    (deduplicated units, durations) in `units`."""
    pitch_mean_hz = cfg.pitch_mean_hz if pitch_mean_hz is None else pitch_mean_hz
    pitch_range = cfg.pitch_range if pitch_range is None else pitch_range
    moments = model.pitch.expand(pred.size(0), 2)
    if voice is not None and model.voice_pitch is not None:
        moments = model.voice_pitch[voice]
    mean = torch.full_like(moments[:, 0], math.log(pitch_mean_hz)) if pitch_mean_hz else moments[:, 0]
    spread = moments[:, 1] * pitch_range
    rest = (pred[..., 2:] * model.feat_std + model.feat_mean).float().cpu().numpy()
    voiced = (pred[..., VUV] > 0).float()
    lf0_t = (mean[:, None] + spread[:, None] * pred[..., LF0]).clamp(math.log(cfg.f0_floor), math.log(cfg.f0_ceil)) * voiced
    lf0, vuv = lf0_t.float().cpu().numpy(), voiced.cpu().numpy()
    per = frames_per_unit(cfg)
    rows = [np.concatenate([lf0[row, : int(n) * per, None], vuv[row, : int(n) * per, None], rest[row, : int(n) * per]],
                           axis=1).astype(np.float32) for row, n in enumerate(lengths)]
    table = model.exemplar_table()
    if table is not None and units is not None:
        voices = voice.tolist() if voice is not None else [0] * len(rows)
        for f, (u, d), v in zip(rows, units, voices, strict=True):
            f[:, 2:] = exemplar_frames(table, u, d, int(v), f[:, 2:], per_frame=per, num_units=model.embed.num_embeddings,
                                       num_voices=model.num_voices)
    env = slice(2, 2 + cfg.envelope_dim)
    for f in rows:  # each returns its input untouched when off (0 ms, contrast 1)
        f[:, 2:] = smooth_tracks(f[:, 2:], cfg.envelope_smoothing_ms, cfg.frame_period)
        f[:, env] = scale_envelope_contrast(f[:, env], cfg.envelope_contrast, cfg.synthesis_fft)
    return rows


def world_waveforms(model: UnitWorld, pred: Tensor, lengths: Sequence[int], cfg: WorldConfig, *,
                    pitch_mean_hz: float | None = None, pitch_range: float | None = None,
                    voice: Tensor | None = None,
                    units: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> list[np.ndarray]:
    """Network output (B, F * per_frame, D) and each row's unit-frame count -> float32 wavs (frames x 320)
    (`units` as in `world_feature_rows`)."""
    feats = world_feature_rows(model, pred, lengths, cfg, pitch_mean_hz=pitch_mean_hz, pitch_range=pitch_range,
                               voice=voice, units=units)
    jobs = [synth_job(f, int(n) * FRAME_HOP, cfg) for f, n in zip(feats, lengths, strict=True)]
    return synthesize_many(jobs, cfg.workers)
