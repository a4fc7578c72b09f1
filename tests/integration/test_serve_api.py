"""`tmt serve`'s HTTP API through FastAPI's in-process TestClient, on the tiny trained pipeline
(tests/integration/conftest.py builds it once per session: a 20-scene corpus, real tokenizers,
a `tiny` model trained for a few steps and a tiny vocoder): all six directions, pivots,
decoding options, every kind of bad request, the full queue, and batching. The batching
worker itself is tested first on a stand-in batch function (no model needed).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from tmt.serve.worker import BatchWorker, QueueFull

DIRECTIONS = [("image", "text"), ("image", "speech"), ("text", "image"), ("speech", "image"),
              ("speech", "text"), ("text", "speech")]


# ---- the worker alone ----------------------------------------------------------------------
def _until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Gate:
    """A batch function that records its batches and blocks until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[Any]]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, key: Any, payloads: Any) -> list[Any]:
        self.calls.append((key, list(payloads)))
        self.entered.set()
        assert self.release.wait(30)
        return [ValueError(f"bad {p}") if p == "bad" else f"{key}:{p}" for p in payloads]


def test_worker_batches_same_keys_and_keeps_others_waiting() -> None:
    gate = Gate()
    w = BatchWorker(gate, queue_size=10, max_batch=3, max_wait_s=0.0)
    w.start()
    try:
        first = w.submit("a", 0)
        assert gate.entered.wait(10)
        jobs = [w.submit(k, i) for i, k in enumerate("abab", start=1)] + [w.submit("a", 5)]
        assert w.depth == 5
        gate.release.set()
        assert first.future.result(10) == "a:0"
        assert [j.future.result(10) for j in jobs] == ["a:1", "b:2", "a:3", "b:4", "a:5"]
    finally:
        w.stop()
    # "a" jobs 1, 3, 5 went together (max_batch 3), then the two "b" jobs
    assert [(k, p) for k, p in gate.calls] == [("a", [0]), ("a", [1, 3, 5]), ("b", [2, 4])]
    assert jobs[0].batch_size == 3 and w.stats.largest_batch == 3 and not w.alive


def test_worker_queue_bound_errors_and_cancellation() -> None:
    gate = Gate()
    w = BatchWorker(gate, queue_size=2, max_batch=4, max_wait_s=0.0)
    w.start()
    try:
        running = w.submit("k", "x")
        assert gate.entered.wait(10)
        bad, dropped = w.submit("k", "bad"), w.submit("k", "y")
        with pytest.raises(QueueFull):
            w.submit("k", "z")
        assert dropped.future.cancel()  # its request gave up before the worker took it
        gate.release.set()
        assert running.future.result(10) == "k:x"
        with pytest.raises(ValueError, match="bad bad"):
            bad.future.result(10)
        _until(lambda: w.stats.jobs == 2, "the second batch")
        assert w.stats.rejected == 1 and w.stats.cancelled == 1
        after = w.submit("k", "later")  # the worker survived the failing input
        assert after.future.result(10) == "k:later"
    finally:
        w.stop()


def test_worker_survives_a_crashing_batch_function() -> None:
    def run(key: Any, payloads: Any) -> list[Any]:
        if "boom" in payloads:
            raise RuntimeError("boom")
        return list(payloads)

    w = BatchWorker(run, queue_size=4, max_batch=4, max_wait_s=0.0)
    w.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            w.submit("k", "boom").future.result(10)
        assert w.submit("k", "ok").future.result(10) == "ok"
    finally:
        w.stop()


def test_serve_refuses_a_public_host_without_the_flag(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tmt.cli import cli

    r = CliRunner().invoke(cli, ["serve", "-m", str(tmp_path), "--host", "0.0.0.0"])
    assert r.exit_code != 0 and "--public" in r.output
    r = CliRunner().invoke(cli, ["serve", "-m", str(tmp_path), "--beam-patience", "0.5"])
    assert r.exit_code != 0 and "--beam-patience must be >= 1" in r.output


# ---- the API on a trained tiny model ---------------------------------------------------------
pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from tmt.generation.translator import Translator  # noqa: E402
from tmt.serve import Engine, ServeConfig, create_app  # noqa: E402


@pytest.fixture(scope="session")
def pipeline(tiny_pipeline: Any) -> Any:
    """The session's one trained tiny pipeline (tests/integration/conftest.py); read only here."""
    return tiny_pipeline


@pytest.fixture(scope="session")
def engine(pipeline: Any) -> Engine:
    tr = Translator.from_checkpoint(pipeline.exp, vocoder=pipeline.vocoder)
    tr.config.beam_size = 2  # keep the tests quick; decoding options are tested separately
    return Engine(tr, vocoder_dir=pipeline.vocoder)


@pytest.fixture(scope="session")
def samples(pipeline: Any) -> dict[str, Any]:
    """One real caption, wav and png of the corpus (bytes for uploads)."""
    from tmt.store.manifest import media_path, read_manifest

    man = pipeline.manifests["test"]
    row = next(r for r in read_manifest(man, split="test") if r.get("speech") and r.get("image") and r.get("text"))
    return {"text": row["text"], "speech": media_path(man, row["speech"]).read_bytes(),
            "image": media_path(man, row["image"]).read_bytes()}


@pytest.fixture(scope="session")
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, ServeConfig(timeout_s=300))) as c:
        yield c


def _form(samples: dict[str, Any], src: str, **fields: Any) -> dict[str, Any]:
    """TestClient.post kwargs sending `src` from the samples plus form `fields`."""
    data = {k: str(v) for k, v in fields.items()}
    if src == "text":
        return {"data": data | {"text": samples["text"]}}
    name, mime = ("in.wav", "audio/wav") if src == "speech" else ("in.png", "image/png")
    return {"data": data, "files": {"file": (name, samples[src], mime)}}


def _decode_data_url(url: str, prefix: str) -> bytes:
    assert url.startswith(prefix), url[:40]
    return base64.b64decode(url[len(prefix):])


def _check_output(body: dict[str, Any], tgt: str) -> None:
    assert body["tgt"] == tgt and np.isfinite(body["score"]) and body["num_tokens"] >= 1
    if tgt == "text":
        assert isinstance(body["text"], str)
    elif tgt == "image":
        im = Image.open(io.BytesIO(_decode_data_url(body["image"], "data:image/png;base64,")))
        assert im.format == "PNG" and im.size == (body["width"], body["height"]) == (64, 64)
    else:
        wav, sr = sf.read(io.BytesIO(_decode_data_url(body["audio"], "data:audio/wav;base64,")))
        assert sr == body["sample_rate"] and len(wav) > 0 and abs(len(wav) / sr - body["duration_s"]) < 1e-2


def _assert_alive(client: TestClient) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_page_health_and_info(client: TestClient, pipeline: Any) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="translate"' in page.text and "<script src" not in page.text and "https://" not in page.text
    _assert_alive(client)
    info = client.get("/api/info").json()
    assert sorted(map(tuple, info["directions"])) == sorted(DIRECTIONS)
    vocab = json.loads((pipeline.exp / "vocab.json").read_text())
    for m in ("text", "speech", "image"):
        assert info["tokenizers"][m]["fingerprint"] == vocab["modalities"][m]["fingerprint"]
    assert info["vocoder"]["sample_rate"] > 0 and info["speech_output"] == "wav"
    assert info["limits"]["queue_size"] == 64
    assert info["decoding"]["beam_patience"] == 1.0  # the library default: fairseq's stopping rule
    assert "/api/translate" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(("src", "tgt"), DIRECTIONS)
def test_six_directions(client: TestClient, samples: dict[str, Any], src: str, tgt: str) -> None:
    r = client.post("/api/translate", **_form(samples, src, to=tgt))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["src"] == src and body["via"] is None and body["id"].startswith("req-")
    _check_output(body, tgt)
    t = body["timing"]
    assert t["batch_size"] >= 1 and t["total_ms"] >= t["decode_ms"] >= 0


def test_pivots(client: TestClient, samples: dict[str, Any]) -> None:
    r = client.post("/api/translate", **_form(samples, "speech", to="image", via="text"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["src"], body["via"], body["pivot"]["tgt"]) == ("speech", "text", "text")
    assert isinstance(body["pivot"]["text"], str)
    _check_output(body, "image")
    # a round trip through a pivot is allowed even though source and target agree
    r = client.post("/api/translate", **_form(samples, "speech", to="speech", via="text"))
    assert r.status_code == 200, r.text
    _check_output(r.json(), "speech")


def test_decoding_options(client: TestClient, samples: dict[str, Any]) -> None:
    greedy = client.post("/api/translate", **_form(samples, "image", to="text", strategy="greedy"))
    assert greedy.status_code == 200, greedy.text
    sampled = [client.post("/api/translate", **_form(samples, "text", to="image", strategy="sample", seed=3,
                                                     top_k=5)).json()["image"] for _ in range(2)]
    assert sampled[0] == sampled[1]  # the same seed gives the same image
    beam = client.post("/api/translate", **_form(samples, "speech", to="text", beam_size=3))
    assert beam.status_code == 200, beam.text


def _bad_requests(samples: dict[str, Any]) -> list[tuple[str, dict[str, Any], int, str]]:
    wav = io.BytesIO()
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000, format="WAV")
    return [
        ("unknown target", {"data": {"text": "a red circle", "to": "video"}}, 400, "unknown target modality 'video'"),
        ("missing target", {"data": {"text": "a red circle"}}, 400, "missing 'to'"),
        ("no input", {"data": {"to": "image"}}, 400, "nothing to translate"),
        ("file and text", {"data": {"to": "image", "text": "x"}, "files": {"file": ("a.png", samples["image"], "image/png")}}, 400, "not both"),
        ("wrong file type", {"data": {"to": "text"}, "files": {"file": ("doc.pdf", b"%PDF-1.4 hello", "application/pdf")}}, 415, "unsupported file type"),
        ("text file", {"data": {"to": "image"}, "files": {"file": ("a.txt", b"a red circle", "text/plain")}}, 415, "unsupported file type"),
        ("corrupt png", {"data": {"to": "text"}, "files": {"file": ("a.png", samples["image"][:60], "image/png")}}, 400, "corrupt png"),
        ("corrupt wav", {"data": {"to": "text"}, "files": {"file": ("a.wav", b"RIFF\x00\x00\x00\x00WAVEjunkjunk", "audio/wav")}}, 400, "corrupt wav"),
        ("empty file", {"data": {"to": "text"}, "files": {"file": ("a.wav", b"", "audio/wav")}}, 400, "the file is empty"),
        ("silent wav", {"data": {"to": "text"}, "files": {"file": ("s.wav", wav.getvalue(), "audio/wav")}}, 400, "silent"),
        ("empty text", {"data": {"text": "   ", "to": "image"}}, 400, "the text is empty"),
        ("same source and target", {"data": {"text": "a red circle", "to": "text"}}, 400, "already text"),
        ("unknown via", {"data": {"text": "a red circle", "to": "image", "via": "smell"}}, 400, "unknown pivot modality"),
        ("via = target", {"data": {"text": "a red circle", "to": "image", "via": "image"}}, 400, "must differ"),
        ("via = source", {"data": {"text": "a red circle", "to": "image", "via": "text"}}, 400, "must differ"),
        ("bad strategy", {"data": {"text": "a red circle", "to": "image", "strategy": "magic"}}, 400, "unknown strategy"),
        ("bad beam", {"data": {"text": "a red circle", "to": "image", "beam_size": "0"}}, 400, "beam_size"),
        ("non-numeric beam", {"data": {"text": "a red circle", "to": "image", "beam_size": "five"}}, 422, "beam_size"),
        ("bad top_p", {"data": {"text": "a red circle", "to": "image", "top_p": "1.5"}}, 400, "top_p"),
    ]


def test_every_bad_request_gets_a_one_line_json_error(client: TestClient, samples: dict[str, Any]) -> None:
    for name, kwargs, status, needle in _bad_requests(samples):
        r = client.post("/api/translate", **kwargs)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        body = r.json()
        assert list(body) == ["error"] and isinstance(body["error"], str), name
        assert "\n" not in body["error"] and needle in body["error"], f"{name}: {body['error']}"
        _assert_alive(client)
    for path, method, status in (("/nope", "get", 404), ("/api/translate", "get", 405)):
        r = getattr(client, method)(path)
        assert r.status_code == status and list(r.json()) == ["error"]
    ok = client.post("/api/translate", **_form(samples, "text", to="image"))
    assert ok.status_code == 200, ok.text


def test_limits(engine: Engine, samples: dict[str, Any]) -> None:
    cfg = ServeConfig(max_upload_bytes=300_000, max_audio_seconds=2.0, max_image_pixels=32 * 32, max_text_chars=20)
    long_wav = io.BytesIO()
    sf.write(long_wav, 0.1 * np.sin(np.arange(16000 * 3) * 0.05).astype(np.float32), 16000, format="WAV")
    with TestClient(create_app(engine, cfg)) as c:
        cases = [
            ({"data": {"to": "text"}, "files": {"file": ("big.wav", b"RIFF" + bytes(400_000), "audio/wav")}}, 413, "limit is 300000"),
            ({"data": {"to": "text"}, "files": {"file": ("long.wav", long_wav.getvalue(), "audio/wav")}}, 413, "3.0 s of audio"),
            ({"data": {"to": "text"}, "files": {"file": ("a.png", samples["image"], "image/png")}}, 413, "64x64 pixels"),
            ({"data": {"to": "image", "text": "x" * 21}}, 413, "21 characters"),
        ]
        for kwargs, status, needle in cases:
            r = c.post("/api/translate", **kwargs)
            assert r.status_code == status and needle in r.json()["error"], r.text
        assert c.post("/api/translate", data={"to": "image", "text": "a red circle"}).status_code == 200


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """Count Translator.translate calls (one per batch) and hold the first one until released."""
    g = Gate()
    orig = Translator.translate

    def counting(self: Translator, inputs: Any, **kw: Any) -> Any:
        g.calls.append((kw.get("tgt"), list(kw.get("ids") or [])))
        g.entered.set()
        assert g.release.wait(60)
        return orig(self, inputs, **kw)

    monkeypatch.setattr(Translator, "translate", counting)
    return g


def test_full_queue_answers_503(engine: Engine, samples: dict[str, Any], gate: Gate) -> None:
    app = create_app(engine, ServeConfig(queue_size=1, batch_wait_ms=0, retry_after_s=2, timeout_s=120))
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        first = pool.submit(c.post, "/api/translate", **_form(samples, "text", to="image"))
        assert gate.entered.wait(60)  # the worker is busy with the first request
        second = pool.submit(c.post, "/api/translate", **_form(samples, "text", to="image"))
        _until(lambda: app.state.worker.depth == 1, "the second request to wait in the queue")
        r = c.post("/api/translate", **_form(samples, "image", to="text"))
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert list(r.json()) == ["error"] and "busy" in r.json()["error"]
        assert c.get("/api/health").json()["rejected"] == 1
        gate.release.set()
        assert first.result(120).status_code == 200 and second.result(120).status_code == 200
        assert c.post("/api/translate", **_form(samples, "image", to="text")).status_code == 200


def test_concurrent_requests_are_decoded_in_one_call(engine: Engine, samples: dict[str, Any], gate: Gate) -> None:
    app = create_app(engine, ServeConfig(queue_size=8, max_batch=8, batch_wait_ms=0, timeout_s=120))
    silent = io.BytesIO()
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000, format="WAV")
    with TestClient(app) as c, ThreadPoolExecutor(4) as pool:
        blocker = pool.submit(c.post, "/api/translate", **_form(samples, "text", to="image"))
        assert gate.entered.wait(60)
        pair = [pool.submit(c.post, "/api/translate", **_form(samples, "image", to="text")) for _ in range(2)]
        _until(lambda: app.state.worker.depth == 2, "two image->text requests to queue")
        gate.release.set()
        assert blocker.result(120).status_code == 200
        bodies = [f.result(120).json() for f in pair]
        assert [b["timing"]["batch_size"] for b in bodies] == [2, 2]
        assert bodies[0]["text"] == bodies[1]["text"]  # same input, same beam: same caption
        text_calls = [ids for tgt, ids in gate.calls if tgt == "text"]
        assert [sorted(ids) for ids in text_calls] == [sorted(b["id"] for b in bodies)], gate.calls  # ONE call
        # a bad input in a batch fails alone: a silent wav next to a real one
        gate.calls.clear()
        gate.release.clear()
        gate.entered.clear()
        blocker = pool.submit(c.post, "/api/translate", **_form(samples, "text", to="image"))
        assert gate.entered.wait(60)
        good = pool.submit(c.post, "/api/translate", **_form(samples, "speech", to="text"))
        bad = pool.submit(c.post, "/api/translate", data={"to": "text"},
                          files={"file": ("silent.wav", silent.getvalue(), "audio/wav")})
        _until(lambda: app.state.worker.depth == 2, "two speech->text requests to queue")
        gate.release.set()
        assert blocker.result(120).status_code == 200
        assert good.result(120).status_code == 200
        r = bad.result(120)
        assert r.status_code == 400 and "silent" in r.json()["error"]
