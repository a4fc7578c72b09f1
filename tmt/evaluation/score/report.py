"""What `tmt score` writes and reads back: scores.json, report.md, scores.png, and run comparison.

`headline` picks the metric a direction is summarised by (chart, tables,
`compare --headline`); `compare` lines up two scores.json metric by metric.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tmt.core.io import make_dirs, read_json_object
from tmt.evaluation.score.config import (
    CHART_FILE,
    DIRECTIONS,
    LOWER_IS_BETTER,
    PRIMARY,
    REPORT_FILE,
    SCORES_FILE,
    ScoreError,
)

log = logging.getLogger(__name__)


def headline(entry: dict[str, Any]) -> tuple[str, float] | None:
    """(metric, value) shown for a direction in the chart, or None when nothing was computed."""
    metrics = entry.get("metrics", {})
    for m in PRIMARY.get(entry["tgt"], ()):
        if m in metrics:
            return m, float(metrics[m])
    return None


def headline_text(entry: dict[str, Any]) -> str:
    h = headline(entry)
    if h is None:
        return "unavailable: " + "; ".join(f"{k}: {v}" for k, v in entry.get("unavailable", {}).items())[:300]
    return f"{h[0]} = {h[1]:.2f}"



def write_outputs(scores: dict[str, Any], out_dir: str | Path) -> None:
    from tmt.core.io import atomic_write_json, atomic_write_text
    from tmt.evaluation.score.grid import grid_name, write_image_grid

    out = Path(out_dir)
    make_dirs(out)
    chart_ok = write_chart(scores, out / CHART_FILE)
    for e in scores["directions"].values():
        if write_image_grid(e, out / grid_name(e)):
            e["grid"] = grid_name(e)
    atomic_write_json(out / SCORES_FILE, scores)
    atomic_write_text(out / REPORT_FILE, render_report(scores, out, chart=chart_ok))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _link(path: str | None, out_dir: Path, label: str | None = None) -> str:
    if not path:
        return "-"
    rel = os.path.relpath(Path(path).resolve(), out_dir.resolve())
    return f"[{label or Path(path).name}]({rel.replace(os.sep, '/')})"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_report(scores: dict[str, Any], out_dir: Path, *, chart: bool = True) -> str:
    """report.md: a table per direction, ceilings, notes, samples with links to media."""
    lines = [
        "# tmt score report",
        "",
        f"tmt {scores.get('tmt_version')} · {scores.get('created')}",
        "",
        "Metrics in percent (BLEU, METEOR, ROUGE-L and CIDEr x100; WER/CER lower is better).",
        "",
    ]
    if chart:
        lines += [f"![scores]({CHART_FILE})", ""]
    summary = []
    for key, e in scores["directions"].items():
        h = headline(e)
        summary.append(f"| {key} | {e['n']} | {h[0] if h else '-'} | {_fmt(h[1]) if h else 'unavailable'} |")
    lines += ["| direction | n | headline | value |", "|---|---:|---|---:|", *summary, ""]
    for key, e in scores["directions"].items():
        lines += _direction_section(key, e, out_dir)
    return "\n".join(lines) + "\n"


def _direction_section(key: str, e: dict[str, Any], out_dir: Path) -> list[str]:
    """report.md lines of one direction: inputs, judge, metric table, ceiling, notes, samples."""
    lines = [f"## {key}", ""]
    lines.append(f"hypotheses: `{e['hyp_dir']}` · manifest: `{e['manifest']}` · split: {e.get('split')} · n = {e['n']}")
    if e.get("judge"):
        j = e["judge"]
        desc = j.get("judge", "")
        if "prompt_used" in j:
            desc += f" (vocabulary prompt: {'on' if j['prompt_used'] else 'off'})"
        lines.append(f"judge: {desc}")
    lines += ["", "| metric | value | ceiling |", "|---|---:|---:|"]
    ceil = (e.get("ceiling") or {}).get("metrics", {})
    for m, v in e.get("metrics", {}).items():
        lines.append(f"| {m} | {_fmt(v)} | {_fmt(ceil[m]) if m in ceil else '-'} |")
    for m, why in e.get("unavailable", {}).items():
        lines.append(f"| {m} | unavailable: {_md(why)} | - |")
    lines.append("")
    if e.get("ceiling"):
        c = e["ceiling"]
        if c.get("source"):
            lines.append(f"ceiling: {c['source']}")
        for m, why in c.get("unavailable", {}).items():
            lines.append(f"ceiling {m} unavailable: {why}")
        lines.append("")
    for note in e.get("notes", []):
        lines.append(f"- {note}")
    if e.get("notes"):
        lines.append("")
    if e.get("grid"):
        lines += [f"![references (left) and outputs (right)]({e['grid']})", ""]
    if e.get("samples"):
        lines += _samples_table(e, out_dir)
    return lines


def _samples_table(e: dict[str, Any], out_dir: Path) -> list[str]:
    """The samples of one direction, media as links relative to the report."""
    lines = ["### samples", "", "| id | source | output | transcript | references |", "|---|---|---|---|---|"]
    for s in e["samples"]:
        src = _md(s["source"]) if e["src"] == "text" else _link(s.get("source"), out_dir)
        if "hypothesis" in s:
            hyp = _md(s["hypothesis"])
        else:
            hyp = _link(s.get("hypothesis_file"), out_dir)
            if s.get("reference_file"):
                hyp += " (ref: " + _link(s["reference_file"], out_dir) + ")"
            if "exact" in s:
                hyp += " exact" if s["exact"] else " wrong"
        refs = " / ".join(_md(r) for r in s.get("references", [])[:5])
        lines.append(f"| {s['id']} | {src} | {hyp} | {_md(s.get('transcript', '-'))} | {refs} |")
    lines.append("")
    return lines


def write_chart(scores: dict[str, Any], path: str | Path) -> bool:
    """A bar chart of the six directions' headline metrics; False when matplotlib is unusable."""
    try:
        from tmt.core.io import pyplot, save_figure

        plt = pyplot()
    except Exception as exc:  # a chart is a convenience; the numbers are in scores.json
        log.warning("no chart: %s", exc)
        return False
    by_dir: dict[str, dict[str, Any]] = {}
    for key, ent in scores["directions"].items():
        name = ent["direction"] if not ent.get("via") and ent["direction"] not in by_dir else key
        by_dir[name] = ent
    names = list(DIRECTIONS) + [k for k in by_dir if k not in DIRECTIONS]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    for i, name in enumerate(names):
        e = by_dir.get(name)
        h = headline(e) if e else None
        if h is None:
            ax.bar(i, 0.0, color="lightgray")
            ax.text(i, 1.0, "n/a", ha="center", va="bottom", fontsize=9, color="gray")
            continue
        metric, val = h
        color = "tab:red" if metric in LOWER_IS_BETTER else "tab:blue"
        ax.bar(i, val, color=color)
        ax.text(i, val + 1.0, f"{metric}\n{val:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace("->", "→\n") for n in names], fontsize=8)
    ax.set_ylabel("score (%)  (red: lower is better)")
    top = max([headline(e)[1] for e in by_dir.values() if headline(e)] + [10.0])  # type: ignore[index]
    ax.set_ylim(0, top * 1.3 + 5)
    ax.set_title("tmt: headline metric per direction")
    save_figure(fig, path)
    return True


def load_scores(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / SCORES_FILE
    if not p.is_file():
        raise ScoreError(f"{p} not found; run `tmt score` first")
    return read_json_object(p, what="tmt scores.json", required={"directions": dict}, error=ScoreError,
                            fix="give the scores.json written by `tmt score run`")


def compare(
    a: str | Path | dict[str, Any], b: str | Path | dict[str, Any], *, headline_only: bool = False
) -> list[dict[str, Any]]:
    """Rows {direction, metric, a, b, delta, better} for every metric in either run
    (only each direction's headline metric with `headline_only`).

    `delta` is b - a; `better` names the run that wins ("a", "b", "=" or "" when one is missing).
    """
    sa = a if isinstance(a, dict) else load_scores(a)
    sb = b if isinstance(b, dict) else load_scores(b)
    rows: list[dict[str, Any]] = []
    keys = list(sa["directions"]) + [k for k in sb["directions"] if k not in sa["directions"]]
    for key in keys:
        ea, eb = sa["directions"].get(key, {}), sb["directions"].get(key, {})
        ma, mb = ea.get("metrics", {}), eb.get("metrics", {})
        names = list(ma) + [x for x in mb if x not in ma]
        if headline_only:
            h = headline(ea) if ea else None
            h = h or (headline(eb) if eb else None)
            names = [h[0]] if h else []
        for m in names:
            va, vb = ma.get(m), mb.get(m)
            delta = None if va is None or vb is None else float(vb) - float(va)
            better = ""
            if delta is not None:
                if abs(delta) < 1e-9:
                    better = "="
                else:
                    b_wins = delta < 0 if m in LOWER_IS_BETTER else delta > 0
                    better = "b" if b_wins else "a"
            rows.append({"direction": key, "metric": m, "a": va, "b": vb, "delta": delta, "better": better})
    return rows
