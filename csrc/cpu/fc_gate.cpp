// CPU kernels of the "fc" channel gate (SE's MLP, CBAM's shared MLP), the products of
// csrc/cuda/fc_gate.cu's header on CPU:
//
//     h = s W1^T + b1   [J = n B, R]     a[b] = sum_i act(h[i B + b])   z = a W2^T + n b2   [B, C]
//     backward: dz = gate'(dca); dW2 = dz^T a; db2 = n sum_b dz; dr = dz W2; dh = act'(h) dr;
//               dW1 = dh^T s; db1 = sum_j dh; ds = dh W1
//
// Why not aten's GEMMs (MKL): every product has one side of only B or n B rows (8-16 at batch 8),
// so each is one read or write of a C x R weight (1 MB at C = 2048, R = 128) with 8-16
// multiply-adds per weight element, and MKL's small-M paths varied by machine: 27 us per product on
// the Intel dev VM, 126 us on one thread and 440 us on two on the AMD EPYC (Zen 3) dev VM
// (8 x 2048 by 128 x 2048, transposed weight as F.linear passes it). The gate also cost ~10
// aten ops per block, each a round trip through Python and the dispatcher.
//
// Three loop shapes cover the six products:
//   - dot_rows, out[i][j] = sum_k A[i][k] B[j][k] (h, z: both operands run along k in memory):
//     4 x 2 register tiles (6 loads per 8 vector multiply-adds), W partial sums per output (lane l
//     takes k = l mod W) added in a fixed tree;
//   - outer_rows, out[i][j] = sum_k A[k][i] B[k][j] (dW2, dW1: k over the few stacked rows): 4 x 2
//     vector register tiles, k inner, each task writing whole rows of the gradient;
//   - stream_rows, out[i][j] = sum_k A[i][k] B[k][j] (dr, ds: B a weight, read along its rows):
//     blocks of out summed in a contiguous buffer in L1 while B's rows stream by.
// In fp32 on CPUs with AVX-512F each runs in 64-byte vectors (AF_WIDE below), with the same sums.
// Every sum has a fixed order written in the C++ (no reassociation, no FMA clone: common.h), so a
// result does not depend on the thread count, the tile an output falls in, or the machine
// (tests/test_extension.py compares one thread with several, bit for bit). On many rows MKL's
// blocked GEMMs win: the provider hands gates of more than 64 stacked rows to aten
// (attnfused/kernels/extension.py, fc_gate_max_rows).
// Sigmoids (the gate, silu's) are the caller's (aten's vectorised exp, ops.cpp); here only the
// products and the exp-free elementwise steps.
#include <cstdlib>
#include <string>
#include <vector>

#include "../entry.h"
#include "common.h"

namespace attnfused {
namespace cpu {
namespace {

constexpr int kTI = 4, kTJ = 2;  // register tile: 4 rows x 2 columns (dot_rows) or 2 vectors (outer_rows)

// Vectors of VB bytes: 32 (Vec's width, AF_VEC's clones) or 64 (AF_WIDE below).
template <typename acc_t, int VB = 32>
struct VecN {
  typedef acc_t V __attribute__((vector_size(VB)));
  typedef typename Vec<acc_t>::Index I __attribute__((vector_size(VB)));
  static constexpr int W = VB / static_cast<int>(sizeof(acc_t));
};

template <typename acc_t>
using VecT = typename Vec<acc_t>::V;

template <typename V, typename acc_t>
inline V loadv(const acc_t* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename acc_t>
inline VecT<acc_t> loadu(const acc_t* p) {
  return loadv<VecT<acc_t>>(p);
}

template <typename V, typename acc_t>
inline void storeu(acc_t* p, V v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// x in every lane, as one broadcast (a loop filling the lanes compiled to 8 lane inserts).
template <typename acc_t, int VB = 32>
inline typename VecN<acc_t, VB>::V splat(acc_t x) {
  typename VecN<acc_t, VB>::V v{};
  v[0] = x;
  return __builtin_shuffle(v, typename VecN<acc_t, VB>::I{});
}

// The lanes' sums of the kTI x kTJ accumulators of a dot_rows tile, sums[i kTJ + j], each a fixed
// tree over adjacent pairs, ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) for 8 lanes. For
// float the 8 accumulators are reduced together, transposed by shuffles (the pattern of AVX's
// vhaddps): ~20 vector operations where lane-by-lane folds took ~100 scalar ones, which on z's short
// sums (R = 128) cost as much as the products. fp64 folds lane by lane, in the same tree.
template <typename acc_t>
inline void lane_sums(const VecT<acc_t> (&acc)[kTI][kTJ], acc_t* sums) {
  constexpr int W = Vec<acc_t>::W;
  if constexpr (std::is_same_v<acc_t, float> && W == 8 && kTI * kTJ == 8) {
    using V = VecT<float>;
    using I = typename Vec<float>::I;
    const auto hadd = [](V x, V y) {  // [x0+x1, x2+x3, y0+y1, y2+y3, x4+x5, x6+x7, y4+y5, y6+y7]
      return __builtin_shuffle(x, y, I{0, 2, 8, 10, 4, 6, 12, 14}) + __builtin_shuffle(x, y, I{1, 3, 9, 11, 5, 7, 13, 15});
    };
    const V* v = &acc[0][0];
    const V q0 = hadd(hadd(v[0], v[1]), hadd(v[2], v[3]));  // [lo(v0..v3), hi(v0..v3)], lo = lanes 0-3
    const V q1 = hadd(hadd(v[4], v[5]), hadd(v[6], v[7]));
    const V total = __builtin_shuffle(q0, q1, I{0, 1, 2, 3, 8, 9, 10, 11}) + __builtin_shuffle(q0, q1, I{4, 5, 6, 7, 12, 13, 14, 15});
    for (int m = 0; m < 8; ++m) sums[m] = total[m];
  } else {
    for (int i = 0; i < kTI; ++i)
      for (int j = 0; j < kTJ; ++j) {
        acc_t t[W];
        for (int l = 0; l < W; ++l) t[l] = acc[i][j][l];
        for (int w = W / 2; w >= 1; w /= 2)
          for (int l = 0; l < w; ++l) t[l] = t[2 * l] + t[2 * l + 1];
        sums[i * kTJ + j] = t[0];
      }
  }
}

// out[i][j] = sum_k A[i][k] B[j][k], rows of kTJ columns [j0, j1) x all rows: kTI x kTJ register
// tiles, rows inner (the tile's B rows stay in L1 while every row of A goes by). Rows and columns
// past the edge are clamped to the last real one (computed and dropped): no bounds checks in the loop.
template <typename acc_t>
AF_VEC void dot_rows_cols(int64_t jt0, int64_t jt1, int64_t M, int64_t N, int64_t K, const acc_t* A, const acc_t* B,
                          acc_t* out) {
  using V = VecT<acc_t>;
  constexpr int W = Vec<acc_t>::W;
  const int64_t Kv = K / W * W;
  for (int64_t jt = jt0; jt < jt1; ++jt) {
    const int64_t j0 = jt * kTJ;
    const acc_t* b[kTJ];
    for (int j = 0; j < kTJ; ++j) b[j] = B + std::min<int64_t>(j0 + j, N - 1) * K;
    for (int64_t i0 = 0; i0 < M; i0 += kTI) {
      const acc_t* a[kTI];
      for (int i = 0; i < kTI; ++i) a[i] = A + std::min<int64_t>(i0 + i, M - 1) * K;
      V acc[kTI][kTJ];
      for (int i = 0; i < kTI; ++i)
        for (int j = 0; j < kTJ; ++j) acc[i][j] = V{};
      for (int64_t k = 0; k < Kv; k += W) {
        V bv[kTJ];
        for (int j = 0; j < kTJ; ++j) bv[j] = loadu(b[j] + k);
        for (int i = 0; i < kTI; ++i) {
          const V av = loadu(a[i] + k);
          for (int j = 0; j < kTJ; ++j) acc[i][j] += av * bv[j];
        }
      }
      acc_t sums[kTI * kTJ];
      lane_sums<acc_t>(acc, sums);
      for (int i = 0; i < kTI && i0 + i < M; ++i)
        for (int j = 0; j < kTJ && j0 + j < N; ++j) {
          acc_t s = sums[i * kTJ + j];  // the lanes, then the tail in k order
          for (int64_t k = Kv; k < K; ++k) s += a[i][k] * b[j][k];
          out[(i0 + i) * N + j0 + j] = s;
        }
    }
  }
}

// AVX-512 versions of the float products (AF_WIDE: compiled for AVX-512F, run where the CPU has it,
// kWide), with the same sums as the AF_VEC loops element for element, so the same bits on any
// machine: outer_rows' and stream_rows' lanes are output columns (each a k-serial sum), which 64-byte
// vectors simply hold 16 of; dot_rows' 8 lanes per output (k mod 8) become the halves of a 64-byte
// vector, two rows of A against one row of B, folded in lane_sums' tree (lane_sums16). The build
// turns FMA contraction off (setup.py: AVX-512F brings FMA, which rounds once where these loops
// round twice). On the Zen 5 VM, the gate alone at 8 x 2048 by 128, fastest of 200 calls, one
// thread, 32-byte / 64-byte loops: forward 0.117-0.121 / 0.074-0.080 ms, backward 0.247-0.256 /
// 0.176-0.183 (benchmarks/results/cpu-2026-12-03-zen5-fc-avx512/). dot_rows_wide's tiles also end
// in four vector stores where dot_rows_cols' 4 x 2 tiles store single sums: a C++ copy of the
// latter spent ~1.3 ns an output outside the products (21 us for z's 8 x 2048 sums at K = 16, one
// thread), which z's short sums (K = R) felt most. ATTNFUSED_CPU_AVX512=0 (read once, at load)
// keeps the AF_VEC loops: how the tests compare the two.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define AF_WIDE __attribute__((target("avx512f"), flatten))
#define AF_WIDE_INLINE __attribute__((target("avx512f"), always_inline)) inline  // (lambdas drop the target)

bool wide_usable() {
  const char* env = std::getenv("ATTNFUSED_CPU_AVX512");
  if (env && std::string(env) == "0") return false;
  __builtin_cpu_init();  // (runs from a static initialiser: before the cpu model is otherwise set)
  return __builtin_cpu_supports("avx512f");  // (also checks that the OS saves the ZMM state)
}

const bool kWide = wide_usable();

using V8 = VecT<float>;
using V16 = VecN<float, 64>::V;
using I16 = VecN<float, 64>::I;

AF_WIDE_INLINE V16 join16(V8 lo, V8 hi) {
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// lane_sums' hadd in each 32-byte half.
AF_WIDE_INLINE V16 hadd(V16 x, V16 y) {
  return __builtin_shuffle(x, y, I16{0, 2, 16, 18, 4, 6, 20, 22, 8, 10, 24, 26, 12, 14, 28, 30}) +
         __builtin_shuffle(x, y, I16{1, 3, 17, 19, 5, 7, 21, 23, 9, 11, 25, 27, 13, 15, 29, 31});
}

// lane_sums' tree on 8 vectors of two 8-lane halves: t[m] is the sum of v[m]'s low half, t[8 + m]
// that of its high half, each ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) as lane_sums adds.
AF_WIDE_INLINE V16 lane_sums16(const V16 (&v)[8]) {
  const V16 q0 = hadd(hadd(v[0], v[1]), hadd(v[2], v[3]));
  const V16 q1 = hadd(hadd(v[4], v[5]), hadd(v[6], v[7]));
  return __builtin_shuffle(q0, q1, I16{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27}) +
         __builtin_shuffle(q0, q1, I16{4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31});
}

constexpr int kWJ = 8;  // dot_rows_wide's tile: 4 rows (2 pairs, a pair per vector) x 8 columns

// dot_rows_cols' sums for column tiles [t0, t1) of kWJ columns: acc[p][j] holds rows 2p and 2p + 1
// (low, high half) against column j, so a tile's 32 sums leave as four 8-float stores.
AF_WIDE void dot_rows_wide(int64_t t0, int64_t t1, int64_t M, int64_t N, int64_t K, const float* A, const float* B,
                           float* out) {
  const int64_t Kv = K / 8 * 8;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t j0 = t * kWJ;
    const float* b[kWJ];
    for (int j = 0; j < kWJ; ++j) b[j] = B + std::min<int64_t>(j0 + j, N - 1) * K;
    for (int64_t i0 = 0; i0 < M; i0 += 4) {
      const float* a[4];
      for (int i = 0; i < 4; ++i) a[i] = A + std::min<int64_t>(i0 + i, M - 1) * K;
      V16 acc[2][kWJ];
      for (int p = 0; p < 2; ++p)
        for (int j = 0; j < kWJ; ++j) acc[p][j] = V16{};
      for (int64_t k = 0; k < Kv; k += 8) {
        const V16 av[2] = {join16(loadu(a[0] + k), loadu(a[1] + k)), join16(loadu(a[2] + k), loadu(a[3] + k))};
        for (int j = 0; j < kWJ; ++j) {
          const V8 b8 = loadu(b[j] + k);
          const V16 bv = join16(b8, b8);
          for (int p = 0; p < 2; ++p) acc[p][j] += av[p] * bv;
        }
      }
      for (int p = 0; p < 2; ++p) {
        V16 s = lane_sums16(acc[p]);
        for (int64_t k = Kv; k < K; ++k) {  // the tail in k order, as dot_rows_cols adds it
          V16 ak, bk;
          for (int j = 0; j < kWJ; ++j) {
            ak[j] = a[2 * p][k];
            ak[8 + j] = a[2 * p + 1][k];
            bk[j] = bk[8 + j] = b[j][k];
          }
          s += ak * bk;
        }
        for (int h = 0; h < 2 && i0 + 2 * p + h < M; ++h) {
          float* o = out + (i0 + 2 * p + h) * N + j0;
          if (j0 + kWJ <= N) {
            storeu(o, h ? __builtin_shufflevector(s, s, 8, 9, 10, 11, 12, 13, 14, 15)
                        : __builtin_shufflevector(s, s, 0, 1, 2, 3, 4, 5, 6, 7));
          } else {
            for (int64_t j = 0; j < N - j0; ++j) o[j] = s[8 * h + j];
          }
        }
      }
    }
  }
}
#else
constexpr bool kWide = false;
#endif

// ~64 K multiply-adds per chunk of tasks at least: a tiny gate runs on the calling thread.
inline int64_t grain_for_macs(int64_t macs_per_task) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, macs_per_task));
}

// out [M, N] = A [M, K] B [N, K]^T, both row-major (h = s W1^T, z = a W2^T: both operands run along
// the summed axis). W partial sums per output, lane l taking k = l mod W.
template <typename acc_t>
void dot_rows(int64_t M, int64_t N, int64_t K, const acc_t* A, const acc_t* B, acc_t* out) {
  if (M == 0 || N == 0) return;
#if defined(AF_WIDE)
  if constexpr (std::is_same_v<acc_t, float>) {
    if (kWide) {
      at::parallel_for(0, (N + kWJ - 1) / kWJ, grain_for_macs(kWJ * M * K),
                       [&](int64_t t0, int64_t t1) { dot_rows_wide(t0, t1, M, N, K, A, B, out); });
      return;
    }
  }
#endif
  at::parallel_for(0, (N + kTJ - 1) / kTJ, grain_for_macs(kTJ * M * K),
                   [&](int64_t jt0, int64_t jt1) { dot_rows_cols(jt0, jt1, M, N, K, A, B, out); });
}

// Blocks that the two products below copy their operands into or sum in: contiguous, so that no
// two of their rows share cache sets. The operands' own rows are C or R elements apart, a power of
// two in every ResNet stage (8 KB at C = 2048): a 4-row tile of the gradient, the 8-16 rows of s
// and the rows of W1 it read all fell in the same L1 sets, and those products ran at half the
// speed of h's.
constexpr int64_t kIB = 64, kJC = 256;  // outer_rows' task: rows x columns of the gradient

// One register tile of outer_rows_body: ``rows`` (up to kTI) rows a[i] of A's part against NJ
// vectors of columns [j0, j0 + NJ W) of B's part bp, written to o[i N + j].
template <typename acc_t, int VB, int NJ>
inline void outer_tile(const acc_t* const (&a)[kTI], int64_t rows, const acc_t* bp, int64_t K, int64_t j0, acc_t* o,
                       int64_t N) {
  using V = typename VecN<acc_t, VB>::V;
  constexpr int W = VecN<acc_t, VB>::W;
  V acc[kTI][NJ];
  for (int i = 0; i < kTI; ++i)
    for (int j = 0; j < NJ; ++j) acc[i][j] = V{};
  for (int64_t k = 0; k < K; ++k) {
    V bv[NJ];
    for (int j = 0; j < NJ; ++j) bv[j] = loadv<V>(bp + k * kJC + j0 + j * W);
    for (int i = 0; i < kTI; ++i) {
      const V av = splat<acc_t, VB>(a[i][k]);
      for (int j = 0; j < NJ; ++j) acc[i][j] += av * bv[j];
    }
  }
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < NJ; ++j) storeu(o + i * N + j0 + j * W, acc[i][j]);
}

// out[i][j] = sum_k A[k][i] B[k][j] for the weight gradients (dW2 = dz^T a, dW1 = dh^T s): A and B
// row-major [K, M] and [K, N] with K the few stacked rows. A task owns kIB rows x kJC columns of the
// gradient: it copies A's and B's parts (K kIB and K kJC values, L1), then writes its block once
// in kTI x kTJ-vector register tiles, k inner, then single vectors, then the last N % W columns one
// by one (the same k-serial sums: the bits do not depend on W).
template <typename acc_t, int VB>
inline void outer_rows_body(int64_t t0, int64_t t1, int64_t M, int64_t N, int64_t K, const acc_t* A, const acc_t* B,
                            acc_t* out) {
  constexpr int W = VecN<acc_t, VB>::W;
  const int64_t ni = (M + kIB - 1) / kIB;
  std::vector<acc_t> ap(K * kIB), bp(K * kJC);  // ap[i][k] (a tile's 4 rows read along k), bp[k][j]
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t ib = t % ni * kIB, ie = std::min(M, ib + kIB), jb = t / ni * kJC, je = std::min(N, jb + kJC);
    const int64_t jn = je - jb;
    for (int64_t i = ib; i < ie; ++i)
      for (int64_t k = 0; k < K; ++k) ap[(i - ib) * K + k] = A[k * M + i];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < jn; ++j) bp[k * kJC + j] = B[k * N + jb + j];
    for (int64_t i0 = ib; i0 < ie; i0 += kTI) {
      const acc_t* a[kTI];
      for (int i = 0; i < kTI; ++i) a[i] = ap.data() + (std::min(i0 + i, ie - 1) - ib) * K;
      const int64_t rows = std::min<int64_t>(kTI, ie - i0);
      acc_t* o = out + i0 * N + jb;
      int64_t j0 = 0;
      for (; j0 + kTJ * W <= jn; j0 += kTJ * W) outer_tile<acc_t, VB, kTJ>(a, rows, bp.data(), K, j0, o, N);
      for (; j0 + W <= jn; j0 += W) outer_tile<acc_t, VB, 1>(a, rows, bp.data(), K, j0, o, N);
      for (int i = 0; i < rows; ++i)
        for (int64_t j = j0; j < jn; ++j) {
          acc_t s = 0;
          for (int64_t k = 0; k < K; ++k) s += a[i][k] * bp[k * kJC + j];
          o[i * N + j] = s;
        }
    }
  }
}

// Runs ``blocks(t0, t1)`` on the threads over the kRows x kCols blocks of an [M, N] output summed
// over K (each blocked product decodes its task indices itself).
template <int64_t kRows, int64_t kCols, typename Blocks>
void over_blocks(int64_t M, int64_t N, int64_t K, const Blocks& blocks) {
  if (M == 0 || N == 0) return;
  const int64_t tasks = (M + kRows - 1) / kRows * ((N + kCols - 1) / kCols);
  at::parallel_for(0, tasks, grain_for_macs(kRows * kCols * K), blocks);
}

// out[i][j] = sum_k A[i][k] B[k][j] for the input-side products (dr = dz W2, ds = dh W1): few rows
// of A (the batch), B a weight read along its rows. A task owns a block of kSI rows x kSJ columns
// of out, summed in a contiguous buffer (L1) while B's rows stream by, four at a time, kSJ
// elements each: every B element is read once per row block. (A register tile along B's columns
// read it in column strips, one cache line per row at a stride of N elements, which at N = 2048
// fell in one L1 set and came from L3 again for each row tile.)
constexpr int64_t kSI = 16, kSJ = 64;

// o[j] plus a[0] b0[j], a[1] b0[N + j], a[2] b0[2 N + j] and a[3] b0[3 N + j], added one after the
// other, for the columns from j on that whole VB-byte vectors cover (up to n); returns where they end.
template <typename acc_t, int VB>
inline int64_t stream_cols(acc_t* o, const acc_t* b0, int64_t N, const acc_t* a, int64_t j, int64_t n) {
  using V = typename VecN<acc_t, VB>::V;
  constexpr int W = VecN<acc_t, VB>::W;
  const V a0 = splat<acc_t, VB>(a[0]), a1 = splat<acc_t, VB>(a[1]), a2 = splat<acc_t, VB>(a[2]),
          a3 = splat<acc_t, VB>(a[3]);
  for (; j + W <= n; j += W) {
    V v = loadv<V>(o + j);
    v += a0 * loadv<V>(b0 + j);
    v += a1 * loadv<V>(b0 + N + j);
    v += a2 * loadv<V>(b0 + 2 * N + j);
    v += a3 * loadv<V>(b0 + 3 * N + j);
    storeu(o + j, v);
  }
  return j;
}

template <typename acc_t, int VB>
inline void stream_rows_body(int64_t t0, int64_t t1, int64_t M, int64_t N, int64_t K, const acc_t* A, const acc_t* B,
                             acc_t* out) {
  const int64_t nj = (N + kSJ - 1) / kSJ;
  acc_t buf[kSI * kSJ];
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t i0 = t / nj * kSI, ni = std::min(M, i0 + kSI) - i0;
    const int64_t j0 = t % nj * kSJ, nj_ = std::min(N, j0 + kSJ) - j0;
    for (int64_t q = 0; q < kSI * kSJ; ++q) buf[q] = 0;
    // Four rows of B per step, added to each sum one after the other (k order, as a serial loop):
    // VB-byte vectors, then 32-byte ones, then single columns (the same sums whatever the width).
    int64_t k = 0;
    for (; k + 4 <= K; k += 4) {
      const acc_t* b0 = B + k * N + j0;
      for (int64_t i = 0; i < ni; ++i) {
        const acc_t* a = A + (i0 + i) * K + k;
        acc_t* o = buf + i * kSJ;
        int64_t j = stream_cols<acc_t, VB>(o, b0, N, a, 0, nj_);
        if constexpr (VB > 32) j = stream_cols<acc_t, 32>(o, b0, N, a, j, nj_);
        for (; j < nj_; ++j)
          for (int q = 0; q < 4; ++q) o[j] += a[q] * b0[q * N + j];
      }
    }
    for (; k < K; ++k)
      for (int64_t i = 0; i < ni; ++i)
        for (int64_t j = 0; j < nj_; ++j) buf[i * kSJ + j] += A[(i0 + i) * K + k] * B[k * N + j0 + j];
    for (int64_t i = 0; i < ni; ++i)
      for (int64_t j = 0; j < nj_; ++j) out[(i0 + i) * N + j0 + j] = buf[i * kSJ + j];
  }
}

// The two blocked products by name, so that one pair of clone wrappers and one dispatch serve both.
enum class Blocked { kOuter, kStream };

template <Blocked P, typename acc_t, int VB>
inline void blocked_body(int64_t t0, int64_t t1, int64_t M, int64_t N, int64_t K, const acc_t* A, const acc_t* B,
                         acc_t* out) {
  if constexpr (P == Blocked::kOuter) {
    outer_rows_body<acc_t, VB>(t0, t1, M, N, K, A, B, out);
  } else {
    stream_rows_body<acc_t, VB>(t0, t1, M, N, K, A, B, out);
  }
}

template <Blocked P, typename acc_t>
AF_VEC void blocked_tasks(int64_t t0, int64_t t1, int64_t M, int64_t N, int64_t K, const acc_t* A, const acc_t* B,
                          acc_t* out) {
  blocked_body<P, acc_t, 32>(t0, t1, M, N, K, A, B, out);
}

#if defined(AF_WIDE)
template <Blocked P>
AF_WIDE void blocked_tasks_wide(int64_t t0, int64_t t1, int64_t M, int64_t N, int64_t K, const float* A,
                                const float* B, float* out) {
  blocked_body<P, float, 64>(t0, t1, M, N, K, A, B, out);
}
#endif

// Runs product P over the threads, in 64-byte vectors where kWide (float only).
template <Blocked P, int64_t kRows, int64_t kCols, typename acc_t>
void blocked(int64_t M, int64_t N, int64_t K, const acc_t* A, const acc_t* B, acc_t* out) {
#if defined(AF_WIDE)
  if constexpr (std::is_same_v<acc_t, float>) {
    if (kWide) {
      over_blocks<kRows, kCols>(
          M, N, K, [&](int64_t t0, int64_t t1) { blocked_tasks_wide<P>(t0, t1, M, N, K, A, B, out); });
      return;
    }
  }
#endif
  over_blocks<kRows, kCols>(M, N, K, [&](int64_t t0, int64_t t1) { blocked_tasks<P>(t0, t1, M, N, K, A, B, out); });
}

template <typename acc_t>
void outer_rows(int64_t M, int64_t N, int64_t K, const acc_t* A, const acc_t* B, acc_t* out) {
  blocked<Blocked::kOuter, kIB, kJC>(M, N, K, A, B, out);
}

template <typename acc_t>
void stream_rows(int64_t M, int64_t N, int64_t K, const acc_t* A, const acc_t* B, acc_t* out) {
  blocked<Blocked::kStream, kSI, kSJ>(M, N, K, A, B, out);
}

// act(h): relu (entry.h), or silu = h sigmoid(h) with ``sig`` = sigmoid(h).
template <typename acc_t>
inline acc_t act_of(acc_t h, const acc_t* sig, int64_t i, int act) {
  if (act == kActRelu) return fc_relu(h);
  return h * sig[i];
}

// a [B, R] = sum over the n stacked statistics of act(h).
template <typename acc_t>
void fold_act(const FcGateArgs<acc_t>& a, const acc_t* h, const acc_t* sig, acc_t* out) {
  const int64_t BR = a.B * a.R;
  for (int64_t q = 0; q < BR; ++q) {
    acc_t v = act_of(h[q], sig, q, a.act);
    for (int64_t i = 1; i < a.n; ++i) v += act_of(h[i * BR + q], sig, i * BR + q, a.act);
    out[q] = v;
  }
}

}  // namespace

template <typename acc_t>
void fc_hidden(const FcGateArgs<acc_t>& a, acc_t* h) {
  const int64_t J = a.n * a.B;
  dot_rows(J, a.R, a.C, a.s, a.w1, h);
  if (a.b1)
    for (int64_t j = 0; j < J; ++j)
      for (int64_t r = 0; r < a.R; ++r) h[j * a.R + r] += a.b1[r];
}

template <typename acc_t>
void fc_logits(const FcGateArgs<acc_t>& a, const acc_t* h, const acc_t* sig_h, acc_t* afold, acc_t* z, acc_t* ca) {
  fold_act(a, h, sig_h, afold);
  dot_rows(a.B, a.C, a.R, afold, a.w2, z);
  if (a.b2)
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t c = 0; c < a.C; ++c) z[b * a.C + c] += static_cast<acc_t>(a.n) * a.b2[c];
  if (a.gate == kGateHardSigmoid)
    for (int64_t q = 0; q < a.B * a.C; ++q) ca[q] = fc_hard_sigmoid(z[q]);
}

template <typename acc_t>
void fc_gate_backward(const FcGateArgs<acc_t>& a, const FcGateGrads<acc_t>& g, const acc_t* sig_h) {
  const int64_t B = a.B, C = a.C, R = a.R, J = a.n * a.B, BC = B * C;
  // dz = gate'(dca) (entry.h); one loop per gate, each with a constant gate (no branch inside).
  if (a.gate == kGateSigmoid) {
    for (int64_t q = 0; q < BC; ++q) g.dz[q] = fc_gate_grad(g.dca[q], g.z[q], g.ca[q], kGateSigmoid);
  } else {
    for (int64_t q = 0; q < BC; ++q) g.dz[q] = fc_gate_grad(g.dca[q], g.z[q], g.ca[q], kGateHardSigmoid);
  }
  fold_act(a, g.h, sig_h, g.afold);
  outer_rows(C, R, B, g.dz, g.afold, g.dw2);  // dW2 = dz^T a
  if (g.db2) {
    for (int64_t c = 0; c < C; ++c) g.db2[c] = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) g.db2[c] += g.dz[b * C + c];
    for (int64_t c = 0; c < C; ++c) g.db2[c] *= static_cast<acc_t>(a.n);
  }
  std::vector<acc_t> dr(B * R);
  stream_rows(B, R, C, g.dz, a.w2, dr.data());  // dr = dz W2
  // dh = act'(h) dr (entry.h; each statistic's rows get the same dr).
  for (int64_t j = 0; j < J; ++j) {
    const acc_t* d = dr.data() + (j < B ? j : j - B) * R;  // J = n B, n <= 2
    const acc_t* hv = g.h + j * R;
    acc_t* dh = g.dh + j * R;
    if (a.act == kActRelu) {
      for (int64_t r = 0; r < R; ++r) dh[r] = fc_act_grad(d[r], hv[r], acc_t(0), kActRelu);
    } else {
      const acc_t* sig = sig_h + j * R;
      for (int64_t r = 0; r < R; ++r) dh[r] = fc_act_grad(d[r], hv[r], sig[r], kActSilu);
    }
  }
  outer_rows(R, C, J, g.dh, a.s, g.dw1);  // dW1 = dh^T s
  if (g.db1) {
    for (int64_t r = 0; r < R; ++r) g.db1[r] = 0;
    for (int64_t j = 0; j < J; ++j)
      for (int64_t r = 0; r < R; ++r) g.db1[r] += g.dh[j * R + r];
  }
  stream_rows(J, C, R, g.dh, a.w1, g.ds);  // ds = dh W1
}

template void fc_hidden<float>(const FcGateArgs<float>&, float*);
template void fc_hidden<double>(const FcGateArgs<double>&, double*);
template void fc_logits<float>(const FcGateArgs<float>&, const float*, const float*, float*, float*, float*);
template void fc_logits<double>(const FcGateArgs<double>&, const double*, const double*, double*, double*, double*);
template void fc_gate_backward<float>(const FcGateArgs<float>&, const FcGateGrads<float>&, const float*);
template void fc_gate_backward<double>(const FcGateArgs<double>&, const FcGateGrads<double>&, const double*);

}  // namespace cpu
}  // namespace attnfused
