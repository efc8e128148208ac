// The epoch loop: no Python and no allocation per minibatch (see rnnkit.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "buffer.h"
#include "rnnkit.h"

namespace rnnkit {

template <typename Real>
EpochResult train_epoch(double* losses, Real* params, Real* momentum_buffer, Real* exp_avg,
                        Real* exp_avg_sq, const Real* X, const Real* Y, const int64_t* lengths,
                        const int64_t* order, int64_t n_order, int64_t batch_size, int64_t N,
                        int64_t T, const Net& net, bool return_sequences, int64_t k,
                        std::optional<double> clip_norm,
                        std::optional<double> clip_value, const OptimizerConfig& optimizer,
                        int64_t step, const std::function<bool(int64_t)>& keep_going) {
    (void)N;  // the caller has checked every order[r] < N
    const int64_t B = std::min(batch_size, n_order);
    const int64_t P = param_count(net);
    const int64_t I = net.I;
    const int64_t y_row = (return_sequences ? T : 1) * net.O;   // scalars of Y per record
    // With T·C·H scalars from one record's cache to the next a multiple of 4 KiB (W3: 50 x 512
    // floats), the rows of the records that a step's product tile reads and writes all map to
    // the same L1 set, and conflict: then each step's cache row is padded by one cache line
    // (W3's forward product alone: 73 GFLOP/s so, 84 with the padding, benchmarks/kernels),
    // unless T is a multiple of 64, where T lines of padding are a multiple of 4 KiB again.
    const int64_t CH = cell_sizes(net.cell).cache * net.H;
    const bool aliased = T * CH * int64_t(sizeof(Real)) % 4096 == 0 && T % 64 != 0;
    const int64_t cache_stride = CH + (aliased ? 64 / int64_t(sizeof(Real)) : 0);
    const int64_t cache_row = net.L * T * cache_stride;
    std::vector<Real> xb(size_t(B * T * I)), yb(size_t(B * y_row));
    std::vector<int64_t> lb(lengths ? size_t(B) : 0);
    Buffer<Real> hidden_states(B * cache_row), outputs(B * y_row), grad(P);
    Buffer<Real> work(std::max(forward_work_size(B, T, net),
                               backward_work_size(B, T, net, return_sequences)));

    for (int64_t start = 0, batch = 0; start < n_order; start += batch_size, ++batch) {
        const int64_t nb = std::min(batch_size, n_order - start);
        for (int64_t r = 0; r < nb; ++r) {          // gather the minibatch's records
            const int64_t rec = order[start + r];
            std::copy(X + rec * T * I, X + (rec + 1) * T * I, xb.data() + r * T * I);
            std::copy(Y + rec * y_row, Y + (rec + 1) * y_row, yb.data() + r * y_row);
            if (lengths) lb[size_t(r)] = lengths[rec];
        }
        const int64_t* lp = lengths ? lb.data() : nullptr;
        network_forward(hidden_states.data(), outputs.data(), (Real*)nullptr, xb.data(),
                        (const Real*)nullptr, params, lp, nb, T, net, return_sequences,
                        work.data(), cache_stride);
        losses[batch] = network_backward(grad.data(), xb.data(), yb.data(), (const Real*)nullptr,
                                         params, hidden_states.data(), outputs.data(), lp, nb, T,
                                         net, return_sequences, k, work.data(), cache_stride,
                                         /*set_grad=*/true);
        const double norm = clip_gradient(grad.data(), P, clip_norm, clip_value);
        if (!std::isfinite(losses[batch]) || !std::isfinite(norm))
            return {batch, step, EpochStatus::NonFinite};   // this update is not applied
        ++step;
        if (optimizer.kind == OptimizerConfig::Kind::SGD) {
            sgd_step(params, momentum_buffer, grad.data(), P, optimizer.lr, optimizer.momentum,
                     optimizer.weight_decay);
        } else {
            adam_step(params, exp_avg, exp_avg_sq, grad.data(), P, step, optimizer.lr,
                      optimizer.beta1, optimizer.beta2, optimizer.eps, optimizer.weight_decay);
        }
        // between minibatches only: after the last one the epoch is complete
        if (keep_going && start + nb < n_order && !keep_going(batch + 1))
            return {batch + 1, step, EpochStatus::Stopped};
    }
    // (n_order - 1) / batch_size + 1 batches, written so that a huge batch_size cannot overflow
    return {n_order == 0 ? 0 : (n_order - 1) / batch_size + 1, step, EpochStatus::Completed};
}

#define RNNKIT_INSTANTIATE(Real)                                                             \
    template EpochResult train_epoch(double*, Real*, Real*, Real*, Real*, const Real*,       \
                                     const Real*, const int64_t*, const int64_t*, int64_t,    \
                                     int64_t, int64_t, int64_t, const Net&, bool, int64_t,    \
                                     std::optional<double>,                                  \
                                     std::optional<double>, const OptimizerConfig&, int64_t, \
                                     const std::function<bool(int64_t)>&);
RNNKIT_INSTANTIATE(float)
RNNKIT_INSTANTIATE(double)
#undef RNNKIT_INSTANTIATE

}  // namespace rnnkit
