"""Saving and loading networks: the architecture as JSON, the weights as .npz, never pickle.

Each file is written to a temporary file in the same directory, flushed to disk and renamed
over the target, so a crash leaves either the old file or the new one, never half of one; an
error during the save puts the old pair back.  The JSON records the SHA-256 of the weights
file, so a truncated, tampered or mismatched pair is refused with a clear error on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import tempfile
import zipfile
from typing import Any

import numpy as np

from .. import optim
from ..ir.core import FlexcoreError
from .connections import CONNECTION_KINDS, Conv, Dense, Identity, Pool, ScalarGate
from .layers import ActivationLayer, FeatureMapLayer, InputLayer, MemoryLayer

FORMAT = "flexcore-network"
VERSION = 1
_LAYER_CLASSES = {c.__name__: c for c in (InputLayer, ActivationLayer, FeatureMapLayer, MemoryLayer)}
_CONN_CLASSES = {c.__name__: c for c in (Dense, Conv, Pool, Identity, ScalarGate)}
_OPT_PREFIX = "optimizer/"  # npz keys of optimizer state; parameter names never start so
_OPTIMIZERS = {c.__name__: c for c in (optim.SGD, optim.Adam, optim.RMSprop)}
assert set(_CONN_CLASSES.values()) == set(CONNECTION_KINDS.values())


def _paths(path: str) -> tuple[str, str]:
    base = os.fspath(path)
    for ext in (".json", ".npz"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base + ".json", base + ".npz"


def _write_temp(path: str, data: bytes) -> str:
    """`data` in a new temporary file next to `path`, on disk; returns the temporary's path."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str | None) -> None:
    if path is not None and os.path.exists(path):
        os.unlink(path)


def atomic_write(path: str, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _atomic_write_pair(wpath: str, wdata: bytes, jpath: str, jdata: bytes) -> None:
    """Replace the weights and the architecture file together: if anything fails, both old
    files are left as they were (each rename is atomic; the first is undone when the second
    fails) and no temporary file remains."""
    wtmp = jtmp = backup = None
    try:
        wtmp = _write_temp(wpath, wdata)
        jtmp = _write_temp(jpath, jdata)
        if os.path.exists(wpath):
            # A second name for the old weights, so they can be put back.
            backup = f"{wpath}.{secrets.token_hex(8)}.bak"
            try:
                os.link(wpath, backup)
            except OSError:  # a file system without hard links
                shutil.copy2(wpath, backup)
        os.replace(wtmp, wpath)
        wtmp = None
        try:
            os.replace(jtmp, jpath)
            jtmp = None
        except BaseException:
            if backup is not None:
                # Should putting the old weights back fail too, the backup stays for the user.
                keep, backup = backup, None
                os.replace(keep, wpath)
            else:
                _unlink(wpath)
            raise
    finally:
        _unlink(wtmp)
        _unlink(jtmp)
        _unlink(backup)


def save_network(net, path: str) -> tuple[str, str]:
    jpath, wpath = _paths(path)
    cfg = net._compiled
    # Only the optimizers a load can rebuild by name keep their state (a user's own class cannot).
    known = cfg is not None and type(cfg["optimizer"]) in _OPTIMIZERS.values()
    state = cfg["optimizer"].state() if known else {}
    arrays = {k: p.get_value() for k, p in net.params.items()}
    arrays.update({_OPT_PREFIX + k: v.get_value() for k, v in state.items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = buf.getvalue()
    arch: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "name": net.name,
        "seed": net.seed,
        "layers": [l.config() for l in net.layers],
        "connections": [c.config() for c in net.connections],
        "meta_layers": [m.config() for m in net.meta_layers],
        "weights_file": os.path.basename(wpath),
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "params": {k: {"shape": list(p.shape), "dtype": str(p.dtype)} for k, p in net.params.items()},
        # Training resumes where it stopped: the optimizer's moments and the step count (which
        # seeds shuffling and dropout) are kept too.
        "optimizer_state": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                            for k, v in state.items()},
        "steps": net._step,
    }
    if cfg is not None:
        opt = cfg["optimizer"]
        arch["compile"] = {
            "batch_size": cfg["batch_size"], "dtype": str(cfg["dtype"]),
            # A backend object (not a name) cannot be written down; a load then uses the default.
            "backend": cfg["backend"] if isinstance(cfg["backend"], str) else None,
            "l1": cfg["l1"], "l2": cfg["l2"],
            "clip_norm": None if cfg["clip_norm"] is None else float(cfg["clip_norm"]),
            # The setting only: a stateful run's carried state is not saved (a load starts afresh).
            "stateful": cfg["stateful"],
            "optimizer": {"class": type(opt).__name__, **opt._config()} if known else None,
        }
    _atomic_write_pair(wpath, blob, jpath, json.dumps(arch, indent=1).encode())
    return jpath, wpath


def _bad(path: str, why: str) -> FlexcoreError:
    return FlexcoreError(f"cannot load network from '{path}': {why}")


def _build_layer(cfg: dict[str, Any], path: str):
    cls = _LAYER_CLASSES.get(cfg.get("class"))
    if cls is None:
        raise _bad(path, f"unknown layer class {cfg.get('class')!r}")
    kw = {k: v for k, v in cfg.items() if k != "class"}
    init = kw.get("initial_state", "zeros")
    if not isinstance(init, str):
        kw["initial_state"] = np.asarray(init, np.float64)
    if cls is InputLayer:
        return InputLayer(kw["input_shape"], sequence_length=kw.get("sequence_length"), name=kw["name"],
                          initial_state=kw.get("initial_state", "zeros"))
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


def _attach_meta_layer(net, cfg: dict[str, Any], path: str) -> None:
    from .ginfty import GInfty

    if cfg.get("class") != "GInfty":
        raise _bad(path, f"unknown meta-layer class {cfg.get('class')!r}")
    GInfty.attach(net, cfg)


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
        for cfg in arch.get("meta_layers", []):
            _attach_meta_layer(net, cfg, jpath)
    except (KeyError, TypeError) as e:
        raise _bad(jpath, f"the architecture is incomplete: {e!r}") from None
    opt_state = {k[len(_OPT_PREFIX):]: v for k, v in weights.items() if k.startswith(_OPT_PREFIX)}
    weights = {k: v for k, v in weights.items() if not k.startswith(_OPT_PREFIX)}
    expected = arch.get("params", {})
    if set(expected) != set(weights) or set(arch.get("optimizer_state", {})) != set(opt_state):
        raise _bad(wpath, "the weights file holds other parameters than the architecture lists")
    comp = arch.get("compile") or {}
    try:
        dtype = np.dtype(comp.get("dtype", "float32"))
    except (AttributeError, TypeError) as e:
        raise _bad(jpath, f"the compile settings are invalid: {e!r}") from None
    net._ensure_params(dtype)
    for k, v in weights.items():
        if k not in net.params:
            raise _bad(wpath, f"parameter '{k}' does not belong to this architecture")
        if v.shape != net.params[k].shape:
            raise _bad(wpath, f"parameter '{k}' has shape {v.shape}, the architecture needs {net.params[k].shape}")
        net.params[k].set_value(v)
    if comp:
        try:
            opt_cfg = dict(comp.get("optimizer") or {"class": "SGD"})
            opt_cls = _OPTIMIZERS.get(opt_cfg.pop("class"))
            if opt_cls is None:
                raise _bad(jpath, "unknown optimizer class in the architecture file")
            net.compile(int(comp["batch_size"]), optimizer=opt_cls(**opt_cfg),
                        backend=comp.get("backend"), l1=float(comp.get("l1", 0.0)),
                        l2=float(comp.get("l2", 0.0)), clip_norm=comp.get("clip_norm"), dtype=dtype,
                        stateful=bool(comp.get("stateful", False)))
        except (KeyError, TypeError, ValueError) as e:
            raise _bad(jpath, f"the compile settings are invalid: {e!r}") from None
        _restore_optimizer_state(net, opt_state, wpath)
    elif opt_state:
        raise _bad(jpath, "optimizer state without compile settings")
    net._step = int(arch.get("steps", 0))
    return net


def _restore_optimizer_state(net, values: dict[str, np.ndarray], wpath: str) -> None:
    """Create the optimizer's state variables ('<param>.<slot>') with the saved values, before
    the training function is first built (it then finds and reuses them)."""
    opt = net._compiled["optimizer"]
    for name, value in values.items():
        owner = max((k for k in net.params if name.startswith(k + ".")), key=len, default=None)
        if owner is None:
            raise _bad(wpath, f"optimizer state '{name}' belongs to no parameter")
        counter = value.ndim == 0 and value.dtype.kind in "iu"  # Adam's step count
        slot = name[len(owner) + 1:]
        var = opt._slot(net.params[owner], slot, dtype=value.dtype if counter else None)
        if var.shape != value.shape:
            raise _bad(wpath, f"optimizer state '{name}' has shape {value.shape}, not {var.shape}")
        var.set_value(value)
