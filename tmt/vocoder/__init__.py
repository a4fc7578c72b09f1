"""Unit vocoders: deduplicated speech units -> 16 kHz waveforms (DESIGN section 9).

Everything about them lives here, as `tmt.models` + `tmt.training` serve the translator:

    config.py          VocoderConfig and its sections, the preset registry, checks
    duration.py        duration predictor, rounding to whole frames, unit expansion
    nets.py            HiFi-GAN generator, MPD/MSD discriminators, unit-mel regressor, losses, build_model
    mel.py             log-mel analysis, Griffin-Lim inversion, mel distance
    world.py           WORLD analysis (F0, V/UV, coded envelope, band aperiodicity), its sharded cache, synthesis
    world_net.py       the unit-world network (unit -> WORLD parameters), its targets, loss and waveforms
    synthesis.py       UnitVocoder, save/load of vocoder directories, the tokenizer fingerprint check
    data.py            training rows: store units + manifest wavs, random segments
    train.py           the training loop (checkpoints, resume, samples)
    fairseq_import.py  fairseq / speech-resynthesis unit HiFi-GAN checkpoints -> vocoder directories
    testing.py         synthetic unit corpora for tests and benchmarks

The judge-based evaluation (`evaluate_vocoder`) lives in `tmt.evaluation.vocoder`.
"""

from __future__ import annotations

from tmt.core.audio import FRAME_HOP, SAMPLE_RATE
from tmt.vocoder.config import (
    PRESETS,
    DiscriminatorConfig,
    DurationConfig,
    GeneratorConfig,
    LossConfig,
    MelConfig,
    TrainConfig,
    UnitMelConfig,
    VocoderConfig,
    VocoderError,
    WorldConfig,
    check_config,
    preset,
    resolve_config,
    tiny_config,
)
from tmt.vocoder.data import AudioCache, Utterance, collect_utterances
from tmt.vocoder.mel import GriffinLimInverter, LogMel, mel_distance
from tmt.vocoder.nets import build_model
from tmt.vocoder.synthesis import (
    UnitVocoder,
    check_vocoder_fingerprint,
    load_vocoder,
    read_store_units,
    read_unit_lines,
    save_vocoder,
    speech_tokenizer_record,
    write_wav,
)
from tmt.vocoder.train import CHECKPOINT, train_vocoder

__all__ = [
    "CHECKPOINT",
    "FRAME_HOP",
    "PRESETS",
    "SAMPLE_RATE",
    "AudioCache",
    "DiscriminatorConfig",
    "DurationConfig",
    "GeneratorConfig",
    "GriffinLimInverter",
    "LogMel",
    "LossConfig",
    "MelConfig",
    "TrainConfig",
    "UnitMelConfig",
    "UnitVocoder",
    "Utterance",
    "VocoderConfig",
    "VocoderError",
    "WorldConfig",
    "build_model",
    "check_config",
    "check_vocoder_fingerprint",
    "collect_utterances",
    "load_vocoder",
    "mel_distance",
    "preset",
    "read_store_units",
    "read_unit_lines",
    "resolve_config",
    "save_vocoder",
    "speech_tokenizer_record",
    "tiny_config",
    "train_vocoder",
    "write_wav",
]
