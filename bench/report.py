"""The results as a text table, JSON and Markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .harness import FAILED, LOSS_RTOL, OK, Row

HEADER = ("case", "config", "mode", "peer", "flexcore", "peer time", "peer/flexcore", "flexcore peak",
          "peer peak", "status")
RATIO_NOTE = ("peer/flexcore is the median over rounds of (peer time / flexcore time) measured in the same "
              "round; > 1 means flexcore is faster.  Times are medians per call, (+-x%) half the interquartile "
              "range.")


METHOD = f"""How these numbers are made (`python -m bench`, bench/):
- Each model exists in flexcore and in the peer with the same weights (copied across) and the same
  data.  Before anything is timed, the peer's loss on the first training step must equal flexcore's
  to float32 accuracy (relative {LOSS_RTOL:g}), and so must the inference outputs; where the parameters are
  the same one for one (all but torch's cells, which keep two biases per gate), the loss after one
  SGD step must agree too.  A mismatch is a FAILED row and a non-zero exit, never a number.
- A training step is forward, backward and SGD update (learning rate 0.01); for flexcore it is one
  call of the compiled train function with fixed arrays.  Inference is a forward pass to softmax
  probabilities.
- flexcore and its peers are timed in rounds (A B C A B C ...) after warm-up; a repetition lasts at
  least a few tens of milliseconds (several calls for fast steps).  Times are medians per call;
  ratios are medians of the per-round ratios, so a machine that drifts between rounds moves both.
- Every case runs in a process of its own; threads: 2 for every library; OpenBLAS overrides
  (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE) are removed so numpy and PyTensor run at their best.
"""


def fmt_time(st: dict[str, Any] | None, mode: str) -> str:
    if not st:
        return "-"
    med = st["median_ms"]
    half = 50.0 * st.get("spread", 0.0)
    if mode == "compile":
        text = f"{med / 1e3:.3g} s"
    elif med >= 100:
        text = f"{med:.0f} ms"
    else:
        text = f"{med:.3g} ms"
    return f"{text} (+-{half:.0f}%)" if st.get("reps", 1) > 1 else text


def fmt_ratio(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    m = r["median"]
    return f"{m:.3g}" if m < 100 else f"{m:.0f}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1 << 20:
        return f"{n / 1024:.0f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def cells(rows: Sequence[Row]) -> tuple[list[list[str]], list[str]]:
    """Table cells per row, and the footnotes the status column points at."""
    out: list[list[str]] = []
    notes: list[str] = []
    for r in rows:
        status = r.status
        if r.note:
            if r.note not in notes:
                notes.append(r.note)
            status = f"{status} [{notes.index(r.note) + 1}]"
        case = r.case + (" *" if r.reduced else "")
        out.append([case, r.config, r.mode, r.peer, fmt_time(r.flexcore, r.mode), fmt_time(r.peer_time, r.mode),
                    fmt_ratio(r.ratio), fmt_bytes(r.flexcore_bytes), fmt_bytes(r.peer_bytes), status])
    return out, notes


def load_warning(meta: dict[str, Any]) -> str:
    """A warning when other processes shared the CPUs during the run, or ''."""
    loads = [v[0] for v in (meta.get("loadavg_start"), meta.get("loadavg")) if v]
    cpus = meta.get("cpus") or 1
    if not loads or max(loads) <= 0.5 * cpus:
        return ""
    return (f"WARNING: the machine was busy (1-minute load average up to {max(loads):.1f} on {cpus} CPUs): "
            "other processes shared the cores, which hurts multi-threaded peers (torch's 2-thread OpenMP pool "
            "above all) far more than single-threaded code; do not read these ratios as the frameworks' own.")


def text_table(rows: Sequence[Row], max_config: int = 60) -> str:
    body, notes = cells(rows)
    for line in body:
        if len(line[1]) > max_config:
            line[1] = line[1][: max_config - 3] + "..."
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(HEADER)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    lines = [fmt.format(*HEADER), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*line) for line in body]
    lines.append("")
    lines.append(RATIO_NOTE)
    if any(r.reduced for r in rows):
        lines.append("* reduced size (--quick); the config names the --full size.")
    for i, n in enumerate(notes, 1):
        lines.append(f"[{i}] {n}")
    return "\n".join(lines)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def markdown(rows: Sequence[Row], meta: dict[str, Any], title: str) -> str:
    body, notes = cells(rows)
    lines = [f"# {title}", ""]
    lines += machine_lines(meta)
    if load_warning(meta):
        lines += ["", f"**{load_warning(meta)}**"]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_md_escape(c) for c in line) + " |" for line in body]
    lines += ["", RATIO_NOTE]
    if any(r.reduced for r in rows):
        lines.append("`*` reduced size (--quick); the config names the --full size.")
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"{i}. {_md_escape(n)}" for i, n in enumerate(notes, 1)]
    for n in meta.get("notes", []):
        lines.append(f"- {n}")
    lines += ["", METHOD.rstrip()]
    by_method: dict[str, list[str]] = {}
    for r in rows:
        if r.peer_memory_method and r.peer not in by_method.setdefault(r.peer_memory_method, []):
            by_method[r.peer_memory_method].append(r.peer)
    lines += ["", "Peak memory of one call: flexcore: Function.peak_bytes of the compiled function (its memory plan, "
              "parameters and inputs included); "
              + "; ".join(f"{', '.join(peers)}: {method}" for method, peers in by_method.items()) + "."]
    return "\n".join(lines) + "\n"


def _load(v: Any) -> str:
    return "/".join(f"{x:.2f}" for x in v) if v else "-"


def machine_lines(meta: dict[str, Any]) -> list[str]:
    v = meta.get("versions", {})
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} kernel {b.get('architecture')} "
                     f"({b.get('num_threads')} threads, {str(b.get('filepath', '')).rsplit('/', 1)[-1]})"
                     for b in meta.get("blas", []) if "error" not in b)
    removed = meta.get("openblas_overrides_removed") or {}
    lines = [
        f"- mode: {meta.get('mode')}; run {meta.get('date')}; {meta.get('elapsed_s', 0):.0f} s in all",
        f"- CPU: {meta.get('cpu')} ({meta.get('cpus')} CPUs); flexcore ISA: {meta.get('flexcore_isa')}; "
        f"torch CPU capability: {meta.get('torch_cpu_capability', '-')}",
        f"- threads: {meta.get('threads')} for every library (flexcore's GEMM: "
        f"{meta.get('flexcore_gemm_threads', '-')}); load average at the start "
        f"{_load(meta.get('loadavg_start'))}, at the end {_load(meta.get('loadavg'))} (1, 5, 15 min)",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + f", Python {meta.get('python')}",
        f"- BLAS: {blas or '-'}",
        "- OpenBLAS overrides removed for this run: "
        + (", ".join(f"{k}={val}" for k, val in removed.items()) if removed else "none were set"),
        f"- flexcore backend: {meta.get('flexcore_backend', '-')}; a training step is one call of the compiled "
        "train function (Network._fns['train']) with fixed arrays, not fit's loop",
    ]
    return lines


def to_json(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    return json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1, default=str)


def summary(rows: Sequence[Row]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.status] = out.get(r.status, 0) + 1
    return out


def exit_code(rows: Sequence[Row]) -> int:
    """Non-zero when any check failed."""
    return 1 if any(r.status == FAILED for r in rows) else 0


__all__ = ["OK", "exit_code", "markdown", "summary", "text_table", "to_json"]
