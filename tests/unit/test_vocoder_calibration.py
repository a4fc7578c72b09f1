"""Duration calibration (`duration.gain`) and the speaking rate (`duration.scale`) of a unit vocoder."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tmt.config import merge
from tmt.vocoder import (
    CHECKPOINT,
    UnitVocoder,
    VocoderError,
    build_model,
    load_vocoder,
    tiny_config,
    train_vocoder,
)
from tmt.vocoder.calibration import duration_gain, solve_gain
from tmt.vocoder.config import with_synthesis_settings
from tmt.vocoder.data import collect_utterances
from tmt.vocoder.testing import random_units

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _vocoder(**duration: float) -> UnitVocoder:
    torch.manual_seed(0)
    cfg = tiny_config("unit-mel")
    cfg = dataclasses.replace(cfg, duration=dataclasses.replace(cfg.duration, **duration))
    model = build_model(cfg)
    with torch.no_grad():  # runs of about 3 frames, so that factors show past the floor of 1 frame
        model.duration_predictor.proj.bias.fill_(math.log(4.0))
    return UnitVocoder(model, cfg)


def _totals(durs: list[np.ndarray]) -> list[int]:
    return [int(d.sum()) for d in durs]


def test_gain_and_scale_multiply_the_predicted_durations() -> None:
    rng = np.random.default_rng(0)
    units = [random_units(rng, 20, n)[0] for n in (5, 9, 14)]
    plain = _vocoder()
    # the same weights with a gain of 2, or a configured rate of 2, or a rate of 2 asked for: one factor
    doubled = _totals(plain.predict_durations(units, scale=2.0))
    assert _totals(_vocoder(gain=2.0).predict_durations(units)) == doubled
    assert _totals(_vocoder(scale=2.0).predict_durations(units)) == doubled
    # an explicit rate replaces the configured one and keeps the gain
    assert _totals(_vocoder(gain=2.0, scale=3.0).predict_durations(units, scale=1.0)) == doubled
    assert sum(doubled) > 1.5 * sum(_totals(plain.predict_durations(units)))
    # synthesis without durations follows the same factor
    wavs = _vocoder(gain=2.0).synthesize(units)
    assert [len(w) // 320 for w in wavs] == doubled


def test_gain_and_scale_are_synthesis_settings_and_checked() -> None:
    cfg = tiny_config("unit-mel")
    assert with_synthesis_settings(cfg, ["duration.scale=1.1"]).duration.scale == pytest.approx(1.1)
    with pytest.raises(VocoderError, match=r"duration.gain \(0.0\) and duration.scale"):
        with_synthesis_settings(cfg, ["duration.gain=0"])
    with pytest.raises(VocoderError, match="synthesis settings"):
        with_synthesis_settings(cfg, ["duration.hidden_dim=8"])


def test_duration_gain_gives_the_true_total_length(corpus: dict) -> None:
    utts, _ = collect_utterances(corpus["store"], corpus["manifest"])
    units = [u.units for u in utts]
    true = sum(u.num_frames for u in utts)
    gain = duration_gain(_vocoder(), utts)
    # whatever gain the vocoder holds, the measurement is of the bare predictor
    assert duration_gain(_vocoder(gain=1.7), utts) == pytest.approx(gain)
    bare = sum(_totals(_vocoder().predict_durations(units)))
    calibrated = sum(_totals(_vocoder(gain=gain).predict_durations(units)))
    assert abs(calibrated - true) < abs(bare - true)
    assert abs(calibrated - true) <= len(utts)  # each utterance rounds to whole frames
    assert duration_gain(_vocoder(), utts[:3], rows=2) != pytest.approx(gain)  # a subset when asked
    assert duration_gain(_vocoder(), []) == 1.0


def test_solve_gain_counts_the_floor_of_one_frame() -> None:
    runs = np.array([0.25, 2.0, 3.0])
    # g = 2: the short run stays at its floor of 1 frame, the others give 4 and 6
    assert solve_gain(runs, 11) == pytest.approx(2.0)
    assert 11 / runs.sum() != pytest.approx(2.0)  # the plain ratio would not say so
    assert solve_gain(runs, 3) == 1.0  # as many frames as units: nothing to solve
    assert solve_gain(np.zeros(0), 5) == 1.0 and solve_gain(np.zeros(4), 9) == 1.0


def test_training_stores_the_gain_that_matches_the_training_speech(corpus: dict, tmp_path: Path) -> None:
    cfg = merge(tiny_config("unit-mel"), {"train": {"max_steps": 3, "sample_every": 100, "save_every": 100}})
    result = train_vocoder(cfg, corpus["store"], corpus["manifest"], tmp_path, progress=False)
    voc = load_vocoder(tmp_path)
    gain = voc.cfg.duration.gain
    assert gain != 1.0 and gain > 0 and result["duration_gain"] == gain
    assert json.loads((tmp_path / "vocoder.json").read_text())["config"]["duration"]["gain"] == gain
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["config"]["duration"]["gain"] == gain
    # the calibrated vocoder speaks the training rows at about their own length; uncalibrated it does not
    utts, _ = collect_utterances(corpus["store"], corpus["manifest"])
    held = cfg.train.valid_rows  # the last rows were held out for validation
    true = sum(u.num_frames for u in utts[:-held])
    units = [u.units for u in utts[:-held]]
    calibrated = sum(_totals(voc.predict_durations(units)))
    bare = sum(_totals(voc.predict_durations(units, scale=1.0 / gain)))
    assert abs(calibrated - true) < abs(bare - true)
    assert abs(calibrated - true) <= 0.05 * true
    # a resumed run keeps training (the stored gain is not part of the structure) and measures again
    more = merge(cfg, {"train": {"max_steps": 5}})
    assert train_vocoder(more, corpus["store"], corpus["manifest"], tmp_path, resume=True, progress=False)["step"] == 5
    assert load_vocoder(tmp_path).cfg.duration.gain > 0
