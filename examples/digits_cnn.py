"""A 2-d CNN on scikit-learn's 8x8 digits (1797 images; 80% train / 20% test, stratified):
conv 3x3 (32, relu) -> conv 3x3 (64, relu) -> max-pool 2x2 -> dense 128 (relu, dropout 0.25
into it) -> softmax over 10 classes.  Adam, learning rate 1e-3 with a cosine decay over the
epochs, an L2 penalty of 1e-4 on the weights, batches of 32.  The training images are augmented
with their four one-pixel shifts (up, down, left, right; 5x the training set, the test set
untouched): without them the same recipe gave 97.8-98.3% (seeds 0-2), with them 99.4-99.7%.

    python examples/digits_cnn.py --seed 0
    python examples/digits_cnn.py --quick
"""

from __future__ import annotations

import numpy as np

from _common import cosine, parse_args, subset, train_and_report

from flexcore import ActivationLayer, FeatureMapLayer, InputLayer, Network, datasets

L2 = 1e-4


def build(seed: int) -> Network:
    net = Network("digits_cnn", seed=seed)
    x = InputLayer((1, 8, 8), name="image")
    c1 = FeatureMapLayer((32, 8, 8), activation="relu", name="conv1")
    c2 = FeatureMapLayer((64, 8, 8), activation="relu", name="conv2")
    p = FeatureMapLayer((64, 4, 4), bias=False, name="pool")
    h = ActivationLayer(128, activation="relu", name="dense")
    y = ActivationLayer(10, activation="softmax", output=True, loss="nll", name="digit")
    net.connect_conv(x, c1, kernel_size=3)
    net.connect_conv(c1, c2, kernel_size=3)
    net.connect_pool(c2, p, mode="max", kernel_size=2)
    net.connect_dense(p, h, dropout=0.25)
    net.connect_dense(h, y)
    return net


SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (rows, columns) a copy of each image moves by


def augment(split):
    """The training split with its images shifted by one pixel each way appended (zeros enter)."""
    x, y = split
    images = x.reshape(len(x), 8, 8)
    copies = [images]
    for dy, dx in SHIFTS:
        moved = np.zeros_like(images)
        moved[:, max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)] = \
            images[:, max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):8 + min(-dx, 0)]
        copies.append(moved)
    return np.concatenate(copies).reshape(-1, *x.shape[1:]), np.concatenate([y] * len(copies))


def as_images(split):
    x, y = split
    return x.reshape(len(x), 1, 8, 8), y


def main(argv=None) -> float:
    args = parse_args(__doc__, epochs=40, argv=argv)
    train, test = subset(*datasets.digits(seed=0), args.quick)
    train = augment(train)
    return train_and_report("digits_cnn", build(args.seed), args, train, test, batch_size=32,
                            learning_rate=cosine(1e-3, args.epochs), l2=L2, prepare=as_images,
                            settings={"augmentation": f"{len(SHIFTS)} one-pixel shifts of each training image"})


if __name__ == "__main__":
    main()
