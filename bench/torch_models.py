"""The benchmark models in PyTorch (CPU, eager), with weights equal to flexcore's.

Two versions of each recurrent model: torch's fused module (nn.LSTM / nn.GRU / nn.RNN, its best
case) and the same cell stepped by a Python loop (nn.LSTMCell etc.: what a researcher writing a
new topology gets).  Data is given time-major and contiguous, torch's native layout, so no
transpose is timed.  A training step is zero_grad, forward, cross-entropy, backward, SGD step.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .fc_models import LR, Built
from .harness import Participant
from .memory import TORCH_METHOD, nbytes, torch_allocator_peak


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints bookkeeping lines on fd 2; hide them while it runs."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def participant(name: str, model: nn.Module, x: torch.Tensor, y: np.ndarray, same_update: bool) -> Participant:
    model.train()
    labels = torch.from_numpy(np.asarray(y, np.int64))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        return loss.item()

    def infer() -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(model(x), dim=-1).numpy()

    live = nbytes([*params, x, labels])

    def memory(fn):
        def measure() -> int:
            with _quiet_stderr():
                return live + torch_allocator_peak(fn)
        return measure

    return Participant(name=name, train=step, infer=infer, train_memory=memory(step), infer_memory=memory(infer),
                       memory_method=TORCH_METHOD, same_update=same_update)


# ----------------------------------------------------------------------------------------
# recurrent cells
# ----------------------------------------------------------------------------------------

_FUSED = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
_CELL = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}


def make_fused(kind: str, n_in: int, hidden: int, seed: int = 0) -> nn.Module:
    """The torch module whose weights the flexcore cell copies (copy_from_torch)."""
    torch.manual_seed(seed)
    return _FUSED[kind](n_in, hidden)


class FusedHead(nn.Module):
    def __init__(self, rnn: nn.Module, head: nn.Linear):
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T, B, F)
        out, _ = self.rnn(x)
        return self.head(out[-1])


class CellLoop(nn.Module):
    def __init__(self, kind: str, fused: nn.Module, head: nn.Linear):
        super().__init__()
        self.kind = kind
        self.cell = _CELL[kind](fused.input_size, fused.hidden_size)
        with torch.no_grad():
            for nm in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.cell, nm).copy_(getattr(fused, f"{nm}_l0"))
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, hsz = x.shape[1], self.cell.hidden_size
        h = x.new_zeros(b, hsz)
        if self.kind == "lstm":
            c = x.new_zeros(b, hsz)
            for xt in x.unbind(0):
                h, c = self.cell(xt, (h, c))
        else:
            for xt in x.unbind(0):
                h = self.cell(xt, h)
        return self.head(h)


def linear_from(built: Built, w: str, b: str) -> nn.Linear:
    """An nn.Linear holding flexcore's dense weight (in, out) and layer bias."""
    weights = built.net.weights()
    wt = weights[built.names[w]]
    lin = nn.Linear(wt.shape[0], wt.shape[1])
    with torch.no_grad():
        lin.weight.copy_(_t(wt.T))
        lin.bias.copy_(_t(weights[built.names[b]]))
    return lin


def cell_models(kind: str, fused: nn.Module, built: Built) -> dict[str, nn.Module]:
    """The fused and the cell-loop version, both with the head flexcore has."""
    import copy

    head = linear_from(built, "head.W", "head.b")
    return {
        f"torch nn.{fused.__class__.__name__}": FusedHead(copy.deepcopy(fused), copy.deepcopy(head)),
        f"torch {_CELL[kind].__name__} loop": CellLoop(kind, fused, copy.deepcopy(head)),
    }


# ----------------------------------------------------------------------------------------
# the seed topology, dense and conv models
# ----------------------------------------------------------------------------------------


def _param(a: np.ndarray) -> nn.Parameter:
    return nn.Parameter(_t(a).clone())


class SeedTopology(nn.Module):
    """The seed's network written as a researcher would: a loop over steps, L6 and L4 computed
    once, after the last step (where the loss reads them)."""

    def __init__(self, built: Built):
        super().__init__()
        w = built.net.weights()
        self.W = nn.ParameterDict({k: _param(w[built.names[k]]) for k in ("W12", "W23", "W52", "W35", "W56", "W64")})
        self.b = nn.ParameterDict({k: _param(w[built.names[k]]) for k in ("b2", "b3", "b4", "b5", "b6")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T, B, 196)
        W, b = self.W, self.b  # noqa: N806
        h5 = x.new_zeros(x.shape[1], W["W52"].shape[0])
        for xt in x.unbind(0):
            h2 = torch.sigmoid(xt @ W["W12"] + h5 @ W["W52"] + b["b2"])
            h3 = torch.sigmoid(h2 @ W["W23"] + b["b3"])
            h5 = torch.sigmoid(h3 @ W["W35"] + b["b5"])
        h6 = torch.sigmoid(h5 @ W["W56"] + b["b6"])
        return h6 @ W["W64"] + b["b4"]


def mlp(built: Built, n_layers: int = 3) -> nn.Module:
    mods: list[nn.Module] = []
    for i in range(n_layers):
        mods.append(linear_from(built, f"W{i}", f"b{i}"))
        if i < n_layers - 1:
            mods.append(nn.Sigmoid())
    return nn.Sequential(*mods)


def _conv_from(built: Built, w: str, b: str | None) -> nn.Conv2d:
    weights = built.net.weights()
    wt = weights[built.names[w]]
    conv = nn.Conv2d(wt.shape[1], wt.shape[0], wt.shape[2], padding=wt.shape[2] // 2, bias=b is not None)
    with torch.no_grad():
        conv.weight.copy_(_t(wt))
        if b is not None:
            conv.bias.copy_(_t(weights[built.names[b]]))
    return conv


def small_cnn(built: Built, channels_last: bool = False) -> nn.Module:
    model = nn.Sequential(
        _conv_from(built, "conv1.W", "conv1.b"), nn.ReLU(), nn.MaxPool2d(2),
        _conv_from(built, "conv2.W", "conv2.b"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), linear_from(built, "fc1.W", "fc1.b"), nn.ReLU(), linear_from(built, "fc2.W", "fc2.b"),
    )
    return model.to(memory_format=torch.channels_last) if channels_last else model


class ConvRecurrent(nn.Module):
    def __init__(self, built: Built):
        super().__init__()
        w = built.net.weights()
        self.convs = nn.ModuleDict({k: _conv_from(built, k, None) for k in ("Wx1", "W12", "W23", "W31")})
        self.b = nn.ParameterDict({k: _param(w[built.names[k]].reshape(1, -1, 1, 1)) for k in ("b1", "b2", "b3")})
        self.head = linear_from(built, "head.W", "head.b")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T, B, 1, 28, 28)
        cv, b = self.convs, self.b
        c3 = x.new_zeros(x.shape[1], cv["W23"].out_channels, x.shape[3], x.shape[4])
        for xt in x.unbind(0):
            c1 = torch.tanh(cv["Wx1"](xt) + cv["W31"](c3) + b["b1"])
            c2 = torch.tanh(cv["W12"](c1) + b["b2"])
            c3 = torch.tanh(cv["W23"](c2) + b["b3"])
        return self.head(c3.flatten(1))


def time_major(x: np.ndarray) -> torch.Tensor:
    """(N, T, ...) -> contiguous (T, N, ...)."""
    return _t(np.swapaxes(x, 0, 1))


def info() -> dict[str, Any]:
    return {"threads": torch.get_num_threads(), "capability": torch.backends.cpu.get_cpu_capability()}
