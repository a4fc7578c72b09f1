from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tmt.cli import VERBS, cli
from tmt.store.token_store import TokenStoreWriter


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    with TokenStoreWriter(root, streams={"text": 30, "speech": 20}, shard_rows=3) as w:
        for i in range(7):
            w.add({"id": f"u{i}", "group": f"g{i}"}, {"text": np.arange(i % 5 + 1), "speech": np.arange(4) if i % 2 else None})
    return root


def test_root_help_and_version_do_not_import_torch():
    code = "import sys; from tmt.cli import main; sys.argv=['tmt','--help']\ntry:\n main()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Commands:" in out and out.strip().endswith("False")
    r = run("--version")
    assert "tmt, version" in r.output


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_group_has_help_with_examples(verb):
    r = run(verb, "--help")
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output
    assert "Examples:" in r.output, f"`tmt {verb} --help` has no examples"


def test_manifest_group_help_has_examples():
    r = run("manifest", "--help")
    assert "Examples:" in r.output and "validate" in r.output


def test_validate_good_and_bad_store(store):
    r = run("manifest", "validate", str(store))
    assert r.exit_code == 0 and "ok:" in r.output and "7 rows" in r.output
    p = store / "text.00001.bin"
    p.write_bytes(p.read_bytes()[:-2])
    r = CliRunner().invoke(cli, ["manifest", "validate", str(store)])
    assert r.exit_code == 1
    assert "text.00001.bin" in r.output and "Traceback" not in r.output


def test_stats_and_head(store):
    r = run("manifest", "stats", "--json", str(store))
    s = json.loads(r.output)
    assert s["rows"] == 7 and s["streams"]["speech"]["rows_present"] == 3
    assert s["streams"]["text"]["tokens"] == sum(i % 5 + 1 for i in range(7))
    r = run("manifest", "stats", str(store))
    assert "speech" in r.output and "p50" in r.output
    assert "rows with speech: 3, without speech: 4" in r.output
    r = run("manifest", "head", "-n", "2", str(store))
    lines = [json.loads(x) for x in r.output.splitlines()]
    assert [x["id"] for x in lines] == ["u0", "u1"] and lines[1]["tokens"]["speech"] == [0, 1, 2, 3]


def test_combine_and_split_stores(store, tmp_path):
    r = run("manifest", "split", str(store), "--fractions", "a=0.5,b=0.5", "--out-dir", str(tmp_path / "parts"))
    assert r.exit_code == 0
    ra = run("manifest", "stats", "--json", str(tmp_path / "parts" / "a"))
    rb = run("manifest", "stats", "--json", str(tmp_path / "parts" / "b"))
    na, nb = json.loads(ra.output)["rows"], json.loads(rb.output)["rows"]
    assert na + nb == 7 and na > 0 and nb > 0
    r = run("manifest", "combine", str(tmp_path / "parts" / "a"), str(tmp_path / "parts" / "b"), "-o", str(tmp_path / "ab"))
    assert r.exit_code == 0
    assert run("manifest", "validate", str(tmp_path / "ab")).exit_code == 0


def test_missing_path_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(cli, ["manifest", "validate", str(tmp_path / "nope.jsonl.gz")])
    assert r.exit_code == 1 and "not found" in r.output
