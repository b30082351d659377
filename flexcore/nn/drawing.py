"""Pictures of a network's wiring in graphviz DOT (`Network.to_dot` / `Network.draw`).

The plain picture has one box per layer (name, class and shape, activation) and one edge per
connection (its kind); a recurrent connection is a dashed edge labelled by its delay ('t-2').
The unrolled picture shows the first time steps, one cluster per step: a layer that exists at
every step has a box in each cluster, a recurrent connection runs from step t-k to step t (from
the source's initial state while t-k < 0), and a layer that exists once sits below the steps,
reading their last step.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from ..ir.core import FlexcoreError
from .connections import Connection, Identity, ScalarGate
from .layers import InputLayer, Layer, MemoryLayer

__all__ = ["network_to_dot", "render_dot"]

_FILL = {"input": "#dde8ff", "output": "#ffe7c2", "memory": "#fff6c8", "layer": "#ffffff"}
_RECURRENT = "#b03a2e"


def _q(s: str) -> str:
    """A quoted DOT id or string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(*lines: str) -> str:
    # Escape each line, then join with DOT's own line break.
    return '"' + "\\n".join(x.replace("\\", "\\\\").replace('"', '\\"') for x in lines) + '"'


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _layer_lines(layer: Layer, seq_len: int | None, seq: bool) -> list[str]:
    lines = [layer.name]
    if isinstance(layer, InputLayer):
        steps = f", T={layer.sequence_length}" if layer.sequence_length else ""
        lines.append(f"input {_shape(layer.shape)}{steps}")
        return lines
    if isinstance(layer, MemoryLayer):
        lines += [f"memory {_shape(layer.shape)}", "c = F*c[t-1] + I*G"]
    else:
        lines.append(f"{type(layer).__name__} {_shape(layer.shape)}")
        act = layer.activation + (" (product)" if layer.combine == "product" else "")
        lines.append(act + (", layer norm" if layer.norm else ""))
    if layer.output:
        lines.append(f"output, loss {layer.loss}")
    if seq_len is not None and not seq:
        lines.append("once, after the last step")
    return lines


def _fill(layer: Layer) -> str:
    if isinstance(layer, InputLayer):
        return _FILL["input"]
    if layer.output:
        return _FILL["output"]
    return _FILL["memory"] if isinstance(layer, MemoryLayer) else _FILL["layer"]


def _node(node_id: str, layer: Layer, lines: list[str], indent: str = "  ") -> str:
    return (f"{indent}{_q(node_id)} [label={_label(*lines)}, shape=box, style=\"rounded,filled\", "
            f"fillcolor=\"{_fill(layer)}\"];")


def _kind(c: Connection) -> str:
    text = c.kind.replace("_", " ")
    if isinstance(c, ScalarGate):
        text = f"{c.gate} gate" + (f" i={c.index:g}" if c.gate == "ginfty" else "")
    elif isinstance(c, Identity) and c.scale != 1.0:
        text += f" x{c.scale:g}"
    if c.role:
        text += f" ({c.role})"
    return text


def _edge(src: str, dst: str, c: Connection, label: bool = True) -> str:
    attrs = []
    if c.recurrent:
        attrs += [f"label={_label(f't-{c.delay}' + (' ' + _kind(c) if label else ''))}", "style=dashed",
                  f"color=\"{_RECURRENT}\"", f"fontcolor=\"{_RECURRENT}\"", "constraint=false"]
    elif label:
        attrs.append(f"label={_label(_kind(c))}")
    return f"  {_q(src)} -> {_q(dst)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";"


def _header(net, title: str) -> list[str]:
    return [f"digraph {_q(net.name)} {{", "  rankdir=TB;", "  newrank=true;", f"  label={_label(title)};",
            "  labelloc=t;", '  node [fontname="Helvetica", fontsize=10];',
            '  edge [fontname="Helvetica", fontsize=9, color="#404040"];']


def network_to_dot(net, unrolled: bool = False, steps: int = 3) -> str:
    """DOT text for `net` (see the module docstring)."""
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise FlexcoreError(f"to_dot: steps must be a positive int, got {steps!r}")
    w = net.wiring
    if unrolled and w.T is not None:
        return _unrolled(net, int(steps))
    title = f"network '{net.name}'" + (f", sequence length {w.T}" if w.T else "")
    lines = _header(net, title)
    grouped: set[int] = set()
    for m in getattr(net, "meta_layers", []):
        mine = {id(layer) for layer in m.layers.values()}
        members = [layer for layer in net.layers if id(layer) in mine]
        grouped.update(id(layer) for layer in members)
        lines.append(f"  subgraph {_q('cluster_' + m.name)} {{")
        lines.append(f"    label={_label(f'GInfty {m.name}: w = {m.depth(net):.2f}, {m.blocks} blocks')};")
        lines.append('    style="rounded,dashed"; color="#7f8c8d";')
        for layer in members:
            lines.append(_node(layer.name, layer, _layer_lines(layer, w.T, w.seq[id(layer)]), "    "))
        lines.append("  }")
    for layer in w.order:
        if id(layer) not in grouped:
            lines.append(_node(layer.name, layer, _layer_lines(layer, w.T, w.seq[id(layer)])))
    for c in net.connections:
        lines.append(_edge(c.source.name, c.target.name, c))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _unrolled(net, steps: int) -> str:
    w = net.wiring
    seq_len = w.T
    shown = list(range(min(steps, seq_len)))
    if steps < seq_len:
        shown.append(seq_len - 1)  # static layers read the last step, so it is drawn too
    seq_layers = [layer for layer in w.order if w.seq[id(layer)]]
    lines = _header(net, f"network '{net.name}' unrolled: steps {', '.join(map(str, shown))} of {seq_len}")
    for t in shown:
        lines.append(f"  subgraph {_q(f'cluster_t{t}')} {{")
        lines.append(f"    label={_label(f't = {t}')}; style=rounded; color=\"#95a5a6\";")
        for layer in seq_layers:
            lines.append(_node(f"{layer.name}@{t}", layer, _layer_lines(layer, seq_len, True), "    "))
        lines.append("  }")
    for layer in w.order:
        if not w.seq[id(layer)]:
            lines.append(_node(layer.name, layer, _layer_lines(layer, seq_len, False)))
    declared: set[str] = set()  # initial-state and gap nodes, drawn on first use
    for layer in w.order:
        for c in w.incoming[id(layer)]:
            src = c.source
            for t in shown if w.seq[id(layer)] else [None]:
                dst = layer.name if t is None else f"{layer.name}@{t}"
                st = seq_len - 1 if t is None else t - c.delay
                if not w.seq[id(src)]:
                    origin = src.name if st >= 0 else None
                elif st in shown:
                    origin = f"{src.name}@{st}"
                elif st >= 0:  # a step left out of the picture
                    origin = "gap"
                    if origin not in declared:
                        declared.add(origin)
                        left_out = f"step {steps}" if steps == seq_len - 2 else f"steps {steps}..{seq_len - 2}"
                        lines.append(f"  {_q(origin)} [label={_label(left_out)}, shape=plaintext];")
                else:
                    origin = None
                if origin is None:  # before t = 0: the source's initial state
                    origin = f"{src.name}@init"
                    if origin not in declared:
                        declared.add(origin)
                        kind = src.initial_state if isinstance(src.initial_state, str) else "given"
                        lines.append(f"  {_q(origin)} [label={_label(src.name, f'initial state ({kind})')}, "
                                     "shape=box, style=\"rounded,dotted\"];")
                lines.append(_edge(origin, dst, c, label=False))
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_dot(dot: str, path: str) -> str:
    """Render DOT text with graphviz's `dot` into `path` (format from the suffix)."""
    exe = shutil.which("dot")
    if exe is None:
        raise FlexcoreError("drawing needs graphviz's `dot` program (e.g. apt-get install graphviz); "
                            "to_dot() gives the text")
    fmt = str(path).rsplit(".", 1)[-1].lower()
    if fmt not in ("svg", "png", "pdf"):
        raise FlexcoreError(f"draw: unknown image format '{fmt}'; use .svg, .png or .pdf")
    res = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot.encode(), capture_output=True)
    if res.returncode != 0:
        raise FlexcoreError(f"graphviz `dot` failed: {res.stderr.decode(errors='replace').strip()}")
    return str(path)
