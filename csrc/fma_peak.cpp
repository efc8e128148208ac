// The machine's fused multiply-add peak, measured: the yardstick of benchmarks/run.py's
// "% of FMA peak" column. Independent FMA chains kept in registers (12 accumulators: more than
// FMA latency x FMA ports on current x86 cores), the widest vector unit this CPU has chosen at
// run time: AVX-512F, else AVX2+FMA, else scalar. Each of `threads` threads runs the loop for
// `seconds` of its own CPU time and its rate is flops / that CPU time, so that other processes
// competing for the cores do not lower the peak (use at most one thread per core: the rates of
// threads that never run at the same time would add up to more than the machine can do).
// The result is the sum of the threads' rates. Nothing here is used by training.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RNNKIT_X86 1
#endif

#include "rnnkit.h"

namespace rnnkit {
namespace {

constexpr int kChains = 12;            // independent accumulators
constexpr int64_t kInner = 1 << 14;    // iterations between clock reads

// acc = acc * m + a converges to a / (1 - m): no overflow, no denormals, however long it runs.
// Every function returns the flops done (2 per lane per FMA) and stores a sink so the loop stays.

#ifdef RNNKIT_X86
__attribute__((target("avx512f"))) double avx512_run_ps(int64_t rounds, volatile float* sink) {
    __m512 acc[kChains];
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(float(j) * 0.01f);
    const __m512 m = _mm512_set1_ps(0.999f), a = _mm512_set1_ps(0.001f);
    for (int64_t r = 0; r < rounds; ++r)
        for (int j = 0; j < kChains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], m, a);
    alignas(64) float out[16];
    __m512 s = acc[0];
    for (int j = 1; j < kChains; ++j) s = _mm512_add_ps(s, acc[j]);
    _mm512_store_ps(out, s);
    *sink = out[0] + out[15];
    return double(rounds) * kChains * 16 * 2;
}

__attribute__((target("avx512f"))) double avx512_run_pd(int64_t rounds, volatile double* sink) {
    __m512d acc[kChains];
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_pd(double(j) * 0.01);
    const __m512d m = _mm512_set1_pd(0.999), a = _mm512_set1_pd(0.001);
    for (int64_t r = 0; r < rounds; ++r)
        for (int j = 0; j < kChains; ++j) acc[j] = _mm512_fmadd_pd(acc[j], m, a);
    alignas(64) double out[8];
    __m512d s = acc[0];
    for (int j = 1; j < kChains; ++j) s = _mm512_add_pd(s, acc[j]);
    _mm512_store_pd(out, s);
    *sink = out[0] + out[7];
    return double(rounds) * kChains * 8 * 2;
}

__attribute__((target("avx2,fma"))) double avx2_run_ps(int64_t rounds, volatile float* sink) {
    __m256 acc[kChains];
    for (int j = 0; j < kChains; ++j) acc[j] = _mm256_set1_ps(float(j) * 0.01f);
    const __m256 m = _mm256_set1_ps(0.999f), a = _mm256_set1_ps(0.001f);
    for (int64_t r = 0; r < rounds; ++r)
        for (int j = 0; j < kChains; ++j) acc[j] = _mm256_fmadd_ps(acc[j], m, a);
    alignas(32) float out[8];
    __m256 s = acc[0];
    for (int j = 1; j < kChains; ++j) s = _mm256_add_ps(s, acc[j]);
    _mm256_store_ps(out, s);
    *sink = out[0] + out[7];
    return double(rounds) * kChains * 8 * 2;
}

__attribute__((target("avx2,fma"))) double avx2_run_pd(int64_t rounds, volatile double* sink) {
    __m256d acc[kChains];
    for (int j = 0; j < kChains; ++j) acc[j] = _mm256_set1_pd(double(j) * 0.01);
    const __m256d m = _mm256_set1_pd(0.999), a = _mm256_set1_pd(0.001);
    for (int64_t r = 0; r < rounds; ++r)
        for (int j = 0; j < kChains; ++j) acc[j] = _mm256_fmadd_pd(acc[j], m, a);
    alignas(32) double out[4];
    __m256d s = acc[0];
    for (int j = 1; j < kChains; ++j) s = _mm256_add_pd(s, acc[j]);
    _mm256_store_pd(out, s);
    *sink = out[0] + out[3];
    return double(rounds) * kChains * 4 * 2;
}
#endif

// Baseline: a multiply and an add per step (no FMA instruction assumed), counted as 2 flops.
template <typename Real>
double run_scalar(int64_t rounds, volatile Real* sink) {
    Real acc[kChains];
    for (int j = 0; j < kChains; ++j) acc[j] = Real(j) * Real(0.01);
    const Real m = Real(0.999), a = Real(0.001);
    for (int64_t r = 0; r < rounds; ++r)
        for (int j = 0; j < kChains; ++j) acc[j] = acc[j] * m + a;
    Real s = 0;
    for (int j = 0; j < kChains; ++j) s += acc[j];
    *sink = s;
    return double(rounds) * kChains * 2;
}

FmaIsa detect_isa() {
#ifdef RNNKIT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return FmaIsa::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return FmaIsa::Avx2;
#endif
    return FmaIsa::Scalar;
}

template <typename Real>
double run(FmaIsa isa, int64_t rounds, volatile Real* sink) {
#ifdef RNNKIT_X86
    if constexpr (sizeof(Real) == sizeof(float)) {
        if (isa == FmaIsa::Avx512) return avx512_run_ps(rounds, sink);
        if (isa == FmaIsa::Avx2) return avx2_run_ps(rounds, sink);
    } else {
        if (isa == FmaIsa::Avx512) return avx512_run_pd(rounds, sink);
        if (isa == FmaIsa::Avx2) return avx2_run_pd(rounds, sink);
    }
#else
    (void)isa;
#endif
    return run_scalar<Real>(rounds, sink);
}

// The calling thread's CPU time in seconds (wall time where there is no such clock).
double thread_seconds() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
    timespec ts{};
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
#endif
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// One thread's rate in flop/s: repeat the loop until it has run `seconds` of CPU time (or,
// on a machine too busy to give it that, 20 x `seconds` of wall time have passed).
template <typename Real>
double one_thread(FmaIsa isa, double seconds) {
    using clock = std::chrono::steady_clock;
    volatile Real sink = 0;
    run<Real>(isa, kInner, &sink);                       // warm up (and let the clock rise)
    const auto wall_start = clock::now();
    const double start = thread_seconds();
    double flops = 0, elapsed = 0;
    do {
        flops += run<Real>(isa, kInner, &sink);
        elapsed = thread_seconds() - start;
    } while (elapsed < seconds &&
             std::chrono::duration<double>(clock::now() - wall_start).count() < 20 * seconds);
    return flops / elapsed;
}

}  // namespace

FmaIsa fma_peak_isa() {
    static const FmaIsa isa = detect_isa();
    return isa;
}

double fma_peak_gflops(bool double_precision, double seconds, int threads) {
    const FmaIsa isa = fma_peak_isa();
    threads = std::max(threads, 1);
    std::vector<double> rates(size_t(threads), 0.0);
    std::vector<std::thread> pool;
    try {
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
                rates[size_t(t)] = double_precision ? one_thread<double>(isa, seconds)
                                                    : one_thread<float>(isa, seconds);
            });
    } catch (...) {   // no more threads to be had: the started ones are joined, not abandoned
        for (auto& th : pool) th.join();
        throw;
    }
    for (auto& th : pool) th.join();
    double total = 0;
    for (double r : rates) total += r;
    return total * 1e-9;
}

}  // namespace rnnkit
