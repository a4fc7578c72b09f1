"""`tmt serve`: an HTTP API and a web page for any-to-any translation.

    from tmt.generation.translator import Translator
    from tmt.serve import Engine, ServeConfig, create_app

    engine = Engine(Translator.from_checkpoint("exp/tmt", vocoder="exp/vocoder"), vocoder_dir="exp/vocoder")
    app = create_app(engine, ServeConfig(max_batch=16))     # a FastAPI app; run it with uvicorn

Needs the `serve` extra (fastapi, uvicorn, python-multipart). The app module is imported on
first use of `create_app`, so `tmt.serve.config` stays importable without FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tmt.serve.config import DecodeOptions, ServeConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

    from tmt.serve.engine import Engine

__all__ = ["DecodeOptions", "Engine", "ServeConfig", "create_app"]


def create_app(engine: Engine, config: ServeConfig | None = None) -> FastAPI:
    """See `tmt.serve.app.create_app`."""
    from tmt.serve.app import create_app as _create

    return _create(engine, config)


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from tmt.serve.engine import Engine

        return Engine
    raise AttributeError(name)
