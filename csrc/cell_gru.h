// The GRU cell, PyTorch's equations and gate order (r, z, n). Cache [h, r, z, n, hn]:
//   r = σ(xr + hr),  z = σ(xz + hz),  n = f(xn + r hn),  h = n + z (h_prev - n)
// with A_x = [xr, xz, xn] = U x + b_ih and A_h = [hr, hz, hn] = W h_prev + b_hh.
#pragma once

#include "cells.h"

namespace rnnkit {

struct GruCell {
    static constexpr int gates = 3, state = 1, cache = 5;
    static constexpr bool two_biases = true, sums_projections = false, separate_dh = true;
    static constexpr bool state_only_via_W = false;

    template <typename Real>
    static void forward_row(Real* RNNKIT_RESTRICT cache, const Real* RNNKIT_RESTRICT ax,
                            Real* RNNKIT_RESTRICT ah, const Real* RNNKIT_RESTRICT h_prev,
                            int64_t H, Activation act) {
        Real *RNNKIT_RESTRICT h = cache, *RNNKIT_RESTRICT r = h + H, *RNNKIT_RESTRICT z = r + H;
        Real *RNNKIT_RESTRICT n = z + H, *RNNKIT_RESTRICT hn = n + H;
        for (int64_t j = 0; j < 2 * H; ++j) r[j] = ax[j] + ah[j];    // r and z, adjacent
        activate(r, 2 * H, Activation::Sigmoid);
        for (int64_t j = 0; j < H; ++j) {
            hn[j] = ah[2 * H + j];
            n[j] = ax[2 * H + j] + r[j] * hn[j];
        }
        activate(n, H, act);
        for (int64_t j = 0; j < H; ++j) h[j] = n[j] + z[j] * (h_prev[j] - n[j]);
    }

    template <typename Real>
    static void backward_row(Real* dx, Real* dh_proj, Real* dstate_prev, const Real* dh,
                             int64_t, const Real* cache, const Real* h_prev, int64_t H,
                             Activation act) {
        with_activation(act, [&](auto a) {
            backward_lanes<decltype(a)::value>(dx, dx + H, dx + 2 * H, dh_proj, dh_proj + H,
                                               dh_proj + 2 * H, dstate_prev, dh, cache + H,
                                               cache + 2 * H, cache + 3 * H, cache + 4 * H,
                                               h_prev, H);
        });
    }

    // backward_row's loop, one restrict pointer per gate block so that it vectorizes
    template <Activation A, typename Real>
    static void backward_lanes(Real* RNNKIT_RESTRICT dxr, Real* RNNKIT_RESTRICT dxz,
                               Real* RNNKIT_RESTRICT dxn, Real* RNNKIT_RESTRICT dhr,
                               Real* RNNKIT_RESTRICT dhz, Real* RNNKIT_RESTRICT dhn,
                               Real* RNNKIT_RESTRICT dh_prev, const Real* RNNKIT_RESTRICT dh,
                               const Real* RNNKIT_RESTRICT r, const Real* RNNKIT_RESTRICT z,
                               const Real* RNNKIT_RESTRICT n, const Real* RNNKIT_RESTRICT hn,
                               const Real* RNNKIT_RESTRICT h_prev, int64_t H) {
        for (int64_t j = 0; j < H; ++j) {
            const Real dn = times_derivative<A>(dh[j] * (Real(1) - z[j]), n[j]);
            const Real dz = dh[j] * (h_prev[j] - n[j]) * (z[j] * (Real(1) - z[j]));
            const Real dr = dn * hn[j] * (r[j] * (Real(1) - r[j]));
            dxr[j] = dr;
            dxz[j] = dz;
            dxn[j] = dn;
            dhr[j] = dr;
            dhz[j] = dz;
            dhn[j] = dn * r[j];                    // the reset gate scales W_hn h_prev + b_hn
            dh_prev[j] = dh[j] * z[j];
        }
    }
};

}  // namespace rnnkit
