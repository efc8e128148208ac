// The cell registry (docs/architecture.md §1): every recurrent cell rnnkit knows, and what the
// cell-agnostic driver (network.cpp) asks of one.
//
// A cell is a struct of static members:
//   gates G, state S, cache C (in multiples of H), two_biases        its sizes
//   sums_projections   true when the step needs only A_x + A_h (the driver then adds them);
//                      false when it reads the two apart (GRU: the reset gate scales A_h's n rows)
//   separate_dh        true when Δh differs from Δx (GRU); otherwise Δh is Δx
//   state_only_via_W   true when the previous state's gradient is Δh W alone (Elman): then
//                      backward_row leaves dstate_prev unwritten and the driver's product sets it
//   forward_row(cache, ax, ah, state_prev, H, act)
//       cache (C·H,) out: the step's cache, its new state first ([h], [h, c] for LSTM)
//       ax (G·H,): A_x = U x + b_ih of this step (not read when sums_projections)
//       ah (G·H,): A_h = W h_prev + b_hh, or A_x + A_h when sums_projections; may be overwritten
//       state_prev (S·H,): the state before the step
//   backward_row(dx, dh, dstate_prev, dstate, ds, cache, state_prev, H, act)
//       dx (G·H,) out: Δx, the gradient of A_x;  dh (G·H,) out: Δh (only when separate_dh)
//       dstate (S parts, ds apart): the gradient reaching the new state (dh, then LSTM's dc)
//       dstate_prev (S parts, ds apart) out: the part of the previous state's gradient that
//           does not pass through W (the driver then adds Δh W to its h part); not written
//           when state_only_via_W
// One row (record) per call; the driver loops over rows and runs every product.
//
// Adding a cell: write csrc/cell_<name>.h, include it here and add one line to RNNKIT_CELLS;
// then its reference step in python/rnnkit/reference.py and its entry in rnnkit/cells.py.
#pragma once

#include <cstdint>
#include <type_traits>

#include "rnnkit.h"

// The arrays a cell reads and writes in one call never overlap; saying so lets its loops
// vectorize.
#define RNNKIT_RESTRICT __restrict__

namespace rnnkit {

// g * f'(a), with f' written in terms of the value v = f(a) (tanh 1 - v², sigmoid v (1 - v),
// relu [v > 0]: 1 unless v <= 0, so a NaN passes on, as torch). A is a compile-time constant
// so that the cells' loops vectorize: with_activation(act, fn) calls fn with it.
template <Activation A, typename Real>
inline Real times_derivative(Real g, Real v) {
    if constexpr (A == Activation::Tanh) return g * (Real(1) - v * v);
    else if constexpr (A == Activation::Sigmoid) return g * (v * (Real(1) - v));
    else return g * Real(!(v <= Real(0)));
}

template <typename Fn>
inline void with_activation(Activation act, Fn&& fn) {
    switch (act) {
        case Activation::Tanh: return fn(std::integral_constant<Activation, Activation::Tanh>{});
        case Activation::Sigmoid:
            return fn(std::integral_constant<Activation, Activation::Sigmoid>{});
        case Activation::Relu: return fn(std::integral_constant<Activation, Activation::Relu>{});
    }
}

}  // namespace rnnkit

#include "cell_gru.h"
#include "cell_lstm.h"
#include "cell_rnn.h"

// X(enumerator of Cell, struct, name): the one registration point of the C++ core.
#define RNNKIT_CELLS(X)             \
    X(Rnn, RnnCell, "rnn")          \
    X(Gru, GruCell, "gru")          \
    X(Lstm, LstmCell, "lstm")
