// The Elman kernel pair: elman_forward / elman_backward (see rnnkit.h for the letters).
//
// The products run through gemm_accumulate (gemm.cpp), batched where the recurrence allows:
// the input projection of every step at once, then one product per step for all records; the
// weight gradients as one product over all steps and records once the deltas are known (record
// by record when truncation leaves the early steps without gradient).
// Records are split across threads in the forward pass and the backward sweep, rows of the
// weight gradients in their accumulation, so that every output element is computed on one
// thread in a fixed order: results do not depend on the thread count.
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

template <typename Real>
void zero_buffer(Real* buffer, int64_t n) {
    std::fill(buffer, buffer + n, Real(0));
}

namespace {

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
            // 1 unless h <= 0, as torch: a NaN state passes its NaN on
            for (int64_t j = 0; j < n; ++j) delta[j] = dh[j] * Real(!(h[j] <= Real(0)));
            break;
    }
}

// out (rows, cols) = in (cols, rows) transposed, with row strides ld_out and ld_in.
template <typename Real>
void transpose(Real* out, int64_t ld_out, const Real* in, int64_t ld_in, int64_t rows,
               int64_t cols) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) out[r * ld_out + c] = in[c * ld_in + r];
}

// Each row n of `rows` rows (row stride ld) set to the vector v (cols,), or to zero if v is null.
template <typename Real>
void fill_rows(Real* out, int64_t ld, const Real* v, int64_t rows, int64_t cols) {
    for (int64_t n = 0; n < rows; ++n) {
        if (v)
            std::copy(v, v + cols, out + n * ld);
        else
            zero_buffer(out + n * ld, cols);
    }
}

// Multiply-adds a thread must have to be worth starting (about ten microseconds of work).
constexpr int64_t kMinWorkPerThread = int64_t(1) << 16;

// Records need enough work to be worth a thread of their own.
int64_t min_rows_per_thread(int64_t T, int64_t H) {
    return std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, T * H * H));
}

}  // namespace

// H rounded up to whole 64-byte vectors of Real: the row length of the padded weight copies and
// accumulators, so that each row is one pass of whole, aligned vectors.
template <typename Real>
int64_t padded(int64_t H) {
    constexpr int64_t lanes = 64 / int64_t(sizeof(Real));
    return (H + lanes - 1) / lanes * lanes;
}

// sizes for the widest padding (16 lanes, float)
int64_t forward_work_size(int64_t N, int64_t I, int64_t H, int64_t O) {
    return I * H + H * padded<float>(H) + H * O + N * padded<float>(H);
}

int64_t backward_work_size(int64_t N, int64_t T, int64_t I, int64_t H, int64_t O,
                           bool return_sequences) {
    return N * (return_sequences ? T : 1) * O + N * padded<float>(H) + N * H +
           H * padded<float>(H) + 2 * N * T * H + N * T * I;
}

template <typename Real>
void elman_forward(Real* hidden_states, Real* outputs, const Real* X, const Real* h0,
                   const Real* params, int64_t N, int64_t T, int64_t I, int64_t H, int64_t O,
                   bool bias, Activation act, bool return_sequences, Real* work) {
    const ParamViews<const Real> p = param_views(params, I, H, O, bias);
    const int64_t Hp = padded<Real>(H);
    Real* UT = work;          // (I, H) = U^T: a_t (rows, H) += x_t (rows, I) U^T
    Real* WT = UT + I * H;    // (H, Hp) = W^T, zero-padded: a_t (rows, H) += h_{t-1} (rows, H) W^T
    Real* VT = WT + H * Hp;   // (H, O) = V^T: y_t (rows, O) = h_t (rows, H) V^T + c
    Real* acc = VT + H * O;   // (N, Hp): a_t of each record, padded, while W h_{t-1} is added
    transpose(UT, H, p.U, I, I, H);
    transpose(WT, Hp, p.W, H, H, H);
    for (int64_t r = 0; r < H; ++r) zero_buffer(WT + r * Hp + H, Hp - H);
    transpose(VT, O, p.V, H, H, O);
    const int64_t ld = T * H;  // from one record's h_t to the next record's

    // Records are independent: each thread runs its own rows through every step.
    parallel_for(N, min_rows_per_thread(T, H), [&](int64_t n0, int64_t n1) {
        const int64_t rows = n1 - n0;
        Real* hs = hidden_states + n0 * ld;      // (rows, T, H)
        // the input projection of every step at once: a = b + U x_t for all t
        for (int64_t n = 0; n < rows; ++n) {
            fill_rows(hs + n * ld, H, p.b, T, H);
            gemm_accumulate(hs + n * ld, H, X + (n0 + n) * T * I, I, UT, H, T, H, I);
        }
        Real* acc_r = acc + n0 * Hp;             // (rows, Hp)
        fill_rows(acc_r, Hp, static_cast<const Real*>(nullptr), rows, Hp);
        for (int64_t t = 0; t < T; ++t) {
            Real* a = hs + t * H;                 // a_t of the first row; rows are ld apart
            const Real* h_prev = t > 0 ? a - H : (h0 ? h0 + n0 * H : nullptr);
            const int64_t ld_prev = t > 0 ? ld : H;
            if (h_prev) {                         // one pass of whole vectors over each row
                for (int64_t n = 0; n < rows; ++n)
                    std::copy(a + n * ld, a + n * ld + H, acc_r + n * Hp);
                gemm_accumulate(acc_r, Hp, h_prev, ld_prev, WT, Hp, rows, Hp, H);
                // every row's activation in one call (the padding columns are never read)
                activate(acc_r, rows * Hp, act);
                for (int64_t n = 0; n < rows; ++n)
                    std::copy(acc_r + n * Hp, acc_r + n * Hp + H, a + n * ld);
            } else {
                for (int64_t n = 0; n < rows; ++n) activate(a + n * ld, H, act);
            }
        }
        if (return_sequences) {
            for (int64_t n = 0; n < rows; ++n) {
                Real* y = outputs + (n0 + n) * T * O;
                fill_rows(y, O, p.c, T, O);
                gemm_accumulate(y, O, hs + n * ld, H, VT, O, T, O, H);
            }
        } else {
            Real* y = outputs + n0 * O;
            fill_rows(y, O, p.c, rows, O);
            gemm_accumulate(y, O, hs + (T - 1) * H, ld, VT, O, rows, O, H);
        }
    });
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
    const int64_t ld = T * H;
    const bool full = k < 0 || k >= T - 1;
    Real* dy = work;                   // shaped like Y: dL/dy
    const int64_t Hp = padded<Real>(H);
    Real* dh = dy + count;             // (N, Hp): gradient reaching h_s, zero-padded
    Real* delta = dh + N * Hp;         // (N, H): one loss term's gradient reaching a_s
    Real* Wp = delta + N * H;          // (H, Hp): W, zero-padded: dh (rows, Hp) = delta W
    Real* Delta = Wp + H * Hp;         // (N, T, H): every term's gradient reaching a_s, summed
    // the steps that receive gradient: [first_step, T); the pairs (record n, step s) of them,
    // n-major, are the columns q = n * steps + s - first_step of the packed buffers below
    const int64_t first_step = full || return_sequences ? 0 : std::max<int64_t>(T - 1 - k, 0);
    const int64_t steps = T - first_step;
    const int64_t NS = N * steps;
    Real* Hprev = Delta + N * T * H;   // (NS, H): row q = h_{s-1} of record n (h0, or zero)
    Real* Xs = Hprev + NS * H;         // (NS, I): row q = x_s of record n

    // loss and dL/dy = 2 (y - Y) / count
    double sum_sq = 0.0;
    const Real scale = Real(2.0 / double(count));
    for (int64_t e = 0; e < count; ++e) {
        const Real diff = outputs[e] - Y[e];
        sum_sq += double(diff * diff);
        dy[e] = scale * diff;
    }
    const int64_t ld_dy = return_sequences ? T * O : O;   // from one record's dy_t to the next
    auto dy_at = [&](int64_t n, int64_t t) {
        return return_sequences ? dy + (n * T + t) * O : dy + n * O;
    };

    // dV += g_t h_t^T, dc += g_t for every target step
    for (int64_t t = return_sequences ? 0 : T - 1; t < T; ++t) {
        for (int64_t n = 0; n < N; ++n) {
            const Real* gy = dy_at(n, t);
            const Real* h = hidden_states + n * ld + t * H;
            for (int64_t o = 0; o < O; ++o) {
                Real* dV = g.V + o * H;
                for (int64_t j = 0; j < H; ++j) dV[j] += gy[o] * h[j];
            }
            if (g.c)
                for (int64_t o = 0; o < O; ++o) g.c[o] += gy[o];
        }
    }

    for (int64_t r = 0; r < H; ++r) {
        std::copy(p.W + r * H, p.W + (r + 1) * H, Wp + r * Hp);
        zero_buffer(Wp + r * Hp + H, Hp - H);
    }

    // Phase 1, records independent: walk back through time, collecting in Delta[n, s] the
    // gradient that reaches a_s from every loss term, then pack h_{s-1} and x_s for phase 2.
    parallel_for(N, min_rows_per_thread(T, H), [&](int64_t n0, int64_t n1) {
        const int64_t rows = n1 - n0;
        Real* dh_r = dh + n0 * Hp;
        Real* delta_r = delta + n0 * H;
        Real* Delta_r = Delta + n0 * ld;
        const Real* hs_r = hidden_states + n0 * ld;
        // dst (rows, H, stride ld_dst) = dh_r * f'(a_s)
        auto times_derivative = [&](Real* dst, int64_t ld_dst, int64_t s) {
            for (int64_t n = 0; n < rows; ++n)
                times_activation_derivative(dst + n * ld_dst, dh_r + n * Hp,
                                            hs_r + n * ld + s * H, H, act);
        };
        if (full) {
            // one sweep from the last step down, dh carrying every later term
            zero_buffer(dh_r, rows * Hp);
            for (int64_t s = T - 1; s >= 0; --s) {
                if (return_sequences || s == T - 1)
                    gemm_accumulate(dh_r, Hp, dy_at(n0, s), ld_dy, p.V, H, rows, H, O);
                times_derivative(Delta_r + s * H, ld, s);
                if (s > 0) {
                    zero_buffer(dh_r, rows * Hp);
                    gemm_accumulate(dh_r, Hp, Delta_r + s * H, ld, Wp, Hp, rows, Hp, H);
                }
            }
        } else {
            // truncated: the term of each target step t walks back through t, .., t-k alone
            for (int64_t s = first_step; s < T; ++s) fill_rows(Delta_r + s * H, ld, static_cast<const Real*>(nullptr), rows, H);
            for (int64_t t = return_sequences ? 0 : T - 1; t < T; ++t) {
                zero_buffer(dh_r, rows * Hp);
                gemm_accumulate(dh_r, Hp, dy_at(n0, t), ld_dy, p.V, H, rows, H, O);
                const int64_t first = std::max<int64_t>(t - k, 0);
                for (int64_t s = t; s >= first; --s) {
                    times_derivative(delta_r, H, s);
                    for (int64_t n = 0; n < rows; ++n) {
                        Real* D = Delta_r + n * ld + s * H;
                        const Real* d = delta_r + n * H;
                        for (int64_t j = 0; j < H; ++j) D[j] += d[j];
                    }
                    if (s > first) {
                        zero_buffer(dh_r, rows * Hp);
                        gemm_accumulate(dh_r, Hp, delta_r, H, Wp, Hp, rows, Hp, H);
                    }
                }
            }
        }
        // pack this thread's records for phase 2
        for (int64_t n = n0; n < n1; ++n) {
            const int64_t q0 = n * steps;
            for (int64_t s = first_step; s < T; ++s) {
                Real* row = Hprev + (q0 + s - first_step) * H;
                const Real* h_prev = s > 0 ? hidden_states + n * ld + (s - 1) * H
                                           : (h0 ? h0 + n * H : nullptr);
                if (h_prev)
                    std::copy(h_prev, h_prev + H, row);
                else
                    zero_buffer(row, H);
            }
            std::copy(X + (n * T + first_step) * I, X + (n * T + T) * I, Xs + q0 * I);
        }
    });

    // Phase 2, rows of the weight gradients independent, each one product over every
    // (record, step) pair q: dW += Delta^T h_{s-1}, dU += Delta^T x_s, db += Delta summed.
    // Delta's rows q are contiguous when every step receives gradient; otherwise record by
    // record (the same sums in the same order).
    const int64_t work_per_row = std::max<int64_t>(1, NS * (H + I));
    parallel_for(H, std::max<int64_t>(8, kMinWorkPerThread / work_per_row),
                 [&](int64_t r0, int64_t r1) {
        const int64_t rows = r1 - r0;
        const int64_t blocks = first_step == 0 ? 1 : N;            // runs of contiguous rows q
        const int64_t run = NS / blocks;
        for (int64_t block = 0; block < blocks; ++block) {
            const Real* D = Delta + (block * T + first_step) * H + r0;  // (run, rows), ld H
            const int64_t q0 = block * run;
            gemm_accumulate_at(g.W + r0 * H, H, D, H, Hprev + q0 * H, H, rows, H, run);
            gemm_accumulate_at(g.U + r0 * I, I, D, H, Xs + q0 * I, I, rows, I, run);
            if (g.b)
                for (int64_t q = 0; q < run; ++q)
                    for (int64_t r = 0; r < rows; ++r) g.b[r0 + r] += D[q * H + r];
        }
    });
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
