"""Back-translation and pivot pairs: fill the missing modalities of partial data.

The paper pre-trains on paired data, then lets the intermediate model translate
uni-modal data (images alone; speech+text without images) into pseudo pairs and
trains further on real + pseudo data. Here that is a reproducible stage:

* images only            -> text and speech generated from the image
* speech + text          -> image generated from the text (or the speech)
* speech + image, no text -> text generated from the image: the pivot that lets a
  corpus without transcripts train speech->text through images
* any other partial row  -> each missing modality from the first present source
  in `source_preference`

The output is a token store in the usual format whose rows are marked
`synthetic: true` with the generating checkpoint, the direction(s) used, the
modalities that are synthetic, and the scores. Work is sharded (`--shard k/N`,
contiguous input ranges merged with `tmt manifest merge-parts`) and resumable:
progress is saved in the same atomic index write as each shard of output.
"""

from __future__ import annotations

import hashlib
import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tmt.core.errors import TmtError
from tmt.core.modality import MODALITIES, check_modality
from tmt.core.shards import parse_shard_spec, part_dir, shard_range
from tmt.store.token_store import (
    DURATION_VOCAB,
    TokenStore,
    TokenStoreWriter,
)
from tmt.vocab import row_voice

log = logging.getLogger(__name__)


class BacktranslateError(TmtError):
    """Back-translation cannot run with the given inputs or settings."""


def _default_preference() -> dict[str, list[str]]:
    return {"text": ["image", "speech"], "speech": ["text", "image"], "image": ["text", "speech"]}


@dataclass(kw_only=True)
class BacktranslateConfig:
    """How pseudo targets are generated, filtered and capped."""

    strategy: Literal["beam", "sample"] = "beam"
    """`beam` search (the n best become the pseudo targets) or `sample` (n independent samples)."""
    beam_size: int = 5
    """Beam width for `beam`."""
    num_per_source: int = 1
    """Pseudo targets per source row (each becomes its own synthetic row)."""
    top_p: float = 0.9
    """Nucleus mass for `sample`."""
    temperature: float = 1.0
    """Sampling temperature for `sample`."""
    round_trip_threshold: float | None = None
    """Keep a pseudo target only if translating it back scores the original source at least
    this mean log-probability per token (None: no filter)."""
    max_ratio: float | None = None
    """Cap on synthetic:real rows (needs the real row count); None: no cap."""
    source_preference: dict[str, list[str]] = field(default_factory=_default_preference)
    """For each missing modality, the present modalities to generate it from, in order."""
    batch_size: int = 16
    """Source rows decoded together."""
    chunk_rows: int = 256
    """Input rows per saved step of progress (one output shard each)."""
    seed: int = 0
    """Seed for sampling and for choosing rows under `max_ratio`. Sampling draws from one random
    generator per chunk of rows (seeded from this seed, the direction, the round and the chunk's
    first row), so a resumed run repeats the samples of an uninterrupted one."""
    image_sampling: bool = True
    """Image pseudo targets are sampled (`num_per_source` rounds, top_k / top_p / temperature)
    whatever `strategy` says, since beam search gives blank images; false: they follow `strategy`."""
    top_k: int = 0
    """Sample from the k most likely tokens (0: use top_p)."""
    guidance: float = 0.0
    """Classifier-free guidance scale for sampled image targets (0: off; needs a model trained
    with null sources, see `GenerationConfig.guidance`)."""
    rerank: int = 0
    """Sampled image targets: keep the best of this many candidates by forward + reverse score
    (0: off, see `GenerationConfig.rerank`)."""
    rerank_forward: float = 1.0
    """Weight of the forward score in reranking (see `GenerationConfig.rerank_forward`)."""
    rerank_align: float = 0.0
    """Weight of the image tokenizer's caption alignment in reranking image targets (see
    `GenerationConfig.rerank_align`; image-aligned cards only)."""
    voice: str | None = None
    """Voice of pseudo speech targets, for a model trained with voice tokens (None: vocab.json's
    default); the synthetic rows record it, so training on them gives the same voice token."""

    def check(self) -> None:
        if self.num_per_source < 1:
            raise BacktranslateError(f"num_per_source must be >= 1, got {self.num_per_source}")
        if self.strategy == "beam" and self.num_per_source > self.beam_size:
            raise BacktranslateError(
                f"num_per_source ({self.num_per_source}) cannot exceed beam_size ({self.beam_size}) with beam search"
            )
        if self.guidance < 0 or self.rerank < 0 or self.top_k < 0:
            raise BacktranslateError(
                f"guidance, rerank and top_k must be >= 0 (0: off), got {self.guidance}, {self.rerank}, {self.top_k}"
            )
        if self.max_ratio is not None and self.max_ratio <= 0:
            raise BacktranslateError(f"max_ratio must be > 0, got {self.max_ratio}")
        for tgt, srcs in self.source_preference.items():
            for m in (tgt, *srcs):
                check_modality(m, "modality in source_preference", error=BacktranslateError)


def plan_row(present: Sequence[str], available: Sequence[str], preference: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """{missing modality: source modality} for one row; `available` are the model's modalities."""
    plan: dict[str, str] = {}
    for tgt in available:
        if tgt in present:
            continue
        for src in preference.get(tgt, []):
            if src in present:
                plan[tgt] = src
                break
    return plan


def checkpoint_id(model_dir: str | Path) -> str:
    """A short id of the generating weights (sha256 of model.pt) and where they were."""
    p = Path(model_dir) / "model.pt"
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{Path(model_dir).name}@{h.hexdigest()[:12]}"


def _image_len(store: TokenStore, translator: Any) -> int | None:
    if "image" in store.streams:
        lens = store.lengths("image")
        lens = lens[lens > 0]
        if lens.size:
            return int(lens[0])
    if translator.config.image_len:
        return int(translator.config.image_len)
    try:
        return int(translator.tokenizer("image").tokens_per_image)
    except TmtError:
        return None


def _select_rows(n: int, cfg: BacktranslateConfig, real_rows: int | None) -> np.ndarray:
    """Input rows to use: all, or a seeded subset under the synthetic:real cap."""
    rows = np.arange(n)
    if cfg.max_ratio is None:
        return rows
    if real_rows is None:
        raise BacktranslateError("max_ratio needs the number of real rows (give --real-store)")
    cap_inputs = math.floor(cfg.max_ratio * real_rows / cfg.num_per_source)
    if cap_inputs >= n:
        return rows
    rng = np.random.default_rng(cfg.seed)
    return np.sort(rng.permutation(n)[:cap_inputs])


def backtranslate(
    model_dir: str | Path,
    input_store: str | Path,
    out_store: str | Path,
    config: BacktranslateConfig | None = None,
    *,
    translator: Any = None,
    real_rows: int | None = None,
    shard: str | None = None,
    input_part: tuple[int, int] | None = None,
    resume: bool = True,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the missing modalities of every row of `input_store` into `out_store`.

    With `shard="k/N"` this worker takes a contiguous k-th part of the input rows and
    writes `part_dir(out_store, k, N)`. With `input_part=(k, N)` the input store is
    already worker k's part (e.g. tokenized from a manifest with `--shard k/N`): every
    row of it is used and the output goes to the same part directory.

    Returns counts: inputs seen, rows written, pseudo targets generated and filtered
    per direction.
    """
    from tmt.generation import Translator

    cfg = config or BacktranslateConfig()
    cfg.check()
    if translator is None:
        translator = Translator.from_checkpoint(model_dir, device=device)
    vocab = translator.vocab
    store = TokenStore(input_store)
    vocab.check_fingerprints({m: fp for m, fp in store.fingerprints.items() if m in MODALITIES}, what="input store")
    available: list[str] = [m for m in MODALITIES if vocab.sizes.get(m)]
    generator = _make_generator(cfg, translator, store)
    k, n_shards, mine = _rows_of_worker(len(store), cfg, real_rows, shard, input_part)
    target = part_dir(out_store, k, n_shards) if n_shards > 1 else Path(out_store)
    ckpt = checkpoint_id(model_dir)
    stats: dict[str, Any] = {"inputs": 0, "rows_written": 0, "skipped_complete": 0, "generated": {}, "filtered": {}}
    writer = _open_writer(
        target, vocab, available, input_store, ckpt, f"{k}/{n_shards}", cfg, resume=resume, overwrite=overwrite
    )
    if writer.complete:
        log.info("%s is already complete; nothing to do", target)
        return stats | {"rows_written": writer.rows_done, "already_complete": True}
    _write_chunks(store, mine, generator, cfg, available, ckpt, writer, stats)
    stats["inputs"] = len(mine)
    stats["rows_written"] = writer.rows_done
    stats["store"] = str(target)
    return stats


class _Generators:
    """The generator of each target: image targets sample (unless told otherwise), the others
    follow `strategy`. `model` / `vocab` are the shared model's."""

    def __init__(self, default: Any, image: Any) -> None:
        self.default = default
        self.image = image
        self.model = default.model
        self.vocab = default.vocab
        self.voice_token = default.voice_token  # the voice speech targets get (None: no voices)

    def for_target(self, tgt: str) -> Any:
        return self.image if tgt == "image" else self.default


def _make_generator(cfg: BacktranslateConfig, translator: Any, store: TokenStore) -> _Generators:
    """The Generators that sample (or beam-search) the pseudo targets."""
    from tmt.generation import GenerationConfig
    from tmt.generation.generator import Generator

    def make(strategy: str, image: bool) -> Any:
        gen_cfg = GenerationConfig(
            strategy=strategy,
            beam_size=cfg.beam_size if strategy == "beam" else 1,
            nbest=cfg.num_per_source if strategy == "beam" else 1,
            top_k=cfg.top_k, top_p=cfg.top_p, temperature=cfg.temperature, seed=cfg.seed,
            batch_size=cfg.batch_size,
            guidance=cfg.guidance if image else 0.0, rerank=cfg.rerank if image else 0,
            rerank_forward=cfg.rerank_forward, rerank_align=cfg.rerank_align if image else 0.0, voice=cfg.voice,
        )
        gen = Generator(translator.model, translator.vocab, gen_cfg, image_len=_image_len(store, translator))
        if gen_cfg.rerank_align > 0:  # image targets only, and only with rerank (the config refuses it alone)
            gen.aligner = translator.caption_aligner()
        return gen

    default = make(cfg.strategy, False)
    return _Generators(default, make("sample" if cfg.image_sampling else cfg.strategy, True))


def _rows_of_worker(
    n_rows: int, cfg: BacktranslateConfig, real_rows: int | None, shard: str | None, input_part: tuple[int, int] | None
) -> tuple[int, int, np.ndarray]:
    """(k, N, the input row indices worker k of N translates)."""
    if input_part is not None:
        if shard is not None:
            raise BacktranslateError("give either shard or input_part, not both")
        k, n_shards = input_part
        return k, n_shards, _select_rows(n_rows, cfg, None if real_rows is None else real_rows // n_shards)
    k, n_shards = parse_shard_spec(shard)
    selected = _select_rows(n_rows, cfg, real_rows)
    part = shard_range(len(selected), k, n_shards)
    return k, n_shards, selected[part.start : part.stop]


def _open_writer(
    target: Path, vocab: Any, available: Sequence[str], input_store: str | Path, ckpt: str, shard: str,
    cfg: BacktranslateConfig, *, resume: bool, overwrite: bool,
) -> TokenStoreWriter:
    """The output store's writer; its `source` records the input, checkpoint, shard and settings."""
    streams = {m: vocab.sizes[m] for m in available}
    if "speech" in streams:
        streams["durations"] = DURATION_VOCAB
    settings: dict[str, Any] = {
        "strategy": cfg.strategy, "num_per_source": cfg.num_per_source,
        "round_trip_threshold": cfg.round_trip_threshold, "max_ratio": cfg.max_ratio, "seed": cfg.seed,
        "image_sampling": cfg.image_sampling, "guidance": cfg.guidance, "rerank": cfg.rerank,
    }
    if cfg.rerank_forward != 1.0:  # recorded when set: stores of earlier runs still resume
        settings["rerank_forward"] = cfg.rerank_forward
    if cfg.rerank_align != 0.0:
        settings["rerank_align"] = cfg.rerank_align
    source = {"backtranslate": str(Path(input_store).resolve()), "checkpoint": ckpt, "shard": shard, "config": settings}
    return TokenStoreWriter(
        target, streams=streams, fingerprints=vocab.fingerprints(),
        tokenizers={m: {"name": t.name, "fingerprint": t.fingerprint} for m, t in vocab.tokenizers.items()},
        source=source, resume=resume, overwrite=overwrite, shard_rows=1 << 30,
    )


def _write_chunks(
    store: TokenStore, mine: np.ndarray, generator: Any, cfg: BacktranslateConfig, available: list[str], ckpt: str,
    writer: TokenStoreWriter, stats: dict[str, Any],
) -> None:
    """Translate the rows chunk by chunk from where the writer stopped; close the store (abort on failure)."""
    from tmt.core.progress import progress as bar

    start = int(writer.progress.get("inputs_done", 0))
    try:
        chunks = range(start, len(mine), cfg.chunk_rows)
        for c0 in bar(chunks, total=len(chunks), desc="back-translate", unit="chunk"):
            rows = [store[int(i)] for i in mine[c0 : c0 + cfg.chunk_rows]]
            _translate_chunk(rows, generator, cfg, available, ckpt, writer, stats)
            writer.flush({"inputs_done": min(c0 + cfg.chunk_rows, len(mine))})
        writer.close()
    except BaseException:
        writer.abort()
        raise


Candidate = tuple[np.ndarray, float, float | None] | None
"""One pseudo target: (tokens, score, round-trip score), or None when the round-trip filter dropped it."""


def _translate_chunk(
    rows: list[Any],
    generator: Any,
    cfg: BacktranslateConfig,
    available: list[str],
    ckpt: str,
    writer: TokenStoreWriter,
    stats: dict[str, Any],
) -> None:
    """Generate the missing modalities of a chunk of rows and write the synthetic rows."""
    plans = [plan_row(r.meta.get("modalities", []), available, cfg.source_preference) for r in rows]
    outputs = _pseudo_targets(rows, plans, generator, cfg, stats)
    for row, plan, out in zip(rows, plans, outputs, strict=True):
        if not plan:
            stats["skipped_complete"] += 1
            continue
        for kk in range(cfg.num_per_source):
            made = _synthetic_row(row, plan, out, kk, writer, ckpt, _voice_name(generator))
            if made is not None:
                writer.add(*made)


def _voice_name(generator: Any) -> str | None:
    """The name of the voice the generator gives speech targets (None: the vocabulary has no voices)."""
    tok = getattr(generator, "voice_token", None)
    return None if tok is None else str(generator.vocab.voices[tok - generator.vocab.voice_offset])


def _pseudo_targets(
    rows: list[Any], plans: list[dict[str, str]], generator: Any, cfg: BacktranslateConfig, stats: dict[str, Any]
) -> list[dict[str, list[Candidate]]]:
    """outputs[row][tgt]: the pseudo targets k = 0.. of each row, one direction at a time."""
    outputs: list[dict[str, list[Candidate]]] = [{} for _ in rows]
    pairs = sorted({(src, tgt) for p in plans for tgt, src in p.items()})
    for src, tgt in pairs:
        idx = [i for i, p in enumerate(plans) if p.get(tgt) == src]
        sources = [rows[i].tokens[src] for i in idx]
        names = [rows[i].id for i in idx]
        direction = f"{src}->{tgt}"
        per_row: list[list[Any]] = [[] for _ in idx]
        gen = generator.for_target(tgt)
        sampled = gen.config.strategy == "sample" or gen.config.rerank > 0
        for r in range(cfg.num_per_source if sampled else 1):
            if sampled:  # one stream per chunk, direction and round: resumed runs repeat it
                gen.config.seed = cfg.seed + zlib.crc32(f"{direction}|{r}|{names[0]}".encode())
            results = gen.generate(sources, src, [tgt], names=names)
            for j, res in enumerate(results):
                per_row[j].extend(res[tgt][: cfg.num_per_source])
        for j, i in enumerate(idx):
            kept: list[Candidate] = []
            for hyp in per_row[j][: cfg.num_per_source]:
                rt = None
                if cfg.round_trip_threshold is not None:
                    rt = round_trip_score(generator.model, generator.vocab, hyp.tokens, tgt, sources[j], src,
                                          voice=_known_voice(generator.vocab, rows[i].meta))
                    if rt < cfg.round_trip_threshold:
                        stats["filtered"][direction] = stats["filtered"].get(direction, 0) + 1
                        kept.append(None)
                        continue
                kept.append((hyp.tokens, float(hyp.score), rt))
                stats["generated"][direction] = stats["generated"].get(direction, 0) + 1
            outputs[i][tgt] = kept
    return outputs


def _synthetic_row(
    row: Any, plan: dict[str, str], out: dict[str, list[Candidate]], kk: int, writer: TokenStoreWriter, ckpt: str,
    voice: str | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """(meta, tokens) of synthetic row `kk` of `row`: its real streams plus the k-th pseudo targets;
    None when every pseudo target was filtered."""
    tokens: dict[str, np.ndarray] = {m: row.tokens[m] for m in row.meta.get("modalities", []) if m in writer.streams}
    if "speech" in tokens and "durations" in writer.streams and "durations" in row.tokens and len(row.tokens["durations"]):
        tokens["durations"] = row.tokens["durations"]
    made: dict[str, str] = {}
    scores: dict[str, float] = {}
    rts: dict[str, float] = {}
    for tgt, src in plan.items():
        cand = out.get(tgt, [])
        if kk < len(cand) and cand[kk] is not None:
            toks, score, rt = cand[kk]  # type: ignore[misc]
            tokens[tgt] = toks
            made[tgt] = src
            scores[tgt] = round(score, 4)
            if rt is not None:
                rts[tgt] = round(rt, 4)
    if not made:
        return None
    meta = {
        k: v for k, v in row.meta.items() if k not in ("id", "modalities", "lengths", "synthetic")
    } | {
        "id": f"{row.id}-bt{kk}",
        "source_id": row.id,
        "synthetic": True,
        "synthetic_modalities": sorted(made),
        "direction": ",".join(f"{s}->{t}" for t, s in sorted(made.items())),
        "checkpoint": ckpt,
        "scores": scores,
    }
    if rts:
        meta["round_trip"] = rts
    if "speech" in made and voice is not None:
        meta["voice"] = voice  # the voice token the pseudo speech was generated with
    return meta, tokens


def round_trip_score(
    model: Any, vocab: Any, synthetic: np.ndarray, synth_modality: str, original: np.ndarray, orig_modality: str,
    *, voice: str | None = None,
) -> float:
    """Mean log p(original | synthetic) per token under teacher forcing (restricted softmax); an
    original speech is scored with its own `voice` token (None: the default voice)."""
    from tmt.generation.scoring import forced_logprobs

    src = vocab.to_joint(synth_modality, synthetic)
    tgt = vocab.to_joint(orig_modality, original)
    return float(forced_logprobs(model, [src], [tgt], orig_modality, voice=voice)[0, 0])


def _known_voice(vocab: Any, meta: dict[str, Any]) -> str | None:
    """The row's voice when the vocabulary lists it (else None: the default voice)."""
    name = row_voice(meta)
    return name if name is not None and name in vocab.voices else None


def count_real_rows(stores: Sequence[str | Path]) -> int:
    """Rows not marked synthetic in the given stores."""
    n = 0
    for s in stores:
        n += sum(1 for m in TokenStore(s).iter_meta() if not m.get("synthetic"))
    return n
