"""Length-sorted inference batches (tmt.core.batching), used by the generator and the unit vocoders."""

from __future__ import annotations

from tmt.core.batching import length_batches


def test_batches_sort_by_length_and_respect_the_token_budget() -> None:
    assert length_batches([30, 10, 20], max_tokens=60) == [[1, 2], [0]]  # 3 x 30 = 90 padded > 60
    assert length_batches([30, 10, 20, 10], max_tokens=60) == [[1, 3, 2], [0]]  # ties keep input order
    assert length_batches([50, 50, 50, 500], max_tokens=100) == [[0, 1], [2], [3]]  # a long item alone
    assert length_batches([], max_tokens=10) == []


def test_item_cap_and_padding_bound() -> None:
    assert length_batches([5, 5, 5, 5, 5], max_tokens=10**9, max_items=2) == [[0, 1], [2, 3], [4]]
    # at most 10% padding: 100 and 105 together (205 -> 210), 300 apart
    assert length_batches([300, 100, 105], max_tokens=10**9, max_padding=0.1) == [[1, 2], [0]]
    assert length_batches([300, 100, 105], max_tokens=10**9) == [[1, 2, 0]]
