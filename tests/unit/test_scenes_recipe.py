"""`recipes/scenes/run.sh` stages 7 and 11 (vocoder, single-direction baselines), run against a
stand-in `tmt` that records its command lines: which baselines train, which calls get a vocoder,
when the unified-vs-single comparison runs, and the vocoder's step cap."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE_TMT = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$TMT_CALLS"
if [ "$1" = translate ]; then
  while [ $# -gt 0 ]; do [ "$1" = --output-dir ] && mkdir -p "$2"; shift; done
fi
if [ "$1 $2" = "score compare" ]; then echo "the comparison table"; fi
exit 0
"""


def _stage11(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    _unified_run(tmp_path / "out" / "exp" / "tmt", [250, 500, 601])
    return _recipe(tmp_path, "--stage", "11", "--stop-stage", "11", "--single-task", "true",
                   "--single-minutes", "0.5", *extra)


def _unified_run(exp: Path, steps: list[int], max_tokens: int | None = None) -> None:
    """A recorded stage-4 run: complete checkpoints at `steps` and its config.yaml."""
    for s in steps:
        (exp / "checkpoints" / f"step_{s:08d}").mkdir(parents=True, exist_ok=True)
        (exp / "checkpoints" / f"step_{s:08d}" / "trainer.pt").write_bytes(b"")
    if max_tokens is not None:
        (exp / "config.yaml").write_text(
            f"model:\n  max_seq_len: 1024\ndata:\n  stores: []\n  max_tokens: {max_tokens}\n"
            "  prefetch: 2\ntrain:\n  max_tokens: 1\n"
        )


def _recipe(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    fake = bin_dir / "tmt"
    fake.write_text(FAKE_TMT)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMT_CALLS": str(calls)}
    r = subprocess.run(
        ["bash", str(REPO / "recipes" / "scenes" / "run.sh"), "--preset", "quick", "--out", str(tmp_path / "out"),
         *args],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    return r, calls.read_text().splitlines() if calls.exists() else []


def test_only_the_chosen_baselines_train_and_only_speech_targets_get_the_vocoder(tmp_path: Path) -> None:
    r, calls = _stage11(tmp_path, "--single-directions", "s2t i2s")
    assert r.returncode == 0, r.stderr
    trained = [c.split("--directions ")[1].split()[0] for c in calls if c.startswith("train ")]
    assert trained == ["i2s", "s2t"]  # the recipe's direction order, not the option's
    assert all("--set train.max_minutes=0.5" in c for c in calls if c.startswith("train "))
    translate = [c for c in calls if c.startswith("translate ")]
    assert len(translate) == 4  # two directions x two shards (--jobs 2) on the test split
    for c in translate:
        assert ("--vocoder" in c) == ("--to speech" in c), c
    assert any(c.startswith("score run ") for c in calls)
    # no unified scores yet (stages 8-9 not run): the comparison is skipped, not failed
    assert not any(c.startswith("score compare") for c in calls)
    assert "not comparing" in r.stderr
    assert not (tmp_path / "out" / "scores" / "unified_vs_single_test.txt").exists()


def test_the_comparison_runs_when_unified_scores_exist(tmp_path: Path) -> None:
    unified = tmp_path / "out" / "scores" / "tmt" / "test"
    unified.mkdir(parents=True)
    (unified / "scores.json").write_text("{}")
    (tmp_path / "out" / "report.md").write_text("# report\n")
    r, calls = _stage11(tmp_path, "--single-directions", "t2i")
    assert r.returncode == 0, r.stderr
    [compare] = [c for c in calls if c.startswith("score compare")]
    assert f"{unified} " in compare + " " and compare.endswith("scores/single/test")
    table = tmp_path / "out" / "scores" / "unified_vs_single_test.txt"
    assert table.read_text() == "the comparison table\n"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Unified model against single-direction models" in report and "the comparison table" in report


def test_adding_a_baseline_later_scores_again_and_an_unchanged_rerun_does_not(tmp_path: Path) -> None:
    r, calls = _stage11(tmp_path, "--single-directions", "t2i")
    assert r.returncode == 0, r.stderr
    assert len([c for c in calls if c.startswith("score run ")]) == 1
    # a second run that adds a baseline: the earlier one is not retrained, both are scored
    r, calls = _stage11(tmp_path, "--single-directions", "t2i s2t")
    assert r.returncode == 0, r.stderr
    assert [c.split("--directions ")[1].split()[0] for c in calls if c.startswith("train ")] == ["t2i", "s2t"]
    [_, second] = [c for c in calls if c.startswith("score run ")]
    assert "hyp/single/test/speech-text" in second and "hyp/single/test/text-image" in second
    # nothing new: no scoring
    r, calls = _stage11(tmp_path, "--single-directions", "t2i s2t")
    assert r.returncode == 0, r.stderr
    assert len([c for c in calls if c.startswith("score run ")]) == 2


def test_vocoder_steps_caps_the_vocoder_fit_only_when_given(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "7", "--stop-stage", "7", "--vocoder-minutes", "9")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert train.startswith("vocoder train ") and "train.max_minutes=9" in train and "max_steps" not in train
    r, calls = _recipe(tmp_path / "b", "--stage", "7", "--stop-stage", "7", "--vocoder-steps", "6850")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "--set train.max_steps=6850" in train and "train.max_minutes=3" in train  # quick preset's budget
    assert " --voices " in train  # the default: a voice-conditioned vocoder
    r, calls = _recipe(tmp_path / "c", "--stage", "7", "--stop-stage", "7", "--vocoder-voices", "false")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "--voices" not in train and "max_steps" not in train


def test_vocoder_config_chooses_the_arch(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "7", "--stop-stage", "7")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "--config unit-world-exemplars " in train and "--set world.workers=2 " in train  # the preset's default
    r, calls = _recipe(tmp_path / "b", "--stage", "7", "--stop-stage", "7", "--vocoder-config", "unit-world")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "--config unit-world " in train and "train.max_minutes=3" in train
    assert "--set world.workers=2 " in train  # WORLD analysis in --jobs processes
    r, calls = _recipe(tmp_path / "c", "--stage", "7", "--stop-stage", "7", "--vocoder-config", "unit-mel", "--jobs", "3")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "world.workers" not in train


def test_image_and_speech_cards_choose_the_tokenizers(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "1", "--stop-stage", "1")
    assert r.returncode == 0, r.stderr
    [fit] = [c for c in calls if c.startswith("tokenize image fit ")]
    assert "--card tokenizers/image-vq-f8-512.yaml " in fit  # the default
    [speech] = [c for c in calls if c.startswith("tokenize speech fit ")]
    assert "--card tokenizers/speech-mfcc-km1000.yaml " in speech  # the default
    r, calls = _recipe(tmp_path / "b", "--stage", "1", "--stop-stage", "1",
                       "--image-card", "tokenizers/image-aligned-32tok.yaml",
                       "--speech-card", "tokenizers/speech-mfcc-km200.yaml")
    assert r.returncode == 0, r.stderr
    [fit] = [c for c in calls if c.startswith("tokenize image fit ")]
    assert "--card tokenizers/image-aligned-32tok.yaml " in fit
    [speech] = [c for c in calls if c.startswith("tokenize speech fit ")]
    assert "--card tokenizers/speech-mfcc-km200.yaml " in speech
    r, calls = _recipe(tmp_path / "c", "--preset", "full", "--stage", "1", "--stop-stage", "1")
    assert r.returncode == 0, r.stderr
    # the full preset's card, fitted a fixed number of steps (the minutes only a cap) on every machine
    [fit] = [c for c in calls if c.startswith("tokenize image fit ")]
    assert "--card tokenizers/image-aligned-32tok.yaml " in fit
    assert "--set train.steps=6000 --set train.max_minutes=45 " in fit
    assert "--manifest " in fit and "train_and_extra.jsonl.gz --split all " in fit  # captions of every image
    # the full preset fits the pixel judge that --rerank-align reads, on the same pairs, into the card's directory
    [judge] = [c for c in calls if c.startswith("tokenize image fit-judge ")]
    assert f"--tokenizer {tmp_path / 'c' / 'out' / 'tokenizers' / 'image'} " in judge
    assert "train_and_extra.jsonl.gz --split all " in judge and "train.steps=1500" in judge
    assert not any(c.startswith("tokenize image fit-judge ") for c in _recipe(tmp_path / "d", "--stage", "1",
                                                                               "--stop-stage", "1")[1])
    r, calls = _recipe(tmp_path / "e", "--stage", "1", "--stop-stage", "1", "--judge-steps", "20")
    assert r.returncode == 0, r.stderr
    [judge] = [c for c in calls if c.startswith("tokenize image fit-judge ")]
    assert "train.steps=20" in judge


def test_speech_pretraining_fits_teacher_then_pretrains_then_the_card_on_it(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "1", "--stop-stage", "1")
    assert r.returncode == 0, r.stderr
    assert not [c for c in calls if c.startswith("tokenize speech pretrain ")]  # off by default
    r, calls = _recipe(tmp_path / "b", "--stage", "1", "--stop-stage", "1", "--speech-pretrain-minutes", "7",
                       "--speech-card", "tokenizers/speech-hubert-fbank-km1000.yaml")
    assert r.returncode == 0, r.stderr
    speech = [c for c in calls if c.startswith("tokenize speech ")]
    assert len(speech) == 3
    teacher, pretrain, fit = speech
    tok = tmp_path / "b" / "out" / "tokenizers"
    assert "--card tokenizers/speech-mfcc-km1000.yaml " in teacher and f"--out {tok}/speech-teacher" in teacher
    assert pretrain.startswith(f"tokenize speech pretrain --teacher {tok}/speech-teacher ")
    assert "--set train.max_minutes=7 " in pretrain and f"--out {tok}/speech-ssl --resume" in pretrain
    assert "--card tokenizers/speech-hubert-fbank-km1000.yaml " in fit
    assert f"--set hubert.weights={tok}/speech-ssl/model.safetensors --out {tok}/speech" in fit


def test_per_direction_best_translates_each_direction_with_its_own_checkpoint(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "4", "--stop-stage", "8", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    [stage4, stage6] = [c for c in calls if c.startswith("train ")]
    assert "--set best_per_direction=true" in stage4  # stage 4 always keeps them
    assert "best_per_direction" not in stage6
    models = {c.split("-m ")[1].split()[0].split("/exp/")[1] for c in calls if c.startswith("translate ")}
    assert models == {"tmt", "tmt_bt"}
    r, calls = _recipe(tmp_path / "b", "--stage", "8", "--stop-stage", "8", "--jobs", "1",
                       "--per-direction-best", "true")
    assert r.returncode == 0, r.stderr
    by_dir = {}
    for c in calls:
        if c.startswith("translate ") and "/hyp/tmt_dir/" in c:
            src, tgt = c.split("--from ")[1].split()[0], c.split("--to ")[1].split()[0]
            by_dir[f"{src[0]}2{tgt[0]}"] = c.split("-m ")[1].split()[0]
    assert sorted(by_dir) == ["i2s", "i2t", "s2i", "s2t", "t2i", "t2s"]
    for short, model in by_dir.items():
        assert model == str(tmp_path / "b" / "out" / "exp" / "tmt" / "best" / short)


def test_per_direction_best_defaults_to_single_task_and_beam_patience_reaches_beams(tmp_path: Path) -> None:
    def translated(calls: list[str]) -> set[str]:
        return {c.split("-m ")[1].split()[0].split("/exp/")[1].split("/")[0] for c in calls if c.startswith("translate ")}

    r, calls = _recipe(tmp_path / "a", "--stage", "8", "--stop-stage", "8", "--jobs", "1", "--single-task", "true")
    assert r.returncode == 0, r.stderr
    assert translated(calls) == {"tmt", "tmt_bt"}  # tmt_dir's checkpoints live under exp/tmt/best
    assert any("/hyp/tmt_dir/" in c and "/exp/tmt/best/" in c for c in calls)
    for c in (c for c in calls if c.startswith("translate ")):
        image = "--to image" in c
        assert ("--set beam_patience=2" in c) != image, c  # text and speech targets only
    r, calls = _recipe(tmp_path / "b", "--stage", "8", "--stop-stage", "8", "--jobs", "1", "--beam-patience", "1")
    assert r.returncode == 0, r.stderr
    assert not any("/hyp/tmt_dir/" in c for c in calls)  # no baselines: no per-direction pairing by default
    assert any("--set beam_patience=1" in c for c in calls)


def test_stage11_also_compares_the_per_direction_checkpoints_when_scored(tmp_path: Path) -> None:
    for model in ("tmt", "tmt_dir"):
        scored = tmp_path / "out" / "scores" / model / "test"
        scored.mkdir(parents=True)
        (scored / "scores.json").write_text("{}")
    r, calls = _stage11(tmp_path, "--single-directions", "s2t")
    assert r.returncode == 0, r.stderr
    compares = [c for c in calls if c.startswith("score compare")]
    assert [c.split()[3].split("/scores/")[1] for c in compares] == ["tmt/test", "tmt_dir/test"]
    assert (tmp_path / "out" / "scores" / "unified_dir_vs_single_test.txt").read_text() == "the comparison table\n"


def test_manifest_dir_moves_only_the_raw_manifests(tmp_path: Path) -> None:
    shared = tmp_path / "data_manifests" / "scenes-quick"
    r, calls = _recipe(tmp_path, "--stop-stage", "3", "--manifest-dir", str(shared))
    assert r.returncode == 0, r.stderr
    prepare = [c for c in calls if c.startswith("prepare scenes ")]
    assert len(prepare) == 1 and prepare[0].endswith(f"--out {shared}")
    tokenize = [c for c in calls if c.startswith("tokenize all ")]
    assert tokenize and all(f"--manifest {shared}/" in c for c in tokenize)
    assert all(f"--store {tmp_path / 'out' / 'data' / 'store'}/" in c for c in tokenize)  # stores stay in --out
    assert any(c.startswith("vocab build ") and c.endswith(f"-o {tmp_path / 'out' / 'data' / 'vocab.json'}") for c in calls)
    # without the option everything stays under --out
    r, calls = _recipe(tmp_path / "b", "--stop-stage", "0")
    assert r.returncode == 0, r.stderr
    assert next(c for c in calls if c.startswith("prepare ")).endswith(f"--out {tmp_path / 'b' / 'out' / 'data' / 'scenes'}")


def test_single_task_baselines_get_equal_compute_step_caps_from_the_unified_run(tmp_path: Path) -> None:
    exp = tmp_path / "out" / "exp" / "tmt"
    _unified_run(exp, [2000, 4000, 7704], max_tokens=3072)
    (exp / "checkpoints" / "step_00008000").mkdir()  # incomplete (no trainer.pt): not counted
    r, calls = _recipe(tmp_path, "--stage", "11", "--stop-stage", "11", "--single-task", "true")
    assert r.returncode == 0, r.stderr
    train = [c for c in calls if c.startswith("train ")]
    assert len(train) == 6
    # the six together: 7704 unified steps x 3 passes of max_tokens = 6 x 3852 single steps
    for c in train:
        assert "--max-steps 3852 " in c and "--set data.max_tokens=3072" in c, c
        assert "max_minutes" not in c and "--max-steps 100000" not in c  # steps decide, not minutes
    budget = (tmp_path / "out" / "exp" / "single_budget.txt").read_text()
    assert budget == "single_steps=3852 unified_steps=7704 max_tokens=3072\n"
    assert "3852 steps each (unified: 7704 steps" in r.stderr
    # an odd count rounds up
    _unified_run(tmp_path / "b" / "out" / "exp" / "tmt", [7705])
    r, calls = _recipe(tmp_path / "b", "--stage", "11", "--stop-stage", "11", "--single-task", "true",
                       "--single-directions", "t2s")
    assert r.returncode == 0, r.stderr
    [train] = [c for c in calls if c.startswith("train ")]
    assert "--max-steps 3853 " in train and "data.max_tokens" not in train  # no config.yaml recorded


def test_single_task_without_a_unified_run_stops_with_the_fix(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path, "--stage", "11", "--stop-stage", "11", "--single-task", "true")
    assert r.returncode != 0
    assert "no checkpoint in" in r.stderr and "--single-steps N" in r.stderr
    assert not [c for c in calls if c.startswith("train ")]
    r, calls = _recipe(tmp_path, "--stage", "11", "--stop-stage", "11", "--single-task", "true",
                       "--single-directions", "s2t", "--single-steps", "40")
    assert r.returncode == 0, r.stderr
    [train] = [c for c in calls if c.startswith("train ")]
    assert "--max-steps 40 " in train and "data.max_tokens" not in train


def test_one_table_over_both_splits_when_every_split_is_scored(tmp_path: Path) -> None:
    for model in ("tmt", "single"):
        for split in ("test", "test_novel"):
            d = tmp_path / "out" / "scores" / model / split
            d.mkdir(parents=True)
            (d / "scores.json").write_text("{}")
    (tmp_path / "out" / "report.md").write_text("# report\n")
    r, calls = _stage11(tmp_path, "--preset", "mid", "--single-directions", "i2t")
    assert r.returncode == 0, r.stderr
    [table] = [c for c in calls if c.startswith("score table")]
    out = tmp_path / "out" / "scores"
    assert table == (f"score table --names tmt single --split test {out}/tmt/test {out}/single/test "
                     f"--split test_novel {out}/tmt/test_novel {out}/single/test_novel")
    assert "All splits (equal compute)" in (tmp_path / "out" / "report.md").read_text()


def test_stage12_fine_tunes_the_unified_model_on_each_chosen_direction(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path, "--stage", "12", "--stop-stage", "12")
    assert r.returncode == 0, r.stderr
    assert calls == []  # off by default
    r, calls = _recipe(tmp_path, "--stage", "12", "--stop-stage", "12", "--finetune-directions", "s2i t2s",
                       "--finetune-minutes", "0.5")
    assert r.returncode == 0, r.stderr
    trained = [c for c in calls if c.startswith("train ")]
    assert [c.split("--directions ")[1].split()[0] for c in trained] == ["s2i", "t2s"]
    out = tmp_path / "out"
    for c, short in zip(trained, ("s2i", "t2s"), strict=True):
        assert f"-o {out}/exp/tmt_ft_{short} " in c and f"--init-from {out}/exp/tmt " in c
        assert "--set train.max_minutes=0.5" in c
    translate = [c for c in calls if c.startswith("translate ")]
    assert {c.split("--output-dir ")[1].split()[0] for c in translate} == {
        f"{out}/hyp/ft/test/speech-image", f"{out}/hyp/ft/test/text-speech"}
    assert any(c.startswith("score run ") and f"{out}/scores/ft/test" in c for c in calls)


def test_null_sources_are_an_option_and_image_targets_are_reranked(tmp_path: Path) -> None:
    """Issue 18: null-source training (what `--guidance` needs) is off by default and passed to
    every training when asked; image targets are sampled and reranked (the best of 32) by the unified
    model, sampled without reranking by the single-direction baselines (which never trained the
    reverse direction), other targets keep beam search."""
    r, calls = _stage11(tmp_path, "--single-directions", "t2i s2t", "--null-source-prob", "0.1")
    assert r.returncode == 0, r.stderr
    assert all("--set model.null_source_prob=0.1" in c for c in calls if c.startswith("train "))
    for c in (c for c in calls if c.startswith("translate ")):
        image = "--to image" in c
        assert "--rerank" not in c and ("--sample --top-k 16 --seed 0" in c) == image, c
    r, calls = _recipe(tmp_path / "u", "--stage", "8", "--stop-stage", "8")
    assert r.returncode == 0, r.stderr
    unified = [c for c in calls if c.startswith("translate ") and "--to image" in c]
    assert unified and all("--sample --top-k 16 --seed 0 --rerank 32 --rerank-forward 0" in c for c in unified)
    r, calls = _stage11(tmp_path / "a", "--single-directions", "t2i",  # the alignment term is part of reranking
                        "--image-decoding", "--sample --rerank 32 --rerank-align 2 --top-k 8")
    assert r.returncode == 0, r.stderr
    single = [c for c in calls if c.startswith("translate ") and "/hyp/single/" in c]
    assert single and all("--rerank" not in c and "--sample --top-k 8" in c for c in single), single
    r, calls = _stage11(tmp_path / "g", "--single-directions", "t2i", "--image-decoding", "--sample --guidance 2")
    assert r.returncode == 0, r.stderr
    assert any("--to image" in c and "--guidance 2" in c for c in calls)
    r, calls = _stage11(tmp_path / "off", "--single-directions", "t2i")
    assert r.returncode == 0, r.stderr
    assert all("--set model.null_source_prob=0 " in c for c in calls if c.startswith("train "))
    # the full preset trains with 10% null sources, which its guided image decoding needs (session 40)
    r, calls = _recipe(tmp_path / "full", "--preset", "full", "--stage", "4", "--stop-stage", "4")
    assert r.returncode == 0, r.stderr
    [train] = [c for c in calls if c.startswith("train ")]
    assert "--set model.null_source_prob=0.1 " in train
    # the small model for a fixed number of steps on every machine, the minutes only a cap (sessions 42-44)
    assert "--preset small " in train
    assert "--max-steps 3000 " in train and "--set train.max_minutes=300 " in train
    r, calls = _recipe(tmp_path / "full75", "--preset", "full", "--stage", "4", "--stop-stage", "4",
                       "--train-minutes", "75")
    assert r.returncode == 0, r.stderr
    [train] = [c for c in calls if c.startswith("train ")]
    assert "--max-steps 3000 " in train and "--set train.max_minutes=75 " in train
    # the demo model keeps its own 10000 steps; explicit steps win over both
    for model, steps, extra in (("demo", 10000, ()), ("small", 500, ("--train-steps", "500")),
                                ("demo", 700, ("--train-steps", "700"))):
        r, calls = _recipe(tmp_path / f"full-{model}-{steps}", "--preset", "full", "--stage", "4", "--stop-stage", "4",
                           "--model-preset", model, *extra)
        assert r.returncode == 0, r.stderr
        [train] = [c for c in calls if c.startswith("train ")]
        assert f"--preset {model} " in train and f"--max-steps {steps} " in train, train


def test_extra_scenes_join_the_image_fit_and_training(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stop-stage", "6", "--jobs", "1", "--extra-scenes", "7",
                       "--extra-speech", "2")
    assert r.returncode == 0, r.stderr
    data = tmp_path / "a" / "out" / "data" / "scenes"
    store = tmp_path / "a" / "out" / "data" / "store"
    [prepare] = [c for c in calls if c.startswith("prepare scenes ")]
    assert "--extra-scenes 7 --extra-speech 2 " in prepare
    [combine] = [c for c in calls if c.startswith("manifest combine ")]
    assert combine == (f"manifest combine {data}/train.jsonl.gz {data}/train_extra.jsonl.gz "
                       f"-o {data}/train_and_extra.jsonl.gz")
    [image_fit] = [c for c in calls if c.startswith("tokenize image fit ")]
    assert f"--manifest {data}/train_and_extra.jsonl.gz --split all" in image_fit
    assert any(c.startswith("tokenize all ") and f"--store {store}/train_extra" in c for c in calls)
    trains = [c for c in calls if c.startswith("train ")]
    assert len(trains) == 2 and all(f"--store {store}/train_extra=2 " in c for c in trains)  # the quick preset's
    r, calls = _recipe(tmp_path / "w", "--stage", "4", "--stop-stage", "4", "--jobs", "1", "--extra-weight", "0.5")
    assert r.returncode == 0, r.stderr
    w_store = tmp_path / "w" / "out" / "data" / "store"
    assert f"--store {w_store}/train_extra=0.5 " in next(c for c in calls if c.startswith("train "))
    # the quick preset's default draws 2000, every caption spoken; with none, nothing about them anywhere
    r, calls = _recipe(tmp_path / "q", "--stop-stage", "0", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    assert "--extra-scenes 2000 --extra-speech 5 " in next(c for c in calls if c.startswith("prepare scenes "))
    # the full preset: 10000, every caption spoken, sampled as often as train (session 30)
    r, calls = _recipe(tmp_path / "f", "--preset", "full", "--stop-stage", "4", "--stage", "0", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    assert "--extra-scenes 10000 --extra-speech 5 " in next(c for c in calls if c.startswith("prepare scenes "))
    f_store = tmp_path / "f" / "out" / "data" / "store"
    assert f"--store {f_store}/train_extra=1 " in next(c for c in calls if c.startswith("train "))
    r, calls = _recipe(tmp_path / "b", "--stop-stage", "4", "--jobs", "1", "--extra-scenes", "0")
    assert r.returncode == 0, r.stderr
    assert "--extra-scenes 0" in next(c for c in calls if c.startswith("prepare scenes "))
    assert not any("train_extra" in c for c in calls)


def test_the_report_shows_the_image_grids_that_scoring_wrote(tmp_path: Path) -> None:
    scores = tmp_path / "out" / "scores" / "tmt" / "test"
    scores.mkdir(parents=True)
    (scores / "grid_text-image.png").write_bytes(b"png")
    (scores / "grid_speech-image.png").write_bytes(b"png")
    r, _ = _recipe(tmp_path, "--stage", "10", "--stop-stage", "10")
    assert r.returncode == 0, r.stderr
    report = (tmp_path / "out" / "report.md").read_text()
    assert "![tmt test text-image](scores/tmt/test/grid_text-image.png)" in report
    assert "![tmt test speech-image](scores/tmt/test/grid_speech-image.png)" in report
    assert "tmt_bt test" not in report  # no grid was written for it: nothing linked


def test_back_translation_false_skips_stages_5_and_6_and_the_bt_model(tmp_path: Path) -> None:
    scored = tmp_path / "out" / "scores" / "tmt" / "test"
    scored.mkdir(parents=True)
    (scored / "report.md").write_text("the unified model's table\n")
    r, calls = _recipe(tmp_path, "--stage", "4", "--stop-stage", "10", "--jobs", "1", "--back-translation", "false")
    assert r.returncode == 0, r.stderr
    assert [c.split()[0] for c in calls if c.split()[0] in ("train", "backtranslate")] == ["train"]
    assert "-o " + str(tmp_path / "out" / "exp" / "tmt") + " " in next(c for c in calls if c.startswith("train "))
    hyps = {c.split("--output-dir ")[1].split("/hyp/")[1].split("/")[0] for c in calls if c.startswith("translate ")}
    assert hyps == {"tmt"}
    assert not [c for c in calls if "tmt_bt" in c or c.startswith("score compare")]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "no back-translation" in report and "the unified model's table" in report
    # the default still back-translates and scores tmt_bt
    r, calls = _recipe(tmp_path / "d", "--stage", "4", "--stop-stage", "8", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    assert sum(c.startswith("backtranslate ") for c in calls) == 2


def test_train_set_reaches_the_unified_trainings_only(tmp_path: Path) -> None:
    weights = "data.direction_weighting=fixed data.direction_weights.t2s=2.0 data.direction_weights.s2t=2.0"
    r, calls = _recipe(tmp_path, "--stage", "4", "--stop-stage", "6", "--jobs", "1", "--train-set", weights)
    assert r.returncode == 0, r.stderr
    trains = [c for c in calls if c.startswith("train ")]
    assert len(trains) == 2  # stage 4 (tmt) and stage 6 (tmt_bt)
    for c in trains:
        assert ("--set data.direction_weighting=fixed --set data.direction_weights.t2s=2.0 "
                "--set data.direction_weights.s2t=2.0") in c
    r, calls = _stage11(tmp_path / "s", "--single-directions", "s2t", "--train-set", weights)
    assert r.returncode == 0, r.stderr
    assert not [c for c in calls if "direction_weight" in c]  # the baselines train one direction each


def test_direction_weights_reach_the_unified_trainings_and_uniform_turns_them_off(tmp_path: Path) -> None:
    def trainings(out: Path, *args: str) -> list[str]:
        r, calls = _recipe(out, "--stage", "4", "--stop-stage", "6", "--jobs", "1", *args)
        assert r.returncode == 0, r.stderr
        found = [c for c in calls if c.startswith("train ")]
        assert len(found) == 2  # stage 4 (tmt) and stage 6 (tmt_bt)
        return found

    fixed = "--set data.direction_weighting=fixed --set data.direction_weights.t2s=3 --set data.direction_weights.i2s=2 "
    assert all(fixed in c for c in trainings(tmp_path / "w", "--direction-weights", "t2s=3 i2s=2"))
    assert not [c for c in trainings(tmp_path / "q") if "data.direction_weight" in c]  # quick: uniform
    full = ("--set data.direction_weighting=fixed --set data.direction_weights.t2s=3 --set data.direction_weights.i2s=2 "
            "--set data.direction_weights.i2t=0.5 --set data.direction_weights.s2t=0.5 ")
    [stage4, stage6] = trainings(tmp_path / "f", "--preset", "full")  # full: speech targets weighted up (session 29)
    assert full in stage4 and full in stage6 and "--set speech_code_init=1.0 " in stage4
    assert not [c for c in trainings(tmp_path / "u", "--preset", "full", "--direction-weights", "uniform")
                if "data.direction_weight" in c]
    r, calls = _stage11(tmp_path / "s", "--single-directions", "s2t", "--direction-weights", "t2s=3")
    assert r.returncode == 0, r.stderr
    assert not [c for c in calls if "data.direction_weight" in c]  # the baselines train one direction each


def test_average_last_reaches_every_training_and_keeps_enough_checkpoints(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "4", "--stop-stage", "6", "--jobs", "1", "--average-last", "6")
    assert r.returncode == 0, r.stderr
    trainings = [c for c in calls if c.startswith("train ")]
    assert len(trainings) == 2 and all("--set average_last=6 --set keep_last=6 " in c for c in trainings)
    for preset in ("quick", "full"):  # off by default (docs/results.md, session 30)
        r, calls = _recipe(tmp_path / preset, "--preset", preset, "--stage", "4", "--stop-stage", "4", "--jobs", "1")
        assert "--set average_last=0 --set keep_last=3 " in next(c for c in calls if c.startswith("train "))
    r, calls = _stage11(tmp_path / "s", "--single-directions", "s2t", "--average-last", "4")
    assert r.returncode == 0, r.stderr
    assert "--set average_last=4 --set keep_last=4 " in next(c for c in calls if c.startswith("train "))


def test_judge_realisations_reach_every_scoring(tmp_path: Path) -> None:
    r, calls = _stage11(tmp_path / "s", "--single-directions", "t2s", "--judge-realisations", "4")
    assert r.returncode == 0, r.stderr
    assert all(" --realisations 4 " in c for c in calls if c.startswith("score run ")), calls
    r, calls = _recipe(tmp_path / "q", "--stage", "9", "--stop-stage", "9", "--jobs", "1", "--back-translation", "false")
    assert r.returncode == 0, r.stderr
    scored = [c for c in calls if c.startswith("score run ")]
    assert scored and all(" --realisations 1 " in c for c in scored)  # one realisation unless asked


def test_stage11_draws_the_validation_curves_of_the_trained_baselines(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "exp" / "tmt").mkdir(parents=True)
    (out / "exp" / "tmt" / "metrics.jsonl").write_text("{}\n")
    (out / "exp" / "single_t2i").mkdir(parents=True)
    (out / "exp" / "single_t2i" / "metrics.jsonl").write_text("{}\n")
    (out / "exp" / "single_s2t").mkdir(parents=True)  # no metrics (never trained): left out
    r, calls = _stage11(tmp_path, "--single-directions", "t2i")
    assert r.returncode == 0, r.stderr
    [curves] = [c for c in calls if c.startswith("score curves ")]
    # 601 unified steps, 301 single steps each (equal compute): ratio 601 / 301
    assert curves == (f"score curves {out}/exp/tmt {out}/exp/single_t2i --ratio 1.9967 "
                      f"--out {out}/scores/curves_vs_single.md --plot {out}/scores/curves_vs_single.png")
    # without a unified metrics file there is nothing to compare
    r, calls = _stage11(tmp_path / "b", "--single-directions", "t2i")
    assert r.returncode == 0, r.stderr
    assert calls and not any(c.startswith("score curves ") for c in calls)


def test_model_preset_reaches_the_unified_model_and_the_baselines(tmp_path: Path) -> None:
    r, calls = _stage11(tmp_path, "--single-directions", "t2s s2t", "--model-preset", "small")
    assert r.returncode == 0, r.stderr
    train = [c for c in calls if c.startswith("train ")]
    assert len(train) == 2 and all("--preset small " in c for c in train), train
    r, calls = _recipe(tmp_path / "b", "--stage", "4", "--stop-stage", "4", "--model-preset", "small")
    assert r.returncode == 0, r.stderr
    [train] = [c for c in calls if c.startswith("train ")]
    assert "--preset small " in train and f"-o {tmp_path / 'b' / 'out' / 'exp' / 'tmt'} " in train
    # without the option: the preset's own architecture (quick demo, full small)
    r, calls = _stage11(tmp_path / "c", "--single-directions", "t2s")
    assert all("--preset demo " in c for c in calls if c.startswith("train "))
    r, calls = _stage11(tmp_path / "d", "--single-directions", "t2s", "--preset", "full")
    assert r.returncode == 0, r.stderr
    single = [c for c in calls if c.startswith("train ")]
    assert single and all("--preset small " in c for c in single), single


def test_image_targets_decode_with_the_presets_sampling(tmp_path: Path) -> None:
    def image_translations(out: Path, *args: str) -> list[str]:
        r, calls = _recipe(out, "--stage", "8", "--stop-stage", "8", "--back-translation", "false", *args)
        assert r.returncode == 0, r.stderr
        found = [c for c in calls if c.startswith("translate ") and "--to image" in c]
        assert found
        return found

    # every preset keeps the best of 32 by the reverse score alone (sessions 36, 37); quick and mid sample at
    # temperature 1 (not measured lower), full at 0.5, chosen on valid (session 26)
    assert all("--sample --top-k 16 --seed 0 --rerank 32 --rerank-forward 0" in c and "--temperature" not in c
               for c in image_translations(tmp_path / "q"))
    assert all("--sample --top-k 16 --seed 0 --rerank 32 --rerank-forward 0" in c and "--temperature" not in c
               for c in image_translations(tmp_path / "m", "--preset", "mid"))
    # full also guides (its model trains with null sources) and ranks the best of 64 mostly by the pixel judge's
    # image-caption cosine (sessions 39-41); the quick and mid presets fit no judge
    assert all("--sample --top-k 16 --temperature 0.5 --seed 0 --rerank 64 --rerank-forward 0 --guidance 1.5 "
               "--rerank-align 10" in c for c in image_translations(tmp_path / "f", "--preset", "full"))
    assert not any("--rerank-align" in c for c in image_translations(tmp_path / "q2"))
    assert all("--sample --top-k 4 " in c and "--temperature" not in c
               for c in image_translations(tmp_path / "o", "--preset", "full", "--image-decoding", "--sample --top-k 4"))


def test_fresh_models_start_from_the_image_codes(tmp_path: Path) -> None:
    """The unified model (stage 4) and the baselines (stage 11) start their image-token rows from the
    image tokenizer's code features; stage 6 continues stage 4's weights, so it does not ask."""
    r, calls = _recipe(tmp_path / "a", "--stage", "4", "--stop-stage", "6", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    [stage4, stage6] = [c for c in calls if c.startswith("train ")]
    assert "--set image_code_init=1.0 " in stage4 and "--set speech_code_init=0 " in stage4
    assert "--init-from" in stage6 and "code_init" not in stage6
    r, calls = _stage11(tmp_path / "b", "--single-directions", "t2i", "--image-code-init", "0",
                        "--speech-code-init", "0.5")
    assert r.returncode == 0, r.stderr
    [single] = [c for c in calls if c.startswith("train ")]
    assert "--set image_code_init=0 " in single and "--set speech_code_init=0.5 " in single


def test_quick_vocoder_also_fits_on_spoken_extra_rows_unless_the_extras_are_silent(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "7", "--stop-stage", "7")
    assert r.returncode == 0, r.stderr
    [train] = calls
    extra = tmp_path / "a" / "out" / "data" / "store" / "train_extra"
    manifest = tmp_path / "a" / "out" / "data" / "scenes" / "train_extra.jsonl.gz"
    assert f"--extra-store {extra} --extra-manifest {manifest} --extra-rows 2000" in train  # the quick preset's
    r, calls = _recipe(tmp_path / "b", "--stage", "7", "--stop-stage", "7", "--vocoder-extra-rows", "0")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "--extra-" not in train
    # extras drawn without speech: the option is reported as unused, not passed (the vocoder would refuse them)
    r, calls = _recipe(tmp_path / "c", "--stage", "7", "--stop-stage", "7", "--extra-speech", "0")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "--extra-" not in train and "--vocoder-extra-rows 2000 not used" in r.stderr
    r, calls = _recipe(tmp_path / "d", "--stage", "7", "--stop-stage", "7", "--preset", "full")
    assert r.returncode == 0, r.stderr
    [train] = calls
    assert "--extra-" not in train  # full: its vocoder half of issue 19 is met without extras


def test_quick_scores_every_test_row_for_image_targets(tmp_path: Path) -> None:
    """An exact scene is rare at the quick preset's scale, so its image targets are decoded for every
    test row (75) while the other directions keep the first 40; mid and full use --test-limit for all."""
    def limits(out: Path, *args: str) -> dict[str, set[str]]:
        r, calls = _recipe(out, "--stage", "8", "--stop-stage", "8", "--back-translation", "false", *args)
        assert r.returncode == 0, r.stderr
        found: dict[str, set[str]] = {"image": set(), "other": set()}
        for c in (c for c in calls if c.startswith("translate ")):
            lim = c.split("--limit ")[1].split()[0] if "--limit " in c else "all"
            found["image" if "--to image" in c else "other"].add(lim)
        return found

    assert limits(tmp_path / "q") == {"image": {"all"}, "other": {"40"}}
    assert limits(tmp_path / "q2", "--image-test-limit", "20") == {"image": {"20"}, "other": {"40"}}
    assert limits(tmp_path / "f", "--preset", "full") == {"image": {"250"}, "other": {"250"}}
    assert limits(tmp_path / "f2", "--preset", "full", "--test-limit", "0") == {"image": {"all"}, "other": {"all"}}


def test_stage8_also_draws_speech_to_image_from_the_unified_models_own_caption(tmp_path: Path) -> None:
    r, calls = _recipe(tmp_path / "a", "--stage", "8", "--stop-stage", "8", "--per-direction-best", "true", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    via = [c for c in calls if c.startswith("translate ") and "--via" in c]
    # one per unified model (tmt, tmt_bt), none for the per-direction checkpoints, which cannot pivot
    assert len(via) == 2 and all("--from speech --to image --via text --sample" in c for c in via)
    assert {c.split("--output-dir ")[1] for c in via} == {
        str(tmp_path / "a" / "out" / "hyp" / m / "test" / "speech-image-via-text") for m in ("tmt", "tmt_bt")}
    assert all(f"-m {tmp_path / 'a' / 'out' / 'exp' / m} " in c for c, m in zip(via, ("tmt", "tmt_bt"), strict=True))
    direct = [c for c in calls if c.startswith("translate ") and "--from speech --to image " in c and "--via" not in c]
    assert len(direct) == 3  # tmt, tmt_bt, tmt_dir: the direct direction is still translated and scored
    r, calls = _recipe(tmp_path / "b", "--stage", "8", "--stop-stage", "8", "--pivots", "")
    assert r.returncode == 0, r.stderr
    assert calls and not any("--via" in c for c in calls)
    r, calls = _recipe(tmp_path / "c", "--stage", "8", "--stop-stage", "8", "--pivots", "speech:image")
    assert r.returncode != 0 and "--pivots: 'speech:image' is not SRC:VIA:TGT" in r.stderr and not calls
