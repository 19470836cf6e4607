// CUDA scale (forward y) and grad_input (backward dx): one thread per output element, walked in
// the output's memory order (coalesced stores; loads coalesce whenever ``a`` shares the layout),
// grid-stride so that a few waves of CTAs cover any size with 64-bit indices.
#include "../entry.h"
#include "common.cuh"

namespace attnfused {
namespace cuda {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(256) pointwise_kernel(PointwiseArgs<acc_t> w, bool c_fast) {
  const int64_t total = w.B * w.C * w.P;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  scalar_t* out = static_cast<scalar_t*>(w.out);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total; i += stride) {
    int64_t b, c, p;
    if (c_fast) {
      c = i % w.C;
      const int64_t rest = i / w.C;
      p = rest % w.P;
      b = rest / w.P;
    } else {
      p = i % w.P;
      const int64_t rest = i / w.P;
      c = rest % w.C;
      b = rest / w.C;
    }
    const acc_t v = ld<scalar_t, acc_t>(w.a.data, b * w.a.sb + c * w.a.sc + p * w.a.sp);
    const acc_t y = pointwise_value(v, w.t, w.ca_first, w.round_x1, b * w.C + c, b * w.P + p, c, p,
                                    [](acc_t u) { return round_to<scalar_t, acc_t>(u); });
    out[b * w.ob + c * w.oc + p * w.op] = Cvt<scalar_t>::from(y);
  }
}

template <typename scalar_t, typename acc_t>
void launch(const PointwiseArgs<acc_t>& w, cudaStream_t stream) {
  const int64_t total = w.B * w.C * w.P;
  const int64_t waves = static_cast<int64_t>(sm_count()) * 8;  // 8 CTAs of 256 threads per SM
  const int64_t blocks = std::max<int64_t>(1, std::min(cdiv(total, 256), waves));
  launch_kernel(pointwise_kernel<scalar_t, acc_t>, static_cast<unsigned>(blocks), 256, 0, stream, w, w.oc < w.op);
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
