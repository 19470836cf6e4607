// fp16 rows to float and back for the CPU kernels (common.h, RowIO / TileRows): with F16C 8 values
// per instruction, otherwise Half's branch-free software conversions (the same bits, but for NaNs:
// F16C keeps a NaN's payload, quietened; the software path returns 0x7E00 with the sign). Picked
// once, at load, by what the CPU has: F16C's intrinsics cannot sit in the kernels' own
// target_clones bodies (the baseline clone would have to compile them too), and GCC 12 does not
// vectorise scalar fp16 conversions even where F16C is enabled, so the kernels call these once per
// row instead of converting element by element in their loops. Two row operations also run here in
// one pass over the fp16 values, where a buffer's round trip cost more than the work: the forward
// scale (scale_half_row, mul_half_row) and the avg pool's row sum (half_row_sum, F16C only).
#include <cstdlib>
#include <string>

#include "../entry.h"
#include "common.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#define AF_HAVE_F16C_PATH 1
#endif

namespace attnfused {
namespace cpu {
namespace {

void to_float_soft(const Half* in, float* out, int64_t n) {
#pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]);
}

void to_half_soft(const float* in, Half* out, int64_t n, bool stream) {
  store_row(out, n, stream, [&](int64_t i) { return in[i]; });
}

void round_soft(float* v, int64_t n) {
#pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(Half(v[i]));
}

#if defined(AF_HAVE_F16C_PATH)
__attribute__((target("avx2,f16c"))) void to_float_f16c(const Half* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; ++i) out[i] = _cvtsh_ss(in[i].bits);
}

__attribute__((target("avx2,f16c"))) __m128i halves(const float* in) {
  return _mm256_cvtps_ph(_mm256_loadu_ps(in), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// With ``stream``, the row's whole 64-byte lines leave through streaming stores (as store_row's).
__attribute__((target("avx2,f16c"))) void to_half_f16c(const float* in, Half* out, int64_t n, bool stream) {
  int64_t i = 0;
  if (stream) {
    constexpr int64_t L = 64 / sizeof(Half);
    const int64_t head = line_head(out, n);
    for (; i < head; ++i) out[i].bits = _cvtss_sh(in[i], _MM_FROUND_TO_NEAREST_INT);
    for (; i + L <= n; i += L) {
      __m128i* dst = reinterpret_cast<__m128i*>(out + i);
      for (int v = 0; v < 4; ++v) _mm_stream_si128(dst + v, halves(in + i + 8 * v));
    }
  }
  for (; i + 8 <= n; i += 8) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), halves(in + i));
  for (; i < n; ++i) out[i].bits = _cvtss_sh(in[i], _MM_FROUND_TO_NEAREST_INT);
}

__attribute__((target("avx2,f16c"))) void round_f16c(float* v, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, _mm256_cvtph_ps(halves(v + i)));
  for (; i < n; ++i) v[i] = _cvtsh_ss(_cvtss_sh(v[i], _MM_FROUND_TO_NEAREST_INT));
}

__attribute__((target("avx2,f16c"))) inline __m256 load8(const Half* x) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
}

// y = half(float(x) * g), g one gate for the row (kPerElement false: g[0]) or one per element:
// eight values (scaled8) or one (scaled1, the row's head before a streamed line and its tail).
template <bool kPerElement>
__attribute__((target("avx2,f16c"))) inline uint16_t scaled1(const Half* x, const float* g, int64_t i) {
  return _cvtss_sh(_cvtsh_ss(x[i].bits) * g[kPerElement ? i : 0], _MM_FROUND_TO_NEAREST_INT);
}

template <bool kPerElement>
__attribute__((target("avx2,f16c"))) inline __m128i scaled8(const Half* x, const float* g, __m256 g1, int64_t i) {
  const __m256 v = load8(x + i);
  __m256 s = g1;
  if constexpr (kPerElement) s = _mm256_loadu_ps(g + i);
  return _mm256_cvtps_ph(_mm256_mul_ps(v, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

template <bool kPerElement>
__attribute__((target("avx2,f16c"))) void scale_f16c(const Half* x, const float* g, Half* y, int64_t n, bool stream) {
  const __m256 g1 = _mm256_set1_ps(kPerElement ? 0.0f : g[0]);
  int64_t i = 0;
  if (stream) {
    constexpr int64_t L = 64 / sizeof(Half);
    for (const int64_t head = line_head(y, n); i < head; ++i) y[i].bits = scaled1<kPerElement>(x, g, i);
    for (; i + L <= n; i += L) {
      __m128i* dst = reinterpret_cast<__m128i*>(y + i);
      for (int v = 0; v < 4; ++v) _mm_stream_si128(dst + v, scaled8<kPerElement>(x, g, g1, i + 8 * v));
    }
  }
  for (; i + 8 <= n; i += 8) _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), scaled8<kPerElement>(x, g, g1, i));
  for (; i < n; ++i) y[i].bits = scaled1<kPerElement>(x, g, i);
}

// row_reduce's sum (common.h) with kDepth D, step for step on the row's fp16 values as loaded.
template <int D>
__attribute__((target("avx2,f16c"))) float sum_f16c(const Half* x, int64_t K) {
  __m256 s[D];
  for (int n = 0; n < D; ++n) s[n] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + D * 8 <= K; k += D * 8)
    for (int n = 0; n < D; ++n) s[n] = _mm256_add_ps(s[n], load8(x + k + 8 * n));
  for (; k + 8 <= K; k += 8) s[0] = _mm256_add_ps(s[0], load8(x + k));
  alignas(32) float lanes[8];
  if (k < K && K >= 8) {  // the last 8, those already summed masked out (+0.0, as row_reduce adds)
    const int64_t k0 = K - 8;
    const __m256i index = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32(static_cast<int32_t>(k0)));
    const __m256i fresh = _mm256_cmpgt_epi32(index, _mm256_set1_epi32(static_cast<int32_t>(k - 1)));
    s[0] = _mm256_add_ps(s[0], _mm256_and_ps(load8(x + k0), _mm256_castsi256_ps(fresh)));
  } else if (k < K) {  // a row shorter than 8: lane by lane
    _mm256_store_ps(lanes, s[0]);
    for (int l = 0; k < K; ++k, ++l) lanes[l] += _cvtsh_ss(x[k].bits);
    s[0] = _mm256_load_ps(lanes);
  }
  for (int n = 1; n < D; ++n) s[0] = _mm256_add_ps(s[0], s[n]);
  _mm256_store_ps(lanes, s[0]);
  float total = 0;
  for (int l = 0; l < 8; ++l) total += lanes[l];
  return total;
}

// ATTNFUSED_CPU_F16C=0 (read once, at load) takes the software path on any CPU: how the tests
// reach it on machines with F16C.
bool has_f16c() {
  const char* env = std::getenv("ATTNFUSED_CPU_F16C");
  if (env && std::string(env) == "0") return false;
  __builtin_cpu_init();  // (runs from a static initialiser: before the cpu model is otherwise set)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}

const bool kF16C = has_f16c();
#else
constexpr bool kF16C = false;
#endif

}  // namespace

void half_to_float(const Half* in, float* out, int64_t n) {
#if defined(AF_HAVE_F16C_PATH)
  if (kF16C) return to_float_f16c(in, out, n);
#endif
  to_float_soft(in, out, n);
}

void float_to_half(const float* in, Half* out, int64_t n, bool stream) {
#if defined(AF_HAVE_F16C_PATH)
  if (kF16C) return to_half_f16c(in, out, n, stream);
#endif
  to_half_soft(in, out, n, stream);
}

void scale_half_row(const Half* x, float g, Half* y, int64_t n, bool stream) {
#if defined(AF_HAVE_F16C_PATH)
  if (kF16C) return scale_f16c<false>(x, &g, y, n, stream);
#endif
  store_row(y, n, stream, [&](int64_t i) { return static_cast<float>(x[i]) * g; });
}

void mul_half_row(const Half* x, const float* g, Half* y, int64_t n, bool stream) {
#if defined(AF_HAVE_F16C_PATH)
  if (kF16C) return scale_f16c<true>(x, g, y, n, stream);
#endif
  store_row(y, n, stream, [&](int64_t i) { return static_cast<float>(x[i]) * g[i]; });
}

bool half_sums_direct() {
#if defined(AF_HAVE_F16C_PATH)
  return kF16C;
#else
  return false;
#endif
}

float half_row_sum(const Half* x, int64_t n) {
#if defined(AF_HAVE_F16C_PATH)
  if (kF16C) return by_depth<4>(n, [&](auto depth) { return sum_f16c<decltype(depth)::value>(x, n); });
#endif
  (void)x;
  (void)n;
  return 0.0f;  // (callers ask half_sums_direct() first)
}

void round_to_half(float* v, int64_t n) {
#if defined(AF_HAVE_F16C_PATH)
  if (kF16C) return round_f16c(v, n);
#endif
  round_soft(v, n);
}

}  // namespace cpu
}  // namespace attnfused
