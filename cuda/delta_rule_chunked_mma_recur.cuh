// cuda/delta_rule_chunked_mma_recur.cuh — the state recurrences of the chunked gated delta rule on bfloat16 tensor
// cores (included by cuda/delta_rule_chunked.cu only; the machinery is in cuda/delta_rule_chunked_mma_common.cuh, the
// float32 twins are forward_recur_kernel / backward_recur_kernel of cuda/delta_rule_chunked_split.cuh). At the fixed
// shapes the register recurrences of cuda/delta_rule_chunked_mma_regs.cuh run instead (GDN_DR_RECUR_VT=0: these).
//
//   forward_recur_mma_kernel  grid (ceil(V/vt), Hv, B), vt in {32, 16}, chunks in order:
//                             Vn = U - W H (stored in bf16, the operand its consumers take), Vr = r ⊙ Vn rounded
//                             to bf16, H_next = eg_L H + K^T Vr; stores chunk_states; final_state at the end.
//   backward_recur_mma_kernel grid as the forward, chunks last to first, over the Qd and A of backward_pre_mma_kernel:
//                             dVn = A + r ⊙ (K dH) (stored float32), dH_start = eg_L dH + Qd - W^T dVn; stores
//                             dH_end in bf16 (the chunk gradient's operand); dinitial_state at the end.
// The state H (dH) stays float32 in shared memory [K, vt]; the epilogue that updates it also writes its bf16 copy
// Hb [K, vt+8], the operand of the next chunk's product. W and K of a chunk arrive as bf16 rows (prepare_mma_kernel
// wrote them) with 16-byte cp.async into [Cp, K+8] tiles (rows L..Cp-1 of a short chunk zeroed, so K^T Vr and
// W^T dVn sum exact zeros there); U / A, Qd, r, eg_L stay float32 (cp.async of 16 bytes at the fixed shapes, of 4
// otherwise). A chunk's copies form two groups, the operands of the first product and its epilogue, then those of the
// second. With two buffers the next chunk's copies overlap this chunk's products, as in the float32 kernels; with
// one (when two would leave a second wave of blocks) each group is copied while the other group's product runs.
// The backward stores dH_end in the epilogue of the product that replaces it. Shared memory (RecurLayout): H, Hb, the
// bf16 right operand [Cp, vt+8] of the second product, the warp stages, then nbuf buffers of W, K [Cp, K+8] bf16,
// U or A [Cp, vt], (backward) Qd [K, vt], r [Cp] and eg_L.
#pragma once

#include "cuda/delta_rule_chunked_mma.cuh"
#include "cuda/launch.h"

namespace gdn::cuda::delta_rule_tiled::mma {

// Float32 rows of a value tile into shared memory, asynchronously: 16 bytes a copy at the fixed shapes (VT != 0, rows
// aligned), 4 otherwise.
template <int VT>
__device__ __forceinline__ void async_value_rows(float* dst, int vt, const float* src, int64_t stride, int rows,
                                                 int nv) {
  if constexpr (VT != 0)
    async_rows16(dst, vt, src, stride, rows, nv);
  else
    async_rows(dst, vt, src, stride, rows, nv);
}

// Both recurrences are templates over the Shape S and the value tile VT (0: vt read at run time): the host runs the
// fixed shapes with VT = vt, 32 or 16 (recur_kernels in cuda/delta_rule_chunked_mma_host.cuh).
struct RecurLayout {
  size_t H, Hb, Rb, stage, buf0, bufsz, bW, bK, bA, bQd, br, total;
  __host__ __device__ RecurLayout(int64_t C, int64_t K, int64_t vt, int nbuf, bool backward) {
    const int64_t Cp = pad16(C);
    Carve c;
    H = c.take<float>(K * vt);
    Hb = c.take<bf16>(K * (vt + kPadB));
    Rb = c.take<bf16>(Cp * (vt + kPadB));
    stage = c.take<float>(kWarps * kStage);
    Carve bc;  // one buffer
    bW = bc.take<bf16>(Cp * (K + kPadB));
    bK = bc.take<bf16>(Cp * (K + kPadB));
    bA = bc.take<float>(Cp * vt);
    bQd = backward ? bc.take<float>(K * vt) : bc.off;
    br = bc.take<float>(Cp + 1);  // r, then eg_L at [Cp]
    bufsz = bc.off;
    buf0 = c.off;
    total = c.off + static_cast<size_t>(nbuf) * bufsz;
  }
};

// Forward recurrence for value columns [vt blockIdx.x, +vt) of (b = blockIdx.z, hv = blockIdx.y).
template <typename S, int VT>
__global__ void __launch_bounds__(256)
    forward_recur_mma_kernel(Dims d, int vt, int nbuf, float* __restrict__ final_state,
                             float* __restrict__ chunk_states, bf16* __restrict__ Vng, const bf16* __restrict__ Kbg,
                             const bf16* __restrict__ Wbg, const float* __restrict__ Ug,
                             const float* __restrict__ EGg, const float* __restrict__ Rg,
                             const float* __restrict__ s0) {
  pdl_enter();
  extern __shared__ __align__(128) unsigned char smem_mma[];
  d = shaped<S>(d);
  if constexpr (VT != 0) vt = VT;
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int Cp = static_cast<int>(pad16(C));
  const int c0 = blockIdx.x * vt, nv = V % vt == 0 ? vt : min(vt, V - c0);
  const int ldk = K + kPadB, ldv = vt + kPadB;
  const RecurLayout lay(C, K, vt, nbuf, false);
  float* H = at<float>(smem_mma, lay.H);  // [K, vt]
  bf16* Hb = at<bf16>(smem_mma, lay.Hb);  // [K, vt+8]
  bf16* Vr = at<bf16>(smem_mma, lay.Rb);  // [Cp, vt+8]: r ⊙ Vn
  float* stage = at<float>(smem_mma, lay.stage);
  const size_t buf0 = lay.buf0, bufsz = lay.bufsz, oW = lay.bW, oK = lay.bK, oA = lay.bA, o_r = lay.br;
  auto buf = [=](int64_t n) { return smem_mma + buf0 + (nbuf == 2 ? (n & 1) * bufsz : 0); };
  // Chunk n's operands in two groups: W, U, r, eg_L (the first product and its epilogue) and K (the second).
  auto load_w = [&](int64_t n) {
    unsigned char* bf = buf(n);
    const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(d.C, d.T - t0));
    bf16* Ws = at<bf16>(bf, oW);
    float* rs = at<float>(bf, o_r);
    async_rows16(Ws, ldk, Wbg + hr * d.K, d.K, L, K);
    zero_rows_bf16(Ws, ldk, L, Cp, K);
    async_value_rows<VT>(at<float>(bf, oA), vt, Ug + hr * d.V + c0, d.V, L, nv);
    async_vec(rs, Rg + hr, L);
    if (threadIdx.x == 0) cp_async_elem(rs + Cp, EGg + hr + L - 1);
    cp_async_commit();
  };
  auto load_k = [&](int64_t n) {
    const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(d.C, d.T - t0));
    bf16* Ks = at<bf16>(buf(n), oK);
    async_rows16(Ks, ldk, Kbg + hr * d.K, d.K, L, K);
    zero_rows_bf16(Ks, ldk, L, Cp, K);
    cp_async_commit();
  };
  const int64_t s_off = (b * d.Hv + hv) * d.K * d.V + c0;
  if (d.NC > 0) {
    load_w(0);
    load_k(0);
  }
  for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
    const int kk = e / nv, c = e - kk * nv;
    const float h = s0 ? s0[s_off + int64_t(kk) * V + c] : 0.0f;
    H[kk * vt + c] = h;
    Hb[kk * ldv + c] = __float2bfloat16(h);
  }
  // Two buffers: chunk n+1's copies run during chunk n's products. One buffer: W, U, r of chunk n+1 are copied
  // during chunk n's second product, K of chunk n+1 during chunk n+1's first.
  for (int64_t n = 0; n < d.NC; ++n) {
    const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(d.C, d.T - t0));
    unsigned char* bf = buf(n);
    const bf16* Ws = at<bf16>(bf, oW);
    const bf16* Ks = at<bf16>(bf, oK);
    const float* Us = at<float>(bf, oA);
    const float* rs = at<float>(bf, o_r);
    if (nbuf == 2)
      cp_async_wait_all();
    else
      cp_async_wait_group<1>();  // W, U, r of chunk n (K of chunk n may still be in flight)
    __syncthreads();  // those operands have landed; H of the previous step is complete; the other buffer is free
    if (nbuf == 2 && n + 1 < d.NC) {
      load_w(n + 1);
      load_k(n + 1);
    }
    float* Hn = chunk_states + d.chunk_state(b, hv, n) + c0;
    if constexpr (VT != 0) {  // four values a store (the host checks chunk_states' alignment for fixed shapes)
      constexpr int q4 = VT / 4;
      for (int e = threadIdx.x; e < K * q4; e += blockDim.x) {
        const int kk = e / q4, c = 4 * (e - kk * q4);
        *reinterpret_cast<float4*>(Hn + int64_t(kk) * V + c) = *reinterpret_cast<const float4*>(H + kk * VT + c);
      }
    } else {
      for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
        const int kk = e / nv, c = e - kk * nv;
        Hn[int64_t(kk) * V + c] = H[kk * vt + c];
      }
    }
    // Vn = U - W H (stored for the output kernel), Vr = r ⊙ Vn (rows L..Cp-1 zero)
    mma_tiles(
        Cp, nv, stage,
        [&](int tm, int tn, Acc& acc) { mma_acc<RowMajor, RowMajor>(acc, tm, tn, 0, K, Ws, ldk, Hb, ldv); },
        [&](int i, int c, float s) {
          float vr = 0.0f;
          if (i < L) {
            const float x = Us[i * vt + c] - s;
            Vng[(hr + i) * d.V + c0 + c] = __float2bfloat16(x);
            vr = rs[i] * x;
          }
          Vr[i * ldv + c] = __float2bfloat16(vr);
        });
    const float eg_last = rs[Cp];
    if (nbuf == 1) cp_async_wait_all();  // K of chunk n
    __syncthreads();                     // Vr complete; (one buffer) K has landed, W, U, r are free
    if (nbuf == 1 && n + 1 < d.NC) load_w(n + 1);
    // H = eg_L H + K^T (r ⊙ Vn)
    mma_tiles(
        K, nv, stage,
        [&](int tm, int tn, Acc& acc) { mma_acc<ColMajor, RowMajor>(acc, tm, tn, 0, Cp, Ks, ldk, Vr, ldv); },
        [&](int kk, int c, float s) {
          const float h = eg_last * H[kk * vt + c] + s;
          H[kk * vt + c] = h;
          Hb[kk * ldv + c] = __float2bfloat16(h);
        });
    if (nbuf == 1 && n + 1 < d.NC) {  // block-uniform
      __syncthreads();                // K's readers are done
      load_k(n + 1);
    }
  }
  __syncthreads();
  if (final_state)
    for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
      const int kk = e / nv, c = e - kk * nv;
      final_state[s_off + int64_t(kk) * V + c] = H[kk * vt + c];
    }
}

// Backward recurrence for value columns [vt blockIdx.x, +vt) of (b, hv), chunks last to first. Qdg holds Qd of
// every chunk (backward_pre_mma_kernel); dHend receives dH_end in bf16 (the chunk gradient's operand); dVng holds A on
// entry and dVn on exit.
template <typename S, int VT>
__global__ void __launch_bounds__(256)
    backward_recur_mma_kernel(Dims d, int vt, int nbuf, float* __restrict__ dinitial_state,
                              const float* __restrict__ Qdg, bf16* __restrict__ dHend, float* __restrict__ dVng,
                              const float* __restrict__ dfinal_state, const bf16* __restrict__ Kbg,
                              const bf16* __restrict__ Wbg, const float* __restrict__ EGg,
                              const float* __restrict__ Rg) {
  pdl_enter();
  extern __shared__ __align__(128) unsigned char smem_mma[];
  d = shaped<S>(d);
  if constexpr (VT != 0) vt = VT;
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int Cp = static_cast<int>(pad16(C));
  const int c0 = blockIdx.x * vt, nv = V % vt == 0 ? vt : min(vt, V - c0);
  const int ldk = K + kPadB, ldv = vt + kPadB;
  const RecurLayout lay(C, K, vt, nbuf, true);
  float* dH = at<float>(smem_mma, lay.H);   // [K, vt]
  bf16* dHb = at<bf16>(smem_mma, lay.Hb);   // [K, vt+8]
  bf16* dVb = at<bf16>(smem_mma, lay.Rb);   // [Cp, vt+8]: dVn
  float* stage = at<float>(smem_mma, lay.stage);
  const size_t buf0 = lay.buf0, bufsz = lay.bufsz, oW = lay.bW, oK = lay.bK, oA = lay.bA, oQd = lay.bQd, o_r = lay.br;
  auto buf = [=](int64_t n) { return smem_mma + buf0 + (nbuf == 2 ? (n & 1) * bufsz : 0); };
  // Chunk n's operands in two groups: K, A, r, eg_L (the first product and its epilogue) and W, Qd (the second).
  auto load_k = [&](int64_t n) {
    unsigned char* bf = buf(n);
    const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(d.C, d.T - t0));
    bf16* Ks = at<bf16>(bf, oK);
    float* rs = at<float>(bf, o_r);
    async_rows16(Ks, ldk, Kbg + hr * d.K, d.K, L, K);
    zero_rows_bf16(Ks, ldk, L, Cp, K);
    async_value_rows<VT>(at<float>(bf, oA), vt, dVng + hr * d.V + c0, d.V, L, nv);
    async_vec(rs, Rg + hr, L);
    if (threadIdx.x == 0) cp_async_elem(rs + Cp, EGg + hr + L - 1);
    cp_async_commit();
  };
  auto load_w = [&](int64_t n) {
    unsigned char* bf = buf(n);
    const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(d.C, d.T - t0));
    bf16* Ws = at<bf16>(bf, oW);
    async_rows16(Ws, ldk, Wbg + hr * d.K, d.K, L, K);
    zero_rows_bf16(Ws, ldk, L, Cp, K);
    async_value_rows<VT>(at<float>(bf, oQd), vt, Qdg + d.chunk_state(b, hv, n) + c0, d.V, K, nv);
    cp_async_commit();
  };
  const int64_t s_off = (b * d.Hv + hv) * d.K * d.V + c0;
  if (d.NC > 0) {
    load_k(d.NC - 1);
    load_w(d.NC - 1);
  }
  for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
    const int kk = e / nv, c = e - kk * nv;
    const float h = dfinal_state ? dfinal_state[s_off + int64_t(kk) * V + c] : 0.0f;
    dH[kk * vt + c] = h;
    dHb[kk * ldv + c] = __float2bfloat16(h);
  }
  // Two buffers: chunk n-1's copies run during chunk n's products. One buffer: K, A, r of chunk n-1 are copied
  // during chunk n's second product, W and Qd of chunk n-1 during chunk n-1's first.
  for (int64_t n = d.NC - 1; n >= 0; --n) {
    const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(d.C, d.T - t0));
    unsigned char* bf = buf(n);
    const bf16* Ws = at<bf16>(bf, oW);
    const bf16* Ks = at<bf16>(bf, oK);
    const float* As = at<float>(bf, oA);
    const float* Qd = at<float>(bf, oQd);
    const float* rs = at<float>(bf, o_r);
    if (nbuf == 2)
      cp_async_wait_all();
    else
      cp_async_wait_group<1>();  // K, A, r of chunk n (W, Qd of chunk n may still be in flight)
    __syncthreads();  // those operands have landed; dH of the previous step is complete; the other buffer is free
    if (nbuf == 2 && n > 0) {
      load_k(n - 1);
      load_w(n - 1);
    }
    // dVn = scale (P^T dO) + r ⊙ (K dH) (rows L..Cp-1 of its bf16 copy zero)
    mma_tiles(
        Cp, nv, stage,
        [&](int tm, int tn, Acc& acc) { mma_acc<RowMajor, RowMajor>(acc, tm, tn, 0, K, Ks, ldk, dHb, ldv); },
        [&](int i, int c, float s) {
          float x = 0.0f;
          if (i < L) {
            x = As[i * vt + c] + rs[i] * s;
            dVng[(hr + i) * d.V + c0 + c] = x;
          }
          dVb[i * ldv + c] = __float2bfloat16(x);
        });
    const float eg_last = rs[Cp];
    if (nbuf == 1) cp_async_wait_all();  // W, Qd of chunk n
    __syncthreads();                     // dVn complete; every thread's copies of Qd (read from Qdg) have landed
    if (nbuf == 1 && n > 0) load_k(n - 1);
    // dH = eg_L dH + Q^T ((scale eg) ⊙ dO) - W^T dVn; the dH it replaces is chunk n's dH_end (bf16 into dHend)
    bf16* dHn = dHend + d.chunk_state(b, hv, n) + c0;
    mma_tiles(
        K, nv, stage,
        [&](int tm, int tn, Acc& acc) { mma_acc<ColMajor, RowMajor>(acc, tm, tn, 0, Cp, Ws, ldk, dVb, ldv); },
        [&](int kk, int c, float s) {
          const float h0 = dH[kk * vt + c];
          dHn[int64_t(kk) * V + c] = __float2bfloat16(h0);
          const float h = eg_last * h0 + Qd[kk * vt + c] - s;
          dH[kk * vt + c] = h;
          dHb[kk * ldv + c] = __float2bfloat16(h);
        });
    if (nbuf == 1 && n > 0) {  // block-uniform
      __syncthreads();         // W's and Qd's readers are done
      load_w(n - 1);
    }
  }
  __syncthreads();
  if (dinitial_state)
    for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
      const int kk = e / nv, c = e - kk * nv;
      dinitial_state[s_off + int64_t(kk) * V + c] = dH[kk * vt + c];
    }
}

}  // namespace gdn::cuda::delta_rule_tiled::mma
