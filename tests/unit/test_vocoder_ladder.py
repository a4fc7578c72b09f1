"""The vocoder diagnostic ladder (`tmt vocoder eval --ladder`) on generated tones with a stand-in judge."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tmt.cli import cli
from tmt.config import merge
from tmt.vocoder import AudioCache, VocoderError, collect_utterances, tiny_config, train_vocoder
from tmt.vocoder.testing import make_unit_corpus

pytest.importorskip("pyworld")
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ladder")
    corpus = make_unit_corpus(root / "c", num_rows=6, num_units=20, seed=5)
    vocs = []
    for arch in ("unit-world", "unit-mel"):
        cfg = merge(tiny_config(arch, 20), {"train": {"max_steps": 2, "sample_every": 100}})
        train_vocoder(cfg, corpus["store"], corpus["manifest"], root / arch, progress=False)
        vocs.append(root / arch)
    return {**corpus, "vocoders": vocs}


def stand_in_judge(corpus: dict) -> tuple:
    """Hears an original recording word for word (except utt000's number); anything else as 'utterance'."""
    utts, _ = collect_utterances(corpus["store"], corpus["manifest"])
    cache = AudioCache()
    originals = [(u, cache.get(u)) for u in utts]
    calls: list[int] = []

    def transcribe(wavs: Sequence[np.ndarray]) -> list[str]:
        calls.append(len(wavs))
        out = []
        for w in wavs:
            hit = [u for u, o in originals if len(o) == len(w) and np.array_equal(o, w)]
            out.append(hit[0].text if hit and hit[0].id != "utt000" else "utterance")
        return out

    return (transcribe, {"judge": "stand-in"}), calls


def test_ladder_rungs_scores_and_wavs(setup: dict, tmp_path: Path) -> None:
    from tmt.evaluation.vocoder_ladder import LADDER_HEADER, ladder_rows, run_ladder

    transcriber, calls = stand_in_judge(setup)
    res = run_ladder(setup["vocoders"], setup["store"], setup["manifest"], limit=4, out_dir=tmp_path / "w",
                     transcriber=transcriber)
    assert res["rows"] == 4 and res["judge"] == {"judge": "stand-in"}
    world, mel = (str(v) for v in setup["vocoders"])
    got = [(r["system"], r["durations"], r["streams_from_original"]) for r in res["ladder"]]
    assert got == [("original", "-", "-"), ("world-copy", "-", "-"), ("griffin-lim", "-", "-"),
                   (world, "ground truth", "-"), (world, "predicted", "-"),
                   (world, "ground truth", "pitch+voicing"), (world, "ground truth", "envelope+aperiodicity"),
                   (mel, "ground truth", "-"), (mel, "predicted", "-")]
    assert calls == [4] * 9  # one judge call per rung, same utterances
    by = {(r["system"], r["durations"]): r for r in res["ladder"] if r["streams_from_original"] == "-"}
    # 8 reference words; the judge misses one on the originals and every number elsewhere
    assert by["original", "-"]["wer"] == pytest.approx(12.5) and by["original", "-"]["wer_vs_original"] == 1.0
    assert by["original", "-"]["rtf_x"] is None and by["original", "-"]["mel_l1"] == pytest.approx(0.0)
    for key, r in by.items():
        if key != ("original", "-"):
            assert r["wer"] == pytest.approx(50.0) and r["wer_vs_original"] == pytest.approx(4.0)
            assert r["rtf_x"] > 0 and np.isfinite(r["mel_l1"]) and r["mel_l1"] > 0
    # copy synthesis of a tone keeps far closer to it than 2-step vocoders do
    assert by["world-copy", "-"]["mel_l1"] < by[world, "ground truth"]["mel_l1"]
    # ground-truth durations give the recordings' lengths
    assert by[world, "ground truth"]["audio_seconds"] == pytest.approx(by["original", "-"]["audio_seconds"])
    dirs = sorted(p.name for p in (tmp_path / "w").iterdir())
    assert dirs == ["00-original", "01-world-copy", "02-griffin-lim", "03-unit-world-gt-dur", "04-unit-world-pred-dur",
                    "05-unit-world-gt-dur-gt-pitch-voicing", "06-unit-world-gt-dur-gt-envelope-aperiodicity",
                    "07-unit-mel-gt-dur", "08-unit-mel-pred-dur"]
    assert sorted(p.stem for p in (tmp_path / "w" / "01-world-copy").glob("*.wav")) == ["utt000", "utt001", "utt002", "utt003"]
    rows = ladder_rows(res)
    assert len(rows) == 9 and all(len(r) == len(LADDER_HEADER) for r in rows)


def test_stream_swaps_of_a_perfect_network_are_the_world_copy(setup: dict) -> None:
    from tmt.evaluation.vocoder_ladder import world_copy, world_stream_rungs
    from tmt.vocoder import load_vocoder
    from tmt.vocoder.world import analyse

    voc = load_vocoder(setup["vocoders"][0], "cpu")
    utts, _ = collect_utterances(setup["store"], setup["manifest"])
    utts = utts[:3]
    cache = AudioCache()
    originals = [cache.get(u) for u in utts]
    gts = [analyse(w, u.num_frames, voc.cfg.world) for w, u in zip(originals, utts, strict=True)]
    real = voc.world_features([u.units for u in utts], [u.durations for u in utts])
    assert [f.shape for f in real] == [g.shape for g in gts]  # the analysis layout, frame for frame
    copy = world_copy(originals, utts, voc.cfg.world)
    voc.world_features = lambda units, durations, voice=None: [g.copy() for g in gts]  # type: ignore[method-assign]
    rungs = world_stream_rungs("v", voc, utts, originals)
    assert [r.streams for r in rungs] == ["pitch+voicing", "envelope+aperiodicity"]
    for r in rungs:  # whatever a stream swap takes from the original, a perfect prediction had already
        for w, c in zip(r.wavs, copy, strict=True):
            np.testing.assert_array_equal(w, c)
    # a network that gets everything wrong: swapping the envelope back brings it closer to the copy
    voc.world_features = lambda units, durations, voice=None: [np.zeros_like(g) for g in gts]  # type: ignore[method-assign]
    pitch, envelope = world_stream_rungs("v", voc, utts, originals)
    err = [float(np.mean([np.abs(w - c).mean() for w, c in zip(r.wavs, copy, strict=True)])) for r in (pitch, envelope)]
    assert err[1] < err[0]


def test_ladder_refuses_another_tokenizers_vocoder(setup: dict, tmp_path: Path) -> None:
    from tmt.evaluation.vocoder_ladder import run_ladder

    other = make_unit_corpus(tmp_path / "o", num_rows=3, num_units=20, seed=2, fingerprint="e" * 64)
    transcriber, _ = stand_in_judge(setup)
    with pytest.raises(VocoderError, match=r"speech tokenizer ffffffffffff .* tokenizer eeeeeeeeeeee"):
        run_ladder(setup["vocoders"][:1], other["store"], other["manifest"], transcriber=transcriber)


def test_cli_ladder_table_and_json(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import tmt.evaluation.vocoder_ladder as vl

    transcriber, _ = stand_in_judge(setup)
    monkeypatch.setattr(vl, "load_judge_transcriber", lambda: transcriber)
    world, mel = (str(v) for v in setup["vocoders"])
    base = ["vocoder", "eval", "--store", str(setup["store"]), "--manifest", str(setup["manifest"]), "--limit", "2"]
    res = CliRunner().invoke(cli, [*base, world, mel, "--json"])  # two vocoders: the ladder without --ladder
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["rows"] == 2 and len(r["ladder"]) == 9
    res = CliRunner().invoke(cli, [*base, "--ladder"])  # the reference rungs alone
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("vocoder ladder: 2 rows") and "x original WER" in lines[1]
    assert [ln.split()[0] for ln in lines[3:]] == ["original", "world-copy", "griffin-lim"]
    res = CliRunner().invoke(cli, base)
    assert res.exit_code == 2 and "give a VOCODER directory" in res.output


def test_ladder_without_a_judge_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import tmt.evaluation.asr as asr
    from tmt.evaluation.vocoder_ladder import load_judge_transcriber

    monkeypatch.setattr(asr, "load_asr_judge", lambda: (None, "faster-whisper is not installed (test)"))
    with pytest.raises(VocoderError, match="needs the ASR judge: faster-whisper is not installed"):
        load_judge_transcriber()
