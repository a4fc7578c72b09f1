"""The tmt model: shapes, padding, output restriction, sliced loss, save/load, presets."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from fairseq2.nn import BatchLayout, IncrementalStateBag

from tmt.models.checkpoint import load_model, save_model
from tmt.models.config import PRESETS, ModelError, TmtModelConfig, get_preset, tiny
from tmt.models.tmt import create_model, sliced_loss
from tmt.vocab import BOS, EOS, PAD, JointVocab

torch.set_num_threads(1)

VOCAB = JointVocab.from_sizes({"text": 50, "speech": 20, "image": 30}, fingerprints={"text": "t", "speech": "s", "image": "i"})


def _model(seed: int = 0, **kw: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = tiny()
    for k, v in kw.items():
        setattr(cfg, k, v)
    return create_model(cfg, VOCAB).eval()


def _ids(m: str, n: int, g: torch.Generator) -> torch.Tensor:
    s, e = VOCAB.range(m)
    return torch.randint(s, e, (n,), generator=g)


def test_forward_shape_and_padding_invariance() -> None:
    model = _model()
    g = torch.Generator().manual_seed(1)
    srcs = [torch.cat([_ids("speech", n, g), torch.tensor([EOS])]) for n in (9, 4)]
    tgts = [torch.cat([torch.tensor([BOS["text"]]), _ids("text", n, g)]) for n in (5, 2)]
    src = torch.nn.utils.rnn.pad_sequence(srcs, batch_first=True)
    tgt = torch.nn.utils.rnn.pad_sequence(tgts, batch_first=True)
    with torch.no_grad():
        logits = model(src, BatchLayout.of(src, [10, 5]), tgt, BatchLayout.of(tgt, [6, 3]))
        assert logits.shape == (2, 6, VOCAB.size)
        s1, t1 = srcs[1][None], tgts[1][None]
        single = model(s1, BatchLayout.of(s1), t1, BatchLayout.of(t1))
    assert torch.allclose(single[0], logits[1, :3], atol=1e-4)
    assert model.max_source_seq_len == model.max_target_seq_len == tiny().max_seq_len
    assert model.vocab is VOCAB


def test_modality_embedding_is_used() -> None:
    model = _model()
    fe = model.frontend
    types = fe.token_type[torch.tensor([PAD, EOS, BOS["image"], *VOCAB.range("speech")])]
    assert types.tolist()[:3] == [3, 3, 2] and types[3].item() == 1
    model_no = _model(modality_embedding=False)
    assert model_no.frontend.type_embed is None
    assert model.num_params() > model_no.num_params()


def test_restricted_and_sliced_logits_agree() -> None:
    model = _model()
    g = torch.Generator().manual_seed(2)
    src = torch.cat([_ids("image", 6, g), torch.tensor([EOS])])[None]
    body = _ids("speech", 5, g)
    tin = torch.cat([torch.tensor([BOS["speech"]]), body])[None]
    tout = torch.cat([body, torch.tensor([EOS])])[None]
    with torch.no_grad():
        enc, lay = model.encode(src, BatchLayout.of(src))
        h = model.decode(enc, lay, tin, BatchLayout.of(tin))
        full = model.restricted_logits(model.final_proj(h), "speech")
        # probability mass only on the speech range + <eos>
        probs = full.softmax(-1)[0]
        allowed = model.allowed_mask("speech")
        assert torch.allclose(probs[:, allowed].sum(-1), torch.ones(6))
        assert probs[:, ~allowed].max() == 0
        ref = F.cross_entropy(full[0], tout[0], reduction="sum")
        st = sliced_loss(model, h, tout, "speech")
    assert math.isclose(st.loss.item(), ref.item(), rel_tol=1e-5)
    assert st.num_tokens == 6
    # label smoothing spreads mass over the slice only (1 + 20 classes)
    ls = sliced_loss(model, h, tout, "speech", label_smoothing=0.1)
    lp = full[0].log_softmax(-1)[:, model.slice_ids("speech")]
    want = (0.9 * -lp.gather(1, model.to_slice_targets(tout[0], "speech")[:, None]).squeeze(1) - 0.1 * lp.mean(-1)).sum()
    assert math.isclose(ls.loss.item(), want.item(), rel_tol=1e-5)
    with pytest.raises(ModelError):
        model.to_slice_targets(torch.tensor([[VOCAB.range("text")[0]]]), "speech")


def test_incremental_decoding_matches_full() -> None:
    model = _model()
    g = torch.Generator().manual_seed(3)
    src = torch.cat([_ids("text", 7, g), torch.tensor([EOS])])[None]
    tgt = torch.cat([torch.tensor([BOS["image"]]), _ids("image", 4, g)])[None]
    with torch.no_grad():
        full = model(src, BatchLayout.of(src), tgt, BatchLayout.of(tgt))
        bag = IncrementalStateBag(16)
        steps = []
        for i in range(tgt.size(1)):
            t = tgt[:, i : i + 1]
            steps.append(model(src, BatchLayout.of(src), t, BatchLayout.of(t), state_bag=bag))
            bag.increment_step_nr()
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4)


def test_save_load_roundtrip(tmp_path) -> None:
    model = _model(seed=5)
    save_model(model, tmp_path)
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "vocab.json").is_file()
    loaded = load_model(tmp_path)
    assert loaded.config == model.config
    assert loaded.final_proj.weight is loaded.frontend.embed.weight  # tie survives loading
    x = torch.tensor([[VOCAB.range("text")[0] + 3, EOS]])
    y = torch.tensor([[BOS["speech"]]])
    with torch.no_grad():
        a = model(x, BatchLayout.of(x), y, BatchLayout.of(y))
        b = loaded(x, BatchLayout.of(x), y, BatchLayout.of(y))
    assert torch.equal(a, b)
    torch.save({"bogus": torch.zeros(1)}, tmp_path / "model.pt")
    with pytest.raises(ModelError, match="does not match"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "nope")


# each preset's architecture as it was before the presets were derived from each other
_PRESET_VALUES = {
    "tiny": dict(model_dim=32, num_encoder_layers=2, num_decoder_layers=2, num_heads=4, ffn_inner_dim=64,
                 dropout_p=0.0, max_seq_len=512),
    "demo": dict(model_dim=128, num_encoder_layers=2, num_decoder_layers=2, num_heads=4, ffn_inner_dim=512,
                 dropout_p=0.1, max_seq_len=1024),
    "small": dict(model_dim=256, num_encoder_layers=3, num_decoder_layers=3, num_heads=4, ffn_inner_dim=1024,
                  dropout_p=0.1, max_seq_len=1024),
    "base": dict(model_dim=768, num_encoder_layers=12, num_decoder_layers=12, num_heads=12, ffn_inner_dim=3072,
                 dropout_p=0.1, max_seq_len=1024),
    "paper": dict(model_dim=1024, num_encoder_layers=12, num_decoder_layers=12, num_heads=16, ffn_inner_dim=4096,
                  dropout_p=0.1, max_seq_len=1024),
}


def test_preset_registry_values() -> None:
    assert list(PRESETS) == list(_PRESET_VALUES)
    for name, values in _PRESET_VALUES.items():
        cfg = get_preset(name)
        assert dataclasses.asdict(cfg) == dataclasses.asdict(TmtModelConfig(**values)), name  # type: ignore[arg-type]
        assert get_preset(name) is not cfg  # a fresh config each call: callers may edit it


def test_presets() -> None:
    assert get_preset("tiny").model_dim <= 32
    b = get_preset("base")
    assert (b.num_encoder_layers, b.num_decoder_layers, b.model_dim, b.num_heads) == (12, 12, 768, 12)
    p = get_preset("paper")
    assert (p.model_dim, p.ffn_inner_dim, p.num_heads, p.num_encoder_layers) == (1024, 4096, 16, 12)
    with pytest.raises(ModelError):
        get_preset("huge")
    with pytest.raises(ModelError):
        create_model(TmtModelConfig(model_dim=30, num_heads=4), VOCAB)
