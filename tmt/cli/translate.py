"""`tmt translate`: translate files, text or a manifest into another modality."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tmt.cli._common import CONTEXT, progress, shard_option
from tmt.config import config_options, dump_yaml, resolve
from tmt.core.errors import TmtError
from tmt.core.modality import check_modality

log = logging.getLogger("tmt.translate")

EPILOG = """\b
Examples:
  tmt translate --model exp/tmt --to image speech.wav -o out.png
  tmt translate --model exp/tmt --to text photo.png
  tmt translate --model exp/tmt --to speech --text "a red circle" -o out.wav --vocoder exp/vocoder
  echo "a blue square" | tmt translate --model exp/tmt --to image -o square.png
  tmt translate --model exp/tmt --to text --format jsonl a.wav b.wav
  tmt translate --model exp/tmt --to image --via text speech.wav -o cascade.png
  tmt translate --model exp/tmt --to image --text "a red circle" -o best.png \\
      --rerank 32 --rerank-forward 0
  tmt translate --model exp/tmt --manifest data/scenes/raw.jsonl.gz --split test \\
      --from text --to speech --output-dir out/t2s --shard 0/2
  tmt translate --model exp/tmt --to text x.wav --set strategy=greedy --set lengths.text.b=20
"""


class CliInputError(TmtError):
    """Bad command-line input."""


def _check_modality(value: str | None, opt: str) -> str | None:
    if value is not None:
        check_modality(value, f"{opt} modality", error=CliInputError)
    return value


def _parse_tokenizers(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        m, sep, d = item.partition("=")
        if not sep or not d:
            raise CliInputError(f"--tokenizer expects MODALITY=DIR (e.g. speech=tok/speech), got '{item}'")
        _check_modality(m, "--tokenizer")
        out[m] = d
    return out


def _collect_inputs(files: tuple[str, ...], texts: tuple[str, ...], src: str | None) -> tuple[list[Any], list[str], list[str]]:
    """(inputs, ids, source modalities) from positional files, --text values or stdin lines."""
    from tmt.generation.inputs import modality_of_path

    inputs: list[Any] = []
    ids: list[str] = []
    srcs: list[str] = []
    for i, t in enumerate(texts):
        if not t.strip():
            raise CliInputError(f"--text #{i + 1} is empty; nothing to translate")
        inputs.append(t)
        ids.append(f"text-{i + 1:04d}")
        srcs.append("text")
    for f in files:
        p = Path(f)
        m = src or modality_of_path(p)
        if m is None:
            raise CliInputError(
                f"{p}: cannot tell the modality from the extension '{p.suffix}'; use wav/flac (speech), "
                "png/jpg/jpeg (image) or txt (text), or pass --from"
            )
        if not p.is_file():
            raise CliInputError(f"input file not found: {p}")
        if m == "text":
            try:
                lines = [x.strip() for x in p.read_text(encoding="utf-8").splitlines()]
            except (OSError, UnicodeDecodeError) as e:
                raise CliInputError(f"cannot read text file {p}: {e}") from None
            lines = [x for x in lines if x]
            if not lines:
                raise CliInputError(f"{p}: the text file is empty; nothing to translate")
            for j, line in enumerate(lines):
                inputs.append(line)
                ids.append(p.stem if len(lines) == 1 else f"{p.stem}-{j + 1:04d}")
                srcs.append("text")
        else:
            inputs.append(p)
            ids.append(p.stem)
            srcs.append(m)
    if not files and not texts:
        if sys.stdin is None or sys.stdin.isatty():
            raise CliInputError("no input: give files, --text \"...\", --manifest, or pipe text lines on stdin")
        for j, line in enumerate(sys.stdin.read().splitlines()):
            if not line.strip():
                raise CliInputError(f"stdin line {j + 1} is empty; give one text per line")
            inputs.append(line.strip())
            ids.append(f"line-{j + 1:04d}")
            srcs.append("text")
        if not inputs:
            raise CliInputError("stdin held no text lines; nothing to translate")
    if src is not None:
        srcs = [src] * len(inputs)
    seen: set[str] = set()
    for pos, name in enumerate(ids):  # file stems can collide (a/x.wav, b/x.wav)
        if name in seen:
            ids[pos] = f"{name}-{pos + 1}"
        seen.add(ids[pos])
    return inputs, ids, srcs


def segment_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--segment/--no-segment`, passed on as the config override `segment.enabled=...` (after
    any --set, so the flag wins)."""

    @functools.wraps(f)
    def wrapper(*args: Any, segment: bool | None = None, **kwargs: Any) -> Any:
        if segment is not None:
            kwargs["overrides"] = (*kwargs.get("overrides", ()), f"segment.enabled={str(segment).lower()}")
        return f(*args, **kwargs)

    return click.option(
        "--segment/--no-segment", "segment", default=None,
        help="Speech or text longer than the model's source limit is split (speech at pauses, text at "
             "sentence ends) into pieces that fit, translated piece by piece and joined (default; config "
             "key segment.enabled). --no-segment refuses such inputs. Image targets are one image per "
             "input and never split: a too-long input is refused, naming the limit.",
    )(wrapper)


def _check_output_suffix(out: Path, tgt: str) -> None:
    ext = out.suffix.lower()
    ok = {"image": (".png", ".jpg", ".jpeg"), "speech": (".wav",), "text": None}[tgt]
    if ok is not None and ext not in ok:
        raise CliInputError(f"-o {out}: a {tgt} output must end in {'/'.join(ok)}")


@click.command(context_settings=CONTEXT, epilog=EPILOG)
@click.argument("inputs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--model", "-m", "model_dir", required=True, type=click.Path(), help="Experiment directory (model.pt, config.yaml, vocab.json).")
@click.option("--to", "tgt", required=True, metavar="MODALITY", help="Target modality: text, speech or image.")
@click.option("--from", "src", default=None, metavar="MODALITY", help="Source modality (default: from each file's extension; --text and stdin are text).")
@click.option("--via", default=None, metavar="MODALITY", help="Pivot through this modality (cascade src -> via -> tgt).")
@click.option("--text", "texts", multiple=True, help="A text to translate (repeatable).")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False), help="Output file for a single input (.png, .wav, or a text file).")
@click.option("--output-dir", default=None, type=click.Path(file_okay=False), help="Write <id>.png/.wav/.units.txt, hypotheses.jsonl and run.json here.")
@click.option("--manifest", default=None, type=click.Path(dir_okay=False), help="Translate the rows of a raw manifest (needs --output-dir).")
@click.option("--split", default=None, help="Only manifest rows of this split.")
@shard_option
@click.option("--limit", type=int, default=None, help="Translate only the first N manifest rows (before --shard splits them).")
@click.option("--all-rows", is_flag=True, help="Image sources: translate every manifest row. By default the rows of one image (one per caption) are translated once, with the first row's id.")
@click.option("--format", "fmt", type=click.Choice(["plain", "jsonl"]), default="plain", help="Text on stdout: one hypothesis per line, or JSON lines with id, hypothesis and score.")
@click.option("--tokenizer", "tokenizers", multiple=True, metavar="M=DIR", help="Use this fitted tokenizer for modality M instead of vocab.json's path (repeatable).")
@click.option("--vocoder", default=None, type=click.Path(file_okay=False), help="Unit vocoder directory; without it speech outputs are written as units (.units.txt).")
@click.option("--beam-size", "--beam", "beam_size", type=int, default=None, help="Beam width (default 5; overrides the config).")
@click.option("--beam-patience", type=float, default=None, help="Beam search ends a row after P x beam finished hypotheses (default 1: fairseq's rule; the scenes recipe uses 2).")
@click.option("--greedy", is_flag=True, help="Greedy decoding (beam 1).")
@click.option("--sample", is_flag=True, help="Sample (top-k / top-p) instead of beam search.")
@click.option("--top-k", type=int, default=None, help="Sampling: keep the k most likely tokens.")
@click.option("--top-p", type=float, default=None, help="Sampling: nucleus mass.")
@click.option("--temperature", type=float, default=None, help="Logit temperature.")
@click.option("--seed", type=int, default=None, help="Random seed for sampling.")
@click.option("--batch-size", type=int, default=None, help="Inputs decoded together.")
@click.option("--guidance", type=float, default=None, help="Image targets: classifier-free guidance scale S, logits = cond + S*(cond - uncond) (0: off; needs a model trained with null sources).")
@click.option("--rerank", type=int, default=None, help="Image and speech targets: make K candidates (images sampled; speech the beam's K best, sampled with --sample) and keep the one the reverse direction explains best (0: off).")
@click.option("--rerank-forward", type=float, default=None, metavar="W", help="Weight of the forward score in reranking: W * log p(target|source) + log p(source|target) (default 1; 0: the reverse score alone).")
@click.option("--rerank-align", type=float, default=None, metavar="A", help="Image targets: add A x the image tokenizer's own image-caption cosine to the reranking score (a pixel judge from `tmt tokenize image fit-judge`, else an image-aligned card's own; the caption is the text source or the text pivot; default 0: off).")
@click.option("--voice", default=None, metavar="NAME", help="Voice of speech targets (a model trained with voice tokens; default: the one vocab.json names). `tmt vocab show` lists them.")
@click.option("--device", default="cpu", help="Torch device (cpu, cuda, cuda:1).")
@click.option("--skip-bad", is_flag=True, help="--output-dir runs: skip (and count, in run.json) inputs that cannot be read or are empty, too short or silent, instead of stopping at the first.")
@segment_option
@config_options
def cli(
    inputs: tuple[str, ...], model_dir: str, tgt: str, src: str | None, via: str | None, texts: tuple[str, ...],
    output: str | None, output_dir: str | None, manifest: str | None, split: str | None, shard: str | None,
    limit: int | None, all_rows: bool, fmt: str, tokenizers: tuple[str, ...], vocoder: str | None, beam_size: int | None, beam_patience: float | None,
    greedy: bool, sample: bool, top_k: int | None, top_p: float | None, temperature: float | None, seed: int | None, batch_size: int | None,
    guidance: float | None, rerank: int | None, rerank_forward: float | None, rerank_align: float | None,
    voice: str | None, device: str, skip_bad: bool, config_file: str | None, overrides: tuple[str, ...], dump_config: bool,
) -> None:
    """Translate speech, images or text into another modality.

    Inputs are files (wav/flac, png/jpg, txt: one text per line), --text values,
    text lines on stdin, or the rows of a manifest. Text outputs go to stdout
    unless -o/--output-dir is given; image and speech outputs need one of them.

    An --output-dir run is all-or-nothing: the first bad input stops it with its
    error and nothing is written (rerun it after fixing the input); --skip-bad
    skips bad inputs instead and records their count and ids in run.json.
    An --output-dir run does not resume: rerun after an interruption, it starts
    over (the killed run's staged files are removed) and translates every input.
    """
    cfg = _generation_config(config_file, overrides, beam_size, greedy, sample, top_k=top_k, top_p=top_p, temperature=temperature,
                             seed=seed, batch_size=batch_size, beam_patience=beam_patience, guidance=guidance, rerank=rerank,
                             rerank_forward=rerank_forward, rerank_align=rerank_align, voice=voice)
    if dump_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    _check_modality(tgt, "--to")
    _check_modality(src, "--from")
    _check_modality(via, "--via")
    tok_dirs = _parse_tokenizers(tokenizers)
    _check_options(tgt, via, output, output_dir, manifest, split, shard, limit, all_rows, inputs, texts, skip_bad)

    from tmt.core.shards import parse_shard_spec

    k, n = parse_shard_spec(shard)
    if manifest is not None:
        items, ids, srcs, groups = _manifest_rows(manifest, split, src, tgt, via, (k, n), limit, all_rows)
    else:
        items, ids, srcs = _collect_inputs(inputs, texts, src)
        groups = None
    _check_inputs(srcs, tgt, via, output, output_dir)

    from tmt.generation.translator import Translator

    translator = Translator.from_checkpoint(model_dir, device=device, tokenizers=tok_dirs, vocoder=vocoder, config=cfg)
    if tgt == "speech" and vocoder is None:
        log.warning("no --vocoder given: speech outputs are written as unit sequences (.units.txt)")

    if output_dir is not None:
        run_info = _run_info(cfg, translator, srcs[0], tgt, via, manifest, split, model_dir, vocoder)
        _translate_into_dir(translator, items, ids, srcs[0], tgt, via, output_dir, run_info, groups, (k, n), cfg.batch_size,
                            skip_bad=skip_bad)
        return
    results = _translate_grouped(translator, items, ids, srcs, tgt, via)
    if output is not None:
        _save_one(results[0], Path(output), tgt, fmt)
        return
    _print_results(results, fmt)


def _run_info(
    cfg: Any, translator: Any, src: str, tgt: str, via: str | None, manifest: str | None, split: str | None,
    model_dir: str, vocoder: str | None,
) -> dict[str, Any]:
    """What run.json records of an --output-dir run."""
    beam_size, patience = cfg.search()
    return {
        "src": src, "tgt": tgt, "via": via, "manifest": manifest, "split": split,
        "model": str(model_dir), "beam_size": beam_size, "beam_patience": patience,
        "strategy": cfg.strategy, "vocoder": vocoder, "guidance": cfg.guidance, "rerank": cfg.rerank,
        "rerank_forward": cfg.rerank_forward, "rerank_align": cfg.rerank_align, "voice": cfg.voice or translator.vocab.default_voice,
    }


def _print_results(results: list[Any], fmt: str) -> None:
    """Text outputs to stdout: one hypothesis per line, or JSON lines with --format jsonl."""
    for r in results:
        if fmt == "jsonl":
            click.echo(json.dumps({"id": r.id, "src": r.src, "tgt": r.tgt, "via": r.via,
                                   "hypothesis": r.hypothesis(), "score": round(r.score, 6)}, ensure_ascii=False))
        else:
            click.echo(r.hypothesis())


def _generation_config(
    config_file: str | None, overrides: tuple[str, ...], beam_size: int | None, greedy: bool, sample: bool,
    **options: Any,
) -> Any:
    """The GenerationConfig: defaults, then --config/--set, then the decoding flags (checked)."""
    from tmt.generation.generator import GenerationConfig

    cfg = resolve(GenerationConfig(), config_file, overrides)
    if beam_size is not None:
        cfg.beam_size = beam_size
    if greedy and sample:
        raise CliInputError("--greedy and --sample exclude each other")
    if greedy:
        cfg.strategy = "greedy"
    if sample:
        cfg.strategy = "sample"
    for name, value in options.items():
        if value is not None:
            setattr(cfg, name, value)
    cfg.check()
    return cfg


def _check_options(
    tgt: str, via: str | None, output: str | None, output_dir: str | None, manifest: str | None,
    split: str | None, shard: str | None, limit: int | None, all_rows: bool, inputs: tuple[str, ...], texts: tuple[str, ...],
    skip_bad: bool = False,
) -> None:
    """Option combinations that cannot work, refused before anything is loaded."""
    if output and output_dir:
        raise CliInputError("give either -o/--output or --output-dir, not both")
    if skip_bad and output_dir is None:
        raise CliInputError("--skip-bad applies to --output-dir runs only")
    if manifest is not None and output_dir is None:
        raise CliInputError("--manifest needs --output-dir")
    if manifest is None and (split is not None or shard is not None or limit is not None or all_rows):
        raise CliInputError("--split, --shard, --limit and --all-rows apply to --manifest runs only")
    if limit is not None and limit < 1:
        raise CliInputError(f"--limit must be >= 1, got {limit}")
    if manifest is not None and (inputs or texts):
        raise CliInputError("give either --manifest or input files / --text, not both")
    if via is not None and via == tgt:
        raise CliInputError(f"--via {via} is the target itself; pick another pivot")
    if output is not None:
        _check_output_suffix(Path(output), tgt)


def _manifest_rows(
    manifest: str, split: str | None, src: str | None, tgt: str, via: str | None, shard: tuple[int, int],
    limit: int | None, all_rows: bool,
) -> tuple[list[Any], list[str], list[str], dict[str, str] | None]:
    """Inputs, ids, source modalities and groups of the manifest rows this worker translates."""
    from tmt.generation.batch import default_source, manifest_inputs

    msrc = src or default_source(tgt, via)
    if src is None:
        log.info("--from not given: translating the manifest's %s into %s", msrc, tgt)
    items, ids, groups = manifest_inputs(
        manifest, split, msrc, shard, limit, one_per_group=msrc == "image" and not all_rows
    )
    return items, ids, [msrc] * len(items), groups


def _check_inputs(srcs: list[str], tgt: str, via: str | None, output: str | None, output_dir: str | None) -> None:
    """The collected inputs against --to, --via and the output options."""
    for s in set(srcs):
        if s == tgt:
            raise CliInputError(f"the input is already {tgt}; pick another --to (or --from)")
        if via is not None and s == via:
            raise CliInputError(f"--via {via} is the source modality itself; pick another pivot")
    if output is not None and len(srcs) != 1:
        raise CliInputError(f"-o takes a single input but {len(srcs)} were given; use --output-dir for several")
    if output is None and output_dir is None and tgt != "text":
        raise CliInputError(f"--to {tgt} writes files: give -o FILE (one input) or --output-dir DIR")
    if len(set(srcs)) > 1 and output_dir is not None:
        raise CliInputError("--output-dir runs need inputs of one modality; split them or pass --from")


def _translate_into_dir(
    translator: Any, items: list[Any], ids: list[str], src: str, tgt: str, via: str | None, output_dir: str,
    run_info: dict[str, Any], groups: dict[str, str] | None, shard: tuple[int, int], batch_size: int,
    *, skip_bad: bool = False,
) -> None:
    """Batch mode: a hypotheses directory (with a progress bar); `skip_bad` skips and counts bad inputs."""
    from tmt.generation.batch import translate_to_dir

    bar = iter(progress(range(len(items)), total=len(items), desc=f"translate -> {tgt}", unit="input"))

    def advance(count: int) -> None:
        for _ in range(count):
            next(bar, None)

    path = translate_to_dir(
        translator, items, ids, src=src, tgt=tgt, via=via, output_dir=output_dir, run_info=run_info,
        groups=groups, shard=shard, chunk=max(batch_size * 4, 16), progress=advance, skip_bad=skip_bad,
    )
    click.echo(f"wrote {len(items)} {tgt} outputs to {output_dir} ({path.name})"
               + ("; bad inputs skipped are counted in run.json" if skip_bad else ""), err=True)


def _save_one(r: Any, out: Path, tgt: str, fmt: str) -> None:
    """-o: one translation to one file (speech without a vocoder: its units)."""
    if tgt == "speech" and r.waveform is None:
        from tmt.generation.translation import _units_path

        out = _units_path(out)
        click.echo(f"note: no --vocoder given; wrote {len(r.tokens)} speech units to {out} "
                   "(pass --vocoder DIR to synthesize audio)", err=True)
    r.save(out)
    if tgt != "text" or fmt == "jsonl":
        click.echo(f"wrote {out} (score {r.score:.3f})", err=True)


def _translate_grouped(translator: Any, items: list[Any], ids: list[str], srcs: list[str], tgt: str, via: str | None) -> list[Any]:
    """Translate inputs of possibly several source modalities, keeping the input order."""
    out: list[Any] = [None] * len(items)
    for m in dict.fromkeys(srcs):
        idx = [i for i, s in enumerate(srcs) if s == m]
        res = translator.translate([items[i] for i in idx], tgt=tgt, src=m, via=via, ids=[ids[i] for i in idx])
        for i, r in zip(idx, res, strict=True):
            out[i] = r
    return out
