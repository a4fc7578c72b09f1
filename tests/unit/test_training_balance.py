"""Direction balance (issue 20): loss weights, the direction schedule, synthetic modalities
as sources only, and --init-from."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from tmt import TmtError
from tmt.cli import cli as root
from tmt.core.modality import ALL_DIRECTIONS
from tmt.models.tmt import create_model
from tmt.store.pipeline import BatchReader, RowBatch
from tmt.store.token_store import TokenStoreWriter
from tmt.training.config import train_preset
from tmt.training.steps import SixWayStep
from tmt.training.synthetic import (
    FINGERPRINTS,
    SIZES,
    make_synthetic_store,
    scene_tokens,
    synthetic_vocab,
)
from tmt.training.trainer import train
from tmt.training.weights import base_weights, make_mix, parse_phases

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("balance")
    make_synthetic_store(d / "store", num_scenes=20, drop={"speech": 0.5}, seed=3)  # fewer rows with speech
    make_synthetic_store(d / "whole", num_scenes=20)  # every row has all three modalities
    synthetic_vocab().save(d / "vocab.json")
    return d


def _cfg(data, **kw):
    cfg = train_preset("tiny")
    cfg = replace(cfg, data=replace(cfg.data, vocab=str(data / "vocab.json"), stores=[str(data / "store")], max_tokens=300),
                  model=replace(cfg.model, dropout_p=0.1), max_steps=6, save_every=3, log_every=1, plot=False)
    return replace(cfg, **kw)


# ---- weights -------------------------------------------------------------------------------
def test_temperature_weights_known_values() -> None:
    rows = {"i2t": 100, "t2i": 400, "s2t": 0}
    w = base_weights("temperature", ["i2t", "t2i", "s2t"], rows, temperature=2.0)
    # n^(1/2): 10 and 20, mean 15 -> 2/3 and 4/3; no rows -> 0 and left out of the mean
    assert w == pytest.approx({"i2t": 2 / 3, "t2i": 4 / 3, "s2t": 0.0})
    prop = base_weights("temperature", ["i2t", "t2i"], rows, temperature=1.0)
    assert prop == pytest.approx({"i2t": 0.4, "t2i": 1.6})
    flat = base_weights("temperature", ["i2t", "t2i"], rows, temperature=1e6)
    assert flat == pytest.approx({"i2t": 1.0, "t2i": 1.0}, rel=1e-4)
    with pytest.raises(TmtError, match="temperature"):
        base_weights("temperature", ["i2t"], rows, temperature=0.0)


def test_fixed_and_uniform_weights() -> None:
    rows = dict.fromkeys(ALL_DIRECTIONS, 10)
    assert base_weights("uniform", ALL_DIRECTIONS, rows) == dict.fromkeys(ALL_DIRECTIONS, 1.0)
    w = base_weights("fixed", ["i2t", "t2i", "s2t"], rows, fixed={"text->image": 4.0, "i2t": 1.0})
    assert w == pytest.approx({"i2t": 0.5, "t2i": 2.0, "s2t": 0.5})  # s2t unnamed: 1 before scaling
    with pytest.raises(TmtError, match="direction_weights"):
        base_weights("fixed", ["i2t"], rows, fixed={"i2t": -1.0})
    with pytest.raises(TmtError):
        base_weights("fixed", ["i2t"], rows, fixed={"t2t": 1.0})
    with pytest.raises(TmtError, match="no direction"):
        base_weights("fixed", ["i2t", "t2i"], rows, fixed={"i2t": 0.0, "t2i": 0.0})


def _batch() -> RowBatch:
    vocab = synthetic_vocab()
    seqs: dict[str, list[torch.Tensor | None]] = {m: [] for m in SIZES}
    for a, b in ((1, 2), (4, 0), (7, 5)):
        for m, t in scene_tokens(a, b).items():
            seqs[m].append(torch.from_numpy(vocab.to_joint(m, t)))
    seqs["speech"][1] = None  # one row without speech
    return RowBatch(ids=["a", "b", "c"], seqs=seqs)


def test_loss_combines_per_token_means_with_weights() -> None:
    torch.manual_seed(0)
    model = create_model(train_preset("tiny").model, synthetic_vocab()).eval()
    step = SixWayStep(model, list(ALL_DIRECTIONS)).eval()
    batch = _batch()
    with torch.no_grad():
        plain, stats = step(batch)
        per_dir = {d: s.loss / s.tokens for d, s in stats.dirs.items()}
        assert set(per_dir) == set(ALL_DIRECTIONS)
        # each direction normalised by its own target tokens: speech targets only from the 2 rows with speech
        assert stats.dirs["t2s"].tokens == sum(len(batch.seqs["speech"][i]) + 1 for i in (0, 2))  # type: ignore[arg-type]
        assert float(plain) == pytest.approx(sum(per_dir.values()) / 6, rel=1e-5)
        w = {"i2t": 2.0, "i2s": 0.5, "t2i": 1.5, "s2i": 0.0, "s2t": 1.0, "t2s": 1.0}
        weighted, wstats = step(batch, 0.0, w)
    assert "s2i" not in wstats.dirs  # weight 0: not computed
    want = sum(w[d] * per_dir[d] for d in w if w[d] > 0) / 5
    assert float(weighted) == pytest.approx(want, rel=1e-5)
    for d, s in wstats.dirs.items():  # the logged stats stay unweighted
        assert s.loss / s.tokens == pytest.approx(per_dir[d], rel=1e-5)


# ---- schedule ------------------------------------------------------------------------------
def test_phases_parse_and_switch_at_the_configured_step() -> None:
    rows = {"i2t": 50, "i2s": 20, "t2i": 50, "s2i": 20, "s2t": 20, "t2s": 20}
    mix = make_mix("uniform", ALL_DIRECTIONS, rows, temperature=1.0, fixed={}, phases=["3:top2", "2:s2t,t2s"])
    assert [p.directions for p in mix.phases] == [("i2t", "t2i"), ("s2t", "t2s")]
    assert [(p.start, p.end) for p in mix.phases] == [(0, 3), (3, 5)]
    active = [sorted(d for d, w in mix.weights_at(k).items() if w > 0) for k in range(7)]
    assert active[:3] == [["i2t", "t2i"]] * 3  # steps 1-3
    assert active[3:5] == [["s2t", "t2s"]] * 2  # steps 4-5
    assert active[5] == active[6] == sorted(ALL_DIRECTIONS)  # step 6 on: everything
    assert [k for k in range(7) if mix.switches_at(k)] == [0, 3, 5]
    assert "steps 1-3: only i2t,t2i" in mix.describe()
    for bad in ("x:i2t", "0:i2t", "3", "3:top0", "3:t2t"):
        with pytest.raises(TmtError, match=r"direction_phases|t2t"):
            parse_phases([bad], ALL_DIRECTIONS, rows)
    with pytest.raises(TmtError, match="not among"):
        parse_phases(["3:s2t"], ["i2t"], rows)


def test_training_follows_the_schedule(data) -> None:
    cfg = _cfg(data, max_steps=5)
    cfg = replace(cfg, data=replace(cfg.data, stores=[str(data / "whole")], direction_phases=["3:i2t,t2i"]))
    train(cfg, data / "phased")
    recs = [json.loads(x) for x in (data / "phased" / "metrics.jsonl").read_text().splitlines()]
    seen = {r["step"]: {k[3:] for k in r if k.startswith("ce/")} for r in recs if r["split"] == "train"}
    assert seen[1] == seen[2] == seen[3] == {"i2t", "t2i"}
    assert seen[4] == seen[5] == set(ALL_DIRECTIONS)


# ---- synthetic modalities --------------------------------------------------------------------
def _bt_store(path, synthetic: list[str], n: int = 6):
    with TokenStoreWriter(path, streams=dict(SIZES), fingerprints=FINGERPRINTS, overwrite=True) as w:
        for i in range(n):
            meta = {"id": f"bt{i}", "group": f"g{i}", "split": "train", "synthetic": True,
                    "source_id": f"r{i}", "synthetic_modalities": synthetic}
            w.add(meta, scene_tokens(i % 20, i % 9))
    return path


@pytest.mark.parametrize(("synthetic", "trained"), [
    (["speech", "text"], {"t2i", "s2i"}),  # images_only pool: text and speech generated from the image
    (["image"], {"i2t", "i2s", "s2t", "t2s"}),  # a generated image: a source only
])
def test_synthetic_modalities_are_never_targets(tmp_path, synthetic, trained) -> None:
    store = _bt_store(tmp_path / "bt", synthetic)
    real = make_synthetic_store(tmp_path / "real", num_scenes=4)
    vocab = synthetic_vocab()
    reader = BatchReader([str(store), str(real)], vocab, train=False, max_tokens=200, prefetch=0)
    dropped = set(ALL_DIRECTIONS) - trained
    assert reader.dropped_pairs == {d: (6 if d in dropped else 0) for d in ALL_DIRECTIONS}
    assert reader.direction_rows == {d: (10 if d in trained else 4) for d in ALL_DIRECTIONS}
    torch.manual_seed(0)
    step = SixWayStep(create_model(train_preset("tiny").model, vocab), list(ALL_DIRECTIONS)).eval()
    tokens: dict[str, float] = dict.fromkeys(ALL_DIRECTIONS, 0.0)
    with torch.no_grad():
        for batch in reader:
            for d in ALL_DIRECTIONS:
                tgt = {"t": "text", "s": "speech", "i": "image"}[d[2]]
                for r in batch.rows_for({"t": "text", "s": "speech", "i": "image"}[d[0]], tgt):
                    assert tgt not in batch.synthetic[r]
            _, stats = step(batch)
            for d, s in stats.dirs.items():
                tokens[d] += s.tokens
    reader.close()
    want_real = {d: sum(len(scene_tokens(i % 20, (i // 20 + i) % 9)[_tgt(d)]) + 1 for i in range(4)) for d in ALL_DIRECTIONS}
    want_bt = {d: sum(len(scene_tokens(i % 20, i % 9)[_tgt(d)]) + 1 for i in range(6)) for d in ALL_DIRECTIONS}
    assert tokens == {d: want_real[d] + (want_bt[d] if d in trained else 0) for d in ALL_DIRECTIONS}


def _tgt(d: str) -> str:
    return {"t": "text", "s": "speech", "i": "image"}[d[2]]


# ---- --init-from --------------------------------------------------------------------------------
def test_init_from_loads_weights_and_refuses_another_vocab(data, tmp_path) -> None:
    cfg = _cfg(data, max_steps=2)
    train(cfg, data / "unified")
    # lr 0: the fine-tuned model is exactly the weights it started from
    ft = replace(cfg, max_steps=1, data=replace(cfg.data, directions=["t2s"]), optim=replace(cfg.optim, lr=0.0))
    res = train(ft, data / "ft", init_from=data / "unified")
    assert set(res.train) == {"t2s"}
    a = torch.load(data / "unified" / "model.pt", weights_only=True)
    b = torch.load(data / "ft" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    synthetic_vocab({"text": 50, "speech": 30, "image": 24}).save(tmp_path / "other.json")
    r = CliRunner().invoke(root, [
        "train", "--preset", "tiny", "--vocab", str(tmp_path / "other.json"), "--store", str(data / "store"),
        "--init-from", str(data / "unified"), "--directions", "t2s", "-o", str(tmp_path / "e"),
    ])
    assert r.exit_code == 1, r.output
    assert "different vocabulary" in r.output and "vocab.json" in r.output and "Traceback" not in r.output


# ---- per-direction early stopping ------------------------------------------------------------
def test_stop_patience_stops_directions_without_a_new_low() -> None:
    rows = dict.fromkeys(ALL_DIRECTIONS, 10)
    mix = make_mix("uniform", ALL_DIRECTIONS, rows, temperature=1.0, fixed={}, phases=[], patience=2)
    falling = dict.fromkeys(ALL_DIRECTIONS, 3.0)
    assert mix.observe(250, falling) == []
    # t2i over-fits from the second validation on, the rest keep improving
    assert mix.observe(500, {**dict.fromkeys(ALL_DIRECTIONS, 2.0), "t2i": 3.5}) == []  # one miss: waits
    assert mix.observe(750, {**dict.fromkeys(ALL_DIRECTIONS, 1.5), "t2i": 2.9}) == []  # a new low resets
    assert mix.observe(1000, {**dict.fromkeys(ALL_DIRECTIONS, 1.4), "t2i": 3.1}) == []
    assert mix.observe(1250, {**dict.fromkeys(ALL_DIRECTIONS, 1.3), "t2i": 3.0}) == ["t2i"]
    assert mix.stopped == {"t2i": 1250} and mix.lows["t2i"] == 2.9
    w = mix.weights_at(1250)
    assert w["t2i"] == 0.0 and all(w[d] == 1.0 for d in ALL_DIRECTIONS if d != "t2i")
    # a restored mix (resume) weighs every later step the same
    again = make_mix("uniform", ALL_DIRECTIONS, rows, temperature=1.0, fixed={}, phases=[], patience=2)
    again.load_state_dict(mix.state_dict())
    assert again.weights_at(2000) == mix.weights_at(2000)
    # everything flat: all but one direction stop, the last one trains on
    for step in (1500, 1750):
        mix.observe(step, dict.fromkeys(ALL_DIRECTIONS, 9.0))
    assert sum(w > 0 for w in mix.weights_at(1750).values()) == 1
    off = make_mix("uniform", ALL_DIRECTIONS, rows, temperature=1.0, fixed={}, phases=[])
    for step in range(5):
        assert off.observe(step, dict.fromkeys(ALL_DIRECTIONS, 1.0)) == []  # patience 0: never
    # a direction outside the current phase is not judged while it does not train
    phased = make_mix("uniform", ALL_DIRECTIONS, rows, temperature=1.0, fixed={}, phases=["4:i2t"], patience=1)
    for step in (2, 4, 6):
        assert phased.observe(step, dict.fromkeys(ALL_DIRECTIONS, 1.0)) == (["i2t"] if step == 4 else [])
    assert phased.observe(8, dict.fromkeys(ALL_DIRECTIONS, 1.0)) == [d for d in ALL_DIRECTIONS if d != "i2t"][:-1]
    # inside a one-direction phase that goes on, its direction is not stopped: the next steps
    # would train nothing; once the phase is over it stops at the next validation without a low
    long = make_mix("uniform", ALL_DIRECTIONS, rows, temperature=1.0, fixed={}, phases=["6:i2t"], patience=1)
    assert [long.observe(step, dict.fromkeys(ALL_DIRECTIONS, 1.0)) for step in (2, 4, 6)] == [[], [], ["i2t"]]
    with pytest.raises(TmtError, match="stop_patience"):
        make_mix("uniform", ALL_DIRECTIONS, rows, temperature=1.0, fixed={}, phases=[], patience=-1)


def test_training_stops_directions_and_resumes_with_them_stopped(data) -> None:
    # lr 0: validation CE never reaches a new low, so after the second validation (patience 1)
    # five directions stop and one trains on; a run resumed after that keeps them stopped
    cfg = _cfg(data, max_steps=6, valid_every=1, save_every=2, optim=replace(train_preset("tiny").optim, lr=0.0))
    cfg = replace(cfg, data=replace(cfg.data, stores=[str(data / "whole")], valid_stores=[str(data / "whole")],
                                    stop_patience=1))
    train(cfg, data / "stops")
    train(cfg, data / "stops-part", stop_after=3)
    train(cfg, data / "stops-part", resume=True)
    for exp in ("stops", "stops-part"):
        recs = [json.loads(x) for x in (data / exp / "metrics.jsonl").read_text().splitlines()]
        seen = {r["step"]: {k[3:] for k in r if k.startswith("ce/")} for r in recs if r["split"] == "train"}
        assert seen[1] == seen[2] == set(ALL_DIRECTIONS)
        assert len(seen[3]) == 1 and seen[3] == seen[4] == seen[5] == seen[6], exp
        valid = {r["step"]: r for r in recs if r["split"] == "valid"}
        assert "stopped" not in valid[1] and len(valid[2]["stopped"]) == 5
        assert set(valid[6]["stopped"]) == set(ALL_DIRECTIONS) - seen[6]
        state = torch.load(data / exp / "checkpoints" / "step_00000006" / "trainer.pt", weights_only=True)
        assert state["mix"]["stopped"] == dict.fromkeys(valid[2]["stopped"], 2)
