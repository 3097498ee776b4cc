// cuda/delta_rule_chunked_mma_grad.cuh — chunk_grad_mma_kernel, the per-chunk gradient of the chunked gated delta
// rule with its tile products on bfloat16 tensor cores (included by cuda/delta_rule_chunked.cu only; the machinery
// is in cuda/delta_rule_chunked_mma_common.cuh, the float32 twin is chunk_grad_tiled_kernel of
// cuda/delta_rule_chunked_grad.cuh, whose phases and summation orders this kernel follows).
//
// One block of 512 threads (kParThreads) per chunk, grid (NC, Hv, B). Shared memory (GradLayout):
//   persistent  gam, decay [C] double; eg, r, beta, dgam, db, kd [C], 32 for block_sum (float32);
//               Gam, KK, X [C, C+1] float32 (X: dP, dQK, Lm, dL in turn); K [Cp, K+8] bf16; Xb [Cp, Cp+8] bf16
//               (the bf16 operand made from X); the warp stages; Xs [C, K+V] float32, which holds dWt from phase 1
//               and [dWt | dUt] from phase 3 on (they never leave shared memory)
//   region      reused by the phases:
//     1. value tiles of 64 columns, bf16: dO, Vn, dVn [Cp, 72], H, dH [K, 72]. Tensor cores: X += dO Vn^T,
//        dQ += dO H^T, dWt += dVn H^T, dK += Vn dH^T (the transposed operands loaded col_major); dQ, dK accumulate
//        in float32 in global memory (the outputs), dWt in Xs, each element read and written by its one owner lane,
//        with their row scales (scale eg, -1, r) when the last tile is added; sum(H ⊙ dH) in float32 (dH arrives
//        as bf16 from the backward recurrence).
//     2. P [C, C+1] float32, Q [Cp, K+8] bf16: dgam from dP ⊙ P and the row dots Q·dQi, K·dKi (float32, Q and K
//        read from global; a warp per row); dQK = dP ⊙ Gam (float32, its bf16 copy in Xb); tensor cores:
//        dQ += dQK K, dK += dQK^T Q (the zero 16-blocks of the triangle skipped).
//     3. [dWt | dUt] = A^T [-dVn H^T | dVn] in place in Xs by the blocked backward substitution of
//        chunk_grad_tiled_kernel over all K + V columns, entirely float32 (diagonal blocks and block updates).
//     4. inner tiles of [dWt | dUt] (from Xs) and [W | U] as bf16 [Cp, cols + 8] (all K + V columns in one tile at the
//        fixed shapes, 64 otherwise): tensor cores
//        dL = -(dWt W^T + dUt U^T) into X (float32 accumulated over the tiles); dv = beta dUt, dbeta and dgam terms
//        in float32 (a warp per row); then Z = diag(beta) Pm + (diag(beta) Pm)^T with Pm = dL ⊙ Gam (float32,
//        rounded once into Xb) and on tensor cores dK += beta eg dWt + Z K (= beta ⊙ (Pm K) + Pm^T (beta ⊙ K));
//        dg = reverse cumsum of dgam (double).
// At fixed shapes each phase stages its global operands in one pass (stage_value_tile, stage_p_q, stage_inner_all):
// a thread issues all its 16-byte loads before its first store into shared memory, so their latencies overlap; and
// each phase asks L2 for the next phase's operands (prefetch_rows_l2), which then arrive during its products.
// Each output element has one owner lane and a fixed order (value tiles in order, the tensor cores' fixed order
// inside a tile, warp_sum's fixed butterfly): no atomics, identical bits run to run. Xs makes the shared memory grow
// with K + V (228,736 bytes at C = 64, K = V = 128); plan() falls back to the float32 kernels where it does not fit.
#pragma once

#include "cuda/delta_rule_chunked_grad.cuh"
#include "cuda/delta_rule_chunked_mma.cuh"
#include "cuda/launch.h"

namespace gdn::cuda::delta_rule_tiled::mma {

constexpr int kGradTile = 64;  // value columns per phase-1 tile, inner columns per phase-4 tile (Generic)

// Inner columns per phase-4 tile: all K + V at the fixed shapes (one staging, one product per dL tile), kGradTile
// otherwise.
template <typename S>
constexpr int grad_inner() {
  if constexpr (S::fixed)
    return S::K + S::V;
  else
    return kGradTile;
}

struct GradLayout {
  size_t gam, vec, Gam, KK, X, Kb, Xb, stage, Xs, region, dOb, Vnb, dVnb, Hb, dHb, Ps, Qb, At, Bt, total;
  __host__ __device__ GradLayout(int64_t C, int64_t K, int64_t V, int64_t inner) {  // inner: grad_inner<S>()
    const int64_t Cp = pad16(C), ldc = C + 1, ldt = kGradTile + kPadB;
    Carve c;
    gam = c.take<double>(2 * C);
    vec = c.take<float>(6 * C + 32);
    Gam = c.take<float>(C * ldc);
    KK = c.take<float>(C * ldc);
    X = c.take<float>(C * ldc);
    Kb = c.take<bf16>(Cp * (K + kPadB));
    Xb = c.take<bf16>(Cp * (Cp + kPadB));
    stage = c.take<float>(kParWarps * kStage);
    Xs = c.take<float>(C * (K + V));
    region = c.off;
    Carve p1 = c, p2 = c, p4 = c;
    dOb = p1.take<bf16>(Cp * ldt);
    Vnb = p1.take<bf16>(Cp * ldt);
    dVnb = p1.take<bf16>(Cp * ldt);
    Hb = p1.take<bf16>(K * ldt);
    dHb = p1.take<bf16>(K * ldt);
    Ps = p2.take<float>(C * ldc);
    Qb = p2.take<bf16>(Cp * (K + kPadB));
    At = p4.take<bf16>(Cp * (inner + kPadB));
    Bt = p4.take<bf16>(Cp * (inner + kPadB));
    total = p1.off > p2.off ? p1.off : p2.off;
    total = total > p4.off ? total : p4.off;
  }
};

// Phase 1's operands of value tile c0 at a fixed shape, in one pass: dO, Vn, dVn [L, 64] and H, dH [K, 64] rounded
// to bf16 (rows L.. of the first three zero; Vn and dH arrive as bf16). Each thread issues all its loads (four
// values each: kRow of the three row operands, then kH of H and the same places of dH) before its first store, so
// that their latencies overlap; returns the thread's terms of sum(H ⊙ dH) over the tile (float32).
template <typename S>
__device__ __forceinline__ float stage_value_tile(bf16* dOb, bf16* Vnb, bf16* dVnb, bf16* Hb, bf16* dHb, int L,
                                                  const float* dO, int64_t vs, const bf16* Vn, const float* dVn,
                                                  const float* H, const bf16* dH, int c0) {
  constexpr int C = S::C, K = S::K, V = S::V, cv = kGradTile / 4, ldt = kGradTile + kPadB;
  constexpr int kT = kParThreads<float>, kPer = C * cv / kT, kRow = 3 * kPer, kH = K * cv / kT;
  static_assert(C * cv % kT == 0 && K * cv % kT == 0, "whole float4s per thread");
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 a[kRow], h[kH], dh[kH];
#pragma unroll
  for (int u = 0; u < kPer; ++u) {  // a[u], a[kPer + u], a[2 kPer + u]: dO, Vn (bf16), dVn at the same place
    const int e = threadIdx.x + u * kT, i = e / cv, q = e - i * cv;
    a[u] = i < L ? load4(dO + i * vs + c0 + 4 * q) : zero;
    a[kPer + u] = i < L ? load4(Vn + int64_t(i) * V + c0 + 4 * q) : zero;
    a[2 * kPer + u] = i < L ? load4(dVn + int64_t(i) * V + c0 + 4 * q) : zero;
  }
#pragma unroll
  for (int u = 0; u < kH; ++u) {
    const int e = threadIdx.x + u * kT, kk = e / cv, q = e - kk * cv;
    h[u] = reinterpret_cast<const float4*>(H + int64_t(kk) * V + c0)[q];
    dh[u] = load4(dH + int64_t(kk) * V + c0 + 4 * q);
  }
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int e = threadIdx.x + u * kT, i = e / cv, q = e - i * cv;
    put_bf16x4(dOb + i * ldt + 4 * q, a[u]);
    put_bf16x4(Vnb + i * ldt + 4 * q, a[kPer + u]);
    put_bf16x4(dVnb + i * ldt + 4 * q, a[2 * kPer + u]);
  }
  float hdh = 0;
#pragma unroll
  for (int u = 0; u < kH; ++u) {
    const int e = threadIdx.x + u * kT, kk = e / cv, q = e - kk * cv;
    put_bf16x4(Hb + kk * ldt + 4 * q, h[u]);
    put_bf16x4(dHb + kk * ldt + 4 * q, dh[u]);
    hdh += h[u].x * dh[u].x + h[u].y * dh[u].y + h[u].z * dh[u].z + h[u].w * dh[u].w;
  }
  return hdh;
}

// Phase 2's operands at a fixed shape, in one pass: Ps = the lower triangle of P [L, L] (float32, zero above the
// diagonal) and Qb = bf16 of Q's rows [L, K] (rows L.. zero); every load of a thread before its first store.
template <typename S>
__device__ __forceinline__ void stage_p_q(float* Ps, bf16* Qb, int L, const float* P, const float* Qc, int64_t ks) {
  constexpr int C = S::C, K = S::K, kT = kParThreads<float>, pv = C / 4, qv = K / 4, ldc = C + 1, ldk = K + kPadB;
  constexpr int kP = C * pv / kT, kQ = C * qv / kT;
  static_assert(C * pv % kT == 0 && C * qv % kT == 0, "whole float4s per thread");
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 p[kP], qr[kQ];
#pragma unroll
  for (int u = 0; u < kP; ++u) {
    const int e = threadIdx.x + u * kT, i = e / pv;
    p[u] = i < L ? reinterpret_cast<const float4*>(P)[e] : zero;
  }
#pragma unroll
  for (int u = 0; u < kQ; ++u) {
    const int e = threadIdx.x + u * kT, i = e / qv, q = e - i * qv;
    qr[u] = i < L ? reinterpret_cast<const float4*>(Qc + i * ks)[q] : zero;
  }
#pragma unroll
  for (int u = 0; u < kP; ++u) {
    const int e = threadIdx.x + u * kT, i = e / pv, j0 = 4 * (e - i * pv);
    const float x[4] = {p[u].x, p[u].y, p[u].z, p[u].w};
#pragma unroll
    for (int t = 0; t < 4; ++t)
      if (i < L && j0 + t < L) Ps[i * ldc + j0 + t] = j0 + t <= i ? x[t] : 0.0f;
  }
#pragma unroll
  for (int u = 0; u < kQ; ++u) {
    const int e = threadIdx.x + u * kT, i = e / qv, q = e - i * qv;
    put_bf16x4(Qb + i * ldk + 4 * q, qr[u]);
  }
}

// Phase 4's operands at a fixed shape, all K + V inner columns at once: At = bf16 of [dWt | dUt] (from Xs), Bt =
// [W | U] (W's bf16 rows copied 8 values a load, U rounded from float4s), rows L.. zero; a thread's global loads (W,
// U) before its first store.
template <typename S>
__device__ __forceinline__ void stage_inner_all(bf16* At, bf16* Bt, int L, const float* Xs, const bf16* W,
                                                const float* U) {
  constexpr int C = S::C, K = S::K, V = S::V, NX = K + V, ld = NX + kPadB, kT = kParThreads<float>;
  constexpr int wv = K / 8, uv = V / 4, xv = NX / 4, kW = C * wv / kT, kU = C * uv / kT;
  static_assert(C * wv % kT == 0 && C * uv % kT == 0 && C * xv % kT == 0, "whole loads per thread");
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  uint4 w[kW];
  float4 u[kU];
#pragma unroll
  for (int t = 0; t < kW; ++t) {
    const int e = threadIdx.x + t * kT, i = e / wv;
    w[t] = i < L ? reinterpret_cast<const uint4*>(W + int64_t(i) * K)[e - i * wv] : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int t = 0; t < kU; ++t) {
    const int e = threadIdx.x + t * kT, i = e / uv;
    u[t] = i < L ? reinterpret_cast<const float4*>(U + int64_t(i) * V)[e - i * uv] : zero;
  }
#pragma unroll
  for (int t = 0; t < C * xv / kT; ++t) {
    const int e = threadIdx.x + t * kT, i = e / xv, q = e - i * xv;
    put_bf16x4(At + i * ld + 4 * q, i < L ? reinterpret_cast<const float4*>(Xs + i * NX)[q] : zero);
  }
#pragma unroll
  for (int t = 0; t < kW; ++t) {
    const int e = threadIdx.x + t * kT, i = e / wv;
    *reinterpret_cast<uint4*>(Bt + i * ld + 8 * (e - i * wv)) = w[t];
  }
#pragma unroll
  for (int t = 0; t < kU; ++t) {
    const int e = threadIdx.x + t * kT, i = e / uv;
    put_bf16x4(Bt + i * ld + K + 4 * (e - i * uv), u[t]);
  }
}

// Every gradient of chunk blockIdx.x of (b = blockIdx.z, hv = blockIdx.y). dQ, dK rows go to dqr/dkr (the outputs
// when Hv == Hk, row stride key_stride; else [B,Hv,T,K] scratch).
template <typename S>
__global__ void __launch_bounds__(kParThreads<float>)
    chunk_grad_mma_kernel(Dims d, float* __restrict__ dqr, float* __restrict__ dkr, int64_t key_stride,
                          float* __restrict__ dv, float* __restrict__ dg, float* __restrict__ dbeta,
                          const float* __restrict__ do_,
                          const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                          const float* __restrict__ g, const float* __restrict__ beta,
                          const float* __restrict__ chunk_states, const bf16* __restrict__ dHend,
                          const bf16* __restrict__ Vng, const float* __restrict__ dVng, const bf16* __restrict__ Wbg,
                          const float* __restrict__ Ug, const float* __restrict__ Pg, float sc) {
  pdl_enter();
  extern __shared__ __align__(128) unsigned char smem_mma[];
  d = shaped<S>(d);
  const int64_t n = blockIdx.x, hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int Cp = static_cast<int>(pad16(C));
  const int64_t t0 = n * d.C;
  const int L = static_cast<int>(min(d.C, d.T - t0));
  const int ldc = C + 1, ldk = K + kPadB, ldx = Cp + kPadB, ldt = kGradTile + kPadB;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const GradLayout lay(C, K, V, grad_inner<S>());
  double* gam = at<double>(smem_mma, lay.gam);
  double* decay = gam + C;
  float* eg = at<float>(smem_mma, lay.vec);
  float* r = eg + C;
  float* bt = r + C;
  float* dgam = bt + C;
  float* db = dgam + C;
  float* kd = db + C;
  float* red = kd + C;
  float* Gam = at<float>(smem_mma, lay.Gam);  // [C, C+1]
  float* KK = at<float>(smem_mma, lay.KK);    // [C, C+1]
  float* X = at<float>(smem_mma, lay.X);      // [C, C+1]
  bf16* Kb = at<bf16>(smem_mma, lay.Kb);      // [Cp, K+8]
  bf16* Xb = at<bf16>(smem_mma, lay.Xb);      // [Cp, Cp+8]
  float* stage = at<float>(smem_mma, lay.stage);
  const int64_t ks = d.Hk * d.K, vs = d.Hv * d.V;
  const int64_t hr = d.head_row(b, hv, t0);
  const float* Qc = q + d.key_row(b, t0, hv);
  const float* Kc = k + d.key_row(b, t0, hv);
  const float* Vc = v + d.value_row(b, t0, hv);
  const float* dO = do_ + d.value_row(b, t0, hv);
  const float* H = chunk_states + d.chunk_state(b, hv, n);
  const bf16* dH = dHend + d.chunk_state(b, hv, n);
  const bf16* Vn = Vng + hr * V;
  const float* dVn = dVng + hr * V;
  const bf16* W = Wbg + hr * K;
  const float* U = Ug + hr * V;
  // Each phase asks L2 for the next one's operands (prefetch_rows_l2), first K and value tile 0's here.
  auto prefetch_value_tile = [&](int c0) {
    const int bytes = min(kGradTile, V - c0) * 4;
    prefetch_rows_l2(dO + c0, vs * 4, L, bytes);
    prefetch_rows_l2(Vn + c0, V * 2, L, bytes / 2);
    prefetch_rows_l2(dVn + c0, V * 4, L, bytes);
    prefetch_rows_l2(H + c0, V * 4, K, bytes);
    prefetch_rows_l2(dH + c0, V * 2, K, bytes / 2);
  };
  prefetch_rows_l2(Kc, ks * 4, L, K * 4);
  prefetch_value_tile(0);
  if constexpr (S::fixed)
    chunk_gates_scan<S::C>(d, g, beta, b, hv, t0, L, gam, eg, r, bt, Gam, ldc);
  else
    chunk_gates_tiled(d, g, beta, b, hv, t0, L, gam, decay, eg, r, bt, Gam, ldc);

  const int NX = K + V;
  float* Xs = at<float>(smem_mma, lay.Xs);  // [C, K+V]: dWt, then [dWt | dUt]
  float* dQ = dqr + (d.Hv == d.Hk ? d.key_row(b, t0, hv) : hr * K);
  float* dK = dkr + (d.Hv == d.Hk ? d.key_row(b, t0, hv) : hr * K);
  const int64_t qs = key_stride;

  stage_rows<S>(Kb, ldk, L, Cp, K, [&](int i) { return Kc + i * ks; }, Unscaled());
  __syncthreads();
  // KK = strictly_lower(K K^T)
  mma_tiles(
      L, L, stage,
      [&](int tm, int tn, Acc& acc) {
        if (tn <= tm) mma_acc<RowMajor, ColMajor>(acc, tm, tn, 0, K, Kb, ldk, Kb, ldk);
      },
      [&](int i, int j, float s) { KK[i * ldc + j] = j < i ? s : 0.0f; });

  // ---- phase 1: products over V in value tiles
  bf16* dOb = at<bf16>(smem_mma, lay.dOb);
  bf16* Vnb = at<bf16>(smem_mma, lay.Vnb);
  bf16* dVnb = at<bf16>(smem_mma, lay.dVnb);
  bf16* Hb = at<bf16>(smem_mma, lay.Hb);
  bf16* dHb = at<bf16>(smem_mma, lay.dHb);
  float hdh = 0;
  for (int c0 = 0; c0 < V; c0 += kGradTile) {
    const int nv = V % kGradTile == 0 ? kGradTile : min(kGradTile, V - c0);  // a constant for fixed shapes
    const bool first = c0 == 0, last = c0 + kGradTile >= V;
    __syncthreads();  // the previous tile's readers are done
    if constexpr (S::fixed) {
      hdh += stage_value_tile<S>(dOb, Vnb, dVnb, Hb, dHb, L, dO, vs, Vn, dVn, H, dH, c0);
    } else {
      stage_rows<S>(dOb, ldt, L, Cp, nv, [&](int i) { return dO + i * vs + c0; }, Unscaled());
      stage_rows<S>(Vnb, ldt, L, Cp, nv, [&](int i) { return Vn + int64_t(i) * V + c0; }, Unscaled());
      stage_rows<S>(dVnb, ldt, L, Cp, nv, [&](int i) { return dVn + int64_t(i) * V + c0; }, Unscaled());
      for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
        const int kk = e / nv, c = e - kk * nv;
        const float h = H[int64_t(kk) * V + c0 + c], dh = __bfloat162float(dH[int64_t(kk) * V + c0 + c]);
        Hb[kk * ldt + c] = __float2bfloat16(h);
        dHb[kk * ldt + c] = __float2bfloat16(dh);
        hdh += h * dh;
      }
    }
    __syncthreads();
    if (!last) {
      prefetch_value_tile(c0 + kGradTile);
    } else {  // phase 2's P and Q
      prefetch_rows_l2(Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C, C * 4, L, C * 4);
      prefetch_rows_l2(Qc, ks * 4, L, K * 4);
    }
    // X += dO Vn^T (raw dP; the tiles above the diagonal stay 0, the diagonal tiles are masked in phase 2)
    mma_tiles_rmw(
        L, L, stage,
        [&](int tm, int tn, Acc& acc) {
          if (tn <= tm) mma_acc<RowMajor, ColMajor>(acc, tm, tn, 0, nv, dOb, ldt, Vnb, ldt);
        },
        [&](int i, int j) { return first ? 0.0f : X[i * ldc + j]; },
        [&](int i, int j, float o, float s) { X[i * ldc + j] = first ? s : o + s; });
    // dQi = scale eg ⊙ (dO H^T)
    mma_tiles_rmw(
        L, K, stage,
        [&](int tm, int tn, Acc& acc) { mma_acc<RowMajor, ColMajor>(acc, tm, tn, 0, nv, dOb, ldt, Hb, ldt); },
        [&](int i, int kk) { return first ? 0.0f : dQ[i * qs + kk]; },
        [&](int i, int kk, float o, float s) {
          float x = first ? s : o + s;
          if (last) x = sc * eg[i] * x;
          dQ[i * qs + kk] = x;
        });
    // dWt = -(dVn H^T)
    mma_tiles_rmw(
        L, K, stage,
        [&](int tm, int tn, Acc& acc) { mma_acc<RowMajor, ColMajor>(acc, tm, tn, 0, nv, dVnb, ldt, Hb, ldt); },
        [&](int i, int kk) { return first ? 0.0f : Xs[i * NX + kk]; },
        [&](int i, int kk, float o, float s) {
          float x = first ? s : o + s;
          if (last) x = -x;
          Xs[i * NX + kk] = x;
        });
    // dKi = r ⊙ (Vn dH^T)
    mma_tiles_rmw(
        L, K, stage,
        [&](int tm, int tn, Acc& acc) { mma_acc<RowMajor, ColMajor>(acc, tm, tn, 0, nv, Vnb, ldt, dHb, ldt); },
        [&](int i, int kk) { return first ? 0.0f : dK[i * qs + kk]; },
        [&](int i, int kk, float o, float s) {
          float x = first ? s : o + s;
          if (last) x = r[i] * x;
          dK[i * qs + kk] = x;
        });
  }
  hdh = block_sum(hdh, red);  // synchronizes the block: phase 1 is complete

  // ---- phase 2: dgam of P and the row dots; dQK
  float* Ps = at<float>(smem_mma, lay.Ps);  // [C, C+1]
  bf16* Qb = at<bf16>(smem_mma, lay.Qb);    // [Cp, K+8]
  const float* Pc = Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C;
  if constexpr (S::fixed) {
    stage_p_q<S>(Ps, Qb, L, Pc, Qc, ks);
  } else {
    stage_lower(Ps, ldc, Pc, C, L);
    stage_rows<S>(Qb, ldk, L, Cp, K, [&](int i) { return Qc + i * ks; }, Unscaled());
  }
  // phases 3 and 4's dVn, V, W and U
  prefetch_rows_l2(dVn, V * 4, L, V * 4);
  prefetch_rows_l2(Vc, vs * 4, L, V * 4);
  prefetch_rows_l2(W, K * 2, L, K * 2);
  prefetch_rows_l2(U, V * 4, L, V * 4);
  for (int e = threadIdx.x; e < C * C; e += blockDim.x) {
    const int i = e / C, j = e - i * C;
    if (i < L && j < L) X[i * ldc + j] = j <= i ? sc * X[i * ldc + j] : 0.0f;  // dP
  }
  __syncthreads();
  // dgam = rowsum(dP ⊙ P) - colsum(dP ⊙ P) + rowdot(Q, dQi) - rowdot(K, dKi), a warp per row
  for (int i = warp; i < L; i += nwarps) {
    float rs = 0, cs = 0, qd = 0, kdi = 0;
    for (int j = lane; j < L; j += 32) {
      rs += X[i * ldc + j] * Ps[i * ldc + j];
      cs += X[j * ldc + i] * Ps[j * ldc + i];
    }
    for (int kk = lane; kk < K; kk += 32) {
      qd += Qc[i * ks + kk] * dQ[i * qs + kk];
      kdi += Kc[i * ks + kk] * dK[i * qs + kk];
    }
    rs = warp_sum(rs);
    cs = warp_sum(cs);
    qd = warp_sum(qd);
    kdi = warp_sum(kdi);
    if (lane == 0) {
      kd[i] = kdi;
      dgam[i] = (rs - cs) + qd - kdi;
    }
  }
  __syncthreads();
  if (warp == 0) {
    float kdsum = 0;
    for (int i = lane; i < L; i += 32) kdsum += kd[i];
    kdsum = warp_sum(kdsum);
    if (lane == 0) dgam[L - 1] += eg[L - 1] * hdh + kdsum;
  }
  // dQK = dP ⊙ Gam in X, its bf16 copy in Xb (zero outside [L, L])
  for (int e = threadIdx.x; e < Cp * Cp; e += blockDim.x) {
    const int i = e / Cp, j = e - i * Cp;
    float x = 0.0f;
    if (i < L && j < L) {
      x = X[i * ldc + j] * Gam[i * ldc + j];
      X[i * ldc + j] = x;
    }
    Xb[i * ldx + j] = __float2bfloat16(x);
  }
  __syncthreads();
  // dQ += dQK K (dQK lower: inner blocks up to the row block), dK += dQK^T Q (inner blocks from the row block)
  mma_tiles_rmw(
      L, K, stage,
      [&](int tm, int tn, Acc& acc) {
        mma_acc<RowMajor, RowMajor>(acc, tm, tn, 0, min(Cp, (tm + 1) * 16), Xb, ldx, Kb, ldk);
      },
      [&](int i, int kk) { return dQ[i * qs + kk]; },
      [&](int i, int kk, float o, float s) { dQ[i * qs + kk] = o + s; });
  mma_tiles_rmw(
      L, K, stage,
      [&](int tm, int tn, Acc& acc) { mma_acc<ColMajor, RowMajor>(acc, tm, tn, tm * 16, Cp, Xb, ldx, Qb, ldk); },
      [&](int i, int kk) { return dK[i * qs + kk]; },
      [&](int i, int kk, float o, float s) { dK[i * qs + kk] = o + s; });
  __syncthreads();

  // ---- phase 3: [dWt | dUt] = A^T [-dVn H^T | dVn], backward substitution with Lm_ji = beta_j KK_ji Gam_ji (float32)
  for (int e = threadIdx.x; e < C * C; e += blockDim.x) {
    const int i = e / C, j = e - i * C;
    if (i < L && j < L) X[i * ldc + j] = j < i ? bt[i] * KK[i * ldc + j] * Gam[i * ldc + j] : 0.0f;  // Lm
  }
  // The right-hand side's dVn columns next to dWt (phase 1's) in Xs; the solve runs over all K + V columns in place.
  batched_copy<float>(
      L * V, [&](int e) { return dVn[e]; },
      [&](int e, float x) {
        const int i = e / V;
        Xs[i * NX + K + (e - i * V)] = x;
      });
  __syncthreads();
  for (int r1 = L; r1 > 0; r1 -= kSolveBlock) {
    const int r0 = max(0, r1 - kSolveBlock), rb = r1 - r0;
    tile_mm<4, 2, float>(
        rb, NX, L - r1, [&](int i, int j) { return X[(r1 + j) * ldc + r0 + i]; },
        [&](int j, int c) { return Xs[(r1 + j) * NX + c]; },
        [&](int i, int c, float s) { Xs[(r0 + i) * NX + c] -= s; });
    __syncthreads();
    for (int c = threadIdx.x; c < NX; c += blockDim.x) {
      float x[kSolveBlock];
#pragma unroll
      for (int i = 0; i < kSolveBlock; ++i) x[i] = i < rb ? Xs[(r0 + i) * NX + c] : 0.0f;
#pragma unroll
      for (int j = kSolveBlock - 1; j > 0; --j)
#pragma unroll
        for (int i = 0; i < j; ++i)
          if (j < rb) x[i] -= X[(r0 + j) * ldc + r0 + i] * x[j];
#pragma unroll
      for (int i = 0; i < kSolveBlock - 1; ++i)
        if (i < rb - 1) Xs[(r0 + i) * NX + c] = x[i];
    }
    __syncthreads();
  }

  // ---- phase 4 (dWt, dUt in Xs)
  // dV = beta ⊙ dUt
  batched_copy<float>(
      L * V,
      [&](int e) {
        const int i = e / V;
        return bt[i] * Xs[i * NX + K + (e - i * V)];
      },
      [&](int e, float x) {
        const int i = e / V;
        dv[d.value_row(b, t0 + i, hv) + (e - i * V)] = x;
      });
  // dbeta = eg ⊙ rowdot(K, dWt) + rowdot(V, dUt); dgam += beta eg ⊙ rowdot(K, dWt)
  for (int i = warp; i < L; i += nwarps) {
    float wk = 0, vu = 0;
    for (int kk = lane; kk < K; kk += 32) wk += Kc[i * ks + kk] * Xs[i * NX + kk];
    for (int cc = lane; cc < V; cc += 32) vu += Vc[i * vs + cc] * Xs[i * NX + K + cc];
    wk = warp_sum(wk);
    vu = warp_sum(vu);
    if (lane == 0) {
      db[i] = eg[i] * wk + vu;
      dgam[i] += bt[i] * eg[i] * wk;
    }
  }
  // X = -(dWt W^T + dUt U^T) strictly below the diagonal (dl of the CPU), over inner tiles of [dWt | dUt], [W | U]
  // (one tile of all K + V columns at the fixed shapes)
  constexpr int kInner = grad_inner<S>();
  const int ldi = kInner + kPadB;
  bf16* At = at<bf16>(smem_mma, lay.At);  // [Cp, kInner+8]
  bf16* Bt = at<bf16>(smem_mma, lay.Bt);  // [Cp, kInner+8]
  for (int k0 = 0; k0 < K + V; k0 += kInner) {
    const int nk = (K + V) % kInner == 0 ? kInner : min(kInner, K + V - k0);
    const bool first = k0 == 0, last = k0 + kInner >= K + V;
    __syncthreads();  // X (Lm) and the previous tile's readers are done
    if constexpr (S::fixed) {
      stage_inner_all<S>(At, Bt, L, Xs, W, U);
    } else {
      stage_bf16(At, ldi, L, Cp, nk, [&](int i, int c) { return Xs[i * NX + k0 + c]; });
      stage_bf16(Bt, ldi, L, Cp, nk, [&](int i, int c) {
        const int col = k0 + c;
        return col < K ? __bfloat162float(W[int64_t(i) * K + col]) : U[int64_t(i) * V + (col - K)];
      });
    }
    __syncthreads();
    mma_tiles(
        L, L, stage,
        [&](int tm, int tn, Acc& acc) {
          if (tn <= tm) mma_acc<RowMajor, ColMajor>(acc, tm, tn, 0, nk, At, ldi, Bt, ldi);
        },
        [&](int i, int j, float s) {
          float x = first ? s : X[i * ldc + j] + s;
          if (last) x = j < i ? -x : 0.0f;
          X[i * ldc + j] = x;
        });
  }
  __syncthreads();
  // With m_ij = dl_ij Lm_ij: dgam_j += sum_{j'<j} m_jj' - sum_{i>j} m_ij; dbeta_j += sum_{j'<j} (dl_jj' Gam_jj') KK_jj'
  // (a warp per row j, each sum over the lanes then warp_sum).
  for (int j = warp; j < L; j += nwarps) {
    float dgi = 0, dbj = 0, dgc = 0;
    for (int jj = lane; jj < j; jj += 32) {
      const float dl = X[j * ldc + jj];
      dgi += dl * (bt[j] * KK[j * ldc + jj] * Gam[j * ldc + jj]);
      dbj += dl * Gam[j * ldc + jj] * KK[j * ldc + jj];
    }
    for (int i = j + 1 + lane; i < L; i += 32) dgc += X[i * ldc + j] * (bt[i] * KK[i * ldc + j] * Gam[i * ldc + j]);
    dgi = warp_sum(dgi);
    dbj = warp_sum(dbj);
    dgc = warp_sum(dgc);
    if (lane == 0) {
      dgam[j] = dgam[j] + dgi - dgc;
      db[j] = db[j] + dbj;
    }
  }
  __syncthreads();
  // Z = diag(beta) Pm + (diag(beta) Pm)^T, Pm = dL ⊙ Gam (strictly lower), into Xb; then dK += Z K.
  for (int e = threadIdx.x; e < Cp * Cp; e += blockDim.x) {
    const int i = e / Cp, j = e - i * Cp;
    float z = 0.0f;
    if (i < L && j < L) {
      if (j < i)
        z = bt[i] * (X[i * ldc + j] * Gam[i * ldc + j]);
      else if (j > i)
        z = bt[j] * (X[j * ldc + i] * Gam[j * ldc + i]);
    }
    Xb[i * ldx + j] = __float2bfloat16(z);
  }
  __syncthreads();
  // dK += (beta eg) ⊙ dWt + Z K
  mma_tiles_rmw(
      L, K, stage, [&](int tm, int tn, Acc& acc) { mma_acc<RowMajor, RowMajor>(acc, tm, tn, 0, Cp, Xb, ldx, Kb, ldk); },
      [&](int i, int kk) { return dK[i * qs + kk]; },
      [&](int i, int kk, float o, float s) { dK[i * qs + kk] = (o + bt[i] * eg[i] * Xs[i * NX + kk]) + s; });
  // dg = reverse cumsum of dgam (double; warp 0: lane l sums its segment of rows, counted from the last, then a scan
  // over the lanes gives each segment the sum of the rows after it), dbeta
  if (warp == 0) {
    const int per = (L + 31) / 32, hi = L - lane * per, lo = max(0, hi - per);
    double seg = 0;
    for (int i = hi - 1; i >= lo; --i) seg += static_cast<double>(dgam[i]);
    double acc = warp_exclusive_sum(seg);
    for (int i = hi - 1; i >= lo; --i) {
      acc += static_cast<double>(dgam[i]);
      dg[d.gate(b, t0 + i, hv)] = static_cast<float>(acc);
      dbeta[d.gate(b, t0 + i, hv)] = db[i];
    }
  }
}

}  // namespace gdn::cuda::delta_rule_tiled::mma
