// Autoregressive rollout: elman_forecast (see rnnkit.h for the letters).
//
// The context is run with elman_forward; each later step is elman_forward again over the whole
// batch with T = 1, the previous prediction as the input and the previous state as h0. Every
// number is therefore computed by the same kernel, in the same order, as a Python loop of
// forward calls would compute it, so the rollout equals that loop bit for bit.
#include <algorithm>

#include "rnnkit.h"

namespace rnnkit {

int64_t forecast_work_size(int64_t N, int64_t T, int64_t I, int64_t H, int64_t O) {
    // context states (N, T, H), two states (N, H), the next input (N, I), the latest
    // prediction (N, O), and elman_forward's own scratch
    return N * T * H + 2 * N * H + N * I + N * O + forward_work_size(N, I, H, O);
}

template <typename Real>
void elman_forecast(Real* forecasts, const Real* X, const Real* h0, const Real* params,
                    int64_t N, int64_t T, int64_t I, int64_t H, int64_t O, int64_t steps,
                    bool bias, Activation act, Real* work) {
    if (steps < 1) return;
    Real* context_states = work;                     // (N, T, H)
    Real* state = context_states + N * T * H;        // (N, H): h after the latest step
    Real* next_state = state + N * H;                // (N, H): h after the step being run
    Real* input = next_state + N * H;                // (N, 1, I): the fed-back prediction
    Real* last = input + N * I;                      // (N, O): the latest prediction
    Real* scratch = last + N * O;                    // forward_work_size(N, I, H, O)

    // The context: y_T is the first forecast, h_T the state it came from.
    elman_forward(context_states, last, X, h0, params, N, T, I, H, O, bias, act, false, scratch);
    for (int64_t n = 0; n < N; ++n) {
        const Real* hT = context_states + (n * T + T - 1) * H;
        std::copy(hT, hT + H, state + n * H);
    }
    for (int64_t s = 0;; ++s) {
        for (int64_t n = 0; n < N; ++n)
            std::copy(last + n * O, last + (n + 1) * O, forecasts + (n * steps + s) * O);
        if (s + 1 == steps) break;
        // Step s + 1 feeds forecast s back in: x = y (N, 1, I == O), h0 = the state before it.
        std::copy(last, last + N * O, input);
        elman_forward(next_state, last, input, state, params, N, 1, I, H, O, bias, act, false,
                      scratch);
        std::copy(next_state, next_state + N * H, state);
    }
}

#define RNNKIT_INSTANTIATE(Real)                                                              \
    template void elman_forecast(Real*, const Real*, const Real*, const Real*, int64_t,       \
                                 int64_t, int64_t, int64_t, int64_t, int64_t, bool,           \
                                 Activation, Real*);
RNNKIT_INSTANTIATE(float)
RNNKIT_INSTANTIATE(double)
#undef RNNKIT_INSTANTIATE

}  // namespace rnnkit
