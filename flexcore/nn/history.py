"""What `fit` returns: per-epoch metrics, and a picture of them."""

from __future__ import annotations

from typing import Any

from ..ir.core import FlexcoreError

# panel -> the (train, validation, test) keys it draws
_SPLITS = {"loss": ("loss", "val_loss", "test_loss"), "accuracy": ("accuracy", "val_accuracy", "test_accuracy")}


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

    def plot(self, path: str, title: str | None = None) -> str:
        """Draw the training curves into an image (.png, .svg or .pdf by suffix) with matplotlib:
        a loss panel and, for classification, an accuracy panel, each with the train /
        validation / test curves there are.  Returns `path`."""
        if not self.epochs:
            raise FlexcoreError("History.plot: the history is empty (no epoch was trained)")
        fmt = str(path).rsplit(".", 1)[-1].lower()
        if fmt not in ("png", "svg", "pdf"):
            raise FlexcoreError(f"History.plot: unknown image format '{fmt}'; use .png, .svg or .pdf")
        try:
            # The object API, not pyplot: no global figure state and no GUI backend is touched.
            import matplotlib
            from matplotlib.figure import Figure
        except ImportError:
            raise FlexcoreError("History.plot needs matplotlib (pip install 'flexcore[plot]')") from None
        panels = [p for p in ("loss", "accuracy") if any(k in self.history for k in _SPLITS[p])]
        fig = Figure(figsize=(4.2 * len(panels), 3.2), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        x = [e + 1 for e in self.epochs]
        for ax, panel in zip(axes, panels):
            for key, label, style in zip(_SPLITS[panel], ("train", "validation", "test"), ("-", "--", ":")):
                if key in self.history:
                    ax.plot(x, self.history[key], style, marker="o", markersize=3, label=label)
            ax.set_xlabel("epoch")
            ax.set_ylabel(panel)
            ax.grid(True, alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text, not glyph paths
            fig.savefig(path, format=fmt, dpi=100)
        return str(path)

    def __repr__(self) -> str:
        if not self.epochs:
            return "History(empty)"
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items() if k not in ("time", "lr"))
        return f"History({len(self.epochs)} epochs; last: {last})"
