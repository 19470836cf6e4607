// CUDA kernels of the "fc" channel gate (SE's MLP, CBAM's shared MLP):
//
//     h = s W1^T + b1 (per stacked row j < J = n B),   a[b] = sum_i act(h[i B + b]),
//     z = a W2^T + n b2,                               ca = gate_fn(z),
//
// s [J, C] the pooled statistics stacked (n = 2 for CBAM's avg + max rows), W1 [R, C], W2 [C, R],
// all in the accumulation dtype. Same contract as attnfused/ops/_gates.py's channel_forward /
// channel_backward for ``gate == "fc"``, which calls these through the "cuda" provider.
//
// Why not cuBLAS + elementwise ops: each direction there is 4-6 (forward) and ~10 (backward)
// launches on tensors of a few KB to a few MB, each also a round trip through Python and the
// dispatcher. Here each direction is two launches:
//   forward   1. h and act(h)           a warp per (r, 4 rows), lanes over c (W1 and s rows coalesced)
//             2. z and ca               a warp per (c, 4 samples), lanes over r
//   backward  1. dh (and a)             a CTA per (32 r, 4 samples): lanes over r (W2 rows
//                                       coalesced), its 8 warps over c, summed in a fixed order
//             2. dW2, db2 | dW1, db1 | ds   three jobs of one grid: a thread per weight element
//                                       (sums over the batch), a thread per (4 rows, c) for ds
// dz = gate_fn'(dca) is recomputed where it is read (one or two multiplies, from L1/L2) rather
// than stored. Every sum runs in a fixed order (serial loops, fixed shuffle trees), so results
// are deterministic and independent of the schedule. The weights are read once per group of rows
// (4 samples), from L2: at C = 2048, R = 128, fp32, B = 128 that is 32 MB of L2 reads per layer.
// ``ATTNFUSED_CUDA_FC_GATE=0`` (attnfused/kernels/extension.py) sends the gate back to F.linear
// and aten's elementwise ops, to time the two against each other.
#include "../entry.h"
#include "common.cuh"

namespace attnfused {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRows = 4;  // rows (samples) a warp / thread carries through one pass over the weights

template <typename acc_t> __device__ __forceinline__ acc_t exp_of(acc_t v);
template <> __device__ __forceinline__ float exp_of<float>(float v) { return expf(v); }
template <> __device__ __forceinline__ double exp_of<double>(double v) { return exp(v); }

// act(h): relu or silu (h / (1 + e^-h), as aten writes it).
template <typename acc_t>
__device__ __forceinline__ acc_t act_fn(acc_t h, int act) {
  if (act == kActRelu) return h < acc_t(0) ? acc_t(0) : h;  // NaN stays NaN, as in F.relu
  return h / (acc_t(1) + exp_of(-h));
}

// act'(h) * d, eager's conventions: relu' as aten's threshold_backward(d, h, 0) (0 where h <= 0,
// not NaN for an infinite d); silu' = s (1 + h (1 - s)), s = sigmoid(h).
template <typename acc_t>
__device__ __forceinline__ acc_t act_backward(acc_t d, acc_t h, int act) {
  if (act == kActRelu) return h <= acc_t(0) ? acc_t(0) : d;
  const acc_t s = acc_t(1) / (acc_t(1) + exp_of(-h));
  return d * (s * (acc_t(1) + h * (acc_t(1) - s)));
}

template <typename acc_t>
__device__ __forceinline__ acc_t gate_of(acc_t z, int gate) {
  if (gate == kGateSigmoid) return acc_t(1) / (acc_t(1) + exp_of(-z));
  const acc_t t = z + acc_t(3);
  return (t < acc_t(0) ? acc_t(0) : (t > acc_t(6) ? acc_t(6) : t)) / acc_t(6);  // relu6(z + 3) / 6
}

// dz from dca: sigmoid' = ca (1 - ca) (aten's sigmoid_backward: dca (1 - ca) ca); hard sigmoid' =
// [-3 < z < 3] / 6.
template <typename acc_t>
__device__ __forceinline__ acc_t dz_of(const FcGateArgs<acc_t>& a, const acc_t* dca, const acc_t* z, const acc_t* ca,
                                       int64_t i) {
  if (a.gate == kGateSigmoid) return dca[i] * (acc_t(1) - ca[i]) * ca[i];
  return z[i] > acc_t(-3) && z[i] < acc_t(3) ? dca[i] / acc_t(6) : acc_t(0);
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// out[k] = sum_i row(k, i) * wrow[i] over i < len for the first ``rows`` (<= kRows) of a group, by
// one warp: lanes stride i (wrow coalesced), then a shuffle tree per row; the whole warp holds the
// sums. One pass over wrow serves all the group's rows.
template <typename acc_t, typename Row>
__device__ __forceinline__ void warp_dots(const acc_t* wrow, int64_t len, int64_t lane, int64_t rows, const Row& row,
                                          acc_t (&out)[kRows]) {
#pragma unroll
  for (int k = 0; k < kRows; ++k) out[k] = 0;
  for (int64_t i = lane; i < len; i += 32) {
    const acc_t wv = wrow[i];
#pragma unroll
    for (int k = 0; k < kRows; ++k)
      if (k < rows) out[k] += row(k, i) * wv;
  }
#pragma unroll
  for (int k = 0; k < kRows; ++k) out[k] = warp_sum(out[k]);
}

inline unsigned blocks_for(int64_t threads) {
  return static_cast<unsigned>(std::max<int64_t>(1, cdiv(threads, kThreads)));
}

// h[j, r] = b1[r] + s[j] . W1[r]; act[j, r] = act(h[j, r]). Warp w: r = w % R, rows 4 (w / R) ...
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) hidden_kernel(FcGateArgs<acc_t> a, acc_t* h, acc_t* act) {
  const int64_t J = a.n * a.B, groups = cdiv(J, kRows), lane = threadIdx.x % 32;
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (w >= a.R * groups) return;  // whole warps leave together
  const int64_t r = w % a.R, j0 = (w / a.R) * kRows;
  acc_t acc[kRows];
  warp_dots(a.w1 + r * a.C, a.C, lane, J - j0, [&](int k, int64_t c) { return a.s[(j0 + k) * a.C + c]; }, acc);
#pragma unroll
  for (int k = 0; k < kRows; ++k) {
    const acc_t v = acc[k] + (a.b1 ? a.b1[r] : acc_t(0));
    if (lane == 0 && j0 + k < J) {
      h[(j0 + k) * a.R + r] = v;
      act[(j0 + k) * a.R + r] = act_fn(v, a.act);
    }
  }
}

// z[b, c] = n b2[c] + sum_i act[i B + b] . W2[c]; ca = gate_fn(z). Warp w: c = w % C, samples 4 (w / C) ...
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) logits_kernel(FcGateArgs<acc_t> a, const acc_t* act, acc_t* z, acc_t* ca) {
  const int64_t groups = cdiv(a.B, kRows), lane = threadIdx.x % 32;
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (w >= a.C * groups) return;
  const int64_t c = w % a.C, b0 = (w / a.C) * kRows;
  acc_t acc[kRows];
  warp_dots(a.w2 + c * a.R, a.R, lane, a.B - b0, [&](int k, int64_t r) {
    acc_t v = 0;  // the stacked statistics' activations, summed
    for (int64_t i = 0; i < a.n; ++i) v += act[(i * a.B + b0 + k) * a.R + r];
    return v;
  }, acc);
#pragma unroll
  for (int k = 0; k < kRows; ++k) {
    const acc_t v = acc[k] + (a.b2 ? static_cast<acc_t>(a.n) * a.b2[c] : acc_t(0));
    if (lane == 0 && b0 + k < a.B) {
      z[(b0 + k) * a.C + c] = v;
      ca[(b0 + k) * a.C + c] = gate_of(v, a.gate);
    }
  }
}

// Backward 1. dr[b, r] = sum_c dz[b, c] W2[c, r]; dh[i B + b, r] = act'(h) dr; afold[b, r] = sum_i
// act(h[i B + b, r]) (for dW2). CTA (r tile of 32 = the lanes, 4 samples); warp w takes c = w, w + 8, ...
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) hidden_grad_kernel(FcGateArgs<acc_t> a, FcGateGrads<acc_t> g) {
  __shared__ acc_t part[kWarps][kRows][32];
  const int64_t r_tiles = cdiv(a.R, 32);
  const int64_t r = (blockIdx.x % r_tiles) * 32 + threadIdx.x % 32, b0 = (blockIdx.x / r_tiles) * kRows;
  const int warp = threadIdx.x / 32;
  acc_t acc[kRows] = {};
  if (r < a.R)
    for (int64_t c = warp; c < a.C; c += kWarps) {
      const acc_t wv = a.w2[c * a.R + r];
#pragma unroll
      for (int k = 0; k < kRows; ++k)
        if (b0 + k < a.B) acc[k] += dz_of(a, g.dca, g.z, g.ca, (b0 + k) * a.C + c) * wv;
    }
#pragma unroll
  for (int k = 0; k < kRows; ++k) part[warp][k][threadIdx.x % 32] = acc[k];
  __syncthreads();
  if (threadIdx.x >= kRows * 32) return;
  const int64_t k = threadIdx.x / 32, b = b0 + k;
  if (r >= a.R || b >= a.B) return;
  acc_t dr = 0;
  for (int w = 0; w < kWarps; ++w) dr += part[w][k][threadIdx.x % 32];
  acc_t fold = 0;
  for (int64_t i = 0; i < a.n; ++i) {
    const int64_t e = (i * a.B + b) * a.R + r;
    const acc_t hv = g.h[e];
    g.dh[e] = act_backward(dr, hv, a.act);
    fold += act_fn(hv, a.act);
  }
  g.afold[b * a.R + r] = fold;
}

// Backward 2, three independent jobs in one grid (blocks [0, n2) | [n2, n2 + n1) | the rest):
//   dW2[c, r] = sum_b dz[b, c] afold[b, r], db2[c] = n sum_b dz[b, c]   thread per (c, r)
//   dW1[r, c] = sum_j dh[j, r] s[j, c],     db1[r] = sum_j dh[j, r]     thread per (r, c)
//   ds[j, c]  = sum_r dh[j, r] W1[r, c]                                 thread per (4 rows, c)
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) weight_grad_kernel(FcGateArgs<acc_t> a, FcGateGrads<acc_t> g,
                                                               int64_t blocks_w2, int64_t blocks_w1) {
  const int64_t J = a.n * a.B;
  int64_t blk = blockIdx.x;
  if (blk < blocks_w2) {
    const int64_t e = blk * kThreads + threadIdx.x;
    if (e >= a.C * a.R) return;
    const int64_t c = e / a.R, r = e % a.R;
    acc_t s = 0, dsum = 0;
    for (int64_t b = 0; b < a.B; ++b) {
      const acc_t d = dz_of(a, g.dca, g.z, g.ca, b * a.C + c);
      s += d * g.afold[b * a.R + r];
      dsum += d;
    }
    g.dw2[e] = s;
    if (g.db2 && r == 0) g.db2[c] = dsum * static_cast<acc_t>(a.n);
    return;
  }
  blk -= blocks_w2;
  if (blk < blocks_w1) {
    const int64_t e = blk * kThreads + threadIdx.x;
    if (e >= a.R * a.C) return;
    const int64_t r = e / a.C, c = e % a.C;
    acc_t s = 0, dsum = 0;
    for (int64_t j = 0; j < J; ++j) {
      const acc_t d = g.dh[j * a.R + r];
      s += d * a.s[j * a.C + c];
      dsum += d;
    }
    g.dw1[e] = s;
    if (g.db1 && c == 0) g.db1[r] = dsum;
    return;
  }
  blk -= blocks_w1;
  const int64_t e = blk * kThreads + threadIdx.x;
  if (e >= cdiv(J, kRows) * a.C) return;
  const int64_t c = e % a.C, j0 = (e / a.C) * kRows;
  acc_t acc[kRows] = {};
  for (int64_t r = 0; r < a.R; ++r) {
    const acc_t wv = a.w1[r * a.C + c];
#pragma unroll
    for (int k = 0; k < kRows; ++k)
      if (j0 + k < J) acc[k] += g.dh[(j0 + k) * a.R + r] * wv;
  }
#pragma unroll
  for (int k = 0; k < kRows; ++k)
    if (j0 + k < J) g.ds[(j0 + k) * a.C + c] = acc[k];
}

}  // namespace

template <typename acc_t>
void fc_gate(const FcGateArgs<acc_t>& a, acc_t* h, acc_t* act, acc_t* z, acc_t* ca, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const int64_t J = a.n * a.B;
  if (J == 0) return;
  launch_kernel(hidden_kernel<acc_t>, dim3(blocks_for(a.R * cdiv(J, kRows) * 32)), dim3(kThreads), 0, st, a, h, act);
  launch_kernel(logits_kernel<acc_t>, dim3(blocks_for(a.C * cdiv(a.B, kRows) * 32)), dim3(kThreads), 0, st, a,
                static_cast<const acc_t*>(act), z, ca);
}

template <typename acc_t>
void fc_gate_backward(const FcGateArgs<acc_t>& a, const FcGateGrads<acc_t>& g, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const int64_t J = a.n * a.B;
  if (J > 0)
    launch_kernel(hidden_grad_kernel<acc_t>, dim3(static_cast<unsigned>(cdiv(a.R, 32) * cdiv(a.B, kRows))),
                  dim3(kThreads), 0, st, a, g);
  // With B = 0 the weight gradients are sums of nothing: the first two jobs write zeros.
  const int64_t blocks_w = cdiv(a.C * a.R, kThreads), blocks_ds = cdiv(cdiv(J, kRows) * a.C, kThreads);
  if (blocks_w * 2 + blocks_ds > 0)
    launch_kernel(weight_grad_kernel<acc_t>, dim3(static_cast<unsigned>(blocks_w * 2 + blocks_ds)), dim3(kThreads), 0,
                  st, a, g, blocks_w, blocks_w);
}

template void fc_gate<float>(const FcGateArgs<float>&, float*, float*, float*, float*, void*);
template void fc_gate<double>(const FcGateArgs<double>&, double*, double*, double*, double*, void*);
template void fc_gate_backward<float>(const FcGateArgs<float>&, const FcGateGrads<float>&, void*);
template void fc_gate_backward<double>(const FcGateArgs<double>&, const FcGateGrads<double>&, void*);

}  // namespace cuda
}  // namespace attnfused
