// CPU reductions: pool_hw / dot_hw (over P) and pool_c / dot_c (over C).
//
// Each reduction walks the tensor once in its memory order: when the reduced axis is the
// unit-stride one (pool_hw on NCHW, pool_c on channels_last) every task reduces whole rows;
// otherwise a task owns a tile of the kept axis and sweeps the reduced axis, accumulating a
// vector of results (tile_reduce). No splits on CPU: (sample x tile) tasks already outnumber cores.
#include <vector>

#include "../entry.h"
#include "common.h"

namespace attnfused {
namespace cpu {
namespace {

constexpr int64_t kTile = 256;  // kept-axis entries per task in tile_reduce (1-2 KiB of accumulators)

template <typename scalar_t, typename acc_t>
void reduce_hw_impl(const ReduceArgs<acc_t>& r) {
  const int64_t B = r.B, C = r.C, P = r.P;
  const View a = r.a, x = r.x;
  const Terms<acc_t> t = r.t;
  const bool has_x = r.has_x, want_max = r.want_max && !r.has_x;
  auto value = [&](int64_t b, int64_t c, int64_t p) -> acc_t {
    acc_t v = load<scalar_t, acc_t>(a.data, b * a.sb + c * a.sc + p * a.sp);
    if (has_x) v = mid_term(v, t, b * P + p, c) * load<scalar_t, acc_t>(x.data, b * x.sb + c * x.sc + p * x.sp);
    return v;
  };
  if (a.sp <= a.sc) {  // P is the fast axis: one row per (b, c)
    at::parallel_for(0, B * C, grain_for(P), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / C, c = i % C;
        acc_t s = 0, m = 0;
        int32_t arg = 0;
        if (a.sp == 1 && (!has_x || x.sp == 1)) {  // unit stride: plain pointers, vectorisable
          const scalar_t* ra = static_cast<const scalar_t*>(a.data) + b * a.sb + c * a.sc;
          const scalar_t* rx = has_x ? static_cast<const scalar_t*>(x.data) + b * x.sb + c * x.sc : nullptr;
          if (has_x) {
            row_reduce<acc_t>(P, [&](int64_t p) {
              return mid_term(static_cast<acc_t>(ra[p]), t, b * P + p, c) * static_cast<acc_t>(rx[p]);
            }, false, &s, &m, &arg);
          } else {
            row_reduce<acc_t>(P, [&](int64_t p) { return static_cast<acc_t>(ra[p]); }, want_max, &s, &m, &arg);
          }
        } else {
          row_reduce<acc_t>(P, [&](int64_t p) { return value(b, c, p); }, want_max, &s, &m, &arg);
        }
        r.out_sum[i] = s / r.divisor;
        if (want_max) {
          r.out_max[i] = m;
          r.out_arg[i] = arg;
        }
      }
    });
    return;
  }
  const int64_t n_tiles = (C + kTile - 1) / kTile;  // C is the fast axis: tiles of channels
  at::parallel_for(0, B * n_tiles, grain_for(kTile * P), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> s(kTile), m(kTile);
    std::vector<int32_t> arg(kTile);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / n_tiles, c0 = (i % n_tiles) * kTile, J = std::min(kTile, C - c0);
      if (a.sc == 1 && (!has_x || x.sc == 1)) {  // unit stride: plain pointers, vectorisable
        const scalar_t* pa = static_cast<const scalar_t*>(a.data) + b * a.sb + c0;
        const scalar_t* px = has_x ? static_cast<const scalar_t*>(x.data) + b * x.sb + c0 : nullptr;
        const int64_t sap = a.sp, sxp = x.sp;
        if (has_x) {
          tile_reduce<acc_t>(P, J, [&](int64_t p, int64_t j) {
            return mid_term(static_cast<acc_t>(pa[p * sap + j]), t, b * P + p, c0 + j) *
                   static_cast<acc_t>(px[p * sxp + j]);
          }, false, s.data(), m.data(), arg.data());
        } else {
          tile_reduce<acc_t>(P, J, [&](int64_t p, int64_t j) { return static_cast<acc_t>(pa[p * sap + j]); },
                             want_max, s.data(), m.data(), arg.data());
        }
      } else {
        tile_reduce<acc_t>(P, J, [&](int64_t p, int64_t j) { return value(b, c0 + j, p); }, want_max, s.data(),
                           m.data(), arg.data());
      }
      for (int64_t j = 0; j < J; ++j) {
        r.out_sum[b * C + c0 + j] = s[j] / r.divisor;
        if (want_max) {
          r.out_max[b * C + c0 + j] = m[j];
          r.out_arg[b * C + c0 + j] = arg[j];
        }
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void reduce_c_impl(const ReduceArgs<acc_t>& r) {
  const int64_t B = r.B, C = r.C, P = r.P;
  const View a = r.a, x = r.x;
  const acc_t* ca = r.t.ca;
  const bool has_x = r.has_x, want_max = r.want_max && !r.has_x, round_x1 = r.round_x1;
  auto value = [&](int64_t b, int64_t c, int64_t p) -> acc_t {
    acc_t v = load<scalar_t, acc_t>(a.data, b * a.sb + c * a.sc + p * a.sp);
    if (ca) {
      v *= ca[b * C + c];
      if (round_x1) v = static_cast<acc_t>(static_cast<scalar_t>(v));
    }
    if (has_x) v *= load<scalar_t, acc_t>(x.data, b * x.sb + c * x.sc + p * x.sp);
    return v;
  };
  if (a.sc < a.sp) {  // C is the fast axis: one row per (b, p)
    at::parallel_for(0, B * P, grain_for(C), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / P, p = i % P;
        acc_t s = 0, m = 0;
        int32_t arg = 0;
        if (a.sc == 1 && (!has_x || x.sc == 1)) {  // unit stride: plain pointers, vectorisable
          const scalar_t* ra = static_cast<const scalar_t*>(a.data) + b * a.sb + p * a.sp;
          const scalar_t* rx = has_x ? static_cast<const scalar_t*>(x.data) + b * x.sb + p * x.sp : nullptr;
          const acc_t* rca = ca ? ca + b * C : nullptr;
          row_reduce<acc_t>(C, [&](int64_t c) {
            acc_t v = static_cast<acc_t>(ra[c]);
            if (rca) {
              v *= rca[c];
              if (round_x1) v = static_cast<acc_t>(static_cast<scalar_t>(v));
            }
            if (rx) v *= static_cast<acc_t>(rx[c]);
            return v;
          }, want_max, &s, &m, &arg);
        } else {
          row_reduce<acc_t>(C, [&](int64_t c) { return value(b, c, p); }, want_max, &s, &m, &arg);
        }
        r.out_sum[i] = s / r.divisor;
        if (want_max) {
          r.out_max[i] = m;
          r.out_arg[i] = arg;
        }
      }
    });
    return;
  }
  const int64_t n_tiles = (P + kTile - 1) / kTile;  // P is the fast axis: tiles of positions
  at::parallel_for(0, B * n_tiles, grain_for(kTile * C), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> s(kTile), m(kTile);
    std::vector<int32_t> arg(kTile);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / n_tiles, p0 = (i % n_tiles) * kTile, J = std::min(kTile, P - p0);
      if (a.sp == 1 && (!has_x || x.sp == 1)) {
        const scalar_t* pa = static_cast<const scalar_t*>(a.data) + b * a.sb + p0;
        const scalar_t* px = has_x ? static_cast<const scalar_t*>(x.data) + b * x.sb + p0 : nullptr;
        const int64_t sac = a.sc, sxc = x.sc;
        tile_reduce<acc_t>(C, J, [&](int64_t c, int64_t j) {
          acc_t v = static_cast<acc_t>(pa[c * sac + j]);
          if (ca) {
            v *= ca[b * C + c];
            if (round_x1) v = static_cast<acc_t>(static_cast<scalar_t>(v));
          }
          if (px) v *= static_cast<acc_t>(px[c * sxc + j]);
          return v;
        }, want_max, s.data(), m.data(), arg.data());
      } else {
        tile_reduce<acc_t>(C, J, [&](int64_t c, int64_t j) { return value(b, c, p0 + j); }, want_max, s.data(),
                           m.data(), arg.data());
      }
      for (int64_t j = 0; j < J; ++j) {
        r.out_sum[b * P + p0 + j] = s[j] / r.divisor;
        if (want_max) {
          r.out_max[b * P + p0 + j] = m[j];
          r.out_arg[b * P + p0 + j] = arg[j];
        }
      }
    }
  });
}

}  // namespace

template <typename acc_t>
void reduce_hw(DType dt, const ReduceArgs<acc_t>& args) {
  dispatch<acc_t>(dt, [&](auto s) { reduce_hw_impl<decltype(s), acc_t>(args); });
}

template <typename acc_t>
void reduce_c(DType dt, const ReduceArgs<acc_t>& args) {
  dispatch<acc_t>(dt, [&](auto s) { reduce_c_impl<decltype(s), acc_t>(args); });
}

template void reduce_hw<float>(DType, const ReduceArgs<float>&);
template void reduce_hw<double>(DType, const ReduceArgs<double>&);
template void reduce_c<float>(DType, const ReduceArgs<float>&);
template void reduce_c<double>(DType, const ReduceArgs<double>&);

}  // namespace cpu
}  // namespace attnfused
