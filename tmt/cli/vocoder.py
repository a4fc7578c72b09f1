"""`tmt vocoder`: train, synthesize, import-fairseq, eval.

The vocoder turns deduplicated speech units into 16 kHz waveforms. A vocoder
directory holds `vocoder.json` + `model.safetensors`; `tmt translate --vocoder DIR`
uses it for speech outputs.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from tmt.cli._common import CONTEXT, echo_json, format_table
from tmt.core.io import make_dirs

log = logging.getLogger(__name__)

SET_HELP = ("A synthesis setting of the trained vocoder(s), e.g. --set world.envelope_smoothing_ms=35 "
            "(world.pitch_mean_hz, pitch_range, synthesis_fft, synthesizer, noise_seed, workers, "
            "envelope_smoothing_ms, envelope_contrast; duration.gain, scale).")
"""Written out, not built from `tmt.vocoder.config.SYNTHESIS_ONLY`: importing tmt.vocoder would load torch for every
`tmt --help` (a test keeps the two in step)."""

EPILOG = """\b
Examples:
  tmt vocoder train --store data/scenes/store/train --manifest data/scenes/train.jsonl.gz \\
      --config unit-mel --out exp/vocoder
  tmt vocoder train ... --config unit-world --set train.max_minutes=20 --out exp/vocoder-world
  tmt vocoder train ... --config demo --set train.max_minutes=30 --out exp/hifigan
  tmt vocoder train ... --config unit-world --voices --out exp/vocoder-voices
  tmt vocoder train ... --config unit-world-exemplars --voices --extra-store data/scenes/store/train_extra \\
      --extra-manifest data/scenes/train_extra.jsonl.gz --extra-rows 2000 --out exp/vocoder
  tmt vocoder train ... --config demo --out exp/hifigan --resume
  tmt vocoder train --config paper --dump-config > vocoder.yaml
  tmt vocoder synthesize exp/vocoder --store data/scenes/store/test --limit 5 --out-dir wavs/
  echo "12 7 99 3 41" | tmt vocoder synthesize exp/vocoder --units - --out-dir wavs/
  tmt vocoder synthesize exp/vocoder-world --store data/scenes/store/test --pitch-mean 200 --out-dir wavs/
  tmt vocoder synthesize exp/vocoder-voices --store data/scenes/store/test --voice flite:slt --out-dir wavs/
  tmt vocoder import-fairseq g_00500000 config.json --out exp/hubert-km100-vocoder
  tmt vocoder eval exp/vocoder --store data/scenes/store/test --manifest data/scenes/test.jsonl.gz
  tmt vocoder eval exp/vocoder-world --store data/scenes/store/valid --manifest data/scenes/valid.jsonl.gz \\
      --set world.synthesizer=pyworld        # the reference WORLD synthesizer instead of the batched one
  tmt vocoder eval exp/vocoder-world --store data/scenes/store/valid --manifest data/scenes/valid.jsonl.gz \\
      --limit 100 --realisations 4          # mean judge WER over four noise realisations
  tmt vocoder eval exp/vocoder-world exp/vocoder --ladder --store data/scenes/store/test \\
      --manifest data/scenes/test.jsonl.gz --limit 100 --out-dir ladder-wavs/
"""


@click.group(context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """Train, import and run the unit vocoder (speech units -> 16 kHz wav)."""


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--store", type=click.Path(file_okay=False), help="Token store with speech + durations streams.")
@click.option("--manifest", type=click.Path(dir_okay=False), help="Raw manifest (jsonl.gz) naming each row's wav.")
@click.option("--out", type=click.Path(file_okay=False), help="Output directory (becomes a vocoder directory).")
@click.option("--config", "config", default=None, metavar="NAME|FILE",
              help="Preset (paper, demo, unit-mel, unit-world, unit-world-exemplars, tiny) or a YAML file (may name `preset:`). Default: demo.")
@click.option("--arch", type=click.Choice(["hifigan", "unit-mel", "unit-world"]), default=None,
              help="Override the architecture.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one config value, e.g. --set train.max_minutes=10.")
@click.option("--dump-config", is_flag=True, help="Print the resolved config as YAML and exit.")
@click.option("--valid-store", type=click.Path(file_okay=False), default=None, help="Held-out store (default: last rows of --store).")
@click.option("--valid-manifest", type=click.Path(dir_okay=False), default=None, help="Manifest for --valid-store (default: --manifest).")
@click.option("--extra-store", type=click.Path(file_okay=False), default=None,
              help="More training rows from another store of the same speech tokenizer, e.g. a corpus' spoken extra "
                   "scenes (`store/train_extra`): the network and the exemplar table learn from them too. Give it again with --resume.")
@click.option("--extra-manifest", type=click.Path(dir_okay=False), default=None, help="Manifest for --extra-store (default: --manifest).")
@click.option("--extra-rows", type=click.IntRange(min=0), default=0, show_default=True,
              help="Use the first N rows of --extra-store (0 = all); unit-world analyses each with WORLD first.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--feature-cache", type=click.Path(file_okay=False), default=None,
              help="unit-world: where the WORLD analysis is cached (default OUT/world-features); reuse it across fits.")
@click.option("--voices", is_flag=True,
              help="unit-mel / unit-world: condition on the speaker (one learned vector per voice of the manifest's "
                   "rows: `voice`, `tts` or `speaker`); synthesis then takes --voice. Give it again with --resume.")
@click.option("--device", default="cpu", help="torch device.")
def train(store: str | None, manifest: str | None, out: str | None, config: str | None, arch: str | None,
          overrides: tuple[str, ...], dump_config: bool, valid_store: str | None, valid_manifest: str | None,
          extra_store: str | None, extra_manifest: str | None, extra_rows: int,
          resume: bool, feature_cache: str | None, voices: bool, device: str) -> None:
    """Train a unit vocoder on a token store's units and the matching wavs."""
    from tmt.config import dump_yaml, save_yaml
    from tmt.vocoder import resolve_config, train_vocoder

    cfg = resolve_config(config, arch, overrides)
    if dump_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    missing = [n for n, v in (("--store", store), ("--manifest", manifest), ("--out", out)) if not v]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)}")
    assert store and manifest and out
    make_dirs(Path(out))
    save_yaml(cfg, Path(out) / "config.yaml")
    result = train_vocoder(cfg, store, manifest, out, valid_store=valid_store, valid_manifest=valid_manifest,
                           extra_store=extra_store, extra_manifest=extra_manifest, extra_rows=extra_rows,
                           resume=resume, device=device, feature_cache=feature_cache, voices=voices)
    echo_json({"vocoder": out, **result})


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.argument("vocoder", type=click.Path(file_okay=False))
@click.option("--units", "units_file", default=None, type=click.Path(allow_dash=True),
              help="Text file (or - for stdin): one utterance per line, 'id<TAB>u1 u2 ...' or 'u1 u2 ...'.")
@click.option("--store", default=None, type=click.Path(file_okay=False), help="Or: a token store's speech rows.")
@click.option("--limit", default=None, type=int, help="At most this many rows.")
@click.option("--gt-durations", is_flag=True, help="With --store: use the stored run lengths instead of predicted ones.")
@click.option("--duration-scale", type=float, default=None,
              help="Speaking rate: multiply predicted durations (> 1 slower) [default: the vocoder's duration.scale].")
@click.option("--duration-rounding", type=click.Choice(["diffuse", "per-unit"]), default="diffuse",
              help="Predicted durations to whole frames: keep each utterance's total (diffuse), or round each "
                   "unit on its own as fairseq does (per-unit; shorter, less intelligible speech).")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False), help="Where <id>.wav files go.")
@click.option("--tokenizer", default=None, type=click.Path(file_okay=False), help="Speech tokenizer dir the units came from (fingerprint check).")
@click.option("--pitch-mean", default=None, type=click.FloatRange(min=20.0, max=1000.0),
              help="unit-world: output pitch mean in Hz (default: the training speech's median, or world.pitch_mean_hz).")
@click.option("--pitch-range", default=None, type=click.FloatRange(min=0.0),
              help="unit-world: output pitch range, a multiple of the training speech's spread (0 = monotone).")
@click.option("--voice", default=None,
              help="A vocoder trained with --voices: whose voice (default: its default voice; see vocoder.json).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--device", default="cpu", help="torch device.")
def synthesize(vocoder: str, units_file: str | None, store: str | None, limit: int | None, gt_durations: bool,
               duration_scale: float | None, duration_rounding: str, out_dir: str, tokenizer: str | None,
               pitch_mean: float | None, pitch_range: float | None, voice: str | None, settings: tuple[str, ...],
               device: str) -> None:
    """Turn unit sequences into wav files (batched)."""
    from tmt.vocoder import (
        load_vocoder,
        read_store_units,
        read_unit_lines,
        speech_tokenizer_record,
        write_wav,
    )

    if (units_file is None) == (store is None):
        raise click.UsageError("give exactly one of --units or --store")
    expected = speech_tokenizer_record(tokenizer).get("fingerprint")
    durations = None
    if store is not None:
        ids, units, durations, store_fp = read_store_units(store, limit=limit, with_durations=gt_durations)
        expected = expected or store_fp
    else:
        assert units_file is not None
        rows = read_unit_lines(units_file)[:limit]
        ids, units = [r[0] for r in rows], [r[1] for r in rows]
    voc = load_vocoder(vocoder, device, expected_fingerprint=expected, settings=settings)
    if (pitch_mean is not None or pitch_range is not None) and voc.arch != "unit-world":
        raise click.UsageError(f"--pitch-mean / --pitch-range need a unit-world vocoder; {vocoder} is {voc.arch}")
    if voice is not None and not voc.voices:
        raise click.UsageError(f"--voice needs a vocoder trained with --voices; {vocoder} has one voice")
    voc.pitch_mean_hz, voc.pitch_range = pitch_mean, pitch_range
    wavs = voc.synthesize(units, durations, duration_scale=duration_scale, duration_rounding=duration_rounding,
                          voice=voice)
    out = Path(out_dir)
    for rid, wav in zip(ids, wavs, strict=True):
        write_wav(out / f"{rid}.wav", wav, voc.sample_rate)
    seconds = sum(len(w) for w in wavs) / voc.sample_rate
    click.echo(f"wrote {len(wavs)} wavs ({seconds:.1f} s of audio) to {out}")


@cli.command("import-fairseq", context_settings=CONTEXT, epilog=EPILOG)
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("config_json", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Vocoder directory to write.")
@click.option("--tokenizer", default=None, type=click.Path(file_okay=False),
              help="The tmt speech tokenizer whose units this vocoder voices (its fingerprint is recorded).")
@click.option("--fingerprint", default=None, help="Or: the speech tokenizer fingerprint to record.")
@click.option("--trust-pickle", is_flag=True, help="Allow arbitrary pickled objects in CHECKPOINT (only for files you trust).")
def import_fairseq_cmd(checkpoint: str, config_json: str, out: str, tokenizer: str | None, fingerprint: str | None,
                       trust_pickle: bool) -> None:
    """Convert a fairseq / speech-resynthesis unit HiFi-GAN (g_XXXXXXXX + config.json)."""
    from tmt.vocoder import speech_tokenizer_record
    from tmt.vocoder.fairseq_import import import_fairseq

    st = speech_tokenizer_record(tokenizer, fingerprint)
    path = import_fairseq(checkpoint, config_json, out, speech_tokenizer=st, trust_pickle=trust_pickle)
    info = json.loads((path / "vocoder.json").read_text())
    click.echo(f"wrote {path}: {info['arch']} vocoder, {info['num_units']} units, "
               f"duration predictor: {'yes' if info['has_duration_predictor'] else 'no'}")


@cli.command("eval", context_settings=CONTEXT, epilog=EPILOG)
@click.argument("vocoders", nargs=-1, type=click.Path(file_okay=False))
@click.option("--store", required=True, type=click.Path(file_okay=False), help="Held-out token store (ground-truth units).")
@click.option("--manifest", required=True, type=click.Path(dir_okay=False), help="Raw manifest with the rows' wavs and texts.")
@click.option("--limit", default=None, type=int, help="At most this many rows.")
@click.option("--gt-durations", is_flag=True, help="Use the stored run lengths (default: predicted durations, as in translation).")
@click.option("--ladder", is_flag=True,
              help="The diagnostic ladder (also when several VOCODERS are given): originals, WORLD copy synthesis, "
                   "Griffin-Lim on true mels, and each vocoder with true and predicted durations, one judge.")
@click.option("--model", default=None, type=click.Path(file_okay=False),
              help="Also transcribe with this tmt translation model (speech->text), if the judge is missing.")
@click.option("--out-dir", default=None, type=click.Path(file_okay=False), help="Keep the resynthesised wavs here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--realisations", default=1, show_default=True, type=int,
              help="unit-world: judge this many noise realisations of the same features (WORLD's own noise, then "
                   "world.noise_seed 1, 2, ...) and report the mean WER and each (one moves it by ~3 points on 100 rows).")
def eval_cmd(vocoders: tuple[str, ...], store: str, manifest: str, limit: int | None, gt_durations: bool, ladder: bool,
             model: str | None, out_dir: str | None, as_json: bool, settings: tuple[str, ...], realisations: int) -> None:
    """Resynthesise held-out units; report WER (ASR judge) and mel distance to the original audio."""
    if ladder or len(vocoders) > 1:
        if realisations != 1:
            raise click.UsageError("--realisations is for one vocoder without --ladder")
        _eval_ladder(vocoders, store, manifest, limit, out_dir, as_json, settings)
        return
    if not vocoders:
        raise click.UsageError("give a VOCODER directory (or --ladder)")
    from tmt.evaluation.vocoder import REALISATION_KEYS, evaluate_vocoder

    res = evaluate_vocoder(vocoders[0], store, manifest, limit=limit, gt_durations=gt_durations, model=model,
                           out_dir=out_dir, settings=settings, realisations=realisations)
    if as_json:
        echo_json(res)
        return
    rows = [[k, v] for k, v in res.items() if not isinstance(v, dict | list)]
    click.echo(format_table(rows, ["metric", "value"]))
    for k, v in res.items():
        if isinstance(v, dict) and v:
            click.echo(f"{k}: {json.dumps(v)}", err=False)
    if "realisations" in res:
        keys = ["noise", *REALISATION_KEYS]
        click.echo(format_table([[r.get(k) for k in keys] for r in res["realisations"]], keys))
    sys.stdout.flush()


def _eval_ladder(vocoders: tuple[str, ...], store: str, manifest: str, limit: int | None, out_dir: str | None,
                 as_json: bool, settings: tuple[str, ...]) -> None:
    from tmt.evaluation.vocoder_ladder import LADDER_HEADER, ladder_rows, run_ladder

    res = run_ladder(vocoders, store, manifest, limit=limit, out_dir=out_dir, settings=settings)
    if as_json:
        echo_json(res)
        return
    click.echo(f"vocoder ladder: {res['rows']} rows of {store}, judge {json.dumps(res['judge'])}")
    click.echo(format_table(ladder_rows(res), LADDER_HEADER))
