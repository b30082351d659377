"""Reading graphs: debugprint text, DOT output and drawing with graphviz."""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest

import flexcore as fc
from flexcore.ir.core import toposort


def small_graph():
    x = fc.placeholder((4, 3), name="x")
    w = fc.shared(np.ones((3, 2), np.float32), name="w")
    h = fc.sigmoid(x @ w)
    return fc.sum(h * h), h  # h is read twice


def test_debugprint_shows_ops_shapes_names_and_repeats(capsys):
    y, _ = small_graph()
    buf = io.StringIO()
    text = fc.debugprint(y, file=buf)
    assert buf.getvalue() == text
    assert capsys.readouterr().out == ""  # file= takes the text instead of stdout
    for op in ("sum", "mul", "sigmoid", "matmul", "placeholder", "shared"):
        assert op in text
    assert "'x'" in text and "'w'" in text
    assert "(4, 3)" in text and "(3, 2)" in text and "(4, 2)" in text and "()" in text
    lines = text.splitlines()
    sig = [ln for ln in lines if "sigmoid" in ln]
    assert len(sig) == 2
    # The second sigmoid line is a back-reference: same id, marked, and its inputs not repeated.
    ids = [re.search(r"\[id (\w+)\]", ln).group(1) for ln in sig]
    assert ids[0] == ids[1]
    assert not sig[0].endswith("^") and sig[1].endswith("^")
    assert sum("matmul" in ln for ln in lines) == 1
    # Children are indented one level deeper than their parent.
    depth = {ln.strip(" |").split()[0]: ln.count("|") for ln in lines}
    assert depth["sum{keepdims=False}"] == 0 and depth["mul"] == 1 and depth["matmul"] == 3


def test_debugprint_prints_to_stdout_by_default(capsys):
    y, _ = small_graph()
    text = fc.debugprint(y)
    assert capsys.readouterr().out == text and "matmul" in text


def test_debugprint_max_depth_and_several_roots():
    y, h = small_graph()
    text = fc.debugprint([y, h], file=io.StringIO())
    assert text.splitlines()[0].startswith("sum")
    assert text.splitlines()[-1].startswith("sigmoid") and text.splitlines()[-1].endswith("^")
    shallow = fc.debugprint(y, file=io.StringIO(), max_depth=2)
    assert "mul" in shallow and "sigmoid" not in shallow


def test_debugprint_shows_constant_values():
    x = fc.placeholder((2,), name="x")
    text = fc.debugprint(x * 2.5, file=io.StringIO())
    assert "const 2.5" in text


NODE_RE = re.compile(r'^\s*"(\w+)" \[label="((?:[^"\\]|\\.)*)"')
EDGE_RE = re.compile(r'^\s*"(\w+)" -> "(\w+)";$')


def test_to_dot_is_one_line_per_node_and_per_input():
    y, _ = small_graph()
    dot = fc.to_dot(y, title='a "title"')
    assert dot.startswith("digraph")
    assert dot.rstrip().endswith("}")
    assert 'label="a \\"title\\""' in dot
    nodes = toposort([y])
    node_lines = [m for m in map(NODE_RE.match, dot.splitlines()) if m]
    edge_lines = [m for m in map(EDGE_RE.match, dot.splitlines()) if m]
    assert len(node_lines) == len(nodes) == 6
    assert len(edge_lines) == sum(len(v.inputs) for v in nodes) == 6  # mul reads h twice
    declared = {m.group(1) for m in node_lines}
    assert all(m.group(1) in declared and m.group(2) in declared for m in edge_lines)
    labels = [m.group(2) for m in node_lines]
    # Lines of a label are separated by DOT's \n, not by an escaped (printed) backslash.
    assert "matmul\\n(4, 2) float32" in labels
    assert "placeholder\\nx\\n(4, 3) float32" in labels
    assert not any("\\\\" in lb for lb in labels)


def test_to_dot_escapes_names():
    x = fc.placeholder((2,), name='say "hi" \\ bye')
    dot = fc.to_dot(fc.exp(x))
    assert 'say \\"hi\\" \\\\ bye' in dot
    assert len([ln for ln in dot.splitlines() if NODE_RE.match(ln)]) == 2


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
def test_draw_graph_writes_svg(tmp_path):
    y, _ = small_graph()
    path = tmp_path / "graph.svg"
    assert fc.draw_graph(y, str(path)) == str(path)
    svg = path.read_text()
    assert len(svg) > 0 and "<svg" in svg and svg.rstrip().endswith("</svg>")
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert "matmul" in texts and "x" in texts and "(4, 3) float32" in texts
    assert not any("\\" in t for t in texts)
    # Names that need escaping still give a valid drawing.
    odd = fc.placeholder((2,), name='say "hi"')
    fc.draw_graph(fc.exp(odd), str(tmp_path / "odd.svg"))
    assert "say &quot;hi&quot;" in (tmp_path / "odd.svg").read_text()


def test_draw_graph_rejects_unknown_formats(tmp_path):
    y, _ = small_graph()
    if shutil.which("dot") is None:
        with pytest.raises(fc.FlexcoreError, match="graphviz"):
            fc.draw_graph(y, str(tmp_path / "g.svg"))
    else:
        with pytest.raises(fc.FlexcoreError, match="unknown image format 'bmp'"):
            fc.draw_graph(y, str(tmp_path / "g.bmp"))
