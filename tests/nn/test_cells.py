"""LSTM, GRU and RNN recipes against torch.nn, outputs and parameter gradients, and three
one-line variations of the LSTM against a hand-written torch reference of each variation."""

from __future__ import annotations

import numpy as np
import pytest

from flexcore import ActivationLayer, FlexcoreError, InputLayer, Network
from flexcore.nn import cells

torch = pytest.importorskip("torch")

REF = "reference"
N, T, F, H = 3, 5, 4, 6
TORCH_DT = {"float64": torch.float64, "float32": torch.float32}


def assert_close(actual, want, dtype: str, what: str = "") -> None:
    """float64 runs agree to rounding; float32 runs carry float32 rounding through T steps of
    the recurrence, summed in another order than torch's: measured 2e-7 of the largest entry,
    so 1e-5 of it (and of values of order 1) is a tenfold margin, not a blanket."""
    rel = 1e-12 if dtype == "float64" else 1e-5
    scale = max(float(np.abs(want).max()), 1e-3)
    np.testing.assert_allclose(actual, want, rtol=0, atol=rel * scale, err_msg=what)


def data(dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, T, F)).astype(dtype)
    target = rng.normal(size=(N, T, H)).astype(dtype)
    return x, target


def cell_net(kind: str, dtype: str, **kw):
    """x -> cell -> y, where y is h at every step (identity, no parameters), loss mse."""
    net = Network(f"{kind}-net")
    x = InputLayer((F,), sequence_length=T, name="x")
    cell = getattr(cells, kind)(net, x, H, **kw)
    y = ActivationLayer((H,), name="y", output=True, loss="mse", loss_steps="all", bias=False)
    net.connect_identity(cell.out, y, return_sequence=True)
    return net, x, cell


def torch_module(kind: str, dtype: str, seed: int = 0):
    torch.manual_seed(seed)
    m = getattr(torch.nn, kind.upper())(F, H, batch_first=True).to(TORCH_DT[dtype])
    with torch.no_grad():  # torch's default biases are small; make them count
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m


def torch_grads_by_name(kind: str, cell, m) -> dict[str, np.ndarray]:
    """torch's parameter gradients under flexcore's parameter names.  flexcore has one bias per
    gate, b_ih + b_hh, whose gradient is torch's b_ih gradient (equal to b_hh's), except GRU's
    n gate, whose two biases stay apart (b_hn sits inside r * (...))."""
    w_ih, w_hh = m.weight_ih_l0.grad.numpy(), m.weight_hh_l0.grad.numpy()
    b_ih, b_hh = m.bias_ih_l0.grad.numpy(), m.bias_hh_l0.grad.numpy()
    out = {}
    for k, g in enumerate(cells._GATES[kind]):
        rows = slice(k * H, (k + 1) * H)
        out[f"{cell.conns[f'x->{g}'].name}.W"] = w_ih[rows].T
        if kind == "gru" and g == "n":
            out[f"{cell.conns['h->hn'].name}.W"] = w_hh[rows].T
            out[f"{cell.layers['n'].name}.b"] = b_ih[rows]
            out[f"{cell.layers['hn'].name}.b"] = b_hh[rows]
        else:
            out[f"{cell.conns[f'h->{g}'].name}.W"] = w_hh[rows].T
            out[f"{cell.layers[g].name}.b"] = b_ih[rows]
            np.testing.assert_allclose(
                b_ih[rows], b_hh[rows], rtol=1e-12 if b_ih.dtype == np.float64 else 1e-5
            )
    return out


def _backends():
    from flexcore import _native

    cpu = pytest.param("cpu", marks=pytest.mark.skipif(not _native.available, reason="no native extension"))
    return [REF, cpu]


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_cell_matches_torch_outputs_and_gradients(kind, dtype, backend):
    """On the cpu backend the LSTM runs as fused cells (flexcore.passes.rnn)."""
    net, _, cell = cell_net(kind, dtype)
    net.compile(N, backend=backend, dtype=dtype)
    m = torch_module(kind, dtype)
    cells.copy_from_torch(net, cell, m)
    x, target = data(dtype)

    out_t, _ = m(torch.tensor(x))
    loss_t = torch.nn.functional.mse_loss(out_t, torch.tensor(target))
    loss_t.backward()

    assert_close(net.predict(x), out_t.detach().numpy(), dtype)
    assert net.evaluate((x, target))["loss"] == pytest.approx(
        loss_t.item(), rel=1e-6 if dtype == "float32" else 1e-12
    )

    grads = net.gradients((x, target))
    want = torch_grads_by_name(kind, cell, m)
    assert set(grads) == set(want)  # every flexcore parameter is checked
    for name, g in want.items():
        assert grads[name].dtype == np.dtype(dtype)
        assert_close(grads[name], g, dtype, name)


def test_copy_from_torch_refuses_a_mismatch():
    net, _, cell = cell_net("lstm", "float64")
    with pytest.raises(FlexcoreError, match="compile"):
        cells.copy_from_torch(net, cell, torch.nn.LSTM(F, H))
    net.compile(N, backend=REF, dtype="float64")
    with pytest.raises(FlexcoreError, match="GRU"):
        cells.copy_from_torch(net, cell, torch.nn.GRU(F, H))
    with pytest.raises(FlexcoreError, match="hidden size 7"):
        cells.copy_from_torch(net, cell, torch.nn.LSTM(F, 7))


# ---------------------------------------------------------------------------------------
# variations: each one line on top of the recipe, checked against a torch reference of it
# ---------------------------------------------------------------------------------------


def reference_lstm(
    x: np.ndarray,
    w: dict[str, torch.Tensor],
    cell,
    *,
    peep: dict[str, int] | None = None,
    layer_norm: bool = False,
    aux: tuple[str, int] | None = None,
    hdelay: int = 1,
):
    """A hand-written LSTM over flexcore's parameter names, in torch (for its autograd).

    peep: gate -> delay of the c it reads through a full matrix (1: c[t-1], 0: c[t]).
    layer_norm: gate pre-activations and c are normalised over the hidden axis, then scaled by
    gamma and shifted by beta (and by the gate's bias).  aux: (layer name, delay): the input
    gate also reads tanh(x W_aux + b_aux) at t - delay.  hdelay: gates read h[t - hdelay]."""
    xs = torch.tensor(x)
    n = xs.shape[0]
    c_name, h_name = cell.c.name, cell.h.name

    def ln(v, layer):
        mu = v.mean(-1, keepdim=True)
        d = v - mu
        v = d / torch.sqrt((d * d).mean(-1, keepdim=True) + 1e-5)
        return v * w[f"{layer}.gamma"] + w[f"{layer}.beta"]

    zeros = torch.zeros(n, H, dtype=xs.dtype)
    hs, cs, auxs = [], [], []
    acts = {"i": torch.sigmoid, "f": torch.sigmoid, "g": torch.tanh, "o": torch.sigmoid}
    for t in range(xs.shape[1]):
        if aux is not None:
            auxs.append(torch.tanh(xs[:, t] @ w[f"x->{aux[0]}.W"] + w[f"{aux[0]}.b"]))
        h_prev = hs[t - hdelay] if t >= hdelay else zeros
        c_prev = cs[t - 1] if t >= 1 else zeros
        pre = {}
        for g in "ifg":
            gate = cell.layers[g].name
            pre[g] = xs[:, t] @ w[f"x->{gate}.W"] + h_prev @ w[f"{h_name}->{gate}@t-{hdelay}.W"]
            if peep and g in peep:
                pre[g] = pre[g] + c_prev @ w[f"{c_name}->{gate}@t-1.W"]
            if aux is not None and g == "i":
                a = auxs[t - aux[1]] if t >= aux[1] else torch.zeros_like(auxs[t])
                pre[g] = pre[g] + a @ w[f"{aux[0]}->{gate}@t-{aux[1]}.W"]
        gates = {}
        for g in "ifg":
            gate = cell.layers[g].name
            p = ln(pre[g], gate) if layer_norm else pre[g]
            gates[g] = acts[g](p + w[f"{gate}.b"])
        c = gates["f"] * c_prev + gates["i"] * gates["g"]
        o_name = cell.o.name
        po = xs[:, t] @ w[f"x->{o_name}.W"] + h_prev @ w[f"{h_name}->{o_name}@t-{hdelay}.W"]
        if peep and "o" in peep:
            suffix = f"@t-{peep['o']}" if peep["o"] else ""
            po = po + (c_prev if peep["o"] else c) @ w[f"{c_name}->{o_name}{suffix}.W"]
        o = torch.sigmoid((ln(po, o_name) if layer_norm else po) + w[f"{o_name}.b"])
        tc = torch.tanh(ln(c, cell.tanh_c.name) if layer_norm else c)
        hs.append(o * tc)
        cs.append(c)
    return torch.stack(hs, 1)


def check_against_reference(net, cell, **variant):
    dtype = "float64"
    net.compile(N, backend=REF, dtype=dtype)
    rng = np.random.default_rng(3)
    # Random values for every parameter (biases, gammas and betas included), so each matters.
    net.set_weights({k: rng.uniform(-0.7, 0.7, size=v.shape) for k, v in net.weights().items()})
    x, target = data(dtype, seed=4)
    w = {k: torch.tensor(v, requires_grad=True) for k, v in net.weights().items()}
    out_t = reference_lstm(x, w, cell, **variant)
    loss_t = torch.nn.functional.mse_loss(out_t, torch.tensor(target))
    loss_t.backward()

    np.testing.assert_allclose(net.predict(x), out_t.detach().numpy(), rtol=1e-9, atol=1e-12)
    grads = net.gradients((x, target))
    assert set(grads) == set(w)
    for k, v in w.items():
        assert v.grad is not None and np.abs(v.grad.numpy()).max() > 0, (
            f"{k} does not affect the loss"
        )
        np.testing.assert_allclose(grads[k], v.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)
    return out_t.detach().numpy()


def test_plain_lstm_matches_the_hand_written_reference():
    # The reference itself is checked once on the plain recipe (against torch above, too).
    net, _, cell = cell_net("lstm", "float64")
    check_against_reference(net, cell)


def test_peephole_lstm():
    net, _, cell = cell_net("lstm", "float64", peephole=True)
    peep = check_against_reference(net, cell, peep={"i": 1, "f": 1, "o": 1})
    # The peepholes change the numbers: the same weights without them give something else.
    net2, _, _ = cell_net("lstm", "float64")
    net2.compile(N, backend=REF, dtype="float64")
    net2.set_weights({k: v for k, v in net.weights().items() if k in net2.params})
    assert not np.allclose(net2.predict(data("float64", seed=4)[0]), peep, atol=1e-3)


def test_peephole_lstm_with_output_gate_reading_the_current_cell():
    # Gers & Schmidhuber's placement: i and f read c[t-1], o reads c[t] (three lines).
    net, _, cell = cell_net("lstm", "float64")
    net.connect_recurrent(cell.c, cell.i)
    net.connect_recurrent(cell.c, cell.f)
    net.connect_dense(cell.c, cell.o, return_sequence=True)
    check_against_reference(net, cell, peep={"i": 1, "f": 1, "o": 0})


def test_layer_norm_lstm():
    net, _, cell = cell_net("lstm", "float64", layer_norm=True)
    check_against_reference(net, cell, layer_norm=True)
    assert {f"{g.name}.gamma" for g in (cell.i, cell.f, cell.g, cell.o, cell.tanh_c)} <= set(
        net.weights()
    )


def test_lstm_gate_reads_another_layer_two_steps_back():
    net, x, cell = cell_net("lstm", "float64")
    aux = ActivationLayer((5,), activation="tanh", name="aux")
    net.connect_dense(x, aux, return_sequence=True)
    net.connect_recurrent(aux, cell.i, delay=2)  # the one line
    check_against_reference(net, cell, aux=("aux", 2))


def test_lstm_reading_h_three_steps_back():
    net, _, cell = cell_net("lstm", "float64", delay=3)
    check_against_reference(net, cell, hdelay=3)
