"""Length-sorted batches for inference: items of similar length together, so padding stays small."""

from __future__ import annotations

from collections.abc import Sequence


def length_batches(lengths: Sequence[int], max_tokens: int, *, max_items: int | None = None,
                   max_padding: float | None = None) -> list[list[int]]:
    """Indices of `lengths`, sorted by length (ties by index) and cut into batches whose padded size (items x
    longest) stays within `max_tokens`, with at most `max_items` items and, given `max_padding`, at most that
    share of padded positions beyond the items' own. An item longer than `max_tokens` gets a batch alone."""
    batches: list[list[int]] = []
    batch: list[int] = []
    total = 0
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        items, padded = len(batch) + 1, (len(batch) + 1) * lengths[i]  # sorted: item i is the longest so far
        if batch and (padded > max_tokens or (max_items is not None and items > max_items)
                      or (max_padding is not None and padded > (1.0 + max_padding) * (total + lengths[i]))):
            batches.append(batch)
            batch, total = [], 0
        batch.append(i)
        total += lengths[i]
    return [*batches, batch] if batch else batches
