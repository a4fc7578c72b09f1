"""The generic manifest -> token store driver (tmt.tokenizers.encode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tmt import TmtError
from tmt.core.shards import part_dir
from tmt.store.manifest import write_manifest
from tmt.store.ops import merge_parts, validate_store
from tmt.store.token_store import (
    DURATION_VOCAB,
    TokenStore,
)
from tmt.tokenizers.encode import encode_manifest, encoder_for


class BadMedia(TmtError):
    pass


def _speech_encoder(rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Fake speech encoder: units from the file's bytes, so results are checkable."""
    out: list[dict[str, Any] | None] = []
    for r in rows:
        if not r.get("speech"):
            out.append(None)
            continue
        p = Path(r["speech"])
        assert p.is_absolute()
        data = p.read_bytes()
        if data.startswith(b"BAD"):
            raise BadMedia(f"{p}: not audio")
        units = np.frombuffer(data, dtype=np.uint8).astype(np.int64) % 50
        out.append({"speech": units, "durations": np.ones_like(units), "duration_s": len(units) * 0.02})
    return out


class FakeText:
    modality = "text"
    name = "fake-text"
    vocab_size = 30
    fingerprint = "t" * 64

    def encode(self, batch: list[str]) -> list[np.ndarray]:
        return [np.array([len(w) % 30 for w in s.split()], dtype=np.int64) for s in batch]


STREAMS = {"text": 30, "speech": 50, "durations": DURATION_VOCAB}
FPS = {"text": "t" * 64, "speech": "s" * 64}


def _corpus(tmp_path: Path, n: int = 10, bad: tuple[int, ...] = ()) -> Path:
    media = tmp_path / "wav"
    media.mkdir()
    rows = []
    for i in range(n):
        (media / f"{i}.x").write_bytes((b"BAD" if i in bad else b"") + bytes(range(i + 3, i + 10)))
        row: dict[str, Any] = {"id": f"r{i}", "group": f"g{i // 2}", "split": "train", "scene": {"n": i},
                               "image": None, "speech": f"wav/{i}.x", "text": f"a {'b' * i} c"}
        if i == 3:
            row["speech"] = None  # text only
        rows.append(row)
    rows.append({"id": "img-only", "group": "gx", "split": "train", "image": "nope.png", "speech": None, "text": None})
    man = tmp_path / "m.jsonl.gz"
    write_manifest(man, rows)
    return man


def _encode(man: Path, store: Path, **kw: Any) -> dict[str, Any]:
    return encode_manifest(
        man, store, {"speech": _speech_encoder, "text": encoder_for(FakeText())},
        streams=STREAMS, fingerprints=FPS, tokenizers={}, progress=False, batch_size=4, **kw,
    )


def test_encode_all_modalities_and_meta(tmp_path: Path) -> None:
    man = _corpus(tmp_path)
    counts = _encode(man, tmp_path / "store")
    assert counts["written"] == 10 and counts["skipped_no_modality"] == 1
    validate_store(tmp_path / "store")
    st = TokenStore(tmp_path / "store")
    assert st.fingerprints == FPS
    m = st.meta(0)
    assert m["id"] == "r0" and m["group"] == "g0" and m["split"] == "train" and m["scene"] == {"n": 0}
    assert m["synthetic"] is False and m["source"] == "m" and m["speech_path"] == "wav/0.x"
    assert m["duration_s"] == pytest.approx(7 * 0.02) and m["text"] == "a  c"
    assert st.tokens(0, "speech").tolist() == [x % 50 for x in range(3, 10)]
    assert st.tokens(1, "text").tolist() == [1, 1, 1]
    assert st.meta(3)["modalities"] == ["text"] and len(st.tokens(3, "speech")) == 0


def test_bad_media_abort_or_skip(tmp_path: Path) -> None:
    man = _corpus(tmp_path, bad=(5,))
    with pytest.raises(BadMedia, match="not audio"):
        _encode(man, tmp_path / "s1")
    counts = _encode(man, tmp_path / "s2", skip_bad=True)
    assert counts["skipped_bad"] == 1 and counts["written"] == 9
    assert "r5" not in {m["id"] for m in TokenStore(tmp_path / "s2").iter_meta()}


def test_shards_merge_resume(tmp_path: Path) -> None:
    man = _corpus(tmp_path)
    whole = tmp_path / "whole"
    _encode(man, whole)
    store = tmp_path / "sharded"
    for k in range(3):
        c = _encode(man, store, shard=f"{k}/3")
        assert c["written"] > 0
    # a finished part is skipped on rerun
    again = _encode(man, store, shard="1/3")
    assert again["already_complete"] and again["written"] == 0
    assert part_dir(store, 1, 3).is_dir()
    merge_parts(store, 3)
    validate_store(store)
    a, b = TokenStore(whole), TokenStore(store)
    assert [m["id"] for m in a.iter_meta()] == [m["id"] for m in b.iter_meta()]
    for i in range(len(a)):
        for s in STREAMS:
            assert a.tokens(i, s).tolist() == b.tokens(i, s).tolist()


def test_resume_after_interruption(tmp_path: Path) -> None:
    man = _corpus(tmp_path, bad=(7,))
    store = tmp_path / "store"
    # dies at row 7; shards of 2 rows were flushed before that
    with pytest.raises(BadMedia):
        _encode(man, store, shard_rows=2)
    st = TokenStore(store)
    assert not st.complete and 0 < len(st) < 9
    # fix the file, rerun: continues after the last flushed row
    (tmp_path / "wav" / "7.x").write_bytes(bytes(range(10, 17)))
    c = _encode(man, store, shard_rows=2)
    assert c["resumed_after"] > 0
    validate_store(store)
    assert [m["id"] for m in TokenStore(store).iter_meta()] == [f"r{i}" for i in range(10)]


def test_different_tokenizer_refuses_resume(tmp_path: Path) -> None:
    man = _corpus(tmp_path)
    _encode(man, tmp_path / "s")
    with pytest.raises(TmtError, match="different source"):
        encode_manifest(man, tmp_path / "s", {"speech": _speech_encoder}, streams=STREAMS,
                        fingerprints={"speech": "x" * 64}, tokenizers={}, progress=False)
    c = encode_manifest(man, tmp_path / "s", {"speech": _speech_encoder}, streams=STREAMS,
                        fingerprints={"speech": "x" * 64}, tokenizers={}, progress=False, overwrite=True)
    assert c["written"] == 9 and c["skipped_no_modality"] == 2


def test_split_filter_and_empty(tmp_path: Path) -> None:
    man = _corpus(tmp_path)
    with pytest.raises(TmtError, match="no rows with split 'valid'"):
        _encode(man, tmp_path / "s", split="valid")
