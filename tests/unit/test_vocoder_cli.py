"""`tmt vocoder train | synthesize | eval` on a synthetic unit corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from tmt.cli import cli
from tmt.vocoder.testing import make_unit_corpus

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("vcli")
    corpus = make_unit_corpus(root / "c", num_rows=8, num_units=20, seed=3)
    out = root / "voc"
    res = CliRunner().invoke(cli, [
        "vocoder", "train", "--store", str(corpus["store"]), "--manifest", str(corpus["manifest"]),
        "--config", "tiny", "--arch", "unit-mel", "--set", "train.max_steps=3", "--set", "train.sample_every=100",
        "--out", str(out),
    ])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["step"] == 3
    return corpus, out


def test_train_outputs(trained: tuple[dict, Path]) -> None:
    _, out = trained
    for name in ("vocoder.json", "model.safetensors", "checkpoint.pt", "config.yaml", "train_log.jsonl"):
        assert (out / name).is_file(), name
    assert json.loads((out / "vocoder.json").read_text())["arch"] == "unit-mel"


def test_dump_config() -> None:
    res = CliRunner().invoke(cli, ["vocoder", "train", "--config", "paper", "--set", "train.batch_size=4", "--dump-config"])
    assert res.exit_code == 0, res.output
    assert "upsample_initial_channel: 512" in res.output and "batch_size: 4" in res.output
    res = CliRunner().invoke(cli, ["vocoder", "train", "--config", "nonsense", "--dump-config"])
    assert res.exit_code == 1 and "unknown vocoder preset" in res.output


def test_set_help_lists_every_synthesis_setting() -> None:
    from tmt.cli.vocoder import SET_HELP
    from tmt.vocoder.config import SYNTHESIS_ONLY

    listed = SET_HELP.split("(", 1)[1]
    for section, keys in SYNTHESIS_ONLY.items():
        assert f"{section}." in listed
        for key in keys:
            assert key in listed, f"{section}.{key} missing from the --set help"


def test_synthesize_from_store_and_stdin(trained: tuple[dict, Path], tmp_path: Path) -> None:
    corpus, out = trained
    res = CliRunner().invoke(cli, ["vocoder", "synthesize", str(out), "--store", str(corpus["store"]), "--limit", "3",
                                   "--gt-durations", "--out-dir", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    wavs = sorted((tmp_path / "a").glob("*.wav"))
    assert [p.stem for p in wavs] == ["utt000", "utt001", "utt002"]
    data, sr = sf.read(wavs[0])
    _units, durs = corpus["tokens"][0]
    assert sr == 16000 and len(data) == int(durs.sum()) * 320
    res = CliRunner().invoke(cli, ["vocoder", "synthesize", str(out), "--units", "-", "--out-dir", str(tmp_path / "b")],
                             input="x1\t1 2 3 4\n5 6 7\n")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "b").glob("*.wav")) == ["000002.wav", "x1.wav"]
    res = CliRunner().invoke(cli, ["vocoder", "synthesize", str(out), "--units", "-", "--out-dir", str(tmp_path / "c")],
                             input="1 2 99\n")
    assert res.exit_code == 1 and "outside [0, 20)" in res.output


def test_eval_reports_unavailable_judge_not_a_number(trained: tuple[dict, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import tmt.evaluation.vocoder as tv

    corpus, out = trained
    monkeypatch.setattr(tv, "transcribe_with_judge", lambda wavs: (None, "judge not installed (test)"))
    res = CliRunner().invoke(cli, ["vocoder", "eval", str(out), "--store", str(corpus["store"]),
                                   "--manifest", str(corpus["manifest"]), "--limit", "4", "--gt-durations", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["rows"] == 4 and r["wer"] == "unavailable: judge not installed (test)"
    assert np.isfinite(r["mel_l1"]) and r["audio_seconds"] > 0


def test_eval_uses_the_judge_when_present(trained: tuple[dict, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import tmt.evaluation.vocoder as tv

    corpus, out = trained
    monkeypatch.setattr(tv, "transcribe_with_judge", lambda wavs: (["utterance 0"] * len(wavs), {"judge": "fake"}))
    r = tv.evaluate_vocoder(out, corpus["store"], corpus["manifest"], limit=2)
    # refs are "utterance 0", "utterance 1": one of four words wrong
    assert r["wer"] == pytest.approx(25.0) and r["wer_original_audio"] == pytest.approx(25.0)
    assert r["durations"] == "predicted"
    from tmt.vocoder import VocoderError

    with pytest.raises(VocoderError, match="need a unit-world vocoder; this one is unit-mel"):
        tv.evaluate_vocoder(out, corpus["store"], corpus["manifest"], limit=2, realisations=2)


def test_train_with_voices_and_synthesize_one(tmp_path: Path) -> None:
    corpus = make_unit_corpus(tmp_path / "c", num_rows=6, num_units=20, seed=4, voices=["a", "b"])
    out = tmp_path / "voc"
    res = CliRunner().invoke(cli, [
        "vocoder", "train", "--store", str(corpus["store"]), "--manifest", str(corpus["manifest"]),
        "--config", "tiny", "--arch", "unit-mel", "--set", "train.max_steps=2", "--set", "train.sample_every=100",
        "--voices", "--out", str(out),
    ])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "vocoder.json").read_text())["config"]["voices"] == ["a", "b"]
    args = ["vocoder", "synthesize", str(out), "--store", str(corpus["store"]), "--limit", "2", "--out-dir"]
    res = CliRunner().invoke(cli, [*args, str(tmp_path / "w"), "--voice", "b"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "w").glob("*.wav"))) == 2
    res = CliRunner().invoke(cli, [*args, str(tmp_path / "x"), "--voice", "zz"])
    assert res.exit_code == 1 and "unknown voice 'zz'; this vocoder knows: a, b" in res.output
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").glob("*.wav"))


def test_voice_needs_a_voiced_vocoder(trained: tuple[dict, Path], tmp_path: Path) -> None:
    corpus, out = trained
    res = CliRunner().invoke(cli, ["vocoder", "synthesize", str(out), "--store", str(corpus["store"]), "--limit", "1",
                                   "--voice", "a", "--out-dir", str(tmp_path / "a")])
    assert res.exit_code == 2 and "--voice needs a vocoder trained with --voices" in res.output
