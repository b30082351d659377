"""Saving and loading networks: the architecture as JSON, the weights as .npz, never pickle.

Each file is written to a temporary file in the same directory, flushed to disk and renamed
over the target, so a crash leaves either the old file or the new one, never half of one.  The
JSON records the SHA-256 of the weights file, so a truncated, tampered or mismatched pair is
refused with a clear error on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from ..ir.core import FlexcoreError
from .connections import CONNECTION_KINDS, Conv, Dense, Identity, Pool
from .layers import ActivationLayer, FeatureMapLayer, InputLayer, MemoryLayer

FORMAT = "flexcore-network"
VERSION = 1
_LAYER_CLASSES = {c.__name__: c for c in (InputLayer, ActivationLayer, FeatureMapLayer, MemoryLayer)}
_CONN_CLASSES = {c.__name__: c for c in (Dense, Conv, Pool, Identity)}
assert set(_CONN_CLASSES.values()) == set(CONNECTION_KINDS.values())


def _paths(path: str) -> tuple[str, str]:
    base = os.fspath(path)
    for ext in (".json", ".npz"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base + ".json", base + ".npz"


def atomic_write(path: str, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_network(net, path: str) -> tuple[str, str]:
    jpath, wpath = _paths(path)
    buf = io.BytesIO()
    np.savez(buf, **{k: p.get_value() for k, p in net.params.items()})
    blob = buf.getvalue()
    arch: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "name": net.name,
        "seed": net.seed,
        "layers": [l.config() for l in net.layers],
        "connections": [c.config() for c in net.connections],
        "weights_file": os.path.basename(wpath),
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "params": {k: {"shape": list(p.shape), "dtype": str(p.dtype)} for k, p in net.params.items()},
    }
    cfg = net._compiled
    if cfg is not None:
        arch["compile"] = {"batch_size": cfg["batch_size"], "dtype": str(cfg["dtype"])}
    atomic_write(wpath, blob)
    atomic_write(jpath, json.dumps(arch, indent=1).encode())
    return jpath, wpath


def _bad(path: str, why: str) -> FlexcoreError:
    return FlexcoreError(f"cannot load network from '{path}': {why}")


def _build_layer(cfg: dict[str, Any], path: str):
    cls = _LAYER_CLASSES.get(cfg.get("class"))
    if cls is None:
        raise _bad(path, f"unknown layer class {cfg.get('class')!r}")
    kw = {k: v for k, v in cfg.items() if k != "class"}
    if cls is InputLayer:
        return InputLayer(kw["input_shape"], sequence_length=kw.get("sequence_length"), name=kw["name"])
    init = kw.get("initial_state", "zeros")
    if not isinstance(init, str):
        kw["initial_state"] = np.asarray(init, np.float32)
    if cls is MemoryLayer:
        return MemoryLayer(kw.pop("input_shape"), **kw)
    return cls(kw.pop("input_shape"), **kw)


def _build_connection(cfg: dict[str, Any], layers: dict[str, Any], path: str):
    cls = _CONN_CLASSES.get(cfg.get("class"))
    if cls is None:
        raise _bad(path, f"unknown connection class {cfg.get('class')!r}")
    kw = {k: v for k, v in cfg.items() if k not in ("class", "source", "target")}
    try:
        src, tgt = layers[cfg["source"]], layers[cfg["target"]]
    except KeyError as e:
        raise _bad(path, f"connection refers to unknown layer {e}") from None
    for k in ("kernel_size", "stride", "dilation"):
        if isinstance(kw.get(k), list):
            kw[k] = tuple(kw[k])
    if isinstance(kw.get("padding"), list):
        kw["padding"] = tuple(tuple(p) if isinstance(p, list) else p for p in kw["padding"])
    return cls(src, tgt, **kw)


def load_network(path: str):
    from .network import Network

    jpath, wpath = _paths(path)
    try:
        with open(jpath, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise _bad(jpath, e.strerror or str(e)) from None
    try:
        arch = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(jpath, f"the architecture file is not valid JSON (truncated or damaged?): {e}") from None
    if not isinstance(arch, dict) or arch.get("format") != FORMAT:
        raise _bad(jpath, "not a flexcore network file")
    if arch.get("version") != VERSION:
        raise _bad(jpath, f"format version {arch.get('version')} is not supported (this flexcore reads {VERSION})")
    wdir = os.path.dirname(os.path.abspath(jpath))
    wname = arch.get("weights_file")
    if not isinstance(wname, str) or os.path.basename(wname) != wname:
        raise _bad(jpath, "the weights file name is invalid")
    wpath = os.path.join(wdir, wname)
    try:
        with open(wpath, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise _bad(wpath, e.strerror or str(e)) from None
    if hashlib.sha256(blob).hexdigest() != arch.get("weights_sha256"):
        raise _bad(wpath, "the weights file does not match the architecture file (truncated, modified or from another save)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            weights = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise _bad(wpath, f"the weights file is damaged: {e}") from None

    try:
        net = Network(str(arch["name"]), seed=int(arch.get("seed", 0)))
        layers = {}
        for cfg in arch["layers"]:
            layer = _build_layer(cfg, jpath)
            layers[layer.name] = layer
            net.add(layer)
        for cfg in arch["connections"]:
            net.connect(_build_connection(cfg, layers, jpath))
    except (KeyError, TypeError) as e:
        raise _bad(jpath, f"the architecture is incomplete: {e!r}") from None
    expected = arch.get("params", {})
    if set(expected) != set(weights):
        raise _bad(wpath, "the weights file holds other parameters than the architecture lists")
    comp = arch.get("compile", {})
    dtype = np.dtype(comp.get("dtype", "float32"))
    net._ensure_params(dtype)
    for k, v in weights.items():
        if k not in net.params:
            raise _bad(wpath, f"parameter '{k}' does not belong to this architecture")
        if v.shape != net.params[k].shape:
            raise _bad(wpath, f"parameter '{k}' has shape {v.shape}, the architecture needs {net.params[k].shape}")
        net.params[k].set_value(v)
    if comp:
        net.compile(int(comp["batch_size"]), dtype=dtype)
    return net
