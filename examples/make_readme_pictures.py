"""Regenerate the pictures in the README (small PNGs under docs/img/):

- seed_topology.png: the FlexNet seed's network drawn by `Network.draw` (graphviz)
- seed_unrolled.png: the same network unrolled over its first steps
- seed_history.png: its training curves on MNIST-1D from `History.plot` (matplotlib)

    ./run python examples/make_readme_pictures.py

examples/ginfty_parity.py draws docs/img/ginfty_parity.png (it takes a minute or two).
"""

from __future__ import annotations

import os

from flexcore import ActivationLayer, InputLayer, Network, datasets

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "img")


def seed_network() -> Network:
    """The seed's program: L5 at t-1 feeds L2; L6 and L4 read the last step only."""
    net = Network("Demo")
    L1 = InputLayer(input_shape=(10,), sequence_length=4, name="L1")  # noqa: N806
    L2 = ActivationLayer(input_shape=(300,), activation="sigmoid", name="L2")  # noqa: N806
    L3 = ActivationLayer(input_shape=(150,), activation="sigmoid", name="L3")  # noqa: N806
    L4 = ActivationLayer(input_shape=(10,), activation="softmax", output=True,  # noqa: N806
                         loss="negative_log_likelihood", name="L4")
    L5 = ActivationLayer(input_shape=(50,), activation="sigmoid", name="L5")  # noqa: N806
    L6 = ActivationLayer(input_shape=(200,), activation="sigmoid", name="L6")  # noqa: N806
    net.connect_dense(L1, L2, return_sequence=True)
    net.connect_dense(L2, L3, return_sequence=True)
    net.connect_recurrent(L5, L2)
    net.connect_dense(L3, L5, return_sequence=True)
    net.connect_dense(L5, L6)
    net.connect_dense(L6, L4)
    return net


def main(epochs: int = 30) -> None:
    os.makedirs(OUT, exist_ok=True)
    net = seed_network()
    for name, kw in (("seed_topology.png", {}), ("seed_unrolled.png", {"unrolled": True, "steps": 2})):
        print(net.draw(os.path.join(OUT, name), **kw))
    train, val, test = datasets.mnist1d(as_sequence=True, steps=4, validation_size=0.1, seed=0)
    net.compile(32, optimizer="adam")
    history = net.fit(train, epochs, 0.002, val, test, verbose=False)
    print(history)
    print(history.plot(os.path.join(OUT, "seed_history.png"), title="the seed network on MNIST-1D"))


if __name__ == "__main__":
    main()
