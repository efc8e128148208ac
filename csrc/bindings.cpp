// rnnkit._core: the thin layer between NumPy and the kernels of rnnkit.h.
// Each function converts and validates every argument (Python errors name the argument, the
// expected and the given value), then releases the GIL and calls the kernel.
// Same names, argument order and shapes as rnnkit/reference.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "buffer.h"
#include "cells.h"
#include "rnnkit.h"

namespace py = pybind11;
using rnnkit::Activation;

namespace {

template <typename Real>
using CArray = py::array_t<Real, py::array::c_style | py::array::forcecast>;

// Whether the interpreter is finalizing: from then on (up to Python 3.13) a thread that takes
// the GIL back is ended by Python with pthread_exit.
bool interpreter_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif
}

// A daemon thread that comes back from the core while the interpreter finalizes does not take
// the GIL back: Python would end it with pthread_exit, whose forced unwind through a noexcept
// frame (py::gil_scoped_release's destructor) aborts the whole process in std::terminate at
// exit (pybind/pybind11#2215, pytorch/pytorch#38228). It sleeps until the process is gone
// instead, as Python 3.14 itself leaves such threads (PyThread_hang_thread).
void park_if_finalizing() {
    if (!interpreter_finalizing()) return;
    for (;;) std::this_thread::sleep_for(std::chrono::hours(24));
}

// py::gil_scoped_release, taking the GIL back through park_if_finalizing; noexcept(false), so
// that a thread that finalization ends in the instant between that check and taking the GIL
// unwinds out of the call (pybind11 lets the forced unwind through) instead of aborting.
class GilReleased {
public:
    GilReleased() : state_(PyEval_SaveThread()) {}
    ~GilReleased() noexcept(false) {
        park_if_finalizing();
        PyEval_RestoreThread(state_);
    }
    GilReleased(const GilReleased&) = delete;
    GilReleased& operator=(const GilReleased&) = delete;

private:
    PyThreadState* state_;
};

template <typename Real>
const char* dtype_name() {
    if (std::is_integral<Real>::value) return "int64";
    return sizeof(Real) == sizeof(double) ? "float64" : "float32";
}

std::string shape_string(const std::vector<int64_t>& shape, const char* free_name = "*") {
    std::string s = "(";
    for (size_t d = 0; d < shape.size(); ++d) {
        if (d) s += ", ";
        s += shape[d] < 0 ? std::string(free_name) : std::to_string(shape[d]);
    }
    return s + (shape.size() == 1 ? ",)" : ")");
}

std::string shape_of(const py::array& a) {
    std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
    return shape_string(shape);
}

std::string type_of(const py::handle& obj) {
    if (py::isinstance<py::array>(obj))
        return "array of dtype " + py::str(obj.attr("dtype")).cast<std::string>();
    return py::str(py::type::of(obj).attr("__name__")).cast<std::string>();
}

// A shape as "(2, 3, 4)" plus its size in bytes, for messages about memory.
template <typename Real>
std::string array_description(const py::array& a) {
    const double bytes = double(a.size()) * double(sizeof(Real));
    return shape_of(a) + " " + dtype_name<Real>() + " array (" +
           std::to_string(bytes / double(1ull << 30)) + " GiB)";
}

// `obj` as an array of Real with `shape` (-1: any size), made C-contiguous (a copy only if it
// was not). Wrong type, dtype, rank or size raise TypeError / ValueError naming `name`; a copy
// that cannot be allocated raises MemoryError naming it.
template <typename Real>
CArray<Real> input_array(const py::handle& obj, const char* name, std::vector<int64_t> shape) {
    if (!py::isinstance<py::array_t<Real>>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array of " + dtype_name<Real>() +
                             " (the dtype of params), got " + type_of(obj));
    auto arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.ndim() == 0)
        throw py::type_error(std::string(name) + " must be an array of shape " +
                             shape_string(shape) + ", got a 0-d array (a scalar)");
    bool ok = arr.ndim() == py::ssize_t(shape.size());
    for (size_t d = 0; ok && d < shape.size(); ++d)
        ok = shape[d] < 0 || arr.shape(py::ssize_t(d)) == shape[d];
    if (!ok)
        throw py::value_error(std::string(name) + " must have shape " + shape_string(shape) +
                              ", got " + shape_of(arr));
    // ensure() returns a null handle (and clears the Python error) when the copy fails.
    auto result = CArray<Real>::ensure(arr);
    if (!result) {
        PyErr_SetString(PyExc_MemoryError,
                        (std::string(name) + ": cannot allocate a C-contiguous copy of the " +
                         array_description<Real>(arr)).c_str());
        throw py::error_already_set();
    }
    return result;
}

// A new uninitialized array of `shape` (already checked by checked_sizes); MemoryError naming
// `name` when it cannot be allocated.
template <typename Real>
py::array_t<Real> output_array(const char* name, std::vector<int64_t> shape) {
    try {
        return py::array_t<Real>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
    } catch (py::error_already_set& e) {
        if (!e.matches(PyExc_MemoryError)) throw;
        PyErr_SetString(PyExc_MemoryError, (std::string(name) + ": cannot allocate a " +
                                            shape_string(shape) + " " + dtype_name<Real>() +
                                            " array").c_str());
        throw py::error_already_set();
    }
}

// Scratch space of n scalars (uninitialized, see buffer.h); MemoryError naming `name` when it
// cannot be allocated.
template <typename Real>
rnnkit::Buffer<Real> scratch(int64_t n, const char* name) {
    try {
        return rnnkit::Buffer<Real>(n);
    } catch (const std::bad_alloc&) {
        PyErr_SetString(PyExc_MemoryError, (std::string(name) + ": cannot allocate " +
                                            std::to_string(n) + " " + dtype_name<Real>() +
                                            " scalars of scratch space").c_str());
        throw py::error_already_set();
    }
}

// An array updated in place: it must already be C-contiguous, writeable and of dtype Real,
// since writing into a converted copy would lose the update.
template <typename Real>
py::array_t<Real> inout_array(const py::handle& obj, const char* name, int64_t size) {
    auto arr = input_array<Real>(obj, name, {size});
    if (!py::isinstance<py::array_t<Real, py::array::c_style>>(obj))
        throw py::value_error(std::string(name) + " is updated in place, so it must be a "
                              "C-contiguous array, got a non-contiguous one");
    if (!arr.is(obj))   // a subclass: ensure() made a base-class array of it
        throw py::type_error(std::string(name) + " is updated in place, so it must be a "
                             "numpy.ndarray itself, got the subclass " +
                             py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
    if (!arr.writeable())
        throw py::value_error(std::string(name) + " is updated in place, so it must be "
                              "writeable, got a read-only array");
    return arr;
}

// Arrays updated in place must not share memory with any other array of the call: the
// kernels read an input after writing an output, so an alias would give a result that depends
// on the loop order (and differs from the reference).
void check_no_overlap(std::initializer_list<std::pair<const char*, const py::array*>> arrays) {
    for (auto a = arrays.begin(); a != arrays.end(); ++a)
        for (auto b = a + 1; b != arrays.end(); ++b) {
            if (!a->second || !b->second) continue;
            const char* a0 = static_cast<const char*>(a->second->data());
            const char* b0 = static_cast<const char*>(b->second->data());
            const auto a1 = a0 + a->second->nbytes(), b1 = b0 + b->second->nbytes();
            if (a0 < b1 && b0 < a1)
                throw py::value_error(std::string(a->first) + " and " + b->first +
                                      " must be separate arrays, got two that share memory");
        }
}

Activation parse_activation(const std::string& name) {
    if (name == "tanh") return Activation::Tanh;
    if (name == "sigmoid") return Activation::Sigmoid;
    if (name == "relu") return Activation::Relu;
    throw py::value_error("activation must be one of 'tanh', 'sigmoid', 'relu', got '" + name + "'");
}

int64_t check_size(int64_t value, const char* name) {
    if (value < 1)
        throw py::value_error(std::string(name) + " must be >= 1, got " + std::to_string(value));
    return value;
}

std::optional<double> check_positive(std::optional<double> value, const char* name) {
    if (value && !(std::isfinite(*value) && *value > 0))
        throw py::value_error(std::string(name) + " must be a finite number > 0 or None, got " +
                              std::to_string(*value));
    return value;
}

int64_t truncation(std::optional<int64_t> bptt_truncate) {
    if (!bptt_truncate) return -1;
    if (*bptt_truncate < 0)
        throw py::value_error("bptt_truncate must be None or an integer >= 0, got " +
                              std::to_string(*bptt_truncate));
    return *bptt_truncate;
}

rnnkit::Cell parse_cell(const std::string& name) {
#define RNNKIT_PARSE_CELL(Enum, Struct, text) \
    if (name == text) return rnnkit::Cell::Enum;
    RNNKIT_CELLS(RNNKIT_PARSE_CELL)
#undef RNNKIT_PARSE_CELL
    std::string names;
#define RNNKIT_CELL_NAME(Enum, Struct, text) \
    names += std::string(names.empty() ? "" : ", ") + "'" + text + "'";
    RNNKIT_CELLS(RNNKIT_CELL_NAME)
#undef RNNKIT_CELL_NAME
    throw py::value_error("cell must be one of " + names + ", got '" + name + "'");
}

// The sizes of a batch: X is (N, T, I) with N, T, I >= 1; params must then be (P,).
struct Sizes {
    int64_t N, T, P;
    rnnkit::Net net;
    int64_t state;  // L·S·H: the scalars of one record's state
    int64_t cache;  // C·H: the scalars of one step's cache in one layer
    int64_t L() const { return net.L; }
};

// The most scalars any one buffer may hold: byte sizes (8 per scalar) and the sums of the
// scratch sizes then stay far inside int64, so no size computed from these ever wraps around.
constexpr int64_t kMaxScalars = int64_t(1) << 56;

// a * b, or ValueError when it exceeds kMaxScalars (`what` says which buffer).
int64_t mul_size(int64_t a, int64_t b, const std::string& what) {
    if (a != 0 && b > kMaxScalars / a)
        throw py::value_error(what + " would hold more than 2**56 scalars (" +
                              std::to_string(a) + " x " + std::to_string(b) +
                              "): far more than can be allocated");
    return a * b;
}

template <typename Real>
Sizes batch_sizes(const CArray<Real>& X, int64_t hidden_size, int64_t output_size, bool bias,
                  const std::string& activation, const std::string& cell, int64_t num_layers) {
    Sizes s{X.shape(0), X.shape(1), 0,
            rnnkit::Net{parse_cell(cell), X.shape(2), check_size(hidden_size, "hidden_size"),
                        check_size(output_size, "output_size"),
                        check_size(num_layers, "num_layers"), bias,
                        parse_activation(activation)},
            0, 0};
    if (s.N < 1 || s.T < 1 || s.net.I < 1)
        throw py::value_error("X must have shape (N, T, I) with N, T, I >= 1, got " +
                              shape_of(X));
    // Every buffer the kernels use is at most one of these (see forward/backward_work_size);
    // each is checked before anything is allocated.
    const rnnkit::Net& n = s.net;
    const rnnkit::CellSizes cs = rnnkit::cell_sizes(n.cell);
    const std::string sizes = " (input_size=" + std::to_string(n.I) + ", hidden_size=" +
                              std::to_string(n.H) + ", output_size=" + std::to_string(n.O) +
                              ", num_layers=" + std::to_string(n.L) + ")";
    const int64_t GH = mul_size(cs.gates, n.H, "W" + sizes);
    const int64_t HH = mul_size(GH, n.H, "W" + sizes);
    const int64_t HI = mul_size(GH, std::max(n.I, n.H), "U" + sizes);
    mul_size(n.O, n.H, "V" + sizes);
    mul_size(n.L, HI + HH + 2 * GH + n.O, "params" + sizes);
    s.P = rnnkit::param_count(n);
    s.state = mul_size(n.L * cs.state, n.H, "h0 (N, L*S*H)");
    s.cache = cs.cache * n.H;
    const int64_t NT = mul_size(s.N, s.T, "X");
    mul_size(mul_size(NT, n.L, "hidden_states (L, N, T, C*H)"), s.cache,
             "hidden_states (L, N, T, C*H)");
    mul_size(NT, GH, "the gate projections (N, T, G*H)");
    mul_size(NT, n.O, "outputs (N, T, O)");
    mul_size(s.N, s.state, "final_state (N, L*S*H)");
    return s;
}

// hidden_states' shape: (N, T, C·H) for one layer, (L, N, T, C·H) for several.
std::vector<int64_t> cache_shape(const Sizes& s) {
    if (s.L() == 1) return {s.N, s.T, s.cache};
    return {s.L(), s.N, s.T, s.cache};
}

// An int64 array of indices or lengths, copied: the kernels index buffers with its values
// after the GIL is released (and train_epoch's callback runs Python between minibatches), so
// they must read the values that were checked, not the caller's array, which another thread
// or the callback could change in between.
std::vector<int64_t> index_copy(const py::object& obj, const char* name,
                                std::vector<int64_t> shape) {
    auto arr = input_array<int64_t>(obj, name, std::move(shape));
    return std::vector<int64_t>(arr.data(), arr.data() + arr.size());
}

// lengths: None, or an int64 array (N,) with values in [1, T] (a checked copy).
std::optional<std::vector<int64_t>> lengths_array(const py::object& obj, const Sizes& s) {
    if (obj.is_none()) return std::nullopt;
    if (!py::isinstance<py::array_t<int64_t>>(obj))
        throw py::type_error("lengths must be None or a numpy array of int64, got " +
                             type_of(obj));
    std::vector<int64_t> lengths = index_copy(obj, "lengths", {s.N});
    for (int64_t n = 0; n < s.N; ++n)
        if (lengths[size_t(n)] < 1 || lengths[size_t(n)] > s.T)
            throw py::value_error("lengths must hold values in [1, T] = [1, " +
                                  std::to_string(s.T) + "], got " +
                                  std::to_string(lengths[size_t(n)]) + " at position " +
                                  std::to_string(n));
    return lengths;
}

template <typename Real>
std::vector<int64_t> y_shape(const Sizes& s, bool return_sequences) {
    return return_sequences ? std::vector<int64_t>{s.N, s.T, s.net.O}
                            : std::vector<int64_t>{s.N, s.net.O};
}

// Calls fn.template operator()<Real>() for the dtype of the array `arr` (float32 or float64),
// named `name` in the error for any other.
template <typename Fn>
auto dispatch(const py::handle& arr, Fn&& fn, const char* name = "params") {
    if (py::isinstance<py::array_t<double>>(arr)) return fn(double{});
    if (py::isinstance<py::array_t<float>>(arr)) return fn(float{});
    throw py::type_error(std::string(name) + " must be a numpy array of float32 or float64, got " +
                         type_of(arr));
}

// The FMA peak microbenchmark, for benchmarks/run.py (private).
double fma_peak_gflops(const std::string& dtype, double seconds, int threads) {
    if (dtype != "float32" && dtype != "float64")
        throw py::value_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
    if (!(seconds > 0 && seconds <= 60))
        throw py::value_error("seconds must be in (0, 60], got " + std::to_string(seconds));
    if (threads < 1)
        throw py::value_error("threads must be >= 1, got " + std::to_string(threads));
    GilReleased release;  // safe: plain numbers in, no Python object touched
    return rnnkit::fma_peak_gflops(dtype == "float64", seconds, threads);
}

std::string fma_peak_isa() {
    switch (rnnkit::fma_peak_isa()) {
        case rnnkit::FmaIsa::Avx512: return "avx512f";
        case rnnkit::FmaIsa::Avx2: return "avx2+fma";
        default: return "scalar";
    }
}

// --------------------------------------------------------------------------- functions

// forward (keep_states: every hidden state, returned) and predict (not returned; one layer,
// many-to-one keeps two steps of them in scratch), on the same checks.
template <bool keep_states>
py::tuple run_forward(const py::object& X_, const py::object& h0_, const py::object& params_,
                      int64_t hidden_size, int64_t output_size, bool bias,
                      const std::string& activation, bool return_sequences,
                      const std::string& cell, int64_t num_layers, const py::object& lengths_) {
    return dispatch(params_, [&](auto zero) -> py::tuple {
        using Real = decltype(zero);
        auto X = input_array<Real>(X_, "X", {-1, -1, -1});
        const Sizes s = batch_sizes(X, hidden_size, output_size, bias, activation, cell,
                                    num_layers);
        auto params = input_array<Real>(params_, "params", {s.P});
        std::optional<CArray<Real>> h0;
        if (!h0_.is_none()) h0 = input_array<Real>(h0_, "h0", {s.N, s.state});
        auto lengths = lengths_array(lengths_, s);
        std::optional<py::array_t<Real>> hidden_states;
        if (keep_states) hidden_states = output_array<Real>("hidden_states", cache_shape(s));
        auto outputs = output_array<Real>("outputs", y_shape<Real>(s, return_sequences));
        auto final_state = output_array<Real>("final_state", {s.N, s.state});
        auto work = keep_states
                        ? scratch<Real>(rnnkit::forward_work_size(s.N, s.T, s.net), "forward")
                        : scratch<Real>(rnnkit::predict_work_size(s.N, s.T, s.net,
                                                                  return_sequences),
                                        "predict");
        Real* hs = keep_states ? hidden_states->mutable_data() : nullptr;
        Real* ys = outputs.mutable_data();
        Real* hT = final_state.mutable_data();
        const Real* x = X.data();
        const Real* h0p = h0 ? h0->data() : nullptr;
        const Real* p = params.data();
        const int64_t* len = lengths ? lengths->data() : nullptr;
        {
            // Safe without the GIL: every array above is owned by this frame, converted and
            // checked; the kernel touches no Python object.
            GilReleased release;
            if (keep_states)
                rnnkit::network_forward(hs, ys, hT, x, h0p, p, len, s.N, s.T, s.net,
                                        return_sequences, work.data());
            else
                rnnkit::network_predict(ys, hT, x, h0p, p, len, s.N, s.T, s.net,
                                        return_sequences, work.data());
        }
        if constexpr (keep_states) return py::make_tuple(outputs, *hidden_states, final_state);
        return py::make_tuple(outputs, final_state);
    });
}

py::tuple backward(const py::object& X_, const py::object& Y_, const py::object& h0_,
                   const py::object& params_, const py::object& hidden_states_,
                   const py::object& outputs_, int64_t hidden_size, int64_t output_size,
                   bool bias, const std::string& activation,
                   std::optional<int64_t> bptt_truncate, const std::string& cell,
                   int64_t num_layers, const py::object& lengths_) {
    return dispatch(params_, [&](auto zero) -> py::tuple {
        using Real = decltype(zero);
        const int64_t k = truncation(bptt_truncate);
        auto X = input_array<Real>(X_, "X", {-1, -1, -1});
        const Sizes s = batch_sizes(X, hidden_size, output_size, bias, activation, cell,
                                    num_layers);
        auto params = input_array<Real>(params_, "params", {s.P});
        const bool return_sequences =
            py::isinstance<py::array>(Y_) && py::reinterpret_borrow<py::array>(Y_).ndim() == 3;
        auto Y = input_array<Real>(Y_, "Y", y_shape<Real>(s, return_sequences));
        auto hidden_states = input_array<Real>(hidden_states_, "hidden_states", cache_shape(s));
        auto outputs = input_array<Real>(outputs_, "outputs", y_shape<Real>(s, return_sequences));
        std::optional<CArray<Real>> h0;
        if (!h0_.is_none()) h0 = input_array<Real>(h0_, "h0", {s.N, s.state});
        auto lengths = lengths_array(lengths_, s);
        auto grad = output_array<Real>("grad", {s.P});
        auto work = scratch<Real>(
            rnnkit::backward_work_size(s.N, s.T, s.net, return_sequences), "backward");
        Real* g = grad.mutable_data();
        const Real *x = X.data(), *y = Y.data(), *p = params.data();
        const Real *hs = hidden_states.data(), *ys = outputs.data();
        const Real* h0p = h0 ? h0->data() : nullptr;
        const int64_t* len = lengths ? lengths->data() : nullptr;
        double loss;
        {
            // Safe without the GIL: see forward.
            GilReleased release;
            rnnkit::zero_buffer(g, s.P);
            loss = rnnkit::network_backward(g, x, y, h0p, p, hs, ys, len, s.N, s.T, s.net,
                                            return_sequences, k, work.data());
        }
        return py::make_tuple(loss, grad);
    });
}

py::array forecast(const py::object& X_, const py::object& h0_, const py::object& params_,
                   int64_t hidden_size, int64_t output_size, bool bias,
                   const std::string& activation, int64_t steps, const std::string& cell,
                   int64_t num_layers) {
    if (steps < 1)
        throw py::value_error("steps must be an integer >= 1, got " + std::to_string(steps));
    return dispatch(params_, [&](auto zero) -> py::array {
        using Real = decltype(zero);
        auto X = input_array<Real>(X_, "X", {-1, -1, -1});
        const Sizes s = batch_sizes(X, hidden_size, output_size, bias, activation, cell,
                                    num_layers);
        if (s.net.I != s.net.O)
            throw py::value_error("forecast feeds each prediction back as the next input, so "
                                  "X must have output_size = " + std::to_string(s.net.O) +
                                  " features per step, got X of shape " + shape_of(X));
        auto params = input_array<Real>(params_, "params", {s.P});
        std::optional<CArray<Real>> h0;
        if (!h0_.is_none()) h0 = input_array<Real>(h0_, "h0", {s.N, s.state});
        mul_size(s.N, steps, "forecasts (N, steps, O)");
        auto forecasts = output_array<Real>("forecasts", {s.N, steps, s.net.O});
        auto work = scratch<Real>(rnnkit::forecast_work_size(s.N, s.T, s.net), "forecast");
        Real* f = forecasts.mutable_data();
        const Real* x = X.data();
        const Real* h0p = h0 ? h0->data() : nullptr;
        const Real* p = params.data();
        {
            // Safe without the GIL: see forward.
            GilReleased release;
            rnnkit::network_forecast(f, x, h0p, p, s.N, s.T, steps, s.net, work.data());
        }
        return forecasts;
    });
}

double clip(const py::object& grad_, std::optional<double> clip_norm,
            std::optional<double> clip_value) {
    check_positive(clip_norm, "clip_norm");
    check_positive(clip_value, "clip_value");
    return dispatch(grad_, [&](auto zero) {
        using Real = decltype(zero);
        auto grad = inout_array<Real>(grad_, "grad", -1);
        Real* g = grad.mutable_data();
        const int64_t P = grad.shape(0);
        GilReleased release;  // safe: grad is checked and held by this frame
        return rnnkit::clip_gradient(g, P, clip_norm, clip_value);
    }, "grad");
}

void check_lr(double lr) {
    if (!(std::isfinite(lr) && lr > 0))
        throw py::value_error("lr must be a finite number > 0, got " + std::to_string(lr));
}

void check_nonnegative(double value, const char* name) {
    if (!(std::isfinite(value) && value >= 0))
        throw py::value_error(std::string(name) + " must be a finite number >= 0, got " +
                              std::to_string(value));
}

void check_beta(double value, const char* name) {
    if (!(value >= 0 && value < 1))
        throw py::value_error(std::string(name) + " must be in [0, 1), got " +
                              std::to_string(value));
}

void sgd_step(const py::object& params_, const py::object& grad_,
              const py::object& momentum_buffer_, double lr, double momentum,
              double weight_decay) {
    check_lr(lr);
    check_nonnegative(momentum, "momentum");
    check_nonnegative(weight_decay, "weight_decay");
    dispatch(params_, [&](auto zero) {
        using Real = decltype(zero);
        auto params = inout_array<Real>(params_, "params", -1);
        const int64_t P = params.shape(0);
        auto grad = input_array<Real>(grad_, "grad", {P});
        std::optional<py::array_t<Real>> buffer;
        if (momentum != 0.0) {
            if (momentum_buffer_.is_none())
                throw py::value_error("momentum_buffer must be an array of shape (" +
                                      std::to_string(P) + ",) when momentum != 0, got None");
            buffer = inout_array<Real>(momentum_buffer_, "momentum_buffer", P);
        }
        check_no_overlap({{"params", &params}, {"grad", &grad},
                          {"momentum_buffer", buffer ? &*buffer : nullptr}});
        Real* p = params.mutable_data();
        Real* buf = buffer ? buffer->mutable_data() : nullptr;
        const Real* g = grad.data();
        GilReleased release;  // safe: every array is checked and held by this frame
        rnnkit::sgd_step(p, buf, g, P, lr, momentum, weight_decay);
    });
}

void adam_step(const py::object& params_, const py::object& grad_, const py::object& exp_avg_,
               const py::object& exp_avg_sq_, int64_t step, double lr, double beta1,
               double beta2, double eps, double weight_decay) {
    check_lr(lr);
    check_beta(beta1, "beta1");
    check_beta(beta2, "beta2");
    check_nonnegative(eps, "eps");
    check_nonnegative(weight_decay, "weight_decay");
    if (step < 1)
        throw py::value_error("step must be >= 1 (it counts this update), got " +
                              std::to_string(step));
    dispatch(params_, [&](auto zero) {
        using Real = decltype(zero);
        auto params = inout_array<Real>(params_, "params", -1);
        const int64_t P = params.shape(0);
        auto grad = input_array<Real>(grad_, "grad", {P});
        auto exp_avg = inout_array<Real>(exp_avg_, "exp_avg", P);
        auto exp_avg_sq = inout_array<Real>(exp_avg_sq_, "exp_avg_sq", P);
        check_no_overlap({{"params", &params}, {"grad", &grad}, {"exp_avg", &exp_avg},
                          {"exp_avg_sq", &exp_avg_sq}});
        Real *p = params.mutable_data(), *m = exp_avg.mutable_data();
        Real* v = exp_avg_sq.mutable_data();
        const Real* g = grad.data();
        GilReleased release;  // safe: every array is checked and held by this frame
        rnnkit::adam_step(p, m, v, g, P, step, lr, beta1, beta2, eps, weight_decay);
    });
}

py::tuple train_epoch(const py::object& X_, const py::object& Y_, const py::object& params_,
                      const py::object& order_, int64_t batch_size, int64_t hidden_size,
                      int64_t output_size, bool bias, const std::string& activation,
                      std::optional<int64_t> bptt_truncate, std::optional<double> clip_norm,
                      std::optional<double> clip_value, const std::string& optimizer,
                      double lr, double momentum, double weight_decay, double beta1,
                      double beta2, double eps, const py::object& momentum_buffer_,
                      const py::object& exp_avg_, const py::object& exp_avg_sq_, int64_t step,
                      const py::object& callback, const py::object& losses_out,
                      const std::string& cell, int64_t num_layers, const py::object& lengths_) {
    const int64_t k = truncation(bptt_truncate);
    check_size(batch_size, "batch_size");
    check_positive(clip_norm, "clip_norm");
    check_positive(clip_value, "clip_value");
    check_lr(lr);
    check_nonnegative(weight_decay, "weight_decay");
    rnnkit::OptimizerConfig config{rnnkit::OptimizerConfig::Kind::SGD, lr, momentum,
                                   weight_decay, beta1, beta2, eps};
    if (optimizer == "adam") {
        config.kind = rnnkit::OptimizerConfig::Kind::Adam;
        check_beta(beta1, "beta1");
        check_beta(beta2, "beta2");
        check_nonnegative(eps, "eps");
    } else if (optimizer == "sgd") {
        check_nonnegative(momentum, "momentum");
    } else {
        throw py::value_error("optimizer must be 'sgd' or 'adam', got '" + optimizer + "'");
    }
    if (step < 0)
        throw py::value_error("step must be >= 0, got " + std::to_string(step));
    return dispatch(params_, [&](auto zero) -> py::tuple {
        using Real = decltype(zero);
        auto X = input_array<Real>(X_, "X", {-1, -1, -1});
        const Sizes s = batch_sizes(X, hidden_size, output_size, bias, activation, cell,
                                    num_layers);
        const bool return_sequences =
            py::isinstance<py::array>(Y_) && py::reinterpret_borrow<py::array>(Y_).ndim() == 3;
        auto Y = input_array<Real>(Y_, "Y", y_shape<Real>(s, return_sequences));
        auto lengths = lengths_array(lengths_, s);
        auto params = inout_array<Real>(params_, "params", s.P);
        if (!py::isinstance<py::array_t<int64_t>>(order_))
            throw py::type_error("order must be a numpy array of int64, got " + type_of(order_));
        const std::vector<int64_t> order = index_copy(order_, "order", {-1});   // checked copy
        const int64_t n_order = int64_t(order.size());
        const int64_t* ord = order.data();
        for (int64_t r = 0; r < n_order; ++r)
            if (ord[r] < 0 || ord[r] >= s.N)
                throw py::value_error("order must hold record indices in [0, " +
                                      std::to_string(s.N) + "), got " + std::to_string(ord[r]) +
                                      " at position " + std::to_string(r));
        std::optional<py::array_t<Real>> buffer, m, v;
        if (config.kind == rnnkit::OptimizerConfig::Kind::SGD && momentum != 0.0) {
            if (momentum_buffer_.is_none())
                throw py::value_error("momentum_buffer must be an array of shape (" +
                                      std::to_string(s.P) + ",) when momentum != 0, got None");
            buffer = inout_array<Real>(momentum_buffer_, "momentum_buffer", s.P);
        }
        if (config.kind == rnnkit::OptimizerConfig::Kind::Adam) {
            m = inout_array<Real>(exp_avg_, "exp_avg", s.P);
            v = inout_array<Real>(exp_avg_sq_, "exp_avg_sq", s.P);
        }
        // The losses go into `losses_out` when given (a caller's progress display reads the
        // running loss from it in the callback), else into a new array.
        // Written without n_order + batch_size, which could overflow for a huge batch_size.
        const int64_t n_batches = n_order == 0 ? 0 : (n_order - 1) / batch_size + 1;
        if (step > std::numeric_limits<int64_t>::max() - n_batches)
            throw py::value_error("step must leave room for this epoch's " +
                                  std::to_string(n_batches) + " updates, got " +
                                  std::to_string(step));
        if (!losses_out.is_none() &&
            !py::isinstance<py::array_t<double, py::array::c_style>>(losses_out))
            throw py::type_error("losses_out must be None or a C-contiguous numpy array of "
                                 "float64, got " + type_of(losses_out));
        py::array_t<double> losses = losses_out.is_none()
                                         ? output_array<double>("losses", {n_batches})
                                         : inout_array<double>(losses_out, "losses_out", n_batches);
        check_no_overlap({{"params", &params}, {"X", &X}, {"Y", &Y},
                          {"momentum_buffer", buffer ? &*buffer : nullptr},
                          {"exp_avg", m ? &*m : nullptr}, {"exp_avg_sq", v ? &*v : nullptr},
                          {"losses_out", losses_out.is_none() ? nullptr : &losses}});
        double* l = losses.mutable_data();
        Real* p = params.mutable_data();
        Real* buf = buffer ? buffer->mutable_data() : nullptr;
        Real* mp = m ? m->mutable_data() : nullptr;
        Real* vp = v ? v->mutable_data() : nullptr;
        const Real *x = X.data(), *y = Y.data();
        const int64_t* len = lengths ? lengths->data() : nullptr;
        // After the first minibatch and then at most every 50 ms, the loop takes the GIL back
        // to honour signals (Ctrl-C) and to call `callback(batches_done)`; an exception from
        // either, or a False from the callback, ends the epoch after the last completed update.
        py::object error = py::none();
        std::chrono::steady_clock::time_point last{};  // long ago: the first batch calls back
        auto keep_going = [&](int64_t done) -> bool {
            const auto now = std::chrono::steady_clock::now();
            if (now - last < std::chrono::milliseconds(50)) return true;
            last = now;
            park_if_finalizing();
            py::gil_scoped_acquire gil;
            try {
                if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                if (!callback.is_none()) return !callback(done).is(py::bool_(false));
            } catch (py::error_already_set& e) {
                error = e.value();
                return false;
            }
            return true;
        };
        rnnkit::EpochResult result;
        {
            // Safe without the GIL: every array is converted, checked and held by this frame,
            // and the epoch loop touches Python only inside keep_going, under the GIL.
            GilReleased release;
            result = rnnkit::train_epoch(l, p, buf, mp, vp, x, y, len, ord, n_order, batch_size,
                                         s.N, s.T, s.net, return_sequences, k, clip_norm,
                                         clip_value, config, step, keep_going);
        }
        py::object done_losses = losses[py::slice(0, py::ssize_t(result.batches_done), 1)];
        const char* status = result.status == rnnkit::EpochStatus::Completed ? "completed"
                             : result.status == rnnkit::EpochStatus::NonFinite ? "nonfinite"
                                                                               : "stopped";
        return py::make_tuple(done_losses, result.step, status, error);
    });
}

const char* isa_name(rnnkit::Isa isa) {
    switch (isa) {
        case rnnkit::Isa::Avx512: return "avx512";
        case rnnkit::Isa::Avx2: return "avx2";
        default: return "baseline";
    }
}

void set_isa(const std::string& name) {
    rnnkit::Isa isa;
    if (name == "best") isa = rnnkit::best_isa();
    else if (name == "avx512") isa = rnnkit::Isa::Avx512;
    else if (name == "avx2") isa = rnnkit::Isa::Avx2;
    else if (name == "baseline") isa = rnnkit::Isa::Baseline;
    else throw py::value_error("isa must be 'best', 'avx512', 'avx2' or 'baseline', got '" + name + "'");
    if (int(isa) > int(rnnkit::best_isa()))
        throw py::value_error(std::string("this CPU supports instruction sets up to '") +
                              isa_name(rnnkit::best_isa()) + "', not '" + name + "'");
    rnnkit::set_isa(isa);
}

void set_num_threads(int64_t n) {
    check_size(n, "n");
    rnnkit::set_num_threads(int(std::min<int64_t>(n, 1024)));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "rnnkit's C++ core: the functions of rnnkit.reference, compiled (private API).";
    m.def("_fma_peak_gflops", &fma_peak_gflops, py::arg("dtype"), py::arg("seconds"),
          py::arg("threads") = 1,
          "Benchmark aid: the measured FMA peak in GFLOP/s of `threads` threads together.");
    m.def("_fma_peak_isa", &fma_peak_isa, "Benchmark aid: the FMA unit the peak loop uses.");
    m.def("forward", &run_forward<true>, py::arg("X"), py::arg("h0"), py::arg("params"),
          py::arg("hidden_size"), py::arg("output_size"), py::arg("bias"), py::arg("activation"),
          py::arg("return_sequences"), py::arg("cell") = "rnn", py::arg("num_layers") = 1,
          py::arg("lengths") = py::none(),
          "Run the recurrence; returns (outputs, hidden_states, final_state).");
    m.def("predict", &run_forward<false>, py::arg("X"), py::arg("h0"), py::arg("params"),
          py::arg("hidden_size"), py::arg("output_size"), py::arg("bias"), py::arg("activation"),
          py::arg("return_sequences"), py::arg("cell") = "rnn", py::arg("num_layers") = 1,
          py::arg("lengths") = py::none(),
          "forward's outputs and final_state, without the hidden states (a one-layer "
          "many-to-one network keeps two steps of them): returns (outputs, final_state).");
    m.def("backward", &backward, py::arg("X"), py::arg("Y"), py::arg("h0"), py::arg("params"),
          py::arg("hidden_states"), py::arg("outputs"), py::arg("hidden_size"),
          py::arg("output_size"), py::arg("bias"), py::arg("activation"),
          py::arg("bptt_truncate"), py::arg("cell") = "rnn", py::arg("num_layers") = 1,
          py::arg("lengths") = py::none(),
          "Loss and truncated gradient (flat, in the layout of params): returns (loss, grad).");
    m.def("forecast", &forecast, py::arg("X"), py::arg("h0"), py::arg("params"),
          py::arg("hidden_size"), py::arg("output_size"), py::arg("bias"), py::arg("activation"),
          py::arg("steps"), py::arg("cell") = "rnn", py::arg("num_layers") = 1,
          "Autoregressive rollout from the context X (I == O): returns forecasts (N, steps, O).");
    m.def("clip", &clip, py::arg("grad"), py::arg("clip_norm"), py::arg("clip_value"),
          "Clip grad in place (global norm, then value); returns the norm before clipping.");
    m.def("sgd_step", &sgd_step, py::arg("params"), py::arg("grad"), py::arg("momentum_buffer"),
          py::arg("lr"), py::arg("momentum"), py::arg("weight_decay"),
          "One torch.optim.SGD update of params, in place.");
    m.def("adam_step", &adam_step, py::arg("params"), py::arg("grad"), py::arg("exp_avg"),
          py::arg("exp_avg_sq"), py::arg("step"), py::arg("lr"), py::arg("beta1"),
          py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
          "One torch.optim.Adam update of params, in place (step counts this update).");
    m.def("train_epoch", &train_epoch, py::arg("X"), py::arg("Y"), py::arg("params"),
          py::arg("order"), py::arg("batch_size"), py::arg("hidden_size"),
          py::arg("output_size"), py::arg("bias"), py::arg("activation"),
          py::arg("bptt_truncate"), py::arg("clip_norm"), py::arg("clip_value"),
          py::arg("optimizer"), py::arg("lr"), py::arg("momentum"), py::arg("weight_decay"),
          py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("momentum_buffer"),
          py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("step"),
          py::arg("callback") = py::none(), py::arg("losses_out") = py::none(),
          py::arg("cell") = "rnn", py::arg("num_layers") = 1, py::arg("lengths") = py::none(),
          "One epoch of minibatch training in one call; returns (losses, step, status, error).");
    m.def("set_num_threads", &set_num_threads, py::arg("n"),
          "Use n threads (>= 1) in the C++ core; results do not depend on it.");
    m.def("get_num_threads", &rnnkit::num_threads, "The number of threads the C++ core uses.");
    m.def("_set_isa", &set_isa, py::arg("isa"),
          "Testing aid: run the products at 'baseline', 'avx2', 'avx512' or the 'best' level.");
    m.def("_isa", [] { return std::string(isa_name(rnnkit::current_isa_level())); },
          "The instruction-set level the products run at.");
    m.def("_set_plain_loops", &rnnkit::set_plain_loops, py::arg("plain"),
          "Testing aid: run the plain loops instead of the register-tiled ones.");
    m.def("_plain_loops", &rnnkit::plain_loops, "Whether the plain loops are in use.");
    m.def("_kept_scratch_bytes", [] { return rnnkit::kept_blocks().kept_bytes(); },
          "Test aid: the bytes of scratch kept for the next call (buffer.h).");
    m.def("set_scratch_cache_limit",
          [](size_t limit) { return rnnkit::kept_blocks().set_limit(limit); }, py::arg("limit"),
          "Sets the limit on the bytes of scratch kept for the next call (256 MiB; buffer.h), "
          "freeing kept blocks to meet it; returns the former limit.");
}
