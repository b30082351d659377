"""What every real-data example script shares: its command line, the data, training with a
progress bar, and the files it leaves behind (training curve, network picture, a JSON record).

A script builds its network and calls `train_and_report(...)`; `examples/run_all.py` reads the
JSON records (`<out>/<model>_seed<seed>.json`) to write examples/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing flexcore

from flexcore import Network  # noqa: E402

DEFAULT_OUT = os.path.join(HERE, "out")

# Small subsets for --quick (a smoke run that only checks the script works end to end).
QUICK_TRAIN, QUICK_TEST, QUICK_EPOCHS = 300, 200, 2


def parse_args(doc: str, epochs: int, argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="weight initialisation and shuffling seed (default 0)")
    ap.add_argument("--epochs", type=int, default=None, help=f"passes over the training set (default {epochs})")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: {QUICK_TRAIN} training / {QUICK_TEST} test examples, {QUICK_EPOCHS} epochs")
    ap.add_argument("--out", default=DEFAULT_OUT,
                    help="folder for the curve, picture and record (default examples/out)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.epochs is None:
        args.epochs = QUICK_EPOCHS if args.quick else epochs
    if args.epochs < 1:
        ap.error("--epochs must be >= 1")
    return args


def cosine(learning_rate: float, epochs: int) -> Callable[[int], float]:
    """A per-epoch cosine decay from `learning_rate` towards 0 over `epochs` epochs: the last
    epochs take small steps, so the final weights (the ones reported) settle instead of
    jittering at Adam's full step size."""
    def lr(epoch: int) -> float:
        return learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    lr.description = f"{learning_rate:g}, cosine decay over {epochs} epochs"  # type: ignore[attr-defined]
    return lr


def subset(train: tuple, test: tuple, quick: bool) -> tuple[tuple, tuple]:
    """The whole splits, or (--quick) their first examples."""
    if not quick:
        return train, test
    return tuple(a[:QUICK_TRAIN] for a in train), tuple(a[:QUICK_TEST] for a in test)


def train_and_report(model: str, net: Network, args: argparse.Namespace, train: tuple, test: tuple, *,
                     batch_size: int, learning_rate: float | Callable[[int], float], optimizer: str = "adam",
                     settings: dict[str, Any] | None = None, prepare: Callable[[Any], Any] | None = None,
                     **compile_kw) -> float:
    """Compile, fit (tqdm bar per epoch), evaluate on the test split, write
    `<out>/<model>_seed<seed>_curve.png`, `<model>_net.png` and `<model>_seed<seed>.json`.
    The reported accuracy is the last epoch's: no epoch is chosen by its test score.
    `prepare(data)` maps a (inputs, targets) split to what the network takes (several inputs)."""
    os.makedirs(args.out, exist_ok=True)
    prep = prepare or (lambda d: d)
    tr, te = prep(train), prep(test)
    print(net.summary())
    t0 = time.perf_counter()
    net.compile(batch_size, optimizer=optimizer, **compile_kw)
    # The test split is evaluated after each epoch only to draw its curve.
    history = net.fit(tr, args.epochs, learning_rate, test_data=te, verbose=not args.quiet)
    train_s = time.perf_counter() - t0
    steps = len(history.epochs) * math.ceil(len(train[1]) / batch_size)  # optimizer steps taken
    acc = float(net.evaluate(te)["accuracy"])
    stem = os.path.join(args.out, f"{model}_seed{args.seed}")
    curve = history.plot(stem + "_curve.png", title=f"{model}, seed {args.seed}: test accuracy {acc:.3f}")
    if shutil.which("dot") is not None:
        picture = net.draw(os.path.join(args.out, f"{model}_net.png"))
    else:  # the picture needs graphviz; the DOT text is what it would draw
        picture = os.path.join(args.out, f"{model}_net.dot")
        with open(picture, "w") as f:
            f.write(net.to_dot())
        print(f"graphviz's `dot` is not installed: wrote the network's DOT text to {picture}")
    n_params = int(sum(int(np.prod(w.shape)) for w in net.weights().values()))
    record = {
        "model": model, "seed": args.seed, "epochs": args.epochs, "quick": bool(args.quick),
        "test_accuracy": acc, "train_accuracy": float(history.last("accuracy")), "train_seconds": train_s,
        "steps": steps, "batch_size": batch_size, "optimizer": optimizer,
        "learning_rate": learning_rate if isinstance(learning_rate, (int, float))
        else getattr(learning_rate, "description", "schedule"),
        "parameters": n_params, "n_train": len(train[1]), "n_test": len(test[1]),
        "settings": settings or {}, "compile_options": compile_kw, "curve": curve, "picture": picture,
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:]),
    }
    with open(stem + ".json", "w") as f:
        json.dump(record, f, indent=1)
    print(f"{model} (seed {args.seed}, {args.epochs} epochs, {steps} steps, {train_s:.1f} s): "
          f"test accuracy {acc:.4f}")
    return acc
