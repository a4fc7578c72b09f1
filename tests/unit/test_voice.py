"""Voice tokens for speech targets (issue 19 section 2): the vocabulary's voice range, training rows
that carry the voice after <bos:speech> (given, never a loss target), decoding that forces the chosen
voice, clear errors for unknown voices, and old vocabularies without voices."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tmt.generation.generator import GenerationConfig, Generator, LengthLimit, LengthLimits
from tmt.generation.scoring import forced_logprobs
from tmt.models.config import get_preset
from tmt.models.tmt import create_model
from tmt.store.pipeline import BatchReader, decoder_io
from tmt.training.config import train_preset
from tmt.training.steps import SixWayStep
from tmt.training.synthetic import FINGERPRINTS, SIZES, make_synthetic_store
from tmt.training.trainer import train
from tmt.vocab import BOS, EOS, NUM_SPECIALS, PAD, JointVocab, VocabError, row_voice

torch.set_num_threads(1)

VOICES = ["espeak-ng:en-us", "flite:slt", "espeak-ng:en-gb"]


def voiced_vocab(default: str | None = None) -> JointVocab:
    v = JointVocab.from_sizes(SIZES, fingerprints=FINGERPRINTS, voices=VOICES)
    return JointVocab(v.tokenizers, voices=VOICES, default_voice=default)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_store(tmp_path_factory.mktemp("voice") / "store", num_scenes=12, voices=VOICES)


# ---- vocabulary ---------------------------------------------------------------------------
def test_voice_range_follows_the_modalities_and_round_trips(tmp_path: Path) -> None:
    plain = JointVocab.from_sizes(SIZES, fingerprints=FINGERPRINTS)
    v = voiced_vocab(default="flite:slt")
    assert v.size == plain.size + len(VOICES) and v.voice_offset == plain.size
    assert {m: v.range(m) for m in SIZES} == {m: plain.range(m) for m in SIZES}  # old ranges unchanged
    assert v.voice_token() == v.voice_offset + 1  # the recorded default
    assert v.voice_token("espeak-ng:en-gb") == v.voice_offset + 2
    assert all(v.modality_of(v.voice_offset + k) == "speech" for k in range(len(VOICES)))
    units = v.to_joint("speech", [3, 4])
    assert v.from_joint("speech", [BOS["speech"], v.voice_offset, *units.tolist(), EOS]).tolist() == [3, 4]
    v.save(tmp_path / "vocab.json")
    back = JointVocab.load(tmp_path / "vocab.json")
    assert (back.voices, back.default_voice, back.size) == (VOICES, "flite:slt", v.size)


def test_unknown_voice_is_a_clear_error_listing_the_known_ones() -> None:
    v = voiced_vocab()
    with pytest.raises(VocabError, match=r"unknown voice 'robot'.*espeak-ng:en-us, flite:slt, espeak-ng:en-gb"):
        v.voice_token("robot")
    with pytest.raises(VocabError, match="not among the voices"):
        JointVocab(v.tokenizers, voices=VOICES, default_voice="robot")
    with pytest.raises(VocabError, match="repeated: flite:slt"):
        JointVocab(v.tokenizers, voices=["flite:slt", "flite:slt"])
    with pytest.raises(VocabError, match="lists no voices"):
        JointVocab.from_sizes(SIZES).voice_token("flite:slt")


def test_old_vocab_without_voices_loads_unchanged(tmp_path: Path) -> None:
    plain = JointVocab.from_sizes(SIZES, fingerprints=FINGERPRINTS)
    data = plain.to_json()
    assert "voices" not in data  # old files and new voice-less ones are the same
    back = JointVocab.from_json(data)
    assert back.voices == [] and back.voice_token() is None and back.size == plain.size


def test_row_voice_reads_voice_tts_or_speaker() -> None:
    assert row_voice({"voice": "x"}) == "x"
    assert row_voice({"tts": {"engine": "flite", "voice": "slt", "rate": 1.0}}) == "flite:slt"
    assert row_voice({"speaker": 17}) == "17"
    assert row_voice({"tts": None}) is None


# ---- training rows --------------------------------------------------------------------------
def test_training_rows_carry_the_voice_token_after_bos(store: Path) -> None:
    vocab = voiced_vocab()
    with BatchReader([str(store)], vocab, train=False, max_tokens=400, prefetch=0) as reader:
        batches = list(reader)
    b = batches[0]
    d = b.direction("text", "speech")
    assert d is not None
    for r, row_id in enumerate(b.ids):
        voice = VOICES[int(row_id[5:]) % len(VOICES)]
        n = d.target_lens[r]
        assert d.target_in[r, 0].item() == BOS["speech"]
        assert d.target_in[r, 1].item() == vocab.voice_token(voice)
        assert d.target_out[r, 0].item() == PAD  # the voice is given, never predicted
        assert d.target_out[r, n - 1].item() == EOS
        assert torch.equal(d.target_in[r, 2:n], d.target_out[r, 1 : n - 1])
    s2t = b.direction("speech", "text")
    assert s2t is not None and not any(vocab.is_voice(int(t)) for t in s2t.source.flatten())
    # the loss runs and never sees the voice as a target
    torch.manual_seed(0)
    loss, stats = SixWayStep(create_model(get_preset("tiny"), vocab), ["t2s", "s2t"])(b)
    n_units = sum(len(b.seqs["speech"][r]) + 1 for r in b.rows_with("text", "speech"))  # type: ignore[arg-type]
    assert torch.isfinite(loss) and stats.dirs["t2s"].tokens == n_units


def test_decoder_io_without_prefixes_is_unchanged() -> None:
    seqs = [torch.tensor([20, 21]), torch.tensor([22])]
    ti, to, tl = decoder_io(seqs, "speech")
    assert ti.tolist() == [[BOS["speech"], 20, 21], [BOS["speech"], 22, PAD]]
    assert to.tolist() == [[20, 21, EOS], [22, EOS, PAD]] and tl == [3, 2]


@pytest.mark.parametrize("voices", [VOICES, None], ids=["voices", "old-vocab"])
def test_trains_with_and_without_voices(tmp_path: Path, store: Path, voices: list[str] | None) -> None:
    vocab = voiced_vocab() if voices else JointVocab.from_sizes(SIZES, fingerprints=FINGERPRINTS)
    vocab.save(tmp_path / "vocab.json")
    cfg = train_preset("tiny")
    cfg = replace(
        cfg, data=replace(cfg.data, vocab=str(tmp_path / "vocab.json"), stores=[str(store)], max_tokens=300),
        max_steps=2, save_every=2, log_every=1, plot=False,
    )
    train(cfg, tmp_path / "exp")
    assert JointVocab.load(tmp_path / "exp" / "vocab.json").voices == (voices or [])


# ---- decoding ---------------------------------------------------------------------------------
def _recording_model(vocab: JointVocab) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = create_model(get_preset("tiny"), vocab).eval()
    seen: list[torch.Tensor] = []
    decode = model.decode

    def recorder(enc, enc_layout, seqs, layout, state_bag=None):  # type: ignore[no-untyped-def]
        seen.append(seqs[0].clone())
        return decode(enc, enc_layout, seqs, layout, state_bag=state_bag)

    model.decode = recorder  # type: ignore[method-assign]
    return model, seen


@pytest.mark.parametrize("strategy", ["beam", "greedy", "sample"])
@pytest.mark.parametrize("voice", [None, "espeak-ng:en-gb"])
def test_voice_selects_the_first_speech_token_after_bos(voice: str | None, strategy: str) -> None:
    vocab = voiced_vocab()
    model, seen = _recording_model(vocab)
    cfg = GenerationConfig(voice=voice, strategy=strategy, seed=1, beam_size=3,
                           lengths=LengthLimits(speech=LengthLimit(a=0, b=6, min_len=3)))
    out = Generator(model, vocab, cfg).generate([np.array([1, 2, 3])], "text", ["speech", "text"])
    fed = torch.cat(seen).tolist()  # the decoder's inputs, step by step (row 0)
    assert fed[0] == BOS["speech"] and fed[1] == vocab.voice_token(voice)
    hyp = out[0]["speech"][0]
    assert 3 <= len(hyp.tokens) <= 6 and np.isfinite(hyp.score)
    assert ((hyp.tokens >= 0) & (hyp.tokens < SIZES["speech"])).all()  # units only: the voice is not output
    assert not any(vocab.is_voice(t) for t in torch.cat(seen[2:]).tolist())
    # text targets get no voice
    assert all(t < NUM_SPECIALS or vocab.modality_of(t) != "speech" for t in torch.cat(seen).tolist()[-2:])


def test_unknown_or_unsupported_voice_fails_before_decoding() -> None:
    vocab = voiced_vocab()
    model = create_model(get_preset("tiny"), vocab).eval()
    with pytest.raises(VocabError, match="known voices are: espeak-ng:en-us"):
        Generator(model, vocab, GenerationConfig(voice="robot"))
    plain = JointVocab.from_sizes(SIZES)
    with pytest.raises(VocabError, match="lists no voices"):
        Generator(create_model(get_preset("tiny"), plain), plain, GenerationConfig(voice="flite:slt"))


def test_forced_logprobs_give_the_voice() -> None:
    vocab = voiced_vocab()
    torch.manual_seed(0)
    model = create_model(get_preset("tiny"), vocab).eval()
    src = [vocab.to_joint("text", [1, 2, 3])]
    tgt = [vocab.to_joint("speech", [4, 5, 6, 7])]
    a = forced_logprobs(model, src, tgt, "speech", voice="flite:slt")
    b = forced_logprobs(model, src, tgt, "speech", voice="espeak-ng:en-gb")
    assert np.isfinite(a).all() and float(a[0, 0]) != float(b[0, 0])
    assert float(forced_logprobs(model, src, tgt, "speech")[0, 0]) == float(
        forced_logprobs(model, src, tgt, "speech", voice=VOICES[0])[0, 0]
    )


# ---- vocab build --voices-from ------------------------------------------------------------
def test_vocab_build_lists_the_voices_of_a_manifest_or_store(tmp_path: Path, store: Path) -> None:
    import json

    from click.testing import CliRunner

    from tmt.cli import cli as root
    from tmt.store.manifest import write_manifest

    for m, n in SIZES.items():
        (tmp_path / m).mkdir()
        (tmp_path / m / "tokenizer.json").write_text(json.dumps(
            {"kind": m, "class": "x", "name": f"{m}-tok", "vocab_size": n, "fingerprint": f"fp-{m}"}))
    rows = [{"id": f"r{i}", "split": "train", "speech": f"w{i}.wav", "text": "a",
             "tts": {"engine": "flite", "voice": ["slt", "kal", "slt"][i % 3]}} for i in range(6)]
    rows.append({"id": "img", "split": "train", "image": "x.png", "tts": {"engine": "x", "voice": "no-speech"}})
    write_manifest(tmp_path / "m.jsonl.gz", rows)
    toks = ["--text", str(tmp_path / "text"), "--speech", str(tmp_path / "speech"), "--image", str(tmp_path / "image")]
    out = tmp_path / "vocab.json"
    r = CliRunner().invoke(root, ["vocab", "build", *toks, "--voices-from", str(tmp_path / "m.jsonl.gz"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    v = JointVocab.load(out)
    assert v.voices == ["flite:kal", "flite:slt"] and v.default_voice == "flite:slt"  # the most frequent
    r = CliRunner().invoke(root, ["vocab", "show", str(out)])
    assert r.exit_code == 0 and "flite:slt (default)" in r.output
    r = CliRunner().invoke(root, ["vocab", "build", *toks, "--voices-from", str(store),
                                  "--default-voice", "flite:slt", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert JointVocab.load(out).voices == sorted(VOICES)
    r = CliRunner().invoke(root, ["vocab", "build", *toks, "--voices-from", str(store),
                                  "--default-voice", "robot", "-o", str(tmp_path / "v2.json")])
    assert r.exit_code == 1 and "'robot' is not among the voices" in r.output and not (tmp_path / "v2.json").exists()
