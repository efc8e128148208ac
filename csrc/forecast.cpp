// Autoregressive rollout: network_forecast (see rnnkit.h for the letters).
//
// The context is run with network_predict; each later step is network_predict again over the
// whole batch with T = 1, the previous prediction as the input and the previous state as h0.
// Every number is therefore computed by the same kernel, in the same order, as a Python loop
// of forward calls would compute it, so the rollout equals that loop bit for bit.
#include <algorithm>

#include "rnnkit.h"

namespace rnnkit {

int64_t forecast_work_size(int64_t N, int64_t T, const Net& net) {
    const CellSizes cs = cell_sizes(net.cell);
    const int64_t state = net.L * cs.state * net.H;
    // two states, the next input (N, I), the latest prediction (N, O), and network_predict's
    // own scratch (enough for T = 1 too)
    return 2 * N * state + N * net.I + N * net.O + predict_work_size(N, T, net, false);
}

template <typename Real>
void network_forecast(Real* forecasts, const Real* X, const Real* h0, const Real* params,
                      int64_t N, int64_t T, int64_t steps, const Net& net, Real* work) {
    if (steps < 1) return;
    const CellSizes cs = cell_sizes(net.cell);
    const int64_t state_size = N * net.L * cs.state * net.H;
    Real* state = work;                                      // (N, L·S·H): after the latest step
    Real* next_state = state + state_size;                   // (N, L·S·H): after the step run
    Real* input = next_state + state_size;                   // (N, 1, I): the fed-back prediction
    Real* last = input + N * net.I;                          // (N, O): the latest prediction
    Real* scratch = last + N * net.O;                        // predict_work_size(N, T, net)

    // The context: y_T is the first forecast, the state after it where the rollout starts.
    network_predict(last, state, X, h0, params, (const int64_t*)nullptr, N, T, net, false,
                    scratch);
    for (int64_t s = 0;; ++s) {
        for (int64_t n = 0; n < N; ++n)
            std::copy(last + n * net.O, last + (n + 1) * net.O,
                      forecasts + (n * steps + s) * net.O);
        if (s + 1 == steps) break;
        // Step s + 1 feeds forecast s back in: x = y (N, 1, I == O), h0 = the state before it.
        std::copy(last, last + N * net.O, input);
        network_predict(last, next_state, input, state, params, (const int64_t*)nullptr, N, 1,
                        net, false, scratch);
        std::copy(next_state, next_state + state_size, state);
    }
}

#define RNNKIT_INSTANTIATE(Real)                                                              \
    template void network_forecast(Real*, const Real*, const Real*, const Real*, int64_t,     \
                                   int64_t, int64_t, const Net&, Real*);
RNNKIT_INSTANTIATE(float)
RNNKIT_INSTANTIATE(double)
#undef RNNKIT_INSTANTIATE

}  // namespace rnnkit
