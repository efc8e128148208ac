// The LSTM cell, PyTorch's equations and gate order (i, f, g, o). State [h, c];
// cache [h, c, i, f, g, o, f(c)]:
//   [ai, af, ag, ao] = U x + b_ih + W h_prev + b_hh
//   i = σ(ai), fg = σ(af), g = f(ag), o = σ(ao),  c = fg c_prev + i g,  h = o f(c)
#pragma once

#include <algorithm>

#include "cells.h"

namespace rnnkit {

struct LstmCell {
    static constexpr int gates = 4, state = 2, cache = 7;
    static constexpr bool two_biases = true, sums_projections = true, separate_dh = false;

    template <typename Real>
    static void forward_row(Real* cache, const Real*, Real* a, const Real* state_prev,
                            int64_t H, Activation act) {
        Real *h = cache, *c = h + H, *i = c + H, *fg = i + H, *g = fg + H, *o = g + H;
        Real* fc = o + H;
        const Real* c_prev = state_prev + H;
        std::copy(a, a + 4 * H, i);                // i, f, g, o: adjacent, in gate order
        activate(i, 2 * H, Activation::Sigmoid);   // i and f
        activate(g, H, act);
        activate(o, H, Activation::Sigmoid);
        for (int64_t j = 0; j < H; ++j) c[j] = fg[j] * c_prev[j] + i[j] * g[j];
        std::copy(c, c + H, fc);
        activate(fc, H, act);
        for (int64_t j = 0; j < H; ++j) h[j] = o[j] * fc[j];
    }

    template <typename Real>
    static void backward_row(Real* dx, Real*, Real* dstate_prev, const Real* dstate,
                             int64_t ds, const Real* cache, const Real* state_prev, int64_t H,
                             Activation act) {
        const Real *i = cache + 2 * H, *fg = i + H, *g = fg + H, *o = g + H, *fc = o + H;
        const Real* c_prev = state_prev + H;
        const Real *dh = dstate, *dc = dstate + ds;
        Real *dh_prev = dstate_prev, *dc_prev = dstate_prev + ds;
        with_activation(act, [&](auto a) {
            constexpr Activation A = decltype(a)::value;
            for (int64_t j = 0; j < H; ++j) {
                const Real dct = dc[j] + times_derivative<A>(dh[j] * o[j], fc[j]);
                dx[j] = dct * g[j] * (i[j] * (Real(1) - i[j]));
                dx[H + j] = dct * c_prev[j] * (fg[j] * (Real(1) - fg[j]));
                dx[2 * H + j] = times_derivative<A>(dct * i[j], g[j]);
                dx[3 * H + j] = dh[j] * fc[j] * (o[j] * (Real(1) - o[j]));
                dh_prev[j] = Real(0);              // h_prev reaches the step only through W
                dc_prev[j] = dct * fg[j];
            }
        });
    }
};

}  // namespace rnnkit
