"""Learn one sine sequence many-to-many, carrying the hidden state from step to step: the
PyTorch-style program (the "second seed"), made right with rnnkit.

31 points of sin on [0, pi]: the input is the first 30 values, the target the next 30 (each
step predicts the value after it), shapes (1, 30, 1). An RNN with 20 tanh hidden units,
``return_sequences=True``, is trained with Adam (lr 0.01) for 600 epochs, one update per
epoch. As the PyTorch original did with ``hidden.data``, the final hidden state of each epoch's
forward pass becomes the next epoch's initial state, as a constant: ``train_step`` returns it
as a plain array, and no gradient flows back through it (it is "detached").

    python examples/pytorch_style.py
    python examples/pytorch_style.py --backend reference --epochs 300 --no-plot
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import rnnkit


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=600)
    p.add_argument("--backend", choices=["cpp", "reference"], default="cpp")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights")
    p.add_argument("--plot", default="pytorch_style.png",
                   help="where to save the plot (needs matplotlib)")
    p.add_argument("--no-plot", action="store_true", help="do not plot")
    return p.parse_args(argv)


def plot(path: str, t: np.ndarray, target: np.ndarray, prediction: np.ndarray) -> bool:
    """Save the prediction against the target; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")                                          # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, target, "go-", label="target sin(t)")
    ax.plot(t, prediction, "r.--", label="prediction")
    ax.set(title="next value of sin on [0, pi], many-to-many", xlabel="t")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    args = parse_args(argv)
    t = np.linspace(0, np.pi, 31)
    data = np.sin(t)
    X = data[:-1].reshape(1, 30, 1)                                # input: values 0..29
    Y = data[1:].reshape(1, 30, 1)                                 # target: values 1..30

    model = rnnkit.RNN(input_size=1, hidden_size=20, output_size=1, activation="tanh",
                       return_sequences=True, seed=args.seed, backend=args.backend)
    optimizer = rnnkit.Adam(lr=0.01)
    print(f"{model}\n{optimizer}, {args.epochs} epochs, hidden state carried across epochs")

    hidden = None                                                  # zeros at the start
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        # loss before this update, and h_T of this forward pass: the next epoch's h0
        loss, hidden = model.train_step(X, Y, h0=hidden, optimizer=optimizer)
        if epoch % 100 == 0 or epoch == 1:
            print(f"epoch {epoch:4d}/{args.epochs}  loss {loss:.3e}", flush=True)
    elapsed = time.perf_counter() - start

    final_loss = model.loss(X, Y, h0=hidden)
    prediction = model.predict(X, h0=hidden)
    print(f"final loss: {final_loss:.6e}")
    print(f"training time: {elapsed:.3f} s ({args.backend} backend)")
    if not np.isfinite(final_loss):
        print("FAILED: the loss is not finite", file=sys.stderr)
        return 1

    if not args.no_plot:
        path = os.path.abspath(args.plot)
        if plot(path, t[1:], Y[0, :, 0], prediction[0, :, 0]):
            print(f"plot saved to {path}")
        else:
            print("matplotlib is not installed: no plot (pip install matplotlib)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
