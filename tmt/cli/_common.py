"""Helpers shared by the CLI modules: output, progress bars, common options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click

T = TypeVar("T")

CONTEXT = {"show_default": True, "help_option_names": ["-h", "--help"]}


def echo_json(obj: Any) -> None:
    """Print a result as JSON on stdout."""
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def progress(it: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """tqdm on stderr, silent when stderr is not a terminal and TMT_PROGRESS is unset."""
    import os

    from tqdm import tqdm

    disable = not (sys.stderr.isatty() or os.environ.get("TMT_PROGRESS") == "1")
    yield from tqdm(it, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True)


def shard_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--shard",
        default=None,
        metavar="K/N",
        help="Process only part K of N (0-based) for parallel jobs; merge the parts afterwards.",
    )(f)


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
        from tmt.store.token_store import merge_parts

        index = merge_parts(store, parts)
        click.echo(f"merged {parts} parts into {store}: {index['rows']} rows")

    return merge
