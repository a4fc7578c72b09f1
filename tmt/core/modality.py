"""Modalities and translation directions: one definition, one abbreviation map, one parser.

A direction is written `s2t` (abbreviations), `speech2text`, `speech->text` or `speech-text`;
all four spellings parse to `Direction("speech", "text")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, cast

from tmt.core.errors import TmtError

Modality = Literal["text", "speech", "image"]
"""One of the three modalities."""
MODALITIES: tuple[Modality, ...] = ("text", "speech", "image")
"""The three modalities, in the fixed order of the joint vocabulary."""
ABBREV: dict[str, Modality] = {"t": "text", "s": "speech", "i": "image"}
"""One-letter abbreviation -> modality (`s2t`)."""
SHORT: dict[Modality, str] = {v: k for k, v in ABBREV.items()}
"""Modality -> its one-letter abbreviation."""


class ModalityError(TmtError):
    """A modality or direction name is not one tmt knows."""


def check_modality(name: str, what: str = "modality", *, error: type[TmtError] = ModalityError) -> Modality:
    """`name` if it is a modality, else `error` naming the known ones (`what` says which role it plays)."""
    if name not in MODALITIES:
        raise error(f"unknown {what} '{name}'; expected one of {', '.join(MODALITIES)}")
    return cast(Modality, name)


class Direction(NamedTuple):
    """A translation direction: source and target modality (unpacks like a `(src, tgt)` pair)."""

    src: Modality
    tgt: Modality

    @property
    def short(self) -> str:
        """`s2t`."""
        return f"{SHORT[self.src]}2{SHORT[self.tgt]}"

    @property
    def arrow(self) -> str:
        """`speech->text`."""
        return f"{self.src}->{self.tgt}"


DIRECTIONS: tuple[Direction, ...] = (
    Direction("image", "text"),
    Direction("image", "speech"),
    Direction("text", "image"),
    Direction("speech", "image"),
    Direction("speech", "text"),
    Direction("text", "speech"),
)
"""The six directions in their canonical (report and training) order."""
ALL_DIRECTIONS: tuple[str, ...] = tuple(d.short for d in DIRECTIONS)
"""The six directions by short name: i2t, i2s, t2i, s2i, s2t, t2s."""
_SPELLINGS = "i2t,i2s,t2i,s2i,s2t,t2s (or image->text, image-text, image2text)"


def _split(name: str) -> tuple[str, str] | None:
    for sep in ("->", "-", "2"):
        if sep in name:
            a, _, b = name.partition(sep)
            a, b = a.strip(), b.strip()
            if sep == "2" and len(a) == 1 and len(b) == 1:
                return ABBREV.get(a, a), ABBREV.get(b, b)
            return a, b
    return None


def parse_direction(name: str, *, error: type[TmtError] = ModalityError) -> Direction:
    """`s2t`, `speech2text`, `speech->text` or `speech-text` -> Direction('speech', 'text')."""
    n = str(name).strip()
    parts = _split(n)
    if parts is None or parts[0] not in MODALITIES or parts[1] not in MODALITIES:
        raise error(f"unknown direction '{n}'; expected some of {_SPELLINGS}")
    if parts[0] == parts[1]:
        raise error(f"direction '{n}' translates a modality into itself")
    return Direction(cast(Modality, parts[0]), cast(Modality, parts[1]))


def parse_directions(
    names: str | Sequence[str] | None, *, allow_all: bool = False, error: type[TmtError] = ModalityError
) -> list[Direction]:
    """A comma-separated string or a list of directions -> the distinct ones, in canonical order.

    With `allow_all`, None or the word `all` stands for all six. An empty list is an error."""
    if names is None and allow_all:
        names = ["all"]
    if names is None:
        items: list[str] = []
    elif isinstance(names, str):
        items = [n.strip() for n in names.split(",") if n.strip()]
    else:
        items = [str(n).strip() for n in names]
    if not items:
        raise error(f"no directions given; expected some of {', '.join(ALL_DIRECTIONS)}" + (" (or all)" if allow_all else ""))
    wanted: set[Direction] = set()
    for n in items:
        if allow_all and n == "all":
            wanted.update(DIRECTIONS)
        else:
            wanted.add(parse_direction(n, error=error))
    return [d for d in DIRECTIONS if d in wanted]


__all__ = [
    "ABBREV",
    "ALL_DIRECTIONS",
    "DIRECTIONS",
    "MODALITIES",
    "SHORT",
    "Direction",
    "Modality",
    "ModalityError",
    "check_modality",
    "parse_direction",
    "parse_directions",
]
