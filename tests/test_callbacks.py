"""Keras-style feedback: the History fit returns, verbose output, callbacks (EarlyStopping,
ModelCheckpoint, plain callables), and exact pickling of models."""

import pickle
import re
import time

import numpy as np
import pytest

import rnnkit
from rnnkit import callbacks as cbmod


def _data(n=40, t=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, t, 1))
    return X, X.sum(axis=1) / 3.0


def _model(backend="cpp", **kw):
    return rnnkit.RNN(1, 6, 1, seed=0, backend=backend, **kw)


# ----------------------------------------------------------------------------- History
def test_history_object_and_dict_compatibility(backend):
    X, Y = _data()
    hist = _model(backend).fit(X[:30], Y[:30], epochs=3, batch_size=8,
                               validation_data=(X[30:], Y[30:]))
    assert isinstance(hist, rnnkit.History)
    assert set(hist.history) == {"loss", "val_loss"} and len(hist.history["loss"]) == 3
    assert hist["loss"] is hist.history["loss"] and dict(hist) == hist.history
    assert hist.epoch == [0, 1, 2]
    assert hist.params == {"epochs": 3, "steps": 4, "samples": 30, "validation": True}
    no_val = _model(backend).fit(X, Y, epochs=2)
    assert no_val == {"loss": no_val["loss"], "val_loss": []} and len(no_val["loss"]) == 2


# ----------------------------------------------------------------------------- verbose
def test_verbose_0_is_silent(capsys):
    X, Y = _data()
    _model().fit(X, Y, epochs=2, validation_data=(X, Y), verbose=0)
    assert capsys.readouterr() == ("", "")


def test_verbose_2_prints_one_line_per_epoch(capsys):
    X, Y = _data()
    hist = _model().fit(X, Y, epochs=3, validation_data=(X, Y), verbose=2)
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 3 and err == ""
    for epoch, line in enumerate(lines):
        m = re.fullmatch(r"epoch (\d)/3 - loss: (\S+) - val_loss: (\S+) - (\d+\.\d\d)s", line)
        assert m, line
        assert int(m.group(1)) == epoch + 1
        assert float(m.group(2)) == pytest.approx(hist["loss"][epoch], rel=1e-3)
        assert float(m.group(3)) == pytest.approx(hist["val_loss"][epoch], rel=1e-3)


def test_verbose_1_without_tqdm_falls_back_to_lines(capsys, monkeypatch):
    monkeypatch.setattr(cbmod, "_tqdm", lambda: None)
    X, Y = _data()
    _model().fit(X, Y, epochs=2, verbose=1)
    out, err = capsys.readouterr()
    assert re.fullmatch(r"(epoch \d/2 - loss: \S+ - \d+\.\d\ds\n){2}", out), out
    assert err == ""


def test_verbose_1_progress_bar_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    X, Y = _data(n=64)
    hist = _model().fit(X, Y, epochs=2, batch_size=4, validation_data=(X, Y), verbose=1)
    out, err = capsys.readouterr()
    assert out == ""
    for epoch in (1, 2):
        final = re.findall(rf"epoch {epoch}/2: 100%.*?16/16 .*?loss: (\S+) - val_loss: (\S+)"
                           r" - \d+\.\d\ds\]", err)
        assert final, err
        assert float(final[-1][0]) == pytest.approx(hist["loss"][epoch - 1], rel=1e-3)


def test_progress_is_reported_in_chunks_with_the_running_loss(monkeypatch):
    """The C++ loop calls back after the first minibatch and then at most every 50 ms, not per
    sample; the bar's running loss is the weighted mean of the minibatches done so far."""
    calls = []

    class FakeBar:
        def __init__(self, total, **kw):
            self.total, self.n = total, 0

        def update(self, k):
            self.n += k

        def set_postfix_str(self, text, refresh=True):
            calls.append((self.n, text))

        def close(self):
            pass

    monkeypatch.setattr(cbmod, "_tqdm", lambda: FakeBar)
    X, Y = _data(n=3000, t=20)
    model = _model()
    start = time.perf_counter()
    hist = model.fit(X, Y, epochs=1, batch_size=1, verbose=1, shuffle=False)
    elapsed = time.perf_counter() - start
    progress = calls[:-1]                 # the last one is the epoch's summary
    assert progress[0][0] == 1
    assert len(progress) <= 2 + elapsed / 0.05 and len(progress) < 3000 / 10
    assert calls[-1][0] == 3000 and calls[-1][1].startswith(f"loss: {hist['loss'][0]:.4g} - ")
    # shuffle=False, batch_size=1: after one minibatch the running loss is that of record 0
    # under the initial weights
    first = float(progress[0][1].split(": ")[1])
    assert first == pytest.approx(_model().loss(X[:1], Y[:1]), rel=1e-3)


# ----------------------------------------------------------------------------- callbacks
def test_callable_callbacks_get_epoch_and_logs_and_false_stops(backend):
    X, Y = _data()
    seen = []
    hist = _model(backend).fit(X, Y, epochs=5, validation_data=(X, Y),
                               callbacks=[lambda epoch, logs: seen.append((epoch, logs))])
    assert [e for e, _ in seen] == [0, 1, 2, 3, 4]
    assert [logs["loss"] for _, logs in seen] == hist["loss"]
    assert [logs["val_loss"] for _, logs in seen] == hist["val_loss"]
    hist = _model(backend).fit(X, Y, epochs=5, callbacks=[lambda epoch, logs: epoch < 1])
    assert len(hist["loss"]) == 2                       # epoch 1 returned False: stop after it


def test_early_stopping_patience_and_restore_best_weights():
    X, Y = _data()
    model = _model()
    # a validation set the model cannot improve on: targets of the opposite sign
    val = (X[:10], -Y[:10])
    records = []
    stopper = rnnkit.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    hist = model.fit(X, Y, epochs=50, batch_size=4, optimizer=rnnkit.Adam(lr=0.02),
                     validation_data=val,
                     callbacks=[stopper, lambda e, logs: records.append(model.weights)])
    best = int(np.argmin(hist["val_loss"]))
    n = len(hist["loss"])
    assert n < 50 and stopper.stopped_epoch == n - 1
    assert n - 1 - best == 2 and stopper.best_epoch == best  # patience 2: the 2nd miss stops
    assert stopper.best == hist["val_loss"][best]
    for name, value in model.weights.items():
        np.testing.assert_array_equal(value, records[best][name])
    assert model.loss(*val) == hist["val_loss"][best]


def test_early_stopping_min_delta_and_monitor_loss():
    X, Y = _data()
    stopper = rnnkit.EarlyStopping(monitor="loss", patience=0, min_delta=1e9)
    hist = _model().fit(X, Y, epochs=10, callbacks=[stopper])
    assert len(hist["loss"]) == 2 and stopper.stopped_epoch == 1   # nothing improves by 1e9
    # val_loss without validation data: refused before fit changes anything, on an unfitted
    # model and on a fitted one (its optimizer, the call's new optimizer and model.history)
    for cb in (rnnkit.EarlyStopping(), rnnkit.ModelCheckpoint("never.npz", save_best_only=True)):
        model = _model()
        before = model.weights
        with pytest.raises(ValueError, match=r"monitor='val_loss' needs validation_data"):
            model.fit(X, Y, epochs=2, callbacks=[cb])
        assert all(np.array_equal(before[k], v) for k, v in model.weights.items())
        assert model.optimizer is None or model.optimizer.step_count == 0
        old = rnnkit.Adam(lr=0.01)
        hist = model.fit(X, Y, epochs=2, optimizer=old, validation_data=(X, Y))
        before, steps, new = model.weights, old.step_count, rnnkit.SGD(lr=0.5)
        with pytest.raises(ValueError, match=r"monitor='val_loss' needs validation_data"):
            model.fit(X, Y, epochs=2, optimizer=new, callbacks=[cb])
        assert model.optimizer is old and old.step_count == steps > 0
        assert model.history is hist and len(hist["val_loss"]) == 2
        assert all(np.array_equal(before[k], v) for k, v in model.weights.items())
        _model().fit(X, Y, epochs=1, optimizer=new)    # the refused optimizer is nobody's
    # a key no callback adds: reported at the end of the first epoch, naming the keys there
    with pytest.raises(ValueError, match=r"monitor='val_mae' is not in the epoch logs.*'loss'"):
        _model().fit(X, Y, epochs=2, callbacks=[rnnkit.EarlyStopping(monitor="val_mae")])


def test_values_callbacks_add_to_the_logs_are_recorded_and_seen_by_later_callbacks():
    """As in Keras, where History runs last: a metric a callback (or a plain function) adds to
    an epoch's logs is in the History, and callbacks after it can monitor it."""
    X, Y = _data()
    model = _model()

    class AddMetric(rnnkit.callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            logs["val_mae"] = float(np.mean(np.abs(model.predict(X) - Y)))

    def add_twice(epoch, logs):
        logs["twice"] = 2 * logs["loss"]
    stopper = rnnkit.EarlyStopping(monitor="val_mae", patience=100)
    hist = model.fit(X, Y, epochs=3, callbacks=[AddMetric(), add_twice, stopper])
    assert len(hist["val_mae"]) == 3 and stopper.best == min(hist["val_mae"])
    assert hist["twice"] == [2 * v for v in hist["loss"]]


def test_a_callable_returning_numpy_false_stops_training():
    """A NumPy comparison returns np.False_, not False: it stops training too; None (a plain
    function's result) and other values do not."""
    X, Y = _data()
    hist = _model().fit(X, Y, epochs=5, callbacks=[lambda e, logs: logs["loss"] > np.float64(9)])
    assert len(hist["loss"]) == 1
    for result in (None, 0, np.True_, "stop"):
        hist = _model().fit(X, Y, epochs=3, callbacks=[lambda e, logs: result])
        assert len(hist["loss"]) == 3


def test_model_checkpoint_every_epoch_and_best_only(tmp_path):
    X, Y = _data()
    model = _model()
    every = rnnkit.ModelCheckpoint(tmp_path / "m-{epoch:02d}-{loss:.3f}.npz", save_best_only=False)
    best = rnnkit.ModelCheckpoint(str(tmp_path / "best.npz"), monitor="val_loss",
                                  save_best_only=True)
    val = (X[:10], -Y[:10])
    weights = []
    hist = model.fit(X, Y, epochs=4, batch_size=4, optimizer=rnnkit.Adam(lr=0.02),
                     validation_data=val, callbacks=[every, best,
                                                     lambda e, l: weights.append(model.weights)])
    assert [p.split("/")[-1] for p in every.saved] == [
        f"m-{e + 1:02d}-{hist['loss'][e]:.3f}.npz" for e in range(4)]
    for e, path in enumerate(every.saved):
        np.testing.assert_array_equal(rnnkit.load(path).weights["W"], weights[e]["W"])
    b = int(np.argmin(hist["val_loss"]))
    np.testing.assert_array_equal(rnnkit.load(tmp_path / "best.npz").weights["W"], weights[b]["W"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["best.npz"] + [p.split("/")[-1] for p in every.saved])        # no temporary left over


def _scripted_score(values):
    """A callback writing values[epoch] into the logs as "score" (a metric to maximize)."""
    def add_score(epoch, logs):
        logs["score"] = values[epoch]
    return add_score


def test_early_stopping_mode_max_keeps_the_highest_score():
    """mode="max": higher is better (an accuracy, an R2). Scores 1, 3, 2, 2.5: the best is
    epoch 1 (3); with patience 2 the second epoch without a higher score stops training, and
    restore_best_weights brings back epoch 1's weights; with min_delta 0.75, 3 improves on 1
    but nothing later does."""
    X, Y = _data()
    model = _model()
    weights = []
    stopper = rnnkit.EarlyStopping(monitor="score", mode="max", patience=2,
                                   restore_best_weights=True)
    hist = model.fit(X, Y, epochs=10, callbacks=[_scripted_score([1, 3, 2, 2.5, 4, 5]), stopper,
                                                 lambda e, logs: weights.append(model.weights)])
    assert hist["score"] == [1, 3, 2, 2.5] and stopper.stopped_epoch == 3
    assert stopper.best == 3 and stopper.best_epoch == 1
    for name, value in model.weights.items():
        np.testing.assert_array_equal(value, weights[1][name])
    strict = rnnkit.EarlyStopping(monitor="score", mode="max", patience=1, min_delta=0.75)
    hist = _model().fit(X, Y, epochs=10, callbacks=[_scripted_score([1, 3, 3.5, 4]), strict])
    assert len(hist["score"]) == 3 and strict.best == 3 and strict.best_epoch == 1


def test_model_checkpoint_mode_max_saves_the_highest_score(tmp_path):
    X, Y = _data()
    model = _model()
    weights = []
    best = rnnkit.ModelCheckpoint(tmp_path / "best.npz", monitor="score", mode="max",
                                  save_best_only=True)
    model.fit(X, Y, epochs=4, callbacks=[_scripted_score([1, 3, 2, 2.5]), best,
                                         lambda e, logs: weights.append(model.weights)])
    assert best.best == 3 and len(best.saved) == 2          # epochs 0 and 1 improved
    np.testing.assert_array_equal(rnnkit.load(tmp_path / "best.npz").weights["W"], weights[1]["W"])


def test_callback_argument_errors():
    X, Y = _data()
    model = _model()
    with pytest.raises(TypeError, match=r"callbacks must be a list.*got EarlyStopping"):
        model.fit(X, Y, callbacks=rnnkit.EarlyStopping())
    with pytest.raises(TypeError, match=r"callbacks\[1\] must be a Callback or a callable.*int"):
        model.fit(X, Y, callbacks=[rnnkit.EarlyStopping(), 3])
    with pytest.raises(ValueError, match=r"patience must be an integer >= 0, got -1"):
        rnnkit.EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match=r"mode must be one of 'min', 'max', got 'up'"):
        rnnkit.ModelCheckpoint("x.npz", mode="up")
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike, got int"):
        rnnkit.ModelCheckpoint(3)
    with pytest.raises(ValueError, match=r"verbose must be an integer >= 0, got -1"):
        model.fit(X, Y, verbose=-1)
    assert model.optimizer is None                      # checked before anything is bound


# ----------------------------------------------------------------------------- pickle
@pytest.mark.parametrize("optimizer", [None, "sgd", "adam"])
def test_rnn_pickles_exactly(backend, optimizer):
    """Weights, optimizer (with state and step count), configuration and the generator's state
    round-trip; training on from the copy equals training on from the original."""
    X, Y = _data()
    model = rnnkit.RNN(1, 6, 1, activation="sigmoid", dtype="float32", seed=3, backend=backend)
    if optimizer:
        opt = rnnkit.SGD(lr=0.05, momentum=0.9) if optimizer == "sgd" else rnnkit.Adam(lr=0.01)
        model.fit(X, Y, epochs=2, batch_size=8, optimizer=opt)
    copy = pickle.loads(pickle.dumps(model))
    assert copy.get_config() == model.get_config() and copy._backend is model._backend
    np.testing.assert_array_equal(copy._params, model._params)
    assert copy._params.dtype == np.float32
    assert repr(copy.optimizer) == repr(model.optimizer)
    if optimizer:
        assert copy.optimizer.step_count == model.optimizer.step_count
        assert copy.optimizer.state.keys() == model.optimizer.state.keys()
        for k in model.optimizer.state:
            np.testing.assert_array_equal(copy.optimizer.state[k], model.optimizer.state[k])
    assert copy._rng.bit_generator.state == model._rng.bit_generator.state
    h1 = model.fit(X, Y, epochs=2, batch_size=8)
    h2 = copy.fit(X, Y, epochs=2, batch_size=8)
    assert h1.history == h2.history
    np.testing.assert_array_equal(copy._params, model._params)
