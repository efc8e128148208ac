"""examples/sine_wave.py written in plain PyTorch: the yardstick for its whole-process time.

The same run step for step: sin(0..199) cut into 150 windows of 50 values (100 to train on, 50
to validate on), 1 input, 100 tanh hidden units with one hidden bias, 1 output; SGD lr 0.01,
one window at a time in a shuffled order, gradients truncated to the last k+1 = 6 steps
(the first T-6 steps run under no_grad and the state is detached), clipped at 10 per element;
25 epochs, the validation loss after each. The weights and the shuffling come from
numpy.random.default_rng(seed) in rnnkit's order (U, W, b, V, c ~ Uniform(±1/√H), then one
permutation per epoch), so the losses printed are rnnkit's, to rounding.

    python benchmarks/sine_wave_torch.py [--epochs 25] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

T, H, K, LR, CLIP = 50, 100, 5, 0.01, 10.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    series = np.sin(np.arange(200.0))
    windows = series[np.arange(150)[:, None] + np.arange(T + 1)]          # (150, 51)
    X = torch.from_numpy(np.ascontiguousarray(windows[:, :T, None]))       # (150, 50, 1)
    Y = torch.from_numpy(np.ascontiguousarray(windows[:, T:]))            # (150, 1)
    X_train, Y_train, X_val, Y_val = X[:100], Y[:100], X[100:], Y[100:]

    rng = np.random.default_rng(args.seed)
    bound = 1 / np.sqrt(H)
    rnn = torch.nn.RNN(1, H, nonlinearity="tanh", batch_first=True, dtype=torch.float64)
    linear = torch.nn.Linear(H, 1, dtype=torch.float64)
    with torch.no_grad():
        for param, shape in ((rnn.weight_ih_l0, (H, 1)), (rnn.weight_hh_l0, (H, H)),
                             (rnn.bias_ih_l0, (H,)), (linear.weight, (1, H)),
                             (linear.bias, (1,))):
            param.copy_(torch.from_numpy(rng.uniform(-bound, bound, size=shape)))
        rnn.bias_hh_l0.zero_()
    rnn.bias_hh_l0.requires_grad_(False)               # one hidden bias, as rnnkit has
    params = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, linear.weight, linear.bias]
    opt = torch.optim.SGD(params, lr=LR)
    mse = torch.nn.functional.mse_loss
    print(f"torch.nn.RNN(1, {H}, tanh) + Linear, SGD lr {LR}, batch 1, truncation {K}, "
          f"clip_value {CLIP}, {args.epochs} epochs")

    elapsed = 0.0
    for epoch in range(1, args.epochs + 1):
        start_time = time.perf_counter()
        total = 0.0
        for i in rng.permutation(100):
            x, y = X_train[i:i + 1], Y_train[i:i + 1]
            with torch.no_grad():
                _, h = rnn(x[:, :T - K - 1])
            out, _ = rnn(x[:, T - K - 1:], h.detach())
            loss = mse(linear(out[:, -1]), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_value_(params, CLIP)
            opt.step()
            total += loss.item()
        elapsed += time.perf_counter() - start_time
        with torch.no_grad():
            val_loss = mse(linear(rnn(X_val)[0][:, -1]), Y_val).item()
        print(f"epoch {epoch:3d}/{args.epochs}  loss {total / 100:.3e}  val_loss {val_loss:.3e}",
              flush=True)

    with torch.no_grad():
        rmse = mse(linear(rnn(X_val)[0][:, -1]), Y_val).sqrt().item()
    print(f"validation RMSE: {rmse:.6f}")
    print(f"training time: {elapsed:.3f} s (PyTorch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, validation not included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
