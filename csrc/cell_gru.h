// The GRU cell, PyTorch's equations and gate order (r, z, n). Cache [h, r, z, n, hn]:
//   r = σ(xr + hr),  z = σ(xz + hz),  n = f(xn + r hn),  h = n + z (h_prev - n)
// with A_x = [xr, xz, xn] = U x + b_ih and A_h = [hr, hz, hn] = W h_prev + b_hh.
#pragma once

#include "cells.h"

namespace rnnkit {

struct GruCell {
    static constexpr int gates = 3, state = 1, cache = 5;
    static constexpr bool two_biases = true, sums_projections = false, separate_dh = true;

    template <typename Real>
    static void forward_row(Real* cache, const Real* ax, Real* ah, const Real* h_prev,
                            int64_t H, Activation act) {
        Real *h = cache, *r = h + H, *z = r + H, *n = z + H, *hn = n + H;
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
        const Real *r = cache + H, *z = r + H, *n = z + H, *hn = n + H;
        with_activation(act, [&](auto a) {
            for (int64_t j = 0; j < H; ++j) {
                const Real dn =
                    times_derivative<decltype(a)::value>(dh[j] * (Real(1) - z[j]), n[j]);
                const Real dz = dh[j] * (h_prev[j] - n[j]) * (z[j] * (Real(1) - z[j]));
                const Real dr = dn * hn[j] * (r[j] * (Real(1) - r[j]));
                dx[j] = dr;
                dx[H + j] = dz;
                dx[2 * H + j] = dn;
                dh_proj[j] = dr;
                dh_proj[H + j] = dz;
                dh_proj[2 * H + j] = dn * r[j];    // the reset gate scales W_hn h_prev + b_hn
                dstate_prev[j] = dh[j] * z[j];
            }
        });
    }
};

}  // namespace rnnkit
