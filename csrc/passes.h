// The full-size passes of the block ops, as plain structs and inline math shared by the CPU (.cpp)
// and CUDA (.cu) kernels. No torch headers here: the .cu files include this and stay cheap to
// compile (DESIGN.md §7). Semantics: attnfused/kernels/__init__.py; the Triton kernels are the
// other implementation of the same contract.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define AF_HD __host__ __device__ __forceinline__
#else
#define AF_HD inline
#endif

namespace attnfused {

// Element types a full-size tensor may have; small tensors are float (double for kF64).
enum class DType : int { kF32 = 0, kF64 = 1, kF16 = 2, kBF16 = 3 };

AF_HD constexpr int dtype_size(DType dt) { return dt == DType::kF64 ? 8 : dt == DType::kF32 ? 4 : 2; }

// A 4-D tensor viewed as [B, C, P] (P = H*W) with element strides (NCHW and channels_last both
// map to this view without a copy).
struct View {
  const void* data;
  int64_t sb, sc, sp;
};

// The optional [B, C] / [B, P] terms (contiguous, accumulation dtype; indices int32). A null
// pointer means "absent": the term drops out of the formula.
template <typename acc_t>
struct Terms {
  const acc_t* ca = nullptr;    // [B, C] channel gate
  const acc_t* sa = nullptr;    // [B, P] spatial gate
  const acc_t* da = nullptr;    // [B, P] gradient of the channel-mean map / C
  const acc_t* dm = nullptr;    // [B, P] gradient of the channel-max map
  const int32_t* amc = nullptr; // [B, P] channel argmax
  const acc_t* davg = nullptr;  // [B, C] gradient of the spatial mean
  const acc_t* dmax = nullptr;  // [B, C] gradient of the spatial max
  const int32_t* amp = nullptr; // [B, C] spatial argmax
};

// pool_hw / dot_hw (reduce over P) and pool_c / dot_c (reduce over C). Outputs are partials
// [B, n_split, n] (n = C or P): split s covers [s * split_len, (s+1) * split_len) of the
// reduced axis; with n_split == 1 they are the results.
template <typename acc_t>
struct ReduceArgs {
  int64_t B, C, P;
  View a;            // x (pool) or dy (dot)
  View x;            // x (dot only; has_x)
  bool has_x;
  bool want_max;
  bool round_x1;     // pool_c: round x*ca to the input dtype first, as eager materialises x1
  acc_t divisor;     // applied to the sum when n_split == 1 (else the combine divides)
  Terms<acc_t> t;    // reduce_hw: sa, da, dm, amc; reduce_c: ca
  int64_t n_split, split_len;
  acc_t* out_sum;
  acc_t* out_max;    // only with want_max
  int32_t* out_arg;
};

// scale / grad_input: out = f(a) in out's layout.
template <typename acc_t>
struct PointwiseArgs {
  int64_t B, C, P;
  View a;
  void* out;
  int64_t ob, oc, op;  // out strides
  bool ca_first;       // forward: (x*ca rounded) * sa; backward: m * ca + ...
  bool round_x1;
  Terms<acc_t> t;
  bool stream = false;  // CPU: streaming stores even below the size bound (a slice of a large output)
};

// CBAM's "mid" gradient m = dy*sa + da + dm*[c == amc] (absent terms drop out).
template <typename acc_t>
AF_HD acc_t mid_term(acc_t v, const Terms<acc_t>& t, int64_t bp, int64_t c) {
  if (t.sa) v *= t.sa[bp];
  if (t.da) v += t.da[bp];
  if (t.dm && t.amc[bp] == c) v += t.dm[bp];
  return v;
}

// Running max with first-index argmax and eager's NaN rule (a NaN wins, the first NaN stays).
// ``arg < 0`` marks "no element yet". Candidates must arrive in increasing index order.
template <typename acc_t>
AF_HD void max_step(acc_t v, int32_t i, acc_t& m, int32_t& arg) {
  if (arg < 0 || v > m || (v != v && m == m)) {
    m = v;
    arg = i;
  }
}

// Merge two (max, argmax) pairs covering disjoint index sets, in any order: larger wins, NaN wins,
// ties (and two NaNs) go to the smaller index; an empty pair (arg < 0) never wins.
template <typename acc_t>
AF_HD void max_merge(acc_t& m, int32_t& arg, acc_t m2, int32_t arg2) {
  if (arg2 < 0) return;
  const bool n1 = m != m, n2 = m2 != m2;
  bool take;
  if (arg < 0) {
    take = true;
  } else if (n1 || n2) {
    take = n2 && (!n1 || arg2 < arg);
  } else {
    take = m2 > m || (m2 == m && arg2 < arg);
  }
  if (take) {
    m = m2;
    arg = arg2;
  }
}

}  // namespace attnfused

namespace attnfused {

// The value scale / grad_input write at (b, c, p) before conversion to the output dtype:
//   forward   round(a * ca) * sa
//   backward  (a*sa + da + dm*[c == amc]) * ca + davg + dmax*[p == amp]
// ``round`` converts to the input dtype and back (eager materialises x1 = x * ca).
template <typename acc_t, typename Round>
AF_HD acc_t pointwise_value(acc_t v, const Terms<acc_t>& t, bool ca_first, bool round_x1, int64_t bc,
                            int64_t bp, int64_t c, int64_t p, Round round) {
  if (t.ca && ca_first) {
    v *= t.ca[bc];
    if (round_x1) v = round(v);
  }
  v = mid_term(v, t, bp, c);
  if (t.ca && !ca_first) v *= t.ca[bc];
  if (t.davg) v += t.davg[bc];
  if (t.dmax && t.amp[bc] == p) v += t.dmax[bc];
  return v;
}

}  // namespace attnfused
