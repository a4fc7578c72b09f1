"""The FastAPI application: `create_app(engine, config)`.

    GET  /                 the page (tmt/serve/static/index.html, self-contained)
    POST /api/translate    multipart: file (wav/flac/png/jpg) or text, to, via, decoding options
    GET  /api/health       liveness, queue depth, counters
    GET  /api/info         directions, tokenizers and fingerprints, vocoder, limits
    GET  /openapi.json     the API schema (/docs renders it with Swagger UI, which loads from a CDN)

Every error answer is one line of JSON, `{"error": "..."}`. The model runs in one worker thread
(`BatchWorker`); request handlers only check inputs, queue them and wait.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tmt import TmtError, __version__
from tmt.serve.config import ServeConfig
from tmt.serve.engine import BatchKey, Engine
from tmt.serve.inputs import (
    RequestError,
    Source,
    check_modality,
    read_options,
    read_text,
    read_upload,
    render,
)
from tmt.serve.worker import BatchWorker, QueueFull

log = logging.getLogger("tmt.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape: `{"error": "one line"}`."""
    line = " ".join(str(message).split()) or "error"
    return JSONResponse({"error": line}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse POST bodies without a Content-Length or above the limit before
    any of the body is read (413 / 411)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope.get("headers") or [])
            raw = headers.get(b"content-length")
            resp: JSONResponse | None = None
            if raw is None:
                resp = error(411, "the request needs a Content-Length header")
            else:
                try:
                    size = int(raw)
                except ValueError:
                    size = -1
                if size < 0:
                    resp = error(400, f"bad Content-Length {raw.decode('latin-1')!r}")
                elif size > self.max_bytes:
                    resp = error(413, f"the request has {size} bytes; the limit is {self.max_bytes}")
            if resp is not None:
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def page_html() -> str:
    """The page, read from the package data."""
    return resources.files("tmt.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(engine: Engine, config: ServeConfig | None = None) -> FastAPI:
    """The app around a loaded `Engine`; its lifespan starts and stops the model worker."""
    cfg = config or ServeConfig()
    cfg.check()
    worker = BatchWorker(engine.run_batch, queue_size=cfg.queue_size, max_batch=cfg.max_batch,
                         max_wait_s=cfg.batch_wait_ms / 1000.0)
    app = FastAPI(
        title="tmt serve", version=__version__, lifespan=_lifespan(worker, cfg),
        description="Translate between speech, images and text with a trained tmt model. "
                    "Errors are `{\"error\": \"...\"}` with a 4xx/5xx status.",
    )
    app.state.engine = engine
    app.state.worker = worker
    app.state.config = cfg
    app.add_middleware(BodyLimit, max_bytes=cfg.max_upload_bytes)
    _add_error_handlers(app)
    _add_info_routes(app, engine, worker, cfg)
    _add_translate_route(app, engine, worker, cfg)
    return app


def _lifespan(worker: BatchWorker, cfg: ServeConfig) -> Any:
    """Start the model worker with the app and stop it on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        log.info("model worker started (queue %d, batch <= %d, wait %g ms)", cfg.queue_size, cfg.max_batch,
                 cfg.batch_wait_ms)
        try:
            yield
        finally:
            worker.stop()
            log.info("model worker stopped after %d requests in %d batches", worker.stats.jobs, worker.stats.batches)

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """HTTP and validation errors answer with the one-line JSON error body."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        if errs:
            e = errs[0]
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            return error(422, f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid request")))
        return error(422, "invalid request")


def _add_info_routes(app: FastAPI, engine: Engine, worker: BatchWorker, cfg: ServeConfig) -> None:
    """The page, health and model-info endpoints."""
    started = time.time()
    html = page_html()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(html)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/health", summary="Liveness and queue state")
    async def health() -> dict[str, Any]:
        st = worker.stats
        return {
            "status": "ok" if worker.alive else "stopped", "queue": worker.depth, "queue_size": cfg.queue_size,
            "busy": worker.busy, "requests": st.jobs, "batches": st.batches, "largest_batch": st.largest_batch,
            "rejected": st.rejected, "uptime_s": round(time.time() - started, 1),
        }

    @app.get("/api/info", summary="Model, directions, tokenizers, vocoder and limits")
    async def info() -> dict[str, Any]:
        return engine.info() | {"limits": cfg.public(), "version": __version__}


def _add_translate_route(app: FastAPI, engine: Engine, worker: BatchWorker, cfg: ServeConfig) -> None:
    """`POST /api/translate`: read and check the input, queue it, wait for its batch."""
    counter = itertools.count(1)

    @app.post(
        "/api/translate", summary="Translate one input into another modality",
        responses={400: {"description": "bad input"}, 413: {"description": "over a limit"},
                   415: {"description": "unsupported file type"}, 503: {"description": "queue full (Retry-After)"},
                   504: {"description": "timed out"}},
    )
    async def translate(
        to: str | None = Form(None, description="Target modality: text, speech or image."),
        file: UploadFile | None = File(None, description="A wav/flac (speech) or png/jpg (image) upload."),
        text: str | None = Form(None, description="Text to translate (instead of a file)."),
        via: str | None = Form(None, description="Pivot modality (cascade source -> via -> target)."),
        strategy: str | None = Form(None, description="beam, greedy or sample."),
        beam_size: int | None = Form(None, description="Beam width."),
        temperature: float | None = Form(None, description="Logit temperature."),
        top_k: int | None = Form(None, description="Sampling: keep the k most likely tokens."),
        top_p: float | None = Form(None, description="Sampling: nucleus mass."),
        seed: int | None = Form(None, description="Sampling: random seed."),
    ) -> JSONResponse:
        """Send a `file` or a `text` and the target `to`. The answer holds the text, or the image
        (`image`, a PNG data URL) or speech (`audio`, a WAV data URL; `units` when the server has no
        vocoder), the score (length-normalised log-probability), the pivot's result for `via`,
        and timings."""
        t0 = time.perf_counter()
        try:
            src = await _read_source(file, text, cfg)
            key = _key(engine, src, to, via, cfg, strategy=strategy, beam_size=beam_size, temperature=temperature,
                       top_k=top_k, top_p=top_p, seed=seed)
        except RequestError as e:
            return error(e.status, str(e))
        rid = f"req-{next(counter):06d}"
        try:
            job = worker.submit(key, (rid, src.value))
        except QueueFull as e:
            return error(503, f"the server is busy: {e}; retry shortly", {"Retry-After": str(cfg.retry_after_s)})
        return await _await_result(job, rid, t0, src, key, cfg)


async def _await_result(job: Any, rid: str, t0: float, src: Source, key: Any, cfg: ServeConfig) -> JSONResponse:
    """Wait for a queued job's result (bounded by the timeout) and answer with it and its timings."""
    try:
        result = await asyncio.wait_for(asyncio.wrap_future(job.future), timeout=cfg.timeout_s)
        body = await run_in_threadpool(render, result)
    except TimeoutError:
        job.future.cancel()
        return error(504, f"no result after {cfg.timeout_s:g} s; the server is overloaded or the input too long")
    except asyncio.CancelledError:
        if job.future.cancelled():
            return error(503, "the server is shutting down", {"Retry-After": str(cfg.retry_after_s)})
        raise
    except TmtError as e:
        return error(400, str(e))
    except Exception as e:
        log.exception("%s failed", rid)
        return error(500, f"internal error ({type(e).__name__}: {e})")
    done = time.perf_counter()
    started_at = job.started or done
    finished_at = job.finished or done
    body["id"] = rid
    body["timing"] = {
        "total_ms": round((done - t0) * 1000, 1),
        "queue_ms": round((started_at - job.enqueued) * 1000, 1),
        "decode_ms": round((finished_at - started_at) * 1000, 1),
        "batch_size": job.batch_size,
    }
    log.info("%s %s -> %s%s: %.0f ms (batch %d)", rid, src.describe, key.tgt,
             f" via {key.via}" if key.via else "", body["timing"]["total_ms"], job.batch_size)
    return JSONResponse(body)


async def _read_source(file: Any, text: str | None, cfg: ServeConfig) -> Source:
    has_file = file is not None and bool(getattr(file, "filename", None) or getattr(file, "size", 0))
    has_text = text is not None and text != ""
    if has_file and has_text:
        raise RequestError("give either a file or text, not both")
    if has_file:
        data = await file.read(cfg.max_upload_bytes + 1)
        return await run_in_threadpool(read_upload, data, str(file.filename or "upload"), cfg)
    if text is not None:
        return read_text(text, cfg)
    raise RequestError("nothing to translate: send a file (wav/flac/png/jpg) or a text field")


def _key(engine: Engine, src: Source, to: str | None, via: str | None, cfg: ServeConfig, **options: Any) -> BatchKey:
    if to is None or not to.strip():
        raise RequestError("missing 'to': the target modality (text, speech or image)")
    avail = engine.modalities
    tgt = check_modality(to, "target", avail)
    pivot = check_modality(via or None, "pivot", avail)
    assert tgt is not None
    check_modality(src.modality, "source", avail)
    if pivot is not None and pivot in (src.modality, tgt):
        raise RequestError(f"via={pivot} must differ from the source ({src.modality}) and the target ({tgt})")
    if src.modality == tgt and pivot is None:
        raise RequestError(
            f"the input is already {tgt}; pick another target, or a pivot (via) for a round trip"
        )
    return BatchKey(src.modality, tgt, pivot, read_options(cfg, **options))

