"""Loading the cuda backend: pycuda is optional and imported only when the backend is created;
without it (or without a device) the error says what is missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from flexcore.backends import cuda
from flexcore.ir.core import FlexcoreError


def test_import_flexcore_never_imports_pycuda():
    code = "import sys, flexcore, flexcore.backends.cuda; print('pycuda' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.skipif(importlib.util.find_spec("pycuda") is not None, reason="pycuda is installed here")
def test_without_pycuda_the_backend_says_so(monkeypatch):
    monkeypatch.delenv("FLEXCORE_CUDA_DRIVER", raising=False)
    with pytest.raises(FlexcoreError, match=r"needs pycuda.*pip install \.\[cuda\]"):
        cuda.CUDABackend()


def test_a_bad_driver_spec_is_named(monkeypatch):
    monkeypatch.setenv("FLEXCORE_CUDA_DRIVER", "no_such_module:Driver")
    with pytest.raises(FlexcoreError, match="FLEXCORE_CUDA_DRIVER='no_such_module:Driver'"):
        cuda.CUDABackend()


def test_the_compile_cache_key_covers_sources_and_flags():
    a = cuda.source_hash()
    assert a == cuda.source_hash()
    assert a != cuda.source_hash(("-std=c++17", "-O2"))
