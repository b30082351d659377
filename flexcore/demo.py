"""The main job: train layer-level networks on real data and show what they learned.

    ./run demo            (or: python -m flexcore.demo [--quick])

1. scikit-learn's digits (8x8 images) with a two-layer network.
2. MNIST-1D read as 4 steps of 10 features by the FlexNet seed's topology: a recurrent
   connection runs from the 4th layer back into the 1st hidden layer at t-1, and the output
   reads only the last step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import ActivationLayer, InputLayer, Network, datasets
from .backends import get_backend


def digits_network(epochs: int, verbose: bool) -> float:
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = datasets.digits(validation_size=0.1, seed=0)
    net = Network("digits", seed=0)
    x = InputLayer(input_shape=(64,), name="pixels")
    h = ActivationLayer(input_shape=(128,), activation="relu", name="hidden")
    y = ActivationLayer(input_shape=(10,), activation="softmax", output=True, loss="negative_log_likelihood", name="digit")
    net.connect_dense(x, h)
    net.connect_dense(h, y)
    net.compile(32, optimizer="momentum")
    net.fit((x_tr, y_tr), epochs, 0.05, validation_data=(x_va, y_va), verbose=verbose)
    return net.evaluate((x_te, y_te))["accuracy"]


def seed_topology(epochs: int, verbose: bool) -> float:
    """The FlexNet seed's example, unchanged except for the data shapes."""
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = datasets.mnist1d(as_sequence=True, steps=4, validation_size=0.1, seed=0)
    training_data, validation_data, test_data = (x_tr, y_tr), (x_va, y_va), (x_te, y_te)

    net = Network("Demo")
    L1 = InputLayer(inputShape=(10,), sequence_length=4)
    L2 = ActivationLayer(inputShape=(300,), passFunction="sigmoid")
    L3 = ActivationLayer(inputShape=(150,), passFunction="sigmoid")
    L4 = ActivationLayer(inputShape=(10,), passFunction="softmax", ifOutput=True, lossFunction="negativeLogLikelihood")
    L5 = ActivationLayer(inputShape=(50,), passFunction="sigmoid")
    L6 = ActivationLayer(inputShape=(200,), passFunction="sigmoid")

    net.connectDense(L1, L2, return_sequence=True)
    net.connectDense(L2, L3, return_sequence=True)
    net.connectRecurrent(L5, L2)
    net.connectDense(L3, L5, return_sequence=True)
    net.connectDense(L5, L6)
    net.connectDense(L6, L4)

    net.compile(32, optimizer="adam")
    history = net.fit(training_data, epochs, 0.002, validation_data, test_data, verbose=verbose)
    return history.last("test_accuracy")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer epochs (a smoke run)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    verbose = not args.quiet
    print(f"flexcore demo on the '{get_backend().name}' backend")

    t0 = time.perf_counter()
    acc = digits_network(5 if args.quick else 30, verbose)
    print(f"\n[1] digits, 64-128-10 network: test accuracy {acc:.4f} ({time.perf_counter() - t0:.1f} s)\n")

    t0 = time.perf_counter()
    acc2 = seed_topology(3 if args.quick else 80, verbose)
    print(f"\n[2] MNIST-1D, the seed's recurrent topology (4 steps x 10 features): test accuracy {acc2:.4f} "
          f"(chance 0.10; {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
