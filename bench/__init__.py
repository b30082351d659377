"""flexcore's side-by-side benchmarks against PyTorch, PyTensor and numpy (`python -m bench`).

Every figure is a ratio measured in one run: each model is first checked to compute the same loss
in flexcore and in the peer on the same weights and data, then both are timed in alternation.
"""
