"""Fixtures shared by the unit tests' vocoder modules."""

from __future__ import annotations

import pytest

from tmt.vocoder.testing import make_unit_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny unit corpus (12 rows, 20 units: store + manifest + wavs); modules with other needs define their own."""
    return make_unit_corpus(tmp_path_factory.mktemp("units"), num_rows=12, num_units=20, seed=0)
