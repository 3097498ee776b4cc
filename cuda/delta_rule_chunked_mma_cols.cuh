// cuda/delta_rule_chunked_mma_cols.cuh — prepare_cols_kernel: the work of prepare_mma_kernel
// (cuda/delta_rule_chunked_mma.cuh) at the fixed shape C = 64, K = V = 128, with its forward substitution done by
// columns in registers (included by cuda/delta_rule_chunked.cu only, through cuda/delta_rule_chunked_mma_host.cuh).
//
// prepare_mma_kernel solves [W | U] = (I + Lm)^-1 rhs in 16-row blocks: a block-wide update from shared memory
// (tile_mm) and a per-column solve of the diagonal block, two barriers per block of rows, every operand of the update
// read from shared memory (ncu: the solve was 45% of the kernel, bound by those loads). Here a block has K + V = 256
// threads and thread c owns column c of [W | U] for the whole chunk: its right-hand side goes from global memory
// straight into 64 registers, and x_i = rhs_i - sum_{j<i} Lm_ij x_j runs down the column with the other x_j in
// registers, Lm read four values a load (each a broadcast: every thread of the block reads the same row). No barrier
// and no shared tile: the column is stored to W (bf16) or U (float32) as soon as it is solved.
// The first half (gates, staging, K K^T and Q K^T into Lm and P) is prepare_mma_kernel's own, prepare_products
// (cuda/delta_rule_chunked_mma.cuh). The solve's arithmetic is prepare_mma_kernel's, in the same order: row block r0
// first sums s_i = sum_{j<r0} Lm_ij x_j from 0 in j order and sets x_i = rhs_i - s_i (tile_mm then X -= s), then
// x_i -= Lm_ij x_j for r0 <= j < i in j order (the diagonal block's solve), so W, U, P, eg, r and K's bf16 rows are
// prepare_mma_kernel's bits (gpu_check.sh runs the chunked harness both ways, GDN_DR_PREPARE_COLS=0 and 1, and the two
// tables must agree; docs/PERF.md has a training run with identical histories both ways). 256 threads of up to 128
// registers, 77 KB of shared memory: two blocks per SM, as prepare_mma_kernel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/delta_rule_chunked_mma.cuh"

namespace gdn::cuda::delta_rule_tiled::mma {

// Threads of prepare_cols_kernel: one per column of [W | U] at K = V = 128.
constexpr int kColsThreads = 256;

// Shared memory of prepare_cols_kernel (byte offsets): gam, decay [C] double; eg, r, beta [C]; Lm [C, C+4] (rows
// 16-byte aligned for the solve's float4 loads); Gam [C, C+1]; one [16,16] float32 stage per warp; Q, K [Cp, K+8] bf16.
struct ColsLayout {
  size_t gam, eg, Lm, Gam, stage, Qb, Kb, total;
  __host__ __device__ ColsLayout(int64_t C, int64_t K) {
    const int64_t Cp = pad16(C), ldk = K + kPadB;
    Carve c;
    gam = c.take<double>(2 * C);
    eg = c.take<float>(3 * C);
    Lm = c.take<float>(C * (C + 4));
    Gam = c.take<float>(C * (C + 1));
    stage = c.take<float>(kColsThreads / 32 * kStage);
    Qb = c.take<bf16>(Cp * ldk);
    Kb = c.take<bf16>(Cp * ldk);
    total = c.off;
  }
};

// x[r0 + i] for i < 16: the rows of block r0 of one column, as prepare_mma_kernel's block step (see the header), in
// two halves of 8 rows (fewer live sums; each row's operations and their order are the same). Lm row stride ldl (a
// multiple of 4); rows at or past L are left alone.
template <int r0, int ldl>
__device__ __forceinline__ void solve_row_block(float* x, const float* Lm, int L) {
#pragma unroll
  for (int h = 0; h < 16; h += 8) {
    float s[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i] = 0.0f;
#pragma unroll
    for (int j0 = 0; j0 < r0; j0 += 4)
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float4 l = *reinterpret_cast<const float4*>(Lm + (r0 + h + i) * ldl + j0);
        s[i] += l.x * x[j0];
        s[i] += l.y * x[j0 + 1];
        s[i] += l.z * x[j0 + 2];
        s[i] += l.w * x[j0 + 3];
      }
#pragma unroll
    for (int i = h; i < h + 8; ++i) {
      if (r0 + i >= L) return;
      float xi = x[r0 + i] - s[i - h];
#pragma unroll
      for (int j0 = 0; j0 < i; j0 += 4) {
        const float4 l = *reinterpret_cast<const float4*>(Lm + (r0 + i) * ldl + r0 + j0);
        const float lv[4] = {l.x, l.y, l.z, l.w};
#pragma unroll
        for (int u = 0; u < 4; ++u)
          if (j0 + u < i) xi -= lv[u] * x[r0 + j0 + u];
      }
      x[r0 + i] = xi;
    }
  }
}

// W (bf16), U, P, eg, r and K (bf16, per value head) of chunk blockIdx.x of (b = blockIdx.z, hv = blockIdx.y), as
// prepare_mma_kernel at Shape<64, 128, 128>.
template <typename S>
__global__ void __launch_bounds__(kColsThreads, 2)
    prepare_cols_kernel(Dims d, bf16* __restrict__ Wbg, float* __restrict__ Ug, float* __restrict__ Pg,
                        float* __restrict__ EGg, float* __restrict__ Rg, bf16* __restrict__ Kbg,
                        bf16* __restrict__ Qbg, bf16* __restrict__ Pbg, const float* __restrict__ q,
                        const float* __restrict__ k, const float* __restrict__ v, const float* __restrict__ g,
                        const float* __restrict__ beta) {
  pdl_enter();
  static_assert(S::fixed && S::C == 64 && S::K + S::V == kColsThreads, "C = 64 and K + V = 256 only");
  extern __shared__ __align__(128) unsigned char smem_mma[];
  d = shaped<S>(d);
  constexpr int C = S::C, K = S::K, V = S::V, ldl = C + 4;
  const int64_t n = blockIdx.x, hv = blockIdx.y, b = blockIdx.z;
  const int64_t t0 = n * C;
  const int L = static_cast<int>(min(int64_t(C), d.T - t0));
  const ColsLayout lay(C, K);
  float* eg = at<float>(smem_mma, lay.eg);
  float* bt = eg + 2 * C;
  float* Lm = at<float>(smem_mma, lay.Lm);  // [C, C+4]
  const PrepareShared sh{at<double>(smem_mma, lay.gam), eg, at<float>(smem_mma, lay.Gam), Lm,
                         at<float>(smem_mma, lay.stage), at<bf16>(smem_mma, lay.Qb), at<bf16>(smem_mma, lay.Kb)};
  prepare_products<S, kColsThreads, 4>(d, sh, ldl, b, hv, n, L, Pg, EGg, Rg, Kbg, Qbg, Pbg, q, k, v, g, beta);
  const int64_t ks = d.Hk * K, vs = d.Hv * V, hr = d.head_row(b, hv, t0);
  const float* Kc = k + d.key_row(b, t0, hv);
  const float* Vc = v + d.value_row(b, t0, hv);
  // Column c of [W | U]: rhs (beta eg ⊙ K or beta ⊙ V), solved down the column, stored.
  const int c = threadIdx.x;
  const bool wcol = c < K;  // warp-uniform: K is a multiple of 32
  const float* src = wcol ? Kc + c : Vc + (c - K);
  const int64_t stride = wcol ? ks : vs;
  float x[C];
#pragma unroll
  for (int i = 0; i < C; ++i) x[i] = i < L ? src[i * stride] : 0.0f;
#pragma unroll
  for (int i = 0; i < C; ++i)
    if (i < L) x[i] = (wcol ? bt[i] * eg[i] : bt[i]) * x[i];
  solve_row_block<0, ldl>(x, Lm, L);
  solve_row_block<16, ldl>(x, Lm, L);
  solve_row_block<32, ldl>(x, Lm, L);
  solve_row_block<48, ldl>(x, Lm, L);
  if (wcol) {
    bf16* Wc = Wbg + hr * K + c;
#pragma unroll
    for (int i = 0; i < C; ++i)
      if (i < L) Wc[int64_t(i) * K] = __float2bfloat16(x[i]);
  } else {
    float* Uc = Ug + hr * V + (c - K);
#pragma unroll
    for (int i = 0; i < C; ++i)
      if (i < L) Uc[int64_t(i) * V] = x[i];
  }
}

}  // namespace gdn::cuda::delta_rule_tiled::mma
