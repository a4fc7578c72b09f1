"""Synthesis with a unit vocoder: deduplicated speech units -> 16 kHz waveforms (DESIGN section 9).

Two architectures share the unit embedding and the duration predictor:

* ``hifigan`` - the unit HiFi-GAN ("CodeHiFiGAN") of fairseq / speech-resynthesis:
  HiFi-GAN generator upsampling 50 Hz unit frames by 320 to samples, trained with
  multi-period and multi-scale discriminators. Presets ``paper`` and ``demo``.
* ``unit-mel`` - a fast CPU alternative: a small conv/Transformer network
  regressing 80-bin log-mel frames (L1), turned into a waveform by Griffin-Lim.
* ``unit-world`` - the same network regressing WORLD parameters (F0, voicing,
  coded envelope, band aperiodicity; `tmt.vocoder.world_net`), voiced by
  `pyworld.synthesize`: harmonics come from F0 by construction.

A vocoder directory holds ``vocoder.json`` (arch, config, unit vocabulary size,
the fingerprint of the speech tokenizer whose units it was trained on) and
``model.safetensors`` (inference weights, weight norm folded). Load it with
`load_vocoder`; `UnitVocoder.synthesize` is batched (padding + masks) and
predicts durations when none are given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils import parametrize

from tmt import TmtError
from tmt.config import from_dict, to_dict
from tmt.core.audio import FRAME_HOP, SAMPLE_RATE
from tmt.core.batching import length_batches
from tmt.core.io import atomic_open, atomic_write_json, load_torch, make_dirs, read_json_object
from tmt.vocoder.config import VocoderConfig, VocoderError, with_synthesis_settings
from tmt.vocoder.duration import DURATION_ROUNDINGS, durations_from_log, expand_units, sequence_mask
from tmt.vocoder.mel import GriffinLimInverter
from tmt.vocoder.nets import CodeHiFiGAN, VocoderModel, build_model
from tmt.vocoder.world_net import UnitWorld, world_feature_rows, world_waveforms

log = logging.getLogger(__name__)

VOCODER_FORMAT = "tmt-unit-vocoder"
VOCODER_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MAX_PADDING = 0.1
"""Largest share of padded frames a synthesis batch may have beyond its real ones (frames are sorted by length)."""

VoiceArg = str | Sequence[str | None] | None
"""A synthesis call's voice: one name for every utterance, one per utterance, or None (the default)."""


# ---------------------------------------------------------------------------------------
# the inference object
# ---------------------------------------------------------------------------------------
class UnitVocoder:
    """Turns deduplicated unit sequences into 16 kHz float32 waveforms (batched)."""

    sample_rate: int = SAMPLE_RATE

    def __init__(self, model: VocoderModel, cfg: VocoderConfig, info: Mapping[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.info = dict(info or {})
        from tmt.core.device import resolve_device

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.num_units = cfg.num_units
        self._inverter: GriffinLimInverter | None = None
        self.pitch_mean_hz: float | None = None
        """unit-world: output pitch mean (Hz) instead of `cfg.world.pitch_mean_hz` (None = keep the config's)."""
        self.pitch_range: float | None = None
        """unit-world: output pitch range instead of `cfg.world.pitch_range` (None = keep the config's)."""

    @property
    def arch(self) -> str:
        return self.cfg.arch

    @property
    def fingerprint(self) -> str | None:
        fp = (self.info.get("speech_tokenizer") or {}).get("fingerprint")
        return str(fp) if fp else None

    @property
    def voices(self) -> list[str]:
        """The voices this vocoder is conditioned on (empty: one averaged voice)."""
        return list(self.cfg.voices)

    @property
    def has_duration_predictor(self) -> bool:
        return getattr(self.model, "duration_predictor", None) is not None

    # ---- helpers ----------------------------------------------------------
    def _check_units(self, units: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for i, u in enumerate(units):
            a = np.asarray(u)
            if a.ndim != 1:
                raise VocoderError(f"units[{i}] must be a 1-D sequence, got shape {a.shape}")
            if a.size and (a.dtype.kind not in "iu" or int(a.min()) < 0 or int(a.max()) >= self.num_units):
                raise VocoderError(
                    f"units[{i}] has ids outside [0, {self.num_units}) (min {a.min()}, max {a.max()}): "
                    "pass tokenizer-local speech ids (subtract the joint-vocabulary offset)"
                )
            out.append(a.astype(np.int64))
        return out

    def _voice_ids(self, voice: VoiceArg, n: int) -> list[int] | None:
        """One voice index per utterance (None entries: the default voice), or None for a vocoder
        without voices, which speaks every utterance in its one voice whatever is asked."""
        if not self.cfg.voices:
            return None
        names = [voice] * n if voice is None or isinstance(voice, str) else list(voice)
        if len(names) != n:
            raise VocoderError(f"got {len(names)} voices for {n} unit sequences")
        index = {v: k for k, v in enumerate(self.cfg.voices)}
        default = self.cfg.default_voice or self.cfg.voices[0]
        out = []
        for name in names:
            name = default if name is None else str(name)
            if name not in index:
                raise VocoderError(f"unknown voice '{name}'; this vocoder knows: {', '.join(self.cfg.voices)}")
            out.append(index[name])
        return out

    def _voice_tensor(self, ids: list[int] | None, rows: Sequence[int]) -> Tensor | None:
        return None if ids is None else torch.tensor([ids[i] for i in rows], dtype=torch.long, device=self.device)

    def _pad(self, seqs: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        t = torch.zeros(len(seqs), int(lengths.max()) if len(seqs) else 0, dtype=torch.long)
        for i, s in enumerate(seqs):
            t[i, : len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
        return t.to(self.device), sequence_mask(lengths, t.size(1)).to(self.device)

    @torch.inference_mode()
    def predict_durations(
        self, units: Sequence[np.ndarray], *, scale: float | None = None, batch_size: int = 64,
        rounding: str = "diffuse", voice: VoiceArg = None,
    ) -> list[np.ndarray]:
        """Frames (20 ms) per unit, predicted; at least 1 each (`voice` as in `synthesize`).

        The predictor's durations are multiplied by the vocoder's calibration `duration.gain` and by
        `scale` (the speaking rate; None: the config's `duration.scale`).
        `rounding`: `diffuse` keeps each utterance's predicted length; `per-unit` rounds
        every unit on its own, exactly as fairseq's CodeHiFiGAN does (see `durations_from_log`).
        """
        if rounding not in DURATION_ROUNDINGS:
            raise VocoderError(f"duration rounding must be one of {DURATION_ROUNDINGS}, got {rounding!r}")
        units = self._check_units(units)
        factor = self.cfg.duration.gain * (self.cfg.duration.scale if scale is None else scale)
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(units)
        for chunk, log_d, m in self._log_durations(units, voice, batch_size):
            d = durations_from_log(log_d, factor, m, rounding)
            for row, i in enumerate(chunk):
                out[i] = d[row, : len(units[i])].cpu().numpy()
        return out

    @torch.inference_mode()
    def predicted_runs(self, units: Sequence[np.ndarray], *, batch_size: int = 64, voice: VoiceArg = None
                       ) -> list[np.ndarray]:
        """The predictor's own run lengths, float frames per unit, before `duration.gain`, the speaking rate,
        the floor of one frame and rounding (what `tmt.vocoder.calibration` measures)."""
        units = self._check_units(units)
        out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(units)
        for chunk, log_d, _ in self._log_durations(units, voice, batch_size):
            runs = torch.expm1(log_d).float().cpu().numpy()
            for row, i in enumerate(chunk):
                out[i] = runs[row, : len(units[i])]
        return out

    def _log_durations(self, units: list[np.ndarray], voice: VoiceArg, batch_size: int
                       ) -> Iterator[tuple[list[int], Tensor, Tensor]]:
        """(rows, predicted log(1 + d) (B, T), mask) per padded batch of the non-empty `units`."""
        if not self.has_duration_predictor:
            raise VocoderError("this vocoder has no duration predictor; pass durations to synthesize()")
        ids = self._voice_ids(voice, len(units))
        idx = [i for i, u in enumerate(units) if len(u)]
        for s in range(0, len(idx), batch_size):
            chunk = idx[s : s + batch_size]
            u, m = self._pad([units[i] for i in chunk])
            yield chunk, self.model.predict_log_durations(u, m, self._voice_tensor(ids, chunk)), m

    @torch.inference_mode()
    def synthesize(
        self,
        units: Sequence[np.ndarray],
        durations: Sequence[np.ndarray] | None = None,
        *,
        duration_scale: float | None = None,
        duration_rounding: str = "diffuse",
        max_frames_per_batch: int = 4000,
        voice: VoiceArg = None,
    ) -> list[np.ndarray]:
        """Units (tokenizer-local ids, deduplicated) -> float32 waveforms at 16 kHz.

        `voice`: one name for all, one per utterance, or None (the default voice) for a vocoder
        trained with voices (`voices`); an unknown name is refused. A vocoder without voices has one
        voice and ignores it. Durations (frames of 20 ms per unit) are predicted when not given
        (`duration_scale` as `predict_durations`' `scale`). Inputs
        are grouped by length into padded batches of at most
        `max_frames_per_batch` frames (batch x longest) that are at most `MAX_PADDING` padding (a batch
        of very different lengths costs the network more than smaller ones); outputs come back in
        input order, each cut to its own length (frames x 320 samples).
        """
        units = self._check_units(units)
        ids = self._voice_ids(voice, len(units))
        if durations is None:
            durs = self.predict_durations(units, scale=duration_scale, rounding=duration_rounding, voice=voice)
        else:
            durs = _check_durations(units, durations)
        n_frames = [int(d.sum()) for d in durs]
        out: list[np.ndarray] = [np.zeros(n * FRAME_HOP, dtype=np.float32) for n in n_frames]
        voiced = [i for i, n in enumerate(n_frames) if n > 0]  # empty items stay empty wavs
        for rows in length_batches([n_frames[i] for i in voiced], max_frames_per_batch, max_padding=MAX_PADDING):
            batch = [voiced[r] for r in rows]
            wavs = self._synth_batch([units[j] for j in batch], [durs[j] for j in batch], self._voice_tensor(ids, batch))
            for j, wav in zip(batch, wavs, strict=True):
                out[j] = wav
        return out

    @torch.inference_mode()
    def world_features(self, units: Sequence[np.ndarray], durations: Sequence[np.ndarray],
                       voice: VoiceArg = None) -> list[np.ndarray]:
        """unit-world only: the predicted WORLD feature matrix of each utterance (`tmt.vocoder.world.analyse`'s
        layout, 4 rows per unit frame at 5 ms), before synthesis; for diagnosis (`tmt vocoder eval --ladder`)."""
        if not isinstance(self.model, UnitWorld):
            raise VocoderError(f"world_features needs a unit-world vocoder, not {self.arch}")
        out = []
        ids = self._voice_ids(voice, len(units))
        for k, (u, d) in enumerate(zip(self._check_units(units), _check_durations(units, durations), strict=True)):
            uu, m = self._pad([u])
            dd, _ = self._pad([d])
            frames, fmask = expand_units(uu, dd, m)
            v = self._voice_tensor(ids, [k])
            out += world_feature_rows(self.model, self.model(frames, fmask, v), [int(fmask.sum())], self.cfg.world,
                                      pitch_mean_hz=self.pitch_mean_hz, pitch_range=self.pitch_range, voice=v,
                                      units=[(u, d)])
        return out

    def _synth_batch(self, units: list[np.ndarray], durs: list[np.ndarray], voice: Tensor | None) -> list[np.ndarray]:
        u, m = self._pad(units)
        d, _ = self._pad(durs)
        frames, fmask = expand_units(u, d, m)
        lengths = fmask.sum(dim=1).tolist()
        if isinstance(self.model, UnitWorld):
            return world_waveforms(self.model, self.model(frames, fmask, voice), lengths, self.cfg.world,
                                   pitch_mean_hz=self.pitch_mean_hz, pitch_range=self.pitch_range, voice=voice,
                                   units=list(zip(units, durs, strict=True)))
        if isinstance(self.model, CodeHiFiGAN):
            wav = self.model(frames, fmask)
        else:
            mel = self.model(frames, fmask, voice)
            if self._inverter is None:
                self._inverter = GriffinLimInverter(self.cfg.mel, self.cfg.unit_mel.griffin_lim_iters).to(self.device)
            # silence (log 1e-5) where padded so Griffin-Lim sees nothing there
            mel_mask = fmask.repeat_interleave(self.model.mel_per_frame, dim=1)
            mel = mel.masked_fill(~mel_mask[..., None], math.log(1e-5))
            wav = self._inverter(mel)
        wav = wav.float().cpu().numpy()
        res = []
        for row, n in enumerate(lengths):
            w = wav[row, : int(n) * FRAME_HOP]
            if w.shape[0] < int(n) * FRAME_HOP:
                w = np.pad(w, (0, int(n) * FRAME_HOP - w.shape[0]))
            # Griffin-Lim output is not bounded; keep every arch in [-1, 1] for 16-bit wavs
            res.append(np.ascontiguousarray(np.clip(w, -1.0, 1.0), dtype=np.float32))
        return res


def _check_durations(units: Sequence[np.ndarray], durations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Given durations as int64 arrays, one entry per unit, none negative."""
    if len(durations) != len(units):
        raise VocoderError(f"got {len(durations)} duration sequences for {len(units)} unit sequences")
    durs = []
    for i, (u, d) in enumerate(zip(units, durations, strict=True)):
        a = np.asarray(d, dtype=np.int64)
        if a.shape != u.shape:
            raise VocoderError(f"durations[{i}] has {a.size} entries for {u.size} units")
        if a.size and a.min() < 0:
            raise VocoderError(f"durations[{i}] has negative values")
        durs.append(a)
    return durs


def write_wav(path: Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """A 16-bit PCM wav, written atomically (samples clipped to [-1, 1])."""
    import soundfile as sf

    with atomic_open(path, "wb") as f:
        sf.write(f, np.clip(wav, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")


# ---------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------
def inference_state_dict(model: VocoderModel) -> dict[str, Tensor]:
    """The model's weights with weight norm folded (copy; the model is not changed)."""
    # (not deepcopy + remove_parametrizations: the parametrized class is shared between copies,
    # and removing it from the copy would break the original)
    out = {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if ".parametrizations.weight.original" not in k
    }
    with torch.no_grad():
        for name, m in model.named_modules():
            if parametrize.is_parametrized(m, "weight"):
                out[f"{name}.weight"] = m.weight.detach().cpu().clone()
    return out


def save_vocoder(
    directory: str | Path,
    model: VocoderModel | Mapping[str, Tensor],
    cfg: VocoderConfig,
    *,
    speech_tokenizer: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model.safetensors` then `vocoder.json` (the latter last: it marks the dir complete)."""
    from safetensors.torch import save as st_save

    directory = Path(directory)
    make_dirs(directory)
    state = dict(model) if isinstance(model, Mapping) else inference_state_dict(model)
    with atomic_open(directory / WEIGHTS_FILE, "wb") as f:
        f.write(st_save({k: v.contiguous() for k, v in state.items()}))
    has_dp = any(k.startswith("duration_predictor.") for k in state)
    info = {
        "format": VOCODER_FORMAT,
        "version": VOCODER_VERSION,
        "arch": cfg.arch,
        "num_units": cfg.num_units,
        "sample_rate": SAMPLE_RATE,
        "frame_hop": FRAME_HOP,
        "has_duration_predictor": has_dp,
        "speech_tokenizer": dict(speech_tokenizer or {}),
        "weights": WEIGHTS_FILE,
        "config": to_dict(cfg),
        **dict(extra or {}),
    }
    atomic_write_json(directory / "vocoder.json", info)
    return directory


def read_vocoder_json(directory: str | Path) -> dict[str, Any]:
    p = Path(directory) / "vocoder.json"
    if not p.is_file():
        if not Path(directory).exists():
            raise VocoderError(f"vocoder directory not found: {directory}")
        raise VocoderError(
            f"{directory} is not a vocoder directory (no vocoder.json); train one with `tmt vocoder train` "
            "or convert a fairseq checkpoint with `tmt vocoder import-fairseq`"
        )
    info = read_json_object(p, what="vocoder description", error=VocoderError, fix="retrain or re-import the vocoder")
    if info.get("format") != VOCODER_FORMAT:
        raise VocoderError(f"{p} is not a tmt vocoder description (format != {VOCODER_FORMAT})")
    return info


def load_weights(path: Path) -> dict[str, Tensor]:
    """safetensors, or a torch state dict loaded with weights_only=True."""
    if not path.is_file():
        raise VocoderError(f"vocoder weights missing: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise VocoderError(f"{path} is not a readable safetensors file ({e})") from None
    obj = load_torch(path, what="vocoder weights file", error=VocoderError, fix="retrain or re-import the vocoder")
    if not isinstance(obj, Mapping):
        raise VocoderError(f"{path} does not hold a state dict")
    return dict(obj)


def check_vocoder_fingerprint(info: Mapping[str, Any], expected: str | None, where: str) -> None:
    """Refuse a vocoder trained on units from a different speech tokenizer."""
    if not expected:
        return
    st = info.get("speech_tokenizer") or {}
    have = st.get("fingerprint")
    if not have:
        log.warning("%s records no speech tokenizer fingerprint; cannot check it matches %s", where, expected[:12])
        return
    if have != expected:
        raise VocoderError(
            f"vocoder {where} was trained on units of speech tokenizer {str(have)[:12]} ({st.get('name', '?')}), "
            f"but these units come from tokenizer {expected[:12]}: units from one k-means cannot be voiced by a "
            "vocoder trained on another. Use the vocoder trained with this tokenizer, or retrain one with "
            "`tmt vocoder train` on a store made by it."
        )


def load_vocoder(
    directory: str | Path, device: str | torch.device = "cpu", *, expected_fingerprint: str | None = None,
    settings: Sequence[str] = (),
) -> UnitVocoder:
    """Load a vocoder directory; with `expected_fingerprint`, refuse one made for another speech tokenizer;
    `settings` are synthesis-only `KEY=VALUE` overrides (e.g. world.synthesizer=pyworld)."""
    directory = Path(directory)
    info = read_vocoder_json(directory)
    check_vocoder_fingerprint(info, expected_fingerprint, str(directory))
    try:
        cfg = from_dict(VocoderConfig, info["config"])
    except (KeyError, TmtError) as e:
        raise VocoderError(f"{directory}/vocoder.json: bad config ({e})") from None
    cfg = with_synthesis_settings(cfg, settings)
    state = load_weights(directory / str(info.get("weights", WEIGHTS_FILE)))
    has_dp = any(k.startswith("duration_predictor.") for k in state)
    model = build_model(cfg, has_duration_predictor=has_dp)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VocoderError(
            f"{directory}: weights do not match the config (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]})"
        )
    return UnitVocoder(model, cfg, info, device)


# ---------------------------------------------------------------------------------------
# inputs for synthesis
# ---------------------------------------------------------------------------------------
def read_unit_lines(path: str) -> list[tuple[str, np.ndarray]]:
    """Unit sequences from a text file (or - for stdin): 'id<TAB>u1 u2 ...' or 'u1 u2 ...' per line.

    Lines without an id are named by their line number ('000002').
    """
    from tmt.core.io import open_text

    rows = []
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            rid, _, rest = line.rpartition("\t")
            try:
                units = np.asarray([int(t) for t in rest.split()], dtype=np.int64)
            except ValueError:
                raise VocoderError(f"{path}:{n}: expected space-separated unit ids (optionally 'id<TAB>units')") from None
            rows.append((rid or f"{n:06d}", units))
    return rows


def read_store_units(
    store: str | Path, *, limit: int | None = None, with_durations: bool = False
) -> tuple[list[str], list[np.ndarray], list[np.ndarray] | None, str | None]:
    """Ids, speech units (and with `with_durations`, stored run lengths) of a token store's speech rows,
    and the fingerprint of the speech tokenizer that made them."""
    from tmt.store.token_store import TokenStore

    ts = TokenStore(store)
    if with_durations and "durations" not in ts.streams:
        raise VocoderError(f"{store} has no durations stream; drop --gt-durations")
    ids, units, durs = [], [], []
    for i in range(len(ts)):
        u = ts.tokens(i, "speech")
        if u.size == 0:
            continue
        ids.append(str(ts.meta(i)["id"]))
        units.append(u.astype("int64"))
        if with_durations:
            durs.append(ts.tokens(i, "durations").astype("int64"))
        if limit is not None and len(ids) >= limit:
            break
    return ids, units, durs if with_durations else None, ts.fingerprints.get("speech")


def speech_tokenizer_record(tokenizer: str | Path | None, fingerprint: str | None = None) -> dict[str, Any]:
    """What a vocoder records of its speech tokenizer: the fingerprint (read from the tokenizer
    directory when one is given, else `fingerprint`) and the tokenizer's name."""
    if not tokenizer:
        return {"fingerprint": fingerprint} if fingerprint else {}
    from tmt.tokenizers.base import read_tokenizer_json

    info = read_tokenizer_json(tokenizer)
    return {"fingerprint": str(info["fingerprint"]), "name": info.get("name")}
