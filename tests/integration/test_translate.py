"""End to end: a 20-scene corpus -> real tokenizers (tiny budgets) -> token store -> vocab ->
a `tiny` model trained for a few steps -> `tmt translate` in all six directions, from the CLI
and from Python. The model is barely trained: the point is the plumbing (tokenizers found from
vocab.json, fingerprints checked, exact image token counts, outputs written and decodable),
not translation quality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from PIL import Image

from tmt.cli import cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DIRECTIONS = [("image", "text"), ("image", "speech"), ("text", "image"), ("speech", "image"),
              ("speech", "text"), ("text", "speech")]


def _ok(*args: str, input: str | None = None) -> Any:
    r = CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
    assert r.exit_code == 0, f"tmt {' '.join(map(str, args))}\n{r.output}\n{getattr(r, 'stderr', '')}"
    return r


@pytest.fixture(scope="module")
def trained(tiny_pipeline: Any) -> dict[str, Any]:
    """The session's shared tiny pipeline (tests/integration/conftest.py), in this file's terms."""
    from tmt.tokenizers.base import load_tokenizer

    return {
        "data": tiny_pipeline.corpus, "exp": tiny_pipeline.exp, "root": tiny_pipeline.root,
        "units": load_tokenizer(tiny_pipeline.tokenizers["speech"]).vocab_size,
    }


def _first_row(data: Path, split: str = "train") -> dict[str, Any]:
    from tmt.store.manifest import media_path, read_manifest

    row = next(r for r in read_manifest(data / f"{split}.jsonl.gz", split=split)
               if r.get("speech") and r.get("image") and r.get("text"))
    man = data / f"{split}.jsonl.gz"
    return {"id": row["id"], "text": row["text"], "speech": media_path(man, row["speech"]),
            "image": media_path(man, row["image"])}


def test_six_directions_from_python(trained: dict[str, Any]) -> None:
    from tmt.generation import Translator

    tr = Translator.from_checkpoint(trained["exp"])
    row = _first_row(trained["data"])
    n_img = tr.tokenizer("image").tokens_per_image
    for src, tgt in DIRECTIONS:
        [res] = tr.translate([row[src]], src=src, tgt=tgt)
        assert (res.src, res.tgt) == (src, tgt) and np.isfinite(res.score)
        if tgt == "image":
            assert len(res.tokens) == n_img
            assert isinstance(res.image, Image.Image) and res.image.size == (64, 64)
        elif tgt == "text":
            assert isinstance(res.text, str)
        else:
            assert res.units is not None and len(res.units) >= 1 and res.waveform is None
    [cascade] = tr.translate([row["speech"]], tgt="image", via="text")
    assert cascade.pivot is not None and cascade.via == "text" and len(cascade.tokens) == n_img


def test_six_directions_from_the_cli(trained: dict[str, Any], tmp_path: Path) -> None:
    exp, row = trained["exp"], _first_row(trained["data"])
    (tmp_path / "caption.txt").write_text(row["text"] + "\n")
    inputs = {"speech": str(row["speech"]), "image": str(row["image"]), "text": str(tmp_path / "caption.txt")}
    for src, tgt in DIRECTIONS:
        if tgt == "text":
            r = _ok("translate", "--model", exp, "--to", "text", "--format", "jsonl", inputs[src])
            rec = json.loads(r.stdout)
            assert rec["src"] == src and isinstance(rec["hypothesis"], str)
        elif tgt == "image":
            out = tmp_path / f"{src}.png"
            _ok("translate", "--model", exp, "--to", "image", inputs[src], "-o", out)
            assert Image.open(out).size == (64, 64)
        else:
            out = tmp_path / f"{src}.wav"
            r = _ok("translate", "--model", exp, "--to", "speech", inputs[src], "-o", out)
            units = (tmp_path / f"{src}.units.txt").read_text().split()
            assert units and all(0 <= int(u) < trained["units"] for u in units) and "units" in r.stderr
    r = _ok("translate", "--model", exp, "--to", "image", "--output-dir", tmp_path / "stdin", input=row["text"] + "\n")
    [line] = [json.loads(x) for x in (tmp_path / "stdin" / "hypotheses.jsonl").read_text().splitlines()]
    assert len(line["tokens"]) == 32 and (tmp_path / "stdin" / line["hyp"]).is_file()


def test_manifest_batch_mode(trained: dict[str, Any], tmp_path: Path) -> None:
    data, exp = trained["data"], trained["exp"]
    split = "test" if (data / "test.jsonl.gz").is_file() else "train"
    out = tmp_path / "t2i"
    _ok("translate", "--model", exp, "--manifest", data / f"{split}.jsonl.gz", "--split", split,
        "--from", "text", "--to", "image", "--output-dir", out, "--limit", "4")
    lines = [json.loads(x) for x in (out / "hypotheses.jsonl").read_text().splitlines()]
    assert 1 <= len(lines) <= 4
    for x in lines:
        assert len(x["tokens"]) == 32 and Image.open(out / x["hyp"]).size == (64, 64)
    run = json.loads((out / "run.json").read_text())
    assert run["tgt"] == "image" and run["num"] == len(lines)


def test_wrong_tokenizer_is_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    """A tokenizer whose fingerprint differs from vocab.json's is refused by name."""
    from tmt.tokenizers.base import load_tokenizer

    other = tmp_path / "speech2"
    _ok("tokenize", "speech", "fit", "--card", REPO / "tokenizers/speech-mfcc-km200.yaml",
        "--manifest", trained["data"] / "train.jsonl.gz", "--out", other, "--set", "clusters=12", "--threads", "1")
    assert load_tokenizer(other).vocab_size == 12
    row = _first_row(trained["data"])
    r = CliRunner().invoke(cli, ["translate", "--model", str(trained["exp"]), "--to", "text",
                                 "--tokenizer", f"speech={other}", str(row["speech"])])
    assert r.exit_code == 1 and "speech" in r.stderr
    wav, sr = sf.read(row["speech"])
    assert sr == 16000 and len(wav) > 0
