// Shared by the CUDA kernels: element conversions and warp reductions. Plain CUDA headers only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../passes.h"

namespace attnfused {
namespace cuda {

template <typename scalar_t> struct Cvt;
template <> struct Cvt<float> {
  __device__ __forceinline__ static float to(float v) { return v; }
  __device__ __forceinline__ static float from(float v) { return v; }
};
template <> struct Cvt<double> {
  __device__ __forceinline__ static double to(double v) { return v; }
  __device__ __forceinline__ static double from(double v) { return v; }
};
template <> struct Cvt<__half> {
  __device__ __forceinline__ static float to(__half v) { return __half2float(v); }
  __device__ __forceinline__ static __half from(float v) { return __float2half_rn(v); }
};
template <> struct Cvt<__nv_bfloat16> {
  __device__ __forceinline__ static float to(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ __forceinline__ static __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
};

// 16 bytes of elements: what the vector paths load and store in one instruction (4 fp32, 8
// fp16/bf16, 2 fp64), from 16-byte aligned addresses.
template <typename scalar_t>
struct alignas(16) Pack {
  static constexpr int kN = 16 / sizeof(scalar_t);
  scalar_t v[kN];
};

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Every access to a full-size tensor (x, dy, y, dx) goes through load_full / store_full: plain
// accesses under nvcc; the test suite's emulator counts their bytes, to check the kernels against
// the traffic budget of DESIGN.md §5 (tests/test_cuemu.py). T may be an element or a 16-byte pack.
template <typename T>
__device__ __forceinline__ T load_full(const T* p) {
#ifdef ATTNFUSED_CUDA_EMU
  ::cuemu::detail::count_full(sizeof(T), false);
#endif
  return *p;
}
template <typename T>
__device__ __forceinline__ void store_full(T* p, const T& v) {
#ifdef ATTNFUSED_CUDA_EMU
  ::cuemu::detail::count_full(sizeof(T), true);
#endif
  *p = v;
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t ld(const void* base, int64_t off) {
  return static_cast<acc_t>(Cvt<scalar_t>::to(load_full(static_cast<const scalar_t*>(base) + off)));
}

// The input dtype's rounding of an accumulator value (eager materialises x1 = x * ca).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t round_to(acc_t v) {
  return static_cast<acc_t>(Cvt<scalar_t>::to(Cvt<scalar_t>::from(v)));
}

// Sum and (max, first argmax) across a warp with shuffles. The sum's tree order is fixed, so
// results are deterministic run to run.
template <typename acc_t>
__device__ __forceinline__ void warp_reduce(acc_t& sum, acc_t& m, int32_t& arg, bool want_max) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (want_max) {
      const acc_t m2 = __shfl_xor_sync(0xffffffffu, m, off);
      const int32_t a2 = __shfl_xor_sync(0xffffffffu, arg, off);
      max_merge(m, arg, m2, a2);
    }
  }
}

int sm_count();  // of the current device (cached)
// The 16-byte load/store paths; ATTNFUSED_CUDA_VECTORS=0 turns them off, to time the scalar
// kernels against them (read once per process).
bool vectors_enabled();

// Every launch goes through launch_kernel: a plain <<<>>> under nvcc. The test suite's CPU
// emulator of these kernels (tests/cuemu, built with ATTNFUSED_CUDA_EMU) supplies its own, so the
// same kernel code runs on CPU tensors there.
#ifdef ATTNFUSED_CUDA_EMU
using ::cuemu::launch_kernel;
#else
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
}
#endif

__host__ __device__ inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace cuda
}  // namespace attnfused
