"""tmt.core.io: the checked readers (JSON, YAML, torch) and the atomic writer's OS errors.

Each bad file must give one `TmtError` (or the caller's subclass) that names the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tmt import TmtError
from tmt.core.io import (
    atomic_write_text,
    check_object,
    load_torch,
    make_dirs,
    read_json_object,
    read_text_file,
    read_yaml_object,
    save_torch,
)


class MyError(TmtError):
    """A caller's own error type, to check that `error=` is honoured."""


def _raises_naming(path: Path, pattern: str, exc: type[Exception] = MyError) -> pytest.RaisesContext[Exception]:
    return pytest.raises(exc, match=re.escape(str(path)) + ".*" + pattern)


# ----------------------------------------------------------------------------- JSON
def test_json_object_read(tmp_path: Path) -> None:
    p = tmp_path / "ok.json"
    p.write_text('{"size": 3, "name": "x", "sub": {"a": 1}}')
    data = read_json_object(p, required={"size": int, "name": str, "sub": dict})
    assert data == {"size": 3, "name": "x", "sub": {"a": 1}}
    assert read_json_object(p, required=["size"]) is not None  # keys without types


def test_json_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.json"
    with pytest.raises(MyError, match=r"vocabulary not found: .*nope\.json; rebuild it"):
        read_json_object(p, what="vocabulary", error=MyError, fix="rebuild it")


def test_json_directory_instead_of_file(tmp_path: Path) -> None:
    with _raises_naming(tmp_path, "is a directory"):
        read_json_object(tmp_path, error=MyError)


def test_json_binary_file(tmp_path: Path) -> None:
    p = tmp_path / "blob.json"
    p.write_bytes(bytes(range(256)) * 4)
    with _raises_naming(p, "not UTF-8 text"):
        read_json_object(p, error=MyError)


def test_json_invalid(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('{\n "size": 3,,\n}\n')
    with _raises_naming(p, r":2: store index is not valid JSON \(.*\); restore it"):
        read_json_object(p, what="store index", error=MyError, fix="restore it")


def test_json_empty_file_is_invalid(tmp_path: Path) -> None:
    p = tmp_path / "empty.json"
    p.write_bytes(b"")
    with _raises_naming(p, "not valid JSON"):
        read_json_object(p, error=MyError)


def test_json_array_instead_of_object(tmp_path: Path) -> None:
    p = tmp_path / "list.json"
    p.write_text("[1, 2, 3]")
    with _raises_naming(p, r"must be a JSON/YAML object .*not an array"):
        read_json_object(p, error=MyError)


def test_json_missing_key(tmp_path: Path) -> None:
    p = tmp_path / "partial.json"
    p.write_text('{"size": 3}')
    with _raises_naming(p, r"lacks the key\(s\) 'name', 'fingerprint'; refit"):
        read_json_object(p, required={"size": int, "name": str, "fingerprint": str}, error=MyError, fix="refit")


def test_json_wrong_type(tmp_path: Path) -> None:
    p = tmp_path / "typed.json"
    p.write_text('{"size": "three"}')
    with _raises_naming(p, r"key 'size' must be an integer, not a string \('three'\)"):
        read_json_object(p, required={"size": int}, error=MyError)
    # true/false is not an integer, although bool subclasses int in Python
    p.write_text('{"size": true}')
    with _raises_naming(p, r"key 'size' must be an integer, not true/false"):
        read_json_object(p, required={"size": int}, error=MyError)
    # a tuple of types accepts any of them
    p.write_text('{"size": 2.5}')
    assert read_json_object(p, required={"size": (int, float)})["size"] == 2.5


def test_check_object_names_its_source() -> None:
    with pytest.raises(TmtError, match=r"row 7 of x\.jsonl: entry must be .*not null"):
        check_object(None, "row 7 of x.jsonl", what="entry")


def test_read_text_file_default_error_type(tmp_path: Path) -> None:
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(TmtError, match=re.escape(str(p)) + r".*not UTF-8 text \(.*byte 3\)"):
        read_text_file(p)


# ----------------------------------------------------------------------------- YAML
def test_yaml_object_and_empty(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.1\nsteps: 5\n")
    assert read_yaml_object(p, required={"lr": float, "steps": int}) == {"lr": 0.1, "steps": 5}
    p.write_text("")
    assert read_yaml_object(p) == {}
    with _raises_naming(p, "must be a JSON/YAML object .*not null"):
        read_yaml_object(p, error=MyError, empty_ok=False)


def test_yaml_invalid_names_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with _raises_naming(p, r":\d+: config file is not valid YAML"):
        read_yaml_object(p, what="config file", error=MyError)


def test_yaml_list_and_binary(tmp_path: Path) -> None:
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with _raises_naming(p, "not an array"):
        read_yaml_object(p, error=MyError)
    b = tmp_path / "bin.yaml"
    b.write_bytes(b"\xff\xfe\x00\x01" * 50)
    with _raises_naming(b, "not UTF-8 text"):
        read_yaml_object(b, error=MyError)


def test_yaml_missing_key_and_wrong_type(tmp_path: Path) -> None:
    p = tmp_path / "card.yaml"
    p.write_text("name: x\n")
    with _raises_naming(p, r"lacks the key\(s\) 'class'"):
        read_yaml_object(p, required={"class": str}, error=MyError)
    p.write_text("class: [1]\n")
    with _raises_naming(p, r"key 'class' must be a string, not an array"):
        read_yaml_object(p, required={"class": str}, error=MyError)


# ----------------------------------------------------------------------------- torch
def test_torch_round_trip_and_bad_files(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "state.pt"
    save_torch(p, {"w": torch.ones(2), "step": 3})
    assert load_torch(p)["step"] == 3
    assert not (tmp_path / "sub" / "state.pt.tmp").exists()
    with pytest.raises(MyError, match=r"checkpoint not found: .*missing\.pt"):
        load_torch(tmp_path / "missing.pt", error=MyError)
    p.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MyError, match=r"cannot load model weights .*state\.pt .*; retrain"):
        load_torch(p, what="model weights", error=MyError, fix="retrain")
    good = tmp_path / "good.pt"
    save_torch(good, {"w": torch.zeros(1000)})
    good.write_bytes(good.read_bytes()[:200])  # truncated
    with _raises_naming(good, r"\(truncated"):
        load_torch(good, error=MyError)


def test_torch_refuses_pickled_objects(tmp_path: Path) -> None:
    p = tmp_path / "pickle.pt"
    torch.save({"obj": MyError("x")}, p)  # an arbitrary class: not weights-only
    with _raises_naming(p, "not weights only"):
        load_torch(p, error=MyError)


# ----------------------------------------------------------------------------- writes
def test_writes_under_a_file_name_the_path(tmp_path: Path) -> None:
    f = tmp_path / "plain"
    f.write_text("x")
    with pytest.raises(TmtError, match=r"cannot write .*plain/out\.json.*a parent of the output path is a file"):
        atomic_write_text(f / "out.json", "{}")
    with pytest.raises(MyError, match=r"cannot write .*plain/d"):
        make_dirs(f / "d", error=MyError)
    assert f.read_text() == "x"
    assert make_dirs(tmp_path / "a" / "b").is_dir()
