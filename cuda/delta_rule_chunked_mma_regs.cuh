// cuda/delta_rule_chunked_mma_regs.cuh — the state recurrences of the chunked gated delta rule with the state in
// registers, at the fixed shapes (included by cuda/delta_rule_chunked.cu only, through the host side; the shared-memory
// recurrences of cuda/delta_rule_chunked_mma_recur.cuh run every other shape and do the same arithmetic).
//
// Each warp owns 16 value columns of the state and holds them transposed, H^T [16, K], as float32 accumulators of
// mma.sync m16n8k16 (bf16 operands, float32 accumulation). Computing the transposed products
//   forward   Vn^T = U^T - H^T W^T,          H^T <- eg_L H^T + (r ⊙ Vn)^T K
//   backward  dVn^T = A^T + r ⊙ (dH^T K^T),  dH^T <- eg_L dH^T + Qd^T - dVn^T W
// makes each product's accumulators, rounded to bf16 and paired, the A operand of the next one (the register reuse of
// FlashAttention-2): a warp's step reads only the chunk's W, K (bf16 rows, ldmatrix) and U / A, Qd, r, eg_L (float32)
// from shared memory and never waits for another warp. The block's threads copy the operands of the chunk
// reg_buffers() - 1 ahead (cp.async) while the warps work on chunk n, one __syncthreads a chunk. Each element's
// arithmetic is that of the shared-memory kernels: every product summed from zero over its inner index in 16-wide
// steps in order, then Vn = U - s, r Vn rounded to bf16, H = eg_L H + s (backward: dVn = A + r s,
// dH = eg_L dH + Qd - s). forward_recur_out_kernel (the last section) is the forward with the chunk output made in
// the same pass, from the state while it is in registers.
//
// Fragments (PTX ISA, mma.m16n8k16 with .bf16), lane = 4 g + t: an accumulator [16, 8] holds (g, 2t), (g, 2t+1),
// (g+8, 2t), (g+8, 2t+1); an A operand [16, 16] holds (g, 2t..2t+1), (g+8, 2t..2t+1), (g, 2t+8..), (g+8, 2t+8..), that
// is the accumulators of two neighbouring n-tiles; a B operand [16, 8] holds (k 2t..2t+1, n g), (k 2t+8.., n g).
#pragma once

#include <cstdint>

#include "cuda/delta_rule_chunked_mma_recur.cuh"
#include "cuda/launch.h"

namespace gdn::cuda::delta_rule_tiled::mma {

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
// c += a b, m16n8k16, bf16 operands, float32 accumulators.
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Four 8x8 bf16 matrices from shared memory, lane l giving the row address of matrix l / 8 (transposed: .trans).
template <bool kTrans>
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
}
// B operands of n-tiles n0 and n0 + 8 at k-tile k0 from a bf16 tile M [rows, ld]: B[k][n] = M[n][k] (rows: the
// tile's rows are the n index, e.g. W^T from W) or B[k][n] = M[k][n] (cols: e.g. K as it is). b[0], b[1]: n-tile
// n0; b[2], b[3]: n-tile n0 + 8.
__device__ __forceinline__ void b_rows(uint32_t (&b)[4], const bf16* M, int ld, int n0, int k0, int lane) {
  ldsm_x4<false>(b, M + (n0 + (lane & 7) + ((lane >> 4) << 3)) * ld + k0 + ((lane >> 3) & 1) * 8);
}
__device__ __forceinline__ void b_cols(uint32_t (&b)[4], const bf16* M, int ld, int n0, int k0, int lane) {
  ldsm_x4<true>(b, M + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8);
}
// The A operand of k-tile kt made from accumulators x[2 kt], x[2 kt + 1] (bf16, round to nearest even).
template <int N>
__device__ __forceinline__ void a_from_acc(uint32_t (&a)[4], const float (&x)[N][4], int kt) {
  a[0] = pack_bf16x2(x[2 * kt][0], x[2 * kt][1]);
  a[1] = pack_bf16x2(x[2 * kt][2], x[2 * kt][3]);
  a[2] = pack_bf16x2(x[2 * kt + 1][0], x[2 * kt + 1][1]);
  a[3] = pack_bf16x2(x[2 * kt + 1][2], x[2 * kt + 1][3]);
}

// One buffer of a chunk's operands: W, K [C, K+8] bf16; U (forward) or A (backward) [C, vt+4] float32; (backward)
// Qd [K, vt+4]; r [C] and eg_L at [C]. The row stride vt + 4 spreads a fragment's rows 2t over distinct banks.
struct RegLayout {
  size_t W, K, A, Qd, r, size;
  __host__ __device__ RegLayout(int64_t C, int64_t Kd, int64_t vt, bool backward) {
    Carve c;
    W = c.take<bf16>(C * (Kd + kPadB));
    K = c.take<bf16>(C * (Kd + kPadB));
    A = c.take<float>(C * (vt + 4));
    Qd = backward ? c.take<float>(Kd * (vt + 4)) : c.off;
    r = c.take<float>(C + 1);
    size = c.off;
  }
};
// Buffers of the register recurrences: the forward's copies run two chunks ahead, the backward's (larger, with Qd)
// one.
template <bool kBackward>
constexpr int reg_buffers() {
  return kBackward ? 2 : 3;
}
inline size_t reg_smem(int64_t C, int64_t K, int vt, bool backward) {
  return RegLayout(C, K, vt, backward).size * (backward ? reg_buffers<true>() : reg_buffers<false>());
}

// A step's chunk operands into one buffer of a block of 2 VT threads, asynchronously: two bf16 row tiles X, Y
// [C, K + 8] from L rows of Xg, Yg (row stride K; rows L .. C zeroed) and a float32 tile A [C, VT + 4] from L rows
// of Ag (row stride V). Full chunks copy unrolled (async_rows16_full), the last, partial one by the loop.
template <int VT, int C, int K, int V>
__device__ __forceinline__ void async_chunk_rows(bf16* X, const bf16* Xg, bf16* Y, const bf16* Yg, float* A,
                                                 const float* Ag, int L) {
  constexpr int ldk = K + kPadB, ldv = VT + 4;
  if (L == C) {
    async_rows16_full<2 * VT, C, K>(X, ldk, Xg, K);
    async_rows16_full<2 * VT, C, K>(Y, ldk, Yg, K);
    async_rows16_full<2 * VT, C, VT>(A, ldv, Ag, V);
  } else {
    async_rows16(X, ldk, Xg, K, L, K);
    async_rows16(Y, ldk, Yg, K, L, K);
    zero_rows_bf16(X, ldk, L, C, K);
    zero_rows_bf16(Y, ldk, L, C, K);
    async_rows16(A, ldv, Ag, V, L, VT);
  }
}

// Element e of a warp's accumulator n-tile j: row (value column) g + 8 (e / 2), column 8 j + 2 t + e % 2.
__device__ __forceinline__ int acc_row(int g, int e) { return g + 8 * (e >> 1); }
__device__ __forceinline__ int acc_col(int j, int t, int e) { return 8 * j + 2 * t + (e & 1); }

// A warp's state S^T [16, K] from / to a [K, V] float32 state whose element (0, 0) of the warp's columns is at
// p[off] (loaded as 0 where p is null).
template <int K>
__device__ __forceinline__ void load_state(float (&h)[K / 8][4], const float* p, int64_t off, int64_t V, int g,
                                           int t) {
#pragma unroll
  for (int j = 0; j < K / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) h[j][e] = p ? p[off + int64_t(acc_col(j, t, e)) * V + acc_row(g, e)] : 0.0f;
}
template <int K>
__device__ __forceinline__ void store_state(float* p, int64_t off, const float (&h)[K / 8][4], int64_t V, int g,
                                            int t) {
#pragma unroll
  for (int j = 0; j < K / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) p[off + int64_t(acc_col(j, t, e)) * V + acc_row(g, e)] = h[j][e];
}
// The products of a step run as several independent accumulator chains at once (kt or ip outer, the output tiles
// inner), so that a warp issues the next tile's mma while the one before is in flight: one chain at a time left each
// mma's latency exposed, the warp being alone on its scheduler. Each accumulator still sums its k-tiles from zero in
// order, so the bits are those of one chain at a time.
//
// A step's first product, S^T M^T (M: a chunk's bf16 W or K rows): s[ip] (n-tiles 16 ip and 16 ip + 8) = sum over the
// K/16 k-tiles of the state's A operands times the rows 16 ip .. 16 ip + 15 of M as B; then each element becomes
// y = epi(i, c, s) (chunk row i, value column c of the warp's 16), and a receives Y^T [16, C] as the bf16 A operands
// of the second product.
template <int C, int K, typename Epi>
__device__ __forceinline__ void first_product(uint32_t (&a)[C / 16][4], const float (&h)[K / 8][4], const bf16* M,
                                              int ld, int lane, Epi epi) {
  const int g = lane >> 2, t = lane & 3;
  float s[C / 16][2][4] = {};
#pragma unroll
  for (int kt = 0; kt < K / 16; ++kt) {
    uint32_t ha[4];  // bf16 S^T, k-tile kt
    a_from_acc(ha, h, kt);
#pragma unroll
    for (int ip = 0; ip < C / 16; ++ip) {
      uint32_t b[4];
      b_rows(b, M, ld, 16 * ip, 16 * kt, lane);
      mma_16816(s[ip][0], ha, b[0], b[1]);
      mma_16816(s[ip][1], ha, b[2], b[3]);
    }
  }
#pragma unroll
  for (int ip = 0; ip < C / 16; ++ip) {
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[ip][u][e] = epi(acc_col(2 * ip + u, t, e), acc_row(g, e), s[ip][u][e]);
    a_from_acc(a[ip], s[ip], 0);
  }
}
// A step's second product, Y^T M (M: the chunk's bf16 K or W rows), kG pairs of n-tiles (16 key columns each) at a
// time: s[u] = sum over the C/16 k-tiles of a times columns 16 (jp + u) .. + 15 of M as B; each state element becomes
// epi(kk, c, old value, the product).
template <int C, int K, typename Epi>
__device__ __forceinline__ void second_product(float (&h)[K / 8][4], const uint32_t (&a)[C / 16][4], const bf16* M,
                                               int ld, int lane, Epi epi) {
  constexpr int kG = K / 16 < 4 ? K / 16 : 4;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int jp = 0; jp < K / 16; jp += kG) {
    float s[kG][2][4] = {};
#pragma unroll
    for (int ip = 0; ip < C / 16; ++ip)
#pragma unroll
      for (int u = 0; u < kG; ++u) {
        uint32_t b[4];
        b_cols(b, M, ld, 16 * (jp + u), 16 * ip, lane);
        mma_16816(s[u][0], a[ip], b[0], b[1]);
        mma_16816(s[u][1], a[ip], b[2], b[3]);
      }
#pragma unroll
    for (int u = 0; u < kG; ++u)
#pragma unroll
      for (int v = 0; v < 2; ++v)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = 2 * (jp + u) + v;
          h[j][e] = epi(acc_col(j, t, e), acc_row(g, e), h[j][e], s[u][v][e]);
        }
  }
}

// Forward recurrence, value columns [VT blockIdx.x, +VT) of (b = blockIdx.z, hv = blockIdx.y), VT / 16 warps.
template <typename S, int VT>
__global__ void __launch_bounds__(VT * 2, 1)
    forward_recur_reg_kernel(Dims d, float* __restrict__ final_state, float* __restrict__ chunk_states,
                             bf16* __restrict__ Vng, const bf16* __restrict__ Kbg, const bf16* __restrict__ Wbg,
                             const float* __restrict__ Ug, const float* __restrict__ EGg,
                             const float* __restrict__ Rg, const float* __restrict__ s0) {
  pdl_enter();
  static_assert(S::fixed && S::C % 16 == 0 && S::K % 16 == 0, "fixed shapes only");
  extern __shared__ __align__(128) unsigned char smem_mma[];
  d = shaped<S>(d);
  constexpr int C = S::C, K = S::K, V = S::V, NB = reg_buffers<false>(), ldk = K + kPadB, ldv = VT + 4;
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, w16 = 16 * (threadIdx.x >> 5);
  const int c0 = blockIdx.x * VT;
  const RegLayout lay(C, K, VT, false);
  auto buf = [&](int64_t n) { return smem_mma + (n % NB) * lay.size; };
  auto load = [&](int64_t n) {  // chunk n's W, K, U, r, eg_L (an empty group past the last chunk)
    if (n < d.NC) {
      unsigned char* bf = buf(n);
      const int64_t t0 = n * C, hr = d.head_row(b, hv, t0);
      const int L = static_cast<int>(min(int64_t(C), d.T - t0));
      float* rs = at<float>(bf, lay.r);
      async_chunk_rows<VT, C, K, V>(at<bf16>(bf, lay.W), Wbg + hr * K, at<bf16>(bf, lay.K), Kbg + hr * K,
                                    at<float>(bf, lay.A), Ug + hr * V + c0, L);
      async_vec(rs, Rg + hr, L);
      if (threadIdx.x == 0) cp_async_elem(rs + C, EGg + hr + L - 1);
    }
    cp_async_commit();
  };
  for (int n = 0; n < NB - 1; ++n) load(n);
  const int64_t s_off = (b * d.Hv + hv) * int64_t(K) * V + c0 + w16;
  float h[K / 8][4];
  load_state<K>(h, s0, s_off, V, g, t);
  for (int64_t n = 0; n < d.NC; ++n) {
    cp_async_wait_group<NB - 2>();
    __syncthreads();  // chunk n's operands have landed; every warp is done with the buffer load() refills
    load(n + NB - 1);
    unsigned char* bf = buf(n);
    const bf16* Ws = at<bf16>(bf, lay.W);
    const bf16* Ks = at<bf16>(bf, lay.K);
    const float* Us = at<float>(bf, lay.A) + w16;
    const float* rs = at<float>(bf, lay.r);
    const int64_t t0 = n * C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(int64_t(C), d.T - t0));
    store_state<K>(chunk_states + d.chunk_state(b, hv, n) + c0 + w16, 0, h, V, g, t);
    // Vn^T = U^T - H^T W^T; (r ⊙ Vn)^T as bf16 A operands
    uint32_t va[C / 16][4];
    first_product<C, K>(va, h, Ws, ldk, lane, [&](int i, int c, float s) {
      float vr = 0.0f;
      if (i < L) {
        const float x = Us[i * ldv + c] - s;
        Vng[(hr + i) * V + c0 + w16 + c] = __float2bfloat16(x);
        vr = rs[i] * x;
      }
      return vr;
    });
    const float eg_last = rs[C];
    // H^T = eg_L H^T + (r ⊙ Vn)^T K
    second_product<C, K>(h, va, Ks, ldk, lane, [&](int, int, float h0, float s) { return eg_last * h0 + s; });
  }
  if (final_state) store_state<K>(final_state, s_off, h, V, g, t);
}

// Backward recurrence, value columns [VT blockIdx.x, +VT) of (b, hv), chunks last to first. Qdg holds Qd of every
// chunk (backward_pre_mma_kernel); dHend receives dH_end in bf16; dVng holds A on entry and dVn on exit.
template <typename S, int VT>
__global__ void __launch_bounds__(VT * 2, 1)
    backward_recur_reg_kernel(Dims d, float* __restrict__ dinitial_state, const float* __restrict__ Qdg,
                              bf16* __restrict__ dHend, float* __restrict__ dVng,
                              const float* __restrict__ dfinal_state, const bf16* __restrict__ Kbg,
                              const bf16* __restrict__ Wbg, const float* __restrict__ EGg,
                              const float* __restrict__ Rg) {
  pdl_enter();
  static_assert(S::fixed && S::C % 16 == 0 && S::K % 16 == 0, "fixed shapes only");
  extern __shared__ __align__(128) unsigned char smem_mma[];
  d = shaped<S>(d);
  constexpr int C = S::C, K = S::K, V = S::V, NB = reg_buffers<true>(), ldk = K + kPadB, ldv = VT + 4;
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, w16 = 16 * (threadIdx.x >> 5);
  const int c0 = blockIdx.x * VT;
  const RegLayout lay(C, K, VT, true);
  auto buf = [&](int64_t step) { return smem_mma + (step % NB) * lay.size; };
  auto load = [&](int64_t step) {  // chunk NC - 1 - step's K, W, A, Qd, r, eg_L (an empty group past chunk 0)
    const int64_t n = d.NC - 1 - step;
    if (n >= 0) {
      unsigned char* bf = buf(step);
      const int64_t t0 = n * C, hr = d.head_row(b, hv, t0);
      const int L = static_cast<int>(min(int64_t(C), d.T - t0));
      float* rs = at<float>(bf, lay.r);
      async_chunk_rows<VT, C, K, V>(at<bf16>(bf, lay.K), Kbg + hr * K, at<bf16>(bf, lay.W), Wbg + hr * K,
                                    at<float>(bf, lay.A), dVng + hr * V + c0, L);
      async_rows16_full<2 * VT, K, VT>(at<float>(bf, lay.Qd), ldv, Qdg + d.chunk_state(b, hv, n) + c0, V);
      async_vec(rs, Rg + hr, L);
      if (threadIdx.x == 0) cp_async_elem(rs + C, EGg + hr + L - 1);
    }
    cp_async_commit();
  };
  for (int step = 0; step < NB - 1; ++step) load(step);
  const int64_t s_off = (b * d.Hv + hv) * int64_t(K) * V + c0 + w16;
  float h[K / 8][4];  // dH^T
  load_state<K>(h, dfinal_state, s_off, V, g, t);
  for (int64_t step = 0; step < d.NC; ++step) {
    cp_async_wait_group<NB - 2>();
    __syncthreads();  // this chunk's operands have landed; every warp is done with the buffer load() refills
    load(step + NB - 1);
    const int64_t n = d.NC - 1 - step;
    unsigned char* bf = buf(step);
    const bf16* Ks = at<bf16>(bf, lay.K);
    const bf16* Ws = at<bf16>(bf, lay.W);
    const float* As = at<float>(bf, lay.A) + w16;
    const float* Qd = at<float>(bf, lay.Qd) + w16;
    const float* rs = at<float>(bf, lay.r);
    const int64_t t0 = n * C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(int64_t(C), d.T - t0));
    // dVn^T = A^T + r ⊙ (dH^T K^T); dVn^T as bf16 A operands
    uint32_t va[C / 16][4];
    first_product<C, K>(va, h, Ks, ldk, lane, [&](int i, int c, float s) {
      float x = 0.0f;
      if (i < L) {
        x = As[i * ldv + c] + rs[i] * s;
        dVng[(hr + i) * V + c0 + w16 + c] = x;
      }
      return x;
    });
    const float eg_last = rs[C];
    // dH^T = eg_L dH^T + Qd^T - dVn^T W; the dH^T it replaces is chunk n's dH_end (bf16 into dHend)
    bf16* dHn = dHend + d.chunk_state(b, hv, n) + c0 + w16;
    second_product<C, K>(h, va, Ws, ldk, lane, [&](int kk, int c, float h0, float s) {
      dHn[int64_t(kk) * V + c] = __float2bfloat16(h0);
      return eg_last * h0 + Qd[kk * ldv + c] - s;
    });
  }
  if (dinitial_state) store_state<K>(dinitial_state, s_off, h, V, g, t);
}

// ---- the forward recurrence with the chunk output

// One buffer of forward_recur_out_kernel: the forward recurrence's (RegLayout) and the chunk's Q [C, K+8] and
// P [C, C+8] (bf16 rows, prepare's Qbg and Pbg) and eg [C]. Two buffers: the copies run one chunk ahead.
struct RegOutLayout {
  RegLayout reg;
  size_t Q, P, eg, size;
  __host__ __device__ RegOutLayout(int64_t C, int64_t Kd, int64_t vt) : reg(C, Kd, vt, false) {
    Carve c;
    c.off = reg.size;
    Q = c.take<bf16>(C * (Kd + kPadB));
    P = c.take<bf16>(C * (C + kPadB));
    eg = c.take<float>(C);
    size = c.off;
  }
};
constexpr int kRegOutBuffers = 2;
inline size_t reg_out_smem(int64_t C, int64_t K, int vt) { return RegOutLayout(C, K, vt).size * kRegOutBuffers; }

// The forward recurrence and the chunk output in one pass, at the fixed shapes: forward_recur_reg_kernel's step (the
// same products in the same order, so the same Vn and states), and with chunk n's state still in registers the
// warp's 16 value columns of its output, O^T = scale (H^T Q^T diag(eg) + Vn^T P^T): the bf16 A operands of H^T that
// multiply W's rows multiply Q's too, and Vn^T (bf16, as stored) is the A operand of P^T (P lower: k-tiles up to the
// diagonal). No chunk-parallel output kernel then reads the states, Q and P back. kKeep: chunk_states and Vng are
// written (for the backward or the caller); without it neither is (a forward with no backward). final_state may be
// null.
template <typename S, int VT, bool kKeep>
__global__ void __launch_bounds__(VT * 2, 1)
    forward_recur_out_kernel(Dims d, float* __restrict__ o, float* __restrict__ final_state,
                             float* __restrict__ chunk_states, bf16* __restrict__ Vng, const bf16* __restrict__ Kbg,
                             const bf16* __restrict__ Wbg, const bf16* __restrict__ Qbg,
                             const bf16* __restrict__ Pbg, const float* __restrict__ Ug,
                             const float* __restrict__ EGg, const float* __restrict__ Rg,
                             const float* __restrict__ s0, float sc) {
  pdl_enter();
  static_assert(S::fixed && S::C % 16 == 0 && S::K % 16 == 0, "fixed shapes only");
  extern __shared__ __align__(128) unsigned char smem_mma[];
  d = shaped<S>(d);
  constexpr int C = S::C, K = S::K, V = S::V, NB = kRegOutBuffers, ldk = K + kPadB, ldv = VT + 4, ldp = C + kPadB;
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, w16 = 16 * (threadIdx.x >> 5);
  const int c0 = blockIdx.x * VT;
  const RegOutLayout lay(C, K, VT);
  auto buf = [&](int64_t n) { return smem_mma + (n % NB) * lay.size; };
  auto load = [&](int64_t n) {  // chunk n's W, K, U, r, eg_L, Q, P, eg (an empty group past the last chunk)
    if (n < d.NC) {
      unsigned char* bf = buf(n);
      const int64_t t0 = n * C, hr = d.head_row(b, hv, t0);
      const int L = static_cast<int>(min(int64_t(C), d.T - t0));
      float* rs = at<float>(bf, lay.reg.r);
      bf16* Qs = at<bf16>(bf, lay.Q);
      async_chunk_rows<VT, C, K, V>(at<bf16>(bf, lay.reg.W), Wbg + hr * K, at<bf16>(bf, lay.reg.K), Kbg + hr * K,
                                    at<float>(bf, lay.reg.A), Ug + hr * V + c0, L);
      if (L == C) {
        async_rows16_full<2 * VT, C, K>(Qs, ldk, Qbg + hr * K, K);
      } else {
        async_rows16(Qs, ldk, Qbg + hr * K, K, L, K);
        zero_rows_bf16(Qs, ldk, L, C, K);
      }
      async_rows16_full<2 * VT, C, C>(at<bf16>(bf, lay.P), ldp, Pbg + ((b * d.Hv + hv) * d.NC + n) * C * C, C);
      async_vec(rs, Rg + hr, L);
      async_vec(at<float>(bf, lay.eg), EGg + hr, L);
      if (threadIdx.x == 0) cp_async_elem(rs + C, EGg + hr + L - 1);
    }
    cp_async_commit();
  };
  for (int n = 0; n < NB - 1; ++n) load(n);
  const int64_t s_off = (b * d.Hv + hv) * int64_t(K) * V + c0 + w16, os = d.Hv * V;
  float h[K / 8][4];
  load_state<K>(h, s0, s_off, V, g, t);
  for (int64_t n = 0; n < d.NC; ++n) {
    cp_async_wait_group<NB - 2>();
    __syncthreads();  // chunk n's operands have landed; every warp is done with the buffer load() refills
    load(n + NB - 1);
    unsigned char* bf = buf(n);
    const bf16* Ws = at<bf16>(bf, lay.reg.W);
    const bf16* Ks = at<bf16>(bf, lay.reg.K);
    const bf16* Qs = at<bf16>(bf, lay.Q);
    const bf16* Ps = at<bf16>(bf, lay.P);
    const float* Us = at<float>(bf, lay.reg.A) + w16;
    const float* rs = at<float>(bf, lay.reg.r);
    const float* es = at<float>(bf, lay.eg);
    const int64_t t0 = n * C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(int64_t(C), d.T - t0));
    if constexpr (kKeep) store_state<K>(chunk_states + d.chunk_state(b, hv, n) + c0 + w16, 0, h, V, g, t);
    // H^T W^T and H^T Q^T, each accumulator summed over the k-tiles in order (first_product's chains)
    float sw[C / 16][2][4] = {}, sq[C / 16][2][4] = {};
#pragma unroll
    for (int kt = 0; kt < K / 16; ++kt) {
      uint32_t ha[4];
      a_from_acc(ha, h, kt);
#pragma unroll
      for (int ip = 0; ip < C / 16; ++ip) {
        uint32_t bw[4], bq[4];
        b_rows(bw, Ws, ldk, 16 * ip, 16 * kt, lane);
        b_rows(bq, Qs, ldk, 16 * ip, 16 * kt, lane);
        mma_16816(sw[ip][0], ha, bw[0], bw[1]);
        mma_16816(sw[ip][1], ha, bw[2], bw[3]);
        mma_16816(sq[ip][0], ha, bq[0], bq[1]);
        mma_16816(sq[ip][1], ha, bq[2], bq[3]);
      }
    }
    // Vn^T = U^T - H^T W^T (stored in bf16 with kKeep); its bf16 A operands vn and those of (r ⊙ Vn)^T, va
    uint32_t va[C / 16][4], vn[C / 16][4];
#pragma unroll
    for (int ip = 0; ip < C / 16; ++ip) {
      float x[2][4], xr[2][4];
#pragma unroll
      for (int u = 0; u < 2; ++u)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = acc_col(2 * ip + u, t, e), c = acc_row(g, e);
          x[u][e] = 0.0f;
          xr[u][e] = 0.0f;
          if (i < L) {
            x[u][e] = Us[i * ldv + c] - sw[ip][u][e];
            if constexpr (kKeep) Vng[(hr + i) * V + c0 + w16 + c] = __float2bfloat16(x[u][e]);
            xr[u][e] = rs[i] * x[u][e];
          }
        }
      a_from_acc(vn[ip], x, 0);
      a_from_acc(va[ip], xr, 0);
    }
    const float eg_last = rs[C];
    // H^T = eg_L H^T + (r ⊙ Vn)^T K
    second_product<C, K>(h, va, Ks, ldk, lane, [&](int, int, float h0, float s) { return eg_last * h0 + s; });
    // O^T = scale (eg ⊙ (H^T Q^T) + Vn^T P^T), rows i < L of o
    float* oc = o + d.value_row(b, t0, hv) + c0 + w16;
#pragma unroll
    for (int ip = 0; ip < C / 16; ++ip) {
#pragma unroll
      for (int u = 0; u < 2; ++u)
#pragma unroll
        for (int e = 0; e < 4; ++e) sq[ip][u][e] *= es[acc_col(2 * ip + u, t, e)];
#pragma unroll
      for (int kt = 0; kt <= ip; ++kt) {
        uint32_t bp[4];
        b_rows(bp, Ps, ldp, 16 * ip, 16 * kt, lane);
        mma_16816(sq[ip][0], vn[kt], bp[0], bp[1]);
        mma_16816(sq[ip][1], vn[kt], bp[2], bp[3]);
      }
#pragma unroll
      for (int u = 0; u < 2; ++u)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = acc_col(2 * ip + u, t, e);
          if (i < L) oc[i * os + acc_row(g, e)] = sc * sq[ip][u][e];
        }
    }
  }
  if (final_state) store_state<K>(final_state, s_off, h, V, g, t);
}

}  // namespace gdn::cuda::delta_rule_tiled::mma
