"""Where one training step's time goes, and which speed levers win (used by benchmarks/training.py).

- `profile_step`: one SixWayStep step under torch.profiler, with ranges opened around the
  model's attention, feed-forward and embedding modules (forward hooks), the sliced
  softmax + loss, the batch collation done inside the step, the backward pass and the
  optimizer; shares of the step's wall time.
- `interleave`: several prepared step functions timed round-robin (A B C A B C ...), so that
  on a shared, loaded machine every variant sees the same load.
- `padding`: decoder padding of batches bucketed by total row length (what the store
  pipeline does) vs by each direction's target length.
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fairseq2.models.transformer import StandardFeedForwardNetwork, StandardMultiheadAttention
from torch.autograd.profiler import record_function
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import ProfilerActivity, profile

import tmt.training.steps as steps_mod
from tmt.models.tmt import ModalityFrontend
from tmt.store.pipeline import RowBatch

StepFn = Callable[[], None]

FORWARD_PARTS = {
    "attention": StandardMultiheadAttention,
    "ffn": StandardFeedForwardNetwork,
    "embeddings": ModalityFrontend,
}
"""Profile category -> the module type whose forward calls it covers."""


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} cores)"


@contextlib.contextmanager
def _ranges(module: torch.nn.Module) -> Iterator[None]:
    """Open a profiler range named after its category around each matching submodule's forward."""
    handles = []
    open_ranges: list[Any] = []
    for sub in module.modules():
        for name, kind in FORWARD_PARTS.items():
            if isinstance(sub, kind):
                def pre(_m: Any, _a: Any, name: str = name) -> None:
                    rf = record_function(name)
                    rf.__enter__()
                    open_ranges.append(rf)

                def post(_m: Any, _a: Any, _o: Any) -> None:
                    open_ranges.pop().__exit__(None, None, None)

                handles += [sub.register_forward_pre_hook(pre), sub.register_forward_hook(post)]
    originals = {n: getattr(steps_mod, n) for n in ("sliced_loss", "decoder_io")}
    source = RowBatch.source

    def labelled(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with record_function(label):
                return fn(*args, **kwargs)
        return call

    steps_mod.sliced_loss = labelled("output softmax + loss", originals["sliced_loss"])  # type: ignore[assignment]
    steps_mod.decoder_io = labelled("data (collation in step)", originals["decoder_io"])  # type: ignore[assignment]
    RowBatch.source = labelled("data (collation in step)", source)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for n, fn in originals.items():
            setattr(steps_mod, n, fn)
        RowBatch.source = source  # type: ignore[method-assign]


def profile_step(module: torch.nn.Module, batch: RowBatch, opt: torch.optim.Optimizer) -> dict[str, float]:
    """Milliseconds of one (already warmed-up) training step per category; `step` is the total."""
    with _ranges(module), profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        with record_function("forward"):
            loss, _ = module(batch, 0.1)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        total = time.perf_counter() - t
    ms = {e.key: e.cpu_time_total / 1000 for e in prof.key_averages()}
    parts = [*FORWARD_PARTS, "output softmax + loss", "data (collation in step)"]
    out = {k: ms.get(k, 0.0) for k in parts}
    out["other forward (norms, residuals, masks)"] = max(0.0, ms.get("forward", 0.0) - sum(out.values()))
    out["backward"] = ms.get("backward", 0.0)
    out["optimizer"] = ms.get("optimizer", 0.0)
    out["step"] = total * 1000
    return out


def interleave(variants: dict[str, StepFn], *, steps: int, rounds: int) -> dict[str, float]:
    """Median seconds per step of each variant, timed A B C A B C ... (`steps` per turn)."""
    for fn in variants.values():
        fn()  # warm-up (and compile, where a variant compiles)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            for _ in range(steps):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def padding(lengths: list[dict[str, int]], rows: int) -> dict[str, float]:
    """Share of padded decoder positions, per target modality, for batches of `rows` rows.

    `total`: rows sorted by total row length (the store pipeline's bucketing key) and cut
    into batches; `per_target`: sorted by that modality's own length (bucketing per direction)."""
    def pad_share(order: list[dict[str, int]], m: str) -> float:
        pad = real = 0
        for i in range(0, len(order), rows):
            chunk = [r[m] + 1 for r in order[i:i + rows]]
            pad += max(chunk) * len(chunk) - sum(chunk)
            real += sum(chunk)
        return pad / (pad + real)

    by_total = sorted(lengths, key=lambda r: sum(r.values()))
    out: dict[str, float] = {}
    for m in lengths[0]:
        out[f"{m}: total"] = pad_share(by_total, m)
        out[f"{m}: per_target"] = pad_share(sorted(lengths, key=lambda r: r[m]), m)
    return out


def _ddp_worker(rank: int, world: int, port: int, model_cfg: Any, vocab: Any, batch: RowBatch,
                steps: int, rounds: int, out: Any) -> None:
    """One rank of `ddp_seconds`: its share of the batch's rows, one thread, gloo all-reduce."""
    # the benchmark's own step, imported here because training.py imports this module
    from training import make_step, tuned

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = list(range(rank, len(batch), world))
        mine = RowBatch(ids=[batch.ids[i] for i in rows], seqs={m: [v[i] for i in rows] for m, v in batch.seqs.items()})
        step = make_step(tuned(1), model_cfg, vocab, mine, wrap=DistributedDataParallel)
        step()  # warm-up
        times = []
        for _ in range(rounds):
            dist.barrier()
            t = time.perf_counter()
            for _ in range(steps):
                step()
            dist.barrier()
            times.append((time.perf_counter() - t) / steps)
        if rank == 0:
            out.put(statistics.median(times))
    finally:
        dist.destroy_process_group()


def ddp_seconds(model_cfg: Any, vocab: Any, batch: RowBatch, *, world: int = 2, steps: int, rounds: int) -> float:
    """Median seconds per step of the tuned step run as `world` DDP processes of one thread each
    over gloo (what `torchrun --nproc-per-node 2 -m tmt train --set train.threads=1` does on
    CPU), each rank taking every `world`-th row so that one step covers the same batch.

    Not interleaved with the other variants: its processes take every core while they run."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = random.randint(20000, 40000)
    procs = [ctx.Process(target=_ddp_worker, args=(r, world, port, model_cfg, vocab, batch, steps, rounds, out))
             for r in range(world)]
    for p in procs:
        p.start()
    try:
        secs = float(out.get(timeout=3600))
    finally:
        for p in procs:
            p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"a DDP benchmark rank failed (exit codes {[p.exitcode for p in procs]})")
    return secs
