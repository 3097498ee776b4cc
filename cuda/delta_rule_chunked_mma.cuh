// cuda/delta_rule_chunked_mma.cuh — the bfloat16 tensor-core kernels of the chunked gated delta rule: the
// chunk-parallel kernels (included by cuda/delta_rule_chunked.cu only; the math and the glossary are in that file's
// header comment, the shared machinery in cuda/delta_rule_chunked_mma_common.cuh, the recurrences in
// cuda/delta_rule_chunked_mma_recur.cuh, the chunk gradient in cuda/delta_rule_chunked_mma_grad.cuh, the host side
// in cuda/delta_rule_chunked_mma_host.cuh).
//
// They run for float32 tensors when gdn::matmul_precision() is BFloat16 (core/precision.h), K and V multiples of 16.
// Every tile product is nvcuda::wmma 16x16x16 with bfloat16 operands and float32 accumulators: the operands are
// rounded to bfloat16 (round to nearest even) when they are staged into shared memory, as [rows, cols + 8] tiles
// (the 8 bf16 of padding keep each row 16-byte aligned and shift the banks of consecutive rows); a transposed operand
// is the same tile loaded col_major. Rows past the L valid rows of a chunk are staged as zeros up to Cp = C rounded
// up to 16, so a product whose inner index runs over chunk rows sums exact zeros there. Each warp owns whole 16x16
// output tiles (tile t goes to warp t mod the block's warps); its accumulator goes through a per-warp [16,16]
// float32 stage in shared memory and the warp's lanes apply the epilogue (row scales, masks, the add to a float32
// value) element by element, each element with one owner lane: no atomics, and the hardware's fixed summation order
// gives identical bits run to run. Products that are zero by the triangle (P, P^T) skip the zero 16-blocks of their
// inner index. Float32 everywhere else: the gates (double cumsum, e^ decays), Gam, Lm, the state H and dH (a
// bfloat16 copy of each for its products), every epilogue, every row sum.
//
//   prepare_mma_kernel     grid (NC, Hv, B). K K^T and Q K^T on tensor cores (Q, K staged as bf16 [Cp, K+8]), ⊙ Gam
//                          into Lm (float32 [C, C+1], shared) and P (float32, global). W|U = A (rhs) by the blocked
//                          float32 forward substitution of prepare_tiled_kernel (diagonal 16 x 16 blocks and the
//                          off-diagonal block updates both float32: the solve is the numerically sensitive step),
//                          on up to 256 columns at a time (all of them at K = V = 128) in the space Gam, the warp
//                          stages, Q and K leave once Lm and P are made.
//                          Stores U, P, eg, r in float32 as prepare_tiled_kernel, W in bfloat16 [B,Hv,T,K] (every
//                          consumer uses W as a tensor-core operand only), and K of the value head in bfloat16
//                          [B,Hv,T,K] for the recurrences. Q, K and V are asked of L2 before the gates. At C = 64,
//                          K = V = 128 prepare_cols_kernel (cuda/delta_rule_chunked_mma_cols.cuh) runs instead.
//   chunk_output_mma_kernel grid (NC ceil(V/vp), Hv, B), vp in {32, 16}: O = scale ((eg ⊙ Q) H + P Vn), one
//                          accumulator over both products (eg ⊙ Q rounded to bf16 once). At the fixed shapes the
//                          forward recurrence makes O instead (forward_recur_out_kernel, with Q and P in bf16 from
//                          prepare_products) unless GDN_DR_FUSED_OUTPUT=0.
//   backward_pre_mma_kernel grid as chunk_output: A = scale P^T dO, Qd = Q^T (scale eg ⊙ dO); Vn = U - W H only
//                          when the forward's Vn was not handed over (kVn).
// Shared memory: each kernel's Layout (below) gives the byte offsets, every piece 128-byte aligned, plus the warp
// stages, one [16,16] float32 per warp: room for 16 warps (512 threads, kParThreads) in the chunk-parallel kernels,
// 8 (256 threads) in the recurrences.
// The four chunk-parallel kernels (prepare, chunk output, backward pre, chunk gradient) are templates over a Shape:
// compiled for C = 64 with K = V = 64 and with K = V = 128 (the shapes of the presets and of FLA's benchmarks), where
// the compiler folds their index arithmetic and they stage rows four floats per load, and for any shape (Generic).
// Both do the same arithmetic in the same order (the harness checks both against the CPU twin); the fixed shapes
// halved the kernels' time (they had been bound by integer instructions).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "cuda/delta_rule_chunked_mma_common.cuh"
#include "cuda/delta_rule_chunked_split.cuh"
#include "cuda/delta_rule_chunked_tiled.cuh"
#include "cuda/launch.h"

namespace gdn::cuda::delta_rule_tiled::mma {

// ---- prepare

// The solve's widest column tile in prepare_mma_kernel: all of [W | U] at K = V = 128 in one pass (the float32
// kernels' kSolveCols is 128).
constexpr int kMmaSolveCols = 256;

struct PrepareLayout {
  size_t gam, eg, Lm, Gam, stage, Qb, Kb, X, total;
  __host__ __device__ PrepareLayout(int64_t C, int64_t K, int64_t NT) {
    const int64_t Cp = pad16(C), ldk = K + kPadB;
    Carve c;
    gam = c.take<double>(2 * C);  // gam, decay
    eg = c.take<float>(3 * C);    // eg, r, beta
    Lm = c.take<float>(C * (C + 1));
    Carve x = c;  // the solve tile X [C, NT] reuses the region of Gam, the stages, Q and K
    Gam = c.take<float>(C * (C + 1));
    stage = c.take<float>(kParWarps * kStage);
    Qb = c.take<bf16>(Cp * ldk);
    Kb = c.take<bf16>(Cp * ldk);
    X = x.take<float>(C * NT);
    total = c.off > x.off ? c.off : x.off;
  }
};

// Shared memory of the first half of a prepare kernel (prepare_products): gam, decay [C] double; eg, r, beta [C];
// Gam [C, C+1]; Lm [C, ldl]; the warp stages; Q, K [Cp, K+8] bf16.
struct PrepareShared {
  double* gam;
  float* eg;
  float* Gam;
  float* Lm;
  float* stage;
  bf16* Qb;
  bf16* Kb;
};

// The first half of prepare_mma_kernel and prepare_cols_kernel (kT threads) for chunk n of (b, hv), L rows: Q, K
// and V asked of L2 (V is read by the solve after), the gates into shared memory, Q and K staged in bf16 (at fixed
// shapes up to kMax + kMax 16-byte loads of a thread in flight), eg, r and K's bf16 rows (per value head) out; then
// Lm = strictly_lower(beta ⊙ (K K^T) ⊙ Gam) into sh.Lm (row stride ldl) and P = lower((Q K^T) ⊙ Gam) into Pg; tiles
// above the diagonal are 0. At fixed shapes, for the recurrence that also makes the output
// (forward_recur_out_kernel), Qbg receives Q's bf16 rows as Kbg K's and Pbg P in bf16 as a whole [C, C] tile (zero
// outside the lower L x L triangle); each of Pg, Qbg, Pbg may be null (not made). Ends with a barrier: Lm complete,
// Gam, Q and K no longer read.
template <typename S, int kT, int kMax>
__device__ __forceinline__ void prepare_products(const Dims& d, const PrepareShared& sh, int ldl, int64_t b,
                                                 int64_t hv, int64_t n, int L, float* Pg, float* EGg, float* Rg,
                                                 bf16* Kbg, bf16* Qbg, bf16* Pbg, const float* q, const float* k,
                                                 const float* v, const float* g, const float* beta) {
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int Cp = static_cast<int>(pad16(C));
  const int64_t t0 = n * d.C;
  const int ldc = C + 1, ldk = K + kPadB;
  double* gam = sh.gam;
  double* decay = gam + C;
  float* eg = sh.eg;
  float* r = eg + C;
  float* bt = r + C;
  float* Gam = sh.Gam;
  bf16* Qb = sh.Qb;
  bf16* Kb = sh.Kb;
  const int64_t ks = d.Hk * d.K, vs = d.Hv * d.V, hr = d.head_row(b, hv, t0);
  const float* Qc = q + d.key_row(b, t0, hv);
  const float* Kc = k + d.key_row(b, t0, hv);
  const float* Vc = v + d.value_row(b, t0, hv);
  // Q, K and V (read after the gates, V only by the solve) asked of L2 first
  prefetch_rows_l2(Qc, ks * 4, L, K * 4);
  prefetch_rows_l2(Kc, ks * 4, L, K * 4);
  prefetch_rows_l2(Vc, vs * 4, L, V * 4);
  if constexpr (S::fixed)
    chunk_gates_scan<S::C>(d, g, beta, b, hv, t0, L, gam, eg, r, bt, Gam, ldc);
  else
    chunk_gates_tiled(d, g, beta, b, hv, t0, L, gam, decay, eg, r, bt, Gam, ldc);

  if constexpr (S::fixed) {
    stage_rows2<S, kT, kMax>(Qb, Kb, ldk, L, Qc, Kc, ks);
  } else {
    stage_rows<S>(Qb, ldk, L, Cp, K, [&](int i) { return Qc + i * ks; }, Unscaled());
    stage_rows<S>(Kb, ldk, L, Cp, K, [&](int i) { return Kc + i * ks; }, Unscaled());
  }
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    EGg[hr + i] = eg[i];
    Rg[hr + i] = r[i];
  }
  __syncthreads();
  if constexpr (S::fixed) {  // K's (and Q's) bf16 rows out, 16 bytes a copy
    constexpr int kv = S::K / 8;
    for (int e = threadIdx.x; e < L * kv; e += blockDim.x) {
      const int i = e / kv;
      reinterpret_cast<uint4*>(Kbg + (hr + i) * d.K)[e - i * kv] =
          *reinterpret_cast<const uint4*>(Kb + i * ldk + 8 * (e - i * kv));
      if (Qbg)
        reinterpret_cast<uint4*>(Qbg + (hr + i) * d.K)[e - i * kv] =
            *reinterpret_cast<const uint4*>(Qb + i * ldk + 8 * (e - i * kv));
    }
  } else {
    for (int e = threadIdx.x; e < L * K; e += blockDim.x) {
      const int i = e / K;
      Kbg[(hr + i) * d.K + (e - i * K)] = Kb[i * ldk + (e - i * K)];
    }
  }
  const int64_t p_off = (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C;
  float* P = Pg ? Pg + p_off : nullptr;
  bf16* Pb = Pbg ? Pbg + p_off : nullptr;
  if (Pb && L < C)  // the part of the whole tile that the products below do not write
    for (int e = threadIdx.x; e < C * C; e += blockDim.x)
      if (e / C >= L || e % C >= L) Pb[e] = __float2bfloat16(0.0f);
  mma_tiles(
      L, L, sh.stage,
      [&](int tm, int tn, Acc& acc) {
        if (tn <= tm) mma_acc<RowMajor, ColMajor>(acc, tm, tn, 0, K, Kb, ldk, Kb, ldk);
      },
      [&](int i, int j, float s) { sh.Lm[i * ldl + j] = j < i ? bt[i] * s * Gam[i * ldc + j] : 0.0f; });
  mma_tiles(
      L, L, sh.stage,
      [&](int tm, int tn, Acc& acc) {
        if (tn <= tm) mma_acc<RowMajor, ColMajor>(acc, tm, tn, 0, K, Qb, ldk, Kb, ldk);
      },
      [&](int i, int j, float s) {
        const float x = j <= i ? s * Gam[i * ldc + j] : 0.0f;
        if (P) P[i * C + j] = x;
        if (Pb) Pb[i * C + j] = __float2bfloat16(x);
      });
  __syncthreads();
}

// W (bf16), U, P, eg, r and K (bf16, per value head) of chunk blockIdx.x of (b = blockIdx.z, hv = blockIdx.y).
template <typename S>
__global__ void __launch_bounds__(kParThreads<float>)
    prepare_mma_kernel(Dims d, int NT, bf16* __restrict__ Wbg, float* __restrict__ Ug, float* __restrict__ Pg,
                       float* __restrict__ EGg, float* __restrict__ Rg, bf16* __restrict__ Kbg,
                       bf16* __restrict__ Qbg, bf16* __restrict__ Pbg, const float* __restrict__ q,
                       const float* __restrict__ k, const float* __restrict__ v, const float* __restrict__ g,
                       const float* __restrict__ beta) {
  pdl_enter();
  extern __shared__ __align__(128) unsigned char smem_mma[];
  d = shaped<S>(d);
  if constexpr (S::fixed) NT = S::K + S::V < kMmaSolveCols ? S::K + S::V : kMmaSolveCols;
  const int64_t n = blockIdx.x, hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int64_t t0 = n * d.C;
  const int L = static_cast<int>(min(d.C, d.T - t0));
  const int ldc = C + 1;
  const PrepareLayout lay(C, K, NT);
  float* eg = at<float>(smem_mma, lay.eg);
  float* bt = eg + 2 * C;
  float* Lm = at<float>(smem_mma, lay.Lm);  // [C, C+1]
  float* X = at<float>(smem_mma, lay.X);    // [C, NT] once Gam, Q and K are no longer needed
  const PrepareShared sh{at<double>(smem_mma, lay.gam), eg, at<float>(smem_mma, lay.Gam), Lm,
                         at<float>(smem_mma, lay.stage), at<bf16>(smem_mma, lay.Qb), at<bf16>(smem_mma, lay.Kb)};
  prepare_products<S, kParThreads<float>, 2>(d, sh, ldc, b, hv, n, L, Pg, EGg, Rg, Kbg, Qbg, Pbg, q, k, v, g,
                                             beta);
  const int64_t ks = d.Hk * d.K, vs = d.Hv * d.V, hr = d.head_row(b, hv, t0);
  const float* Kc = k + d.key_row(b, t0, hv);
  const float* Vc = v + d.value_row(b, t0, hv);
  // Forward substitution x_i = rhs_i - sum_{j<i} Lm_ij x_j on column tiles of [W | U], float32, as
  // prepare_tiled_kernel.
  bf16* Wc = Wbg + hr * d.K;
  float* Uc = Ug + hr * d.V;
  for (int c0 = 0; c0 < K + V; c0 += NT) {
    const int nc = (K + V) % NT == 0 ? NT : min(NT, K + V - c0);  // a constant for fixed shapes
    if constexpr (S::fixed) {  // four columns a load (K and the tile's width are multiples of 4), two in flight
      const int nc4 = nc / 4;
      for (int e0 = threadIdx.x; e0 < L * nc4; e0 += 2 * kParThreads<float>) {
        float4 x[2];
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const int e = e0 + u * kParThreads<float>, i = e / nc4, col = c0 + 4 * (e - i * nc4);
          if (e < L * nc4)
            x[u] = *reinterpret_cast<const float4*>(col < K ? Kc + i * ks + col : Vc + i * vs + (col - K));
        }
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const int e = e0 + u * kParThreads<float>, i = e / nc4, col = c0 + 4 * (e - i * nc4);
          if (e >= L * nc4) continue;
          const float sc = col < K ? bt[i] * eg[i] : bt[i];
          *reinterpret_cast<float4*>(X + i * NT + (col - c0)) =
              make_float4(sc * x[u].x, sc * x[u].y, sc * x[u].z, sc * x[u].w);
        }
      }
    } else {
      batched_copy<float>(
          L * nc,
          [&](int e) {
            const int i = e / nc, col = c0 + (e - i * nc);
            return col < K ? Kc[i * ks + col] : Vc[i * vs + (col - K)];
          },
          [&](int e, float x) {
            const int i = e / nc, col = c0 + (e - i * nc);
            X[i * NT + (col - c0)] = col < K ? bt[i] * eg[i] * x : bt[i] * x;
          });
    }
    __syncthreads();
    for (int r0 = 0; r0 < L; r0 += kSolveBlock) {
      const int rb = min(kSolveBlock, L - r0);
      tile_mm<4, 2, float>(
          rb, nc, r0, [&](int i, int j) { return Lm[(r0 + i) * ldc + j]; },
          [&](int j, int c) { return X[j * NT + c]; }, [&](int i, int c, float s) { X[(r0 + i) * NT + c] -= s; });
      __syncthreads();
      for (int c = threadIdx.x; c < nc; c += blockDim.x) {
        float x[kSolveBlock];
#pragma unroll
        for (int i = 0; i < kSolveBlock; ++i) x[i] = i < rb ? X[(r0 + i) * NT + c] : 0.0f;
#pragma unroll
        for (int j = 0; j < kSolveBlock - 1; ++j)
#pragma unroll
          for (int i = j + 1; i < kSolveBlock; ++i)
            if (i < rb) x[i] -= Lm[(r0 + i) * ldc + r0 + j] * x[j];
#pragma unroll
        for (int i = 1; i < kSolveBlock; ++i)
          if (i < rb) X[(r0 + i) * NT + c] = x[i];
      }
      __syncthreads();
    }
    if constexpr (S::fixed) {  // four columns a store
      const int nc4 = nc / 4;
      for (int e = threadIdx.x; e < L * nc4; e += blockDim.x) {
        const int i = e / nc4, col = c0 + 4 * (e - i * nc4);
        const float4 x = *reinterpret_cast<const float4*>(X + i * NT + (col - c0));
        if (col < K)
          put_bf16x4(Wc + int64_t(i) * K + col, x);
        else
          *reinterpret_cast<float4*>(Uc + int64_t(i) * V + (col - K)) = x;
      }
    } else {
      for (int e = threadIdx.x; e < L * nc; e += blockDim.x) {
        const int i = e / nc, col = c0 + (e - i * nc);
        const float x = X[i * NT + (col - c0)];
        if (col < K)
          Wc[int64_t(i) * K + col] = __float2bfloat16(x);
        else
          Uc[int64_t(i) * V + (col - K)] = x;
      }
    }
    __syncthreads();  // X is reloaded by the next column tile
  }
}

// ---- chunk-parallel kernels of the state passes

struct OutputLayout {
  size_t Qb, Hb, Pb, Vb, stage, total;
  __host__ __device__ OutputLayout(int64_t C, int64_t K, int64_t vp) {
    const int64_t Cp = pad16(C);
    Carve c;
    Qb = c.take<bf16>(Cp * (K + kPadB));
    Hb = c.take<bf16>(K * (vp + kPadB));
    Pb = c.take<bf16>(Cp * (Cp + kPadB));
    Vb = c.take<bf16>(Cp * (vp + kPadB));
    stage = c.take<float>(kParWarps * kStage);
    total = c.off;
  }
};

// O = scale ((eg ⊙ Q) H + P Vn) of chunk blockIdx.x / nvt, value columns [vp (blockIdx.x % nvt), +vp).
template <typename S>
__global__ void __launch_bounds__(kParThreads<float>, S::fixed ? 2 : 0)
    chunk_output_mma_kernel(Dims d, int vp, float* __restrict__ o, const float* __restrict__ chunk_states,
                            const bf16* __restrict__ Vng, const float* __restrict__ Pg,
                            const float* __restrict__ EGg, const float* __restrict__ q, float sc) {
  pdl_enter();
  extern __shared__ __align__(128) unsigned char smem_mma[];
  d = shaped<S>(d);
  if constexpr (S::fixed) vp = kFixedTile;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int Cp = static_cast<int>(pad16(C));
  const int nvt = (V + vp - 1) / vp;
  const int64_t n = blockIdx.x / nvt, hv = blockIdx.y, b = blockIdx.z;
  const int c0 = static_cast<int>(blockIdx.x % nvt) * vp, nv = min(vp, V - c0);
  const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
  const int L = static_cast<int>(min(d.C, d.T - t0));
  const int ldk = K + kPadB, ldv = vp + kPadB, ldp = Cp + kPadB;
  const OutputLayout lay(C, K, vp);
  bf16* Qb = at<bf16>(smem_mma, lay.Qb);  // [Cp, K+8]: eg ⊙ Q
  bf16* Hb = at<bf16>(smem_mma, lay.Hb);  // [K, vp+8]
  bf16* Pb = at<bf16>(smem_mma, lay.Pb);  // [Cp, Cp+8]
  bf16* Vb = at<bf16>(smem_mma, lay.Vb);  // [Cp, vp+8]
  float* stage = at<float>(smem_mma, lay.stage);
  const float* Qc = q + d.key_row(b, t0, hv);
  const float* Hc = chunk_states + d.chunk_state(b, hv, n) + c0;
  const float* P = Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C;
  if constexpr (S::fixed) {  // every load of a thread before its first store
    constexpr int C_ = S::C, K_ = S::K, kT = kParThreads<float>, tv = kFixedTile / 4;
    static_assert(C_ * K_ % (4 * kT) == 0 && C_ * C_ % (4 * kT) == 0 && C_ * tv % kT == 0 && K_ * tv % kT == 0,
                  "whole float4s per thread");
    const auto fq = fetch_rows<C_ * K_ / 4 / kT>(Qc, d.Hk * d.K, L, K_ / 4, EGg + hr);
    const auto fh = fetch_rows<K_ * tv / kT>(Hc, V, K_, tv);
    const auto fp = fetch_rows<C_ * C_ / 4 / kT>(P, C_, L, C_ / 4);
    const auto fv = fetch_rows<C_ * tv / kT>(Vng + hr * d.V + c0, d.V, L, tv);
    put_rows(fq, Qb, ldk, K_ / 4, AsIs());
    put_rows(fh, Hb, ldv, tv, AsIs());
    put_rows(fp, Pb, ldp, C_ / 4, Lower());
    put_rows(fv, Vb, ldv, tv, AsIs());
  } else {
    stage_rows<S>(Qb, ldk, L, Cp, K, [&](int i) { return Qc + i * d.Hk * d.K; }, [&](int i) { return EGg[hr + i]; });
    stage_rows<S>(Hb, ldv, K, K, nv, [&](int kk) { return Hc + int64_t(kk) * V; }, Unscaled());
    stage_bf16(Pb, ldp, L, Cp, Cp, [&](int i, int j) { return j <= i ? P[i * C + j] : 0.0f; });
    stage_rows<S>(Vb, ldv, L, Cp, nv, [&](int i) { return Vng + (hr + i) * d.V + c0; }, Unscaled());
  }
  __syncthreads();
  float* oc = o + d.value_row(b, t0, hv) + c0;  // row i of the chunk's output columns at oc + i os
  const int64_t os = d.Hv * d.V;
  mma_tiles(
      L, nv, stage,
      [&](int tm, int tn, Acc& acc) {
        mma_acc<RowMajor, RowMajor>(acc, tm, tn, 0, K, Qb, ldk, Hb, ldv);
        mma_acc<RowMajor, RowMajor>(acc, tm, tn, 0, min(Cp, (tm + 1) * 16), Pb, ldp, Vb, ldv);  // P is lower
      },
      [&](int i, int c, float s) { oc[i * os + c] = sc * s; });
}

struct PreLayout {
  size_t Wb, Qb, Hb, dOb, dOe, Pb, stage, total;
  __host__ __device__ PreLayout(int64_t C, int64_t K, int64_t vp, bool vn) {  // vn: room for W and H (Vn made)
    const int64_t Cp = pad16(C);
    Carve c;
    Wb = c.take<bf16>(vn ? Cp * (K + kPadB) : 0);
    Qb = c.take<bf16>(Cp * (K + kPadB));
    Hb = c.take<bf16>(vn ? K * (vp + kPadB) : 0);
    dOb = c.take<bf16>(Cp * (vp + kPadB));
    dOe = c.take<bf16>(Cp * (vp + kPadB));
    Pb = c.take<bf16>(Cp * (Cp + kPadB));
    stage = c.take<float>(kParWarps * kStage);
    total = c.off;
  }
};

// The dH-independent part of the backward state pass for chunk blockIdx.x / nvt, value columns
// [vp (blockIdx.x % nvt), +vp): A = scale P^T dO -> Ag, Qd = Q^T (scale eg ⊙ dO) -> Qdg, and with kVn Vn = U - W H ->
// Vng (the same products as the forward recurrence's, so the same bits; without kVn Vng is the forward's, not read).
template <typename S, bool kVn>
__global__ void __launch_bounds__(kParThreads<float>, S::fixed ? 2 : 0)
    backward_pre_mma_kernel(Dims d, int vp, bf16* __restrict__ Vng, float* __restrict__ Ag, float* __restrict__ Qdg,
                            const float* __restrict__ chunk_states, const bf16* __restrict__ Wbg,
                            const float* __restrict__ Ug, const float* __restrict__ Pg,
                            const float* __restrict__ EGg, const float* __restrict__ q,
                            const float* __restrict__ do_, float sc) {
  pdl_enter();
  extern __shared__ __align__(128) unsigned char smem_mma[];
  d = shaped<S>(d);
  if constexpr (S::fixed) vp = kFixedTile;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int Cp = static_cast<int>(pad16(C));
  const int nvt = (V + vp - 1) / vp;
  const int64_t n = blockIdx.x / nvt, hv = blockIdx.y, b = blockIdx.z;
  const int c0 = static_cast<int>(blockIdx.x % nvt) * vp, nv = min(vp, V - c0);
  const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
  const int L = static_cast<int>(min(d.C, d.T - t0));
  const int ldk = K + kPadB, ldv = vp + kPadB, ldp = Cp + kPadB;
  const PreLayout lay(C, K, vp, kVn);
  bf16* Wb = at<bf16>(smem_mma, lay.Wb);    // [Cp, K+8]
  bf16* Qb = at<bf16>(smem_mma, lay.Qb);    // [Cp, K+8]
  bf16* Hb = at<bf16>(smem_mma, lay.Hb);    // [K, vp+8]
  bf16* dOb = at<bf16>(smem_mma, lay.dOb);  // [Cp, vp+8]: dO
  bf16* dOe = at<bf16>(smem_mma, lay.dOe);  // [Cp, vp+8]: scale eg ⊙ dO
  bf16* Pb = at<bf16>(smem_mma, lay.Pb);    // [Cp, Cp+8]
  float* stage = at<float>(smem_mma, lay.stage);
  const float* Qc = q + d.key_row(b, t0, hv);
  const float* dOc = do_ + d.value_row(b, t0, hv) + c0;
  const float* Hc = chunk_states + d.chunk_state(b, hv, n) + c0;
  const float* P = Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C;
  const int64_t vs = d.Hv * d.V;
  if constexpr (S::fixed) {  // every load of a thread before its first store; dO read once for dOb and dOe
    constexpr int C_ = S::C, K_ = S::K, kT = kParThreads<float>, tv = kFixedTile / 4, kw = K_ / 8;
    static_assert(C_ * K_ % (4 * kT) == 0 && C_ * C_ % (4 * kT) == 0 && C_ * tv % kT == 0 && K_ * tv % kT == 0 &&
                      C_ * kw % kT == 0, "whole vectors per thread");
    constexpr int kW = kVn ? C_ * kw / kT : 0;
    uint4 w[kW > 0 ? kW : 1];  // W's bf16 rows, 8 values a load
#pragma unroll
    for (int u = 0; u < kW; ++u) {
      const int e = threadIdx.x + u * kT, i = e / kw;
      w[u] = i < L ? reinterpret_cast<const uint4*>(Wbg + (hr + i) * d.K)[e - i * kw] : make_uint4(0, 0, 0, 0);
    }
    const auto fq = fetch_rows<C_ * K_ / 4 / kT>(Qc, d.Hk * d.K, L, K_ / 4);
    constexpr int kH = kVn ? K_ * tv / kT : 1;
    Fetched<kH> fh{};
    if constexpr (kVn) fh = fetch_rows<kH>(Hc, V, K_, tv);
    const auto fo = fetch_rows<C_ * tv / kT>(dOc, vs, L, tv, EGg + hr);
    const auto fp = fetch_rows<C_ * C_ / 4 / kT>(P, C_, L, C_ / 4);
#pragma unroll
    for (int u = 0; u < kW; ++u) {
      const int e = threadIdx.x + u * kT, i = e / kw;
      *reinterpret_cast<uint4*>(Wb + i * ldk + 8 * (e - i * kw)) = w[u];
    }
    put_rows(fq, Qb, ldk, K_ / 4, AsIs());
    if constexpr (kVn) put_rows(fh, Hb, ldv, tv, AsIs());
    put_rows(fp, Pb, ldp, C_ / 4, Lower());
    // fo carries eg per row: dOb = dO (x / eg would round differently, so the values are taken before the scale),
    // dOe = sc eg dO.
#pragma unroll
    for (int u = 0; u < C_ * tv / kT; ++u) {
      const int e = threadIdx.x + u * kT, i = e / tv, j = 4 * (e - i * tv);
      const float4 x = fo.v[u];
      const float s = sc * fo.s[u];
      put_bf16x4(dOb + i * ldv + j, x);
      put_bf16x4(dOe + i * ldv + j, make_float4(s * x.x, s * x.y, s * x.z, s * x.w));
    }
  } else {
    if constexpr (kVn) {
      for (int e = threadIdx.x; e < Cp * K; e += blockDim.x) {  // W is bf16 already
        const int i = e / K, c = e - i * K;
        Wb[i * ldk + c] = i < L ? Wbg[(hr + i) * d.K + c] : __float2bfloat16(0.0f);
      }
      stage_rows<S>(Hb, ldv, K, K, nv, [&](int kk) { return Hc + int64_t(kk) * V; }, Unscaled());
    }
    stage_rows<S>(Qb, ldk, L, Cp, K, [&](int i) { return Qc + i * d.Hk * d.K; }, Unscaled());
    stage_rows<S>(dOb, ldv, L, Cp, nv, [&](int i) { return dOc + i * vs; }, Unscaled());
    stage_rows<S>(dOe, ldv, L, Cp, nv, [&](int i) { return dOc + i * vs; },
                  [&](int i) { return sc * EGg[hr + i]; });
    stage_bf16(Pb, ldp, L, Cp, Cp, [&](int i, int j) { return j <= i ? P[i * C + j] : 0.0f; });
  }
  __syncthreads();
  if constexpr (kVn)
    mma_tiles(
        L, nv, stage,
        [&](int tm, int tn, Acc& acc) { mma_acc<RowMajor, RowMajor>(acc, tm, tn, 0, K, Wb, ldk, Hb, ldv); },
        [&](int i, int c, float s) {
          Vng[(hr + i) * d.V + c0 + c] = __float2bfloat16(Ug[(hr + i) * d.V + c0 + c] - s);
        });
  // P^T is upper: row block tm needs the inner blocks from tm on.
  mma_tiles(
      L, nv, stage,
      [&](int tm, int tn, Acc& acc) { mma_acc<ColMajor, RowMajor>(acc, tm, tn, tm * 16, Cp, Pb, ldp, dOb, ldv); },
      [&](int i, int c, float s) { Ag[(hr + i) * d.V + c0 + c] = sc * s; });
  mma_tiles(
      K, nv, stage,
      [&](int tm, int tn, Acc& acc) { mma_acc<ColMajor, RowMajor>(acc, tm, tn, 0, Cp, Qb, ldk, dOe, ldv); },
      [&](int kk, int c, float s) { Qdg[d.chunk_state(b, hv, n) + c0 + int64_t(kk) * V + c] = s; });
}

}  // namespace gdn::cuda::delta_rule_tiled::mma
