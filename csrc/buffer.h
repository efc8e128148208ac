// Scratch buffers for the kernels: uninitialized (the kernels write every scalar before they
// read it), huge pages for large ones.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <new>

#include <pthread.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define RNNKIT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RNNKIT_ASAN 1
#endif
#endif
#ifdef RNNKIT_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace rnnkit {

// Under AddressSanitizer, memory a kept block holds that no Buffer uses is poisoned, so that a
// use after a Buffer's end or beyond its size is reported as if the block had been freed.
inline void poison(void* p, size_t bytes) {
#ifdef RNNKIT_ASAN
    ASAN_POISON_MEMORY_REGION(p, bytes);
#else
    (void)p, (void)bytes;
#endif
}
inline void unpoison(void* p, size_t bytes) {
#ifdef RNNKIT_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, bytes);
#else
    (void)p, (void)bytes;
#endif
}

// A block of `bytes` (a multiple of 2 MiB) on a 2 MiB boundary, asked for as huge pages; nullptr
// if it cannot be had. Mapped on its own (not from the heap), so that freeing it gives its
// address space back to the system at once; under AddressSanitizer from aligned_alloc, which
// it guards.
constexpr size_t kHugePage = size_t(2) << 20;

inline void* allocate_huge(size_t bytes) {
#ifdef RNNKIT_ASAN
    void* p = std::aligned_alloc(kHugePage, bytes);
#else
    const size_t len = bytes + kHugePage;   // then the slack before the boundary is unmapped
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    const uintptr_t start = uintptr_t(m), p_at = (start + kHugePage - 1) / kHugePage * kHugePage;
    if (p_at > start) munmap(m, p_at - start);
    if (start + len > p_at + bytes) munmap(reinterpret_cast<void*>(p_at + bytes),
                                           start + len - (p_at + bytes));
    void* p = reinterpret_cast<void*>(p_at);
#endif
#ifdef MADV_HUGEPAGE
    if (p) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

inline void free_huge(void* p, size_t bytes) {
#ifdef RNNKIT_ASAN
    (void)bytes;
    std::free(p);
#else
    munmap(p, bytes);
#endif
}

// The huge-page scratch blocks of the last calls, kept for the next ones. A block freed to the
// system and mapped again by the next call (the next epoch of fit, the next predict) has every
// page cleared by the kernel when first touched again: about 3% of a W3 epoch here. At most
// kMaxBlocks blocks of together at most the limit (256 MiB; rnnkit.set_scratch_cache_limit)
// are kept, the largest first; one that does not fit is freed, and so are all of them when an
// allocation fails. (MADV_FREE on a kept block, to let the kernel take it back under pressure,
// made the kernel clear its pages again on reuse here: not used.) Thread-safe.
class KeptBlocks {
public:
    static constexpr int kMaxBlocks = 4;

    // The smallest kept block of at least `bytes`, no longer kept, and its size in `bytes`;
    // nullptr if there is none.
    void* take(size_t& bytes) {
        std::lock_guard<std::mutex> lock(mutex_);
        int best = -1;
        for (int i = 0; i < count_; ++i)
            if (blocks_[i].bytes >= bytes && (best < 0 || blocks_[i].bytes < blocks_[best].bytes))
                best = i;
        if (best < 0) return nullptr;
        void* p = blocks_[best].p;
        bytes = blocks_[best].bytes;
        total_ -= bytes;
        blocks_[best] = blocks_[--count_];
        return p;
    }

    // Keeps the block p of `bytes` (from allocate_huge), freeing smaller kept blocks
    // to make room if need be, and returns true; or returns false, and the caller frees it.
    bool keep(void* p, size_t bytes) {
        std::lock_guard<std::mutex> lock(mutex_);
        size_t room = limit_ - total_;   // with every kept block smaller than p freed:
        int slots = kMaxBlocks - count_;
        for (int i = 0; i < count_; ++i)
            if (blocks_[i].bytes < bytes) room += blocks_[i].bytes, ++slots;
        if (bytes > room || slots == 0) return false;
        while (count_ == kMaxBlocks || total_ + bytes > limit_) free_smallest();
        poison(p, bytes);
        blocks_[count_++] = {p, bytes};
        total_ += bytes;
        return true;
    }

    // Sets the limit on the kept bytes, freeing kept blocks to meet it; returns the former limit.
    size_t set_limit(size_t limit) {
        std::lock_guard<std::mutex> lock(mutex_);
        while (total_ > limit) free_smallest();
        std::swap(limit, limit_);
        return limit;
    }

    // Frees every kept block (the limit stays).
    void free_all() {
        std::lock_guard<std::mutex> lock(mutex_);
        while (count_ > 0) free_smallest();
    }

    void lock() { mutex_.lock(); }   // for fork() (kept_blocks)
    void unlock() { mutex_.unlock(); }

    size_t kept_bytes() {
        std::lock_guard<std::mutex> lock(mutex_);
        return total_;
    }

private:
    void free_smallest() {   // (count_ > 0, mutex_ held)
        int smallest = 0;
        for (int i = 1; i < count_; ++i)
            if (blocks_[i].bytes < blocks_[smallest].bytes) smallest = i;
        unpoison(blocks_[smallest].p, blocks_[smallest].bytes);
        free_huge(blocks_[smallest].p, blocks_[smallest].bytes);
        total_ -= blocks_[smallest].bytes;
        blocks_[smallest] = blocks_[--count_];
    }

    struct Block {
        void* p;
        size_t bytes;
    };
    std::mutex mutex_;
    Block blocks_[kMaxBlocks] = {};
    int count_ = 0;
    size_t total_ = 0;
    size_t limit_ = size_t(256) << 20;
};

// The process's kept blocks (never destroyed: a Buffer may be freed during exit). fork() holds
// their lock, so that a child never starts with it held by a thread it does not have.
inline KeptBlocks& kept_blocks() {
    static KeptBlocks* blocks = [] {
        pthread_atfork([] { kept_blocks().lock(); }, [] { kept_blocks().unlock(); },
                       [] { kept_blocks().unlock(); });
        return new KeptBlocks();
    }();
    return *blocks;
}

// n scalars, uninitialized, starting on a 64-byte cache line: malloc's 16-byte alignment would
// leave every vector load of a row of a packed or transposed matrix straddling two lines (the
// W1 epoch's matrix-vector steps, which stream W^T from L2, were 30% slower so, by chance of
// the heap's state). One of 1 MiB or more is rounded up to whole 2 MiB huge pages, which it
// asks the kernel for: a step's product reads one row per record from the caches, a row every
// T·C·H scalars, and with 4 KiB pages every row of a tile is a different page (a miss in the
// TLB each; W3 trains 1.25x faster with huge pages). Such a block comes from kept_blocks() if it
// has one large enough, and goes back to it when freed. Throws std::bad_alloc.
//
// Built with RNNKIT_POISON_SCRATCH (the sanitizer build, .ci/sanitize), every scalar starts as
// NaN instead, so that a kernel reading scratch it did not write shows in the results.
template <typename Real>
class Buffer {
public:
    explicit Buffer(int64_t n) {
        const size_t bytes = size_t(std::max<int64_t>(n, 1)) * sizeof(Real);
        if (bytes >= kHugePage / 2) {
            if (bytes > std::numeric_limits<size_t>::max() - kHugePage) throw std::bad_alloc();
            size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
            data_.reset(static_cast<Real*>(kept_blocks().take(rounded)));   // or a larger one
            if (data_) {
                unpoison(data_.get(), bytes);
            } else {
                void* p = allocate_huge(rounded);
                if (!p) {   // the kept blocks' memory may be what it lacks
                    kept_blocks().free_all();
                    p = allocate_huge(rounded);
                }
                data_.reset(static_cast<Real*>(p));
            }
            data_.get_deleter().huge_bytes = rounded;
        } else {
            constexpr size_t line = 64;   // aligned_alloc wants a multiple of the alignment
            const size_t rounded = (bytes + line - 1) / line * line;
            data_.reset(static_cast<Real*>(std::aligned_alloc(line, rounded)));
        }
        if (!data_) throw std::bad_alloc();
#ifdef RNNKIT_POISON_SCRATCH
        std::fill(data_.get(), data_.get() + std::max<int64_t>(n, 1),
                  std::numeric_limits<Real>::quiet_NaN());
#endif
    }
    Real* data() const { return data_.get(); }

private:
    struct Free {
        size_t huge_bytes = 0;   // a huge-page block's size: offered to kept_blocks()
        void operator()(Real* p) const {
            if (huge_bytes == 0)
                std::free(p);
            else if (!kept_blocks().keep(p, huge_bytes))
                free_huge(p, huge_bytes);
        }
    };
    std::unique_ptr<Real, Free> data_;
};

}  // namespace rnnkit
