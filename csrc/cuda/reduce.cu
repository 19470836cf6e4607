// CUDA reductions: pool_hw / dot_hw (over P) and pool_c / dot_c (over C).
//
// Two CTA shapes, picked by which axis is unit-stride:
//   rows  - the reduced axis is the fast one (pool_hw on NCHW, pool_c on channels_last): one warp
//           per kept index streams its row with coalesced loads, then reduces with shuffles;
//           8 warps (8 kept indices) per CTA.
//   tile  - the kept axis is the fast one (pool_hw on channels_last, pool_c on NCHW): 32 lanes
//           cover 32 consecutive kept indices (one coalesced segment per row), 8 rows of the
//           reduced axis in flight, folded through shared memory in a fixed order.
// When (sample x tile) CTAs cannot fill the GPU the reduced axis is split; the partials
// [B, n_split, n] are folded in split order by a small combine kernel (deterministic).
#include "../entry.h"
#include "common.cuh"

namespace attnfused {
namespace cuda {
namespace {

constexpr int kWarps = 8;     // warps per CTA
constexpr int kThreads = 32 * kWarps;

// value(b, j, k): j indexes the kept axis, k the reduced one.
template <typename scalar_t, typename acc_t, bool OVER_C>
struct Value {
  const ReduceArgs<acc_t>& r;
  __device__ __forceinline__ acc_t operator()(int64_t b, int64_t j, int64_t k) const {
    const int64_t c = OVER_C ? k : j, p = OVER_C ? j : k;
    acc_t v = ld<scalar_t, acc_t>(r.a.data, b * r.a.sb + c * r.a.sc + p * r.a.sp);
    if (OVER_C) {
      if (r.t.ca) {
        v *= r.t.ca[b * r.C + c];
        if (r.round_x1) v = round_to<scalar_t, acc_t>(v);
      }
    } else if (r.has_x) {
      v = mid_term(v, r.t, b * r.P + p, c);
    }
    if (r.has_x) v *= ld<scalar_t, acc_t>(r.x.data, b * r.x.sb + c * r.x.sc + p * r.x.sp);
    return v;
  }
};

template <typename acc_t>
__device__ __forceinline__ void store(const ReduceArgs<acc_t>& r, int64_t out, acc_t sum, acc_t m, int32_t arg) {
  r.out_sum[out] = sum / r.divisor;
  if (r.want_max) {
    r.out_max[out] = m;
    r.out_arg[out] = arg;
  }
}

template <typename scalar_t, typename acc_t, bool OVER_C>
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
  for (int64_t k = k0 + lane; k < k1; k += 32) {
    const acc_t v = value(b, j, k);
    sum += v;
    if (r.want_max) max_step(v, static_cast<int32_t>(k), m, arg);
  }
  warp_reduce(sum, m, arg, r.want_max);
  if (lane == 0) store(r, (b * r.n_split + split) * n_keep + j, sum, m, arg);
}

template <typename scalar_t, typename acc_t, bool OVER_C>
__global__ void __launch_bounds__(kThreads) reduce_tile_kernel(ReduceArgs<acc_t> r) {
  __shared__ acc_t s_sum[kWarps][32];
  __shared__ acc_t s_max[kWarps][32];
  __shared__ int32_t s_arg[kWarps][32];
  const int64_t n_keep = OVER_C ? r.P : r.C, K = OVER_C ? r.C : r.P;
  const int64_t n_tiles = cdiv(n_keep, 32);
  int64_t pid = blockIdx.x;
  const int64_t split = pid % r.n_split;
  pid /= r.n_split;
  const int64_t b = pid / n_tiles;
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int64_t j = (pid % n_tiles) * 32 + tx;
  const Value<scalar_t, acc_t, OVER_C> value{r};
  const int64_t k0 = split * r.split_len, k1 = min(K, k0 + r.split_len);
  acc_t sum = 0, m = 0;
  int32_t arg = -1;
  if (j < n_keep) {
    for (int64_t k = k0 + ty; k < k1; k += kWarps) {
      const acc_t v = value(b, j, k);
      sum += v;
      if (r.want_max) max_step(v, static_cast<int32_t>(k), m, arg);
    }
  }
  s_sum[ty][tx] = sum;
  s_max[ty][tx] = m;
  s_arg[ty][tx] = arg;
  __syncthreads();
  if (ty != 0 || j >= n_keep) return;
  for (int row = 1; row < kWarps; ++row) {
    sum += s_sum[row][tx];
    if (r.want_max) max_merge(m, arg, s_max[row][tx], s_arg[row][tx]);
  }
  store(r, (b * r.n_split + split) * n_keep + j, sum, m, arg);
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

template <typename scalar_t, typename acc_t, bool OVER_C>
void launch(const ReduceArgs<acc_t>& r, acc_t* fsum, acc_t* fmax, int32_t* farg, acc_t divisor,
            cudaStream_t stream) {
  const int64_t n_keep = OVER_C ? r.P : r.C;
  const bool c_fast = r.a.sc < r.a.sp;
  const bool rows = OVER_C ? c_fast : !c_fast;  // the reduced axis is the unit-stride one
  const int64_t tiles = rows ? cdiv(n_keep, kWarps) : cdiv(n_keep, 32);
  const dim3 grid(static_cast<unsigned>(r.B * tiles * r.n_split));
  if (rows) {
    launch_kernel(reduce_rows_kernel<scalar_t, acc_t, OVER_C>, grid, kThreads, 0, stream, r);
  } else {
    launch_kernel(reduce_tile_kernel<scalar_t, acc_t, OVER_C>, grid, kThreads, 0, stream, r);
  }
  if (r.n_split > 1) {
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
    launch<double, double, OVER_C>(r, fsum, fmax, farg, divisor, s);
  } else {
    switch (dt) {
      case DType::kF32: launch<float, float, OVER_C>(r, fsum, fmax, farg, divisor, s); break;
      case DType::kF16: launch<__half, float, OVER_C>(r, fsum, fmax, farg, divisor, s); break;
      case DType::kBF16: launch<__nv_bfloat16, float, OVER_C>(r, fsum, fmax, farg, divisor, s); break;
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

int64_t reduce_splits(int64_t programs, int64_t len, int64_t block) {
  // 4 resident CTAs per SM keep HBM busy; below that, split the reduced axis.
  const int64_t min_programs = 4 * static_cast<int64_t>(sm_count());
  const int64_t n_blocks = cdiv(len, block);
  if (programs >= min_programs || n_blocks < 2) return 1;
  return std::min(cdiv(min_programs, programs), n_blocks);
}

void reduce_hw_shape(int64_t B, int64_t C, int64_t P, bool c_fast, int64_t* programs, int64_t* block) {
  (void)P;
  *programs = c_fast ? B * cdiv(C, 32) : B * cdiv(C, kWarps);
  *block = c_fast ? kWarps : 32;
}

void reduce_c_shape(int64_t B, int64_t C, int64_t P, bool c_fast, int64_t* programs, int64_t* block) {
  (void)C;
  *programs = c_fast ? B * cdiv(P, kWarps) : B * cdiv(P, 32);
  *block = c_fast ? 32 : kWarps;
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

template void reduce_hw<float>(DType, const ReduceArgs<float>&, float*, float*, int32_t*, float, void*);
template void reduce_hw<double>(DType, const ReduceArgs<double>&, double*, double*, int32_t*, double, void*);
template void reduce_c<float>(DType, const ReduceArgs<float>&, float*, float*, int32_t*, float, void*);
template void reduce_c<double>(DType, const ReduceArgs<double>&, double*, double*, int32_t*, double, void*);

}  // namespace cuda
}  // namespace attnfused
