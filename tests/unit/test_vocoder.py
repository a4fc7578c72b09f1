"""Unit vocoder: networks, batching, save/load, fingerprints, losses, training and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tmt.vocoder import (
    FRAME_HOP,
    PRESETS,
    UnitVocoder,
    VocoderConfig,
    VocoderError,
    build_model,
    check_config,
    load_vocoder,
    preset,
    save_vocoder,
    tiny_config,
)
from tmt.vocoder.duration import DurationPredictor, durations_from_log, expand_units, sequence_mask
from tmt.vocoder.nets import (
    CodeHiFiGAN,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    apply_weight_norm,
    discriminator_loss,
    duration_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from tmt.vocoder.testing import make_unit_corpus, random_units

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _units(n: int, seed: int = 0, num_units: int = 20) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = [random_units(rng, num_units, int(rng.integers(3, 12))) for _ in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


# ------------------------------------------------------------------------- configs
def test_presets_are_valid_and_paper_matches_hifigan_v1() -> None:
    for name in PRESETS:
        check_config(preset(name))
    paper = preset("paper")
    assert paper.generator.upsample_initial_channel == 512
    assert paper.generator.upsample_rates == [5, 4, 4, 2, 2]
    assert paper.generator.upsample_kernel_sizes == [11, 8, 8, 4, 4]
    assert paper.generator.resblock_kernel_sizes == [3, 7, 11]
    assert paper.generator.resblock_dilation_sizes == [[1, 3, 5]] * 3
    assert paper.discriminator.periods == [2, 3, 5, 7, 11]
    n = sum(p.numel() for p in build_model(paper).parameters())
    assert 13_000_000 < n < 14_000_000  # HiFi-GAN V1 generator + 200 x 128 unit embedding + duration predictor
    assert preset("unit-mel").arch == "unit-mel"
    with pytest.raises(VocoderError, match="multiply to 320"):
        check_config(VocoderConfig(generator=preset("paper").generator.__class__(upsample_rates=[5, 4, 4, 2])))
    with pytest.raises(VocoderError, match="unknown vocoder preset"):
        preset("huge")


# ------------------------------------------------------------------------- networks
def test_generator_output_length_is_frames_times_hop() -> None:
    cfg = tiny_config()
    model = build_model(cfg)
    assert isinstance(model, CodeHiFiGAN)
    frames = torch.randint(0, cfg.num_units, (2, 7))
    with torch.no_grad():
        wav = model(frames, torch.ones(2, 7, dtype=torch.bool))
    assert wav.shape == (2, 7 * FRAME_HOP)
    assert float(wav.abs().max()) <= 1.0  # tanh


def test_expand_units_batched() -> None:
    units = torch.tensor([[3, 5, 7], [1, 2, 0]])
    durs = torch.tensor([[1, 2, 3], [2, 1, 9]])
    mask = sequence_mask(torch.tensor([3, 2]))
    frames, fmask = expand_units(units, durs, mask)
    assert frames[0].tolist() == [3, 5, 5, 7, 7, 7]
    assert frames[1, :3].tolist() == [1, 1, 2]
    assert fmask.sum(1).tolist() == [6, 3]  # the padded unit's duration (9) is ignored


def test_duration_predictor_ignores_padding() -> None:
    torch.manual_seed(0)
    dp = DurationPredictor(8, 16, 3, dropout=0.0).eval()
    x = torch.randn(2, 9, 8)
    mask = sequence_mask(torch.tensor([9, 4]))
    batched = dp(x, mask)
    single = dp(x[1:, :4], sequence_mask(torch.tensor([4])))
    torch.testing.assert_close(batched[1, :4], single[0], atol=1e-5, rtol=1e-5)
    assert batched[1, 4:].abs().sum() == 0


def test_discriminators_and_losses() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 2000)
    for disc in (MultiPeriodDiscriminator([2, 3, 5, 7, 11], 0.0625), MultiScaleDiscriminator(3, 0.0625)):
        scores, fmaps = disc(x)
        assert len(scores) == len(fmaps) == len(disc.discriminators)
        assert all(s.shape[0] == 2 for s in scores)
    ones, zeros = [torch.ones(2, 5)], [torch.zeros(2, 5)]
    assert float(discriminator_loss(ones, zeros)) == 0.0
    assert float(discriminator_loss(zeros, ones)) == 2.0
    assert float(generator_adversarial_loss(ones)) == 0.0
    fm = [[torch.ones(2, 3), torch.zeros(2, 4)]]
    assert float(feature_matching_loss(fm, fm)) == 0.0
    assert float(feature_matching_loss(fm, [[torch.zeros(2, 3), torch.zeros(2, 4)]])) == 2.0
    d = torch.tensor([[1, 3, 7], [2, 0, 0]])
    mask = sequence_mask(torch.tensor([3, 1]))
    assert float(duration_loss(torch.log1p(d.float()), d, mask)) == 0.0
    off = torch.log1p(d.float()) + 1.0
    off[1, 1:] = 100.0  # padded positions must not count
    assert float(duration_loss(off, d, mask)) == pytest.approx(1.0)


# ------------------------------------------------------------------------- synthesis
@pytest.mark.parametrize("arch", ["hifigan", "unit-mel"])
def test_synthesize_batched_equals_one_by_one(arch: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(arch)
    voc = UnitVocoder(build_model(cfg), cfg)
    units, durs = _units(5)
    units.insert(2, np.zeros(0, dtype=np.int64))
    durs.insert(2, np.zeros(0, dtype=np.int64))
    batched = voc.synthesize(units, durs)
    single = [voc.synthesize([u], [d])[0] for u, d in zip(units, durs, strict=True)]
    for b, s, d in zip(batched, single, durs, strict=True):
        assert b.dtype == np.float32 and b.shape == (int(d.sum()) * FRAME_HOP,)
        if arch == "hifigan":
            # identical away from the end, where the padded batch's receptive field differs
            edge = 3 * FRAME_HOP
            np.testing.assert_allclose(b[:-edge], s[:-edge], atol=1e-5)
        else:
            assert np.isfinite(b).all()
    assert batched[2].size == 0
    # predicted durations: one per unit, >= 1, and they set the output length
    pred = voc.predict_durations(units)
    assert all(len(p) == len(u) and (p >= 1).all() for p, u in zip(pred, units, strict=True) if len(u))
    out = voc.synthesize(units)
    assert [len(w) for w in out] == [int(p.sum()) * FRAME_HOP for p in pred]
    # tiny batches give the same result as one big batch
    small = voc.synthesize(units, durs, max_frames_per_batch=1)
    for a, b in zip(small, single, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_synthesize_rejects_bad_input() -> None:
    cfg = tiny_config()
    voc = UnitVocoder(build_model(cfg), cfg)
    with pytest.raises(VocoderError, match=r"outside \[0, 20\)"):
        voc.synthesize([np.array([1, 25])])
    with pytest.raises(VocoderError, match="durations"):
        voc.synthesize([np.array([1, 2])], [np.array([1])])


# ------------------------------------------------------------------------- save / load
def test_save_load_roundtrip_and_fingerprint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg)
    assert isinstance(model, CodeHiFiGAN)
    apply_weight_norm(model.generator)  # the training form; the export folds it
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    units, durs = _units(3)
    ref = UnitVocoder(model, cfg).synthesize(units, durs)
    save_vocoder(tmp_path / "voc", model, cfg, speech_tokenizer={"fingerprint": "a" * 64, "name": "km20"})
    info = json.loads((tmp_path / "voc" / "vocoder.json").read_text())
    assert info["arch"] == "hifigan" and info["num_units"] == 20 and info["sample_rate"] == 16000
    assert not any("parametrizations" in k for k in __import__("safetensors.torch").torch.load_file(str(tmp_path / "voc" / "model.safetensors")))
    voc = load_vocoder(tmp_path / "voc", expected_fingerprint="a" * 64)
    assert voc.sample_rate == 16000
    for a, b in zip(voc.synthesize(units, durs), ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(VocoderError, match="units from one k-means"):
        load_vocoder(tmp_path / "voc", expected_fingerprint="b" * 64)
    with pytest.raises(VocoderError, match="not a vocoder directory"):
        load_vocoder(tmp_path)
    with pytest.raises(VocoderError, match="not found"):
        load_vocoder(tmp_path / "nope")


# ------------------------------------------------------------------------- training
def test_training_resume_is_exact(corpus: dict, tmp_path: Path) -> None:
    from tmt.config import merge
    from tmt.vocoder import CHECKPOINT, train_vocoder

    cfg = merge(tiny_config(), {"train": {"max_steps": 4, "sample_every": 100, "save_every": 2}})
    a = train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path / "a", progress=False)
    assert a["step"] == 4 and np.isfinite(a["valid_mel_l1"])
    half = merge(cfg, {"train": {"max_steps": 2}})
    train_vocoder(half, corpus["store"], corpus["manifest"], tmp_path / "b", progress=False)
    with pytest.raises(VocoderError, match="--resume"):
        train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path / "b", progress=False)
    b = train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path / "b", resume=True, progress=False)
    assert b["step"] == 4
    sa = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)["model"]
    sb = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k])
    # the output directory is a vocoder directory, tied to the store's tokenizer
    voc = load_vocoder(tmp_path / "b", expected_fingerprint="f" * 64)
    assert voc.fingerprint == "f" * 64
    bad = merge(cfg, {"embed_dim": 8})
    with pytest.raises(VocoderError, match="'embed_dim' config differs"):
        train_vocoder(bad, corpus["store"], corpus["manifest"], tmp_path / "b", resume=True, progress=False)


def test_time_budget_spans_resumed_runs(corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tmt.core.budget as budget
    from tmt.config import merge
    from tmt.vocoder import CHECKPOINT, train_vocoder

    now = [0.0]

    def tick() -> float:  # every clock reading: 10 seconds pass
        now[0] += 10.0
        return now[0]

    monkeypatch.setattr(budget.time, "monotonic", tick)
    cfg = merge(tiny_config(), {"train": {"max_steps": 100, "max_minutes": 0.5, "sample_every": 1000, "save_every": 1000}})
    first = train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path, progress=False)
    assert 1 <= first["step"] < 100
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["elapsed"] >= 30.0
    # the same budget again: already spent, no further step; a larger one trains only the difference
    assert train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path, resume=True, progress=False)["step"] == first["step"]
    longer = merge(cfg, {"train": {"max_minutes": 1.0}})
    more = train_vocoder(longer, corpus["store"], corpus["manifest"], tmp_path, resume=True, progress=False)["step"]
    fresh = train_vocoder(longer, corpus["store"], corpus["manifest"], tmp_path / "fresh", progress=False)["step"]
    assert first["step"] < more and more - first["step"] < fresh


def test_max_minutes_has_the_common_meaning(caplog: pytest.LogCaptureFixture) -> None:
    from tmt.config import merge

    assert tiny_config().train.max_minutes is None
    with caplog.at_level("WARNING", logger="tmt.core.budget"):
        assert merge(tiny_config(), {"train": {"max_minutes": 0}}).train.max_minutes is None
    assert "deprecated" in caplog.text
    with pytest.raises(VocoderError, match=r"train\.max_minutes must be > 0"):
        merge(tiny_config(), {"train": {"max_minutes": -2}})
    corrupt = Path(__file__)  # not a checkpoint: one VocoderError naming the file
    from tmt.vocoder.train import VocoderTrainer

    trainer = VocoderTrainer(tiny_config(), [], [], "/nonexistent/never")
    with pytest.raises(VocoderError, match=r"cannot resume: cannot load checkpoint .*test_vocoder\.py"):
        trainer.load(corrupt)


def test_unit_mel_learns_synthetic_tones(corpus: dict, tmp_path: Path) -> None:
    from tmt.config import merge
    from tmt.vocoder import train_vocoder

    cfg = merge(
        tiny_config("unit-mel"),
        {"unit_mel": {"hidden_dim": 64}, "train": {"max_steps": 150, "batch_size": 8, "segment_frames": 32,
                                                   "lr": 3e-3, "sample_every": 150, "save_every": 150}},
    )
    res = train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path / "um", progress=False)
    log = [json.loads(x) for x in (tmp_path / "um" / "train_log.jsonl").read_text().splitlines()]
    mels = [r["mel"] for r in log if "mel" in r]
    assert mels[-1] < 0.5 * mels[0]
    assert res["valid_mel_l1"] < 2.0
    samples = sorted((tmp_path / "um" / "samples").rglob("*"))
    assert any(p.suffix == ".wav" for p in samples) and any(p.suffix == ".png" for p in samples)
    assert (tmp_path / "um" / "samples" / "step_0000150" / "utt010.png").read_bytes()[:4] == b"\x89PNG"


def test_durations_from_log_keeps_the_total_length() -> None:
    # 1.3 frames each: per-unit rounding would give 1 + 1 + ... (23% short)
    cont = torch.full((2, 10), 1.3)
    log_dur = torch.log1p(cont)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    d = durations_from_log(log_dur, 1.0, mask)
    assert d[0].sum().item() == 13
    assert d[1, :6].sum().item() == round(1.3 * 6)
    assert (d >= 1).all() and set(d[0].tolist()) <= {1, 2}
    # the scale stretches the total; predictions below one frame still give one
    assert durations_from_log(log_dur[:1], 2.0)[0].sum().item() == 26
    assert durations_from_log(torch.full((1, 4), -3.0)).tolist() == [[1, 1, 1, 1]]
    # whole-frame predictions come back unchanged, never 0 at half-way sums
    whole = torch.tensor([[1.0, 2.0, 3.0, 1.0, 0.5, 2.5]])
    out = durations_from_log(torch.log1p(whole))[0].tolist()
    assert out[:4] == [1, 2, 3, 1] and min(out) >= 1 and sum(out) in (10, 11)


# ------------------------------------------------------------------------- presets and inputs
def test_presets_derive_from_paper_and_resolve_like_the_cli(tmp_path: Path) -> None:
    from tmt.vocoder import resolve_config

    paper, demo, unit_mel = preset("paper"), preset("demo"), preset("unit-mel")
    # each preset changes only what differs from the paper config; fresh copies every call
    assert demo.generator.upsample_rates == paper.generator.upsample_rates and demo.generator.upsample_initial_channel == 128
    assert unit_mel.arch == "unit-mel" and unit_mel.unit_mel == paper.unit_mel and unit_mel.loss.mel_weight == 1.0
    demo.train.lr = 9.0
    assert preset("demo").train.lr == 1e-3
    for name in PRESETS:
        check_config(preset(name))
    with pytest.raises(VocoderError, match="unknown vocoder preset 'nope'"):
        preset("nope")
    # a YAML file names its base preset; --arch and --set apply on top, in that order
    yml = tmp_path / "v.yaml"
    yml.write_text("preset: unit-mel\nembed_dim: 64\ntrain:\n  max_steps: 7\n")
    cfg = resolve_config(str(yml), None, ["train.max_steps=9"])
    assert cfg.arch == "unit-mel" and cfg.embed_dim == 64 and cfg.train.max_steps == 9 and cfg.train.lr == 1e-3
    assert resolve_config(None, "unit-mel").train.max_minutes == 10.0
    assert resolve_config(None).train.max_minutes == 25.0


def test_unit_inputs_from_text_and_store(corpus: dict, tmp_path: Path) -> None:
    from tmt.vocoder import read_store_units, read_unit_lines, speech_tokenizer_record

    txt = tmp_path / "u.txt"
    txt.write_text("a\t1 2 3\n\n4 5\n")
    rows = read_unit_lines(str(txt))
    assert [r[0] for r in rows] == ["a", "000003"] and rows[1][1].tolist() == [4, 5]
    txt.write_text("1 x 3\n")
    with pytest.raises(VocoderError, match=r"u.txt:1: expected space-separated unit ids"):
        read_unit_lines(str(txt))
    ids, units, durs, fp = read_store_units(corpus["store"], limit=2, with_durations=True)
    assert ids == ["utt000", "utt001"] and fp == "f" * 64 and durs is not None
    assert units[0].tolist() == corpus["tokens"][0][0].tolist() and durs[0].tolist() == corpus["tokens"][0][1].tolist()
    assert read_store_units(corpus["store"], limit=1)[2] is None
    assert speech_tokenizer_record(None, "ab" * 32) == {"fingerprint": "ab" * 32}
    assert speech_tokenizer_record(None) == {}


# ------------------------------------------------------------------------- voices
@pytest.fixture(scope="module")
def voiced_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # 13 rows: "low" speaks rows 0, 2, ..., 12 (7 rows), "high" the other 6
    return make_unit_corpus(tmp_path_factory.mktemp("voiced"), num_rows=13, num_units=20, seed=1, voices=["low", "high"])


@pytest.mark.parametrize("arch", ["unit-mel", "unit-world"])
def test_voice_conditioned_vocoder_trains_and_speaks_each_voice(voiced_corpus: dict, arch: str, tmp_path: Path) -> None:
    from tmt.config import merge
    from tmt.vocoder import train_vocoder

    cfg = merge(tiny_config(arch), {"train": {"max_steps": 3, "sample_every": 100, "save_every": 100, "valid_rows": 2}})
    kw = {"feature_cache": tmp_path / "wf"} if arch == "unit-world" else {}
    train_vocoder(cfg, voiced_corpus["store"], voiced_corpus["manifest"], tmp_path / "v", progress=False, voices=True, **kw)
    voc = load_vocoder(tmp_path / "v")
    # the names sorted, the most frequent training voice the default
    assert voc.voices == ["high", "low"] and voc.cfg.default_voice == "low"
    assert isinstance(voc.model.voice_embed, torch.nn.Embedding) and voc.model.voice_embed.num_embeddings == 2
    units, durs = _units(4, seed=3)
    if arch == "unit-world":  # each voice keeps its own pitch: "high" (tones 1.5x higher) above "low"
        vp = voc.model.voice_pitch
        assert vp is not None and float(vp[0, 0]) > float(vp[1, 0]) + 0.1
        voc.pitch_range = 0.0  # monotone: every voiced frame at its voice's mean pitch
        for v, k in (("low", 1), ("high", 0)):
            f = voc.world_features(units[:1], durs[:1], voice=v)[0]
            np.testing.assert_allclose(f[f[:, 1] > 0.5, 0], float(vp[k, 0]), atol=1e-5)
        voc.pitch_range = None
    low = voc.synthesize(units, durs, voice="low")
    high = voc.synthesize(units, durs, voice="high")
    assert any(not np.allclose(a, b) for a, b in zip(low, high, strict=True))
    for a, b in zip(voc.synthesize(units, durs), low, strict=True):  # no voice = the default voice
        np.testing.assert_allclose(a, b, atol=1e-6)
    mixed = voc.synthesize(units, durs, voice=["low", "high", None, "high"])
    for got, want in zip(mixed, [low[0], high[1], low[2], high[3]], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert voc.predict_durations(units, voice="high")[0].shape == units[0].shape
    with pytest.raises(VocoderError, match="unknown voice 'robot'; this vocoder knows: high, low"):
        voc.synthesize(units, durs, voice="robot")
    with pytest.raises(VocoderError, match="got 1 voices for 4"):
        voc.synthesize(units, durs, voice=["low"])
    # resuming without --voices is a different network
    cfg6 = merge(cfg, {"train": {"max_steps": 6}})
    with pytest.raises(VocoderError, match="'voices' config differs"):
        train_vocoder(cfg6, voiced_corpus["store"], voiced_corpus["manifest"], tmp_path / "v", resume=True, progress=False, **kw)


def test_voice_conditioning_needs_voiced_rows_and_a_regressor(corpus: dict, tmp_path: Path) -> None:
    from tmt.config import merge
    from tmt.vocoder import train_vocoder

    cfg = merge(tiny_config("unit-mel"), {"train": {"max_steps": 1}})
    with pytest.raises(VocoderError, match=r"--voices: .*no voices found"):
        train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path / "a", progress=False, voices=True)
    listed = merge(cfg, {"voices": ["low", "high"]})
    with pytest.raises(VocoderError, match=r"row 'utt000' has voice None, not one of the vocoder's voices \(low, high\)"):
        train_vocoder(listed, corpus["store"], corpus["manifest"], tmp_path / "b", progress=False)
    with pytest.raises(VocoderError, match="not hifigan"):
        check_config(merge(tiny_config("hifigan"), {"voices": ["a"]}))
    with pytest.raises(VocoderError, match="default_voice 'c' is not among voices"):
        check_config(merge(tiny_config("unit-mel"), {"voices": ["a", "b"], "default_voice": "c"}))
    # a vocoder without voices speaks every voice in its one voice
    plain = tiny_config("unit-mel")
    voc = UnitVocoder(build_model(plain), plain)
    units, durs = _units(2)
    for a, b in zip(voc.synthesize(units, durs, voice="anyone"), voc.synthesize(units, durs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
