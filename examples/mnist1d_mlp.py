"""An MLP on MNIST-1D, the paper's MLPBase: h1 = relu(W1 x), h = h1 + relu(W2 h1), y = W3 h
(100 hidden units; the second layer is a residual branch).

Greydanus (2020) reports 68% test accuracy. Training as in the paper's train.py (Adam, learning
rate 1e-2, batches of 100, 6000 steps = 150 epochs of 4000) reaches 100% training and 65% test
accuracy here, with flexcore and with torch alike: the MLP overfits 4000 examples.  So this
script regularises it: dropout 0.2 on the connections into the second layer and the output,
an L2 penalty of 1e-3 on the weight matrices, and a cosine decay of the learning rate.

    python examples/mnist1d_mlp.py --seed 0
    python examples/mnist1d_mlp.py --quick
"""

from __future__ import annotations

from _common import cosine, parse_args, subset, train_and_report

from flexcore import ActivationLayer, InputLayer, Network, datasets

HIDDEN = 100
DROPOUT = 0.2
L2 = 1e-3


def build(seed: int) -> Network:
    net = Network("mnist1d_mlp", seed=seed)
    x = InputLayer(40, name="signal")
    h1 = ActivationLayer(HIDDEN, activation="relu", name="h1")
    h2 = ActivationLayer(HIDDEN, activation="relu", name="h2")
    h = ActivationLayer(HIDDEN, bias=False, name="h1+h2")  # the residual sum, no weights
    y = ActivationLayer(10, activation="softmax", output=True, loss="nll", name="digit")
    net.connect_dense(x, h1)
    net.connect_dense(h1, h2, dropout=DROPOUT)
    net.connect_identity(h1, h)
    net.connect_identity(h2, h)
    net.connect_dense(h, y, dropout=DROPOUT)
    return net


def main(argv=None) -> float:
    args = parse_args(__doc__, epochs=150, argv=argv)
    train, test = subset(*datasets.mnist1d(), args.quick)
    return train_and_report("mnist1d_mlp", build(args.seed), args, train, test,
                            batch_size=100, learning_rate=cosine(1e-2, args.epochs), l2=L2,
                            settings={"hidden": HIDDEN, "dropout": DROPOUT})


if __name__ == "__main__":
    main()
