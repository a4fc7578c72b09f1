"""Batches for training and validation, read from token stores with fairseq2's data pipeline.

One example is one store row: every modality it has, as joint ids (the store's
tokenizer-local ids plus `JointVocab.to_joint`'s offset). A batch is a list of
rows with similar total length (length bucketing with fairseq2's
`bucket_by_length`, lengths read from the `.idx` files alone). The trainer
then builds the six directions from one batch: each source modality is
encoded once and decoded into the others (`RowBatch.direction`).

Back-translated rows name their generated modalities (`synthetic_modalities` in
the row's metadata). One rule: a synthetic modality is a source only, never a
target. So a generated image never teaches *->image, and two generated sides of
one row (text and speech both generated from its image) are never paired,
because one of them would be the target. The reader counts the pairs this drops.

Several stores are mixed with `DataPipeline.sample` by weight (e.g. real data
1.0, back-translated 0.5). Training pipelines run forever, each store in a fresh
permutation per pass (`EpochOrder`); `state_dict()` / `load_state_dict()` restore
the exact position, so a resumed run sees the same batches.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fairseq2.data.data_pipeline import DataPipeline, read_sequence
from fairseq2.nn import BatchLayout
from torch import Tensor

from tmt.core.modality import ALL_DIRECTIONS, MODALITIES, parse_direction
from tmt.core.modality import parse_directions as core_parse_directions
from tmt.store import StoreError
from tmt.store.token_store import TokenStore
from tmt.vocab import BOS, EOS, PAD, JointVocab, row_voice

log = logging.getLogger(__name__)


def parse_directions(names: Sequence[str] | str) -> list[str]:
    """Validate and normalise a direction list ('i2t,s2t' or a list) to short names in the canonical order."""
    return [d.short for d in core_parse_directions(names, error=StoreError)]


@dataclass
class StoreSpec:
    """A token store and its sampling weight."""

    path: str
    weight: float = 1.0


def parse_store_spec(spec: str) -> StoreSpec:
    """'PATH' or 'PATH=WEIGHT' (the text after the last '=' must be a number)."""
    path, sep, w = spec.rpartition("=")
    if sep:
        try:
            weight = float(w)
        except ValueError:
            return StoreSpec(spec, 1.0)
        if weight <= 0:
            raise StoreError(f"store weight must be > 0, got '{spec}'")
        return StoreSpec(path, weight)
    return StoreSpec(spec, 1.0)


# --------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------
@dataclass
class DirectionBatch:
    """Tensors of one direction: encoder input, decoder input and targets (joint ids)."""

    source: Tensor
    """(N, S) `x1..xn <eos>`, right-padded with <pad>."""
    source_lens: list[int]
    target_in: Tensor
    """(N, T) `<bos:tgt> y1..ym`."""
    target_out: Tensor
    """(N, T) `y1..ym <eos>`, pad=0."""
    target_lens: list[int]

    @property
    def source_layout(self) -> BatchLayout:
        return BatchLayout.of(self.source, self.source_lens)

    @property
    def target_layout(self) -> BatchLayout:
        return BatchLayout.of(self.target_in, self.target_lens)


def pad_stack(seqs: Sequence[Tensor], pad: int = PAD) -> Tensor:
    """Right-pad 1-d sequences into (N, max_len)."""
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=pad)


def encoder_input(seqs: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
    """`x1..xn <eos>` per row, padded -> ((N, S), lengths)."""
    eos = torch.tensor([EOS], dtype=torch.long)
    full = [torch.cat([s.long(), eos]) for s in seqs]
    return pad_stack(full), [len(s) for s in full]


def decoder_io(
    seqs: Sequence[Tensor], modality: str, prefixes: Sequence[Sequence[int]] | None = None
) -> tuple[Tensor, Tensor, list[int]]:
    """Decoder input `<bos:m> p.. y1..ym` and target `<pad>.. y1..ym <eos>`, padded, and their lengths.

    `prefixes` (one per row, e.g. `[voice token]` for speech) are given tokens: they are in the
    input, and their target positions are <pad>, so the loss never asks the model to predict them."""
    bos = torch.tensor([BOS[modality]], dtype=torch.long)
    eos = torch.tensor([EOS], dtype=torch.long)
    pre = [torch.tensor(list(p), dtype=torch.long) for p in prefixes] if prefixes else [bos[:0]] * len(seqs)
    ins = [torch.cat([bos, p, s.long()]) for p, s in zip(pre, seqs, strict=True)]
    outs = [torch.cat([torch.full_like(p, PAD), s.long(), eos]) for p, s in zip(pre, seqs, strict=True)]
    return pad_stack(ins), pad_stack(outs), [len(s) for s in ins]


@dataclass
class RowBatch:
    """Rows of one bucket: per modality, the joint-id sequence of each row (None: absent)."""

    ids: list[str]
    seqs: dict[str, list[Tensor | None]] = field(default_factory=dict)
    synthetic: list[list[str]] = field(default_factory=list)
    """Per row, its generated (back-translated) modalities: sources only, never targets (empty: none)."""
    voices: list[int] = field(default_factory=list)
    """Per row, the joint id of its speech's voice token (-1: none; empty list: no voices at all)."""

    def __len__(self) -> int:
        return len(self.ids)

    def is_target(self, modality: str, i: int) -> bool:
        """Row `i` has `modality` and it may be a target (it was not generated)."""
        if self.seqs[modality][i] is None:
            return False
        return not (self.synthetic and modality in self.synthetic[i])

    def rows_for(self, src: str, tgt: str) -> list[int]:
        """Rows that train src->tgt: the source present, the target present and real."""
        return [i for i in range(len(self.ids)) if self.seqs[src][i] is not None and self.is_target(tgt, i)]

    def rows_with(self, *modalities: str) -> list[int]:
        return [i for i in range(len(self.ids)) if all(self.seqs[m][i] is not None for m in modalities)]

    def source(self, modality: str, rows: Sequence[int]) -> tuple[Tensor, list[int]]:
        return encoder_input([self.seqs[modality][i] for i in rows])  # type: ignore[misc]

    def prefixes(self, tgt: str, rows: Sequence[int]) -> list[list[int]] | None:
        """The given tokens after `<bos:tgt>` of each row: its voice token for speech targets."""
        if tgt != "speech" or not self.voices:
            return None
        return [[self.voices[i]] if self.voices[i] >= 0 else [] for i in rows]

    def direction(self, src: str, tgt: str) -> DirectionBatch | None:
        """The batch of one direction (rows with both modalities, the target real), or None if there are none."""
        rows = self.rows_for(src, tgt)
        if not rows:
            return None
        s, sl = self.source(src, rows)
        ti, to, tl = decoder_io([self.seqs[tgt][i] for i in rows], tgt, self.prefixes(tgt, rows))  # type: ignore[misc]
        return DirectionBatch(s, sl, ti, to, tl)

    def num_tokens(self) -> int:
        return sum(len(x) for v in self.seqs.values() for x in v if x is not None)


def collate_rows(examples: list[dict[str, Any]]) -> dict[str, Any]:
    # [{"id": str, "key": Tensor, "text": Tensor|None, ...}] -> {"ids": [str], "text": [Tensor|None], ...}
    # (plain containers: the pipeline state, prefetch buffer included, must load with weights_only=True)
    out: dict[str, Any] = {"ids": [e["id"] for e in examples]}
    for m in MODALITIES:
        out[m] = [e.get(m) for e in examples]
    out["synthetic"] = [list(e.get("synthetic", [])) for e in examples]
    if any("voice" in e for e in examples):
        out["voice"] = [int(e.get("voice", -1)) for e in examples]
    return out


def to_row_batch(d: dict[str, Any]) -> RowBatch:
    synthetic = [list(x) for x in d.get("synthetic", [])]
    return RowBatch(
        ids=list(d["ids"]), seqs={m: list(d[m]) for m in MODALITIES}, synthetic=synthetic,
        voices=list(d.get("voice", [])),
    )


# --------------------------------------------------------------------------------------
# the reader
# --------------------------------------------------------------------------------------
def row_voices(store: TokenStore, vocab: JointVocab, path: str) -> np.ndarray:
    """Each row's voice token (joint id; -1: none), from the store meta's `voice` (or `tts`/`speaker`)
    field. Empty when the vocabulary lists no voices: then speech targets carry no voice token."""
    if not vocab.voices:
        return np.zeros(0, dtype=np.int64)
    out = np.full(len(store), -1, dtype=np.int64)
    unknown: set[str] = set()
    for i, meta in enumerate(store.iter_meta()):
        tok = vocab.voice_of_row(meta)
        if tok is not None:
            out[i] = tok
        elif (name := row_voice(meta)) is not None:
            unknown.add(name)
    if unknown:
        log.warning(
            "store %s: voices %s are not in vocab.json; their speech targets get no voice token",
            path, ", ".join(sorted(unknown)),
        )
    return out


def bucket_sizes(max_tokens: int, max_len: int) -> list[tuple[int, int]]:
    """(rows per batch, max row length) pairs with rows * length <= max_tokens.

    Like fairseq2's `create_bucket_sizes`, without its requirement that max_tokens be a
    multiple of the longest row (rows here are whole multimodal examples of any length)."""
    if max_len > max_tokens:
        raise StoreError(
            f"a row of {max_len} tokens does not fit in a batch of max_tokens={max_tokens}; raise "
            "data.max_tokens or lower model.max_seq_len"
        )
    out: list[tuple[int, int]] = []
    for length in range(1, max_len + 1):
        n = max_tokens // length
        if out and out[-1][0] == n:
            out[-1] = (n, length)
        else:
            out.append((n, length))
    return out


def synthetic_masks(store: TokenStore) -> dict[str, np.ndarray]:
    """Per modality, which rows carry it generated (`synthetic_modalities` in the row's metadata)."""
    masks: dict[str, np.ndarray] = {m: np.zeros(len(store), dtype=bool) for m in MODALITIES}
    for i, meta in enumerate(store.iter_meta()):
        for m in meta.get("synthetic_modalities") or ():
            if m in masks:
                masks[m][i] = True
    return masks


_LIVE_READERS: weakref.WeakSet[BatchReader] = weakref.WeakSet()


class EpochOrder:
    """Item `c` of an endless stream over one store's rows: (store k, row), each epoch a fresh
    permutation of the rows seeded by (seed, epoch).

    Written here instead of fairseq2's `shuffle(...).repeat()`: in fairseq2 0.8.1 a `repeat()`
    whose state is saved exactly when its inner pipeline is exhausted restores into a stream
    that yields nothing, so a checkpoint taken at an epoch boundary could not resume. A counter
    (`DataPipeline.count`) mapped through this class keeps the whole state in one integer, and a
    permutation of row indices costs 8 bytes per row, so every epoch is shuffled in full."""

    def __init__(self, k: int, rows: np.ndarray, *, seed: int) -> None:
        self.k = k
        self.rows = rows
        self.seed = seed
        self._epoch = -1
        self._perm = rows

    def __call__(self, c: int) -> tuple[int, int]:
        epoch, pos = divmod(int(c), len(self.rows))
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
            self._epoch = epoch
        return self.k, int(self._perm[pos])


@atexit.register
def _close_live_readers() -> None:
    # fairseq2n's own exit handler crashes (SIGSEGV) when a data pipeline is still alive at
    # interpreter shutdown; atexit hooks run before it, so drop every reader still open.
    for reader in list(_LIVE_READERS):
        reader.close()


class BatchReader:
    """Length-bucketed `RowBatch`es from one or more weighted token stores.

    `train=True`: sharded by `rank`, shuffled, repeated forever, stores mixed by weight.
    `train=False`: one deterministic pass (validation), sharded by `rank`.
    """

    def __init__(
        self,
        stores: Sequence[StoreSpec | str],
        vocab: JointVocab,
        *,
        directions: Sequence[str] = ALL_DIRECTIONS,
        max_tokens: int = 4096,
        max_seq_len: int = 1024,
        train: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 2,
        check_fingerprints: bool = True,
    ) -> None:
        specs = [parse_store_spec(s) if isinstance(s, str) else s for s in stores]
        if not specs:
            raise StoreError("no token store given (--store PATH)")
        self.vocab = vocab
        self.directions = parse_directions(list(directions))
        self.pairs = [parse_direction(d) for d in self.directions]
        self.max_seq_len = max_seq_len
        self.stores = [TokenStore(s.path) for s in specs]
        self.weights = [s.weight for s in specs]
        self.num_skipped = 0
        self.direction_rows: dict[str, int] = dict.fromkeys(self.directions, 0)
        """Rows (all ranks) that train each direction, summed over the stores."""
        self.dropped_pairs: dict[str, int] = dict.fromkeys(self.directions, 0)
        """(row, direction) pairs left out because the target was generated (synthetic)."""
        self._keys: list[np.ndarray] = []
        self._ok: list[dict[str, np.ndarray]] = []
        self._synth: list[dict[str, np.ndarray]] = []
        self._voices: list[np.ndarray] = []
        indices, max_key = self._select_rows(specs, check_fingerprints, rank, world_size)
        self.num_rows = sum(len(i) for i in indices)
        self.max_tokens = max(max_tokens, max_key)
        if max_tokens < max_key:
            log.warning("data.max_tokens %d < the longest row (%d tokens); using %d", max_tokens, max_key, max_key)
        self.pipeline = self._build_pipeline(
            indices, bucket_sizes(self.max_tokens, max_key), train=train,
            seed=seed, rank=rank, prefetch=prefetch,
        )
        _LIVE_READERS.add(self)

    # ---- setup helpers ---------------------------------------------------------
    def _select_rows(
        self, specs: Sequence[StoreSpec], check_fingerprints: bool, rank: int, world_size: int
    ) -> tuple[list[np.ndarray], int]:
        """Each store's usable rows for this rank, and the longest bucketing key among them."""
        indices: list[np.ndarray] = []
        max_key = 1
        for spec, store in zip(specs, self.stores, strict=True):
            self._check_store(spec.path, store, check_fingerprints)
            usable, keys, ok = self._usable_rows(store)
            self._keys.append(keys)
            self._ok.append(ok)
            self._voices.append(row_voices(store, self.vocab, spec.path))
            mine = usable[rank::world_size]
            if len(mine) == 0:
                raise StoreError(
                    f"store {spec.path} has no rows usable for directions {','.join(self.directions)} "
                    f"on rank {rank} of {world_size} ({len(usable)} usable rows in all)"
                )
            indices.append(mine)
            max_key = max(max_key, int(keys[usable].max()))
        return indices, max_key

    def _build_pipeline(
        self, indices: list[np.ndarray], sizes: list[tuple[int, int]], *, train: bool,
        seed: int, rank: int, prefetch: int,
    ) -> DataPipeline:
        """The fairseq2 pipeline: (store, row) items, mixed or concatenated, loaded, bucketed, collated."""
        pipes = []
        for k, idx in enumerate(indices):
            if train:
                # count() never ends; the repeat() only marks the stream infinite, which
                # DataPipeline.sample needs (it yields nothing when every input is pseudo-infinite)
                b = DataPipeline.count(start=0).repeat().map(EpochOrder(k, idx, seed=seed + 1000 * k + rank))
            else:
                b = read_sequence([(k, int(i)) for i in idx])  # -> (store k, row i)
            pipes.append(b.and_return())
        if train:
            builder = DataPipeline.sample(pipes, weights=self.weights, seed=seed + 7 + rank)
        else:
            builder = DataPipeline.concat(pipes)
        builder = builder.map(self._load_row)  # -> {"id", "key": (L,), "text"/"speech"/"image": (n,) | None}
        builder = builder.bucket_by_length(sizes, selector="key", drop_remainder=False)  # -> [example, ...]
        builder = builder.map(collate_rows)  # -> {"ids": [...], "text": [Tensor | None, ...], ...}
        if prefetch > 0:
            builder = builder.prefetch(prefetch)
        return builder.and_return()

    def _check_store(self, path: str, store: TokenStore, check_fingerprints: bool) -> None:
        if check_fingerprints:
            self.vocab.check_fingerprints(
                {m: fp for m, fp in store.fingerprints.items() if m in MODALITIES}, what=f"store {path}"
            )
        for m in MODALITIES:
            if m in store.streams and m in self.vocab.sizes:
                have, want = store.vocab_sizes[m], self.vocab.sizes[m]
                if have > want:
                    raise StoreError(
                        f"store {path}: {m} vocabulary size {have} exceeds vocab.json's {want}; "
                        "the store was made by a different tokenizer (rebuild vocab.json or re-tokenize)"
                    )
        if not store.complete:
            log.warning("store %s is not marked complete (tokenization still running or interrupted?)", path)

    def _usable_rows(self, store: TokenStore) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Rows with at least one enabled direction (both sides present and short enough),
        and each row's bucketing key (its total length over the usable modalities)."""
        n = len(store)
        skipped = 0
        ok: dict[str, np.ndarray] = {}
        total = np.zeros(n, dtype=np.int64)
        for m in MODALITIES:
            if m in store.streams and self.vocab.sizes.get(m, 0) > 0:
                lens = store.lengths(m)
                extra = 2 if m == "speech" and self.vocab.voices else 1  # <eos> or <bos> (+ the voice token)
                fits = (lens > 0) & (lens + extra <= self.max_seq_len)
                skipped += int(((lens > 0) & ~fits).sum())
                ok[m] = fits
                total += np.where(fits, lens + 1, 0)
            else:
                ok[m] = np.zeros(n, dtype=bool)
        synth = synthetic_masks(store)
        self._synth.append(synth)
        usable = np.zeros(n, dtype=bool)
        for d, (src, tgt) in zip(self.directions, self.pairs, strict=True):
            both = ok[src] & ok[tgt]
            trains = both & ~synth[tgt]  # a generated modality is a source only
            usable |= trains
            self.direction_rows[d] += int(trains.sum())
            self.dropped_pairs[d] += int((both & synth[tgt]).sum())
        if any(synth[m].any() for m in MODALITIES):
            log.info("%s: %d synthetic rows; pairs left out with a generated target: %s", store.root,
                     int(np.logical_or.reduce([synth[m] for m in MODALITIES]).sum()),
                     " ".join(f"{d} {self.dropped_pairs[d]}" for d in self.directions) or "none")
        self.num_skipped += skipped
        if skipped:
            log.warning(
                "%s: %d sequences longer than model.max_seq_len-1 (%d) are left out",
                store.root, skipped, self.max_seq_len - 1,
            )
        return np.flatnonzero(usable), np.maximum(total, 1), ok

    def _load_row(self, item: tuple[int, int]) -> dict[str, Any]:
        k, i = item
        store, ok, synth = self.stores[k], self._ok[k], self._synth[k]
        ex: dict[str, Any] = {"id": f"{k}:{store.meta(i)['id']}" if len(self.stores) > 1 else str(store.meta(i)["id"])}
        for m in MODALITIES:
            if ok[m][i]:
                ex[m] = torch.from_numpy(self.vocab.to_joint(m, store.tokens(i, m)))
            else:
                ex[m] = None
        ex["synthetic"] = [m for m in MODALITIES if synth[m][i]]
        if self.vocab.voices:
            ex["voice"] = int(self._voices[k][i])
        ex["key"] = torch.empty(int(self._keys[k][i]), dtype=torch.int8)  # length only, for bucketing
        return ex

    # ---- iteration and state -----------------------------------------------------
    def __iter__(self) -> Iterator[RowBatch]:
        for d in self.pipeline:
            yield to_row_batch(d)

    def state_dict(self) -> dict[str, Any]:
        return self.pipeline.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pipeline.reset()
        self.pipeline.load_state_dict(state)

    def reset(self) -> None:
        self.pipeline.reset()

    def close(self) -> None:
        """Drop the pipeline now. fairseq2n's exit handler can crash on a pipeline still
        alive at interpreter shutdown (seen with 0.8.1), so owners should close readers."""
        import gc

        self.pipeline = None  # type: ignore[assignment]
        gc.collect()

    def __enter__(self) -> BatchReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
