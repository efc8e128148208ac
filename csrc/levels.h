// The instruction-set levels the elementwise kernels are compiled for, as gemm.cpp's products
// are (see rnnkit.h's Isa): whether this target has AVX2/AVX-512 compilations at all, and a
// call of the compilation that matches the level the products run at.
#pragma once

#include "rnnkit.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RNNKIT_X86 1
#else
#define RNNKIT_X86 0
#endif

// `return` avx512_fn(...), avx2_fn(...) or baseline_fn(...), by current_isa_level(); for
// functions compiled at the three levels (fn may carry template arguments: fn<Cell>).
#if RNNKIT_X86
#define RNNKIT_AT_LEVEL(fn, ...)                                   \
    switch (current_isa_level()) {                                 \
        case Isa::Avx512: return avx512_##fn(__VA_ARGS__);         \
        case Isa::Avx2: return avx2_##fn(__VA_ARGS__);             \
        default: return baseline_##fn(__VA_ARGS__);                \
    }
#else
#define RNNKIT_AT_LEVEL(fn, ...) return baseline_##fn(__VA_ARGS__);
#endif

// MACRO(name, attributes) once per level, for elementwise code that rounds alike at every
// level (no FMA): baseline, and on x86 avx2 and avx512 with their target attributes.
#if RNNKIT_X86
#define RNNKIT_AT_EVERY_LEVEL(MACRO)                 \
    MACRO(baseline, )                                \
    MACRO(avx2, __attribute__((target("avx2"))))     \
    MACRO(avx512, __attribute__((target("avx512f"))))
#else
#define RNNKIT_AT_EVERY_LEVEL(MACRO) MACRO(baseline, )
#endif
