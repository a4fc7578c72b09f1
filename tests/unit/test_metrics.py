"""Metrics against hand-computed values: BLEU (sacrebleu), WER/CER (jiwer), COCO metrics."""

from __future__ import annotations

import math

import pytest

from tmt.evaluation import metrics as M

HYP = "the cat sat on the mat"
R1 = "the cat is on the mat"
R2 = "there is a cat on the mat"


def test_bleu_single_sentence_two_references_by_hand() -> None:
    # clipped n-gram matches of HYP against {R1, R2}:
    #   1-grams: the x2 (R1 has two), cat, on, mat -> 5/6 ("sat" unmatched)
    #   2-grams: "the cat", "on the", "the mat" -> 3/5
    #   3-grams: "on the mat" -> 1/4
    #   4-grams: none of 3 -> sacrebleu's exp smoothing: 1 / (2 * 3)
    # closest reference length 6 = hypothesis length -> BP = 1
    p = [5 / 6, 3 / 5, 1 / 4, 1 / 6]
    r = M.bleu([HYP], [[R1, R2]])
    for n in range(1, 5):
        expected = 100 * math.exp(sum(math.log(x) for x in p[:n]) / n)
        assert r.values[f"bleu{n}"] == pytest.approx(expected, abs=1e-6), n
    assert r.values["bleu1"] == pytest.approx(83.3333, abs=1e-3)
    assert r.values["bleu3"] == pytest.approx(50.0, abs=1e-6)
    assert r.values["bleu_bp"] == 1.0
    assert not r.unavailable


def test_bleu_corpus_with_variable_references_and_brevity_penalty() -> None:
    # second segment "a dog" vs the single reference "a dog runs fast":
    #   1-grams 2/2, 2-grams 1/1, no 3- or 4-grams
    # corpus: 1-grams 7/8, 2-grams 4/6, 3-grams 1/4; hyp len 8, ref len 6 + 4 = 10
    bp = math.exp(1 - 10 / 8)
    r = M.bleu([HYP, "a dog"], [[R1, R2], ["a dog runs fast"]], max_order=3)
    assert r.values["bleu1"] == pytest.approx(100 * bp * 7 / 8, abs=1e-6)
    assert r.values["bleu2"] == pytest.approx(100 * bp * math.sqrt(7 / 8 * 4 / 6), abs=1e-6)
    assert r.values["bleu3"] == pytest.approx(100 * bp * (7 / 8 * 4 / 6 * 1 / 4) ** (1 / 3), abs=1e-6)
    assert r.values["bleu_bp"] == pytest.approx(bp, abs=1e-9)
    assert r.extra["bleu_sys_len"] == 8 and r.extra["bleu_ref_len"] == 10


def test_bleu_lowercases_and_reports_missing_references() -> None:
    assert M.bleu(["The Cat"], [["the cat"]], max_order=2).values["bleu2"] == pytest.approx(100.0)
    r = M.bleu(["a b"], [[""]])
    assert "bleu4" in r.unavailable and "bleu4" not in r.values
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        M.bleu(["a", "b"], [["a"]])


def test_wer_cer_reports_the_median_utterance_and_the_babblers() -> None:
    # per pair: 2 ref words + 4 inserted = 200%; 1 substitution of 1 = 100%; exact = 0%
    r = M.wer_cer(["a b c d e f", "x", "a b"], ["a b", "y", "a b"])
    assert r.values["wer"] == pytest.approx(100.0 * 5 / 5)
    assert r.extra["utterances"] == {"median_wer": pytest.approx(100.0), "over_100": 1}
    assert M.utterance_wers([[]], ["a b"]) == [0.0]
    r = M.wer_cer(["a c", "q r s"], ["a b", "q r s"])  # a substitution and a clean pair
    assert r.extra["utterances"] == {"median_wer": pytest.approx(25.0), "over_100": 0}


def test_wer_cer_corpus_counts() -> None:
    # "a b c d" -> "a x c": 1 substitution + 1 deletion; "e f" -> "": 2 deletions; 6 ref words
    r = M.wer_cer(["a x c", ""], ["a b c d", "e f"])
    assert r.values["wer"] == pytest.approx(100 * 4 / 6)
    assert r.extra["words"] == {"ref": 6, "sub": 1, "del": 3, "ins": 0}
    # characters: "abc"->"abd" 1 sub, "de"->"d" 1 del; 5 reference characters
    c = M.wer_cer(["abd", "d"], ["abc", "de"])
    assert c.values["cer"] == pytest.approx(40.0)
    assert c.extra["chars"] == {"ref": 5, "sub": 1, "del": 1, "ins": 0}
    # insertions push WER above 100
    assert M.wer_cer(["a b c"], ["a"]).values["wer"] == pytest.approx(200.0)


def test_wer_normalizes_case_and_punctuation() -> None:
    r = M.wer_cer([" A red circle, left of the Blue square. "], ["a red circle left of the blue square"])
    assert r.values["wer"] == 0.0 and r.values["cer"] == 0.0
    assert M.normalize_for_scoring("It's  the  cat's \"toy\"!") == "it's the cat's toy"
    raw = M.wer_cer(["A cat."], ["a cat"], normalize=False)
    assert raw.values["wer"] == pytest.approx(100.0)


def test_wer_skips_empty_references() -> None:
    r = M.wer_cer(["x", "a b"], ["", "a b"])
    assert r.values["wer"] == 0.0
    assert any("empty reference" in n for n in r.notes)
    assert "wer" in M.wer_cer(["x"], ["  "]).unavailable


def test_coco_metrics_unavailable_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pycocoevalcap", reason="judges extra not installed")
    monkeypatch.setattr(M.shutil, "which", lambda name: None)
    r = M.coco_caption_metrics(["a cat"], [["a cat"]])
    assert set(r.unavailable) == {"meteor", "rouge_l", "cider"}
    assert not r.values
    assert "Java" in r.unavailable["meteor"]
    assert any("SPICE" in n for n in r.notes)


@pytest.mark.judges
@pytest.mark.timeout(1200)  # starts three Java programs; ~100 s on a busy 2-core machine
def test_coco_metrics_by_hand() -> None:
    ok, why = M.coco_available()
    if not ok:
        pytest.skip(why)
    hyp = "a red circle left of a square"
    ref = "A red circle left of a blue square."
    r = M.coco_caption_metrics([hyp, "two green stars"], [[ref], ["two green stars"]])
    assert not r.unavailable, r.unavailable
    # ROUGE-L (beta 1.2): LCS 7 words; P = 7/7, R = 7/8; second pair identical -> 1
    p, rec, b2 = 1.0, 7 / 8, 1.2**2
    first = (1 + b2) * p * rec / (rec + b2 * p)
    assert r.values["rouge_l"] == pytest.approx(100 * (first + 1.0) / 2, abs=1e-4)
    assert 0 < r.values["meteor"] <= 100
    assert r.values["cider"] > 0


def test_mean_of_realisations_averages_each_metric_and_keeps_the_unavailable() -> None:
    a = M.MetricResult(values={"wer": 10.0, "cer": 4.0}, unavailable={"bleu4": "no captions"}, extra={"n": 3})
    b = M.MetricResult(values={"wer": 20.0}, unavailable={"bleu4": "no captions"})
    out = M.mean_of_realisations([("world", a), ("seed-1", b)])
    # cer is missing from one realisation: left out, never half-averaged
    assert out.values == {"wer": 15.0}
    assert out.unavailable == {"bleu4": "no captions"} and out.extra["n"] == 3
    assert out.extra["realisations"] == [{"noise": "world", "wer": 10.0, "cer": 4.0}, {"noise": "seed-1", "wer": 20.0}]
    assert M.mean_of_realisations([("world", a)]) is a
    assert M.mean_over_runs([{"x": 1, "y": None}, {"x": 2, "y": 3}], ["x", "y"]) == {"x": 1.5}
