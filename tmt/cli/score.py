"""`tmt score`: metrics for translation outputs, run comparison, retrieval.

    tmt score HYPDIR... [--manifest M]     score `tmt translate` batch outputs
    tmt score --model EXP --manifest M --split test --out-dir D    translate, then score
    tmt score --compare A B                two scores.json side by side
    tmt score table --split test A B --split test_novel A2 B2   two runs over splits, one table
    tmt score curves UNIFIED SINGLE...     validation curves at equal compute
    tmt score retrieval --model EXP --store S --src speech --tgt image
"""

from __future__ import annotations

from typing import Any

import click

from tmt.cli._common import CONTEXT, echo_json, format_table

EPILOG = """\b
Examples:
  tmt score exp/out/image-text --manifest data/scenes/test.jsonl.gz
  tmt score exp/out/* --out-dir exp/scores --vocoder exp/vocoder --ref-store data/scenes/store/test
  tmt score exp/out/text-speech --asr-prompt "red green blue circle square triangle"
  tmt score exp/out/text-speech --vocoder exp/vocoder --ref-store S --realisations 4   # mean of 4 noise draws
  tmt score --model exp/tmt --manifest data/scenes/test.jsonl.gz --split test \\
      --directions i2t,s2t,t2i --out-dir exp/scores --vocoder exp/vocoder --limit 50
  tmt score --compare exp/scores exp_bt/scores
  tmt score curves exp/tmt exp/single_* --ratio 2 --out scores/curves.md --plot scores/curves.png
  tmt score retrieval --model exp/tmt --store data/scenes/store/test --src speech --tgt image
"""


class _DefaultGroup(click.Group):
    """A group whose default sub-command is `run`: `tmt score DIR` == `tmt score run DIR`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup, context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """Score translations in all six directions (default sub-command: run).

    Text outputs get BLEU-1..4 (+ METEOR, ROUGE-L, CIDEr) or WER/CER; speech
    outputs are transcribed by the Whisper tiny.en judge; scene images are read
    back by the scene parser. Judges missing from this install are reported as
    unavailable with the reason, never as numbers.
    """


@cli.command("run", context_settings=CONTEXT, epilog=EPILOG)
@click.argument("hyp_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="Raw manifest with the references (default: the one in each run.json).")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Where scores.json, report.md and scores.png go (default: the directory, or the common parent of several).")
@click.option("--ref-store", type=click.Path(file_okay=False), default=None,
              help="Token store of the split: ground-truth units (ASR ceiling) and image tokens (token agreement).")
@click.option("--vocoder", type=click.Path(file_okay=False), default=None,
              help="Unit vocoder directory: vocodes unit-only outputs and the ground-truth units for the ceiling.")
@click.option("--realisations", type=click.IntRange(min=1), default=1, show_default=True,
              help="unit-world vocoder: voice speech outputs (from their units) and the ceiling with this many noise "
                   "realisations and report the mean (each under extra.realisations).")
@click.option("--clip", "clip_dir", type=click.Path(file_okay=False), default=None,
              help="Local transformers CLIPModel directory (image outputs of non-scene corpora).")
@click.option("--asr-model", type=click.Path(file_okay=False), default=None,
              help="CTranslate2 Whisper directory for the ASR judge (default: bundled tiny.en).")
@click.option("--asr-prompt", default=None, help="Vocabulary prompt for the ASR judge (off by default, for fairness).")
@click.option("--asr-no-repeat-ngram", type=click.IntRange(min=0), default=4, show_default=True,
              help="The ASR judge never repeats a token n-gram of this size (stops Whisper's loops on babble; 0: off).")
@click.option("--no-coco", is_flag=True, help="Skip METEOR/ROUGE-L/CIDEr (they start Java; slow on first use).")
@click.option("--no-ceiling", is_flag=True, help="Do not score ground truth with the judges.")
@click.option("--samples", default=5, help="Sample outputs per direction in report.md.")
@click.option("--max-items", type=int, default=None, help="Score only the first N hypotheses per directory.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None,
              help="Model mode: translate --manifest rows with this experiment first (into OUT-DIR/hyp/<src>-<tgt>).")
@click.option("--split", default=None, help="Model mode: only manifest rows of this split.")
@click.option("--directions", default="all", help="Model mode: comma list, e.g. i2t,s2t,t2i (or image->text; all = the six).")
@click.option("--limit", type=int, default=None, help="Model mode: translate at most N inputs per direction (one per image for image sources).")
@click.option("--beam-size", type=int, default=5, help="Model mode: beam width (1 = greedy).")
@click.option("--device", default="cpu", help="Model mode: torch device for translation (and, with --ref-store, "
              "for the teacher-forced object/background split of image targets).")
@click.option("--voice", default=None, metavar="NAME", help="Model mode: voice of speech targets (a model trained with voice tokens; default: vocab.json's).")
@click.option("--compare", "compare_pair", nargs=2, type=click.Path(), default=None, metavar="A B",
              help="Print two scores.json (files or directories) side by side with deltas (B - A).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def run(
    hyp_dirs: tuple[str, ...],
    manifest: str | None,
    out_dir: str | None,
    ref_store: str | None,
    vocoder: str | None,
    realisations: int,
    clip_dir: str | None,
    asr_model: str | None,
    asr_prompt: str | None,
    asr_no_repeat_ngram: int,
    no_coco: bool,
    no_ceiling: bool,
    samples: int,
    max_items: int | None,
    model_dir: str | None,
    split: str | None,
    directions: str,
    limit: int | None,
    beam_size: int,
    device: str,
    voice: str | None,
    compare_pair: tuple[str, str] | None,
    as_json: bool,
) -> None:
    """Score hypotheses directories written by `tmt translate --output-dir`.

    With --model (and --manifest, --out-dir), translate the manifest's rows in
    each of --directions first, then score them: model + split mode. That mode
    does not resume: rerun after an interruption, it translates every direction
    again (a killed run leaves no half-written hypotheses directory behind).
    """
    if compare_pair:
        _print_compare(*compare_pair, as_json=as_json, others=bool(hyp_dirs or model_dir))
        return
    _check_inputs(hyp_dirs, model_dir, manifest, out_dir, {"--split": split, "--limit": limit})
    from tmt.evaluation.score import ScoreConfig, default_out_dir, score_runs

    cfg = ScoreConfig(
        manifest=manifest, ref_store=ref_store, vocoder=vocoder, realisations=realisations, clip=clip_dir, asr_model_dir=asr_model, samples=samples,
        asr_prompt=asr_prompt, asr_no_repeat_ngram=asr_no_repeat_ngram, coco=not no_coco, ceiling=not no_ceiling, max_items=max_items,
    )
    if model_dir is not None:
        from tmt.cli.score_model import ModelRunConfig, parse_score_directions, score_model

        assert manifest is not None and out_dir is not None
        run_cfg = ModelRunConfig(
            model=model_dir, manifest=manifest, split=split,
            directions=[f"{s}->{t}" for s, t in parse_score_directions(directions)],
            vocoder=vocoder, limit=limit, beam_size=beam_size, device=device, voice=voice,
        )
        scores = score_model(run_cfg, out_dir, cfg)
    else:
        out_dir = out_dir or str(default_out_dir(hyp_dirs))
        scores = score_runs(hyp_dirs, out_dir, cfg)
        if ref_store:  # image targets: object/background tokens, teacher-forced by each run's model
            from tmt.cli.score_model import write_token_split

            write_token_split(scores, out_dir, None, ref_store, device)
    _print_scores(scores, out_dir, as_json=as_json)


def _check_inputs(
    hyp_dirs: tuple[str, ...], model_dir: str | None, manifest: str | None, out_dir: str | None,
    model_only: dict[str, Any],
) -> None:
    """Directories or --model, never both; the options each mode needs."""
    if model_dir is None:
        used = [k for k, v in model_only.items() if v is not None]
        if used:
            raise click.UsageError(f"{', '.join(used)} apply to --model runs only")
        if not hyp_dirs:
            raise click.UsageError("give at least one hypotheses directory, --model EXP --manifest M, or --compare A B")
    else:
        if hyp_dirs:
            raise click.UsageError("give either hypotheses directories or --model, not both")
        if not manifest or not out_dir:
            raise click.UsageError("--model needs --manifest (the rows to translate) and --out-dir")


def _print_scores(scores: dict[str, Any], out: str, *, as_json: bool) -> None:
    """scores.json as JSON, or a table of headline metrics and the unavailable ones."""
    from tmt.evaluation.score import headline

    if as_json:
        echo_json(scores)
        return
    rows: list[list[Any]] = []
    for key, e in scores["directions"].items():
        h = headline(e)
        others = ", ".join(f"{m}={v:.2f}" for m, v in e["metrics"].items() if not h or m != h[0])
        rows.append([key, e["n"], h[0] if h else "-", h[1] if h else "unavailable", others or "-"])
    click.echo(format_table(rows, ["direction", "n", "headline", "value", "other metrics"]))
    for key, e in scores["directions"].items():
        for m, why in e["unavailable"].items():
            click.echo(f"{key}: {m} unavailable: {why}")
    click.echo(f"wrote {out}/scores.json, {out}/report.md, {out}/scores.png")


def _print_compare(a: str, b: str, *, as_json: bool, headline: bool = False, others: bool = False) -> None:
    if others:
        raise click.UsageError("--compare takes two score files/directories and no HYP_DIRS or --model")
    from tmt.evaluation.score import compare

    rows = compare(a, b, headline_only=headline)
    if as_json:
        echo_json(rows)
        return

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    click.echo(f"A = {a}\nB = {b}")
    table = [[r["direction"], r["metric"], f(r["a"]), f(r["b"]), ("+" if (r["delta"] or 0) > 0 else "") + f(r["delta"]), r["better"] or "-"] for r in rows]
    click.echo(format_table(table, ["direction", "metric", "A", "B", "delta", "better"]))


@cli.command("compare", context_settings=CONTEXT, epilog=EPILOG)
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--headline", is_flag=True, help="Only each direction's headline metric (BLEU-4, WER, scene exact match).")
def compare_cmd(a: str, b: str, as_json: bool, headline: bool) -> None:
    """Two runs' scores side by side with deltas (B - A); same as `tmt score --compare A B`."""
    _print_compare(a, b, as_json=as_json, headline=headline)


@cli.command("table", context_settings=CONTEXT, epilog=EPILOG)
@click.option("--split", "splits", nargs=3, multiple=True, required=True, metavar="NAME A B",
              help="A split's two scores.json (or their directories); repeat for each split.")
@click.option("--names", nargs=2, default=("A", "B"), metavar="NAME_A NAME_B", help="Column names of the two runs.")
def table_cmd(splits: tuple[tuple[str, str, str], ...], names: tuple[str, str]) -> None:
    """Two runs over several splits in one markdown table: headline metric per direction, the winner.

    e.g. tmt score table --names unified single --split test U/test S/test
    --split test_novel U/test_novel S/test_novel
    """
    from tmt.evaluation.score.table import render_split_table, split_rows

    rows = split_rows({name: (a, b) for name, a, b in splits})
    click.echo(render_split_table(rows, [s[0] for s in splits], names), nl=False)


@cli.command("curves", context_settings=CONTEXT, epilog=EPILOG)
@click.argument("unified", type=click.Path(file_okay=False))
@click.argument("singles", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--ratio", type=float, required=True,
              help="Unified steps per single-model step at equal compute (the scenes recipe: unified steps / single steps).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the markdown table here.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Also draw each direction's two curves into this PNG.")
def curves_cmd(unified: str, singles: tuple[str, ...], ratio: float, out: str | None, plot: str | None) -> None:
    """A unified experiment's validation CE against single-direction experiments', per direction,
    at equal compute (best value, its step, and the equal-compute points where each is lower)."""
    from tmt.core.io import atomic_write_text
    from tmt.evaluation.score import curves as c

    uni = c.valid_curves(unified)
    single = dict(c.single_curve(s) for s in singles)
    text = c.render_curves(c.compare_curves(uni, single, ratio), ratio)
    if out:
        atomic_write_text(out, text)
    if plot:
        c.plot_curves(uni, single, ratio, plot)
    click.echo(text, nl=False)


@cli.command("retrieval", context_settings=CONTEXT, epilog=EPILOG)
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="Experiment directory (model.pt, config.yaml, vocab.json).")
@click.option("--store", "store_dir", required=True, type=click.Path(file_okay=False), help="Token store of the split to search.")
@click.option("--src", default="speech", type=click.Choice(["text", "speech", "image"]), help="Query modality.")
@click.option("--tgt", default="image", type=click.Choice(["text", "speech", "image"]), help="Candidate modality.")
@click.option("--max-items", default=100, help="First N groups of the split (cost grows as N^2).")
@click.option("--batch-size", default=64, help="Candidates per forward pass.")
@click.option("--no-normalize", is_flag=True, help="Rank by the summed (not per-token) log-probability.")
@click.option("--device", default="cpu", help="Torch device.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None, help="Also write the result as JSON here.")
def retrieval(
    model_dir: str, store_dir: str, src: str, tgt: str, max_items: int, batch_size: int,
    no_normalize: bool, device: str, out: str | None,
) -> None:
    """R@1/5/10 of SRC queries against TGT candidates, ranked by forced-decoding log-probability."""
    from tmt.evaluation.retrieval import RetrievalConfig, evaluate_retrieval
    from tmt.models.checkpoint import load_model

    model = load_model(model_dir, device=device)
    res = evaluate_retrieval(
        model, store_dir,
        RetrievalConfig(src=src, tgt=tgt, max_items=max_items, batch_size=batch_size, normalize=not no_normalize),
    )
    res["model"] = model_dir
    if out:
        from tmt.core.io import atomic_write_json

        atomic_write_json(out, res)
    m, c = res["metrics"], res["chance"]
    click.echo(f"{res['task']}: {res['queries']} queries x {res['candidates']} candidates")
    click.echo(format_table(
        [[k, m[k], c[f"chance_{k}"]] for k in ("r@1", "r@5", "r@10")] + [["median rank", m["median_rank"], "-"]],
        ["metric", "model", "chance"],
    ))
