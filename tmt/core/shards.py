"""Shard specs (`--shard k/N`): which rows worker k of N handles and where it writes its part."""

from __future__ import annotations

from pathlib import Path

from tmt.core.errors import TmtError


class ShardSpecError(TmtError):
    """A `--shard` value is not `k/N` with 0 <= k < N."""


def parse_shard_spec(spec: str | None, *, error: type[TmtError] = ShardSpecError) -> tuple[int, int]:
    """'k/N' (k in 0..N-1) -> (k, N); None -> (0, 1)."""
    if spec is None:
        return 0, 1
    try:
        k_s, n_s = spec.split("/")
        k, n = int(k_s), int(n_s)
    except ValueError:
        raise error(f"--shard expects k/N such as 0/4, got '{spec}'") from None
    if n < 1 or not 0 <= k < n:
        raise error(f"--shard {spec}: k must be in 0..N-1 and N >= 1")
    return k, n


def shard_range(num_rows: int, k: int, n: int) -> range:
    """The contiguous rows that worker k of n handles (merging parts in k order keeps row order)."""
    return range(num_rows * k // n, num_rows * (k + 1) // n)


def part_dir(store: str | Path, k: int, n: int) -> Path:
    """Where worker k/N writes its part of `store` before the parts are merged."""
    store = Path(store)
    return store.with_name(store.name + ".parts") / f"{k:05d}-of-{n:05d}"


__all__ = ["ShardSpecError", "parse_shard_spec", "part_dir", "shard_range"]
