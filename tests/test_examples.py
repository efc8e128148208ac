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


def run_example(name, *args, cwd, timeout=120, path_first=()):
    """Run examples/<name> with this interpreter; the child imports the same rnnkit as the
    tests (its parent directory goes first on PYTHONPATH, made absolute), after any
    `path_first` directories."""
    env = dict(os.environ)
    package_parent = str(Path(rnnkit.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in path_first] + [package_parent] +
        [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
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
    """Next to no training cannot reach the target: the script must say so and fail."""
    proc = run_example("sine_wave.py", "--no-plot", "--epochs", "1", "--lr", "1e-9",
                       cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    assert number_after("validation RMSE", proc.stdout) > 0.005
    assert "FAILED" in proc.stderr


@pytest.mark.parametrize("name, args, message", [
    ("sine_wave.py", ["--epochs", "0"], r"--epochs: must be an integer >= 1, got 0"),
    ("sine_wave.py", ["--lr", "0"], r"--lr: must be a finite number > 0, got 0"),
    ("sine_wave.py", ["--plot", "no/such/dir/x.png"], r"--plot no/such/dir/x.png: the directory"),
    ("real_series.py", ["--clip-norm", "0"], r"--clip-norm: must be a finite number > 0"),
    ("real_series.py", ["--holdout", "0"], r"--holdout: must be an integer >= 1, got 0"),
    ("dask_sweep.py", ["--epochs", "0"], r"--epochs: must be an integer >= 1, got 0"),
    ("dask_sweep.py", ["--plot", "no/such/dir/x.png"], r"--plot no/such/dir/x.png: the directory"),
])
def test_examples_refuse_bad_options_before_running(tmp_path, name, args, message):
    """An out-of-range option is argparse's usage error (status 2) naming it, before any work,
    not a traceback from inside the library or after the training."""
    proc = run_example(name, *args, cwd=tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert re.search(message, proc.stderr), proc.stderr
    assert proc.stdout == ""


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


# ---------------------------------------------------------------- examples/real_series.py

TABLE_ROW = re.compile(
    r"^\| ([^|]+?) \| (\d+) \| (\S+) \| ([0-9.]+) \| ([0-9.]+) \| ([-+0-9.]+) \|$", re.MULTILINE)


def table(stdout):
    """The Markdown table's rows: name -> (parameters, seconds text, RMSE, MAE, skill)."""
    return {m.group(1): (int(m.group(2)), m.group(3), float(m.group(4)), float(m.group(5)),
                         float(m.group(6))) for m in TABLE_ROW.finditer(stdout)}


def test_real_series_beats_persistence(tmp_path):
    """Sunspots 1700-2008: a row for each baseline and each model rnnkit has, the RNN clearly
    better than persistence on the held-out tail, and the same errors on a second run."""
    pytest.importorskip("statsmodels")
    proc = run_example("real_series.py", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    rows = table(proc.stdout)
    models = [name for name in ("RNN", "GRU", "LSTM") if hasattr(rnnkit, name)]
    assert set(rows) == {"persistence", "linear AR(18)", *models}, proc.stdout
    missing = sorted({"GRU", "LSTM"} - set(models))
    if missing:
        assert f"skipped: {', '.join(missing)}" in proc.stdout, proc.stdout
    persistence = rows["persistence"]
    assert persistence[1] == "–" and persistence[4] == 0.0, proc.stdout
    assert 25 < persistence[2] < 35, proc.stdout            # 30.35 sunspots, as measured
    for name in models:
        _, seconds, rmse, mae, skill = rows[name]
        assert float(seconds) > 0 and mae <= rmse, proc.stdout
        assert skill == pytest.approx(1 - rmse / persistence[2], abs=2e-3), proc.stdout
    assert rows["RNN"][4] > 0.3, proc.stdout                # RMSE 14.35 against 30.35
    assert list(tmp_path.iterdir()) == [], "--no-plot must not write files"

    again = table(run_example("real_series.py", "--no-plot", cwd=tmp_path).stdout)

    def without_time(t):
        return {name: row[:1] + row[2:] for name, row in t.items()}
    assert without_time(again) == without_time(rows), "the errors differ between two runs"


def test_real_series_plot_or_message(tmp_path):
    pytest.importorskip("statsmodels")
    proc = run_example("real_series.py", "--epochs", "10", "--plot", "out.png", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    png = tmp_path / "out.png"
    if "matplotlib is not installed" in proc.stdout:
        assert not png.exists()
    else:
        assert f"plot saved to {png}" in proc.stdout, proc.stdout
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name, blocked, extra", [("real_series.py", "statsmodels", "examples"),
                                                  ("dask_sweep.py", "dask", "dask")])
def test_an_example_without_its_optional_package_exits_1(tmp_path, name, blocked, extra):
    """With the package unimportable (a stand-in package that raises ImportError on import,
    first on the path, before the site-packages an installed rnnkit lives in), the example
    fails with status 1 (not argparse's 2, a usage error) and says what to install."""
    blocker = tmp_path / "blocked" / blocked
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(f"raise ImportError('{blocked} blocked by the test')\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = run_example(name, "--no-plot", cwd=work, path_first=[blocker.parent])
    assert proc.returncode == 1, explain(proc)
    assert f'pip install ".[{extra}]"' in proc.stderr, explain(proc)
    assert proc.stdout == "", explain(proc)
