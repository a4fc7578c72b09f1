"""Device names; `resolve_device` lives in `tmt.core.device` and is re-exported here."""

from __future__ import annotations

from tmt.core.device import resolve_device

__all__ = ["resolve_device"]
