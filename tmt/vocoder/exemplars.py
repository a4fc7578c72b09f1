"""Exemplar envelopes for unit-world: real WORLD frames of the training speech, chosen by unit context.

A regression network averages what a unit sounds like over every context it was heard in,
and the average of many spectral envelopes is a muffled one. Unit selection keeps them real:
for every unit occurrence in the training speech, its envelope and aperiodicity frames are
resampled to `points` frames of normalised time, and the first `segments` occurrences of
each context are averaged into one template. Contexts back off from the most specific,

    (voice, previous unit, unit, next unit) -> (voice, previous, unit) -> (voice, unit, next)
        -> (voice, unit) -> (unit),

so a unit is always found once it was heard at all. At synthesis each unit's template is
stretched to its duration; pitch and voicing still come from the network. On the `full` scenes
corpus with 1000 MFCC units, a 20-minute fit speaks 100 `test` rows at 35.5% judge WER (originals
25.5%); on the quick corpus, after 510 steps, 36.2% on `valid` against 49.5% for the network's own
envelope (docs/results.md, session 12). The table is data, not weights: it is built before the
first step and travels in the vocoder's safetensors as two buffers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tmt.vocoder.data import Utterance

LEVELS = 5
"""Context levels, most specific first (see the module docstring)."""


def context_keys(units: np.ndarray, voice: int, num_units: int, num_voices: int) -> np.ndarray:
    """(n, LEVELS) int64: each unit's key at every context level. `voice` is a voice id (0 for a
    vocoder without voices); a missing neighbour counts as unit `num_units`."""
    u = np.asarray(units, dtype=np.int64)
    edge = num_units
    prev = np.concatenate([[edge], u[:-1]]) if len(u) else u
    nxt = np.concatenate([u[1:], [edge]]) if len(u) else u
    base, nv = num_units + 1, num_voices + 1
    e = np.full_like(u, edge)
    v = np.full_like(u, voice)
    rows = [(v, prev, u, nxt), (v, prev, u, e), (v, e, u, nxt), (v, e, u, e), (np.full_like(u, num_voices), e, u, e)]
    keys = [(((level * nv + vv) * base + p) * base + x) * base + q for level, (vv, p, x, q) in enumerate(rows)]
    return np.stack(keys, axis=1)


def resample_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """(m, D) -> (n, D): linear interpolation over normalised time (m, n >= 1)."""
    if len(frames) == 1:
        return np.repeat(frames, n, axis=0)
    t = np.linspace(0.0, len(frames) - 1, n)
    lo = np.floor(t).astype(np.int64)
    hi = np.minimum(lo + 1, len(frames) - 1)
    w = (t - lo)[:, None].astype(frames.dtype)
    return frames[lo] * (1 - w) + frames[hi] * w


@dataclass(frozen=True)
class ExemplarTable:
    """Templates by context key: `keys` (n,) int64 sorted, `templates` (n, points, D) float16."""

    keys: np.ndarray
    templates: np.ndarray


def build_exemplars(utts: Sequence[Utterance], feats: Mapping[str, np.ndarray], *, columns: slice,
                    per_frame: int, num_units: int, num_voices: int, points: int, segments: int,
                    max_keys: int) -> ExemplarTable:
    """The table from the training rows and their raw WORLD features (`tmt.vocoder.world.analyse`
    layout; `columns` picks the streams kept). Each context averages its first `segments`
    occurrences in corpus order; beyond `max_keys`, the contexts heard least often are dropped
    (the voice and unit levels are always kept, so every heard unit stays reachable)."""
    keys, segs = [], []
    for u in utts:
        f = feats[u.id][:, columns]
        keys.append(context_keys(u.units, u.voice_id, num_units, num_voices))
        start = 0
        for d in u.durations.tolist():
            seg = f[start * per_frame : (start + d) * per_frame]
            start += d
            segs.append(resample_frames(seg if len(seg) else f[-1:], points))
    all_keys = np.concatenate(keys)
    all_segs = np.stack(segs).astype(np.float32)
    out_keys, out_tpl, counts, levels = [], [], [], []
    for level in range(LEVELS):
        k = all_keys[:, level]
        order = np.argsort(k, kind="stable")
        ks = k[order]
        starts = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]]))
        n = np.diff(np.concatenate([starts, [len(ks)]]))
        rank = np.arange(len(ks)) - np.repeat(starts, n)
        keep = order[rank < segments]
        sums = np.add.reduceat(all_segs[keep], np.concatenate([[0], np.cumsum(np.minimum(n, segments))[:-1]]), axis=0)
        out_keys.append(ks[starts])
        out_tpl.append(sums / np.minimum(n, segments)[:, None, None])
        counts.append(n)
        levels.append(np.full(len(starts), level))
    keys_cat, tpl, cnt, lev = (np.concatenate(x) for x in (out_keys, out_tpl, counts, levels))
    if len(keys_cat) > max_keys:
        priority = np.where(lev >= LEVELS - 2, np.iinfo(np.int64).max, cnt)  # voice and unit levels first
        chosen = np.sort(np.argsort(-priority, kind="stable")[:max_keys])
        keys_cat, tpl = keys_cat[chosen], tpl[chosen]
    order = np.argsort(keys_cat)
    return ExemplarTable(keys_cat[order], tpl[order].astype(np.float16))


def exemplar_frames(table: ExemplarTable, units: np.ndarray, durations: np.ndarray, voice: int,
                    fallback: np.ndarray, *, per_frame: int, num_units: int, num_voices: int) -> np.ndarray:
    """One utterance's (sum(durations) * per_frame, D) float32 frames: each unit's most specific
    template stretched to its duration; a unit never heard in training keeps its `fallback` rows
    (the network's prediction, same shape)."""
    keys = context_keys(units, voice, num_units, num_voices)
    pos = np.clip(np.searchsorted(table.keys, keys), 0, max(len(table.keys) - 1, 0))
    found: np.ndarray = table.keys[pos] == keys if len(table.keys) else np.zeros(keys.shape, dtype=bool)
    out = np.array(fallback, dtype=np.float32, copy=True)
    heard = np.asarray(found.any(axis=1), dtype=bool)
    tpl_of = pos[np.arange(len(keys)), found.argmax(axis=1)]  # the most specific heard level per unit
    # every output frame at once: its unit, and its place on that unit's template (as `resample_frames`)
    n = np.asarray(durations, dtype=np.int64) * per_frame
    unit = np.repeat(np.arange(len(n)), n)
    i = np.arange(len(unit)) - np.repeat(np.cumsum(n) - n, n)
    points = table.templates.shape[1]
    t = np.where(n[unit] > 1, i * (points - 1) / np.maximum(n[unit] - 1, 1), 0.0)
    lo = np.minimum(np.floor(t).astype(np.int64), points - 1)
    hi = np.minimum(lo + 1, points - 1)
    w = (t - lo)[:, None].astype(np.float32)
    take = heard[unit]
    if take.any():
        rows, lo, hi, w = tpl_of[unit][take], lo[take], hi[take], w[take]
        tpl = table.templates
        out[take] = tpl[rows, lo].astype(np.float32) * (1 - w) + tpl[rows, hi].astype(np.float32) * w
    return out
