"""The first experiment of "Going Deeper: Infinite Deep Neural Networks", with flexcore's GInfty
meta-layer: a network that learns its own depth w learns a deeper network for a harder task.

Eight binary inputs; the first k of them are active and the label is their parity (XOR), the
other 8 - k are noise.  k = 0 is a constant, k = 1 copies an input, and k = 8 is the parity of
all eight, which needs depth.  For each k the script trains a GInfty network from w = 2 (a few
seeds each), prints the learned depth per k and draws w against k, and w over the epochs.

    ./run python examples/ginfty_parity.py              # about two minutes on two cores
    ./run python examples/ginfty_parity.py --quick      # one seed, fewer epochs
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from flexcore import ActivationLayer, InputLayer, Network
from flexcore.nn import Callback, ginfty

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "docs", "img", "ginfty_parity.png")


def parity_data(k: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n examples of 8 inputs in {-1, +1}; the label is the parity of the first k."""
    bits = rng.integers(0, 2, (n, 8))
    return (2 * bits - 1).astype(np.float32), (bits[:, :k].sum(1) % 2).astype(np.int64)


def all_patterns(k: int) -> tuple[np.ndarray, np.ndarray]:
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
    return (2 * bits - 1).astype(np.float32), (bits[:, :k].sum(1) % 2).astype(np.int64)


class DepthTrace(Callback):
    """Records the meta-layer's depth after every epoch."""

    def __init__(self) -> None:
        self.depths: list[float] = []

    def on_epoch_end(self, net, epoch, metrics):
        self.depths.append(net.depths()["ginfty"])


def train(k: int, seed: int, epochs: int, width: int = 16, lr: float = 0.01, l2: float = 1e-3):
    rng = np.random.default_rng(seed)
    xs, ys = parity_data(k, 512, rng)
    net = Network(f"parity{k}", seed=seed)
    x = InputLayer(8, name="x")
    g = ginfty(net, x, width, depth=2.0, l2=l2)
    y = ActivationLayer(2, activation="softmax", output=True, loss="nll", name="y")
    net.connect_dense(g.out, y)
    net.compile(32, optimizer="adam")
    trace = DepthTrace()
    net.fit((xs, ys), epochs, lr, verbose=False, callbacks=[trace])
    acc = net.evaluate(all_patterns(k))["accuracy"]
    return net.depths()["ginfty"], g.blocks, acc, trace.depths


def plot(results: dict[int, list[tuple]], path: str) -> None:
    from matplotlib.figure import Figure

    ks = sorted(results)
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    w = np.array([[r[0] for r in results[k]] for k in ks])
    for j in range(w.shape[1]):
        ax.plot(ks, w[:, j], "o", color="#7f8c8d", alpha=0.5, markersize=4, label="one seed" if j == 0 else None)
    ax.plot(ks, w.mean(1), "-o", color="#c0392b", label="mean")
    ax.set_xlabel("k (number of inputs in the parity)")
    ax.set_ylabel("learned depth w")
    ax.set_xticks(ks)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("depth learned per task")
    for k in (ks[1], ks[len(ks) // 2], ks[-1]) if len(ks) > 2 else ks:
        trace = results[k][0][3]
        ax2.plot(range(1, len(trace) + 1), trace, label=f"k = {k}")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("w")
    ax2.grid(True, alpha=0.3)
    ax2.legend()
    ax2.set_title("w while training (first seed)")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=250)
    ap.add_argument("--quick", action="store_true", help="1 seed, 30 epochs")
    ap.add_argument("--out", default=DEFAULT_OUT, help="the picture (.png or .svg)")
    args = ap.parse_args()
    seeds, epochs = (1, 30) if args.quick else (args.seeds, args.epochs)
    t0 = time.perf_counter()
    results: dict[int, list[tuple]] = {}
    cols = (max(10, 6 * seeds - 1), max(6, 2 * seeds - 1))
    print(f"{'k':>2}  {'w (mean)':>8}  {'w per seed':<{cols[0]}} {'blocks':<{cols[1]}} accuracy")
    for k in range(9):
        results[k] = [train(k, s, epochs) for s in range(seeds)]
        ws = [r[0] for r in results[k]]
        print(f"{k:>2}  {np.mean(ws):8.2f}  {' '.join(f'{w:5.2f}' for w in ws):<{cols[0]}} "
              f"{' '.join(str(r[1]) for r in results[k]):<{cols[1]}} {np.mean([r[2] for r in results[k]]):.3f}",
              flush=True)
    plot(results, args.out)
    print(f"plot: {os.path.relpath(args.out)}  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
