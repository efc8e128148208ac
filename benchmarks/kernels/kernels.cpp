// Kernel-level timings of the C++ core, without Python: the figures that the development of
// issue 3's kernels was measured with (benchmarks/run.py times whole epochs through the Python
// API). Built and run by benchmarks/kernels/run.sh against an existing build tree's static
// library (librnnkit_kernels.a); one thread unless stated. Each figure is the minimum over
// repetitions: the machine's speed moves by 10-30%, and the minimum is the least disturbed run.
// One-thread figures are the thread's CPU time, as the FMA peak's (fma_peak.cpp): time the host
// gives to other guests is not counted (wall time for more than one thread).
//
//   kernels w1-train      W1's training over its 100 windows (train_epoch: batch 1, SGD,
//                         clip_value 10, k = 5), sigmoid, no biases, float64
//   kernels w1-eval       W1's loss over its 100 training windows (network_predict)
//   kernels epoch W2|W3 [threads] [rnn|gru|lstm]   a quarter of a W2 / W3 epoch (1024
//                         windows; train_epoch), of the Elman network or (issue 5's W2-GRU,
//                         W2-LSTM) a GRU or LSTM layer; GFLOP/s count the cell's G·H columns
//   kernels chain         W1's 5,000 dependent 100 x 100 float64 matrix-vector steps alone:
//                         all 13 column vectors of W^T in one pass, and in two halves read in
//                         alternate orders at alternate steps (what the forward does)
//   kernels pool          the thread pool's cost per parallel region at 2 threads (wall
//                         time): regions of 10 us of work per thread, separated by 0-1000 us
//                         of serial work on the calling thread; a worker waits for the next
//                         region spinning, then yielding, then asleep, and waking a sleeping
//                         thread costs tens of microseconds
//   kernels shapes        the products of W2 and W3 (GFLOP/s, % of the FMA peak): the per-step
//                         products with cache rows as they are laid out, and padded by one
//                         cache line; the weight-gradient products (A^T B over every step);
//                         and the tiled product at its best: 24 rows by 64 columns by one
//                         k-block of 96 (A, packed B and C together 40 KB, within L1; at
//                         AVX-512 one panel of B), the ceiling of the register tile
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "rnnkit.h"

using namespace rnnkit;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// this thread's CPU time; wall time where the thread clock is not available
double thread_seconds() {
    timespec t;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) != 0)
        return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
            .count();
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// the least of `reps` timings of f(): this thread's CPU time, or wall time if `wall`
double best_of(int reps, const std::function<void()>& f, bool wall = false) {
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        const double c0 = thread_seconds();
        f();
        best = std::min(best, wall ? seconds_since(t0) : thread_seconds() - c0);
    }
    return best;
}

// W1's network and data: sin windows of 50, 100 hidden sigmoid units, no biases, float64
struct W1 {
    static constexpr int64_t H = 100, N = 100, T = 50;
    Net net{Cell::Rnn, 1, H, 1, 1, false, Activation::Sigmoid};
    std::vector<double> params, X, Y;
    W1() : params(size_t(param_count(net))), X(size_t(N * T)), Y(size_t(N)) {
        std::mt19937_64 g(0);
        std::uniform_real_distribution<double> u(-0.1, 0.1);   // Uniform(+-1/sqrt(H))
        for (auto& p : params) p = u(g);
        for (int64_t n = 0; n < N; ++n) {
            for (int64_t t = 0; t < T; ++t) X[size_t(n * T + t)] = std::sin(double(n + t));
            Y[size_t(n)] = std::sin(double(n + T));
        }
    }
};

void w1_train() {
    W1 w;
    std::vector<int64_t> order(W1::N);
    for (int64_t i = 0; i < W1::N; ++i) order[size_t(i)] = i;
    std::vector<double> losses(W1::N);
    const OptimizerConfig sgd{OptimizerConfig::Kind::SGD, 1e-4, 0, 0, 0.9, 0.999, 1e-8};
    int64_t step = 0;
    const double s = best_of(200, [&] {
        step = train_epoch(losses.data(), w.params.data(), (double*)nullptr, (double*)nullptr,
                           (double*)nullptr, w.X.data(), w.Y.data(), (const int64_t*)nullptr,
                           order.data(), W1::N, 1, W1::N, W1::T, w.net, false, 5,
                           std::nullopt, 10.0, sgd, step, {})
                   .step;
    });
    std::printf("W1 training, 100 windows: %.3f ms\n", s * 1e3);
}

void w1_eval() {
    W1 w;
    std::vector<double> out(W1::N), work(size_t(predict_work_size(W1::N, W1::T, w.net, false)));
    const double s = best_of(300, [&] {
        network_predict(out.data(), (double*)nullptr, w.X.data(), (const double*)nullptr,
                        w.params.data(), (const int64_t*)nullptr, W1::N, W1::T, w.net, false,
                        work.data());
    });
    std::printf("W1 evaluation, 100 windows: %.3f ms\n", s * 1e3);
}

void epoch(const std::string& which, int threads, const std::string& cell) {
    const bool w2 = which == "W2";
    const int64_t H = w2 ? 128 : 512, B = w2 ? 64 : 256, N = 1024, T = 50;
    set_num_threads(threads);
    const Cell c = cell == "gru" ? Cell::Gru : cell == "lstm" ? Cell::Lstm : Cell::Rnn;
    const int64_t G = cell_sizes(c).gates;
    const Net net{c, 1, H, 1, 1, true, Activation::Tanh};
    const int64_t P = param_count(net);
    std::mt19937 g(1);
    std::uniform_real_distribution<float> u(-0.04f, 0.04f);
    const size_t np = static_cast<size_t>(P);
    std::vector<float> p(np), m(np), v(np), X(static_cast<size_t>(N * T)),
        Y(static_cast<size_t>(N));
    for (auto& x : p) x = u(g);
    for (auto& x : X) x = 20 * u(g);
    for (auto& x : Y) x = 20 * u(g);
    std::vector<int64_t> order(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) order[size_t(i)] = i;
    std::vector<double> losses(size_t(N / B + 1));
    const OptimizerConfig adam{OptimizerConfig::Kind::Adam, 1e-3, 0, 0, 0.9, 0.999, 1e-8};
    int64_t step = 0;
    const double s = best_of(w2 ? 10 : 3, [&] {
        step = train_epoch(losses.data(), p.data(), (float*)nullptr, m.data(), v.data(),
                           X.data(), Y.data(), (const int64_t*)nullptr, order.data(), N, B, N,
                           T, net, false, -1, 1.0, std::nullopt, adam, step, {})
                   .step;
    }, threads > 1);
    // issue 3's count, with G·H gate columns: forward T(GH^2 + GHI) + OH, backward
    // T(GH^2 + GHI) + (T-1)GH^2 + 2OH
    const double flops = 2.0 * double(N) *
                         (2.0 * T * G * (H * H + H) + (T - 1.0) * G * H * H + 3.0 * H);
    std::printf("%s %s, 1024 windows, %d thread(s): %.4f s, %.1f GFLOP/s (FMA peak %.1f)\n",
                which.c_str(), cell.c_str(), threads, s, flops / s * 1e-9,
                fma_peak_gflops(false, 0.5, threads));
}

typedef double v8d __attribute__((vector_size(64)));

// y[0 : 8 NV] = sum over k < K of WT[k, 0 : 8 NV] h[k], in increasing k (AVX-512)
template <int NV>
__attribute__((always_inline, target("avx512f,fma"))) inline void matvec(
    double* y, const double* WT, int64_t ld, const double* h, int64_t K) {
    v8d acc[NV] = {};
    for (int64_t k = 0; k < K; ++k)
        for (int j = 0; j < NV; ++j) {
            v8d b;
            std::memcpy(&b, WT + k * ld + 8 * j, sizeof b);
            acc[j] += h[k] * b;
        }
    std::memcpy(y, acc, sizeof acc);
}

constexpr int64_t kChainK = 100, kChainLd = 104, kChainSteps = 5000;   // W^T: 100 x 104, 83 KB

// h[t + 1] = W h[t] for t < kChainSteps: W^T's 13 column vectors in one pass
__attribute__((target("avx512f,fma"))) void chain_whole(double* h, const double* WT) {
    for (int64_t t = 0; t < kChainSteps; ++t)
        matvec<13>(h + (t + 1) * kChainLd, WT, kChainLd, h + t * kChainLd, kChainK);
}

// the same in two column halves (6 and 7 vectors), the half read last at one step read first at
// the next, as the forward's recurrent_product does
__attribute__((target("avx512f,fma"))) void chain_halves(double* h, const double* WT) {
    for (int64_t t = 0; t < kChainSteps; ++t) {
        double* y = h + (t + 1) * kChainLd;
        const double* x = h + t * kChainLd;
        if (t % 2 == 0) {
            matvec<6>(y, WT, kChainLd, x, kChainK);
            matvec<7>(y + 48, WT + 48, kChainLd, x, kChainK);
        } else {
            matvec<7>(y + 48, WT + 48, kChainLd, x, kChainK);
            matvec<6>(y, WT, kChainLd, x, kChainK);
        }
    }
}

void chain() {
    // on 64-byte lines, as the core's scratch (a row load straddling two lines costs a third)
    const size_t nw = size_t(kChainK * kChainLd), nh = size_t((kChainSteps + 1) * kChainLd);
    double* WT = static_cast<double*>(std::aligned_alloc(64, nw * sizeof(double)));
    double* h = static_cast<double*>(std::aligned_alloc(64, nh * sizeof(double)));
    if (!WT || !h) return;
    // every entry 1/K and h = 1: each step's h is 1 again (rounding aside), never subnormal
    for (size_t i = 0; i < nw; ++i) WT[i] = 1.0 / double(kChainK);
    for (size_t i = 0; i < nh; ++i) h[i] = 1.0;
    double whole = 1e30, halves = 1e30;   // alternated, so that both see the same minutes
    for (int r = 0; r < 30; ++r) {
        whole = std::min(whole, best_of(1, [&] { chain_whole(h, WT); }));
        halves = std::min(halves, best_of(1, [&] { chain_halves(h, WT); }));
    }
    std::free(WT);
    std::free(h);
    std::printf("dependent 100 x 104 float64 matrix-vector steps: one pass %.3f us a step, "
                "halves in alternate orders %.3f us\n", whole / kChainSteps * 1e6,
                halves / kChainSteps * 1e6);
}

// about `us` microseconds of arithmetic on this thread
void busy(double us) {
    const auto t0 = std::chrono::steady_clock::now();
    volatile double x = 1.0;
    while (std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
               .count() < us)
        x = std::sqrt(x + 1.0);
}

void pool() {
    set_num_threads(2);
    constexpr double kWork = 10.0;   // microseconds per chunk
    for (double gap : {0.0, 30.0, 100.0, 300.0, 1000.0}) {
        const int regions = int(std::min(5000.0, 2e6 / (gap + 50.0)));
        busy(gap);   // warm up
        const auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < regions; ++r) {
            parallel_for(2, 1, [&](int64_t, int64_t) { busy(kWork); });
            busy(gap);
        }
        const double each =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                .count() / regions;
        std::printf("regions of 2 x %.0f us of work, %6.0f us apart: %7.1f us a region and gap, "
                    "%5.1f us over the work\n", kWork, gap, each, each - gap - kWork);
    }
}

void shapes() {
    // 64-byte aligned, as the core's scratch
    const size_t nA = size_t(1) << 24, nB = size_t(1) << 23, nC = size_t(1) << 24;
    float* A = static_cast<float*>(std::aligned_alloc(64, nA * sizeof(float)));
    float* B = static_cast<float*>(std::aligned_alloc(64, nB * sizeof(float)));
    float* C = static_cast<float*>(std::aligned_alloc(64, nC * sizeof(float)));
    float* packed = static_cast<float*>(std::aligned_alloc(64, (size_t(1) << 20) * sizeof(float)));
    if (!A || !B || !C || !packed) return;
    std::fill(A, A + nA, 0.01f);
    std::fill(B, B + nB, 0.02f);
    std::fill(C, C + nC, 0.f);
    // the machine's clock moves by 10% and more within minutes: the fractions are of the best
    // of the peaks measured before and after the products, printed at the end
    double peak = fma_peak_gflops(false, 0.5, 1);
    std::vector<std::pair<std::string, double>> rows;
    auto report = [&](const char* name, double s, double flops) {
        rows.emplace_back(name, flops / s * 1e-9);
        std::printf("%-36s %9.2f us  %6.1f GFLOP/s\n", name, s * 1e6, flops / s * 1e-9);
    };
    // C (M, N) += A (M, K) B (K, N), B packed as for a sweep's steps
    auto run = [&](const char* name, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldc) {
        const PackedB<float> b = pack_b(packed, B, N, K, N, current_isa_level(), M);
        const int reps = int(400000000 / (M * N * K)) + 1;
        const double s = best_of(7, [&] {
            for (int i = 0; i < reps; ++i) gemm_accumulate_packed(C, ldc, A, lda, b, M, N, K);
        }) / reps;
        report(name, s, 2.0 * double(M * N * K));
    };
    // C (M, N) += A^T B for A (K, M), B (K, N) with row stride ldb: a weight gradient
    auto run_at = [&](const char* name, int64_t M, int64_t N, int64_t K, int64_t ldb) {
        const double s = best_of(5, [&] { gemm_accumulate_at(C, N, A, M, B, ldb, M, N, K); });
        report(name, s, 2.0 * double(M * N * K));
    };
    run("24 x 64 x 96, all in L1", 24, 64, 96, 96, 64);
    // a step's product reads h_{t-1} and accumulates into a_t, both rows of the cache: one row
    // per record, T·H floats apart (W3: 100 KB, a multiple of 4 KiB), or one line more
    run("W2 forward, rows T*H apart", 64, 128, 128, 50 * 128, 50 * 128);
    run("W2 forward, rows T*(H+16) apart", 64, 128, 128, 50 * 144, 50 * 144);
    run("W3 forward, rows T*H apart", 256, 512, 512, 50 * 512, 50 * 512);
    run("W3 forward, rows T*(H+16) apart", 256, 512, 512, 50 * 528, 50 * 528);
    run("W3 forward, compact rows", 256, 512, 512, 512, 512);
    run_at("W2 weight gradient (K = 64 x 50)", 128, 128, 64 * 50, 128);
    run_at("W3 weight gradient (K = 256 x 50)", 512, 512, 256 * 50, 528);
    peak = std::max(peak, fma_peak_gflops(false, 0.5, 1));
    std::printf("float32 FMA peak, 1 thread (the better of two runs): %.1f GFLOP/s\n", peak);
    for (const auto& [name, gflops] : rows)
        std::printf("%-36s %3.0f%% of the peak\n", name.c_str(), 100.0 * gflops / peak);
    std::free(A);
    std::free(B);
    std::free(C);
    std::free(packed);
}

}  // namespace

int main(int argc, char** argv) {
    const std::string what = argc > 1 ? argv[1] : "";
    set_num_threads(1);
    if (what == "w1-train") w1_train();
    else if (what == "w1-eval") w1_eval();
    else if (what == "epoch" && argc > 2 &&
             (argc < 5 || std::string(argv[4]) == "rnn" || std::string(argv[4]) == "gru" ||
              std::string(argv[4]) == "lstm"))
        epoch(argv[2], argc > 3 ? std::atoi(argv[3]) : 1, argc > 4 ? argv[4] : "rnn");
    else if (what == "chain") {
        if (!__builtin_cpu_supports("avx512f")) {
            std::fprintf(stderr, "chain needs AVX-512\n");
            return 1;
        }
        chain();
    }
    else if (what == "shapes") shapes();
    else if (what == "pool") pool();
    else {
        std::fprintf(stderr, "usage: %s w1-train | w1-eval | epoch W2|W3 [threads] "
                             "[rnn|gru|lstm] | chain | shapes | pool\n", argv[0]);
        return 2;
    }
    return 0;
}
