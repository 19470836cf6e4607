// CPU scale (forward y) and grad_input (backward dx): one read of ``a`` and one write of ``out``,
// walked in ``out``'s memory order (for_rows: one AVX2/baseline clone per task loop); per-row small
// terms are hoisted out of the inner loop.
#include "../entry.h"
#include "common.h"

namespace attnfused {
namespace cpu {
namespace {

template <typename scalar_t, typename acc_t>
void pointwise_impl(const PointwiseArgs<acc_t>& w) {
  const int64_t B = w.B, C = w.C, P = w.P;
  const View a = w.a;
  const Terms<acc_t> t = w.t;
  scalar_t* out = static_cast<scalar_t*>(w.out);
  const scalar_t* in = static_cast<const scalar_t*>(a.data);
  auto round = [](acc_t v) { return static_cast<acc_t>(static_cast<scalar_t>(v)); };
  // The forward loops get branch-free bodies (so they vectorise): y = x * ca[b, c] (SE / ECA) and
  // y = round(x * ca) * sa[b, p] (CBAM); the backward's many optional terms take the generic body.
  const bool forward = w.ca_first && !t.da && !t.dm && !t.davg && !t.dmax;
  const bool ca_only = forward && t.ca && !t.sa;
  const bool ca_sa = forward && t.ca && t.sa;

  if (w.oc < w.op) {  // channels fastest in the output: rows of C per (b, p)
    at::parallel_for(0, B * P, grain_for(C), [&](int64_t begin, int64_t end) {
      for_rows(begin, end, P, [&](int64_t i, int64_t b, int64_t p) {
        const scalar_t* ra = in + b * a.sb + p * a.sp;
        scalar_t* ro = out + b * w.ob + p * w.op;
        if (a.sc == 1 && w.oc == 1 && ca_only) {
          const acc_t* rca = t.ca + b * C;
          for (int64_t c = 0; c < C; ++c) ro[c] = static_cast<scalar_t>(static_cast<acc_t>(ra[c]) * rca[c]);
        } else if (a.sc == 1 && w.oc == 1 && ca_sa) {
          const acc_t* rca = t.ca + b * C;
          const acc_t s = t.sa[i];
          if (w.round_x1) {
            for (int64_t c = 0; c < C; ++c) ro[c] = static_cast<scalar_t>(round(static_cast<acc_t>(ra[c]) * rca[c]) * s);
          } else {
            for (int64_t c = 0; c < C; ++c) ro[c] = static_cast<scalar_t>(static_cast<acc_t>(ra[c]) * rca[c] * s);
          }
        } else if (a.sc == 1 && w.oc == 1) {
          for (int64_t c = 0; c < C; ++c)
            ro[c] = static_cast<scalar_t>(pointwise_value(static_cast<acc_t>(ra[c]), t, w.ca_first, w.round_x1,
                                                          b * C + c, b * P + p, c, p, round));
        } else {
          for (int64_t c = 0; c < C; ++c)
            ro[c * w.oc] = static_cast<scalar_t>(pointwise_value(static_cast<acc_t>(ra[c * a.sc]), t, w.ca_first,
                                                                 w.round_x1, b * C + c, b * P + p, c, p, round));
        }
      });
    });
    return;
  }
  at::parallel_for(0, B * C, grain_for(P), [&](int64_t begin, int64_t end) {  // rows of P per (b, c)
    for_rows(begin, end, C, [&](int64_t i, int64_t b, int64_t c) {
      const scalar_t* ra = in + b * a.sb + c * a.sc;
      scalar_t* ro = out + b * w.ob + c * w.oc;
      if (a.sp == 1 && w.op == 1 && ca_only) {
        const acc_t g = t.ca[i];
        for (int64_t p = 0; p < P; ++p) ro[p] = static_cast<scalar_t>(static_cast<acc_t>(ra[p]) * g);
      } else if (a.sp == 1 && w.op == 1 && ca_sa) {
        const acc_t g = t.ca[i];
        const acc_t* rsa = t.sa + b * P;
        if (w.round_x1) {
          for (int64_t p = 0; p < P; ++p) ro[p] = static_cast<scalar_t>(round(static_cast<acc_t>(ra[p]) * g) * rsa[p]);
        } else {
          for (int64_t p = 0; p < P; ++p) ro[p] = static_cast<scalar_t>(static_cast<acc_t>(ra[p]) * g * rsa[p]);
        }
      } else if (a.sp == 1 && w.op == 1) {
        for (int64_t p = 0; p < P; ++p)
          ro[p] = static_cast<scalar_t>(pointwise_value(static_cast<acc_t>(ra[p]), t, w.ca_first, w.round_x1, i,
                                                        b * P + p, c, p, round));
      } else {
        for (int64_t p = 0; p < P; ++p)
          ro[p * w.op] = static_cast<scalar_t>(pointwise_value(static_cast<acc_t>(ra[p * a.sp]), t, w.ca_first,
                                                               w.round_x1, i, b * P + p, c, p, round));
      }
    });
  });
}

}  // namespace

template <typename acc_t>
void pointwise(DType dt, const PointwiseArgs<acc_t>& args) {
  dispatch<acc_t>(dt, [&](auto s) { pointwise_impl<decltype(s), acc_t>(args); });
}

template void pointwise<float>(DType, const PointwiseArgs<float>&);
template void pointwise<double>(DType, const PointwiseArgs<double>&);

}  // namespace cpu
}  // namespace attnfused
