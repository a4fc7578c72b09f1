"""Training configuration (`tmt train`): dataclasses, presets and `config.yaml` round trip."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from tmt import TmtError
from tmt.config import Spelling
from tmt.core.budget import MAX_MINUTES_KEY, check_max_minutes
from tmt.core.modality import ALL_DIRECTIONS
from tmt.models.config import PRESETS, TmtModelConfig, get_preset


@dataclass(kw_only=True)
class DataConfig:
    """Which token stores to read and how to batch them."""

    vocab: str = ""
    """Path of the joint vocabulary (vocab.json); stores must match its fingerprints."""
    stores: list[str] = field(default_factory=list)
    """Training stores, each `PATH` or `PATH=WEIGHT` (sampling weight, default 1), e.g. `data/bt=0.5`."""
    valid_stores: list[str] = field(default_factory=list)
    """Validation stores (one pass each validation; loss and accuracy per direction)."""
    directions: list[str] = field(default_factory=lambda: list(ALL_DIRECTIONS))
    """Directions trained: some of i2t,i2s,t2i,s2i,s2t,t2s."""
    direction_weighting: Literal["uniform", "temperature", "fixed"] = "uniform"
    """Loss weight of each direction (`tmt.training.weights`): uniform (all 1), temperature
    (p_d ∝ n_d^(1/T), n_d = training rows of direction d) or fixed (direction_weights); mean 1."""
    temperature: float = 5.0
    """T of `direction_weighting=temperature` (1: proportional to the rows, large: uniform)."""
    direction_weights: dict[str, float] = field(default_factory=dict)
    """Weights of `direction_weighting=fixed`, e.g. {t2i: 2.0, i2t: 0.5}; unnamed directions 1."""
    direction_phases: list[str] = field(default_factory=list)
    """Schedule before the full mixture: `STEPS:DIRS` entries in order, DIRS a comma list or
    `topK` (the K directions with most rows), e.g. ["1000:top2"] = steps 1-1000 only those."""
    stop_patience: int = 0
    """Per-direction early stopping: a direction whose validation CE has not reached a new low
    for this many validations in a row stops training (weight 0, not computed) for the rest of
    the run, and the others go on; with best_per_direction its best checkpoint is kept. 0: never."""
    max_tokens: int = 4096
    """Tokens per batch and process (rows * their longest total length, all modalities)."""
    shuffle_window: int = 10_000
    """Unused, kept so that older config.yaml files load: training reads every store in a fresh
    full permutation per epoch (`tmt.store.pipeline.EpochOrder`, 8 bytes per row)."""
    prefetch: int = 2
    """Batches prepared ahead in a background thread."""


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW, learning-rate schedule, clipping, accumulation, loss."""

    lr: float = 5e-4
    """Peak learning rate (after warm-up)."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and norms)."""
    schedule: Literal["cosine", "inverse_sqrt", "constant"] = "cosine"
    """Decay after warm-up: cosine to min_lr_ratio*lr at max_steps, inverse square root, or none."""
    warmup_steps: int = 1000
    """Linear warm-up steps from 0 to lr."""
    min_lr_ratio: float = 0.0
    """Final learning rate of the cosine schedule, as a fraction of lr."""
    clip_norm: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    grad_accum: int = 1
    """Batches accumulated per optimizer step."""
    label_smoothing: float = 0.1
    """Label smoothing over the target modality's slice (the paper: 0.1)."""
    adamw_impl: Literal["default", "foreach", "fused"] = "fused"
    """AdamW kernel: `fused` (one kernel per parameter group; the fastest on CPU), `default`
    (torch's choice, the path before issue 20: a per-parameter loop on CPU, foreach on GPU) or
    `foreach` (multi-tensor). Same updates within float rounding (benchmarks/training.py)."""


@dataclass(kw_only=True)
class TrainConfig:
    """Everything `tmt train` needs besides the experiment directory; written to config.yaml."""

    preset: str = "demo"
    """The preset this config started from (informational)."""
    model: TmtModelConfig = field(default_factory=TmtModelConfig)
    """Model architecture."""
    data: DataConfig = field(default_factory=DataConfig)
    """Stores and batching."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    max_steps: int = 10_000
    """Optimizer steps in total (the schedule runs to here)."""
    max_minutes: float | None = None
    """Wall-clock training budget, set as `--set train.max_minutes=N` like every training loop
    (`tmt.core.budget`): None = no limit; > 0 = stop (validating and saving first) after that many
    minutes of training, counting the minutes of earlier runs resumed with `--resume`; 0 is the
    deprecated spelling of None. Pair it with `optim.schedule=inverse_sqrt`, whose decay does not
    depend on max_steps."""
    valid_every: int = 500
    """Validate every N steps (and at the end) when valid stores are given."""
    save_every: int = 500
    """Write a checkpoint every N steps (and at the end)."""
    keep_last: int = 3
    """Checkpoints kept besides the best one."""
    average_last: int = 0
    """At the end of training, `model.pt` becomes the mean of the weights of the last N step
    checkpoints (checkpoint averaging, as fairseq's `average_checkpoints.py`), and `average.json`
    names the steps; keep_last must be >= N. 0: `model.pt` is the checkpoint best on validation
    (or the last). Per-direction best models are not averaged. `--resume` of a finished run with
    `--set average_last=N` averages without training."""
    best_per_direction: bool = False
    """Also keep each direction's own best model: `best/<direction>/` (model.pt, vocab.json,
    config.yaml, best.json), written whenever that direction's validation CE is the lowest so
    far, and loadable by `tmt translate -m`. The top-level `model.pt` stays the checkpoint best
    on the mean over directions. Costs one model file per direction; not with FSDP."""
    log_every: int = 50
    """Log training loss/accuracy per direction every N steps."""
    seed: int = 0
    """Seed for initialisation, shuffling and dropout."""
    device: str = "auto"
    """`auto` (cuda if available, else cpu), `cpu`, `cuda` or `cuda:N`."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Autocast dtype: auto = bfloat16 on a GPU with bf16 units (Ampere on), float32 on older GPUs and on
    CPU (at the model sizes a CPU trains, bf16 is slower even with bf16 units)."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism under torchrun: DDP, or FSDP (shards parameters; for `paper`)."""
    plot: bool = True
    """Write curves.png (training/validation curves) at each validation and at the end."""
    num_threads: int = 0
    """torch CPU threads per process (0: torch's default)."""
    image_code_init: float = 0.0
    """Share w (0..1) of the image tokenizer's code geometry in the initial image-token embeddings
    (`tmt.training.code_init`): each image code's row starts as sqrt(1-w^2) * random + w * a random
    projection of the code's features (FSQ levels, VQ codebook vector). 0 (the default): random rows.
    Fresh runs only: `--init-from` and `--resume` bring their own rows."""
    image_tokenizer: str | None = None
    """The image tokenizer directory `image_code_init` reads (default: the path vocab.json recorded);
    its fingerprint must match the vocabulary's."""
    speech_code_init: float = 0.0
    """The same for speech units, from the speech tokenizer's k-means centroids (each feature dimension
    standardised). 0 (the default; not yet measured against random rows)."""
    speech_tokenizer: str | None = None
    """The speech tokenizer directory `speech_code_init` reads (default: the path vocab.json recorded)."""

    def __post_init__(self) -> None:
        self.max_minutes = check_max_minutes(self.max_minutes, MAX_MINUTES_KEY)

    def validate(self) -> None:
        self.model.validate()
        if self.max_steps < 1:
            raise TmtError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.optim.grad_accum < 1:
            raise TmtError(f"optim.grad_accum must be >= 1, got {self.optim.grad_accum}")
        if not 0 <= self.optim.label_smoothing < 1:
            raise TmtError(f"optim.label_smoothing must be in [0, 1), got {self.optim.label_smoothing}")
        for key in ("image_code_init", "speech_code_init"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise TmtError(f"{key} must be in [0, 1], got {getattr(self, key)}")
        if self.data.temperature <= 0:
            raise TmtError(f"data.temperature must be > 0, got {self.data.temperature}")
        for n in ("valid_every", "save_every", "log_every"):
            if getattr(self, n) < 1:
                raise TmtError(f"{n} must be >= 1")
        if self.average_last < 0:
            raise TmtError(f"average_last must be >= 0 (0: no averaging), got {self.average_last}")
        if self.average_last > self.keep_last:
            raise TmtError(f"average_last={self.average_last} needs that many kept checkpoints, but keep_last is "
                           f"{self.keep_last}: add --set keep_last={self.average_last}")


SPELLINGS = (
    Spelling(key=MAX_MINUTES_KEY, field="max_minutes", old="max_minutes"),
    Spelling(key="train.threads", field="num_threads", old="num_threads"),
)
"""`--set train.max_minutes` and `--set train.threads` (the spellings the vocoder's loop uses too)
set the top-level fields; `--set max_minutes` and `--set num_threads` still work, with a
deprecation warning."""


def train_preset(name: str) -> TrainConfig:
    """A full training config for a named preset (model preset + matching optimisation)."""
    if name not in PRESETS:
        raise TmtError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    cfg = TrainConfig(preset=name, model=get_preset(name))
    if name == "tiny":
        return replace(
            cfg, max_steps=150, valid_every=50, save_every=50, log_every=25,
            data=DataConfig(max_tokens=1024), optim=OptimConfig(lr=1e-2, warmup_steps=10, weight_decay=0.0),
        )
    if name == "demo":
        return replace(
            cfg, max_steps=2000, valid_every=250, save_every=250, log_every=50,
            data=DataConfig(max_tokens=4096), optim=OptimConfig(lr=1e-3, warmup_steps=200),
        )
    if name == "small":
        return replace(
            cfg, max_steps=4000, valid_every=250, save_every=250, log_every=50,
            data=DataConfig(max_tokens=4096), optim=OptimConfig(lr=7e-4, warmup_steps=400),
        )
    if name == "base":
        return replace(
            cfg, max_steps=100_000, valid_every=2000, save_every=2000, log_every=100,
            data=DataConfig(max_tokens=8192), optim=OptimConfig(lr=5e-4, warmup_steps=4000),
        )
    # paper
    return replace(
        cfg, max_steps=300_000, valid_every=5000, save_every=5000, log_every=100,
        data=DataConfig(max_tokens=8192), optim=OptimConfig(lr=5e-4, warmup_steps=4000),
    )
