"""One table for two runs over several splits: each direction's headline metric per split,
run A against run B, and which run wins (`tmt score table`; the scenes recipe's stage 11
prints the unified model against the single-direction models with it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tmt.evaluation.score.report import compare

Scores = str | Path | dict[str, Any]


def split_rows(pairs: dict[str, tuple[Scores, Scores]]) -> list[dict[str, Any]]:
    """Rows {direction, metric, values: {split: (a, b)}, wins: {split: "a"|"b"|"="|""}, better}
    over `pairs` ({split: (scores A, scores B)}), one per direction, headline metric only.

    `better` is the run that wins on more splits ("a", "b", "=" for a tie, "" when no split
    has both values).
    """
    by_dir: dict[str, dict[str, Any]] = {}
    for split, (a, b) in pairs.items():
        for r in compare(a, b, headline_only=True):
            row = by_dir.setdefault(r["direction"], {"direction": r["direction"], "metric": r["metric"],
                                                     "values": {}, "wins": {}})
            row["values"][split] = (r["a"], r["b"])
            row["wins"][split] = r["better"]
    for row in by_dir.values():
        wins = list(row["wins"].values())
        na, nb = wins.count("a"), wins.count("b")
        row["better"] = "" if not any(wins) else "a" if na > nb else "b" if nb > na else "="
    return list(by_dir.values())


def render_split_table(
    rows: list[dict[str, Any]], splits: list[str], names: tuple[str, str] = ("A", "B")
) -> str:
    """A markdown table: direction, metric, A and B per split, and the winner's name."""
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    def winner(w: str) -> str:
        return {"a": names[0], "b": names[1], "=": "equal"}.get(w, "-")

    head = ["direction", "metric"] + [f"{s}: {n}" for s in splits for n in names] + ["better"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (2 * len(splits)) + "---|"]
    for r in rows:
        cells = [r["direction"], r["metric"]]
        for s in splits:
            a, b = r["values"].get(s, (None, None))
            w = r["wins"].get(s, "")
            cells += [f"**{f(a)}**" if w == "a" else f(a), f"**{f(b)}**" if w == "b" else f(b)]
        cells.append(winner(r["better"]))
        lines.append("| " + " | ".join(cells) + " |")
    counts = [r["better"] for r in rows]
    alone = counts.count("")  # a row only one run has (e.g. a pivot row), or no value on any split
    lines += ["", f"{names[0]} wins {counts.count('a')}, {names[1]} wins {counts.count('b')}, "
                  f"equal {counts.count('=')} of {len(rows) - alone} directions compared"
                  + (f" ({alone} without the other run's value)" if alone else "")
                  + " (winner: more splits won; bold: the better value of a split)"]
    return "\n".join(lines) + "\n"
