"""Philox4x32-10: the numpy reference (flexcore.random) against Random123's known answers, the
native generator against the numpy one bit for bit, and a statistical sanity check."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flexcore.random import philox4x32_10, philox_uniform

# Random123 tests/kat_vectors, the "philox4x32 10" lines: counter[4] key[2] -> result[4].
KAT = """
philox4x32 10 00000000 00000000 00000000 00000000 00000000 00000000   6627e8d5 e169c58d bc57ac4c 9b00dbd8
philox4x32 10 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff   408f276d 41c83b0e a20bc7c6 6d5451fd
philox4x32 10 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0   d16cfe09 94fdcceb 5001e420 24126ea1
"""  # noqa: E501  (verbatim lines of kat_vectors)
KAT_VECTORS = [[int(w, 16) for w in line.split()[2:]] for line in KAT.strip().splitlines()]

SEEDS = [0, 1, 2**32 - 1, 2**32, 0xDEADBEEFCAFEF00D, 2**64 - 1]
SALTS = [0, 7, 2**33 + 5, 2**64 - 1]
OFFSETS = [0, 1, 2**32 - 3, 2**62]  # 2**32 - 3: the counter's high word changes mid-array


@pytest.mark.parametrize("vector", KAT_VECTORS, ids=["zeros", "ones", "pi"])
def test_known_answers(vector):
    counter, key, want = vector[:4], vector[4:6], vector[6:]
    np.testing.assert_array_equal(philox4x32_10(counter, key), np.array(want, dtype=np.uint32))


def test_blocks_vectorise():
    counters = np.array([v[:4] for v in KAT_VECTORS], dtype=np.uint32)
    got = philox4x32_10(counters[:1].repeat(5, axis=0), KAT_VECTORS[0][4:6])
    assert got.shape == (5, 4) and (got == np.array(KAT_VECTORS[0][6:], np.uint32)).all()


def test_stream_layout():
    """Element j of stream (seed, salt) is the block of counter (j_lo, j_hi, salt_lo, salt_hi)."""
    seed, salt, j = 0x0123456789ABCDEF, 0xFEDCBA9876543210, 2**40 + 17
    w = philox4x32_10(
        [j & 0xFFFFFFFF, j >> 32, salt & 0xFFFFFFFF, salt >> 32], [seed & 0xFFFFFFFF, seed >> 32]
    )
    f32 = philox_uniform(seed, salt, 1, np.float32, offset=j)[0]
    f64 = philox_uniform(seed, salt, 1, np.float64, offset=j)[0]
    assert f32 == np.float32(int(w[0]) >> 8) * np.float32(2.0**-24)
    assert f64 == ((int(w[0]) << 32 | int(w[1])) >> 11) * 2.0**-53


def test_kat_through_native(native):
    """The all-zero known answer is element 0 of stream (0, 0) in the native generator."""
    w0, w1 = KAT_VECTORS[0][6:8]
    assert native.philox_uniform(0, 0, 0, 1, np.float32)[0] == (w0 >> 8) * 2.0**-24
    assert native.philox_uniform(0, 0, 0, 1, np.float64)[0] == ((w0 << 32 | w1) >> 11) * 2.0**-53


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("seed", "salt", "offset"), list(itertools.product(SEEDS, SALTS, OFFSETS))[::3]
)
def test_native_equals_numpy(native, seed, salt, offset, dtype):
    want = philox_uniform(seed, salt, 1000, dtype, offset=offset)
    got = native.philox_uniform(seed, salt, offset, 1000, dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_native_equals_numpy_long(native):
    n = 3 * 65536 + 11  # several numpy chunks and a ragged end
    for dtype in (np.float32, np.float64):
        want = philox_uniform(99, 3, n, dtype, offset=5)
        np.testing.assert_array_equal(native.philox_uniform(99, 3, 5, n, dtype), want)


def test_offset_continues_the_stream():
    whole = philox_uniform(5, 6, 200, np.float64)
    np.testing.assert_array_equal(philox_uniform(5, 6, 50, np.float64, offset=120), whole[120:170])
    np.testing.assert_array_equal(philox_uniform(5, 6, (10, 20), np.float64).ravel(), whole)


def test_float32_is_float64_truncated():
    f32 = philox_uniform(11, 12, 10000, np.float32)
    f64 = philox_uniform(11, 12, 10000, np.float64)
    np.testing.assert_array_equal(f32.astype(np.float64), np.floor(f64 * 2**24) / 2**24)


def test_statistics():
    n = 1_000_000
    u = philox_uniform(2024, 1, n, np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 1e-3
    counts = np.bincount((u * 16).astype(int), minlength=16)
    expected = n / 16
    assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected))
    other_salt = philox_uniform(2024, 2, n, np.float64)
    assert abs(np.corrcoef(u, other_salt)[0, 1]) < 0.01
    neighbours = np.corrcoef(u[:-1], u[1:])[0, 1]
    assert abs(neighbours) < 0.01


def test_float32_never_reaches_one():
    u = philox_uniform(0, 0, 100_000, np.float32)
    assert u.max() < 1.0 and u.min() >= 0.0


def test_argument_checks():
    with pytest.raises(ValueError, match="seed"):
        philox_uniform(-1, 0, 3)
    with pytest.raises(ValueError, match="salt"):
        philox_uniform(0, 2**64, 3)
    with pytest.raises(ValueError, match="dtype"):
        philox_uniform(0, 0, 3, np.int32)
    with pytest.raises(ValueError, match="shape"):
        philox_uniform(0, 0, (2, -1))
    with pytest.raises(ValueError, match="offset"):
        philox_uniform(0, 0, 3, offset=2**63 - 2)
    assert philox_uniform(0, 0, 0).shape == (0,)


def test_native_argument_checks(native):
    with pytest.raises(ValueError, match="offset"):
        native.philox_uniform(0, 0, 2**63 - 2, 3)
    with pytest.raises(ValueError, match="offset"):
        native.philox_uniform(0, 0, 0, -1)
    with pytest.raises(ValueError, match="dtype"):
        native.philox_uniform(0, 0, 0, 3, np.float16)
    with pytest.raises(TypeError):
        native.philox_uniform(-1, 0, 0, 3)
    assert native.philox_uniform(0, 0, 0, 0).shape == (0,)
