"""tmt.core: the direction parser, shard specs, the progress rule, JSONL and hypothesis-dir I/O."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tmt import MODALITIES, TmtError
from tmt.core.hypotheses import (
    HYPOTHESES,
    RUN_JSON,
    HypothesisDirError,
    merge_hypothesis_parts,
    read_hyp_dir,
    write_hypotheses,
)
from tmt.core.jsonl import JsonlError, iter_jsonl, read_jsonl, write_jsonl
from tmt.core.modality import (
    ALL_DIRECTIONS,
    DIRECTIONS,
    Direction,
    ModalityError,
    check_modality,
    parse_direction,
    parse_directions,
)
from tmt.core.progress import progress_enabled
from tmt.core.shards import ShardSpecError, parse_shard_spec, part_dir, shard_range


def test_modalities_are_ordered_and_checked() -> None:
    assert MODALITIES == ("text", "speech", "image")
    assert check_modality("speech") == "speech"
    with pytest.raises(ModalityError) as e:
        check_modality("video", "--to modality")
    assert "unknown --to modality 'video'" in str(e.value) and "text, speech, image" in str(e.value)


class _Mine(TmtError):
    pass


def test_check_modality_raises_the_callers_error_class() -> None:
    with pytest.raises(_Mine):
        check_modality("audio", error=_Mine)


@pytest.mark.parametrize("spelling", ["s2t", " s2t ", "speech2text", "speech->text", "speech-text"])
def test_every_direction_spelling_parses(spelling: str) -> None:
    d = parse_direction(spelling)
    assert d == Direction("speech", "text") == ("speech", "text")
    assert (d.short, d.arrow) == ("s2t", "speech->text")


@pytest.mark.parametrize("bad", ["x2t", "t2t", "image->image", "text", "", "speech->video", "s-t", "i2"])
def test_bad_directions_are_refused_with_the_spellings(bad: str) -> None:
    with pytest.raises(ModalityError) as e:
        parse_direction(bad)
    assert f"'{bad.strip()}'" in str(e.value)


def test_parse_directions_keeps_the_canonical_order() -> None:
    assert ALL_DIRECTIONS == ("i2t", "i2s", "t2i", "s2i", "s2t", "t2s")
    assert [d.short for d in parse_directions("t2s, i2t,image->text")] == ["i2t", "t2s"]
    assert parse_directions(None, allow_all=True) == parse_directions("all", allow_all=True) == list(DIRECTIONS)
    with pytest.raises(ModalityError, match="no directions"):
        parse_directions("")
    with pytest.raises(ModalityError):
        parse_directions("all")  # only where `all` is allowed


def test_shard_specs() -> None:
    assert parse_shard_spec(None) == (0, 1)
    assert parse_shard_spec("2/4") == (2, 4)
    for bad in ("4/4", "a/b", "1", "-1/2", "0/0"):
        with pytest.raises(ShardSpecError, match="shard"):
            parse_shard_spec(bad)
    ranges = [shard_range(10, k, 3) for k in range(3)]
    assert [i for r in ranges for i in r] == list(range(10))
    assert part_dir("out/store", 1, 3) == Path("out/store.parts/00001-of-00003")


def test_progress_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    class Pipe:
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr(sys, "stderr", Pipe())
    monkeypatch.delenv("TMT_PROGRESS", raising=False)
    assert progress_enabled() is False
    assert progress_enabled(True) is True
    monkeypatch.setenv("TMT_PROGRESS", "1")
    assert progress_enabled() is True
    assert progress_enabled(False) is False


def test_core_imports_no_torch_and_nothing_above_it() -> None:
    code = (
        "import sys\n"
        "import tmt.core.audio, tmt.core.device, tmt.core.hypotheses, tmt.core.io, tmt.core.jsonl, tmt.core.modality\n"
        "import tmt.core.progress, tmt.core.shards, tmt.core.tokenizer\n"
        "bad = [m for m in sys.modules if m == 'torch' or (m.startswith('tmt.') and not m.startswith('tmt.core'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz"])
def test_jsonl_round_trip(tmp_path: Path, name: str) -> None:
    rows = [{"id": "a", "text": "ein Bär"}, {"id": "b", "n": [1, 2]}]
    assert write_jsonl(tmp_path / name, rows) == 2
    assert read_jsonl(tmp_path / name) == rows
    if name.endswith(".gz"):
        with gzip.open(tmp_path / name, "rt", encoding="utf-8") as f:
            assert json.loads(f.readline()) == rows[0]
    assert not list(tmp_path.glob("*.tmp"))


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": 1}\n\n[1, 2]\n', encoding="utf-8")
    it = iter_jsonl(p)
    assert next(it) == {"id": 1}
    with pytest.raises(JsonlError, match=r"bad.jsonl:3: each line must be a JSON object"):
        next(it)
    p.write_text('{"id": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(JsonlError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(p)
    with pytest.raises(JsonlError, match="manifest not found"):
        read_jsonl(tmp_path / "missing.jsonl.gz", what="manifest")


def _lines(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"id": f"u{i}", "group": f"g{i}", "src": "speech", "tgt": "text", "hyp": f"a cat {i}",
             "tokens": [i], "score": -0.5, "via": None} for i in range(start, start + n)]


def test_hypothesis_dir_round_trip(tmp_path: Path) -> None:
    path = write_hypotheses(tmp_path / "d", _lines(3), {"src": "speech", "tgt": "text", "model": "m"})
    assert path == tmp_path / "d" / HYPOTHESES
    run, hyps = read_hyp_dir(tmp_path / "d")
    assert run["num"] == 3 and run["model"] == "m"
    assert hyps == _lines(3)


def test_hypothesis_dir_shards_merge_in_order(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    info = {"src": "speech", "tgt": "text"}
    first = write_hypotheses(d, _lines(2, 2), info, shard=(1, 2))
    assert first.name == "hypotheses.00001-of-00002.jsonl" and merge_hypothesis_parts(d, 2) is None
    assert write_hypotheses(d, _lines(2), info, shard=(0, 2)) == d / HYPOTHESES
    run, hyps = read_hyp_dir(d)
    assert [h["id"] for h in hyps] == ["u0", "u1", "u2", "u3"]
    assert run["num"] == 4 and run["shards"] == 2 and "shard" not in run


def test_shards_that_finish_together_merge_in_turn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both shards see every part and both merge; the second waits for the first (they would otherwise
    share the atomic write's temporary file, and one rename fails: seen in a `full` recipe run)."""
    import threading

    import tmt.core.hypotheses as hyp

    info = {"src": "speech", "tgt": "text"}
    write_hypotheses(tmp_path, _lines(2), info, shard=(0, 2))
    write_hypotheses(tmp_path, _lines(2, 2), info, shard=(1, 2))
    real = hyp.atomic_write_text
    second: list[threading.Thread] = []
    waited: list[bool] = []

    def first_merge_writes(path: Path, text: str) -> None:
        if path.name == HYPOTHESES and not second:  # the first merge, mid-write: the other shard arrives
            t = threading.Thread(target=merge_hypothesis_parts, args=(tmp_path, 2))
            second.append(t)
            t.start()
            t.join(timeout=0.5)
            waited.append(t.is_alive())  # blocked on the lock, not writing beside us
        real(path, text)

    monkeypatch.setattr(hyp, "atomic_write_text", first_merge_writes)
    assert merge_hypothesis_parts(tmp_path, 2) == tmp_path / HYPOTHESES
    second[0].join(timeout=10)
    assert waited == [True] and not second[0].is_alive()
    run, hyps = read_hyp_dir(tmp_path)
    assert [h["id"] for h in hyps] == ["u0", "u1", "u2", "u3"] and run["num"] == 4
    assert not list(tmp_path.glob("*.tmp"))


def test_hypothesis_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(HypothesisDirError, match="not found"):
        read_hyp_dir(tmp_path)
    write_hypotheses(tmp_path, _lines(1), {"src": "image", "tgt": "text"})
    with pytest.raises(_Mine, match="says image->text"):
        read_hyp_dir(tmp_path, error=_Mine)
    (tmp_path / HYPOTHESES).write_text('{"id": "x", "src": "speech"}\n', encoding="utf-8")
    (tmp_path / RUN_JSON).unlink()
    with pytest.raises(HypothesisDirError, match="missing field 'tgt'"):
        read_hyp_dir(tmp_path)


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), [(False, False, "float32"), (True, False, "bfloat16"),
                                                               (False, True, "bfloat16")])
def test_auto_dtype_is_bf16_only_where_the_cpu_has_bf16_units(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool,
                                                             amx: bool, expected: str) -> None:
    import torch

    from tmt.core.device import native_bf16, resolve_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert native_bf16("cpu") is (expected == "bfloat16")
    assert resolve_dtype("auto", "cpu") == expected
    # an explicit dtype is kept whatever the hardware
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16" and resolve_dtype("float32", "cpu") == "float32"


def test_auto_dtype_on_cuda_asks_for_bf16_units_not_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from tmt.core.device import resolve_dtype

    asked: list[bool] = []

    def supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return False  # a pre-Ampere GPU: bf16 only emulated

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert resolve_dtype("auto", "cuda") == "float32" and asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert resolve_dtype("auto", "cuda") == "bfloat16"
