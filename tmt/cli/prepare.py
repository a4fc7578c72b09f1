"""`tmt prepare`: corpora into raw manifests (scenes, flickr8k, spokencoco)."""

from __future__ import annotations

import dataclasses

import click

from tmt.cli._common import CONTEXT, echo_json
from tmt.config import config_options, dump_yaml, merge, resolve

EPILOG = """\b
Examples:
  tmt prepare scenes --num-scenes 20 --out data/scenes
  tmt prepare scenes --num-scenes 2000 --jobs 4 --out data/scenes
  tmt prepare scenes --num-scenes 200 --no-speech --max-objects 3 --out data/scenes-img
  tmt prepare scenes --num-scenes 2000 --background tones --extra-scenes 10000 --out data/scenes
  tmt prepare scenes --num-scenes 300 --extra-scenes 2000 --extra-speech 1 --out data/scenes
  tmt prepare flickr8k --root /data/flickr8k --out data/flickr8k
  tmt prepare spokencoco --coco-dir /data/coco --spokencoco-dir /data/SpokenCOCO --out data/coco
"""


@click.group(context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """Prepare corpora into raw manifests (`<split>.jsonl.gz`, DESIGN section 4)."""


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--num-scenes", type=int, default=None, help="Number of images (config default 2000).")
@click.option("--seed", type=int, default=None, help="Random seed; same seed, same bytes (config default 0).")
@click.option("--image-size", type=int, default=None, help="Image side in pixels (config default 64).")
@click.option("--max-objects", type=click.IntRange(1, 3), default=None, help="Most objects per image (config default 2).")
@click.option("--engine", "engines", multiple=True, type=click.Choice(["espeak-ng", "flite"]),
              help="Speech engine to use (repeatable; default: every installed one).")
@click.option("--speech/--no-speech", default=None, help="Synthesise a recording per caption (default on).")
@click.option("--background", type=click.Choice(["random", "constant", "tones"]), default=None,
              help="Image background: constant grey, named tones said in captions, or random grey + noise "
                   "(config default constant).")
@click.option("--extra-scenes", type=click.IntRange(min=0), default=None,
              help="Extra scenes with images and captions (spoken only with --extra-speech), in split "
                   "train_extra (config default 0).")
@click.option("--extra-speech", type=click.IntRange(min=0), default=None,
              help="Also speak the first N captions of each extra scene (config default 0: none).")
@click.option("--jobs", "-j", type=int, default=1, help="Parallel worker processes for drawing and synthesis.")
@click.option("--overwrite", is_flag=True, help="Rebuild a directory made with other settings.")
@config_options
def scenes(
    out_dir: str,
    num_scenes: int | None,
    seed: int | None,
    image_size: int | None,
    max_objects: int | None,
    engines: tuple[str, ...],
    speech: bool | None,
    background: str | None,
    extra_scenes: int | None,
    extra_speech: int | None,
    jobs: int,
    overwrite: bool,
    config_file: str | None,
    overrides: tuple[str, ...],
    dump_config: bool,
) -> None:
    """Draw the embedded scenes corpus: images, 5 captions and 5 recordings per image.

    Writes images/, speech/, train/valid/test/test_novel/images_only/speech_text_only
    manifests (and train_extra with --extra-scenes: images and captions, spoken only
    with --extra-speech)
    and a README.md card into --out; re-running skips finished media.
    """
    from tmt.corpora.scenes import ScenesConfig, prepare_scenes

    cfg = resolve(ScenesConfig(), config_file, overrides)
    given = {
        "num_scenes": num_scenes,
        "seed": seed,
        "image_size": image_size,
        "max_objects": max_objects,
        "engines": list(engines) or None,
        "speech": speech,
        "background": background,
        "extra_scenes": extra_scenes,
        "extra_speech": extra_speech,
    }
    cfg = merge(cfg, {k: v for k, v in given.items() if v is not None})
    if dump_config:
        click.echo(dump_yaml(cfg), nl=False)
        return
    summary = prepare_scenes(out_dir, **dataclasses.asdict(cfg), jobs=jobs, overwrite=overwrite)
    echo_json(summary)


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Folder holding the Flickr8k files.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--images-dir", type=click.Path(file_okay=False), default=None, help="Image folder (default: ROOT/Flicker8k_Dataset or similar).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None, help="Flickr8k.token.txt (default: under ROOT).")
@click.option("--split-file", type=click.Path(dir_okay=False), default=None, help="Karpathy dataset_flickr8k.json (default: ROOT/dataset_flickr8k.json).")
@click.option("--audio-dir", type=click.Path(file_okay=False), default=None, help="Flickr8kAudio folder with wav2capt.txt and wavs/ (default: ROOT/flickr_audio).")
@click.option("--allow-missing", is_flag=True, help="Skip rows whose image or wav is missing instead of failing.")
@click.option("--absolute-paths", is_flag=True, help="Store absolute media paths (default: relative to --out).")
def flickr8k(
    root: str,
    out_dir: str,
    images_dir: str | None,
    token_file: str | None,
    split_file: str | None,
    audio_dir: str | None,
    allow_missing: bool,
    absolute_paths: bool,
) -> None:
    """Flickr8k + Flickr8kAudio (local copy) into train/valid/test manifests."""
    from tmt.corpora.flickr8k import prepare_flickr8k

    echo_json(
        prepare_flickr8k(
            root, out_dir, images_dir=images_dir, token_file=token_file, split_file=split_file,
            audio_dir=audio_dir, allow_missing=allow_missing, absolute_paths=absolute_paths,
        )
    )


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--coco-dir", required=True, type=click.Path(file_okay=False), help="Folder holding train2014/ and val2014/.")
@click.option("--spokencoco-dir", required=True, type=click.Path(file_okay=False), help="Folder holding SpokenCOCO_{train,val}.json and wavs/.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--split-file", type=click.Path(dir_okay=False), default=None, help="Karpathy dataset_coco.json (default: in --coco-dir or --spokencoco-dir).")
@click.option("--restval/--no-restval", default=True, help="Put the Karpathy restval images into train.")
@click.option("--allow-missing", is_flag=True, help="Skip rows whose image or wav is missing instead of failing.")
@click.option("--absolute-paths", is_flag=True, help="Store absolute media paths (default: relative to --out).")
def spokencoco(
    coco_dir: str,
    spokencoco_dir: str,
    out_dir: str,
    split_file: str | None,
    restval: bool,
    allow_missing: bool,
    absolute_paths: bool,
) -> None:
    """COCO + SpokenCOCO (local copy) into Karpathy train/valid/test manifests."""
    from tmt.corpora.spokencoco import prepare_spokencoco

    echo_json(
        prepare_spokencoco(
            coco_dir, spokencoco_dir, out_dir, split_file=split_file, restval=restval,
            allow_missing=allow_missing, absolute_paths=absolute_paths,
        )
    )
