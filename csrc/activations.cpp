// tanh and the logistic sigmoid over arrays, in vector registers (see rnnkit.h).
//
// libm's tanh/exp are scalar calls and cost more than the matrix work of a small RNN step, so
// these compute a vector at a time with the Cephes algorithms (S. L. Moshier): eight doubles
// in double precision, or sixteen floats in single precision with Cephes' float coefficients:
//   exp(z):  z = n ln2 + r (two-part Cody-Waite), times 2^n built in the exponent bits; e^r
//            in double precision as Cephes' Pade quotient, folded into the caller's one
//            division, in single precision by Cephes' polynomial.
//   tanh(x): |x| < 0.625: x + x^3 P(x^2) / Q(x^2) (Cephes' rational approximation);
//            otherwise (1 - e) / (1 + e), e = exp(-2|x|); one division for both.
//   sigmoid: e = exp(-|a|); 1 / (1 + e) for a >= 0, e / (1 + e) otherwise (never overflows).
//            A row whose every |a| is at most 700 (double) or 80 (float), so that no e is
//            subnormal, skips the steps that only such an e needs: the same bits, fewer steps.
//   A row whose every |x| is below 0.625 computes tanh's small branch alone, without e; the
//   same bits, in a third (double) or a fifth (float) of the steps. Small recurrent networks
//   often run there: at their weights every row of the benchmarks' W2 and W3 does, and every
//   row of the first example before and after its training.
// They stay within 3 units in the last place (double) and 2 (float) of the correctly rounded
// values (the tests check it against NumPy at every level). Like gemm.cpp, this file is compiled
// with -ffp-contract=fast: its AVX-512 and AVX2 compilations fuse each multiply-add into one
// instruction (one rounding) and give the same bits as each other; the baseline compilation
// multiplies then adds. Fusing is faster than separate operations (most of the work is
// polynomial steps), and results stay bitwise reproducible for a given level.
#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "levels.h"
#include "rnnkit.h"

namespace rnnkit {

namespace {

// Lane helpers are always inlined into the clones below: no vector crosses a call boundary.
#define RNNKIT_LANES __attribute__((always_inline)) inline

constexpr int L = 8;
typedef double vd __attribute__((vector_size(L * sizeof(double))));
typedef long long vl __attribute__((vector_size(L * sizeof(long long))));

RNNKIT_LANES vd splat(double x) { return vd{} + x; }

// tanh's rational branch covers |x| below this, its exponential branch the rest (in both
// precisions); a row whose every |x| is below it takes the rational branch alone
constexpr double kTanhSmallBelow = 0.625;

// e^z for z in [-746, 0] (the callers clamp) as scale * extra * num / den, NaN staying NaN:
// z = n ln2 + r (two-part Cody-Waite), e^r = (Q(r^2) + r P(r^2)) / (Q(r^2) - r P(r^2)) with
// Cephes' Pade coefficients for |r| <= ln(2)/2 (an approximation error far below double
// precision: the roundings decide the result's), and 2^n built in the exponent bits. The
// callers fold num / den into their own single division. With Subnormals, 2^n below 2^-1000
// comes in two factors (scale normal, extra = 2^-54), for results down to the smallest
// subnormal; without, for z in [-700, 0] only, extra is 1.
struct ExpParts {
    vd num, den, scale, extra;
};

template <bool Subnormals>
RNNKIT_LANES ExpParts exp_parts(vd z) {
    // 1.5 * 2^52 + 1024: adding it rounds to an integer and leaves n + 1024 in the low bits of
    // the sum, from which the shift below builds 2^n's exponent field (the other bits shift
    // out). An even offset, so that a sum exactly halfway between two integers (possible where
    // the product is rounded on its own, at the baseline level) rounds to the same n as with
    // 1.5 * 2^52 alone: adding an odd one would flip such ties.
    const vd magic = splat(6755399441055744.0 + 1024.0);
    const vd shifted = z * 1.4426950408889634073599 + magic;       // round(z / ln 2) + magic
    const vd n = shifted - magic;
    vd r = z - n * 6.93145751953125E-1;                // ln 2 in two parts, the first exact
    r = r - n * 1.42860682030941723212E-6;
    const vd rr = r * r;
    vd p = splat(1.26177193074810590878E-4);
    p = p * rr + 3.02994407707441961300E-2;
    p = p * rr + 9.99999999999999999910E-1;
    const vd rp = r * p;
    vd q = splat(3.00198505138664455042E-6);
    q = q * rr + 2.52448340349684104192E-3;
    q = q * rr + 2.27265548208155028766E-1;
    q = q * rr + 2.00000000000000000009E0;
    vl sum;
    std::memcpy(&sum, &shifted, sizeof sum);
    vl deep{};                                         // lanes whose 2^n is below 2^-1000
    if constexpr (Subnormals) {
        const vd base = splat(6755399441055744.0);
        vl base_bits;
        std::memcpy(&base_bits, &base, sizeof base_bits);
        deep = sum - base_bits < 1024 - 1000;          // n + 1024 < 24
    }
    const vl bits = (deep ? sum + 53 : sum - 1) << 52;        // (n [+ 54] + 1023) << 52
    vd scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return {q + rp, q - rp, scale, deep ? splat(0x1p-54) : splat(1.0)};
}

RNNKIT_LANES vd clamp_exp_argument(vd z) { return z < -746.0 ? splat(-746.0) : z; }  // e^-746 rounds to 0

// tanh's rational branch, for |x| < 0.625: x + x^3 P(x^2) / Q(x^2) as the quotient
// (x q + x z p) / q, z = x^2, with Cephes' coefficients; its two parts, for the caller's
// division.
struct Quotient {
    vd numerator, denominator;
};

RNNKIT_LANES Quotient tanh_small_parts(vd x) {
    const vd z = x * x;
    const vd p = (-9.64399179425052238628E-1 * z - 9.92877231001918586564E1) * z -
                 1.61468768441708447952E3;
    const vd q = ((z + 1.12811678491632931402E2) * z + 2.23548839060100448583E3) * z +
                 4.84406305325125486048E3;
    return {x * q + x * z * p, q};
}

RNNKIT_LANES vd tanh_lanes(vd x) {
    const vd ax = x < 0.0 ? -x : x;
    const Quotient small = tanh_small_parts(x);
    // large |x|: (1 - e) / (1 + e) with e = exp(-2|x|) = se / den, with the sign of x, as
    // (den - se) / (den + se); from |x| = 22.5 on e < 2^-64 and the quotient rounds to exactly
    // +-1, so -2|x| stops at -45 there
    const vd minus_2ax = -2.0 * ax;
    const ExpParts e = exp_parts<false>(minus_2ax < -45.0 ? splat(-45.0) : minus_2ax);
    const vd se = e.num * e.scale;
    // one division for both branches
    const vl is_small = ax < kTanhSmallBelow;
    const vd one_minus_e = x < 0.0 ? se - e.den : e.den - se;
    const vd numerator = is_small ? small.numerator : one_minus_e;
    const vd denominator = is_small ? small.denominator : e.den + se;
    return numerator / denominator;
}

// tanh_lanes for |x| < 0.625 in every lane: its small branch alone.
RNNKIT_LANES vd tanh_small_lanes(vd x) {
    const Quotient small = tanh_small_parts(x);
    return small.numerator / small.denominator;
}

// e = exp(-|a|) = se / den: 1 / (1 + e) = den / (den + se) for a >= 0, e / (1 + e) =
// num / (den + se) times 2^n otherwise, scaled after the division so that a subnormal result
// is rounded once more at most (se itself may be subnormal; it only shifts the denominator).
RNNKIT_LANES vd sigmoid_lanes(vd a) {
    const ExpParts e = exp_parts<true>(clamp_exp_argument(a < 0.0 ? a : -a));
    const vd se = e.num * e.scale * e.extra;
    const vd quotient = (a >= 0.0 ? e.den : e.num) / (e.den + se);
    return a >= 0.0 ? quotient : quotient * e.scale * e.extra;
}

// sigmoid_lanes for |a| <= 700 in every lane, bit for bit: e^-|a| >= e^-700 is normal, so the
// exponent's 2^n needs no second factor, e's numerator se = num 2^n is exact, and rounding
// se / (den + se) once is rounding num / (den + se) and then scaling by 2^n exactly; -|a|
// needs no clamp.
RNNKIT_LANES vd sigmoid_moderate_lanes(vd a) {
    vl bits;
    std::memcpy(&bits, &a, sizeof bits);
    bits |= vl{} + std::numeric_limits<long long>::min();      // the sign bit: -|a|
    vd z;
    std::memcpy(&z, &bits, sizeof z);
    const ExpParts e = exp_parts<false>(z);
    const vd se = e.num * e.scale;
    return (a >= 0.0 ? e.den : se) / (e.den + se);
}

// Single precision, sixteen lanes: the same algorithms with Cephes' float coefficients.
typedef float vf __attribute__((vector_size(16 * sizeof(float))));
typedef int vi __attribute__((vector_size(16 * sizeof(int))));

RNNKIT_LANES vf splat_f(float x) { return vf{} + x; }

// e^z for z in [-104, 0] (below, e^z rounds to 0), subnormal results included; without
// Subnormals for z in [-80, 0] only.
template <bool Subnormals>
RNNKIT_LANES vf expf_nonpositive(vf z) {
    const vf magic = splat_f(12582912.0f);              // 1.5 * 2^23
    const vf shifted = z * 1.44269504088896341f + magic;
    const vf n = shifted - magic;                       // round(z / ln 2)
    vf r = z - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = splat_f(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    const vf er = p * (r * r) + r + 1.0f;
    vi ni, magic_bits;
    std::memcpy(&ni, &shifted, sizeof ni);
    std::memcpy(&magic_bits, &magic, sizeof magic_bits);
    ni -= magic_bits;
    if constexpr (!Subnormals) {
        const vi bits = (ni + 127) << 23;
        vf scale;
        std::memcpy(&scale, &bits, sizeof scale);
        return er * scale;
    }
    const vi deep = ni < -120;
    const vi bits = ((deep ? ni + 24 : ni) + 127) << 23;
    vf scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return er * scale * (deep ? splat_f(0x1p-24f) : splat_f(1.0f));
}

RNNKIT_LANES vf clamp_expf_argument(vf z) { return z < -104.0f ? splat_f(-104.0f) : z; }

// tanh for |x| < 0.625: x + x^3 P(x^2), Cephes' polynomial (no division).
RNNKIT_LANES vf tanh_small_lanes(vf x) {
    const vf z = x * x;
    vf p = splat_f(-5.70498872745E-3f);
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    return x + x * z * p;
}

RNNKIT_LANES vf tanh_lanes(vf x) {
    const vf ax = x < 0.0f ? -x : x;
    // from |x| = 10 on e < 2^-28 and the quotient rounds to exactly +-1: -2|x| stops at -20
    const vf minus_2ax = -2.0f * ax;
    const vf e = expf_nonpositive<false>(minus_2ax < -20.0f ? splat_f(-20.0f) : minus_2ax);
    const vi is_small = ax < float(kTanhSmallBelow);
    // the small branch's quotient by 1 is exact: a row all in its domain skips the division
    // (tanh_small_lanes alone)
    const vf numerator = is_small ? tanh_small_lanes(x) : (x < 0.0f ? e - 1.0f : 1.0f - e);
    const vf denominator = is_small ? splat_f(1.0f) : 1.0f + e;
    return numerator / denominator;
}

RNNKIT_LANES vf sigmoid_lanes(vf a) {
    const vf e = expf_nonpositive<true>(clamp_expf_argument(a < 0.0f ? a : -a));
    return (a >= 0.0f ? splat_f(1.0f) : e) / (1.0f + e);
}

// sigmoid_lanes for |a| <= 80 in every lane, bit for bit: e^-|a| >= e^-80 is normal (2^n
// needs no second factor) and the argument no clamp.
RNNKIT_LANES vf sigmoid_moderate_lanes(vf a) {
    const vf e = expf_nonpositive<false>(a < 0.0f ? a : -a);
    return (a >= 0.0f ? splat_f(1.0f) : e) / (1.0f + e);
}

// TanhSmall and SigmoidModerate: tanh and sigmoid over a row in their shorter steps' domains.
enum class Function { Tanh, TanhSmall, Sigmoid, SigmoidModerate };

template <Function f, typename V>
RNNKIT_LANES V function_lanes(V v) {
    if constexpr (f == Function::Tanh) return tanh_lanes(v);
    if constexpr (f == Function::TanhSmall) return tanh_small_lanes(v);
    if constexpr (f == Function::Sigmoid) return sigmoid_lanes(v);
    return sigmoid_moderate_lanes(v);
}

// |v| as the bits of its magnitude read as an integer: they order non-negative values as the
// values do and put NaN above infinity, so that comparing a row's largest with a bound's is
// false for a NaN anywhere in the row.
template <typename Real>
using MagnitudeInt = std::conditional_t<sizeof(Real) == 8, long long, int>;

template <typename Real>
RNNKIT_LANES MagnitudeInt<Real> magnitude_bits(Real v) {
    MagnitudeInt<Real> b;
    std::memcpy(&b, &v, sizeof b);
    return b & std::numeric_limits<MagnitudeInt<Real>>::max();   // every bit but the sign
}

// The largest magnitude_bits over x[0:n] (0 for n = 0), a vector at a time.
template <typename Real>
RNNKIT_LANES MagnitudeInt<Real> largest_magnitude(const Real* x, int64_t n) {
    typedef MagnitudeInt<Real> Int;
    typedef Int vint __attribute__((vector_size(64)));
    constexpr int64_t LN = 64 / int64_t(sizeof(Real));
    vint largest{};
    int64_t i = 0;
    for (; i + LN <= n; i += LN) {
        vint v;
        std::memcpy(&v, x + i, sizeof v);
        v &= std::numeric_limits<Int>::max();
        largest = v > largest ? v : largest;
    }
    Int most = 0;
    for (int64_t l = 0; l < LN; ++l) most = std::max(most, Int(largest[l]));
    for (; i < n; ++i) most = std::max(most, magnitude_bits(x[i]));
    return most;
}

// f(x) in place for the 64 bytes of lanes at p (8 doubles or 16 floats). Direct calls only
// (no function pointer or lambda), so that every helper is inlined into the instruction set
// of the function that uses it.
template <Function f, typename Real>
RNNKIT_LANES void apply_lanes(Real* p) {
    typedef Real vr __attribute__((vector_size(64)));
    vr v;
    std::memcpy(&v, p, sizeof v);
    v = function_lanes<f>(v);
    std::memcpy(p, &v, sizeof v);
}

// Applies f to x[0:n] in place, a vector at a time. A part of a vector left at the end: when
// n is more than a vector, the last whole vector x[n - LN:n] is computed first, from the
// inputs, and stored after the rest (its lanes overlap the vector before it with the same
// values: the lanes are independent); else through a padded vector.
template <Function f, typename Real>
RNNKIT_LANES void map_lanes(Real* x, int64_t n) {
    typedef Real vr __attribute__((vector_size(64)));
    constexpr int64_t LN = 64 / int64_t(sizeof(Real));
    const bool overlap = n > LN && n % LN != 0;
    vr last{};
    if (overlap) {
        std::memcpy(&last, x + n - LN, sizeof last);
        last = function_lanes<f>(last);
    }
    const int64_t whole = n - n % LN;
    int64_t i = 0;
    for (; i + 4 * LN <= whole; i += 4 * LN) {   // four vectors in flight: the chains are long
        apply_lanes<f>(x + i);
        apply_lanes<f>(x + i + LN);
        apply_lanes<f>(x + i + 2 * LN);
        apply_lanes<f>(x + i + 3 * LN);
    }
    for (; i < whole; i += LN) apply_lanes<f>(x + i);
    if (overlap) {
        std::memcpy(x + n - LN, &last, sizeof last);
    } else if (i < n) {
        Real pad[LN] = {};
        std::memcpy(pad, x + i, size_t(n - i) * sizeof(Real));
        apply_lanes<f>(pad);
        std::memcpy(x + i, pad, size_t(n - i) * sizeof(Real));
    }
}

// One compilation per instruction-set level, chosen by the level gemm_accumulate runs at.
#define RNNKIT_ACTIVATION_LEVEL(name, attributes)                                                \
    template <typename Real>                                                                   \
    attributes void name##_tanh(Real* x, int64_t n) {                                         \
        if (largest_magnitude(x, n) < magnitude_bits(Real(kTanhSmallBelow)))                  \
            map_lanes<Function::TanhSmall>(x, n);                                              \
        else                                                                                   \
            map_lanes<Function::Tanh>(x, n);                                                   \
    }                                                                                          \
    template <typename Real>                                                                   \
    attributes void name##_sigmoid(Real* x, int64_t n) {                                      \
        if (largest_magnitude(x, n) <= magnitude_bits(Real(sizeof(Real) == 8 ? 700 : 80)))    \
            map_lanes<Function::SigmoidModerate>(x, n);                                        \
        else                                                                                   \
            map_lanes<Function::Sigmoid>(x, n);                                                \
    }

RNNKIT_ACTIVATION_LEVEL(baseline, )
#if RNNKIT_X86
RNNKIT_ACTIVATION_LEVEL(avx2, __attribute__((target("avx2,fma"))))
RNNKIT_ACTIVATION_LEVEL(avx512, __attribute__((target("avx512f,fma"))))
#endif

template <typename Real>
void tanh_inplace(Real* x, int64_t n) {
    RNNKIT_AT_LEVEL(tanh, x, n)
}

template <typename Real>
void sigmoid_inplace(Real* x, int64_t n) {
    RNNKIT_AT_LEVEL(sigmoid, x, n)
}

}  // namespace

template <typename Real>
void activate(Real* a, int64_t n, Activation act) {
    switch (act) {
        case Activation::Tanh:
            tanh_inplace(a, n);
            break;
        case Activation::Sigmoid:
            sigmoid_inplace(a, n);
            break;
        case Activation::Relu:
            for (int64_t j = 0; j < n; ++j) a[j] = a[j] < Real(0) ? Real(0) : a[j];  // NaN stays
            break;
    }
}

template void activate(float*, int64_t, Activation);
template void activate(double*, int64_t, Activation);

}  // namespace rnnkit
