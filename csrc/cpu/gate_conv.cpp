// CPU convolution of the gates' small maps: one output channel, M input maps, a kh x kw kernel with
// zero padding (CBAM's 7x7 spatial conv over [max_C, mean_C]; ECA's 1-D conv as 1 x k). oneDNN
// and ATen's generic path are tuned for many channels: on these 1-2 channel maps they took
// 0.5-0.7 ms forward and 2-4 ms backward at 8 x 56 x 56, more than a copy of the 26 MB input.
// Here every inner loop runs along a row of W, unit stride, branch-free (vectorised); sums run in
// a fixed order (deterministic), in the maps' dtype (float, or double for fp64 inputs).
#include <vector>

#include "../entry.h"
#include "common.h"

namespace attnfused {
namespace cpu {
namespace {

template <typename acc_t>
struct Geometry {
  int64_t j0, j1;  // output columns [j0, j1) whose input column j + dj - pw is in [0, W)
  Geometry(const GateConvArgs<acc_t>& a, int64_t dj)
      : j0(std::max<int64_t>(0, a.pw - dj)), j1(std::min<int64_t>(a.Wo, a.W + a.pw - dj)) {}
};

template <typename acc_t>
void forward(const GateConvArgs<acc_t>& a, acc_t* out) {
  at::parallel_for(0, a.B * a.Ho, grain_for(a.Wo * a.M * a.kh * a.kw), [&](int64_t begin, int64_t end) {
    for_rows(begin, end, a.Ho, [&](int64_t row, int64_t b, int64_t i) {
      acc_t* z = out + row * a.Wo;
      for (int64_t j = 0; j < a.Wo; ++j) z[j] = 0;
      for (int64_t m = 0; m < a.M; ++m)
        for (int64_t di = 0; di < a.kh; ++di) {
          const int64_t ii = i + di - a.ph;
          if (ii < 0 || ii >= a.H) continue;
          const acc_t* in = a.in + ((b * a.M + m) * a.H + ii) * a.W - a.pw;
          for (int64_t dj = 0; dj < a.kw; ++dj) {
            const acc_t wv = a.weight[(m * a.kh + di) * a.kw + dj];
            const Geometry<acc_t> g(a, dj);
            for (int64_t j = g.j0; j < g.j1; ++j) z[j] += wv * in[j + dj];
          }
        }
      if (a.bias)
        for (int64_t j = 0; j < a.Wo; ++j) z[j] += a.bias[0];
    });
  });
}

// d maps: each (b, m) plane gathers dz through the kernel (a task owns whole planes: no races).
template <typename acc_t>
void backward_input(const GateConvArgs<acc_t>& a, const acc_t* dz, acc_t* din) {
  at::parallel_for(0, a.B * a.M, 1, [&](int64_t begin, int64_t end) {
    for_rows(begin, end, a.M, [&](int64_t plane, int64_t b, int64_t m) {
      acc_t* d = din + plane * a.H * a.W;
      for (int64_t k = 0; k < a.H * a.W; ++k) d[k] = 0;
      for (int64_t i = 0; i < a.Ho; ++i) {
        const acc_t* g = dz + (b * a.Ho + i) * a.Wo;
        for (int64_t di = 0; di < a.kh; ++di) {
          const int64_t ii = i + di - a.ph;
          if (ii < 0 || ii >= a.H) continue;
          acc_t* drow = d + ii * a.W - a.pw;
          for (int64_t dj = 0; dj < a.kw; ++dj) {
            const acc_t wv = a.weight[(m * a.kh + di) * a.kw + dj];
            const Geometry<acc_t> geo(a, dj);
            for (int64_t j = geo.j0; j < geo.j1; ++j) drow[j + dj] += wv * g[j];
          }
        }
      }
    });
  });
}

// d weight: per (b, m) and kernel tap, products summed elementwise along the row into ``lane``
// (vectorises without reassociating a reduction), then across the row; samples are added in order.
template <typename acc_t>
void backward_weight(const GateConvArgs<acc_t>& a, const acc_t* dz, acc_t* dweight, acc_t* dbias) {
  const int64_t taps = a.M * a.kh * a.kw;
  std::vector<acc_t> part(a.B * taps);
  at::parallel_for(0, a.B * a.M, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> lane(a.Wo);
    for_rows(begin, end, a.M, [&](int64_t plane, int64_t b, int64_t m) {
      for (int64_t di = 0; di < a.kh; ++di)
        for (int64_t dj = 0; dj < a.kw; ++dj) {
          const Geometry<acc_t> geo(a, dj);
          for (int64_t j = 0; j < a.Wo; ++j) lane[j] = 0;
          for (int64_t i = 0; i < a.Ho; ++i) {
            const int64_t ii = i + di - a.ph;
            if (ii < 0 || ii >= a.H) continue;
            const acc_t* g = dz + (b * a.Ho + i) * a.Wo;
            const acc_t* in = a.in + (plane * a.H + ii) * a.W - a.pw + dj;
            for (int64_t j = geo.j0; j < geo.j1; ++j) lane[j] += g[j] * in[j];
          }
          // A vector fold, not a serial one: on ECA's maps (one row of C) a chain of 2048
          // dependent adds per tap cost ~3 us, most of the op.
          acc_t s;
          row_reduce<false, acc_t>([&](int64_t j) { return lane[j]; }, a.Wo, &s, nullptr, nullptr);
          part[b * taps + (m * a.kh + di) * a.kw + dj] = s;
        }
    });
  });
  for (int64_t t = 0; t < taps; ++t) {
    acc_t s = 0;
    for (int64_t b = 0; b < a.B; ++b) s += part[b * taps + t];
    dweight[t] = s;
  }
  if (dbias) {  // per sample a vector fold, then the samples in order
    acc_t s = 0;
    for (int64_t b = 0; b < a.B; ++b) {
      const acc_t* g = dz + b * a.Ho * a.Wo;
      acc_t sb;
      row_reduce<false, acc_t>([&](int64_t k) { return g[k]; }, a.Ho * a.Wo, &sb, nullptr, nullptr);
      s += sb;
    }
    dbias[0] = s;
  }
}

}  // namespace

template <typename acc_t>
void gate_conv(const GateConvArgs<acc_t>& args, acc_t* out) {
  forward(args, out);
}

template <typename acc_t>
void gate_conv_backward(const GateConvArgs<acc_t>& args, const acc_t* dz, acc_t* din, acc_t* dweight,
                        acc_t* dbias) {
  backward_input(args, dz, din);
  backward_weight(args, dz, dweight, dbias);
}

template void gate_conv<float>(const GateConvArgs<float>&, float*);
template void gate_conv<double>(const GateConvArgs<double>&, double*);
template void gate_conv_backward<float>(const GateConvArgs<float>&, const float*, float*, float*, float*);
template void gate_conv_backward<double>(const GateConvArgs<double>&, const double*, double*, double*, double*);

}  // namespace cpu
}  // namespace attnfused
