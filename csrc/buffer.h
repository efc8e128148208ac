// Scratch buffers for the kernels: uninitialized (the kernels write every scalar before they
// read it), huge pages for large ones.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>

#include <sys/mman.h>

namespace rnnkit {

// n scalars, uninitialized, starting on a 64-byte cache line: malloc's 16-byte alignment would
// leave every vector load of a row of a packed or transposed matrix straddling two lines (the
// W1 epoch's matrix-vector steps, which stream W^T from L2, were 30% slower so, by chance of
// the heap's state). One of 1 MiB or more is rounded up to whole 2 MiB huge pages, which it
// asks the kernel for: a step's product reads one row per record from the caches, a row every
// T·C·H scalars, and with 4 KiB pages every row of a tile is a different page (a miss in the
// TLB each; W3 trains 1.25x faster with huge pages). Throws std::bad_alloc.
//
// Built with RNNKIT_POISON_SCRATCH (the sanitizer build, .ci/sanitize), every scalar starts as
// NaN instead, so that a kernel reading scratch it did not write shows in the results.
template <typename Real>
class Buffer {
public:
    explicit Buffer(int64_t n) {
        const size_t bytes = size_t(std::max<int64_t>(n, 1)) * sizeof(Real);
        constexpr size_t huge = size_t(2) << 20;
        if (bytes >= huge / 2) {
            const size_t rounded = (bytes + huge - 1) / huge * huge;
            data_.reset(static_cast<Real*>(std::aligned_alloc(huge, rounded)));
#ifdef MADV_HUGEPAGE
            if (data_) madvise(data_.get(), rounded, MADV_HUGEPAGE);
#endif
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
        void operator()(Real* p) const { std::free(p); }
    };
    std::unique_ptr<Real, Free> data_;
};

}  // namespace rnnkit
