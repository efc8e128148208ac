"""The benchmark's implementations agree: each workload of benchmarks/ (issue 3's W1-W3 and
issue 5's GRU/LSTM workloads, shrunken with tiny=True, same code paths) trained for one epoch by
rnnkit C++, the rnnkit reference, PyTorch and JAX from the same weights gives the same losses.
A correctness test, not a timing test: nothing here asserts on a time. PyTorch and JAX are
skipped when not installed.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

import impls  # noqa: E402
import workloads  # noqa: E402


@pytest.fixture(scope="module")
def baselines():
    """Per workload: its data, weights and rnnkit C++'s first-epoch losses."""
    out = {}
    for name in workloads.WORKLOADS:
        w = workloads.get_workload(name, tiny=True)
        weights = workloads.initial_weights(w)
        train, val = workloads.make_data(w)
        losses = impls.make("rnnkit", w, weights, train, val).epoch()
        out[name] = (w, weights, train, val, losses)
    return out


@pytest.mark.parametrize("name,impl", [
    (name, impl) for name in workloads.WORKLOADS for impl in ("reference", "numpy", "torch", "jax")
    if impls.implements(impl, name)])
def test_first_epoch_losses_agree_with_rnnkit(baselines, name, impl):
    if impl in ("torch", "jax"):
        pytest.importorskip(impl)
    w, weights, train, val, expected = baselines[name]
    run = impls.make(impl, w, weights, train, val)
    losses = run.epoch()
    assert sorted(losses) == sorted(expected)
    assert sorted(expected) == (["loss", "train_loss", "val_loss"] if w.evaluate else ["loss"])
    for key in expected:
        assert losses[key] == pytest.approx(expected[key], rel=w.tolerance), key
    assert sorted(run.weights()) == sorted(weights)          # in rnnkit's names and shapes
    assert all(run.weights()[k].shape == weights[k].shape for k in weights)


def test_the_update_check_sees_a_truncation_the_losses_barely_show():
    """W1's first-epoch update (impls.update_fingerprint) agrees between rnnkit and the NumPy
    loop to W1's tolerance, and a NumPy loop that backpropagates one step further is off by
    orders of magnitude more than that (run.py fails a run on it)."""
    import dataclasses

    import run

    w = workloads.get_workload("W1", tiny=True)
    weights = workloads.initial_weights(w)
    train, val = workloads.make_data(w)

    def update(impl, workload):
        r = impls.make(impl, workload, weights, train, val)
        r.epoch()
        return impls.update_fingerprint(weights, r.weights())
    base = update("rnnkit", w)
    assert run.rel_norm(update("numpy", w), base) <= w.tolerance
    assert run.rel_norm(update("reference", w), base) <= w.tolerance
    one_step_more = dataclasses.replace(w, k=w.k + 1)
    assert run.rel_norm(update("numpy", one_step_more), base) > 1e3 * w.tolerance


def test_workloads_match_the_issue():
    assert workloads.ISSUE3_WORKLOADS == ("W1", "W2", "W3")
    w1, w2, w3 = (workloads.get_workload(n) for n in workloads.ISSUE3_WORKLOADS)
    assert (w1.dtype, w1.H, w1.activation, w1.bias, w1.T, w1.n_train, w1.n_val, w1.batch_size,
            w1.optimizer, w1.lr, w1.k, w1.clip_value) == (
        "float64", 100, "sigmoid", False, 50, 100, 50, 1, "sgd", 1e-4, 5, 10.0)
    assert (w2.dtype, w2.H, w2.activation, w2.bias, w2.batch_size, w2.n_batches, w2.optimizer,
            w2.k, w2.clip_norm) == ("float32", 128, "tanh", True, 64, 64, "adam", None, 1.0)
    assert (w3.H, w3.batch_size, w3.n_batches) == (512, 256, 16)
    # first-epoch agreement: float32 1e-3 at full size, 1e-5 for the tiny workloads of the tests
    assert (w1.tolerance, w2.tolerance, workloads.get_workload("W2", tiny=True).tolerance) == (
        1e-9, 1e-3, 1e-5)
    # issue 3's FLOP count: 2 x [forward T(H²+HI)+OH + backward s(H²+HI)+(s-1)H²+2OH]
    H = 128
    per_seq = 50 * (H * H + H) + H + 50 * (H * H + H) + 49 * H * H + 2 * H
    assert w2.flops_per_epoch() == 2 * 4096 * per_seq
    train, _ = workloads.make_data(w2)
    assert train[0].shape == (4096, 50, 1) and train[1].shape == (4096, 1)
    assert train[0].dtype.name == "float32"


def test_run_py_end_to_end_tiny(tmp_path):
    """The one command, on the tiny W1 with the two rnnkit backends, run twice (--runs 2): it
    prints each run's table, then the targets it measured in both runs side by side, and exits
    0 (the agreement check passed)."""
    out = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run.py"), "--tiny", "--quick", "--workloads", "W1",
         "--threads", "1", "--impls", "rnnkit,reference,numpy", "--epochs", "1", "--no-process",
         "--runs", "2", "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    for run in (1, 2):
        assert f"(run {run} of 2)" in out.stdout
    assert out.stdout.count("| W1 float64 | 1 | rnnkit (C++) |") == 2
    assert out.stdout.count("| W1 float64 | 1 | rnnkit reference (NumPy) |") == 2
    assert out.stdout.count("| W1 float64 | 1 | NumPy loop (hand-written) |") == 2
    # the side-by-side table: one row for the one target this run measures, both runs filled
    side = out.stdout.split("targets in each of the 2 runs")[1]
    assert "| target (bold: met) | run 1 | run 2 | met in | needs (% of FMA peak) |" in side
    row = next(line for line in side.splitlines() if line.startswith("| W1, 1 thread(s)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "NumPy loop" in cells[0]
    assert all(c.strip("*").endswith("×") and float(c.strip("*")[:-1]) > 0 for c in cells[1:3])
    assert cells[3] == f"{sum(c.startswith('**') for c in cells[1:3])} of 2"
    needs = cells[4].split(" / ")
    # (a tiny run's NumPy epoch is so short that its need rounds to a few percent, or 0)
    assert len(needs) == 2 and all(n.endswith("%") and float(n[:-1]) >= 0 for n in needs)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert len(saved["runs"]) == 2 and saved["sessions"] == saved["runs"][-1]["sessions"]
    assert [r["errors"] for r in saved["runs"]] == [[], []] and saved["errors"] == []
    times = [r["sessions"][0]["impls"]["rnnkit"]["times"] for r in saved["runs"]]
    assert all(len(t) == 1 for t in times)       # each run timed its own epoch


def test_runs_table_keeps_the_targets_order_and_counts_the_runs_that_measured_each():
    """The side-by-side table of --runs on made-up results: rows in workloads.TARGETS' order
    with the first example last, whatever run measured them first; "–" where a run did not
    measure a target (its worker failed), bold where met, and "k of m" over the runs that
    measured it."""
    import run

    def session(peers, peak_fraction=None):
        medians = {"rnnkit": 1.0, **peers}
        impls = {impl: {"median": t} for impl, t in medians.items()}
        impls["rnnkit"]["peak_fraction"] = peak_fraction
        return {"workload": "W1", "threads": 1, "impls": impls}

    def process(wall):
        return [{"wall": wall, "maxrss_mib": 37.0, "status": 0}]

    runs = [{"sessions": [session({"numpy": 10.0})], "processes": process(0.45)},
            {"sessions": [session({"numpy": 25.0, "jax": 3.0}, 0.5)], "processes": process(0.6)}]
    table = run.runs_table(runs)
    assert table[0] == "| target (bold: met) | run 1 | run 2 | met in | needs (% of FMA peak) |"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert [r[0] for r in rows] == [
        "W1, 1 thread(s): rnnkit ≥ 2× faster than JAX (jit)",
        "W1, 1 thread(s): rnnkit ≥ 20× faster than NumPy loop (hand-written)",
        "first example, whole process: ≤ 0.5 s and ≤ 80 MiB"]
    # needs: rnnkit at 50% of the peak in 1 s; JAX's 3 s / 2 would be at 33%, NumPy's 25 s /
    # 20 at 40%; run 1 measured no peak
    assert rows[0][1:] == ["–", "**3.00×**", "1 of 1", "– / 33%"]
    assert rows[1][1:] == ["10.00×", "**25.00×**", "1 of 2", "– / 40%"]
    assert rows[2][1:] == ["**0.45 s, 37 MiB**", "0.60 s, 37 MiB", "1 of 2", "–"]
    # one run's line of a ratio target: the epoch time the target allows and its peak fraction
    line = next(l for l in run.target_lines(runs[1]["sessions"], []) if "JAX" in l)
    assert line.endswith("3.00× — met (needs ≤ 1.5000 s/epoch, 33% of the FMA peak)")


@pytest.mark.parametrize("name, cell, layers, G", [("W2-GRU", "gru", 1, 3),
                                                   ("W2-LSTM", "lstm", 1, 4),
                                                   ("W2-LSTM2", "lstm", 2, 4)])
def test_cell_workloads_are_w2_with_a_cell(name, cell, layers, G):
    """Issue 5's workloads: W2's every setting and data, a GRU/LSTM layer (or two) with
    PyTorch's two biases; the FLOP count generalizes issue 3's per gate and layer."""
    w2, w = workloads.get_workload("W2"), workloads.get_workload(name)
    assert (w.cell, w.num_layers, w.gates) == (cell, layers, G)
    assert w == workloads.dataclasses.replace(w2, name=name, cell=cell, num_layers=layers)
    T, H = 50, 128
    forward, backward = H, 2 * H                  # O = 1
    for layer in range(layers):
        I = 1 if layer == 0 else H
        forward += T * G * (H * H + H * I)
        backward += T * G * (H * H + H * I) + (T - 1) * G * H * H + (T * G * H * I if layer else 0)
    assert w.flops_per_epoch() == 2 * 4096 * (forward + backward)
    # G = 1, one layer: issue 3's count unchanged
    assert workloads.dataclasses.replace(w, cell="rnn", num_layers=1).flops_per_epoch() == \
        w2.flops_per_epoch()
    for a, b in zip(workloads.make_data(w)[0], workloads.make_data(w2)[0]):
        assert np.array_equal(a, b)
    weights = workloads.initial_weights(workloads.get_workload(name, tiny=True))
    h = workloads.get_workload(name, tiny=True).H
    assert weights["U"].shape == (G * h, 1) and weights["W"].shape == (G * h, h)
    assert weights["b_ih"].shape == weights["b_hh"].shape == (G * h,)
    assert ("U_l1" in weights) == (layers == 2)


@pytest.mark.parametrize("name", workloads.CELL_WORKLOADS)
def test_torch_cell_gets_rnnkit_weights(name):
    """The PyTorch peer's nn.GRU/nn.LSTM + nn.Linear hold exactly the weights rnnkit's own
    to_torch_state_dict() gives for the same model, and trains all of them."""
    pytest.importorskip("torch")
    w = workloads.get_workload(name, tiny=True)
    weights = workloads.initial_weights(w)
    train, val = workloads.make_data(w)
    peer = impls.make("torch", w, weights, train, val)
    model = workloads.model_class(w)(w.I, w.H, w.O, dtype=w.dtype, seed=workloads.INIT_SEED,
                                     num_layers=w.num_layers)
    expected = model.to_torch_state_dict()
    got = {**{"rnn." + k: v for k, v in peer.rnn.state_dict().items()},
           **{"linear." + k: v for k, v in peer.linear.state_dict().items()}}
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert np.array_equal(got[key].numpy(), expected[key].numpy()), key
    assert sum(p.numel() for p in peer.params) == model.num_parameters


def test_run_py_end_to_end_tiny_cells(tmp_path):
    """run.py on the tiny GRU/LSTM workloads with every installed implementation: a row per
    workload and implementation, exit status 0, and in the JSON every first-epoch loss within
    the workload's tolerance of rnnkit C++'s (the check run.py fails on)."""
    import json

    names = list(workloads.CELL_WORKLOADS)
    out = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run.py"), "--tiny", "--quick", "--workloads",
         ",".join(names), "--threads", "1", "--epochs", "1", "--no-process",
         "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["errors"] == []
    assert [s["workload"] for s in result["sessions"]] == names
    for s in result["sessions"]:
        w = workloads.get_workload(s["workload"], tiny=True)
        expected_impls = [i for i in impls.IMPLS
                          if impls.available(i) is None and impls.implements(i, s["workload"])]
        assert sorted(s["impls"]) == sorted(expected_impls)
        base = s["impls"]["rnnkit"]["losses"]
        for impl, r in s["impls"].items():
            label = impls.LABELS[impl]
            assert f"| {s['workload']} float32 | 1 | {label} |" in out.stdout
            assert r["rel_diff"] <= w.tolerance
            assert r["losses"]["loss"] == pytest.approx(base["loss"], rel=w.tolerance)
    assert "Targets of issue 3" not in out.stdout      # issue 5 sets no targets
