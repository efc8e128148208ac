// The Elman cell (DESIGN.md §1): a = U x + b + W h_prev, h = f(a). Cache [h].
#pragma once

#include <algorithm>

#include "cells.h"

namespace rnnkit {

struct RnnCell {
    static constexpr int gates = 1, state = 1, cache = 1;
    static constexpr bool two_biases = false, sums_projections = true, separate_dh = false;

    template <typename Real>
    static void forward_row(Real* cache, const Real*, Real* a, const Real*, int64_t H,
                            Activation act) {
        activate(a, H, act);                       // h = f(a)
        std::copy(a, a + H, cache);
    }

    template <typename Real>
    static void backward_row(Real* dx, Real*, Real* dstate_prev, const Real* dstate, int64_t,
                             const Real* cache, const Real*, int64_t H, Activation act) {
        with_activation(act, [&](auto a) {
            for (int64_t j = 0; j < H; ++j)        // Δ = dh f'(a)
                dx[j] = times_derivative<decltype(a)::value>(dstate[j], cache[j]);
        });
        std::fill(dstate_prev, dstate_prev + H, Real(0));   // h_prev reaches h only through W
    }
};

}  // namespace rnnkit
