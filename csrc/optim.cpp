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

// Eight partial sums, element i into sum i % 8, added in a fixed order at the end: the loop
// vectorizes without reassociation, and the result does not depend on anything but grad.
template <typename Real>
RNNKIT_LOOP double norm_loop(const Real* grad, int64_t P) {
    double partial[8] = {};
    int64_t i = 0;
    for (; i + 8 <= P; i += 8)
        for (int l = 0; l < 8; ++l) partial[l] += double(grad[i + l]) * double(grad[i + l]);
    for (int l = 0; i < P; ++i, ++l) partial[l] += double(grad[i]) * double(grad[i]);
    double sum_sq = 0.0;
    for (double s : partial) sum_sq += s;
    return std::sqrt(sum_sq);
}

template <typename Real>
RNNKIT_LOOP void scale_loop(Real* grad, int64_t P, Real scale) {
    for (int64_t i = 0; i < P; ++i) grad[i] *= scale;
}

template <typename Real>
RNNKIT_LOOP void clamp_loop(Real* grad, int64_t P, Real lo, Real hi) {
    for (int64_t i = 0; i < P; ++i)   // NaN stays NaN
        grad[i] = grad[i] < lo ? lo : (grad[i] > hi ? hi : grad[i]);
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
        return norm_loop(grad, P);                                                             \
    }                                                                                          \
    template <typename Real>                                                                   \
    attributes void name##_scale(Real* grad, int64_t P, Real scale) {                          \
        scale_loop(grad, P, scale);                                                            \
    }                                                                                          \
    template <typename Real>                                                                   \
    attributes void name##_clamp(Real* grad, int64_t P, Real lo, Real hi) {                    \
        clamp_loop(grad, P, lo, hi);                                                           \
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

RNNKIT_OPTIM_LEVEL(baseline, )
#if RNNKIT_X86
RNNKIT_OPTIM_LEVEL(avx2, __attribute__((target("avx2"))))
RNNKIT_OPTIM_LEVEL(avx512, __attribute__((target("avx512f"))))
#endif

}  // namespace

template <typename Real>
double gradient_norm(const Real* grad, int64_t P) {
    RNNKIT_AT_LEVEL(norm, grad, P)
}

template <typename Real>
void clip_gradient(Real* grad, int64_t P, double norm, std::optional<double> clip_norm,
                   std::optional<double> clip_value) {
    if (clip_norm) {
        const double coef = *clip_norm / (norm + 1e-6);
        const Real scale = Real(coef < 1.0 || std::isnan(coef) ? coef : 1.0);  // NaN stays
        [&] { RNNKIT_AT_LEVEL(scale, grad, P, scale) }();
    }
    if (clip_value) {
        const Real hi = Real(*clip_value), lo = -hi;
        [&] { RNNKIT_AT_LEVEL(clamp, grad, P, lo, hi) }();
    }
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
    template double gradient_norm(const Real*, int64_t);                                     \
    template void clip_gradient(Real*, int64_t, double, std::optional<double>,               \
                                std::optional<double>);                                      \
    template void sgd_step(Real*, Real*, const Real*, int64_t, double, double, double);      \
    template void adam_step(Real*, Real*, Real*, const Real*, int64_t, int64_t, double,      \
                            double, double, double, double);
RNNKIT_INSTANTIATE(float)
RNNKIT_INSTANTIATE(double)
#undef RNNKIT_INSTANTIATE

}  // namespace rnnkit
