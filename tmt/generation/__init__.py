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

_GENERATOR = {"GenerationConfig", "GenerationError", "Generator", "Hypothesis", "LengthLimit", "LengthLimits"}
_TRANSLATOR = {"TranslateError", "Translation", "Translator"}


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attributes with plain imports, so `import tmt.generation` stays cheap.
    if name in _GENERATOR:
        from tmt.generation import generator

        return getattr(generator, name)
    if name in _TRANSLATOR:
        from tmt.generation import translator

        return getattr(translator, name)
    raise AttributeError(f"module 'tmt.generation' has no attribute {name!r}")
