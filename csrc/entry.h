// Entry points of the CPU and CUDA kernels, torch-free (plain structs from passes.h), so that the
// .cu files and the kernels' .cpp files never include torch headers.
#pragma once

#include "passes.h"

namespace attnfused {
namespace cpu {
template <typename acc_t> void reduce_hw(DType dt, const ReduceArgs<acc_t>& args);
template <typename acc_t> void reduce_c(DType dt, const ReduceArgs<acc_t>& args);
template <typename acc_t> void pointwise(DType dt, const PointwiseArgs<acc_t>& args);

// The gates' small convolution (csrc/cpu/gate_conv.cpp): ``in`` [B, M, H, W] and ``weight``
// [M, kh, kw] contiguous, zero padding (ph, pw), one output channel [B, Ho, Wo].
template <typename acc_t>
struct GateConvArgs {
  int64_t B, M, H, W, kh, kw, ph, pw, Ho, Wo;
  const acc_t* in;
  const acc_t* weight;
  const acc_t* bias;  // [1] or null
};
template <typename acc_t> void gate_conv(const GateConvArgs<acc_t>& args, acc_t* out);
// d in (all of it), d weight, and d bias when ``dbias`` is not null.
template <typename acc_t>
void gate_conv_backward(const GateConvArgs<acc_t>& args, const acc_t* dz, acc_t* din, acc_t* dweight, acc_t* dbias);
}  // namespace cpu

#ifdef ATTNFUSED_WITH_CUDA
namespace cuda {
// How many pieces a reduction over ``len`` splits into so that ``programs`` independent
// (sample, tile) blocks plus the splits fill the current GPU.
int64_t reduce_splits(int64_t programs, int64_t len, int64_t block);
// Number of (sample, tile) blocks and the reduced-axis block of each pass (for reduce_splits).
void reduce_hw_shape(int64_t B, int64_t C, int64_t P, bool c_fast, int64_t* programs, int64_t* block);
void reduce_c_shape(int64_t B, int64_t C, int64_t P, bool c_fast, int64_t* programs, int64_t* block);
// ``stream`` is a cudaStream_t. Partials (n_split > 1) are combined into ``final_*`` in order.
template <typename acc_t>
void reduce_hw(DType dt, const ReduceArgs<acc_t>& args, acc_t* final_sum, acc_t* final_max,
               int32_t* final_arg, acc_t final_divisor, void* stream);
template <typename acc_t>
void reduce_c(DType dt, const ReduceArgs<acc_t>& args, acc_t* final_sum, acc_t* final_max,
              int32_t* final_arg, acc_t final_divisor, void* stream);
template <typename acc_t> void pointwise(DType dt, const PointwiseArgs<acc_t>& args, void* stream);
}  // namespace cuda
#endif

}  // namespace attnfused
