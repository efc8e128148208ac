"""The benchmark's implementations agree: each workload of benchmarks/ (shrunken with
tiny=True, same code paths) trained for one epoch by rnnkit C++, the rnnkit reference, PyTorch
and JAX from the same weights gives the same losses. A correctness test, not a timing test:
nothing here asserts on a time. PyTorch and JAX are skipped when not installed.
"""

import os
import subprocess
import sys

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


@pytest.mark.parametrize("impl", ["reference", "torch", "jax"])
@pytest.mark.parametrize("name", workloads.WORKLOADS)
def test_first_epoch_losses_agree_with_rnnkit(baselines, name, impl):
    if impl in ("torch", "jax"):
        pytest.importorskip(impl)
    w, weights, train, val, expected = baselines[name]
    losses = impls.make(impl, w, weights, train, val).epoch()
    assert sorted(losses) == sorted(expected)
    assert sorted(expected) == (["loss", "train_loss", "val_loss"] if w.evaluate else ["loss"])
    for key in expected:
        assert losses[key] == pytest.approx(expected[key], rel=w.tolerance), key


def test_workloads_match_the_issue():
    w1, w2, w3 = (workloads.get_workload(n) for n in workloads.WORKLOADS)
    assert (w1.dtype, w1.H, w1.activation, w1.bias, w1.T, w1.n_train, w1.n_val, w1.batch_size,
            w1.optimizer, w1.lr, w1.k, w1.clip_value) == (
        "float64", 100, "sigmoid", False, 50, 100, 50, 1, "sgd", 1e-4, 5, 10.0)
    assert (w2.dtype, w2.H, w2.activation, w2.bias, w2.batch_size, w2.n_batches, w2.optimizer,
            w2.k, w2.clip_norm) == ("float32", 128, "tanh", True, 64, 64, "adam", None, 1.0)
    assert (w3.H, w3.batch_size, w3.n_batches) == (512, 256, 16)
    # issue 3's FLOP count: 2 x [forward T(H²+HI)+OH + backward s(H²+HI)+(s-1)H²+2OH]
    H = 128
    per_seq = 50 * (H * H + H) + H + 50 * (H * H + H) + 49 * H * H + 2 * H
    assert w2.flops_per_epoch() == 2 * 4096 * per_seq
    train, _ = workloads.make_data(w2)
    assert train[0].shape == (4096, 50, 1) and train[1].shape == (4096, 1)
    assert train[0].dtype.name == "float32"


def test_run_py_end_to_end_tiny(tmp_path):
    """The one command, on the tiny W1 with the two rnnkit backends: it prints the table and
    exits 0 (the agreement check passed)."""
    out = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run.py"), "--tiny", "--quick", "--workloads", "W1",
         "--threads", "1", "--impls", "rnnkit,reference", "--epochs", "1", "--no-process",
         "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| W1 float64 | 1 | rnnkit (C++) |" in out.stdout
    assert "| W1 float64 | 1 | rnnkit reference (NumPy loop) |" in out.stdout
    assert (tmp_path / "r.json").exists()
