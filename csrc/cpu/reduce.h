// CPU reductions: pool_hw / dot_hw (over P) and pool_c / dot_c (over C).
//
// Each reduction walks the tensor once in its memory order: when the reduced axis is the
// unit-stride one (pool_hw on NCHW, pool_c on channels_last) a task reduces whole rows
// (row_reduce); otherwise a task owns a tile of the kept axis and sweeps the reduced
// axis, accumulating a vector of results (tile_reduce). Unit-stride inputs get
// branch-free loop bodies (templated on the optional terms); any other strides take one generic
// body. No splits on CPU: (sample x tile) tasks already outnumber the cores.
//
// The kernels' templates, instantiated once per input dtype by reduce_<dtype>.cpp (one translation
// unit each, so that a parallel build compiles them side by side: as one file they took 2-3.5
// minutes of one core on the dev VMs, most of a full build); reduce.cpp dispatches on the dtype.
#pragma once

#include <vector>

#include "../entry.h"
#include "common.h"

namespace attnfused {
namespace cpu {
namespace {

// Kept-axis entries per tile task: long contiguous row segments for tile_reduce's rows (a whole
// 56x56 map is 3136), outputs ~12 KiB per buffer, still a few tasks per sample to balance threads.
constexpr int64_t kTile = 1024;

template <typename acc_t>
struct TileBuffers {
  std::vector<acc_t> sum = std::vector<acc_t>(kTile), mx = std::vector<acc_t>(kTile);
  std::vector<int32_t> arg = std::vector<int32_t>(kTile);
};

// With want_max, out_arg may be null: the max of a forward that no backward follows needs no index.
template <typename acc_t>
void store(const ReduceArgs<acc_t>& r, int64_t out, acc_t sum, acc_t mx, int32_t arg, bool want_max) {
  r.out_sum[out] = sum / r.divisor;
  if (want_max) {
    r.out_max[out] = mx;
    if (r.out_arg) r.out_arg[out] = arg;
  }
}

// Calls ``f(kMax, kArg)`` (std::bool_constant) for the three modes a reduction runs in: sum only,
// sum and max, sum, max and argmax (``out_arg`` null: no backward follows, see store).
template <typename acc_t, typename F>
void with_modes(const ReduceArgs<acc_t>& r, bool want_max, F&& f) {
  if (!want_max) {
    f(std::false_type{}, std::false_type{});
  } else if (!r.out_arg) {
    f(std::true_type{}, std::false_type{});
  } else {
    f(std::true_type{}, std::true_type{});
  }
}

// Rows: reduce ``value(b, j, k)`` over k for each (b, j) in [0, B) x [0, J).
// kLongArgDepth: row_reduce's depth on rows of 128+ with the argmax. At 4 (12 accumulator vectors
// of AVX2's 16 registers) a value of two loads (x * ca, pool_c on channels_last) made GCC keep
// them on the stack (twice the stack accesses): a standalone copy of the loop, one thread, 4 x 784
// rows of 512 x * ca, ran in 0.30 ms at depth 4 and 0.16 at 3 (Zen 5 VM; plain x: 0.134 / 0.138).
// ``row_value(b, j, run, io)`` reads its rows through ``io`` (RowIO, common.h: fp16 rows as
// floats, the loop's next row converted ahead), two at most.
template <typename scalar_t, int kLongArgDepth = 4, typename acc_t, typename RowValue>
void rows(const ReduceArgs<acc_t>& r, int64_t J, int64_t K, bool want_max, const RowValue& row_value) {
  at::parallel_for(0, r.B * J, grain_for(K), [&](int64_t begin, int64_t end) {
    RowIO<scalar_t> io(K, 2);
    with_modes(r, want_max, [&](auto max_flag, auto arg_flag) {
      constexpr bool kMax = decltype(max_flag)::value, kArg = decltype(arg_flag)::value;
      if constexpr (std::is_same_v<acc_t, float>) {
        // float: eight rows' lane vectors folded together (fold_rows8, the same bits as fold_row),
        // their outputs stored as vectors. A row with a NaN or infinite input (a lane sum not
        // finite) is folded alone, after the rows before it, so that nan_rescan still has its
        // values; the last rows of the task too.
        using V = Vec<float>::V;
        using I = Vec<float>::I;
        V ls[8], lm[8];
        I li[8];
        int n = 0;
        const auto fold_one = [&](int q, int64_t out) {
          float s, m;
          int32_t arg = 0;  // (set with kArg; store reads it only then)
          fold_row<kMax, kArg, float>(ls[q], lm[q], li[q], &s, &m, &arg);
          store(r, out, s, m, arg, kMax);
        };
        by_depth<kArg ? kLongArgDepth : 4>(K, [&](auto depth) {
          for_rows(begin, end, J, [&](int64_t i, int64_t b, int64_t j) {
            io.ahead(i + 1 < end, j + 1 == J ? b + 1 : b, j + 1 == J ? 0 : j + 1);
            row_value(b, j, [&](const auto& value) {
              using Value = std::decay_t<decltype(value)>;
              row_lanes<kMax, float, Value, decltype(depth)::value, kArg>(value, K, ls[n], lm[n], li[n]);
              if constexpr (kMax) {
                if (!lanes_finite(ls[n])) {
                  for (int q = 0; q < n; ++q) fold_one(q, i - n + q);
                  float s, m;
                  int32_t arg = 0;
                  fold_row<kMax, kArg, float>(ls[n], lm[n], li[n], &s, &m, &arg);
                  nan_rescan<kArg>(value, K, s, &m, &arg);
                  store(r, i, s, m, arg, kMax);
                  n = -1;  // (the batch starts again after this row)
                }
              }
            }, io);
            if (++n == 8) {
              V sum, mx;
              I arg;
              fold_rows8<kMax, kArg>(ls, lm, li, sum, mx, arg);
              sum /= V{} + r.divisor;
              __builtin_memcpy(r.out_sum + i - 7, &sum, sizeof(sum));
              if constexpr (kMax) {
                __builtin_memcpy(r.out_max + i - 7, &mx, sizeof(mx));
                if constexpr (kArg) __builtin_memcpy(r.out_arg + i - 7, &arg, sizeof(arg));
              }
              n = 0;
            }
          });
        });
        for (int q = 0; q < n; ++q) fold_one(q, end - n + q);
      } else {
        for_rows(begin, end, J, [&](int64_t i, int64_t b, int64_t j) {
          io.ahead(i + 1 < end, j + 1 == J ? b + 1 : b, j + 1 == J ? 0 : j + 1);
          row_value(b, j, [&](const auto& value) {
            using Value = std::decay_t<decltype(value)>;
            acc_t s, m;
            int32_t arg = 0;
            by_depth<kArg ? kLongArgDepth : 4>(K, [&](auto depth) {
              row_reduce<kMax, acc_t, Value, decltype(depth)::value, kArg>(value, K, &s, &m, &arg);
            });
            store(r, i, s, m, arg, kMax);
          }, io);
        });
      }
    });
  });
}

// The rows short_rows reduces: ``rows(b, j)`` gives row (b, j) as a Row with ``vec(k)``, the 8
// values from k on, and ``row(k)``, one value (the max's NaN rescan). The values are rows()'s row
// values for the same pass, operation for operation. The backward's dots through short_rows
// instead of rows(), alone, 8 x 2048 x 7^2, one thread, 25th percentile of 1500 calls, old / new
// in alternating processes (2 each, Zen 5 VM), same bits: dy * x 0.131 / 0.103-0.106 ms, CBAM's
// (dy * sa + da + dm * [c == amc]) * x 0.327 / 0.255, and 0.136-0.138 with eight rows of a sample
// read as a Group (``group(b, j)``, where a Rows has it: the spatial terms loaded once for the
// eight rows, two row pointers instead of sixteen).
// pool_hw: the input's rows.
struct PlainRows {
  const float* A;
  int64_t sb, sj;
  struct Row {
    const float* a;
    Vec<float>::V vec(int64_t k) const { return load8(a + k); }
    float operator()(int64_t k) const { return a[k]; }
  };
  Row operator()(int64_t b, int64_t j) const { return {A + b * sb + j * sj}; }
};
// dot_hw (SE's and ECA's backward): dy * x.
struct DotRows {
  const float *A, *X;
  int64_t asb, asj, xsb, xsj;
  struct Row {
    const float *a, *x;
    Vec<float>::V vec(int64_t k) const { return load8(a + k) * load8(x + k); }
    float operator()(int64_t k) const { return a[k] * x[k]; }
  };
  Row operator()(int64_t b, int64_t j) const { return {A + b * asb + j * asj, X + b * xsb + j * xsj}; }
  // Rows j..j + 7 of sample b, from two pointers and the strides (not sixteen pointers).
  struct Group {
    const float *a, *x;
    int64_t asj, xsj;
    Vec<float>::V vec(int q, int64_t k) const { return load8(a + q * asj + k) * load8(x + q * xsj + k); }
  };
  Group group(int64_t b, int64_t j) const { return {A + b * asb + j * asj, X + b * xsb + j * xsj, asj, xsj}; }
};
// dot_hw with CBAM's spatial terms: (dy * sa + da + dm * [c == amc]) * x, sa..amc rows of P.
struct MidDotRows {
  const float *A, *X;
  int64_t asb, asj, xsb, xsj, P;
  Terms<float> t;
  struct Row {
    const float *a, *x, *sa, *da, *dm;
    const int32_t* amc;
    int32_t c;
    Vec<float>::V vec(int64_t k) const {
      Vec<float>::V v = load8(a + k) * load8(sa + k) + load8(da + k);
      v += load8(amc + k) == Vec<float>::I{} + c ? load8(dm + k) : Vec<float>::V{};
      return v * load8(x + k);
    }
    float operator()(int64_t k) const {
      float v = a[k] * sa[k] + da[k];
      v += amc[k] == c ? dm[k] : 0.f;
      return v * x[k];
    }
  };
  Row operator()(int64_t b, int64_t j) const {
    const int64_t bp = b * P;
    return {A + b * asb + j * asj, X + b * xsb + j * xsj, t.sa + bp, t.da + bp, t.dm + bp, t.amc + bp,
            static_cast<int32_t>(j)};
  }
  // Rows j..j + 7 of sample b: row j's pointers and the strides; the spatial terms' loads are the
  // same for the eight (inlined, the compiler reads them once).
  struct Group {
    Row r;
    int64_t asj, xsj;
    Vec<float>::V vec(int q, int64_t k) const {
      return Row{r.a + q * asj, r.x + q * xsj, r.sa, r.da, r.dm, r.amc, r.c + q}.vec(k);
    }
  };
  Group group(int64_t b, int64_t j) const { return {(*this)(b, j), asj, xsj}; }
};

// The sums of fp32 rows [begin, end) of K elements, 8 <= K < 64 (7x7 maps), row i = (b, j) at
// A + b * sb + j * sj, divided by ``divisor`` into out_sum[i], with kMax their maxima into
// out_max[i] (with kArg the first index of each into out_arg[i]): eight rows at a time in one loop,
// with row_lanes' lanes at depth 1 (by_depth's for K < 64: full vectors, then the last W elements
// with those already summed masked out), folded by fold_rows8 (the last rows by fold_row): the same
// bits as rows(). rows() on these took ~45% longer than a plain sum over x: its row callbacks
// reloaded their captured values and the batch counter from memory on every row. The lane loop is
// written out here, not called through row_lanes, so that the eight rows' chains sit side by side:
// row_lanes row after row gave the same bits but ran 8 x 512 x 5^2 in 0.010 ms against 0.007.
// The max's NaN rule as in rows(): a row whose total is not finite (a NaN or infinite input, as
// rows()'s lanes_finite test; finite lanes summing past the float range take fold_row, which gives
// fold_rows8's bits) is folded again alone and rescanned for its first NaN.
template <bool kMax, bool kArg, typename Rows>
inline void short_rows(int64_t begin, int64_t end, int64_t J, int64_t K, const Rows& rows, float divisor,
                       float* out_sum, float* out_max, int32_t* out_arg) {
  using V = Vec<float>::V;
  using I = Vec<float>::I;
  I lane;
  for (int l = 0; l < 8; ++l) lane[l] = l;
  const int64_t kv = K / 8 * 8;
  const I tail_at = lane + static_cast<int32_t>(K - 8);
  const I unseen = tail_at >= static_cast<int32_t>(kv);  // the tail's new lanes
  const V lowest = V{} - std::numeric_limits<float>::infinity();
  V s[8], m[8];
  I ix[8];
  // Row q's lanes: row_lanes<kMax, float, ., 1, kArg>'s order, step for step.
  const auto start = [&](int q) {
    s[q] = V{};
    if constexpr (kMax) m[q] = lowest;
    if constexpr (kArg) ix[q] = I{};
  };
  const auto step = [&](int q, V v, V added, I at) {
    s[q] += added;
    if constexpr (kMax) {
      const auto better = v > m[q];
      m[q] = better ? v : m[q];
      if constexpr (kArg) ix[q] = better ? at : ix[q];
    }
  };
  // Row i's outputs from its lanes alone, with the NaN rule.
  const auto fold_alone = [&](int q, const typename Rows::Row& row, int64_t i) {
    float total, mx = 0.f;
    int32_t arg = 0;
    fold_row<kMax, kArg, float>(s[q], m[q], ix[q], &total, &mx, &arg);
    if constexpr (kMax) {
      nan_rescan<kArg>(row, K, total, &mx, &arg);
      out_max[i] = mx;
      if constexpr (kArg) out_arg[i] = arg;
    }
    out_sum[i] = total / divisor;
  };
  int64_t b = begin / J, j = begin % J, i = begin;
  const auto next_row = [&]() {
    const auto row = rows(b, j);
    if (++j == J) {
      j = 0;
      ++b;
    }
    return row;
  };
  // The eight rows side by side (independent chains), their vectors from ``vec(q, k)``.
  const auto sweep = [&](const auto& vec) {
    for (int64_t k = 0; k < kv; k += 8)
      for (int q = 0; q < 8; ++q) {
        const V v = vec(q, k);
        step(q, v, v, lane + static_cast<int32_t>(k));
      }
    if (kv < K)
      for (int q = 0; q < 8; ++q) {
        const V v = vec(q, K - 8);
        step(q, v, unseen ? v : V{}, tail_at);
      }
  };
  for (; i + 8 <= end; i += 8) {
    const int64_t b0 = b, j0 = j;
    typename Rows::Row rp[8];
    for (int q = 0; q < 8; ++q) rp[q] = next_row();
    for (int q = 0; q < 8; ++q) start(q);
    bool grouped = false;
    if constexpr (requires { rows.group(b0, j0); }) {
      if (j0 + 8 <= J) {  // the eight rows in one sample: what they share is read once for all
        const auto g = rows.group(b0, j0);
        sweep([&](int q, int64_t k) { return g.vec(q, k); });
        grouped = true;
      }
    }
    if (!grouped) sweep([&](int q, int64_t k) { return rp[q].vec(k); });
    V sum, mx;
    I arg;
    fold_rows8<kMax, kArg>(s, m, ix, sum, mx, arg);
    if (kMax && !lanes_finite(sum)) {
      for (int q = 0; q < 8; ++q) fold_alone(q, rp[q], i + q);
      continue;
    }
    sum /= V{} + divisor;
    __builtin_memcpy(out_sum + i, &sum, sizeof(sum));
    if constexpr (kMax) {
      __builtin_memcpy(out_max + i, &mx, sizeof(mx));
      if constexpr (kArg) __builtin_memcpy(out_arg + i, &arg, sizeof(arg));
    }
  }
  for (; i < end; ++i) {
    const auto row = next_row();
    start(0);
    for (int64_t k = 0; k < kv; k += 8) {
      const V v = row.vec(k);
      step(0, v, v, lane + static_cast<int32_t>(k));
    }
    if (kv < K) {
      const V v = row.vec(K - 8);
      step(0, v, unseen ? v : V{}, tail_at);
    }
    fold_alone(0, row, i);
  }
}

// short_rows' clones: the sums alone in AVX2 (no faster in x86-64-v4: 0.055-0.056 ms at 8 x 2048
// x 7^2, one thread), the max in x86-64-v4 where the CPU has it: its eight rows' 24 vectors (sum,
// max, index) fit AVX-512's 32 registers, where AVX2's 16 spill (with the index: eight rows at a
// time in AVX2 0.167 ms, four and four 0.158, eight in x86-64-v4 0.117-0.128; without it 0.083 /
// 0.079-0.082).
template <typename Rows>
AF_VEC void short_row_sums(int64_t begin, int64_t end, int64_t J, int64_t K, const Rows& rows, float divisor,
                           float* out_sum) {
  short_rows<false, false>(begin, end, J, K, rows, divisor, out_sum, nullptr, nullptr);
}
template <bool kArg>
AF_VEC4 void short_row_maxima(int64_t begin, int64_t end, int64_t J, int64_t K, const PlainRows& rows, float divisor,
                              float* out_sum, float* out_max, int32_t* out_arg) {
  short_rows<true, kArg>(begin, end, J, K, rows, divisor, out_sum, out_max, out_arg);
}

// pool_c of one fp32 NCHW sample of 8-63 positions (7x7 maps): the sum (and with kMax the max and
// with kArg its first index) over the K channels of A[k * sc + j] (times ca[k] with kCa) for each
// of the J positions, into sum/mx/arg[0, J). The outputs stay in vector registers for the whole
// sweep over the channels: vectors of 8 positions, the last one at J - 8 (overlapping the one
// before when 8 does not divide J: its lanes hold the same values). Each output adds and compares
// its channels in k order, as tile_reduce does: the same bits. tile_reduce loads and stores its
// outputs every four channels and ends each 49-wide row in scalar code. Alone, fp32 8 x 2048 x
// 7^2, one thread, 25th percentile of 1500 calls, old / new in alternating processes (3 each, Zen 5
// VM): pool_c of x * ca 0.046-0.048 / 0.039 ms, with max and index 0.083-0.084 / 0.067. The sweep
// holds up to 24 vectors (8 x sum, max, index): an x86-64-v4 clone (32 vector registers) where the
// CPU has AVX-512. In passes of 3-4 vectors over blocks of 64 channels it was slower than
// tile_reduce (0.054 / 0.087 ms), and all vectors in one pass with AVX2's 16 registers gained 7%.
template <bool kMax, bool kArg, bool kCa, int kVectors>
AF_VEC4 void short_tiles_n(const float* A, int64_t sc, int64_t K, int64_t J, const float* ca, float* sum, float* mx,
                           int32_t* arg) {
  using V = Vec<float>::V;
  using I = Vec<float>::I;
  V s[kVectors], m[kVectors];
  I ix[kVectors];
  int64_t at[kVectors];
  for (int q = 0; q < kVectors; ++q) {
    s[q] = V{};
    m[q] = V{} - std::numeric_limits<float>::infinity();
    ix[q] = I{};
    at[q] = q < J / 8 ? q * 8 : J - 8;
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* row = A + k * sc;
    const I kk = I{} + static_cast<int32_t>(k);
    for (int q = 0; q < kVectors; ++q) {
      V v;
      __builtin_memcpy(&v, row + at[q], sizeof(v));
      if constexpr (kCa) v *= V{} + ca[k];
      s[q] += v;
      if constexpr (kMax) {
        const auto better = v > m[q];
        m[q] = better ? v : m[q];
        if constexpr (kArg) ix[q] = better ? kk : ix[q];
      }
    }
  }
  for (int q = 0; q < kVectors; ++q) {
    __builtin_memcpy(sum + at[q], &s[q], sizeof(V));
    if constexpr (kMax) __builtin_memcpy(mx + at[q], &m[q], sizeof(V));
    if constexpr (kArg) __builtin_memcpy(arg + at[q], &ix[q], sizeof(I));
  }
  if constexpr (kMax)
    tile_nan_rule<kArg>([&](int64_t k, int64_t j) { return kCa ? A[k * sc + j] * ca[k] : A[k * sc + j]; }, NoStage(),
                        K, J, sum, mx, arg);
}

template <bool kMax, bool kArg, bool kCa>
void short_tiles(const float* A, int64_t sc, int64_t K, int64_t J, const float* ca, float* sum, float* mx,
                 int32_t* arg) {
  switch ((J + 7) / 8) {
#define ATTNFUSED_SHORT_TILES(n) \
  case n:                        \
    return short_tiles_n<kMax, kArg, kCa, n>(A, sc, K, J, ca, sum, mx, arg);
    ATTNFUSED_SHORT_TILES(1)
    ATTNFUSED_SHORT_TILES(2)
    ATTNFUSED_SHORT_TILES(3)
    ATTNFUSED_SHORT_TILES(4)
    ATTNFUSED_SHORT_TILES(5)
    ATTNFUSED_SHORT_TILES(6)
    ATTNFUSED_SHORT_TILES(7)
    ATTNFUSED_SHORT_TILES(8)
#undef ATTNFUSED_SHORT_TILES
  }
}

// Tiles: for each b and tile of kTile kept indices, reduce ``value(k, j)`` over k:
// ``tile_value(b, j0, n, slots, run)`` calls ``run(value, stage)`` (the stage of tile_reduce, common.h;
// ``slots``: room for two inputs' TileRows<Half>). The max over bf16 inputs goes to
// tile_reduce_chunks (common.h).
template <typename scalar_t, typename acc_t, typename TileValue>
void tiles(const ReduceArgs<acc_t>& r, int64_t J, int64_t K, bool want_max, TileValue tile_value) {
  constexpr bool kChunks = std::is_same_v<scalar_t, c10::BFloat16>;
  const int64_t n_tiles = (J + kTile - 1) / kTile;
  at::parallel_for(0, r.B * n_tiles, grain_for(kTile * K), [&](int64_t begin, int64_t end) {
    TileBuffers<acc_t> buf;
    std::vector<float> slots(std::is_same_v<scalar_t, Half> ? 2 * kStageRows * kTile : 0);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / n_tiles, j0 = (i % n_tiles) * kTile, n = std::min(kTile, J - j0);
      tile_value(b, j0, n, slots.data(), [&](auto value, auto stage) {
        with_modes(r, want_max, [&](auto max_flag, auto arg_flag) {
          constexpr bool kMax = decltype(max_flag)::value, kArg = decltype(arg_flag)::value;
          if constexpr (kChunks && kMax) {  // (bf16 rows stage nothing)
            tile_reduce_chunks<kMax, acc_t, decltype(value), kArg>(value, K, n, buf.sum.data(), buf.mx.data(),
                                                                    buf.arg.data());
          } else {
            tile_reduce<kMax, acc_t, decltype(value), kArg, decltype(stage)>(value, K, n, buf.sum.data(),
                                                                             buf.mx.data(), buf.arg.data(), stage);
          }
        });
      });
      for (int64_t j = 0; j < n; ++j) store(r, b * J + j0 + j, buf.sum[j], buf.mx[j], buf.arg[j], want_max);
    }
  });
}

// Any other strides: ``value(b, j, k)`` read element by element, as rows when k is the faster
// axis (``k_fast``), else as tiles.
template <typename scalar_t, typename acc_t, typename Value>
void generic(const ReduceArgs<acc_t>& r, int64_t J, int64_t K, bool k_fast, bool want_max, const Value& value) {
  if (k_fast) {
    rows<scalar_t>(r, J, K, want_max, [&](int64_t b, int64_t j, auto&& run, auto&) {
      run([&](int64_t k) { return value(b, j, k); });
    });
  } else {
    tiles<scalar_t>(r, J, K, want_max, [&](int64_t b, int64_t j0, int64_t, float*, auto&& run) {
      run([&](int64_t k, int64_t j) { return value(b, j0 + j, k); }, NoStage());
    });
  }
}

template <typename scalar_t, typename acc_t>
void reduce_hw_impl(const ReduceArgs<acc_t>& r) {
  const int64_t C = r.C, P = r.P;
  const View a = r.a, x = r.x;
  const Terms<acc_t> t = r.t;
  const bool has_x = r.has_x, want_max = r.want_max && !r.has_x;
  const bool mid = t.sa && t.da && t.dm;  // CBAM's backward passes all three, SE's none
  const bool p_fast = a.sp <= a.sc;
  const bool unit = p_fast ? a.sp == 1 && (!has_x || x.sp == 1) : a.sc == 1 && (!has_x || x.sc == 1);
  const auto* A = static_cast<const scalar_t*>(a.data);
  const auto* X = static_cast<const scalar_t*>(x.data);
  if (!unit || (has_x && !mid && (t.sa || t.da || t.dm))) {  // any other layout / term set
    generic<scalar_t>(r, C, P, p_fast, want_max, [&](int64_t b, int64_t c, int64_t p) -> acc_t {
      acc_t v = static_cast<acc_t>(A[b * a.sb + c * a.sc + p * a.sp]);
      if (has_x) v = mid_term(v, t, b * P + p, c) * static_cast<acc_t>(X[b * x.sb + c * x.sc + p * x.sp]);
      return v;
    });
    return;
  }
  if constexpr (std::is_same_v<scalar_t, Half>) {
    // The avg pool of fp16 NCHW rows (SE avg, ECA) summed straight from the fp16 values (half.cpp),
    // not converted into RowIO's buffer first; same bits. Alone, batch 8, one thread, fastest of
    // 60 (Zen 5 VM, old / new .so in alternating processes, 3 each), ms: 2048 x 7^2 0.18-0.24 /
    // 0.075 (fp32: 0.080), 512 x 28^2 0.18-0.27 / 0.12 (0.12), 256 x 56^2 0.36 / 0.23 (0.35).
    if (p_fast && !has_x && !want_max && half_sums_direct()) {
      at::parallel_for(0, r.B * C, grain_for(P), [&](int64_t begin, int64_t end) {
        for_rows(begin, end, C, [&](int64_t i, int64_t b, int64_t c) {
          r.out_sum[i] = half_row_sum(A + b * a.sb + c * a.sc, P) / r.divisor;
        });
      });
      return;
    }
  }
  if constexpr (std::is_same_v<scalar_t, float>) {
    // The pools of fp32 NCHW 7x7 maps (short_rows): SE's, ECA's and CBAM's channel pools. Alone,
    // one thread, 25th percentile of 500 calls, old / new in alternating processes (7 each, Zen 5
    // VM), same bits: the avg pool at 8 x 2048 x 7^2 0.069-0.103 / 0.044-0.061 ms, 8 x 512 x 5^2
    // 0.017-0.025 / 0.007-0.012 (session 18). With the max (rows() before, 25th percentile of 1500
    // calls, alternating processes, 2 each): 8 x 2048 x 7^2 0.149-0.150 / 0.081-0.082; with its
    // index 0.199 / 0.126-0.128 (short_row_maxima's clones).
    if (p_fast && P >= 8 && P < 64) {
      const auto sums = [&](const auto& rows) {
        at::parallel_for(0, r.B * C, grain_for(P), [&](int64_t begin, int64_t end) {
          short_row_sums(begin, end, C, P, rows, r.divisor, r.out_sum);
        });
      };
      const PlainRows plain{A, a.sb, a.sc};
      if (has_x && mid) {
        sums(MidDotRows{A, X, a.sb, a.sc, x.sb, x.sc, P, t});
      } else if (has_x) {
        sums(DotRows{A, X, a.sb, a.sc, x.sb, x.sc});
      } else if (!want_max) {
        sums(plain);
      } else {
        with_modes(r, want_max, [&](auto, auto arg_flag) {
          at::parallel_for(0, r.B * C, grain_for(P), [&](int64_t begin, int64_t end) {
            short_row_maxima<decltype(arg_flag)::value>(begin, end, C, P, plain, r.divisor, r.out_sum, r.out_max,
                                                        r.out_arg);
          });
        });
      }
      return;
    }
  }
  if (p_fast) {  // rows of P per (b, c)
    // The terms as compile-time flags: no per-row branches on them (and loads of them) in the row
    // loop. With the sums folded eight rows at a time (rows), fp32 NCHW at 8 x 2048 x 7^2, one
    // thread, 25th percentile of 1500 calls, old / new in alternating processes (3 each): pool
    // 0.074-0.076 / 0.063-0.065 ms, dot 0.109-0.111 / 0.093-0.094 (at 14^2 and 28^2 within the
    // noise); the max with its index (folded eight rows at a time too) 0.181-0.186 / 0.163-0.169,
    // at 14^2 0.180-0.187 / 0.164-0.165, at 28^2 0.271-0.289 / 0.218-0.225.
    const auto p_rows = [&](auto hx, auto md) {
      constexpr bool kHasX = decltype(hx)::value, kMid = decltype(md)::value;
      rows<scalar_t>(r, C, P, want_max, [&](int64_t b, int64_t c, auto&& run, auto& io) {
        const auto* ra = io.in([&](int64_t bb, int64_t cc) { return A + bb * a.sb + cc * a.sc; }, b, c, P, 0);
        if constexpr (!kHasX) {
          run([=](int64_t p) { return static_cast<acc_t>(ra[p]); });
          return;
        }
        const auto* rx = io.in([&](int64_t bb, int64_t cc) { return X + bb * x.sb + cc * x.sc; }, b, c, P, 1);
        if constexpr (!kMid) {
          run([=](int64_t p) { return static_cast<acc_t>(ra[p]) * static_cast<acc_t>(rx[p]); });
        } else {
          const acc_t *sa = t.sa + b * P, *da = t.da + b * P, *dm = t.dm + b * P;
          const int32_t* amc = t.amc + b * P;
          const int32_t c32 = static_cast<int32_t>(c);
          run([=](int64_t p) {
            acc_t v = static_cast<acc_t>(ra[p]) * sa[p] + da[p];
            const acc_t dmp = dm[p];  // unconditional load: a conditional one blocks vectorisation
            v += amc[p] == c32 ? dmp : acc_t(0);
            return v * static_cast<acc_t>(rx[p]);
          });
        }
      });
    };
    if (!has_x) {
      p_rows(std::false_type{}, std::false_type{});
    } else if (!mid) {
      p_rows(std::true_type{}, std::false_type{});
    } else {
      p_rows(std::true_type{}, std::true_type{});
    }
    return;
  }
  // channel tiles, rows of P
  tiles<scalar_t>(r, C, P, want_max, [&](int64_t b, int64_t c0, int64_t n, float* slots, auto&& run) {
    const TileRows<scalar_t> ra(A + b * a.sb + c0, a.sp, n, slots);
    if (!has_x) {
      run([=](int64_t p, int64_t j) { return static_cast<acc_t>(ra.at(p, j)); },
          [=](int64_t k0, int64_t m) { ra.stage(k0, m); });
      return;
    }
    const TileRows<scalar_t> rx(X + b * x.sb + c0, x.sp, n, slots + kStageRows * n);
    auto stage = [=](int64_t k0, int64_t m) {
      ra.stage(k0, m);
      rx.stage(k0, m);
    };
    if (!mid) {
      run([=](int64_t p, int64_t j) { return static_cast<acc_t>(ra.at(p, j)) * static_cast<acc_t>(rx.at(p, j)); },
          stage);
    } else {
      const acc_t *sa = t.sa + b * P, *da = t.da + b * P, *dm = t.dm + b * P;
      const int32_t* amc = t.amc + b * P;
      const int64_t c0_ = c0;
      run([=](int64_t p, int64_t j) {
        acc_t v = static_cast<acc_t>(ra.at(p, j)) * sa[p] + da[p];
        const acc_t dmp = dm[p];
        v += amc[p] == c0_ + j ? dmp : acc_t(0);
        return v * static_cast<acc_t>(rx.at(p, j));
      }, stage);
    }
  });
}

template <typename scalar_t, typename acc_t>
void reduce_c_impl(const ReduceArgs<acc_t>& r) {
  const int64_t C = r.C, P = r.P;
  const View a = r.a, x = r.x;
  const acc_t* ca = r.t.ca;
  const bool has_x = r.has_x, want_max = r.want_max && !r.has_x;
  const bool c_fast = a.sc < a.sp;
  const bool unit = c_fast ? a.sc == 1 && (!has_x || x.sc == 1) : a.sp == 1 && (!has_x || x.sp == 1);
  const auto* A = static_cast<const scalar_t*>(a.data);
  const auto* X = static_cast<const scalar_t*>(x.data);
  // x1 = x * ca, rounded to the input dtype when eager would materialise it (pool on half types).
  auto x1 = [](acc_t v, acc_t g, auto round) {
    v *= g;
    if constexpr (decltype(round)::value) v = static_cast<acc_t>(static_cast<scalar_t>(v));
    return v;
  };
  if (!unit) {
    generic<scalar_t>(r, P, C, c_fast, want_max, [&](int64_t b, int64_t p, int64_t c) -> acc_t {
      acc_t v = static_cast<acc_t>(A[b * a.sb + c * a.sc + p * a.sp]);
      if (ca) {
        v *= ca[b * C + c];
        if (r.round_x1) v = static_cast<acc_t>(static_cast<scalar_t>(v));
      }
      if (has_x) v *= static_cast<acc_t>(X[b * x.sb + c * x.sc + p * x.sp]);
      return v;
    });
    return;
  }
  with_flag(ca != nullptr, [&](auto has_ca) {
    with_flag(r.round_x1, [&](auto round) {
      constexpr bool kCa = decltype(has_ca)::value, kRoundedX1 = kCa && decltype(round)::value;  // x * ca, rounded
      if (c_fast) {  // rows of C per (b, p)
        rows<scalar_t, kCa ? 3 : 4>(r, P, C, want_max, [&](int64_t b, int64_t p, auto&& run, auto& io) {
          const auto* ra = io.in([&](int64_t bb, int64_t pp) { return A + bb * a.sb + pp * a.sp; }, b, p, C, 0);
          const acc_t* g = ca + b * C;
          if (has_x) {
            const auto* rx = io.in([&](int64_t bb, int64_t pp) { return X + bb * x.sb + pp * x.sp; }, b, p, C, 1);
            run([=](int64_t c) {
              const acc_t v = static_cast<acc_t>(ra[c]);
              return (kCa ? v * g[c] : v) * static_cast<acc_t>(rx[c]);
            });
          } else if constexpr (kRoundedX1) {
            const auto x1r = io.rounded(C, 1, [&](int64_t c) { return static_cast<acc_t>(ra[c]) * g[c]; });
            run([=](int64_t c) { return static_cast<acc_t>(x1r[c]); });
          } else {
            run([=](int64_t c) {
              const acc_t v = static_cast<acc_t>(ra[c]);
              return kCa ? x1(v, g[c], round) : v;
            });
          }
        });
        return;
      }
      if constexpr (std::is_same_v<scalar_t, float>) {
        // 7x7 maps: short_tiles, one sample a task.
        if (!has_x && P >= 8 && P < 64) {
          with_modes(r, want_max, [&](auto max_flag, auto arg_flag) {
            constexpr bool kMax = decltype(max_flag)::value, kArg = decltype(arg_flag)::value;
            at::parallel_for(0, r.B, grain_for(C * P), [&](int64_t b0, int64_t b1) {
              float sum[64] = {}, mx[64] = {};  // (store reads all three; kMax / kArg fill mx / arg)
              int32_t arg[64] = {};
              for (int64_t b = b0; b < b1; ++b) {
                short_tiles<kMax, kArg, kCa>(A + b * a.sb, a.sc, C, P, kCa ? ca + b * C : nullptr, sum, mx, arg);
                for (int64_t j = 0; j < P; ++j) store(r, b * P + j, sum[j], mx[j], arg[j], kMax);
              }
            });
          });
          return;
        }
      }
      // position tiles, rows of C
      tiles<scalar_t>(r, P, C, want_max, [&](int64_t b, int64_t p0, int64_t n, float* slots, auto&& run) {
        const TileRows<scalar_t> ra(A + b * a.sb + p0, a.sc, n, slots);
        const acc_t* g = ca + b * C;
        if (has_x) {
          const TileRows<scalar_t> rx(X + b * x.sb + p0, x.sc, n, slots + kStageRows * n);
          run([=](int64_t c, int64_t j) {
            const acc_t v = static_cast<acc_t>(ra.at(c, j));
            return (kCa ? v * g[c] : v) * static_cast<acc_t>(rx.at(c, j));
          }, [=](int64_t k0, int64_t m) {
            ra.stage(k0, m);
            rx.stage(k0, m);
          });
        } else if constexpr (std::is_same_v<scalar_t, Half> && kRoundedX1) {
          // x * ca rounded as the rows are staged (F16C), not per element in the fold.
          run([=](int64_t c, int64_t j) { return static_cast<acc_t>(ra.at(c, j)); }, [=](int64_t k0, int64_t m) {
            ra.stage(k0, m);
            for (int64_t k = k0; k < k0 + m; ++k) ra.scale_round(k, g[k]);
          });
        } else {
          run([=](int64_t c, int64_t j) {
            const acc_t v = static_cast<acc_t>(ra.at(c, j));
            return kCa ? x1(v, g[c], round) : v;
          }, [=](int64_t k0, int64_t m) { ra.stage(k0, m); });
        }
      });
    });
  });
}

}  // namespace

// One input dtype's reductions, overloaded on a value of its type (reduce.cpp dispatches): each
// reduce_<dtype>.cpp defines its pair with ATTNFUSED_REDUCE_KERNELS, and the kernels behind it stay
// internal to that file.
void reduce_hw_of(float, const ReduceArgs<float>& r);
void reduce_c_of(float, const ReduceArgs<float>& r);
void reduce_hw_of(Half, const ReduceArgs<float>& r);
void reduce_c_of(Half, const ReduceArgs<float>& r);
void reduce_hw_of(c10::BFloat16, const ReduceArgs<float>& r);
void reduce_c_of(c10::BFloat16, const ReduceArgs<float>& r);
void reduce_hw_of(double, const ReduceArgs<double>& r);
void reduce_c_of(double, const ReduceArgs<double>& r);

#define ATTNFUSED_REDUCE_KERNELS(scalar_t, acc_t)                                                            \
  void reduce_hw_of(scalar_t, const ReduceArgs<acc_t>& r) { reduce_hw_impl<scalar_t, acc_t>(r); } \
  void reduce_c_of(scalar_t, const ReduceArgs<acc_t>& r) { reduce_c_impl<scalar_t, acc_t>(r); }

}  // namespace cpu
}  // namespace attnfused
