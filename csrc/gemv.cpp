// y += M^T v, the matrix-vector product under every recurrent step (see rnnkit.h).
// Two versions that round identically: each y[j] is summed over r in increasing order, and
// without fused multiply-add (-ffp-contract=off) every lane of a vector op rounds as the scalar
// op would. The blocked one keeps a block of y in registers while it streams M row by row; it is
// compiled for AVX-512, AVX2 and baseline x86-64, and the CPU's best is chosen when loaded.
#include <atomic>

#include "rnnkit.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define RNNKIT_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RNNKIT_TARGET_CLONES
#endif

namespace rnnkit {

namespace {

std::atomic<KernelVariant> current_variant{KernelVariant::Blocked};

template <typename Real>
void gemv_t_plain(Real* y, const Real* M, const Real* v, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r) {
        const Real vr = v[r];
        const Real* m = M + r * cols;
        for (int64_t j = 0; j < cols; ++j) y[j] += m[j] * vr;
    }
}

// Columns [j0, j0 + JB) of y += M^T v, with the block of y held in registers.
template <typename Real, int JB>
inline void gemv_t_block(Real* y, const Real* M, const Real* v, int64_t rows, int64_t cols,
                         int64_t j0) {
    Real acc[JB];
    for (int jj = 0; jj < JB; ++jj) acc[jj] = y[j0 + jj];
    for (int64_t r = 0; r < rows; ++r) {
        const Real vr = v[r];
        const Real* m = M + r * cols + j0;
        for (int jj = 0; jj < JB; ++jj) acc[jj] += m[jj] * vr;
    }
    for (int jj = 0; jj < JB; ++jj) y[j0 + jj] = acc[jj];
}

template <typename Real>
inline void gemv_t_blocked_body(Real* y, const Real* M, const Real* v, int64_t rows,
                                int64_t cols) {
    constexpr int JB = 256 / int(sizeof(Real));  // 32 doubles or 64 floats: 4 AVX-512 registers
    int64_t j0 = 0;
    for (; j0 + JB <= cols; j0 += JB) gemv_t_block<Real, JB>(y, M, v, rows, cols, j0);
    for (; j0 + 8 <= cols; j0 += 8) gemv_t_block<Real, 8>(y, M, v, rows, cols, j0);
    for (; j0 < cols; ++j0) gemv_t_block<Real, 1>(y, M, v, rows, cols, j0);
}

RNNKIT_TARGET_CLONES
void gemv_t_blocked(double* y, const double* M, const double* v, int64_t rows, int64_t cols) {
    gemv_t_blocked_body(y, M, v, rows, cols);
}

RNNKIT_TARGET_CLONES
void gemv_t_blocked(float* y, const float* M, const float* v, int64_t rows, int64_t cols) {
    gemv_t_blocked_body(y, M, v, rows, cols);
}

}  // namespace

void set_kernel_variant(KernelVariant variant) { current_variant.store(variant); }

KernelVariant kernel_variant() { return current_variant.load(); }

template <typename Real>
void gemv_t_accumulate(Real* y, const Real* M, const Real* v, int64_t rows, int64_t cols) {
    if (current_variant.load(std::memory_order_relaxed) == KernelVariant::Plain)
        gemv_t_plain(y, M, v, rows, cols);
    else
        gemv_t_blocked(y, M, v, rows, cols);
}

template void gemv_t_accumulate(float*, const float*, const float*, int64_t, int64_t);
template void gemv_t_accumulate(double*, const double*, const double*, int64_t, int64_t);

}  // namespace rnnkit
