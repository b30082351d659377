"""The emulator's own guarantees (emu.h): barriers are real, missing barriers and divergent
barriers are caught, dynamic shared memory is per block and poisoned, launches are checked."""

from __future__ import annotations

import numpy as np
import pytest


def _run(drv, name, grid, block, shmem, *extra, n):
    out = drv.alloc(4 * n)
    drv.memset(out, 4 * n)
    drv.launch(name, grid, block, shmem, [*extra, np.uint64(out)])
    res = np.empty(n, np.int32)
    drv.dtoh(res, out)
    drv.free(out)
    return res


def test_barrier_orders_shared_memory(emu_driver):
    n, blocks = 8, 3
    got = _run(emu_driver, "fc_cu_selftest_neighbour", (blocks,), (n,), 0, np.int32(1), n=n * blocks)
    want = np.array([b * n + (t + 1) % n for b in range(blocks) for t in range(n)])
    np.testing.assert_array_equal(got, want)


def test_a_missing_barrier_shows(emu_driver):
    n = 8
    got = _run(emu_driver, "fc_cu_selftest_neighbour", (1,), (n,), 0, np.int32(0), n=n)
    assert not np.array_equal(got, (np.arange(n) + 1) % n)


def test_a_divergent_barrier_is_an_error(emu_driver):
    with pytest.raises(RuntimeError, match="divergent __syncthreads"):
        _run(emu_driver, "fc_cu_selftest_divergent", (1,), (4,), 0, n=4)


def test_dynamic_shared_memory_is_poisoned_per_block(emu_driver):
    got = _run(emu_driver, "fc_cu_selftest_dynamic", (2,), (4,), 16, n=8)
    np.testing.assert_array_equal(got, np.full(8, -1))


def test_bad_launch_shapes_are_refused(emu_driver):
    with pytest.raises(RuntimeError, match="bad launch shape"):
        _run(emu_driver, "fc_cu_selftest_dynamic", (1,), (2048,), 0, n=1)


def test_an_out_of_bounds_write_fails_the_launch(emu_driver):
    y = emu_driver.alloc(4 * 5)
    try:
        with pytest.raises(RuntimeError, match="out of bounds after the allocation"):
            emu_driver.launch("fc_cu_fill_f32", (1,), (8,), 0, [np.uint64(y), np.float64(1.0), np.int64(6)])
        emu_driver.launch("fc_cu_fill_f32", (1,), (8,), 0, [np.uint64(y), np.float64(1.0), np.int64(5)])
    finally:
        emu_driver.free(y)
