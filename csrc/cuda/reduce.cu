// CUDA reductions: pool_hw / dot_hw (over P) and pool_c / dot_c (over C).
//
// Two CTA shapes, picked by which axis is unit-stride:
//   rows  - the reduced axis is the fast one (pool_hw on NCHW, pool_c on channels_last): one warp
//           per kept index streams its row with coalesced loads, then reduces with shuffles;
//           8 warps (8 kept indices) per CTA.
//   tile  - the kept axis is the fast one (pool_hw on channels_last, pool_c on NCHW): the 32 lanes
//           cover consecutive kept indices (one coalesced segment per row), 8 rows of the reduced
//           axis in flight, folded through shared memory in a fixed order.
// Both load 16 bytes per lane (VEC = 4 fp32, 8 fp16/bf16, 2 fp64 elements) where the addresses
// allow: rows take a scalar head up to the first aligned element and a scalar tail; a tile lane
// owns VEC consecutive kept indices when every row of the tile starts aligned. Otherwise (odd
// strides, odd channel counts on a tile, misaligned data) they load one element at a time (VEC = 1).
// When (sample x tile) CTAs cannot fill the GPU the reduced axis is split; the partials
// [B, n_split, n] are folded in split order by a small combine kernel (deterministic).
#include <cstdlib>
#include <string>

#include "../entry.h"
#include "common.cuh"

namespace attnfused {
namespace cuda {
namespace {

constexpr int kWarps = 8;     // warps per CTA
constexpr int kThreads = 32 * kWarps;

// value(b, j, k, a, x): the reduced quantity at kept index j, reduced index k, from the loaded
// elements of ``a`` and (dot only) ``x``.
template <typename scalar_t, typename acc_t, bool OVER_C>
struct Value {
  const ReduceArgs<acc_t>& r;
  __device__ __forceinline__ acc_t operator()(int64_t b, int64_t j, int64_t k, acc_t v, acc_t xv) const {
    const int64_t c = OVER_C ? k : j, p = OVER_C ? j : k;
    if (OVER_C) {
      if (r.t.ca) {
        v *= r.t.ca[b * r.C + c];
        if (r.round_x1) v = round_to<scalar_t, acc_t>(v);
      }
    } else if (r.has_x) {
      v = mid_term(v, r.t, b * r.P + p, c);
    }
    if (r.has_x) v *= xv;
    return v;
  }
  // Element offset of (b, j, k) in ``a`` (and ``x``: the vector paths need both laid out alike).
  __device__ __forceinline__ int64_t offset(const View& t, int64_t b, int64_t j, int64_t k) const {
    return b * t.sb + (OVER_C ? k : j) * t.sc + (OVER_C ? j : k) * t.sp;
  }
  __device__ __forceinline__ acc_t scalar(int64_t b, int64_t j, int64_t k) const {
    const acc_t v = ld<scalar_t, acc_t>(r.a.data, offset(r.a, b, j, k));
    const acc_t xv = r.has_x ? ld<scalar_t, acc_t>(r.x.data, offset(r.x, b, j, k)) : acc_t(1);
    return (*this)(b, j, k, v, xv);
  }
};

template <typename acc_t>
__device__ __forceinline__ void accumulate(const ReduceArgs<acc_t>& r, acc_t v, int64_t k, acc_t& sum, acc_t& m,
                                           int32_t& arg) {
  sum += v;
  if (r.want_max) max_step(v, static_cast<int32_t>(k), m, arg);
}

template <typename acc_t>
__device__ __forceinline__ void store(const ReduceArgs<acc_t>& r, int64_t out, acc_t sum, acc_t m, int32_t arg) {
  r.out_sum[out] = sum / r.divisor;
  if (r.want_max) {
    r.out_max[out] = m;
    r.out_arg[out] = arg;
  }
}

// VEC > 1: the reduced axis has unit stride in ``a`` (and ``x``) and the data is 16-byte aligned.
template <typename scalar_t, typename acc_t, bool OVER_C, int VEC>
__global__ void __launch_bounds__(kThreads) reduce_rows_kernel(ReduceArgs<acc_t> r) {
  const int64_t n_keep = OVER_C ? r.P : r.C, K = OVER_C ? r.C : r.P;
  const int64_t n_tiles = cdiv(n_keep, kWarps);
  int64_t pid = blockIdx.x;
  const int64_t split = pid % r.n_split;
  pid /= r.n_split;
  const int64_t b = pid / n_tiles;
  const int64_t j = (pid % n_tiles) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (j >= n_keep) return;  // whole warp leaves together: no block-level sync below
  const Value<scalar_t, acc_t, OVER_C> value{r};
  const int64_t k0 = split * r.split_len, k1 = min(K, k0 + r.split_len);
  acc_t sum = 0, m = 0;
  int32_t arg = -1;
  if (VEC == 1) {
    for (int64_t k = k0 + lane; k < k1; k += 32) accumulate(r, value.scalar(b, j, k), k, sum, m, arg);
  } else {
    // Each lane's indices rise: its head element, its vectors, its tail element (max_step's rule).
    using Vec = Pack<scalar_t>;
    const int64_t row = value.offset(r.a, b, j, 0);  // == x's row offset (same strides)
    const int64_t mis = (row + k0) % VEC;
    const int64_t kv = min(k1, k0 + (mis ? VEC - mis : 0));
    if (k0 + lane < kv) accumulate(r, value.scalar(b, j, k0 + lane), k0 + lane, sum, m, arg);
    const int64_t n_vec = (k1 - kv) / VEC;
    const auto* a = static_cast<const scalar_t*>(r.a.data) + row;
    const auto* x = static_cast<const scalar_t*>(r.x.data) + row;
    for (int64_t q = lane; q < n_vec; q += 32) {
      const int64_t k = kv + q * VEC;
      const Vec va = load_full(reinterpret_cast<const Vec*>(a + k));
      Vec vx{};
      if (r.has_x) vx = load_full(reinterpret_cast<const Vec*>(x + k));
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const acc_t xv = r.has_x ? static_cast<acc_t>(Cvt<scalar_t>::to(vx.v[e])) : acc_t(1);
        accumulate(r, value(b, j, k + e, static_cast<acc_t>(Cvt<scalar_t>::to(va.v[e])), xv), k + e, sum, m, arg);
      }
    }
    const int64_t kt = kv + n_vec * VEC;
    if (kt + lane < k1) accumulate(r, value.scalar(b, j, kt + lane), kt + lane, sum, m, arg);
  }
  warp_reduce(sum, m, arg, r.want_max);
  if (lane == 0) store(r, (b * r.n_split + split) * n_keep + j, sum, m, arg);
}

// VEC > 1: the kept axis has unit stride, every row of the reduced axis (and each sample) starts
// on a multiple of VEC elements, the data is 16-byte aligned. Lane tx owns kept indices
// [j0, j0 + VEC) of the tile's 32 * VEC.
template <typename scalar_t, typename acc_t, bool OVER_C, int VEC>
__global__ void __launch_bounds__(kThreads) reduce_tile_kernel(ReduceArgs<acc_t> r) {
  constexpr int kWidth = 32 * VEC;
  __shared__ acc_t s_sum[kWarps][kWidth];
  __shared__ acc_t s_max[kWarps][kWidth];
  __shared__ int32_t s_arg[kWarps][kWidth];
  const int64_t n_keep = OVER_C ? r.P : r.C, K = OVER_C ? r.C : r.P;
  // The block index splits in 32 bits (the grid is B * n_tiles * n_split < 2^31 blocks): a 64-bit
  // division is a subroutine call in SASS, which on sm_80 made ptxas spill around it.
  const unsigned n_tiles = static_cast<unsigned>(cdiv(n_keep, kWidth)), n_split = static_cast<unsigned>(r.n_split);
  unsigned pid = blockIdx.x;
  const int64_t split = pid % n_split;
  pid /= n_split;
  const int64_t b = pid / n_tiles;
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int64_t j0 = static_cast<int64_t>(pid % n_tiles) * kWidth + tx * VEC;
  const Value<scalar_t, acc_t, OVER_C> value{r};
  const int64_t k0 = split * r.split_len, k1 = min(K, k0 + r.split_len);
  acc_t sum[VEC], m[VEC];
  int32_t arg[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    sum[e] = 0;
    m[e] = 0;
    arg[e] = -1;
  }
  const bool whole = j0 + VEC <= n_keep;
  for (int64_t k = k0 + ty; k < k1; k += kWarps) {
    if (VEC > 1 && whole) {
      using Vec = Pack<scalar_t>;
      const int64_t at = value.offset(r.a, b, j0, k);  // == x's offset (same strides)
      const Vec va = load_full(reinterpret_cast<const Vec*>(static_cast<const scalar_t*>(r.a.data) + at));
      Vec vx{};
      if (r.has_x) vx = load_full(reinterpret_cast<const Vec*>(static_cast<const scalar_t*>(r.x.data) + at));
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const acc_t xv = r.has_x ? static_cast<acc_t>(Cvt<scalar_t>::to(vx.v[e])) : acc_t(1);
        accumulate(r, value(b, j0 + e, k, static_cast<acc_t>(Cvt<scalar_t>::to(va.v[e])), xv), k, sum[e], m[e],
                   arg[e]);
      }
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e)
        if (j0 + e < n_keep) accumulate(r, value.scalar(b, j0 + e, k), k, sum[e], m[e], arg[e]);
    }
  }
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    s_sum[ty][tx * VEC + e] = sum[e];
    s_max[ty][tx * VEC + e] = m[e];
    s_arg[ty][tx * VEC + e] = arg[e];
  }
  __syncthreads();
  if (ty != 0) return;
#pragma unroll
  for (int e = 0; e < VEC; ++e) {
    if (j0 + e >= n_keep) break;
    for (int row = 1; row < kWarps; ++row) {
      sum[e] += s_sum[row][tx * VEC + e];
      if (r.want_max) max_merge(m[e], arg[e], s_max[row][tx * VEC + e], s_arg[row][tx * VEC + e]);
    }
    store(r, (b * r.n_split + split) * n_keep + j0 + e, sum[e], m[e], arg[e]);
  }
}

// Fold the split partials [B, n_split, n] into [B, n], in split order.
template <typename acc_t>
__global__ void combine_kernel(const acc_t* sum, const acc_t* mx, const int32_t* arg, int64_t B, int64_t n_split,
                               int64_t n, acc_t* out_sum, acc_t* out_max, int32_t* out_arg, acc_t divisor) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= B * n) return;
  const int64_t b = i / n, j = i % n;
  acc_t s = 0, m = 0;
  int32_t a = -1;
  for (int64_t sp = 0; sp < n_split; ++sp) {
    const int64_t at = (b * n_split + sp) * n + j;
    s += sum[at];
    if (mx) max_merge(m, a, mx[at], arg[at]);
  }
  out_sum[i] = s / divisor;
  if (mx) {
    out_max[i] = m;
    out_arg[i] = a;
  }
}

// Which kernel a reduction takes and with how many elements per load: decided from the arguments
// alone (not n_split), so reduce_shape and the launch agree.
struct Plan {
  bool rows;
  int vec;
};

template <typename acc_t>
Plan plan(DType dt, const ReduceArgs<acc_t>& r, bool over_c) {
  const View& a = r.a;
  const bool c_fast = a.sc < a.sp;
  Plan p{over_c ? c_fast : !c_fast, 1};  // rows: the reduced axis is the unit-stride one
  const int vec = 16 / dtype_size(dt);
  const bool alike = !r.has_x || (r.x.sb == a.sb && r.x.sc == a.sc && r.x.sp == a.sp && aligned16(r.x.data));
  if (!vectors_enabled() || !alike || !aligned16(a.data)) return p;
  const int64_t s_keep = over_c ? a.sp : a.sc, s_red = over_c ? a.sc : a.sp;
  if (p.rows) {
    if (s_red == 1 || (over_c ? r.C : r.P) == 1) p.vec = vec;
  } else if ((s_keep == 1 || (over_c ? r.P : r.C) == 1) && s_red % vec == 0 && a.sb % vec == 0) {
    p.vec = vec;
  }
  return p;
}

template <typename scalar_t, typename acc_t, bool OVER_C, int VEC>
void launch_main(const ReduceArgs<acc_t>& r, bool rows, cudaStream_t stream) {
  const int64_t n_keep = OVER_C ? r.P : r.C;
  const int64_t tiles = rows ? cdiv(n_keep, kWarps) : cdiv(n_keep, 32 * VEC);
  const dim3 grid(static_cast<unsigned>(r.B * tiles * r.n_split));
  if (rows) {
    launch_kernel(reduce_rows_kernel<scalar_t, acc_t, OVER_C, VEC>, grid, kThreads, 0, stream, r);
  } else {
    launch_kernel(reduce_tile_kernel<scalar_t, acc_t, OVER_C, VEC>, grid, kThreads, 0, stream, r);
  }
}

template <typename scalar_t, typename acc_t, bool OVER_C>
void launch(DType dt, const ReduceArgs<acc_t>& r, acc_t* fsum, acc_t* fmax, int32_t* farg, acc_t divisor,
            cudaStream_t stream) {
  const Plan p = plan(dt, r, OVER_C);
  constexpr int kVec = Pack<scalar_t>::kN;
  p.vec == 1 ? launch_main<scalar_t, acc_t, OVER_C, 1>(r, p.rows, stream)
             : launch_main<scalar_t, acc_t, OVER_C, kVec>(r, p.rows, stream);
  if (r.n_split > 1) {
    const int64_t n_keep = OVER_C ? r.P : r.C;
    const int64_t total = r.B * n_keep;
    launch_kernel(combine_kernel<acc_t>, static_cast<unsigned>(cdiv(total, 256)), 256, 0, stream, r.out_sum,
                  r.want_max ? r.out_max : nullptr, r.out_arg, r.B, r.n_split, n_keep, fsum, fmax, farg, divisor);
  }
}

template <typename acc_t, bool OVER_C>
void dispatch(DType dt, const ReduceArgs<acc_t>& r, acc_t* fsum, acc_t* fmax, int32_t* farg, acc_t divisor,
              void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if constexpr (std::is_same_v<acc_t, double>) {
    launch<double, double, OVER_C>(dt, r, fsum, fmax, farg, divisor, s);
  } else {
    switch (dt) {
      case DType::kF32: launch<float, float, OVER_C>(dt, r, fsum, fmax, farg, divisor, s); break;
      case DType::kF16: launch<__half, float, OVER_C>(dt, r, fsum, fmax, farg, divisor, s); break;
      case DType::kBF16: launch<__nv_bfloat16, float, OVER_C>(dt, r, fsum, fmax, farg, divisor, s); break;
      default: break;
    }
  }
}

}  // namespace

int sm_count() {
  static int cached[64] = {};
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev < 0 || dev >= 64) dev = 0;
  if (cached[dev] == 0) {
    int n = 0;
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
    cached[dev] = n > 0 ? n : 1;
  }
  return cached[dev];
}

bool vectors_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("ATTNFUSED_CUDA_VECTORS");
    return !(v && std::string(v) == "0");
  }();
  return enabled;
}

int64_t reduce_splits(int64_t programs, int64_t len, int64_t block) {
  // 4 resident CTAs per SM keep HBM busy; below that, split the reduced axis.
  const int64_t min_programs = 4 * static_cast<int64_t>(sm_count());
  const int64_t n_blocks = cdiv(len, block);
  if (programs >= min_programs || n_blocks < 2) return 1;
  return std::min(cdiv(min_programs, programs), n_blocks);
}

template <typename acc_t>
void reduce_shape(DType dt, const ReduceArgs<acc_t>& r, bool over_c, int64_t* programs, int64_t* block) {
  const Plan p = plan(dt, r, over_c);
  const int64_t n_keep = over_c ? r.P : r.C;
  *programs = r.B * (p.rows ? cdiv(n_keep, kWarps) : cdiv(n_keep, 32 * p.vec));
  *block = p.rows ? 32 * p.vec : kWarps;  // a split holds whole lane-steps of the reduced axis
}

template <typename acc_t>
void reduce_hw(DType dt, const ReduceArgs<acc_t>& r, acc_t* fsum, acc_t* fmax, int32_t* farg, acc_t divisor,
               void* stream) {
  dispatch<acc_t, false>(dt, r, fsum, fmax, farg, divisor, stream);
}

template <typename acc_t>
void reduce_c(DType dt, const ReduceArgs<acc_t>& r, acc_t* fsum, acc_t* fmax, int32_t* farg, acc_t divisor,
              void* stream) {
  dispatch<acc_t, true>(dt, r, fsum, fmax, farg, divisor, stream);
}

template void reduce_shape<float>(DType, const ReduceArgs<float>&, bool, int64_t*, int64_t*);
template void reduce_shape<double>(DType, const ReduceArgs<double>&, bool, int64_t*, int64_t*);
template void reduce_hw<float>(DType, const ReduceArgs<float>&, float*, float*, int32_t*, float, void*);
template void reduce_hw<double>(DType, const ReduceArgs<double>&, double*, double*, int32_t*, double, void*);
template void reduce_c<float>(DType, const ReduceArgs<float>&, float*, float*, int32_t*, float, void*);
template void reduce_c<double>(DType, const ReduceArgs<double>&, double*, double*, int32_t*, double, void*);

}  // namespace cuda
}  // namespace attnfused
