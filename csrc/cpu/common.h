// Shared by the CPU kernels: element types, dtype dispatch and the two reduction shapes.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "../passes.h"

namespace attnfused {
namespace cpu {

// Calls ``f(scalar_t{})`` with the C++ type of ``dt``; fp64 inputs pair with double small
// tensors and the rest with float (the caller's acc_t), so only matching pairs instantiate.
template <typename acc_t, typename F>
void dispatch(DType dt, F&& f) {
  if constexpr (std::is_same_v<acc_t, double>) {
    f(double{});
  } else {
    switch (dt) {
      case DType::kF32: f(float{}); break;
      case DType::kF16: f(c10::Half{}); break;
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

// Independent accumulators per row: vectorised (8 floats per AVX2 register) and, for long rows,
// 4 registers deep so that the adds of one register do not wait on the previous one and loads
// stay in flight. Short rows (a 7x7 map) use one register's worth, so the scalar tail stays short.
constexpr int kLanes = 32;
constexpr int kShortLanes = 8;
constexpr int64_t kShortRow = 4 * kLanes;

// The loops below are compiled twice (AVX2 and baseline x86-64) and picked at load time by the
// CPU (GCC target_clones); the value functors passed in are branch-free so that both vectorise.
// No FMA clone: both versions round identically, so results do not depend on the machine.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define AF_VEC __attribute__((target_clones("avx2", "default")))
#else
#define AF_VEC
#endif

// NaN handling of the max: the hot loops take a plain ``v > m`` max, which skips NaNs. A NaN also
// makes the running sum NaN, so only rows whose sum came out NaN (NaN inputs, or inf - inf) are
// scanned again for their first NaN: eager's rule is that any NaN makes the max NaN, at the first
// NaN. Rows without NaN pay nothing.

// One row in L interleaved lanes: partial sums and (want_max) lane maxima.
template <int L, typename acc_t, typename Value>
inline void row_lanes(Value& value, int64_t K, acc_t* sum, acc_t* mx, bool want_max) {
  acc_t s[L] = {};
  acc_t m[L];
  for (int l = 0; l < L; ++l) m[l] = -std::numeric_limits<acc_t>::infinity();
  int64_t k = 0;
  if (want_max) {
    for (; k + L <= K; k += L)
      for (int l = 0; l < L; ++l) {
        const acc_t v = value(k + l);
        s[l] += v;
        m[l] = v > m[l] ? v : m[l];
      }
  } else {
    for (; k + L <= K; k += L)
      for (int l = 0; l < L; ++l) s[l] += value(k + l);
  }
  for (int l = 0; k < K; ++k, ++l) {
    const acc_t v = value(k);
    s[l] += v;
    m[l] = v > m[l] ? v : m[l];
  }
  // Fold the lanes pairwise (a tree: log2(L) dependent steps, not L, which matters on short rows).
  for (int width = L / 2; width > 0; width /= 2) {
    for (int l = 0; l < width; ++l) {
      s[l] += s[l + width];
      m[l] = m[l + width] > m[l] ? m[l + width] : m[l];
    }
  }
  *sum = s[0];
  *mx = m[0];
}

// First k with value(k) == target (or, with ``nan``, the first NaN), else -1. Blocks of kLanes
// are tested with a branch-free OR (vectorised); only the block holding the hit is walked.
template <typename acc_t, typename Value>
inline int64_t row_find(Value& value, int64_t K, acc_t target, bool nan) {
  for (int64_t j0 = 0; j0 < K; j0 += kLanes) {
    const int64_t n = std::min<int64_t>(kLanes, K - j0);
    int hit = 0;
    if (nan) {
      for (int64_t l = 0; l < n; ++l) hit |= value(j0 + l) != value(j0 + l);
    } else {
      for (int64_t l = 0; l < n; ++l) hit |= value(j0 + l) == target;
    }
    if (!hit) continue;
    for (int64_t l = 0; l < n; ++l) {
      const acc_t v = value(j0 + l);
      if (nan ? v != v : v == target) return j0 + l;
    }
  }
  return -1;
}

// Sum of ``value(k)`` for k in [0, K), in interleaved partial sums (fixed order: deterministic).
template <typename acc_t, typename Value>
AF_VEC acc_t row_sum(Value value, int64_t K) {
  acc_t s, m;
  if (K >= kShortRow) {
    row_lanes<kLanes>(value, K, &s, &m, false);
  } else {
    row_lanes<kShortLanes>(value, K, &s, &m, false);
  }
  return s;
}

// Sum, max and the max's first index of ``value(k)`` for k in [0, K): the max from the
// vectorised pass, its position from row_find (the row is still in L1).
template <typename acc_t, typename Value>
AF_VEC void row_sum_max(Value value, int64_t K, acc_t* sum, acc_t* mx, int32_t* arg) {
  if (K >= kShortRow) {
    row_lanes<kLanes>(value, K, sum, mx, true);
  } else {
    row_lanes<kShortLanes>(value, K, sum, mx, true);
  }
  if (*sum != *sum) {  // a NaN sum: is there a NaN input? (see above)
    const int64_t at = row_find(value, K, *mx, true);
    if (at >= 0) {
      *mx = std::numeric_limits<acc_t>::quiet_NaN();
      *arg = static_cast<int32_t>(at);
      return;
    }
  }
  *arg = static_cast<int32_t>(std::max<int64_t>(0, row_find(value, K, *mx, false)));
}

// ``sum[j] += value(k, j)`` for k in [0, K), j in [0, J): J independent outputs along the
// unit-stride axis, K rows of the reduced one. ``sum`` is initialised here.
template <typename acc_t, typename Value>
AF_VEC void tile_sum(Value value, int64_t K, int64_t J, acc_t* __restrict sum) {
  for (int64_t j = 0; j < J; ++j) sum[j] = 0;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < J; ++j) sum[j] += value(k, j);
}

// tile_sum plus the running max and its first index per output (selects, so that it vectorises;
// rows arrive in increasing k, so a strict ``>`` keeps the first index).
template <typename acc_t, typename Value>
AF_VEC void tile_sum_max(Value value, int64_t K, int64_t J, acc_t* __restrict sum, acc_t* __restrict mx,
                         int32_t* __restrict arg) {
  for (int64_t j = 0; j < J; ++j) {
    sum[j] = 0;
    mx[j] = -std::numeric_limits<acc_t>::infinity();
    arg[j] = 0;
  }
  for (int64_t k = 0; k < K; ++k) {
    const int32_t k32 = static_cast<int32_t>(k);
    for (int64_t j = 0; j < J; ++j) {
      const acc_t v = value(k, j);
      sum[j] += v;
      const bool better = v > mx[j];
      mx[j] = better ? v : mx[j];
      arg[j] = better ? k32 : arg[j];
    }
  }
  for (int64_t j = 0; j < J; ++j) {
    if (sum[j] == sum[j]) continue;
    for (int64_t k = 0; k < K; ++k) {
      if (value(k, j) != value(k, j)) {
        mx[j] = std::numeric_limits<acc_t>::quiet_NaN();
        arg[j] = static_cast<int32_t>(k);
        break;
      }
    }
  }
}

}  // namespace cpu
}  // namespace attnfused
