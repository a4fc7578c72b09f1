"""`tmt train`: overfitting a 20-scene store, exact resume, --init-from, refusals, outputs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from tmt.cli import cli as root
from tmt.training.checkpoint import list_steps
from tmt.training.config import train_preset
from tmt.training.steps import lr_lambda
from tmt.training.synthetic import make_synthetic_store, synthetic_vocab
from tmt.training.trainer import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    make_synthetic_store(d / "store", num_scenes=20)
    synthetic_vocab().save(d / "vocab.json")
    return d


def _cfg(data, **kw):
    cfg = train_preset("tiny")
    cfg = replace(cfg, data=replace(cfg.data, vocab=str(data / "vocab.json"), stores=[str(data / "store")], max_tokens=300),
                  model=replace(cfg.model, dropout_p=0.1), max_steps=6, save_every=3, log_every=3, plot=False)
    return replace(cfg, **kw)


MID_SCHEDULE = {"direction_weighting": "fixed", "direction_weights": {"t2i": 2.0, "i2t": 0.5},
                "direction_phases": ["5:top2"]}
"""Weighted directions, steps 1-5 on two of them: stopping after step 3 resumes mid-phase."""


@pytest.mark.parametrize(("name", "data_kw", "stop"), [("plain", {}, 3), ("phased", MID_SCHEDULE, 3)])
def test_resume_continues_exactly(data, name, data_kw, stop) -> None:
    # grad accumulation + dropout: RNG, data position, optimizer and schedule all matter
    cfg = _cfg(data, optim=replace(train_preset("tiny").optim, grad_accum=2, warmup_steps=2))
    cfg = replace(cfg, data=replace(cfg.data, **data_kw))
    full, part = data / f"full-{name}", data / f"part-{name}"
    train(cfg, full)
    train(cfg, part, stop_after=stop)
    assert list_steps(part) == [stop]
    with pytest.raises(Exception, match="--resume"):
        train(cfg, part)
    train(cfg, part, resume=True)
    a = torch.load(full / "model.pt", weights_only=True)
    b = torch.load(part / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    fresh = torch.load(full / "checkpoints" / "step_00000003" / "trainer.pt", weights_only=True)
    assert fresh["step"] == 3 and "optimizer" in fresh and "scheduler" in fresh
    assert not torch.equal(fresh["model"]["frontend.embed.weight"], a["frontend.embed.weight"])


def test_init_from_and_directions(data) -> None:
    cfg = _cfg(data, max_steps=2)
    train(cfg, data / "stage1")
    cfg2 = replace(cfg, data=replace(cfg.data, directions=["i2t"]), optim=replace(cfg.optim, lr=1e-4))
    res = train(cfg2, data / "stage2", init_from=data / "stage1")
    assert set(res.train) == {"i2t"}


def test_refuses_store_with_other_tokenizer(data, tmp_path) -> None:
    make_synthetic_store(tmp_path / "bad", fingerprints={"text": "x", "speech": "y", "image": "z"})
    r = CliRunner().invoke(root, [
        "train", "--preset", "tiny", "--vocab", str(data / "vocab.json"), "--store", str(tmp_path / "bad"), "-o", str(tmp_path / "e"),
    ])
    assert r.exit_code == 1
    assert "fingerprint" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "e" / "model.pt").exists()


def test_schedule_and_dump_config(data) -> None:
    cfg = train_preset("tiny")
    f = lr_lambda(replace(cfg, max_steps=100, optim=replace(cfg.optim, warmup_steps=10)))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(99) == pytest.approx(0.0)
    g = lr_lambda(replace(cfg, optim=replace(cfg.optim, warmup_steps=4, schedule="inverse_sqrt")))
    assert g(15) == pytest.approx(0.5)
    r = CliRunner().invoke(root, ["train", "--preset", "paper", "-o", "x", "--dump-config", "--set", "optim.lr=1e-4"])
    assert r.exit_code == 0 and "model_dim: 1024" in r.output and "lr: 0.0001" in r.output


def test_train_dtype_auto_is_bf16_only_on_a_gpu_with_bf16_units(monkeypatch) -> None:
    from tmt.training.steps import train_dtype

    cfg = train_preset("tiny")
    assert cfg.dtype == "auto"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # bf16 units: still float32 on CPU
    assert train_dtype(cfg, torch.device("cpu")) == "float32"
    assert train_dtype(replace(cfg, dtype="bfloat16"), torch.device("cpu")) == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # a pre-Ampere GPU: bf16 only in emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert train_dtype(cfg, torch.device("cuda")) == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert train_dtype(cfg, torch.device("cuda")) == "bfloat16"


def test_a_run_resolves_its_dtype_once_and_every_forward_uses_it(data, monkeypatch) -> None:
    import contextlib

    import tmt.training.state as state
    import tmt.training.steps as steps
    import tmt.training.validation as validation

    resolved: list[str] = []
    used: list[str] = []
    monkeypatch.setattr(state, "train_dtype", lambda cfg, device: resolved.append(cfg.dtype) or "bfloat16")

    def recording(device_type: str, dtype: str) -> contextlib.AbstractContextManager[None]:
        used.append(dtype)
        return contextlib.nullcontext()

    monkeypatch.setattr(steps, "autocast", recording)
    monkeypatch.setattr(validation, "autocast", recording)
    res = train(_cfg(data, max_steps=3), data / "dtype")
    assert res.step == 3 and resolved == ["auto"]
    assert len(used) >= 3 and set(used) == {"bfloat16"}


def test_time_budget_stops_and_saves(data, monkeypatch) -> None:
    import tmt.training.trainer as trainer

    clock = {"t": 0.0}

    def fake_monotonic() -> float:
        clock["t"] += 30.0  # every call: half a minute passes
        return clock["t"]

    monkeypatch.setattr(trainer.time, "monotonic", fake_monotonic)
    cfg = _cfg(data, max_steps=50, max_minutes=1.5, save_every=100)
    res = train(cfg, data / "budget")
    assert list_steps(data / "budget") == [res.step] and 1 <= res.step < 50
    assert (data / "budget" / "model.pt").is_file()


def test_time_budget_spans_resumed_runs(data, monkeypatch) -> None:
    import tmt.training.trainer as trainer

    clock = {"t": 0.0}

    def fake_monotonic() -> float:
        clock["t"] += 30.0
        return clock["t"]

    monkeypatch.setattr(trainer.time, "monotonic", fake_monotonic)
    cfg = _cfg(data, max_steps=50, max_minutes=1.5, save_every=100)
    first = train(cfg, data / "span").step
    # the same budget again: already spent, so no further step
    assert train(cfg, data / "span", resume=True).step == first
    # a larger budget: only the difference is trained (a fresh 3-minute run would take more steps)
    more = train(replace(cfg, max_minutes=3.0), data / "span", resume=True).step
    fresh = train(replace(cfg, max_minutes=3.0), data / "fresh").step
    assert first < more and more - first < fresh



def test_best_per_direction_matches_the_validation_log(data) -> None:
    import json

    from tmt.models.checkpoint import load_model

    cfg = _cfg(data, max_steps=6, valid_every=2, save_every=2, keep_last=5, best_per_direction=True)
    cfg = replace(cfg, data=replace(cfg.data, valid_stores=[str(data / "store")]))
    exp = data / "perdir"
    train(cfg, exp)
    valid = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in valid if r["split"] == "valid"]
    dirs = sorted(k.removeprefix("ce/") for k in valid[0] if k.startswith("ce/"))
    assert sorted(p.name for p in (exp / "best").iterdir()) == dirs
    for d in dirs:
        want = min(valid, key=lambda r: r[f"ce/{d}"])  # the first step at the lowest CE
        best = json.loads((exp / "best" / d / "best.json").read_text())
        assert best["step"] == want["step"] and best["loss"] == pytest.approx(want[f"ce/{d}"])
        load_model(exp / "best" / d)  # a complete model directory: weights, vocab, config
        got = torch.load(exp / "best" / d / "model.pt", weights_only=True)
        ref = torch.load(exp / "checkpoints" / f"step_{best['step']:08d}" / "trainer.pt", weights_only=True)["model"]
        assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref), d


def test_keep_direction_bests_rewrites_only_a_direction_that_improves(data, tmp_path) -> None:
    import json

    from tmt.models.tmt import create_model
    from tmt.training.validation import keep_direction_bests

    cfg = _cfg(data)
    model = create_model(cfg.model, synthetic_vocab())
    history = [  # step -> validation CE per direction: i2t is best at 2, t2i at 4
        (2, {"i2t": 1.0, "t2i": 3.0}),
        (4, {"i2t": 1.2, "t2i": 2.5}),
        (6, {"i2t": 1.1, "t2i": 2.6}),
    ]
    for step, ce in history:
        with torch.no_grad():
            model.frontend.embed.weight.fill_(float(step))  # tells the steps' weights apart
        keep_direction_bests(tmp_path, step, model, {d: {"ce": v, "acc": 0.0} for d, v in ce.items()}, cfg)
    for d, step in (("i2t", 2), ("t2i", 4)):
        best = json.loads((tmp_path / "best" / d / "best.json").read_text())
        assert best == {"step": step, "loss": dict(history)[step][d], "direction": d}
        w = torch.load(tmp_path / "best" / d / "model.pt", weights_only=True)["frontend.embed.weight"]
        assert torch.all(w == float(step)), d


def test_best_per_direction_off_by_default(data) -> None:
    cfg = _cfg(data, max_steps=2, valid_every=1)
    cfg = replace(cfg, data=replace(cfg.data, valid_stores=[str(data / "store")]))
    train(cfg, data / "nodirs")
    assert not (data / "nodirs" / "best").exists()


def test_average_last_writes_the_mean_of_the_last_checkpoints(data) -> None:
    exp = data / "avg"
    train(_cfg(data, max_steps=4, save_every=1, keep_last=3, average_last=3), exp)
    steps = list_steps(exp)
    assert steps == [2, 3, 4]
    assert json.loads((exp / "average.json").read_text()) == {"steps": [2, 3, 4]}
    states = [torch.load(exp / "checkpoints" / f"step_{s:08d}" / "trainer.pt", weights_only=True)["model"] for s in steps]
    avg = torch.load(exp / "model.pt", weights_only=True)
    assert avg.keys() == states[0].keys()
    for k in avg:
        assert torch.allclose(avg[k], sum(s[k] for s in states) / 3, atol=1e-6), k
    assert not torch.equal(avg["frontend.embed.weight"], states[-1]["frontend.embed.weight"])


def test_average_last_on_a_finished_run_and_its_refusals(data) -> None:
    exp = data / "avg-later"
    cfg = _cfg(data, max_steps=4, save_every=1, keep_last=2)
    train(cfg, exp)
    last = torch.load(exp / "model.pt", weights_only=True)
    assert not (exp / "average.json").exists()
    train(replace(cfg, average_last=2), exp, resume=True)  # nothing left to train: only the average
    assert json.loads((exp / "average.json").read_text()) == {"steps": [3, 4]}
    assert list_steps(exp) == [3, 4]
    assert not torch.equal(torch.load(exp / "model.pt", weights_only=True)["frontend.embed.weight"],
                           last["frontend.embed.weight"])
    with pytest.raises(Exception, match="keep_last"):
        train(replace(cfg, average_last=3), data / "avg-refused")
    assert not (data / "avg-refused").exists()
