"""WORLD's random numbers: its `randn` (12 uniforms of its xorshift128 generator, summed, minus 6) from the seed.

WORLD draws this fixed sequence in synthesis (the aperiodic excitation) and in D4C (a safeguard noise on
every window), restarting it at each call; `tmt.vocoder.world_synth` and `tmt.vocoder.world_d4c` need it
value for value to give pyworld's results. The generator is one 32-bit step at a time in C; here many
lanes run together, each started at its place in the sequence by a GF(2) jump (xorshift128 is linear
over GF(2)), so a million values cost a few numpy passes. Written here because no library exposes it.
"""

from __future__ import annotations

import math

import numpy as np

_SEED = (123456789, 362436069, 521288629, 88675123)
_sums = np.zeros(0, dtype=np.uint32)


def _step(x: np.ndarray, y: np.ndarray, z: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """One xorshift128 step on uint32 arrays."""
    t = x ^ (x << np.uint32(11))
    return y, z, w, (w ^ (w >> np.uint32(19))) ^ (t ^ (t >> np.uint32(8)))


def _to_bits(words: np.ndarray) -> np.ndarray:
    """(n, 4) uint32 states -> (n, 128) float 0/1 bits, word-major, low bit first."""
    return np.unpackbits(words.astype("<u4").view(np.uint8), axis=1, bitorder="little").astype(np.float64)


def _from_bits(bits: np.ndarray) -> np.ndarray:
    """Inverse of `_to_bits`."""
    packed = np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u4").astype(np.uint32)


def _jump_matrix(steps: int) -> np.ndarray:
    """(128, 128) GF(2) matrix M with bits(state `steps` later) = bits(state) @ M (xorshift128 is linear)."""
    units = np.zeros((128, 4), dtype=np.uint32)
    units[np.arange(128), np.arange(128) // 32] = np.uint32(1) << (np.arange(128) % 32).astype(np.uint32)
    power = _to_bits(np.stack(_step(*units.T), axis=1))
    out = np.eye(128)
    while steps:
        if steps & 1:
            out = out @ power % 2
        power, steps = power @ power % 2, steps >> 1
    return out


def _generate(count: int) -> np.ndarray:
    """The first `count` (rounded up) of WORLD's `randn` values as their uint32 sums of 12 28-bit uniforms.
    Lanes start `span` generator steps apart (jumped to by bit matrices) and step together."""
    lanes = int(np.clip(2 ** round(math.log2(math.sqrt(12 * count + 1))), 256, 8192))
    span = 12 * -(-count // lanes)
    states = _to_bits(np.array([_SEED], dtype=np.uint32))
    jump = _jump_matrix(span)
    while len(states) < lanes:  # lanes k..2k-1 are lanes 0..k-1 jumped k spans
        states = np.concatenate([states, states @ jump % 2])
        jump = jump @ jump % 2
    x, y, z, w = _from_bits(states[:lanes]).T.copy()
    out = np.empty((lanes, span // 12), dtype=np.uint32)
    block = np.empty((120, lanes), dtype=np.uint32)
    for start in range(0, span, 120):
        n = min(120, span - start)
        for i in range(n):
            x, y, z, w = _step(x, y, z, w)
            block[i] = w
        out[:, start // 12 : (start + n) // 12] = (block[:n] >> np.uint32(4)).reshape(n // 12, 12, lanes).sum(
            axis=1, dtype=np.uint32).T
    return out.reshape(-1)


def randn_sums(count: int) -> np.ndarray:
    """The uint32 sums behind the first `count` values of WORLD's `randn` (cached and grown per process)."""
    global _sums
    if count > len(_sums):
        _sums = _generate(max(count, 2 * len(_sums), 1 << 16))
    return _sums[:count]


RANDN_SCALE = 1.0 / 268435456.0
"""WORLD's `randn` is `RANDN_SCALE` x (its uint32 sum of 12 28-bit uniforms) - `RANDN_OFFSET`."""
RANDN_OFFSET = 6.0


def _randn(sums: np.ndarray) -> np.ndarray:
    """WORLD's `randn` values from their uint32 sums (exact in float64)."""
    return sums * RANDN_SCALE - RANDN_OFFSET


def world_randn(count: int, start: int = 0) -> np.ndarray:
    """`count` values of WORLD's `randn` sequence from position `start` (0: its seed's first), float64."""
    return _randn(randn_sums(start + count)[start:])
