// Shared by the CPU kernels: element types, dtype dispatch and the two reduction shapes.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>  // (its size: Half below reads c10::Half storage)

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../entry.h"

namespace attnfused {
namespace cpu {

// fp16 as the CPU kernels store it: c10::Half's bits, converted to and from float branch-free in
// integer and float operations that the loop vectoriser takes (AVX2 clone: 8 lanes), with the
// results of F16C's conversions (round to nearest even; checked against _cvtsh_ss / _cvtss_sh on
// all 2^16 halves and all 2^32 floats; a NaN leaves as 0x7E00 with its sign, as c10's software
// path has it). c10::Half converts with F16C only where ``__F16C__`` is defined for the whole build,
// which target_clones does not do, and its software path has branches that kept every fp16 loop
// scalar: fp16 blocks ran 2.5-13x slower than eager. 2^20 elements, y = x * g, one thread, Zen 5
// VM: c10::Half 3.0 ms, this 0.60, scalar F16C 0.45. The fast paths read and write fp16 rows
// through float buffers instead (RowIO, TileRows below; half.cpp); this type serves the generic
// loops (other strides) and half.cpp's path for CPUs without F16C.
struct alignas(2) Half {
  uint16_t bits;
  Half() = default;
  Half(float f) : bits(from_float(f)) {}  // NOLINT: implicit, as the kernels' static_casts expect
  operator float() const { return to_float(bits); }

  static float to_float(uint16_t h) {
    const uint32_t w = uint32_t{h} << 16, sign = w & 0x80000000u, two_w = w + w;
    // Normal (and inf / NaN): exponent rebased by 0xE0 then scaled by 2^-112 (inf / NaN stay so).
    const float normal = bits_float((two_w >> 4) + (0xE0u << 23)) * bits_float(15u << 23);
    // Subnormal and zero: the mantissa under an exponent of 2^-1, less 0.5.
    const float subnormal = bits_float((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t is_sub = 0u - uint32_t{two_w < (1u << 27)};  // a mask, not a branch
    return bits_float(sign | (float_bits(subnormal) & is_sub) | (float_bits(normal) & ~is_sub));
  }

  static uint16_t from_float(float f) {
    const uint32_t w = float_bits(f), shl1 = w + w, sign = w & 0x80000000u;
    // |f| scaled by 2^112 then 2^-110: overflow to inf and the subnormal range fall out of the
    // float arithmetic; adding 2^(e-10)-scaled bias rounds the mantissa to 10 bits (nearest even).
    float base = bits_float(w & 0x7FFFFFFFu) * bits_float(239u << 23) * bits_float(17u << 23);
    const uint32_t bias = std::max(shl1 & 0xFF000000u, 0x71000000u);
    base = bits_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t b = float_bits(base);
    const uint32_t nonsign = ((b >> 13) & 0x7C00u) + (b & 0x0FFFu);
    const uint32_t nan = 0u - uint32_t{shl1 > 0xFF000000u};
    return static_cast<uint16_t>((sign >> 16) | (0x7E00u & nan) | (nonsign & ~nan));
  }

 private:
  static float bits_float(uint32_t u) { return __builtin_bit_cast(float, u); }
  static uint32_t float_bits(float f) { return __builtin_bit_cast(uint32_t, f); }
};
static_assert(sizeof(Half) == sizeof(c10::Half), "Half reads c10::Half storage");

// Whole rows of fp16 to float and back (half.cpp): F16C's 8-wide conversions where the CPU has
// them, Half's otherwise. ``stream``: as store_row's.
void half_to_float(const Half* in, float* out, int64_t n);
void float_to_half(const float* in, Half* out, int64_t n, bool stream);
// v[k] = float(Half(v[k])): CBAM's x * ca as eager materialises it in fp16.
void round_to_half(float* v, int64_t n);
// y[k] = Half(float(x[k]) * g) and Half(float(x[k]) * g[k]): SE's and ECA's forward rows in one
// pass (RowIO<Half>::scale_row).
void scale_half_row(const Half* x, float g, Half* y, int64_t n, bool stream);
void mul_half_row(const Half* x, const float* g, Half* y, int64_t n, bool stream);
// The sum of an fp16 row summed as it is loaded (F16C), in row_reduce's order with by_depth's depth
// for its length: the same bits as row_reduce over the row converted. Only where
// half_sums_direct() (the CPU has F16C).
bool half_sums_direct();
float half_row_sum(const Half* x, int64_t n);

// Calls ``f(scalar_t{})`` with the C++ type of ``dt``; fp64 inputs pair with double small
// tensors and the rest with float (the caller's acc_t), so only matching pairs instantiate.
template <typename acc_t, typename F>
void dispatch(DType dt, F&& f) {
  if constexpr (std::is_same_v<acc_t, double>) {
    f(double{});
  } else {
    switch (dt) {
      case DType::kF32: f(float{}); break;
      case DType::kF16: f(Half{}); break;
      case DType::kBF16: f(c10::BFloat16{}); break;
      default: break;  // kF64 always comes with double (checked by the torch glue)
    }
  }
}

// Calls ``f(std::true_type{})`` or ``f(std::false_type{})``: a runtime flag made a compile-time
// one, so the loop body it selects has no branch.
template <typename F>
void with_flag(bool flag, F&& f) {
  if (flag) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// ~64 KiB of input per task: enough to amortise scheduling, small enough to balance 2..N threads.
inline int64_t grain_for(int64_t elems_per_item) {
  return std::max<int64_t>(1, (int64_t{16} << 10) / std::max<int64_t>(1, elems_per_item));
}

// The loops below are compiled twice (AVX2 and baseline x86-64) and picked at load time by the
// CPU (GCC target_clones); the value functors passed in are branch-free so that both vectorise.
// No FMA clone: both versions round identically, so results do not depend on the machine.
// ``flatten`` inlines everything called inside (the value functors, row_reduce, ...) into each clone:
// left to the heuristics, GCC kept larger bodies as calls, which both costs a call per short row
// and compiles the body for the baseline ISA only.
// AF_VEC4 adds a third clone for x86-64-v4 (AVX-512 F/BW/DQ/VL) where it pays: the pointwise
// loops' bf16 rows (pointwise.cpp, through for_rows_of), which round through 32-bit integer steps
// (c10::BFloat16's round to nearest even), vectorised by GCC twice as wide there. bf16, batch 8,
// one thread, old / new in alternating processes (3 each, Zen 5 VM), 25th percentile of 300
// calls, ms: forward scale 512 x 28^2 0.463-0.470 / 0.211-0.216, 1024 x 14^2 0.243-0.248 /
// 0.115-0.118, 2048 x 7^2 0.139-0.142 / 0.105-0.109; grad_input 0.54-0.55 / 0.24-0.26,
// 0.28 / 0.14, 0.14 / 0.10-0.11.
// Elementwise, so the same bits. As AF_VEC's clone set it gained nothing measurable elsewhere
// (fp32 scale, pools, dots) and cost 70% more build time.
// (GCC 12's target_clones takes the x86-64-v4 level, not single AVX-512 feature names; older GCCs
// keep the two clones.)
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define AF_VEC __attribute__((target_clones("avx2", "default"), flatten))
#if __GNUC__ >= 12
#define AF_VEC4 __attribute__((target_clones("arch=x86-64-v4", "avx2", "default"), flatten))
#else
#define AF_VEC4 AF_VEC
#endif
#else
#define AF_VEC
#define AF_VEC4
#endif

// Calls ``body(i, b, j)`` for i in [begin, end) with (b, j) = divmod(i, J), advanced without a
// 64-bit division per item. The whole loop is one clone and the body (a row's work, with
// row_reduce below) inlines into it: on a 7x7 row (49 elements) a division or a call
// through the clone dispatcher per row would cost as much as the row itself.
template <typename Body>
AF_VEC void for_rows(int64_t begin, int64_t end, int64_t J, const Body& body) {
  int64_t b = begin / J, j = begin % J;
  for (int64_t i = begin; i < end; ++i) {
    body(i, b, j);
    if (++j == J) {
      j = 0;
      ++b;
    }
  }
}

// The same loop with AF_VEC4's clones. Written out twice on purpose: with the loop in one
// always_inline helper that both called, ``flatten`` stopped inlining the row bodies into the
// clones, and reduce_c's bf16 rows ran as calls to baseline (SSE2) code (CBAM FC forward, bf16
// channels_last, 8 x 512 x 28^2: 1.07 -> 2.11 ms).
template <typename Body>
AF_VEC4 void for_rows4(int64_t begin, int64_t end, int64_t J, const Body& body) {
  int64_t b = begin / J, j = begin % J;
  for (int64_t i = begin; i < end; ++i) {
    body(i, b, j);
    if (++j == J) {
      j = 0;
      ++b;
    }
  }
}

// for_rows for the pointwise loops over scalar_t rows: AF_VEC4's clones for bf16, AF_VEC's for
// the rest (fp16 rows go through half.cpp's F16C functions; fp32 rows gained nothing in 64-byte
// vectors and lost at times: scale at 8 x 1024 x 14^2, one thread, 0.126-0.127 ms with
// AF_VEC's clones, 0.130-0.161 with AF_VEC4's).
template <typename scalar_t, typename Body>
inline void for_rows_of(int64_t begin, int64_t end, int64_t J, const Body& body) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    for_rows4(begin, end, J, body);
  } else {
    for_rows(begin, end, J, body);
  }
}

// Outputs of at least kStreamBytes (entry.h) leave through streaming stores.

// ``o[k] = value(k)`` (rounded to scalar_t) for k in [0, n): plain stores, or with ``stream`` the
// 64-byte-aligned middle of the row in whole cache lines through SSE2 streaming stores (16 bytes
// each, any element type; both clones of AF_VEC have SSE2). The caller issues store_fence() before the data is read
// elsewhere (streaming stores are weakly ordered).
// With ``q`` in [0, n), ``o[q] = at_q`` instead (the max's one gradient element per row), so that
// ``value`` stays free of a compare with the index, which kept GCC from vectorising it: in a
// streamed line it is patched into the line's buffer before the line leaves (a store to the line
// afterwards waited for the streaming stores to drain and read the line back from memory, once per
// row: SE max's backward at 8x512x28x28 ran at a third of avg's speed), elsewhere stored after.
// How many of ``n`` elements from ``o`` come before its first 64-byte line boundary: the head a
// streamed row writes plainly (store_row; half.cpp's F16C rows).
template <typename T>
inline int64_t line_head(const T* o, int64_t n) {
  return std::min<int64_t>(n, ((64 - (reinterpret_cast<uintptr_t>(o) & 63)) & 63) / sizeof(T));
}

template <typename scalar_t, typename Value, typename R = std::invoke_result_t<const Value&, int64_t>>
inline void store_row(scalar_t* __restrict o, int64_t n, bool stream, const Value& value, int64_t q = -1,
                      R at_q = R()) {
  int64_t k = 0, s0 = 0, s1 = 0;  // [s0, s1): the streamed lines
#if defined(__SSE2__)
  if (stream) {
    constexpr int64_t L = 64 / sizeof(scalar_t);
    const int64_t head = line_head(o, n);
#pragma GCC ivdep
    for (; k < head; ++k) o[k] = static_cast<scalar_t>(value(k));
    for (s0 = k; k + L <= n; k += L) {
      alignas(64) scalar_t line[L];
      // Left to the loop vectoriser (unroll 1): unrolled first, the 16 elements went to the
      // straight-line vectoriser, which kept some bodies scalar (the channels_last max term's
      // select: 4.6x a clone at 56^2, against 0.7x vectorised).
#pragma GCC unroll 1
      for (int64_t l = 0; l < L; ++l) line[l] = static_cast<scalar_t>(value(k + l));
      if (static_cast<uint64_t>(q - k) < static_cast<uint64_t>(L)) line[q - k] = static_cast<scalar_t>(at_q);
      const __m128i* src = reinterpret_cast<const __m128i*>(line);
      __m128i* dst = reinterpret_cast<__m128i*>(o + k);
      for (int v = 0; v < 4; ++v) _mm_stream_si128(dst + v, src[v]);
    }
    s1 = k;
  }
#endif
#pragma GCC ivdep
  for (; k < n; ++k) o[k] = static_cast<scalar_t>(value(k));
  if (q >= 0 && q < n && !(q >= s0 && q < s1)) o[q] = static_cast<scalar_t>(at_q);
}

// Row input and output for the row loops (pointwise, reduce's rows): rows of float, double and
// bf16 are read and written in place. bf16's conversions are a shift and a few integer operations
// that vectorise in the loops themselves: staged through float buffers as fp16 is (below, and
// TileRows), bf16 blocks ran 1.1-1.7x slower in 46 of 60 cases (SE, ECA, CBAM at 8 x 512 x 28^2,
// 8 x 256 x 56^2, 8 x 2048 x 7^2, both layouts, forward and forward + backward; Zen 5 VM, medians
// of 3 processes each) and faster (to 0.77x) in 8, 7 of them channels_last at 56^2.
template <typename scalar_t>
struct RowIO {
  RowIO(int64_t /*n*/, int /*slots*/) {}
  const scalar_t* in(const scalar_t* row, int64_t /*n*/, int /*slot*/) const { return row; }
  // Rows addressed as ``addr(b, j)``, with the loop's next row announced first by ``ahead`` (see
  // RowIO<Half>): for reduce's rows.
  void ahead(bool /*has_next*/, int64_t /*b*/, int64_t /*j*/) {}
  template <typename Addr>
  const scalar_t* in(const Addr& addr, int64_t b, int64_t j, int64_t /*n*/, int /*slot*/) const {
    return addr(b, j);
  }
  // ``f(k)`` rounded to scalar_t, for k in [0, n), read as ``rounded(...)[k]``: here computed where
  // it is read.
  template <typename F>
  auto rounded(int64_t /*n*/, int /*slot*/, const F& f) const {
    return Rounded<F>{f};
  }
  template <typename F>
  struct Rounded {
    F f;
    auto operator[](int64_t k) const {
      using R = decltype(f(k));
      return static_cast<R>(static_cast<scalar_t>(f(k)));
    }
  };
  template <typename Value, typename R = std::invoke_result_t<const Value&, int64_t>>
  void out(scalar_t* o, int64_t n, bool stream, const Value& value, int64_t q = -1, R at_q = R()) {
    store_row(o, n, stream, value, q, at_q);
  }
  // o[k] = x[k] * g, with g one gate for the row or (a pointer) one per element: the forward's
  // scale of SE and ECA.
  template <typename acc_t>
  void scale_row(const scalar_t* x, acc_t g, scalar_t* o, int64_t n, bool stream) {
    store_row(o, n, stream, [&](int64_t k) { return static_cast<acc_t>(x[k]) * g; });
  }
  template <typename acc_t>
  void scale_row(const scalar_t* x, const acc_t* g, scalar_t* o, int64_t n, bool stream) {
    store_row(o, n, stream, [&](int64_t k) { return static_cast<acc_t>(x[k]) * g[k]; });
  }
};

// fp16 rows go through float buffers instead, converted a row at a time by half.cpp (F16C): Half's
// own conversions, element by element in the loops, cost ~13 (in) and ~17 (out) vector operations
// per 8 values; y = x * g over 2^20 values, one thread, Zen 5 VM: 0.60 ms that way, 0.12-0.15
// through the buffers (rows of 49 to 3136). ``slots`` input rows at a time, each of up to ``n``.
template <>
struct RowIO<Half> {
  static constexpr int kMaxSlots = 2;
  RowIO(int64_t n, int slots) : buf_(static_cast<size_t>(n * (1 + slots + kMaxSlots))), n_(n) {}

  const float* in(const Half* row, int64_t len, int slot) {
    float* b = row_buf(slot);
    half_to_float(row, b, len);
    return b;
  }

  // A row read right after its conversion waits for the conversion's stores: row_reduce's last
  // vector (the row's last 8, e.g. 41..48 of 49) spans two of them, which the CPU cannot forward
  // to the load. So reduce's rows convert the loop's next row ahead, into a second buffer per
  // slot, before the current one is read. Standalone, one thread, rows of 49 (Zen 5 VM): 10.6 ns a
  // row converted then summed, 5.6 a row ahead (2.3 for float rows summed in place). A row that is
  // not the one converted ahead (no next row announced) is converted on the spot.
  void ahead(bool has_next, int64_t b, int64_t j) {
    next_ = has_next;
    nb_ = b;
    nj_ = j;
  }
  template <typename Addr>
  const float* in(const Addr& addr, int64_t b, int64_t j, int64_t len, int slot) {
    const Half* row = addr(b, j);
    float* cur = row_buf(slot, which_[slot]);
    if (row != pending_[slot]) half_to_float(row, cur, len);
    pending_[slot] = nullptr;
    if (next_) {
      which_[slot] ^= 1;
      pending_[slot] = addr(nb_, nj_);
      half_to_float(pending_[slot], row_buf(slot, which_[slot]), len);
    }
    return cur;
  }

  template <typename F>
  const float* rounded(int64_t len, int slot, const F& f) {
    float* __restrict b = row_buf(slot);
#pragma GCC ivdep
    for (int64_t k = 0; k < len; ++k) b[k] = f(k);
    round_to_half(b, len);
    return b;
  }

  template <typename Value, typename R = std::invoke_result_t<const Value&, int64_t>>
  void out(Half* o, int64_t len, bool stream, const Value& value, int64_t q = -1, R at_q = R()) {
    float* __restrict b = buf_.data();  // row 0: the output row
#pragma GCC ivdep
    for (int64_t k = 0; k < len; ++k) b[k] = static_cast<float>(value(k));
    if (q >= 0 && q < len) b[q] = static_cast<float>(at_q);
    float_to_half(b, o, len, stream);
  }

  // In one pass, 8 values an instruction (half.cpp), not through the buffers (convert in, scale,
  // convert out). The scale alone, fp16, one thread, fastest of 60 (Zen 5 VM; old / new .so in
  // alternating processes, 3 each, same output bits), ms: 8 x 2048 x 7^2 NCHW 0.20-0.22 / 0.12,
  // channels_last 0.11 / 0.045; 8 x 512 x 28^2 0.38-0.40 / 0.24-0.25 and 0.40-0.44 / 0.19-0.31;
  // 8 x 256 x 56^2 0.73-0.92 / 0.32-0.33 and 0.86-0.96 / 0.43.
  void scale_row(const Half* x, float g, Half* o, int64_t len, bool stream) { scale_half_row(x, g, o, len, stream); }
  void scale_row(const Half* x, const float* g, Half* o, int64_t len, bool stream) {
    mul_half_row(x, g, o, len, stream);
  }

 private:
  // Rows of ``n_`` floats: 0 the output row, 1 + slot the inputs, 1 + kMaxSlots + slot the second
  // buffers of ``ahead``.
  float* row_buf(int slot, int second = 0) { return buf_.data() + (1 + slot + second * kMaxSlots) * n_; }

  std::vector<float> buf_;
  int64_t n_;
  bool next_ = false;
  int64_t nb_ = 0, nj_ = 0;
  int which_[kMaxSlots] = {0, 0};
  const Half* pending_[kMaxSlots] = {nullptr, nullptr};
};

inline void store_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Row reductions in explicit vectors (GCC vector extensions: 8 floats / 4 doubles per 32-byte
// vector, lowered to two SSE halves in the baseline clone). The loop vectoriser, given the same
// lanes as scalar arrays, kept them on the stack and could not if-convert the argmax selects: a
// 49-element row took ~150 ns with the max, ~19 ns without; these take ~26 ns and ~10 ns.
template <typename acc_t>
struct Vec {
  using Index = std::conditional_t<sizeof(acc_t) == 4, int32_t, int64_t>;  // same width: masks match
  typedef acc_t V __attribute__((vector_size(32)));
  typedef Index I __attribute__((vector_size(32)));
  static constexpr int W = 32 / sizeof(acc_t);
};

// Eight floats (or int32s) from ``p``, any alignment.
inline Vec<float>::V load8(const float* p) {
  Vec<float>::V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline Vec<float>::I load8(const int32_t* p) {
  Vec<float>::I v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// The max keeps its first index per lane as it goes (a select on the same compare), so no second
// pass looks for it; lanes merge with ties going to the smaller index.
// NaN handling of the max: the hot loops take a plain ``v > m`` max, which skips NaNs. A NaN also
// makes the running sum NaN, so only rows whose sum came out NaN (NaN inputs, or inf - inf) are
// scanned again for their first NaN: eager's rule is that any NaN makes the max NaN, at the first
// NaN. Rows without NaN pay nothing.

// Sum, and with kMax the max (and with kArg its first index), of ``value(k)`` for k in [0, K):
// kDepth vectors of partial sums (independent add chains), a masked vector step for the tail, a
// fixed-order fold (deterministic). Inline (not a clone): called inside for_rows. Short rows take
// a smaller kDepth (by_depth below): the fold of the (max, index) pairs is per row, and on 7x7 rows
// (49 elements, one pass of the 4-deep loop) it cost as much as the loads. Without kArg (a
// forward that no backward follows) the max is of values only: any NaN still makes it NaN.
//
// row_lanes is its vector stage: the kDepth chains merged into one vector of lane sums ``s`` (and
// of lane maxima ``m`` with their indices ``ix``), before the fold; fold_rows8 folds eight rows'
// lane sums at once in the same order.
template <bool kMax, typename acc_t, typename Value, int kDepth, bool kArg>
inline void row_lanes(const Value& value, int64_t K, typename Vec<acc_t>::V& s_out, typename Vec<acc_t>::V& m_out,
                      typename Vec<acc_t>::I& ix_out) {
  static_assert(kMax || !kArg, "an argmax needs the max");
  using T = Vec<acc_t>;
  using V = typename T::V;
  using I = typename T::I;
  using Index = typename T::Index;
  constexpr int W = T::W;
  I lane;
  for (int l = 0; l < W; ++l) lane[l] = l;
  V s[kDepth], m[kDepth];
  I ix[kDepth];
  for (int n = 0; n < kDepth; ++n) {
    s[n] = V{};
    m[n] = V{} - std::numeric_limits<acc_t>::infinity();
    ix[n] = I{};
  }
  auto load = [&](int64_t k0) {
    V v;
    for (int l = 0; l < W; ++l) v[l] = value(k0 + l);
    return v;
  };
  auto max_step = [&](int n, V v, int64_t k0) {
    if constexpr (kMax) {
      const auto better = v > m[n];
      m[n] = better ? v : m[n];
      if constexpr (kArg) ix[n] = better ? lane + static_cast<Index>(k0) : ix[n];
    }
  };
  int64_t k = 0;
  for (; k + kDepth * W <= K; k += kDepth * W) {
    for (int n = 0; n < kDepth; ++n) {
      const V v = load(k + n * W);
      s[n] += v;
      max_step(n, v, k + n * W);
    }
  }
  for (; k + W <= K; k += W) {
    const V v = load(k);
    s[0] += v;
    max_step(0, v, k);
  }
  if (k < K && K >= W) {
    // Tail: the row's last W elements, those already summed masked out (reads inside the row
    // only). An element seen twice leaves the max alone: same value, same index.
    const int64_t k0 = K - W;
    const V v = load(k0);
    s[0] += lane + static_cast<Index>(k0) >= static_cast<Index>(k) ? v : V{};
    max_step(0, v, k0);
  } else {
    for (int l = 0; k < K; ++k, ++l) {  // a row shorter than one vector
      const acc_t v = value(k);
      s[0][l] += v;
      if (kMax && v > m[0][l]) {
        m[0][l] = v;
        if constexpr (kArg) ix[0][l] = static_cast<Index>(k);
      }
    }
  }
  for (int n = 1; n < kDepth; ++n) {
    s[0] += s[n];
    if constexpr (kArg) {
      const auto take = (m[n] > m[0]) | ((m[n] == m[0]) & (ix[n] < ix[0]));
      m[0] = take ? m[n] : m[0];
      ix[0] = take ? ix[n] : ix[0];
    } else if constexpr (kMax) {
      m[0] = m[n] > m[0] ? m[n] : m[0];
    }
  }
  s_out = s[0];
  if constexpr (kMax) {
    m_out = m[0];
    ix_out = ix[0];
  }
}

// row_reduce's fold of one row's lane vectors into its sum (and max, and its index).
template <bool kMax, bool kArg, typename acc_t>
inline void fold_row(typename Vec<acc_t>::V s, typename Vec<acc_t>::V m, typename Vec<acc_t>::I ix, acc_t* sum,
                     acc_t* mx, int32_t* arg) {
  using T = Vec<acc_t>;
  using V = typename T::V;
  using I = typename T::I;
  constexpr int W = T::W;
  acc_t total = 0;
#pragma GCC unroll 8
  for (int l = 0; l < W; ++l) total += s[l];  // scalar adds: cheaper here than shuffles
  *sum = total;
  if constexpr (kMax && !kArg) {
    acc_t best = m[0];
#pragma GCC unroll 8
    for (int l = 1; l < W; ++l) best = m[l] > best ? m[l] : best;
    *mx = best;
  } else if constexpr (kMax) {
    // Shuffle tree, branch-free (a scalar fold of (max, index) pairs mispredicts on real data).
    V mv = m;
    I iv = ix;
#pragma GCC unroll 4
    for (int width = W / 2; width >= 1; width /= 2) {
      I rot;
      for (int l = 0; l < W; ++l) rot[l] = (l + width) % W;
#if defined(__GNUC__) && !defined(__clang__)
      const V m2 = __builtin_shuffle(mv, rot);
      const I i2 = __builtin_shuffle(iv, rot);
#else  // same result, lane by lane
      V m2;
      I i2;
      for (int l = 0; l < W; ++l) {
        m2[l] = mv[rot[l]];
        i2[l] = iv[rot[l]];
      }
#endif
      const auto take = (m2 > mv) | ((m2 == mv) & (i2 < iv));
      mv = take ? m2 : mv;
      iv = take ? i2 : iv;
    }
    *mx = mv[0];
    *arg = static_cast<int32_t>(iv[0]);
  }
}

// The max's NaN rule (see above) once a row's sum is known: a NaN sum sends the row to a scan for
// its first NaN input.
template <bool kArg, typename acc_t, typename Value>
inline void nan_rescan(const Value& value, int64_t K, acc_t sum, acc_t* mx, int32_t* arg) {
  if (sum == sum) return;
  for (int64_t j = 0; j < K; ++j) {
    const acc_t v = value(j);
    if (v != v) {
      *mx = v;
      if constexpr (kArg) *arg = static_cast<int32_t>(j);
      return;
    }
  }
}

// Calls ``f(std::integral_constant<int, kDepth>)`` with row_reduce's depth for rows of K elements
// and returns its result: the one rule for reduce.h's rows and half.cpp's fp16 row sums, whose bits
// depend on it. fp32 pool_hw with max, 8 x C x P, 2 threads: P = 16 0.171 -> 0.116 ms, P = 49
// 0.215 -> 0.181, P = 100 0.135 -> 0.128.
template <int kLongDepth, typename F>
decltype(auto) by_depth(int64_t K, F&& f) {
  if (K < 64) return f(std::integral_constant<int, 1>{});
  if (K < 128) return f(std::integral_constant<int, 2>{});
  return f(std::integral_constant<int, kLongDepth>{});
}

template <bool kMax, typename acc_t, typename Value, int kDepth = 4, bool kArg = kMax>
inline void row_reduce(const Value& value, int64_t K, acc_t* sum, acc_t* mx, int32_t* arg) {
  typename Vec<acc_t>::V s, m;
  typename Vec<acc_t>::I ix;
  row_lanes<kMax, acc_t, Value, kDepth, kArg>(value, K, s, m, ix);
  fold_row<kMax, kArg, acc_t>(s, m, ix, sum, mx, arg);
  if constexpr (kMax) nan_rescan<kArg>(value, K, *sum, mx, arg);
}

// c[l] = lane l of the eight 8-lane vectors s[0..7] (an 8 x 8 transpose: unpack, pair and half
// shuffles), for row_reduce's folds done eight rows at a time, one row per lane.
template <typename V>
inline void transpose8(const V (&s)[8], V (&c)[8]) {
  using I = Vec<float>::I;
  static_assert(sizeof(V) == sizeof(I), "8 lanes of 4 bytes");
  const auto lo = [](V a, V b) { return __builtin_shuffle(a, b, I{0, 8, 1, 9, 4, 12, 5, 13}); };
  const auto hi = [](V a, V b) { return __builtin_shuffle(a, b, I{2, 10, 3, 11, 6, 14, 7, 15}); };
  const auto pair_lo = [](V a, V b) { return __builtin_shuffle(a, b, I{0, 1, 8, 9, 4, 5, 12, 13}); };
  const auto pair_hi = [](V a, V b) { return __builtin_shuffle(a, b, I{2, 3, 10, 11, 6, 7, 14, 15}); };
  const auto half_lo = [](V a, V b) { return __builtin_shuffle(a, b, I{0, 1, 2, 3, 8, 9, 10, 11}); };
  const auto half_hi = [](V a, V b) { return __builtin_shuffle(a, b, I{4, 5, 6, 7, 12, 13, 14, 15}); };
  const V t0 = lo(s[0], s[1]), t1 = hi(s[0], s[1]), t2 = lo(s[2], s[3]), t3 = hi(s[2], s[3]);
  const V t4 = lo(s[4], s[5]), t5 = hi(s[4], s[5]), t6 = lo(s[6], s[7]), t7 = hi(s[6], s[7]);
  // u_l: lane l (low half) and lane l + 4 (high half) of rows 0-3 (u0-u3) or 4-7 (u4-u7)
  const V u0 = pair_lo(t0, t2), u1 = pair_hi(t0, t2), u2 = pair_lo(t1, t3), u3 = pair_hi(t1, t3);
  const V u4 = pair_lo(t4, t6), u5 = pair_hi(t4, t6), u6 = pair_lo(t5, t7), u7 = pair_hi(t5, t7);
  c[0] = half_lo(u0, u4);
  c[1] = half_lo(u1, u5);
  c[2] = half_lo(u2, u6);
  c[3] = half_lo(u3, u7);
  c[4] = half_hi(u0, u4);
  c[5] = half_hi(u1, u5);
  c[6] = half_hi(u2, u6);
  c[7] = half_hi(u3, u7);
}

// Whether every lane of ``s`` is finite: s - s is 0 in finite lanes and NaN in the others, and a
// NaN survives the three shuffle-and-add steps that fold the lanes into one. (rows, reduce.h, asks
// for every row of a max; lane by lane that took eight scalar compares and flag merges a row:
// fp32 NCHW pool_hw at 8 x 2048 x 7^2, one thread, old / new in alternating processes (3 each, Zen
// 5 VM), same bits: max without index 0.133-0.139 / 0.104-0.106 ms, with it 0.168-0.196 /
// 0.154-0.158; bf16 0.127-0.132 / 0.105-0.107 and 0.177-0.184 / 0.159-0.161; 28^2 in the noise.)
inline bool lanes_finite(Vec<float>::V s) {
  using I = Vec<float>::I;
  auto d = s - s;
  d += __builtin_shuffle(d, I{4, 5, 6, 7, 0, 1, 2, 3});
  d += __builtin_shuffle(d, I{2, 3, 0, 1, 6, 7, 4, 5});
  d += __builtin_shuffle(d, I{1, 0, 3, 2, 5, 4, 7, 6});
  return d[0] == 0;
}

// fold_row for eight rows at once (float), one row per lane, with fold_row's results bit for bit:
// the sums add 0, lane 0, lane 1, ..., lane 7 in that order, as fold_row does; the max without its
// index merges the lanes in fold_row's order too; with its index, the merge takes the largest value
// and, among equal ones, the smallest index, which is one element whatever the order of the merges
// (fold_row's tree included; rows with a NaN or an infinite input, whose lanes may hold NaNs, are
// left to fold_row and nan_rescan: reduce.h, rows). 8 vector operations per step for 8 rows instead
// of 8 dependent scalar adds (through the stack) and a shuffle tree per row; the divisions and
// stores become vectors too (reduce.h, rows: with its row loop rid of per-row flag branches, 15%
// off fp32 NCHW pool_hw at 8 x 2048 x 7^2).
template <bool kMax, bool kArg>
inline void fold_rows8(const Vec<float>::V (&s)[8], const Vec<float>::V (&m)[8], const Vec<float>::I (&ix)[8],
                       Vec<float>::V& sum, Vec<float>::V& mx, Vec<float>::I& arg) {
  using V = Vec<float>::V;
  using I = Vec<float>::I;
  V c[8];
  transpose8(s, c);
  sum = V{};
  for (int l = 0; l < 8; ++l) sum += c[l];
  if constexpr (kMax) {
    transpose8(m, c);
    mx = c[0];
    if constexpr (kArg) {
      I ic[8];
      transpose8(ix, ic);
      arg = ic[0];
      for (int l = 1; l < 8; ++l) {
        const auto take = (c[l] > mx) | ((c[l] == mx) & (ic[l] < arg));
        mx = take ? c[l] : mx;
        arg = take ? ic[l] : arg;
      }
    } else {
      for (int l = 1; l < 8; ++l) mx = c[l] > mx ? c[l] : mx;
    }
  }
}

// The tile reductions' outputs before the first row: sums 0, maxima -inf, indices 0.
template <bool kMax, bool kArg, typename acc_t>
inline void tile_start(int64_t J, acc_t* __restrict sum, acc_t* __restrict mx, int32_t* __restrict arg) {
  for (int64_t j = 0; j < J; ++j) {
    sum[j] = 0;
    if constexpr (kMax) mx[j] = -std::numeric_limits<acc_t>::infinity();
    if constexpr (kArg) arg[j] = 0;
  }
}

// Rows the tile reductions read: ``stage(k0, n)`` comes before ``value(k, j)`` reads rows
// [k0, k0 + n), n <= kStageRows. Most values read the input in place and stage nothing (NoStage);
// fp16 rows are converted into float slots first (TileRows<Half>).
constexpr int64_t kStageRows = 4;
struct NoStage {
  void operator()(int64_t, int64_t) const {}
};

// One input's rows of a tile for a tile value: row k is base[k * stride + j], j in [0, n).
template <typename scalar_t>
struct TileRows {
  const scalar_t* base;
  int64_t stride;
  TileRows(const scalar_t* b, int64_t s, int64_t /*n*/, float* /*slots*/) : base(b), stride(s) {}
  void stage(int64_t, int64_t) const {}
  scalar_t at(int64_t k, int64_t j) const { return base[k * stride + j]; }
};

// fp16: rows converted by half.cpp (F16C) into kStageRows float slots of ``n`` (row k in slot
// k % kStageRows), as RowIO<Half> does for whole rows.
template <>
struct TileRows<Half> {
  const Half* base;
  int64_t stride, n;
  float* slots;
  TileRows(const Half* b, int64_t s, int64_t n_, float* sl) : base(b), stride(s), n(n_), slots(sl) {}
  void stage(int64_t k0, int64_t count) const {
    for (int64_t k = k0; k < k0 + count; ++k) half_to_float(base + k * stride, slots + (k % kStageRows) * n, n);
  }
  float at(int64_t k, int64_t j) const { return slots[(k % kStageRows) * n + j]; }
  // Staged row k times g, rounded to fp16 (CBAM's x * ca as eager materialises it).
  void scale_round(int64_t k, float g) const {
    float* __restrict row = slots + (k % kStageRows) * n;
    for (int64_t j = 0; j < n; ++j) row[j] *= g;
    round_to_half(row, n);
  }
};

// The NaN rule of row_reduce for the tile reductions, after the last row: an output whose sum came
// out NaN is scanned again for its first NaN, which becomes its max (and index). Row by row (each
// staged once), over the outputs still open.
template <bool kArg, typename acc_t, typename Value, typename Stage>
inline void tile_nan_rule(const Value& value, const Stage& stage, int64_t K, int64_t J, const acc_t* sum, acc_t* mx,
                          int32_t* arg) {
  std::vector<int64_t> open;
  for (int64_t j = 0; j < J; ++j)
    if (sum[j] != sum[j]) open.push_back(j);
  for (int64_t k = 0; k < K && !open.empty(); ++k) {
    stage(k, 1);
    size_t kept = 0;
    for (const int64_t j : open) {
      const acc_t v = value(k, j);
      if (v != v) {
        mx[j] = v;
        if constexpr (kArg) arg[j] = static_cast<int32_t>(k);
      } else {
        open[kept++] = j;
      }
    }
    open.resize(kept);
  }
}

// ``sum[j] = sum_k value(k, j)`` (and with kMax the max over k and its first index) for k in
// [0, K), j in [0, J): J independent outputs along the unit-stride axis, K rows of the reduced one
// (pool_c and dot_c on NCHW, pool_hw and dot_hw on channels_last). The outputs live in memory (the
// caller's buffers, a few KiB: they stay in L1). kRows rows at a time: for each output, load it,
// fold in the kRows rows' values in k order, store it back: a plain loop over j, left to the loop
// vectoriser (the max as selects). Rows arrive in increasing k, so a strict ``>``
// keeps the first index; the fold order per output is k order (deterministic). kArg: as
// row_reduce's.
// Before, chunks of 8 rows went by four explicit output vectors at a time (GCC vector extensions,
// filled lane by lane from ``value``). Zen 5 VM, fp32, 8 x C x H x W, 2 threads, old / new .so in
// alternating processes, same outputs bit for bit, ms: channels_last pool_hw with argmax at 56^2,
// 28^2, 14^2 1.62 / 0.85, 0.22 / 0.15, 0.12 / 0.07; pool_c (NCHW) 1.40 / 0.74, 0.22 / 0.15, 0.13 /
// 0.08; in one process, dot_c at 56^2 1.34 / 0.70 and channels_last dot_hw 1.33 / 0.78 (one row
// at a time, outputs loaded and stored per row: 0.92 and 0.87).
template <bool kMax, typename acc_t, typename Value, bool kArg = kMax, typename Stage = NoStage>
AF_VEC void tile_reduce(Value value, int64_t K, int64_t J, acc_t* __restrict sum, acc_t* __restrict mx,
                        int32_t* __restrict arg, Stage stage = Stage()) {
  static_assert(kMax || !kArg, "an argmax needs the max");
  constexpr int64_t kRows = kStageRows;
  tile_start<kMax, kArg>(J, sum, mx, arg);
  // The fold of rows [k0, k0 + n) into output j (n a compile-time count: unrolled).
  auto fold = [&](int64_t j, int64_t k0, auto n) {
    acc_t s = sum[j], m = kMax ? mx[j] : acc_t(0);
    int32_t a = kArg ? arg[j] : 0;
    for (int64_t r = 0; r < decltype(n)::value; ++r) {
      const acc_t v = value(k0 + r, j);
      s += v;
      if constexpr (kMax) {
        const bool better = v > m;
        m = better ? v : m;
        if constexpr (kArg) a = better ? static_cast<int32_t>(k0 + r) : a;
      }
    }
    sum[j] = s;
    if constexpr (kMax) mx[j] = m;
    if constexpr (kArg) arg[j] = a;
  };
  int64_t k = 0;
  for (; k + kRows <= K; k += kRows) {
    stage(k, kRows);
#pragma GCC ivdep
    for (int64_t j = 0; j < J; ++j) fold(j, k, std::integral_constant<int64_t, kRows>{});
  }
  // The last K % kRows rows one at a time. With the count a runtime value, channels_last dot_hw
  // with CBAM's terms at 8 x 2048 x 7^2 (49 rows: one left over) took 0.117 ms, this way 0.083.
  for (; k < K; ++k) {
    stage(k, 1);
#pragma GCC ivdep
    for (int64_t j = 0; j < J; ++j) fold(j, k, std::integral_constant<int64_t, 1>{});
  }
  if constexpr (kMax) tile_nan_rule<kArg>(value, stage, K, J, sum, mx, arg);
}

// tile_reduce's former schedule, kept for the max over bf16 inputs: with their conversions in
// ``value`` (and CBAM's rounding of x * ca to the input dtype) tile_reduce's loop ran bf16 pool_c
// on NCHW at 8 x 256 x 56^2 in 5.0 ms against 0.71 here (Zen 5 VM, 2 threads; fp16 likewise while
// it was converted in ``value``: its rows are now staged as floats, TileRows). Rows go by in chunks
// of kChunk: for each vector of outputs, load it into registers (GCC vector extensions, filled lane
// by lane from ``value``), fold in the chunk's rows, store it back. Same results as tile_reduce,
// bit for bit.
template <bool kMax, typename acc_t, typename Value, bool kArg = kMax>
AF_VEC void tile_reduce_chunks(Value value, int64_t K, int64_t J, acc_t* __restrict sum, acc_t* __restrict mx,
                               int32_t* __restrict arg) {
  using T = Vec<acc_t>;
  using V = typename T::V;
  using I = typename T::I;
  constexpr int W = T::W, kChunk = 8;
  tile_start<kMax, kArg>(J, sum, mx, arg);
  // kGroup output vectors per pass over the chunk's rows: each row's compare and select (or add)
  // depends on the previous row's result for the same outputs, so one vector at a time ran at the
  // latency of that chain (~6 cycles a row with the argmax); kGroup independent chains overlap.
  constexpr int kGroup = 4;
  const int64_t Jv = J / W * W, Jg = J / (kGroup * W) * (kGroup * W);
  auto outputs = [&](auto group, int64_t j, int64_t k0, int64_t k1) {
    constexpr int G = decltype(group)::value;
    V s[G], m[G];
    I ix[G];
    for (int q = 0; q < G; ++q)
      for (int l = 0; l < W; ++l) {
        s[q][l] = sum[j + q * W + l];
        if constexpr (kMax) m[q][l] = mx[j + q * W + l];
        if constexpr (kArg) ix[q][l] = arg[j + q * W + l];
      }
    for (int64_t k = k0; k < k1; ++k) {
      const I kk = I{} + static_cast<typename T::Index>(k);
      for (int q = 0; q < G; ++q) {
        V v;
        for (int l = 0; l < W; ++l) v[l] = value(k, j + q * W + l);
        s[q] += v;
        if constexpr (kMax) {
          const auto better = v > m[q];
          m[q] = better ? v : m[q];
          if constexpr (kArg) ix[q] = better ? kk : ix[q];
        }
      }
    }
    for (int q = 0; q < G; ++q)
      for (int l = 0; l < W; ++l) {
        sum[j + q * W + l] = s[q][l];
        if constexpr (kMax) mx[j + q * W + l] = m[q][l];
        if constexpr (kArg) arg[j + q * W + l] = static_cast<int32_t>(ix[q][l]);
      }
  };
  for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
    const int64_t k1 = std::min<int64_t>(K, k0 + kChunk);
    for (int64_t j = 0; j < Jg; j += kGroup * W) outputs(std::integral_constant<int, kGroup>{}, j, k0, k1);
    for (int64_t j = Jg; j < Jv; j += W) outputs(std::integral_constant<int, 1>{}, j, k0, k1);
    for (int64_t j = Jv; j < J; ++j)  // the last J % W outputs, one by one
      for (int64_t k = k0; k < k1; ++k) {
        const acc_t v = value(k, j);
        sum[j] += v;
        if (kMax && v > mx[j]) {
          mx[j] = v;
          if constexpr (kArg) arg[j] = static_cast<int32_t>(k);
        }
      }
  }
  if constexpr (kMax) tile_nan_rule<kArg>(value, NoStage(), K, J, sum, mx, arg);
}

}  // namespace cpu
}  // namespace attnfused
