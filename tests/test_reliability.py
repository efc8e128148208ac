"""Faults (issue 4, docs/reliability.md): divergence, Ctrl-C, threads, damaged files, saturating
activations, and the bad inputs of the C++ core that used to crash it. Each test checks what
the user keeps: the weights and optimizer state after the last completed update, compared
bitwise with a replay of exactly that many updates."""

import _thread
import contextlib
import copy
import os
import pickle
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import rnnkit
from rnnkit import _core
from rnnkit import reference as ref

# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _sigint_handler(handler):
    """`handler` installed as the SIGINT handler for the block, the one before put back after
    it (with the signal.signal of the block's start: the block may patch it)."""
    install = signal.signal
    old = install(signal.SIGINT, handler)
    try:
        yield
    finally:
        install(signal.SIGINT, old)


def _data(n=12, t=5, i=2, o=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, t, i)), rng.normal(size=(n, o))


def _state(model):
    """Everything an update changes: parameters, optimizer buffers and step count."""
    opt = model.optimizer
    return (model._params.tobytes(), opt.step_count,
            {k: v.tobytes() for k, v in sorted(opt.state.items())})


def _replay(backend, X, Y, make_opt, epochs, batches, batch_size, seed=0, **model_kw):
    """A fresh model trained unshuffled for ``epochs`` whole epochs and then the first
    ``batches`` minibatches of the next one, through the same backend epoch function."""
    model = rnnkit.RNN(X.shape[2], model_kw.pop("hidden_size", 4), Y.shape[1], seed=seed,
                       backend=backend, **model_kw)
    model.fit(X, Y, epochs=epochs, batch_size=batch_size, optimizer=make_opt(), shuffle=False)
    if batches:
        opt = model.optimizer
        _, opt.step_count, status, _ = model._backend.train_epoch(
            X, Y, model._params, np.arange(batches * batch_size), batch_size, **model._spec(),
            bptt_truncate=None, clip_norm=None, clip_value=None, **opt.epoch_args())
        assert status == "completed"
    return model


# ----------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("make_opt", [lambda: rnnkit.SGD(lr=50.0),
                                      lambda: rnnkit.Adam(lr=1e306)], ids=["sgd", "adam"])
def test_divergence_raises_naming_epoch_and_batch_and_keeps_the_last_good_state(backend,
                                                                                make_opt):
    X, Y = _data()
    model = rnnkit.RNN(2, 4, 1, seed=0, backend=backend)
    with pytest.raises(rnnkit.DivergenceError) as info:
        model.fit(X, Y, epochs=200, batch_size=3, optimizer=make_opt(), shuffle=False)
    err = info.value
    assert isinstance(err, FloatingPointError)
    assert f"epoch {err.epoch}, batch {err.batch} of 4" in str(err)
    assert "clip_norm" in str(err) and "learning rate" in str(err)
    assert err.history is model.history and len(err.history["loss"]) == err.epoch - 1
    replay = _replay(backend, X, Y, make_opt, err.epoch - 1, err.batch - 1, 3)
    assert _state(model) == _state(replay)
    assert model.history["loss"] == replay.history["loss"]
    # the minibatch that was refused really is non-finite, and train_step refuses it too
    rows = slice((err.batch - 1) * 3, err.batch * 3)
    with pytest.raises(rnnkit.DivergenceError, match="not applied"):
        replay.train_step(X[rows], Y[rows])
    assert _state(model) == _state(replay)


def test_on_nonfinite_stop_returns_the_history_with_a_warning(backend):
    X, Y = _data()
    model = rnnkit.RNN(2, 4, 1, seed=0, backend=backend)
    with pytest.warns(RuntimeWarning, match=r"diverged at epoch 16, batch 3 of 4"):
        hist = model.fit(X, Y, epochs=200, batch_size=3, optimizer=rnnkit.SGD(lr=50.0),
                         shuffle=False, on_nonfinite="stop")
    assert hist is model.history and len(hist["loss"]) == 15
    replay = _replay(backend, X, Y, lambda: rnnkit.SGD(lr=50.0), 15, 2, 3)
    assert _state(model) == _state(replay)
    with pytest.raises(ValueError, match=r"on_nonfinite must be one of 'raise', 'stop', "
                                         r"got 'ignore'"):
        model.fit(X, Y, on_nonfinite="ignore")


def _overflow_data():
    """float32 data on which SGD at lr 1e38 overflows the weights from a finite gradient."""
    rng = np.random.default_rng(3)
    return rng.normal(size=(8, 5, 3)) * 100, np.full((8, 1), 1000.0)


def test_an_update_that_overflows_the_weights_is_reported(backend, tmp_path):
    """The loss and the gradient are finite, the step is not: fit reports it at the end of
    the epoch (it checks the weights and the optimizer's state once an epoch), as the applied
    update that it is, and so does train_step; save refuses what load would refuse."""
    X, Y = _overflow_data()
    model = rnnkit.RNN(3, 4, 1, seed=0, backend=backend, dtype="float32")
    with pytest.raises(rnnkit.DivergenceError, match=r"in epoch 1: an update made the "
                                                     r"weights NaN or Inf.*applied.*not usable"
                       ) as info:
        model.fit(X, Y, epochs=3, batch_size=8, optimizer=rnnkit.SGD(lr=1e38))
    assert info.value.epoch == 1 and info.value.batch is None
    assert info.value.history is model.history and len(model.history["loss"]) == 0
    with pytest.raises(ValueError, match=r"NaN or Inf in the weights.*was not written"):
        model.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)
    # a later minibatch's non-finite loss: its message says the weights overflowed before it
    model = rnnkit.RNN(3, 4, 1, seed=0, backend=backend, dtype="float32")
    with pytest.warns(RuntimeWarning, match=r"in epoch 1: an update made the weights"):
        model.fit(X, Y, epochs=3, batch_size=4, optimizer=rnnkit.SGD(lr=1e38),
                  on_nonfinite="stop")
    model = rnnkit.RNN(3, 4, 1, seed=0, backend=backend, dtype="float32")
    with pytest.raises(rnnkit.DivergenceError, match="made the weights NaN.*It was applied"):
        model.train_step(X, Y, optimizer=rnnkit.SGD(lr=1e38))
    # Adam at eps = 0 (allowed, as in PyTorch): a parameter whose gradient is 0 (an input
    # feature that is always 0) is updated by 0 / 0
    X[:, :, 1] = 0.0
    model = rnnkit.RNN(3, 4, 1, seed=0, backend=backend)
    with pytest.raises(rnnkit.DivergenceError, match=r"made the weights NaN.*eps=0"):
        model.fit(X, Y, epochs=2, batch_size=8, optimizer=rnnkit.Adam(eps=0.0))
    # float32 Adam: a finite gradient whose square overflows exp_avg_sq (the weights stay
    # finite, the state is not): reported, and not saved
    X1, Y1 = np.ones((1, 3, 1)), np.full((1, 1), 1e19)
    for step in ("fit", "train_step"):
        model = rnnkit.RNN(1, 2, 1, seed=0, backend=backend, dtype="float32")
        with pytest.raises(rnnkit.DivergenceError, match=r"made the optimizer's exp_avg_sq "
                                                         r"NaN or Inf"):
            if step == "fit":
                model.fit(X1, Y1, epochs=1, optimizer=rnnkit.Adam())
            else:
                model.train_step(X1, Y1, optimizer=rnnkit.Adam())
        assert np.isfinite(model._params).all()
        with pytest.raises(ValueError, match=r"NaN or Inf in the optimizer's exp_avg_sq"):
            model.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


def test_a_forecast_no_machine_could_hold_is_refused_naming_steps(backend):
    model = rnnkit.RNN(1, 4, 1, seed=0, backend=backend)
    for steps in (2**46, 2**63, 2**64):
        with pytest.raises(MemoryError, match=f"steps={steps}"):
            model.forecast(np.zeros((1, 5, 1)), steps)


# ----------------------------------------------------------------------------- Ctrl-C
def _interrupt_soon(how, delay):
    """Deliver Ctrl-C to the main thread after ``delay`` seconds; returns the send time."""
    sent = []

    def fire():
        sent.append(time.perf_counter())
        if how == "kill":
            os.kill(os.getpid(), signal.SIGINT)      # a real SIGINT, as the terminal sends
        else:
            _thread.interrupt_main()
    timer = threading.Timer(delay, fire)
    timer.start()
    return timer, sent


@pytest.mark.parametrize("how", ["kill", "interrupt_main"])
def test_ctrl_c_stops_a_long_fit_within_half_a_second_at_the_last_update(backend, how):
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(64, 40, 3)), rng.normal(size=(64, 1))
    make_opt = lambda: rnnkit.Adam(lr=1e-3)                      # noqa: E731
    model = rnnkit.RNN(3, 16, 1, seed=0, backend=backend)
    timer, sent = _interrupt_soon(how, 0.25)
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            model.fit(X, Y, epochs=10**6, batch_size=2, optimizer=make_opt(), shuffle=False)
        caught = time.perf_counter()
    finally:
        timer.cancel()
    assert caught - sent[0] < 0.5, f"honoured after {caught - sent[0]:.3f} s"
    assert "interrupted" in str(info.value) and info.value.history is model.history
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # the model holds exactly the state after its step_count updates
    steps = model.optimizer.step_count
    epochs, batches = divmod(steps, 32)
    assert steps >= 1 and len(model.history["loss"]) == epochs
    assert _state(model) == _state(_replay(backend, X, Y, make_opt, epochs, batches, 2,
                                           hidden_size=16))
    # and it is usable: no lock left held, training continues
    assert np.isfinite(model.predict(X[:4])).all()
    assert len(model.fit(X[:8], Y[:8], epochs=1, batch_size=4)["loss"]) == 1


class _Stop(Exception):
    pass


def test_a_custom_sigint_handler_is_called_between_updates(backend):
    """A Ctrl-C landing in a one-minibatch epoch, under a custom handler that raises: the
    handler is called at the next point between updates (after that epoch, whose update and
    step count stay together: it used to run as the C++ epoch returned, before fit took the
    step count, so the weights held an update the optimizer had not counted). A handler that
    returns lets training go on. (Two Ctrl-Cs before the first is honoured: the hung-callback
    test; Python itself merges signals that arrive before it looks.) The epochs' ends are
    timed: the Ctrl-C must land inside an epoch (the last, which it stops), after the one
    before it ended, so that a Ctrl-C landing between epochs fails here rather than pass as a
    test of the mid-epoch case (the window between epochs is some 10-25 us)."""
    rng = np.random.default_rng(4)
    N = 2048 if backend == "cpp" else 128   # one minibatch an epoch: ~0.3 s (cpp), ~0.11 s
    X, Y = rng.normal(size=(N, 60, 3)), rng.normal(size=(N, 1))
    calls = []

    def raising(signum, frame):
        calls.append(signum)
        raise _Stop("stopped by the custom handler")
    old = signal.signal(signal.SIGINT, raising)
    try:
        model = rnnkit.RNN(3, 128, 1, seed=0, backend=backend)
        ends = [time.perf_counter()]                   # fit's start, then each epoch's end
        timer, sent = _interrupt_soon("kill", 0.1)
        try:
            with pytest.raises(_Stop) as info:
                model.fit(X, Y, epochs=100, batch_size=N, optimizer=rnnkit.Adam(),
                          shuffle=False,
                          callbacks=[lambda epoch, logs: ends.append(time.perf_counter())])
        finally:
            timer.cancel()
        assert calls == [signal.SIGINT] and info.value.history is model.history
        steps = model.optimizer.step_count             # one update an epoch
        assert steps >= 1 and len(model.history["loss"]) == steps
        # the Ctrl-C landed in the last epoch: after the epoch before it had ended, and before
        # the last one's end (its callback runs before the handler is called)
        assert len(ends) == steps + 1 and ends[steps - 1] < sent[0] < ends[steps]
        replay = rnnkit.RNN(3, 128, 1, seed=0, backend=backend)
        replay.fit(X, Y, epochs=steps, batch_size=N, optimizer=rnnkit.Adam(), shuffle=False)
        assert _state(model) == _state(replay)
        assert signal.getsignal(signal.SIGINT) is raising

        calls.clear()
        signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
        model = rnnkit.RNN(3, 128, 1, seed=0, backend=backend)
        timer, _ = _interrupt_soon("kill", 0.1)
        try:
            hist = model.fit(X, Y, epochs=3, batch_size=N // 8, shuffle=False)
        finally:
            timer.cancel()
        assert calls == [signal.SIGINT] and len(hist["loss"]) == 3
    finally:
        signal.signal(signal.SIGINT, old)


@pytest.mark.parametrize("handler_raises", [False, True], ids=["returns", "raises"])
def test_a_custom_handlers_pending_ctrl_c_is_delivered_when_fit_raises_its_own(backend,
                                                                               handler_raises):
    """A Ctrl-C that a custom handler has not yet been given when fit leaves with an exception
    of its own (here a callback's, right after the Ctrl-C) is still handed to the handler
    (it used to be dropped): the code's exception propagates if the handler returns, and is
    the __context__ of the handler's if that raises."""
    X, Y = _data()
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        if handler_raises:
            raise _Stop("stopped by the custom handler")

    def callback(epoch, logs):
        os.kill(os.getpid(), signal.SIGINT)          # recorded by fit, not yet delivered
        raise ValueError("the callback's own error")

    with _sigint_handler(handler):
        model = rnnkit.RNN(2, 4, 1, seed=0, backend=backend)
        expected = _Stop if handler_raises else ValueError
        with pytest.raises(expected) as info:
            model.fit(X, Y, epochs=3, callbacks=[callback])
        assert calls == [signal.SIGINT]
        if handler_raises:
            assert isinstance(info.value.__context__, ValueError)
        assert signal.getsignal(signal.SIGINT) is handler


def test_a_second_ctrl_c_interrupts_a_hung_callback_at_once(backend):
    """The first Ctrl-C waits for the next point between updates; a second one does not, so
    a callback (or validation pass) that hangs can still be stopped."""
    X, Y = _data()
    model = rnnkit.RNN(2, 4, 1, seed=0, backend=backend)
    first, _ = _interrupt_soon("kill", 0.2)
    second, sent = _interrupt_soon("kill", 0.5)
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            model.fit(X, Y, epochs=2, callbacks=[lambda epoch, logs: time.sleep(10)])
        caught = time.perf_counter()
    finally:
        first.cancel()
        second.cancel()
    assert caught - sent[0] < 0.5 and caught - start < 2
    assert info.value.history is model.history
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert len(model.fit(X, Y, epochs=1)["loss"]) == 1
    # under a custom handler both Ctrl-Cs reach it, at the second (it used to get one call)
    calls = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(time.perf_counter()))
    first, _ = _interrupt_soon("kill", 0.2)
    second, sent = _interrupt_soon("kill", 0.4)
    try:
        model.fit(X, Y, epochs=1, callbacks=[lambda epoch, logs: time.sleep(1.0)])
    finally:
        first.cancel()
        second.cancel()
        signal.signal(signal.SIGINT, old)
    assert len(calls) == 2 and all(0 <= t - sent[0] < 0.5 for t in calls)


def test_a_second_ctrl_c_waits_for_the_minibatch_in_progress(monkeypatch):
    """Two Ctrl-Cs landing inside one minibatch (the reference's backward pass; Python code
    runs between them, so each reaches the guard): the update and its step count still stay
    together, and training stops after that minibatch (the second one used to raise in the
    middle of the epoch, which then never returned its step count)."""
    X, Y = _data(n=16)
    model = rnnkit.RNN(2, 4, 1, seed=0, backend="reference")
    real, calls = ref.backward, []

    def interrupted_backward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:                            # the third minibatch
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)                       # the handler runs here
        return real(*args, **kwargs)
    monkeypatch.setattr(ref, "backward", interrupted_backward)
    with pytest.raises(KeyboardInterrupt, match="interrupted at epoch 1 after batch 3 of 4") \
            as info:
        model.fit(X, Y, epochs=5, batch_size=4, optimizer=rnnkit.Adam(), shuffle=False)
    monkeypatch.setattr(ref, "backward", real)
    assert info.value.history is model.history and model.optimizer.step_count == 3
    assert _state(model) == _state(_replay("reference", X, Y, rnnkit.Adam, 0, 3, 4))


def test_a_sigint_handler_that_installs_another_is_followed(backend):
    """A "press Ctrl-C again to quit" handler: the first Ctrl-C calls it (between updates),
    and it installs Python's default handler; fit's guard then stands in for that one, so the
    second Ctrl-C stops training between updates too, and the handler stays installed after
    fit (the guard used to put the first handler back, and the second Ctrl-C could land
    between an epoch's updates and its step count)."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(256, 30, 3)), rng.normal(size=(256, 1))
    calls = []

    def press_again(signum, frame):
        calls.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    old = signal.signal(signal.SIGINT, press_again)
    start = time.perf_counter()
    model = rnnkit.RNN(3, 64, 1, seed=0, backend=backend)
    first, _ = _interrupt_soon("kill", 0.3)
    second, _ = _interrupt_soon("kill", 1.0)
    try:
        with pytest.raises(KeyboardInterrupt, match="interrupted") as info:
            model.fit(X, Y, epochs=10**6, batch_size=32, optimizer=rnnkit.Adam(),
                      shuffle=False,     # a safety stop, should the Ctrl-Cs not arrive
                      callbacks=[lambda epoch, logs: time.perf_counter() - start < 10])
        assert calls == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        first.cancel()
        second.cancel()
        signal.signal(signal.SIGINT, old)
    assert info.value.history is model.history
    steps = model.optimizer.step_count
    epochs, batches = divmod(steps, 8)
    assert len(model.history["loss"]) == epochs
    assert _state(model) == _state(_replay(backend, X, Y, rnnkit.Adam, epochs, batches, 32,
                                           hidden_size=64))


def test_a_ctrl_c_landing_as_the_guard_exits_is_not_lost(monkeypatch):
    """Recorded while the guard puts the handler back (signal.signal runs the pending handler
    first): still raised as the block ends (it was dropped with the guard)."""
    from rnnkit._faults import InterruptGuard
    real = signal.signal

    def signal_with_a_ctrl_c(signum, handler):
        if handler is signal.default_int_handler:
            os.kill(os.getpid(), signal.SIGINT)        # pending as the handler is put back
        return real(signum, handler)
    with pytest.raises(KeyboardInterrupt):
        with InterruptGuard():
            monkeypatch.setattr(signal, "signal", signal_with_a_ctrl_c)
    monkeypatch.setattr(signal, "signal", real)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler



def test_a_custom_handlers_ctrl_c_pending_at_the_guards_exit_leaves_the_handler_in_place():
    """A custom handler's Ctrl-C recorded after the block's last safe point is delivered as
    the block ends, and the handler stays installed (the guard used to put itself back in its
    place then: the next Ctrl-C was only recorded, by a guard no longer there)."""
    from rnnkit._faults import InterruptGuard
    calls = []

    def handler(signum, frame):
        calls.append(signum)
    with _sigint_handler(handler):
        with InterruptGuard():
            os.kill(os.getpid(), signal.SIGINT)       # recorded: the first is not delivered
            assert calls == []
        assert calls == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is handler
        os.kill(os.getpid(), signal.SIGINT)           # the next goes to the handler itself
        assert calls == [signal.SIGINT, signal.SIGINT]


@pytest.mark.parametrize("where", ["safe point", "exit"])
def test_a_custom_handler_that_raises_is_called_once_and_its_successor_stays(where):
    """Two Ctrl-Cs recorded in a critical section, a handler that installs another ("press
    again to quit") and raises: it is called once, at the safe point or as the block ends (the
    Ctrl-C recorded with it is dropped, as Python merges signals; the change that delivers
    pending Ctrl-Cs at the exit had called it again there), and its successor stays installed
    (the guard used to put the first handler back over it)."""
    from rnnkit._faults import InterruptGuard
    calls = []

    def successor(signum, frame):
        calls.append("successor")

    def handler(signum, frame):
        calls.append("handler")
        signal.signal(signal.SIGINT, successor)
        raise _Stop("stopped by the custom handler")
    with _sigint_handler(handler):
        with pytest.raises(_Stop) as info:
            with InterruptGuard() as guard:
                with guard.critical():
                    os.kill(os.getpid(), signal.SIGINT)
                    os.kill(os.getpid(), signal.SIGINT)
                if where == "safe point":
                    guard.stop_requested()
        assert calls == ["handler"] and info.value.__context__ is None
        assert signal.getsignal(signal.SIGINT) is successor


def test_a_handler_that_installs_the_default_one_at_exit_gives_way_to_the_codes_exception():
    """Leaving with the code's own exception and two Ctrl-Cs pending, under a handler that
    puts Python's default one back: the code's exception propagates (Python's default handler
    gives way to it), not a KeyboardInterrupt."""
    from rnnkit._faults import InterruptGuard
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with _sigint_handler(handler):
        with pytest.raises(ValueError):
            with InterruptGuard() as guard:
                with guard.critical():
                    os.kill(os.getpid(), signal.SIGINT)
                    os.kill(os.getpid(), signal.SIGINT)
                raise ValueError("the code's own")
        assert calls == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_press_again_to_quit_a_second_recorded_ctrl_c_ends_the_process():
    """A handler that puts the default action (SIG_DFL) back, "press Ctrl-C again to quit":
    of two Ctrl-Cs recorded together (a hung callback), the first goes to the handler and the
    second ends the process, as without the guard (the guard used to drop it)."""
    script = """
import os, signal
from rnnkit._faults import InterruptGuard
def handler(signum, frame):
    print("stopping gracefully, press again to quit", flush=True)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGINT, handler)
with InterruptGuard():
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)
    print("still running", flush=True)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == -signal.SIGINT, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == "stopping gracefully, press again to quit\n"


def test_a_callback_that_catches_the_second_ctrl_cs_interrupt_leaves_fit_guarded(backend):
    """Two Ctrl-Cs in a callback raise KeyboardInterrupt there at once; a callback that
    catches it ("skip the slow evaluation") lets fit go on still guarded: a Ctrl-C after it
    waits for the next point between updates (the guard used to put Python's handler back as
    it raised, so a later Ctrl-C could land in the middle of an update)."""
    from rnnkit._faults import InterruptGuard
    X, Y = _data()
    seen = []

    def callback(epoch, logs):
        if epoch == 0:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)                          # not reached: interrupted at once
            except KeyboardInterrupt:
                seen.append("caught")
        handler = signal.getsignal(signal.SIGINT)
        seen.append(isinstance(getattr(handler, "__self__", None), InterruptGuard))
    model = rnnkit.RNN(2, 4, 1, seed=0, backend=backend)
    model.fit(X, Y, epochs=2, callbacks=[callback])
    assert seen == ["caught", True, True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_raising_handlers_ctrl_c_landing_as_the_guard_exits_leaves_the_handler_in_place(
        monkeypatch):
    """One Ctrl-C recorded after the last safe point, a second landing as the guard puts the
    handler back (signal.signal runs the pending one first), a handler that raises: it is
    called once, after it is back in place, and stays there (the second Ctrl-C used to deliver
    inside signal.signal, whose exception left the guard installed for good, swallowing every
    other Ctrl-C after it)."""
    from rnnkit._faults import InterruptGuard
    real = signal.signal
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        raise _Stop("stopped by the custom handler")

    def signal_with_a_ctrl_c(signum, new):
        if new is handler:
            os.kill(os.getpid(), signal.SIGINT)        # lands as the handler is put back
        return real(signum, new)
    with _sigint_handler(handler):
        with pytest.raises(_Stop):
            with InterruptGuard():
                os.kill(os.getpid(), signal.SIGINT)    # recorded after the last safe point
                monkeypatch.setattr(signal, "signal", signal_with_a_ctrl_c)
        monkeypatch.setattr(signal, "signal", real)
        assert calls == [signal.SIGINT] and signal.getsignal(signal.SIGINT) is handler
        with pytest.raises(_Stop):
            os.kill(os.getpid(), signal.SIGINT)


def test_a_sigint_handler_installed_during_fit_stays_after_it(backend):
    """A callback that installs a SIGINT handler of its own: fit leaves it in place (it used to
    put its caller's back over it), as asyncio.Runner does."""
    X, Y = _data()

    def mine(signum, frame):
        pass
    model = rnnkit.RNN(2, 4, 1, seed=0, backend=backend)
    try:
        model.fit(X, Y, epochs=1,
                  callbacks=[lambda epoch, logs: signal.signal(signal.SIGINT, mine) and None])
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.mark.parametrize("train_epoch", [_core.train_epoch, ref.train_epoch],
                         ids=["cpp", "reference"])
def test_ctrl_c_inside_one_long_epoch_call(train_epoch):
    """One backend train_epoch call, many minibatches: the C++ loop takes the GIL back to look
    at signals, the reference's looks between minibatches, and each returns the
    KeyboardInterrupt with the losses of the applied updates (the reference's own guard used
    to raise it again as the call returned, and the step count was lost).
    H = 128 and lr 0.001: the epoch takes about ten times the 0.3 s before the interrupt here
    (H = 32 had become fast enough to finish first; at lr 0.01 it diverged at update 1,648,
    0.23 s in, and ended "nonfinite" before the interrupt)."""
    rng = np.random.default_rng(2)
    H = 128
    params, X, Y = rng.uniform(-0.3, 0.3, rnnkit.param_count(3, H, 1, True)), \
        rng.normal(size=(20000, 40, 3)), rng.normal(size=(20000, 1))
    p = params.copy()
    timer, sent = _interrupt_soon("kill", 0.3)
    try:
        losses, step, status, error = train_epoch(
            X, Y, p, np.arange(20000), 1, H, 1, True, "tanh", None, None, None, "sgd", 0.001,
            0.0, 0.0, 0.0, 0.0, 0.0, None, None, None, 0)
        returned = time.perf_counter()
    finally:
        timer.cancel()
    assert status == "stopped" and isinstance(error, KeyboardInterrupt)
    assert returned - sent[0] < 0.5 and 1 <= step == len(losses) < 20000
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    q = params.copy()                                  # replay exactly `step` updates
    train_epoch(X, Y, q, np.arange(step), 1, H, 1, True, "tanh", None, None, None,
                "sgd", 0.001, 0.0, 0.0, 0.0, 0.0, 0.0, None, None, None, 0)
    assert p.tobytes() == q.tobytes()


def test_ctrl_c_during_train_step_waits_for_the_update(monkeypatch):
    """An interrupt landing while the reference optimizer writes params, exp_avg and
    exp_avg_sq is honoured once the update (and its step count) is complete."""
    X, Y = _data()
    model = rnnkit.RNN(2, 4, 1, seed=0, backend="reference")
    model.train_step(X, Y, optimizer=rnnkit.Adam(lr=0.01))
    real = ref.adam_step

    def interrupted_adam(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)            # lands in the middle of the update
        time.sleep(0.01)
        real(*args, **kwargs)
    monkeypatch.setattr(ref, "adam_step", interrupted_adam)
    with pytest.raises(KeyboardInterrupt):
        model.train_step(X, Y)
    monkeypatch.setattr(ref, "adam_step", real)
    replay = rnnkit.RNN(2, 4, 1, seed=0, backend="reference")
    replay.train_step(X, Y, optimizer=rnnkit.Adam(lr=0.01))
    replay.train_step(X, Y)
    assert _state(model) == _state(replay)


# ----------------------------------------------------------------------------- threads
def _in_threads(check, count):
    """check(j) for j < count, each in a thread of its own, all at once; what they raised."""
    errors = []

    def run(j):
        try:
            check(j)
        except BaseException as exc:                # noqa: BLE001 - returned
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(j,)) for j in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_predict_and_loss_from_threads_are_correct(backend):
    rng = np.random.default_rng(3)
    model = rnnkit.RNN(3, 24, 2, seed=0, backend=backend)
    inputs = [rng.normal(size=(16, 30, 3)) for _ in range(6)]
    targets = [rng.normal(size=(16, 2)) for _ in range(6)]
    expected = [(model.predict(x), model.loss(x, y)) for x, y in zip(inputs, targets)]
    results = {}

    def work(j):
        for _ in range(5):
            results[j] = (model.predict(inputs[j]), model.loss(inputs[j], targets[j]))
            assert results[j][0].tobytes() == expected[j][0].tobytes()
            assert results[j][1] == expected[j][1]
    assert not _in_threads(work, 6) and len(results) == 6


def _pool_problem(seed):
    """A model and data large enough that every parallel region of the C++ core is split
    across threads (csrc/network.cpp's kMinWorkPerThread)."""
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(64, 20, 3)), rng.normal(size=(64, 1))
    return rnnkit.RNN(3, 48, 1, seed=seed), X, Y


def _fit_bytes(seed):
    model, X, Y = _pool_problem(seed)
    model.fit(X, Y, epochs=2, batch_size=32, optimizer=rnnkit.Adam(), shuffle=False)
    return model._params.tobytes()


@pytest.fixture
def three_threads():
    before = rnnkit.get_num_threads()
    rnnkit.set_num_threads(3)
    yield
    rnnkit.set_num_threads(before)


def test_fits_from_several_python_threads_share_the_worker_pool_exactly(three_threads):
    """The core's worker pool runs one parallel region at a time; fits from other Python
    threads meanwhile start threads of their own. Every fit equals the same fit run alone,
    and the pool still works afterwards."""
    expected = {j: _fit_bytes(j) for j in range(4)}
    results = {}

    def work(j):
        for _ in range(3):
            results[j] = _fit_bytes(j)
            assert results[j] == expected[j]
    assert not _in_threads(work, 4) and results == expected
    assert _fit_bytes(0) == expected[0]


_FORK_SCRIPT = """
import os, sys
import numpy as np
import rnnkit

def fit_bytes():
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(64, 20, 3)), rng.normal(size=(64, 1))
    model = rnnkit.RNN(3, 32, 1, seed=5)
    model.fit(X, Y, epochs=2, batch_size=32, optimizer=rnnkit.Adam(), shuffle=False)
    return model._params.tobytes()

rnnkit.set_num_threads(3)
expected = fit_bytes()                  # the parent's pool is running now
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:                            # the child: report and leave at once
    os.close(read_end)
    os.write(write_end, b"1" if fit_bytes() == expected else b"0")
    os._exit(0)
os.close(write_end)
with os.fdopen(read_end, "rb") as f:
    report = f.read()
os.waitpid(pid, 0)
print("child:", report.decode())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_trains_on_its_own_worker_pool():
    """A child forked after the parent's pool started has none of its workers: it makes a
    pool of its own and computes the parent's result, instead of waiting forever. (In a fresh
    interpreter: one with other libraries' threads may not fork safely at all.)"""
    try:
        # the same interpreter settings (the sanitizer run uses -S), so the same rnnkit
        result = subprocess.run([sys.executable] + (["-S"] if sys.flags.no_site else [])
                                + ["-c", _FORK_SCRIPT], capture_output=True, text=True,
                                timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child did not finish its fit within 120 s")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "child: 1"


_KEPT_SCRATCH_LIMITED_SCRIPT = """
import resource, sys, numpy as np, rnnkit
rng = np.random.default_rng(0)
X = rng.normal(size=(512, 200, 1)); Y = rng.normal(size=(512, 200, 1))
used = int(open("/proc/self/statm").read().split()[0]) * 4096
resource.setrlimit(resource.RLIMIT_AS, (used + (400 << 20), resource.RLIM_INFINITY))
first = rnnkit.LSTM(1, 128, 1, seed=0, return_sequences=True)
first.fit(X, Y, epochs=1, batch_size=64)   # its scratch blocks are kept: 178 MiB
del first
second = rnnkit.LSTM(1, 128, 1, seed=0, return_sequences=True)
second.fit(X, Y, epochs=1, batch_size=100)
print("second fit: done")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer reserves terabytes of address space")
def test_kept_scratch_gives_way_to_an_allocation_that_needs_its_memory():
    """Under a memory limit (here the address space, 400 MiB above the data), a fit that needs
    the memory of the scratch blocks kept from an earlier one gets it: the core frees them and
    asks again, rather than raising MemoryError (as it did when a review found it, with the
    blocks still held, or freed to the heap, whose address space stays with the process)."""
    result = subprocess.run([sys.executable] + (["-S"] if sys.flags.no_site else [])
                            + ["-c", _KEPT_SCRATCH_LIMITED_SCRIPT], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "second fit: done" in result.stdout


_DAEMON_SCRIPT = """
import threading, time, numpy as np, rnnkit
X = np.random.default_rng(0).normal(size=(256, 50, 1)); Y = X[:, -1]
model = rnnkit.RNN(1, 64, seed=0)
def work():
    while True:
        CALL
threading.Thread(target=work, daemon=True).start()
time.sleep(0.3)
print("main: done")
"""


@pytest.mark.parametrize("call", ["model.predict(X)", "model.fit(X, Y, epochs=1, batch_size=1)"],
                         ids=["predict", "fit"])
def test_a_daemon_thread_inside_the_core_at_exit_does_not_abort_the_process(call):
    """Python ends a daemon thread that takes the GIL back while the interpreter finalizes
    (pthread_exit); through pybind11's noexcept GIL guard that aborted the whole process at
    exit ("terminate called without an active exception", status 134, every time). Now the
    thread sleeps until the process is gone. fit also takes the GIL back between minibatches
    (signals, callback): that path too."""
    cmd = [sys.executable] + (["-S"] if sys.flags.no_site else [])
    for _ in range(3):
        result = subprocess.run(cmd + ["-c", _DAEMON_SCRIPT.replace("CALL", call)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "main: done" in result.stdout and "terminate" not in result.stderr


def test_lengths_and_order_changed_during_an_epoch_do_not_reach_the_kernels():
    """The C++ core checks `lengths` and `order`, then indexes buffers with them after the
    GIL is released and between minibatches, where Python runs (the callback, another thread).
    It reads copies of the checked values: zeroing `lengths` or pointing `order` past the data
    in the callback used to write and read out of bounds; now the epoch is the one that was
    asked for, bit for bit."""
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(16, 7, 2)), rng.normal(size=(16, 1))
    model = rnnkit.RNN(2, 8, 1, seed=0)
    opt = rnnkit.SGD(lr=0.01)
    opt._bind(model._params.size, model._params.dtype)

    def epoch(lengths, order, callback=None):
        params = model._params.copy()
        losses = _core.train_epoch(X, Y, params, order, 1, **model._spec(), bptt_truncate=None,
                                   clip_norm=None, clip_value=None, **opt.epoch_args(),
                                   lengths=lengths, callback=callback)[0]
        return params, losses

    lengths, order = rng.integers(1, 8, size=16), rng.permutation(16)
    expected = epoch(lengths.copy(), order.copy())

    def vandal(done):
        lengths[:] = 0 if done % 2 else 10**6
        order[:] = 10**7
    got = epoch(lengths, order, vandal)
    assert got[0].tobytes() == expected[0].tobytes()
    assert got[1].tobytes() == expected[1].tobytes()


class _BlockingBackend:
    """The reference backend, except that the chosen function signals that it was entered and
    then waits to be released: a call of the model held open in another thread."""

    def __init__(self, name):
        self.name, self.entered, self.release = name, threading.Event(), threading.Event()

    def __getattr__(self, attr):
        fn = getattr(ref, attr)
        if attr != self.name:
            return fn

        def blocking(*args, **kwargs):
            self.entered.set()
            assert self.release.wait(10)
            return fn(*args, **kwargs)
        return blocking


def _hold_open(model, blocked, call):
    """Run ``call`` in a thread until the backend's ``blocked`` function is entered."""
    model._backend = backend = _BlockingBackend(blocked)
    errors = []

    def run():
        try:
            call()
        except BaseException as exc:                # noqa: BLE001 - reported by the test
            errors.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    assert backend.entered.wait(10)
    return thread, backend, errors


def test_a_model_being_trained_refuses_every_call_from_another_thread():
    X, Y = _data()
    model = rnnkit.RNN(2, 4, 1, seed=0, backend="reference")
    before = model._params.copy()
    thread, backend, errors = _hold_open(model, "train_epoch",
                                         lambda: model.fit(X, Y, epochs=2, batch_size=4))
    try:
        for call in (lambda: model.fit(X, Y), lambda: model.train_step(X, Y),
                     lambda: model.set_weights(model.weights), lambda: model.predict(X),
                     lambda: model.loss(X, Y), lambda: model.gradients(X, Y),
                     lambda: model.forecast(X, 3), lambda: pickle.dumps(model),
                     lambda: copy.deepcopy(model), lambda: model.save("never-written.npz")):
            with pytest.raises(rnnkit.ModelInUseError,
                               match=r"in use by another thread \(RNN\.fit in progress\)"):
                call()
    finally:
        backend.release.set()
        thread.join()
    assert not errors and not os.path.exists("never-written.npz")
    assert not np.array_equal(model._params, before)     # the fit itself went through
    model._backend = ref
    model.fit(X, Y, epochs=1)                             # and the model is free again


def test_training_is_refused_while_another_thread_reads():
    X, Y = _data()
    model = rnnkit.RNN(2, 4, 1, seed=0, backend="reference")
    thread, backend, errors = _hold_open(model, "predict", lambda: model.predict(X))
    try:
        with pytest.raises(rnnkit.ModelInUseError, match=r"a read call \(RNN\.predict\) in progress"):
            model.fit(X, Y)
    finally:
        backend.release.set()
        thread.join()
    assert not errors


def test_the_training_thread_may_read_its_own_model():
    """fit computes validation loss through model.loss: same thread, no refusal."""
    X, Y = _data()
    model = rnnkit.RNN(2, 4, 1, seed=0, backend="reference")
    hist = model.fit(X, Y, epochs=2, validation_data=(X, Y))
    assert len(hist["val_loss"]) == 2


def test_training_another_model_is_not_serialized_behind_a_long_cpp_epoch():
    """Thread A runs one long C++ epoch (the GIL released while it computes); meanwhile the
    main thread trains another model completely. With the GIL held, or a global lock, the main
    thread could not finish before A's call returned."""
    rng = np.random.default_rng(4)
    XA, YA = rng.normal(size=(3000, 40, 3)), rng.normal(size=(3000, 1))
    a = rnnkit.RNN(3, 32, 1, seed=0)
    started, finished = threading.Event(), []

    def long_epoch():
        opt = rnnkit.SGD(lr=0.001)
        opt._bind(a._params.size, a._params.dtype)
        a._backend.train_epoch(XA, YA, a._params, np.arange(3000), 1, **a._spec(),
                               bptt_truncate=None, clip_norm=None, clip_value=None,
                               **opt.epoch_args(), callback=lambda done: started.set())
        finished.append(time.perf_counter())
    thread = threading.Thread(target=long_epoch)
    thread.start()
    assert started.wait(10)
    X, Y = _data()
    b = rnnkit.RNN(2, 4, 1, seed=0)
    hist = b.fit(X, Y, epochs=3, batch_size=4)
    done_b = time.perf_counter()
    thread.join()
    assert done_b < finished[0], "the other model's fit waited for the long epoch"
    serial = rnnkit.RNN(2, 4, 1, seed=0)
    assert serial.fit(X, Y, epochs=3, batch_size=4) == hist
    assert serial._params.tobytes() == b._params.tobytes()


# ----------------------------------------------------------------------------- files
def _saved(tmp_path, backend="reference", train=True):
    X, Y = _data()
    model = rnnkit.RNN(2, 4, 1, seed=0, backend=backend)
    if train:
        model.fit(X, Y, epochs=1, batch_size=4, optimizer=rnnkit.Adam(lr=0.01))
    path = tmp_path / "m.npz"
    model.save(path)
    return model, path


def test_a_crash_mid_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    model, path = _saved(tmp_path)
    good = path.read_bytes()
    real = np.savez

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a file")            # partial output, then the crash
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    model.fit(*_data(), epochs=1)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    monkeypatch.setattr(np, "savez", real)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]    # no temporary left
    assert rnnkit.load(path).weights["W"].tobytes() != model.weights["W"].tobytes()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_saved_file_gets_the_permissions_of_a_new_file(tmp_path, umask):
    """0666 less the umask, as np.savez gives (the temporary file's 0600 used to survive the
    rename: a model others could not read under the usual umask 022); a checkpoint too."""
    previous = os.umask(umask)
    try:
        model, path = _saved(tmp_path)
        X, Y = _data()
        model.fit(X, Y, epochs=1, callbacks=[rnnkit.ModelCheckpoint(tmp_path / "ck.npz")])
    finally:
        os.umask(previous)
    for saved in (path, tmp_path / "ck.npz"):
        assert stat.S_IMODE(saved.stat().st_mode) == 0o666 & ~umask


def _rewrite(path, out, change):
    with np.load(path) as f:
        files = {k: f[k] for k in f.files}
    change(files)
    np.savez(out, **files)
    return out


def _set(key, value):
    return lambda files: files.__setitem__(key, value)


def _scaled_config(files):
    import json
    cfg = json.loads(str(files["config"]))
    cfg["hidden_size"] = 10**6                 # would need 8 TB: refused before allocating
    files["config"] = np.array(json.dumps(cfg))


BAD_FILES = {
    "wrong version": (_set("format_version", np.array(2)), "format version 2"),
    "version not an int": (_set("format_version", np.array(1.0)), "format_version"),
    "no version": (lambda f: f.pop("format_version"), "format_version"),
    "config not JSON": (_set("config", np.array("{not json")), "JSONDecodeError"),
    "config a list": (_set("config", np.array("[1, 2]")), "config must hold a JSON dict"),
    "inconsistent config": (_scaled_config, r"params must have shape \(1000004000001,\)"),
    "NaN in params": (lambda f: f["params"].__setitem__(3, np.nan), "params contains NaN"),
    "params float32": (lambda f: f.__setitem__("params", f["params"].astype(np.float32)),
                       "dtype float64"),
    "Inf in optimizer state": (lambda f: f["optimizer_state.exp_avg"].__setitem__(0, np.inf),
                               "optimizer_state.exp_avg contains NaN or Inf"),
    "optimizer state missing": (lambda f: f.pop("optimizer_state.exp_avg_sq"),
                                "the adam optimizer after 3 steps has state"),
    "unknown optimizer": (_set("optimizer", np.array('{"config": {"name": "lbfgs"}, '
                                                     '"step_count": 0}')), "lbfgs"),
    "bad rng state": (_set("rng_state", np.array('{"bit_generator": "MT19937"}')),
                      "rng_state: .*PCG64"),
    "unexpected member": (_set("payload", np.arange(3)), r"unexpected members \['payload'\]"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_load_rejects_damaged_and_inconsistent_files(tmp_path, kind):
    change, message = BAD_FILES[kind]
    _, path = _saved(tmp_path)
    bad = _rewrite(path, tmp_path / "bad.npz", change)
    with pytest.raises(ValueError, match="bad.npz") as info:
        rnnkit.load(bad)
    assert info.match(message)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_load_rejects_truncated_files(tmp_path, fraction):
    _, path = _saved(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ValueError, match="cut.npz.* not a readable rnnkit model file"):
        rnnkit.load(cut)


def test_load_rejects_corrupted_bytes(tmp_path):
    """Flip bytes inside each stored array: the zip CRC (or the .npy header check) catches it."""
    _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    with np.load(path) as f:
        names = f.files
    import zipfile
    with zipfile.ZipFile(path) as z:
        offsets = [(info.header_offset, info.file_size) for info in z.infolist()]
    assert len(offsets) == len(names)
    for k, (offset, size) in enumerate(offsets):
        bad = bytearray(data)
        where = offset + 30 + len(names[k]) + 4 + size // 2        # inside the member's data
        bad[where] ^= 0xFF
        path_k = tmp_path / f"corrupt{k}.npz"
        path_k.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match=f"corrupt{k}.npz"):
            rnnkit.load(path_k)


class _Payload:
    def __reduce__(self):
        return (open, (os.environ["RNNKIT_PAYLOAD_MARKER"], "w"))


def test_load_never_unpickles(tmp_path, monkeypatch):
    _, path = _saved(tmp_path)
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("RNNKIT_PAYLOAD_MARKER", str(marker))
    evil = _rewrite(path, tmp_path / "evil.npz",
                    _set("config", np.array([_Payload()], dtype=object)))
    with pytest.raises(ValueError, match="evil.npz"):
        rnnkit.load(evil)
    assert not marker.exists()


def test_load_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        rnnkit.load(tmp_path / "nope.npz")


def test_a_fresh_and_an_untrained_model_round_trip(tmp_path):
    for train in (False, True):
        model, path = _saved(tmp_path, train=train)
        loaded = rnnkit.load(path)
        assert loaded._params.tobytes() == model._params.tobytes()


# ----------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("scale", [1e4, -1e4, 1e2, -30.0])
def test_saturating_activations_neither_overflow_nor_warn(backend, dtype, activation, scale):
    """Pre-activations of +-1e4: h saturates exactly, outputs and gradients stay finite, and
    no floating-point warning is raised (pytest turns warnings into errors; numpy's too)."""
    model = rnnkit.RNN(1, 3, 1, activation=activation, dtype=dtype, seed=0, backend=backend,
                       return_sequences=True)
    w = model.weights
    w["U"][:] = scale
    w["W"][:] = 0.0
    w["b"][:] = 0.0
    model.set_weights(w)
    X, Y = np.ones((2, 4, 1)), np.zeros((2, 4, 1))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        outputs, h_T = model.forward(X)
        grads = model.gradients(X, Y)
        loss, _ = model.train_step(X, Y, optimizer=rnnkit.SGD(lr=0.1))
    assert np.isfinite(outputs).all() and np.isfinite(loss)
    assert all(np.isfinite(g).all() for g in grads.values())
    ref_h = np.tanh(scale) if activation == "tanh" else np.exp(-np.logaddexp(0.0, -scale))
    np.testing.assert_allclose(h_T, np.full((2, 3), ref_h, dtype=dtype), rtol=1e-6)


# ----------------------------------------------------------------------------- the C++ core
def test_core_huge_and_overflowing_sizes_are_errors_not_crashes():
    p = np.zeros(rnnkit.param_count(1, 3, 1, True))
    X = np.zeros((2, 4, 1))
    with pytest.raises(ValueError, match=r"W \(input_size=1, hidden_size=1099511627776, "
                                         r"output_size=1, num_layers=1\) would hold more than 2\*\*56"):
        _core.forward(X, None, p, 2**40, 1, True, "tanh", False)
    with pytest.raises(MemoryError, match=r"X: cannot allocate a C-contiguous copy"):
        _core.forward(np.broadcast_to(np.zeros(1), (10**6, 10**6, 1)), None, p, 3, 1, True,
                      "tanh", False)
    big = rnnkit.param_count(1, 10**4, 1, True)
    with pytest.raises(MemoryError, match=r"hidden_states: cannot allocate a "
                                          r"\(2, 10000000, 10000\) float64 array"):
        _core.forward(np.broadcast_to(np.zeros(1), (2, 10**7, 1)), None, np.zeros(big), 10**4,
                      1, True, "tanh", False)
    with pytest.raises(MemoryError, match=r"hidden_size=1000000, .* more than can be allocated"):
        rnnkit.RNN(1, 10**6, 1)
    with pytest.raises(MemoryError, match="X: cannot allocate"):
        rnnkit.RNN(1, 3, 1).predict(np.broadcast_to(np.zeros(1), (10**6, 10**6, 1)))


def test_core_huge_batch_size_and_step_do_not_overflow():
    p = np.zeros(rnnkit.param_count(1, 3, 1, True))
    X, Y = np.zeros((2, 4, 1)), np.zeros((2, 1))
    args = (X, Y, p, np.arange(2), 2**62, 3, 1, True, "tanh", None, None, None, "sgd", 0.1,
            0.0, 0.0, 0.0, 0.0, 0.0, None, None, None)
    losses, step, status, _ = _core.train_epoch(*args, 0)
    assert (losses.shape, step, status) == ((1,), 1, "completed")
    with pytest.raises(ValueError, match="step must leave room for this epoch's 1 updates"):
        _core.train_epoch(*args, 2**63 - 1)


def test_core_in_place_buffers_must_not_alias():
    p = np.zeros(rnnkit.param_count(1, 3, 1, True))
    g = np.ones_like(p)
    with pytest.raises(ValueError, match="params and grad must be separate arrays"):
        _core.sgd_step(p, p, None, 0.1, 0.0, 0.0)
    with pytest.raises(ValueError, match="exp_avg and exp_avg_sq must be separate"):
        m = np.zeros_like(p)
        _core.adam_step(p, g, m, m, 1, 0.1, 0.9, 0.99, 1e-8, 0.0)
    half = np.zeros(2 * p.size)
    with pytest.raises(ValueError, match="params and momentum_buffer must be separate"):
        _core.sgd_step(half[:p.size], g, half[p.size // 2:p.size // 2 + p.size], 0.1, 0.9, 0.0)
