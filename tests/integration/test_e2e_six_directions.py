"""End to end on a really trained tiny pipeline (issues 7 and 10, done-when):

20-scene corpus -> tokenizers -> stores -> vocab -> `tmt train --preset tiny` (loss clearly down)
-> `tmt translate` batch mode in all six directions (CLI) and from Python -> `tmt score` over the
six output directories (scores.json / report.md / scores.png, judges or reasons) -> `tmt score
--compare` -> `tmt score --model` (translate + score in one go).

The pipeline comes from the session fixture `tiny_pipeline` (tests/integration/conftest.py).
Quality is not asserted beyond "the model learned the caption format"; structure is asserted
precisely.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner, Result
from PIL import Image

from tmt.cli import cli

pytestmark = pytest.mark.slow

DIRECTIONS = [("image", "text"), ("image", "speech"), ("text", "image"), ("speech", "image"),
              ("speech", "text"), ("text", "speech")]
LIMIT = 3
"""Test-split rows translated per direction."""
IMAGES = 1
"""Images among those rows: the tiny test split is one scene, and an image source is translated
once per image (`tmt translate` without `--all-rows`)."""
BEAM = 3
TOKENS_PER_IMAGE = 32
IMAGE_SIZE = (64, 64)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

BLEU = ("bleu1", "bleu2", "bleu3", "bleu4")
COCO = ("meteor", "rouge_l", "cider")
SCENE = ("scene_exact",)
ENTRY_KEYS = {"direction", "src", "tgt", "via", "hyp_dir", "manifest", "split", "model", "n", "metrics",
              "unavailable", "notes", "extra", "ceiling", "samples"}


TinyPipeline = Any
"""`tests/integration/conftest.py: TinyPipeline` (not imported: two conftest modules share the name)."""


def invoke(*args: object) -> Result:
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, f"tmt {' '.join(map(str, args))} -> {r.exit_code}\n{r.output}"
    return r


def _speech_units(p: TinyPipeline) -> int:
    return int(json.loads((p.tokenizers["speech"] / "tokenizer.json").read_text())["vocab_size"])


def _judges() -> tuple[str, str]:
    """Why the ASR judge / the COCO metrics are unavailable here ('' when they are installed)."""
    from tmt.evaluation.asr import default_model_dir
    from tmt.evaluation.metrics import coco_available

    try:
        import faster_whisper  # noqa: F401

        asr_dir, asr_why = default_model_dir()
        asr_why = "" if asr_dir else asr_why
    except ImportError:
        asr_why = "faster-whisper is not installed"
    coco_ok, coco_why = coco_available()
    return asr_why, "" if coco_ok else coco_why


def _expected_metrics(src: str, tgt: str) -> tuple[tuple[str, ...], str]:
    """(metrics the entry must account for, which judge they need: '', 'asr' or 'coco'/'asr+coco')."""
    if tgt == "text":
        return (BLEU + COCO, "coco") if src == "image" else (("wer", "cer"), "")
    if tgt == "speech":
        return (("wer", "cer"), "asr") if src == "text" else (BLEU + COCO, "asr+coco")
    return SCENE, ""


def _expected_rows(src: str) -> int:
    return IMAGES if src == "image" else LIMIT


def _lines(d: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (d / "hypotheses.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def six(tiny_pipeline: TinyPipeline, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`tmt translate --manifest test.jsonl.gz --split test` for all six directions (speech through the vocoder)."""
    p = tiny_pipeline
    out = tmp_path_factory.mktemp("six")
    dirs: dict[str, Path] = {}
    for src, tgt in DIRECTIONS:
        d = out / f"{src}-{tgt}"
        extra = ["--vocoder", p.vocoder] if tgt == "speech" else []
        r = invoke("translate", "--model", p.exp, "--manifest", p.manifests["test"], "--split", "test",
                   "--from", src, "--to", tgt, "--output-dir", d, "--limit", LIMIT, "--beam-size", BEAM, *extra)
        assert f"wrote {_expected_rows(src)} {tgt} outputs" in r.stderr
        dirs[f"{src}->{tgt}"] = d
    return dirs


def test_the_tiny_model_has_learned(tiny_pipeline: TinyPipeline) -> None:
    """Training CE fell far below chance (log of each target slice's size) in every direction."""
    from tmt.vocab import JointVocab

    print("tiny_pipeline stages (wall s, cpu s):", tiny_pipeline.timings)  # shown with -s
    res = tiny_pipeline.train_result
    assert res["step"] > 0 and set(res["train_ce"]) == {"i2t", "i2s", "t2i", "s2i", "s2t", "t2s"}
    sizes = JointVocab.load(tiny_pipeline.vocab).sizes
    full = {"t": "text", "s": "speech", "i": "image"}
    first = json.loads((tiny_pipeline.exp / "metrics.jsonl").read_text().splitlines()[0])
    for d, ce in res["train_ce"].items():
        chance = math.log(sizes[full[d[2]]])
        assert ce < 0.7 * chance, (d, ce, chance)
        assert ce < first[f"ce/{d}"], (d, ce, first[f"ce/{d}"])  # and fell during training
    assert set(res["valid_ce"]) == set(res["train_ce"])


def test_batch_translation_outputs(six: dict[str, Path], tiny_pipeline: TinyPipeline) -> None:
    from tmt.store.manifest import read_manifest

    test_ids = {r["id"] for r in read_manifest(tiny_pipeline.manifests["test"], split="test")}
    for key, d in six.items():
        src, tgt = key.split("->")
        lines = _lines(d)
        run = json.loads((d / "run.json").read_text())
        n = _expected_rows(src)
        assert (run["src"], run["tgt"], run["split"], run["num"], run["beam_size"]) == (src, tgt, "test", n, BEAM)
        assert len(lines) == n and len({x["id"] for x in lines}) == n
        for x in lines:
            assert x["id"] in test_ids and (x["src"], x["tgt"]) == (src, tgt) and math.isfinite(x["score"])
            assert x["tokens"], x
            if tgt == "text":
                assert isinstance(x["hyp"], str) and x["hyp"].strip(), x
            elif tgt == "image":
                assert len(x["tokens"]) == TOKENS_PER_IMAGE
                f = d / x["hyp"]
                assert f.name == f"{x['id']}.png" and f.read_bytes()[:8] == PNG_MAGIC
                with Image.open(f) as im:
                    assert im.size == IMAGE_SIZE and im.format == "PNG"
            else:
                assert all(0 <= t < _speech_units(tiny_pipeline) for t in x["tokens"])
                f = d / x["hyp"]
                assert f.name == f"{x['id']}.wav" and not (d / f"{x['id']}.units.txt").exists()
                wav, sr = sf.read(f, dtype="float32")
                assert sr == 16000 and wav.ndim == 1 and len(wav) > 0 and np.isfinite(wav).all()
        assert not list(d.glob(".staging*"))  # nothing left half-written


def test_speech_without_vocoder_writes_units(tiny_pipeline: TinyPipeline, tmp_path: Path) -> None:
    p = tiny_pipeline
    d = tmp_path / "t2s-units"
    r = invoke("translate", "--model", p.exp, "--manifest", p.manifests["test"], "--split", "test",
               "--from", "text", "--to", "speech", "--output-dir", d, "--limit", 2, "--greedy")
    assert "no --vocoder given" in r.stderr
    for x in _lines(d):
        assert x["hyp"] == f"{x['id']}.units.txt" and not (d / f"{x['id']}.wav").exists()
        units = [int(u) for u in (d / x["hyp"]).read_text().split()]
        assert units == x["tokens"] and all(0 <= u < _speech_units(p) for u in units)
    # scoring unit-only outputs without a vocoder: unavailable, with the reason, never a number
    r = invoke("score", "run", d, "--no-ceiling", "--json")
    [entry] = json.loads(r.stdout[r.stdout.index("{"):])["directions"].values()
    assert entry["metrics"] == {}
    assert set(entry["unavailable"]) == {"wer", "cer"}
    assert all(why for why in entry["unavailable"].values())


def test_python_api_two_directions(tiny_pipeline: TinyPipeline) -> None:
    from tmt.generation import Translator
    from tmt.generation.generator import GenerationConfig
    from tmt.store.manifest import media_path, read_manifest

    p = tiny_pipeline
    man = p.manifests["test"]
    row = read_manifest(man, split="test")[0]
    tr = Translator.from_checkpoint(p.exp, vocoder=p.vocoder, config=GenerationConfig(beam_size=2))
    [cap] = tr.translate([media_path(man, row["image"])], src="image", tgt="text", ids=[row["id"]])
    assert (cap.src, cap.tgt, cap.id) == ("image", "text", row["id"])
    assert isinstance(cap.text, str) and cap.text.strip() and math.isfinite(cap.score)
    said = tr.translate([row["text"]], src="text", tgt="speech")
    assert said[0].waveform is not None and said[0].sample_rate == 16000
    assert said[0].waveform.dtype == np.float32 and len(said[0].waveform) > 0
    assert len(said[0].units) >= 1  # type: ignore[arg-type]
    [img] = tr.translate([media_path(man, row["speech"])], src="speech", tgt="image")
    assert len(img.tokens) == TOKENS_PER_IMAGE and img.image.size == IMAGE_SIZE


def test_score_all_six_and_compare(six: dict[str, Path], tiny_pipeline: TinyPipeline, tmp_path: Path) -> None:
    p = tiny_pipeline
    out = tmp_path / "scores"
    r = invoke("score", *[six[f"{s}->{t}"] for s, t in DIRECTIONS], "--out-dir", out,
               "--vocoder", p.vocoder, "--samples", 2)
    assert f"wrote {out}/scores.json" in r.stdout
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores["directions"]) == [f"{s}->{t}" for s, t in DIRECTIONS]  # report order
    asr_why, coco_why = _judges()
    for key, e in scores["directions"].items():
        src, tgt = key.split("->")
        assert ENTRY_KEYS <= set(e), (key, ENTRY_KEYS - set(e))
        assert (e["direction"], e["src"], e["tgt"], e["via"], e["split"]) == (key, src, tgt, None, "test")
        assert e["hyp_dir"] == str(six[key]) and e["manifest"] == str(p.manifests["test"])
        # image sources: one output per image (the 5 test rows are one scene)
        assert e["n"] == _expected_rows(src)
        expected, needs = _expected_metrics(src, tgt)
        for m in expected:
            missing = [w for j, w in (("asr", asr_why), ("coco", coco_why)) if j in needs and w]
            if m in e["metrics"]:
                v = e["metrics"][m]
                assert isinstance(v, float) and math.isfinite(v) and v >= 0, (key, m, v)
                assert m in ("wer", "cer") or v <= 100, (key, m, v)
                assert m not in e["unavailable"]
            else:
                assert m in e["unavailable"] and isinstance(e["unavailable"][m], str) and e["unavailable"][m], (key, m)
                assert missing, f"{key}: {m} unavailable although its judges are installed: {e['unavailable'][m]}"
            if not missing and m not in COCO:  # COCO tools may fail at run time (reported with a reason)
                assert m in e["metrics"], (key, m, e["unavailable"])
        assert set(e["metrics"]).isdisjoint(e["unavailable"])
        assert len(e["samples"]) == min(2, e["n"]) and all("id" in s for s in e["samples"])
        if tgt == "image":
            assert e["judge"] == {"judge": "tmt.corpora.scenes parser"}
            c = e["ceiling"]
            assert c["source"] == "scene parser on the ground-truth images"
            assert c["metrics"]["scene_exact"] >= 50  # the parser reads the corpus' own renders
        elif tgt == "speech":
            c = e["ceiling"]
            if asr_why:
                assert "wer" in c["unavailable"] and c["source"] is None
            else:
                assert e["judge"]["prompt_used"] is False  # no vocabulary prompt by default
                assert c["source"].startswith("original recordings") and c["n"] == e["n"]
                assert c["metrics"]["wer"] < 60  # the judge understands the corpus' TTS speech
        else:
            assert e["ceiling"] is None
    i2t = scores["directions"]["image->text"]
    assert i2t["metrics"]["bleu1"] > 0  # the model writes captions in the corpus' words
    # report and chart
    report = (out / "report.md").read_text()
    for key in scores["directions"]:
        assert f"## {key}" in report
    assert "![scores](scores.png)" in report
    png = (out / "scores.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1000
    # compare with itself: every metric present on both sides, zero deltas
    r = invoke("score", "--compare", out, out, "--json")
    rows = json.loads(r.stdout)
    assert rows and {x["direction"] for x in rows} == set(scores["directions"])
    assert sum(len(e["metrics"]) for e in scores["directions"].values()) == len(rows)
    for x in rows:
        assert x["a"] == x["b"] and x["delta"] == 0 and x["better"] == "="
    r = invoke("score", "compare", out / "scores.json", out)
    assert "delta" in r.stdout and "+0.00" not in r.stdout


def test_score_model_and_split_mode(tiny_pipeline: TinyPipeline, tmp_path: Path) -> None:
    p = tiny_pipeline
    out = tmp_path / "model-mode"
    r = invoke("score", "--model", p.exp, "--manifest", p.manifests["test"], "--split", "test",
               "--directions", "i2t,t2i", "--out-dir", out, "--limit", 2, "--beam-size", 2, "--no-coco", "--json")
    scores = json.loads(r.stdout[r.stdout.index("{"):])
    assert list(scores["directions"]) == ["image->text", "text->image"]
    assert json.loads((out / "scores.json").read_text())["directions"].keys() == scores["directions"].keys()
    i2t, t2i = (out / "hyp" / "image-text"), (out / "hyp" / "text-image")
    # image sources: one input per image (the test split is one scene); text: --limit rows
    assert [x["src"] for x in _lines(i2t)] == ["image"]
    assert len(_lines(t2i)) == 2 and all((t2i / x["hyp"]).is_file() for x in _lines(t2i))
    run = json.loads((t2i / "run.json").read_text())
    assert (run["model"], run["split"], run["beam_size"], run["limit"]) == (str(p.exp), "test", 2, 2)
    assert scores["directions"]["image->text"]["n"] == 1 and scores["directions"]["text->image"]["n"] == 2
    assert set(BLEU) <= set(scores["directions"]["image->text"]["metrics"])
    assert "scene_exact" in scores["directions"]["text->image"]["metrics"]
    assert (out / "report.md").is_file() and (out / "scores.png").is_file()
    assert not list((out / "hyp").glob(".*"))  # no temporary directories left


def test_parse_score_directions() -> None:
    from tmt.cli.score_model import parse_score_directions
    from tmt.evaluation.score import ScoreError

    six = [("image", "text"), ("image", "speech"), ("text", "image"), ("speech", "image"), ("speech", "text"),
           ("text", "speech")]
    assert parse_score_directions(None) == parse_score_directions("all") == six
    assert parse_score_directions("t2s, i2t") == [("image", "text"), ("text", "speech")]  # report order
    assert parse_score_directions(["speech->image", "image-text", "i2t"]) == [("image", "text"), ("speech", "image")]
    for bad in ("", "t2t", "x2y", "image->image", "text"):
        with pytest.raises(ScoreError):
            parse_score_directions(bad)


def test_score_model_mode_errors(tiny_pipeline: TinyPipeline, tmp_path: Path) -> None:
    p = tiny_pipeline

    def fails(*args: object) -> str:
        r = CliRunner().invoke(cli, ["score", *map(str, args)])
        assert r.exit_code != 0, r.output
        return r.output

    assert "--model needs --manifest" in fails("--model", p.exp, "--out-dir", tmp_path / "x")
    assert "not both" in fails(tmp_path, "--model", p.exp, "--manifest", p.manifests["test"], "--out-dir", tmp_path)
    assert "apply to --model runs only" in fails(tmp_path, "--split", "test")
    out = fails("--model", p.exp, "--manifest", p.manifests["test"], "--out-dir", tmp_path / "y", "--directions", "i2x")
    assert "unknown direction 'i2x'" in out and "Traceback" not in out
    assert not (tmp_path / "y" / "hyp").exists() or not any((tmp_path / "y" / "hyp").iterdir())
