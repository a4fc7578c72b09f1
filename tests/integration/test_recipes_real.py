"""The real-data recipes (`recipes/flickr8k/run.sh`, `recipes/spokencoco/run.sh`) on the
fixture trees from `tmt.testing.fixtures`, through the tokenize and vocab stages.

MFCC speech units (no HuBERT weights here), a tiny BERT-style vocab.txt, a 2-step image
VQ fit: the point is the recipe's plumbing (stages, flags of every verb it calls, sharded
tokenization + merge, .done markers, error messages), not tokenizer quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tmt.cli import cli
from tmt.store.manifest import read_manifest
from tmt.store.token_store import TokenStore
from tmt.testing.fixtures import make_flickr8k_tree, make_spokencoco_tree

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SPLITS = ("train", "valid", "test")
# every word of the fixture captions (tmt.testing.fixtures._WORDS) plus BERT's specials
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "dog", "runs", "on", "the", "grass",
         "two", "children", "play", "in", "water", "man", "rides", "bike"]
# tiny budgets, passed through the recipe's free-form verb options
TINY = [
    "--speech-card", "mfcc", "--speech-fit-args", "--set clusters=8 --threads 1",
    "--image-fit-args", "--set train.steps=2 --set train.batch_size=4 --set train.sample_every=0 --threads 1",
    "--tokenize-args", "--threads 1",
]


def _run(recipe: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    return subprocess.run(["bash", str(REPO / "recipes" / recipe / "run.sh"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _check_outputs(out: Path) -> None:
    runner = CliRunner()
    tok_fps = {m: json.loads((out / "tokenizers" / m / "tokenizer.json").read_text())["fingerprint"]
               for m in ("text", "speech", "image")}
    for split in SPLITS:
        root = out / "store" / split
        r = runner.invoke(cli, ["manifest", "validate", str(root)])
        assert r.exit_code == 0, r.output
        assert "ok:" in r.output
        store = TokenStore(root)
        rows = read_manifest(out / "data" / f"{split}.jsonl.gz")
        assert len(store) == len(rows) > 0
        assert sorted(store.meta(i)["id"] for i in range(len(store))) == sorted(r["id"] for r in rows)
        for m in ("text", "speech", "image"):
            assert all(n > 0 for n in store.lengths(m)), (split, m)  # every fixture row has all three
            assert store.fingerprints[m] == tok_fps[m]
        assert not (root.parent / f"{split}.parts").exists()  # merged parts are cleaned up
    vocab = json.loads((out / "data" / "vocab.json").read_text())
    assert json.dumps(vocab).count(tok_fps["speech"]) >= 1


def _check_rerun_skips(recipe: str, args: list[str], cwd: Path) -> None:
    r = _run(recipe, args, cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("0-prepare", "1-text", "1-speech", "1-image", "2-tokenize-train", "3-vocab"):
        assert f"Stage {stage}: already done" in r.stderr


def test_flickr8k_recipe_to_vocab(tmp_path: Path) -> None:
    root = make_flickr8k_tree(tmp_path / "flickr8k")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    out = tmp_path / "exp"
    args = ["--flickr8k-dir", str(root), "--out", str(out), "--stop-stage", "3", "--jobs", "2",
            "--bert-vocab", str(tmp_path / "vocab.txt"), *TINY]
    r = _run("flickr8k", args, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Successfully finished" in r.stderr
    # two shard jobs per split, one log each, then the merge
    assert (out / "logs" / "2-tokenize-train.0.log").is_file() and (out / "logs" / "2-tokenize-train.1.log").is_file()
    _check_outputs(out)
    assert "--flickr8k-dir" in (out / "command.txt").read_text()
    _check_rerun_skips("flickr8k", args, tmp_path)


def test_spokencoco_recipe_to_vocab(tmp_path: Path) -> None:
    coco, spoken = make_spokencoco_tree(tmp_path / "corpus")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    out = tmp_path / "exp"
    args = ["--coco-dir", str(coco), "--spokencoco-dir", str(spoken), "--out", str(out), "--stop-stage", "3",
            "--jobs", "1", "--bert-vocab", str(tmp_path / "vocab.txt"), *TINY]
    r = _run("spokencoco", args, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _check_outputs(out)
    # restval joins train: the fixture has 2 train + 1 restval image, 5 captions each
    assert len(TokenStore(out / "store" / "train")) == 15


@pytest.mark.parametrize("recipe", ["flickr8k", "spokencoco"])
def test_recipe_errors_are_clear(tmp_path: Path, recipe: str) -> None:
    r = _run(recipe, ["--no-such-option", "1"], tmp_path)
    assert r.returncode != 0 and "unknown option --no-such-option" in r.stderr
    r = _run(recipe, ["--help"], tmp_path)
    assert r.returncode == 0 and "--hubert-ckpt" in r.stderr and "Stages:" in r.stderr
    r = _run(recipe, ["--out", str(tmp_path / "a"), "--stop-stage", "0"], tmp_path)
    assert r.returncode == 1 and "Stage 0 needs --" in r.stderr
    r = _run(recipe, ["--out", str(tmp_path / "b"), "--stage", "1", "--stop-stage", "1", "--bert-vocab", "v.txt"], tmp_path)
    assert r.returncode == 1 and "needs --hubert-ckpt" in r.stderr
    assert not (tmp_path / "b" / "tokenizers").exists()  # checked before anything is fitted
    r = _run(recipe, ["--out", str(tmp_path / "c"), "--stage", "1", "--stop-stage", "1", "--speech-card", "mfcc",
                      "--bert-vocab", "v.txt", "--km-bin", "km.bin"], tmp_path)
    assert r.returncode == 1 and "--trust-pickle true" in r.stderr
    # a failing shard job: its own log is printed, nothing is marked done
    r = _run(recipe, ["--out", str(tmp_path / "d"), "--stage", "2", "--stop-stage", "2", "--jobs", "2"], tmp_path)
    assert r.returncode == 1
    assert "job 0/2 FAILED" in r.stderr and "not a fitted tokenizer" in r.stderr
    assert not (tmp_path / "d" / ".done").exists()
