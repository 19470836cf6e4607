// cuemu: runs this project's CUDA kernels (csrc/cuda/*.cu, unchanged) on the CPU, so that the test
// suite exercises them on machines without a GPU. The stand-in headers in include/ (cuda_runtime.h,
// cuda_fp16.h, cuda_bf16.h) include this file; tests/cuemu/build.py compiles the .cu files as C++
// against them, together with csrc/ops.cpp built with ATTNFUSED_CUDA_EMU.
//
// Not a general CUDA emulator: it implements what csrc/cuda uses, and it refuses (fails the launch
// with a message, raised as a RuntimeError in Python) what real hardware would leave undefined:
//   - each thread of a block is a fiber; blocks run one after another; the threads of a block
//     interleave only at __syncthreads() and warp collectives (shuffles, votes, __syncwarp), in an
//     order the tests can reverse or shuffle, or "warp ahead" (one warp at a time runs to its next
//     barrier; cuemu_configure), so that a result which depends on the schedule (a missing
//     barrier, a lane reading another lane's shared-memory write before a __syncwarp) shows up as
//     a difference between schedules;
//   - a warp collective must be reached by every lane its mask names, with the same mask and the
//     same intrinsic, and may only read lanes in the mask; __syncthreads() must be reached by all
//     threads of the block (none may have returned);
//   - dynamic shared memory is filled with 0xff bytes (NaN, -1) before each block, so reads of
//     unwritten slots do not see the previous block's values. Static __shared__ arrays are
//     function-local statics (GCC ignores section attributes on the statics of templates, so they
//     cannot be found to be filled): an unwritten slot there holds whatever the last block left,
//     which the tests' random block order turns into a difference between runs;
//   - launch configurations are checked as the driver checks them (block <= 1024 threads, grid
//     limits, dynamic shared memory over 48 KiB only after cudaFuncSetAttribute, zero-size grids).
// What it does not model: timing, occupancy, memory coalescing, global-memory races between blocks
// (blocks never overlap here), the memory model's weak ordering, and code under __CUDA_ARCH__
// (inline PTX): csrc/cuda must not need it. Compile errors are nvcc's business: CI builds the
// real CUDA kernels too.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------------------------------------
// Keywords and attributes.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __constant__ static
// One block runs at a time, so a function-local static is exactly block-shared storage.
#define __shared__ static __attribute__((aligned(16)))

// ---------------------------------------------------------------------------------------------
// Built-in vector types (the ones csrc/cuda may use), with CUDA's alignments.
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---------------------------------------------------------------------------------------------
// The runtime API subset csrc uses. Errors are not deferred: a bad launch throws at once.
typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrL2CacheSize = 38,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);
constexpr int warpSize = 32;

namespace cuemu {
namespace detail {
void set_func_attribute(const void* func, int attr, int value);
}
}  // namespace cuemu
template <typename F>
cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
  ::cuemu::detail::set_func_attribute(reinterpret_cast<const void*>(func), static_cast<int>(attr), value);
  return cudaSuccess;
}

// ---------------------------------------------------------------------------------------------
// Half types: storage and the conversion intrinsics only. torch builds CUDA code with
// __CUDA_NO_HALF_CONVERSIONS__ / __CUDA_NO_HALF_OPERATORS__ (and the bf16 ones), so csrc/cuda may
// not rely on implicit conversions or operators: none are provided here either.
namespace cuemu {
float half_bits_to_float(uint16_t h);
uint16_t float_to_half_bits(float f);  // round to nearest even, CUDA's __float2half_rn
float bf16_bits_to_float(uint16_t h);
uint16_t float_to_bf16_bits(float f);  // round to nearest even, NaN kept quiet
}  // namespace cuemu

struct alignas(2) __half { uint16_t __x; };
struct alignas(4) __half2 { __half x, y; };
struct alignas(2) __nv_bfloat16 { uint16_t __x; };
struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };

inline float __half2float(__half h) { return cuemu::half_bits_to_float(h.__x); }
inline __half __float2half_rn(float f) { return __half{cuemu::float_to_half_bits(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half_rn(a), __float2half_rn(b)}; }
inline __half2 __float22half2_rn(float2 f) { return __floats2half2_rn(f.x, f.y); }
inline __half2 __halves2half2(__half a, __half b) { return {a, b}; }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }

inline float __bfloat162float(__nv_bfloat16 h) { return cuemu::bf16_bits_to_float(h.__x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{cuemu::float_to_bf16_bits(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return {a, b}; }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }

// ---------------------------------------------------------------------------------------------
// Device functions: integer min/max as CUDA overloads them, fast-math spellings, bit tricks.
template <typename A, typename B, typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> min(A a, B b) {
  using T = std::common_type_t<A, B>;
  return static_cast<T>(b) < static_cast<T>(a) ? static_cast<T>(b) : static_cast<T>(a);
}
template <typename A, typename B, typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> max(A a, B b) {
  using T = std::common_type_t<A, B>;
  return static_cast<T>(a) < static_cast<T>(b) ? static_cast<T>(b) : static_cast<T>(a);
}
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stwt(T* p, T v) { *p = v; }
inline void __threadfence() {}
inline void __threadfence_block() {}

// Atomics: threads never run concurrently here, so a plain read-modify-write is atomic.
template <typename T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <typename T> inline T atomicMax(T* p, T v) { T old = *p; *p = old < v ? v : old; return old; }
template <typename T> inline T atomicMin(T* p, T v) { T old = *p; *p = v < old ? v : old; return old; }
template <typename T> inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <typename T> inline T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }

// ---------------------------------------------------------------------------------------------
// Threads, blocks and their synchronisation (runtime.cpp).
namespace cuemu {
namespace detail {

// Warp collectives, as the runtime completes them once every lane of the mask has arrived.
enum class Op : int { kSyncWarp, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll };

const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void sync_threads();
int sync_threads_reduce(int kind, int pred);  // 0 count, 1 and, 2 or
uint64_t warp_collective(Op op, unsigned mask, uint64_t value, int arg, int width);
unsigned active_mask();
[[noreturn]] void trap(const char* why);
void* dynamic_shared();
void count_full(size_t bytes, bool write);  // csrc/cuda/common.cuh's load_full / store_full

// A launch: validates the configuration, then runs ``body`` once per thread, block by block.
struct KernelBody {
  void (*run)(void* ctx);
  void* ctx;
};
void launch(const void* func, dim3 grid, dim3 block, size_t smem, KernelBody body);

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffles move at most 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T>
T from_bits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

}  // namespace detail

// The kernel launch csrc/cuda/common.cuh's launch_kernel() stands for: the kernel's parameters are
// converted once, as the driver copies them to the launch; each thread receives its own copy.
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch_kernel: argument count differs from the kernel's");
  (void)stream;
  using Tuple = std::tuple<std::decay_t<Params>...>;
  Tuple params(std::forward<Args>(args)...);
  struct Ctx {
    void (*kernel)(Params...);
    Tuple* params;
  } ctx{kernel, &params};
  detail::KernelBody body{[](void* p) {
                            auto* c = static_cast<Ctx*>(p);
                            std::apply(c->kernel, *c->params);
                          },
                          &ctx};
  detail::launch(reinterpret_cast<const void*>(kernel), grid, block, smem, body);
}

}  // namespace cuemu

#define threadIdx (::cuemu::detail::thread_idx())
#define blockIdx (::cuemu::detail::block_idx())
#define blockDim (::cuemu::detail::block_dim())
#define gridDim (::cuemu::detail::grid_dim())

inline void __syncthreads() { ::cuemu::detail::sync_threads(); }
inline int __syncthreads_count(int pred) { return ::cuemu::detail::sync_threads_reduce(0, pred); }
inline int __syncthreads_and(int pred) { return ::cuemu::detail::sync_threads_reduce(1, pred); }
inline int __syncthreads_or(int pred) { return ::cuemu::detail::sync_threads_reduce(2, pred); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::cuemu::detail::warp_collective(::cuemu::detail::Op::kSyncWarp, mask, 0, 0, 32);
}
inline unsigned __activemask() { return ::cuemu::detail::active_mask(); }
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return static_cast<unsigned>(::cuemu::detail::warp_collective(::cuemu::detail::Op::kBallot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) {
  return static_cast<int>(::cuemu::detail::warp_collective(::cuemu::detail::Op::kAny, mask, pred != 0, 0, 32));
}
inline int __all_sync(unsigned mask, int pred) {
  return static_cast<int>(::cuemu::detail::warp_collective(::cuemu::detail::Op::kAll, mask, pred != 0, 0, 32));
}
template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  using namespace ::cuemu::detail;
  return from_bits<T>(warp_collective(Op::kShflIdx, mask, to_bits(var), src_lane, width));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  using namespace ::cuemu::detail;
  return from_bits<T>(warp_collective(Op::kShflUp, mask, to_bits(var), static_cast<int>(delta), width));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  using namespace ::cuemu::detail;
  return from_bits<T>(warp_collective(Op::kShflDown, mask, to_bits(var), static_cast<int>(delta), width));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  using namespace ::cuemu::detail;
  return from_bits<T>(warp_collective(Op::kShflXor, mask, to_bits(var), lane_mask, width));
}
[[noreturn]] inline void __trap() { ::cuemu::detail::trap("__trap() called"); }
