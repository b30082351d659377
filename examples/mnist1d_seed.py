"""The FlexNet seed's example topology on MNIST-1D read as a sequence of 4 steps of 10 values:
dense sigmoid layers L2 (300) -> L3 (150) -> L5 (50) at every step, a recurrent connection from
the later layer L5 at t-1 back into the earlier L2, and L6 (200) -> L4 (softmax) reading the last
step only.  As in flexcore/demo.py: Adam, learning rate 0.002, batches of 32.

The paper has no such model; this shows flexcore's any-layer-to-any-layer recurrence on real data.

    python examples/mnist1d_seed.py --seed 0
    python examples/mnist1d_seed.py --quick
"""

from __future__ import annotations

from _common import parse_args, subset, train_and_report

from flexcore import ActivationLayer, InputLayer, Network, datasets

STEPS = 4


def build(seed: int) -> Network:
    """The seed's program (its own spellings), unchanged except for the data shapes."""
    net = Network("mnist1d_seed", seed=seed)
    L1 = InputLayer(inputShape=(40 // STEPS,), sequence_length=STEPS, name="L1")  # noqa: N806
    L2 = ActivationLayer(inputShape=(300,), passFunction="sigmoid", name="L2")  # noqa: N806
    L3 = ActivationLayer(inputShape=(150,), passFunction="sigmoid", name="L3")  # noqa: N806
    L4 = ActivationLayer(inputShape=(10,), passFunction="softmax", ifOutput=True,  # noqa: N806
                         lossFunction="negativeLogLikelihood", name="L4")
    L5 = ActivationLayer(inputShape=(50,), passFunction="sigmoid", name="L5")  # noqa: N806
    L6 = ActivationLayer(inputShape=(200,), passFunction="sigmoid", name="L6")  # noqa: N806
    net.connectDense(L1, L2, return_sequence=True)
    net.connectDense(L2, L3, return_sequence=True)
    net.connectRecurrent(L5, L2)
    net.connectDense(L3, L5, return_sequence=True)
    net.connectDense(L5, L6)
    net.connectDense(L6, L4)
    return net


def main(argv=None) -> float:
    args = parse_args(__doc__, epochs=80, argv=argv)
    train, test = subset(*datasets.mnist1d(as_sequence=True, steps=STEPS), args.quick)
    return train_and_report("mnist1d_seed", build(args.seed), args, train, test, batch_size=32,
                            learning_rate=0.002, settings={"steps": STEPS})


if __name__ == "__main__":
    main()
