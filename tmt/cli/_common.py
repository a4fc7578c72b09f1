"""Helpers shared by the CLI modules: output, progress bars, common options."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tmt.core.progress import progress as progress  # re-exported for the CLI modules

T = TypeVar("T")

CONTEXT = {"show_default": True, "help_option_names": ["-h", "--help"]}


def echo_json(obj: Any) -> None:
    """Print a result as JSON on stdout."""
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def shard_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--shard",
        default=None,
        metavar="K/N",
        help="Process only part K of N (0-based) for parallel jobs; merge the parts afterwards.",
    )(f)


def split_filter(split: str) -> str | None:
    """`--split` value -> manifest filter: 'all' (or empty) keeps every row."""
    return None if split in ("all", "") else split


def set_threads(n: int | None) -> None:
    """Apply `--threads` (torch CPU threads); None or 0 keeps torch's default."""
    if n:
        import torch

        torch.set_num_threads(n)


def encode_options(*, batch_size: int, batch_help: str, skip_what: str | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options of every `tmt tokenize ... encode` verb, in one order.

    `skip_what` names what --skip-bad skips ("image", "audio", "media"); None: the verb reads
    no media files, so it has neither --skip-bad nor --threads.
    """

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        opts: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
            click.option("--manifest", required=True, type=click.Path(dir_okay=False), help="Raw manifest to encode."),
            click.option("--store", required=True, type=click.Path(file_okay=False), help="Token store directory to write."),
            click.option("--split", default="all", help="Only rows of this split ('all': every row)."),
            shard_option,
            click.option("--batch-size", type=int, default=batch_size, help=batch_help),
        ]
        if skip_what is not None:
            opts.append(click.option("--skip-bad", is_flag=True,
                                     help=f"Skip (and count) rows whose {skip_what} cannot be read instead of failing."))
        opts.append(click.option("--overwrite", is_flag=True, help="Replace an existing store instead of resuming it."))
        if skip_what is not None:
            opts.append(click.option("--threads", type=int, default=None, help="torch CPU threads."))
        for opt in reversed(opts):
            f = opt(f)
        return f

    return deco


REFINE_HELP = ("image-aligned tokenizers: analysis-by-synthesis encoding, N gradient steps per image on its "
               "latents against the decoder (0: the encoder's codes; 10 fixes most wrong reconstructions at "
               "about 30x the encoding time).")


def load_image_tokenizer(tok_dir: str, refine_steps: int) -> Any:
    """The fitted image tokenizer in `tok_dir`, encoding with `refine_steps` of analysis-by-synthesis."""
    from tmt import TmtError
    from tmt.tokenizers.base import load_tokenizer, read_tokenizer_json
    from tmt.tokenizers.image_aligned import CLASS_NAME

    if refine_steps < 0:
        raise TmtError(f"--refine-steps must be >= 0, got {refine_steps}")
    if not refine_steps:
        return load_tokenizer(tok_dir)
    found = read_tokenizer_json(tok_dir)["class"]
    if found != CLASS_NAME:
        raise TmtError(f"{tok_dir} is a '{found}' tokenizer; refined encoding (--refine-steps {refine_steps}) "
                       f"needs an {CLASS_NAME} one: drop the option or fit an {CLASS_NAME} card")
    return load_tokenizer(tok_dir, refine_steps=refine_steps)


def run_encode(manifest: str, store: str, toks: dict[str, Any], paths: dict[str, str], *, split: str,
               shard: str | None, batch_size: int, overwrite: bool, skip_bad: bool = False,
               threads: int | None = None) -> None:
    """Encode a manifest into a token store with fitted tokenizers and print the counts."""
    from tmt.tokenizers.encode import encode_with_tokenizers

    set_threads(threads)
    counts = encode_with_tokenizers(
        manifest, store, toks, paths=paths, split=split_filter(split), shard=shard,
        batch_size=batch_size, skip_bad=skip_bad, overwrite=overwrite, progress=True,
    )
    echo_json(counts)


def format_table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:,.3f}" if abs(c) < 1000 else f"{c:,.0f}"
    if isinstance(c, int):
        return f"{c:,}"
    return str(c)


def merge_command(epilog: str | None = None) -> click.Command:
    """`merge --store S --parts N`: the merge step after `--shard k/N` jobs (same in every group)."""

    @click.command("merge", context_settings=CONTEXT, epilog=epilog)
    @click.option("--store", required=True, type=click.Path(file_okay=False), help="Store whose parts to merge.")
    @click.option("--parts", required=True, type=int, help="N of the --shard k/N runs.")
    def merge(store: str, parts: int) -> None:
        """Merge the parts written with --shard k/N into the store."""
        from tmt.store.ops import merge_parts

        index = merge_parts(store, parts)
        click.echo(f"merged {parts} parts into {store}: {index['rows']} rows")

    return merge


class TableGroup(click.Group):
    """A group whose sub-commands come from `table` (name -> (command, short help)), in its order.

    `--help` lists the table's short help, not each sub-command's first docstring line."""

    table: dict[str, tuple[click.Command, str]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.table)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.table[cmd_name][0] if cmd_name in self.table else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in self.table.items()])
