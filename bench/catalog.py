"""The case names, importable without loading flexcore, torch or PyTensor (the parent process of
`python -m bench` only orchestrates; every case runs in a worker process)."""

from __future__ import annotations

CASES: dict[str, str] = {
    "gemm": "GEMM: square 64 ... 2048 and the LSTM cases' recurrent shapes (flexcore, numpy, torch)",
    "lstm_fastrnns": "LSTM, input = hidden = 512, batch 64, T 100 (fastrnns)",
    "lstm_deepbench": "LSTM, hidden 256, batch 32, T 150 (DeepBench)",
    "rnnbench": "LSTM and vanilla RNN, hidden 128 and 512, batch 32, T 30 (rnn-benchmarks)",
    "lstm_small_input": "LSTM, input 64, hidden 256, batch 32, T 100 (the CPU backend issue's LSTM row)",
    "gru": "GRU, hidden 256, batch 32, T 100",
    "seed": "the FlexNet seed's topology (L5 -> L2 recurrent), batch 64, T 4 and 32",
    "conv_recurrent": "3 conv layers, the 3rd feeding the 1st at t+1, 1x28x28, batch 32, T 8",
    "mlp": "MLP 784-300-150-10, batch 64 and 256",
    "cnn": "small CNN conv32-pool-conv64-pool-fc128-fc10, 1x28x28, batch 64",
    "compile": "compile time of an LSTM at T = 10, 100, 1000 (must grow about linearly)",
}


def select(spec: str | None) -> list[str]:
    """Case names from a comma-separated list; a name may be a prefix ('lstm' picks every LSTM
    case).  Raises ValueError naming the valid cases for an unknown one."""
    if not spec:
        return list(CASES)
    chosen: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        hits = [c for c in CASES if c == part] or [c for c in CASES if c.startswith(part)]
        if not hits:
            raise ValueError(f"unknown case '{part}'; valid: {', '.join(CASES)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen
