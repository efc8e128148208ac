// The thread count and parallel_for (see rnnkit.h). Work is split into contiguous chunks and
// every kernel that uses it computes each output element on one thread, in the same order
// whatever the split, so results do not depend on the thread count.
//
// The chunks after the first run on a pool of workers that outlive the call: worker w always
// takes chunk w, so that a record's rows stay in one core's cache from the forward pass to the
// backward sweeps, and no thread is created per call (a minibatch of W2 makes four parallel
// regions, each as short as a few hundred microseconds). A worker waits for the next region
// spinning (pause instructions, then yielding the CPU: see Spin) for up to 300 us before it
// sleeps, as the caller waits for the workers; one that the last region had no chunk for (a
// region of fewer chunks than workers: after set_num_threads lowered the count, or a small
// one) sleeps at once. The default count is the CPUs of the process's affinity mask. One
// region runs on the pool at a time; a call that finds the pool busy (another Python thread,
// or a call from inside a region) starts threads of its own for its chunks, which compute
// exactly the same; one made from inside a region (a chunk that calls parallel_for) runs its
// chunks one after another on its own thread. A child made by fork() starts a new pool.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <pthread.h>
#ifdef __linux__
#include <sched.h>
#endif

#include "rnnkit.h"

namespace rnnkit {

namespace {

// The CPUs this process may run on (its affinity mask: taskset, a container's cpuset), not
// the machine's count: more threads than that only take turns on the same CPUs.
int available_cpus() {
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
    return int(std::max(1u, std::thread::hardware_concurrency()));
}

int initial_threads() {
    if (const char* env = std::getenv("RNNKIT_NUM_THREADS")) {
        char* end = nullptr;
        errno = 0;
        const long n = std::strtol(env, &end, 10);   // a whole number >= 1, else ignored
        while (end != env && std::isspace(static_cast<unsigned char>(*end))) ++end;
        if (end != env && *end == '\0' && errno == 0 && n >= 1) return int(std::min(n, 1024L));
    }
    return available_cpus();
}

std::atomic<int> thread_count{initial_threads()};

using ChunkFn = std::function<void(int64_t, int64_t)>;

// True on the pool's workers, and on a caller while it runs its region's first chunk.
thread_local bool inside_region = false;

// Chunk c of `chunks` over [0, n): [n c / chunks, n (c + 1) / chunks).
inline int64_t chunk_bound(int64_t n, int64_t chunks, int64_t c) { return n * c / chunks; }

// Chunks 1.. of a region on threads started for it (the pool is busy, or cannot grow). As
// with the pool, an exception from any chunk reaches the caller (the first one) after every
// started thread is joined.
void run_on_new_threads(int64_t n, int64_t chunks, const ChunkFn& fn) {
    std::vector<std::thread> workers;
    workers.reserve(size_t(chunks - 1));
    std::mutex mutex;
    std::exception_ptr error;
    const auto run = [&](int64_t lo, int64_t hi) {
        try {
            fn(lo, hi);
        } catch (...) {
            std::lock_guard<std::mutex> lock(mutex);
            if (!error) error = std::current_exception();
        }
    };
    int64_t c = 1;
    try {
        for (; c < chunks; ++c)
            workers.emplace_back(run, chunk_bound(n, chunks, c), chunk_bound(n, chunks, c + 1));
    } catch (const std::system_error&) {
        // no thread to be had (a process limit): the chunks not started run here instead;
        // each output element is still computed once, in the same order
    }
    run(0, chunk_bound(n, chunks, 1));
    for (; c < chunks; ++c) run(chunk_bound(n, chunks, c), chunk_bound(n, chunks, c + 1));
    for (auto& w : workers) w.join();
    if (error) std::rethrow_exception(error);
}

class Pool {
public:
    // Runs chunks 1 .. chunks-1 of fn on workers 1 .. chunks-1 and chunk 0 here; false (and
    // nothing run) when the pool is busy or cannot grow.
    bool run(int64_t n, int64_t chunks, const ChunkFn& fn) {
        std::unique_lock<std::mutex> region(region_, std::try_to_lock);
        if (!region.owns_lock()) return false;
        if (!grow(int(chunks - 1))) return false;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            fn_ = &fn;
            n_ = n;
            chunks_ = chunks;
            error_ = nullptr;
            pending_.store(int(chunks - 1), std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        std::exception_ptr error;
        inside_region = true;
        try {
            fn(0, chunk_bound(n, chunks, 1));
        } catch (...) {
            error = std::current_exception();
        }
        inside_region = false;
        // wait for the workers: spin first (their chunks end about when this one does)
        Spin spin;
        while (pending_.load(std::memory_order_acquire) != 0) {
            if (spin.again()) continue;
            std::unique_lock<std::mutex> lock(mutex_);
            done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
        }
        if (!error) {
            std::lock_guard<std::mutex> lock(mutex_);
            error = error_;
        }
        if (error) std::rethrow_exception(error);
        return true;
    }

private:
    // A wait spins before it sleeps: waking a sleeping thread costs 60-140 us on this
    // project's (virtual) machine, more than the serial work between the regions of a small
    // network's minibatch. For kPauseTime it runs pause instructions; then, until kSpinTime,
    // it yields the CPU at each turn, so that a thread that shares this CPU (more threads than
    // CPUs: a fit per core in a joblib sweep, a taskset) gets it rather than waiting for the
    // spin to end. Time, not a count of pauses, whose length varies tenfold between CPU
    // generations.
    static constexpr auto kPauseTime = std::chrono::microseconds(30);
    static constexpr auto kSpinTime = std::chrono::microseconds(300);

    // true while the wait should go on spinning (pausing, then yielding); then false: sleep
    class Spin {
    public:
        bool again() {
            if (++count_ % 32 == 1) {   // a clock read per 32 turns
                const auto now = std::chrono::steady_clock::now();
                if (count_ == 1) start_ = now;
                const auto waited = now - start_;
                if (waited >= kSpinTime) return false;
                yield_ = waited >= kPauseTime;
            }
            if (yield_) {
                std::this_thread::yield();
            } else {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            }
            return true;
        }

    private:
        uint64_t count_ = 0;
        bool yield_ = false;
        std::chrono::steady_clock::time_point start_{};
    };

    // At least `count` workers; false if they cannot all be started. Called by the holder of
    // region_ before it starts a region: a new worker waits for the region after the last.
    bool grow(int count) {
        while (int(workers_.size()) < count) {
            try {
                const int index = int(workers_.size()) + 1;
                const uint64_t last = generation_.load(std::memory_order_relaxed);
                workers_.emplace_back([this, index, last] { work(index, last); });
                workers_.back().detach();   // the pool lives as long as the process
            } catch (const std::system_error&) {
                return false;
            }
        }
        return true;
    }

    // Worker `index`: runs chunk `index` of every region after region `seen` that has one.
    void work(int index, uint64_t seen) {
        inside_region = true;
        bool had_chunk = true;   // in the last region: a worker left out sleeps at once
        for (;;) {
            // wait for the next region: spin (if the last one had work for it), then sleep
            Spin spin;
            while (generation_.load(std::memory_order_acquire) == seen) {
                if (had_chunk && spin.again()) continue;
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] {
                    return generation_.load(std::memory_order_relaxed) != seen;
                });
            }
            const ChunkFn* fn;
            int64_t n, chunks;
            {
                std::lock_guard<std::mutex> lock(mutex_);   // the region's description
                seen = generation_.load(std::memory_order_relaxed);
                fn = fn_;
                n = n_;
                chunks = chunks_;
            }
            had_chunk = index < chunks;
            if (!had_chunk) continue;   // this region has fewer chunks than workers
            try {
                (*fn)(chunk_bound(n, chunks, index), chunk_bound(n, chunks, index + 1));
            } catch (...) {
                std::lock_guard<std::mutex> lock(mutex_);
                if (!error_) error_ = std::current_exception();
            }
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lock(mutex_);   // the caller may be going to sleep
                done_.notify_one();
            }
        }
    }

    std::mutex region_;                  // held by the caller for the whole region
    std::mutex mutex_;                   // guards the sleeps, the region's description, error_
    std::condition_variable wake_, done_;
    std::atomic<uint64_t> generation_{0};   // one more per region
    std::atomic<int> pending_{0};        // workers' chunks not yet finished
    // the current region, written with generation_ and read under mutex_
    const ChunkFn* fn_ = nullptr;
    int64_t n_ = 0, chunks_ = 0;
    std::exception_ptr error_;
    std::vector<std::thread> workers_;   // detached
};

// Never destroyed: its workers sleep until the process ends. A forked child has none of its
// parent's workers, so it drops the parent's pool (without touching its locks) for a new one.
std::atomic<Pool*> pool{nullptr};
std::once_flag atfork_registered;

Pool& the_pool() {
    std::call_once(atfork_registered,
                   [] { pthread_atfork(nullptr, nullptr, [] { pool.store(nullptr); }); });
    Pool* p = pool.load(std::memory_order_acquire);
    if (!p) {
        Pool* fresh = new Pool();
        if (pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel))
            p = fresh;
        else
            delete fresh;   // another thread made one first
    }
    return *p;
}

}  // namespace

void set_num_threads(int n) { thread_count.store(std::max(1, n)); }

int num_threads() { return thread_count.load(); }

void parallel_for(int64_t n, int64_t min_chunk, const ChunkFn& fn) {
    if (n <= 0) return;
    const int64_t chunks =
        std::max<int64_t>(1, std::min<int64_t>(num_threads(), n / std::max<int64_t>(1, min_chunk)));
    if (chunks == 1) {
        fn(0, n);
        return;
    }
    if (inside_region) {   // nested: the same chunks, here, in order
        for (int64_t c = 0; c < chunks; ++c)
            fn(chunk_bound(n, chunks, c), chunk_bound(n, chunks, c + 1));
        return;
    }
    if (!the_pool().run(n, chunks, fn)) run_on_new_threads(n, chunks, fn);
}

}  // namespace rnnkit
