"""Logistic regression on MNIST-1D (the paper's LinearBase: one linear map 40 -> 10 and a softmax).

Greydanus (2020), "Scaling down deep learning", reports 32% test accuracy. Training as in the
paper's train.py (Adam, learning rate 1e-2, batches of 100, 6000 steps = 150 epochs of 4000),
plus a cosine decay of the learning rate: at a constant 1e-2 the final weights jitter around the
optimum (31% with flexcore and with torch alike; the convex optimum, scikit-learn's
LogisticRegression, is 33%).

    python examples/mnist1d_logistic.py --seed 0           # about half a minute
    python examples/mnist1d_logistic.py --quick            # smoke run
"""

from __future__ import annotations

from _common import cosine, parse_args, subset, train_and_report

from flexcore import ActivationLayer, InputLayer, Network, datasets


def build(seed: int) -> Network:
    net = Network("mnist1d_logistic", seed=seed)
    x = InputLayer(40, name="signal")
    y = ActivationLayer(10, activation="softmax", output=True, loss="nll", name="digit")
    net.connect_dense(x, y)
    return net


def main(argv=None) -> float:
    args = parse_args(__doc__, epochs=150, argv=argv)
    train, test = subset(*datasets.mnist1d(), args.quick)
    return train_and_report("mnist1d_logistic", build(args.seed), args, train, test,
                            batch_size=100, learning_rate=cosine(1e-2, args.epochs))


if __name__ == "__main__":
    main()
