"""A worker process of `python -m bench`:

    python -m bench.worker CASE quick|full REPS OUT.json    one case's rows
    python -m bench.worker --meta OUT.json                  the machine record

Every case runs in a process of its own, so a case that crashes or hangs inside native code
costs that case, not the run, and each case starts with a fresh allocator (the memory figures
need it).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict


def main(argv: list[str]) -> int:
    from . import env

    env.limit_threads()
    if argv[0] == "--meta":
        from flexcore.backends import get_backend

        from . import cases

        meta = env.machine_record()
        meta["flexcore_backend"] = get_backend().name
        out, payload = argv[1], meta
    else:
        from . import cases

        case, mode, reps, out = argv
        current = {"model": ""}

        def log(msg: str) -> None:
            if msg.startswith("["):  # "[case] config": the model being set up now
                current["model"] = msg
            print(msg, file=sys.stderr, flush=True)

        def save(rows) -> None:  # after each model: a crash later in the case keeps these rows
            _write(out, {"rows": [asdict(r) for r in rows], "notes": settings.notes, "partial": True,
                         "current": current["model"]})

        settings = cases.Settings.for_mode(mode == "quick", int(reps) or None, log)
        settings.on_rows = save
        rows = cases.CASES[case](settings)
        # The BLAS libraries this case loaded (PyTensor's C modules link the system OpenBLAS)
        # and the kernel each picked.
        payload = {"rows": [asdict(r) for r in rows], "notes": settings.notes, "blas": env.blas_pools()}
    _write(out, payload)
    return 0


def _write(path: str, payload: dict) -> None:
    """Replace `path` whole (a crash never leaves half a file for the parent to read)."""
    tmp = f"{path}.part"
    with open(tmp, "w") as f:
        json.dump(payload, f, default=str)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
