"""rnnkit.plot: figures drawn from real data and saved as PNG; errors; skipped without
matplotlib (the import of rnnkit.plot itself must work without it)."""

import numpy as np
import pytest

import rnnkit
import rnnkit.plot

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def test_history_plot_draws_each_curve(tmp_path):
    X, Y = rnnkit.data.sliding_windows(np.sin(np.arange(60.0)), seq_len=10)
    hist = rnnkit.RNN(1, 4, seed=0).fit(X, Y, epochs=3, validation_data=(X, Y))
    ax = rnnkit.plot.history(hist, path=tmp_path / "h.png")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"loss", "val_loss"}
    np.testing.assert_array_equal(lines["loss"].get_ydata(), hist["loss"])
    np.testing.assert_array_equal(lines["loss"].get_xdata(), [1, 2, 3])
    assert ax.get_yscale() == "log"
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG
    plt.close(ax.figure)
    no_val = rnnkit.plot.history(rnnkit.RNN(1, 4, seed=0).fit(X, Y, epochs=2), log=False)
    assert [line.get_label() for line in no_val.get_lines()] == ["loss"]   # empty val_loss
    plt.close(no_val.figure)


def test_forecast_plot_places_the_forecast_after_the_context(tmp_path):
    context, pred, truth = np.arange(5.0), np.arange(5.0, 8.0) + 0.1, np.arange(5.0, 9.0)
    ax = rnnkit.plot.forecast(context, pred[:, None], truth, path=tmp_path / "f.png", start=10)
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["context"].get_xdata(), [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(lines["forecast"].get_xdata(), [15, 16, 17])
    np.testing.assert_array_equal(lines["forecast"].get_ydata(), pred)
    np.testing.assert_array_equal(lines["truth"].get_xdata(), [15, 16, 17, 18])
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG
    plt.close(ax.figure)


def test_plot_errors():
    with pytest.raises(TypeError, match=r"hist must be a History or a dict.*got int"):
        rnnkit.plot.history(3)
    with pytest.raises(ValueError, match=r"hist has no values to plot"):
        rnnkit.plot.history({"loss": []})
    with pytest.raises(ValueError, match=r"predicted must have 1 feature\(s\) like context "
                                         r"\(shape \(4,\)\), got shape \(3, 2\)"):
        rnnkit.plot.forecast(np.zeros(4), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"context must have shape \(T,\) or \(T, F\)"):
        rnnkit.plot.forecast(np.zeros((1, 2, 3)), np.zeros(3))
    plt.close("all")


@pytest.mark.parametrize("truth, message", [
    (np.zeros(3), r"truth must have 2 feature\(s\) like context \(shape \(5, 2\)\), got shape "
                  r"\(3,\)"),
    (np.zeros((3, 1, 1)), r"truth must have shape \(T,\) or \(T, F\) with T >= 1, got \(3, 1, 1\)"),
    (np.zeros(0), r"truth must have shape \(T,\) or \(T, F\) with T >= 1, got \(0,\)"),
    (1.0, r"truth must have shape \(T,\) or \(T, F\) with T >= 1, got \(\)"),
], ids=["features", "3-d", "empty", "scalar"])
def test_forecast_checks_truth_like_the_other_series(truth, message):
    """truth is checked as context and predicted are (it was indexed unchecked: an IndexError,
    or a column silently left out)."""
    with pytest.raises(ValueError, match=message):
        rnnkit.plot.forecast(np.zeros((5, 2)), np.zeros((3, 2)), truth)
    plt.close("all")


def test_a_callers_axes_keep_their_figures_layout(tmp_path):
    """Drawing into the caller's ax (and saving) leaves the figure's layout engine alone; a
    figure the function makes is laid out tightly; a curve of None is not drawn."""
    fig, ax = plt.subplots(layout="constrained")
    engine = type(fig.get_layout_engine())
    rnnkit.plot.history({"loss": [1.0, 0.5], "val_loss": None}, ax=ax, path=tmp_path / "h.png")
    assert type(fig.get_layout_engine()) is engine
    assert [line.get_label() for line in ax.get_lines()] == ["loss"]
    own = rnnkit.plot.forecast(np.arange(4.0), np.arange(2.0))
    assert type(own.figure.get_layout_engine()).__name__ == "TightLayoutEngine"
    plt.close("all")
