"""Predict the next value of a sine wave from the 50 before it: the classic NumPy RNN
tutorial (the "first seed"), made right.

sin(x) is sampled at x = 0, 1, ..., 199 and cut into windows of 50 values, each with the 51st
value as its target: 150 windows, the first 100 to train on, the next 50 to validate on. An
Elman RNN (1 input, 100 tanh hidden units, 1 output) is trained one window at a time with SGD,
backpropagation through time truncated to 5 steps, and gradients clipped at 10 per element,
for 25 epochs. The script prints each epoch's training and validation loss, then the
validation RMSE and the training time, then forecasts 200 steps past the data (x = 200..399)
autoregressively from its last 50 values with ``model.forecast`` and prints that forecast's
RMSE against the true sin(x). When matplotlib is installed it saves one PNG (and prints its
path) with the validation predictions, the loss curves (``rnnkit.plot.history``) and the
forecast next to the truth (``rnnkit.plot.forecast``).

    python examples/sine_wave.py                    # the defaults reach RMSE <= 0.005
    python examples/sine_wave.py --optimizer adam --lr 0.001 --no-plot

Exits with status 1 if the validation RMSE is above 0.005.
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

TARGET_RMSE = 0.005
FORECAST_STEPS = 200


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog=f"Exits with status 1 if the validation RMSE is above "
                                       f"{TARGET_RMSE} (the defaults reach it).")
    p.add_argument("--hidden-size", type=at_least(1), default=100, help="hidden units H")
    p.add_argument("--activation", choices=["tanh", "sigmoid", "relu"], default="tanh")
    p.add_argument("--epochs", type=at_least(1), default=25)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--lr", type=positive, default=argparse.SUPPRESS,
                   help="learning rate (default: 0.01 for sgd, 0.001 for adam)")
    p.add_argument("--backend", choices=["cpp", "reference"], default="cpp")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the shuffling")
    p.add_argument("--plot", default="sine_wave.png",
                   help="where to save the plot (needs matplotlib)")
    p.add_argument("--no-plot", action="store_true", help="do not plot")
    args = p.parse_args(argv)
    if "lr" not in vars(args):   # (not given: the optimizer's own default)
        args.lr = 0.01 if args.optimizer == "sgd" else 0.001
    check_plot_path(p, args)
    return args


def make_data():
    """150 windows of 50 steps of sin(0..199) and the value after each: train 100, validate 50."""
    series = np.sin(np.arange(200.0))
    X, Y = rnnkit.data.sliding_windows(series, seq_len=50)        # (150, 50, 1), (150, 1)
    return (X[:100], Y[:100]), (X[100:150], Y[100:150])


def plot(path: str, Y_val: np.ndarray, predictions: np.ndarray, history: dict,
         context: np.ndarray, forecast: np.ndarray, truth: np.ndarray) -> bool:
    """Save validation predictions vs truth, the loss curves and the forecast next to the
    truth in one PNG; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")                                          # files only, no display
    import matplotlib.pyplot as plt

    import rnnkit.plot

    fig = plt.figure(figsize=(12, 8))
    ax1, ax2 = fig.add_subplot(2, 2, 1), fig.add_subplot(2, 2, 2)
    ax3 = fig.add_subplot(2, 1, 2)
    x = np.arange(200 - len(Y_val), 200)                           # the targets' x values
    ax1.plot(x, Y_val[:, 0], "g-", label="truth sin(x)")
    ax1.plot(x, predictions[:, 0], "r--", label="prediction")
    ax1.set(title="validation: next value from the 50 before", xlabel="x")
    ax1.legend()
    rnnkit.plot.history({"training loss": history["loss"],
                         "validation loss": history["val_loss"]}, ax=ax2)
    rnnkit.plot.forecast(context, forecast, truth, ax=ax3, start=200 - len(context),
                         title=f"{len(forecast)}-step forecast from the last "
                               f"{len(context)} values, each prediction fed back as input")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    (X_train, Y_train), (X_val, Y_val) = make_data()

    model = rnnkit.RNN(input_size=1, hidden_size=args.hidden_size, output_size=1,
                       activation=args.activation, seed=args.seed, backend=args.backend)
    optimizer = rnnkit.SGD(lr=args.lr) if args.optimizer == "sgd" else rnnkit.Adam(lr=args.lr)
    print(f"{model}\n{optimizer}, batch_size=1, bptt_truncate=5, clip_value=10, "
          f"{args.epochs} epochs, {len(X_train)} training and {len(X_val)} validation windows")

    # One fit call per epoch, to print as it goes: the optimizer's state and the model's
    # shuffling generator carry over, so this is the same run as
    # fit(..., epochs=args.epochs, validation_data=(X_val, Y_val)). The clock times the
    # training only, not the validation loss computed after each epoch.
    history: dict = {"loss": [], "val_loss": []}
    elapsed = 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        h = model.fit(X_train, Y_train, epochs=1, batch_size=1, optimizer=optimizer,
                      bptt_truncate=5, clip_value=10.0)
        elapsed += time.perf_counter() - start
        history["loss"] += h["loss"]
        history["val_loss"].append(model.loss(X_val, Y_val))
        print(f"epoch {epoch:3d}/{args.epochs}  loss {history['loss'][-1]:.3e}  "
              f"val_loss {history['val_loss'][-1]:.3e}", flush=True)

    predictions = model.predict(X_val)
    rmse = float(np.sqrt(np.mean((predictions - Y_val) ** 2)))
    print(f"validation RMSE: {rmse:.6f}")
    print(f"training time: {elapsed:.3f} s ({args.backend} backend, validation not included)")

    # Forecast x = 200..399 from the last 50 values, each prediction fed back as the next input.
    context = np.sin(np.arange(150.0, 200.0))
    forecast = model.forecast(context.reshape(1, 50), FORECAST_STEPS)[0, :, 0]
    truth = np.sin(np.arange(200.0, 200.0 + FORECAST_STEPS))
    forecast_rmse = float(np.sqrt(np.mean((forecast - truth) ** 2)))
    print(f"forecast RMSE ({FORECAST_STEPS} steps): {forecast_rmse:.6f}")

    if not args.no_plot:
        path = os.path.abspath(args.plot)
        if plot(path, Y_val, predictions, history, context, forecast, truth):
            print(f"plot saved to {path}")
        else:
            print("matplotlib is not installed: no plot (pip install matplotlib)")

    if not rmse <= TARGET_RMSE:                                    # also catches NaN
        print(f"FAILED: validation RMSE {rmse:.6f} is above {TARGET_RMSE} (the defaults reach it)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
