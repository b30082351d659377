"""The benchmark harness (bench/): statistics, interleaving, the correctness pre-check, missing
rows and the writers, on tiny configurations.  Nothing here asserts on a measured time: the
timing logic runs on a fake clock, and real runs are checked for structure only."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest

from bench import cases, catalog, env, harness, report
from bench.harness import (
    FAILED,
    MISSING,
    OK,
    PEER_MISSING,
    MismatchError,
    Participant,
    Row,
    Stats,
)

# ---------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------


def test_stats_median_quantiles_and_spread():
    st = Stats([0.004, 0.001, 0.003, 0.002, 0.005])
    assert st.median == pytest.approx(0.003)
    assert st.quantile(0.25) == pytest.approx(0.002)
    assert st.quantile(0.75) == pytest.approx(0.004)
    assert st.spread == pytest.approx((0.004 - 0.002) / 0.003)
    d = st.as_dict()
    assert d["median_ms"] == pytest.approx(3.0) and d["min_ms"] == pytest.approx(1.0)
    assert d["max_ms"] == pytest.approx(5.0) and d["reps"] == 5
    # Even count: the median is the mean of the middle two; one sample: every quantile is it.
    assert Stats([1.0, 2.0, 3.0, 10.0]).median == pytest.approx(2.5)
    assert Stats([7.0]).quantile(0.9) == 7.0 and Stats([7.0]).spread == 0.0


def test_paired_ratio_is_per_round():
    # A drifting machine: both slow down together in round 3; the paired ratios stay 2.
    fc, peer = [1.0, 1.0, 3.0], [2.0, 2.0, 6.0]
    r = harness.paired_ratio(fc, peer)
    assert r.samples == [2.0, 2.0, 2.0] and r.median == 2.0
    with pytest.raises(ValueError):  # rounds must pair up
        harness.paired_ratio([1.0], [1.0, 2.0])


def test_calls_per_rep_and_rounds_for():
    assert harness.calls_per_rep(0.5, 0.1) == 1
    assert harness.calls_per_rep(0.001, 0.1) == 100
    assert harness.calls_per_rep(0.0, 0.1, max_calls=50) == 50
    assert harness.rounds_for(1.0, reps=3, budget_s=None, max_reps=None) == 3
    assert harness.rounds_for(0.1, reps=3, budget_s=2.0, max_reps=9) == 9  # 20 fit, capped at 9
    assert harness.rounds_for(0.5, reps=3, budget_s=2.0, max_reps=9) == 4
    assert harness.rounds_for(5.0, reps=3, budget_s=2.0, max_reps=9) == 3  # never below reps


class FakeClock:
    """Time advances only when a fake function 'runs'."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_alternate_interleaves_after_warmup_and_sizes_repetitions():
    clock = FakeClock()
    calls: list[str] = []

    def fn(name: str, cost: float):
        def run():
            calls.append(name)
            clock.now += cost
        return run

    samples = harness.alternate([fn("A", 0.01), fn("B", 0.04)], reps=3, warmup=2, min_rep_s=0.02, clock=clock, settle_s=0.0)
    # Warm-up: A twice, then B twice; then 3 rounds: A's repetition is 2 calls (0.02 s), B's is 1.
    assert calls[:4] == ["A", "A", "B", "B"]
    assert calls[4:] == ["A", "A", "B"] * 3
    assert samples[0] == pytest.approx([0.01] * 3) and samples[1] == pytest.approx([0.04] * 3)


def test_alternate_adds_rounds_within_budget():
    clock = FakeClock()

    def run():
        clock.now += 0.1

    samples = harness.alternate([run, run], reps=2, warmup=1, min_rep_s=0.0, clock=clock, budget_s=1.0, max_reps=20, settle_s=0.0)
    assert len(samples[0]) == len(samples[1]) == 5  # a round costs 0.2 s: 5 fit in 1 s


# ---------------------------------------------------------------------------------------
# the correctness pre-check
# ---------------------------------------------------------------------------------------


def test_check_loss_tolerance_and_loud_message():
    harness.check_loss("loss", 2.302585, 2.302585 * (1 + 2e-6))  # float32 rounding: passes
    with pytest.raises(MismatchError) as err:
        harness.check_loss("loss of step 1", 2.3026, 2.3126)
    msg = str(err.value)
    assert "2.3026" in msg and "2.3126" in msg and "relative difference" in msg
    assert err.value.flexcore_value == 2.3026 and err.value.peer_value == 2.3126
    with pytest.raises(MismatchError):
        harness.check_loss("loss", float("nan"), float("nan"))


def test_check_outputs_shape_and_values():
    a = np.array([[0.1, 0.9], [0.5, 0.5]])
    harness.check_outputs("probs", a, a + 1e-6)
    with pytest.raises(MismatchError, match="at \\(1, 0\\)"):
        harness.check_outputs("probs", a, a + np.array([[0, 0], [1e-2, 0]]))
    with pytest.raises(MismatchError, match="shape"):
        harness.check_outputs("probs", a, a[:1])
    big = np.full((2, 2), 1000.0)  # compared relative to the size of the entries
    harness.check_outputs("gemm", big, big + 0.005)
    with pytest.raises(MismatchError):
        harness.check_outputs("gemm", big, big + 0.05)


class Fake:
    """A participant whose losses and outputs are given."""

    def __init__(self, name, losses, out=(0.25, 0.75), fail_at=None, same_update=True):
        self.losses = list(losses)
        self.out = np.array(out)
        self.fail_at = fail_at
        self.n = 0
        self.p = Participant(name=name, train=self.train, infer=lambda: self.out, same_update=same_update,
                             train_memory=lambda: 1024, infer_memory=lambda: 512, memory_method="fake")

    def train(self):
        self.n += 1
        if self.fail_at is not None and self.n >= self.fail_at:
            raise RuntimeError("kernel exploded")
        return self.losses[min(self.n - 1, len(self.losses) - 1)]


TINY = {"reps": 2, "warmup": 1, "min_rep_s": 0.0}


def test_precheck_compares_first_loss_and_second_only_when_parameters_match():
    fc = Fake("flexcore", [2.0, 1.5]).p
    same = Fake("same", [2.0, 1.5]).p
    other_param = Fake("two biases", [2.0, 1.9], same_update=False).p  # second loss differs by design
    wrong_second = Fake("bad gradient", [2.0, 1.9]).p
    res = harness.precheck(fc, [same, other_param, wrong_second])
    assert isinstance(res["same"], harness.CheckRecord) and res["same"].peer_losses == [2.0, 1.5]
    assert isinstance(res["two biases"], harness.CheckRecord)
    assert isinstance(res["bad gradient"], MismatchError) and "step 2" in str(res["bad gradient"])


def test_compare_marks_a_mismatch_failed_with_both_losses():
    fc = Fake("flexcore", [2.0, 1.5]).p
    good = Fake("good peer", [2.0, 1.5]).p
    bad = Fake("bad peer", [2.5, 1.5]).p
    rows = harness.compare("case", "cfg", fc, [good, bad], **TINY)
    assert [(r.mode, r.peer, r.status) for r in rows] == [
        ("train", "good peer", OK), ("train", "bad peer", FAILED),
        ("infer", "good peer", OK), ("infer", "bad peer", FAILED),
    ]
    failed = rows[1]
    assert "FAILED" in failed.note and "2.0" in failed.note and "2.5" in failed.note
    assert failed.check == {"what": "loss of step 1", "flexcore": 2.0, "peer": 2.5}
    assert failed.flexcore is None and failed.peer_time is None  # a failed pair is never timed
    ok = rows[0]
    assert ok.flexcore["reps"] == 2 and ok.peer_time["reps"] == 2 and ok.ratio["n"] == 2
    assert ok.flexcore_bytes == 1024 and ok.peer_bytes == 1024 and rows[2].peer_bytes == 512
    assert report.exit_code(rows) == 1
    assert report.exit_code([ok]) == 0


def test_compare_catches_a_wrong_inference_output():
    fc = Fake("flexcore", [2.0, 1.5], out=(0.25, 0.75)).p
    peer = Fake("peer", [2.0, 1.5], out=(0.35, 0.65)).p
    rows = harness.compare("case", "cfg", fc, [peer], **TINY)
    assert {r.status for r in rows} == {FAILED} and "inference output" in rows[0].note


def test_missing_flexcore_keeps_the_row_and_times_the_peer():
    fc = Participant.absent("flexcore", "no kernel for conv2d")
    peer = Fake("torch", [2.0]).p
    rows = harness.compare("case", "cfg", fc, [peer], **TINY)
    assert len(rows) == 2 and {r.status for r in rows} == {MISSING}
    assert all("no kernel for conv2d" in r.note for r in rows)
    assert rows[0].peer_time is not None and rows[0].flexcore is None and rows[0].ratio is None


def test_flexcore_failing_at_run_time_is_missing_not_fatal():
    fc = Fake("flexcore", [2.0], fail_at=1).p
    rows = harness.compare("case", "cfg", fc, [Fake("torch", [2.0]).p], **TINY)
    assert {r.status for r in rows} == {MISSING} and "kernel exploded" in rows[0].note


def test_missing_and_failing_peers():
    fc = Fake("flexcore", [2.0, 1.5]).p
    absent = Participant.absent("pytensor", "PyTensor not installed")
    crashing = Fake("crashing", [2.0], fail_at=1).p
    rows = harness.compare("case", "cfg", fc, [absent, crashing], **TINY)
    by_peer = {(r.mode, r.peer): r for r in rows}
    assert by_peer["train", "pytensor"].status == PEER_MISSING
    assert by_peer["train", "pytensor"].note == "PyTensor not installed"
    crashed = by_peer["train", "crashing"]
    assert crashed.status == PEER_MISSING and "kernel exploded" in crashed.note
    assert report.exit_code(rows) == 0  # missing is not failed


def test_build_turns_a_constructor_error_into_missing():
    def boom():
        raise ImportError("No module named 'pytensor'")

    p = harness.build("pytensor", boom)
    assert p.missing == "ImportError: No module named 'pytensor'" and p.train is None


# ---------------------------------------------------------------------------------------
# real models, tiny: flexcore against torch, and a deliberate mismatch
# ---------------------------------------------------------------------------------------


def test_tiny_mlp_agrees_with_torch_and_a_perturbed_weight_fails(monkeypatch):
    torch = pytest.importorskip("torch")
    from bench import fc_models, torch_models

    monkeypatch.setenv("FLEXCORE_BACKEND", "reference")
    sizes = (12, 6, 5, fc_models.N_CLASSES)
    built, _ = fc_models.mlp(8, sizes=sizes)
    x, y = cases._data(8, (12,))
    fc = fc_models.participant(built, [x], [y])
    good = torch_models.participant("torch", torch_models.mlp(built), torch.from_numpy(x), y, same_update=True)
    res = harness.precheck(fc, [good])
    assert isinstance(res["torch"], harness.CheckRecord)

    built2, _ = fc_models.mlp(8, sizes=sizes)
    fc2 = fc_models.participant(built2, [x], [y])
    model = torch_models.mlp(built2)
    with torch.no_grad():
        model[0].weight[0, 0] += 0.5
    bad = torch_models.participant("torch", model, torch.from_numpy(x), y, same_update=True)
    failed = harness.precheck(fc2, [bad])["torch"]
    assert isinstance(failed, MismatchError) and failed.what == "loss of step 1"
    assert failed.flexcore_value != failed.peer_value


def test_tiny_lstm_weights_copied_from_torch_agree(monkeypatch):
    pytest.importorskip("torch")
    from bench import fc_models, torch_models
    from flexcore.nn.cells import copy_from_torch

    monkeypatch.setenv("FLEXCORE_BACKEND", "reference")
    built, _ = fc_models.recurrent_cell("lstm", 3, 4, 2, 3)
    fused = torch_models.make_fused("lstm", 3, 4)
    copy_from_torch(built.net, built.cell, fused)
    x, y = cases._data(2, (3, 3))
    fc = fc_models.participant(built, [x], [y])
    peers = [torch_models.participant(n, m, torch_models.time_major(x), y, same_update=False)
             for n, m in torch_models.cell_models("lstm", fused, built).items()]
    res = harness.precheck(fc, peers)
    assert all(isinstance(r, harness.CheckRecord) for r in res.values()), res


# ---------------------------------------------------------------------------------------
# writers, case selection, environment
# ---------------------------------------------------------------------------------------


def sample_rows() -> list[Row]:
    ok = Row("MLP", "784-300-150-10, batch 64", "train", "torch", flexcore=Stats([0.001, 0.0012]).as_dict(),
             peer_time=Stats([0.002, 0.0022]).as_dict(), ratio={"median": 1.9, "p25": 1.8, "p75": 2.0, "n": 2},
             flexcore_bytes=3 << 20, peer_bytes=2 << 20, peer_memory_method="torch allocator")
    missing = Row("GEMM", "square 64", "gemm", "numpy", status=MISSING, note="flexcore: no gemm yet",
                  peer_time=Stats([0.0001]).as_dict())
    reduced = Row("LSTM (fastrnns)", "T 20 (full: T 100)", "infer", "pytensor scan", status=PEER_MISSING,
                  note="PyTensor not installed", reduced=True)
    failed = Row("GRU", "T 30", "train", "torch nn.GRU", status=FAILED, note="loss check FAILED: 2.30 vs 2.31")
    return [ok, missing, reduced, failed]


def test_text_table_has_every_row_footnotes_and_marks():
    text = report.text_table(sample_rows())
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["case", "config", "mode", "peer"]
    assert "1.9" in text and "3.0 MiB" in text and "(+-" in text
    assert "LSTM (fastrnns) *" in text and "* reduced size" in text
    assert "[1] flexcore: no gemm yet" in text and "[3] loss check FAILED" in text
    assert "FAILED [3]" in text


def test_json_round_trips_to_rows_and_markdown_has_the_table():
    rows = sample_rows()
    meta = {"mode": "quick", "date": "2026-01-01", "cpu": "test cpu", "cpus": 2, "flexcore_isa": "avx2",
            "threads": 2, "versions": {"numpy": "2"}, "blas": [], "python": "3.11", "notes": ["a note"]}
    data = json.loads(report.to_json(rows, meta))
    assert data["meta"]["cpu"] == "test cpu"
    assert [Row(**r) for r in data["rows"]] == rows  # what the case worker hands back
    md = report.markdown(rows, meta, "title")
    assert md.startswith("# title") and "test cpu" in md and "flexcore ISA: avx2" in md
    assert "| case | config | mode | peer |" in md and md.count("\n| ") == 1 + len(rows)
    assert "a note" in md and "torch allocator" in md


def test_formatting_units():
    assert report.fmt_time(Stats([2.5]).as_dict(), "compile") == "2.5 s"
    assert report.fmt_time(Stats([0.25]).as_dict(), "train") == "250 ms"
    assert report.fmt_time(None, "train") == "-"
    assert report.fmt_bytes(512) == "0 KiB" and report.fmt_bytes(3 << 20) == "3.0 MiB"
    assert report.fmt_ratio({"median": 0.5}) == "0.5" and report.fmt_ratio(None) == "-"


def test_case_selection():
    assert catalog.select(None) == list(catalog.CASES)
    assert catalog.select("mlp,gemm") == ["mlp", "gemm"]
    assert catalog.select("lstm") == ["lstm_fastrnns", "lstm_deepbench", "lstm_small_input"]
    assert catalog.select("lstm_deepbench,lstm") == ["lstm_deepbench", "lstm_fastrnns", "lstm_small_input"]
    with pytest.raises(ValueError, match="valid: gemm"):
        catalog.select("transformer")


def test_every_case_of_the_issue_is_registered():
    assert list(cases.CASES) == list(catalog.CASES) == [
        "gemm", "lstm_fastrnns", "lstm_deepbench", "rnnbench", "lstm_small_input", "gru", "seed", "conv_recurrent", "mlp", "cnn",
        "compile"]


def test_quick_settings_shrink_and_full_do_not():
    q, f = cases.Settings.for_mode(True), cases.Settings.for_mode(False)
    assert q.size(100, 20) == (20, True) and f.size(100, 20) == (100, False)
    assert q.reps < f.reps and q.budget_s < f.budget_s


def test_clean_environ_unsets_openblas_overrides_and_pins_threads():
    env_in = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "262144", "OMP_NUM_THREADS": "8", "PATH": "/bin"}
    out, removed = env.clean_environ(env_in)
    assert removed == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "262144"}
    assert "OPENBLAS_CORETYPE" not in out and "OPENBLAS_L2_SIZE" not in out
    assert all(out[k] == str(env.THREADS) for k in env.THREAD_VARS)
    assert out["PATH"] == "/bin" and json.loads(out["FLEXCORE_BENCH_UNSET"]) == removed
    assert "floatX=float32" in out["PYTENSOR_FLAGS"] and "," not in (env.system_blas_ldflags() or "")
    assert env_in["OPENBLAS_CORETYPE"] == "Haswell"  # the caller's dict is left alone


def test_gemm_rows_without_flexcore_gemm_still_time_the_peers(monkeypatch):
    monkeypatch.setattr(cases, "flexcore_gemm", lambda: (None, "flexcore._flexcore has no gemm yet"))
    s = cases.Settings(quick=True, reps=2, warmup=1, min_rep_s=0.0, budget_s=0.0, max_reps=2, log=lambda m: None)
    rows = cases.gemm_rows(s, 8, 8, 8, "tiny")
    assert rows and all(r.status == MISSING and "no gemm yet" in r.note for r in rows)
    assert all(r.peer_time is not None and math.isfinite(r.extra["peer_gflops"]) for r in rows)


def test_gemm_rows_check_flexcore_result(monkeypatch):
    monkeypatch.setattr(cases, "flexcore_gemm", lambda: (lambda a, b: a @ b + 1.0, ""))  # a wrong gemm
    s = cases.Settings(quick=True, reps=2, warmup=1, min_rep_s=0.0, budget_s=0.0, max_reps=2, log=lambda m: None)
    rows = cases.gemm_rows(s, 8, 8, 8, "tiny")
    assert rows and all(r.status == FAILED and "flexcore" in r.note for r in rows)
    monkeypatch.setattr(cases, "flexcore_gemm", lambda: (lambda a, b: a @ b, ""))
    rows = cases.gemm_rows(s, 8, 8, 8, "tiny")
    assert all(r.status == OK and r.ratio is not None for r in rows if r.peer == "numpy")


def test_rows_serialise_with_dataclasses():
    r = sample_rows()[0]
    assert Row(**asdict(r)) == r


# ---------------------------------------------------------------------------------------
# a case that crashes or hangs in its worker process
# ---------------------------------------------------------------------------------------

CRASH = """
import json, os, signal, sys
with open(sys.argv[-1], "w") as f:  # the rows of the models finished so far, then a crash
    json.dump({"rows": [], "partial": True, "current": "[GRU] T 30"}, f)
os.kill(os.getpid(), signal.SIGSEGV)
"""


def test_run_worker_reports_a_crash_and_keeps_partial_results():
    from bench.__main__ import run_worker

    data, why = run_worker([], 60, program=("-c", CRASH))
    assert "SIGSEGV" in why and data["current"] == "[GRU] T 30"


def test_run_worker_stops_a_hang():
    from bench.__main__ import run_worker

    data, why = run_worker([], 1, program=("-c", "import time; time.sleep(60)"))
    assert data is None and "did not finish in 1 s" in why


def test_run_worker_reads_a_complete_result():
    from bench.__main__ import run_worker

    code = "import json, sys; json.dump({'rows': [], 'notes': ['n']}, open(sys.argv[-1], 'w'))"
    data, why = run_worker([], 60, program=("-c", code))
    assert why == "" and data == {"rows": [], "notes": ["n"]}


def test_cli_exits_non_zero_and_says_so_when_a_check_fails(monkeypatch, tmp_path, capsys):
    import bench.__main__ as cli

    failed = Row("MLP", "784-300-150-10, batch 64", "train", "torch", status=FAILED,
                 note="loss check FAILED: loss of step 1: flexcore 2.3026, peer 2.4026",
                 check={"what": "loss of step 1", "flexcore": 2.3026, "peer": 2.4026})

    def fake_worker(args, timeout, program=None):
        if args[0] == "--meta":
            return {"cpu": "test cpu", "cpus": 2, "versions": {}}, ""
        return {"rows": [asdict(failed)], "notes": []}, ""

    monkeypatch.setattr(cli, "run_worker", fake_worker)
    assert cli.main(["--quick", "--cases", "mlp", "--out", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "FAILED" in out and "FAILED: 1 row(s)" in err and "2.3026" in err and "2.4026" in err
    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["rows"][0]["status"] == FAILED and data["meta"]["mode"] == "quick"
    assert "FAILED" in (tmp_path / "latest.md").read_text()


def test_cli_rejects_an_unknown_case(capsys):
    import bench.__main__ as cli

    assert cli.main(["--cases", "transformer"]) == 2
    assert "unknown case 'transformer'" in capsys.readouterr().err


def test_alternate_lets_the_previous_participant_settle(monkeypatch):
    """Every timed repetition (and each sizing call) is preceded by a settle pause, so one
    framework's spinning worker threads do not slow the next one's measurement."""
    slept: list[float] = []
    monkeypatch.setattr(harness.time, "sleep", slept.append)
    harness.alternate([lambda: None, lambda: None], reps=3, warmup=1, min_rep_s=0.0, settle_s=0.25)
    assert slept == [0.25] * (2 + 3 * 2)
