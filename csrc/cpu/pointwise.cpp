// CPU scale (forward y) and grad_input (backward dx): one read of ``a`` and one write of ``out``,
// walked in ``out``'s memory order (for_rows_of, common.h: one clone per task loop, AVX-512 ones
// for bf16); per-row small terms are hoisted out of the inner loop. Rows go in increasing address
// order. Walking each thread's rows backwards, so that the rows the block's first pass read last
// (still in L2) come first, gained 5-8% on the Intel dev VM at 56^2 / 28^2 but cost up to 2.5x on
// the AMD EPYC (Zen 3) one (SE avg forward at 8 x 512 x 28 x 28: 2.86 ms backwards, 1.15 forwards;
// its prefetchers did not follow the descending rows), and was dropped. Large outputs go out
// through streaming stores (store_row, common.h): no read of the lines they overwrite. The bound
// (kStreamBytes, 8 MiB) is a compromise. On the AMD EPYC Zen 5 VM (32 MB L3; same process, plain
// stores at every size against the bound) pool + scale at 8 x 512 x 28^2 (12 MiB out) took 0.25 ms
// plain, 0.37 streamed (x and y fit the L3), at 8 x 256 x 56^2 (24.5 MiB) 0.94 plain, 0.85
// streamed; but SE avg forward + backward at 8 x 512 x 28^2 took 0.93 ms plain, 0.75 streamed (x,
// y, dy and dx do not fit). A bound from the L3's size would only suit one of the two.
#include "../entry.h"
#include "common.h"

namespace attnfused {
namespace cpu {
namespace {

// CBAM's fp32 NCHW rows of 8-63 positions (7x7 maps) lying back to back (row stride P in and out),
// eight at a time as the P vectors they fill: short_scale_rows (y) and short_backward_rows (dx).
// Lane l of a group's vector v belongs to row pick[v][l] at position (8v + l) % P: the rows' [B, C]
// terms come by lane permutation, the sample's [B, P] ones from its rows repeated eight times
// (``spread``, redone when the sample changes). ``for_groups`` calls ``group(i, b, c)`` for rows
// i..i + 7 when they lie in one sample and one task, else ``row(i, b, c)`` for row i alone.
struct EightRows {
  Vec<float>::I pick[64];
  explicit EightRows(int64_t P) {
    int32_t row = 0;
    for (int64_t e = 0, p = 0; e < 8 * P; ++e) {
      pick[e / 8][e % 8] = row;
      if (++p == P) {
        p = 0;
        ++row;
      }
    }
  }
  template <typename T>
  static void spread(const T* row, int64_t P, T* rep) {
    for (int q = 0; q < 8; ++q)
      for (int64_t p = 0; p < P; ++p) rep[q * P + p] = row[p];
  }
  template <typename Group, typename Row>
  static void for_groups(int64_t begin, int64_t end, int64_t C, const Group& group, const Row& row) {
    for (int64_t i = begin; i < end;) {
      const int64_t b = i / C, c = i % C;
      if (c + 8 <= C && i + 8 <= end) {
        group(i, b, c);
        i += 8;
      } else {
        row(i, b, c);
        ++i;
      }
    }
  }
};

// backward_rows' dx for CBAM's rows (EightRows): (dy * sa + da + dm * [c == amc]) * ca + davg,
// the max's one element per row (kMax) written after the group, recomputed from the same
// expression. Each element's arithmetic is backward_rows' in the same order: the same bits. dx
// alone, 8 x 2048 x 7^2, one thread, 25th percentile of 1500 calls, old / new in alternating
// processes (2 each, Zen 5 VM), ms: CBAM (every term) 0.269 / 0.158-0.160; SE avg / ECA 0.113-0.116 /
// 0.080, SE max 0.111-0.112 / 0.093. CBAM's only: inside the blocks' forward + backward (perf
// samples, 3000 / 1500 steps) ECA's dx took 5-10% more than backward_rows' (1150 / 1065 against
// 1043 / 1027), CBAM Conv's 28% less (829 against 1149). In one process (session 21, see
// short_scale_rows): SE's / ECA's forward + backward with it -2% to +16% (SE max 2.44 / 2.10 ms).
template <bool kCa, bool kAvg, bool kMax>
AF_VEC void short_backward_rows(const float* in, int64_t sb, float* out, int64_t ob, const Terms<float> t,
                                int64_t begin, int64_t end, int64_t C, int64_t P) {
  using V = Vec<float>::V;
  using I = Vec<float>::I;
  const EightRows rows(P);
  float sa[8 * 64], da[8 * 64], dm[8 * 64];
  int32_t amc[8 * 64];
  int64_t rep_b = -1;
  // One element of row i = (b, c), as backward_rows computes it.
  const auto value = [&](const float* x, int64_t i, int64_t b, int64_t c, int64_t p) {
    const int64_t bp = b * P + p;
    float v = x[p] * t.sa[bp] + t.da[bp] + (t.amc[bp] == static_cast<int32_t>(c) ? t.dm[bp] : 0.f);
    if constexpr (kCa) v *= t.ca[i];
    if constexpr (kAvg) v += t.davg[i];
    return v;
  };
  const auto max_element = [&](const float* x, float* y, int64_t i, int64_t b, int64_t c) {
    const int64_t at = t.amp[i];
    if (at >= 0 && at < P) y[at] = value(x, i, b, c, at) + t.dmax[i];
  };
  EightRows::for_groups(begin, end, C, [&](int64_t i, int64_t b, int64_t c) {
    const float* x = in + b * sb + c * P;
    float* y = out + b * ob + c * P;
    if (b != rep_b) {
      EightRows::spread(t.sa + b * P, P, sa);
      EightRows::spread(t.da + b * P, P, da);
      EightRows::spread(t.dm + b * P, P, dm);
      EightRows::spread(t.amc + b * P, P, amc);
      rep_b = b;
    }
    const V g = kCa ? load8(t.ca + i) : V{}, d = kAvg ? load8(t.davg + i) : V{};
    const I c0 = I{} + static_cast<int32_t>(c);
    for (int64_t v = 0; v < P; ++v) {
      const auto hit = load8(amc + 8 * v) == c0 + rows.pick[v];
      V yv = load8(x + 8 * v) * load8(sa + 8 * v) + load8(da + 8 * v) + (hit ? load8(dm + 8 * v) : V{});
      if constexpr (kCa) yv *= __builtin_shuffle(g, rows.pick[v]);
      if constexpr (kAvg) yv += __builtin_shuffle(d, rows.pick[v]);
      __builtin_memcpy(y + 8 * v, &yv, sizeof(yv));
    }
    if constexpr (kMax)
      for (int q = 0; q < 8; ++q) max_element(x + q * P, y + q * P, i + q, b, c + q);
  }, [&](int64_t i, int64_t b, int64_t c) {
    const float* x = in + b * sb + c * P;
    float* y = out + b * ob + c * P;
    for (int64_t p = 0; p < P; ++p) y[p] = value(x, i, b, c, p);
    if constexpr (kMax) max_element(x, y, i, b, c);
  });
}

// The backward's dx = (a*sa + da + dm*[c == amc]) * ca + davg + dmax*[p == amp] with the terms a
// block passes known at compile time (kMid: CBAM's spatial stage; kCa, kAvg, kMax: its channel
// stage), for unit-stride rows of either layout: branch-free, so it vectorises. The generic body
// tests every optional term per element and ran at ~2 ns/element (a copy runs at ~0.3). ``ivdep``:
// ``out`` is a fresh tensor, so the loops need no runtime alias checks, which on 7x7 rows with five
// input streams cost more than the row.
template <typename scalar_t, typename acc_t, bool kMid, bool kCa, bool kAvg, bool kMax>
void backward_rows(const PointwiseArgs<acc_t>& w, bool stream) {
  const int64_t C = w.C, P = w.P;
  const Terms<acc_t> t = w.t;
  const View a = w.a;
  const auto* in = static_cast<const scalar_t*>(a.data);
  auto* out = static_cast<scalar_t*>(w.out);
  if (w.oc < w.op) {  // rows of C per (b, p): the spatial terms are per row, the channel ones per element
    at::parallel_for(0, w.B * P, grain_for(C), [&](int64_t begin, int64_t end) {
      RowIO<scalar_t> io(C, 1);
      for_rows_of<scalar_t>(begin, end, P, [=, &io](int64_t i, int64_t b, int64_t p) {
        const auto* ra = io.in(in + b * a.sb + p * a.sp, C, 0);
        scalar_t* ro = out + b * w.ob + p * w.op;
        const acc_t sa = kMid ? t.sa[i] : acc_t(1), da = kMid ? t.da[i] : acc_t(0), dm = kMid ? t.dm[i] : acc_t(0);
        const int32_t amc = kMid ? t.amc[i] : -1, p32 = static_cast<int32_t>(p);
        const acc_t* ca = kCa ? t.ca + b * C : nullptr;  // (no arithmetic on absent terms' nulls)
        const acc_t* davg = kAvg ? t.davg + b * C : nullptr;
        const acc_t* dmax = kMax ? t.dmax + b * C : nullptr;
        const int32_t* amp = kMax ? t.amp + b * C : nullptr;
        io.out(ro, C, stream, [&](int64_t c) {
          acc_t v = static_cast<acc_t>(ra[c]);
          if constexpr (kMid) v = v * sa + da + (static_cast<int32_t>(c) == amc ? dm : acc_t(0));
          if constexpr (kCa) v *= ca[c];
          if constexpr (kAvg) v += davg[c];
          if constexpr (kMax) {
            const acc_t dmx = dmax[c];  // loaded unconditionally: a conditional load blocks if-conversion
            v += amp[c] == p32 ? dmx : acc_t(0);
          }
          return v;
        });
      });
      store_fence();
    });
    return;
  }
  if constexpr (std::is_same_v<scalar_t, float> && kMid) {  // (CBAM's: see short_backward_rows)
    if (!stream && a.sc == P && w.oc == P && P >= 8 && P < 64) {
      at::parallel_for(0, w.B * C, grain_for(P), [&](int64_t begin, int64_t end) {
        short_backward_rows<kCa, kAvg, kMax>(in, a.sb, out, w.ob, t, begin, end, C, P);
      });
      return;
    }
  }
  at::parallel_for(0, w.B * C, grain_for(P), [&](int64_t begin, int64_t end) {  // rows of P per (b, c)
    RowIO<scalar_t> io(P, 1);
    for_rows_of<scalar_t>(begin, end, C, [=, &io](int64_t i, int64_t b, int64_t c) {
      const auto* ra = io.in(in + b * a.sb + c * a.sc, P, 0);
      scalar_t* ro = out + b * w.ob + c * w.oc;
      const acc_t g = kCa ? t.ca[i] : acc_t(1), d = kAvg ? t.davg[i] : acc_t(0);
      const acc_t* sa = kMid ? t.sa + b * P : nullptr;
      const acc_t* da = kMid ? t.da + b * P : nullptr;
      const acc_t* dm = kMid ? t.dm + b * P : nullptr;
      const int32_t* amc = kMid ? t.amc + b * P : nullptr;
      const int32_t c32 = static_cast<int32_t>(c);
      auto value = [&](int64_t p) {
        acc_t v = static_cast<acc_t>(ra[p]);
        if constexpr (kMid) {
          const acc_t dmp = dm[p];  // loaded unconditionally: a conditional load blocks if-conversion
          v = v * sa[p] + da[p] + (amc[p] == c32 ? dmp : acc_t(0));
        }
        if constexpr (kCa) v *= g;
        if constexpr (kAvg) v += d;
        return v;
      };
      // The max's one element per row: the same value with dmax added last (eager's order).
      const int64_t q = kMax ? t.amp[i] : -1;
      const acc_t at_q = kMax && q >= 0 && q < P ? value(q) + t.dmax[i] : acc_t(0);
      io.out(ro, P, stream, value, q, at_q);
    });
    store_fence();
  });
}

// Runs backward_rows when the terms form one of its patterns and rows are unit-stride; false if not.
template <typename scalar_t, typename acc_t>
bool backward_fast(const PointwiseArgs<acc_t>& w, bool stream) {
  const Terms<acc_t>& t = w.t;
  const bool c_rows = w.oc < w.op;
  const bool unit = c_rows ? (w.a.sc == 1 && w.oc == 1) : (w.a.sp == 1 && w.op == 1);
  const bool mid = t.sa && t.da && t.dm;
  if (w.ca_first || !unit || (!mid && (t.sa || t.da || t.dm))) return false;
  with_flag(mid, [&](auto m) {
    with_flag(t.ca != nullptr, [&](auto g) {
      with_flag(t.davg != nullptr, [&](auto avg) {
        with_flag(t.dmax != nullptr, [&](auto mx) {
          backward_rows<scalar_t, acc_t, decltype(m)::value, decltype(g)::value, decltype(avg)::value,
                        decltype(mx)::value>(w, stream);
        });
      });
    });
  });
  return true;
}

// A plain copy (no terms) between layouts whose unit-stride axes differ: the cpu provider's
// dense_grad puts a dy into x's layout with it. Element by element, one side is walked across
// lines (the generic body; aten's copy took 2.2-2.3 ms for channels_last into NCHW at 8 x 512 x
// 28^2 fp32 on the Zen 5 VM, 20 clones). Here 32 x 32 tiles of (c, p) go through a buffer in L1,
// read along a's unit-stride axis and written along out's: 0.48-0.50 ms that way (bf16: aten 1.30,
// tiles 0.47), 0.48 the other way, as aten.
template <typename scalar_t, typename acc_t>
void copy_tiles(const PointwiseArgs<acc_t>& w) {
  constexpr int64_t kTile = 32;
  const View a = w.a;
  const auto* in = static_cast<const scalar_t*>(a.data);
  auto* out = static_cast<scalar_t*>(w.out);
  // Tile rows run along out's strided axis, tile columns along its unit-stride one.
  const bool c_unit = w.oc < w.op;
  const int64_t R = c_unit ? w.P : w.C, K = c_unit ? w.C : w.P;
  const int64_t ar = c_unit ? a.sp : a.sc, ak = c_unit ? a.sc : a.sp;
  const int64_t o_r = c_unit ? w.op : w.oc, o_k = c_unit ? w.oc : w.op;
  const int64_t tiles_r = (R + kTile - 1) / kTile, tiles_k = (K + kTile - 1) / kTile;
  at::parallel_for(0, w.B * tiles_r * tiles_k, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (tiles_r * tiles_k), r0 = i / tiles_k % tiles_r * kTile, k0 = i % tiles_k * kTile;
      const int64_t r1 = std::min(R, r0 + kTile), k1 = std::min(K, k0 + kTile);
      scalar_t tile[kTile][kTile];  // [k][r]: filled along r, emptied along k
      for (int64_t k = k0; k < k1; ++k) {
        const scalar_t* src = in + b * a.sb + k * ak;
        for (int64_t r = r0; r < r1; ++r) tile[k - k0][r - r0] = src[r * ar];
      }
      for (int64_t r = r0; r < r1; ++r) {
        scalar_t* dst = out + b * w.ob + r * o_r;
        for (int64_t k = k0; k < k1; ++k) dst[k * o_k] = tile[k - k0][r - r0];
      }
    }
  });
}

// scale_rows' y = x * ca * sa for CBAM's rows (EightRows): rows one at a time ended in a scalar step
// (49 = 6 x 8 + 1) and paid the loop's setup per row. Same products in the same order: the same
// bits. Alone, 8 x 2048 x 7^2, one thread: 0.12-0.13 -> 0.090-0.097 ms. CBAM's only: the same loop
// for SE's and ECA's x * ca ran 0.100-0.111 -> 0.079-0.082 ms alone (aten's broadcast mul: 0.084, a
// clone 0.071; 0.149 -> 0.085 with x at other offsets), but inside their forward + backward it took
// 25-30% more samples than scale_rows (perf, ECA at 8 x 2048 x 7^2, one thread, 3000 steps, two
// processes each: 1303 / 1204 against 1005 / 950; cause not found), while CBAM's x * ca * sa took
// 14% fewer there (636 against 738). Again in one process (session 21, a run-time switch, 40
// alternating rounds of 50 steps, 25th percentiles, same bits): the 8-row x * ca made SE's / ECA's
// no-grad forward 3-7% faster, but their forward + backward 0.5-11% slower (SE avg 2.02 / 1.81 ms,
// ECA 1.10 / 1.00, SE max 2.36 / 2.34); alone, with x at 16 offsets mod 4 KiB from y, it was 20%
// faster at every one (0.080-0.083 / 0.099-0.104 ms), so not 4K aliasing. Still not found.
AF_VEC void short_scale_rows(const float* in, int64_t sb, float* out, int64_t ob, const float* ca, const float* sa,
                             int64_t begin, int64_t end, int64_t C, int64_t P) {
  using V = Vec<float>::V;
  const EightRows rows(P);
  float rep[8 * 64];
  int64_t rep_b = -1;
  EightRows::for_groups(begin, end, C, [&](int64_t i, int64_t b, int64_t c) {
    const float* x = in + b * sb + c * P;
    float* y = out + b * ob + c * P;
    if (b != rep_b) {
      EightRows::spread(sa + b * P, P, rep);
      rep_b = b;
    }
    const V g = load8(ca + i);
    for (int64_t v = 0; v < P; ++v) {
      const V yv = load8(x + 8 * v) * __builtin_shuffle(g, rows.pick[v]) * load8(rep + 8 * v);
      __builtin_memcpy(y + 8 * v, &yv, sizeof(yv));
    }
  }, [&](int64_t i, int64_t b, int64_t c) {
    const float* x = in + b * sb + c * P;
    float* y = out + b * ob + c * P;
    for (int64_t p = 0; p < P; ++p) y[p] = x[p] * ca[i] * sa[b * P + p];
  });
}

// The forward's scale over unit-stride rows i = (b, c) of P (NCHW): y = x * ca[i] (SE, ECA) or,
// kSa, y = x * ca[i] * sa[b, p] (CBAM), with kRound x * ca rounded to the input dtype first (as
// eager materialises it for half types). Its own row loop with every argument a local copied into
// the row body (captured by value), so that nothing is reloaded per row: in pointwise_impl's shared
// loop the row body reloaded ~15 captured values and flags from memory and tested the term flags
// again on every row. One thread, 8 x C x H x W, 25th percentile of 400 calls, old / new in
// alternating processes (3 each, Zen 5 VM), same bits: x * ca fp32 2048 x 7^2 0.087-0.089 /
// 0.070-0.073 ms, fp16 0.104-0.107 / 0.076-0.080; 14^2 and 28^2 and bf16 within the noise;
// x * ca * sa fp32 at 7^2 0.12-0.18 / 0.077-0.079 ms (4 processes each), bf16 and fp16 no slower.
// backward_rows' row bodies capture by value for the same reason: CBAM's dx (every term) at 7^2
// fp32 0.226-0.229 / 0.204-0.214 ms, bf16 0.243-0.249 / 0.213-0.219.
template <typename scalar_t, typename acc_t, bool kSa, bool kRound>
void scale_rows(const scalar_t* in, int64_t sb, int64_t sc, scalar_t* out, int64_t ob, int64_t oc, const acc_t* ca,
                const acc_t* sa, int64_t rows, int64_t C, int64_t P, bool stream) {
  if constexpr (std::is_same_v<scalar_t, float> && kSa && !kRound) {  // (CBAM's: see short_scale_rows)
    if (!stream && sc == P && oc == P && P >= 8 && P < 64) {
      at::parallel_for(0, rows, grain_for(P), [=](int64_t begin, int64_t end) {
        short_scale_rows(in, sb, out, ob, ca, sa, begin, end, C, P);
      });
      return;
    }
  }
  at::parallel_for(0, rows, grain_for(P), [=](int64_t begin, int64_t end) {
    RowIO<scalar_t> io(P, 2);
    for_rows_of<scalar_t>(begin, end, C, [=, &io](int64_t i, int64_t b, int64_t c) {
      const scalar_t* ra = in + b * sb + c * sc;
      scalar_t* ro = out + b * ob + c * oc;
      const acc_t g = ca[i];
      if constexpr (!kSa) {
        io.scale_row(ra, g, ro, P, stream);
      } else {
        const acc_t* rsa = sa + b * P;
        const auto* rf = io.in(ra, P, 0);
        if constexpr (kRound) {
          const auto x1 = io.rounded(P, 1, [&](int64_t p) { return static_cast<acc_t>(rf[p]) * g; });
          io.out(ro, P, stream, [&](int64_t p) { return static_cast<acc_t>(x1[p]) * rsa[p]; });
        } else {
          io.out(ro, P, stream, [&](int64_t p) { return static_cast<acc_t>(rf[p]) * g * rsa[p]; });
        }
      }
    });
    store_fence();
  });
}

template <typename scalar_t, typename acc_t>
void pointwise_impl(const PointwiseArgs<acc_t>& w) {
  const int64_t B = w.B, C = w.C, P = w.P;
  const View a = w.a;
  const Terms<acc_t> t = w.t;
  scalar_t* out = static_cast<scalar_t*>(w.out);
  const scalar_t* in = static_cast<const scalar_t*>(a.data);
  auto round = [](acc_t v) { return static_cast<acc_t>(static_cast<scalar_t>(v)); };
  // The forward loops get branch-free bodies (so they vectorise): y = x * ca[b, c] (SE / ECA) and
  // y = round(x * ca) * sa[b, p] (CBAM); the backward's term patterns get backward_rows; any other
  // strides take the generic body.
  const bool forward = w.ca_first && !t.da && !t.dm && !t.davg && !t.dmax;
  const bool ca_only = forward && t.ca && !t.sa;
  const bool ca_sa = forward && t.ca && t.sa;
  // Streaming stores for outputs too large to stay in cache (kStreamBytes).
  const bool stream = w.stream || B * C * P * static_cast<int64_t>(sizeof(scalar_t)) >= kStreamBytes;
  if (!w.ca_first && backward_fast<scalar_t, acc_t>(w, stream)) return;
  const bool copy = w.ca_first && !t.ca && !t.sa && !t.da && !t.dm && !t.davg && !t.dmax;
  const bool same_unit_axis = w.oc < w.op ? (a.sc == 1 && w.oc == 1) : (a.sp == 1 && w.op == 1);
  if (copy && !same_unit_axis) {
    copy_tiles<scalar_t, acc_t>(w);
    return;
  }

  // The fast paths' rows go through RowIO (common.h: fp16 rows as floats).
  if (w.oc < w.op) {  // channels fastest in the output: rows of C per (b, p)
    at::parallel_for(0, B * P, grain_for(C), [&](int64_t begin, int64_t end) {
      RowIO<scalar_t> io(C, 2);
      for_rows_of<scalar_t>(begin, end, P, [&](int64_t i, int64_t b, int64_t p) {
        const scalar_t* ra = in + b * a.sb + p * a.sp;
        scalar_t* ro = out + b * w.ob + p * w.op;
        if (a.sc == 1 && w.oc == 1 && ca_only) {
          io.scale_row(ra, t.ca + b * C, ro, C, stream);
        } else if (a.sc == 1 && w.oc == 1 && ca_sa) {
          const acc_t* rca = t.ca + b * C;
          const acc_t s = t.sa[i];
          const auto* rf = io.in(ra, C, 0);
          if (w.round_x1) {
            const auto x1 = io.rounded(C, 1, [&](int64_t c) { return static_cast<acc_t>(rf[c]) * rca[c]; });
            io.out(ro, C, stream, [&](int64_t c) { return static_cast<acc_t>(x1[c]) * s; });
          } else {
            io.out(ro, C, stream, [&](int64_t c) { return static_cast<acc_t>(rf[c]) * rca[c] * s; });
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
      store_fence();
    });
    return;
  }
  if (a.sp == 1 && w.op == 1 && ca_only) {  // rows of P: SE's and ECA's y = x * ca[b, c]
    scale_rows<scalar_t, acc_t, false, false>(in, a.sb, a.sc, out, w.ob, w.oc, t.ca, nullptr, B * C, C, P, stream);
    return;
  }
  if (a.sp == 1 && w.op == 1 && ca_sa) {  // CBAM's y = x * ca[b, c] * sa[b, p]
    with_flag(w.round_x1, [&](auto round) {
      scale_rows<scalar_t, acc_t, true, decltype(round)::value>(in, a.sb, a.sc, out, w.ob, w.oc, t.ca, t.sa, B * C, C,
                                                                 P, stream);
    });
    return;
  }
  at::parallel_for(0, B * C, grain_for(P), [&](int64_t begin, int64_t end) {  // rows of P per (b, c)
    for_rows_of<scalar_t>(begin, end, C, [&](int64_t i, int64_t b, int64_t c) {
      const scalar_t* ra = in + b * a.sb + c * a.sc;
      scalar_t* ro = out + b * w.ob + c * w.oc;
      if (a.sp == 1 && w.op == 1) {
        for (int64_t p = 0; p < P; ++p)
          ro[p] = static_cast<scalar_t>(pointwise_value(static_cast<acc_t>(ra[p]), t, w.ca_first, w.round_x1, i,
                                                        b * P + p, c, p, round));
      } else {
        for (int64_t p = 0; p < P; ++p)
          ro[p * w.op] = static_cast<scalar_t>(pointwise_value(static_cast<acc_t>(ra[p * a.sp]), t, w.ca_first,
                                                               w.round_x1, i, b * P + p, c, p, round));
      }
    });
    store_fence();
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
