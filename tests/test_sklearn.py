"""rnnkit.sklearn.RNNRegressor: scikit-learn's own estimator checks, Pipeline, GridSearchCV,
partial_fit, pickling, and its own argument errors. Skipped without scikit-learn >= 1.6."""

import os
import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", minversion="1.6")

from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.sklearn import RNNRegressor  # noqa: E402

# Checks that skip themselves for want of an optional package or setting, not because of the
# estimator; CI installs pandas and sets SCIPY_ARRAY_API=1 (tests/conftest.py) so that they
# run there, and there no check may be skipped.
ENVIRONMENT_SKIPS = ("pandas is not installed", "SCIPY_ARRAY_API is not set",
                     "array_api_compat", "array-api-compat")


def _assert_passes_check_estimator(estimator):
    """Every check of check_estimator passes or skips for an environment reason only (none
    in CI)."""
    results = check_estimator(estimator, on_fail=None, on_skip=None)
    status = {}
    for r in results:
        status.setdefault(r["status"], []).append(r["check_name"])
    report = {k: len(v) for k, v in status.items()}
    print(f"check_estimator: {len(results)} checks: {report}")
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results
              if r["status"] not in ("passed", "skipped")]
    assert not failed, failed
    skipped = [(r["check_name"], str(r["exception"])) for r in results
               if r["status"] == "skipped"]
    if os.environ.get("CI"):
        assert not skipped, f"CI must run every check: {skipped}"
    assert all(any(s in why for s in ENVIRONMENT_SKIPS) for _, why in skipped), skipped
    assert len(status["passed"]) + len(skipped) == len(results) >= 50, report


def test_passes_check_estimator():
    """Every check of scikit-learn's check_estimator runs and passes (53 checks with
    scikit-learn 1.9.1); no check is declared as expected to fail. The tags declare only
    capabilities: 3-D X and multi-output y."""
    _assert_passes_check_estimator(RNNRegressor(random_state=0))


def _sequences(n=120, t=12, seed=0):
    """Windows of a noisy sine with a random phase; target: the next value."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    s = np.sin(0.4 * np.arange(t + 1)[None, :] + phase[:, None])
    s += 0.01 * rng.normal(size=s.shape)
    return 5.0 + 3.0 * s[:, :t], 5.0 + 3.0 * s[:, t]     # off-centre, so that scaling matters


def test_fit_predict_score_2d_and_sizes():
    X, y = _sequences()
    est = RNNRegressor(hidden_size=12, epochs=60, random_state=0).fit(X[:90], y[:90])
    assert est.n_features_in_ == 12 and est.input_size_ == 1 and est.n_outputs_ == 1
    assert est.model_.hidden_size == 12 and len(est.history_["loss"]) == 60
    assert est.predict(X[90:]).shape == (30,)
    assert est.score(X[90:], y[90:]) > 0.9


def test_3d_input_and_multi_output():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 6, 3))
    y = np.stack([X[:, :, 0].sum(1), X[:, -1, 2]], axis=1)
    est = RNNRegressor(hidden_size=8, epochs=5, random_state=0).fit(X, y)
    assert est.input_size_ == 3 and est.n_outputs_ == 2 and est.n_features_in_ == 6
    assert est.predict(X).shape == (50, 2)
    with pytest.raises(ValueError, match=r"X must have shape \(N, T, 3\), got \(50, 6, 2\)"):
        est.predict(X[:, :, :2])


def test_random_state_int_is_the_rnn_seed_and_fit_is_repeatable():
    X, y = _sequences(n=40)
    a = RNNRegressor(hidden_size=5, epochs=3, random_state=7).fit(X, y)
    twin = rnnkit.RNN(1, 5, 1, seed=7)
    twin.fit(X[:, :, None], y, epochs=3, optimizer=rnnkit.Adam(lr=0.01))
    np.testing.assert_array_equal(a.predict(X), twin.predict(X)[:, 0])
    b = RNNRegressor(hidden_size=5, epochs=3, random_state=7).fit(X, y)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    c = RNNRegressor(hidden_size=5, epochs=3, random_state=np.random.RandomState(0)).fit(X, y)
    assert not np.array_equal(a.predict(X), c.predict(X))


def test_partial_fit_is_one_more_epoch():
    X, y = _sequences(n=40)
    a = RNNRegressor(hidden_size=5, epochs=3, random_state=3).fit(X, y)
    a.partial_fit(X, y)
    b = RNNRegressor(hidden_size=5, epochs=4, random_state=3).fit(X, y)
    assert a.history_["loss"] == b.history_["loss"]
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    c = RNNRegressor(hidden_size=5, random_state=3).partial_fit(X, y)
    assert len(c.history_["loss"]) == 1
    with pytest.raises(ValueError, match=r"X has 5 features, but RNNRegressor is expecting 12"):
        c.partial_fit(X[:, :5], y)
    with pytest.raises(ValueError, match=r"y must have shape \(n_samples,\) as in the first fit.*"
                                         r"got shape \(40, 2\)"):
        c.partial_fit(X, np.stack([y, y], axis=1))
    # the same values as a column: predict would not return what the first fit promised
    with pytest.raises(ValueError, match=r"y must have shape \(n_samples,\).*got shape \(40, 1\)"):
        c.partial_fit(X, y[:, None])
    d = RNNRegressor(hidden_size=5, random_state=3).partial_fit(X, y[:, None])
    with pytest.raises(ValueError, match=r"y must have shape \(n_samples, 1\).*got shape \(40,\)"):
        d.partial_fit(X, y)
    assert d.predict(X).shape == (40, 1) and c.predict(X).shape == (40,)


def test_hyperparameter_errors_name_the_argument():
    X, y = _sequences(n=20)
    with pytest.raises(ValueError, match=r"cell must be one of 'rnn', 'gru', 'lstm', got 'elman'"):
        RNNRegressor(cell="elman").fit(X, y)
    with pytest.raises(ValueError, match=r"num_layers must be an integer >= 1, got 0"):
        RNNRegressor(num_layers=0).fit(X, y)
    with pytest.raises(ValueError, match=r"optimizer must be one of 'adam', 'sgd', got 'rmsprop'"):
        RNNRegressor(optimizer="rmsprop").fit(X, y)
    with pytest.raises(ValueError, match=r"hidden_size must be an integer >= 1, got 0"):
        RNNRegressor(hidden_size=0).fit(X, y)
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0, inf\), got -1"):
        RNNRegressor(learning_rate=-1).fit(X, y)
    with pytest.raises(ValueError, match=r"epochs must be an integer >= 1, got 0"):
        RNNRegressor(epochs=0).fit(X, y)
    with pytest.raises(ValueError, match=r"activation must be one of .*got 'gelu'"):
        RNNRegressor(activation="gelu").fit(X, y)


@pytest.mark.parametrize("optimizer, shuffle", [("adam", False), ("sgd", True)])
def test_every_training_hyperparameter_reaches_the_network(optimizer, shuffle):
    """fit is rnnkit.RNN(seed=random_state).fit with the estimator's settings, bit for bit:
    truncation, both clippings, shuffling, the optimizer with its learning rate, momentum and
    weight decay, batch size, layers (a setting dropped on the way would change the weights)."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(24, 7, 2)), rng.normal(size=(24, 2))
    settings = dict(hidden_size=5, num_layers=2, activation="tanh", epochs=3, batch_size=8,
                    bptt_truncate=2, clip_norm=0.5, clip_value=0.01, shuffle=shuffle,
                    optimizer=optimizer, learning_rate=0.03, weight_decay=0.01)
    if optimizer == "sgd":
        settings["momentum"] = 0.9
    est = RNNRegressor(random_state=7, **settings).fit(X, y)
    model = rnnkit.RNN(2, 5, 2, num_layers=2, activation="tanh", seed=7)
    opt = (rnnkit.Adam(lr=0.03, weight_decay=0.01) if optimizer == "adam"
           else rnnkit.SGD(lr=0.03, momentum=0.9, weight_decay=0.01))
    hist = model.fit(X, y, epochs=3, batch_size=8, optimizer=opt, bptt_truncate=2, clip_norm=0.5,
                     clip_value=0.01, shuffle=shuffle)
    assert est.history_["loss"] == hist["loss"]
    for name, value in model.weights.items():
        np.testing.assert_array_equal(est.model_.weights[name], value, err_msg=name)
    for changed in (dict(bptt_truncate=None), dict(clip_norm=None), dict(clip_value=None),
                    dict(shuffle=not shuffle), dict(weight_decay=0.0)):
        other = RNNRegressor(random_state=7, **{**settings, **changed}).fit(X, y)
        assert other.history_["loss"] != hist["loss"], changed


def test_a_refused_refit_leaves_the_fitted_estimator_as_it_was():
    """fit on new data with a bad hyperparameter (or bad data) raises and changes nothing: the
    estimator still describes, and predicts with, the network it has (it used to take the new
    data's sizes while keeping the old network)."""
    X, y = _sequences(n=30)
    r = RNNRegressor(hidden_size=4, epochs=2, random_state=0).fit(X, y)
    before, pred = dict(vars(r)), r.predict(X)
    X8, Y2 = np.zeros((30, 8)), np.zeros((30, 2))
    good = r.get_params()
    for change in ({"hidden_size": 0}, {"batch_size": 0}, {"dtype": "float16"},
                   {"clip_norm": -1.0}, {"clip_value": 0.0}, {"shuffle": "yes"}, {"verbose": -3}):
        r.set_params(**change)
        with pytest.raises((ValueError, TypeError)):
            r.fit(X8, Y2)
        fresh = RNNRegressor(**{**good, **change})
        with pytest.raises((ValueError, TypeError)):
            fresh.partial_fit(X8, Y2)
        assert not hasattr(fresh, "model_")            # an unfitted estimator stays unfitted
        r.set_params(**good)
        assert vars(r) == before
    with pytest.raises(ValueError):
        r.partial_fit(X8[:, :5], Y2)        # refused by partial_fit's checks
    with pytest.raises(ValueError, match="NaN"):
        r.fit(np.full((30, 8), np.nan), Y2)
    assert vars(r) == before
    np.testing.assert_array_equal(r.predict(X), pred)


def test_float32_network_predicts_float64():
    """scikit-learn's convention (check_regressor_multioutput): predictions are float64 whatever
    dtype the network computes in."""
    X, y = _sequences(n=30)
    r = RNNRegressor(hidden_size=4, epochs=2, random_state=0, dtype="float32").fit(X, y)
    assert r.model_.dtype == np.float32 and r.predict(X).dtype == np.float64
    _assert_passes_check_estimator(RNNRegressor(random_state=0, dtype="float32"))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gru_and_lstm_cells_with_layers(cell):
    """cell and num_layers choose the model class and depth; an int random_state is its seed."""
    X, y = _sequences(n=40)
    est = RNNRegressor(cell=cell, num_layers=2, hidden_size=5, epochs=3, random_state=7,
                       backend="reference").fit(X, y)
    assert type(est.model_) is {"gru": rnnkit.GRU, "lstm": rnnkit.LSTM}[cell]
    assert est.model_.num_layers == 2 and len(est.history_["loss"]) == 3
    twin = {"gru": rnnkit.GRU, "lstm": rnnkit.LSTM}[cell](1, 5, 1, seed=7, num_layers=2,
                                                          backend="reference")
    twin.fit(X[:, :, None], y, epochs=3, optimizer=rnnkit.Adam(lr=0.01))
    np.testing.assert_array_equal(est.predict(X), twin.predict(X)[:, 0])


def test_pickle_round_trip_is_exact():
    X, y = _sequences(n=40)
    est = RNNRegressor(hidden_size=6, epochs=4, optimizer="sgd", momentum=0.9,
                       learning_rate=0.01, random_state=2).fit(X, y)
    copy = pickle.loads(pickle.dumps(est))
    assert copy.get_params() == est.get_params()
    np.testing.assert_array_equal(copy.predict(X), est.predict(X))
    np.testing.assert_array_equal(copy.model_.optimizer.state["momentum_buffer"],
                                  est.model_.optimizer.state["momentum_buffer"])
    est.partial_fit(X, y)                       # training goes on identically from the copy
    copy.partial_fit(X, y)
    np.testing.assert_array_equal(copy.predict(X), est.predict(X))


def test_pipeline_with_scaler():
    X, y = _sequences()
    pipe = make_pipeline(StandardScaler(), RNNRegressor(hidden_size=12, epochs=60,
                                                        random_state=0))
    pipe.fit(X[:90], y[:90])
    assert pipe.score(X[90:], y[90:]) > 0.9


def test_grid_search_with_two_processes():
    X, y = _sequences(n=80)
    grid = GridSearchCV(RNNRegressor(epochs=20, random_state=0),
                        {"hidden_size": [4, 12], "learning_rate": [0.003, 0.03]}, cv=2,
                        n_jobs=2)
    grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    # the workers computed the real thing: split 0 refitted here gives the same score
    best = grid.best_params_
    i = grid.cv_results_["params"].index(best)
    train, test = next(KFold(2).split(X))
    est = RNNRegressor(epochs=20, random_state=0, **best).fit(X[train], y[train])
    assert est.score(X[test], y[test]) == grid.cv_results_["split0_test_score"][i]
