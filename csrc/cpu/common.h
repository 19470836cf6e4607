// Shared by the CPU kernels: element types, dtype dispatch and the two reduction shapes.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <limits>

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

template <typename scalar_t, typename acc_t>
inline acc_t load(const void* base, int64_t off) {
  return static_cast<acc_t>(static_cast<const scalar_t*>(base)[off]);
}

// ~64 KiB of input per task: enough to amortise scheduling, small enough to balance 2..N threads.
inline int64_t grain_for(int64_t elems_per_item) {
  return std::max<int64_t>(1, (int64_t{16} << 10) / std::max<int64_t>(1, elems_per_item));
}

constexpr int kLanes = 8;  // independent accumulators: lets the compiler vectorise the loops

// Reduce ``value(k)`` for k in [0, K) along one row: sum, and (want_max) the max with its first
// index (eager's NaN rule: any NaN makes the max NaN, at the first NaN). The max is found with a
// lane-wise pass first (vectorisable), then its first position by a scan that stops early.
template <typename acc_t, typename Value>
inline void row_reduce(int64_t K, Value&& value, bool want_max, acc_t* sum, acc_t* mx, int32_t* arg) {
  acc_t s[kLanes] = {};
  acc_t m[kLanes];
  bool nan[kLanes] = {};
  std::fill(m, m + kLanes, -std::numeric_limits<acc_t>::infinity());
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const acc_t v = value(k + l);
      s[l] += v;
      if (want_max) {
        m[l] = v > m[l] ? v : m[l];
        nan[l] |= v != v;
      }
    }
  }
  for (int l = 0; k < K; ++k, ++l) {
    const acc_t v = value(k);
    s[l] += v;
    if (want_max) {
      m[l] = v > m[l] ? v : m[l];
      nan[l] |= v != v;
    }
  }
  acc_t total = 0;
  for (int l = 0; l < kLanes; ++l) total += s[l];
  *sum = total;
  if (!want_max) return;
  acc_t best = m[0];
  bool any_nan = nan[0];
  for (int l = 1; l < kLanes; ++l) {
    best = m[l] > best ? m[l] : best;
    any_nan |= nan[l];
  }
  int32_t at = 0;
  for (int64_t j = 0; j < K; ++j) {
    const acc_t v = value(j);
    if (any_nan ? v != v : v == best) {
      at = static_cast<int32_t>(j);
      break;
    }
  }
  *mx = any_nan ? std::numeric_limits<acc_t>::quiet_NaN() : best;
  *arg = at;
}

// Reduce over k in [0, K) for ``J`` independent outputs at once (the unit-stride axis):
// ``value(k, j)``; ``sum/mx/arg`` hold J entries and are initialised here.
template <typename acc_t, typename Value>
inline void tile_reduce(int64_t K, int64_t J, Value&& value, bool want_max, acc_t* sum, acc_t* mx,
                        int32_t* arg) {
  std::fill(sum, sum + J, acc_t(0));
  if (want_max) {
    std::fill(mx, mx + J, -std::numeric_limits<acc_t>::infinity());
    std::fill(arg, arg + J, 0);
  }
  for (int64_t k = 0; k < K; ++k) {
    const int32_t k32 = static_cast<int32_t>(k);
    for (int64_t j = 0; j < J; ++j) {
      const acc_t v = value(k, j);
      sum[j] += v;
      if (want_max) {
        // max_step, written as selects so that it vectorises.
        const bool better = v > mx[j] || (v != v && mx[j] == mx[j]);
        mx[j] = better ? v : mx[j];
        arg[j] = better ? k32 : arg[j];
      }
    }
  }
}

}  // namespace cpu
}  // namespace attnfused
