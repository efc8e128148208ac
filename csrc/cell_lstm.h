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
    static constexpr bool state_only_via_W = false;

    template <typename Real>
    static void forward_row(Real* RNNKIT_RESTRICT cache, const Real*, Real* RNNKIT_RESTRICT a,
                            const Real* RNNKIT_RESTRICT state_prev, int64_t H, Activation act) {
        Real *RNNKIT_RESTRICT h = cache, *RNNKIT_RESTRICT c = h + H, *RNNKIT_RESTRICT i = c + H;
        Real *RNNKIT_RESTRICT fg = i + H, *RNNKIT_RESTRICT g = fg + H, *RNNKIT_RESTRICT o = g + H;
        Real* RNNKIT_RESTRICT fc = o + H;
        const Real* RNNKIT_RESTRICT c_prev = state_prev + H;
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
        with_activation(act, [&](auto a) {
            backward_lanes<decltype(a)::value>(dx, dx + H, dx + 2 * H, dx + 3 * H, dstate_prev,
                                               dstate_prev + ds, dstate, dstate + ds,
                                               cache + 2 * H, cache + 3 * H, cache + 4 * H,
                                               cache + 5 * H, cache + 6 * H, state_prev + H, H);
        });
    }

    // backward_row's loop, one restrict pointer per gate block so that it vectorizes
    template <Activation A, typename Real>
    static void backward_lanes(Real* RNNKIT_RESTRICT di, Real* RNNKIT_RESTRICT df,
                               Real* RNNKIT_RESTRICT dg, Real* RNNKIT_RESTRICT d_o,
                               Real* RNNKIT_RESTRICT dh_prev, Real* RNNKIT_RESTRICT dc_prev,
                               const Real* RNNKIT_RESTRICT dh, const Real* RNNKIT_RESTRICT dc,
                               const Real* RNNKIT_RESTRICT i, const Real* RNNKIT_RESTRICT fg,
                               const Real* RNNKIT_RESTRICT g, const Real* RNNKIT_RESTRICT o,
                               const Real* RNNKIT_RESTRICT fc,
                               const Real* RNNKIT_RESTRICT c_prev, int64_t H) {
        for (int64_t j = 0; j < H; ++j) {
            const Real dct = dc[j] + times_derivative<A>(dh[j] * o[j], fc[j]);
            di[j] = dct * g[j] * (i[j] * (Real(1) - i[j]));
            df[j] = dct * c_prev[j] * (fg[j] * (Real(1) - fg[j]));
            dg[j] = times_derivative<A>(dct * i[j], g[j]);
            d_o[j] = dh[j] * fc[j] * (o[j] * (Real(1) - o[j]));
            dh_prev[j] = Real(0);                  // h_prev reaches the step only through W
            dc_prev[j] = dct * fg[j];
        }
    }
};

}  // namespace rnnkit
