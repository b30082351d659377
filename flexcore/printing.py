"""Reading graphs: `debugprint` (indented text, like Theano's) and `to_dot` (graphviz)."""

from __future__ import annotations

import io
import shutil
import subprocess
from typing import Sequence

from .ir.core import FlexcoreError, Var, toposort

__all__ = ["debugprint", "to_dot", "draw_graph"]

_HIDDEN_ATTRS = {"id"}


def _attr_text(v: Var) -> str:
    items = [(k, val) for k, val in v.attrs if k not in _HIDDEN_ATTRS and val is not None]
    if not items:
        return ""
    return "{" + ", ".join(f"{k}={val}" for k, val in items) + "}"


def _ids(roots: Sequence[Var]) -> dict[int, str]:
    def name(i: int) -> str:
        s = ""
        i += 1
        while i:
            i, r = divmod(i - 1, 26)
            s = chr(65 + r) + s
        return s

    return {id(v): name(i) for i, v in enumerate(toposort(roots))}


def debugprint(roots: Var | Sequence[Var], file=None, max_depth: int | None = None) -> str:
    """Print the graph under `roots` as an indented tree; a node seen before is shown by its id
    only.  Returns the text too."""
    roots = [roots] if isinstance(roots, Var) else list(roots)
    ids = _ids(roots)
    out = io.StringIO()
    printed: set[int] = set()

    stack = [(r, 0) for r in reversed(roots)]
    while stack:
        v, depth = stack.pop()
        pad = " |" * depth
        nm = f" '{v.name}'" if v.name else ""
        head = f"{pad}{v.op}{_attr_text(v) if v.op != 'const' else ''}"
        if v.op == "const":
            head += f" {v.attr['value']!r}"
        line = f"{head} [id {ids[id(v)]}]{nm} {v.shape} {v.dtype}"
        if id(v) in printed and v.inputs:
            out.write(line + " ^\n")
            continue
        out.write(line + "\n")
        printed.add(id(v))
        if max_depth is None or depth + 1 < max_depth:
            for x in reversed(v.inputs):
                stack.append((x, depth + 1))
    text = out.getvalue()
    print(text, end="", file=file)
    return text


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(roots: Var | Sequence[Var], title: str | None = None) -> str:
    """The graph under `roots` in graphviz DOT: ops as boxes, leaves as ellipses."""
    roots = [roots] if isinstance(roots, Var) else list(roots)
    ids = _ids(roots)
    lines = ["digraph flexcore {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    if title:
        lines.append(f'  label="{_dot_escape(title)}";')
    root_ids = {id(r) for r in roots}
    for v in toposort(roots):
        # Escape each line, then join with DOT's own line break (escaping the joined text would
        # turn the break into a literal backslash-n).
        parts = [v.op] + ([v.name] if v.name else []) + [f"{v.shape} {v.dtype}"]
        label = "\\n".join(_dot_escape(p) for p in parts)
        shape = "ellipse" if v.is_leaf else "box"
        style = ', style=filled, fillcolor="#dde8ff"' if v.op in ("shared", "placeholder") else ""
        if id(v) in root_ids:
            style = ', style=filled, fillcolor="#ffe7c2"'
        # Quoted ids: a bare letter id of a large graph could spell a DOT keyword (NODE, EDGE).
        lines.append(f'  "{ids[id(v)]}" [label="{label}", shape={shape}{style}];')
        for x in v.inputs:
            lines.append(f'  "{ids[id(x)]}" -> "{ids[id(v)]}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_graph(roots: Var | Sequence[Var], path: str) -> str:
    """Render `to_dot(roots)` to an image with graphviz's `dot` (format from the suffix)."""
    exe = shutil.which("dot")
    if exe is None:
        raise FlexcoreError("drawing needs graphviz's `dot` program (e.g. apt-get install graphviz); to_dot() gives the text")
    fmt = path.rsplit(".", 1)[-1].lower()
    if fmt not in ("svg", "png", "pdf"):
        raise FlexcoreError(f"draw_graph: unknown image format '{fmt}'; use .svg, .png or .pdf")
    subprocess.run([exe, f"-T{fmt}", "-o", path], input=to_dot(roots).encode(), check=True)
    return path
