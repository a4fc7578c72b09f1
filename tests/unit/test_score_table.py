"""`tmt score table`: two runs over several splits in one table, the winner per direction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from tmt.evaluation.score.table import render_split_table, split_rows


def _scores(wer: float, bleu: float | None) -> dict[str, Any]:
    d: dict[str, Any] = {"speech->text": {"tgt": "text", "metrics": {"wer": wer, "cer": 1.0}}}
    if bleu is not None:
        d["image->text"] = {"tgt": "text", "metrics": {"bleu1": 60.0, "bleu4": bleu}}
    return {"directions": d}


def test_rows_hold_each_split_and_the_run_that_wins_more_splits() -> None:
    rows = split_rows({
        "test": (_scores(4.0, 45.0), _scores(2.0, 40.0)),
        "test_novel": (_scores(5.0, 40.0), _scores(5.0, 41.0)),
    })
    by = {r["direction"]: r for r in rows}
    st, it = by["speech->text"], by["image->text"]
    assert st["metric"] == "wer" and it["metric"] == "bleu4"  # headline metric only
    assert st["values"] == {"test": (4.0, 2.0), "test_novel": (5.0, 5.0)}
    assert st["wins"] == {"test": "b", "test_novel": "="} and st["better"] == "b"  # lower WER wins
    assert it["wins"] == {"test": "a", "test_novel": "b"} and it["better"] == "="  # one split each
    table = render_split_table(rows, ["test", "test_novel"], ("unified", "single"))
    lines = table.splitlines()
    assert lines[0] == ("| direction | metric | test: unified | test: single | test_novel: unified "
                        "| test_novel: single | better |")
    assert "| speech->text | wer | 4.00 | **2.00** | 5.00 | 5.00 | single |" in lines
    assert "| image->text | bleu4 | **45.00** | 40.00 | 40.00 | **41.00** | equal |" in lines
    assert lines[-1].startswith("unified wins 0, single wins 1, equal 1 of 2 directions compared (winner")


def test_a_direction_missing_from_one_run_has_no_winner() -> None:
    rows = split_rows({"test": (_scores(4.0, 45.0), _scores(3.0, None))})
    it = next(r for r in rows if r["direction"] == "image->text")
    assert it["values"] == {"test": (45.0, None)} and it["better"] == ""
    table = render_split_table(rows, ["test"])
    assert "| image->text | bleu4 | 45.00 | - | - |" in table
    # the tally counts the directions both runs have (a pivot row of the unified model has no baseline)
    assert table.splitlines()[-1].startswith(
        "A wins 0, B wins 1, equal 0 of 1 directions compared (1 without the other run's value)")


def test_cli_table_reads_scores_directories(tmp_path: Path) -> None:
    from tmt.cli import cli

    for name, wer in (("u", 4.0), ("s", 2.0)):
        for split in ("test", "test_novel"):
            (tmp_path / name / split).mkdir(parents=True)
            (tmp_path / name / split / "scores.json").write_text(json.dumps(_scores(wer, 30.0)))
    args = ["score", "table", "--names", "unified", "single"]
    for split in ("test", "test_novel"):
        args += ["--split", split, str(tmp_path / "u" / split), str(tmp_path / "s" / split)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "| speech->text | wer | 4.00 | **2.00** | 4.00 | **2.00** | single |" in res.output
    assert "| image->text | bleu4 | 30.00 | 30.00 | 30.00 | 30.00 | equal |" in res.output
    res = CliRunner().invoke(cli, ["score", "table", "--split", "test", str(tmp_path / "u" / "test"),
                                   str(tmp_path / "missing")])
    assert res.exit_code == 1 and "missing not found; run `tmt score` first" in res.output
