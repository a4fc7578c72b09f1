"""Exemplar envelopes for unit-world: context keys, the table, back-off at synthesis, training and loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tmt.config import merge
from tmt.vocoder import load_vocoder, tiny_config, train_vocoder
from tmt.vocoder.config import VocoderError, preset, with_synthesis_settings
from tmt.vocoder.data import Utterance
from tmt.vocoder.exemplars import (
    LEVELS,
    ExemplarTable,
    build_exemplars,
    context_keys,
    exemplar_frames,
    resample_frames,
)
from tmt.vocoder.testing import make_unit_corpus
from tmt.vocoder.world import envelope_decoder, scale_envelope_contrast, smooth_tracks
from tmt.vocoder.world_net import UnitWorld

pytest.importorskip("pyworld")
torch.set_num_threads(1)
PER = 2  # WORLD frames per unit frame in these constructed cases


def _utt(uid: str, units: list[int], durs: list[int], voice_id: int = 0) -> Utterance:
    u = Utterance(uid, np.asarray(units), np.asarray(durs), Path(f"{uid}.wav"), None, None)
    u.voice_id = voice_id
    return u


def _feats(durs: list[int], values: list[float], dim: int = 3) -> np.ndarray:
    """Raw feature rows (2 pitch columns, then `dim` envelope columns), unit k's frames all `values[k]`."""
    rows = [np.full((d * PER, 2 + dim), v, dtype=np.float32) for d, v in zip(durs, values, strict=True)]
    return np.concatenate(rows)


def _build(utts: list[Utterance], feats: dict[str, np.ndarray], **kw: int) -> ExemplarTable:
    args = {"per_frame": PER, "num_units": 10, "num_voices": 2, "points": 4, "segments": 16, "max_keys": 1000} | kw
    return build_exemplars(utts, feats, columns=slice(2, None), **args)


def test_context_keys_separate_levels_voices_and_neighbours() -> None:
    k = context_keys(np.array([1, 2, 3]), 0, 10, 2)
    assert k.shape == (3, LEVELS) and len(np.unique(k)) == k.size  # no two levels or units share a key
    other_voice = context_keys(np.array([1, 2, 3]), 1, 10, 2)
    assert (other_voice[:, :4] != k[:, :4]).all() and (other_voice[:, 4] == k[:, 4]).all()
    # the same unit between other neighbours shares only the context-free levels
    k2 = context_keys(np.array([5, 2, 6]), 0, 10, 2)
    assert k2[1, 0] != k[1, 0] and k2[1, 1] != k[1, 1] and k2[1, 2] != k[1, 2] and k2[1, 3] == k[1, 3]


def test_resample_keeps_ends_and_interpolates() -> None:
    f = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    np.testing.assert_allclose(resample_frames(f, 5)[:, 0], [0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(resample_frames(f[:1], 3)[:, 0], [0.0, 0.0, 0.0])


def test_table_averages_contexts_and_backs_off() -> None:
    # unit 3 heard twice after 1 (values 4 and 6) and once after 2 (value 10), all in voice 0
    utts = [_utt("a", [1, 3], [1, 2]), _utt("b", [1, 3], [1, 1]), _utt("c", [2, 3], [2, 1])]
    feats = {"a": _feats([1, 2], [1.0, 4.0]), "b": _feats([1, 1], [1.0, 6.0]), "c": _feats([2, 1], [2.0, 10.0])}
    table = _build(utts, feats)
    fallback = np.full((2 * PER, 3), -7.0, dtype=np.float32)
    # (1, 3) at the end of an utterance: both occurrences averaged
    got = exemplar_frames(table, np.array([1, 3]), np.array([1, 1]), 0, fallback, per_frame=PER, num_units=10,
                          num_voices=2)
    np.testing.assert_allclose(got[:PER], 1.0)
    np.testing.assert_allclose(got[PER:], 5.0, atol=1e-2)
    # unit 3 after an unseen neighbour: the voice+unit level, all three occurrences
    got = exemplar_frames(table, np.array([7, 3]), np.array([1, 1]), 0, fallback, per_frame=PER, num_units=10,
                          num_voices=2)
    np.testing.assert_allclose(got[:PER], -7.0)  # unit 7 was never heard: the network's rows stay
    np.testing.assert_allclose(got[PER:], 20.0 / 3.0, atol=1e-2)
    # another voice: only the context-free unit level is shared
    got = exemplar_frames(table, np.array([3]), np.array([3]), 1, fallback[:1].repeat(3 * PER, 0), per_frame=PER,
                          num_units=10, num_voices=2)
    assert got.shape == (3 * PER, 3)
    np.testing.assert_allclose(got, 20.0 / 3.0, atol=1e-2)
    # segments=1 keeps the first occurrence per context only
    first = _build(utts, feats, segments=1)
    got = exemplar_frames(first, np.array([1, 3]), np.array([1, 1]), 0, fallback, per_frame=PER, num_units=10,
                          num_voices=2)
    np.testing.assert_allclose(got[PER:], 4.0)


def test_max_keys_drops_rare_contexts_first_and_keeps_every_unit() -> None:
    utts = [_utt("a", [1, 3], [1, 1]), _utt("b", [1, 3], [1, 1]), _utt("c", [2, 3], [1, 1])]
    feats = {k: _feats([1, 1], [1.0, 2.0]) for k in "abc"}
    full = _build(utts, feats)
    small = _build(utts, feats, max_keys=8)
    assert len(small.keys) == 8 < len(full.keys) and np.all(np.diff(small.keys) > 0)
    kept = set(small.keys.tolist())
    for units in ([1, 3], [2, 3]):
        keys = context_keys(np.array(units), 0, 10, 2)
        assert set(keys[:, 3:].ravel().tolist()) <= kept  # voice and unit levels always kept
    assert context_keys(np.array([1, 3]), 0, 10, 2)[1, 0] in kept  # the context heard twice ...
    assert context_keys(np.array([2, 3]), 0, 10, 2)[1, 0] not in kept  # ... outlives the one heard once


def test_trained_vocoder_carries_its_table_and_speaks_from_it(tmp_path: Path) -> None:
    corpus = make_unit_corpus(tmp_path / "c", num_rows=8, num_units=20, seed=2)
    cfg = merge(tiny_config("unit-world", 20), {"train": {"max_steps": 2, "sample_every": 100, "save_every": 2},
                                                "world": {"envelope_source": "exemplars", "exemplar_points": 4}})
    train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path / "v", progress=False,
                  feature_cache=tmp_path / "f")
    voc = load_vocoder(tmp_path / "v", "cpu")
    model = voc.model
    assert isinstance(model, UnitWorld) and model.exemplar_keys is not None and len(model.exemplar_keys) > 0
    table = model.exemplar_table()
    assert table is not None and table.templates.shape[1:] == (4, cfg.world.envelope_dim + 1)
    units, durs = [np.array([1, 5, 9])], [np.array([2, 1, 3])]
    feats = voc.world_features(units, durs)[0]
    fallback = np.zeros_like(feats[:, 2:])
    want = exemplar_frames(table, units[0], durs[0], 0, fallback, per_frame=model.per_frame, num_units=20,
                           num_voices=0)
    np.testing.assert_allclose(feats[:, 2:], want, atol=1e-5)
    # smoothing (a synthesis setting) runs over envelope and aperiodicity only, after the templates
    smooth = load_vocoder(tmp_path / "v", "cpu", settings=["world.envelope_smoothing_ms=15"])
    got = smooth.world_features(units, durs)[0]
    np.testing.assert_allclose(got[:, 2:], smooth_tracks(want, 15, cfg.world.frame_period), atol=1e-5)
    np.testing.assert_array_equal(got[:, :2], feats[:, :2])
    assert not np.allclose(got[:, 2:], feats[:, 2:])
    # the envelope contrast (a synthesis setting) scales the coded envelope only: pitch and aperiodicity stay
    env = np.r_[2 : 2 + cfg.world.envelope_dim]
    flat = load_vocoder(tmp_path / "v", "cpu", settings=["world.envelope_contrast=0.7"]).world_features(units, durs)[0]
    want_env = scale_envelope_contrast(feats[:, env], 0.7, cfg.world.synthesis_fft)
    np.testing.assert_allclose(flat[:, env], want_env, atol=1e-4)
    np.testing.assert_array_equal(np.delete(flat, env, axis=1), np.delete(feats, env, axis=1))
    # the network-only vocoder of the same weights speaks with other envelopes
    plain = load_vocoder(tmp_path / "v", "cpu")
    plain.model.exemplar_keys = torch.zeros(0, dtype=torch.long)
    assert not np.allclose(plain.world_features(units, durs)[0][:, 2:], feats[:, 2:])
    with pytest.raises(ValueError, match="exemplars"):
        UnitWorld(feature_dim=43, per_frame=4, num_units=5, embed_dim=8, duration_hidden=8, duration_kernel=3,
                  duration_dropout=0.0, hidden_dim=8, conv_layers=1, conv_kernel=3, transformer_layers=0, heads=1,
                  dropout=0.0).set_exemplars(table)


def test_templates_stretch_to_each_units_duration_as_resample_frames_does() -> None:
    rng = np.random.default_rng(0)
    units, durs = np.array([4, 1, 4, 9, 2]), np.array([1, 3, 5, 2, 1])
    keys = np.unique(context_keys(units, 0, 10, 2)[:, 3])  # the voice+unit level of every unit but 9
    keys = keys[keys != context_keys(np.array([9]), 0, 10, 2)[0, 3]]
    table = ExemplarTable(keys, rng.normal(size=(len(keys), 8, 3)).astype(np.float16))
    fallback = np.full((int(durs.sum()) * PER, 3), -7.0, dtype=np.float32)
    got = exemplar_frames(table, units, durs, 0, fallback, per_frame=PER, num_units=10, num_voices=2)
    start = 0
    for u, d in zip(units, durs, strict=True):
        key = context_keys(np.array([u]), 0, 10, 2)[0, 3]
        part = got[start * PER : (start + d) * PER]
        if key in keys:
            want = resample_frames(table.templates[np.searchsorted(keys, key)].astype(np.float32), d * PER)
            np.testing.assert_allclose(part, want, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_allclose(part, -7.0)  # never heard: the network's frames
        start += d


def test_smooth_tracks_ramps_steps_and_keeps_what_stays_put() -> None:
    step = np.concatenate([np.zeros((10, 2)), np.ones((10, 2))]).astype(np.float32)
    step[:, 1] = 3.0
    out = smooth_tracks(step, 35, 5)  # 7 frames
    assert out.dtype == np.float32 and out.shape == step.shape
    assert (np.diff(out[:, 0]) >= 0).all() and 0 < out[9, 0] < 0.5 < out[10, 0] < 1  # a ramp centred on the step
    np.testing.assert_array_equal(out[:6, 0], 0.0)  # untouched beyond half the window
    np.testing.assert_array_equal(out[14:, 0], 1.0)
    np.testing.assert_allclose(out[:, 1], 3.0)  # a constant track stays put, ends included
    ramp = np.arange(20, dtype=np.float32)[:, None]
    np.testing.assert_allclose(smooth_tracks(ramp, 35, 5)[4:-4], ramp[4:-4], atol=1e-5)  # symmetric window
    np.testing.assert_array_equal(smooth_tracks(step, 7, 5), step)  # one frame: off
    assert smooth_tracks(step, 40, 5).shape == step.shape  # an even count is made odd (9 frames)


def test_envelope_contrast_scales_formant_detail_and_keeps_each_frames_power() -> None:
    rng = np.random.default_rng(3)
    codes = rng.normal(scale=0.5, size=(6, 16)).astype(np.float32)
    codes[:, 0] -= 5.0
    decoder = envelope_decoder(16, 512)

    def log_power(c: np.ndarray) -> np.ndarray:
        return np.log(np.exp(c.astype(np.float64) @ decoder).sum(axis=1))

    assert scale_envelope_contrast(codes, 1.0, 512) is codes
    for contrast in (0.0, 0.5, 1.5):
        out = scale_envelope_contrast(codes, contrast, 512)
        assert out.dtype == np.float32 and out.shape == codes.shape
        np.testing.assert_allclose(out[:, 2:], codes[:, 2:] * contrast, rtol=1e-6)  # formant detail scaled
        np.testing.assert_array_equal(out[:, 1], codes[:, 1])  # the tilt kept
        np.testing.assert_allclose(log_power(out), log_power(codes), atol=1e-4)  # the level moved to keep power
        assert not np.allclose(out[:, 0], codes[:, 0])
    flat = scale_envelope_contrast(codes, 0.0, 512).astype(np.float64) @ decoder
    tilt = codes[:, :2].astype(np.float64) @ decoder[:2]
    np.testing.assert_allclose(np.ptp(flat - tilt, axis=1), 0.0, atol=1e-6)  # contrast 0: level and tilt only


def test_smoothing_and_contrast_are_checked_synthesis_settings() -> None:
    cfg = tiny_config("unit-world")
    assert with_synthesis_settings(cfg, ["world.envelope_smoothing_ms=35"]).world.envelope_smoothing_ms == 35
    assert with_synthesis_settings(cfg, ["world.envelope_contrast=0.8"]).world.envelope_contrast == 0.8
    for bad in ("world.envelope_smoothing_ms=-5", "world.envelope_contrast=-0.5"):
        with pytest.raises(VocoderError, match=r"world\.envelope_smoothing_ms .* must be >= 0"):
            with_synthesis_settings(cfg, [bad])
    assert preset("unit-world-exemplars").world.envelope_smoothing_ms == 35  # the recipes' vocoder smooths ...
    assert preset("unit-world-exemplars").world.envelope_contrast == 0.7  # ... and flattens its formants a little


def test_extra_store_rows_join_training_and_the_table_and_are_checked(tmp_path: Path) -> None:
    a = make_unit_corpus(tmp_path / "a", num_rows=6, num_units=20, seed=2)
    b = make_unit_corpus(tmp_path / "b", num_rows=6, num_units=20, seed=5, id_prefix="extra")
    cfg = merge(tiny_config("unit-world", 20), {"train": {"max_steps": 1, "sample_every": 100, "save_every": 1},
                                                "world": {"envelope_source": "exemplars", "exemplar_points": 4}})

    def keys(out: str, **extra: object) -> set[int]:
        train_vocoder(cfg, a["store"], a["manifest"], tmp_path / out, progress=False, feature_cache=tmp_path / "f",
                      **extra)  # type: ignore[arg-type]
        table = load_vocoder(tmp_path / out, "cpu").model.exemplar_table()
        assert table is not None
        return set(table.keys.tolist())

    plain = keys("plain")
    two = keys("two", extra_store=b["store"], extra_manifest=b["manifest"], extra_rows=2)
    every = keys("all", extra_store=b["store"], extra_manifest=b["manifest"])
    assert plain < two < every  # the extra rows' contexts join the table, the first `extra_rows` of them
    source = json.loads((tmp_path / "two" / "vocoder.json").read_text())["speech_tokenizer"]
    assert source["extra_store"] == str(b["store"]) and source["extra_rows"] == 2  # provenance of the extra rows
    assert "extra_store" not in json.loads((tmp_path / "plain" / "vocoder.json").read_text())["speech_tokenizer"]
    heard = set(context_keys(b["tokens"][0][0], 0, 20, 0).ravel().tolist())
    assert heard <= two and heard <= every and not heard <= plain
    clash = make_unit_corpus(tmp_path / "c", num_rows=3, num_units=20, seed=7)  # ids utt000.. as in `a`
    with pytest.raises(VocoderError, match="repeats 3 row id"):
        keys("clash", extra_store=clash["store"], extra_manifest=clash["manifest"])
    other = make_unit_corpus(tmp_path / "d", num_rows=3, num_units=20, seed=7, fingerprint="e" * 64, id_prefix="d")
    with pytest.raises(VocoderError, match="different speech tokenizer"):
        keys("other", extra_store=other["store"], extra_manifest=other["manifest"])
