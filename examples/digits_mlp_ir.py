"""An MLP on scikit-learn's digits, written directly in the IR: placeholders, shared weights,
`flexcore.grad` and one compiled `flexcore.function` that returns the loss and applies the SGD
updates in the same call.

    ./run python examples/digits_mlp_ir.py
"""

from __future__ import annotations

import numpy as np

import flexcore as fc
from flexcore.datasets import digits


def train(epochs: int = 40, batch: int = 32, lr: float = 0.2, hidden: int = 128, seed: int = 0, backend=None) -> float:
    (x_tr, y_tr), (x_te, y_te) = digits(seed=seed)
    rng = np.random.default_rng(seed)
    n_in, n_out = x_tr.shape[1], 10

    def glorot(a, b):
        lim = np.sqrt(6.0 / (a + b))
        return rng.uniform(-lim, lim, (a, b)).astype(np.float32)

    w1, b1 = fc.shared(glorot(n_in, hidden), "w1"), fc.shared(np.zeros(hidden, np.float32), "b1")
    w2, b2 = fc.shared(glorot(hidden, n_out), "w2"), fc.shared(np.zeros(n_out, np.float32), "b2")
    params = [w1, b1, w2, b2]

    def logits_of(x):
        return fc.relu(x @ w1 + b1) @ w2 + b2

    x = fc.placeholder((batch, n_in), name="x")
    y = fc.placeholder((batch,), np.int64, name="y")
    loss = fc.softmax_cross_entropy(logits_of(x), y)
    grads = fc.grad(loss, params)
    step = fc.function([x, y], loss, updates=[(p, p - lr * g) for p, g in zip(params, grads)], backend=backend)

    xt = fc.placeholder(x_te.shape, name="x_test")
    predict = fc.function([xt], logits_of(xt), backend=backend)

    for epoch in range(epochs):
        order = rng.permutation(len(x_tr))
        losses = [step(x_tr[idx], y_tr[idx]) for idx in np.array_split(order[: len(order) // batch * batch], len(order) // batch)]
        if epoch % 10 == 9 or epoch == epochs - 1:
            acc = float(np.mean(np.argmax(predict(x_te), 1) == y_te))
            print(f"epoch {epoch + 1:3d}  train loss {np.mean(losses):.4f}  test accuracy {acc:.4f}")
    return acc


if __name__ == "__main__":
    acc = train()
    print(f"digits MLP (IR level): test accuracy {acc:.4f}")
