"""Forecast a real series, the yearly sunspot numbers 1700-2008, one year ahead with an RNN, a
GRU and an LSTM, against a persistence forecast and a linear autoregressive model.

The data is statsmodels' bundled copy of the yearly sunspot numbers (NOAA's National
Geophysical Data Center, public domain; ``statsmodels.datasets.sunspots``, read from the
installed package, nothing is downloaded): 309 values, about 28 cycles of roughly 11 years,
peaked and asymmetric (a fast rise, a slow fall), the classic benchmark for nonlinear
autoregression. The last ``--holdout`` years (default 50: 1959-2008, 16% of the series) are the
held-out tail: no model sees them in training and the scaling does not use them. The series is
standardized with the mean and standard deviation of the years before the tail, cut into
windows of ``--window`` years (``rnnkit.data.sliding_windows``) whose target is the next year;
the windows whose target lies before the tail are the training set, the ones whose target lies
in it are the test set (their inputs are the years just before, as for any one-year-ahead
forecast).

Each recurrent model (``--hidden-size`` tanh units, one output) is trained with Adam, the
gradient norm clipped, full backpropagation through time, the same settings and seed for all.
The baselines: persistence (next year = this year) and a linear autoregressive model on the
same window, fitted by least squares (``np.linalg.lstsq``, with an intercept) on the training
windows. The script prints a Markdown table of each one's RMSE and MAE on the tail in sunspot
numbers, its skill against persistence (1 - RMSE / RMSE of persistence; above 0 is better than
persistence) and its training time; every number but the times is the same on every run. When
matplotlib is installed it saves one PNG with the tail, each forecast and the training losses.

    python examples/real_series.py
    python examples/real_series.py --epochs 100 --no-plot

The hyperparameters were chosen with ``--last-year 1958`` (the tail is then 1909-1958 and the
years 1959-2008 are dropped), never by looking at the 1959-2008 tail. A model class rnnkit does
not have (GRU and LSTM are new) is reported as unavailable and skipped. Exits with status 1 if
statsmodels is missing or if no recurrent model beats persistence.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import rnnkit
# _cli sits beside this file, which may also run through runpy or python -m
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import at_least, check_plot_path, positive

MODELS = ("RNN", "GRU", "LSTM")                 # looked up in rnnkit by name


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--window", type=at_least(1), default=18, help="years of input per forecast")
    p.add_argument("--holdout", type=at_least(1), default=50, help="years in the held-out tail")
    p.add_argument("--last-year", type=int, default=2008,
                   help="drop the years after this one (1958 gives the validation split)")
    p.add_argument("--hidden-size", type=at_least(1), default=16, help="hidden units H")
    p.add_argument("--epochs", type=at_least(1), default=100)
    p.add_argument("--batch-size", type=at_least(1), default=16)
    p.add_argument("--lr", type=positive, default=0.003, help="Adam's learning rate")
    p.add_argument("--clip-norm", type=positive, default=1.0, help="gradient norm clip")
    p.add_argument("--backend", choices=["cpp", "reference"], default="cpp")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the shuffling")
    p.add_argument("--plot", default="real_series.png",
                   help="where to save the plot (needs matplotlib)")
    p.add_argument("--no-plot", action="store_true", help="do not plot")
    args = p.parse_args(argv)
    check_plot_path(p, args)
    return args


def load_sunspots():
    """The years and yearly sunspot numbers 1700-2008 from statsmodels' bundled CSV."""
    from statsmodels.datasets import sunspots                 # ImportError handled by main
    data = sunspots.load_pandas().data
    return data["YEAR"].to_numpy(dtype=int), data["SUNACTIVITY"].to_numpy(dtype=np.float64)


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - truth) ** 2)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - truth)))


def linear_ar(X_train: np.ndarray, Y_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """Least-squares fit of y = a0 + sum_j a_j x_j on the training windows; the test forecasts."""
    def design(X):
        return np.hstack([np.ones((len(X), 1)), X[:, :, 0]])
    coef, *_ = np.linalg.lstsq(design(X_train), Y_train[:, 0], rcond=None)
    return design(X_test) @ coef


def plot(path: str, years: np.ndarray, series: np.ndarray, test_years: np.ndarray,
         forecasts: dict, losses: dict) -> bool:
    """Save the held-out tail with every forecast, and the training losses; False without
    matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")                                          # files only, no display
    import matplotlib.pyplot as plt

    import rnnkit.plot

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 8),
                                   gridspec_kw={"height_ratios": (2, 1)})
    shown = years >= test_years[0] - 30                            # 30 years of context
    ax1.plot(years[shown], series[shown], "k-", lw=2, label="observed")
    ax1.axvline(test_years[0] - 0.5, color="0.6", lw=0.8)
    for name, pred in forecasts.items():                           # baselines dotted/dashed
        style = ":" if name == "persistence" else "--" if name.startswith("linear") else "-"
        ax1.plot(test_years, pred, style, lw=1.2, label=name)
    ax1.set(title=f"sunspots: one-year-ahead forecasts of the held-out tail "
                  f"{test_years[0]}-{test_years[-1]}", xlabel="year",
            ylabel="yearly sunspot number")
    ax1.legend(ncol=3)
    if losses:
        rnnkit.plot.history(losses, ax=ax2, title="training loss (MSE, standardized units)")
    else:
        ax2.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        years, series = load_sunspots()
    except ImportError as exc:
        print(f"this example reads its data from statsmodels, which is not installed: "
              f'pip install ".[examples]" (or pip install statsmodels) ({exc})', file=sys.stderr)
        return 1
    keep = years <= args.last_year
    years, series = years[keep], series[keep]

    # The tail is held out from everything: the scaling uses the years before it only.
    n_train = len(series) - args.holdout
    if n_train <= args.window + 1:
        print(f"--holdout {args.holdout} and --window {args.window} leave too few training "
              f"years out of {len(series)}", file=sys.stderr)
        return 1
    mean, std = series[:n_train].mean(), series[:n_train].std()
    X, Y = rnnkit.data.sliding_windows((series - mean) / std, seq_len=args.window)
    target = np.arange(args.window, len(series))                   # index of each window's target
    train, test = target < n_train, target >= n_train
    X_train, Y_train, X_test = X[train], Y[train], X[test]
    truth, test_years = series[target[test]], years[target[test]]

    def unscale(z):
        return np.asarray(z).reshape(-1) * std + mean

    print(f"yearly sunspots {years[0]}-{years[-1]} ({len(series)} values), statsmodels "
          f"{sys.modules['statsmodels'].__version__}: train on targets {years[0] + args.window}-"
          f"{years[n_train - 1]} ({len(X_train)} windows of {args.window} years), hold out "
          f"{test_years[0]}-{test_years[-1]} ({len(X_test)} years)")
    print(f"models: {args.hidden_size} tanh units, Adam(lr={args.lr}), batch_size="
          f"{args.batch_size}, clip_norm={args.clip_norm}, full BPTT, {args.epochs} epochs, "
          f"seed {args.seed}, float64, {args.backend} backend")

    rows = []                 # (name, parameters, training seconds or None, forecast)
    forecasts: dict = {}
    losses: dict = {}

    forecasts["persistence"] = series[target[test] - 1]
    rows.append(("persistence", 0, None, forecasts["persistence"]))
    start = time.perf_counter()
    ar = linear_ar(X_train, Y_train, X_test)
    elapsed = time.perf_counter() - start
    ar_name = f"linear AR({args.window})"
    forecasts[ar_name] = unscale(ar)
    rows.append((ar_name, args.window + 1, elapsed, forecasts[ar_name]))

    missing = []
    for name in MODELS:
        cls = getattr(rnnkit, name, None)
        if cls is None:
            missing.append(name)
            continue
        model = cls(input_size=1, hidden_size=args.hidden_size, output_size=1,
                    seed=args.seed, dtype="float64", backend=args.backend)
        start = time.perf_counter()
        hist = model.fit(X_train, Y_train, epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=rnnkit.Adam(lr=args.lr), clip_norm=args.clip_norm)
        elapsed = time.perf_counter() - start
        n_params = sum(int(w.size) for w in model.weights.values())
        forecasts[name] = unscale(model.predict(X_test))
        losses[name] = hist["loss"]
        rows.append((name, n_params, elapsed, forecasts[name]))
    if missing:
        print(f"not in this rnnkit {rnnkit.__version__}, skipped: {', '.join(missing)}")

    base = rmse(forecasts["persistence"], truth)
    print()
    print("| model | parameters | training time (s) | RMSE | MAE | skill vs persistence |")
    print("|---|---|---|---|---|---|")
    for name, n_params, seconds, pred in rows:
        err = rmse(pred, truth)
        time_text = "–" if seconds is None else f"{seconds:.3f}"
        print(f"| {name} | {n_params} | {time_text} | {err:.2f} | {mae(pred, truth):.2f} | "
              f"{1.0 - err / base:+.3f} |")
    print()

    if not args.no_plot:
        path = os.path.abspath(args.plot)
        if plot(path, years, series, test_years, forecasts, losses):
            print(f"plot saved to {path}")
        else:
            print("matplotlib is not installed: no plot (pip install matplotlib)")

    recurrent = [rmse(forecasts[n], truth) for n in MODELS if n in forecasts]
    if not any(err < base for err in recurrent):                   # also catches NaN
        print("FAILED: no recurrent model beats persistence on the held-out tail",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
