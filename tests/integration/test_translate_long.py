"""Long inputs on the tiny trained pipeline, from the CLI: a 60-second recording (the corpus'
synthetic speech with pauses) translates to text and a 1000-word text file to speech, each
split into pieces that fit the model's source limit and joined. The Python API gives the
pieces (same greedy decoding), so the CLI output is checked to cover every piece."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from tmt.cli import cli

pytestmark = pytest.mark.slow


def _cli(*args: object) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def long_inputs(tiny_pipeline: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 60 s, 16 kHz recording (the corpus' utterances, 0.5 s pauses between them) and a
    one-paragraph text file of 1000 words (the corpus' captions as sentences)."""
    from tmt.core.audio import load_audio
    from tmt.store.manifest import media_path, read_manifest

    d = tmp_path_factory.mktemp("long")
    man = tiny_pipeline.manifests["train"]
    rows = [r for r in read_manifest(man) if r.get("speech") and r.get("text")]
    rng = np.random.default_rng(0)
    parts: list[np.ndarray] = []
    total, i = 0, 0
    while total < 60 * 16000:
        wav = load_audio(media_path(man, rows[i % len(rows)]["speech"]))
        pause = (0.003 * rng.standard_normal(8000)).astype(np.float32)
        parts += [wav, pause]
        total += len(wav) + len(pause)
        i += 1
    audio = np.concatenate(parts)[: 60 * 16000]
    sf.write(d / "talk.wav", audio, 16000, subtype="PCM_16")
    words: list[str] = []
    i = 0
    while len(words) < 1000:
        caption = rows[i % len(rows)]["text"].strip().rstrip(".")
        words += (caption[0].upper() + caption[1:] + ".").split()
        i += 1
    text = " ".join(words[:1000])
    (d / "story.txt").write_text(text.rstrip(".") + ".\n", encoding="utf-8")
    return {"speech": d / "talk.wav", "text": d / "story.txt"}


def test_sixty_seconds_of_speech_to_text(tiny_pipeline: Any, long_inputs: dict[str, Path]) -> None:
    from tmt.generation import GenerationConfig, Translator

    exp, wav = tiny_pipeline.exp, long_inputs["speech"]
    assert sf.info(str(wav)).duration == pytest.approx(60.0)
    tr = Translator.from_checkpoint(exp, config=GenerationConfig(strategy="greedy"))
    limit = tr.source_limit()
    whole = tr.encode([wav], "speech", ["talk"])[0]
    assert len(whole) > 2 * limit  # needs at least three pieces
    [ref] = tr.translate([wav], tgt="text")
    assert len(ref.pieces) >= 3 and all(len(p.tokens) >= 1 and p.text for p in ref.pieces)

    r = _cli("translate", "--model", exp, "--to", "text", "--greedy", "--format", "jsonl", wav)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["id"] == "talk" and rec["hypothesis"] == " ".join(str(p.text) for p in ref.pieces)
    assert len(rec["hypothesis"].split()) >= len(ref.pieces)  # every piece contributed

    r = _cli("translate", "--model", exp, "--to", "text", "--no-segment", wav)
    assert r.exit_code == 1 and f"exceed the model's source limit ({limit})" in r.stderr
    assert "Traceback" not in r.output


def test_thousand_words_to_speech(tiny_pipeline: Any, long_inputs: dict[str, Path], tmp_path: Path) -> None:
    from tmt.generation import GenerationConfig, Translator

    exp, txt = tiny_pipeline.exp, long_inputs["text"]
    text = txt.read_text(encoding="utf-8").strip()
    assert len(text.split()) == 1000
    tr = Translator.from_checkpoint(exp, config=GenerationConfig(strategy="greedy"), vocoder=tiny_pipeline.vocoder)
    [ref] = tr.translate([text], tgt="speech", detokenize=False)
    n = len(ref.pieces)
    budget = tr.piece_budget(["speech"])
    n_tokens = len(tr.encode([text], "text", ["story"])[0])
    assert n >= -(-n_tokens // budget) and n >= 3
    assert all(1 <= len(p.tokens) for p in ref.pieces)

    out = tmp_path / "story.wav"
    r = _cli("translate", "--model", exp, "--to", "speech", "--greedy", "--vocoder", tiny_pipeline.vocoder, txt, "-o", out)
    assert r.exit_code == 0, r.output
    audio, sr = sf.read(out)
    voc = tr.vocoder()
    piece_wavs = voc.synthesize([p.tokens for p in ref.pieces])
    gap = round(tr.config.segment.join_silence_s * sr)
    assert sr == voc.sample_rate
    assert len(audio) == sum(len(w) for w in piece_wavs) + (n - 1) * gap  # all pieces, joined

    r = _cli("translate", "--model", exp, "--to", "speech", "--no-segment", txt, "-o", tmp_path / "x.wav")
    assert r.exit_code == 1 and "exceed the model's source limit" in r.stderr
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "x.units.txt").exists()
