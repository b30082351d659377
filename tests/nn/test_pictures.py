"""Pictures: `Network.to_dot` / `draw` (graphviz) and `History.plot` (matplotlib) render real,
non-blank images that show what the network is."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from flexcore import ActivationLayer, FlexcoreError, InputLayer, Network
from flexcore.nn import History, cells, ginfty

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's `dot` program is not installed")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def seed_net() -> Network:
    """The seed program's topology: L5 at t-1 feeds L2 back; L6 and L4 exist once."""
    net = Network("Demo")
    L1 = InputLayer((10,), sequence_length=4, name="L1")
    L2 = ActivationLayer((30,), activation="sigmoid", name="L2")
    L3 = ActivationLayer((15,), activation="sigmoid", name="L3")
    L4 = ActivationLayer((10,), activation="softmax", output=True, loss="nll", name="L4")
    L5 = ActivationLayer((5,), activation="sigmoid", name="L5")
    L6 = ActivationLayer((20,), activation="sigmoid", name="L6")
    net.connect_dense(L1, L2, return_sequence=True)
    net.connect_dense(L2, L3, return_sequence=True)
    net.connect_recurrent(L5, L2)
    net.connect_dense(L3, L5, return_sequence=True)
    net.connect_dense(L5, L6)
    net.connect_dense(L6, L4)
    return net


def delay2_net() -> Network:
    net = Network("d2")
    x = InputLayer((3,), sequence_length=5, name="x")
    h = ActivationLayer((4,), activation="tanh", name="h")
    y = ActivationLayer((2,), activation="softmax", output=True, loss="nll", name="y")
    net.connect_dense(x, h, return_sequence=True)
    net.connect_recurrent(h, h, delay=2)
    net.connect_dense(h, y)
    return net


def edges(dot: str) -> list[tuple[str, str, str]]:
    """(source, target, attributes) of each edge line of DOT text."""
    return re.findall(r'^\s*"([^"]+)" -> "([^"]+)"(?: \[(.*)\])?;$', dot, flags=re.M)


def assert_png(path) -> None:
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    img = matplotlib.image.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    # Not blank: many distinct colours, not one background colour.
    colours = np.unique(img.reshape(-1, img.shape[2]), axis=0)
    assert len(colours) > 10 and float(img.var()) > 1e-3


def svg_root(path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == SVG + "svg"
    return root


# ---------------------------------------------------------------------------------------
# DOT text
# ---------------------------------------------------------------------------------------


def test_dot_text_has_every_layer_and_connection_with_delays():
    dot = seed_net().to_dot()
    for name, shape, act in [("L1", "(10,)", None), ("L2", "(30,)", "sigmoid"), ("L4", "(10,)", "softmax")]:
        m = re.search(rf'^\s*"{name}" \[label="([^"]*)"', dot, flags=re.M)
        assert m, name
        assert shape in m.group(1) and (act is None or act in m.group(1))
    es = {(s, t): a for s, t, a in edges(dot)}
    assert set(es) == {("L1", "L2"), ("L2", "L3"), ("L5", "L2"), ("L3", "L5"), ("L5", "L6"), ("L6", "L4")}
    assert "style=dashed" in es[("L5", "L2")] and 'label="t-1 dense"' in es[("L5", "L2")]
    assert "dashed" not in es[("L1", "L2")]
    assert "once, after the last step" in dot  # L6 and L4 exist once
    assert 'label="t-2 dense"' in delay2_net().to_dot()


def test_unrolled_dot_links_step_t_minus_k_to_step_t():
    net = delay2_net()
    dot = net.to_dot(unrolled=True, steps=3)
    es = [(s, t) for s, t, _ in edges(dot)]
    for t in range(3):
        assert f'subgraph "cluster_t{t}"' in dot
        assert (f"x@{t}", f"h@{t}") in es
    assert ("h@0", "h@2") in es  # the delay-2 recurrence
    assert ("h@init", "h@0") in es and ("h@init", "h@1") in es  # before t = 0: the initial state
    assert 'subgraph "cluster_t4"' in dot  # the last step, which y reads, is drawn too
    assert ("h@4", "y") in es and ("h@2", "h@4") in es
    assert '"gap"' not in dot  # step 4 reads step 2, which is drawn
    # With delay 1, step 3 reads step 2, which is left out: the edge comes from the gap.
    dot = seed_net().to_dot(unrolled=True, steps=2)
    es = [(s, t) for s, t, _ in edges(dot)]
    assert ("gap", "L2@3") in es and ("L5@0", "L2@1") in es and ("L5@init", "L2@0") in es
    assert ("L5@3", "L6") in es and ("L6", "L4") in es


def test_unrolled_dot_of_a_short_sequence_has_every_step():
    dot = delay2_net().to_dot(unrolled=True, steps=10)
    assert all(f'"cluster_t{t}"' in dot for t in range(5)) and '"gap"' not in dot


def test_ginfty_is_drawn_as_a_group_with_its_depth():
    net = Network("g")
    x = InputLayer(8, name="x")
    g = ginfty(net, x, 4, depth=2.5)
    y = ActivationLayer(2, activation="softmax", output=True, loss="nll", name="y")
    net.connect_dense(g.out, y)
    dot = net.to_dot()
    assert 'subgraph "cluster_ginfty"' in dot and "w = 2.50, 3 blocks" in dot
    assert "ginfty gate i=2" in dot


def test_dot_of_an_lstm_names_roles():
    net = Network("l")
    x = InputLayer(3, sequence_length=2, name="x")
    cell = cells.lstm(net, x, 4)
    y = ActivationLayer(2, activation="softmax", output=True, loss="nll", name="y")
    net.connect_dense(cell.out, y)
    dot = net.to_dot()
    assert "identity (forget)" in dot and "memory (4,)" in dot


# ---------------------------------------------------------------------------------------
# rendered images
# ---------------------------------------------------------------------------------------


@needs_dot
def test_draw_png_is_a_real_picture(tmp_path):
    path = seed_net().draw(str(tmp_path / "seed.png"))
    assert_png(path)


@needs_dot
@pytest.mark.parametrize("unrolled", [False, True])
def test_draw_svg_shows_the_layers_and_edges(tmp_path, unrolled):
    path = seed_net().draw(str(tmp_path / "seed.svg"), unrolled=unrolled)
    root = svg_root(path)
    text = " ".join(t.text or "" for t in root.iter(SVG + "text"))
    for name in ("L1", "L2", "L3", "L4", "L5", "L6"):
        assert name in text
    edge_groups = [g for g in root.iter(SVG + "g") if g.get("class") == "edge"]
    assert len(edge_groups) >= 6 and all(g.find(SVG + "path") is not None for g in edge_groups)
    if unrolled:
        assert "t = 0" in text and "t = 3" in text


def test_draw_errors(tmp_path, monkeypatch):
    net = seed_net()
    with pytest.raises(FlexcoreError, match="unknown image format 'gif'"):
        net.draw(str(tmp_path / "x.gif"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FlexcoreError, match="apt-get install graphviz"):
        net.draw(str(tmp_path / "x.png"))
    with pytest.raises(FlexcoreError, match="steps must be a positive int"):
        net.to_dot(unrolled=True, steps=0)


# ---------------------------------------------------------------------------------------
# training curves
# ---------------------------------------------------------------------------------------


def history(with_val=True) -> History:
    h = History()
    for e in range(6):
        m = {"loss": 1.0 / (e + 1), "accuracy": 0.5 + 0.08 * e, "lr": 0.1, "time": 0.01}
        if with_val:
            m.update(val_loss=1.2 / (e + 1) + 0.05, val_accuracy=0.45 + 0.07 * e, test_loss=1.3 / (e + 1))
        h.append(e, m)
    return h


def test_history_plot_png(tmp_path):
    assert_png(history().plot(str(tmp_path / "h.png")))


def test_history_plot_svg_has_both_panels_and_the_curves(tmp_path):
    root = svg_root(history().plot(str(tmp_path / "h.svg")))
    text = [t.text for t in root.iter(SVG + "text")]
    for word in ("loss", "accuracy", "epoch", "train", "validation", "test"):
        assert word in text
    # The curves are the paths clipped to the axes (with the grid, in grey); one colour per
    # split: train, validation, test.
    strokes = {m.group(1) for p in root.iter(SVG + "path") if p.get("clip-path")
               for m in [re.search(r"stroke: (#[0-9a-f]{6})", p.get("style") or "")] if m}
    assert {"#1f77b4", "#ff7f0e", "#2ca02c"} <= strokes


def test_history_plot_errors(tmp_path):
    with pytest.raises(FlexcoreError, match="empty"):
        History().plot(str(tmp_path / "h.png"))
    with pytest.raises(FlexcoreError, match="unknown image format"):
        history().plot(str(tmp_path / "h.bmp"))
