"""Import fairseq / speech-resynthesis unit HiFi-GAN checkpoints.

Published unit vocoders come as a generator checkpoint ``g_XXXXXXXX`` holding
``{"generator": state_dict}`` (weight-normed convs stored as ``weight_g`` /
``weight_v``) beside a ``config.json`` (upsample rates, kernels, ``num_embeddings``,
``embedding_dim``, ``dur_predictor_params``, ...). Their parameter names map onto
`CodeHiFiGAN` as follows::

    dict.weight                       -> embed.weight
    dur_predictor.conv{1,2}.0.*       -> duration_predictor.conv{1,2}.*
    dur_predictor.ln{1,2}.*           -> duration_predictor.norm{1,2}.*
    dur_predictor.proj.*              -> duration_predictor.proj.*
    conv_pre / ups.i / resblocks.j.convs{1,2}.k / conv_post .*  -> generator.<same>.*

and ``X.weight_g`` + ``X.weight_v`` are folded into ``X.weight`` = g * v / |v|
(norm over every dim but 0), i.e. weight norm is removed. Multi-speaker, f0 and
other conditioned variants are refused: tmt's units carry no such inputs.
"""

from __future__ import annotations

import logging
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tmt.core.audio import FRAME_HOP, SAMPLE_RATE
from tmt.core.io import read_json_object
from tmt.vocoder.config import DurationConfig, GeneratorConfig, VocoderConfig, VocoderError
from tmt.vocoder.nets import build_model
from tmt.vocoder.synthesis import save_vocoder

log = logging.getLogger(__name__)

_DUR_RENAMES = [
    (re.compile(r"^dur_predictor\.conv([12])\.0\.(weight|bias)$"), r"duration_predictor.conv\1.\2"),
    (re.compile(r"^dur_predictor\.ln([12])\.(weight|bias)$"), r"duration_predictor.norm\1.\2"),
    (re.compile(r"^dur_predictor\.proj\.(weight|bias)$"), r"duration_predictor.proj.\1"),
]
_GEN_KEY = re.compile(r"^(conv_pre|conv_post|ups\.\d+|resblocks\.\d+\.convs[12]\.\d+)\.(weight|bias|weight_g|weight_v)$")


def load_fairseq_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> dict[str, Tensor]:
    """The generator state dict of a `g_XXXXXXXX` file (`{"generator": state_dict}`)."""
    path = Path(path)
    if not path.is_file():
        raise VocoderError(f"fairseq vocoder checkpoint not found: {path}")
    try:
        if trust_pickle:
            from tmt.io import load_pickled_torch

            obj = load_pickled_torch(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise VocoderError(
            f"{path} holds Python objects besides tensors, so it was refused (weights_only=True): {e}. "
            "Only if you trust its origin, re-run with --trust-pickle."
        ) from None
    except Exception as e:
        raise VocoderError(f"{path} is not a readable torch checkpoint ({e})") from None
    if not isinstance(obj, Mapping):
        raise VocoderError(f"{path}: expected a dict with a 'generator' state dict, got {type(obj).__name__}")
    state = obj.get("generator", obj if all(isinstance(v, Tensor) for v in obj.values()) else None)
    if not isinstance(state, Mapping) or not state:
        raise VocoderError(
            f"{path}: no 'generator' state dict inside (keys: {sorted(obj)[:8]}); pass the g_XXXXXXXX file, "
            "not the do_XXXXXXXX discriminator/optimizer file"
        )
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if not isinstance(v, Tensor):
            raise VocoderError(f"{path}: generator entry '{k}' is not a tensor")
        out[k.removeprefix("module.")] = v
    return out


def _fold_weight_norm(g: Tensor, v: Tensor) -> Tensor:
    """weight = g * v / |v|, the norm taken over every dim but 0 (torch's default weight_norm dim)."""
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return v * (g / norm)


def map_fairseq_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename fairseq CodeGenerator parameters to CodeHiFiGAN's and remove weight norm."""
    out: dict[str, Tensor] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key == "dict.weight":
            out["embed.weight"] = value
            continue
        for pattern, repl in _DUR_RENAMES:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            m = _GEN_KEY.match(key)
            if not m:
                unknown.append(key)
                continue
            layer, what = m.group(1), m.group(2)
            if what in ("weight_g", "weight_v"):
                pending.setdefault(layer, {})[what] = value
            else:
                out[f"generator.{layer}.{what}"] = value
    if unknown:
        raise VocoderError(
            f"unsupported parameters in the fairseq vocoder: {unknown[:6]}{' ...' if len(unknown) > 6 else ''}; "
            "only the unit-only CodeHiFiGAN (no speaker, f0 or other conditioning) can be imported"
        )
    for layer, parts in pending.items():
        if set(parts) != {"weight_g", "weight_v"}:
            raise VocoderError(f"fairseq vocoder: {layer} has {sorted(parts)} but needs both weight_g and weight_v")
        out[f"generator.{layer}.weight"] = _fold_weight_norm(parts["weight_g"], parts["weight_v"])
    if "embed.weight" not in out:
        raise VocoderError("fairseq vocoder: no unit embedding ('dict.weight') in the generator state dict")
    return out


def config_from_fairseq(cfg: Mapping[str, Any]) -> VocoderConfig:
    """Translate a speech-resynthesis / fairseq `config.json` into a VocoderConfig."""
    for key in ("upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock_kernel_sizes",
                "resblock_dilation_sizes", "num_embeddings", "embedding_dim"):
        if key not in cfg:
            raise VocoderError(f"fairseq vocoder config.json lacks '{key}'")
    for flag in ("multispkr", "f0", "embedder_params"):
        if cfg.get(flag):
            raise VocoderError(
                f"fairseq vocoder config.json sets '{flag}': conditioned vocoders cannot be imported "
                "(tmt's units carry no speaker/f0 inputs)"
            )
    if str(cfg.get("resblock", "1")) != "1":
        raise VocoderError(f"fairseq vocoder uses resblock type {cfg.get('resblock')}; only type 1 is supported")
    sr = int(cfg.get("sampling_rate", SAMPLE_RATE))
    if sr != SAMPLE_RATE:
        raise VocoderError(f"fairseq vocoder is for {sr} Hz; tmt's speech units are 16 kHz")
    hop = math.prod(int(r) for r in cfg["upsample_rates"])
    code_hop = int(cfg.get("code_hop_size", hop))
    if hop != FRAME_HOP or code_hop != FRAME_HOP:
        raise VocoderError(
            f"fairseq vocoder upsamples units by {hop} (code_hop_size {code_hop}); tmt units are at 50 Hz ({FRAME_HOP})"
        )
    emb = int(cfg["embedding_dim"])
    if int(cfg.get("model_in_dim", emb)) != emb:
        raise VocoderError(
            f"fairseq vocoder model_in_dim {cfg.get('model_in_dim')} != embedding_dim {emb}: it expects extra "
            "conditioning inputs, which tmt cannot supply"
        )
    dp = cfg.get("dur_predictor_params") or {}
    return VocoderConfig(
        arch="hifigan",
        num_units=int(cfg["num_embeddings"]),
        embed_dim=emb,
        duration=DurationConfig(
            hidden_dim=int(dp.get("var_pred_hidden_dim", emb)),
            kernel_size=int(dp.get("var_pred_kernel_size", 3)),
            dropout=float(dp.get("var_pred_dropout", 0.5)),
        ),
        generator=GeneratorConfig(
            upsample_initial_channel=int(cfg["upsample_initial_channel"]),
            upsample_rates=[int(x) for x in cfg["upsample_rates"]],
            upsample_kernel_sizes=[int(x) for x in cfg["upsample_kernel_sizes"]],
            resblock_kernel_sizes=[int(x) for x in cfg["resblock_kernel_sizes"]],
            resblock_dilation_sizes=[[int(d) for d in ds] for ds in cfg["resblock_dilation_sizes"]],
        ),
    )


def import_fairseq(
    checkpoint: str | Path,
    config: str | Path,
    out_dir: str | Path,
    *,
    speech_tokenizer: Mapping[str, Any] | None = None,
    trust_pickle: bool = False,
) -> Path:
    """Convert `g_XXXXXXXX` + `config.json` into a tmt vocoder directory; returns it."""
    cpath = Path(config)
    if not cpath.is_file():
        raise VocoderError(f"fairseq vocoder config not found: {cpath}")
    raw_cfg = read_json_object(cpath, what="fairseq vocoder config", error=VocoderError)
    cfg = config_from_fairseq(raw_cfg)
    state = map_fairseq_state_dict(load_fairseq_checkpoint(checkpoint, trust_pickle=trust_pickle))
    has_dp = any(k.startswith("duration_predictor.") for k in state)
    if raw_cfg.get("dur_predictor_params") and not has_dp:
        raise VocoderError(f"{cpath} declares a duration predictor but {checkpoint} holds none")
    model = build_model(cfg, has_duration_predictor=has_dp)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise VocoderError(
            f"{checkpoint} does not match {cpath}: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise VocoderError(
                f"{checkpoint}: {k} has shape {tuple(v.shape)} but {cpath} implies {tuple(expected[k].shape)}"
            )
    model.load_state_dict(state)
    if not has_dp:
        log.warning("%s has no duration predictor: synthesis will need explicit durations", checkpoint)
    return save_vocoder(
        out_dir, model, cfg, speech_tokenizer=speech_tokenizer,
        extra={"source": {"fairseq_checkpoint": str(checkpoint), "fairseq_config": str(config)}},
    )
