"""Speech units: 50 Hz features (MFCC or HuBERT) + k-means, run-length deduplicated.

Pipeline for one utterance::

    path -> load_audio (16 kHz mono)                        # -> float32 [samples]
         -> features: mfcc | hubert layer L (chunked)       # -> float32 [frames, dim], 50 Hz
         -> faiss nearest centroid                          # -> int64 [frames] in 0..K-1
         -> run-length dedup                                # -> units [n], durations [n] (frames per unit)

A fitted tokenizer is a directory (see `tmt.tokenizers.base`)::

    tokenizer.json          kind/class/name/card/vocab_size/fingerprint + feature dim, frame rate, hubert arch
    centroids.safetensors   {"centroids": float32 [K, dim]}
    hubert.safetensors      HuBERT weights (torchaudio layout, only the layers used), features=hubert only

HuBERT weights are read once, at fit (or import-km) time, from any of three
local formats -- a torchaudio `hubert_base` state dict, a fairseq checkpoint
(`hubert_base_ls960.pt`) or a Hugging Face `HubertModel` directory -- and are
stored converted (safetensors, no pickle) in the tokenizer directory, so
encoding never needs the original file or a trust flag.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tmt.config import ConfigError, from_dict, merge, to_dict
from tmt.core.audio import FRAME_HOP, FRAME_RATE, SAMPLE_RATE, SILENCE_PEAK, AudioError, as_waveform
from tmt.core.io import make_dirs
from tmt.io import atomic_write_json
from tmt.tokenizers.base import TokenizerError, fingerprint_of, load_card, read_tokenizer_json

log = logging.getLogger(__name__)

CLASS_NAME = "speech-kmeans"
HOP = FRAME_HOP
"""Samples per frame hop (320)."""
WINDOW = 400
"""Samples per analysis window (25 ms); HuBERT's receptive field is the same."""


# --------------------------------------------------------------------------------------
# config (the card)
# --------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class MfccConfig:
    """Kaldi-style MFCC at 50 Hz (torchaudio.compliance.kaldi, as fairseq's dump_mfcc_feature)."""

    num_ceps: int = 13
    """Cepstral coefficients per frame."""
    num_mel_bins: int = 23
    """Mel filterbank channels."""
    deltas: int = 2
    """Delta orders appended (2: MFCC + deltas + delta-deltas = 39 dims for 13 ceps)."""
    cmvn: bool = True
    """Per-utterance mean/variance normalisation of every dimension."""


@dataclass(kw_only=True)
class HubertConfig:
    """A HuBERT(-Base) feature extractor loaded from local weights."""

    weights: str | None = None
    """Path to the weights: torchaudio state dict (.pt/.pth/.safetensors), fairseq checkpoint
    (hubert_base_ls960.pt) or Hugging Face HubertModel directory. Needed to fit; the fitted
    tokenizer keeps its own converted copy."""
    weights_format: Literal["auto", "torchaudio", "fairseq", "hf"] = "auto"
    """Format of `weights`; auto detects it."""
    layer: int = 6
    """Transformer layer (1-based) whose output is the feature (fairseq's output_layer)."""
    arch: dict[str, Any] = field(default_factory=dict)
    """Overrides of torchaudio `wav2vec2_model` arguments (e.g. encoder_num_heads) where the
    weights do not say them; a torchaudio state dict only tells shapes."""
    normalize_waveform: bool = False
    """Layer-normalise each waveform chunk first (True for HuBERT-Large; False for Base)."""
    max_chunk_s: float = 30.0
    """Longer audio is cut into chunks of this many seconds whose features are concatenated."""


@dataclass(kw_only=True)
class SpeechCard:
    """A speech tokenizer card (`tokenizers/speech-*.yaml`, class `speech-kmeans`)."""

    name: str = "speech-kmeans"
    """Tokenizer name recorded in stores and vocabularies."""
    description: str = ""
    """Free text."""
    features: Literal["mfcc", "hubert"] = "mfcc"
    """Feature extractor: `mfcc` (no weights) or `hubert` (needs hubert.weights)."""
    mfcc: MfccConfig = field(default_factory=MfccConfig)
    """MFCC settings (features: mfcc)."""
    hubert: HubertConfig = field(default_factory=HubertConfig)
    """HuBERT settings (features: hubert)."""
    clusters: int = 200
    """k-means clusters = number of speech units (the speech vocabulary size)."""
    sample_size: int = 200_000
    """Feature frames sampled (uniformly, seeded) to train k-means."""
    iterations: int = 50
    """k-means iterations (faiss niter)."""
    n_init: int = 1
    """k-means restarts keeping the best (faiss nredo)."""
    seed: int = 0
    """Seed for frame sampling and k-means initialisation."""
    dedup: bool = True
    """Merge consecutive duplicate units, keeping the run lengths (False: frame-level units)."""
    silence_peak: float = SILENCE_PEAK
    """Audio whose peak |amplitude| is below this is refused as silent."""
    max_batch_seconds: float = 120.0
    """Upper bound on padded audio seconds per HuBERT forward pass (memory)."""


def card_from_dict(card: dict[str, Any], where: str = "card") -> SpeechCard:
    data = {k: v for k, v in card.items() if k != "class"}
    if card.get("class", CLASS_NAME) != CLASS_NAME:
        raise TokenizerError(f"{where}: class is '{card.get('class')}', expected '{CLASS_NAME}'")
    try:
        return from_dict(SpeechCard, data)
    except ConfigError as e:
        raise TokenizerError(f"{where}: {e}") from None


def card_to_dict(card: SpeechCard) -> dict[str, Any]:
    d: dict[str, Any] = {"class": CLASS_NAME}
    d.update(to_dict(card))
    return d


def load_speech_card(path: str | Path, overrides: dict[str, Any] | None = None) -> SpeechCard:
    """Read a card YAML, apply nested overrides (e.g. from --set) and validate it."""
    raw = load_card(path)
    card = card_from_dict(raw, str(path))
    if overrides:
        try:
            card = merge(card, overrides)
        except ConfigError as e:
            raise TokenizerError(f"{path}: {e}") from None
    return card


def _fingerprint_card(card: SpeechCard) -> dict[str, Any]:
    """The card as hashed: where the weights were read from does not matter, their bytes do."""
    d = card_to_dict(card)
    d["hubert"] = {k: v for k, v in d["hubert"].items() if k not in ("weights", "weights_format")}
    if card.features != "hubert":
        d.pop("hubert")
    else:
        d.pop("mfcc")
    for k in ("description", "max_batch_seconds"):
        d.pop(k, None)
    return d


# --------------------------------------------------------------------------------------
# run lengths
# --------------------------------------------------------------------------------------
def run_length(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge consecutive duplicates: [5,5,5,2,2,7] -> ([5,2,7], [3,2,1])."""
    u = np.asarray(units)
    if u.size == 0:
        return u.astype(np.int64), np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.flatnonzero(u[1:] != u[:-1]) + 1])
    runs = np.diff(np.concatenate([starts, [u.size]]))
    return u[starts].astype(np.int64), runs.astype(np.int64)


def expand_runs(units: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Inverse of `run_length`: frame-level units."""
    return np.repeat(np.asarray(units, dtype=np.int64), np.asarray(durations, dtype=np.int64))


# --------------------------------------------------------------------------------------
# MFCC
# --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _mfcc_constants(num_ceps: int, num_mel_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(povey window [400], kaldi mel filterbank [257, bins], DCT with lifter [bins, ceps])."""
    import torch
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as AF

    window = torch.hann_window(WINDOW, periodic=False, dtype=torch.float64).pow(0.85)
    mel, _ = kaldi.get_mel_banks(num_mel_bins, 512, float(SAMPLE_RATE), 20.0, 0.0, 100.0, -500.0, 1.0)
    mel = torch.nn.functional.pad(mel.float(), (0, 1)).T  # -> [257, bins]
    dct = AF.create_dct(num_mel_bins, num_mel_bins, "ortho")
    dct[:, 0] = math.sqrt(1.0 / num_mel_bins)
    dct = dct[:, :num_ceps]
    lifter = 1.0 + 0.5 * 22.0 * torch.sin(math.pi * torch.arange(num_ceps) / 22.0)
    return (
        window.numpy().astype(np.float32),
        np.ascontiguousarray(mel.numpy(), dtype=np.float32),
        np.ascontiguousarray((dct * lifter[None, :]).numpy(), dtype=np.float32),
    )


def _deltas(c: np.ndarray) -> np.ndarray:
    """Regression deltas over +-2 frames with edge replication (torchaudio compute_deltas, win 5)."""
    p = np.pad(c, ((2, 2), (0, 0)), mode="edge")
    return (((p[3:-1] - p[1:-3]) + 2.0 * (p[4:] - p[:-4])) / 10.0).astype(np.float32)


def mfcc_batch(wavs: Sequence[np.ndarray], cfg: MfccConfig) -> list[np.ndarray]:
    """Kaldi MFCC (as `torchaudio.compliance.kaldi.mfcc`, dither 0, 25 ms window, 20 ms hop) of many
    waveforms at once -> one [frames, num_ceps * (1 + deltas)] array each, at 50 Hz.

    Written out rather than calling kaldi.mfcc per file: the window, filterbank and DCT are
    built once and all files' frames go through ONE FFT and two matmuls (kaldi.mfcc rebuilds
    them per call and dominated tokenization time). Tests check equality with kaldi.mfcc.
    """
    if not wavs:
        return []
    window, mel, dct = _mfcc_constants(cfg.num_ceps, cfg.num_mel_bins)
    # numpy rather than torch: single-threaded, no per-op dispatch, measured 2-4x faster here
    frames = [np.lib.stride_tricks.sliding_window_view(np.asarray(w, dtype=np.float32), WINDOW)[::HOP]
              if len(w) >= WINDOW else np.zeros((0, WINDOW), np.float32) for w in wavs]
    sizes = [len(f) for f in frames]
    f = np.concatenate(frames)  # -> [all frames, 400]
    f = f - f.mean(axis=1, keepdims=True)  # remove DC offset
    g = f.copy()
    g[:, 1:] -= 0.97 * f[:, :-1]  # pre-emphasis, the first sample against itself
    g[:, 0] -= 0.97 * f[:, 0]
    spec = np.abs(np.fft.rfft(g * window, n=512)).astype(np.float32) ** 2  # -> [all frames, 257]
    ceps = np.log(np.maximum(spec @ mel, np.finfo(np.float32).eps)) @ dct  # -> [all frames, num_ceps]
    per_file = np.split(ceps, np.cumsum(sizes)[:-1])
    out: list[np.ndarray] = []
    for c in per_file:
        feats: list[np.ndarray] = [c]
        for _ in range(cfg.deltas):
            feats.append(_deltas(feats[-1]))
        y = np.concatenate(feats, axis=1).astype(np.float32)  # -> [frames, num_ceps * (1 + deltas)]
        if cfg.cmvn and len(y):
            y = (y - y.mean(axis=0)) / np.maximum(y.std(axis=0), 1e-5)
        out.append(y.astype(np.float32, copy=False))
    return out


def mfcc_features(wav: np.ndarray, cfg: MfccConfig) -> np.ndarray:
    """[samples] at 16 kHz -> [frames, num_ceps * (1 + deltas)] at 50 Hz."""
    return mfcc_batch([wav], cfg)[0]


# --------------------------------------------------------------------------------------
# HuBERT weights: three loaders -> one torchaudio Wav2Vec2Model
# --------------------------------------------------------------------------------------
HUBERT_BASE_ARCH: dict[str, Any] = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2,
    "extractor_conv_bias": False,
    "encoder_embed_dim": 768,
    "encoder_projection_dropout": 0.0,
    "encoder_pos_conv_kernel": 128,
    "encoder_pos_conv_groups": 16,
    "encoder_num_layers": 12,
    "encoder_num_heads": 12,
    "encoder_attention_dropout": 0.0,
    "encoder_ff_interm_features": 3072,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.0,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.0,
}
"""torchaudio `wav2vec2_model` arguments of HuBERT-Base (dropouts off: inference only)."""

_STRIDE_OF_KERNEL = {10: 5, 3: 2, 2: 2}
"""wav2vec2/HuBERT conv front-end strides by kernel size (shapes do not record strides)."""


def _norm_arch(arch: dict[str, Any]) -> dict[str, Any]:
    out = dict(arch)
    out["extractor_conv_layer_config"] = [tuple(int(v) for v in c) for c in out["extractor_conv_layer_config"]]
    return out


def _build_model(arch: dict[str, Any]) -> Any:
    from torchaudio.models import wav2vec2_model

    a = _norm_arch(arch)
    return wav2vec2_model(**a, aux_num_out=None)


def _infer_arch_from_state(sd: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Architecture of a torchaudio-layout state dict from its tensor shapes (+ card overrides)."""
    arch = dict(HUBERT_BASE_ARCH)
    convs = []
    i = 0
    while f"feature_extractor.conv_layers.{i}.conv.weight" in sd:
        out_ch, _, k = sd[f"feature_extractor.conv_layers.{i}.conv.weight"].shape
        convs.append((int(out_ch), int(k), _STRIDE_OF_KERNEL.get(int(k), 2)))
        i += 1
    if not convs:
        raise TokenizerError("not a HuBERT/wav2vec2 state dict: no feature_extractor.conv_layers.*.conv.weight")
    arch["extractor_conv_layer_config"] = convs
    arch["extractor_mode"] = "layer_norm" if "feature_extractor.conv_layers.1.layer_norm.weight" in sd else "group_norm"
    arch["extractor_conv_bias"] = "feature_extractor.conv_layers.0.conv.bias" in sd
    e = int(sd["encoder.feature_projection.projection.weight"].shape[0])
    arch["encoder_embed_dim"] = e
    pos = [v for k, v in sd.items() if k.startswith("encoder.transformer.pos_conv_embed.conv.") and v.ndim == 3]
    if pos:
        w = max(pos, key=lambda t: t.numel())
        arch["encoder_pos_conv_kernel"] = int(w.shape[2])
        arch["encoder_pos_conv_groups"] = e // int(w.shape[1])
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.transformer\.layers\.(\d+)\.", k))}
    arch["encoder_num_layers"] = max(layers) + 1 if layers else 0
    arch["encoder_num_heads"] = max(1, e // 64)
    ff = sd.get("encoder.transformer.layers.0.feed_forward.intermediate_dense.weight")
    if ff is not None:
        arch["encoder_ff_interm_features"] = int(ff.shape[0])
    arch.update(overrides)
    return arch


def _safe_eval_layers(expr: str) -> list[tuple[int, int, int]]:
    """Evaluate fairseq's conv_feature_layers string ("[(512,10,5)] + [(512,3,2)] * 4 ...")
    without `eval`: only literals, + and * are allowed."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            vals = [ev(e) for e in node.elts]
            return vals if isinstance(node, ast.List) else tuple(vals)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise TokenizerError(f"unsupported conv_feature_layers expression: {expr!r}")

    value = ev(ast.parse(expr, mode="eval"))
    return [tuple(int(v) for v in c[:3]) for c in value]  # type: ignore[misc]


def _fairseq_arch(model_cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """torchaudio arguments from a fairseq HubertConfig (dict or Namespace attributes)."""
    g = model_cfg.get
    arch = dict(HUBERT_BASE_ARCH)
    layers = g("conv_feature_layers")
    if isinstance(layers, str):
        arch["extractor_conv_layer_config"] = _safe_eval_layers(layers)
    arch["extractor_mode"] = "layer_norm" if g("extractor_mode", "default") == "layer_norm" else "group_norm"
    arch["extractor_conv_bias"] = bool(g("conv_bias", False))
    arch["encoder_embed_dim"] = int(g("encoder_embed_dim", 768))
    arch["encoder_pos_conv_kernel"] = int(g("conv_pos", 128))
    arch["encoder_pos_conv_groups"] = int(g("conv_pos_groups", 16))
    arch["encoder_num_layers"] = int(g("encoder_layers", 12))
    arch["encoder_num_heads"] = int(g("encoder_attention_heads", 12))
    arch["encoder_ff_interm_features"] = int(g("encoder_ffn_embed_dim", 3072))
    arch["encoder_layer_norm_first"] = bool(g("layer_norm_first", False))
    arch.update(overrides)
    return arch


# fairseq key -> torchaudio key (regex, replacement); None drops the key (training-only parts)
_FAIRSEQ_KEYS: list[tuple[str, str | None]] = [
    (r"^(mask_emb|label_embs_concat|final_proj\..*|project_q\..*|quantizer\..*|target_glu\..*)$", None),
    (r"^feature_extractor\.conv_layers\.0\.2\.(weight|bias)$", r"feature_extractor.conv_layers.0.layer_norm.\1"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)$", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)$", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"^post_extract_proj\.(weight|bias)$", r"encoder.feature_projection.projection.\1"),
    (r"^layer_norm\.(weight|bias)$", r"encoder.feature_projection.layer_norm.\1"),
    (r"^encoder\.pos_conv\.0\.(.+)$", r"encoder.transformer.pos_conv_embed.conv.\1"),
    (r"^encoder\.layer_norm\.(weight|bias)$", r"encoder.transformer.layer_norm.\1"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)$",
     r"encoder.transformer.layers.\1.attention.\2_proj.\3"),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)$", r"encoder.transformer.layers.\1.layer_norm.\2"),
    (r"^encoder\.layers\.(\d+)\.fc1\.(weight|bias)$", r"encoder.transformer.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.fc2\.(weight|bias)$", r"encoder.transformer.layers.\1.feed_forward.output_dense.\2"),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)$", r"encoder.transformer.layers.\1.final_layer_norm.\2"),
]


def convert_fairseq_state(sd: dict[str, Any]) -> dict[str, Any]:
    """Rename a fairseq HuBERT/wav2vec2 state dict to torchaudio's Wav2Vec2Model layout."""
    out: dict[str, Any] = {}
    for key, value in sd.items():
        k = key.removeprefix("w2v_model.").removeprefix("w2v_encoder.w2v_model.")
        for pattern, repl in _FAIRSEQ_KEYS:
            if re.match(pattern, k):
                if repl is not None:
                    out[re.sub(pattern, repl, k)] = value
                break
        else:
            raise TokenizerError(f"unexpected key in fairseq checkpoint: '{key}' (is this a HuBERT checkpoint?)")
    return out


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    """torch.load with weights_only=True; argparse.Namespace (fairseq's old `args`) is allowed
    as it only carries attributes. Anything else pickled needs `trust_pickle`."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as e:
        if not trust_pickle:
            raise TokenizerError(
                f"{path} holds pickled Python objects besides tensors (e.g. an omegaconf config) and cannot be "
                f"loaded safely ({str(e).splitlines()[0][:200]}). Pickles can run arbitrary code: only if you "
                "trust this file, pass --trust-pickle (trust_pickle=True)"
            ) from None
    log.warning("loading %s with full unpickling (--trust-pickle)", path)
    from tmt.io import load_pickled_torch

    return load_pickled_torch(path)


def _as_plain(obj: Any) -> Any:
    """Namespace / omegaconf / dict -> plain dict (for fairseq configs)."""
    if isinstance(obj, argparse.Namespace):
        return vars(obj)
    if isinstance(obj, dict):
        return obj
    with contextlib.suppress(Exception):
        from omegaconf import OmegaConf  # only present when the user has fairseq installed

        return OmegaConf.to_container(obj, resolve=True)
    return dict(obj)


def detect_weights_format(path: Path) -> str:
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        raise TokenizerError(f"{path} is a directory without config.json; expected a Hugging Face HubertModel directory")
    if path.suffix == ".safetensors":
        return "torchaudio"
    return "auto-pt"


def load_hubert(
    weights: str | Path,
    *,
    fmt: str = "auto",
    arch_overrides: dict[str, Any] | None = None,
    num_layers: int | None = None,
    trust_pickle: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Load HuBERT weights from a torchaudio state dict, a fairseq checkpoint or a Hugging Face
    directory -> (torchaudio Wav2Vec2Model in eval mode, its architecture arguments).

    With `num_layers` only the first transformer layers are kept (features from layer L need L).
    """
    import torch

    path = Path(weights)
    if not path.exists():
        raise TokenizerError(f"HuBERT weights not found: {path}")
    overrides = dict(arch_overrides or {})
    kind = detect_weights_format(path) if fmt == "auto" else fmt
    state: dict[str, Any]
    if kind == "hf":
        if not path.is_dir():
            raise TokenizerError(f"{path}: a Hugging Face model is a directory with config.json and weights")
        import transformers
        from torchaudio.models.wav2vec2.utils import import_huggingface_model

        try:
            hf = transformers.HubertModel.from_pretrained(str(path), local_files_only=True, use_safetensors=None)
        except (OSError, ValueError) as e:
            raise TokenizerError(f"{path}: cannot load a Hugging Face HubertModel ({e})") from None
        logging.getLogger("torchaudio").setLevel(logging.ERROR)
        model = import_huggingface_model(hf.eval())
        state = model.state_dict()
        from torchaudio.models.wav2vec2.utils.import_huggingface import _get_config

        arch = dict(HUBERT_BASE_ARCH) | {
            k: v for k, v in _get_config(hf.config).items() if k in HUBERT_BASE_ARCH and "drop" not in k
        }
        arch.update(overrides)
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
        if any(k.startswith("encoder.layers.") for k in state):
            state = convert_fairseq_state(state)
        arch = _infer_arch_from_state(state, overrides)
    else:
        obj = _torch_load(path, trust_pickle)
        if not isinstance(obj, dict):
            raise TokenizerError(f"{path}: expected a state dict or a fairseq checkpoint, got {type(obj).__name__}")
        if "model" in obj and isinstance(obj["model"], dict) and ("cfg" in obj or "args" in obj):
            if fmt not in ("auto", "fairseq"):
                raise TokenizerError(f"{path} looks like a fairseq checkpoint; use weights_format: fairseq or auto")
            cfg = obj.get("cfg")
            model_cfg = _as_plain(cfg).get("model") if cfg is not None else None
            if model_cfg is None and obj.get("args") is not None:
                model_cfg = _as_plain(obj["args"])
            arch = _fairseq_arch(_as_plain(model_cfg or {}), overrides)
            task = _as_plain(cfg).get("task") if cfg is not None else None
            if task and task.get("normalize"):
                log.warning("%s was trained on layer-normalised waveforms (task.normalize): set "
                            "hubert.normalize_waveform: true in the card", path)
            state = convert_fairseq_state(obj["model"])
        else:
            sd: dict[str, Any] = obj.get("state_dict") or obj.get("model") or obj
            if any(k.startswith("encoder.layers.") or k.startswith("post_extract_proj") for k in sd):
                state = convert_fairseq_state(sd)
            else:
                state = dict(sd)
            arch = _infer_arch_from_state(state, overrides)
    if num_layers is not None:
        if num_layers > int(arch["encoder_num_layers"]):
            raise TokenizerError(
                f"{path}: layer {num_layers} requested but the model has {arch['encoder_num_layers']} layers"
            )
        arch["encoder_num_layers"] = int(num_layers)
        state = {
            k: v for k, v in state.items()
            if not (m := re.match(r"encoder\.transformer\.layers\.(\d+)\.", k)) or int(m.group(1)) < num_layers
        }
    model = _build_model(arch)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("aux")]
    if missing or unexpected:
        raise TokenizerError(
            f"{path}: weights do not fit the HuBERT architecture {json.dumps(_norm_arch(arch), default=str)}: "
            f"missing {missing[:4]}, unexpected {unexpected[:4]}; set hubert.arch overrides in the card"
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    del torch
    return model, _norm_arch(arch)


def _masked_group_norm(x: Any, lengths: Any, gn: Any) -> Any:
    """GroupNorm over the valid frames only: x [B, C, T], lengths [B] (padding must not
    shift the statistics, or batched features would differ from one-at-a-time ones)."""
    import torch

    b, c, t = x.shape
    g = gn.num_groups
    mask = (torch.arange(t, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)  # [B, T]
    xg = x.reshape(b, g, c // g, t)
    m = mask[:, None, None, :]
    n = (mask.sum(dim=-1) * (c // g)).clamp_min(1.0)[:, None, None, None]  # valid values per group
    mean = (xg * m).sum(dim=(2, 3), keepdim=True) / n
    var = (((xg - mean) ** 2) * m).sum(dim=(2, 3), keepdim=True) / n  # biased, as nn.GroupNorm
    y = ((xg - mean) / torch.sqrt(var + gn.eps)).reshape(b, c, t)
    if gn.affine:
        y = y * gn.weight[None, :, None] + gn.bias[None, :, None]
    return y


def hubert_forward(model: Any, wavs: Sequence[np.ndarray], layer: int, *, normalize: bool = False) -> list[np.ndarray]:
    """Features of layer `layer` for a batch of waveforms (padded, masked; equal to running
    each one alone up to float rounding) -> one [frames, dim] array per waveform."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        xs = [torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)) for w in wavs]
        if normalize:
            xs = [F.layer_norm(x, x.shape) for x in xs]
        lengths = torch.tensor([x.numel() for x in xs])
        x = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True).unsqueeze(1)  # -> [B, 1, samples]
        lens = lengths
        for block in model.feature_extractor.conv_layers:
            x = block.conv(x)
            lens = torch.clamp((lens - block.kernel_size) // block.stride + 1, min=0)
            if isinstance(block.layer_norm, torch.nn.GroupNorm):
                x = _masked_group_norm(x, lens, block.layer_norm) if len(xs) > 1 else block.layer_norm(x)
            elif block.layer_norm is not None:
                x = block.layer_norm(x)
            x = F.gelu(x)
        x = x.transpose(1, 2)  # -> [B, frames, conv channels]
        outs = model.encoder.extract_features(x, lens if len(xs) > 1 else None, num_layers=layer)
        h = outs[layer - 1]  # -> [B, frames, embed dim]
        return [h[i, : int(n)].float().numpy().copy() for i, n in enumerate(lens)]


def _state_bytes(model: Any) -> dict[str, Any]:
    return {k: v.contiguous() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------
# k-means (faiss)
# --------------------------------------------------------------------------------------
def kmeans_fit(
    x: np.ndarray, k: int, *, niter: int = 50, nredo: int = 1, seed: int = 0, verbose: bool = False
) -> tuple[np.ndarray, float]:
    """faiss k-means on all rows of x -> (centroids float32 [k, d], inertia = sum of squared distances)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[0] < k:
        raise TokenizerError(
            f"k-means needs at least {k} feature frames for {k} clusters, got {x.shape[0]}; "
            "use more audio or fewer clusters"
        )
    km = faiss.Kmeans(
        x.shape[1], int(k), niter=int(niter), nredo=int(nredo), seed=int(seed), verbose=verbose,
        max_points_per_centroid=max(256, x.shape[0] // k + 1),  # we sample ourselves: use every row given
        min_points_per_centroid=1,
    )
    km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    return centroids, kmeans_inertia(x, centroids)


def kmeans_assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row -> (labels int64 [n], squared distances [n])."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    d, i = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return i[:, 0].astype(np.int64), d[:, 0]


def kmeans_inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    return float(kmeans_assign(x, centroids)[1].astype(np.float64).sum())


# --------------------------------------------------------------------------------------
# the tokenizer
# --------------------------------------------------------------------------------------
class SpeechTokenizer:
    """Speech -> deduplicated k-means units at 50 Hz (class `speech-kmeans`)."""

    modality = "speech"
    frame_rate = FRAME_RATE

    def __init__(
        self,
        card: SpeechCard,
        centroids: np.ndarray,
        *,
        hubert: Any = None,
        hubert_arch: dict[str, Any] | None = None,
        asset_dir: Path | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.cfg = card
        self.name = card.name
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.hubert = hubert
        self.hubert_arch = hubert_arch
        self.asset_dir = asset_dir
        self._fingerprint = fingerprint
        self._index: Any = None
        self.fit_stats: dict[str, Any] = {}
        if card.features == "hubert" and hubert is None:
            raise TokenizerError("a hubert speech tokenizer needs its HuBERT model")
        if self.centroids.ndim != 2 or self.centroids.shape[0] != card.clusters:
            raise TokenizerError(
                f"centroids have shape {self.centroids.shape}, expected ({card.clusters}, dim) for {card.clusters} clusters"
            )

    # ---- protocol ----------------------------------------------------
    @property
    def card(self) -> dict[str, Any]:
        return card_to_dict(self.cfg)

    @property
    def vocab_size(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dedup(self) -> bool:
        return bool(self.cfg.dedup)

    @property
    def feature_dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def fingerprint(self) -> str:
        """sha256 over the card (less the weights' path) + centroids (+ HuBERT weights)."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        blobs = [self.centroids.tobytes()]
        if self.hubert is not None:
            for k, v in sorted(self.hubert.state_dict().items()):
                blobs.append(k.encode())
                blobs.append(v.detach().contiguous().numpy().tobytes())
        return fingerprint_of(_fingerprint_card(self.cfg), asset_bytes=blobs)

    # ---- features ----------------------------------------------------
    def _waveforms(self, items: Sequence[Any]) -> list[np.ndarray]:
        return [as_waveform(it, silence_peak=self.cfg.silence_peak)[0] for it in items]

    def features_of_waveforms(self, wavs: Sequence[np.ndarray], *, batched: bool = True) -> list[np.ndarray]:
        """16 kHz waveforms -> [frames, dim] features at 50 Hz."""
        if self.cfg.features == "mfcc":
            if batched:
                return mfcc_batch(wavs, self.cfg.mfcc)
            return [mfcc_features(w, self.cfg.mfcc) for w in wavs]
        # HuBERT: cut long audio into chunks (attention is quadratic), then batch the pieces by
        # length so padding stays small; features of a file's chunks are concatenated.
        chunk = max(WINDOW, int(self.cfg.hubert.max_chunk_s * SAMPLE_RATE) // HOP * HOP)
        pieces: list[tuple[int, int, np.ndarray]] = []  # (file, chunk no, samples)
        for fi, w in enumerate(wavs):
            for ci, start in enumerate(range(0, len(w), chunk)):
                seg = w[start : start + chunk]
                if len(seg) >= WINDOW or ci == 0:
                    pieces.append((fi, ci, seg))
        out: dict[tuple[int, int], np.ndarray] = {}
        order = sorted(range(len(pieces)), key=lambda j: len(pieces[j][2]), reverse=True)
        budget = int(self.cfg.max_batch_seconds * SAMPLE_RATE)
        groups: list[list[int]] = []
        for j in order:
            if batched and groups and len(pieces[groups[-1][0]][2]) * (len(groups[-1]) + 1) <= budget:
                groups[-1].append(j)
            else:
                groups.append([j])
        for g in groups:
            feats = hubert_forward(
                self.hubert, [pieces[j][2] for j in g], self.cfg.hubert.layer,
                normalize=self.cfg.hubert.normalize_waveform,
            )
            for j, f in zip(g, feats, strict=True):
                out[(pieces[j][0], pieces[j][1])] = f
        result = []
        for fi in range(len(wavs)):
            parts = [out[(p[0], p[1])] for p in pieces if p[0] == fi]
            result.append(np.concatenate(parts, axis=0) if parts else np.zeros((0, self.feature_dim), np.float32))
        return result

    def features(self, items: Sequence[Any], *, batched: bool = True) -> list[np.ndarray]:
        """Paths / arrays -> [frames, dim] float32 features at 50 Hz."""
        return self.features_of_waveforms(self._waveforms(items), batched=batched)

    # ---- units -------------------------------------------------------
    def _assign(self, feats: Sequence[np.ndarray]) -> list[np.ndarray]:
        import faiss

        if self._index is None:
            self._index = faiss.IndexFlatL2(self.feature_dim)
            self._index.add(self.centroids)
        if not feats:
            return []
        sizes = [len(f) for f in feats]
        allf = np.concatenate([np.asarray(f, dtype=np.float32).reshape(-1, self.feature_dim) for f in feats])
        if allf.shape[0] == 0:
            return [np.zeros(0, dtype=np.int64) for _ in feats]
        _, idx = self._index.search(np.ascontiguousarray(allf), 1)
        labels = idx[:, 0].astype(np.int64)
        return np.split(labels, np.cumsum(sizes)[:-1])

    def frame_units(self, items: Sequence[Any], *, batched: bool = True) -> list[np.ndarray]:
        """Frame-level units (no dedup), one per 20 ms."""
        return self._assign(self.features(items, batched=batched))

    def encode_with_durations(self, items: Sequence[Any], *, batched: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
        """-> (units, run lengths in frames) per input; with dedup off the run lengths are all 1."""
        out = []
        for u in self.frame_units(items, batched=batched):
            out.append(run_length(u) if self.cfg.dedup else (u, np.ones_like(u)))
        return out

    def encode(self, items: Sequence[Any], *, batched: bool = True) -> list[np.ndarray]:
        """Paths / 16 kHz arrays / (array, rate) pairs -> units (deduplicated unless the card says not)."""
        return [u for u, _ in self.encode_with_durations(items, batched=batched)]

    def decode(self, tokens: Sequence[np.ndarray]) -> list[Any]:
        raise TokenizerError(
            "speech units are turned back into audio by the unit vocoder, not the tokenizer: "
            "train one with `tmt vocoder train` and run `tmt vocoder synthesize`"
        )

    def make_encoder(self) -> Callable[[list[dict[str, Any]]], list[dict[str, Any] | None]]:
        """Encoder for `tmt.tokenizers.encode.encode_manifest`: rows with a `speech` path ->
        {"speech": units, "durations": runs, "duration_s": seconds}."""

        def encode_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
            idx = [i for i, r in enumerate(rows) if r.get("speech")]
            out: list[dict[str, Any] | None] = [None] * len(rows)
            if not idx:
                return out
            wavs = self._waveforms([rows[i]["speech"] for i in idx])
            feats = self.features_of_waveforms(wavs)
            for i, w, u in zip(idx, wavs, self._assign(feats), strict=True):
                units, runs = run_length(u) if self.cfg.dedup else (u, np.ones_like(u))
                res: dict[str, Any] = {"speech": units, "duration_s": round(len(w) / SAMPLE_RATE, 4)}
                if self.cfg.dedup:
                    res["durations"] = runs
                out[i] = res
            return out

        return encode_rows

    # ---- persistence -------------------------------------------------
    def save(self, directory: str | Path) -> None:
        from safetensors.numpy import save_file

        d = Path(directory)
        make_dirs(d)
        tmp = d / "centroids.safetensors.tmp"
        save_file({"centroids": self.centroids}, str(tmp))
        tmp.replace(d / "centroids.safetensors")
        if self.hubert is not None:
            from safetensors.torch import save_file as save_torch

            tmp = d / "hubert.safetensors.tmp"
            save_torch(_state_bytes(self.hubert), str(tmp))
            tmp.replace(d / "hubert.safetensors")
        info = {
            "kind": "speech",
            "class": CLASS_NAME,
            "name": self.name,
            "card": self.card,
            "vocab_size": self.vocab_size,
            "fingerprint": self.fingerprint,
            "feature_dim": self.feature_dim,
            "frame_rate": FRAME_RATE,
            "sample_rate": SAMPLE_RATE,
            "hubert_arch": self.hubert_arch,
        }
        atomic_write_json(d / "tokenizer.json", info)
        self.asset_dir = d

    @classmethod
    def load(cls, directory: str | Path, *, verify: bool = True) -> SpeechTokenizer:
        from safetensors.numpy import load_file

        d = Path(directory)
        info = read_tokenizer_json(d)
        if info["class"] != CLASS_NAME:
            raise TokenizerError(f"{d} holds a '{info['class']}' tokenizer, not {CLASS_NAME}")
        card = card_from_dict(info["card"], str(d / "tokenizer.json"))
        cpath = d / "centroids.safetensors"
        if not cpath.is_file():
            raise TokenizerError(f"{d}: centroids.safetensors is missing; re-fit or re-import the tokenizer")
        centroids = load_file(str(cpath))["centroids"]
        hubert = None
        arch = info.get("hubert_arch")
        if card.features == "hubert":
            hpath = d / "hubert.safetensors"
            if not hpath.is_file() or not arch:
                raise TokenizerError(f"{d}: hubert.safetensors / hubert_arch missing; re-fit the tokenizer")
            from safetensors.torch import load_file as load_torch

            hubert = _build_model(arch)
            hubert.load_state_dict(load_torch(str(hpath)))
            hubert.eval()
            for p in hubert.parameters():
                p.requires_grad_(False)
        tok = cls(card, centroids, hubert=hubert, hubert_arch=arch, asset_dir=d)
        if verify and tok.fingerprint != info["fingerprint"]:
            raise TokenizerError(
                f"{d}: the assets' fingerprint {tok.fingerprint[:12]} differs from tokenizer.json's "
                f"{info['fingerprint'][:12]}; the files were changed -- re-fit the tokenizer"
            )
        return tok

    # ---- fitting -----------------------------------------------------
    @classmethod
    def from_card(
        cls, card: SpeechCard, centroids: np.ndarray | None = None, *, trust_pickle: bool = False
    ) -> SpeechTokenizer:
        """A tokenizer with the card's feature extractor (HuBERT weights loaded) and given centroids
        (zeros when None: for computing features before k-means)."""
        hubert, arch = None, None
        if card.features == "hubert":
            if not card.hubert.weights:
                raise TokenizerError(
                    f"card '{card.name}' uses HuBERT features but names no weights: pass "
                    "--set hubert.weights=/path/to/hubert_base_ls960.pt (or a torchaudio .pt / HF directory)"
                )
            hubert, arch = load_hubert(
                card.hubert.weights, fmt=card.hubert.weights_format, arch_overrides=card.hubert.arch,
                num_layers=card.hubert.layer, trust_pickle=trust_pickle,
            )
        if card.features == "hubert":
            dim = int(arch["encoder_embed_dim"])  # type: ignore[index]
        else:
            dim = card.mfcc.num_ceps * (1 + card.mfcc.deltas)
        c = centroids if centroids is not None else np.zeros((card.clusters, dim), np.float32)
        if c.shape[1] != dim:
            raise TokenizerError(
                f"centroids have {c.shape[1]} dims but the card's {card.features} features have {dim}; "
                "the k-means was trained on other features"
            )
        return cls(card, c, hubert=hubert, hubert_arch=arch)

    @classmethod
    def fit(
        cls,
        card: SpeechCard,
        audio: Sequence[Any],
        *,
        trust_pickle: bool = False,
        skip_bad: bool = False,
        progress: bool = False,
        batch_size: int = 16,
    ) -> SpeechTokenizer:
        """Train k-means on a seeded sample of `card.sample_size` frames of `audio` (paths or arrays)."""
        if card.clusters < 2:
            raise TokenizerError(f"clusters must be >= 2, got {card.clusters}")
        if not audio:
            raise TokenizerError("no audio to fit the speech tokenizer on (no rows with speech)")
        tok = cls.from_card(card, trust_pickle=trust_pickle)
        rng = np.random.default_rng(card.seed)
        order = rng.permutation(len(audio))
        # Sample frames while extracting: each file contributes a random fraction `keep` of its
        # frames (1 for small corpora, down to 1/4 for large ones), so the sample is spread over
        # many files while memory stays ~sample_size frames and at most ~4x that is computed.
        feats: list[np.ndarray] = []
        kept, seen_frames, seen_files, bad = 0, 0, 0, 0
        keep = 1.0
        from tqdm import tqdm

        bar = tqdm(total=len(order), desc="features", unit="file", disable=not progress)
        for start in range(0, len(order), batch_size):
            items = [audio[int(i)] for i in order[start : start + batch_size]]
            wavs = []
            for it in items:
                try:
                    wavs.append(as_waveform(it, silence_peak=card.silence_peak)[0])
                except AudioError as e:
                    if not skip_bad:
                        raise
                    bad += 1
                    log.warning("skipping %s", e)
            for f in tok.features_of_waveforms(wavs):
                seen_frames += len(f)
                seen_files += 1
                if start == 0:  # estimate the corpus size from the first batch
                    expected = seen_frames / seen_files * len(order)
                    keep = float(np.clip(card.sample_size / max(1.0, expected), 0.25, 1.0))
                if keep < 1.0:
                    f = f[rng.random(len(f)) < keep]
                feats.append(f)
                kept += len(f)
            bar.update(len(items))
            if kept >= card.sample_size:
                break
        bar.close()
        x = np.concatenate(feats) if feats else np.zeros((0, tok.feature_dim), np.float32)
        if x.shape[0] > card.sample_size:
            x = x[np.sort(rng.choice(x.shape[0], card.sample_size, replace=False))]
        log.info("k-means: %d frames x %d dims -> %d clusters (%d bad files skipped)", *x.shape, card.clusters, bad)
        centroids, inertia = kmeans_fit(x, card.clusters, niter=card.iterations, nredo=card.n_init, seed=card.seed)
        log.info("k-means inertia per frame: %.4f", inertia / max(1, x.shape[0]))
        out = cls(card, centroids, hubert=tok.hubert, hubert_arch=tok.hubert_arch)
        out.fit_stats = {"frames": int(x.shape[0]), "frames_seen": seen_frames, "files_seen": seen_files,
                         "inertia": inertia, "bad_files": bad}
        return out


def import_km(
    km_path: str | Path, card: SpeechCard, *, trust_pickle: bool = False, trust_pickle_weights: bool = False
) -> SpeechTokenizer:
    """Build a tokenizer from fairseq's `km.bin` (a joblib-pickled scikit-learn MiniBatchKMeans).

    Unpickling can run arbitrary code, so this refuses unless `trust_pickle` is set; the
    centroids are then kept in safetensors and the pickle is never needed again.
    """
    p = Path(km_path)
    if not p.is_file():
        raise TokenizerError(f"k-means model not found: {p}")
    if not trust_pickle:
        raise TokenizerError(
            f"{p} is a pickle (joblib); loading a pickle can run arbitrary code. If you trust its origin, "
            "pass --trust-pickle; it is converted to centroids.safetensors on import"
        )
    import joblib

    try:
        km = joblib.load(p)
    except Exception as e:  # any unpickling failure means "not a km.bin"
        raise TokenizerError(f"{p}: cannot unpickle a k-means model ({type(e).__name__}: {e})") from None
    centers = getattr(km, "cluster_centers_", None)
    if centers is None and isinstance(km, np.ndarray):
        centers = km
    if centers is None:
        raise TokenizerError(f"{p}: holds a {type(km).__name__}, expected a fitted scikit-learn KMeans/MiniBatchKMeans")
    centers = np.asarray(centers, dtype=np.float32)
    card = merge(card, {"clusters": int(centers.shape[0])})
    return SpeechTokenizer.from_card(card, centers, trust_pickle=trust_pickle_weights)


def iter_speech_paths(manifest: str | Path, split: str | None = None) -> Iterator[str]:
    """Absolute speech paths of a raw manifest's rows (one split or all)."""
    from tmt.store.manifest import media_path, read_manifest

    for r in read_manifest(manifest, split=split):
        if r.get("speech"):
            yield str(media_path(manifest, r["speech"]))
