from __future__ import annotations

import json

import numpy as np
import pytest

from tmt.vocab import (
    BOS,
    EOS,
    NEUTRAL_TYPE,
    NUM_SPECIALS,
    PAD,
    UNK,
    FingerprintMismatch,
    JointVocab,
    TokenizerInfo,
    VocabError,
)


def make_vocab(sizes=None, fps=None) -> JointVocab:
    sizes = sizes or {"text": 50, "speech": 20, "image": 29}
    fps = fps or {m: f"{m}-fp" for m in sizes}
    return JointVocab({m: TokenizerInfo(name=f"{m}-tok", size=n, fingerprint=fps[m], card={"k": n}) for m, n in sizes.items()})


def test_layout_matches_design():
    v = make_vocab()
    assert (PAD, UNK, EOS) == (0, 1, 2)
    assert BOS == {"text": 3, "speech": 4, "image": 5}
    assert v.range("text") == (16, 66)
    assert v.range("speech") == (66, 86)
    assert v.range("image") == (86, 115)
    assert v.size == 115


def test_paper_sizes_give_38930_ids():
    v = JointVocab.from_sizes({"text": 30522, "speech": 200, "image": 8192})
    assert v.size == NUM_SPECIALS + 30522 + 200 + 8192


@pytest.mark.parametrize("modality", ["text", "speech", "image"])
def test_round_trip_every_modality(modality):
    v = make_vocab()
    n = v.sizes[modality]
    local = np.arange(n)
    joint = v.to_joint(modality, local)
    assert joint.min() == v.range(modality)[0] and joint.max() == v.range(modality)[1] - 1
    assert all(v.modality_of(int(t)) == modality for t in joint)
    # specials are stripped when decoding a generated sequence
    seq = np.concatenate([[v.bos(modality)], joint, [EOS, PAD]])
    np.testing.assert_array_equal(v.from_joint(modality, seq), local)


def test_out_of_range_and_cross_modality_ids_are_refused():
    v = make_vocab()
    with pytest.raises(VocabError, match="speech ids must lie in"):
        v.to_joint("speech", [0, 20])
    with pytest.raises(VocabError, match="not a image token"):
        v.from_joint("image", [v.range("text")[0]])
    with pytest.raises(VocabError, match="unknown modality"):
        v.range("video")


def test_type_table():
    v = make_vocab()
    t = v.type_table()
    assert t.shape == (v.size,)
    assert t[PAD] == t[UNK] == t[EOS] == NEUTRAL_TYPE
    assert t[BOS["text"]] == 0 and t[BOS["speech"]] == 1 and t[BOS["image"]] == 2
    assert t[6] == NEUTRAL_TYPE  # reserved
    s, e = v.range("speech")
    assert set(t[s:e].tolist()) == {1}


def test_allowed_mask_is_slice_plus_eos():
    v = make_vocab()
    m = v.allowed_mask("image")
    s, e = v.range("image")
    assert m[EOS] and m[s:e].all() and m.sum() == (e - s) + 1


def test_save_load_round_trip(tmp_path):
    v = make_vocab()
    v.save(tmp_path / "vocab.json")
    w = JointVocab.load(tmp_path)
    assert w.to_json() == v.to_json()
    data = json.loads((tmp_path / "vocab.json").read_text())
    assert data["modalities"]["speech"]["offset"] == 66
    assert data["modalities"]["text"]["fingerprint"] == "text-fp"


def test_fingerprint_mismatch_refused():
    v = make_vocab()
    v.check_fingerprints({"speech": "speech-fp", "text": "text-fp"})
    with pytest.raises(FingerprintMismatch, match=r"speech .*fingerprint"):
        v.check_fingerprints({"speech": "other-kmeans"})


def test_tampered_vocab_json_is_refused(tmp_path):
    v = make_vocab()
    data = v.to_json()
    data["modalities"]["image"]["offset"] = 99
    (tmp_path / "vocab.json").write_text(json.dumps(data))
    with pytest.raises(VocabError, match="offset"):
        JointVocab.load(tmp_path / "vocab.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(VocabError, match="not valid JSON"):
        JointVocab.load(tmp_path / "bad.json")
