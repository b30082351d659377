"""Counter-based random numbers: Philox4x32-10 in NumPy.

This is the reference generator of the whole framework (dropout masks, initialisers): it needs no
native code, and it matches the C and CUDA generator (csrc/include/flexcore/philox.h) bit for bit,
so every backend draws the same numbers for the same (seed, salt, element).

Element j (its global index: ``offset`` plus its flat C-order position) of the stream
(seed, salt) is built from the block

    philox4x32_10(counter=(j_lo, j_hi, salt_lo, salt_hi), key=(seed_lo, seed_hi)) = (w0, w1, w2, w3)

as ``(w0 >> 8) * 2**-24`` for float32 and ``((w0 << 32 | w1) >> 11) * 2**-53`` for float64, both
exact and in [0, 1). No state is kept: any slice of a stream can be drawn alone, and a new ``salt``
(a layer id, a time step) gives an independent stream under the same seed.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["philox4x32_10", "philox_uniform"]

_M0 = np.uint64(0xD2511F53)  # round multipliers
_M1 = np.uint64(0xCD9E8D57)
_W0 = 0x9E3779B9  # Weyl key increments
_W1 = 0xBB67AE85
_ROUNDS = 10
_MASK32 = np.uint64(0xFFFFFFFF)
_INT64_MAX = 2**63 - 1
_CHUNK = 1 << 16  # elements per pass, to bound the uint64 temporaries to a few MB


def _blocks(c0, c1, c2, c3, key0: int, key1: int):
    """Philox4x32-10 on counters held as uint64 arrays (values < 2**32); returns the four words."""
    k0, k1 = key0, key1
    for round_ in range(_ROUNDS):
        if round_ > 0:  # the key is bumped between rounds, so the first round uses it as given
            k0 = (k0 + _W0) & 0xFFFFFFFF
            k1 = (k1 + _W1) & 0xFFFFFFFF
        p0 = _M0 * c0  # < 2**64: a 32x32-bit product cannot overflow uint64
        p1 = _M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0),
            p1 & _MASK32,
            (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1),
            p0 & _MASK32,
        )
    return c0, c1, c2, c3


def philox4x32_10(counter: np.ndarray | Sequence[int], key: Sequence[int]) -> np.ndarray:
    """Philox4x32-10 blocks: 32-bit ``counter`` words (..., 4), ``key`` (2,) -> uint32 (..., 4)."""
    ctr = np.asarray(counter, dtype=np.uint64)
    if ctr.shape[-1:] != (4,) or np.any(ctr > 0xFFFFFFFF):
        raise ValueError("counter must have shape (..., 4) and 32-bit words")
    key0, key1 = (operator.index(k) for k in key)
    if not (0 <= key0 <= 0xFFFFFFFF and 0 <= key1 <= 0xFFFFFFFF):
        raise ValueError("key must be two 32-bit words")
    words = _blocks(ctr[..., 0], ctr[..., 1], ctr[..., 2], ctr[..., 3], key0, key1)
    return np.stack(words, axis=-1).astype(np.uint32)


def _u64(name: str, value: int) -> int:
    value = operator.index(value)
    if not 0 <= value < 2**64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value


def philox_uniform(
    seed: int,
    salt: int,
    shape: int | Sequence[int],
    dtype: npt.DTypeLike = np.float32,
    offset: int = 0,
) -> np.ndarray:
    """Uniforms in [0, 1) of the Philox stream (seed, salt), elements offset .. offset + size - 1.

    ``seed`` and ``salt`` are 64-bit unsigned integers; ``dtype`` float32 or float64. Equal to the
    native ``flexcore._flexcore.philox_uniform`` (and to the C ``fc_philox_uniform_*``) bit for bit.
    """
    seed, salt = _u64("seed", seed), _u64("salt", salt)
    shape = (
        tuple(map(operator.index, shape))
        if isinstance(shape, Sequence)
        else (operator.index(shape),)
    )
    if any(dim < 0 for dim in shape):
        raise ValueError(f"shape must not be negative, got {shape}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    size = math.prod(shape)
    offset = operator.index(offset)
    if offset < 0 or size > _INT64_MAX - offset:
        raise ValueError(
            f"need offset >= 0 and offset + size < 2**63; got offset={offset}, size={size}"
        )

    out = np.empty(size, dtype=dtype)
    key0, key1 = seed & 0xFFFFFFFF, seed >> 32
    salt_lo = np.uint64(salt & 0xFFFFFFFF)
    salt_hi = np.uint64(salt >> 32)
    for start in range(0, size, _CHUNK):
        stop = min(start + _CHUNK, size)
        j = np.arange(offset + start, offset + stop, dtype=np.uint64)
        w0, w1, _, _ = _blocks(j & _MASK32, j >> np.uint64(32), salt_lo, salt_hi, key0, key1)
        if dtype == np.float32:
            # A 24-bit integer times a power of two: exact, as in C.
            out[start:stop] = (w0 >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)
        else:
            bits = (w0 << np.uint64(32)) | w1
            out[start:stop] = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return out.reshape(shape)
