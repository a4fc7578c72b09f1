"""The architecture config of the tmt model and its named presets (tiny, demo, small, base, paper)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tmt.core.errors import TmtError


class ModelError(TmtError):
    """A model directory or checkpoint is missing, malformed or incompatible."""


@dataclass(kw_only=True)
class TmtModelConfig:
    """Architecture of the tmt encoder-decoder (vocabulary size comes from vocab.json)."""

    model_dim: int = 256
    """Width of embeddings and hidden states (d_model)."""
    num_encoder_layers: int = 4
    """Number of encoder layers."""
    num_decoder_layers: int = 4
    """Number of decoder layers."""
    num_heads: int = 4
    """Attention heads per layer (model_dim must be divisible by it)."""
    ffn_inner_dim: int = 1024
    """Inner width of the feed-forward blocks."""
    dropout_p: float = 0.1
    """Dropout on embeddings and residual branches."""
    attention_dropout_p: float = 0.0
    """Dropout on attention weights."""
    ffn_inner_dropout_p: float = 0.0
    """Dropout after the feed-forward activation."""
    max_seq_len: int = 1024
    """Longest encoder input or decoder input (tokens, including <eos>/<bos>)."""
    norm_order: Literal["pre", "post"] = "pre"
    """Layer-norm placement: `pre` (stable, the default) or `post` (original Transformer)."""
    pos_encoding: Literal["sinusoidal", "learned"] = "sinusoidal"
    """Positional encoding: fixed sinusoids or a learned table of max_seq_len rows."""
    activation: Literal["relu", "gelu"] = "relu"
    """Feed-forward activation."""
    modality_embedding: bool = True
    """Add the modality-type embedding (text/speech/image/neutral) on encoder and decoder inputs."""
    null_source_prob: float = 0.0
    """Fraction of image-target training examples whose source is replaced by a null source
    (`<bos:src> <eos>`), so the model also learns p(image) for classifier-free guidance; the
    scenes recipes use 0.1. Saved with the model: only a model trained with > 0 accepts
    `--guidance`."""

    def validate(self) -> None:
        if self.model_dim % self.num_heads:
            raise ModelError(f"model_dim {self.model_dim} is not divisible by num_heads {self.num_heads}")
        for name in ("model_dim", "num_encoder_layers", "num_decoder_layers", "num_heads", "ffn_inner_dim", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ModelError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.null_source_prob < 1.0:
            raise ModelError(f"model.null_source_prob must be in [0, 1), got {self.null_source_prob}")


PRESETS: dict[str, Callable[[], TmtModelConfig]] = {}


def preset(fn: Callable[[], TmtModelConfig]) -> Callable[[], TmtModelConfig]:
    """Register `fn` under its own name as an architecture preset."""
    PRESETS[fn.__name__] = fn
    return fn


@preset
def tiny() -> TmtModelConfig:
    """Unit tests: d 32, 2+2 layers."""
    config = demo()
    config.model_dim = 32
    config.ffn_inner_dim = 64
    config.dropout_p = 0.0
    config.max_seq_len = 512
    return config


@preset
def demo() -> TmtModelConfig:
    """The scenes demo: trains on 2 CPU cores in about 10-15 minutes."""
    return TmtModelConfig(model_dim=128, num_encoder_layers=2, num_decoder_layers=2, ffn_inner_dim=512)


@preset
def small() -> TmtModelConfig:
    """Several million parameters for CPU runs: d 256, 3+3 layers, ffn 1024, 4 heads.

    About 5.5M parameters besides the embedding (scenes vocabularies add ~1-2M). d 256 is the
    smallest width whose matmuls reach about half of a 2-core CPU's measured matmul peak in a
    training step (benchmarks/training.py); d 128 stays near a third."""
    return TmtModelConfig(model_dim=256, num_encoder_layers=3, num_decoder_layers=3, ffn_inner_dim=1024)


@preset
def base() -> TmtModelConfig:
    """12+12 layers, d 768, 12 heads."""
    config = demo()
    config.model_dim = 768
    config.num_encoder_layers = config.num_decoder_layers = 12
    config.num_heads = 12
    config.ffn_inner_dim = 3072
    return config


@preset
def paper() -> TmtModelConfig:
    """The paper's model: 12+12 layers, d 1024, ffn 4096, 16 heads.

    With the paper's vocabulary (38930 ids incl. specials) this is 392.6M parameters
    (tied embedding 39.9M, encoder 151M, decoder 201M); the paper's "~270M" does not
    fit these sizes."""
    config = base()
    config.model_dim = 1024
    config.num_heads = 16
    config.ffn_inner_dim = 4096
    return config


def get_preset(name: str) -> TmtModelConfig:
    """The named architecture preset (tiny, demo, small, base, paper)."""
    if name not in PRESETS:
        raise ModelError(f"unknown model preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
