// CUDA kernels of the "fc" channel gate (SE's MLP, CBAM's shared MLP):
//
//     h = s W1^T + b1 (per stacked row j < J = n B),   a[b] = sum_i act(h[i B + b]),
//     z = a W2^T + n b2,                               ca = gate_fn(z),
//
// s [J, C] the pooled statistics stacked (n = 2 for CBAM's avg + max rows), W1 [R, C], W2 [C, R],
// all in the accumulation dtype. Same contract as attnfused/ops/_gates.py's channel_forward /
// channel_backward for ``gate == "fc"``, which calls these through the "cuda" provider.
//
// Why not cuBLAS + elementwise ops: each direction there is 4-6 (forward) and ~10 (backward)
// launches on tensors of a few KB to a few MB, each also a round trip through Python and the
// dispatcher. Here the forward is two launches and the backward three.
//
// Every product is a small matrix product (8-67 M multiply-adds at batch 32-128 for C = 2048,
// R = 128), too small to fill a GPU one output per thread and too thin for tensor-core tiles, so
// each warp owns a register tile of outputs and the loads per multiply-add are what is counted:
//   - h (a sum over C) and z (over R), whose operands both run along the summed axis in memory,
//     split the sum across the lanes (coalesced), each lane a tile of 16 partial sums (TM + TN
//     loads per TM * TN multiply-adds); one reduce-scatter butterfly leaves each sum on a lane pair;
//   - the others (dr over a chunk of C, the weight gradients over the batch, ds over R) run
//     serially in each lane, lanes over the output's unit-stride axis (coalesced), the tile's other
//     axis warp-uniform (broadcast loads).
// In the SASS for sm_90 (benchmarks/sass_loops.py), the hot loops issue 1.9-2.7 instructions per
// FFMA (interior tiles; edge tiles 2.8-3.7). The previous kernels here (one output per lane or
// warp, dz recomputed per multiply-add) issued 3.8-15, and gave dr's sum over all C channels to
// only cdiv(R, 32) cdiv(B, 4) CTAs, one serial loop each (32 CTAs at batch 32); dr now sums chunks
// of 32 channels in parallel, into partials that a third launch adds up in chunk order. Where a
// tile's sum is long (h over C, the weight gradients over the batch, ds over R), the 8 warps of a
// CTA split it into 8 slices, added in slice order through shared memory: more warps in flight
// and shorter chains of dependent loads at small batches, the same instructions.
//
//   forward   1. h, act(h)        CTA: 2 r x 8 rows, warps over slices of c, lanes within
//             2. z, ca            warp: 4 c x 4 samples, lanes over r
//   backward  1. dr partials, dz  warp: 4 samples x 128 r, serial over a chunk of 32 c; dz of the
//                                 chunk computed once per lane and passed by shuffles
//             2. dr, dh, afold    thread per (b, r): the partials summed in chunk order
//             3. dW2, db2 | dW1, db1 | ds   one grid, three jobs; CTA tiles of 4 x 128 (dW2) or
//                                 4 x 64 (dW1, ds), warps over slices of the sum, serial in a lane
// Rows past a tile's edge are clamped to the last real one (their sums are computed and dropped)
// so the loops have no bounds checks. Every sum runs in a fixed order (serial loops, fixed shuffle
// trees, slices and chunks added in order), so results are deterministic and independent of the
// schedule.
// ``ATTNFUSED_CUDA_FC_GATE=0`` (attnfused/kernels/extension.py) sends the gate back to F.linear
// and aten's elementwise ops, to time the two against each other. Not timed on a GPU yet.
#include "../entry.h"
#include "common.cuh"

namespace attnfused {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 32;  // channels per partial of dr (one per lane: each lane computes one dz)

template <typename acc_t> __device__ __forceinline__ acc_t exp_of(acc_t v);
template <> __device__ __forceinline__ float exp_of<float>(float v) { return expf(v); }
template <> __device__ __forceinline__ double exp_of<double>(double v) { return exp(v); }

// act(h): relu or silu (h / (1 + e^-h), as aten writes it). The exp-free math is entry.h's.
template <typename acc_t>
__device__ __forceinline__ acc_t act_fn(acc_t h, int act) {
  if (act == kActRelu) return fc_relu(h);
  return h / (acc_t(1) + exp_of(-h));
}

// act'(h) * d (entry.h's fc_act_grad), with sigmoid(h) for silu.
template <typename acc_t>
__device__ __forceinline__ acc_t act_backward(acc_t d, acc_t h, int act) {
  const acc_t s = act == kActRelu ? acc_t(0) : acc_t(1) / (acc_t(1) + exp_of(-h));
  return fc_act_grad(d, h, s, act);
}

template <typename acc_t>
__device__ __forceinline__ acc_t gate_of(acc_t z, int gate) {
  if (gate == kGateSigmoid) return acc_t(1) / (acc_t(1) + exp_of(-z));
  return fc_hard_sigmoid(z);
}

// dz from dca (entry.h's fc_gate_grad) at element i.
template <typename acc_t>
__device__ __forceinline__ acc_t dz_of(const FcGateArgs<acc_t>& a, const acc_t* dca, const acc_t* z, const acc_t* ca,
                                       int64_t i) {
  return fc_gate_grad(dca[i], z[i], ca[i], a.gate);
}

__device__ __forceinline__ int64_t clamp_row(int64_t i, int64_t n) { return i < n ? i : n - 1; }

// The thread's warp, counted over the grid (whole warps past a kernel's count leave together).
__device__ __forceinline__ int64_t warp_index() { return static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; }

__host__ __device__ inline int64_t chunks_of(int64_t C) { return cdiv(C, kChunk); }

inline unsigned blocks_for_warps(int64_t warps) { return static_cast<unsigned>(std::max<int64_t>(1, cdiv(warps, kWarps))); }

// acc[i][j] = sum over k = k0, k0 + step, ... < k1 of a(i, k) * b(j, k), in k order: TM + TN loads
// per TM * TN multiply-adds. Two uses: split across the lanes (k0 = lane, step 32; the warp's sums
// then come out of reduce_scatter16), or serial in each lane (step 1), a warp-uniform (broadcast
// loads) and b the lane's own columns. Unrolled 4 steps deep: their loads are in flight together.
template <int TM, int TN, typename acc_t, typename A, typename Bf>
__device__ __forceinline__ void tile_products(int64_t k0, int64_t k1, int64_t step, const A& a, const Bf& b,
                                              acc_t (&acc)[TM][TN]) {
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0;
#pragma unroll 4
  for (int64_t k = k0; k < k1; k += step) {
    acc_t av[TM], bv[TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) av[i] = a(i, k);
#pragma unroll
    for (int j = 0; j < TN; ++j) bv[j] = b(j, k);
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] += av[i] * bv[j];
  }
}

// Slice ``s`` of ``kWarps`` of [0, len): where a CTA's warps split one tile's sum (contiguous,
// fixed: the partials are added in slice order).
__device__ __forceinline__ int64_t slice_begin(int64_t len, int s) { return len * s / kWarps; }

// Grid size for kernels whose CTAs loop over ``tiles`` (any count fits the grid). The emulator's
// build (the tests) caps it at 3 CTAs, so that each CTA runs the loop, and the barrier that ends
// each turn, many times per launch.
inline unsigned blocks_for_tiles(int64_t tiles) {
#ifdef ATTNFUSED_CUDA_EMU
  constexpr int64_t kMaxBlocks = 3;
#else
  constexpr int64_t kMaxBlocks = int64_t{1} << 30;
#endif
  return static_cast<unsigned>(std::clamp<int64_t>(tiles, 1, kMaxBlocks));
}

// One step of reduce_scatter16: lanes whose bit log2(W) + 1 is set keep v[W, 2W), the others v[0, W), each adding
// its partner's copy of the half it keeps. W a template argument: every index of v is a constant,
// so v stays in registers (a loop over W put it in local memory).
template <int W, typename acc_t>
__device__ __forceinline__ void butterfly_step(acc_t (&v)[16], int lane) {
  constexpr int kOffset = 2 * W;
  const bool upper = lane & kOffset;
#pragma unroll
  for (int p = 0; p < W; ++p) {
    const acc_t send = upper ? v[p] : v[p + W], keep = upper ? v[p + W] : v[p];
    v[p] = keep + __shfl_xor_sync(0xffffffffu, send, kOffset);
  }
}

// The warp-wide sums of 16 values per lane, one per lane pair: lanes 2 t and 2 t + 1 return the sum
// over all 32 lanes of v[t] (t = i TN + j of a TM x TN tile). A butterfly that halves what each
// lane holds at every step (8 + 4 + 2 + 1 + 1 = 16 shuffles) instead of a full tree per value
// (16 x 5 = 80). Fixed order: deterministic.
template <typename acc_t, int TM, int TN>
__device__ __forceinline__ acc_t reduce_scatter16(const acc_t (&acc)[TM][TN], int lane) {
  static_assert(TM * TN == 16, "one sum per lane pair");
  acc_t v[16];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) v[i * TN + j] = acc[i][j];
  butterfly_step<8>(v, lane);  // lane offset 16
  butterfly_step<4>(v, lane);
  butterfly_step<2>(v, lane);
  butterfly_step<1>(v, lane);  // lane offset 2: v[0] holds value (lane >> 1), summed over 16 lanes
  return v[0] + __shfl_xor_sync(0xffffffffu, v[0], 1);
}

// Forward 1. h[j, r] = b1[r] + s[j] . W1[r]; act[j, r] = act(h[j, r]). A CTA per tile of 2 r x 8
// rows (W1 is read once per 8 rows); its 8 warps take 8 slices of C, lanes splitting each, and the
// slices' sums meet in shared memory: 8x the warps of one warp per tile, and 1/8 of its chain of
// dependent loads (at batch 32, SE: 2048 warps of 8 steps, not 256 of 64).
constexpr int kHidR = 2, kHidJ = 8;
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) hidden_kernel(FcGateArgs<acc_t> a, acc_t* h, acc_t* act) {
  __shared__ acc_t part[kWarps][kHidR * kHidJ];
  const int64_t J = a.n * a.B, r_tiles = cdiv(a.R, kHidR), tiles = r_tiles * cdiv(J, kHidJ);
  const int slice = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t c0 = slice_begin(a.C, slice), c1 = slice_begin(a.C, slice + 1);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {  // CTA-uniform
    const int64_t r0 = (tile % r_tiles) * kHidR, j0 = (tile / r_tiles) * kHidJ;
    const acc_t* srow[kHidJ];
    const acc_t* wrow[kHidR];
#pragma unroll
    for (int i = 0; i < kHidJ; ++i) srow[i] = a.s + clamp_row(j0 + i, J) * a.C;
#pragma unroll
    for (int q = 0; q < kHidR; ++q) wrow[q] = a.w1 + clamp_row(r0 + q, a.R) * a.C;
    acc_t acc[kHidJ][kHidR];
    tile_products(
        c0 + lane, c1, 32, [&](int i, int64_t c) { return srow[i][c]; }, [&](int q, int64_t c) { return wrow[q][c]; },
        acc);
    const acc_t sum = reduce_scatter16(acc, lane);
    if ((lane & 1) == 0) part[slice][lane >> 1] = sum;
    __syncthreads();
    if (threadIdx.x < kHidR * kHidJ) {
      const int t = threadIdx.x;
      acc_t v = a.b1 ? a.b1[clamp_row(r0 + t % kHidR, a.R)] : acc_t(0);
      for (int w = 0; w < kWarps; ++w) v += part[w][t];
      const int64_t j = j0 + t / kHidR, r = r0 + t % kHidR;
      if (j < J && r < a.R) {
        h[j * a.R + r] = v;
        act[j * a.R + r] = act_fn(v, a.act);
      }
    }
    // part is rewritten by the next tile (the emulator's warp-ahead schedule shows this barrier's
    // absence; its lockstep ones cannot, the next tile's shuffles holding every warp back).
    __syncthreads();
  }
}

// Forward 2. z[b, c] = n b2[c] + sum_i act[i B + b] . W2[c]; ca = gate_fn(z). Warp: 4 c x 4
// samples (c tile fastest: a CTA's warps share the samples' act rows), lanes over r.
constexpr int kLogC = 4, kLogB = 4;
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) logits_kernel(FcGateArgs<acc_t> a, const acc_t* act, acc_t* z, acc_t* ca) {
  const int64_t c_tiles = cdiv(a.C, kLogC);
  const int64_t w = warp_index();
  const int lane = threadIdx.x % 32;
  if (w >= c_tiles * cdiv(a.B, kLogB)) return;
  const int64_t c0 = (w % c_tiles) * kLogC, b0 = (w / c_tiles) * kLogB;
  const acc_t* arow[kLogB];  // the samples' act rows; the second statistic's (n = 2) R B further on
  const acc_t* wrow[kLogC];
#pragma unroll
  for (int i = 0; i < kLogB; ++i) arow[i] = act + clamp_row(b0 + i, a.B) * a.R;
#pragma unroll
  for (int q = 0; q < kLogC; ++q) wrow[q] = a.w2 + clamp_row(c0 + q, a.C) * a.R;
  const int64_t second = a.R * a.B;
  acc_t acc[kLogB][kLogC];
  tile_products(
      lane, a.R, 32, [&](int i, int64_t r) { return a.n == 2 ? arow[i][r] + arow[i][second + r] : arow[i][r]; },
      [&](int q, int64_t r) { return wrow[q][r]; }, acc);
  const acc_t sum = reduce_scatter16(acc, lane);
  const int t = lane >> 1;
  const int64_t b = b0 + t / kLogC, c = c0 + t % kLogC;
  if ((lane & 1) == 0 && b < a.B && c < a.C) {
    const acc_t v = sum + (a.b2 ? static_cast<acc_t>(a.n) * a.b2[c] : acc_t(0));
    z[b * a.C + c] = v;
    ca[b * a.C + c] = gate_of(v, a.gate);
  }
}

// Backward 1. parts[k, b, r] = sum over the chunk's c of dz[b, c] W2[c, r] (chunk k = channels
// [32 k, 32 k + 32)), and dz itself into g.dz. Warp: (chunk, 4 samples, 128 r: lanes + 32 q);
// each lane computes dz for its channel of the chunk, and the loop passes them round by shuffles.
constexpr int kDrB = 4, kDrR = 4;
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) dr_parts_kernel(FcGateArgs<acc_t> a, FcGateGrads<acc_t> g) {
  const int64_t r_tiles = cdiv(a.R, 32 * kDrR), b_tiles = cdiv(a.B, kDrB);
  const int64_t w = warp_index();
  const int lane = threadIdx.x % 32;
  if (w >= chunks_of(a.C) * b_tiles * r_tiles) return;
  const int64_t rt = w % r_tiles, b0 = (w / r_tiles % b_tiles) * kDrB, chunk = w / (r_tiles * b_tiles);
  const int64_t c0 = chunk * kChunk, len = std::min<int64_t>(kChunk, a.C - c0), r_base = rt * 32 * kDrR + lane;
  acc_t mine[kDrB];  // dz[b0 + i, c0 + lane]
#pragma unroll
  for (int i = 0; i < kDrB; ++i) {
    const int64_t e = clamp_row(b0 + i, a.B) * a.C + c0 + lane;
    mine[i] = lane < len ? dz_of(a, g.dca, g.z, g.ca, e) : acc_t(0);
    if (rt == 0 && lane < len && b0 + i < a.B) g.dz[e] = mine[i];
  }
  const acc_t* wcol[kDrR];  // the lane's columns of W2 in the chunk's first row
#pragma unroll
  for (int q = 0; q < kDrR; ++q) wcol[q] = a.w2 + c0 * a.R + clamp_row(r_base + 32 * q, a.R);
  acc_t acc[kDrB][kDrR];
  tile_products(
      0, len, 1, [&](int i, int64_t k) { return __shfl_sync(0xffffffffu, mine[i], static_cast<int>(k)); },
      [&](int q, int64_t k) { return wcol[q][k * a.R]; }, acc);
#pragma unroll
  for (int i = 0; i < kDrB; ++i)
#pragma unroll
    for (int q = 0; q < kDrR; ++q) {
      const int64_t b = b0 + i, r = r_base + 32 * q;
      if (b < a.B && r < a.R) g.parts[(chunk * a.B + b) * a.R + r] = acc[i][q];
    }
}

// Backward 2. dr[b, r] = the partials summed in chunk order; dh[i B + b, r] = act'(h) dr, also
// transposed (dht [R, n B], for ds: its tiles then read their rows' values at fixed offsets);
// afold[b, r] = sum_i act(h[i B + b, r]) (for dW2). A thread per (b, r).
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) hidden_grad_kernel(FcGateArgs<acc_t> a, FcGateGrads<acc_t> g) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= a.B * a.R) return;
  const int64_t chunks = chunks_of(a.C), b = e / a.R, r = e % a.R;
  acc_t dr = 0;
  for (int64_t k = 0; k < chunks; ++k) dr += g.parts[k * a.B * a.R + e];
  acc_t fold = 0;
  for (int64_t i = 0; i < a.n; ++i) {
    const int64_t x = (i * a.B + b) * a.R + r;
    const acc_t hv = g.h[x];
    g.dh[x] = g.dht[r * a.n * a.B + i * a.B + b] = act_backward(dr, hv, a.act);
    fold += act_fn(hv, a.act);
  }
  g.afold[e] = fold;
}

// Backward 3, three independent jobs in one grid (warps [0, w2) | [w2, w2 + w1) | the rest):
//   dW2[c, r] = sum_b dz[b, c] afold[b, r], db2[c] = n sum_b dz[b, c]   warp: 4 c x 128 r
//   dW1[r, c] = sum_j dh[j, r] s[j, c],     db1[r] = sum_j dh[j, r]     warp: 4 r x 64 c
//   ds[j, c]  = sum_r dh[j, r] W1[r, c]                                 warp: 4 rows x 64 c
// The tile's first axis is warp-uniform (broadcast loads), the second lanes + 32 q (coalesced).
// Tile sizes: dW1 sums over all n B rows (256 for CBAM at batch 128) and ds over R, so their tiles
// are smaller than dW2's, for more CTAs: at C = 2048, R = 128 the grid has ~2K tiles (16K warps) at
// batch 32 and ~3.5K at batch 128, with 0.75-0.5 loads per multiply-add.
constexpr int kTileM = 4;                    // warp-uniform rows per tile (all three jobs)
constexpr int kW2N = 4, kW1N = 2, kDsN = 2;  // columns per lane

struct WeightGradTiles {
  int64_t w2, w1, ds;
};
__host__ __device__ inline WeightGradTiles weight_grad_tiles(int64_t B, int64_t n, int64_t C, int64_t R) {
  return {cdiv(C, kTileM) * cdiv(R, 32 * kW2N), cdiv(R, kTileM) * cdiv(C, 32 * kW1N),
          cdiv(n * B, kTileM) * cdiv(C, 32 * kDsN)};
}

// The CTA's partial sums: [warp (slice of k)][tile element][lane], and the biases' row sums.
template <typename acc_t>
struct WeightGradScratch {
  acc_t part[kWarps][kTileM * kW2N][32];
  acc_t rows[kWarps][kTileM];
};

// out[m, col] (m < M, col < N, row-major N) = sum over k < K of P[k ldp + m] Q[k ldq + col] for
// tile t (column tile fastest), by the whole CTA: warp w sums slice w of k, serially per lane, and
// the slices are added in order through shared memory (8x the warps of one warp per tile, 1/8 of
// its chain of dependent loads: ds sums over all R = 128 rows of W1). ``rowsum[m]`` = scale
// sum_k P[k ldp + m] from the first column tile (the biases' gradients), skipped when null. A tile
// inside the matrix (all but the edges') indexes its rows and columns at fixed offsets from one
// base, which ptxas folds into the loads' immediates; an edge tile clamps each index.
template <int TM, int TN, typename acc_t>
__device__ __forceinline__ void weight_grad_tile(int64_t t, int64_t M, int64_t N, int64_t K, const acc_t* P,
                                                 int64_t ldp, const acc_t* Q, int64_t ldq, acc_t* out, acc_t* rowsum,
                                                 acc_t rowsum_scale, WeightGradScratch<acc_t>& sh) {
  static_assert(TM == kTileM && TM * TN <= kTileM * kW2N, "scratch sized for these tiles");
  constexpr int kCols = 32 * TN;
  const int slice = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t col_tiles = cdiv(N, kCols);
  const int64_t m0 = (t / col_tiles) * TM, tile_col0 = (t % col_tiles) * kCols, col0 = tile_col0 + lane;
  const int64_t k0 = slice_begin(K, slice), k1 = slice_begin(K, slice + 1);
  const bool sums = rowsum && tile_col0 == 0;
  acc_t acc[TM][TN];
  if (m0 + TM <= M && tile_col0 + kCols <= N)  // CTA-uniform
    tile_products(
        k0, k1, 1, [&](int i, int64_t k) { return P[k * ldp + m0 + i]; },
        [&](int q, int64_t k) { return Q[k * ldq + col0 + 32 * q]; }, acc);
  else
    tile_products(
        k0, k1, 1, [&](int i, int64_t k) { return P[k * ldp + clamp_row(m0 + i, M)]; },
        [&](int q, int64_t k) { return Q[k * ldq + clamp_row(col0 + 32 * q, N)]; }, acc);
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int q = 0; q < TN; ++q) sh.part[slice][i * TN + q][lane] = acc[i][q];
  if (sums && lane < TM) {
    acc_t sum = 0;  // one lane per row, in k order
    for (int64_t k = k0; k < k1; ++k) sum += P[k * ldp + clamp_row(m0 + lane, M)];
    sh.rows[slice][lane] = sum;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < TM * TN * 32; e += kThreads) {
    const int iq = e / 32, l = e % 32;
    acc_t v = 0;
    for (int w = 0; w < kWarps; ++w) v += sh.part[w][iq][l];
    const int64_t m = m0 + iq / TN, col = tile_col0 + l + 32 * (iq % TN);
    if (m < M && col < N) out[m * N + col] = v;
  }
  if (sums && threadIdx.x < TM && m0 + threadIdx.x < M) {
    acc_t v = 0;
    for (int w = 0; w < kWarps; ++w) v += sh.rows[w][threadIdx.x];
    rowsum[m0 + threadIdx.x] = v * rowsum_scale;
  }
  __syncthreads();  // the scratch is rewritten by the CTA's next tile
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads) weight_grad_kernel(FcGateArgs<acc_t> a, FcGateGrads<acc_t> g) {
  __shared__ WeightGradScratch<acc_t> sh;
  const int64_t J = a.n * a.B;
  const WeightGradTiles nt = weight_grad_tiles(a.B, a.n, a.C, a.R);
  for (int64_t t = blockIdx.x; t < nt.w2 + nt.w1 + nt.ds; t += gridDim.x) {  // CTA-uniform
    if (t < nt.w2)
      weight_grad_tile<kTileM, kW2N>(t, a.C, a.R, a.B, static_cast<const acc_t*>(g.dz), a.C, static_cast<const acc_t*>(g.afold),
                                     a.R, g.dw2, g.db2, static_cast<acc_t>(a.n), sh);
    else if (t < nt.w2 + nt.w1)
      weight_grad_tile<kTileM, kW1N>(t - nt.w2, a.R, a.C, J, static_cast<const acc_t*>(g.dh), a.R, a.s, a.C, g.dw1, g.db1,
                                     acc_t(1), sh);
    else
      weight_grad_tile<kTileM, kDsN>(t - nt.w2 - nt.w1, J, a.C, a.R, static_cast<const acc_t*>(g.dht), J, a.w1, a.C, g.ds,
                                     static_cast<acc_t*>(nullptr), acc_t(1), sh);
  }
}

}  // namespace

int64_t fc_gate_chunks(int64_t C) { return chunks_of(C); }

template <typename acc_t>
void fc_gate(const FcGateArgs<acc_t>& a, acc_t* h, acc_t* act, acc_t* z, acc_t* ca, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  const int64_t J = a.n * a.B;
  if (J == 0) return;
  launch_kernel(hidden_kernel<acc_t>, dim3(blocks_for_tiles(cdiv(a.R, kHidR) * cdiv(J, kHidJ))), dim3(kThreads), 0,
                st, a, h, act);
  launch_kernel(logits_kernel<acc_t>, dim3(blocks_for_warps(cdiv(a.C, kLogC) * cdiv(a.B, kLogB))), dim3(kThreads), 0,
                st, a, static_cast<const acc_t*>(act), z, ca);
}

template <typename acc_t>
void fc_gate_backward(const FcGateArgs<acc_t>& a, const FcGateGrads<acc_t>& g, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if (a.B > 0) {
    const int64_t warps = chunks_of(a.C) * cdiv(a.B, kDrB) * cdiv(a.R, 32 * kDrR);
    launch_kernel(dr_parts_kernel<acc_t>, dim3(blocks_for_warps(warps)), dim3(kThreads), 0, st, a, g);
    launch_kernel(hidden_grad_kernel<acc_t>, dim3(static_cast<unsigned>(cdiv(a.B * a.R, kThreads))), dim3(kThreads), 0,
                  st, a, g);
  }
  // With B = 0 the weight gradients are sums of nothing: the first two jobs write zeros.
  const WeightGradTiles nt = weight_grad_tiles(a.B, a.n, a.C, a.R);
  launch_kernel(weight_grad_kernel<acc_t>, dim3(blocks_for_tiles(nt.w2 + nt.w1 + nt.ds)), dim3(kThreads), 0, st, a, g);
}

template void fc_gate<float>(const FcGateArgs<float>&, float*, float*, float*, float*, void*);
template void fc_gate<double>(const FcGateArgs<double>&, double*, double*, double*, double*, void*);
template void fc_gate_backward<float>(const FcGateArgs<float>&, const FcGateGrads<float>&, void*);
template void fc_gate_backward<double>(const FcGateArgs<double>&, const FcGateGrads<double>&, void*);

}  // namespace cuda
}  // namespace attnfused
