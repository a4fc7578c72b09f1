"""`tmt score curves`: a unified model's validation CE against single-direction models' at equal compute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tmt.core.errors import TmtError
from tmt.evaluation.score.curves import compare_curves, render_curves, single_curve, valid_curves


def _exp(path: Path, valid: dict[int, dict[str, float]]) -> Path:
    """An experiment directory whose metrics.jsonl holds these validation CEs (and a train line)."""
    path.mkdir(parents=True)
    lines = [{"step": 1, "split": "train", "ce/i2t": 9.0}]
    lines += [{"step": s, "split": "valid", "ce": 0.0, **{f"ce/{d}": v for d, v in ces.items()},
               **{f"acc/{d}": 0.5 for d in ces}} for s, ces in valid.items()]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def _fixture(tmp_path: Path) -> tuple[Path, Path, Path]:
    # the unified model validates every 250 steps; the singles every 125 (half the steps, ratio 2)
    uni = _exp(tmp_path / "tmt", {
        250: {"image->text": 2.0, "text->speech": 3.0},
        500: {"image->text": 1.5, "text->speech": 2.5},
        750: {"image->text": 1.6, "text->speech": 2.2},
    })
    i2t = _exp(tmp_path / "single_i2t", {125: {"i2t": 2.1}, 250: {"i2t": 1.7}, 375: {"i2t": 1.55}})
    t2s = _exp(tmp_path / "single_t2s", {125: {"t2s": 2.8}, 250: {"t2s": 2.0}, 375: {"t2s": 1.9}})
    return uni, i2t, t2s


def test_curves_pair_equal_compute_points_and_pick_the_lower_best(tmp_path: Path) -> None:
    uni, i2t, t2s = _fixture(tmp_path)
    curves = valid_curves(uni)
    assert curves == {"i2t": [(250, 2.0), (500, 1.5), (750, 1.6)], "t2s": [(250, 3.0), (500, 2.5), (750, 2.2)]}
    singles = dict([single_curve(i2t), single_curve(t2s)])
    rows = {r.direction: r for r in compare_curves(curves, singles, ratio=2.0)}
    r = rows["i2t"]
    assert r.pairs == [(125, 250, 2.1, 2.0), (250, 500, 1.7, 1.5), (375, 750, 1.55, 1.6)]
    assert (r.unified_best, r.single_best, r.lower, r.unified_lower_points) == ((500, 1.5), (375, 1.55), "unified", 2)
    r = rows["t2s"]
    assert (r.unified_best, r.single_best, r.lower, r.unified_lower_points) == ((750, 2.2), (375, 1.9), "single", 0)
    table = render_curves(list(rows.values()), 2.0)
    assert "| image->text | 1.500 (500) | 1.550 (375) | unified | 2 of 3 |" in table
    assert "| text->speech | 2.200 (750) | 1.900 (375) | single | 0 of 3 |" in table


def test_curves_skip_points_without_a_unified_step_near_them(tmp_path: Path) -> None:
    uni, i2t, _ = _fixture(tmp_path)
    # ratio 2.8: single steps 125 -> 350 (nearest unified 250, within half the 250-step interval)
    # and 250 -> 700 (750); 375 -> 1050 lies 300 steps past the unified run's last validation: not paired
    rows = compare_curves(valid_curves(uni), dict([single_curve(i2t)]), ratio=2.8)
    assert [p[:2] for p in rows[0].pairs] == [(125, 250), (250, 750)]
    with pytest.raises(TmtError, match="ratio must be > 0"):
        compare_curves(valid_curves(uni), dict([single_curve(i2t)]), ratio=0.0)


def test_curves_refuse_a_multi_direction_single_and_a_run_without_validation(tmp_path: Path) -> None:
    uni, _, _ = _fixture(tmp_path)
    with pytest.raises(TmtError, match="expected a single-direction experiment, found directions i2t, t2s"):
        single_curve(uni)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TmtError, match="no validation records"):
        valid_curves(tmp_path / "empty")


def test_curves_cli_writes_the_table_and_the_plot(tmp_path: Path) -> None:
    from tmt.cli import cli

    uni, i2t, t2s = _fixture(tmp_path)
    out, png = tmp_path / "scores" / "curves.md", tmp_path / "scores" / "curves.png"
    res = CliRunner().invoke(cli, ["score", "curves", str(uni), str(i2t), str(t2s), "--ratio", "2",
                                   "--out", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "| text->speech | 2.200 (750) | 1.900 (375) | single | 0 of 3 |" in res.output
    assert out.read_text() == res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = CliRunner().invoke(cli, ["score", "curves", str(uni), str(uni), "--ratio", "2"])
    assert res.exit_code == 1 and "expected a single-direction experiment" in res.output
