// CUDA convolution of the gates' small maps: one output channel, M input maps, a kh x kw kernel,
// zero padding (CBAM's 7x7 spatial conv over [max_C, mean_C]; ECA's 1-D conv over channels as
// 1 x k). Same contract and summation order per element as the CPU version (csrc/cpu/gate_conv.cpp).
//
// Why not cuDNN: these convolutions have 1-2 input channels and one output channel, a shape its
// algorithms are not built for, and each direction is several launches (the weight gradient's
// reduction among them) on maps of a few hundred KB. Here each direction is what the math needs:
//   forward         one thread per output element (M*kh*kw multiply-adds, weights in L1);
//   d maps          one thread per input element gathering dz through the kernel: no atomics;
//   d weight, bias  a CTA per (tap, chunk of 8192 (b, i, j) products) reducing in a fixed tree,
//                   then one thread per tap adding its chunks in order: deterministic.
// The maps are small (B x M x H x W in the accumulation dtype): none of this is full-size traffic.
// ``ATTNFUSED_CUDA_GATE_CONV=0`` (attnfused/kernels/extension.py) sends the "cuda" provider's gates
// back to F.conv*d, to time the two against each other.
#include "../entry.h"
#include "common.cuh"

namespace attnfused {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kChunk = 8192;  // (b, i, j) products one CTA of the weight gradient reduces

// A grid of at most ~1M CTAs; the kernels stride over whatever is left.
inline unsigned grid_for(int64_t n) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(cdiv(n, kThreads), int64_t{1} << 20)));
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads) forward_kernel(GateConvArgs<acc_t> a, acc_t* out) {
  const int64_t n = a.B * a.Ho * a.Wo;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; o < n;
       o += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t j = o % a.Wo, r = o / a.Wo, i = r % a.Ho, b = r / a.Ho;
    acc_t z = 0;
    for (int64_t m = 0; m < a.M; ++m)
      for (int64_t di = 0; di < a.kh; ++di) {
        const int64_t ii = i + di - a.ph;
        if (ii < 0 || ii >= a.H) continue;
        const acc_t* in = a.in + ((b * a.M + m) * a.H + ii) * a.W;
        const acc_t* wr = a.weight + (m * a.kh + di) * a.kw;
        for (int64_t dj = 0; dj < a.kw; ++dj) {
          const int64_t jj = j + dj - a.pw;
          if (jj >= 0 && jj < a.W) z += wr[dj] * in[jj];
        }
      }
    if (a.bias) z += a.bias[0];
    out[o] = z;
  }
}

// din[b, m, ii, jj] = sum over the taps (di, dj) whose output (ii - di + ph, jj - dj + pw) exists.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) backward_input_kernel(GateConvArgs<acc_t> a, const acc_t* dz, acc_t* din) {
  const int64_t n = a.B * a.M * a.H * a.W;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t jj = e % a.W, r = e / a.W, ii = r % a.H, plane = r / a.H, m = plane % a.M, b = plane / a.M;
    acc_t s = 0;
    for (int64_t di = 0; di < a.kh; ++di) {
      const int64_t i = ii - di + a.ph;
      if (i < 0 || i >= a.Ho) continue;
      const acc_t* g = dz + (b * a.Ho + i) * a.Wo;
      const acc_t* wr = a.weight + (m * a.kh + di) * a.kw;
      for (int64_t dj = 0; dj < a.kw; ++dj) {
        const int64_t j = jj - dj + a.pw;
        if (j >= 0 && j < a.Wo) s += wr[dj] * g[j];
      }
    }
    din[e] = s;
  }
}

// parts[t * chunks + chunk]: tap t's (t == taps: the bias's) products over one chunk of the
// (b, i, j) range; CTA blockIdx.x = t * chunks + chunk (one grid axis: a large kernel's taps
// could pass gridDim.y's 65535). Threads take the chunk's products in strides of kThreads
// (coalesced dz and maps reads), then a shuffle tree per warp and the warps in order.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) backward_weight_kernel(GateConvArgs<acc_t> a, const acc_t* dz, acc_t* parts,
                                                                   int64_t chunks) {
  __shared__ acc_t warp_sums[kWarps];
  const int64_t taps = a.M * a.kh * a.kw, t = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int64_t n = a.B * a.Ho * a.Wo, o0 = chunk * kChunk, o1 = o0 + kChunk < n ? o0 + kChunk : n;
  const int64_t dj = t % a.kw, di = (t / a.kw) % a.kh, m = t / (a.kw * a.kh);
  acc_t s = 0;
  for (int64_t o = o0 + threadIdx.x; o < o1; o += kThreads) {
    if (t == taps) {
      s += dz[o];
      continue;
    }
    const int64_t j = o % a.Wo, r = o / a.Wo, i = r % a.Ho, b = r / a.Ho;
    const int64_t ii = i + di - a.ph, jj = j + dj - a.pw;
    if (ii >= 0 && ii < a.H && jj >= 0 && jj < a.W) s += dz[o] * a.in[((b * a.M + m) * a.H + ii) * a.W + jj];
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    acc_t total = 0;
    for (int w = 0; w < kWarps; ++w) total += warp_sums[w];
    parts[t * chunks + chunk] = total;
  }
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads) combine_kernel(const acc_t* parts, int64_t chunks, int64_t taps,
                                                           acc_t* dweight, acc_t* dbias) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (t > taps || (t == taps && !dbias)) return;
  acc_t s = 0;
  for (int64_t c = 0; c < chunks; ++c) s += parts[t * chunks + c];
  (t == taps ? dbias[0] : dweight[t]) = s;
}

}  // namespace

int64_t gate_conv_weight_chunks(int64_t outputs) { return cdiv(outputs, kChunk); }

template <typename acc_t>
void gate_conv(const GateConvArgs<acc_t>& a, acc_t* out, void* stream) {
  const int64_t n = a.B * a.Ho * a.Wo;
  if (n == 0) return;
  launch_kernel(forward_kernel<acc_t>, dim3(grid_for(n)), dim3(kThreads), 0, static_cast<cudaStream_t>(stream), a, out);
}

template <typename acc_t>
void gate_conv_backward(const GateConvArgs<acc_t>& a, const acc_t* dz, acc_t* din, acc_t* dweight, acc_t* dbias,
                        acc_t* parts, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t n_in = a.B * a.M * a.H * a.W, n = a.B * a.Ho * a.Wo;
  const int64_t taps = a.M * a.kh * a.kw, chunks = gate_conv_weight_chunks(n);
  if (n_in > 0) launch_kernel(backward_input_kernel<acc_t>, dim3(grid_for(n_in)), dim3(kThreads), 0, s, a, dz, din);
  const int64_t rows = taps + (dbias ? 1 : 0);
  if (chunks > 0)
    launch_kernel(backward_weight_kernel<acc_t>, dim3(static_cast<unsigned>(chunks * rows)), dim3(kThreads), 0, s, a,
                  dz, parts, chunks);
  // With no products (B = 0) the sums are zero: combine adds no chunks.
  launch_kernel(combine_kernel<acc_t>, dim3(static_cast<unsigned>(cdiv(taps + 1, kThreads))), dim3(kThreads), 0, s,
                static_cast<const acc_t*>(parts), chunks, taps, dweight, dbias);
}

template void gate_conv<float>(const GateConvArgs<float>&, float*, void*);
template void gate_conv<double>(const GateConvArgs<double>&, double*, void*);
template void gate_conv_backward<float>(const GateConvArgs<float>&, const float*, float*, float*, float*, float*,
                                        void*);
template void gate_conv_backward<double>(const GateConvArgs<double>&, const double*, double*, double*, double*, double*,
                                         void*);

}  // namespace cuda
}  // namespace attnfused
