"""Import of fairseq / speech-resynthesis unit HiFi-GAN checkpoints (g_XXXXXXXX + config.json).

The checkpoint is built here, independently of tmt's modules, in the layout those
projects write: a `CodeGenerator` whose unit embedding is `dict`, whose duration
predictor is `dur_predictor.{conv1.0, ln1, conv2.0, ln2, proj}`, and whose convs
carry the old-style weight norm (`weight_g`, `weight_v`), saved as
`{"generator": state_dict}`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tmt.core.audio import FRAME_HOP
from tmt.vocoder import VocoderError, load_vocoder
from tmt.vocoder.fairseq_import import import_fairseq

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

CFG = {
    "resblock": "1",
    "upsample_rates": [5, 4, 4, 4],
    "upsample_kernel_sizes": [11, 8, 8, 8],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "num_embeddings": 30,
    "embedding_dim": 16,
    "model_in_dim": 16,
    "segment_size": 8960,
    "code_hop_size": 320,
    "sampling_rate": 16000,
    "dur_prediction_weight": 1.0,
    "dur_predictor_params": {"encoder_embed_dim": 16, "var_pred_hidden_dim": 16, "var_pred_kernel_size": 3,
                             "var_pred_dropout": 0.5},
}


def _wn(m: nn.Module) -> nn.Module:
    return nn.utils.weight_norm(m)  # the pre-parametrization API: weight_g / weight_v


class _FsResBlock(nn.Module):
    def __init__(self, ch: int, k: int, dil: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, dilation=d, padding=(k * d - d) // 2)) for d in dil)
        self.convs2 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, padding=(k - 1) // 2)) for _ in dil)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for a, b in zip(self.convs1, self.convs2, strict=True):
            x = x + b(F.leaky_relu(a(F.leaky_relu(x, 0.1)), 0.1))
        return x


class _FsDurPred(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(d, h, 3, padding=1), nn.ReLU())
        self.ln1 = nn.LayerNorm(h)
        self.conv2 = nn.Sequential(nn.Conv1d(h, h, 3, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(h)
        self.proj = nn.Linear(h, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln1(self.conv1(x.transpose(1, 2)).transpose(1, 2))
        x = self.ln2(self.conv2(x.transpose(1, 2)).transpose(1, 2))
        return self.proj(x).squeeze(2)


class _FsCodeGenerator(nn.Module):
    """A stand-in written for this test with the parameter names of fairseq's CodeGenerator."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        c0 = cfg["upsample_initial_channel"]
        self.conv_pre = _wn(nn.Conv1d(cfg["model_in_dim"], c0, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        self.nk = len(cfg["resblock_kernel_sizes"])
        for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"], strict=True)):
            self.ups.append(_wn(nn.ConvTranspose1d(c0 // 2**i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)))
            for rk, rd in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"], strict=True):
                self.resblocks.append(_FsResBlock(c0 // 2 ** (i + 1), rk, rd))
        self.conv_post = _wn(nn.Conv1d(c0 // 2 ** len(self.ups), 1, 7, padding=3))
        self.dict = nn.Embedding(cfg["num_embeddings"], cfg["embedding_dim"])
        p = cfg["dur_predictor_params"]
        self.dur_predictor = _FsDurPred(p["encoder_embed_dim"], p["var_pred_hidden_dim"])

    def forward(self, code: torch.Tensor, dur_prediction: bool) -> torch.Tensor:
        x = self.dict(code).transpose(1, 2)
        if dur_prediction:
            d = torch.clamp(torch.round(torch.exp(self.dur_predictor(x.transpose(1, 2))) - 1).long(), min=1)
            x = torch.repeat_interleave(x, d.view(-1), dim=2)
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(self.resblocks[i * self.nk + j](x) for j in range(self.nk)) / self.nk
        return torch.tanh(self.conv_post(F.leaky_relu(x))).view(-1)


@pytest.fixture(scope="module")
def fairseq_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, _FsCodeGenerator]:
    torch.manual_seed(0)
    gen = _FsCodeGenerator(CFG).eval()
    with torch.no_grad():  # move g away from |v| so folding weight norm actually matters
        for name, p in gen.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(1.0 + 0.5 * torch.rand_like(p))
            elif "dur_predictor.proj.bias" in name:
                p.fill_(1.2)
    d = tmp_path_factory.mktemp("fairseq")
    sd = gen.state_dict()
    assert "conv_pre.weight_g" in sd and "ups.0.weight_v" in sd and "dict.weight" in sd
    assert "dur_predictor.conv1.0.weight" in sd and "resblocks.1.convs2.2.weight_v" in sd
    torch.save({"generator": sd}, d / "g_00100000")
    (d / "config.json").write_text(json.dumps(CFG))
    return d / "g_00100000", d / "config.json", gen


def test_import_matches_the_fairseq_generator(fairseq_ckpt: tuple, tmp_path: Path) -> None:
    ckpt, cfg, gen = fairseq_ckpt
    out = import_fairseq(ckpt, cfg, tmp_path / "voc", speech_tokenizer={"fingerprint": "c" * 64})
    info = json.loads((out / "vocoder.json").read_text())
    assert info["num_units"] == 30 and info["has_duration_predictor"]
    voc = load_vocoder(out, expected_fingerprint="c" * 64)
    rng = np.random.default_rng(1)
    units = rng.integers(0, 30, 9)
    durs = rng.integers(1, 5, 9)
    # ground-truth durations: fairseq is fed the frame-level (repeated) code sequence
    with torch.no_grad():
        want = gen(torch.from_numpy(np.repeat(units, durs))[None], dur_prediction=False).numpy()
    assert want.std() > 1e-3  # a real signal, so the tolerance below means something
    got = voc.synthesize([units], [durs])[0]
    assert got.shape == want.shape == (int(durs.sum()) * FRAME_HOP,)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # predicted durations: the same duration predictor, the same waveform
    with torch.no_grad():
        want_pred = gen(torch.from_numpy(units)[None], dur_prediction=True).numpy()
    got_pred = voc.synthesize([units], duration_rounding="per-unit")[0]
    np.testing.assert_allclose(got_pred, want_pred, atol=2e-5)
    # the default rounding keeps the predicted total instead: same units, its own durations
    diffuse = voc.predict_durations([units])[0]
    np.testing.assert_allclose(voc.synthesize([units])[0], voc.synthesize([units], [diffuse])[0], atol=1e-6)
    with pytest.raises(VocoderError, match="rounding"):
        voc.synthesize([units], duration_rounding="nearest")


def test_import_cli(fairseq_ckpt: tuple, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tmt.cli import cli

    ckpt, cfg, _ = fairseq_ckpt
    res = CliRunner().invoke(cli, ["vocoder", "import-fairseq", str(ckpt), str(cfg), "--out", str(tmp_path / "v"),
                                   "--fingerprint", "d" * 64])
    assert res.exit_code == 0, res.output
    assert "30 units" in res.output
    assert load_vocoder(tmp_path / "v").fingerprint == "d" * 64


class _NotATensor:
    pass


def test_import_refuses_bad_inputs(fairseq_ckpt: tuple, tmp_path: Path) -> None:
    ckpt, cfg, _ = fairseq_ckpt
    sd = torch.load(ckpt, weights_only=True)["generator"]
    # arbitrary pickled objects are refused under weights_only=True
    torch.save({"generator": sd, "extra": _NotATensor()}, tmp_path / "g_pickle")
    with pytest.raises(VocoderError, match="--trust-pickle"):
        import_fairseq(tmp_path / "g_pickle", cfg, tmp_path / "o1")
    # conditioned (f0 / speaker) vocoders cannot be fed by tmt units
    conf = dict(CFG, f0=True)
    (tmp_path / "f0.json").write_text(json.dumps(conf))
    with pytest.raises(VocoderError, match="'f0'"):
        import_fairseq(ckpt, tmp_path / "f0.json", tmp_path / "o2")
    # extra parameters (e.g. a speaker embedding) are named
    torch.save({"generator": dict(sd, **{"spkr.weight": torch.zeros(4, 16)})}, tmp_path / "g_spkr")
    with pytest.raises(VocoderError, match=r"spkr\.weight"):
        import_fairseq(tmp_path / "g_spkr", cfg, tmp_path / "o3")
    # shapes must agree with config.json
    (tmp_path / "wide.json").write_text(json.dumps(dict(CFG, upsample_initial_channel=64)))
    with pytest.raises(VocoderError, match="shape"):
        import_fairseq(ckpt, tmp_path / "wide.json", tmp_path / "o4")
    # the discriminator file is not a generator
    torch.save({"mpd": {"x": torch.zeros(1)}, "msd": {}}, tmp_path / "do_00100000")
    with pytest.raises(VocoderError, match="g_XXXXXXXX"):
        import_fairseq(tmp_path / "do_00100000", cfg, tmp_path / "o5")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o4" / "vocoder.json").exists()
