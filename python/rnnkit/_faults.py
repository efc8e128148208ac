"""What keeps a model consistent when something goes wrong during a call (docs/reliability.md):

- :class:`DivergenceError`, raised when a minibatch's loss or gradient is NaN or Inf;
- :class:`InterruptGuard`, which turns Ctrl-C into a request honoured between updates, so an
  update is never half applied (a second Ctrl-C acts at once);
- :class:`ModelLock` and the decorators :func:`reads_model` / :func:`writes_model`: any number
  of threads may read a model at once, or one thread may change it; a call that would break
  this raises :class:`ModelInUseError` at once (it never waits, so it cannot deadlock).
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, TypeVar

__all__ = ["DivergenceError", "ModelInUseError", "InterruptGuard", "ModelLock", "reads_model",
           "writes_model"]

HistoryLike = Mapping[str, List[float]]   # a callbacks.History or a dict of lists
F = TypeVar("F", bound=Callable[..., Any])


class DivergenceError(FloatingPointError):
    """Training stopped because a minibatch's loss or gradient became NaN or Inf, or because
    an update overflowed the weights or the optimizer's state.

    In the first case the update of that minibatch was not applied: the model's weights and
    optimizer state are those after the last good update. In the second (the message says
    so) the update was applied and the model is not usable. ``epoch`` and ``batch`` (1-based)
    locate the minibatch (``batch`` None for an overflow found at the end of an epoch, both
    None for ``train_step``); ``history`` holds the epochs completed before it."""

    def __init__(self, message: str, epoch: Optional[int] = None, batch: Optional[int] = None,
                 history: Optional[HistoryLike] = None):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.history = history


class ModelInUseError(RuntimeError):
    """A call that would race with another thread's use of the same model."""


class InterruptGuard:
    """Inside ``with InterruptGuard() as guard:`` Ctrl-C (SIGINT) does not act where it lands:
    the guard records it, and the code honours it at its safe points, between updates, with
    ``guard.stop_requested()`` (``guard.keep_going`` is a ready-made ``train_epoch``
    callback). So an update and its step count are never split, even by a signal landing just
    after the C++ epoch returns.

    Under Python's default handler a Ctrl-C is a KeyboardInterrupt: ``stop_requested()`` is
    True at the next safe point, and leaving the block normally raises it unless the code
    raised its own. A custom Python handler in place instead is called at the next safe point,
    once per Ctrl-C, with the signal's frame: training stops there only if it raises; one still
    pending when the block is left (normally or with the code's own exception) is called then.

    A second Ctrl-C before the first is honoured acts at once (every Ctrl-C recorded is
    delivered then, as without the guard), so that a callback or a validation pass that hangs
    can be interrupted; except inside ``with guard.critical():`` (an epoch's minibatch, an
    update and its bookkeeping), which it waits for, as the first one does.

    Python runs signal handlers in the main thread only: the guard installs itself there when
    a Python-level handler is in place (not SIG_IGN or SIG_DFL). A guard inside another shares
    its state."""

    def __init__(self) -> None:
        self._frames: List[Any] = []            # the frames of the Ctrl-Cs not yet delivered
        self._critical = 0                      # depth of critical() sections
        self._handler: Optional[Callable[[int, Any], Any]] = None   # the handler stood in for
        self._outer: Optional[InterruptGuard] = None
        self._leaving = False                   # __exit__ is putting the handler back

    def _root(self) -> "InterruptGuard":
        return self._outer if self._outer is not None else self

    def _record(self, signum: int, frame: Any) -> None:
        self._frames.append(frame)
        if len(self._frames) >= 2 and not self._critical and not self._leaving:
            self._deliver()

    def _deliver(self, giving_way: bool = False) -> None:
        """Hand every recorded Ctrl-C to the handler, in order (what it raises propagates). A
        handler that installs another SIGINT handler (a "press again to quit" one) is followed,
        also when it raises: the guard stands in for the new one, or steps aside for SIG_IGN /
        SIG_DFL. A handler that raises takes the Ctrl-Cs recorded with its own: the rest are
        dropped (Python itself merges the signals that arrive before it looks). While the block
        is being left (`_leaving`) the handler is back in place and stays there. `giving_way`:
        left with the code's own exception, to which Python's default handler gives way."""
        try:
            while self._frames and self._handler is not None:
                handler = self._handler
                if handler is signal.default_int_handler:
                    self._frames.clear()
                    if giving_way:
                        return
                    # the guard stays in place: code that catches this goes on guarded, and
                    # __exit__ puts the handler back
                    raise KeyboardInterrupt
                try:
                    handler(signal.SIGINT, self._frames.pop(0))
                finally:
                    current = signal.getsignal(signal.SIGINT)
                    if self._leaving:
                        self._handler = current if callable(current) else None
                    elif current != self._record:
                        self._handler = current if callable(current) else None
                        if self._handler is not None:
                            signal.signal(signal.SIGINT, self._record)
                    if current == signal.SIG_DFL and self._frames:
                        # the handler put the default action back ("press again to quit"): a
                        # Ctrl-C recorded after the one it was given ends the process, as it
                        # would have without the guard
                        self._frames.clear()
                        signal.raise_signal(signal.SIGINT)
        finally:
            self._frames.clear()

    def acknowledge(self) -> None:
        """The code has handed the Ctrl-C back to its caller (a returned KeyboardInterrupt, as
        the C++ epoch returns it): leaving the outermost guard does not raise it again."""
        if self._outer is None:
            self._frames.clear()

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A section that a second Ctrl-C waits for too (it is honoured after the section, at
        the next safe point)."""
        root = self._root()
        root._critical += 1
        try:
            yield
        finally:
            root._critical -= 1

    @property
    def requested(self) -> bool:
        """A Ctrl-C under Python's default handler is waiting for the next safe point."""
        root = self._root()
        return bool(root._frames) and root._handler is signal.default_int_handler

    def stop_requested(self) -> bool:
        """At a safe point: True when training should stop here for a Ctrl-C (Python's
        default handler); a custom handler's Ctrl-Cs are delivered now, by calling it (what it
        raises propagates), and training goes on if it returns."""
        if self.requested:
            return True
        root = self._root()
        if root._frames and root._handler is not None:
            root._deliver()
        return False

    def keep_going(self, batches_done: int = 0) -> bool:
        return not self.stop_requested()

    def __enter__(self) -> "InterruptGuard":
        self._leaving = False
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGINT)
            outer = getattr(current, "__self__", None)
            if isinstance(outer, InterruptGuard):
                self._outer = outer._root()
            elif callable(current):
                self._handler = current
                signal.signal(signal.SIGINT, self._record)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        handler = self._handler
        if handler is None:
            return
        # the handler first: a Ctrl-C from here on goes to it; one that lands as it is put
        # back is recorded (signal.signal runs the pending handler first) and delivered here,
        # not there (a handler raising there would leave the guard installed for good). A
        # SIGINT handler that the code in the block installed in the guard's place stays.
        self._leaving = True
        if signal.getsignal(signal.SIGINT) == self._record:
            signal.signal(signal.SIGINT, handler)
        # leaving with an exception of the code's own: a Ctrl-C under Python's default handler
        # gives way to it (the code raised first), a custom handler is still called (what it
        # raises propagates, the code's exception as its __context__)
        if self._frames:
            self._deliver(giving_way=exc_type is not None)


class ModelLock:
    """Readers (predict, loss, ...) share the model; a writer (fit, train_step, set_weights)
    has it alone. The writing thread may also read and write again (a callback during fit)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._readers: Dict[int, List[str]] = {}    # thread id -> its read calls, nested
        self._writer: Optional[int] = None
        self._writer_call = ""
        self._writer_depth = 0

    def _refuse(self, call: str, other: str) -> ModelInUseError:
        return ModelInUseError(
            f"{call}: this model is in use by another thread ({other} in progress). One thread "
            "may train a model (fit, train_step, set_weights) while no other thread uses it; "
            "wait for that call to finish, or give each thread its own model.")

    def acquire_read(self, call: str) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._writer is not None and self._writer != me:
                raise self._refuse(call, self._writer_call)
            self._readers.setdefault(me, []).append(call)

    def release_read(self) -> None:
        me = threading.get_ident()
        with self._mutex:
            self._readers[me].pop()
            if not self._readers[me]:
                del self._readers[me]

    def acquire_write(self, call: str) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._writer is not None and self._writer != me:
                raise self._refuse(call, self._writer_call)
            others = [calls[0] for t, calls in self._readers.items() if t != me]
            if others:
                raise self._refuse(call, f"a read call ({others[0]})" if len(others) == 1
                                   else f"read calls in {len(others)} threads")
            if self._writer is None:
                self._writer, self._writer_call = me, call
            self._writer_depth += 1

    def release_write(self) -> None:
        with self._mutex:
            self._writer_depth -= 1
            if not self._writer_depth:
                self._writer, self._writer_call = None, ""


def _locked(acquire: str, release: str) -> Callable[[F], F]:
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            lock = self._lock
            call = f"{type(self).__name__}.{method.__name__}"     # RNN.fit, GRU.fit, ...
            getattr(lock, acquire)(call)
            try:
                return method(self, *args, **kwargs)
            finally:
                getattr(lock, release)()
        return wrapper  # type: ignore[return-value]
    return decorate


reads_model = _locked("acquire_read", "release_read")
writes_model = _locked("acquire_write", "release_write")
