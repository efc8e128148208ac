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
#include <vector>

#include "rnnkit.h"

namespace py = pybind11;
using rnnkit::Activation;

namespace {

template <typename Real>
using CArray = py::array_t<Real, py::array::c_style | py::array::forcecast>;

template <typename Real>
const char* dtype_name() {
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

// `obj` as an array of Real with `shape` (-1: any size), made C-contiguous (a copy only if it
// was not). Wrong type, dtype, rank or size raise TypeError / ValueError naming `name`.
template <typename Real>
CArray<Real> input_array(const py::handle& obj, const char* name, std::vector<int64_t> shape) {
    if (!py::isinstance<py::array_t<Real>>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array of " + dtype_name<Real>() +
                             " (the dtype of params), got " + type_of(obj));
    auto arr = py::reinterpret_borrow<py::array>(obj);
    bool ok = arr.ndim() == py::ssize_t(shape.size());
    for (size_t d = 0; ok && d < shape.size(); ++d)
        ok = shape[d] < 0 || arr.shape(py::ssize_t(d)) == shape[d];
    if (!ok)
        throw py::value_error(std::string(name) + " must have shape " + shape_string(shape) +
                              ", got " + shape_of(arr));
    return CArray<Real>::ensure(arr);
}

// An array updated in place: it must already be C-contiguous, writeable and of dtype Real,
// since writing into a converted copy would lose the update.
template <typename Real>
py::array_t<Real> inout_array(const py::handle& obj, const char* name, int64_t size) {
    auto arr = input_array<Real>(obj, name, {size});
    if (!arr.is(obj) || !py::isinstance<py::array_t<Real, py::array::c_style>>(obj))
        throw py::value_error(std::string(name) + " is updated in place, so it must be a "
                              "C-contiguous array, got a non-contiguous one");
    if (!arr.writeable())
        throw py::value_error(std::string(name) + " is updated in place, so it must be "
                              "writeable, got a read-only array");
    return arr;
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

// The sizes of a batch: X is (N, T, I) with N, T >= 1; params must then be (P,).
struct Sizes {
    int64_t N, T, I, H, O, P;
};

template <typename Real>
Sizes batch_sizes(const CArray<Real>& X, int64_t hidden_size, int64_t output_size, bool bias) {
    Sizes s{X.shape(0), X.shape(1), X.shape(2), check_size(hidden_size, "hidden_size"),
            check_size(output_size, "output_size"), 0};
    if (s.N < 1 || s.T < 1 || s.I < 1)
        throw py::value_error("X must have shape (N, T, I) with N, T, I >= 1, got " +
                              shape_of(X));
    s.P = rnnkit::param_count(s.I, s.H, s.O, bias);
    return s;
}

template <typename Real>
std::vector<int64_t> y_shape(const Sizes& s, bool return_sequences) {
    return return_sequences ? std::vector<int64_t>{s.N, s.T, s.O} : std::vector<int64_t>{s.N, s.O};
}

// Calls fn.template operator()<Real>() for the dtype of `params` (float32 or float64).
template <typename Fn>
auto dispatch(const py::handle& params, Fn&& fn) {
    if (py::isinstance<py::array_t<double>>(params)) return fn(double{});
    if (py::isinstance<py::array_t<float>>(params)) return fn(float{});
    throw py::type_error("params must be a numpy array of float32 or float64, got " +
                         type_of(params));
}

// The FMA peak microbenchmark, for benchmarks/run.py (private).
double fma_peak_gflops(const std::string& dtype, double seconds, int threads) {
    if (dtype != "float32" && dtype != "float64")
        throw py::value_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
    if (!(seconds > 0 && seconds <= 60))
        throw py::value_error("seconds must be in (0, 60], got " + std::to_string(seconds));
    if (threads < 1)
        throw py::value_error("threads must be >= 1, got " + std::to_string(threads));
    py::gil_scoped_release release;  // safe: plain numbers in, no Python object touched
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

py::tuple forward(const py::object& X_, const py::object& h0_, const py::object& params_,
                  int64_t hidden_size, int64_t output_size, bool bias,
                  const std::string& activation, bool return_sequences) {
    return dispatch(params_, [&](auto zero) -> py::tuple {
        using Real = decltype(zero);
        const Activation act = parse_activation(activation);
        auto X = input_array<Real>(X_, "X", {-1, -1, -1});
        const Sizes s = batch_sizes(X, hidden_size, output_size, bias);
        auto params = input_array<Real>(params_, "params", {s.P});
        std::optional<CArray<Real>> h0;
        if (!h0_.is_none()) h0 = input_array<Real>(h0_, "h0", {s.N, s.H});
        py::array_t<Real> hidden_states({s.N, s.T, s.H});
        auto out_shape = y_shape<Real>(s, return_sequences);
        py::array_t<Real> outputs(std::vector<py::ssize_t>(out_shape.begin(), out_shape.end()));
        py::array_t<Real> final_state({s.N, s.H});
        std::vector<Real> work(size_t(rnnkit::forward_work_size(s.I, s.H)));
        Real* hs = hidden_states.mutable_data();
        Real* ys = outputs.mutable_data();
        Real* hT = final_state.mutable_data();
        const Real* x = X.data();
        const Real* h0p = h0 ? h0->data() : nullptr;
        const Real* p = params.data();
        {
            // Safe without the GIL: every array above is owned by this frame, converted and
            // checked; the kernel touches no Python object.
            py::gil_scoped_release release;
            rnnkit::elman_forward(hs, ys, x, h0p, p, s.N, s.T, s.I, s.H, s.O, bias, act,
                                  return_sequences, work.data());
            for (int64_t n = 0; n < s.N; ++n)
                std::copy(hs + (n * s.T + s.T - 1) * s.H, hs + (n * s.T + s.T) * s.H, hT + n * s.H);
        }
        return py::make_tuple(outputs, hidden_states, final_state);
    });
}

py::tuple backward(const py::object& X_, const py::object& Y_, const py::object& h0_,
                   const py::object& params_, const py::object& hidden_states_,
                   const py::object& outputs_, int64_t hidden_size, int64_t output_size,
                   bool bias, const std::string& activation,
                   std::optional<int64_t> bptt_truncate) {
    return dispatch(params_, [&](auto zero) -> py::tuple {
        using Real = decltype(zero);
        const Activation act = parse_activation(activation);
        const int64_t k = truncation(bptt_truncate);
        auto X = input_array<Real>(X_, "X", {-1, -1, -1});
        const Sizes s = batch_sizes(X, hidden_size, output_size, bias);
        auto params = input_array<Real>(params_, "params", {s.P});
        const bool return_sequences =
            py::isinstance<py::array>(Y_) && py::reinterpret_borrow<py::array>(Y_).ndim() == 3;
        auto Y = input_array<Real>(Y_, "Y", y_shape<Real>(s, return_sequences));
        auto hidden_states = input_array<Real>(hidden_states_, "hidden_states", {s.N, s.T, s.H});
        auto outputs = input_array<Real>(outputs_, "outputs", y_shape<Real>(s, return_sequences));
        std::optional<CArray<Real>> h0;
        if (!h0_.is_none()) h0 = input_array<Real>(h0_, "h0", {s.N, s.H});
        py::array_t<Real> grad(s.P);
        std::vector<Real> work(
            size_t(rnnkit::backward_work_size(s.N, s.T, s.H, s.O, return_sequences)));
        Real* g = grad.mutable_data();
        const Real *x = X.data(), *y = Y.data(), *p = params.data();
        const Real *hs = hidden_states.data(), *ys = outputs.data();
        const Real* h0p = h0 ? h0->data() : nullptr;
        double loss;
        {
            // Safe without the GIL: see forward.
            py::gil_scoped_release release;
            rnnkit::zero_buffer(g, s.P);
            loss = rnnkit::elman_backward(g, x, y, h0p, p, hs, ys, s.N, s.T, s.I, s.H, s.O, bias,
                                          act, return_sequences, k, work.data());
        }
        return py::make_tuple(loss, grad);
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
        py::gil_scoped_release release;  // safe: grad is checked and held by this frame
        const double norm = rnnkit::gradient_norm(g, P);
        rnnkit::clip_gradient(g, P, norm, clip_norm, clip_value);
        return norm;
    });
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
        Real* p = params.mutable_data();
        Real* buf = buffer ? buffer->mutable_data() : nullptr;
        const Real* g = grad.data();
        py::gil_scoped_release release;  // safe: every array is checked and held by this frame
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
        Real *p = params.mutable_data(), *m = exp_avg.mutable_data();
        Real* v = exp_avg_sq.mutable_data();
        const Real* g = grad.data();
        py::gil_scoped_release release;  // safe: every array is checked and held by this frame
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
                      const py::object& callback) {
    const Activation act = parse_activation(activation);
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
        const Sizes s = batch_sizes(X, hidden_size, output_size, bias);
        const bool return_sequences =
            py::isinstance<py::array>(Y_) && py::reinterpret_borrow<py::array>(Y_).ndim() == 3;
        auto Y = input_array<Real>(Y_, "Y", y_shape<Real>(s, return_sequences));
        auto params = inout_array<Real>(params_, "params", s.P);
        if (!py::isinstance<py::array_t<int64_t>>(order_))
            throw py::type_error("order must be a numpy array of int64, got " + type_of(order_));
        auto order = CArray<int64_t>::ensure(order_);
        if (order.ndim() != 1)
            throw py::value_error("order must have shape (n,), got " + shape_of(order));
        const int64_t n_order = order.shape(0);
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
        py::array_t<double> losses((n_order + batch_size - 1) / batch_size);
        double* l = losses.mutable_data();
        Real* p = params.mutable_data();
        Real* buf = buffer ? buffer->mutable_data() : nullptr;
        Real* mp = m ? m->mutable_data() : nullptr;
        Real* vp = v ? v->mutable_data() : nullptr;
        const Real *x = X.data(), *y = Y.data();
        // After the first minibatch and then at most every 50 ms, the loop takes the GIL back
        // to honour signals (Ctrl-C) and to call `callback(batches_done)`; an exception from
        // either, or a False from the callback, ends the epoch after the last completed update.
        py::object error = py::none();
        std::chrono::steady_clock::time_point last{};  // long ago: the first batch calls back
        auto keep_going = [&](int64_t done) -> bool {
            const auto now = std::chrono::steady_clock::now();
            if (now - last < std::chrono::milliseconds(50)) return true;
            last = now;
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
            py::gil_scoped_release release;
            result = rnnkit::train_epoch(l, p, buf, mp, vp, x, y, ord, n_order, batch_size, s.N,
                                         s.T, s.I, s.H, s.O, bias, act, return_sequences, k,
                                         clip_norm, clip_value, config, step, keep_going);
        }
        py::object done_losses = losses[py::slice(0, py::ssize_t(result.batches_done), 1)];
        const char* status = result.status == rnnkit::EpochStatus::Completed ? "completed"
                             : result.status == rnnkit::EpochStatus::NonFinite ? "nonfinite"
                                                                               : "stopped";
        return py::make_tuple(done_losses, result.step, status, error);
    });
}

void set_kernel_variant(const std::string& name) {
    if (name == "plain")
        rnnkit::set_kernel_variant(rnnkit::KernelVariant::Plain);
    else if (name == "blocked")
        rnnkit::set_kernel_variant(rnnkit::KernelVariant::Blocked);
    else
        throw py::value_error("variant must be 'plain' or 'blocked', got '" + name + "'");
}

std::string kernel_variant() {
    return rnnkit::kernel_variant() == rnnkit::KernelVariant::Plain ? "plain" : "blocked";
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "rnnkit's C++ core: the functions of rnnkit.reference, compiled (private API).";
    m.def("_fma_peak_gflops", &fma_peak_gflops, py::arg("dtype"), py::arg("seconds"),
          py::arg("threads") = 1,
          "Benchmark aid: the measured FMA peak in GFLOP/s of `threads` threads together.");
    m.def("_fma_peak_isa", &fma_peak_isa, "Benchmark aid: the FMA unit the peak loop uses.");
    m.def("forward", &forward, py::arg("X"), py::arg("h0"), py::arg("params"),
          py::arg("hidden_size"), py::arg("output_size"), py::arg("bias"), py::arg("activation"),
          py::arg("return_sequences"),
          "Run the recurrence; returns (outputs, hidden_states, final_state).");
    m.def("backward", &backward, py::arg("X"), py::arg("Y"), py::arg("h0"), py::arg("params"),
          py::arg("hidden_states"), py::arg("outputs"), py::arg("hidden_size"),
          py::arg("output_size"), py::arg("bias"), py::arg("activation"),
          py::arg("bptt_truncate"),
          "Loss and truncated gradient (flat, in the layout of params): returns (loss, grad).");
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
          py::arg("callback") = py::none(),
          "One epoch of minibatch training in one call; returns (losses, step, status, error).");
    m.def("_set_kernel_variant", &set_kernel_variant, py::arg("variant"),
          "Testing aid: run the 'plain' or the 'blocked' (default) matrix-vector loops.");
    m.def("_kernel_variant", &kernel_variant, "The matrix-vector loops in use.");
}
