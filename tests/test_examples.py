"""The example programs run as a user runs them: a subprocess with the default (C++) backend,
from an unrelated working directory, and they reach their targets."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rnnkit

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args, cwd, timeout=120):
    """Run examples/<name> with this interpreter; the child imports the same rnnkit as the
    tests (its parent directory goes first on PYTHONPATH, made absolute)."""
    env = dict(os.environ)
    package_parent = str(Path(rnnkit.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


def explain(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def number_after(label, text):
    match = re.search(rf"^{label}:\s*([-+0-9.eEnaif]+)", text, re.MULTILINE)
    assert match, f"no line starting with {label!r} in:\n{text}"
    return float(match.group(1))


def test_sine_wave_reaches_target_rmse(tmp_path):
    proc = run_example("sine_wave.py", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert len(re.findall(r"^epoch\s+\d+/25\s+loss \S+\s+val_loss \S+$", proc.stdout,
                          re.MULTILINE)) == 25, proc.stdout
    rmse = number_after("validation RMSE", proc.stdout)
    assert rmse <= 0.005, proc.stdout
    number_after("training time", proc.stdout)
    assert number_after(r"forecast RMSE \(200 steps\)", proc.stdout) < 0.05, proc.stdout
    assert list(tmp_path.iterdir()) == [], "--no-plot must not write files"


def test_sine_wave_exits_1_when_target_missed(tmp_path):
    """No training at all cannot reach the target: the script must say so and fail."""
    proc = run_example("sine_wave.py", "--no-plot", "--epochs", "0", cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    assert number_after("validation RMSE", proc.stdout) > 0.005
    assert "FAILED" in proc.stderr


def test_pytorch_style_trains(tmp_path):
    proc = run_example("pytorch_style.py", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    losses = [float(v) for v in re.findall(r"^epoch\s+\d+/600\s+loss (\S+)$", proc.stdout,
                                           re.MULTILINE)]
    assert len(losses) == 7, proc.stdout                   # epoch 1 and every 100th
    final = number_after("final loss", proc.stdout)
    assert final < 0.01 < losses[0], proc.stdout          # it learned: ~0.25 down to ~1e-3
    assert list(tmp_path.iterdir()) == [], "--no-plot must not write files"


@pytest.mark.parametrize("name, args, png_name", [
    # one PNG: predictions, loss curves (rnnkit.plot.history), the 200-step forecast
    ("sine_wave.py", ["--epochs", "3", "--plot", "out.png"], "out.png"),
    ("pytorch_style.py", ["--epochs", "5"], "pytorch_style.png"),
])
def test_example_plot_or_message(tmp_path, name, args, png_name):
    """With plotting on, a PNG and its path printed when matplotlib is installed, otherwise a
    message saying so."""
    proc = run_example(name, *args, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    png = tmp_path / png_name
    if "matplotlib is not installed" in proc.stdout:
        assert not png.exists()
    else:
        assert f"plot saved to {png}" in proc.stdout, proc.stdout
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
