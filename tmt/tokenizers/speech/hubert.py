"""HuBERT features: three weight loaders (torchaudio state dict, fairseq checkpoint, Hugging Face
directory) -> one torchaudio Wav2Vec2Model, and the batched, masked layer-L forward pass.

Weights are read once, at fit (or import-km) time, and stored converted (safetensors, no pickle)
in the tokenizer directory, so encoding never needs the original file or a trust flag.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.speech.card import WINDOW

log = logging.getLogger(__name__)


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
    a = _norm_arch(arch)
    if a.get("extractor_mode") == "fbank":  # pretrained by `tmt tokenize speech pretrain` (ssl.py)
        from tmt.tokenizers.speech.ssl import build_fbank_model

        return build_fbank_model(a)
    from torchaudio.models import wav2vec2_model

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


def _load_hf(path: Path, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Hugging Face HubertModel directory -> (torchaudio state dict, architecture)."""
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
    return state, arch


def _load_safetensors(path: Path, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A .safetensors file in torchaudio or fairseq naming -> (torchaudio state dict, architecture).
    An architecture in the file's `tmt_arch` metadata (fbank HuBERTs pretrained by tmt) is used as is."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from tmt.tokenizers.speech.ssl import ARCH_METADATA

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise TokenizerError(f"{path}: not a readable safetensors file ({e})") from None
    if ARCH_METADATA in meta:
        return state, json.loads(meta[ARCH_METADATA]) | overrides
    if any(k.startswith("encoder.layers.") for k in state):
        state = convert_fairseq_state(state)
    return state, _infer_arch_from_state(state, overrides)


def _load_pt(path: Path, fmt: str, overrides: dict[str, Any], trust_pickle: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """A torch file: a fairseq checkpoint (model + cfg/args) or a plain state dict in either
    naming -> (torchaudio state dict, architecture)."""
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
        return convert_fairseq_state(obj["model"]), arch
    sd: dict[str, Any] = obj.get("state_dict") or obj.get("model") or obj
    if any(k.startswith("encoder.layers.") or k.startswith("post_extract_proj") for k in sd):
        state = convert_fairseq_state(sd)
    else:
        state = dict(sd)
    return state, _infer_arch_from_state(state, overrides)


def _keep_layers(path: Path, state: dict[str, Any], arch: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Cut the architecture (in place) and the state dict to the first `num_layers` transformer layers."""
    if num_layers > int(arch["encoder_num_layers"]):
        raise TokenizerError(
            f"{path}: layer {num_layers} requested but the model has {arch['encoder_num_layers']} layers"
        )
    arch["encoder_num_layers"] = int(num_layers)
    return {
        k: v for k, v in state.items()
        if not (m := re.match(r"encoder\.transformer\.layers\.(\d+)\.", k)) or int(m.group(1)) < num_layers
    }


def _frozen_model(path: Path, state: dict[str, Any], arch: dict[str, Any]) -> Any:
    """The torchaudio model of `arch` with `state` loaded, in eval mode and without gradients."""
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
    return model


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
    path = Path(weights)
    if not path.exists():
        raise TokenizerError(f"HuBERT weights not found: {path}")
    overrides = dict(arch_overrides or {})
    kind = detect_weights_format(path) if fmt == "auto" else fmt
    if kind == "hf":
        state, arch = _load_hf(path, overrides)
    elif path.suffix == ".safetensors":
        state, arch = _load_safetensors(path, overrides)
    else:
        state, arch = _load_pt(path, fmt, overrides, trust_pickle)
    if num_layers is not None:
        state = _keep_layers(path, state, arch, num_layers)
    return _frozen_model(path, state, arch), _norm_arch(arch)


def hubert_forward(model: Any, wavs: Sequence[np.ndarray], layer: int, *, normalize: bool = False) -> list[np.ndarray]:
    """Features of layer `layer` for a batch of waveforms -> one [frames, dim] array per waveform.

    The convolutional feature extractor runs on each waveform alone (its cost is linear in
    the samples, so batching gains nothing there, while padding would add work and need a
    masked GroupNorm); only the transformer runs batched, on the padded frame sequences with
    a key-padding mask, and without any mask when all lengths are equal. Callers sort by
    length so padding stays small. Equal to one waveform at a time up to float rounding.
    Waveforms shorter than one 25 ms window give zero frames."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        dim = model.encoder.feature_projection.projection.out_features
        conv: list[Any] = []
        for w in wavs:
            x = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
            if normalize:
                x = F.layer_norm(x, x.shape)
            conv.append(model.feature_extractor(x[None], None)[0][0] if x.numel() >= WINDOW else None)
        live = [i for i, c in enumerate(conv) if c is not None]
        out = [np.zeros((0, dim), np.float32) for _ in wavs]
        if not live:
            return out
        frames = [conv[i] for i in live]
        lens = torch.tensor([len(c) for c in frames])
        x = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)  # -> [B, frames, conv channels]
        masked = bool((lens != lens[0]).any())
        h = model.encoder.extract_features(x, lens if masked else None, num_layers=layer)[layer - 1]
        for i, row, n in zip(live, h, lens.tolist(), strict=True):
            out[i] = row[:n].float().numpy().copy()
        return out


def _state_bytes(model: Any) -> dict[str, Any]:
    return {k: v.contiguous() for k, v in model.state_dict().items()}

