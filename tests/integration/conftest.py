"""Shared integration fixtures: one tiny, really trained tmt pipeline per test session.

`tiny_pipeline` (session scope) builds the whole chain ONCE from the 20-scene corpus
(`tmt.testing.fixtures.make_scenes_corpus`, itself cached across sessions) into a pytest
temporary directory, by calling the `tmt` CLI in-process (click's CliRunner):

    tmt tokenize text fit      trained WordPiece, vocab <= 200
    tmt tokenize speech fit    MFCC + faiss k-means, K = 50
    tmt tokenize image fit     the 32-token VQ card, shrunk (codebook 64, narrow convs, ~60 steps)
    tmt tokenize all           one store per split: train, valid, test
    tmt vocab build            vocab.json
    tmt train --preset tiny    on train (valid on valid) until the loss has clearly fallen
    tmt vocoder train          the tiny unit-mel vocoder, a few steps (intelligible it is not)

Reuse it from any integration test::

    def test_something(tiny_pipeline: TinyPipeline) -> None:
        exp = tiny_pipeline.exp                       # for `tmt translate --model` / Translator.from_checkpoint
        man = tiny_pipeline.manifests["test"]          # raw manifest of a split
        store = tiny_pipeline.stores["test"]           # its token store (tokenizer-local ids)
        tok = tiny_pipeline.tokenizers["image"]        # fitted tokenizer directories, by modality
        voc = tiny_pipeline.vocoder                    # unit vocoder directory
        tiny_pipeline.train_result                     # what `tmt train` printed (step, train_ce, valid_ce)

Treat everything in it as read-only (it is shared by every test of the session); write
your outputs under your own `tmp_path`. The fixture skips when no TTS engine (espeak-ng or
flite) can synthesise the corpus' speech. It costs roughly 35-60 s of CPU on first use.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parents[2]
SPLITS = ("train", "valid", "test")

TEXT_VOCAB_SIZE = 200
"""Upper bound of the trained WordPiece vocabulary (the corpus has far fewer words)."""
SPEECH_CLUSTERS = 50
"""k-means units of the speech tokenizer."""
IMAGE_CODES = 64
"""VQ codebook size; 32 tokens per image (the card's 4x8 grid)."""
IMAGE_STEPS = 60
"""VQ training steps: enough to leave random codes, far from a good decoder."""
TRAIN_STEPS = 150
"""`tmt train --preset tiny` steps (the preset's own default)."""
VOCODER_STEPS = 10
"""Unit-mel vocoder training steps."""


@dataclass(frozen=True)
class TinyPipeline:
    """Paths of one trained tiny pipeline (read-only for tests)."""

    root: Path
    """Directory holding everything below."""
    corpus: Path
    """The scenes corpus directory (images/, speech/, <split>.jsonl.gz)."""
    manifests: dict[str, Path]
    """Raw manifest per split (train, valid, test)."""
    tokenizers: dict[str, Path]
    """Fitted tokenizer directory per modality (text, speech, image)."""
    stores: dict[str, Path]
    """Token store per split (train, valid, test)."""
    vocab: Path
    """The joint vocabulary (vocab.json)."""
    exp: Path
    """The trained `tiny` experiment directory (model.pt, config.yaml, vocab.json, metrics.jsonl)."""
    vocoder: Path
    """A tiny unit-mel vocoder directory (vocoder.json + weights): wavs come out, speech they are not."""
    train_result: dict[str, Any] = field(default_factory=dict)
    """The JSON `tmt train` printed: step, train_ce and valid_ce per direction."""
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)
    """(wall, CPU) seconds of this process per build stage (for reports, never for assertions)."""


def invoke(*args: object, input: str | None = None) -> Result:
    """Run `tmt ARGS` in-process; fail the test with its output when it exits non-zero."""
    from tmt.cli import cli

    r = CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
    assert r.exit_code == 0, f"tmt {' '.join(map(str, args))} -> {r.exit_code}\n{r.output}"
    return r


def last_json(text: str) -> dict[str, Any]:
    """The JSON object a verb printed last on stdout (verbs print one object, possibly indented)."""
    start = text.rfind("\n{")
    out: dict[str, Any] = json.loads(text[start + 1 :] if start >= 0 else text[text.index("{") :])
    return out


def build_tiny_pipeline(root: Path) -> TinyPipeline:
    """Build the chain described in the module docstring under `root`."""
    import torch

    from tmt.testing.fixtures import make_scenes_corpus

    torch.set_num_threads(1)
    timings: dict[str, tuple[float, float]] = {}

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        timings[name] = (round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2))

    with stage("corpus"):
        corpus = make_scenes_corpus(root, num_scenes=20)
    manifests = {s: corpus / f"{s}.jsonl.gz" for s in SPLITS}
    train = manifests["train"]
    tok = {m: root / "tok" / m for m in ("text", "speech", "image")}
    with stage("fit_text"):
        invoke("tokenize", "text", "fit", "--card", REPO / "tokenizers/text-wordpiece-trained.yaml",
               "--manifest", train, "--out", tok["text"], "--vocab-size", TEXT_VOCAB_SIZE)
    with stage("fit_speech"):
        invoke("tokenize", "speech", "fit", "--card", REPO / "tokenizers/speech-mfcc-km200.yaml",
               "--manifest", train, "--out", tok["speech"], "--threads", 1,
               "--set", f"clusters={SPEECH_CLUSTERS}", "--set", "iterations=20")
    with stage("fit_image"):
        invoke("tokenize", "image", "fit", "--card", REPO / "tokenizers/image-vq-32tok.yaml",
               "--manifest", train, "--out", tok["image"], "--threads", 1,
               "--set", f"model.codebook_size={IMAGE_CODES}", "--set", "model.channels=[16,32,32,32]",
               "--set", "model.num_res_blocks=1", "--set", "model.code_dim=16",
               "--set", f"train.steps={IMAGE_STEPS}", "--set", "train.batch_size=8",
               "--set", "train.warmup_steps=5", "--set", "train.sample_every=0",
               "--set", "train.checkpoint_every=0")
    stores = {s: root / "store" / s for s in SPLITS}
    with stage("tokenize"):
        for s in SPLITS:
            invoke("tokenize", "all", "--text", tok["text"], "--speech", tok["speech"], "--image", tok["image"],
                   "--manifest", manifests[s], "--store", stores[s], "--threads", 1)
    vocab = root / "vocab.json"
    invoke("vocab", "build", "--text", tok["text"], "--speech", tok["speech"], "--image", tok["image"], "-o", vocab)
    exp = root / "exp"
    with stage("train"):
        r = invoke("train", "-o", exp, "--preset", "tiny", "--vocab", vocab, "--store", stores["train"],
                   "--valid-store", stores["valid"], "--max-steps", TRAIN_STEPS, "--device", "cpu",
                   "--set", "train.threads=1", "--set", "plot=false",
                   "--set", f"valid_every={TRAIN_STEPS}", "--set", f"save_every={TRAIN_STEPS}")
    train_result = last_json(r.stdout)
    vocoder = root / "vocoder"
    with stage("vocoder"):
        invoke("vocoder", "train", "--store", stores["train"], "--manifest", train, "--out", vocoder,
               "--config", "tiny", "--arch", "unit-mel", "--set", f"train.max_steps={VOCODER_STEPS}",
               "--set", "train.sample_every=1000", "--set", f"train.save_every={VOCODER_STEPS}",
               "--set", "train.threads=1")
    return TinyPipeline(
        root=root, corpus=corpus, manifests=manifests, tokenizers=tok, stores=stores, vocab=vocab, exp=exp,
        vocoder=vocoder, train_result=train_result, timings=timings,
    )


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyPipeline]:
    """A 20-scene corpus, fitted tokenizers, stores, vocab, a trained tiny model and vocoder (built once)."""
    from tmt.corpora.tts import available_engines

    if not available_engines():
        pytest.skip("no TTS engine (espeak-ng or flite) to synthesise the scenes' speech")
    yield build_tiny_pipeline(tmp_path_factory.mktemp("tiny_pipeline"))
