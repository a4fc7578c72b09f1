"""The CLI bad-input matrix: verb x bad input, each one clear error and no partial output.

Every case builds its bad input from code (no checked-in fixtures) next to the session's tiny
trained pipeline (`tiny_pipeline`, read-only: cases copy what they damage), runs `tmt ...`
in-process with click's CliRunner, and asserts:

- a non-zero exit status;
- no Python traceback in the output (a `TmtError` is printed as one `error: ...` line);
- the message names the offending path or value (the case's `needle`);
- no partial output: the case's output path is absent before and after, or unchanged.

Unwritable outputs: the tests run as root, for whom `chmod` does not block writes, so "a
directory that cannot be written" is a path under /proc (the kernel refuses new files there
for every user) and "a path under a file" is a path whose parent is a regular file.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

TinyPipeline = Any
"""`tests/integration/conftest.py: TinyPipeline` (not imported: two conftest modules share the name)."""

Build = Callable[[TinyPipeline, Path], tuple[list[Any], str, Path | None]]
"""(pipeline, tmp dir) -> (argv after `tmt`, text the error must contain, output path to watch)."""


@dataclass(frozen=True)
class Case:
    verb: str
    name: str
    build: Build


CASES: list[Case] = []


def case(verb: str, name: str) -> Callable[[Build], Build]:
    def deco(f: Build) -> Build:
        CASES.append(Case(verb, name, f))
        return f

    return deco


def run_tmt(args: list[Any]) -> Result:
    from tmt.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def snapshot(path: Path | None) -> Any:
    """What exists at `path`: None, the bytes of a file, or {relative name: bytes} of a tree."""
    if path is None or not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))}


# ----------------------------------------------------------------------------- bad files
def a_file(tmp: Path) -> Path:
    """A regular file, to put outputs 'under' it."""
    f = tmp / "plain-file"
    f.write_text("not a directory\n")
    return f


UNWRITABLE = Path("/proc/tmt-cannot-write-here")
"""A directory nobody (root included) can create: outputs below it cannot be written."""

BAD_JSON: dict[str, bytes] = {
    "array": b"[1, 2, 3]\n",
    "binary": bytes(range(256)) * 4,
    "invalid": b'{"size": 3,,}\n',
    "empty": b"",
}


def write_wav(path: Path, wave: np.ndarray, sr: int = 16000) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, subtype="PCM_16" if wave.dtype != np.float32 else "FLOAT")
    return path


def tone(seconds: float = 1.0, sr: int = 16000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    w = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float64)
    return np.stack([w] * channels, axis=1) if channels > 1 else w


def bad_wav(tmp: Path, kind: str) -> Path:
    p = tmp / f"{kind}.wav"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "random":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        write_wav(p, tone())
        p.write_bytes(p.read_bytes()[:30])  # cut inside the header
    elif kind == "header-only":
        write_wav(p, tone())
        p.write_bytes(p.read_bytes()[:44])
    elif kind == "silent":
        write_wav(p, np.zeros(16000))
    elif kind == "short":
        write_wav(p, tone(0.001))
    elif kind == "nan":
        w = tone().astype(np.float32)
        w[100:200] = np.nan
        write_wav(p, w)
    else:
        raise ValueError(kind)
    return p


def png_with_size(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (its data is a 1x1 image): huge, but tiny on disk."""
    from PIL import Image

    Image.new("RGB", (1, 1)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))
    return path


def bad_png(tmp: Path, kind: str) -> Path:
    from tmt.testing.fixtures import make_png

    p = tmp / f"{kind}.png"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "random":
        p.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        make_png(p, 64)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif kind == "huge":
        png_with_size(p, 100_000, 100_000)
    else:
        raise ValueError(kind)
    return p


def copy_exp(pipe: TinyPipeline, tmp: Path) -> Path:
    exp = tmp / "exp"
    shutil.copytree(pipe.exp, exp, ignore=shutil.ignore_patterns("checkpoints"))
    return exp


def copy_store(pipe: TinyPipeline, tmp: Path, split: str = "test") -> Path:
    st = tmp / "store"
    shutil.copytree(pipe.stores[split], st)
    return st


def copy_tok(pipe: TinyPipeline, tmp: Path, m: str) -> Path:
    d = tmp / f"tok-{m}"
    shutil.copytree(pipe.tokenizers[m], d)
    return d


def vocab_json(pipe: TinyPipeline) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(pipe.vocab.read_text())
    return data


def speech_manifest(pipe: TinyPipeline, tmp: Path, bad: dict[int, str] | None = None, n: int = 4) -> Path:
    """A plain-jsonl manifest of `n` test rows (absolute media paths); rows in `bad` get a bad wav."""
    from tmt.store.manifest import media_path, read_manifest

    src = pipe.manifests["test"]
    rows = [r for r in read_manifest(src) if r.get("speech")][:n]
    out = []
    for i, r in enumerate(rows):
        r = dict(r, speech=str(media_path(src, r["speech"])), image=str(media_path(src, r["image"])) if r.get("image") else None)
        if bad and i in bad:
            r["speech"] = str(bad_wav(tmp, bad[i]))
        out.append({k: v for k, v in r.items() if v is not None})
    p = tmp / "rows.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in out))
    return p


def translate(pipe: TinyPipeline, *args: Any, model: Path | None = None) -> list[Any]:
    return ["translate", "--model", model or pipe.exp, "--greedy", *args]


# ----------------------------------------------------------------------------- translate
@case("translate", "o-under-a-file")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = a_file(tmp) / "out.png"
    return translate(pipe, "--to", "image", "--text", "a red circle", "-o", out), str(out.parent), out


@case("translate", "o-unwritable-dir")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = UNWRITABLE / "out.png"
    return translate(pipe, "--to", "image", "--text", "a red circle", "-o", out), str(UNWRITABLE), out


@case("translate", "output-dir-under-a-file")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = a_file(tmp) / "hyps"
    man = speech_manifest(pipe, tmp)
    return translate(pipe, "--manifest", man, "--from", "speech", "--to", "text", "--output-dir", out), str(out.parent), out


for _kind in ("empty", "random", "truncated", "header-only", "silent", "short", "nan"):

    @case("translate", f"wav-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        wav = bad_wav(tmp, kind)
        out = tmp / "out.txt"
        return translate(pipe, "--to", "text", wav, "-o", out), str(wav), out

    @case("translate", f"manifest-row-wav-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        man = speech_manifest(pipe, tmp, bad={1: kind})
        out = tmp / "hyps"
        return (translate(pipe, "--manifest", man, "--from", "speech", "--to", "text", "--output-dir", out),
                str(tmp / f"{kind}.wav"), out)


for _kind in ("empty", "random", "truncated", "huge"):

    @case("translate", f"png-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        png = bad_png(tmp, kind)
        out = tmp / "out.txt"
        return translate(pipe, "--to", "text", png, "-o", out), str(png), out


@case("translate", "text-not-utf8")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    f = tmp / "in.txt"
    f.write_bytes("a red circle".encode("utf-16"))
    return translate(pipe, "--to", "image", f, "-o", tmp / "o.png"), str(f), tmp / "o.png"


@case("translate", "text-empty")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    f = tmp / "in.txt"
    f.write_text("\n  \n")
    return translate(pipe, "--to", "image", f, "-o", tmp / "o.png"), str(f), tmp / "o.png"


for _kind in BAD_JSON:

    @case("translate", f"model-vocab-json-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        exp = copy_exp(pipe, tmp)
        (exp / "vocab.json").write_bytes(BAD_JSON[kind])
        return translate(pipe, "--to", "image", "--text", "a red circle", "-o", tmp / "o.png", model=exp), \
            str(exp / "vocab.json"), tmp / "o.png"


for _key in ("offset", "size"):

    @case("translate", f"model-vocab-json-no-{_key}")
    def _(pipe: TinyPipeline, tmp: Path, key: str = _key) -> tuple[list[Any], str, Path | None]:
        exp = copy_exp(pipe, tmp)
        v = vocab_json(pipe)
        del v["modalities"]["text"][key]
        (exp / "vocab.json").write_text(json.dumps(v))
        return translate(pipe, "--to", "image", "--text", "a red circle", "-o", tmp / "o.png", model=exp), key, tmp / "o.png"


@case("translate", "model-config-yaml-list")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    exp = copy_exp(pipe, tmp)
    (exp / "config.yaml").write_text("- 1\n- 2\n")
    return translate(pipe, "--to", "image", "--text", "a red circle", "-o", tmp / "o.png", model=exp), \
        str(exp / "config.yaml"), tmp / "o.png"


@case("translate", "model-config-yaml-binary")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    exp = copy_exp(pipe, tmp)
    (exp / "config.yaml").write_bytes(BAD_JSON["binary"])
    return translate(pipe, "--to", "image", "--text", "a red circle", "-o", tmp / "o.png", model=exp), \
        str(exp / "config.yaml"), tmp / "o.png"


for _kind in ("random", "truncated", "json"):

    @case("translate", f"model-weights-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        exp = copy_exp(pipe, tmp)
        w = exp / "model.pt"
        data = w.read_bytes()
        w.write_bytes({"random": bytes(range(256)) * 8, "truncated": data[: len(data) // 3], "json": b'{"a": 1}'}[kind])
        return translate(pipe, "--to", "image", "--text", "a red circle", "-o", tmp / "o.png", model=exp), \
            str(w), tmp / "o.png"


for _kind in ("array", "binary"):

    @case("translate", f"tokenizer-json-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        tok = copy_tok(pipe, tmp, "text")
        (tok / "tokenizer.json").write_bytes(BAD_JSON[kind])
        return translate(pipe, "--to", "image", "--text", "a red circle", "--tokenizer", f"text={tok}",
                         "-o", tmp / "o.png"), str(tok / "tokenizer.json"), tmp / "o.png"


@case("translate", "tokenizer-json-no-fingerprint")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    tok = copy_tok(pipe, tmp, "text")
    info = json.loads((tok / "tokenizer.json").read_text())
    del info["fingerprint"]
    (tok / "tokenizer.json").write_text(json.dumps(info))
    return translate(pipe, "--to", "image", "--text", "a red circle", "--tokenizer", f"text={tok}",
                     "-o", tmp / "o.png"), "fingerprint", tmp / "o.png"


@case("translate", "vocoder-json-array")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    voc = tmp / "voc"
    shutil.copytree(pipe.vocoder, voc)
    (voc / "vocoder.json").write_bytes(BAD_JSON["array"])
    return translate(pipe, "--to", "speech", "--text", "a red circle", "--vocoder", voc, "-o", tmp / "o.wav"), \
        str(voc / "vocoder.json"), tmp / "o.wav"


for _kind in ("list", "invalid"):

    @case("translate", f"config-file-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        cfg = tmp / "gen.yaml"
        cfg.write_text({"list": "- beam\n", "invalid": "beam_size: [1,\n"}[kind])
        return translate(pipe, "--to", "text", "--text", "a red circle", "--config", cfg, "-o", tmp / "o.txt"), \
            str(cfg), tmp / "o.txt"


# ----------------------------------------------------------------------------- vocab
@case("vocab", "o-under-a-file")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = a_file(tmp) / "vocab.json"
    return ["vocab", "build", "--text", pipe.tokenizers["text"], "--image", pipe.tokenizers["image"], "-o", out], \
        str(out.parent), out


@case("vocab", "o-unwritable-dir")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = UNWRITABLE / "vocab.json"
    return ["vocab", "build", "--text", pipe.tokenizers["text"], "--image", pipe.tokenizers["image"], "-o", out], \
        str(UNWRITABLE), out


for _kind in BAD_JSON:

    @case("vocab", f"show-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        v = tmp / "vocab.json"
        v.write_bytes(BAD_JSON[kind])
        return ["vocab", "show", v], str(v), None


for _key in ("offset", "size"):

    @case("vocab", f"show-no-{_key}")
    def _(pipe: TinyPipeline, tmp: Path, key: str = _key) -> tuple[list[Any], str, Path | None]:
        v = vocab_json(pipe)
        del v["modalities"]["speech"][key]
        p = tmp / "vocab.json"
        p.write_text(json.dumps(v))
        return ["vocab", "show", p], f"'{key}'", None


@case("vocab", "show-offset-wrong-type")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    v = vocab_json(pipe)
    v["modalities"]["image"]["offset"] = "twelve"
    p = tmp / "vocab.json"
    p.write_text(json.dumps(v))
    return ["vocab", "show", p], "twelve", None


for _kind, _edit in (("array", None), ("no-vocab-size", "vocab_size"), ("binary", None)):

    @case("vocab", f"build-tokenizer-json-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind, key: str | None = _edit) -> tuple[list[Any], str, Path | None]:
        tok = copy_tok(pipe, tmp, "text")
        if key is None:
            (tok / "tokenizer.json").write_bytes(BAD_JSON[kind])
        else:
            info = json.loads((tok / "tokenizer.json").read_text())
            del info[key]
            (tok / "tokenizer.json").write_text(json.dumps(info))
        out = tmp / "vocab.json"
        return ["vocab", "build", "--text", tok, "--image", pipe.tokenizers["image"], "-o", out], str(tok / "tokenizer.json"), out


# ----------------------------------------------------------------------------- train
def train(pipe: TinyPipeline, out: Path, *, vocab: Path | None = None, store: Path | None = None, extra: tuple[Any, ...] = ()) -> list[Any]:
    return ["train", "-o", out, "--preset", "tiny", "--vocab", vocab or pipe.vocab, "--store", store or pipe.stores["train"],
            "--max-steps", 2, "--device", "cpu", "--set", "train.threads=1", "--set", "plot=false", *extra]


@case("train", "o-under-a-file")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = a_file(tmp) / "exp"
    return train(pipe, out), str(out.parent), out


@case("train", "o-unwritable-dir")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = UNWRITABLE / "exp"
    return train(pipe, out), str(UNWRITABLE), out


for _kind in ("array", "binary", "invalid"):

    @case("train", f"vocab-json-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        v = tmp / "vocab.json"
        v.write_bytes(BAD_JSON[kind])
        return train(pipe, tmp / "exp", vocab=v), str(v), tmp / "exp"


for _key in ("offset", "size"):

    @case("train", f"vocab-json-no-{_key}")
    def _(pipe: TinyPipeline, tmp: Path, key: str = _key) -> tuple[list[Any], str, Path | None]:
        v = vocab_json(pipe)
        del v["modalities"]["image"][key]
        p = tmp / "vocab.json"
        p.write_text(json.dumps(v))
        return train(pipe, tmp / "exp", vocab=p), f"'{key}'", tmp / "exp"


for _kind in ("array", "binary"):

    @case("train", f"store-index-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        st = copy_store(pipe, tmp, "train")
        (st / "index.json").write_bytes(BAD_JSON[kind])
        return train(pipe, tmp / "exp", store=st), str(st / "index.json"), tmp / "exp"


@case("train", "config-file-list")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    cfg = tmp / "train.yaml"
    cfg.write_text("- lr\n")
    return train(pipe, tmp / "exp", extra=("--config", cfg)), str(cfg), tmp / "exp"


@case("train", "resume-config-binary")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    exp = tmp / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_bytes(BAD_JSON["binary"])
    return train(pipe, exp, extra=("--resume",)), str(exp / "config.yaml"), exp


# ----------------------------------------------------------------------------- manifest
def truncate_bin(st: Path) -> Path:
    b = sorted(st.glob("*.bin"))[0]
    b.write_bytes(b.read_bytes()[: b.stat().st_size // 2])
    return b


for _verb in ("stats", "head", "validate"):

    @case("manifest", f"{_verb}-truncated-bin")
    def _(pipe: TinyPipeline, tmp: Path, verb: str = _verb) -> tuple[list[Any], str, Path | None]:
        st = copy_store(pipe, tmp)
        b = truncate_bin(st)
        return ["manifest", verb, st], str(b), None

    @case("manifest", f"{_verb}-missing-idx")
    def _(pipe: TinyPipeline, tmp: Path, verb: str = _verb) -> tuple[list[Any], str, Path | None]:
        st = copy_store(pipe, tmp)
        idx = sorted(st.glob("*.idx"))[0]
        idx.unlink()
        return ["manifest", verb, st], str(idx), None


for _kind in ("array", "binary", "invalid"):

    @case("manifest", f"stats-index-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        st = copy_store(pipe, tmp)
        (st / "index.json").write_bytes(BAD_JSON[kind])
        return ["manifest", "stats", st], str(st / "index.json"), None


@case("manifest", "stats-index-no-shards")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    st = copy_store(pipe, tmp)
    idx = json.loads((st / "index.json").read_text())
    del idx["shards"]
    (st / "index.json").write_text(json.dumps(idx))
    return ["manifest", "stats", st], "shards", None


@case("manifest", "stats-manifest-not-utf8")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    m = tmp / "m.jsonl"
    m.write_bytes('{"id": "é"}\n'.encode("latin-1"))
    return ["manifest", "stats", m], str(m), None


@case("manifest", "head-manifest-line-not-object")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    m = tmp / "m.jsonl"
    m.write_text('{"id": "a", "text": "x"}\n[1, 2]\n')
    return ["manifest", "head", m], f"{m}:2", None


@case("manifest", "stats-manifest-gz-truncated")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    m = tmp / "m.jsonl.gz"
    data = gzip.compress(b"".join(b'{"id": "r%d", "text": "a red circle"}\n' % i for i in range(200)))
    m.write_bytes(data[: len(data) // 2])
    return ["manifest", "stats", m], str(m), None


@case("manifest", "combine-o-under-a-file")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = a_file(tmp) / "all.jsonl.gz"
    return ["manifest", "combine", pipe.manifests["test"], pipe.manifests["valid"], "-o", out], str(out.parent), out


@case("manifest", "split-out-dir-unwritable")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = UNWRITABLE / "parts"
    return ["manifest", "split", pipe.manifests["test"], "--fractions", "a=0.5,b=0.5", "--out-dir", out], str(UNWRITABLE), out


# ----------------------------------------------------------------------------- score
def hyp_dir(tmp: Path, lines: bytes, run: bytes | None = None) -> Path:
    d = tmp / "hyps"
    d.mkdir()
    (d / "hypotheses.jsonl").write_bytes(lines)
    if run is not None:
        (d / "run.json").write_bytes(run)
    return d


GOOD_HYP = b'{"id": "r1", "group": "r1", "src": "speech", "tgt": "text", "hyp": "a red circle"}\n'

for _name, _lines in (("line-array", GOOD_HYP + b"[1, 2]\n"), ("line-string", b'"just a string"\n'),
                      ("line-invalid", b"{oops\n"), ("binary", BAD_JSON["binary"]), ("no-field", b'{"id": "r1"}\n')):

    @case("score", f"hypotheses-{_name}")
    def _(pipe: TinyPipeline, tmp: Path, lines: bytes = _lines) -> tuple[list[Any], str, Path | None]:
        d = hyp_dir(tmp, lines)
        out = tmp / "scores"
        return ["score", "run", d, "--manifest", pipe.manifests["test"], "--out-dir", out, "--no-coco"], \
            str(d / "hypotheses.jsonl"), out


for _kind in ("array", "binary"):

    @case("score", f"run-json-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        d = hyp_dir(tmp, GOOD_HYP, BAD_JSON[kind])
        out = tmp / "scores"
        return ["score", "run", d, "--manifest", pipe.manifests["test"], "--out-dir", out, "--no-coco"], \
            str(d / "run.json"), out


for _kind in ("array", "binary", "no-directions"):

    @case("score", f"compare-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, kind: str = _kind) -> tuple[list[Any], str, Path | None]:
        a = tmp / "a.json"
        a.write_bytes(b'{"version": 1}' if kind == "no-directions" else BAD_JSON[kind])
        b = tmp / "b.json"
        b.write_text(json.dumps({"directions": {}}))
        return ["score", "compare", a, b], str(a), None


# ----------------------------------------------------------------------------- tokenize
@case("tokenize", "all-store-under-a-file")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = a_file(tmp) / "store"
    return ["tokenize", "all", "--text", pipe.tokenizers["text"], "--manifest", pipe.manifests["test"],
            "--store", out], str(out.parent), out


@case("tokenize", "all-tokenizer-json-array")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    tok = copy_tok(pipe, tmp, "text")
    (tok / "tokenizer.json").write_bytes(BAD_JSON["array"])
    out = tmp / "store"
    return ["tokenize", "all", "--text", tok, "--manifest", pipe.manifests["test"], "--store", out], \
        str(tok / "tokenizer.json"), out


@case("tokenize", "text-encode-manifest-line-not-object")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    m = tmp / "m.jsonl"
    m.write_text('{"id": "a", "split": "test", "text": "a red circle"}\n"oops"\n')
    out = tmp / "store"
    return ["tokenize", "text", "encode", "--tokenizer", pipe.tokenizers["text"], "--manifest", m, "--store", out], \
        f"{m}:2", out


for _kind, _text in (("list", "- a\n"), ("no-class", "name: x\n"), ("binary", None)):

    @case("tokenize", f"text-fit-card-{_kind}")
    def _(pipe: TinyPipeline, tmp: Path, text: str | None = _text) -> tuple[list[Any], str, Path | None]:
        card = tmp / "card.yaml"
        if text is None:
            card.write_bytes(BAD_JSON["binary"])
        else:
            card.write_text(text)
        out = tmp / "tok"
        return ["tokenize", "text", "fit", "--card", card, "--manifest", pipe.manifests["train"], "--out", out], \
            str(card), out


# ----------------------------------------------------------------------------- vocoder
@case("vocoder", "synthesize-vocoder-json-binary")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    voc = tmp / "voc"
    shutil.copytree(pipe.vocoder, voc)
    (voc / "vocoder.json").write_bytes(BAD_JSON["binary"])
    out = tmp / "wavs"
    return ["vocoder", "synthesize", voc, "--store", pipe.stores["test"], "--limit", 1, "--out-dir", out], \
        str(voc / "vocoder.json"), out


@case("vocoder", "import-fairseq-config-array")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    ck = tmp / "g_00000001"
    ck.write_bytes(bytes(range(256)))
    cfg = tmp / "config.json"
    cfg.write_bytes(BAD_JSON["array"])
    out = tmp / "voc"
    return ["vocoder", "import-fairseq", ck, cfg, "--out", out], str(cfg), out


@case("vocoder", "import-fairseq-checkpoint-random")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    ck = tmp / "g_00000001"
    ck.write_bytes(bytes(range(256)) * 4)
    cfg = tmp / "config.json"
    cfg.write_text(json.dumps({
        "resblock": "1", "upsample_rates": [5, 4, 4, 4], "upsample_kernel_sizes": [11, 8, 8, 8],
        "upsample_initial_channel": 32, "resblock_kernel_sizes": [3, 5], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
        "num_embeddings": 30, "embedding_dim": 16, "model_in_dim": 16, "segment_size": 8960, "code_hop_size": 320,
        "sampling_rate": 16000,
    }))
    out = tmp / "voc"
    return ["vocoder", "import-fairseq", ck, cfg, "--out", out], str(ck), out


@case("vocoder", "train-out-under-a-file")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = a_file(tmp) / "voc"
    return ["vocoder", "train", "--store", pipe.stores["train"], "--manifest", pipe.manifests["train"], "--out", out,
            "--config", "tiny", "--arch", "unit-mel", "--set", "train.max_steps=1"], str(out.parent), out


# ----------------------------------------------------------------------------- backtranslate
@case("backtranslate", "out-under-a-file")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    out = a_file(tmp) / "synth"
    return ["backtranslate", "-m", pipe.exp, "--store", pipe.stores["test"], "-o", out], str(out.parent), out


@case("backtranslate", "store-truncated-index")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    st = copy_store(pipe, tmp)
    data = (st / "index.json").read_bytes()
    (st / "index.json").write_bytes(data[: len(data) // 2])
    out = tmp / "synth"
    return ["backtranslate", "-m", pipe.exp, "--store", st, "-o", out], str(st / "index.json"), out


@case("backtranslate", "model-vocab-binary")
def _(pipe: TinyPipeline, tmp: Path) -> tuple[list[Any], str, Path | None]:
    exp = copy_exp(pipe, tmp)
    (exp / "vocab.json").write_bytes(BAD_JSON["binary"])
    out = tmp / "synth"
    return ["backtranslate", "-m", exp, "--store", pipe.stores["test"], "-o", out], str(exp / "vocab.json"), out


# ----------------------------------------------------------------------------- the test
@pytest.mark.parametrize("c", CASES, ids=[f"{c.verb}:{c.name}" for c in CASES])
def test_bad_input(c: Case, tiny_pipeline: TinyPipeline, tmp_path: Path) -> None:
    args, needle, out = c.build(tiny_pipeline, tmp_path)
    before = snapshot(out)
    r = run_tmt(args)
    text = r.output
    assert r.exit_code != 0, f"tmt {' '.join(map(str, args))} exited 0:\n{text}"
    assert "Traceback" not in text, text
    assert "error: " in text, text
    assert needle in text, f"{needle!r} not named in:\n{text}"
    assert snapshot(out) == before, f"partial output left at {out}"


def test_matrix_size() -> None:
    verbs = {c.verb for c in CASES}
    assert len(CASES) >= 60 and len(verbs) >= 6, (len(CASES), sorted(verbs))
    assert len({(c.verb, c.name) for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------- accepted inputs
def unusual_media(tmp: Path, kind: str) -> Path:
    from PIL import Image

    from tmt.testing.fixtures import make_png

    if kind == "wav-44k":
        return write_wav(tmp / "a.wav", tone(1.0, 44100), 44100)
    if kind == "wav-8k":
        return write_wav(tmp / "a.wav", tone(1.0, 8000), 8000)
    if kind == "wav-stereo":
        return write_wav(tmp / "a.wav", tone(1.0, 16000, channels=2))
    png = make_png(tmp / "rgb.png", 64)
    im = Image.open(png)
    mode = {"png-rgba": "RGBA", "png-gray": "L", "png-palette": "P"}[kind]
    out = tmp / f"{mode}.png"
    (im.convert(mode) if mode != "P" else im.convert("P", palette=Image.Palette.ADAPTIVE)).save(out)
    return out


@pytest.mark.parametrize("kind", ["wav-44k", "wav-8k", "wav-stereo", "png-rgba", "png-gray", "png-palette"])
def test_unusual_media_are_converted(kind: str, tiny_pipeline: TinyPipeline, tmp_path: Path) -> None:
    """Other sample rates and channel counts are resampled/mixed down; RGBA, grayscale and
    palette images are converted to RGB: all translate."""
    media = unusual_media(tmp_path, kind)
    out = tmp_path / "out.txt"
    r = run_tmt(translate(tiny_pipeline, "--to", "text", media, "-o", out))
    assert r.exit_code == 0, r.output
    assert out.is_file() and out.read_text().strip()


# ----------------------------------------------------------------------------- --skip-bad
def test_skip_bad_counts_and_records(tiny_pipeline: TinyPipeline, tmp_path: Path) -> None:
    man = speech_manifest(tiny_pipeline, tmp_path, bad={1: "silent", 3: "random"}, n=5)
    out = tmp_path / "hyps"
    args = translate(tiny_pipeline, "--manifest", man, "--from", "speech", "--to", "text", "--output-dir", out)
    r = run_tmt(args)
    assert r.exit_code != 0 and "silent" in r.output and not out.exists()
    r = run_tmt([*args, "--skip-bad"])
    assert r.exit_code == 0, r.output
    run = json.loads((out / "run.json").read_text())
    lines = [json.loads(x) for x in (out / "hypotheses.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in man.read_text().splitlines()]
    assert run["skipped"] == 2 and run["skipped_ids"] == [rows[1]["id"], rows[3]["id"]]
    assert run["num"] == 3 and [h["id"] for h in lines] == [rows[i]["id"] for i in (0, 2, 4)]
    assert "skipped" in r.output


def test_skip_bad_all_bad_fails(tiny_pipeline: TinyPipeline, tmp_path: Path) -> None:
    man = speech_manifest(tiny_pipeline, tmp_path, bad={0: "silent", 1: "empty"}, n=2)
    out = tmp_path / "hyps"
    r = run_tmt([*translate(tiny_pipeline, "--manifest", man, "--from", "speech", "--to", "text", "--output-dir", out),
                 "--skip-bad"])
    assert r.exit_code != 0 and "all 2 inputs were bad" in r.output and not out.exists()
