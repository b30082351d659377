"""Fixtures of the CUDA emulation tests: the emulator library is built once per session."""

from __future__ import annotations

import pytest

from .build import compiler


@pytest.fixture(scope="session")
def emu_driver():
    if compiler() is None:
        pytest.skip("no C++ compiler: the CUDA emulator cannot be built")
    from .driver import EmuDriver

    d = EmuDriver()
    d.block_size = 32  # few fibers per block keeps emulation fast; reductions still need several rounds
    return d


@pytest.fixture(scope="session")
def cuda_backend(emu_driver):
    from flexcore.backends.cuda import CUDABackend

    return CUDABackend(emu_driver)
