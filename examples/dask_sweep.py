"""A hyperparameter sweep that scales out: scikit-learn's GridSearchCV over RNNRegressor, its
fits run by the workers of a Dask cluster through joblib's dask backend.

Here the cluster is a ``dask.distributed.LocalCluster`` on this machine (2 worker processes,
1 thread each); pointing ``Client`` at a real scheduler's address (``--scheduler
tcp://host:8786``) runs the same sweep on a cluster's workers, nothing else changes. Each
worker receives the pickled estimator and data, runs whole fits (one C++ call per epoch), and
sends the fitted estimator or its score back.

The task: the next value of sin(x) with a random phase and noise, from the 20 values before
(X is 2-D, (n_samples, 20): one feature per time step, as scikit-learn passes it), with a
StandardScaler in front. The script prints the grid's scores, the best parameters and the
held-out R², and saves the best model's loss curve as a PNG (needs matplotlib).

    pip install ".[dask]"        # from a clone of this repository (scikit-learn comes with it)
    python examples/dask_sweep.py
    python examples/dask_sweep.py --workers 4 --no-plot

Exits with status 1 if the held-out R² of the best model is below 0.9.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

# _cli sits beside this file, which may also run through runpy or python -m
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import at_least, check_plot_path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workers", type=at_least(1), default=2, help="LocalCluster worker processes")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler (instead of a LocalCluster)")
    p.add_argument("--epochs", type=at_least(1), default=40)
    p.add_argument("--plot", default="dask_sweep.png",
                   help="where to save the best model's loss curve (needs matplotlib)")
    p.add_argument("--no-plot", action="store_true", help="do not plot")
    args = p.parse_args(argv)
    check_plot_path(p, args)
    return args


def make_data(n: int = 300, t: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    s = np.sin(0.3 * np.arange(t + 1)[None, :] + phase[:, None])
    s += 0.02 * rng.normal(size=(n, t + 1))
    return 2.0 + s[:, :t], 2.0 + s[:, t]


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import joblib
        from dask.distributed import Client, LocalCluster
        from sklearn.model_selection import GridSearchCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        print(f"this example needs scikit-learn and dask.distributed: "
              f"pip install \".[dask]\" ({exc})", file=sys.stderr)
        return 1
    from rnnkit.sklearn import RNNRegressor

    X, y = make_data()
    X_train, y_train, X_test, y_test = X[:240], y[:240], X[240:], y[240:]
    pipe = make_pipeline(StandardScaler(), RNNRegressor(epochs=args.epochs, random_state=0))
    grid = {"rnnregressor__hidden_size": [8, 24], "rnnregressor__learning_rate": [0.003, 0.02]}
    search = GridSearchCV(pipe, grid, cv=3)

    if args.scheduler:
        client, cluster = Client(args.scheduler), None
    else:
        # processes=True: each worker is its own Python process, as on a real cluster.
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        print(f"dask cluster: {client.scheduler_info()['address']}, "
              f"{len(client.scheduler_info()['workers'])} workers")
        start = time.perf_counter()
        with joblib.parallel_backend("dask"):       # GridSearchCV's fits go to the workers
            search.fit(X_train, y_train)
        elapsed = time.perf_counter() - start
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

    n_fits = len(search.cv_results_["params"]) * search.n_splits_
    for params, score in zip(search.cv_results_["params"],
                             search.cv_results_["mean_test_score"]):
        print(f"  {params}  mean CV R2 {score:.4f}")
    print(f"best: {search.best_params_}")
    r2 = float(search.score(X_test, y_test))
    print(f"held-out R2: {r2:.4f}")
    print(f"sweep time: {elapsed:.2f} s for {n_fits} fits (+ the refit of the best)")

    if not args.no_plot:
        try:
            import matplotlib
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)")
        else:
            matplotlib.use("Agg")
            import rnnkit.plot
            path = os.path.abspath(args.plot)
            best = search.best_estimator_[-1]
            ax = rnnkit.plot.history(best.history_, path=path,
                                     title=f"best model's training loss: {search.best_params_}")
            matplotlib.pyplot.close(ax.figure)
            print(f"plot saved to {path}")

    if not r2 >= 0.9:
        print(f"FAILED: held-out R2 {r2:.4f} is below 0.9", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
