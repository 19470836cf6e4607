// The block forwards' stages on CPU, sample by sample: SE's and ECA's (pool_hw, the channel gate,
// scale) and CBAM's spatial one (pool_c of x*ca, maps, conv, gate, scale). Run as separate
// whole-batch passes, the pool and the scale each stream x from L3 or DRAM. Here the passes run on
// one sample back to back, so that the scale re-reads what the pool has just brought into cache:
// a task owns whole samples (1.6 MB at 512 x 28 x 28 fp32: it fits a core's 2 MB L2 on the Intel
// dev VM), or, for SE / ECA with samples larger than that, each sample is split over the threads by
// channel ("shared"; a thread's share of a 3.2 MB 256 x 56 x 56 sample then fits). SE's and ECA's
// stage pays only where re-reading from L2 beats L3 by far: Intel CPUs (the rule and its
// measurements: channel_stage_schedule in attnfused/kernels/extension.py). Each pass is the
// whole-batch kernel called on a slice (at::parallel_for inside a parallel region runs inline), so
// the arithmetic, and the result, are those of the separate passes; the channel gate is the
// caller's (ops.cpp, channel_gate_one). CBAM's spatial stage split the same way (its pool over C
// as partial sums per thread, added after) gained 4-5% forward at 8 x 256 x 56^2 on the Intel VM
// and lost 1-2% forward + backward: not kept.
#include <algorithm>
#include <cmath>

#include "../entry.h"
#include "common.h"

namespace attnfused {
namespace cpu {
namespace {

// A View of sample b from channel c0 on.
View at_channels(View v, int64_t b, int64_t c0, size_t bytes) {
  v.data = static_cast<const char*>(v.data) + (b * v.sb + c0 * v.sc) * static_cast<int64_t>(bytes);
  return v;
}

// Sample b's pool over P of channels [c0, c1) (the pool's outputs [B, C] stay in place).
template <typename acc_t>
void pool_channels(DType dt, const ReduceArgs<acc_t>& pool, int64_t b, int64_t c0, int64_t c1) {
  ReduceArgs<acc_t> r = pool;
  const int64_t at = b * pool.C + c0;
  r.B = 1;
  r.C = c1 - c0;
  r.a = r.x = at_channels(pool.a, b, c0, static_cast<size_t>(dtype_size(dt)));
  r.out_sum += at;
  if (r.out_max) r.out_max += at;
  if (r.out_arg) r.out_arg += at;
  reduce_hw(dt, r);
}

// Sample b's scale of channels [c0, c1) (t.ca: the channel gate [B, C] or null; ``sa``: the
// sample's spatial gate row, or null).
template <typename acc_t>
void scale_channels(DType dt, const PointwiseArgs<acc_t>& scale, int64_t b, int64_t c0, int64_t c1, const acc_t* sa) {
  const int64_t bytes = dtype_size(dt);
  PointwiseArgs<acc_t> w = scale;
  w.B = 1;
  w.C = c1 - c0;
  w.a = at_channels(scale.a, b, c0, static_cast<size_t>(bytes));
  w.out = static_cast<char*>(scale.out) + (b * scale.ob + c0 * scale.oc) * bytes;
  if (w.t.ca) w.t.ca += b * scale.C + c0;
  if (sa) w.t.sa = sa;
  pointwise(dt, w);
}

// The channels split into ``n`` parts of at least the kernels' grain for the shared schedule: part i
// is [begin(i), begin(i + 1)). for_parts runs ``f(c0, c1)`` with one part per thread (n = the
// thread count at most), so every loop over the same parts gives each thread the same channels, in
// either layout (the kernels' own splits would not: the scale of channels_last rows goes by
// position).
struct Parts {
  int64_t n, C;
  int64_t begin(int64_t i) const { return C * i / n; }
};

Parts split_channels(int64_t C, int64_t P) {
  const int64_t parts = std::min<int64_t>(at::get_num_threads(), C / grain_for(P));
  return {std::max<int64_t>(1, parts), C};
}

template <typename F>
void for_parts(const Parts& parts, const F& f) {
  at::parallel_for(0, parts.n, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) f(parts.begin(i), parts.begin(i + 1));
  });
}

// Sample b's maps (from its pool over C: mean in pool.out_sum, max in pool.out_max), conv and
// spatial gate; returns the gate's row.
template <typename acc_t>
const acc_t* spatial_gate(const ReduceArgs<acc_t>& pool, const GateConvArgs<acc_t>& conv, SpatialStageSpec spec,
                          acc_t* maps, acc_t* z, acc_t* sa, int64_t b) {
  const int64_t P = pool.P, M = conv.M;
  const acc_t* mean = pool.out_sum + b * P;
  const acc_t* mx = pool.out_max + b * P;
  acc_t* mb = maps + b * M * P;
  for (int64_t p = 0; p < P; ++p) {
    if (spec.maps == 2) {
      mb[p] = acc_t(0.5) * (mean[p] + mx[p]);
    } else {
      mb[p] = spec.maps == 0 ? mx[p] : mean[p];
      mb[P + p] = spec.maps == 0 ? mean[p] : mx[p];
    }
  }
  GateConvArgs<acc_t> g = conv;
  g.B = 1;
  g.in = mb;
  acc_t* zb = z + b * P;
  gate_conv(g, zb);
  acc_t* sb = sa + b * P;
  for (int64_t p = 0; p < P; ++p) {
    const acc_t v = zb[p];
    sb[p] = spec.hard ? std::min(std::max(v + acc_t(3), acc_t(0)), acc_t(6)) / acc_t(6)
                      : acc_t(1) / (acc_t(1) + std::exp(-v));
  }
  return sb;
}

}  // namespace

template <typename acc_t>
void channel_stage(DType dt, const ChannelPart<acc_t>& channel, const PointwiseArgs<acc_t>& scale, bool shared) {
  const int64_t C = scale.C;
  if (shared) {
    const Parts parts = split_channels(C, scale.P);
    for (int64_t b = 0; b < scale.B; ++b) {
      for_parts(parts, [&](int64_t c0, int64_t c1) { pool_channels(dt, channel.pool, b, c0, c1); });
      channel.gate(channel.gate_ctx, b);
      for_parts(parts, [&](int64_t c0, int64_t c1) { scale_channels<acc_t>(dt, scale, b, c0, c1, nullptr); });
    }
    return;
  }
  at::parallel_for(0, scale.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      pool_channels(dt, channel.pool, b, 0, C);
      channel.gate(channel.gate_ctx, b);
      scale_channels<acc_t>(dt, scale, b, 0, C, nullptr);
    }
  });
}

template <typename acc_t>
void spatial_stage(DType dt, const ReduceArgs<acc_t>& pool, const GateConvArgs<acc_t>& conv,
                   const PointwiseArgs<acc_t>& scale, SpatialStageSpec spec, acc_t* maps, acc_t* z, acc_t* sa,
                   const ChannelPart<acc_t>* channel) {
  const int64_t C = pool.C, P = pool.P;
  at::parallel_for(0, pool.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      if (channel) {
        pool_channels(dt, channel->pool, b, 0, channel->pool.C);
        channel->gate(channel->gate_ctx, b);
      }
      ReduceArgs<acc_t> r = pool;  // max and mean over C of x*ca (mean: out_sum / divisor)
      r.B = 1;
      r.a = r.x = at_channels(pool.a, b, 0, static_cast<size_t>(dtype_size(dt)));
      if (r.t.ca) r.t.ca += b * C;
      r.out_sum += b * P;
      r.out_max += b * P;
      if (r.out_arg) r.out_arg += b * P;
      reduce_c(dt, r);
      scale_channels(dt, scale, b, 0, C, spatial_gate(pool, conv, spec, maps, z, sa, b));
    }
  });
}

template void channel_stage<float>(DType, const ChannelPart<float>&, const PointwiseArgs<float>&, bool);
template void channel_stage<double>(DType, const ChannelPart<double>&, const PointwiseArgs<double>&, bool);
template void spatial_stage<float>(DType, const ReduceArgs<float>&, const GateConvArgs<float>&,
                                   const PointwiseArgs<float>&, SpatialStageSpec, float*, float*, float*,
                                   const ChannelPart<float>*);
template void spatial_stage<double>(DType, const ReduceArgs<double>&, const GateConvArgs<double>&,
                                    const PointwiseArgs<double>&, SpatialStageSpec, double*, double*, double*,
                                    const ChannelPart<double>*);

}  // namespace cpu
}  // namespace attnfused
