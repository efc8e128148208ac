"""Property-based tests (hypothesis): random shapes, options and array layouts.

1. Unusual but valid inputs (non-contiguous, reversed-stride, Fortran-ordered, read-only,
   byte-swapped and integer arrays, nested lists) give what plain C-contiguous arrays give, and
   the C++ backend agrees with the reference -- at the public API and at the _core functions.
2. Bad inputs: each of the BAD_INPUT_KINDS below, applied at every entry point where it is bad
   (every applicable pair, in float64 many-to-one and float32 many-to-many), raises the same
   exception type from both backends (TypeError, ValueError or MemoryError) with a message
   naming the argument -- never a crash, never a wrong answer. The _core functions are also
   called directly with the _core-only kinds (CORE_BAD_KINDS).

Distinct bad-input kinds covered: 41 = 24 array kinds (BAD_INPUT_KINDS, each at up to 10
entry points, both backends, both dtypes) + 11 _core-only kinds (CORE_BAD_KINDS) + 6 scalar
kinds (SCALAR_KINDS); on top, every fit option gets each of 10 values (0, negative, -2**63,
2**64, fractional, NaN, Inf, a string, None, a bool), which must fit where the value is legal
(LEGAL_FIT_OPTIONS) and be refused by name everywhere else, and every _core argument slot gets
arrays of any rank, size (0 included) and dtype (asserted in
test_the_number_of_bad_input_kinds_is_recorded).

Runtime is bounded and reproducible: derandomize=True, a fixed max_examples, no deadline
(the sanitizer build is ~5x slower). About 4 s in a normal build.
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit import _core  # noqa: E402
from rnnkit import reference as ref  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
TOL = {"float64": 1e-10, "float32": 2e-4}

# ----------------------------------------------------------------------------- layouts
LAYOUTS = ["c", "fortran", "strided", "reversed", "readonly", "byteswapped", "list", "int"]


def with_layout(arr, layout, dtype=None):
    """``arr`` (float64 values) re-presented in ``layout``; the values stay the same (for
    "int" the caller draws integer-valued data). ``dtype`` is the array's dtype if given."""
    a = arr.astype(dtype) if dtype is not None else arr
    if layout == "c":
        return np.ascontiguousarray(a)
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":                           # every other element along each axis
        big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
        big[tuple(slice(None, None, 2) for _ in a.shape)] = a
        return big[tuple(slice(None, None, 2) for _ in a.shape)]
    if layout == "reversed":                          # negative strides on every axis
        flipped = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
        return flipped[tuple(slice(None, None, -1) for _ in a.shape)]
    if layout == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if layout == "byteswapped":
        return a.astype(a.dtype.newbyteorder())
    if layout == "list":
        return a.tolist()
    if layout == "int":
        return a.astype(np.int32)
    raise AssertionError(layout)


@st.composite
def problems(draw):
    """Sizes, options and data for one model and one batch."""
    N, T = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    I, H, O = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    opts = dict(activation=draw(st.sampled_from(["tanh", "sigmoid", "relu"])),
                bias=draw(st.booleans()), return_sequences=draw(st.booleans()),
                dtype=draw(st.sampled_from(["float64", "float32"])))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    integer = draw(st.booleans())
    X = rng.integers(-2, 3, size=(N, T, I)).astype(float) if integer else rng.normal(size=(N, T, I))
    Y = rng.normal(size=(N, T, O) if opts["return_sequences"] else (N, O))
    h0 = rng.normal(size=(N, H)) * 0.5
    k = draw(st.one_of(st.none(), st.integers(0, T + 1)))
    return dict(sizes=(I, H, O), opts=opts, seed=seed, X=X, Y=Y, h0=h0, k=k, integer=integer)


def _close(a, b, tol):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                               rtol=tol, atol=tol)


@SETTINGS
@given(p=problems(), layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 3))
def test_unusual_layouts_give_the_plain_result_on_both_backends(p, layouts):
    lx, ly, lh = layouts
    if lx == "int" and not p["integer"]:
        lx = "c"
    ly, lh = ("c" if lay == "int" else lay for lay in (ly, lh))   # not integer-valued
    X, Y, h0 = with_layout(p["X"], lx), with_layout(p["Y"], ly), with_layout(p["h0"], lh)
    tol = TOL[p["opts"]["dtype"]]
    results = {}
    for backend in ("cpp", "reference"):
        model = rnnkit.RNN(*p["sizes"], seed=p["seed"], backend=backend, **p["opts"])
        plain = rnnkit.RNN(*p["sizes"], seed=p["seed"], backend=backend, **p["opts"])
        got = (model.forward(X, h0=h0), model.loss(X, Y, h0=h0),
               model.gradients(X, Y, bptt_truncate=p["k"], h0=h0),
               model.train_step(X, Y, h0=h0, bptt_truncate=p["k"], clip_norm=1.0))
        Xc, Yc, hc = (np.ascontiguousarray(p[n]) for n in ("X", "Y", "h0"))
        want = (plain.forward(Xc, h0=hc), plain.loss(Xc, Yc, h0=hc),
                plain.gradients(Xc, Yc, bptt_truncate=p["k"], h0=hc),
                plain.train_step(Xc, Yc, h0=hc, bptt_truncate=p["k"], clip_norm=1.0))
        # the layout changes nothing, bit for bit
        for g, w in zip((*got[0], got[1], *got[2].values(), got[3][0], got[3][1]),
                        (*want[0], want[1], *want[2].values(), want[3][0], want[3][1])):
            assert np.asarray(g).tobytes() == np.asarray(w).tobytes()
        assert model._params.tobytes() == plain._params.tobytes()
        results[backend] = (got[0][0], got[1], np.concatenate(
            [g.ravel() for g in got[2].values()]), model._params)
    for c, r in zip(results["cpp"], results["reference"]):
        _close(c, r, tol)


@SETTINGS
@given(p=problems(), layouts=st.tuples(*[st.sampled_from(
    ["c", "fortran", "strided", "reversed", "readonly"])] * 4))
def test_core_functions_accept_any_layout_of_the_right_dtype_and_agree(p, layouts):
    """_core itself, called with arrays of the params dtype in unusual layouts, against the
    reference called with the same arrays."""
    I, H, O = p["sizes"]
    o = p["opts"]
    dt = np.dtype(o["dtype"])
    params = np.random.default_rng(p["seed"]).uniform(
        -0.5, 0.5, rnnkit.param_count(I, H, O, o["bias"])).astype(dt)
    X, Y, h0, P = (with_layout(a, lay, dt) for a, lay in
                   zip((p["X"], p["Y"], p["h0"], params), layouts))
    spec = dict(hidden_size=H, output_size=O, bias=o["bias"], activation=o["activation"])
    tol = TOL[o["dtype"]]
    out_c = _core.forward(X, h0, P, **spec, return_sequences=o["return_sequences"])
    out_r = ref.forward(X, h0, P, **spec, return_sequences=o["return_sequences"])
    for c, r in zip(out_c, out_r):
        _close(c, r, tol)
    loss_c, grad_c = _core.backward(X, Y, h0, P, out_c[1], out_c[0], **spec,
                                    bptt_truncate=p["k"])
    loss_r, grad_r = ref.backward(X, Y, h0, P, out_r[1], out_r[0], **spec,
                                  bptt_truncate=p["k"])
    _close(loss_c, loss_r, tol)
    _close(grad_c, grad_r, tol)
    N = X.shape[0]
    order = with_layout(np.arange(N)[::-1].astype(np.int64), layouts[0])
    results = []
    for backend in (_core, ref):
        q = params.copy()
        m, v = np.zeros_like(q), np.zeros_like(q)
        results.append(backend.train_epoch(
            X, Y, q, order, 2, **spec, bptt_truncate=p["k"], clip_norm=1.0, clip_value=0.5,
            optimizer="adam", lr=0.01, momentum=0.0, weight_decay=0.0, beta1=0.9, beta2=0.999,
            eps=1e-8, momentum_buffer=None, exp_avg=m, exp_avg_sq=v, step=0)[:3] + (q, m, v))
    (lc, sc, stc, qc, mc, vc), (lr_, sr, str_, qr, mr, vr) = results
    assert (sc, stc) == (sr, str_) == ((N + 1) // 2, "completed")
    for c, r in zip((lc, qc, mc, vc), (lr_, qr, mr, vr)):
        _close(c, r, tol)


# ----------------------------------------------------------------------------- bad inputs
# Each kind: (function of a valid array -> bad value, exception types allowed). Shape kinds
# are applied where a shape is checked; all go through X, Y, h0, validation_data or weights.
def _drop_axis(a):
    return a[..., 0]


def _add_axis(a):
    return a[..., None]


def _wrong_last(a):
    return np.concatenate([a, a[..., :1]], axis=-1)


def _huge(a):
    """A read-only broadcast view whose C-contiguous copy would need terabytes."""
    shape = ((10**12,) if a.ndim == 2 else (10**6, 10**6)) + (a.shape[-1],)
    return np.broadcast_to(a.reshape(-1)[:1].reshape((1,) * a.ndim), shape)


def _with(value):
    def put(a):
        b = np.array(a, dtype=np.float64, copy=True)
        b.flat[b.size // 2] = value
        return b
    return put


BAD_INPUT_KINDS = {
    "wrong rank (one axis fewer)": (_drop_axis, ValueError),
    "wrong rank (one axis more)": (_add_axis, ValueError),
    "wrong last size": (_wrong_last, ValueError),
    "mismatched N (one record fewer)": (lambda a: a[:-1] if len(a) > 1 else a[:0], ValueError),
    "N = 0": (lambda a: a[:0], ValueError),
    "0-d array": (lambda a: np.array(1.5), TypeError),
    "Python scalar": (lambda a: 1.5, TypeError),
    "None": (lambda a: None, TypeError),
    "bool array": (lambda a: a > 0, TypeError),
    "complex array": (lambda a: a.astype(complex), TypeError),
    "object array": (lambda a: a.astype(object), TypeError),
    "string array": (lambda a: a.astype(str), TypeError),
    "bytes array": (lambda a: a.astype("S8"), TypeError),
    "datetime array": (lambda a: a.astype("int64").astype("datetime64[s]"), TypeError),
    "structured array": (lambda a: np.zeros(a.shape, dtype=[("x", "f8")]), TypeError),
    "dict": (lambda a: {"X": a}, TypeError),
    "ragged nested list": (lambda a: [[1.0, 2.0], [3.0]], ValueError),
    "list of strings": (lambda a: np.asarray(a).astype(str).tolist(), TypeError),
    "NaN": (_with(np.nan), ValueError),
    "+Inf": (_with(np.inf), ValueError),
    "-Inf": (_with(-np.inf), ValueError),
    "float larger than float32 (to a float32 model: Inf)": (_with(1e300), ValueError),
    "unallocatable size (broadcast to terabytes)": (_huge, (MemoryError, ValueError)),
    "T = 0": (lambda a: a[:, :0], ValueError),
}

# Which argument of which call each kind is applied to: (label in the message, call).
ENTRY_POINTS = {
    "predict X": ("X", lambda m, d, bad: m.predict(bad)),
    "forward h0": ("h0", lambda m, d, bad: m.forward(d["X"], h0=bad)),
    "loss Y": ("Y", lambda m, d, bad: m.loss(d["X"], bad)),
    "gradients X": ("X", lambda m, d, bad: m.gradients(bad, d["Y"])),
    "train_step Y": ("Y", lambda m, d, bad: m.train_step(d["X"], bad)),
    "train_step h0": ("h0", lambda m, d, bad: m.train_step(d["X"], d["Y"], h0=bad)),
    "fit X": ("X", lambda m, d, bad: m.fit(bad, d["Y"], epochs=1)),
    "fit validation X": ("validation_data[0]", lambda m, d, bad: m.fit(
        d["X"], d["Y"], epochs=1, validation_data=(bad, d["Y"]))),
    "set_weights W": ("weights['W']", lambda m, d, bad: m.set_weights(
        dict(m.weights, W=bad))),
    "sliding_windows series": ("series", lambda m, d, bad: rnnkit.data.sliding_windows(
        bad, seq_len=2)),
}
# Kinds that do not apply to an entry point (the shape rule there differs, or it is legal).
NOT_APPLICABLE = {
    ("predict X", "mismatched N (one record fewer)"),      # any N is fine there
    ("forward h0", "None"), ("train_step h0", "None"),      # None means zeros
    ("sliding_windows series", "wrong rank (one axis fewer)"),
    ("sliding_windows series", "wrong last size"), ("sliding_windows series", "T = 0"),
    ("sliding_windows series", "mismatched N (one record fewer)"),
    ("sliding_windows series", "float larger than float32 (to a float32 model: Inf)"),
}


def _valid(draw_model_rs, n=4, t=3, i=2, h=3, o=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, t, i))
    Y = rng.normal(size=(n, t, o) if draw_model_rs else (n, o))
    return {"X": X, "Y": Y, "h0": rng.normal(size=(n, h)), "W": rng.normal(size=(h, h)),
            "series": rng.normal(size=(10, i))}


def _outcome(call):
    try:
        call()
    except (TypeError, ValueError, MemoryError) as exc:
        return type(exc), str(exc)
    return None, ""


@pytest.mark.parametrize(
    "kind, entry, return_sequences, dtype",
    [(k, e, rs, dt) for k in BAD_INPUT_KINDS for e in ENTRY_POINTS
     for rs, dt in ((False, "float64"), (True, "float32"))
     if (e, k) not in NOT_APPLICABLE
     and not (k.startswith("float larger") and dt == "float64")])   # legal in float64
def test_bad_inputs_raise_the_same_named_error_on_both_backends(kind, entry, return_sequences,
                                                                dtype):
    """Every kind of bad input at every entry point where it is bad (each applicable pair,
    many-to-one in float64 and many-to-many in float32): the same exception type from both
    backends, naming the argument, and the model unchanged."""
    make_bad, allowed = BAD_INPUT_KINDS[kind]
    name, call = ENTRY_POINTS[entry]
    d = _valid(return_sequences)
    source = {"X": "X", "h0": "h0", "Y": "Y", "validation_data[0]": "X",
              "weights['W']": "W", "series": "series"}[name]
    bad = make_bad(d[source])
    outcomes = []
    for backend in ("cpp", "reference"):
        model = rnnkit.RNN(2, 3, 2, return_sequences=return_sequences, dtype=dtype, seed=0,
                           backend=backend)
        before = model._params.copy()
        exc_type, message = _outcome(lambda: call(model, d, bad))
        assert exc_type is not None, f"{kind} to {entry} was accepted"
        assert issubclass(exc_type, allowed), (kind, entry, exc_type, message)
        # a record-count mismatch is reported on the second array of the pair
        names = {name, "Y", "validation_data[1]"} if kind.startswith("mismatched") else {name}
        assert any(n in message for n in names), f"{message!r} does not name {name}"
        assert model._params.tobytes() == before.tobytes()     # nothing changed
        outcomes.append(exc_type)
    assert outcomes[0] is outcomes[1]


# Scalar arguments: (call, name in message, exception type), each a distinct kind of mistake.
SCALAR_KINDS = {
    "size <= 0": (lambda: rnnkit.RNN(0, 3), "input_size", ValueError),
    "size not an integer": (lambda: rnnkit.RNN(2, 3.0), "hidden_size", TypeError),
    "unknown activation": (lambda: rnnkit.RNN(2, 3, activation="gelu"), "activation",
                           ValueError),
    "unknown dtype": (lambda: rnnkit.RNN(2, 3, dtype="float16"), "dtype", ValueError),
    "lr <= 0": (lambda: rnnkit.SGD(lr=0.0), "lr", ValueError),
    "lr NaN": (lambda: rnnkit.Adam(lr=float("nan")), "lr", ValueError),
}


@pytest.mark.parametrize("kind", list(SCALAR_KINDS))
def test_bad_scalar_arguments(kind):
    call, name, exc = SCALAR_KINDS[kind]
    with pytest.raises(exc, match=name):
        call()


FIT_OPTIONS = ["batch_size", "epochs", "bptt_truncate", "clip_norm", "clip_value", "on_nonfinite",
               "shuffle", "optimizer"]
FIT_VALUES = [0, -1, -2**63, 2**64, 1.5, float("nan"), float("inf"), "x", None, True]
# the (option, value) pairs above that are legal: a huge batch is one batch, 0 epochs train
# nothing, k = 0 keeps the last step's term, k >= T is full BPTT, None means "not set"
LEGAL_FIT_OPTIONS = {("batch_size", 2**64), ("epochs", 0), ("bptt_truncate", 0),
                     ("bptt_truncate", 2**64), ("bptt_truncate", None), ("clip_norm", 2**64),
                     ("clip_norm", 1.5), ("clip_norm", None), ("clip_value", 2**64),
                     ("clip_value", 1.5), ("clip_value", None), ("shuffle", True),
                     ("optimizer", None)}


@pytest.mark.parametrize("backend", ["cpp", "reference"])
@pytest.mark.parametrize("arg, value", [(a, v) for a in FIT_OPTIONS for v in FIT_VALUES
                                        if (a, v) != ("epochs", 2**64)],   # legal, but endless
                         ids=lambda x: repr(x) if not isinstance(x, str) else x)
def test_bad_fit_options_are_named_and_change_nothing(backend, arg, value):
    """Every fit option with every kind of value: a legal one fits, any other raises a
    TypeError/ValueError naming the option and leaves the model as it was; never a crash."""
    d = _valid(False)
    model = rnnkit.RNN(2, 3, 2, seed=0, backend=backend)
    before = model._params.copy()
    exc_type, message = _outcome(lambda: model.fit(d["X"], d["Y"], **{arg: value}))
    assert (exc_type is None) == ((arg, value) in LEGAL_FIT_OPTIONS), (exc_type, message)
    if exc_type is not None:
        assert arg in message, message
        assert model._params.tobytes() == before.tobytes()


# ----------------------------------------------------------------------------- _core only
def _core_args(dt=np.float64, I=2, H=3, O=1, N=4, T=3):
    rng = np.random.default_rng(0)
    P = rnnkit.param_count(I, H, O, True)
    return dict(X=rng.normal(size=(N, T, I)).astype(dt), Y=rng.normal(size=(N, O)).astype(dt),
                params=rng.normal(size=P).astype(dt), grad=rng.normal(size=P).astype(dt),
                order=np.arange(N, dtype=np.int64), H=H, O=O, P=P)


def _train_epoch(a, **over):
    kw = dict(X=a["X"], Y=a["Y"], params=a["params"], order=a["order"], batch_size=2,
              hidden_size=a["H"], output_size=a["O"], bias=True, activation="tanh",
              bptt_truncate=None, clip_norm=None, clip_value=None, optimizer="sgd", lr=0.1,
              momentum=0.0, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8,
              momentum_buffer=None, exp_avg=None, exp_avg_sq=None, step=0)
    kw.update(over)
    return _core.train_epoch(**kw)


class _Subclass(np.ndarray):
    """An ndarray subclass: the core would update a base-class copy of it, so it is refused."""


# kind: (name in the message, exception type, the call with that mistake)
CORE_BAD_KINDS = {
    "dtype differs from params": ("X", TypeError, lambda a: _core.forward(
        a["X"].astype(np.float32 if a["X"].dtype == np.float64 else np.float64), None,
        a["params"], a["H"], a["O"], True, "tanh", False)),
    "list instead of array": ("X", TypeError, lambda a: _core.forward(
        a["X"].tolist(), None, a["params"], a["H"], a["O"], True, "tanh", False)),
    "gradient not float": ("grad must be a numpy array of float32 or float64", TypeError,
                           lambda a: _core.clip(a["grad"].astype(np.int64), 1.0, None)),
    "in-place array not contiguous": ("params", ValueError, lambda a: _core.sgd_step(
        np.repeat(a["params"], 2)[::2], a["grad"], None, 0.1, 0.0, 0.0)),
    "in-place array read-only": ("grad", ValueError, lambda a: _core.clip(
        with_layout(a["grad"], "readonly"), 1.0, None)),
    "in-place array a subclass": ("params .* the subclass _Subclass", TypeError,
                                  lambda a: _core.sgd_step(a["params"].view(_Subclass),
                                                           a["grad"], None, 0.1, 0.0, 0.0)),
    "in-place arrays aliased": ("params and grad", ValueError, lambda a: _core.sgd_step(
        a["params"], a["params"], None, 0.1, 0.0, 0.0)),
    "order index out of range": ("order", ValueError, lambda a: _train_epoch(
        a, order=np.array([0, 9], dtype=np.int64))),
    "order not int64": ("order", TypeError, lambda a: _train_epoch(
        a, order=a["order"].astype(np.int32))),
    "size product overflows int64": ("hidden_size=1099511627776", ValueError,
                                     lambda a: _core.forward(a["X"], None, a["params"], 2**40,
                                                             a["O"], True, "tanh", False)),
    "params of the wrong length": ("params", ValueError, lambda a: _core.forward(
        a["X"], None, a["params"][:-1], a["H"], a["O"], True, "tanh", False)),
    "momentum state missing": ("momentum_buffer", ValueError, lambda a: _train_epoch(
        a, momentum=0.9)),
}


@pytest.mark.parametrize("kind", list(CORE_BAD_KINDS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_core_rejects_bad_arguments_by_name(kind, dtype):
    name, exc, call = CORE_BAD_KINDS[kind]
    with pytest.raises(exc, match=name):
        call(_core_args(dtype))


@SETTINGS
@given(shape=st.lists(st.integers(0, 3), min_size=0, max_size=4),
       dtype=st.sampled_from(["f8", "f4", "i8", "?", "c16", "O", "U1"]),
       fn=st.sampled_from(["forward", "predict", "backward", "clip", "sgd_step",
                           "adam_step", "train_epoch"]),
       slot=st.integers(0, 3))
def test_core_never_crashes_on_arbitrary_arrays(shape, dtype, fn, slot):
    """Any array of any rank, size (0 included) and dtype in any argument slot of any _core
    function: a TypeError/ValueError, or a result when the array happens to be valid."""
    a = _core_args()
    junk = np.zeros(shape, dtype=dtype)
    P, H, O = a["P"], a["H"], a["O"]
    calls = {
        "forward": lambda args: _core.forward(args[0], args[1], args[2], H, O, True, "tanh",
                                              False),
        "predict": lambda args: _core.predict(args[0], args[1], args[2], H, O, True, "tanh",
                                              False),
        "backward": lambda args: _core.backward(args[0], args[1], None, args[2], args[3],
                                                a["Y"], H, O, True, "relu", 1),
        "clip": lambda args: _core.clip(args[0], 1.0, 1.0),
        "sgd_step": lambda args: _core.sgd_step(args[0], args[1], args[2], 0.1, 0.9, 0.0),
        "adam_step": lambda args: _core.adam_step(args[0], args[1], args[2], args[3], 1, 0.1,
                                                  0.9, 0.99, 1e-8, 0.0),
        "train_epoch": lambda args: _train_epoch(a, X=args[0], Y=args[1], params=args[2],
                                                 order=args[3]),
    }
    valid = {
        "forward": [a["X"], None, a["params"].copy()],
        "predict": [a["X"], None, a["params"].copy()],
        "backward": [a["X"], a["Y"], a["params"].copy(), np.zeros((4, 3, H))],
        "clip": [a["grad"].copy()],
        "sgd_step": [a["params"].copy(), a["grad"].copy(), np.zeros(P)],
        "adam_step": [a["params"].copy(), a["grad"].copy(), np.zeros(P), np.zeros(P)],
        "train_epoch": [a["X"], a["Y"], a["params"].copy(), a["order"]],
    }[fn]
    args = list(valid)
    args[slot % len(args)] = junk
    try:
        calls[fn](args)
    except (TypeError, ValueError):
        pass


def test_the_number_of_bad_input_kinds_is_recorded():
    assert (len(BAD_INPUT_KINDS), len(CORE_BAD_KINDS), len(SCALAR_KINDS)) == (24, 12, 6)
