"""`tmt serve`: load a trained experiment once and translate over HTTP (API + page)."""

from __future__ import annotations

import logging

import click

from tmt import MODALITIES, TmtError
from tmt.cli._common import CONTEXT

log = logging.getLogger("tmt.serve")

LOOPBACK = ("127.0.0.1", "localhost", "::1")

EPILOG = """\b
Examples:
  tmt serve -m exp/scenes-quick/exp/tmt --vocoder exp/scenes-quick/exp/vocoder
  tmt serve -m exp/tmt --port 8080 --max-batch 32 --batch-wait-ms 20
  tmt serve -m exp/tmt --host 0.0.0.0 --public        # reachable from other machines
  curl -F to=text -F file=@photo.png http://127.0.0.1:8000/api/translate
"""


class ServeInputError(TmtError):
    """Bad `tmt serve` options."""


def _parse_tokenizers(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        m, sep, d = item.partition("=")
        if not sep or not d or m not in MODALITIES:
            raise ServeInputError(f"--tokenizer expects MODALITY=DIR with MODALITY in {', '.join(MODALITIES)}, got '{item}'")
        out[m] = d
    return out


@click.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--model", "-m", "model_dir", required=True, type=click.Path(file_okay=False), help="Experiment directory (model.pt, config.yaml, vocab.json).")
@click.option("--vocoder", default=None, type=click.Path(file_okay=False), help="Unit vocoder directory; without it speech outputs are unit sequences.")
@click.option("--tokenizer", "tokenizers", multiple=True, metavar="M=DIR", help="Use this fitted tokenizer for modality M instead of vocab.json's path (repeatable).")
@click.option("--host", default="127.0.0.1", help="Interface to bind; anything but loopback needs --public.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, help="TCP port.")
@click.option("--public", is_flag=True, help="Allow binding a non-loopback --host (the API has no authentication).")
@click.option("--device", default="cpu", help="Torch device (cpu, cuda, cuda:1).")
@click.option("--threads", type=int, default=None, help="Torch CPU threads (default: torch's choice).")
@click.option("--beam-size", type=int, default=None, help="Default beam width (requests may override it).")
@click.option("--beam-patience", type=float, default=None, help="Default beam patience: a row's search ends after P x beam finished hypotheses (default 1: fairseq's rule; see tmt translate).")
@click.option("--greedy", is_flag=True, help="Default to greedy decoding.")
@click.option("--max-batch", type=int, default=16, help="Requests of one kind decoded together at most.")
@click.option("--batch-wait-ms", type=float, default=10.0, help="How long to wait for more requests of the same kind.")
@click.option("--queue-size", type=int, default=64, help="Waiting requests at most; more get 503 + Retry-After.")
@click.option("--timeout", "timeout_s", type=float, default=60.0, help="Seconds before a waiting request gets 504.")
@click.option("--max-upload-mb", type=float, default=16.0, help="Largest request body in MiB.")
@click.option("--max-audio-seconds", type=float, default=30.0, help="Longest speech upload.")
@click.option("--max-image-pixels", type=int, default=4096 * 4096, help="Largest image upload (width x height).")
@click.option("--max-text-chars", type=int, default=2000, help="Longest text input.")
def cli(
    model_dir: str, vocoder: str | None, tokenizers: tuple[str, ...], host: str, port: int, public: bool,
    device: str, threads: int | None, beam_size: int | None, beam_patience: float | None, greedy: bool, max_batch: int, batch_wait_ms: float,
    queue_size: int, timeout_s: float, max_upload_mb: float, max_audio_seconds: float, max_image_pixels: int,
    max_text_chars: int,
) -> None:
    """Serve a trained model over HTTP: a page at / and a JSON API at /api.

    The model is loaded once and runs in one worker thread; concurrent requests of the
    same kind (source, target, pivot, options) are decoded together. The API schema is at
    /openapi.json (and /docs, whose Swagger UI loads its scripts from a CDN).
    """
    if host not in LOOPBACK and not public:
        raise ServeInputError(
            f"--host {host} would expose the server beyond this machine; add --public to do that on purpose"
        )
    try:
        import uvicorn

        from tmt.serve import Engine, ServeConfig, create_app
    except ModuleNotFoundError as e:
        raise ServeInputError(f"`tmt serve` needs the serve extra ({e.name} is missing): pip install 'tmt[serve]'") from None
    if beam_patience is not None and beam_patience < 1:
        raise ServeInputError(f"--beam-patience must be >= 1 (1: fairseq's rule), got {beam_patience}")
    cfg = ServeConfig(
        max_upload_bytes=int(max_upload_mb * 2**20), max_audio_seconds=max_audio_seconds,
        max_image_pixels=max_image_pixels, max_text_chars=max_text_chars, timeout_s=timeout_s,
        queue_size=queue_size, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
    )
    cfg.check()
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))

    from tmt.generation.translator import Translator

    translator = Translator.from_checkpoint(model_dir, device=device, tokenizers=_parse_tokenizers(tokenizers),
                                            vocoder=vocoder)
    if greedy:
        translator.config.strategy = "greedy"
        translator.config.beam_size = 1
    elif beam_size is not None:
        translator.config.beam_size = beam_size
    if beam_patience is not None:
        translator.config.beam_patience = beam_patience
    translator.config.batch_size = max(translator.config.batch_size, max_batch)
    engine = Engine(translator, vocoder_dir=vocoder)
    if vocoder is None and "speech" in engine.modalities:
        log.warning("no --vocoder given: speech outputs are returned as unit sequences")
    app = create_app(engine, cfg)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"tmt serve: http://{shown}:{port}/ (model {model_dir}; Ctrl-C stops)", err=True)
    level = "info" if logging.getLogger().getEffectiveLevel() <= logging.INFO else "warning"
    uvicorn.run(app, host=host, port=port, log_level=level, access_log=False)
