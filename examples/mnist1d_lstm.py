"""A bidirectional LSTM on MNIST-1D, built from flexcore primitives (`flexcore.nn.cells.lstm`:
gates as layers, a MemoryLayer for the cell state): the paper's GRUBase with the GRU cell
swapped for an LSTM cell, 6 units per direction over 40 steps of one feature, all steps'
outputs mapped linearly to the classes (see _recurrent.py).  The paper reports no LSTM.

Training as in the paper's train.py: Adam, learning rate 1e-2, batches of 100, 6000 steps.

    python examples/mnist1d_lstm.py --seed 0
    python examples/mnist1d_lstm.py --quick            # smoke run (8 steps of 5 values)
"""

from __future__ import annotations

import _recurrent
from _common import parse_args, subset, train_and_report

from flexcore import datasets

HIDDEN = 6
QUICK_STEPS = 8  # --quick reads 8 steps of 5 values: a short unroll compiles fast


def main(argv=None) -> float:
    args = parse_args(__doc__, epochs=150, argv=argv)
    train, test = subset(*datasets.mnist1d(), args.quick)
    steps = QUICK_STEPS if args.quick else _recurrent.STEPS
    net = _recurrent.build("lstm", args.seed, HIDDEN, steps=steps)
    return train_and_report("mnist1d_lstm", net, args, train, test, batch_size=100, learning_rate=1e-2,
                            prepare=_recurrent.prepare(steps=steps),
                            settings={"hidden": HIDDEN, "bidirectional": True, "steps": steps})


if __name__ == "__main__":
    main()
