"""What `fit` returns: per-epoch metrics, and a picture of them."""

from __future__ import annotations

from typing import Any


class History:
    """Per-epoch metrics: `history['loss']` is the list of training losses, one per epoch;
    also 'accuracy', 'val_loss', 'val_accuracy', 'test_loss', 'test_accuracy', 'lr', 'time'
    where they apply."""

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.history: dict[str, list[float]] = {}

    def append(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.epochs.append(epoch)
        for k, v in metrics.items():
            self.history.setdefault(k, []).append(float(v))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def last(self, key: str) -> float:
        return self.history[key][-1]

    def __repr__(self) -> str:
        if not self.epochs:
            return "History(empty)"
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items() if k not in ("time", "lr"))
        return f"History({len(self.epochs)} epochs; last: {last})"
