"""`tmt vocab`: build the joint vocabulary from fitted tokenizers, and show one."""

from __future__ import annotations

import click

from tmt.cli._common import CONTEXT, echo_json, format_table

EPILOG = """\b
Examples:
  tmt vocab build --text data/tok/text --speech data/tok/speech --image data/tok/image -o data/vocab.json
  tmt vocab build --text T --speech S --image I --voices-from data/scenes/train.jsonl.gz -o data/vocab.json
  tmt vocab show data/vocab.json
  tmt vocab show exp/demo --json
"""


@click.group(context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """Build and inspect the joint vocabulary (vocab.json)."""


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.option("--text", type=click.Path(file_okay=False, exists=True), default=None, help="Fitted text tokenizer directory.")
@click.option("--speech", type=click.Path(file_okay=False, exists=True), default=None, help="Fitted speech tokenizer directory.")
@click.option("--image", type=click.Path(file_okay=False, exists=True), default=None, help="Fitted image tokenizer directory.")
@click.option("--voices-from", "voices_from", multiple=True, type=click.Path(exists=True), help="Raw manifest or token store whose speech voices (tts engine:voice or speaker) become voice tokens for speech targets (repeatable).")
@click.option("--default-voice", default=None, metavar="NAME", help="Voice used when none is asked for (default: the most frequent one).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write vocab.json.")
def build(
    text: str | None, speech: str | None, image: str | None, voices_from: tuple[str, ...], default_voice: str | None,
    output: str,
) -> None:
    """Lay out specials + text + speech + image ranges (+ voice tokens) from the tokenizers' sizes and fingerprints."""
    from tmt import TmtError
    from tmt.tokenizers.base import read_tokenizer_json
    from tmt.vocab import JointVocab, TokenizerInfo

    dirs = {"text": text, "speech": speech, "image": image}
    infos: dict[str, TokenizerInfo] = {}
    for m, d in dirs.items():
        if d is None:
            continue
        tj = read_tokenizer_json(d)
        if tj.get("kind") != m:
            raise TmtError(f"{d} holds a {tj.get('kind')} tokenizer, not a {m} one; pass it as --{tj.get('kind')}")
        infos[m] = TokenizerInfo(
            name=str(tj.get("name") or tj["class"]), size=int(tj["vocab_size"]), fingerprint=str(tj["fingerprint"]),
            card=dict(tj.get("card") or {}), path=str(d),
        )
    if len(infos) < 2:
        raise TmtError("give at least two of --text, --speech, --image (fitted tokenizer directories)")
    voices: list[str] = []
    if voices_from:
        from tmt.store.voices import count_voices, voice_list

        voices, default_voice = voice_list(count_voices(voices_from), default_voice)
    elif default_voice is not None:
        raise TmtError("--default-voice needs --voices-from (the manifests or stores that name the voices)")
    vocab = JointVocab(infos, voices=voices, default_voice=default_voice)
    vocab.save(output)
    click.echo(f"wrote {output}: {vocab!r}")


@cli.command(context_settings=CONTEXT, epilog=EPILOG)
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print vocab.json as JSON.")
def show(path: str, as_json: bool) -> None:
    """Print the ranges, tokenizer names and fingerprints of a vocab.json (or an experiment dir)."""
    from tmt.vocab import NUM_SPECIALS, JointVocab

    vocab = JointVocab.load(path)
    if as_json:
        echo_json(vocab.to_json())
        return
    rows: list[list[object]] = [["specials", 0, NUM_SPECIALS, NUM_SPECIALS, "", ""]]
    for m, t in vocab.tokenizers.items():
        s, e = vocab.range(m)
        rows.append([m, s, e, e - s, t.name, t.fingerprint[:12]])
    click.echo(format_table(rows, ["range", "start", "end", "size", "tokenizer", "fingerprint"]))
    if vocab.voices:
        rows = [[name + (" (default)" if name == vocab.default_voice else ""), vocab.voice_offset + k]
                for k, name in enumerate(vocab.voices)]
        click.echo(format_table(rows, ["voice", "id"]))
    click.echo(f"total: {vocab.size:,} ids")
