// CUDA scale (forward y) and grad_input (backward dx): one read of ``a``, one write of ``out``.
//
// Two kernels, chosen per call:
//   vector  - ``a`` and ``out`` dense in the same layout (NCHW or channels_last) and 16-byte
//             aligned: each thread moves 16 bytes (4 fp32, 8 fp16/bf16, 2 fp64) with one load and
//             one store, walking memory order; (b, c, p) is decoded once per vector (two divisions,
//             32-bit below 2^31 elements) and then stepped along the vector.
//   generic  - any other strides (``a`` in another layout than ``out``, expanded, sliced): one
//             element per thread in ``out``'s memory order, the index decoded per element.
// Both grid-stride over a few waves of CTAs, so any size runs with a bounded grid. The small terms
// ([B, C] / [B, P]) are gathered per element; they stay in L1/L2.
#include "../entry.h"
#include "common.cuh"

namespace attnfused {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t value_at(const PointwiseArgs<acc_t>& w, acc_t v, int64_t b, int64_t c, int64_t p) {
  return pointwise_value(v, w.t, w.ca_first, w.round_x1, b * w.C + c, b * w.P + p, c, p,
                         [](acc_t u) { return round_to<scalar_t, acc_t>(u); });
}

// Memory order of both tensors: C_FAST (channels_last) i = (b*P + p)*C + c, else i = (b*C + c)*P + p.
template <typename scalar_t, typename acc_t, typename index_t, bool C_FAST>
__global__ void __launch_bounds__(kThreads) pointwise_vector_kernel(PointwiseArgs<acc_t> w, index_t total) {
  using P8 = Pack<scalar_t>;
  constexpr int kN = P8::kN;
  const index_t L = static_cast<index_t>(C_FAST ? w.C : w.P);  // the unit-stride axis
  const index_t K = static_cast<index_t>(C_FAST ? w.P : w.C);
  const auto* in = static_cast<const scalar_t*>(w.a.data);
  auto* out = static_cast<scalar_t*>(w.out);
  const index_t n_vec = (total + kN - 1) / kN;
  const index_t stride = static_cast<index_t>(gridDim.x) * kThreads;
  for (index_t v = static_cast<index_t>(blockIdx.x) * kThreads + threadIdx.x; v < n_vec; v += stride) {
    const index_t i0 = v * kN;
    const index_t r = i0 / L;
    index_t l = i0 - r * L;
    index_t b = r / K;
    index_t k = r - b * K;
    // Element e of the vector at (b, c, p), then a step to the next row (and sample) along memory
    // order. Only elements inside the tensor are computed: past its end, b would index the small
    // terms out of bounds.
    auto element = [&](scalar_t a) {
      const int64_t c = C_FAST ? l : k, p = C_FAST ? k : l;
      const scalar_t y = Cvt<scalar_t>::from(value_at<scalar_t, acc_t>(w, Cvt<scalar_t>::to(a), b, c, p));
      if (++l == L) {
        l = 0;
        if (++k == K) {
          k = 0;
          ++b;
        }
      }
      return y;
    };
    if (i0 + kN <= total) {
      const P8 src = load_full(reinterpret_cast<const P8*>(in + i0));
      P8 dst;
#pragma unroll
      for (int e = 0; e < kN; ++e) dst.v[e] = element(src.v[e]);
      store_full(reinterpret_cast<P8*>(out + i0), dst);
    } else {  // the last vector of a tensor whose size is not a multiple of kN
      for (index_t i = i0; i < total; ++i) store_full(out + i, element(load_full(in + i)));
    }
  }
}

template <typename scalar_t, typename acc_t, typename index_t>
__global__ void __launch_bounds__(kThreads) pointwise_generic_kernel(PointwiseArgs<acc_t> w, bool c_fast) {
  const index_t total = static_cast<index_t>(w.B * w.C * w.P);
  const index_t C = static_cast<index_t>(w.C), P = static_cast<index_t>(w.P);
  const index_t stride = static_cast<index_t>(gridDim.x) * kThreads;
  scalar_t* out = static_cast<scalar_t*>(w.out);
  for (index_t i = static_cast<index_t>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    index_t b, c, p;
    if (c_fast) {
      c = i % C;
      const index_t rest = i / C;
      p = rest % P;
      b = rest / P;
    } else {
      p = i % P;
      const index_t rest = i / P;
      c = rest % C;
      b = rest / C;
    }
    const int64_t b64 = b, c64 = c, p64 = p;
    const acc_t v = ld<scalar_t, acc_t>(w.a.data, b64 * w.a.sb + c64 * w.a.sc + p64 * w.a.sp);
    store_full(out + (b64 * w.ob + c64 * w.oc + p64 * w.op), Cvt<scalar_t>::from(value_at<scalar_t, acc_t>(w, v, b64, c64, p64)));
  }
}

// Whether ``a`` and ``out`` are dense in one and the same layout; ``c_fast`` says which.
template <typename acc_t>
bool same_dense_layout(const PointwiseArgs<acc_t>& w, bool* c_fast) {
  const View& a = w.a;
  if (a.sb != w.ob || a.sc != w.oc || a.sp != w.op) return false;
  if (w.op == 1 && w.oc == w.P && w.ob == w.C * w.P) {
    *c_fast = false;
    return true;
  }
  if (w.oc == 1 && w.op == w.C && w.ob == w.C * w.P) {
    *c_fast = true;
    return true;
  }
  return false;
}

template <typename scalar_t, typename acc_t>
void launch(const PointwiseArgs<acc_t>& w, cudaStream_t stream) {
  const int64_t total = w.B * w.C * w.P;
  const int64_t waves = static_cast<int64_t>(sm_count()) * 8;  // 8 CTAs of 256 threads per SM
  const bool index32 = total <= int64_t{INT32_MAX} - 64;  // 32-bit index math (with room for a vector)
  bool c_fast = w.oc < w.op;
  if (vectors_enabled() && same_dense_layout(w, &c_fast) && aligned16(w.a.data) && aligned16(w.out)) {
    constexpr int kN = Pack<scalar_t>::kN;
    const unsigned blocks = static_cast<unsigned>(std::max<int64_t>(1, std::min(cdiv(cdiv(total, kN), kThreads), waves)));
    if (index32) {
      const auto n = static_cast<uint32_t>(total);
      c_fast ? launch_kernel(pointwise_vector_kernel<scalar_t, acc_t, uint32_t, true>, blocks, kThreads, 0, stream, w, n)
             : launch_kernel(pointwise_vector_kernel<scalar_t, acc_t, uint32_t, false>, blocks, kThreads, 0, stream, w, n);
    } else {
      const auto n = static_cast<uint64_t>(total);
      c_fast ? launch_kernel(pointwise_vector_kernel<scalar_t, acc_t, uint64_t, true>, blocks, kThreads, 0, stream, w, n)
             : launch_kernel(pointwise_vector_kernel<scalar_t, acc_t, uint64_t, false>, blocks, kThreads, 0, stream, w, n);
    }
    return;
  }
  const unsigned blocks = static_cast<unsigned>(std::max<int64_t>(1, std::min(cdiv(total, kThreads), waves)));
  if (index32) {
    launch_kernel(pointwise_generic_kernel<scalar_t, acc_t, uint32_t>, blocks, kThreads, 0, stream, w, c_fast);
  } else {
    launch_kernel(pointwise_generic_kernel<scalar_t, acc_t, uint64_t>, blocks, kThreads, 0, stream, w, c_fast);
  }
}

}  // namespace

template <typename acc_t>
void pointwise(DType dt, const PointwiseArgs<acc_t>& w, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if constexpr (std::is_same_v<acc_t, double>) {
    launch<double, double>(w, s);
  } else {
    switch (dt) {
      case DType::kF32: launch<float, float>(w, s); break;
      case DType::kF16: launch<__half, float>(w, s); break;
      case DType::kBF16: launch<__nv_bfloat16, float>(w, s); break;
      default: break;
    }
  }
}

template void pointwise<float>(DType, const PointwiseArgs<float>&, void*);
template void pointwise<double>(DType, const PointwiseArgs<double>&, void*);

}  // namespace cuda
}  // namespace attnfused
