// The Elman kernel pair: elman_forward / elman_backward (see rnnkit.h for the letters).
//
// Inner loops run over a contiguous output index with independent accumulators ("axpy" form:
// out[:] += column[:] * scalar), so the compiler vectorizes them without reassociating any
// sum: every element is accumulated in the same order as the plain mathematical definition.
// The matrix-vector products go through gemv_t_accumulate (gemv.cpp).
#include <algorithm>
#include <cmath>

#include "rnnkit.h"

namespace rnnkit {

int64_t param_count(int64_t I, int64_t H, int64_t O, bool bias) {
    return H * I + H * H + O * H + (bias ? H + O : 0);
}

template <typename Real>
ParamViews<Real> param_views(Real* flat, int64_t I, int64_t H, int64_t O, bool bias) {
    ParamViews<Real> p{};
    p.U = flat;
    p.W = p.U + H * I;
    p.b = bias ? p.W + H * H : nullptr;
    p.V = p.W + H * H + (bias ? H : 0);
    p.c = bias ? p.V + O * H : nullptr;
    return p;
}

int64_t forward_work_size(int64_t I, int64_t H) { return I * H + H * H; }

int64_t backward_work_size(int64_t N, int64_t T, int64_t H, int64_t O, bool return_sequences) {
    return 2 * N * H + N * (return_sequences ? T : 1) * O;
}

template <typename Real>
void zero_buffer(Real* buffer, int64_t n) {
    std::fill(buffer, buffer + n, Real(0));
}

namespace {

// h = f(a) in place over n elements. The sigmoid reads exp(-|a|), which never overflows.
template <typename Real>
void activate(Real* a, int64_t n, Activation act) {
    switch (act) {
        case Activation::Tanh:
            for (int64_t j = 0; j < n; ++j) a[j] = std::tanh(a[j]);
            break;
        case Activation::Sigmoid:
            for (int64_t j = 0; j < n; ++j) {
                const Real e = std::exp(-std::fabs(a[j]));
                a[j] = a[j] >= Real(0) ? Real(1) / (Real(1) + e) : e / (Real(1) + e);
            }
            break;
        case Activation::Relu:
            for (int64_t j = 0; j < n; ++j) a[j] = std::max(a[j], Real(0));
            break;
    }
}

// delta = dh * f'(a), with f'(a) written in terms of h = f(a).
template <typename Real>
void times_activation_derivative(Real* delta, const Real* dh, const Real* h, int64_t n,
                                 Activation act) {
    switch (act) {
        case Activation::Tanh:
            for (int64_t j = 0; j < n; ++j) delta[j] = dh[j] * (Real(1) - h[j] * h[j]);
            break;
        case Activation::Sigmoid:
            for (int64_t j = 0; j < n; ++j) delta[j] = dh[j] * (h[j] * (Real(1) - h[j]));
            break;
        case Activation::Relu:
            for (int64_t j = 0; j < n; ++j) delta[j] = dh[j] * Real(h[j] > Real(0));
            break;
    }
}

// out (rows, cols) = in (cols, rows) transposed.
template <typename Real>
void transpose(Real* out, const Real* in, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = in[c * rows + r];
}

// y (O,) = V h + c
template <typename Real>
void output_layer(Real* y, const Real* h, const Real* V, const Real* c, int64_t H, int64_t O) {
    for (int64_t o = 0; o < O; ++o) {
        Real acc = Real(0);
        const Real* v = V + o * H;
        for (int64_t j = 0; j < H; ++j) acc += v[j] * h[j];
        y[o] = c ? acc + c[o] : acc;
    }
}

// One backward step of one record: delta = dh * f'(a_s); dU += delta x_s^T,
// dW += delta h_{s-1}^T (nothing when h_{s-1} is the zero state, h_prev null), db += delta;
// then dh_prev = W^T delta unless dh_prev is null. dh_prev may be dh itself.
template <typename Real>
void backward_step(ParamViews<Real> g, Real* dh_prev, Real* delta, const Real* dh,
                   const Real* x, const Real* h, const Real* h_prev, const Real* W,
                   int64_t I, int64_t H, Activation act) {
    times_activation_derivative(delta, dh, h, H, act);
    for (int64_t r = 0; r < H; ++r) {
        const Real d = delta[r];
        Real* dU = g.U + r * I;
        for (int64_t i = 0; i < I; ++i) dU[i] += d * x[i];
    }
    if (h_prev) {
        for (int64_t r = 0; r < H; ++r) {
            const Real d = delta[r];
            Real* dW = g.W + r * H;
            for (int64_t j = 0; j < H; ++j) dW[j] += d * h_prev[j];
        }
    }
    if (g.b)
        for (int64_t r = 0; r < H; ++r) g.b[r] += delta[r];
    if (dh_prev) {
        zero_buffer(dh_prev, H);
        gemv_t_accumulate(dh_prev, W, delta, H, H);  // W^T delta
    }
}

// dh (H,) += V^T g (g is dL/dy_t, (O,))
template <typename Real>
void add_output_gradient(Real* dh, const Real* g, const Real* V, int64_t H, int64_t O) {
    gemv_t_accumulate(dh, V, g, O, H);
}

}  // namespace

template <typename Real>
void elman_forward(Real* hidden_states, Real* outputs, const Real* X, const Real* h0,
                   const Real* params, int64_t N, int64_t T, int64_t I, int64_t H, int64_t O,
                   bool bias, Activation act, bool return_sequences, Real* work) {
    const ParamViews<const Real> p = param_views(params, I, H, O, bias);
    Real* UT = work;          // (I, H) = U^T, so that a[:] += U^T[i, :] x_i runs unit-stride
    Real* WT = UT + I * H;    // (H, H) = W^T
    transpose(UT, p.U, I, H);
    transpose(WT, p.W, H, H);

    for (int64_t n = 0; n < N; ++n) {
        const Real* h_prev = h0 ? h0 + n * H : nullptr;
        for (int64_t t = 0; t < T; ++t) {
            Real* a = hidden_states + (n * T + t) * H;  // a_t, then h_t in place
            const Real* x = X + (n * T + t) * I;
            if (p.b)
                std::copy(p.b, p.b + H, a);
            else
                zero_buffer(a, H);
            gemv_t_accumulate(a, UT, x, I, H);                   // += U x_t
            if (h_prev) gemv_t_accumulate(a, WT, h_prev, H, H);  // += W h_{t-1}
            activate(a, H, act);
            if (return_sequences) output_layer(outputs + (n * T + t) * O, a, p.V, p.c, H, O);
            h_prev = a;
        }
        if (!return_sequences) output_layer(outputs + n * O, h_prev, p.V, p.c, H, O);
    }
}

template <typename Real>
double elman_backward(Real* grad, const Real* X, const Real* Y, const Real* h0,
                      const Real* params, const Real* hidden_states, const Real* outputs,
                      int64_t N, int64_t T, int64_t I, int64_t H, int64_t O, bool bias,
                      Activation act, bool return_sequences, int64_t k, Real* work) {
    const ParamViews<const Real> p = param_views(params, I, H, O, bias);
    const ParamViews<Real> g = param_views(grad, I, H, O, bias);
    const int64_t steps_with_target = return_sequences ? T : 1;
    const int64_t count = N * steps_with_target * O;
    Real* dh = work;                 // (N, H): gradient reaching h_s
    Real* delta = dh + N * H;        // (N, H): gradient reaching a_s
    Real* dy = delta + N * H;        // shaped like Y: dL/dy

    // loss and dL/dy = 2 (y - Y) / count
    double sum_sq = 0.0;
    const Real scale = Real(2.0 / double(count));
    for (int64_t e = 0; e < count; ++e) {
        const Real diff = outputs[e] - Y[e];
        sum_sq += double(diff * diff);
        dy[e] = scale * diff;
    }

    // h_t and dL/dy_t of record n at 0-based step t (t must be a target step)
    auto h_at = [&](int64_t n, int64_t t) { return hidden_states + (n * T + t) * H; };
    auto h_before = [&](int64_t n, int64_t t) -> const Real* {
        if (t > 0) return h_at(n, t - 1);
        return h0 ? h0 + n * H : nullptr;
    };
    auto dy_at = [&](int64_t n, int64_t t) {
        return return_sequences ? dy + (n * T + t) * O : dy + n * O;
    };
    auto x_at = [&](int64_t n, int64_t t) { return X + (n * T + t) * I; };

    // dV += g_t h_t^T, dc += g_t for every target step
    for (int64_t t = return_sequences ? 0 : T - 1; t < T; ++t) {
        for (int64_t n = 0; n < N; ++n) {
            const Real* gy = dy_at(n, t);
            const Real* h = h_at(n, t);
            for (int64_t o = 0; o < O; ++o) {
                Real* dV = g.V + o * H;
                for (int64_t j = 0; j < H; ++j) dV[j] += gy[o] * h[j];
            }
            if (g.c)
                for (int64_t o = 0; o < O; ++o) g.c[o] += gy[o];
        }
    }

    // One backward step of record n at step s, from dh (which it then replaces by
    // W^T delta when `propagate`, i.e. when an earlier step still receives gradient).
    auto step_back = [&](int64_t n, int64_t s, bool propagate) {
        Real* dhn = dh + n * H;
        backward_step(g, propagate ? dhn : nullptr, delta + n * H, dhn, x_at(n, s), h_at(n, s),
                      h_before(n, s), p.W, I, H, act);
    };

    if (k < 0 || k >= T - 1) {
        // Full BPTT: one sweep from the last step down, dh carrying every later term.
        zero_buffer(dh, N * H);
        for (int64_t s = T - 1; s >= 0; --s) {
            for (int64_t n = 0; n < N; ++n) {
                if (return_sequences || s == T - 1)
                    add_output_gradient(dh + n * H, dy_at(n, s), p.V, H, O);
                step_back(n, s, s > 0);
            }
        }
    } else {
        // Truncated: the term of each target step t walks back through t, t-1, .., t-k alone.
        for (int64_t t = return_sequences ? 0 : T - 1; t < T; ++t) {
            zero_buffer(dh, N * H);
            for (int64_t n = 0; n < N; ++n) add_output_gradient(dh + n * H, dy_at(n, t), p.V, H, O);
            const int64_t first = std::max<int64_t>(t - k, 0);
            for (int64_t s = t; s >= first; --s)
                for (int64_t n = 0; n < N; ++n) step_back(n, s, s > first);
        }
    }
    return sum_sq / double(count);
}

#define RNNKIT_INSTANTIATE(Real)                                                              \
    template ParamViews<Real> param_views(Real*, int64_t, int64_t, int64_t, bool);             \
    template ParamViews<const Real> param_views(const Real*, int64_t, int64_t, int64_t, bool); \
    template void zero_buffer(Real*, int64_t);                                                 \
    template void elman_forward(Real*, Real*, const Real*, const Real*, const Real*, int64_t,  \
                                int64_t, int64_t, int64_t, int64_t, bool, Activation, bool,    \
                                Real*);                                                        \
    template double elman_backward(Real*, const Real*, const Real*, const Real*, const Real*,  \
                                   const Real*, const Real*, int64_t, int64_t, int64_t,        \
                                   int64_t, int64_t, bool, Activation, bool, int64_t, Real*);
RNNKIT_INSTANTIATE(float)
RNNKIT_INSTANTIATE(double)
#undef RNNKIT_INSTANTIATE

}  // namespace rnnkit
