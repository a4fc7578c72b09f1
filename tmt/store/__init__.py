"""Raw manifests and sharded token stores (DESIGN section 4)."""

from __future__ import annotations

from tmt import TmtError


class StoreError(TmtError):
    """A manifest or token store is missing, malformed or inconsistent."""
