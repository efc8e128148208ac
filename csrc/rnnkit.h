// rnnkit's C++ core: the recurrent network kernels, clipping, the optimizers and the epoch loop.
// No Python here: bindings.cpp converts NumPy arrays to the raw pointers these take.
//
// The letters, used in every shape comment and argument list (DESIGN.md §1):
//   N  sequences (records) in the batch      T  time steps per sequence
//   I  input features per step               H  hidden units
//   O  outputs per step                      P  scalars in the flat parameter buffer
//   L  recurrent layers                      G  gates of the cell (RNN 1, GRU 3, LSTM 4)
//   S  state width of the cell, in H         C  cache width of the cell, in H
//   k  truncation: the loss at step t sends gradient through steps t-k..t (k < 0: full BPTT)
// Every array is C-contiguous and batch first. Arguments come in a fixed order: outputs,
// inputs, weights, then the sizes N, T, I, H, O, then options.
//
// The flat parameter buffer (and every gradient / optimizer state buffer, same layout), as
// docs/architecture.md §3: for each layer l, U_l (G·H, I_l) | W_l (G·H, H) | with bias, b (H,)
// or b_ih (G·H,) | b_hh (G·H,); then V (O, H) | c (O,) if bias. I_0 = I, I_l = H above.
//
// Every kernel is a template on the scalar type `Real`, instantiated for float and double.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>

namespace rnnkit {

enum class Activation { Tanh, Sigmoid, Relu };

// The machine's FMA peak, measured (fma_peak.cpp; for benchmarks, not used by training):
// `threads` threads each run independent FMA chains of the widest unit found at run time for
// `seconds` of their own CPU time; returns the sum of their rates in GFLOP/s (2 flops per FMA
// lane). Meaningful for threads <= cores.
enum class FmaIsa { Scalar, Avx2, Avx512 };
FmaIsa fma_peak_isa();
double fma_peak_gflops(bool double_precision, double seconds, int threads);

// The cells of csrc/cells.h (RNNKIT_CELLS), and the sizes the driver reads from them.
enum class Cell { Rnn, Gru, Lstm };
struct CellSizes {
    int64_t gates, state, cache;  // G, S, C
    bool two_biases;
    bool separate_dh;             // Δh is not Δx (the backward pass keeps both)
    bool sums_projections;        // the step needs only A_x + A_h (see cells.h)
};
CellSizes cell_sizes(Cell cell);

// A network: L layers of one cell over inputs of I features, then a linear output layer.
struct Net {
    Cell cell;
    int64_t I, H, O, L;
    bool bias;
    Activation act;
};

// Scalars in the flat parameter buffer of `net`.
int64_t param_count(const Net& net);

// C (M, N) += A (M, K) B (K, N), row strides ldc, lda, ldb: every C[m, j] is summed over k in
// increasing order, starting from its value. Every product of the recurrence goes through it.
template <typename Real>
void gemm_accumulate(Real* C, int64_t ldc, const Real* A, int64_t lda, const Real* B,
                     int64_t ldb, int64_t M, int64_t N, int64_t K);

// C (M, N) += A^T B for A stored (K, M) with row stride lda: the same sums, in the same order.
template <typename Real>
void gemm_accumulate_at(Real* C, int64_t ldc, const Real* A, int64_t lda, const Real* B,
                        int64_t ldb, int64_t M, int64_t N, int64_t K);
// C (M, N) = A^T B: gemm_accumulate_at into C's rows cleared first, bit for bit, without
// reading C (K = 0: zeros).
template <typename Real>
void gemm_set_at(Real* C, int64_t ldc, const Real* A, int64_t lda, const Real* B, int64_t ldb,
                 int64_t M, int64_t N, int64_t K);

// C (M, N) = 1 b^T + x u^T for x (M,) with stride sx, u (N,), b (N,) or null (zero): C's rows
// set to b, then C += x (M, 1) u (1, N) by gemm_accumulate, in one pass with the same bits (a
// caller under set_plain_loops takes the two steps instead, so that the tests compare them).
template <typename Real>
void set_outer_plus_bias(Real* C, int64_t ldc, const Real* x, int64_t sx, const Real* u,
                         const Real* b, int64_t M, int64_t N);

enum class Isa;

// B (K, N) copied once into the order in which the tiled product of level `isa` reads it, for
// products that use the same B many times (every step of a sweep): pack_b writes K N elements
// to `buffer`, or nothing when no product will have more than `max_rows` rows and that is
// fewer than a tile's (those read B itself). gemm_accumulate_packed is gemm_accumulate with
// that B, bit for bit; it reads B itself where it would not use the copy (the plain loops,
// fewer rows than a tile, a level other than the current one).
template <typename Real>
struct PackedB {
    const Real* B;
    int64_t ldb;
    const Real* panels;
    Isa isa;   // the level whose order `panels` has
};
template <typename Real>
PackedB<Real> pack_b(Real* buffer, const Real* B, int64_t ldb, int64_t K, int64_t N, Isa isa,
                     int64_t max_rows);
template <typename Real>
void gemm_accumulate_packed(Real* C, int64_t ldc, const Real* A, int64_t lda,
                            const PackedB<Real>& B, int64_t M, int64_t N, int64_t K);
// C (M, N) = A B with B from pack_b: what zeroing C's rows and then gemm_accumulate_packed
// would give, bit for bit, without reading C.
template <typename Real>
void gemm_set_packed(Real* C, int64_t ldc, const Real* A, int64_t lda, const PackedB<Real>& B,
                     int64_t M, int64_t N, int64_t K);

// The instruction-set level gemm_accumulate runs at: the best the CPU has unless set_isa chose
// a lower one. AVX2 and AVX-512 fuse each multiply-add (one rounding); Baseline does not.
enum class Isa { Baseline = 0, Avx2 = 1, Avx512 = 2 };
Isa best_isa();
Isa current_isa_level();
void set_isa(Isa isa);  // throws std::invalid_argument above best_isa()

// The plain loops instead of the register-tiled ones (bitwise-identical results; for tests).
void set_plain_loops(bool plain);
bool plain_loops();
// The rows of C the tiled product of level `isa` keeps in registers: a product of fewer rows
// streams B itself, one row at a time.
int64_t tile_rows(Isa isa);

// Threads: parallel_for(n, min_chunk, fn) runs fn(begin, end) over at most num_threads()
// contiguous chunks of [0, n), each at least min_chunk long, the first on the calling thread.
// The default count is RNNKIT_NUM_THREADS, else the CPUs the process may run on (its affinity
// mask).
void set_num_threads(int n);
int num_threads();
void parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn);

// h = f(a) in place over n elements (activations.cpp: vectorized, never overflows).
template <typename Real>
void activate(Real* a, int64_t n, Activation act);

// Scratch sizes (in scalars) the caller provides to the kernels, so nothing allocates inside.
int64_t forward_work_size(int64_t N, int64_t T, const Net& net);
int64_t backward_work_size(int64_t N, int64_t T, const Net& net, bool return_sequences);

// Forward over a batch (docs/architecture.md): each layer runs its cell over the steps, the
// output layer reads the top layer's h: y_t = V h_t + c. With `lengths`, record n's steps
// t >= lengths[n] keep the previous step's cache (its state does not change) and, with
// return_sequences, output 0. With cache_stride > C·H, each step's cache row in hidden_states
// is that many scalars long, C·H of them written (train_epoch's scratch: see there); the
// backward pass then reads them with the same cache_stride.
template <typename Real>
void network_forward(Real* hidden_states,   // (L, N, T, C·H) out: every layer's cache
                     Real* outputs,         // (N, T, O) out, or (N, O) out if !return_sequences
                     Real* final_state,     // (N, L·S·H) out, or null
                     const Real* X,         // (N, T, I)
                     const Real* h0,        // (N, L·S·H), or null for zeros
                     const Real* params,    // (P,)
                     const int64_t* lengths,  // (N,) in [1, T], or null: all T
                     int64_t N, int64_t T, const Net& net, bool return_sequences,
                     Real* work,            // forward_work_size(N, T, net)
                     int64_t cache_stride = 0);   // 0: C·H

// network_forward for a caller that needs only the outputs and the final state (prediction,
// evaluation): with one layer, many-to-one, it keeps two steps of each record's cache rather
// than T (forward_kept_steps), so that a large batch's states stay in cache and no (N, T, C·H)
// buffer is written. The same operations in the same order: the same bits as network_forward.
int64_t forward_kept_steps(int64_t T, const Net& net, bool return_sequences);
int64_t predict_work_size(int64_t N, int64_t T, const Net& net, bool return_sequences);
template <typename Real>
void network_predict(Real* outputs,         // as network_forward's
                     Real* final_state,     // (N, L·S·H) out, or null
                     const Real* X, const Real* h0, const Real* params, const int64_t* lengths,
                     int64_t N, int64_t T, const Net& net, bool return_sequences,
                     Real* work);           // predict_work_size(N, T, net, return_sequences)

// Truncated BPTT of L = mean((y - Y)^2) over the valid targets, from a forward pass's results.
// Adds dL/dparams into grad (clear it first with zero_buffer) and returns L; with `set_grad`,
// writes dL/dparams to grad instead (the same bits as clearing it first, without a pass that
// clears the weight matrices W).
template <typename Real>
double network_backward(Real* grad,                 // (P,) accumulated into (set_grad: written)
                        const Real* X,              // (N, T, I)
                        const Real* Y,              // (N, T, O), or (N, O) if !return_sequences
                        const Real* h0,             // (N, L·S·H), or null for zeros
                        const Real* params,         // (P,)
                        const Real* hidden_states,  // (L, N, T, C·H) from network_forward
                        const Real* outputs,        // shaped like Y, from network_forward
                        const int64_t* lengths,     // (N,) in [1, T], or null: all T
                        int64_t N, int64_t T, const Net& net, bool return_sequences,
                        int64_t k,
                        Real* work,                 // backward_work_size(N, T, net, ...)
                        int64_t cache_stride = 0,   // as network_forward's
                        bool set_grad = false);

// Autoregressive rollout (forecast.cpp), for models with I == O: run the context X from h0,
// take y_T as the first forecast, then feed each forecast back as the next step's input,
// steps times in all. forecasts[n, s] is the prediction s + 1 steps after the context's end.
int64_t forecast_work_size(int64_t N, int64_t T, const Net& net);

template <typename Real>
void network_forecast(Real* forecasts,      // (N, steps, O) out
                      const Real* X,        // (N, T, I), the context
                      const Real* h0,       // (N, L·S·H), or null for zeros
                      const Real* params,   // (P,)
                      int64_t N, int64_t T, int64_t steps, const Net& net,
                      Real* work);          // forecast_work_size(N, T, net)

template <typename Real>
void zero_buffer(Real* buffer, int64_t n);

// Clip in place: first scale by min(1, clip_norm / (norm + 1e-6)), where norm is ||grad||_2
// over the whole flat buffer (accumulated in double), then clamp every element to
// [-clip_value, clip_value]; either may be absent. Returns that norm, of grad as it came in.
template <typename Real>
double clip_gradient(Real* grad, int64_t P, std::optional<double> clip_norm,
                     std::optional<double> clip_value);

// torch.optim.SGD (dampening 0, no Nesterov): d = g + wd*p; buf = m*buf + d (if m != 0);
// p -= lr * d. momentum_buffer may be null when momentum == 0.
template <typename Real>
void sgd_step(Real* params, Real* momentum_buffer, const Real* grad, int64_t P,
              double lr, double momentum, double weight_decay);

// torch.optim.Adam with bias correction; `step` counts updates including this one (>= 1).
template <typename Real>
void adam_step(Real* params, Real* exp_avg, Real* exp_avg_sq, const Real* grad, int64_t P,
               int64_t step, double lr, double beta1, double beta2, double eps,
               double weight_decay);

struct OptimizerConfig {
    enum class Kind { SGD, Adam } kind;
    double lr, momentum, weight_decay, beta1, beta2, eps;
};

enum class EpochStatus { Completed, NonFinite, Stopped };

struct EpochResult {
    int64_t batches_done;  // minibatches whose update was applied
    int64_t step;          // the step count (updates made, `step` before) after them
    EpochStatus status;    // NonFinite: the next minibatch's loss or gradient was NaN/Inf and
                           // its update was not applied; Stopped: keep_going returned false
};

// One epoch: minibatches of batch_size records taken from X/Y (and lengths) in `order`, each
// from h0 = 0:
// forward, loss, truncated gradient, clip, update. Writes each minibatch's loss (before its
// update) into losses. Between minibatches, keep_going(batches done) (if given) may stop the
// epoch; the parameters are then those after the last update, never half-updated.
template <typename Real>
EpochResult train_epoch(double* losses,            // (ceil(n_order / batch_size),) out
                        Real* params,              // (P,) updated in place
                        Real* momentum_buffer,     // (P,) SGD with momentum, else may be null
                        Real* exp_avg,             // (P,) Adam, else may be null
                        Real* exp_avg_sq,          // (P,) Adam, else may be null
                        const Real* X,             // (N, T, I)
                        const Real* Y,             // (N, T, O), or (N, O) if !return_sequences
                        const int64_t* lengths,    // (N,) in [1, T], or null: all T
                        const int64_t* order,      // (n_order,) record indices, each in [0, N)
                        int64_t n_order, int64_t batch_size,
                        int64_t N, int64_t T, const Net& net, bool return_sequences, int64_t k,
                        std::optional<double> clip_norm, std::optional<double> clip_value,
                        const OptimizerConfig& optimizer, int64_t step,
                        const std::function<bool(int64_t)>& keep_going);

}  // namespace rnnkit
