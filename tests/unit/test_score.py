"""`tmt score` on small synthetic hypotheses directories: metrics, files, compare, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from PIL import Image

from tmt.evaluation import score as S
from tmt.evaluation.images import scene_scores, token_agreement
from tmt.store.manifest import write_manifest

CAPTIONS = {
    "g0": ["a red circle", "a red round circle"],
    "g1": ["a blue square", "one blue square"],
    "g2": ["a green star", "a small green star"],
}


def make_manifest(root: Path) -> Path:
    """Three images with two captions each; every caption row has a 0.2 s wav."""
    rows: list[dict[str, Any]] = []
    (root / "media").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for g, caps in CAPTIONS.items():
        img = root / "media" / f"{g}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(img)
        for k, cap in enumerate(caps):
            wav = root / "media" / f"{g}_{k}.wav"
            sf.write(wav, (0.1 * rng.standard_normal(3200)).astype(np.float32), 16000)
            rows.append({"id": f"{g}_{k}", "group": g, "split": "test", "image": f"media/{g}.png",
                         "speech": f"media/{g}_{k}.wav", "text": cap})
    path = root / "test.jsonl.gz"
    write_manifest(path, rows)
    return path


def make_hyp_dir(root: Path, src: str, tgt: str, hyps: list[dict[str, Any]], manifest: Path | None,
                 media: dict[str, bytes] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    run = {"src": src, "tgt": tgt, "via": None, "manifest": str(manifest) if manifest else None,
           "split": "test", "model": "exp/tiny", "beam_size": 5}
    (root / "run.json").write_text(json.dumps(run))
    with open(root / "hypotheses.jsonl", "w") as f:
        for h in hyps:
            f.write(json.dumps({"group": h["id"].split("_")[0], "src": src, "tgt": tgt, "tokens": [], "score": -1.0,
                                "via": None} | h) + "\n")
    for name, data in (media or {}).items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    return make_manifest(tmp_path / "data")


def _cfg(**kw: Any) -> S.ScoreConfig:
    return S.ScoreConfig(coco=False, **kw)


def test_image_to_text_uses_all_captions_of_the_group(tmp_path: Path, manifest: Path) -> None:
    hyps = [{"id": "g0_0", "hyp": "a red round circle"}, {"id": "g1_0", "hyp": "one blue square"}]
    d = make_hyp_dir(tmp_path / "i2t", "image", "text", hyps, manifest)
    e = S.score_dir(d, _cfg())
    # each hypothesis equals the SECOND caption of its group: perfect BLEU only with group references
    assert e["metrics"]["bleu4"] == pytest.approx(100.0)
    assert e["n"] == 2 and e["direction"] == "image->text"
    assert "meteor" not in e["metrics"] and any("--no-coco" in n for n in e["notes"])
    hyps = [{"id": "g0_0", "hyp": "a red square"}]
    e = S.score_dir(make_hyp_dir(tmp_path / "i2t2", "image", "text", hyps, manifest), _cfg())
    # 1-grams: a, red match; square does not -> 2/3; "a red" matches, "red square" not -> 1/2
    # closest reference length 3 -> BP 1
    assert e["metrics"]["bleu1"] == pytest.approx(100 * 2 / 3, abs=1e-6)
    assert e["metrics"]["bleu2"] == pytest.approx(100 * math.sqrt(2 / 3 * 1 / 2), abs=1e-6)
    # two rows of one image: one output per image is scored (the first)
    hyps = [{"id": "g0_0", "hyp": "a red circle"}, {"id": "g0_1", "hyp": "nothing alike"}]
    e = S.score_dir(make_hyp_dir(tmp_path / "i2t3", "image", "text", hyps, manifest), _cfg())
    assert e["n"] == 1 and e["metrics"]["bleu1"] == pytest.approx(100.0)
    assert any("one per image" in n for n in e["notes"])


def test_speech_to_text_wer_against_the_row_transcript(tmp_path: Path, manifest: Path) -> None:
    hyps = [{"id": "g0_0", "hyp": "a red circle"}, {"id": "g1_1", "hyp": "one blue"}, {"id": "g2_0", "hyp": "a green star star"}]
    e = S.score_dir(make_hyp_dir(tmp_path / "s2t", "speech", "text", hyps, manifest), _cfg())
    # ref words 3 + 3 + 3 = 9; errors: 0 + 1 deletion + 1 insertion
    assert e["metrics"]["wer"] == pytest.approx(100 * 2 / 9)
    assert e["extra"]["words"] == {"ref": 9, "sub": 0, "del": 1, "ins": 1}


class FakeJudge:
    """Stands in for Whisper: 'hears' a fixed transcript per file name."""

    prompt = None

    def __init__(self, by_name: dict[str, str]) -> None:
        self.by_name = by_name
        self.calls: list[list[Any]] = []

    def transcribe(self, items: list[Any]) -> list[str]:
        self.calls.append(list(items))
        return [self.by_name.get(Path(i).name, "") if not isinstance(i, tuple) else "" for i in items]

    def describe(self) -> dict[str, Any]:
        return {"judge": "fake", "prompt_used": False}


def test_text_to_speech_with_judge_and_ceiling(tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = (0.1 * np.ones(1600, dtype=np.float32)).tobytes()
    hyps = [{"id": "g0_0", "hyp": "g0_0.wav"}, {"id": "g1_0", "hyp": "g1_0.wav"}]
    d = make_hyp_dir(tmp_path / "t2s", "text", "speech", hyps, manifest)
    for h in hyps:
        sf.write(d / h["hyp"], np.frombuffer(wav, dtype=np.float32), 16000)
    # the judge hears hypothesis files in d and ground-truth files in media/ (same names)
    judge = FakeJudge({"g0_0.wav": "a red circle", "g1_0.wav": "a blue"})
    monkeypatch.setattr(S.Judges, "asr", lambda self: (judge, ""))
    e = S.score_dir(d, _cfg())
    # 6 reference words, 1 deletion
    assert e["metrics"]["wer"] == pytest.approx(100 / 6)
    # ceiling: the same fake judge on the original recordings (media/g0_0.wav, media/g1_0.wav)
    assert e["ceiling"]["metrics"]["wer"] == pytest.approx(100 / 6)
    assert "original recordings" in e["ceiling"]["source"]
    assert [Path(p).parent.name for p in judge.calls[1]] == ["media", "media"]
    assert e["samples"][0]["transcript"] == "a red circle"


def test_speech_metrics_unavailable_without_judge_or_vocoder(tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hyps = [{"id": "g0_0", "hyp": "g0_0.units.txt"}]
    d = make_hyp_dir(tmp_path / "i2s", "image", "speech", hyps, manifest, media={"g0_0.units.txt": b"3 4 5 6\n"})
    monkeypatch.setattr(S.Judges, "asr", lambda self: (None, "faster-whisper is not installed"))
    e = S.score_dir(d, _cfg())
    assert e["metrics"] == {}
    assert "faster-whisper is not installed" in e["unavailable"]["bleu4"]
    monkeypatch.setattr(S.Judges, "asr", lambda self: (FakeJudge({}), ""))
    e = S.score_dir(d, _cfg(ceiling=False))
    assert e["metrics"] == {}
    assert "units only" in e["unavailable"]["bleu4"] and "--vocoder" in e["unavailable"]["bleu4"]


def test_scene_scores_by_hand() -> None:
    # compare/matches injected: per-attribute flags written by hand
    table = {
        ("p1", "r1"): {"shape": True, "colour": True, "all": True},
        ("p2", "r2"): {"shape": True, "colour": False, "all": False},
        ("p3", "r3"): {"shape": False, "colour": False, "all": False},
    }
    r = scene_scores(["p1", "p2", "p3", None], ["r1", "r2", "r3", "r4"],
                     compare=lambda p, q: table[(p, q)], matches=lambda p, q: table[(p, q)]["all"])
    assert r.values == {"scene_exact": 25.0, "scene_colour": 25.0, "scene_shape": 50.0}
    assert r.extra["scenes_unparsed"] == 1


def test_token_agreement_by_hand() -> None:
    r = token_agreement([[1, 2, 3, 4], [5, 6]], [[1, 2, 0, 4], [5, 6, 7, 8]])
    # 3 + 2 equal positions out of 4 + 4 reference positions; no sequence is exact
    assert r.values["token_agreement"] == pytest.approx(100 * 5 / 8)
    assert r.values["token_exact"] == 0.0
    assert token_agreement([[1, 2]], [[1, 2]]).values["token_exact"] == 100.0


def test_text_to_image_token_agreement_with_ref_store(tmp_path: Path, manifest: Path) -> None:
    from tmt.store.token_store import TokenStoreWriter

    store = tmp_path / "store"
    with TokenStoreWriter(store, streams={"image": 16}) as w:
        for i, g in enumerate(CAPTIONS):
            for k in range(2):
                w.add({"id": f"{g}_{k}", "group": g}, {"image": [i, 1, 2, 3]})
    png = Image.new("RGB", (8, 8)).tobytes()
    hyps = [{"id": "g0_0", "hyp": "g0_0.png", "tokens": [0, 1, 2, 3]}, {"id": "g1_1", "hyp": "g1_1.png", "tokens": [0, 1, 9, 9]}]
    d = make_hyp_dir(tmp_path / "t2i", "text", "image", hyps, manifest)
    for h in hyps:
        Image.frombytes("RGB", (8, 8), png).save(d / h["hyp"])
    e = S.score_dir(d, _cfg())
    assert "token_agreement" in e["unavailable"] and "--ref-store" in e["unavailable"]["token_agreement"]
    e = S.score_dir(d, _cfg(ref_store=str(store)))
    # g0 reference [0,1,2,3]: 4/4; g1 reference [1,1,2,3]: position 1 only -> 1/4
    assert e["metrics"]["token_agreement"] == pytest.approx(100 * 5 / 8)
    assert e["metrics"]["token_exact"] == 50.0


def test_score_runs_writes_scores_report_and_chart(tmp_path: Path, manifest: Path) -> None:
    a = make_hyp_dir(tmp_path / "runs" / "image-text", "image", "text",
                     [{"id": "g0_0", "hyp": "a red circle"}, {"id": "g2_0", "hyp": "a green | star"}], manifest)
    b = make_hyp_dir(tmp_path / "runs" / "speech-text", "speech", "text", [{"id": "g1_0", "hyp": "a blue"}], manifest)
    scores = S.score_runs([a, b], cfg=_cfg())
    out = tmp_path / "runs"
    data = json.loads((out / S.SCORES_FILE).read_text())
    assert list(data["directions"]) == ["image->text", "speech->text"]
    assert data["directions"]["speech->text"]["metrics"]["wer"] == pytest.approx(100 / 3)
    assert data == json.loads(json.dumps(scores))
    png = (out / S.CHART_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out / S.CHART_FILE) as im:
        assert im.size[0] > 400
    report = (out / S.REPORT_FILE).read_text()
    assert "## image->text" in report and "## speech->text" in report
    assert "| bleu4 |" in report and "| wer |" in report
    assert "a green \\| star" in report  # table cells escaped
    # speech source links are relative to the report
    assert "](../data/media/g1_0.wav)" in report


def test_report_links_media_and_lists_unavailable(tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S.Judges, "asr", lambda self: (None, "judge missing here"))
    hyps = [{"id": "g0_0", "hyp": "g0_0.wav"}]
    d = make_hyp_dir(tmp_path / "t2s", "text", "speech", hyps, manifest)
    sf.write(d / "g0_0.wav", np.zeros(160, dtype=np.float32), 16000)
    S.score_runs([d], cfg=_cfg())
    report = (d / S.REPORT_FILE).read_text()
    assert "[g0_0.wav](g0_0.wav)" in report
    assert "unavailable: ASR judge unavailable: judge missing here" in report
    data = json.loads((d / S.SCORES_FILE).read_text())
    assert data["directions"]["text->speech"]["metrics"] == {}


def test_compare_deltas_and_direction_of_better(tmp_path: Path) -> None:
    def scores(wer: float, bleu: float) -> dict[str, Any]:
        return {"directions": {
            "speech->text": {"metrics": {"wer": wer}},
            "image->text": {"metrics": {"bleu4": bleu}},
        }}

    rows = S.compare(scores(20.0, 10.0), scores(15.0, 12.5))
    by = {(r["direction"], r["metric"]): r for r in rows}
    assert by[("speech->text", "wer")]["delta"] == pytest.approx(-5.0)
    assert by[("speech->text", "wer")]["better"] == "b"  # lower WER wins
    assert by[("image->text", "bleu4")]["delta"] == pytest.approx(2.5)
    assert by[("image->text", "bleu4")]["better"] == "b"
    rows = S.compare(scores(20.0, 10.0), {"directions": {"image->text": {"metrics": {"bleu4": 10.0}}}})
    by = {(r["direction"], r["metric"]): r for r in rows}
    assert by[("speech->text", "wer")]["b"] is None and by[("speech->text", "wer")]["delta"] is None
    assert by[("image->text", "bleu4")]["better"] == "="


def test_errors_name_the_file(tmp_path: Path, manifest: Path) -> None:
    with pytest.raises(S.ScoreError, match=r"hypotheses\.jsonl not found"):
        S.score_dir(tmp_path)
    d = make_hyp_dir(tmp_path / "x", "image", "text", [{"id": "zz_0", "hyp": "a"}], manifest)
    with pytest.raises(S.ScoreError, match="none of the 1 hypothesis ids"):
        S.score_dir(d, _cfg())
    d = make_hyp_dir(tmp_path / "y", "image", "text", [{"id": "g0_0", "hyp": "a"}], None)
    with pytest.raises(S.ScoreError, match="--manifest"):
        S.score_dir(d, _cfg())
    with pytest.raises(S.ScoreError, match="run `tmt score` first"):
        S.load_scores(tmp_path / "nothing")


def test_cli_score_and_compare(tmp_path: Path, manifest: Path) -> None:
    from tmt.cli import cli

    a = make_hyp_dir(tmp_path / "a", "speech", "text", [{"id": "g1_0", "hyp": "a blue"}], manifest)
    b = make_hyp_dir(tmp_path / "b", "speech", "text", [{"id": "g1_0", "hyp": "a blue square"}], manifest)
    runner = CliRunner()
    for d in (a, b):
        res = runner.invoke(cli, ["score", str(d), "--no-coco"])
        assert res.exit_code == 0, res.output
        assert "speech->text" in res.output and "wer" in res.output
    res = runner.invoke(cli, ["score", "--compare", str(a), str(b), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    wer = next(r for r in rows if r["metric"] == "wer")
    assert wer["a"] == pytest.approx(100 / 3) and wer["b"] == 0.0 and wer["better"] == "b"
    res = runner.invoke(cli, ["score", "compare", str(a), str(b)])
    assert res.exit_code == 0 and "delta" in res.output
    res = runner.invoke(cli, ["score", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "error:" in res.output and "hypotheses.jsonl not found" in res.output
    res = runner.invoke(cli, ["score", "--help"])
    assert res.exit_code == 0 and "Examples:" in res.output


def test_text_to_image_on_scenes_uses_the_scene_parser(tmp_path: Path) -> None:
    from tmt.corpora.scenes import (
        ScenesConfig,
        clean_scene,
        parse_scene,
        plan_scenes,
        render_scene,
        scene_matches,
    )

    cfg = ScenesConfig(num_scenes=8)
    plans = []
    for p in plan_scenes(cfg):  # keep scenes the parser reads back correctly from their own image
        img = render_scene(p["scene"], p["render"], cfg.image_size)
        if scene_matches(parse_scene(img), p["scene"]):
            plans.append((p, img))
        if len(plans) == 4:
            break
    assert len(plans) == 4
    data = tmp_path / "scenes"
    (data / "images").mkdir(parents=True)
    rows = []
    for p, img in plans:
        img.save(data / "images" / f"{p['id']}.png")
        rows.append({"id": f"{p['id']}_0", "group": p["id"], "split": "test", "image": f"images/{p['id']}.png",
                     "speech": None, "text": p["captions"][0]["text"], "scene": clean_scene(p["scene"])})
    write_manifest(data / "test.jsonl.gz", rows)
    ids = [r["id"] for r in rows]
    # rows 0 and 1: the right image; row 2: row 3's image; row 3: no output file
    hyps = [{"id": i, "hyp": f"{i}.png"} for i in ids]
    d = make_hyp_dir(tmp_path / "t2i", "text", "image", hyps, data / "test.jsonl.gz")
    for k, src in ((0, 0), (1, 1), (2, 3)):
        plans[src][1].save(d / f"{ids[k]}.png")
    wrong = scene_matches(parse_scene(plans[3][1]), plans[2][0]["scene"])
    e = S.score_dir(d, _cfg())
    assert e["metrics"]["scene_exact"] == pytest.approx(100 * (2 + wrong) / 4)
    assert e["metrics"]["scene_count"] >= e["metrics"]["scene_exact"]
    assert e["ceiling"]["metrics"]["scene_exact"] == 100.0
    assert any("missing" in n for n in e["notes"])
    assert [s["exact"] for s in e["samples"]] == [True, True, wrong, False]
    scores = S.score_runs([d], cfg=_cfg(), out_dir=tmp_path / "scores")
    assert S.headline(scores["directions"]["text->image"]) == ("scene_exact", e["metrics"]["scene_exact"])
    # the report shows a grid: each sample's reference (left) beside its output (right)
    from tmt.evaluation.score.grid import CELL

    assert "![references (left) and outputs (right)](grid_text-image.png)" in (tmp_path / "scores" / "report.md").read_text()
    with Image.open(tmp_path / "scores" / "grid_text-image.png") as grid:
        g = np.asarray(grid.convert("RGB"))
    for k, (ref, out) in enumerate([(0, 0), (1, 1), (2, 3)]):
        x = k * (2 * CELL + 8)
        for offset, img in ((0, plans[ref][1]), (CELL + 4, plans[out][1])):
            want = np.asarray(img.convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST))
            assert np.array_equal(g[:CELL, x + offset:x + offset + CELL], want)
    missing = g[:CELL, 3 * (2 * CELL + 8) + CELL + 4:][:, :CELL]
    assert (missing == 200).all()  # no output file: a grey placeholder, not a crash


@pytest.mark.parametrize("arch", ["hifigan", "unit-world"])
def test_unit_outputs_are_vocoded_and_ceiling_resynthesised(tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch,
                                                            arch: str) -> None:
    import torch

    from tmt.store.token_store import DURATION_VOCAB, TokenStoreWriter
    from tmt.vocoder import build_model, save_vocoder, tiny_config

    if arch == "unit-world":
        pytest.importorskip("pyworld")
    torch.manual_seed(0)
    cfg = tiny_config(arch, num_units=20)  # type: ignore[arg-type]
    save_vocoder(tmp_path / "voc", build_model(cfg), cfg)
    store = tmp_path / "store"
    with TokenStoreWriter(store, streams={"speech": 20, "durations": DURATION_VOCAB}) as w:
        for g in CAPTIONS:
            for k in range(2):
                w.add({"id": f"{g}_{k}", "group": g}, {"speech": [1, 2, 3], "durations": [2, 3, 4]})
    hyps = [{"id": "g0_0", "hyp": "g0_0.units.txt"}, {"id": "g1_0", "hyp": "g1_0.units.txt"}]
    d = make_hyp_dir(tmp_path / "t2s", "text", "speech", hyps, manifest,
                     media={"g0_0.units.txt": b"1 2 3 4\n", "g1_0.units.txt": b"5 6\n"})

    class ArrayJudge(FakeJudge):
        def transcribe(self, items: list[Any]) -> list[str]:
            self.calls.append(list(items))
            assert all(isinstance(i, tuple) and i[1] == 16000 and i[0].ndim == 1 and i[0].size > 0 for i in items)
            return ["a red circle", "a blue square"][: len(items)]

    judge = ArrayJudge({})
    monkeypatch.setattr(S.Judges, "asr", lambda self: (judge, ""))
    e = S.score_dir(d, _cfg(vocoder=str(tmp_path / "voc"), ref_store=str(store)))
    assert e["metrics"]["wer"] == 0.0
    assert any("vocoded" in n for n in e["notes"])
    assert "resynthesised ground-truth units" in e["ceiling"]["source"]
    # 3 units with durations 2+3+4 frames of 20 ms at 16 kHz -> 9 * 320 samples
    assert len(judge.calls[1][0][0]) == 9 * 320


def test_realisations_revoice_outputs_from_their_units_and_average(tmp_path: Path, manifest: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from click.testing import CliRunner

    from tmt.cli import cli
    from tmt.store.token_store import DURATION_VOCAB, TokenStoreWriter
    from tmt.vocoder import VocoderError, build_model, load_vocoder, save_vocoder, tiny_config

    pytest.importorskip("pyworld")
    torch.manual_seed(0)
    for arch in ("unit-world", "hifigan"):
        cfg = tiny_config(arch, num_units=20)  # type: ignore[arg-type]
        save_vocoder(tmp_path / arch, build_model(cfg), cfg)
    store = tmp_path / "store"
    with TokenStoreWriter(store, streams={"speech": 20, "durations": DURATION_VOCAB}) as w:
        for g in CAPTIONS:
            for k in range(2):
                w.add({"id": f"{g}_{k}", "group": g}, {"speech": [1, 2, 3], "durations": [2, 3, 4]})
    # what `tmt translate --vocoder` writes: a wav (one realisation) and the units it came from
    hyps = [{"id": "g0_0", "hyp": "g0_0.wav", "tokens": [1, 2, 3, 4]}, {"id": "g1_0", "hyp": "g1_0.wav", "tokens": [5, 6]}]
    d = make_hyp_dir(tmp_path / "t2s", "text", "speech", hyps, manifest)
    for h in hyps:
        sf.write(d / h["hyp"], np.zeros(1600, dtype=np.float32), 16000)
    heard = iter([["a red circle", "a blue square"], ["a red", "a blue square"], ["", "a blue square"]] * 2)

    class ArrayJudge(FakeJudge):
        def transcribe(self, items: list[Any]) -> list[str]:
            self.calls.append(list(items))
            assert all(isinstance(i, tuple) for i in items)  # voiced again, not the wav files
            return next(heard)

    judge = ArrayJudge({})
    monkeypatch.setattr(S.Judges, "asr", lambda self: (judge, ""))
    e = S.score_dir(d, _cfg(vocoder=str(tmp_path / "unit-world"), ref_store=str(store), realisations=3))
    # 6 reference words: 0, 1 and 3 deletions
    assert [r["noise"] for r in e["extra"]["realisations"]] == ["world", "seed-1", "seed-2"]
    assert [r["wer"] for r in e["extra"]["realisations"]] == pytest.approx([0, 100 / 6, 50])
    assert e["metrics"]["wer"] == pytest.approx(np.mean([0, 100 / 6, 50]), abs=1e-3)
    assert e["ceiling"]["metrics"]["wer"] == pytest.approx(e["metrics"]["wer"], abs=1e-3)
    assert len(e["ceiling"]["extra"]["realisations"]) == 3
    assert e["samples"][0]["transcript"] == "a red circle"  # the first realisation's
    outputs = [c[0][0] for c in judge.calls[:3]]
    assert not np.allclose(outputs[0], outputs[1]) and not np.allclose(outputs[1], outputs[2])
    # the first realisation is the vocoder's own noise, the same frames as its own synthesis
    voc = load_vocoder(tmp_path / "unit-world")
    own = voc.synthesize([np.array([1, 2, 3, 4])], voc.predict_durations([np.array([1, 2, 3, 4])]))[0]
    assert np.allclose(outputs[0], own)
    with pytest.raises(VocoderError, match="need a unit-world vocoder"):
        S.score_dir(d, _cfg(vocoder=str(tmp_path / "hifigan"), realisations=2, ceiling=False))
    res = CliRunner().invoke(cli, ["score", "run", str(d), "--realisations", "2"])
    assert res.exit_code != 0 and "--vocoder DIR" in res.output and not (d / "scores.json").exists()


def test_compare_headline_keeps_one_metric_per_direction():
    from tmt.evaluation.score import compare

    a = {"directions": {
        "image->text": {"tgt": "text", "metrics": {"bleu1": 50.0, "bleu4": 20.0}},
        "speech->text": {"tgt": "text", "metrics": {"wer": 30.0, "cer": 10.0}},
        "text->image": {"tgt": "image", "metrics": {"scene_exact": 40.0, "scene_shape": 60.0}},
    }}
    b = {"directions": {
        "image->text": {"tgt": "text", "metrics": {"bleu1": 55.0, "bleu4": 25.0}},
        "speech->text": {"tgt": "text", "metrics": {"wer": 20.0, "cer": 8.0}},
        "text->image": {"tgt": "image", "metrics": {"scene_exact": 30.0, "scene_shape": 70.0}},
    }}
    rows = compare(a, b, headline_only=True)
    assert [(r["direction"], r["metric"], r["better"]) for r in rows] == [
        ("image->text", "bleu4", "b"), ("speech->text", "wer", "b"), ("text->image", "scene_exact", "a"),
    ]
    assert rows[1]["delta"] == -10.0
    assert len(compare(a, b)) == 6


def test_text_outputs_on_scenes_are_read_back_into_the_scene_they_describe(tmp_path: Path, manifest: Path) -> None:
    from tmt.corpora.scenes import ScenesConfig, caption_to_scene, clean_scene, plan_scenes

    plans = [p for p in plan_scenes(ScenesConfig(num_scenes=12))
             if len(p["scene"]["objects"]) == 2 and caption_to_scene(p["captions"][0]["text"])][:3]
    assert len(plans) == 3
    data = tmp_path / "scenes"
    data.mkdir()
    rows = [{"id": f"{p['id']}_0", "group": p["id"], "split": "test", "image": None, "speech": "x.wav",
             "text": p["captions"][0]["text"], "scene": clean_scene(p["scene"])} for p in plans]
    write_manifest(data / "test.jsonl.gz", rows)
    # output 0: another caption of the same scene (other words, same scene); 1: a scene-less
    # phrase; 2: the caption of scene 0 (well-formed, the wrong scene)
    texts = [plans[0]["captions"][1]["text"], "there is a little large right sign", plans[0]["captions"][0]["text"]]
    hyps = [{"id": r["id"], "hyp": t} for r, t in zip(rows, texts, strict=True)]
    e = S.score_dir(make_hyp_dir(tmp_path / "s2t", "speech", "text", hyps, data / "test.jsonl.gz"), _cfg())
    assert e["metrics"]["said_scene_exact"] == pytest.approx(100 / 3)
    assert e["extra"]["said_scenes_unparsed"] == 1
    assert any("caption parser could not read 1 of 3 outputs" in n for n in e["notes"])
    assert e["metrics"]["wer"] > 0  # the word metrics stay
    # rows without scene graphs (other corpora): no such metric
    e = S.score_dir(make_hyp_dir(tmp_path / "plain", "speech", "text", [{"id": "g0_0", "hyp": "a red circle"}], manifest), _cfg())
    assert "wer" in e["metrics"] and not any(k.startswith("said_") for k in e["metrics"])
