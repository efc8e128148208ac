// The thread count and parallel_for (see rnnkit.h). Work is split into contiguous chunks and
// every kernel that uses it computes each output element on one thread, in the same order
// whatever the split, so results do not depend on the thread count.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <system_error>
#include <thread>
#include <vector>

#include "rnnkit.h"

namespace rnnkit {

namespace {

int initial_threads() {
    if (const char* env = std::getenv("RNNKIT_NUM_THREADS")) {
        const int n = std::atoi(env);
        if (n >= 1) return std::min(n, 1024);
    }
    return int(std::max(1u, std::thread::hardware_concurrency()));
}

std::atomic<int> thread_count{initial_threads()};

}  // namespace

void set_num_threads(int n) { thread_count.store(std::max(1, n)); }

int num_threads() { return thread_count.load(); }

void parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    const int64_t chunks =
        std::max<int64_t>(1, std::min<int64_t>(num_threads(), n / std::max<int64_t>(1, min_chunk)));
    if (chunks == 1) {
        fn(0, n);
        return;
    }
    std::vector<std::thread> workers;
    workers.reserve(size_t(chunks - 1));
    const auto bound = [&](int64_t c) { return n * c / chunks; };
    int64_t c = 1;
    try {
        for (; c < chunks; ++c)
            workers.emplace_back([&fn, lo = bound(c), hi = bound(c + 1)] { fn(lo, hi); });
    } catch (const std::system_error&) {
        // no thread to be had (a process limit): the chunks not started run here instead;
        // each output element is still computed once, in the same order
    }
    fn(0, bound(1));
    for (; c < chunks; ++c) fn(bound(c), bound(c + 1));
    for (auto& w : workers) w.join();
}

}  // namespace rnnkit
