"""Generation: constrained decoding into any target modality, and the `Translator` API.

fairseq2 is imported lazily: `from tmt.generation import Translator` pulls in
torch and fairseq2 only when the name is used.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "GenerationConfig",
    "GenerationError",
    "Generator",
    "Hypothesis",
    "LengthLimit",
    "LengthLimits",
    "TranslateError",
    "Translation",
    "Translator",
]

_WHERE = {
    "GenerationConfig": "tmt.generation.generator",
    "GenerationError": "tmt.generation.generator",
    "Generator": "tmt.generation.generator",
    "Hypothesis": "tmt.generation.generator",
    "LengthLimit": "tmt.generation.generator",
    "LengthLimits": "tmt.generation.generator",
    "TranslateError": "tmt.generation.translator",
    "Translation": "tmt.generation.translator",
    "Translator": "tmt.generation.translator",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tmt.generation' has no attribute {name!r}")
