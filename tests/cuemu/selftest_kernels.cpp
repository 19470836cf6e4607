// Kernels that check the emulator itself (tests/test_cuemu.py): CUDA's semantics for the warp
// intrinsics, and that each rule cuemu.h promises to enforce is enforced. Compiled into the
// emulator's extension only; ``cuemu_selftest(name, ...)`` runs one case.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>

namespace {

// A block sum through shuffles and shared memory, written correctly.
__global__ void block_sum(const float* in, float* out, int n) {
  __shared__ float partial[32];
  float v = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) v += in[blockIdx.x * n + i];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.0f;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
  }
}

// Per lane (one warp), 10 results: idx (width 32, 8), up (1, width 16), down (3, width 8),
// xor (5, width 32; 4, width 4), ballot, any, all of lane parity.
__global__ void shuffle_semantics(int* out) {
  const int lane = threadIdx.x;
  const unsigned full = 0xffffffffu;
  int* o = out + lane * 10;
  o[0] = __shfl_sync(full, lane * 10, 7);
  o[1] = __shfl_sync(full, lane * 10, 3, 8);
  o[2] = __shfl_up_sync(full, lane * 10, 1, 16);
  o[3] = __shfl_down_sync(full, lane * 10, 3, 8);
  o[4] = __shfl_xor_sync(full, lane * 10, 5);
  o[5] = __shfl_xor_sync(full, lane * 10, 4, 4);
  o[6] = static_cast<int>(__ballot_sync(full, lane % 3 == 0));
  o[7] = __any_sync(full, lane == 31);
  o[8] = __all_sync(full, lane < 31);
  o[9] = __shfl_sync(full, static_cast<int>(blockDim.x), 0);
}

__global__ void shuffle_after_return(float* out) {
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void barrier_after_return(float* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void mismatched_collectives(float* out) {
  float v = 1;
  if (threadIdx.x < 16) {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  } else {
    __syncwarp();
  }
  out[threadIdx.x] = v;
}

__global__ void read_outside_mask(float* out) {
  // Lanes 8..15 would read lanes 16..23, which are not in the mask.
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_down_sync(0x0000ffffu, 1.0f, 8);
}

__global__ void deadlock(float* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  }
}

// Reads a neighbour's shared-memory slot without a barrier: the result depends on the schedule.
__global__ void missing_barrier(float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = static_cast<float>(threadIdx.x + 1);
  out[blockIdx.x * 64 + threadIdx.x] = s[(threadIdx.x + 1) % 64];
}

// Four turns of a loop: each warp leaves a value per turn in shared memory after a shuffle, warp 0
// adds them up after a barrier, and no barrier ends the turn. In lockstep the other warps are
// held at the shuffle until warp 0 has read; a warp that runs ahead overwrites its slot first.
__global__ void missing_turn_barrier(float* out) {
  __shared__ float slot[4];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float total = 0;
  for (int turn = 0; turn < 4; ++turn) {
    const float v = __shfl_xor_sync(0xffffffffu, static_cast<float>(10 * turn + warp), 1);
    if (lane == 0) slot[warp] = v;
    __syncthreads();
    if (warp == 0 && lane == 0)
      for (int w = 0; w < 4; ++w) total += slot[w];
    // (missing: __syncthreads() before the next turn rewrites the slots)
  }
  if (threadIdx.x == 0) out[0] = total;
}

__global__ void unwritten_dynamic_shared(float* out) {
  float* dyn = static_cast<float*>(::cuemu::detail::dynamic_shared());
  if (threadIdx.x == 0) dyn[0] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = dyn[threadIdx.x];  // slot 0 written, the others not
}

__global__ void trivial(float* out) { out[threadIdx.x + blockIdx.x * blockDim.x] = 1.0f; }

using Case = std::function<void(void*)>;

const std::map<std::string, Case>& cases() {
  static const std::map<std::string, Case> table = {
      // in: 4 blocks x 1000 floats, out: 4 sums (after the input)
      {"block_sum", [](void* p) {
         auto* f = static_cast<float*>(p);
         cuemu::launch_kernel(block_sum, dim3(4), dim3(256), 0, nullptr, f, f + 4000, 1000);
       }},
      {"shuffle_semantics", [](void* p) {
         cuemu::launch_kernel(shuffle_semantics, dim3(1), dim3(32), 0, nullptr, static_cast<int*>(p));
       }},
      {"shuffle_after_return", [](void* p) {
         cuemu::launch_kernel(shuffle_after_return, dim3(1), dim3(32), 0, nullptr, static_cast<float*>(p));
       }},
      {"barrier_after_return", [](void* p) {
         cuemu::launch_kernel(barrier_after_return, dim3(1), dim3(64), 0, nullptr, static_cast<float*>(p));
       }},
      {"mismatched_collectives", [](void* p) {
         cuemu::launch_kernel(mismatched_collectives, dim3(1), dim3(32), 0, nullptr, static_cast<float*>(p));
       }},
      {"read_outside_mask", [](void* p) {
         cuemu::launch_kernel(read_outside_mask, dim3(1), dim3(32), 0, nullptr, static_cast<float*>(p));
       }},
      {"deadlock", [](void* p) {
         cuemu::launch_kernel(deadlock, dim3(1), dim3(32), 0, nullptr, static_cast<float*>(p));
       }},
      // out: 4 blocks x 64
      {"missing_barrier", [](void* p) {
         cuemu::launch_kernel(missing_barrier, dim3(4), dim3(64), 0, nullptr, static_cast<float*>(p));
       }},
      // out: 1, the sum over turns and warps of 10 turn + warp when every turn is read before rewritten
      {"missing_turn_barrier", [](void* p) {
         cuemu::launch_kernel(missing_turn_barrier, dim3(1), dim3(128), 0, nullptr, static_cast<float*>(p));
       }},
      // out: 64
      {"unwritten_dynamic_shared", [](void* p) {
         cuemu::launch_kernel(unwritten_dynamic_shared, dim3(1), dim3(64), 64 * sizeof(float), nullptr,
                              static_cast<float*>(p));
       }},
      {"block_too_large", [](void* p) {
         cuemu::launch_kernel(trivial, dim3(1), dim3(2048), 0, nullptr, static_cast<float*>(p));
       }},
      {"empty_grid", [](void* p) {
         cuemu::launch_kernel(trivial, dim3(0), dim3(32), 0, nullptr, static_cast<float*>(p));
       }},
      {"smem_over_default", [](void* p) {
         cuemu::launch_kernel(trivial, dim3(1), dim3(32), 64 << 10, nullptr, static_cast<float*>(p));
       }},
      {"smem_raised", [](void* p) {
         cudaFuncSetAttribute(trivial, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10);
         cuemu::launch_kernel(trivial, dim3(1), dim3(32), 64 << 10, nullptr, static_cast<float*>(p));
         cudaFuncSetAttribute(trivial, cudaFuncAttributeMaxDynamicSharedMemorySize, 48 << 10);
       }},
  };
  return table;
}

}  // namespace

// 0 when the case ran, 1 when the emulator refused it (message in ``err``), 2 for an unknown name.
extern "C" int cuemu_selftest(const char* name, void* buffer, char* err, int err_len) {
  const auto it = cases().find(name);
  if (it == cases().end()) return 2;
  try {
    it->second(buffer);
  } catch (const std::exception& e) {
    std::snprintf(err, static_cast<size_t>(err_len), "%s", e.what());
    return 1;
  }
  return 0;
}
