"""Training speed switches (issue 20 section 3): the `small` preset, the AdamW kernel and SDPA
backend give the same training result, and the training benchmark's helpers and tiny run work."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from tmt.core.modality import ALL_DIRECTIONS
from tmt.models.config import get_preset
from tmt.models.tmt import create_model
from tmt.store.pipeline import RowBatch
from tmt.training.config import OptimConfig, TrainConfig, train_preset
from tmt.training.steps import SixWayStep, make_optimizer
from tmt.vocab import JointVocab

torch.set_num_threads(1)
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
VOCAB = JointVocab.from_sizes({"text": 50, "speech": 20, "image": 30}, fingerprints={"text": "t", "speech": "s", "image": "i"})


def _batch(rows: int = 3, seed: int = 0) -> RowBatch:
    g = torch.Generator().manual_seed(seed)
    lens = {"text": (3, 7), "speech": (5, 12), "image": (4, 5)}
    b = RowBatch(ids=[f"r{i}" for i in range(rows)], seqs={m: [] for m in lens})
    for _ in range(rows):
        for m, (lo, hi) in lens.items():
            s, e = VOCAB.range(m)
            b.seqs[m].append(torch.randint(s, e, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g))
    return b


def _train(adamw: str = "default", sdpa: SDPBackend | None = None, steps: int = 3) -> tuple[list[float], dict[str, torch.Tensor]]:
    """A few optimizer steps of the tiny model on one batch: the losses and the final weights."""
    torch.manual_seed(0)
    model = create_model(get_preset("tiny"), VOCAB)
    module = SixWayStep(model, list(ALL_DIRECTIONS)).train()
    opt = make_optimizer(module, TrainConfig(optim=OptimConfig(lr=1e-2, adamw_impl=adamw)))  # type: ignore[arg-type]
    losses = []
    for _ in range(steps):
        with sdpa_kernel([sdpa]) if sdpa is not None else torch.enable_grad():
            loss, _ = module(_batch(), 0.1)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Equal within rounding. Attention key biases are skipped: their true gradient is zero (softmax
    ignores a per-query constant), so Adam turns pure rounding noise into +-lr steps there."""
    for k in b:
        if not k.endswith("k_proj.bias"):
            assert torch.allclose(a[k], b[k], atol=1e-4), k


def test_small_preset_validates_and_builds() -> None:
    cfg = get_preset("small")
    cfg.validate()
    model = create_model(cfg, VOCAB)
    body = model.num_params() - model.final_proj.weight.numel()  # type: ignore[operator]
    assert 3e6 < body < 1e7  # several million parameters besides the (tied) embedding
    t = train_preset("small")
    t.validate()
    assert t.model == cfg and t.preset == "small" and t.data.max_tokens > 0


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_adamw_kernels_train_the_same(impl: str) -> None:
    ref_losses, ref = _train("default")
    losses, weights = _train(impl)
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    assert ref_losses[-1] < ref_losses[0]  # it does train
    _same_weights(weights, ref)


def test_sdpa_math_backend_trains_the_same() -> None:
    ref_losses, ref = _train()
    losses, weights = _train(sdpa=SDPBackend.MATH)
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    _same_weights(weights, ref)


def test_unknown_adamw_impl_is_refused_by_the_config() -> None:
    from tmt.config import ConfigError, merge, parse_overrides

    cfg = train_preset("tiny")
    assert merge(cfg, parse_overrides(["optim.adamw_impl=fused"])).optim.adamw_impl == "fused"
    with pytest.raises(ConfigError, match="adamw_impl"):
        merge(cfg, parse_overrides(["optim.adamw_impl=turbo"]))


def _levers():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))
    import training_levers

    return training_levers


def test_padding_shares_and_interleave() -> None:
    lv = _levers()
    rows = [{"speech": s, "text": t} for s, t in [(10, 9), (90, 3), (12, 4), (88, 8)]]
    pad = lv.padding(rows, rows=2)
    # by total length: (12,4)+(10,9) and (88,8)+(90,3) -> text targets pad 5+5 of 4+9+8+3+4*1
    assert pad["text: total"] == pytest.approx(10 / (10 + 28))
    assert pad["text: per_target"] < pad["text: total"]
    calls: list[str] = []
    out = lv.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, steps=1, rounds=2)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # warm-up, then A B A B
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())


def test_profile_covers_the_step() -> None:
    lv = _levers()
    torch.manual_seed(0)
    module = SixWayStep(create_model(get_preset("tiny"), VOCAB), list(ALL_DIRECTIONS)).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    prof = lv.profile_step(module, _batch(), opt)
    for part in ("attention", "ffn", "embeddings", "output softmax + loss", "data (collation in step)",
                 "backward", "optimizer"):
        assert prof[part] > 0, part
    assert sum(v for k, v in prof.items() if k != "step") <= prof["step"] * 1.5


def test_benchmark_tiny_run(tmp_path) -> None:
    sys.path.insert(0, str(BENCH))
    import training

    out = tmp_path / "t.json"
    assert training.main(["--sizes", "tiny", "--steps", "1", "--rounds", "1", "--threads", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    res = data["sizes"]["tiny"]["results"]
    assert "baseline: ours, today's path" in res and "lever: AdamW foreach" in res and "lever: bf16 autocast" in res
    assert all(r["tokens_per_s"] > 0 and r["flops"] > 0 for r in res.values())
    assert set(data["goals"]["tiny"]) >= {"speedup_vs_a", "tuned_vs_baseline"}
    assert replace(get_preset("tiny")).model_dim == data["sizes"]["tiny"]["model"]["model_dim"]


def test_benchmark_ddp_lever(tmp_path) -> None:
    """--ddp times two gloo ranks of one thread on the same batch; its row joins the table."""
    sys.path.insert(0, str(BENCH))
    import training

    out = tmp_path / "t.json"
    assert training.main(["--sizes", "tiny", "--steps", "1", "--rounds", "1", "--threads", "1", "--ddp",
                          "--out", str(out)]) == 0
    res = json.loads(out.read_text())["sizes"]["tiny"]["results"]
    ddp = res["lever: 2 processes x 1 thread (DDP, gloo)*"]
    assert ddp["step_s"] > 0 and ddp["flops"] == res["ours, tuned defaults"]["flops"]
