"""Translator, batch output directory and `tmt translate` CLI on a random tiny model with small
stand-in tokenizers (registered for this test only), so these run without fitted assets.
The end-to-end test with the real tokenizers and a trained model is
tests/integration/test_translate.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from PIL import Image

from tmt.core.hypotheses import merge_hypothesis_parts
from tmt.generation.batch import translate_to_dir
from tmt.generation.generator import GenerationConfig, GenerationError
from tmt.generation.translator import TranslateError, Translator, infer_modality
from tmt.models.checkpoint import save_model
from tmt.models.config import get_preset
from tmt.models.tmt import create_model
from tmt.tokenizers import base as tok_base
from tmt.vocab import FingerprintMismatch, JointVocab, TokenizerInfo

torch.set_num_threads(1)

SIZES = {"text": 40, "speech": 30, "image": 48}
IMAGE_LEN = 8
WORDS = [f"w{i}" for i in range(SIZES["text"])]


# ---- stand-in tokenizers: real file reading, trivial token maps ------------------------------
class _Fake:
    modality = ""
    vocab_size = 0

    def __init__(self, fingerprint: str | None = None) -> None:
        self.name = f"fake-{self.modality}"
        self.card: dict[str, Any] = {}
        self.fingerprint = fingerprint or f"fp-{self.modality}"

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "tokenizer.json").write_text(json.dumps({
            "kind": self.modality, "class": f"fake-{self.modality}", "name": self.name,
            "vocab_size": self.vocab_size, "fingerprint": self.fingerprint,
        }))

    @classmethod
    def load(cls, directory: str | Path, **_: Any) -> _Fake:
        info = json.loads((Path(directory) / "tokenizer.json").read_text())
        return cls(info["fingerprint"])


class FakeText(_Fake):
    modality = "text"
    vocab_size = SIZES["text"]

    def encode(self, batch: Sequence[str]) -> list[np.ndarray]:
        return [np.array([sum(map(ord, w)) % self.vocab_size for w in t.split()]) for t in batch]

    def decode(self, tokens: Sequence[np.ndarray]) -> list[str]:
        return [" ".join(WORDS[int(i)] for i in t) for t in tokens]


class FakeSpeech(_Fake):
    modality = "speech"
    vocab_size = SIZES["speech"]

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        out = []
        for p in batch:
            try:
                wav = p if isinstance(p, np.ndarray) else sf.read(str(p), dtype="float32")[0]
            except Exception as e:
                raise tok_base.TokenizerError(f"{p}: not an audio file ({e})") from None
            frames = wav[: len(wav) // 320 * 320].reshape(-1, 320)
            out.append((np.abs(frames).mean(1) * 1000).astype(np.int64) % self.vocab_size)
        return out


class FakeImage(_Fake):
    modality = "image"
    vocab_size = SIZES["image"]
    tokens_per_image = IMAGE_LEN

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        out = []
        for p in batch:
            try:
                im = p if isinstance(p, Image.Image) else Image.open(p)
                a = np.asarray(im.convert("L").resize((IMAGE_LEN, 1)), dtype=np.int64)[0]
            except Exception as e:
                raise tok_base.TokenizerError(f"{p}: not an image ({e})") from None
            out.append(a % self.vocab_size)
        return out

    def decode(self, tokens: Sequence[np.ndarray]) -> list[Image.Image]:
        return [Image.fromarray((np.asarray(t, dtype=np.uint8) * 5).reshape(2, 4)).convert("RGB") for t in tokens]


class FakeVocoder:
    sample_rate = 16000
    voices: list[str] = []

    def __init__(self) -> None:
        self.asked_voices: list[Any] = []

    def synthesize(self, units: Sequence[np.ndarray], voice: Any = None) -> list[np.ndarray]:
        self.asked_voices.append(voice)
        return [np.sin(np.arange(320 * len(u)) * 0.05).astype(np.float32) * 0.1 for u in units]


@pytest.fixture(autouse=True)
def _registry(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in (FakeText, FakeSpeech, FakeImage):
        monkeypatch.setitem(tok_base.REGISTRY, f"fake-{cls.modality}", lambda cls=cls: cls)


def _model_dir(root: Path, **vocab_options: Any) -> Path:
    """A tiny model under root/model whose vocab.json points at the stand-in tokenizers."""
    infos = {}
    for cls in (FakeText, FakeSpeech, FakeImage):
        tok = cls()
        tok.save(root / "tok" / tok.modality)
        infos[tok.modality] = TokenizerInfo(
            name=tok.name, size=tok.vocab_size, fingerprint=tok.fingerprint, path=str(root / "tok" / tok.modality)
        )
    vocab = JointVocab(infos, **vocab_options)
    torch.manual_seed(0)
    save_model(create_model(get_preset("tiny"), vocab), root / "model")
    return root


@pytest.fixture(scope="module")
def exp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory whose vocab.json points at the stand-in tokenizers."""
    return _model_dir(tmp_path_factory.mktemp("exp"))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    sf.write(d / "hello.wav", (rng.standard_normal(16000) * 0.1).astype(np.float32), 16000)
    sf.write(d / "bye.flac", (rng.standard_normal(8000) * 0.2).astype(np.float32), 16000)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / "pic.png")
    (d / "caption.txt").write_text("a red circle\n")
    (d / "broken.wav").write_bytes(b"RIFF not really audio")
    (d / "broken.png").write_bytes(b"\x89PNG broken")
    (d / "empty.txt").write_text("\n  \n")
    return {p.name: p for p in d.iterdir()}


@pytest.fixture
def translator(exp: Path) -> Translator:
    return Translator.from_checkpoint(exp / "model", config=GenerationConfig(beam_size=3, batch_size=4))


def test_infer_modality(media: dict[str, Path]) -> None:
    assert infer_modality(media["hello.wav"]) == "speech"
    assert infer_modality(str(media["bye.flac"])) == "speech"
    assert infer_modality(media["pic.png"]) == "image"
    assert infer_modality(str(media["caption.txt"])) == "text"
    assert infer_modality("a dog runs.txt") == "text"  # not a file: plain text
    assert infer_modality(Image.new("RGB", (4, 4))) == "image"
    with pytest.raises(TranslateError, match="extension"):
        infer_modality(Path("x.mp4"))


def test_all_six_directions(translator: Translator, media: dict[str, Path]) -> None:
    srcs = {"speech": media["hello.wav"], "image": media["pic.png"], "text": "a red circle"}
    for src, item in srcs.items():
        res = translator.translate_many([item], tgts=[m for m in srcs if m != src])[0]
        for tgt, r in res.items():
            assert (r.src, r.tgt) == (src, tgt)
            assert np.isfinite(r.score) and len(r.tokens) >= 1
            if tgt == "text":
                assert isinstance(r.text, str) and r.text.split() and all(w in WORDS for w in r.text.split())
            elif tgt == "image":
                assert len(r.tokens) == IMAGE_LEN and isinstance(r.image, Image.Image)
            else:
                assert r.waveform is None and r.units is not None and r.units.max() < SIZES["speech"]


def test_pivot_cascade_records_the_intermediate(translator: Translator, media: dict[str, Path]) -> None:
    [r] = translator.translate([media["hello.wav"]], tgt="image", via="text")
    assert (r.src, r.via, r.tgt) == ("speech", "text", "image")
    assert r.pivot is not None and r.pivot.tgt == "text" and r.pivot.text
    assert len(r.tokens) == IMAGE_LEN
    direct = translator.translate_tokens([r.pivot.tokens], src="text", tgt="image")[0]
    np.testing.assert_array_equal(direct.tokens, r.tokens)


def test_vocoder_gives_waveforms(exp: Path, tmp_path: Path) -> None:
    tr = Translator.from_checkpoint(exp / "model")
    tr._vocoder = FakeVocoder()
    [r] = tr.translate(["a red circle"], tgt="speech")
    assert r.waveform is not None and r.sample_rate == 16000 and len(r.waveform) == 320 * len(r.tokens)
    p = r.save(tmp_path / "x.wav")
    wav, sr = sf.read(p)
    assert sr == 16000 and len(wav) == len(r.waveform)


def test_input_errors_name_the_input(translator: Translator, media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TranslateError, match=r"not found: .*nope\.wav"):
        translator.translate([tmp_path / "nope.wav"], tgt="text")
    with pytest.raises(tok_base.TokenizerError, match=r"broken\.wav"):
        translator.translate([media["broken.wav"]], tgt="text")
    with pytest.raises(tok_base.TokenizerError, match=r"broken\.png"):
        translator.translate([media["broken.png"]], tgt="text")
    with pytest.raises(TranslateError, match="empty"):
        translator.translate(["   "], tgt="image", src="text")
    with pytest.raises(TranslateError, match="empty"):
        translator.translate([media["empty.txt"]], tgt="image")
    with pytest.raises(TranslateError, match="unknown target modality 'video'"):
        translator.translate(["hi"], tgt="video")
    with pytest.raises(TranslateError, match="both text"):
        translator.translate(["hi"], tgt="text")


def test_fingerprint_mismatch_is_refused(exp: Path, tmp_path: Path) -> None:
    other = FakeSpeech("fp-something-else")
    other.save(tmp_path / "speech2")
    tr = Translator.from_checkpoint(exp / "model", tokenizers={"speech": tmp_path / "speech2"})
    with pytest.raises(FingerprintMismatch, match="speech"):
        tr.tokenizer("speech")
    tr = Translator.from_checkpoint(exp / "model", tokenizers={"speech": tmp_path / "missing"})
    with pytest.raises(TranslateError, match="--tokenizer speech=DIR"):
        tr.tokenizer("speech")


def test_output_dir_contract(translator: Translator, media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = [media["hello.wav"], media["bye.flac"], media["hello.wav"]]
    path = translate_to_dir(
        translator, items, ["a", "b", "c"], src="speech", tgt="image", via=None, output_dir=out,
        run_info={"src": "speech", "tgt": "image", "via": None, "manifest": None, "split": None,
                  "model": "m", "beam_size": 3}, groups={"a": "g1", "b": "g1", "c": "g2"}, chunk=2,
    )
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["a", "b", "c"] and [x["group"] for x in lines] == ["g1", "g1", "g2"]
    for x in lines:
        assert set(x) == {"id", "group", "src", "tgt", "hyp", "tokens", "score", "via"}
        assert x["hyp"] == f"{x['id']}.png" and len(x["tokens"]) == IMAGE_LEN
        assert Image.open(out / x["hyp"]).size == (4, 2)
    run = json.loads((out / "run.json").read_text())
    assert run["num"] == 3 and run["tgt"] == "image"
    assert not list(out.glob(".staging*"))


def test_output_dir_is_all_or_nothing(translator: Translator, media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = [media["hello.wav"], media["bye.flac"], media["broken.wav"]]
    with pytest.raises(tok_base.TokenizerError):
        translate_to_dir(translator, items, ["a", "b", "c"], src="speech", tgt="image", via=None,
                         output_dir=out, run_info={}, chunk=2)
    assert not out.exists()  # the run made it, so the failed run removes it again


def test_shards_merge_in_order(translator: Translator, tmp_path: Path) -> None:
    texts = ["one two", "three", "four five six", "seven"]
    ids = ["t1", "t2", "t3", "t4"]
    for k in (1, 0):  # finishing out of order still merges in k order
        sl = slice(k * 2, k * 2 + 2)
        translate_to_dir(translator, texts[sl], ids[sl], src="text", tgt="speech", via=None,
                         output_dir=tmp_path, run_info={"tgt": "speech"}, shard=(k, 2))
    lines = [json.loads(x) for x in (tmp_path / "hypotheses.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ids
    assert all(x["hyp"] == f"{x['id']}.units.txt" for x in lines)
    units = (tmp_path / "t3.units.txt").read_text().split()
    assert [int(u) for u in units] == lines[2]["tokens"]
    assert json.loads((tmp_path / "run.json").read_text())["num"] == 4
    assert merge_hypothesis_parts(tmp_path, 3) is None


# ---- CLI ----------------------------------------------------------------------------------------
def run(*args: str, input: str | None = None) -> Any:
    from tmt.cli import cli

    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_cli_text_to_stdout_and_jsonl(exp: Path, media: dict[str, Path]) -> None:
    m = str(exp / "model")
    r = run("translate", "--model", m, "--to", "text", str(media["hello.wav"]), str(media["pic.png"]))
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all(all(w in WORDS for w in ln.split()) for ln in lines)
    r = run("translate", "--model", m, "--to", "text", "--format", "jsonl", "--greedy", str(media["hello.wav"]))
    rec = json.loads(r.stdout)
    assert rec["id"] == "hello" and rec["src"] == "speech" and isinstance(rec["score"], float)


def test_cli_files_stdin_and_units(exp: Path, media: dict[str, Path], tmp_path: Path) -> None:
    m = str(exp / "model")
    out = tmp_path / "o.png"
    r = run("translate", "--model", m, "--to", "image", str(media["caption.txt"]), "-o", str(out))
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (4, 2)
    r = run("translate", "--model", m, "--to", "speech", "--text", "a red circle", "-o", str(tmp_path / "s.wav"))
    assert r.exit_code == 0, r.output
    assert "units" in r.stderr and (tmp_path / "s.units.txt").is_file() and not (tmp_path / "s.wav").exists()
    r = run("translate", "--model", m, "--to", "image", "--output-dir", str(tmp_path / "d"), input="one\ntwo\n")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "d" / "hypotheses.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["line-0001", "line-0002"]
    r = run("translate", "--model", m, "--to", "image", "--via", "text", str(media["hello.wav"]), "-o", str(tmp_path / "c.png"))
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "video", "x.wav"], "unknown --to modality 'video'"),
        (["--to", "text", "missing.wav"], "not found: missing.wav"),
        (["--to", "text", "clip.mp4"], "cannot tell the modality"),
        (["--to", "image", "--text", ""], "empty"),
        (["--to", "image", "--text", "hi"], "give -o FILE"),
        (["--to", "image", "--text", "a", "--text", "b", "-o", "x.png"], "single input"),
        (["--to", "image", "--text", "a", "-o", "x.wav"], "must end in"),
        (["--to", "text", "--text", "a"], "already text"),
        (["--to", "image", "--via", "image", "--text", "a", "-o", "x.png"], "pivot"),
    ],
)
def test_cli_errors(exp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    r = run("translate", "--model", str(exp / "model"), *args)
    assert r.exit_code != 0
    assert message in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_bad_inputs_leave_no_files(exp: Path, media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    r = run("translate", "--model", str(exp / "model"), "--to", "image", str(media["broken.wav"]), "-o", str(out))
    assert r.exit_code == 1 and "broken.wav" in r.stderr and not out.exists()
    r = run("translate", "--model", str(exp / "model"), "--to", "image", str(media["empty.txt"]), "-o", str(out))
    assert r.exit_code == 1 and "empty" in r.stderr and not out.exists()
    r = run("translate", "--model", str(tmp_path / "nomodel"), "--to", "image", "--text", "a", "-o", str(out))
    assert r.exit_code == 1 and "nomodel" in r.stderr and not out.exists()


def test_cli_manifest_mode(exp: Path, media: dict[str, Path], tmp_path: Path) -> None:
    from tmt.store.manifest import write_manifest

    rows = [
        {"id": f"u{i}", "group": f"g{i // 2}", "split": "test" if i < 3 else "train",
         "image": "pic.png", "speech": "hello.wav" if i != 1 else None, "text": f"w{i} w{i + 1}"}
        for i in range(5)
    ]
    man = media["pic.png"].parent / "raw.jsonl.gz"
    write_manifest(man, rows)
    out = tmp_path / "t2s"
    r = run("translate", "--model", str(exp / "model"), "--manifest", str(man), "--split", "test",
            "--from", "speech", "--to", "text", "--output-dir", str(out))
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (out / "hypotheses.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["u0", "u2"]  # u1 has no speech, u3+ are train
    assert all(isinstance(x["hyp"], str) and x["src"] == "speech" for x in lines)
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["split"] == "test" and run_info["num"] == 2 and run_info["beam_size"] == 5
    for k in range(2):
        r = run("translate", "--model", str(exp / "model"), "--manifest", str(man), "--to", "image",
                "--output-dir", str(tmp_path / "sh"), "--shard", f"{k}/2")
        assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "sh" / "hypotheses.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [f"u{i}" for i in range(5)] and lines[0]["src"] == "text"
    assert all((tmp_path / "sh" / x["hyp"]).is_file() for x in lines)
    # --limit takes the first rows before sharding: two shards cover what one run would
    for k in range(2):
        r = run("translate", "--model", str(exp / "model"), "--manifest", str(man), "--to", "text",
                "--from", "image", "--limit", "3", "--all-rows", "--output-dir", str(tmp_path / "lim"), "--shard", f"{k}/2")
        assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "lim" / "hypotheses.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["u0", "u1", "u2"]
    # without --all-rows an image source is translated once per group (image), then limited
    r = run("translate", "--model", str(exp / "model"), "--manifest", str(man), "--to", "text",
            "--from", "image", "--limit", "2", "--output-dir", str(tmp_path / "img"))
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "img" / "hypotheses.jsonl").read_text().splitlines()]
    assert [(x["id"], x["group"]) for x in lines] == [("u0", "g0"), ("u2", "g1")]
    # other sources keep every row of a group (each caption has its own speech and text)
    r = run("translate", "--model", str(exp / "model"), "--manifest", str(man), "--to", "image",
            "--from", "text", "--limit", "2", "--output-dir", str(tmp_path / "txt"))
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "txt" / "hypotheses.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["u0", "u1"]


# ---- long inputs: split into pieces, translated, joined ------------------------------------------
@pytest.fixture(scope="module")
def short_exp(exp: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in tokenizers with a tiny model that reads at most 63 source tokens."""
    from tmt.models.checkpoint import load_model

    vocab = load_model(exp / "model", "cpu").vocab
    cfg = get_preset("tiny")
    cfg.max_seq_len = 64
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("short") / "model"
    save_model(create_model(cfg, vocab), root)
    return root


def _speech_with_pauses(path: Path, seconds: int = 8) -> Path:
    """`seconds` of 0.8 s tones, each followed by 0.2 s of quiet noise (50 stand-in tokens a second)."""
    rng = np.random.default_rng(1)
    t = np.arange(int(0.8 * 16000)) / 16000
    parts = []
    for i in range(seconds):
        parts += [0.3 * np.sin(2 * np.pi * (200 + 30 * i) * t), 0.002 * rng.standard_normal(3200)]
    sf.write(path, np.concatenate(parts).astype(np.float32), 16000)
    return path


def test_long_speech_is_translated_in_pieces(short_exp: Path, tmp_path: Path) -> None:
    wav = _speech_with_pauses(tmp_path / "long.wav")  # 400 tokens, the limit is 63
    tr = Translator.from_checkpoint(short_exp, config=GenerationConfig(strategy="greedy"))
    [r] = tr.translate([wav], tgt="text")
    assert len(r.pieces) >= 7 and all(len(p.tokens) >= 1 for p in r.pieces)
    assert r.text == " ".join(str(p.text) for p in r.pieces)
    np.testing.assert_array_equal(r.tokens, np.concatenate([p.tokens for p in r.pieces]))
    assert r.id == "long" and [p.id for p in r.pieces][:2] == ["long.1", "long.2"]
    [r2] = tr.translate([wav], tgt="text")
    assert r2.text == r.text  # deterministic
    off = Translator.from_checkpoint(short_exp, config=GenerationConfig(strategy="greedy"))
    off.config.segment.enabled = False
    with pytest.raises(GenerationError, match=r"long: 400 speech tokens exceed the model's source limit \(63\)"):
        off.translate([wav], tgt="text")
    with pytest.raises(TranslateError, match=r"limit \(63\).*one image per input"):
        tr.translate([wav], tgt="image")


def test_long_text_to_speech_joins_waveforms(short_exp: Path) -> None:
    text = " ".join(f"w{i % 40}" + ("." if i % 9 == 8 else "") for i in range(300))
    tr = Translator.from_checkpoint(short_exp, config=GenerationConfig(strategy="greedy"))
    tr._vocoder = FakeVocoder()
    [r] = tr.translate([text], tgt="speech")
    n = len(r.pieces)
    assert n >= 300 // tr.piece_budget(["speech"]) and all(len(p.tokens) >= 1 for p in r.pieces)
    gap = round(tr.config.segment.join_silence_s * 16000)
    assert r.waveform is not None and len(r.waveform) == sum(320 * len(p.tokens) for p in r.pieces) + (n - 1) * gap
    np.testing.assert_array_equal(r.units, np.concatenate([p.tokens for p in r.pieces]))


def test_cli_no_segment_keeps_the_limit_error(short_exp: Path, tmp_path: Path) -> None:
    wav = _speech_with_pauses(tmp_path / "long.wav")
    r = run("translate", "--model", str(short_exp), "--to", "text", "--greedy", str(wav))
    assert r.exit_code == 0, r.output
    assert len(r.stdout.split()) >= 7  # at least a word per piece (min_len 1)
    r = run("translate", "--model", str(short_exp), "--to", "text", "--no-segment", str(wav))
    assert r.exit_code == 1 and "exceed the model's source limit (63)" in r.stderr and "Traceback" not in r.output
    r = run("translate", "--model", str(short_exp), "--to", "text", "--set", "segment.enabled=false", str(wav))
    assert r.exit_code == 1 and "source limit (63)" in r.stderr


# ---- guidance and reranking (issue 18, section 2) ------------------------------------------------
@pytest.fixture(scope="module")
def cfg_exp(exp: Path) -> Path:
    """The same stand-in model directory, recorded as trained with null sources."""
    import dataclasses

    from tmt.models.checkpoint import load_model

    model = load_model(exp / "model")
    model.config = dataclasses.replace(model.config, null_source_prob=0.1)
    save_model(model, exp / "cfg-model")
    return exp / "cfg-model"


def test_cli_guidance_needs_null_source_training(exp: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.png"
    r = run("translate", "--model", str(exp / "model"), "--to", "image", "--text", "a", "--guidance", "2", "-o", str(out))
    assert r.exit_code == 1 and "null_source_prob" in r.stderr and not out.exists()
    r = run("translate", "--model", str(exp / "model"), "--to", "image", "--text", "a", "--rerank", "-1", "-o", str(out))
    assert r.exit_code != 0 and "rerank must be >= 0" in r.stderr


def test_cli_guidance_and_rerank_options(cfg_exp: Path, tmp_path: Path) -> None:
    tokens = []
    for k in range(2):
        d = tmp_path / f"d{k}"
        r = run("translate", "--model", str(cfg_exp), "--to", "image", "--guidance", "2", "--rerank", "3",
                "--sample", "--seed", "4", "--batch-size", "1", "--output-dir", str(d), input="one\ntwo\nthree\n")
        assert r.exit_code == 0, r.output
        info = json.loads((d / "run.json").read_text())
        assert info["guidance"] == 2.0 and info["rerank"] == 3
        tokens.append([json.loads(x)["tokens"] for x in (d / "hypotheses.jsonl").read_text().splitlines()])
        assert all(len(t) == IMAGE_LEN for t in tokens[-1])
    assert tokens[0] == tokens[1]  # one seeded generator per run: the same run twice gives the same images


def test_cli_rerank_forward_option(exp: Path, tmp_path: Path) -> None:
    d = tmp_path / "d"
    r = run("translate", "--model", str(exp / "model"), "--to", "image", "--rerank", "3", "--rerank-forward", "0",
            "--seed", "2", "--output-dir", str(d), input="one\ntwo\n")
    assert r.exit_code == 0, r.output
    info = json.loads((d / "run.json").read_text())
    assert (info["rerank"], info["rerank_forward"]) == (3, 0.0)
    rows = [json.loads(x) for x in (d / "hypotheses.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(len(x["tokens"]) == IMAGE_LEN for x in rows)
    r = run("translate", "--model", str(exp / "model"), "--to", "image", "--text", "a", "--rerank", "2",
            "--rerank-forward", "-1", "-o", str(tmp_path / "x.png"))
    assert r.exit_code != 0 and "rerank_forward must be a finite weight >= 0" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_cli_beam_patience(exp: Path, tmp_path: Path) -> None:
    d = tmp_path / "d"
    r = run("translate", "--model", str(exp / "model"), "--to", "speech", "--beam", "3", "--beam-patience", "2",
            "--output-dir", str(d), input="one\n")
    assert r.exit_code == 0, r.output
    info = json.loads((d / "run.json").read_text())
    assert (info["beam_size"], info["beam_patience"]) == (3, 2.0)
    r = run("translate", "--model", str(exp / "model"), "--to", "speech", "--beam-patience", "0.5", input="one\n")
    assert r.exit_code != 0 and "beam_patience must be >= 1" in r.stderr


def test_translator_api_takes_guidance_and_rerank(cfg_exp: Path) -> None:
    cfg = GenerationConfig(strategy="sample", seed=1, guidance=1.5, rerank=2)
    tr = Translator.from_checkpoint(cfg_exp, config=cfg)
    [res] = tr.translate(["a red circle"], src="text", tgt="image")
    assert res.tokens.shape == (IMAGE_LEN,) and res.nbest[0].rerank_score is not None


# ---- voices (issue 19 section 2) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def voiced_exp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same stand-in tokenizers with a vocabulary that lists two voices."""
    return _model_dir(tmp_path_factory.mktemp("voiced"), voices=["flite:kal", "flite:slt"], default_voice="flite:slt")


def test_cli_voice_selects_and_unknown_voice_lists_the_known(voiced_exp: Path, tmp_path: Path) -> None:
    m = str(voiced_exp / "model")
    for voice in ([], ["--voice", "flite:kal"]):
        out = tmp_path / f"v{len(voice)}"
        r = run("translate", "--model", m, "--to", "speech", "--text", "a red circle", "--output-dir", str(out), *voice)
        assert r.exit_code == 0, r.output
        assert json.loads((out / "run.json").read_text())["voice"] == (voice[1] if voice else "flite:slt")
    r = run("translate", "--model", m, "--to", "speech", "--text", "a", "--voice", "robot", "-o", str(tmp_path / "x.wav"))
    assert r.exit_code == 1
    assert "unknown voice 'robot'; the known voices are: flite:kal, flite:slt" in r.stderr, r.stderr
    r = run("translate", "--model", str(voiced_exp.parent / "nope"), "--to", "speech", "--text", "a", "-o", str(tmp_path / "y.wav"))
    assert r.exit_code == 1


def test_speech_targets_are_vocoded_in_the_chosen_voice(voiced_exp: Path) -> None:
    for voice, expected in ((None, "flite:slt"), ("flite:kal", "flite:kal")):
        tr = Translator.from_checkpoint(voiced_exp / "model", config=GenerationConfig(strategy="greedy", voice=voice))
        voc = FakeVocoder()
        tr._vocoder = voc
        [r] = tr.translate(["a red circle"], tgt="speech")
        assert r.waveform is not None and voc.asked_voices == [expected]


def test_a_vocoder_without_the_models_voice_is_refused(voiced_exp: Path, tmp_path: Path) -> None:
    from tmt.vocoder import save_vocoder
    from tmt.vocoder.config import tiny_config
    from tmt.vocoder.nets import build_model

    cfg = tiny_config("unit-mel", num_units=FakeSpeech.vocab_size)
    cfg.voices, cfg.default_voice = ["espeak-ng:en"], "espeak-ng:en"
    save_vocoder(tmp_path / "voc", build_model(cfg), cfg)
    tr = Translator.from_checkpoint(voiced_exp / "model", vocoder=tmp_path / "voc",
                                    config=GenerationConfig(strategy="greedy"))
    with pytest.raises(TranslateError, match=r"has no voice 'flite:slt' \(it knows: espeak-ng:en\)"):
        tr.translate(["a red circle"], tgt="speech")


def test_cli_voice_on_a_model_without_voices_is_refused(exp: Path, tmp_path: Path) -> None:
    r = run("translate", "--model", str(exp / "model"), "--to", "speech", "--text", "a", "--voice", "flite:kal",
            "-o", str(tmp_path / "x.wav"))
    assert r.exit_code == 1 and "lists no voices" in r.stderr, r.stderr


def test_rerank_is_refused_for_a_model_that_never_trained_the_reverse_direction(exp: Path, tmp_path: Path) -> None:
    import shutil

    import yaml

    from tmt.generation.translator import trained_directions

    def model_trained_on(dirs: list[str]) -> Path:
        d = tmp_path / "_".join(dirs)
        shutil.copytree(exp / "model", d)
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        cfg["data"] = {**(cfg.get("data") or {}), "directions": dirs}
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        return d

    assert trained_directions(exp / "model") == ["i2t", "i2s", "t2i", "s2i", "s2t", "t2s"]  # no list: all six
    cfg = GenerationConfig(strategy="sample", seed=1, rerank=2)
    single = model_trained_on(["t2i"])
    assert trained_directions(single) == ["t2i"]
    with pytest.raises(TranslateError, match=r"--rerank 2 .* i2t, which .* was not trained on .*--rerank 0"):
        Translator.from_checkpoint(single, config=cfg).translate(["a red circle"], src="text", tgt="image")
    # without reranking it decodes; with the reverse direction trained it reranks
    [res] = Translator.from_checkpoint(single, config=GenerationConfig(strategy="sample", seed=1)).translate(
        ["a red circle"], src="text", tgt="image")
    assert res.tokens.shape == (IMAGE_LEN,)
    [res] = Translator.from_checkpoint(model_trained_on(["t2i", "i2t"]), config=cfg).translate(
        ["a red circle"], src="text", tgt="image")
    assert res.nbest[0].rerank_score is not None
    # a speech source reranks through its decoded caption: speech->text and image->text
    with pytest.raises(TranslateError, match=r"s2t, i2t"):
        Translator.from_checkpoint(single, config=cfg).translate_tokens([np.array([1, 2, 3])], src="speech", tgt="image")


def test_reranking_by_the_reverse_score_alone(exp: Path) -> None:
    from tmt.generation.rerank import pair_logprobs

    caption = FakeText().encode(["a red circle"])[0]
    tr = Translator.from_checkpoint(exp / "model", config=GenerationConfig(rerank=4, rerank_forward=0.0, seed=1, top_k=8))
    [r] = tr.translate(["a red circle"], tgt="image")
    assert len(r.tokens) == IMAGE_LEN and isinstance(r.image, Image.Image)
    # forward weight 0: the kept candidate's score is log p(caption | candidate), the best of the four
    v = tr.vocab
    want = pair_logprobs(tr.model, [v.to_joint("image", r.tokens)], [v.to_joint("text", caption)], "text")[0]
    assert r.nbest[0].rerank_score == pytest.approx(want, abs=1e-5)
    tr.generator.restart_sampling()
    tr.generator.config.nbest = 4  # the translator's own config object
    row = tr.generator.generate([caption], "text", "image")[0]["image"]
    scores = [h.rerank_score for h in row]
    assert len(row) == 4 and scores == sorted(scores, reverse=True)
    np.testing.assert_array_equal(row[0].tokens, r.tokens)  # the same seeded stream as translate()
    for h in row:
        rev = pair_logprobs(tr.model, [v.to_joint("image", h.tokens)], [v.to_joint("text", caption)], "text")[0]
        assert h.rerank_score == pytest.approx(rev, abs=1e-5)
