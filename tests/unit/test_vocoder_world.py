"""The unit-world vocoder: WORLD analysis/synthesis, the feature cache, the network, training and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from tmt.cli import cli
from tmt.config import merge
from tmt.core.audio import FRAME_HOP, SAMPLE_RATE
from tmt.vocoder import (
    CHECKPOINT,
    UnitVocoder,
    VocoderError,
    build_model,
    load_vocoder,
    preset,
    resolve_config,
    save_vocoder,
    tiny_config,
    train_vocoder,
)
from tmt.vocoder.config import WorldConfig
from tmt.vocoder.testing import make_unit_corpus, random_units
from tmt.vocoder.world import (
    LF0,
    VUV,
    FeatureJob,
    WorldFeatureCache,
    analyse,
    feature_dim,
    features_to_wave,
)
from tmt.vocoder.world_net import (
    UnitWorld,
    envelope_weights,
    feature_stats,
    normalise_targets,
    unit_prior_table,
    world_loss,
)

pytest.importorskip("pyworld")
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def vowel(f0: float, frames: int, formants: tuple[float, ...] = (700.0, 1200.0)) -> np.ndarray:
    """A vowel-like harmonic tone: harmonics of `f0` shaped by formant bumps, `frames` x 20 ms."""
    t = np.arange(frames * FRAME_HOP) / SAMPLE_RATE
    phase = 2 * np.pi * f0 * t
    x = np.zeros_like(t)
    for k in range(1, int(7000 / f0)):
        x += sum(np.exp(-(((k * f0 - f) / 250.0) ** 2)) for f in formants) * np.sin(k * phase) / k**0.5
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def world_tiny(num_units: int = 20) -> object:
    return tiny_config("unit-world", num_units)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_unit_corpus(tmp_path_factory.mktemp("wunits"), num_rows=10, num_units=20, seed=1)


# ------------------------------------------------------------------------- analysis / synthesis
@pytest.mark.parametrize("frame_period", [5.0, 20.0])
def test_analysis_synthesis_round_trip_recovers_f0(frame_period: float) -> None:
    cfg = WorldConfig(frame_period=frame_period, envelope_dim=40)
    wav = vowel(140.0, 40)
    feats = analyse(wav, 40, cfg)
    assert feats.shape == (40 * round(20 / frame_period), feature_dim(cfg))
    assert feats[:, VUV].mean() > 0.9
    f0 = np.exp(np.median(feats[feats[:, VUV] > 0.5, LF0]))
    assert f0 == pytest.approx(140.0, rel=0.03)
    out = features_to_wave(feats, cfg)
    assert out.dtype == np.float32 and len(out) == 40 * FRAME_HOP and np.abs(out).max() > 0.01
    again = analyse(out, 40, cfg)
    assert again[:, VUV].mean() > 0.8  # the edges of a resynthesis may lose a frame or two of voicing
    assert np.exp(np.median(again[again[:, VUV] > 0.5, LF0])) == pytest.approx(140.0, rel=0.03)


def test_feature_cache_is_resumable_and_keyed(tmp_path: Path) -> None:
    cfg = WorldConfig(envelope_dim=16)
    jobs = []
    for i, f0 in enumerate((110.0, 180.0, 240.0)):
        p = tmp_path / f"v{i}.wav"
        sf.write(p, vowel(f0, 10 + i), SAMPLE_RATE)
        jobs.append(FeatureJob(f"v{i}", p, 10 + i))
    cache = WorldFeatureCache(tmp_path / "cache", cfg)
    first = cache.ensure(jobs[:2], shard_size=1, progress=False)  # "killed" after two utterances
    assert len(list(cache.dir.glob("shard-*.npz"))) == 2
    again = WorldFeatureCache(tmp_path / "cache", cfg)
    assert len(again) == 2
    feats = again.ensure(jobs, progress=False)  # analyses only the third
    assert len(list(cache.dir.glob("shard-*.npz"))) == 3
    np.testing.assert_array_equal(feats["v0"], first["v0"])
    assert feats["v2"].shape[0] == 12 * 4
    # another length (or wav) is a miss, another analysis config another directory
    assert again.get(FeatureJob("v0", jobs[0].wav_path, 11)) is None
    other = WorldFeatureCache(tmp_path / "cache", WorldConfig(envelope_dim=16, frame_period=10.0))
    assert other.dir != cache.dir and len(other) == 0


# ------------------------------------------------------------------------- network
def test_network_shapes_and_masking() -> None:
    cfg = world_tiny()
    model = build_model(cfg)
    assert isinstance(model, UnitWorld)
    model.eval()
    frames = torch.randint(0, cfg.num_units, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    with torch.no_grad():
        out = model(frames, mask)
        assert out.shape == (2, 6 * 4, feature_dim(cfg.world))
        # padding does not leak into the valid frames of the shorter row
        alone = model(frames[1:, :4], mask[1:, :4])
    torch.testing.assert_close(out[1, :16], alone[0], atol=1e-5, rtol=1e-4)
    target = torch.zeros_like(out)
    target[..., VUV] = 1.0
    noisy = out.clone()
    noisy[1, 16:] += 100.0  # garbage in the padded frames costs nothing
    l1, _ = world_loss(out, target, mask, 4, cfg.world.envelope_dim, cfg.loss)
    l2, s = world_loss(noisy, target, mask, 4, cfg.world.envelope_dim, cfg.loss)
    torch.testing.assert_close(l1, l2)
    assert set(s) == {"f0", "vuv", "env", "ap"}
    # log-F0 counts only on voiced frames
    target[..., VUV] = 0.0
    shifted = out.clone()
    shifted[..., LF0] += 5.0
    torch.testing.assert_close(world_loss(out, target, mask, 4, cfg.world.envelope_dim, cfg.loss)[1]["f0"],
                               world_loss(shifted, target, mask, 4, cfg.world.envelope_dim, cfg.loss)[1]["f0"])


def test_spectral_envelope_loss_counts_errors_in_the_codes_own_units() -> None:
    from tmt.vocoder.config import LossConfig

    env_dim, per = 3, 2
    std = torch.tensor([4.0, 1.0, 1.0, 0.5])  # three envelope dimensions, then one aperiodicity band
    target = torch.zeros(1, 2 * per, 2 + env_dim + 1)
    pred = target.clone()
    pred[..., 2] = 1.0  # one z-unit off in the widest dimension: 4 code units
    pred[..., 3] = 1.0  # one z-unit off in a narrow one: 1 code unit
    mask = torch.ones(1, 2, dtype=torch.bool)
    lc = LossConfig(envelope_loss="normalised")
    assert envelope_weights(std, env_dim, lc) is None
    _, s = world_loss(pred, target, mask, per, env_dim, lc)
    assert s["env"] == pytest.approx(2 / 3)  # both errors weigh alike
    lc = LossConfig(envelope_loss="spectral")
    w = envelope_weights(std, env_dim, lc)
    assert w is not None
    torch.testing.assert_close(w, torch.tensor([2.0, 0.5, 0.5]))  # spread / mean spread (the band is not an envelope dim)
    _, s = world_loss(pred, target, mask, per, env_dim, lc, w)
    assert s["env"] == pytest.approx((2.0 + 0.5) / 3)  # the wide dimension's error costs 4x the narrow one's


def test_unit_prior_table_by_hand() -> None:
    from tmt.vocoder.data import Utterance

    per, dim = 2, 4  # lf0, vuv, one envelope dim, one band
    # utterance a: unit 1 for one frame (voiced), unit 2 for two frames (unvoiced);
    # utterance b: unit 1 for one frame (unvoiced)
    a = Utterance(id="a", units=np.array([1, 2]), durations=np.array([1, 2]), wav_path=Path("a.wav"))
    b = Utterance(id="b", units=np.array([1]), durations=np.array([1]), wav_path=Path("b.wav"))
    ta = np.zeros((3 * per, dim), dtype=np.float32)
    ta[:per] = [0.8, 1.0, 2.0, -1.0]
    ta[per:] = [0.0, 0.0, -2.0, 1.0]
    tb = np.tile(np.array([[0.0, 0.0, 4.0, 3.0]], dtype=np.float32), (per, 1))
    table = unit_prior_table([a, b], {"a": ta, "b": tb}, num_units=4, per_frame=per)
    assert table.shape == (4, dim)
    np.testing.assert_allclose(table[1], [0.8, 0.0, 3.0, 1.0], atol=1e-6)  # voiced half the time: logit 0
    np.testing.assert_allclose(table[2], [0.0, np.log(0.02 / 0.98), -2.0, 1.0], atol=1e-6)  # never voiced
    np.testing.assert_array_equal(table[[0, 3]], 0.0)  # never seen


def test_unit_prior_is_added_to_the_output_and_travels_with_the_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = merge(world_tiny(), {"world": {"unit_prior": True}})
    model = build_model(cfg)
    assert isinstance(model, UnitWorld) and model.prior is not None
    model.eval()
    frames = torch.tensor([[3, 3, 7, 1]])
    mask = torch.ones_like(frames, dtype=torch.bool)
    with torch.no_grad():
        before = model(frames, mask)
        prior = np.random.default_rng(0).standard_normal(tuple(model.prior.shape)).astype(np.float32)
        model.set_prior(prior)
        after = model(frames, mask)
    per = model.per_frame
    want = torch.from_numpy(prior)[frames[0]].repeat_interleave(per, dim=0)
    torch.testing.assert_close(after[0] - before[0], want, atol=1e-5, rtol=1e-5)
    save_vocoder(tmp_path / "v", model, cfg)
    loaded = load_vocoder(tmp_path / "v", "cpu")
    torch.testing.assert_close(loaded.model.prior, model.prior)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unit_prior"):
        build_model(world_tiny()).set_prior(prior)  # type: ignore[union-attr]


def test_unknown_envelope_loss_is_refused() -> None:
    from tmt.vocoder.config import check_config

    check_config(resolve_config("unit-world", overrides=["loss.envelope_loss=normalised"]))
    with pytest.raises(VocoderError, match="envelope_loss"):
        check_config(resolve_config("unit-world", overrides=["loss.envelope_loss=cepstral"]))


def test_targets_normalise_pitch_per_utterance() -> None:
    cfg = WorldConfig(envelope_dim=16)
    low, high = analyse(vowel(100.0, 20), 20, cfg), analyse(vowel(200.0, 20), 20, cfg)
    stats = feature_stats([low, high])
    assert 100.0 < np.exp(stats["pitch"][0]) < 200.0
    tl, th = normalise_targets(low, stats), normalise_targets(high, stats)
    # two speakers an octave apart give the same (near-zero) normalised pitch
    assert abs(np.median(tl[tl[:, VUV] > 0, LF0])) < 0.5 and abs(np.median(th[th[:, VUV] > 0, LF0])) < 0.5


def _units(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = [random_units(rng, 20, int(rng.integers(3, 10))) for _ in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_batched_synthesis_equals_one_by_one_and_pitch_control() -> None:
    torch.manual_seed(0)
    cfg = world_tiny()
    voc = UnitVocoder(build_model(cfg), cfg)
    units, durs = _units(4)
    batched = voc.synthesize(units, durs)
    for u, d, w in zip(units, durs, batched, strict=True):
        (single,) = voc.synthesize([u], [d])
        assert len(w) == int(d.sum()) * FRAME_HOP
        # float noise of the padded network batch (~1e-6) moves a few WORLD pulses by a sample at most
        np.testing.assert_allclose(w, single, atol=5e-3)
    # a process pool gives the same waveforms
    voc.cfg = merge(cfg, {"world": {"workers": 2}})
    np.testing.assert_allclose(np.concatenate(voc.synthesize(units, durs)), np.concatenate(batched), atol=5e-3)
    voc.cfg = cfg
    voc.pitch_mean_hz, voc.pitch_range = 200.0, 0.0
    assert len(voc.synthesize(units[:1], durs[:1])[0]) == int(durs[0].sum()) * FRAME_HOP


def test_fingerprint_mismatch_is_refused(tmp_path: Path) -> None:
    cfg = world_tiny()
    save_vocoder(tmp_path / "v", build_model(cfg), cfg, speech_tokenizer={"fingerprint": "a" * 64, "name": "km"})
    voc = load_vocoder(tmp_path / "v", expected_fingerprint="a" * 64)
    assert voc.arch == "unit-world" and isinstance(voc.model, UnitWorld)
    with pytest.raises(VocoderError, match="trained on units of speech tokenizer aaaaaaaaaaaa"):
        load_vocoder(tmp_path / "v", expected_fingerprint="b" * 64)



def test_a_trained_vocoder_takes_synthesis_settings_only(tmp_path: Path) -> None:
    cfg = world_tiny()
    save_vocoder(tmp_path / "v", build_model(cfg), cfg)
    voc = load_vocoder(tmp_path / "v", settings=["world.synthesizer=pyworld", "world.workers=2"])
    assert (voc.cfg.world.synthesizer, voc.cfg.world.workers) == ("pyworld", 2)
    assert load_vocoder(tmp_path / "v").cfg.world.synthesizer == "batched"
    with pytest.raises(VocoderError, match="only takes synthesis settings"):
        load_vocoder(tmp_path / "v", settings=["world.hidden_dim=8"])
    with pytest.raises(VocoderError, match=r"noise_seed needs world\.synthesizer=batched"):
        load_vocoder(tmp_path / "v", settings=["world.synthesizer=pyworld", "world.noise_seed=1"])
    runner = CliRunner()
    res = runner.invoke(cli, ["vocoder", "synthesize", str(tmp_path / "v"), "--units", "-", "--out-dir",
                              str(tmp_path / "wavs"), "--set", "world.synthesizer=pyworld"], input="3 4 5 6\n")
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "wavs").glob("*.wav"))) == 1


# ------------------------------------------------------------------------- training
def test_training_resume_is_exact_and_reuses_the_analysis(corpus: dict, tmp_path: Path) -> None:
    cfg = merge(world_tiny(), {"train": {"max_steps": 4, "sample_every": 100, "save_every": 2}})
    cache = tmp_path / "features"
    a = train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path / "a", progress=False, feature_cache=cache)
    assert a["step"] == 4 and np.isfinite(a["valid_mel_l1"])
    shards = sorted(p.stat().st_mtime_ns for p in cache.rglob("shard-*.npz"))
    half = merge(cfg, {"train": {"max_steps": 2}})
    train_vocoder(half, corpus["store"], corpus["manifest"], tmp_path / "b", progress=False, feature_cache=cache)
    with pytest.raises(VocoderError, match="--resume"):
        train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path / "b", progress=False, feature_cache=cache)
    # a resumed run may change the synthesis-only pitch fields, not the network
    resumed = merge(cfg, {"world": {"pitch_range": 0.5}})
    b = train_vocoder(resumed, corpus["store"], corpus["manifest"], tmp_path / "b", resume=True, progress=False,
                      feature_cache=cache)
    assert b["step"] == 4
    assert sorted(p.stat().st_mtime_ns for p in cache.rglob("shard-*.npz")) == shards  # no re-analysis
    sa = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)["model"]
    sb = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k])
    voc = load_vocoder(tmp_path / "b", expected_fingerprint="f" * 64)
    assert float(voc.model.pitch[0]) == pytest.approx(float(sa["pitch"][0]))
    with pytest.raises(VocoderError, match="'world' config differs"):
        train_vocoder(merge(cfg, {"world": {"envelope_dim": 20}}), corpus["store"], corpus["manifest"],
                      tmp_path / "b", resume=True, progress=False, feature_cache=cache)


def test_preset_and_resolution() -> None:
    cfg = preset("unit-world")
    assert cfg.arch == "unit-world" and cfg.world.envelope_dim == 40 and cfg.train.batch_size == preset("unit-mel").train.batch_size
    assert resolve_config(None, "unit-world").arch == "unit-world"
    with pytest.raises(VocoderError, match="frame_period"):
        build_model(merge(cfg, {"world": {"frame_period": 7.0}}))


def test_cli_train_synthesize_eval(corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tmt.evaluation.vocoder as tv

    out = tmp_path / "voc"
    res = CliRunner().invoke(cli, [
        "vocoder", "train", "--store", str(corpus["store"]), "--manifest", str(corpus["manifest"]),
        "--config", "tiny", "--arch", "unit-world", "--set", "train.max_steps=3", "--set", "train.sample_every=100",
        "--out", str(out),
    ])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["step"] == 3
    assert json.loads((out / "vocoder.json").read_text())["arch"] == "unit-world"
    assert list((out / "world-features").rglob("shard-*.npz"))
    res = CliRunner().invoke(cli, ["vocoder", "synthesize", str(out), "--store", str(corpus["store"]), "--limit", "2",
                                   "--pitch-mean", "180", "--pitch-range", "0.5", "--out-dir", str(tmp_path / "w")])
    assert res.exit_code == 0, res.output
    wavs = sorted((tmp_path / "w").glob("*.wav"))
    assert [p.stem for p in wavs] == ["utt000", "utt001"]
    data, sr = sf.read(wavs[0])
    assert sr == SAMPLE_RATE and len(data) % FRAME_HOP == 0 and len(data) > 0
    monkeypatch.setattr(tv, "transcribe_with_judge", lambda wavs: (None, "judge not installed (test)"))
    res = CliRunner().invoke(cli, ["vocoder", "eval", str(out), "--store", str(corpus["store"]),
                                   "--manifest", str(corpus["manifest"]), "--limit", "3", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["arch"] == "unit-world" and r["rows"] == 3 and np.isfinite(r["mel_l1"])

    # several noise realisations: each judged, the originals once, the means reported
    calls: list[int] = []

    def judge(wavs: list[np.ndarray]) -> tuple[list[str], dict[str, str]]:
        calls.append(len(wavs))
        return [f"utterance {len(calls) % 2}"] * len(wavs), {"judge": "fake"}

    monkeypatch.setattr(tv, "transcribe_with_judge", judge)
    r = tv.evaluate_vocoder(out, corpus["store"], corpus["manifest"], limit=3, realisations=3, out_dir=tmp_path / "e")
    assert calls == [3, 3, 3, 3]  # three realisations + the originals once
    runs = r["realisations"]
    assert [x["noise"] for x in runs] == ["world", "seed-1", "seed-2"]
    assert r["wer"] == pytest.approx(np.mean([x["wer"] for x in runs]), abs=0.01)
    assert r["wer_median"] == pytest.approx(np.mean([x["wer_median"] for x in runs]), abs=0.01)
    assert all(x["over_100"] == 0 for x in runs) and "wer_median_original_audio" in r
    assert r["mel_l1"] == pytest.approx(np.mean([x["mel_l1"] for x in runs]), abs=1e-4)
    assert len({x["mel_l1"] for x in runs}) == 3  # the noise differs, so the waveforms do
    for name in ("noise-world", "noise-seed-1", "noise-seed-2"):
        assert len(list((tmp_path / "e" / name).glob("*.wav"))) == 3
    with pytest.raises(VocoderError, match="not both"):
        tv.evaluate_vocoder(out, corpus["store"], corpus["manifest"], limit=1, realisations=2,
                            settings=["world.noise_seed=4"])
    with pytest.raises(VocoderError, match=r"noise_seed needs world\.synthesizer=batched"):
        tv.evaluate_vocoder(out, corpus["store"], corpus["manifest"], limit=1, realisations=2,
                            settings=["world.synthesizer=pyworld"])


def test_log_mel_envelope_loss_is_the_decoded_log_envelope_error() -> None:
    import pyworld

    from tmt.core.audio import SAMPLE_RATE
    from tmt.vocoder.config import LossConfig, WorldConfig
    from tmt.vocoder.world import log_envelope_basis

    env_dim, points, fft = 8, 12, 256
    basis = log_envelope_basis(env_dim, points, fft)
    assert basis.shape == (env_dim, points)
    codes = np.random.default_rng(0).standard_normal((3, env_dim))
    decoded = np.log(pyworld.decode_spectral_envelope(np.ascontiguousarray(codes), SAMPLE_RATE, fft))
    # the basis reads the decoded log envelope at mel-spaced bins from 0 Hz to Nyquist, low bins densest
    read = codes @ basis
    hits = [np.flatnonzero(np.abs(decoded - read[:, [k]]).max(axis=0) < 1e-4) for k in range(points)]
    assert all(len(h) for h in hits)  # every point is the decoded envelope at some bin, for all three codes
    cols = [int(h[0]) for h in hits]
    assert cols[0] == 0 and fft // 2 in hits[-1] and cols == sorted(cols)
    assert cols[1] - cols[0] < int(hits[-1][-1]) - cols[-2]  # mel spacing: dense at the bottom
    # the loss: mean |decoded log-envelope difference| over the points, errors given in z-units
    std = torch.tensor([2.0] * env_dim + [1.0])
    lc = LossConfig(envelope_loss="log-mel", envelope_points=points)
    w = envelope_weights(std, env_dim, lc, WorldConfig(synthesis_fft=fft, envelope_dim=env_dim))
    assert w is not None and w.shape == (env_dim, points)
    per = 2
    target = torch.zeros(1, 2 * per, 2 + env_dim + 1)
    pred = target.clone()
    pred[..., 2 : 2 + env_dim] = torch.from_numpy(codes[0]).float() / 2.0  # z-units: code / std
    _, s = world_loss(pred, target, torch.ones(1, 2, dtype=torch.bool), per, env_dim, lc, w)
    assert s["env"] == pytest.approx(float(np.abs(codes[0] @ basis).mean()), rel=1e-4)
