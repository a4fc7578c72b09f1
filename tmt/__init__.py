"""tmt: discrete-token multimodal translation between speech, images and text."""

from __future__ import annotations

__version__ = "0.1.0"

from tmt.core.errors import TmtError
from tmt.core.modality import MODALITIES

__all__ = ["MODALITIES", "TmtError", "__version__"]
