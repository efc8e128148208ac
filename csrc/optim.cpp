// Gradient clipping and the optimizers, each one pass over the flat buffers (see rnnkit.h).
// Hyperparameters arrive as double and are rounded to Real once, as NumPy does with a Python
// float against a Real array, so the reference and these loops compute the same values.
//
// Each loop is compiled for AVX-512, AVX2 and baseline x86-64 and runs at the level gemm.cpp
// runs at (a minibatch of one record spends a tenth of its time here otherwise). They are
// elementwise, or sum in a fixed order, and this file is compiled without FMA contraction, so
// every level computes the same bits.
#include <algorithm>
#include <cmath>

#include "levels.h"
#include "rnnkit.h"

namespace rnnkit {

namespace {

#define RNNKIT_LOOP __attribute__((always_inline)) inline

// The L2 norm of grad as it comes in, in 32 partial sums (element i into sum i % 32, added in a
// fixed order at the end: four vectors of them at AVX-512, so that the additions are not one
// chain, without reassociating anything); with Clamp, each element is then clamped to [lo, hi]
// into `clamped` (grad itself) in the same pass (NaN stays NaN). The result depends on nothing
// but grad.
template <bool Clamp, typename Real>
RNNKIT_LOOP double norm_loop(const Real* grad, Real* clamped, int64_t P, Real lo, Real hi) {
    constexpr int kPartials = 32;
    double partial[kPartials] = {};
    const auto visit = [&](int64_t i, int l) __attribute__((always_inline)) {
        const Real g = grad[i];
        partial[l] += double(g) * double(g);
        if constexpr (Clamp) clamped[i] = g < lo ? lo : (g > hi ? hi : g);
    };
    int64_t i0 = 0;
    for (; i0 + kPartials <= P; i0 += kPartials)   // whole blocks: a fixed count, vectorized
        for (int l = 0; l < kPartials; ++l) visit(i0 + l, l);
    for (int l = 0; i0 + l < P; ++l) visit(i0 + l, l);
    double sum_sq = 0.0;
    for (double s : partial) sum_sq += s;
    return std::sqrt(sum_sq);
}

template <typename Real>
RNNKIT_LOOP void scale_loop(Real* grad, int64_t P, Real scale) {
    for (int64_t i = 0; i < P; ++i) grad[i] *= scale;
}

template <typename Real>
RNNKIT_LOOP void sgd_loop(Real* params, Real* momentum_buffer, const Real* grad, int64_t P,
                          double lr, double momentum, double weight_decay) {
    const Real rate = Real(lr), wd = Real(weight_decay), mu = Real(momentum);
    const bool decay = weight_decay != 0.0;
    for (int64_t i = 0; i < P; ++i) {
        Real d = decay ? grad[i] + wd * params[i] : grad[i];
        if (momentum != 0.0) {
            momentum_buffer[i] = momentum_buffer[i] * mu + d;
            d = momentum_buffer[i];
        }
        params[i] -= rate * d;
    }
}

template <typename Real>
RNNKIT_LOOP void adam_loop(Real* params, Real* exp_avg, Real* exp_avg_sq, const Real* grad,
                           int64_t P, int64_t step, double lr, double beta1, double beta2,
                           double eps, double weight_decay) {
    const double s = double(step);
    const Real one_minus_beta1 = Real(1.0 - beta1), b2 = Real(beta2);
    const bool lerp_from_start = 1.0 - beta1 < 0.5;
    const Real beta1_again = Real(1.0 - (1.0 - beta1));
    const Real one_minus_beta2 = Real(1.0 - beta2);
    const Real step_size = Real(lr / (1.0 - std::pow(beta1, s)));
    const Real bias_correction2_sqrt = Real(std::sqrt(1.0 - std::pow(beta2, s)));
    const Real epsilon = Real(eps), wd = Real(weight_decay);
    const bool decay = weight_decay != 0.0;
    for (int64_t i = 0; i < P; ++i) {
        const Real g = decay ? grad[i] + wd * params[i] : grad[i];
        if (lerp_from_start)   // torch.lerp's two forms
            exp_avg[i] += one_minus_beta1 * (g - exp_avg[i]);
        else
            exp_avg[i] = g - (g - exp_avg[i]) * beta1_again;
        exp_avg_sq[i] = exp_avg_sq[i] * b2 + one_minus_beta2 * (g * g);
        const Real denom = std::sqrt(exp_avg_sq[i]) / bias_correction2_sqrt + epsilon;
        params[i] -= step_size * (exp_avg[i] / denom);
    }
}

// The compilations of each loop, one per level.
#define RNNKIT_OPTIM_LEVEL(name, attributes)                                                     \
    template <typename Real>                                                                   \
    attributes double name##_norm(const Real* grad, int64_t P) {                               \
        return norm_loop<false>(grad, static_cast<Real*>(nullptr), P, Real(0), Real(0));      \
    }                                                                                          \
    template <typename Real>                                                                   \
    attributes double name##_norm_clamp(Real* grad, int64_t P, Real lo, Real hi) {             \
        return norm_loop<true>(grad, grad, P, lo, hi);                                         \
    }                                                                                          \
    template <typename Real>                                                                   \
    attributes void name##_scale(Real* grad, int64_t P, Real scale) {                          \
        scale_loop(grad, P, scale);                                                            \
    }                                                                                          \
    template <typename Real>                                                                   \
    attributes void name##_sgd(Real* params, Real* momentum_buffer, const Real* grad,          \
                               int64_t P, double lr, double momentum, double weight_decay) {   \
        sgd_loop(params, momentum_buffer, grad, P, lr, momentum, weight_decay);                \
    }                                                                                          \
    template <typename Real>                                                                   \
    attributes void name##_adam(Real* params, Real* exp_avg, Real* exp_avg_sq,                 \
                                const Real* grad, int64_t P, int64_t step, double lr,          \
                                double beta1, double beta2, double eps, double weight_decay) { \
        adam_loop(params, exp_avg, exp_avg_sq, grad, P, step, lr, beta1, beta2, eps,           \
                  weight_decay);                                                               \
    }

RNNKIT_AT_EVERY_LEVEL(RNNKIT_OPTIM_LEVEL)

}  // namespace

template <typename Real>
double clip_gradient(Real* grad, int64_t P, std::optional<double> clip_norm,
                     std::optional<double> clip_value) {
    const Real hi = Real(clip_value ? *clip_value : 0.0), lo = -hi;
    // without clip_norm, clamping needs no norm: both in one pass
    if (clip_value && !clip_norm) RNNKIT_AT_LEVEL(norm_clamp, grad, P, lo, hi)
    const double norm = [&] { RNNKIT_AT_LEVEL(norm, grad, P) }();
    if (clip_norm) {
        const double coef = *clip_norm / (norm + 1e-6);
        const Real scale = Real(coef < 1.0 || std::isnan(coef) ? coef : 1.0);  // NaN stays
        [&] { RNNKIT_AT_LEVEL(scale, grad, P, scale) }();
    }
    if (clip_value) [&] { RNNKIT_AT_LEVEL(norm_clamp, grad, P, lo, hi) }();
    return norm;
}

template <typename Real>
void sgd_step(Real* params, Real* momentum_buffer, const Real* grad, int64_t P, double lr,
              double momentum, double weight_decay) {
    RNNKIT_AT_LEVEL(sgd, params, momentum_buffer, grad, P, lr, momentum, weight_decay)
}

template <typename Real>
void adam_step(Real* params, Real* exp_avg, Real* exp_avg_sq, const Real* grad, int64_t P,
               int64_t step, double lr, double beta1, double beta2, double eps,
               double weight_decay) {
    RNNKIT_AT_LEVEL(adam, params, exp_avg, exp_avg_sq, grad, P, step, lr, beta1, beta2, eps,
                    weight_decay)
}

#define RNNKIT_INSTANTIATE(Real)                                                            \
    template double clip_gradient(Real*, int64_t, std::optional<double>,                     \
                                  std::optional<double>);                                    \
    template void sgd_step(Real*, Real*, const Real*, int64_t, double, double, double);      \
    template void adam_step(Real*, Real*, Real*, const Real*, int64_t, int64_t, double,      \
                            double, double, double, double);
RNNKIT_INSTANTIATE(float)
RNNKIT_INSTANTIATE(double)
#undef RNNKIT_INSTANTIATE

}  // namespace rnnkit
