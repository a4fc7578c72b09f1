"""`tmt tokenize speech`: fit k-means speech units, encode manifests into stores, import km.bin."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import click

from tmt.cli._common import (
    CONTEXT,
    echo_json,
    encode_options,
    merge_command,
    run_encode,
    set_threads,
    split_filter,
)
from tmt.config import config_options
from tmt.core.progress import progress_enabled

log = logging.getLogger(__name__)

EPILOG = """\b
Examples:
  tmt tokenize speech fit --card tokenizers/speech-mfcc-km200.yaml --manifest data/scenes/manifest.jsonl.gz --out exp/tok/speech
  tmt tokenize speech fit --card tokenizers/speech-hubert-base-l6-km200.yaml --set hubert.weights=/models/hubert_base_ls960.pt \\
      --manifest data/coco/manifest.jsonl.gz --out exp/tok/speech-hubert
  tmt tokenize speech encode --tokenizer exp/tok/speech --manifest data/scenes/manifest.jsonl.gz --split train --store data/store/train
  tmt tokenize speech encode --tokenizer exp/tok/speech --manifest m.jsonl.gz --store data/store/train --shard 0/4
  tmt tokenize speech merge --store data/store/train --parts 4
  tmt tokenize speech pretrain --teacher exp/tok/speech --manifest data/scenes/train.jsonl.gz --out exp/ssl \\
      --set train.max_minutes=30 --threads 2        # then a card with features: hubert, hubert.weights=exp/ssl/model.safetensors
  tmt tokenize speech import-km --km km.bin --card tokenizers/speech-hubert-base-l6-km200.yaml \\
      --set hubert.weights=/models/hubert_base_ls960.pt --out exp/tok/speech-fairseq --trust-pickle
"""


def _save_atomically(tok: object, out_dir: str, overwrite: bool) -> None:
    """Write the tokenizer to OUT.tmp, then rename: no half-written tokenizer directory."""
    from tmt.tokenizers.base import TokenizerError

    out = Path(out_dir)
    if (out / "tokenizer.json").exists() and not overwrite:
        raise TokenizerError(f"{out} already holds a tokenizer; pass --overwrite to replace it")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tok.save(tmp)  # type: ignore[attr-defined]
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def _card(card: str, config_file: str | None, overrides: tuple[str, ...]):  # type: ignore[no-untyped-def]
    from tmt.config import ConfigError, resolve
    from tmt.tokenizers.base import TokenizerError
    from tmt.tokenizers.speech import load_speech_card

    try:
        return resolve(load_speech_card(card), config_file, overrides)
    except ConfigError as e:
        raise TokenizerError(f"{card}: {e}") from None


@click.group(context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """Speech: 50 Hz features (MFCC or HuBERT) + k-means units, run-length deduplicated."""


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--card", required=True, type=click.Path(dir_okay=False), help="Tokenizer card (tokenizers/speech-*.yaml).")
@click.option("--manifest", required=True, type=click.Path(dir_okay=False), help="Raw manifest whose speech to fit on.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output tokenizer directory.")
@click.option("--split", default="train", help="Manifest split to fit on ('all' for every row).")
@click.option("--skip-bad", is_flag=True, help="Skip (and count) unreadable/empty/silent audio instead of failing.")
@click.option("--trust-pickle", is_flag=True,
              help="Allow full unpickling of a fairseq HuBERT checkpoint that holds pickled config objects. "
                   "Pickles can run arbitrary code: only for files you trust.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it already holds a tokenizer.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@config_options
def fit(card: str, manifest: str, out_dir: str, split: str, skip_bad: bool, trust_pickle: bool, overwrite: bool,
        threads: int | None, config_file: str | None, overrides: tuple[str, ...], dump_config: bool) -> None:
    """Train k-means on a seeded sample of the manifest's speech features; write OUT.

    OUT holds tokenizer.json, centroids.safetensors and, for HuBERT cards, the converted
    weights (hubert.safetensors), so encoding needs neither the original checkpoint nor a
    trust flag. Card values can be changed with --config FILE / --set clusters=100.
    """
    from tmt.config import dump_yaml
    from tmt.tokenizers.base import TokenizerError
    from tmt.tokenizers.speech.fit import fit_speech_tokenizer, iter_speech_paths, speech_voices

    cfg = _card(card, config_file, overrides)
    if dump_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    set_threads(threads)
    if (Path(out_dir) / "tokenizer.json").exists() and not overwrite:
        raise TokenizerError(f"{out_dir} already holds a tokenizer; pass --overwrite to replace it")
    paths = list(dict.fromkeys(iter_speech_paths(manifest, split_filter(split))))
    if not paths:
        raise TokenizerError(f"{manifest}: no rows with speech in split '{split}' (use --split all?)")
    log.info("fitting %s on up to %d files from %s", cfg.name, len(paths), manifest)
    voices = speech_voices(manifest, paths) if cfg.speaker_norm else None
    tok = fit_speech_tokenizer(cfg, paths, trust_pickle=trust_pickle, skip_bad=skip_bad, progress=progress_enabled(),
                               voices=voices)
    _save_atomically(tok, out_dir, overwrite)
    echo_json({"tokenizer": out_dir, "name": tok.name, "features": cfg.features, "vocab_size": tok.vocab_size,
               "feature_dim": tok.feature_dim, "fingerprint": tok.fingerprint, **tok.fit_stats})


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--tokenizer", "tok_dir", required=True, type=click.Path(file_okay=False), help="Fitted speech tokenizer directory.")
@encode_options(batch_size=16, batch_help="Files per batched feature extraction.", skip_what="audio")
def encode(tok_dir: str, manifest: str, store: str, split: str, shard: str | None, batch_size: int,
           skip_bad: bool, overwrite: bool, threads: int | None) -> None:
    """Encode the manifest's speech into a token store: units + run lengths (`durations` stream).

    Resumable: a rerun skips a finished store/part and continues an interrupted one.
    """
    from tmt.tokenizers.speech import SpeechTokenizer

    run_encode(manifest, store, {"speech": SpeechTokenizer.load(tok_dir)}, {"speech": tok_dir}, split=split,
               shard=shard, batch_size=batch_size, skip_bad=skip_bad, overwrite=overwrite, threads=threads)


cli.add_command(merge_command(EPILOG))


@cli.command("import-km", context_settings=CONTEXT, epilog=EPILOG)
@click.option("--km", "km_path", required=True, type=click.Path(dir_okay=False), help="fairseq km.bin (joblib pickle).")
@click.option("--card", required=True, type=click.Path(dir_okay=False), help="Card describing the features the k-means was trained on.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output tokenizer directory.")
@click.option("--trust-pickle", is_flag=True,
              help="Required: km.bin is a pickle and unpickling can run arbitrary code. Pass it only for a "
                   "file you trust; the centroids are converted to safetensors and the pickle is not needed again.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it already holds a tokenizer.")
@config_options
def import_km(km_path: str, card: str, out_dir: str, trust_pickle: bool, overwrite: bool,
              config_file: str | None, overrides: tuple[str, ...], dump_config: bool) -> None:
    """Import fairseq's k-means (`km.bin`, scikit-learn MiniBatchKMeans) as a speech tokenizer.

    km.bin is a pickle, and loading a pickle can run arbitrary code: it is refused unless
    --trust-pickle is given, then converted to centroids.safetensors.

    The cluster count is taken from the file; the card gives the features (HuBERT layer
    and weights) that the k-means was trained on. The --trust-pickle flag also allows a
    fairseq HuBERT checkpoint with pickled config objects.
    """
    from tmt.config import dump_yaml
    from tmt.tokenizers.speech.fit import import_km as do_import

    cfg = _card(card, config_file, overrides)
    if dump_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    tok = do_import(km_path, cfg, trust_pickle=trust_pickle, trust_pickle_weights=trust_pickle)
    _save_atomically(tok, out_dir, overwrite)
    echo_json({"tokenizer": out_dir, "name": tok.name, "vocab_size": tok.vocab_size, "feature_dim": tok.feature_dim,
               "fingerprint": tok.fingerprint})


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--teacher", "teacher_dir", required=True, type=click.Path(file_okay=False),
              help="Fitted speech tokenizer whose frame units are the targets (e.g. the MFCC k-means one).")
@click.option("--manifest", required=True, type=click.Path(dir_okay=False), help="Raw manifest whose speech to train on.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory (model.safetensors, ...).")
@click.option("--split", default="train", help="Manifest split to train on ('all' for every row).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt (same config and teacher).")
@click.option("--overwrite", is_flag=True, help="Start over although OUT already holds a pretrained model.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@config_options
def pretrain(teacher_dir: str, manifest: str, out_dir: str, split: str, resume: bool, overwrite: bool,
             threads: int | None, config_file: str | None, overrides: tuple[str, ...], dump_config: bool) -> None:
    """Pretrain a HuBERT on a teacher tokenizer's units (masked prediction); write OUT.

    The next iteration of HuBERT's recipe: the transformer sees log-mel frames with spans
    masked and predicts the teacher's unit of every masked frame. k-means on one of its layers
    (a card with `features: hubert` and `hubert.weights: OUT/model.safetensors`, fitted with
    `tmt tokenize speech fit`) gives the new units. Time-budgeted (`--set train.max_minutes=N`)
    and resumable; the held-out masked accuracy is logged at every checkpoint and drawn in
    OUT/curves.png.
    """
    from tmt.config import ConfigError, dump_yaml, resolve
    from tmt.tokenizers.base import TokenizerError
    from tmt.tokenizers.speech import SpeechTokenizer
    from tmt.tokenizers.speech.fit import iter_speech_paths, speech_voices
    from tmt.tokenizers.speech.pretrain import WEIGHTS, PretrainConfig, prepare_data
    from tmt.tokenizers.speech.pretrain import pretrain as run_pretrain

    try:
        cfg = resolve(PretrainConfig(), config_file, overrides)
    except ConfigError as e:
        raise TokenizerError(f"pretrain config: {e}") from None
    if dump_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    cfg.check()
    if (Path(out_dir) / WEIGHTS).exists() and not (resume or overwrite):
        raise TokenizerError(f"{out_dir} already holds a pretrained model; pass --resume to continue or --overwrite")
    if overwrite and Path(out_dir).exists():
        shutil.rmtree(out_dir)
    set_threads(threads)
    teacher = SpeechTokenizer.load(teacher_dir)
    paths = list(dict.fromkeys(iter_speech_paths(manifest, split_filter(split))))
    if not paths:
        raise TokenizerError(f"{manifest}: no rows with speech in split '{split}' (use --split all?)")
    voices = speech_voices(manifest, paths) if teacher.cfg.speaker_norm else None
    data = prepare_data(teacher, paths, cfg.model.num_mel_bins, voices=voices, progress=progress_enabled())
    info = run_pretrain(cfg, data, out_dir, num_units=teacher.vocab_size, resume=resume, progress=progress_enabled(),
                        teacher_info={"name": teacher.name, "fingerprint": teacher.fingerprint, "path": teacher_dir})
    echo_json({k: info[k] for k in ("weights", "steps", "minutes", "train_utterances", "train_frames",
                                    "held_out_utterances", "valid_accuracy")})
