// C += A B (or C = A B, as after clearing C), the matrix product under every step of the
// recurrence (see rnnkit.h).
//
// Two loops that round identically: the plain one, and a register-tiled one that keeps an
// MR x (NV vectors) block of C in registers while it streams a panel of B. Both sum every
// C[m, j] over k in increasing order, one multiply-add at a time, so they differ only in speed.
//
// Each is compiled three times, for AVX-512, AVX2 and baseline x86-64, and the best level the
// CPU has is chosen when the module loads (set_isa overrides it, for the tests). This file is
// compiled with -ffp-contract=fast: at the AVX2 and AVX-512 levels every multiply-add is one
// fused instruction (one rounding), at the baseline level a multiply then an add. Results are
// therefore bitwise reproducible for a given level, and agree with the reference to its
// tolerances at every level.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>

#include "levels.h"
#include "rnnkit.h"

#if RNNKIT_X86
#define RNNKIT_TARGET_AVX512 __attribute__((target("avx512f,fma")))
#define RNNKIT_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

#define RNNKIT_INLINE __attribute__((always_inline)) inline

namespace rnnkit {

namespace {

std::atomic<Isa> current_isa{Isa::Baseline};
std::atomic<bool> use_plain{false};

// c + a b: one fused operation where the level has FMA, else a multiply then an add. Written
// out for scalars, since the vectorizer may otherwise split a contracted pair across lanes.
template <bool Fma, typename Real>
RNNKIT_INLINE Real madd(Real a, Real b, Real c) {
    if constexpr (Fma)
        return std::fma(a, b, c);
    else
        return c + a * b;
}

// `fresh`: C's rows start at zero (C = A B), not at their values (C += A B).
template <bool Fma, typename Real>
RNNKIT_INLINE void gemm_plain(Real* C, int64_t ldc, const Real* A, int64_t sm, int64_t sk, const Real* B,
                              int64_t ldb, int64_t M, int64_t N, int64_t K, bool fresh) {
    for (int64_t m = 0; m < M; ++m) {
        Real* c = C + m * ldc;
        if (fresh)
            for (int64_t j = 0; j < N; ++j) c[j] = Real(0);
        for (int64_t k = 0; k < K; ++k) {
            const Real a = A[m * sm + k * sk];
            const Real* b = B + k * ldb;
            for (int64_t j = 0; j < N; ++j) c[j] = madd<Fma>(a, b[j], c[j]);
        }
    }
}

// C[m, j] = b[j] + x[m * sx] u[j] (0 for a null b), one pass over C: what setting C's rows to b
// and then accumulating the one-input product x u would give, bit for bit (the same madd).
template <bool Fma, typename Real>
RNNKIT_INLINE void outer_plus_bias(Real* C, int64_t ldc, const Real* x, int64_t sx,
                                   const Real* u, const Real* b, int64_t M, int64_t N) {
    for (int64_t m = 0; m < M; ++m) {
        const Real a = x[m * sx];
        Real* c = C + m * ldc;
        if (b)
            for (int64_t j = 0; j < N; ++j) c[j] = madd<Fma>(a, u[j], b[j]);
        else
            for (int64_t j = 0; j < N; ++j) c[j] = madd<Fma>(a, u[j], Real(0));
    }
}

// C[0:MR, 0:NV*L] += A[0:MR, :] B[:, 0:NV*L] with the block of C in registers, which start at
// +0 instead of C's values if `fresh` (as after zeroing C: the same bits, without reading C).
// `acc += a * b` on vectors becomes one fused instruction because this file is compiled
// -ffp-contract=fast (GCC and Clang contract it at -O3 wherever the target has FMA); the tests
// check that this rounds exactly like madd() in the plain loop at every level.
template <typename Real, int VB, int MR, int NV>
RNNKIT_INLINE void gemm_tile(Real* C, int64_t ldc, const Real* A, int64_t sm, int64_t sk, const Real* B,
                             int64_t ldb, int64_t K, bool fresh) {
    typedef Real V __attribute__((vector_size(VB)));
    constexpr int L = VB / int(sizeof(Real));
    V acc[MR][NV];
    for (int m = 0; m < MR; ++m)
        for (int v = 0; v < NV; ++v) {
            if (fresh)
                acc[m][v] = V{};
            else
                __builtin_memcpy(&acc[m][v], C + m * ldc + v * L, VB);
        }
    for (int64_t k = 0; k < K; ++k) {
        V b[NV];
        for (int v = 0; v < NV; ++v) __builtin_memcpy(&b[v], B + k * ldb + v * L, VB);
        for (int m = 0; m < MR; ++m) {
            const Real a = A[m * sm + k * sk];
            for (int v = 0; v < NV; ++v) acc[m][v] += a * b[v];
        }
    }
    for (int m = 0; m < MR; ++m)
        for (int v = 0; v < NV; ++v) __builtin_memcpy(C + m * ldc + v * L, &acc[m][v], VB);
}

// Columns [j, N) of rows [0, MR): single vectors of VB bytes, then of VB/2, .. 16 bytes, then
// single columns.
template <bool Fma, typename Real, int VB, int MR>
RNNKIT_INLINE void gemm_rows_tail(Real* C, int64_t ldc, const Real* A, int64_t sm, int64_t sk,
                                  const Real* B, int64_t ldb, int64_t j, int64_t N, int64_t K,
                                  bool fresh) {
    constexpr int L = VB / int(sizeof(Real));
    for (; j + L <= N; j += L)
        gemm_tile<Real, VB, MR, 1>(C + j, ldc, A, sm, sk, B + j, ldb, K, fresh);
    if constexpr (VB > 16) {
        gemm_rows_tail<Fma, Real, VB / 2, MR>(C, ldc, A, sm, sk, B, ldb, j, N, K, fresh);
        return;
    }
    for (; j < N; ++j) {
        Real acc[MR];
        for (int m = 0; m < MR; ++m) acc[m] = fresh ? Real(0) : C[m * ldc + j];
        for (int64_t k = 0; k < K; ++k) {
            const Real b = B[k * ldb + j];
            for (int m = 0; m < MR; ++m) acc[m] = madd<Fma>(A[m * sm + k * sk], b, acc[m]);
        }
        for (int m = 0; m < MR; ++m) C[m * ldc + j] = acc[m];
    }
}

// Columns [j, j + R*L) of rows [0, MR) for the R < NV whole vectors left after the NV-tiles.
template <bool Fma, typename Real, int VB, int MR, int NV>
RNNKIT_INLINE int64_t gemm_rows_remainder(Real* C, int64_t ldc, const Real* A, int64_t sm, int64_t sk,
                                          const Real* B, int64_t ldb, int64_t j, int64_t N,
                                          int64_t K, bool fresh) {
    constexpr int L = VB / int(sizeof(Real));
    if constexpr (NV > 1) {
        if ((N - j) / L == NV - 1) {
            gemm_tile<Real, VB, MR, NV - 1>(C + j, ldc, A, sm, sk, B + j, ldb, K, fresh);
            return j + (NV - 1) * L;
        }
        return gemm_rows_remainder<Fma, Real, VB, MR, NV - 1>(C, ldc, A, sm, sk, B, ldb, j, N, K,
                                                               fresh);
    }
    return j;
}

// Rows [0, MR) of C += A B over every column: NV-vector tiles, then one tile of the whole
// vectors left, then the part of a vector left.
template <bool Fma, typename Real, int VB, int MR, int NV>
RNNKIT_INLINE void gemm_rows(Real* C, int64_t ldc, const Real* A, int64_t sm, int64_t sk, const Real* B,
                             int64_t ldb, int64_t N, int64_t K, bool fresh) {
    constexpr int L = VB / int(sizeof(Real));
    int64_t j = 0;
    for (; j + NV * L <= N; j += NV * L)
        gemm_tile<Real, VB, MR, NV>(C + j, ldc, A, sm, sk, B + j, ldb, K, fresh);
    j = gemm_rows_remainder<Fma, Real, VB, MR, NV>(C, ldc, A, sm, sk, B, ldb, j, N, K, fresh);
    gemm_rows_tail<Fma, Real, (VB > 16 ? VB / 2 : VB), MR>(C, ldc, A, sm, sk, B, ldb, j, N, K,
                                                           fresh);
}

// The left < R + 1 rows after the full row tiles, as one tile of `left` rows.
template <bool Fma, typename Real, int VB, int R, int NV>
RNNKIT_INLINE void gemm_rows_left(Real* C, int64_t ldc, const Real* A, int64_t sm, int64_t sk,
                                  const Real* B, int64_t ldb, int64_t left, int64_t N, int64_t K,
                                  bool fresh) {
    if constexpr (R > 0) {
        if (left == R)
            gemm_rows<Fma, Real, VB, R, NV>(C, ldc, A, sm, sk, B, ldb, N, K, fresh);
        else
            gemm_rows_left<Fma, Real, VB, R - 1, NV>(C, ldc, A, sm, sk, B, ldb, left, N, K,
                                                     fresh);
    }
}

// The tiled product's blocking: KC rows of B by one panel of NV vectors of columns (24 KiB, up
// to 36 KiB for a last block joined to the one before) at a time, used by every row tile
// before the next.
template <typename Real, int VB, int NV>
struct Blocking {
    static constexpr int64_t panel = NV * (VB / int64_t(sizeof(Real)));
    static constexpr int64_t KC = (24 * 1024) / (NV * VB);
    // the rows of the k-block that starts at k0: KC, except that a last block of fewer than
    // KC/2 rows joins the one before: K = 100 in float64 is one block of 100, not 96 + 4, and
    // K = 128 in float32 (W2's products) one of 128, not 96 + 32, whose short second block
    // would load and store C's tiles once more for a third of the work (W2 trains 1-2% faster)
    static int64_t rows_at(int64_t K, int64_t k0) {
        const int64_t left = K - k0;
        return left - KC < KC / 2 ? left : KC;
    }
};

// Copies B's block (k0.., j0..) of kc rows and nc columns to `packed` (kc, nc), contiguous, so
// that its rows do not collide in the cache's sets. A vector at a time through a register: the
// compiler turns a plain copy loop into a `rep movs` per row, whose start-up costs more than a
// short row's copy.
template <typename Real, int VB>
RNNKIT_INLINE void pack_block(Real* packed, const Real* B, int64_t ldb, int64_t kc, int64_t nc) {
    typedef Real V __attribute__((vector_size(VB)));
    constexpr int L = VB / int(sizeof(Real));
    for (int64_t k = 0; k < kc; ++k) {
        const Real* b = B + k * ldb;
        Real* p = packed + k * nc;
        int64_t j = 0;
        for (; j + L <= nc; j += L) {
            V v;
            __builtin_memcpy(&v, b + j, VB);
            __asm__("" : "+x"(v));
            __builtin_memcpy(p + j, &v, VB);
        }
        for (; j < nc; ++j) p[j] = b[j];
    }
}

// B (K, N) as every block of the tiled product, in its order: block (k0, j0) of kc x nc
// elements at panels + k0 N + kc j0. K N elements.
template <typename Real, int VB, int NV>
RNNKIT_INLINE void pack_panels(Real* panels, const Real* B, int64_t ldb, int64_t K, int64_t N) {
    using Bk = Blocking<Real, VB, NV>;
    for (int64_t k0 = 0, kc; k0 < K; k0 += kc) {
        kc = Bk::rows_at(K, k0);
        for (int64_t j0 = 0; j0 < N; j0 += Bk::panel)
            pack_block<Real, VB>(panels + k0 * N + kc * j0, B + k0 * ldb + j0, ldb, kc,
                                 std::min(N - j0, Bk::panel));
    }
}

// C += A B in blocks that stay in cache: a block of KC rows of B and one panel of its columns
// is used by every row tile before the next. Each C[m, j] is still summed over k in increasing
// order: a k-block continues from the value the previous one stored. The blocks come from
// `panels` (pack_panels) if given, else each is packed here when it is reached. `fresh`:
// C = A B, the first k-block starting from +0 rather than from C.
template <bool Fma, typename Real, int VB, int MR, int NV>
RNNKIT_INLINE void gemm_tiled(Real* C, int64_t ldc, const Real* A, int64_t sm, int64_t sk, const Real* B,
                              int64_t ldb, const Real* panels, int64_t M, int64_t N, int64_t K,
                              bool fresh) {
    using Bk = Blocking<Real, VB, NV>;
    if (M < MR) {
        // fewer rows than a tile: each streams B on its own, without blocking, four times the
        // columns per tile (at AVX-512 a padded row of B up to 16 vectors in one pass), since a
        // single row has a quarter (or less) of a tile's accumulators per column
        for (int64_t m = 0; m < M; ++m)
            gemm_rows<Fma, Real, VB, 1, 4 * NV>(C + m * ldc, ldc, A + m * sm, sm, sk, B, ldb, N, K,
                                                fresh);
        return;
    }
    alignas(64) Real local[(Bk::KC + Bk::KC / 2) * Bk::panel];
    for (int64_t k0 = 0, kc; k0 < K; k0 += kc) {
        kc = Bk::rows_at(K, k0);
        for (int64_t j0 = 0; j0 < N; j0 += Bk::panel) {
            const int64_t nc = std::min(N - j0, Bk::panel);
            const Real* packed = panels ? panels + k0 * N + kc * j0 : local;
            if (!panels) pack_block<Real, VB>(local, B + k0 * ldb + j0, ldb, kc, nc);
            Real* Cp = C + j0;
            const Real* Ap = A + k0 * sk;
            const bool first = fresh && k0 == 0;
            int64_t m = 0;
            for (; m + MR <= M; m += MR)
                gemm_rows<Fma, Real, VB, MR, NV>(Cp + m * ldc, ldc, Ap + m * sm, sm, sk, packed, nc,
                                                 nc, kc, first);
            // the rows left, in one tile of as many rows
            gemm_rows_left<Fma, Real, VB, MR - 1, NV>(Cp + m * ldc, ldc, Ap + m * sm, sm, sk,
                                                      packed, nc, M - m, nc, kc, first);
        }
    }
}

// The three compilations of each loop, each with its tile: MR rows by NV vectors of C in
// registers (MR x NV accumulators; the rest of the register file holds B's vectors and A).
// The bodies above are always inlined, so each is generated with the instruction set of the
// function it lands in.
#define RNNKIT_GEMM_LEVEL(name, attributes, Fma, VB, MR, NV)                                              \
    template <typename Real>                                                                   \
    attributes void name##_tiled(Real* C, int64_t ldc, const Real* A, int64_t sm, int64_t sk,             \
                                 const Real* B, int64_t ldb, const Real* panels, int64_t M,    \
                                 int64_t N, int64_t K, bool fresh) {                           \
        gemm_tiled<Fma, Real, VB, MR, NV>(C, ldc, A, sm, sk, B, ldb, panels, M, N, K, fresh);      \
    }                                                                                          \
    template <typename Real>                                                                   \
    attributes void name##_pack(Real* panels, const Real* B, int64_t ldb, int64_t K, int64_t N) { \
        pack_panels<Real, VB, NV>(panels, B, ldb, K, N);                                       \
    }                                                                                          \
    template <typename Real>                                                                   \
    attributes void name##_plain(Real* C, int64_t ldc, const Real* A, int64_t sm, int64_t sk,             \
                                 const Real* B, int64_t ldb, int64_t M, int64_t N, int64_t K,  \
                                 bool fresh) {                                                 \
        gemm_plain<Fma>(C, ldc, A, sm, sk, B, ldb, M, N, K, fresh);                                \
    }                                                                                          \
    template <typename Real>                                                                   \
    attributes void name##_outer(Real* C, int64_t ldc, const Real* x, int64_t sx, const Real* u, \
                                 const Real* b, int64_t M, int64_t N) {                        \
        outer_plus_bias<Fma>(C, ldc, x, sx, u, b, M, N);                                       \
    }

// the rows of each level's tile
constexpr int kBaselineRows = 4, kAvx2Rows = 4, kAvx512Rows = 6;
RNNKIT_GEMM_LEVEL(baseline, , false, 16, kBaselineRows, 2)                  // 8 of 16
#if RNNKIT_X86
RNNKIT_GEMM_LEVEL(avx2, RNNKIT_TARGET_AVX2, true, 32, kAvx2Rows, 2)         // 8 of 16
RNNKIT_GEMM_LEVEL(avx512, RNNKIT_TARGET_AVX512, true, 64, kAvx512Rows, 4)   // 24 of 32 registers
#endif

Isa detect_isa() {
#if RNNKIT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return Isa::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
#endif
    return Isa::Baseline;
}

const Isa best_isa_value = detect_isa();
const bool isa_initialized = (current_isa.store(best_isa_value), true);

}  // namespace

Isa best_isa() { return best_isa_value; }

Isa current_isa_level() { return current_isa.load(); }

void set_isa(Isa isa) {
    if (int(isa) > int(best_isa_value))
        throw std::invalid_argument("this CPU does not support the requested instruction set");
    current_isa.store(isa);
}

void set_plain_loops(bool plain) { use_plain.store(plain); }

int64_t tile_rows(Isa isa) {
    switch (isa) {
        case Isa::Avx512: return kAvx512Rows;
        case Isa::Avx2: return kAvx2Rows;
        default: return kBaselineRows;
    }
}

bool plain_loops() { return use_plain.load(); }

namespace {

// C += A B (C = A B if `fresh`) with A's element (m, k) at A[m * sm + k * sk]: rows of A
// (sk = 1) or of A^T (sm = 1), at level `isa`. `panels`, if not null, is B packed by pack_b
// at that level.
template <typename Real>
void gemm_strided(Isa isa, Real* C, int64_t ldc, const Real* A, int64_t sm, int64_t sk,
                  const Real* B, int64_t ldb, const Real* panels, int64_t M, int64_t N, int64_t K,
                  bool fresh = false) {
    (void)isa_initialized;
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (fresh)
            for (int64_t m = 0; m < M; ++m) std::fill(C + m * ldc, C + m * ldc + N, Real(0));
        return;
    }
    const bool plain = use_plain.load(std::memory_order_relaxed);
    switch (isa) {
#if RNNKIT_X86
        case Isa::Avx512:
            if (plain) return avx512_plain(C, ldc, A, sm, sk, B, ldb, M, N, K, fresh);
            return avx512_tiled(C, ldc, A, sm, sk, B, ldb, panels, M, N, K, fresh);
        case Isa::Avx2:
            if (plain) return avx2_plain(C, ldc, A, sm, sk, B, ldb, M, N, K, fresh);
            return avx2_tiled(C, ldc, A, sm, sk, B, ldb, panels, M, N, K, fresh);
#endif
        default:
            if (plain) return baseline_plain(C, ldc, A, sm, sk, B, ldb, M, N, K, fresh);
            return baseline_tiled(C, ldc, A, sm, sk, B, ldb, panels, M, N, K, fresh);
    }
}

}  // namespace

template <typename Real>
void gemm_accumulate(Real* C, int64_t ldc, const Real* A, int64_t lda, const Real* B,
                     int64_t ldb, int64_t M, int64_t N, int64_t K) {
    gemm_strided(current_isa_level(), C, ldc, A, lda, int64_t(1), B, ldb,
                 static_cast<const Real*>(nullptr), M, N, K);
}

template <typename Real>
void gemm_accumulate_at(Real* C, int64_t ldc, const Real* A, int64_t lda, const Real* B,
                        int64_t ldb, int64_t M, int64_t N, int64_t K) {
    gemm_strided(current_isa_level(), C, ldc, A, int64_t(1), lda, B, ldb,
                 static_cast<const Real*>(nullptr), M, N, K);
}

template <typename Real>
void gemm_set_at(Real* C, int64_t ldc, const Real* A, int64_t lda, const Real* B, int64_t ldb,
                 int64_t M, int64_t N, int64_t K) {
    gemm_strided(current_isa_level(), C, ldc, A, int64_t(1), lda, B, ldb,
                 static_cast<const Real*>(nullptr), M, N, K, true);
}

template <typename Real>
void set_outer_plus_bias(Real* C, int64_t ldc, const Real* x, int64_t sx, const Real* u,
                         const Real* b, int64_t M, int64_t N) {
    if (M <= 0 || N <= 0) return;
    switch (current_isa.load(std::memory_order_relaxed)) {
#if RNNKIT_X86
        case Isa::Avx512: return avx512_outer(C, ldc, x, sx, u, b, M, N);
        case Isa::Avx2: return avx2_outer(C, ldc, x, sx, u, b, M, N);
#endif
        default: return baseline_outer(C, ldc, x, sx, u, b, M, N);
    }
}

template <typename Real>
PackedB<Real> pack_b(Real* buffer, const Real* B, int64_t ldb, int64_t K, int64_t N, Isa isa,
                     int64_t max_rows) {
    // products of fewer rows than a tile stream B itself (gemm_tiled): no copy then
    switch (isa) {
#if RNNKIT_X86
        case Isa::Avx512:
            if (max_rows < kAvx512Rows) break;
            avx512_pack(buffer, B, ldb, K, N);
            return {B, ldb, buffer, isa};
        case Isa::Avx2:
            if (max_rows < kAvx2Rows) break;
            avx2_pack(buffer, B, ldb, K, N);
            return {B, ldb, buffer, isa};
#endif
        default:
            if (max_rows < kBaselineRows) break;
            baseline_pack(buffer, B, ldb, K, N);
            return {B, ldb, buffer, isa};
    }
    return {B, ldb, nullptr, isa};
}

namespace {

// C += A B, or C = A B if `fresh`, with B from pack_b
template <typename Real>
void gemm_packed(Real* C, int64_t ldc, const Real* A, int64_t lda, const PackedB<Real>& B,
                 int64_t M, int64_t N, int64_t K, bool fresh) {
    // blocks packed for another level than the current one (set_isa in between) are not used;
    // the level is read once, so that a set_isa from another thread cannot fall between the
    // check and the product
    const Isa isa = current_isa_level();
    gemm_strided(isa, C, ldc, A, lda, int64_t(1), B.B, B.ldb, B.isa == isa ? B.panels : nullptr,
                 M, N, K, fresh);
}

}  // namespace

template <typename Real>
void gemm_accumulate_packed(Real* C, int64_t ldc, const Real* A, int64_t lda,
                            const PackedB<Real>& B, int64_t M, int64_t N, int64_t K) {
    gemm_packed(C, ldc, A, lda, B, M, N, K, false);
}

template <typename Real>
void gemm_set_packed(Real* C, int64_t ldc, const Real* A, int64_t lda, const PackedB<Real>& B,
                     int64_t M, int64_t N, int64_t K) {
    gemm_packed(C, ldc, A, lda, B, M, N, K, true);
}

#define RNNKIT_INSTANTIATE(Real)                                                              \
    template void set_outer_plus_bias(Real*, int64_t, const Real*, int64_t, const Real*,       \
                                      const Real*, int64_t, int64_t);                          \
    template PackedB<Real> pack_b(Real*, const Real*, int64_t, int64_t, int64_t, Isa, int64_t); \
    template void gemm_accumulate_packed(Real*, int64_t, const Real*, int64_t,                 \
                                         const PackedB<Real>&, int64_t, int64_t, int64_t);     \
    template void gemm_set_packed(Real*, int64_t, const Real*, int64_t, const PackedB<Real>&,  \
                                  int64_t, int64_t, int64_t);
RNNKIT_INSTANTIATE(float)
RNNKIT_INSTANTIATE(double)
#undef RNNKIT_INSTANTIATE
template void gemm_accumulate(float*, int64_t, const float*, int64_t, const float*, int64_t,
                              int64_t, int64_t, int64_t);
template void gemm_accumulate(double*, int64_t, const double*, int64_t, const double*, int64_t,
                              int64_t, int64_t, int64_t);
template void gemm_accumulate_at(float*, int64_t, const float*, int64_t, const float*, int64_t,
                                 int64_t, int64_t, int64_t);
template void gemm_accumulate_at(double*, int64_t, const double*, int64_t, const double*,
                                 int64_t, int64_t, int64_t, int64_t);
template void gemm_set_at(float*, int64_t, const float*, int64_t, const float*, int64_t, int64_t,
                          int64_t, int64_t);
template void gemm_set_at(double*, int64_t, const double*, int64_t, const double*, int64_t,
                          int64_t, int64_t, int64_t);

}  // namespace rnnkit
