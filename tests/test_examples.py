"""Smoke test of the real-data example scripts (examples/*.py): each one's --quick mode runs end
to end on a few hundred examples for two epochs, prints its test accuracy, and writes its
training curve, its network's picture and its JSON record."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("mnist1d")
pytest.importorskip("matplotlib")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
SCRIPTS = ["mnist1d_logistic", "mnist1d_mlp", "mnist1d_cnn", "mnist1d_gru", "mnist1d_lstm", "mnist1d_seed",
           "digits_cnn"]


def _script(name: str):
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    return importlib.import_module(name)


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run_writes_its_outputs(name, tmp_path, capsys):
    acc = _script(name).main(["--quick", "--seed", "1", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert f"{name} (seed 1, 2 epochs" in out and f"test accuracy {acc:.4f}" in out
    assert "epoch 2/2" in err  # the fit's progress bar
    with open(tmp_path / f"{name}_seed1.json") as f:
        rec = json.load(f)
    assert rec["quick"] and rec["seed"] == 1 and rec["epochs"] == 2
    assert rec["test_accuracy"] == pytest.approx(acc)
    # digits_cnn trains on its 300 images and their four one-pixel shifts
    n_train = 300 * (1 + len(_script(name).SHIFTS) if name == "digits_cnn" else 1)
    assert 0.0 <= acc <= 1.0 and rec["n_test"] == 200 and rec["n_train"] == n_train
    assert rec["steps"] == 2 * -(-n_train // rec["batch_size"])  # every batch of both epochs trained
    curve = tmp_path / f"{name}_seed1_curve.png"
    assert curve.stat().st_size > 1000
    picture = tmp_path / (f"{name}_net.png" if shutil.which("dot") else f"{name}_net.dot")
    assert picture.stat().st_size > 100
    if name == "digits_cnn":
        # Two epochs on 300 digits are far above chance (0.1); a broken conv, pooling or
        # gradient would not be.
        assert acc > 0.4


def test_run_all_report_from_records(tmp_path):
    run_all = _script("run_all")
    for seed, acc in ((0, 0.93), (1, 0.95)):
        rec = {"model": "mnist1d_cnn", "seed": seed, "quick": False, "test_accuracy": acc, "train_accuracy": 1.0,
               "train_seconds": 30.0, "epochs": 150, "steps": 6000, "parameters": 5210, "optimizer": "adam",
               "learning_rate": 0.01, "batch_size": 100}
        (tmp_path / f"mnist1d_cnn_seed{seed}.json").write_text(json.dumps(rec))
    (tmp_path / "mnist1d_mlp_seed0.json").write_text(json.dumps({"model": "mnist1d_mlp", "quick": True}))
    text = run_all.report(run_all.load_records(str(tmp_path)), str(tmp_path / "RESULTS.md"), "test")
    row = next(l for l in text.splitlines() if l.startswith("| MNIST-1D, 1-d CNN"))
    assert "94.0% ± 1.0%" in row and "| 94% |" in row and "0,1" in row
    mlp = next(l for l in text.splitlines() if l.startswith("| MNIST-1D, MLP"))
    assert "not run" in mlp  # a --quick record is not a result
