// Entry points of the CPU and CUDA kernels, torch-free (plain structs from passes.h), so that the
// .cu files and the kernels' .cpp files never include torch headers.
#pragma once

#include "passes.h"

namespace attnfused {

// The gates' small convolution (CPU: csrc/cpu/gate_conv.cpp, CUDA: csrc/cuda/gate_conv.cu): ``in``
// [B, M, H, W] and ``weight`` [M, kh, kw] contiguous, in the accumulation dtype, zero padding
// (ph, pw), one output channel [B, Ho, Wo].
template <typename acc_t>
struct GateConvArgs {
  int64_t B, M, H, W, kh, kw, ph, pw, Ho, Wo;
  const acc_t* in;
  const acc_t* weight;
  const acc_t* bias;  // [1] or null
};

// The "fc" channel gate (CUDA: csrc/cuda/fc_gate.cu): the pooled statistics ``s`` [n B, C] stacked
// (n = 2: avg rows, then max rows), W1 [R, C], W2 [C, R], biases [R] / [C] or null; contiguous, in
// the accumulation dtype. ``act``: kActRelu / kActSilu; ``gate``: kGateSigmoid / kGateHardSigmoid.
constexpr int kActRelu = 0, kActSilu = 1, kGateSigmoid = 0, kGateHardSigmoid = 1;
template <typename acc_t>
struct FcGateArgs {
  int64_t B, n, C, R;
  const acc_t* s;
  const acc_t* w1;
  const acc_t* b1;
  const acc_t* w2;
  const acc_t* b2;
  int act, gate;
};

// The gate's exp-free elementwise math, shared by csrc/cpu/fc_gate.cpp and csrc/cuda/fc_gate.cu (each
// computes the sigmoids' exp its own way), in eager's conventions: relu keeps NaN (F.relu); its
// gradient is aten's threshold_backward(d, h, 0) (0 where h <= 0, not NaN for an infinite d); silu'
// = s (1 + h (1 - s)) with s = sigmoid(h) (unused for relu); the hard sigmoid is relu6(z + 3) / 6;
// dz from dca is aten's sigmoid_backward, dca (1 - ca) ca, or [-3 < z < 3] dca / 6.
template <typename acc_t>
AF_HD acc_t fc_relu(acc_t h) {
  return h < acc_t(0) ? acc_t(0) : h;
}
template <typename acc_t>
AF_HD acc_t fc_act_grad(acc_t d, acc_t h, acc_t s, int act) {
  if (act == kActRelu) return h <= acc_t(0) ? acc_t(0) : d;
  return d * (s * (acc_t(1) + h * (acc_t(1) - s)));
}
template <typename acc_t>
AF_HD acc_t fc_hard_sigmoid(acc_t z) {
  const acc_t t = z + acc_t(3);
  return (t < acc_t(0) ? acc_t(0) : (t > acc_t(6) ? acc_t(6) : t)) / acc_t(6);
}
template <typename acc_t>
AF_HD acc_t fc_gate_grad(acc_t dca, acc_t z, acc_t ca, int gate) {
  if (gate == kGateSigmoid) return dca * (acc_t(1) - ca) * ca;
  return z > acc_t(-3) && z < acc_t(3) ? dca / acc_t(6) : acc_t(0);
}
// Its backward's inputs (dL/dca [B, C], the forward's z, ca [B, C] and h [n B, R]), scratch (afold
// [B, R], dh [n B, R], dht = dh transposed [R, n B], dz [B, C], parts [cuda::fc_gate_chunks(C), B, R])
// and outputs (ds [n B, C], dW1, dW2, and the biases' grads when not null).
template <typename acc_t>
struct FcGateGrads {
  const acc_t* dca;
  const acc_t* z;
  const acc_t* ca;
  const acc_t* h;
  acc_t* afold;
  acc_t* dh;
  acc_t* dht;
  acc_t* dz;
  acc_t* parts;
  acc_t* ds;
  acc_t* dw1;
  acc_t* db1;
  acc_t* dw2;
  acc_t* db2;
};

namespace cpu {
// Outputs of at least this many bytes are written with non-temporal (streaming) stores. Above it
// the output does not stay in cache for its consumer anyway (this is about one core complex's L3
// on current x86 servers; sysconf reports the whole socket's, 256 MiB on the dev machine, so the
// bound is fixed, as glibc's memcpy fixes its own), and a plain store first reads the line it
// writes: a third DRAM transfer per element on top of the input's read and the output's write.
// Measured on 2 cores (fp32 scale, 8 x C x H x W): 256 x 56^2 (26 MB) 2.6 -> 1.7 ms streamed,
// 512 x 28^2 (13 MB) 0.77 -> 0.60; 1024 x 14^2 (6.4 MB, stays in L3) 0.17 plain, 0.9 streamed.
constexpr int64_t kStreamBytes = int64_t{8} << 20;

template <typename acc_t> void reduce_hw(DType dt, const ReduceArgs<acc_t>& args);
template <typename acc_t> void reduce_c(DType dt, const ReduceArgs<acc_t>& args);
template <typename acc_t> void pointwise(DType dt, const PointwiseArgs<acc_t>& args);

// The gates' small convolution (csrc/cpu/gate_conv.cpp; GateConvArgs above).
template <typename acc_t> void gate_conv(const GateConvArgs<acc_t>& args, acc_t* out);
// d in (all of it), d weight, and d bias when ``dbias`` is not null.
template <typename acc_t>
void gate_conv_backward(const GateConvArgs<acc_t>& args, const acc_t* dz, acc_t* din, acc_t* dweight, acc_t* dbias);

// The "fc" channel gate (csrc/cpu/fc_gate.cpp; FcGateArgs above): h = s W1^T + b1 [n B, R]; then
// afold = sum over the stacked statistics of act(h) [B, R] and z = afold W2^T + n b2 [B, C], and
// for the hard sigmoid ca = gate_fn(z) (the sigmoid is the caller's: aten's vectorised exp).
// ``sig_h`` = sigmoid(h) for silu (the caller's too), else unused.
template <typename acc_t> void fc_hidden(const FcGateArgs<acc_t>& args, acc_t* h);
template <typename acc_t>
void fc_logits(const FcGateArgs<acc_t>& args, const acc_t* h, const acc_t* sig_h, acc_t* afold, acc_t* z, acc_t* ca);
// Its backward: FcGateGrads' afold, dh and dz are scratch, dht and parts unused.
template <typename acc_t>
void fc_gate_backward(const FcGateArgs<acc_t>& args, const FcGateGrads<acc_t>& grads, const acc_t* sig_h);

// A forward's channel stage inside a sample-by-sample loop (csrc/cpu/stages.cpp): pool over P of
// sample b (``pool``: B = all samples, outputs [B, C]), then ``gate(gate_ctx, b)``, the caller's:
// sample b's channel gate from its pooled rows into row b of the ca the later passes read (called on
// the task's thread, samples in any order).
using ChannelGateFn = void (*)(void* ctx, int64_t b);
template <typename acc_t>
struct ChannelPart {
  ReduceArgs<acc_t> pool;
  ChannelGateFn gate;
  void* gate_ctx;
};

// SE's and ECA's forward, one sample at a time: the channel part, then the scale (``scale``, t.ca
// the gate's output), so that the scale's read of x comes from cache. ``shared`` false: a task owns
// whole samples, each on one core; true: the samples go one after another, each split over all the
// threads by channel (the same channels to a thread in its pool and its scale), for samples larger
// than one core's cache.
template <typename acc_t>
void channel_stage(DType dt, const ChannelPart<acc_t>& channel, const PointwiseArgs<acc_t>& scale, bool shared);

// CBAM's spatial stage forward, one sample at a time: ``channel`` first where not null (CBAM's
// channel stage; pool.t.ca and scale.t.ca are then its gate's output), then pool over C of
// x*ca (``pool``: B = all samples, outputs [B, P]), the maps, the conv (``conv``, in = maps), the
// gate, the scale (``scale``, t.sa = ``sa``). Outputs: maps [B, M, P], z [B, P], sa [B, P], y.
// ``pool.out_arg`` null: the max over C without its argmax (no backward follows).
struct SpatialStageSpec {
  int maps;   // 0: [max, mean], 1: [mean, max], 2: [0.5 * (mean + max)]
  bool hard;  // hard_sigmoid, else sigmoid
};
template <typename acc_t>
void spatial_stage(DType dt, const ReduceArgs<acc_t>& pool, const GateConvArgs<acc_t>& conv,
                   const PointwiseArgs<acc_t>& scale, SpatialStageSpec spec, acc_t* maps, acc_t* z, acc_t* sa,
                   const ChannelPart<acc_t>* channel);
}  // namespace cpu

// The CUDA kernels are compiled by nvcc (ATTNFUSED_WITH_CUDA), or as host code for the test
// suite's emulator of them (ATTNFUSED_CUDA_EMU, tests/cuemu), never both.
#if defined(ATTNFUSED_WITH_CUDA) && defined(ATTNFUSED_CUDA_EMU)
#error "ATTNFUSED_WITH_CUDA and ATTNFUSED_CUDA_EMU exclude each other"
#endif
#if defined(ATTNFUSED_WITH_CUDA) || defined(ATTNFUSED_CUDA_EMU)
#define ATTNFUSED_CUDA_KERNELS 1
#endif

#ifdef ATTNFUSED_CUDA_KERNELS
namespace cuda {
// How many pieces a reduction over ``len`` splits into so that ``programs`` independent
// (sample, tile) blocks plus the splits fill the current GPU.
int64_t reduce_splits(int64_t programs, int64_t len, int64_t block);
// Number of (sample, tile) blocks of a reduction (over C when ``over_c``) and the granularity a
// split of its reduced axis must keep (for reduce_splits); depends on the kernel and vector width
// the arguments get, not on n_split.
template <typename acc_t>
void reduce_shape(DType dt, const ReduceArgs<acc_t>& args, bool over_c, int64_t* programs, int64_t* block);
// ``stream`` is a cudaStream_t. Partials (n_split > 1) are combined into ``final_*`` in order.
template <typename acc_t>
void reduce_hw(DType dt, const ReduceArgs<acc_t>& args, acc_t* final_sum, acc_t* final_max,
               int32_t* final_arg, acc_t final_divisor, void* stream);
template <typename acc_t>
void reduce_c(DType dt, const ReduceArgs<acc_t>& args, acc_t* final_sum, acc_t* final_max,
              int32_t* final_arg, acc_t final_divisor, void* stream);
template <typename acc_t> void pointwise(DType dt, const PointwiseArgs<acc_t>& args, void* stream);
// The gates' small convolution; backward needs ``parts``, (taps + 1) * gate_conv_weight_chunks(B *
// Ho * Wo) scratch entries (taps = M * kh * kw) for its deterministic weight-gradient reduction.
template <typename acc_t> void gate_conv(const GateConvArgs<acc_t>& args, acc_t* out, void* stream);
int64_t gate_conv_weight_chunks(int64_t outputs);
template <typename acc_t>
void gate_conv_backward(const GateConvArgs<acc_t>& args, const acc_t* dz, acc_t* din, acc_t* dweight, acc_t* dbias,
                        acc_t* parts, void* stream);
// The "fc" channel gate: h [n B, R], act = act(h) (scratch, [n B, R]), z and ca [B, C]. Its
// backward sums dr = dz W2 in chunks of channels: FcGateGrads::parts holds fc_gate_chunks(C) B R.
int64_t fc_gate_chunks(int64_t C);
template <typename acc_t> void fc_gate(const FcGateArgs<acc_t>& args, acc_t* h, acc_t* act, acc_t* z, acc_t* ca,
                                       void* stream);
template <typename acc_t> void fc_gate_backward(const FcGateArgs<acc_t>& args, const FcGateGrads<acc_t>& grads,
                                                void* stream);
}  // namespace cuda
#endif

}  // namespace attnfused
