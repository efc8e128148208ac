// The network kernel pair: network_forward / network_backward (see rnnkit.h for the letters and
// docs/architecture.md for the math). Cell-agnostic: every product, the layers, the output
// layer, the loss, lengths and truncation are here; the cells (cells.h) do one row of one step.
//
// The products run through gemm_accumulate (gemm.cpp), batched where the recurrence allows: one
// product per step for all records (the input projection, then the recurrent product; the
// input projection of a record's every step at once when too few records share a thread and
// the cache keeps every step); the
// weight gradients as one product over every (record, step) pair once the deltas are known.
// Records are split across threads in the forward pass and the backward sweeps, rows of the
// weight gradients in their accumulation, so that every output element is computed on one
// thread in a fixed order: results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "cells.h"
#include "levels.h"
#include "rnnkit.h"

namespace rnnkit {

CellSizes cell_sizes(Cell cell) {
    switch (cell) {
#define RNNKIT_CELL_SIZES(Enum, Struct, name)                                    \
    case Cell::Enum:                                                             \
        return {Struct::gates, Struct::state, Struct::cache, Struct::two_biases, \
                Struct::separate_dh, Struct::sums_projections};
        RNNKIT_CELLS(RNNKIT_CELL_SIZES)
#undef RNNKIT_CELL_SIZES
    }
    throw std::invalid_argument("unknown cell");
}

namespace {

// Scalars of one layer's biases.
int64_t bias_size(const Net& net, const CellSizes& cs) {
    return net.bias ? (cs.two_biases ? 2 * cs.gates * net.H : net.H) : 0;
}

// Scalars of layer l's parameters (U_l, W_l, biases).
int64_t layer_size(const Net& net, const CellSizes& cs, int64_t l) {
    const int64_t GH = cs.gates * net.H;
    return GH * (l == 0 ? net.I : net.H) + GH * net.H + bias_size(net, cs);
}

// Pointers to one layer's pieces of a flat buffer; the biases are null when absent (the RNN
// cell's single b is b_ih).
template <typename Real>
struct LayerParams {
    Real* U;     // (G·H, In)
    Real* W;     // (G·H, H)
    Real* b_ih;  // (G·H,) (RNN: b (H,)) or null
    Real* b_hh;  // (G·H,) or null
    int64_t In;  // the layer's input size: I for layer 0, H above
};

template <typename Real>
LayerParams<Real> layer_params(Real* flat, const Net& net, int64_t l) {
    const CellSizes cs = cell_sizes(net.cell);
    for (int64_t m = 0; m < l; ++m) flat += layer_size(net, cs, m);
    const int64_t GH = cs.gates * net.H, In = l == 0 ? net.I : net.H;
    LayerParams<Real> p{flat, flat + GH * In, nullptr, nullptr, In};
    if (net.bias) {
        p.b_ih = p.W + GH * net.H;
        if (cs.two_biases) p.b_hh = p.b_ih + GH;
    }
    return p;
}

// V (O, H) and c (O,) (null without bias).
template <typename Real>
std::pair<Real*, Real*> output_params(Real* flat, const Net& net) {
    const CellSizes cs = cell_sizes(net.cell);
    for (int64_t m = 0; m < net.L; ++m) flat += layer_size(net, cs, m);
    return {flat, net.bias ? flat + net.O * net.H : nullptr};
}

// out (rows, cols) = in (cols, rows) transposed, with row strides ld_out and ld_in; in blocks
// of 16 x 16, so that the strided side stays in cache (a weight matrix is transposed at every
// call, every minibatch of one record included). Compiled per level: AVX-512 turns the strided
// reads into gathers, several times faster than one scalar at a time.
#define RNNKIT_TRANSPOSE_LEVEL(name, attributes)                                                 \
    template <typename Real>                                                                   \
    attributes void name##_transpose(Real* out, int64_t ld_out, const Real* in, int64_t ld_in, \
                                     int64_t rows, int64_t cols) {                             \
        constexpr int64_t block = 16;                                                          \
        for (int64_t r0 = 0; r0 < rows; r0 += block)                                           \
            for (int64_t c0 = 0; c0 < cols; c0 += block) {                                     \
                const int64_t r1 = std::min(rows, r0 + block), c1 = std::min(cols, c0 + block); \
                for (int64_t r = r0; r < r1; ++r)                                              \
                    for (int64_t c = c0; c < c1; ++c) out[r * ld_out + c] = in[c * ld_in + r]; \
            }                                                                                  \
    }
RNNKIT_TRANSPOSE_LEVEL(baseline, )
#if RNNKIT_X86
RNNKIT_TRANSPOSE_LEVEL(avx512, __attribute__((target("avx512f"))))
#endif
#undef RNNKIT_TRANSPOSE_LEVEL

#if RNNKIT_X86
// Doubles at AVX-512, 8 x 8 blocks through registers: 8 rows of `in` loaded, interleaved in
// three rounds of shuffles (pairs of elements, then of 128-bit lanes, then of 256-bit halves),
// stored as 8 rows of `out`; the edges that are not whole blocks as above. For the W^T that
// every minibatch of one record transposes, in place of the gathers of the loop above.
typedef double v8 __attribute__((vector_size(64)));
typedef long long v8_index __attribute__((vector_size(64)));
#if defined(__clang__)
#define RNNKIT_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else   // GCC before 12 has no __builtin_shufflevector
#define RNNKIT_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, v8_index{__VA_ARGS__})
#endif

__attribute__((target("avx512f"))) void avx512_transpose_blocks(double* out, int64_t ld_out,
                                                                const double* in,
                                                                int64_t ld_in, int64_t rows,
                                                                int64_t cols) {
    const int64_t rows8 = rows - rows % 8, cols8 = cols - cols % 8;
    for (int64_t r0 = 0; r0 < rows8; r0 += 8)
        for (int64_t c0 = 0; c0 < cols8; c0 += 8) {
            v8 v[8], t[8];
            for (int i = 0; i < 8; ++i) __builtin_memcpy(&v[i], in + (c0 + i) * ld_in + r0, 64);
            for (int i = 0; i < 8; i += 2) {   // rows i, i + 1: elements 0 0 2 2 .., 1 1 3 3 ..
                t[i] = RNNKIT_SHUFFLE(v[i], v[i + 1], 0, 8, 2, 10, 4, 12, 6, 14);
                t[i + 1] = RNNKIT_SHUFFLE(v[i], v[i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
            }
            for (int i = 0; i < 8; i += 4) {   // rows i .. i + 3: v[i + j] holds elements j, j + 4
                v[i] = RNNKIT_SHUFFLE(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
                v[i + 1] = RNNKIT_SHUFFLE(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
                v[i + 2] = RNNKIT_SHUFFLE(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
                v[i + 3] = RNNKIT_SHUFFLE(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
            }
            for (int j = 0; j < 4; ++j) {     // element j, then j + 4, of all 8 rows
                const v8 lo = RNNKIT_SHUFFLE(v[j], v[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
                const v8 hi = RNNKIT_SHUFFLE(v[j], v[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
                __builtin_memcpy(out + (r0 + j) * ld_out + c0, &lo, 64);
                __builtin_memcpy(out + (r0 + j + 4) * ld_out + c0, &hi, 64);
            }
        }
    if (cols8 < cols)
        avx512_transpose(out + cols8, ld_out, in + cols8 * ld_in, ld_in, rows8, cols - cols8);
    if (rows8 < rows)
        avx512_transpose(out + rows8 * ld_out, ld_out, in + rows8, ld_in, rows - rows8, cols);
}
#undef RNNKIT_SHUFFLE
#endif

template <typename Real>
void transpose(Real* out, int64_t ld_out, const Real* in, int64_t ld_in, int64_t rows,
               int64_t cols) {
#if RNNKIT_X86
    if (current_isa_level() == Isa::Avx512) {
        if constexpr (std::is_same_v<Real, double>)
            return avx512_transpose_blocks(out, ld_out, in, ld_in, rows, cols);
        return avx512_transpose(out, ld_out, in, ld_in, rows, cols);
    }
#endif
    baseline_transpose(out, ld_out, in, ld_in, rows, cols);
}

// Each row n of `rows` rows (row stride ld) set to the vector v (cols,), or to zero if v is null.
template <typename Real>
void fill_rows(Real* out, int64_t ld, const Real* v, int64_t rows, int64_t cols) {
    for (int64_t n = 0; n < rows; ++n) {
        if (v)
            std::copy(v, v + cols, out + n * ld);
        else
            std::fill(out + n * ld, out + n * ld + cols, Real(0));
    }
}

// out[j] += in[q * ld + j] for j < n, over q = 0 .. count-1 in that order (each out[j] is summed
// as a plain loop would), row by row: `in` is read once, in order, and `out` stays in L1. With
// `out2` (not null) the same sums go to out2 too, from the same reads: the two biases of a cell
// whose Δx is its Δh (an LSTM's). Compiled per level (additions only: the same bits at each).
#define RNNKIT_COLUMN_SUMS_LEVEL(name, attributes)                                              \
    template <typename Real>                                                                   \
    attributes void name##_add_column_sums(Real* __restrict out, Real* __restrict out2,        \
                                           const Real* __restrict in, int64_t ld,              \
                                           int64_t count, int64_t n) {                         \
        for (int64_t q = 0; q < count; ++q) {                                                  \
            const Real* row = in + q * ld;                                                     \
            for (int64_t j = 0; j < n; ++j) out[j] += row[j];                                  \
            if (out2)                                                                          \
                for (int64_t j = 0; j < n; ++j) out2[j] += row[j];                             \
        }                                                                                      \
    }
RNNKIT_AT_EVERY_LEVEL(RNNKIT_COLUMN_SUMS_LEVEL)
#undef RNNKIT_COLUMN_SUMS_LEVEL

template <typename Real>
void add_column_sums(Real* out, Real* out2, const Real* in, int64_t ld, int64_t count,
                     int64_t n) {
    RNNKIT_AT_LEVEL(add_column_sums, out, out2, in, ld, count, n)
}

// Multiply-adds a thread must have to be worth starting (tens of microseconds of work): with
// 2^16 a minibatch of 16 records of 18 steps (H = 16) split its backward sweep in two, each
// half too short to pay for handing it over and for its records' rows moving between the
// cores' caches, and trained twice as slowly on two threads as on one.
constexpr int64_t kMinWorkPerThread = int64_t(1) << 18;

// Records need enough work to be worth a thread of their own.
int64_t min_rows_per_thread(int64_t T, int64_t work_per_step) {
    return std::max<int64_t>(1, kMinWorkPerThread / std::max<int64_t>(1, T * work_per_step));
}

// n rounded up to whole 64-byte vectors of Real: the row length of the padded weight copies and
// accumulators, so that each row is one pass of whole vectors. The scratch sizes use the widest
// padding (float's).
template <typename Real = float>
int64_t padded(int64_t n) {
    constexpr int64_t lanes = 64 / int64_t(sizeof(Real));
    return (n + lanes - 1) / lanes * lanes;
}

// The record's length: its steps [0, length) are real, the rest padding.
inline int64_t length_of(const int64_t* lengths, int64_t n, int64_t T) {
    return lengths ? lengths[n] : T;
}

}  // namespace

int64_t param_count(const Net& net) {
    const CellSizes cs = cell_sizes(net.cell);
    int64_t P = net.O * net.H + (net.bias ? net.O : 0);
    for (int64_t l = 0; l < net.L; ++l) P += layer_size(net, cs, l);
    return P;
}

template <typename Real>
void zero_buffer(Real* buffer, int64_t n) {
    std::fill(buffer, buffer + n, Real(0));
}

namespace {

// The forward pass accumulates each step's products in place in the cache (no A_x, A_h
// buffers) when the cache is the pre-activation and the cell needs only A_x + A_h: the RNN
// cell. Except for a batch of fewer records than a tile has rows when G·H is not a whole
// number of vectors: its product would end each row with a part of a vector, a chain of
// dependent multiply-adds of its own after the row's whole vectors; padded rows (and the copies
// they cost) are faster then. Float's padding is the wider: its answer holds for double too.
constexpr int64_t kTileRows = 6;

template <typename Real>
bool forward_in_place(const CellSizes& cs, int64_t N, int64_t GH) {
    return cs.sums_projections && cs.cache == cs.gates &&
           (N >= kTileRows || GH == padded<Real>(GH));
}

// W^T of more bytes than this does not stay in a core's L1 data cache (32-48 KiB) from one step
// to the next.
constexpr int64_t kL1Bytes = 32 * 1024;

// acc (rows, cols) += h_prev (rows, H) W^T (H, cols): a step's recurrent product. A batch of
// fewer records than the level's tile streams all of W^T at every step (gemm_tiled), and when
// W^T does not fit in L1 every step would read it all from L2 (W1's 100 x 104 doubles: 83 KB).
// So the columns go in two halves, in alternate orders at alternate steps: the half a step
// reads last is still in L1 when the next step reads it first (the matrix-vector chain alone:
// benchmarks/kernels, `run.sh chain`). Each column is still one sum over k in increasing
// order: the same bits in either order.
template <typename Real>
void recurrent_product(Real* acc, int64_t ld_acc, const Real* h_prev, int64_t ld_prev,
                       const PackedB<Real>& w, int64_t rows, int64_t cols, int64_t H,
                       int64_t t) {
    constexpr int64_t lanes = 64 / int64_t(sizeof(Real));
    if (rows >= tile_rows(w.isa) || H * cols * int64_t(sizeof(Real)) <= kL1Bytes ||
        cols < 2 * lanes)
        return gemm_accumulate_packed(acc, ld_acc, h_prev, ld_prev, w, rows, cols, H);
    const int64_t split = cols / lanes / 2 * lanes;   // whole vectors on the left
    const int64_t c0[2] = {0, split}, nc[2] = {split, cols - split};
    for (int64_t i = 0; i < 2; ++i) {
        const int64_t half = (t + i) % 2;
        const PackedB<Real> part{w.B + c0[half], w.ldb, nullptr, w.isa};
        gemm_accumulate_packed(acc + c0[half], ld_acc, h_prev, ld_prev, part, rows, nc[half],
                               H);
    }
}

}  // namespace

int64_t forward_work_size(int64_t N, int64_t T, const Net& net) {
    const CellSizes cs = cell_sizes(net.cell);
    const int64_t GH = cs.gates * net.H;
    // A_x and acc rows for the records that are not in place: every record of a cell that
    // never is; for the RNN cell, a batch of fewer than kTileRows records may not be, so room
    // for kTileRows - 1 of them whatever N, that the size never shrinks as N grows (a caller
    // sizes once for its largest batch: train_epoch's last minibatch may be smaller)
    int64_t apart = 0;
    if (!forward_in_place<float>(cs, kTileRows, GH))
        apart = N;
    else if (!forward_in_place<float>(cs, 1, GH))
        apart = std::min(N, kTileRows - 1);
    return std::max(net.I, net.H) * GH + 2 * net.H * padded(GH) + net.H * net.O +
           cs.state * net.H + apart * (T * GH + padded(GH));
}

int64_t backward_work_size(int64_t N, int64_t T, const Net& net, bool return_sequences) {
    const CellSizes cs = cell_sizes(net.cell);
    const int64_t H = net.H, GH = cs.gates * H, Hp = padded(H);
    return N * (return_sequences ? T : 1) * net.O   // dy
           + 3 * N * T * H                           // injections: top, and two to pass down
           + 2 * N * cs.state * Hp                   // dstate, dstate_prev
           + 2 * N * GH                              // one step's Δx, Δh
           + net.L * GH * net.H                      // every layer's W, packed
           + (cs.separate_dh ? 2 : 1) * net.L * N * T * GH   // every layer's Δx (Δh) summed
           + N * T * H + N * T * std::max(net.I, H)  // h_{s-1} and x_s packed
           + cs.state * H;                           // a zero state
}

namespace {

// `kept` is the number of steps of each record's cache that hidden_states holds: T, or (one
// layer, many-to-one: forward_kept_steps) 2, step t then in slot t % 2 over step t - 2's.
// `CS` (>= C·H) is the scalars from one step's cache to the next step's (cache_stride).
template <typename Cell, typename Real>
void forward_cell(Real* hidden_states, Real* outputs, Real* final_state, const Real* X,
                  const Real* h0, const Real* params, const int64_t* lengths, int64_t N,
                  int64_t T, const Net& net, bool return_sequences, int64_t kept, int64_t CS,
                  Real* work) {
    const int64_t H = net.H, O = net.O, L = net.L;
    const int64_t GH = Cell::gates * H, GHp = padded<Real>(GH);
    const int64_t SH = Cell::state * H, CH = Cell::cache * H;
    const int64_t ld = kept * CS;               // from one record's cache to the next record's
    const auto slot = [&](int64_t t) { return (t % kept) * CS; };   // step t in a record's cache
    Real* UT = work;                            // (In, G·H) = U^T: A_x (T, G·H) = x (T, In) U^T
    Real* WT = UT + std::max(net.I, H) * GH;    // (H, cols) = W^T, zero-padded to `cols`
    Real* WT_packed = WT + H * GHp;             // WT packed for the per-step products
    Real* VT = WT_packed + H * GHp;             // (H, O) = V^T: y (rows, O) = h (rows, H) V^T + c
    Real* zero_state = VT + H * O;              // (S·H,): the state before step 1 without h0
    Real* Ax = zero_state + SH;                 // (N, T, G·H): the input projection of every step
    Real* acc = Ax + N * T * GH;                // (N, G·Hp): A_h of each record, padded
    zero_buffer(zero_state, SH);
    // In place (forward_in_place), the products accumulate in the cache over G·H columns, and
    // Ax and acc are not there. Otherwise A_h goes to acc's rows, padded to G·Hp columns.
    const bool in_place = forward_in_place<Real>(cell_sizes(net.cell), N, GH);
    const int64_t cols = in_place ? GH : GHp;   // the columns of each step's product

    for (int64_t l = 0; l < L; ++l) {
        const LayerParams<const Real> p = layer_params(params, net, l);
        const int64_t In = p.In;
        // layer 0 reads X; layer l reads the h of layer l-1's cache
        const Real* input = l == 0 ? X : hidden_states + (l - 1) * N * ld;
        const int64_t ld_in = l == 0 ? In : CS;  // from one step's input to the next
        Real* cache = hidden_states + l * N * ld;
        transpose(UT, GH, p.U, In, In, GH);
        transpose(WT, cols, p.W, H, H, GH);
        for (int64_t r = 0; r < H; ++r) zero_buffer(WT + r * cols + GH, cols - GH);
        const PackedB<Real> w = pack_b(WT_packed, static_cast<const Real*>(WT), cols, H, cols,
                                       current_isa_level(), N);
        const Real* state0 = h0 ? h0 + l * SH : nullptr;   // row stride L·S·H

        // Records are independent: each thread runs its own rows through every step.
        parallel_for(N, min_rows_per_thread(T, GH * (H + In)), [&](int64_t n0, int64_t n1) {
            const int64_t rows = n1 - n0;
            // A_x = U x_t + b_ih, (N, T, G·H); in place, in the cache itself. Step by step for
            // all the rows when they fill a tile or the input is one value: the rows are then
            // still in cache for the step's product, and the cache of a large batch is not
            // written and read twice more from memory; and always when the cache keeps two
            // steps (in place, A_x of every step would not fit in it). Otherwise for all the
            // steps of a record at once: one product of T rows rather than T that would each
            // stream U.
            const bool ax_by_step = rows >= kTileRows || In == 1 || kept < T;
            // step by step, a cell that needs only A_x + A_h gets A_x in its a_t rows
            // themselves (in place, the cache; else acc's), where A_h is then added: no copy
            const bool ax_in_acc = ax_by_step && Cell::sums_projections;
            if (!ax_by_step)   // (here kept == T: in place, record n's cache rows at n ld)
                for (int64_t n = n0; n < n1; ++n) {
                    Real* ax = in_place ? cache + n * ld : Ax + n * T * GH;
                    const int64_t ld_ax = in_place ? CS : GH;
                    fill_rows(ax, ld_ax, p.b_ih, T, GH);
                    gemm_accumulate(ax, ld_ax, input + n * T * ld_in, ld_in, UT, GH, T, GH, In);
                }
            Real* acc_r = in_place ? cache + n0 * ld : acc + n0 * GHp;   // a_t's rows
            const int64_t ld_acc = in_place ? ld : GHp;
            if (!in_place) fill_rows(acc_r, GHp, static_cast<const Real*>(nullptr), rows, GHp);
            for (int64_t t = 0; t < T; ++t) {
                const int64_t at = slot(t), at_prev = t > 0 ? slot(t - 1) : 0;
                if (ax_by_step) {   // A_x of this step's rows, one product for them all
                    Real* ax_t = ax_in_acc ? acc_r + (in_place ? at : 0)
                                           : Ax + (n0 * T + t) * GH;
                    const int64_t ld_ax = ax_in_acc ? ld_acc : T * GH;
                    const Real* x_t = input + (n0 * T + t) * ld_in;
                    if (In == 1 && !plain_loops()) {   // b_ih + x_t u^T in one pass
                        set_outer_plus_bias(ax_t, ld_ax, x_t, T * ld_in, UT, p.b_ih, rows, GH);
                    } else {
                        fill_rows(ax_t, ld_ax, p.b_ih, rows, GH);
                        gemm_accumulate(ax_t, ld_ax, x_t, T * ld_in, UT, GH, rows, GH, In);
                    }
                }
                // A_h = W h_{t-1} + b_hh (plus A_x when the cell only needs the sum)
                for (int64_t n = n0; n < n1; ++n) {
                    Real* a = acc_r + (n - n0) * ld_acc + (in_place ? at : 0);
                    const Real* ax = Ax + (n * T + t) * GH;
                    if (!in_place && !Cell::sums_projections) {
                        fill_rows(a, GH, p.b_hh, 1, GH);          // A_h starts at b_hh (or 0)
                        continue;
                    }
                    if (!in_place && !ax_in_acc) std::copy(ax, ax + GH, a);
                    if (p.b_hh)
                        for (int64_t j = 0; j < GH; ++j) a[j] += p.b_hh[j];
                }
                const Real* h_prev = t > 0 ? cache + n0 * ld + at_prev
                                           : (state0 ? state0 + n0 * L * SH : nullptr);
                const int64_t ld_prev = t > 0 ? ld : L * SH;
                if (h_prev)
                    recurrent_product(acc_r + (in_place ? at : 0), ld_acc, h_prev, ld_prev, w,
                                      rows, cols, H, t);
                for (int64_t n = n0; n < n1; ++n) {
                    Real* c = cache + n * ld + at;
                    if (t >= length_of(lengths, n, T)) {   // padding: the state stays
                        const Real* c_prev = cache + n * ld + at_prev;
                        std::copy(c_prev, c_prev + CH, c);
                        continue;
                    }
                    const Real* state_prev =
                        h_prev ? h_prev + (n - n0) * ld_prev : zero_state;
                    Real* a = in_place ? c : acc + n * GHp;
                    Cell::forward_row(c, in_place ? c : Ax + (n * T + t) * GH, a, state_prev, H,
                                      net.act);
                }
            }
        });
    }

    // The output layer reads the top layer's h (its state frozen after each record's length).
    const auto [V, c] = output_params(params, net);
    transpose(VT, O, V, H, H, O);
    const Real* top = hidden_states + (L - 1) * N * ld;
    parallel_for(N, min_rows_per_thread(T, H * O), [&](int64_t n0, int64_t n1) {
        if (return_sequences) {
            for (int64_t n = n0; n < n1; ++n) {
                Real* y = outputs + n * T * O;
                fill_rows(y, O, c, T, O);
                gemm_accumulate(y, O, top + n * ld, CS, VT, O, T, O, H);
                const int64_t len = length_of(lengths, n, T);
                zero_buffer(y + len * O, (T - len) * O);   // padded steps output 0
            }
        } else {
            Real* y = outputs + n0 * O;
            fill_rows(y, O, c, n1 - n0, O);
            gemm_accumulate(y, O, top + n0 * ld + slot(T - 1), ld, VT, O, n1 - n0, O, H);
        }
    });
    if (final_state)
        for (int64_t n = 0; n < N; ++n)
            for (int64_t l = 0; l < L; ++l) {
                const Real* s = hidden_states + l * N * ld + n * ld + slot(T - 1);
                std::copy(s, s + SH, final_state + (n * L + l) * SH);
            }
}

// One backward step of `rows` records through Cell::backward_row (pointers at the first row).
template <typename Real>
struct StepRows {
    Real* dx;               // Δx, then Δh, of each row: row stride ld_step
    Real* dh;
    int64_t ld_step;
    Real* ds_prev;          // the state's gradient before and after the step: row stride DS
    const Real* ds;
    int64_t DS, Hp;
    const Real* cache;      // the step's cache: row stride ld
    int64_t ld;
    const Real* prev;       // the state before the step: row stride ld_prev (0: one shared row)
    int64_t ld_prev;
    int64_t rows, H;
    Activation act;
};

// Asks for record r's lines of one backward step before they are used: its cache row, T·C·H
// scalars from the record before's (read), and its rows of Δ (written; as far apart when the
// sweep writes Δ itself, next to each other in a truncated sweep's step buffer). Without the
// hint each line of Δ is a store miss that must first read the line, from L3 for a batch
// whose caches and Δ outgrow L2 (W2 and W3 train 2-4% faster with it).
template <typename Cell, typename Real>
__attribute__((always_inline)) inline void prefetch_next_row(const StepRows<Real>& a,
                                                             int64_t r) {
    constexpr int64_t line = 64 / int64_t(sizeof(Real));
    for (int64_t j = 0; j < Cell::cache * a.H; j += line)
        __builtin_prefetch(a.cache + r * a.ld + j);
    for (int64_t j = 0; j < Cell::gates * a.H; j += line) {
        __builtin_prefetch(a.dx + r * a.ld_step + j, 1);
        if (Cell::separate_dh) __builtin_prefetch(a.dh + r * a.ld_step + j, 1);
    }
}

// The loop over the rows, compiled once per instruction-set level (flattened: the cell's loops
// are inlined and vectorized at the level; they are elementwise and this file does not fuse
// multiply-adds, so every level computes the same bits).
#define RNNKIT_ROWS_LEVEL(name, attributes)                                                      \
    template <typename Cell, typename Real>                                                    \
    attributes __attribute__((flatten)) void name##_backward_rows(const StepRows<Real>& a) {   \
        for (int64_t r = 0; r < a.rows; ++r) {                                                 \
            if (r + 1 < a.rows)                                                                \
                prefetch_next_row<Cell>(a, r + 1);                                             \
            Cell::backward_row(a.dx + r * a.ld_step, a.dh + r * a.ld_step, a.ds_prev + r * a.DS, \
                               a.ds + r * a.DS, a.Hp, a.cache + r * a.ld,                      \
                               a.prev + r * a.ld_prev, a.H, a.act);                            \
        }                                                                                      \
    }
RNNKIT_AT_EVERY_LEVEL(RNNKIT_ROWS_LEVEL)
#undef RNNKIT_ROWS_LEVEL

template <typename Cell, typename Real>
void backward_rows(const StepRows<Real>& a) {
    RNNKIT_AT_LEVEL(backward_rows<Cell>, a)
}

template <typename Cell, typename Real>
double backward_cell(Real* grad, const Real* X, const Real* Y, const Real* h0,
                     const Real* params, const Real* hidden_states, const Real* outputs,
                     const int64_t* lengths, int64_t N, int64_t T, const Net& net,
                     bool return_sequences, int64_t k, int64_t CS, Real* work,
                     bool set_grad) {
    const int64_t H = net.H, O = net.O, L = net.L, I = net.I;
    const int64_t GH = Cell::gates * H, Hp = padded<Real>(H);
    const int64_t SH = Cell::state * H, DS = Cell::state * Hp;
    const int64_t ld = T * CS;                  // from one record's cache to the next record's
    const int64_t TH = T * H;
    const bool full = k < 0 || k >= T - 1;
    // many-to-many and truncated: each loss term sweeps its own window through every layer
    const bool per_term = return_sequences && !full;
    const int64_t n_dy = N * (return_sequences ? T : 1) * O;

    Real* dy = work;                          // shaped like Y: dL/dy, 0 at padded steps
    Real* inj_top = dy + n_dy;                // (N, T, H): dy_t V, the top layer's injections
    Real* inj_pass[2] = {inj_top + N * TH, inj_top + 2 * N * TH};  // (N, T, H): dx of a layer
    Real* dstate = inj_pass[1] + N * TH;      // (N, S·Hp): gradient reaching the state (dh, dc)
    Real* dstate_prev = dstate + N * DS;      // (N, S·Hp): the same, one step earlier
    Real* dxs = dstate_prev + N * DS;         // (N, G·H): one step's Δx
    Real* dhs = dxs + N * GH;                 // (N, G·H): one step's Δh (separate_dh)
    Real* W_packed = dhs + N * GH;            // (L, G·H·H): each layer's W packed
    Real* Delta_x = W_packed + L * GH * H;    // (L, N, T, G·H): Δx summed over loss terms
    // (L, N, T, G·H): Δh summed, when the cell keeps it apart from Δx (else Δx itself)
    Real* Delta_h = Cell::separate_dh ? Delta_x + L * N * T * GH : Delta_x;
    Real* Hprev = Delta_h + L * N * T * GH;   // (N·T, H): h_{s-1} packed for the products
    Real* Xs = Hprev + N * TH;                // (N·T, In): x_s packed
    Real* zero_state = Xs + N * T * std::max(I, H);   // (S·H,)
    zero_buffer(zero_state, SH);
    // set_grad: every part of grad but the layers' W is cleared here (the phase-2 product that
    // comes first writes W's rows)
    if (set_grad) {
        for (int64_t l = 0; l < L; ++l) {
            const LayerParams<Real> g = layer_params(grad, net, l);
            zero_buffer(g.U, GH * g.In);
            if (g.b_ih) zero_buffer(g.b_ih, GH);
            if (g.b_hh) zero_buffer(g.b_hh, GH);
        }
        const auto [gV, gc] = output_params(grad, net);
        zero_buffer(gV, O * H);
        if (gc) zero_buffer(gc, O);
    }

    // loss and dL/dy = 2 (y - Y) / count over the valid targets
    int64_t count = 0;
    for (int64_t n = 0; n < N; ++n) count += return_sequences ? length_of(lengths, n, T) : 1;
    count *= O;
    double sum_sq = 0.0;
    const Real scale = Real(2.0 / double(count));
    for (int64_t n = 0; n < N; ++n) {
        const int64_t len = length_of(lengths, n, T);
        const int64_t valid = return_sequences ? len * O : O, row = return_sequences ? T * O : O;
        for (int64_t e = n * row; e < n * row + valid; ++e) {
            const Real diff = outputs[e] - Y[e];
            sum_sq += double(diff * diff);
            dy[e] = scale * diff;
        }
        zero_buffer(dy + n * row + valid, row - valid);
    }

    // The first step of record n's window when there is one loss term per record.
    auto window_start = [&](int64_t n) {
        return full ? int64_t(0) : std::max<int64_t>(length_of(lengths, n, T) - 1 - k, 0);
    };
    // Only steps from first_step on can receive gradient: the buffers below are cleared and
    // read from there.
    int64_t first_step = T - 1;
    for (int64_t n = 0; n < N; ++n)
        first_step = std::min(first_step, per_term ? 0 : window_start(n));

    // The output layer: dV += dy_t h_t^T, dc += dy_t at every valid target step; the top
    // layer's injections dy_t V.
    const auto [V, c] = output_params(params, net);
    const auto [dV, dc] = output_params(grad, net);
    const Real* top = hidden_states + (L - 1) * N * ld;
    // Many-to-one, the top layer's sweep reads each record's injection at its last step only:
    // just that row is cleared; many-to-many, every step that can receive gradient.
    for (int64_t n = 0; n < N; ++n) {
        const int64_t len = length_of(lengths, n, T);
        if (return_sequences)
            zero_buffer(inj_top + n * TH + first_step * H, (T - first_step) * H);
        else
            zero_buffer(inj_top + n * TH + (len - 1) * H, H);
        for (int64_t t = return_sequences ? 0 : len - 1; t < len; ++t) {
            const Real* gy = return_sequences ? dy + (n * T + t) * O : dy + n * O;
            const Real* h = top + n * ld + t * CS;
            for (int64_t o = 0; o < O; ++o) {
                Real* dVo = dV + o * H;
                for (int64_t j = 0; j < H; ++j) dVo[j] += gy[o] * h[j];
            }
            if (dc)
                for (int64_t o = 0; o < O; ++o) dc[o] += gy[o];
            gemm_accumulate(inj_top + n * TH + t * H, H, gy, O, V, H, 1, H, O);
        }
    }

    // each layer's W, packed once for the products of every step (dh_prev += Δh W, or = for
    // the Elman cell); nothing is packed when no product has a tile's rows (then they read W
    // itself)
    const Isa isa = current_isa_level();
    bool w_packed = false;
    for (int64_t l = 0; l < L; ++l)
        w_packed = pack_b(W_packed + l * GH * H, layer_params(params, net, l).W, H, GH, H, isa, N)
                       .panels != nullptr;

    // One backward sweep of layer l over steps s_hi down to s_lo, for records n0..n1: at each
    // step the injection inj[n, s] (for s in [inj_lo, inj_hi]; with `at_last_only`, only at the
    // record's last step) is added to dh, the cell turns the state's gradient into Δx, Δh, and
    // the previous state's gradient is its direct part plus Δh W. With `per_row_start`, a
    // record's gradient stops at its own window's first step. dx_out[n, s] = Δx U, the gradient
    // of the layer's input (if given).
    // `direct`: every (record, step) is visited once, so the cell writes Δ straight into Delta
    // (cleared beforehand) and dx_out is one product per record after the sweep; otherwise Δ
    // goes through a step buffer and is added into Delta (the truncated terms overlap).
    auto sweep = [&](int64_t l, int64_t n0, int64_t n1, int64_t s_hi, int64_t s_lo,
                     bool per_row_start, bool direct, const Real* inj, int64_t inj_lo,
                     int64_t inj_hi, bool at_last_only, Real* dx_out) {
        const int64_t rows = n1 - n0;
        const LayerParams<const Real> p = layer_params(params, net, l);
        const PackedB<Real> w{p.W, H, w_packed ? W_packed + l * GH * H : nullptr, isa};
        const Real* cache = hidden_states + l * N * ld;
        const Real* state0 = h0 ? h0 + l * SH : nullptr;
        Real* Dx = Delta_x + l * N * T * GH;
        Real* Dh = Delta_h + l * N * T * GH;        // Dx itself unless separate_dh
        Real* ds = dstate + n0 * DS;
        Real* ds_prev = dstate_prev + n0 * DS;
        const int64_t ld_step = direct ? T * GH : GH;   // from one record's Δ to the next's
        zero_buffer(ds, rows * DS);
        zero_buffer(ds_prev, rows * DS);
        for (int64_t s = s_hi; s >= s_lo; --s) {
            if (s >= inj_lo && s <= inj_hi)
                for (int64_t r = 0; r < rows; ++r) {
                    if (at_last_only && s != length_of(lengths, n0 + r, T) - 1) continue;
                    const Real* g = inj + (n0 + r) * TH + s * H;
                    Real* d = ds + r * DS;
                    for (int64_t j = 0; j < H; ++j) d[j] += g[j];
                }
            Real* dx = direct ? Dx + (n0 * T + s) * GH : dxs + n0 * GH;
            Real* dh = direct ? Dh + (n0 * T + s) * GH
                              : (Cell::separate_dh ? dhs + n0 * GH : dx);
            {
                const bool first = s == 0;   // the state before: h0's rows, or zero
                const Real* prev = !first ? cache + n0 * ld + (s - 1) * CS
                                          : (state0 ? state0 + n0 * L * SH : zero_state);
                const int64_t ld_prev = !first ? ld : (state0 ? L * SH : 0);
                backward_rows<Cell>(StepRows<Real>{dx, dh, ld_step, ds_prev, ds, DS, Hp,
                                                   cache + n0 * ld + s * CS, ld, prev, ld_prev,
                                                   rows, H, net.act});
            }
            if (!direct) {
                for (int64_t r = 0; r < rows; ++r) {
                    Real* D = Dx + ((n0 + r) * T + s) * GH;
                    for (int64_t j = 0; j < GH; ++j) D[j] += dx[r * GH + j];
                    if (Cell::separate_dh) {
                        Real* E = Dh + ((n0 + r) * T + s) * GH;
                        for (int64_t j = 0; j < GH; ++j) E[j] += dh[r * GH + j];
                    }
                }
                if (dx_out) {
                    Real* out = dx_out + n0 * TH + s * H;
                    fill_rows(out, TH, static_cast<const Real*>(nullptr), rows, H);
                    gemm_accumulate(out, TH, dx, GH, p.U, H, rows, H, GH);
                }
            }
            if (s == s_lo) break;
            if constexpr (Cell::state_only_via_W)   // dstate_prev = Δh W
                gemm_set_packed(ds_prev, DS, dh, ld_step, w, rows, H, GH);
            else                                    // backward_row's part + Δh W
                gemm_accumulate_packed(ds_prev, DS, dh, ld_step, w, rows, H, GH);
            if (per_row_start)          // the state before a record's window is a constant
                for (int64_t r = 0; r < rows; ++r)
                    if (window_start(n0 + r) == s) zero_buffer(ds_prev + r * DS, DS);
            std::swap(ds, ds_prev);
        }
        if (direct && dx_out)           // dx = Δx U over the whole sweep, record by record
            for (int64_t n = n0; n < n1; ++n) {
                Real* out = dx_out + n * TH + s_lo * H;
                const int64_t steps = s_hi - s_lo + 1;
                zero_buffer(out, steps * H);
                gemm_accumulate(out, H, Dx + (n * T + s_lo) * GH, GH, p.U, H, steps, H, GH);
            }
    };

    // Clears every layer's Δ at steps [a, b) of records n0..n1 (the sweeps add into Δ, or, when
    // direct, write the steps they visit).
    auto clear_deltas = [&](int64_t n0, int64_t n1, int64_t a, int64_t b) {
        if (a >= b) return;
        for (int64_t l = 0; l < L; ++l)
            for (int64_t n = n0; n < n1; ++n) {
                zero_buffer(Delta_x + ((l * N + n) * T + a) * GH, (b - a) * GH);
                if (Cell::separate_dh)
                    zero_buffer(Delta_h + ((l * N + n) * T + a) * GH, (b - a) * GH);
            }
    };

    // Phase 1, records independent: every layer's Δ from the top down.
    const int64_t work_per_step = L * GH * (H + std::max(I, H));
    parallel_for(N, min_rows_per_thread(T, work_per_step), [&](int64_t n0, int64_t n1) {
        if (!per_term) {
            // one sweep per layer over the records' windows, the layer above's dx injected
            int64_t s_hi = 0, s_lo = T - 1;
            for (int64_t n = n0; n < n1; ++n) {
                s_hi = std::max(s_hi, length_of(lengths, n, T) - 1);
                s_lo = std::min(s_lo, window_start(n));
            }
            clear_deltas(n0, n1, first_step, s_lo);     // the steps the sweeps do not visit
            clear_deltas(n0, n1, s_hi + 1, T);
            for (int64_t l = L - 1; l >= 0; --l) {
                const Real* inj = l == L - 1 ? inj_top : inj_pass[(L - 2 - l) % 2];
                Real* dx_out = l > 0 ? inj_pass[(L - 1 - l) % 2] : nullptr;
                sweep(l, n0, n1, s_hi, s_lo, !full, true, inj, 0, T - 1,
                      l == L - 1 && !return_sequences, dx_out);
            }
        } else {
            // truncated many-to-many: the term of each step t sweeps t-k .. t in every layer
            clear_deltas(n0, n1, 0, T);
            for (int64_t t = 0; t < T; ++t) {
                const int64_t lo = std::max<int64_t>(t - k, 0);
                for (int64_t l = L - 1; l >= 0; --l) {
                    const bool is_top = l == L - 1;
                    const Real* inj = is_top ? inj_top : inj_pass[(L - 2 - l) % 2];
                    Real* dx_out = l > 0 ? inj_pass[(L - 1 - l) % 2] : nullptr;
                    sweep(l, n0, n1, t, lo, false, false, inj, is_top ? t : lo, t, false,
                          dx_out);
                }
            }
        }
    });

    // Phase 2, per layer, rows of the weight gradients independent, each one product over
    // every (record, step) pair q that can hold gradient: dW += Δh^T h_{s-1}, dU += Δx^T x_s,
    // db_ih += Σ Δx, db_hh += Σ Δh. The pairs are record-major from first_step on.
    // When every step can hold gradient (first_step = 0), the products read x_s and h_{s-1}
    // where they are (X or the layer below's cache, and this layer's cache one row back);
    // otherwise, and for x when padded steps must not be read, they are packed first.
    const int64_t steps = T - first_step, NS = N * steps;
    const bool contiguous = first_step == 0;
    const bool pack_x = !contiguous || lengths;
    for (int64_t l = 0; l < L; ++l) {
        const LayerParams<const Real> p = layer_params(params, net, l);
        const LayerParams<Real> g = layer_params(grad, net, l);
        const int64_t In = p.In;
        const Real* cache = hidden_states + l * N * ld;
        const Real* input = l == 0 ? X : hidden_states + (l - 1) * N * ld;
        const int64_t ld_in = l == 0 ? In : CS;
        const Real* state0 = h0 ? h0 + l * SH : nullptr;
        if (pack_x)
            parallel_for(N, min_rows_per_thread(steps, H + In), [&](int64_t n0, int64_t n1) {
                for (int64_t n = n0; n < n1; ++n)
                    for (int64_t s = first_step; s < T; ++s) {
                        const int64_t q = n * steps + s - first_step;
                        if (!contiguous) {
                            const Real* h_prev =
                                s > 0 ? cache + n * ld + (s - 1) * CS
                                      : (state0 ? state0 + n * L * SH : zero_state);
                            std::copy(h_prev, h_prev + H, Hprev + q * H);
                        }
                        // A padded step's Δx is 0, but its x may be anything (NaN, Inf) that
                        // 0 * x would spread into dU: the product must not read it.
                        const Real* x = input + (n * T + s) * ld_in;
                        if (s < length_of(lengths, n, T))
                            std::copy(x, x + In, Xs + q * In);
                        else
                            zero_buffer(Xs + q * In, In);
                    }
            });
        const Real* xs = pack_x ? Xs : input;
        const int64_t ld_xs = pack_x ? In : ld_in;
        Real* Dx = Delta_x + l * N * T * GH;
        Real* Dh = Delta_h + l * N * T * GH;        // Dx itself unless separate_dh
        const int64_t work_per_row = std::max<int64_t>(1, NS * (H + In));
        parallel_for(GH, std::max<int64_t>(8, kMinWorkPerThread / work_per_row),
                     [&](int64_t r0, int64_t r1) {
            const int64_t rows = r1 - r0;
            const int64_t blocks = contiguous ? 1 : N;          // runs of contiguous pairs q
            const int64_t run = NS / blocks;
            // dW's rows: the first product into them sets them with set_grad
            bool w_set = !set_grad;
            const auto add_to_w = [&](const Real* A, int64_t lda, const Real* B, int64_t ldb,
                                      int64_t K) {
                if (w_set)
                    gemm_accumulate_at(g.W + r0 * H, H, A, lda, B, ldb, rows, H, K);
                else
                    gemm_set_at(g.W + r0 * H, H, A, lda, B, ldb, rows, H, K);
                w_set = true;
            };
            for (int64_t block = 0; block < blocks; ++block) {
                const int64_t q0 = block * run;
                const Real* dxb = Dx + (block * T + first_step) * GH + r0;   // (run, rows)
                const Real* dhb = Dh + (block * T + first_step) * GH + r0;
                if (In == 1)   // dU^T (1, rows) += x^T Δx: one row of vectors, not a column
                    gemm_accumulate_at(g.U + r0, rows, xs + q0 * ld_xs, ld_xs, dxb, GH, 1, rows,
                                       run);
                else
                    gemm_accumulate_at(g.U + r0 * In, In, dxb, GH, xs + q0 * ld_xs, ld_xs, rows,
                                       In, run);
                if (g.b_ih && g.b_hh && dxb == dhb) {
                    add_column_sums(g.b_ih + r0, g.b_hh + r0, dxb, GH, run, rows);
                } else {
                    if (g.b_ih) add_column_sums(g.b_ih + r0, (Real*)nullptr, dxb, GH, run, rows);
                    if (g.b_hh) add_column_sums(g.b_hh + r0, (Real*)nullptr, dhb, GH, run, rows);
                }
                if (!contiguous) add_to_w(dhb, GH, Hprev + q0 * H, H, run);
            }
            if (contiguous) {
                // step 0 pairs with h0 (nothing without one); then every step s >= 1 with the
                // cache row before it, in one product over the pairs q = 1 .. N·T-1, with this
                // thread's columns of Δh at each record's step 0 cleared first (there the row
                // before is the previous record's last state). Δ is not read after this.
                if (state0) add_to_w(Dh + r0, T * GH, state0, L * SH, N);
                for (int64_t n = 0; n < N; ++n) zero_buffer(Dh + n * T * GH + r0, rows);
                add_to_w(Dh + GH + r0, GH, cache, CS, N * T - 1);
            }
        });
    }
    return sum_sq / double(count);
}

// The scalars from one step's cache to the next: `cache_stride`, or C·H if it is 0.
int64_t step_stride(const Net& net, int64_t cache_stride) {
    return cache_stride > 0 ? cache_stride : cell_sizes(net.cell).cache * net.H;
}

// network_forward with `kept` steps of each record's cache (forward_cell).
template <typename Real>
void forward_kept(Real* hidden_states, Real* outputs, Real* final_state, const Real* X,
                  const Real* h0, const Real* params, const int64_t* lengths, int64_t N,
                  int64_t T, const Net& net, bool return_sequences, int64_t kept,
                  int64_t cache_stride, Real* work) {
    const int64_t CS = step_stride(net, cache_stride);
    switch (net.cell) {
#define RNNKIT_FORWARD(Enum, Struct, name)                                                    \
    case Cell::Enum:                                                                          \
        return forward_cell<Struct>(hidden_states, outputs, final_state, X, h0, params,       \
                                    lengths, N, T, net, return_sequences, kept, CS, work);
        RNNKIT_CELLS(RNNKIT_FORWARD)
#undef RNNKIT_FORWARD
    }
}

}  // namespace

int64_t forward_kept_steps(int64_t T, const Net& net, bool return_sequences) {
    // every step of every layer when a layer above or the outputs read them; else the step
    // being computed and the one it reads
    return net.L == 1 && !return_sequences ? std::min<int64_t>(T, 2) : T;
}

namespace {

// Scalars of network_predict's caches, (L, N, kept, C·H), at the front of its scratch.
int64_t predict_cache_size(int64_t N, int64_t T, const Net& net, bool return_sequences) {
    return net.L * N * forward_kept_steps(T, net, return_sequences) *
           cell_sizes(net.cell).cache * net.H;
}

}  // namespace

int64_t predict_work_size(int64_t N, int64_t T, const Net& net, bool return_sequences) {
    return predict_cache_size(N, T, net, return_sequences) + forward_work_size(N, T, net);
}

template <typename Real>
void network_forward(Real* hidden_states, Real* outputs, Real* final_state, const Real* X,
                     const Real* h0, const Real* params, const int64_t* lengths, int64_t N,
                     int64_t T, const Net& net, bool return_sequences, Real* work,
                     int64_t cache_stride) {
    forward_kept(hidden_states, outputs, final_state, X, h0, params, lengths, N, T, net,
                 return_sequences, T, cache_stride, work);
}

template <typename Real>
void network_predict(Real* outputs, Real* final_state, const Real* X, const Real* h0,
                     const Real* params, const int64_t* lengths, int64_t N, int64_t T,
                     const Net& net, bool return_sequences, Real* work) {
    Real* caches = work;                  // then forward_work_size's scratch
    Real* scratch = caches + predict_cache_size(N, T, net, return_sequences);
    forward_kept(caches, outputs, final_state, X, h0, params, lengths, N, T, net,
                 return_sequences, forward_kept_steps(T, net, return_sequences), 0, scratch);
}

template <typename Real>
double network_backward(Real* grad, const Real* X, const Real* Y, const Real* h0,
                        const Real* params, const Real* hidden_states, const Real* outputs,
                        const int64_t* lengths, int64_t N, int64_t T, const Net& net,
                        bool return_sequences, int64_t k, Real* work, int64_t cache_stride,
                        bool set_grad) {
    const int64_t CS = step_stride(net, cache_stride);
    switch (net.cell) {
#define RNNKIT_BACKWARD(Enum, Struct, name)                                                   \
    case Cell::Enum:                                                                          \
        return backward_cell<Struct>(grad, X, Y, h0, params, hidden_states, outputs, lengths, \
                                     N, T, net, return_sequences, k, CS, work, set_grad);
        RNNKIT_CELLS(RNNKIT_BACKWARD)
#undef RNNKIT_BACKWARD
    }
    return 0.0;
}

#define RNNKIT_INSTANTIATE(Real)                                                              \
    template void zero_buffer(Real*, int64_t);                                                 \
    template void network_forward(Real*, Real*, Real*, const Real*, const Real*, const Real*,  \
                                  const int64_t*, int64_t, int64_t, const Net&, bool, Real*,   \
                                  int64_t);                                                    \
    template void network_predict(Real*, Real*, const Real*, const Real*, const Real*,          \
                                  const int64_t*, int64_t, int64_t, const Net&, bool, Real*);  \
    template double network_backward(Real*, const Real*, const Real*, const Real*,             \
                                     const Real*, const Real*, const Real*, const int64_t*,    \
                                     int64_t, int64_t, const Net&, bool, int64_t, Real*,      \
                                     int64_t, bool);
RNNKIT_INSTANTIATE(float)
RNNKIT_INSTANTIATE(double)
#undef RNNKIT_INSTANTIATE

}  // namespace rnnkit
