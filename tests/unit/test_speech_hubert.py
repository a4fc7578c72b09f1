"""HuBERT features: the three weight formats agree, batching and chunking keep features exact."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tmt.tokenizers.base import TokenizerError
from tmt.tokenizers.speech import (
    SpeechCard,
    SpeechTokenizer,
    hubert_forward,
    load_hubert,
)

torch.set_num_threads(1)
transformers = pytest.importorskip("transformers")

LAYERS, LAYER = 3, 2
CONV = "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2"


class NotAllowed:
    """A pickled class that weights_only loading must refuse."""

    def __init__(self) -> None:
        self.x = 1


def _hf_model() -> Any:
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(
        hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )
    model = transformers.HubertModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a wrong mapping shows
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


# HF HubertModel key -> fairseq HubertModel key, written independently of the library's mapping
_HF_TO_FAIRSEQ = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight", r"feature_extractor.conv_layers.\1.0.weight"),
    (r"feature_extractor\.conv_layers\.0\.layer_norm\.(\w+)", r"feature_extractor.conv_layers.0.2.\1"),
    (r"feature_projection\.layer_norm\.(\w+)", r"layer_norm.\1"),
    (r"feature_projection\.projection\.(\w+)", r"post_extract_proj.\1"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", "encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", "encoder.pos_conv.0.weight_v"),
    (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
    (r"encoder\.layer_norm\.(\w+)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.attention\.(\w+)_proj\.(\w+)", r"encoder.layers.\1.self_attn.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.layer_norm\.(\w+)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(\w+)", r"encoder.layers.\1.fc1.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(\w+)", r"encoder.layers.\1.fc2.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(\w+)", r"encoder.layers.\1.final_layer_norm.\2"),
    (r"masked_spec_embed", "mask_emb"),
]


def _fairseq_state(hf: Any) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in hf.state_dict().items():
        for pat, rep in _HF_TO_FAIRSEQ:
            if re.fullmatch(pat, k):
                out[re.sub(pat, rep, k)] = v.clone()
                break
        else:
            raise AssertionError(f"unmapped HF key {k}")
    out["label_embs_concat"] = torch.randn(10, 8)
    out["final_proj.weight"] = torch.randn(8, 32)
    out["final_proj.bias"] = torch.zeros(8)
    return out


FAIRSEQ_MODEL_CFG = {
    "_name": "hubert", "extractor_mode": "default", "conv_feature_layers": CONV, "encoder_layers": LAYERS,
    "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2, "conv_pos": 16,
    "conv_pos_groups": 4, "layer_norm_first": False, "conv_bias": False,
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from torchaudio.models.wav2vec2.utils import import_huggingface_model

    d = tmp_path_factory.mktemp("hubert")
    hf = _hf_model()
    hf.save_pretrained(d / "hf")
    torch.save(import_huggingface_model(hf).state_dict(), d / "torchaudio.pt")
    fs = _fairseq_state(hf)
    torch.save({"cfg": {"model": FAIRSEQ_MODEL_CFG, "task": {"normalize": False}}, "model": fs}, d / "fairseq.pt")
    torch.save({"args": argparse.Namespace(**FAIRSEQ_MODEL_CFG), "cfg": None, "model": fs}, d / "fairseq-args.pt")
    torch.save({"cfg": {"model": FAIRSEQ_MODEL_CFG}, "model": fs, "extra": NotAllowed()}, d / "fairseq-pickled.pt")
    with torch.no_grad():
        wav = torch.from_numpy(_wavs()[0])[None]
        ref = hf(wav, output_hidden_states=True).hidden_states[LAYER][0].numpy()
    np.save(d / "ref.npy", ref)
    return {"hf": d / "hf", "torchaudio": d / "torchaudio.pt", "fairseq": d / "fairseq.pt",
            "fairseq-args": d / "fairseq-args.pt", "pickled": d / "fairseq-pickled.pt", "ref": d / "ref.npy"}


def _wavs() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 9000, 4321, 640)]


ARCH = {"encoder_num_heads": 2}  # a bare torchaudio state dict does not record the head count


@pytest.mark.parametrize("fmt", ["hf", "torchaudio", "fairseq", "fairseq-args"])
def test_three_loaders_give_the_same_features(weights: dict[str, Path], fmt: str) -> None:
    model, arch = load_hubert(weights[fmt], arch_overrides=ARCH if fmt == "torchaudio" else {}, num_layers=LAYER)
    assert arch["encoder_num_layers"] == LAYER and arch["encoder_embed_dim"] == 32
    assert len(model.encoder.transformer.layers) == LAYER
    feats = hubert_forward(model, _wavs()[:1], LAYER)[0]
    ref = np.load(weights["ref"])  # HF's own hidden state after layer 2
    assert feats.shape == ref.shape == (49, 32)
    np.testing.assert_allclose(feats, ref, atol=1e-5)


def test_pickled_checkpoint_needs_trust(weights: dict[str, Path]) -> None:
    with pytest.raises(TokenizerError, match="--trust-pickle"):
        load_hubert(weights["pickled"], num_layers=LAYER)
    model, _ = load_hubert(weights["pickled"], num_layers=LAYER, trust_pickle=True)
    np.testing.assert_allclose(hubert_forward(model, _wavs()[:1], LAYER)[0], np.load(weights["ref"]), atol=1e-5)


def test_loader_errors(weights: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="not found"):
        load_hubert(tmp_path / "nope.pt")
    with pytest.raises(TokenizerError, match="layer 9 requested"):
        load_hubert(weights["hf"], num_layers=9)
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(TokenizerError, match="not a HuBERT"):
        load_hubert(tmp_path / "other.pt")


def test_batched_equals_one_by_one(weights: dict[str, Path]) -> None:
    model, _ = load_hubert(weights["hf"], num_layers=LAYER)
    wavs = _wavs()
    batched = hubert_forward(model, wavs, LAYER)
    for w, b in zip(wavs, batched, strict=True):
        single = hubert_forward(model, [w], LAYER)[0]
        # the reference path: torchaudio's own unbatched extract_features
        ref = model.extract_features(torch.from_numpy(w)[None], num_layers=LAYER)[0][LAYER - 1][0].numpy()
        assert b.shape == single.shape == ref.shape and b.shape[0] == (len(w) - 400) // 320 + 1
        np.testing.assert_allclose(single, ref, atol=1e-6)
        np.testing.assert_allclose(b, single, atol=1e-4)


def test_equal_lengths_and_too_short_inputs(weights: dict[str, Path]) -> None:
    model, _ = load_hubert(weights["hf"], num_layers=LAYER)
    rng = np.random.default_rng(3)
    same = [(0.1 * rng.standard_normal(5000)).astype(np.float32) for _ in range(3)]  # no mask needed
    for w, b in zip(same, hubert_forward(model, same, LAYER), strict=True):
        np.testing.assert_allclose(b, hubert_forward(model, [w], LAYER)[0], atol=1e-4)
    short = hubert_forward(model, [same[0], same[1][:300]], LAYER)  # under one 25 ms window: no frames
    assert short[1].shape == (0, 32) and short[0].shape[0] == (5000 - 400) // 320 + 1


def _card(weights: Path, **kw: Any) -> SpeechCard:
    from tmt.config import from_dict

    base: dict[str, Any] = {"name": "tiny-hubert", "features": "hubert", "clusters": 8, "sample_size": 500,
                            "iterations": 10, "hubert": {"weights": str(weights), "layer": LAYER}}
    base.update(kw)
    return from_dict(SpeechCard, base)


def test_long_files_are_chunked(weights: dict[str, Path]) -> None:
    tok = SpeechTokenizer.from_card(_card(weights["hf"], hubert={"weights": str(weights["hf"]), "layer": LAYER,
                                                                 "max_chunk_s": 0.5}))
    rng = np.random.default_rng(1)
    long = (0.1 * rng.standard_normal(16000 * 2 + 5000)).astype(np.float32)
    inputs = [long, _wavs()[1], _wavs()[2]]  # 37000, 9000 and 4321 samples; chunks of 8000
    f = tok.features(inputs)
    for x, fx in zip(inputs, f, strict=True):
        parts = [hubert_forward(tok.hubert, [x[s : s + 8000]], LAYER)[0] for s in range(0, len(x), 8000)]
        assert fx.shape[0] == sum(len(p) for p in parts)
        np.testing.assert_allclose(fx, np.concatenate(parts), atol=1e-4)
    assert f[2].shape[0] == (4321 - 400) // 320 + 1  # shorter than a chunk: not cut


def test_hubert_tokenizer_fit_save_load(weights: dict[str, Path], tmp_path: Path) -> None:
    wavs = _wavs()
    tok = SpeechTokenizer.fit(_card(weights["hf"]), wavs)
    assert tok.vocab_size == 8 and tok.feature_dim == 32
    tok.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "hubert.safetensors").is_file()
    back = SpeechTokenizer.load(tmp_path / "tok")
    assert back.fingerprint == tok.fingerprint
    for a, b in zip(tok.encode_with_durations(wavs), back.encode_with_durations(wavs), strict=True):
        assert a[0].tolist() == b[0].tolist() and a[1].tolist() == b[1].tolist()
    # same weights from another format: same features, same k-means, same fingerprint
    tok2 = SpeechTokenizer.fit(_card(weights["fairseq"]), wavs)
    np.testing.assert_allclose(tok2.centroids, tok.centroids, atol=1e-4)
    # other weights: another fingerprint
    other = SpeechTokenizer(tok.cfg, tok.centroids, hubert=_perturbed(back.hubert), hubert_arch=tok.hubert_arch)
    assert other.fingerprint != tok.fingerprint


def _perturbed(model: Any) -> Any:
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        next(iter(m.parameters())).add_(1.0)
    return m


def test_batched_units_equal_one_by_one_units(weights: dict[str, Path]) -> None:
    wavs = _wavs()
    rng = np.random.default_rng(4)
    wavs += [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (12000, 12000, 7777, 3000)]
    tok = SpeechTokenizer.fit(_card(weights["hf"]), wavs)
    batched = tok.encode_with_durations(wavs)
    single = [tok.encode_with_durations([w], batched=False)[0] for w in wavs]
    for (bu, bd), (su, sd) in zip(batched, single, strict=True):
        assert bu.tolist() == su.tolist() and bd.tolist() == sd.tolist()
    assert [u.tolist() for u in tok.encode(wavs, batched=False)] == [u.tolist() for u, _ in batched]
