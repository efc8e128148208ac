"""GridSearchCV over RNNRegressor on a dask.distributed LocalCluster through joblib's dask
backend (examples/dask_sweep.py in small). Skipped without dask.distributed or scikit-learn."""

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")
distributed = pytest.importorskip("dask.distributed")

import joblib  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from rnnkit.sklearn import RNNRegressor  # noqa: E402


def test_grid_search_runs_on_dask_workers_and_matches_in_process():
    rng = np.random.default_rng(0)
    phase = rng.uniform(0, 2 * np.pi, size=60)
    s = np.sin(0.3 * np.arange(11)[None, :] + phase[:, None])
    X, y = s[:, :10], s[:, 10]
    grid = {"hidden_size": [4, 8], "learning_rate": [0.01, 0.03]}

    def search():
        return GridSearchCV(RNNRegressor(epochs=5, random_state=0), grid, cv=2)

    local = search().fit(X, y)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            remote = search().fit(X, y)
        used = {task["worker"] for task in stream.data}
        addresses = set(client.scheduler_info()["workers"])
    assert len(stream.data) >= 8, "the 8 fits did not run on the cluster"   # 4 params x 2 folds
    assert used and used <= addresses
    np.testing.assert_array_equal(remote.cv_results_["mean_test_score"],
                                  local.cv_results_["mean_test_score"])
    assert remote.best_params_ == local.best_params_
