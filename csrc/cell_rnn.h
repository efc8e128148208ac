// The Elman cell (DESIGN.md §1): a = U x + b + W h_prev, h = f(a). Cache [h].
#pragma once

#include <algorithm>

#include "cells.h"

namespace rnnkit {

struct RnnCell {
    static constexpr int gates = 1, state = 1, cache = 1;
    static constexpr bool two_biases = false, sums_projections = true, separate_dh = false;
    static constexpr bool state_only_via_W = true;   // h_prev reaches h only through W

    template <typename Real>
    static void forward_row(Real* cache, const Real*, Real* a, const Real*, int64_t H,
                            Activation act) {
        activate(a, H, act);                       // h = f(a)
        if (a != cache) std::copy(a, a + H, cache);   // (the driver may pass the cache as a)
    }

    template <typename Real>
    static void backward_row(Real* dx, Real*, Real*, const Real* dstate, int64_t,
                             const Real* cache, const Real*, int64_t H, Activation act) {
        with_activation(act, [&](auto a) {
            backward_lanes<decltype(a)::value>(dx, dstate, cache, H);
        });
    }

    // backward_row's loop, with restrict pointers so that it vectorizes
    template <Activation A, typename Real>
    static void backward_lanes(Real* RNNKIT_RESTRICT dx, const Real* RNNKIT_RESTRICT dh,
                               const Real* RNNKIT_RESTRICT h, int64_t H) {
        for (int64_t j = 0; j < H; ++j) dx[j] = times_derivative<A>(dh[j], h[j]);   // Δ = dh f'(a)
    }
};

}  // namespace rnnkit
