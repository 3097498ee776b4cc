// cuda/delta_rule_chunked_split.cuh — the split state passes of the chunked gated delta rule (included by
// cuda/delta_rule_chunked.cu only; the math and the glossary are in that file's header comment).
//
// Only the state recurrence is sequential over chunks; everything else of the state passes is chunk-parallel:
//   forward:  forward_recur_kernel  (sequential) Vn = U - W H, H_next = eg_L H + K^T (r ⊙ Vn); stores chunk_states
//                                   and Vn [B,Hv,T,V] (scratch); final_state at the end.
//             chunk_output_kernel   (chunk-parallel) O = scale (eg ⊙ (Q H) + P Vn) from the stored H and Vn.
//   backward: backward_pre_kernel   (chunk-parallel) Vn = U - W H -> Vn scratch; A = scale P^T dO -> the dVn
//                                   scratch; Qd = Q^T (scale eg ⊙ dO) -> the dH_end scratch [B,Hv,NC,K,V].
//             backward_recur_kernel (sequential, chunks last to first) dVn = A + r ⊙ (K dH) (in place over A),
//                                   stores dH_end over Qd after reading it, dH_start = eg_L dH + Qd - W^T dVn;
//                                   dinitial_state at the end.
// Grids: the recurrences (ceil(V/vt), Hv, B) with vt in {32, 16, 8} value columns per block; the chunk-parallel
// kernels (NC ceil(V/vp), Hv, B), vp in {32, 16, 8} (block x = chunk n times the value tiles + tile). 256 threads
// in the recurrences, par_threads (512 for float32 on small grids) in the chunk-parallel kernels.
// Shared memory (elements of the input type; ldk = K + 1, ldc = C + 1):
//   forward_recur   H [K, vt], r ⊙ Vn [C, vt], then nbuf in {1, 2} buffers of W, K [C, ldk], U [C, vt], r [C], eg_L
//   backward_recur  dH [K, vt], dVn [C, vt], then nbuf buffers of W, K [C, ldk], A [C, vt], Qd [K, vt], r [C], eg_L
//   chunk_output    Q [C, ldk], H [K, vp], P [C, ldc], Vn, QH [C, vp], eg [C]
//   backward_pre    W, Q [C, ldk], H [K, vp], U, dO [C, vp], P [C, ldc], eg [C]
// Every operand is copied global -> shared with cp.async (all copies of a stage in flight together); with two
// buffers the recurrences copy chunk n+1 (backward: n-1) while chunk n computes, so a step waits on no load.
// The products are block-wide tile_mm (cuda/delta_rule_chunked_tiled.cuh) with the same per-element formulas and
// inner-sum order as the fused tiled kernels; each output element has one owner thread: identical bits run to run.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/delta_rule_chunked_tiled.cuh"
#include "cuda/launch.h"

namespace gdn::cuda::delta_rule_tiled {

// One element (4 or 8 bytes) global -> shared, asynchronous; complete after cp_async_wait_all().
template <typename Tp>
__device__ __forceinline__ void cp_async_elem(Tp* dst, const Tp* src) {
  static_assert(sizeof(Tp) == 4 || sizeof(Tp) == 8, "cp.async of 4 or 8 bytes");
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  if constexpr (sizeof(Tp) == 4)
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(src) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(s), "l"(src) : "memory");
}
// Waits for every cp.async this thread issued (other threads' copies: a __syncthreads after it).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// dst[i*ld + c] = src[i*stride + c] for i < rows, c < cols, asynchronously.
template <typename Tp>
__device__ __forceinline__ void async_rows(Tp* dst, int ld, const Tp* src, int64_t stride, int rows, int cols) {
  for (int e = threadIdx.x; e < rows * cols; e += blockDim.x) {
    const int i = e / cols, c = e - i * cols;
    cp_async_elem(dst + i * ld + c, src + i * stride + c);
  }
}
template <typename Tp>
__device__ __forceinline__ void async_vec(Tp* dst, const Tp* src, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) cp_async_elem(dst + i, src + i);
}
// The lower triangle (with diagonal) of P [L,L] (row stride C) into Ps (row stride ld), 0 above the diagonal.
template <typename Tp>
__device__ __forceinline__ void async_lower(Tp* Ps, int ld, const Tp* P, int C, int L) {
  for (int e = threadIdx.x; e < L * L; e += blockDim.x) {
    const int i = e / L, j = e - i * L;
    if (j <= i)
      cp_async_elem(Ps + i * ld + j, P + i * C + j);
    else
      Ps[i * ld + j] = Tp(0);
  }
}

// tile_mm with the register tile chosen so that the M x N outputs of a recurrence step spread over all threads.
template <typename Tp, typename FA, typename FB, typename FO>
__device__ __forceinline__ void step_mm(int M, int N, int Kd, FA a, FB b, FO out) {
  if (M * N <= 512)
    tile_mm<2, 1, Tp>(M, N, Kd, a, b, out);
  else if (M * N <= 1024)
    tile_mm<2, 2, Tp>(M, N, Kd, a, b, out);
  else
    tile_mm<4, 2, Tp>(M, N, Kd, a, b, out);
}

// Shared-memory elements of the split kernels (see the header comment).
__host__ __device__ inline int64_t fwd_recur_buf(int64_t C, int64_t K, int64_t vt) { return 2 * C * (K + 1) + C * vt + C + 1; }
inline int64_t fwd_recur_elems(int64_t C, int64_t K, int64_t vt, int nbuf) {
  return K * vt + C * vt + nbuf * fwd_recur_buf(C, K, vt);
}
__host__ __device__ inline int64_t bwd_recur_buf(int64_t C, int64_t K, int64_t vt) { return 2 * C * (K + 1) + C * vt + K * vt + C + 1; }
inline int64_t bwd_recur_elems(int64_t C, int64_t K, int64_t vt, int nbuf) {
  return K * vt + C * vt + nbuf * bwd_recur_buf(C, K, vt);
}
inline int64_t output_elems(int64_t C, int64_t K, int64_t vp) {
  return C * (K + 1) + K * vp + C * (C + 1) + 2 * C * vp + C;
}
inline int64_t pre_elems(int64_t C, int64_t K, int64_t vp) {
  return 2 * C * (K + 1) + K * vp + C * (C + 1) + 2 * C * vp + C;
}

// Forward recurrence for value columns [vt blockIdx.x, +vt) of (b = blockIdx.z, hv = blockIdx.y).
template <typename Tp>
__global__ void __launch_bounds__(256)
    forward_recur_kernel(Dims d, int vt, int nbuf, Tp* __restrict__ final_state, Tp* __restrict__ chunk_states,
                         Tp* __restrict__ Vng, const Tp* __restrict__ k, const Tp* __restrict__ Wg,
                         const Tp* __restrict__ Ug, const Tp* __restrict__ EGg, const Tp* __restrict__ Rg,
                         const Tp* __restrict__ s0) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int c0 = blockIdx.x * vt, nv = min(vt, V - c0);
  const int ldk = K + 1;
  const int64_t ks = d.Hk * d.K, bufsz = fwd_recur_buf(C, K, vt);
  Tp* H = reinterpret_cast<Tp*>(smem_raw);  // [K, vt]
  Tp* Vr = H + K * vt;                      // [C, vt]: r ⊙ Vn
  Tp* buf0 = Vr + C * vt;
  // Buffer layout: W [C, ldk], K [C, ldk], U [C, vt], r [C], eg_L [1].
  auto load = [&](int64_t n, Tp* bf) {
    const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(d.C, d.T - t0));
    Tp* Ks = bf + C * ldk;
    Tp* Us = Ks + C * ldk;
    Tp* rs = Us + C * vt;
    async_rows(bf, ldk, Wg + hr * d.K, d.K, L, K);
    async_rows(Ks, ldk, k + d.key_row(b, t0, hv), ks, L, K);
    async_rows(Us, vt, Ug + hr * d.V + c0, d.V, L, nv);
    async_vec(rs, Rg + hr, L);
    if (threadIdx.x == 0) cp_async_elem(rs + C, EGg + hr + L - 1);
  };
  const int64_t s_off = (b * d.Hv + hv) * d.K * d.V + c0;
  if (d.NC > 0) load(0, buf0);
  for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
    const int kk = e / nv, c = e - kk * nv;
    H[kk * vt + c] = s0 ? s0[s_off + int64_t(kk) * V + c] : Tp(0);
  }
  for (int64_t n = 0; n < d.NC; ++n) {
    const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(d.C, d.T - t0));
    Tp* Ws = buf0 + (nbuf == 2 ? (n & 1) * bufsz : 0);
    const Tp* Ks = Ws + C * ldk;
    const Tp* Us = Ks + C * ldk;
    const Tp* rs = Us + C * vt;
    cp_async_wait_all();
    __syncthreads();  // chunk n's operands have landed; H of the previous step is complete; the other buffer is free
    if (nbuf == 2 && n + 1 < d.NC) load(n + 1, buf0 + ((n + 1) & 1) * bufsz);
    for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
      const int kk = e / nv, c = e - kk * nv;
      chunk_states[d.chunk_state(b, hv, n) + c0 + int64_t(kk) * V + c] = H[kk * vt + c];
    }
    // Vn = U - W H (stored for the output kernel), Vr = r ⊙ Vn
    step_mm<Tp>(
        L, nv, K, [&](int i, int kk) { return Ws[i * ldk + kk]; }, [&](int kk, int c) { return H[kk * vt + c]; },
        [&](int i, int c, Tp s) {
          const Tp x = Us[i * vt + c] - s;
          Vng[(hr + i) * d.V + c0 + c] = x;
          Vr[i * vt + c] = rs[i] * x;
        });
    __syncthreads();
    // H = eg_L H + K^T (r ⊙ Vn)
    const Tp eg_last = rs[C];
    step_mm<Tp>(
        K, nv, L, [&](int kk, int i) { return Ks[i * ldk + kk]; }, [&](int i, int c) { return Vr[i * vt + c]; },
        [&](int kk, int c, Tp s) { H[kk * vt + c] = eg_last * H[kk * vt + c] + s; });
    if (nbuf == 1 && n + 1 < d.NC) {  // block-uniform
      __syncthreads();                // the single buffer's readers are done
      load(n + 1, buf0);
    }
  }
  __syncthreads();
  if (final_state)
    for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
      const int kk = e / nv, c = e - kk * nv;
      final_state[s_off + int64_t(kk) * V + c] = H[kk * vt + c];
    }
}

// O = scale (eg ⊙ (Q H) + P Vn) of chunk blockIdx.x / nvt, value columns [vp (blockIdx.x % nvt), +vp).
template <typename Tp>
__global__ void __launch_bounds__(kParThreads<Tp>)
    chunk_output_kernel(Dims d, int vp, Tp* __restrict__ o, const Tp* __restrict__ chunk_states,
                        const Tp* __restrict__ Vng, const Tp* __restrict__ Pg, const Tp* __restrict__ EGg,
                        const Tp* __restrict__ q, Tp sc) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int nvt = (V + vp - 1) / vp;
  const int64_t n = blockIdx.x / nvt, hv = blockIdx.y, b = blockIdx.z;
  const int c0 = static_cast<int>(blockIdx.x % nvt) * vp, nv = min(vp, V - c0);
  const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
  const int L = static_cast<int>(min(d.C, d.T - t0));
  const int ldk = K + 1, ldc = C + 1;
  Tp* Qs = reinterpret_cast<Tp*>(smem_raw);  // [C, ldk]
  Tp* Hs = Qs + C * ldk;                     // [K, vp]
  Tp* Ps = Hs + K * vp;                      // [C, ldc]
  Tp* Vs = Ps + C * ldc;                     // [C, vp]
  Tp* QH = Vs + C * vp;                      // [C, vp]
  Tp* egs = QH + C * vp;                     // [C]
  async_rows(Qs, ldk, q + d.key_row(b, t0, hv), d.Hk * d.K, L, K);
  async_rows(Hs, vp, chunk_states + d.chunk_state(b, hv, n) + c0, d.V, K, nv);
  async_lower(Ps, ldc, Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C, C, L);
  async_rows(Vs, vp, Vng + hr * d.V + c0, d.V, L, nv);
  async_vec(egs, EGg + hr, L);
  cp_async_wait_all();
  __syncthreads();
  // Both products give (i, c) to the same thread, so QH needs no sync.
  tile_mm<2, 2, Tp>(
      L, nv, K, [&](int i, int kk) { return Qs[i * ldk + kk]; }, [&](int kk, int c) { return Hs[kk * vp + c]; },
      [&](int i, int c, Tp s) { QH[i * vp + c] = s; });
  tile_mm<2, 2, Tp>(
      L, nv, L, [&](int i, int j) { return Ps[i * ldc + j]; }, [&](int j, int c) { return Vs[j * vp + c]; },
      [&](int i, int c, Tp s) { o[d.value_row(b, t0 + i, hv) + c0 + c] = sc * egs[i] * QH[i * vp + c] + sc * s; });
}

// The dH-independent part of the backward state pass for chunk blockIdx.x / nvt, value columns
// [vp (blockIdx.x % nvt), +vp): Vn = U - W H -> Vng, A = scale P^T dO -> Ag, Qd = Q^T (scale eg ⊙ dO) -> Qdg.
template <typename Tp>
__global__ void __launch_bounds__(kParThreads<Tp>)
    backward_pre_kernel(Dims d, int vp, Tp* __restrict__ Vng, Tp* __restrict__ Ag, Tp* __restrict__ Qdg,
                        const Tp* __restrict__ chunk_states, const Tp* __restrict__ Wg, const Tp* __restrict__ Ug,
                        const Tp* __restrict__ Pg, const Tp* __restrict__ EGg, const Tp* __restrict__ q,
                        const Tp* __restrict__ do_, Tp sc) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int nvt = (V + vp - 1) / vp;
  const int64_t n = blockIdx.x / nvt, hv = blockIdx.y, b = blockIdx.z;
  const int c0 = static_cast<int>(blockIdx.x % nvt) * vp, nv = min(vp, V - c0);
  const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
  const int L = static_cast<int>(min(d.C, d.T - t0));
  const int ldk = K + 1, ldc = C + 1;
  Tp* Ws = reinterpret_cast<Tp*>(smem_raw);  // [C, ldk]
  Tp* Qs = Ws + C * ldk;                     // [C, ldk]
  Tp* Hs = Qs + C * ldk;                     // [K, vp]
  Tp* Us = Hs + K * vp;                      // [C, vp]
  Tp* dOs = Us + C * vp;                     // [C, vp]
  Tp* Ps = dOs + C * vp;                     // [C, ldc]
  Tp* egs = Ps + C * ldc;                    // [C]
  async_rows(Ws, ldk, Wg + hr * d.K, d.K, L, K);
  async_rows(Qs, ldk, q + d.key_row(b, t0, hv), d.Hk * d.K, L, K);
  async_rows(Hs, vp, chunk_states + d.chunk_state(b, hv, n) + c0, d.V, K, nv);
  async_rows(Us, vp, Ug + hr * d.V + c0, d.V, L, nv);
  async_rows(dOs, vp, do_ + d.value_row(b, t0, hv) + c0, d.Hv * d.V, L, nv);
  async_lower(Ps, ldc, Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C, C, L);
  async_vec(egs, EGg + hr, L);
  cp_async_wait_all();
  __syncthreads();
  tile_mm<2, 2, Tp>(
      L, nv, K, [&](int i, int kk) { return Ws[i * ldk + kk]; }, [&](int kk, int c) { return Hs[kk * vp + c]; },
      [&](int i, int c, Tp s) { Vng[(hr + i) * d.V + c0 + c] = Us[i * vp + c] - s; });
  tile_mm<2, 2, Tp>(
      L, nv, L, [&](int i, int j) { return Ps[j * ldc + i]; }, [&](int j, int c) { return dOs[j * vp + c]; },
      [&](int i, int c, Tp s) { Ag[(hr + i) * d.V + c0 + c] = sc * s; });
  tile_mm<2, 2, Tp>(
      K, nv, L, [&](int kk, int i) { return Qs[i * ldk + kk]; },
      [&](int i, int c) { return sc * egs[i] * dOs[i * vp + c]; },
      [&](int kk, int c, Tp s) { Qdg[d.chunk_state(b, hv, n) + c0 + int64_t(kk) * V + c] = s; });
}

// Backward recurrence for value columns [vt blockIdx.x, +vt) of (b, hv), chunks last to first. dHend holds Qd of
// every chunk on entry (backward_pre_kernel) and dH_end on exit; dVng holds A on entry and dVn on exit.
template <typename Tp>
__global__ void __launch_bounds__(256)
    backward_recur_kernel(Dims d, int vt, int nbuf, Tp* __restrict__ dinitial_state, Tp* __restrict__ dHend,
                          Tp* __restrict__ dVng, const Tp* __restrict__ dfinal_state, const Tp* __restrict__ k,
                          const Tp* __restrict__ Wg, const Tp* __restrict__ EGg, const Tp* __restrict__ Rg) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int c0 = blockIdx.x * vt, nv = min(vt, V - c0);
  const int ldk = K + 1;
  const int64_t ks = d.Hk * d.K, bufsz = bwd_recur_buf(C, K, vt);
  Tp* dH = reinterpret_cast<Tp*>(smem_raw);  // [K, vt]
  Tp* dVs = dH + K * vt;                     // [C, vt]
  Tp* buf0 = dVs + C * vt;
  // Buffer layout: W [C, ldk], K [C, ldk], A [C, vt], Qd [K, vt], r [C], eg_L [1].
  auto load = [&](int64_t n, Tp* bf) {
    const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(d.C, d.T - t0));
    Tp* Ks = bf + C * ldk;
    Tp* As = Ks + C * ldk;
    Tp* Qd = As + C * vt;
    Tp* rs = Qd + K * vt;
    async_rows(bf, ldk, Wg + hr * d.K, d.K, L, K);
    async_rows(Ks, ldk, k + d.key_row(b, t0, hv), ks, L, K);
    async_rows(As, vt, dVng + hr * d.V + c0, d.V, L, nv);
    async_rows(Qd, vt, dHend + d.chunk_state(b, hv, n) + c0, d.V, K, nv);
    async_vec(rs, Rg + hr, L);
    if (threadIdx.x == 0) cp_async_elem(rs + C, EGg + hr + L - 1);
  };
  const int64_t s_off = (b * d.Hv + hv) * d.K * d.V + c0;
  if (d.NC > 0) load(d.NC - 1, buf0 + (nbuf == 2 ? ((d.NC - 1) & 1) * bufsz : 0));
  for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
    const int kk = e / nv, c = e - kk * nv;
    dH[kk * vt + c] = dfinal_state ? dfinal_state[s_off + int64_t(kk) * V + c] : Tp(0);
  }
  for (int64_t n = d.NC - 1; n >= 0; --n) {
    const int64_t t0 = n * d.C, hr = d.head_row(b, hv, t0);
    const int L = static_cast<int>(min(d.C, d.T - t0));
    Tp* Ws = buf0 + (nbuf == 2 ? (n & 1) * bufsz : 0);
    const Tp* Ks = Ws + C * ldk;
    const Tp* As = Ks + C * ldk;
    const Tp* Qd = As + C * vt;
    const Tp* rs = Qd + K * vt;
    cp_async_wait_all();
    __syncthreads();  // chunk n's operands (Qd, A included) have landed; dH of the previous step is complete
    if (nbuf == 2 && n > 0) load(n - 1, buf0 + ((n - 1) & 1) * bufsz);
    for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {  // over Qd of chunk n, which is in shared memory
      const int kk = e / nv, c = e - kk * nv;
      dHend[d.chunk_state(b, hv, n) + c0 + int64_t(kk) * V + c] = dH[kk * vt + c];
    }
    // dVn = scale (P^T dO) + r ⊙ (K dH)
    step_mm<Tp>(
        L, nv, K, [&](int i, int kk) { return Ks[i * ldk + kk]; }, [&](int kk, int c) { return dH[kk * vt + c]; },
        [&](int i, int c, Tp s) {
          const Tp x = As[i * vt + c] + rs[i] * s;
          dVs[i * vt + c] = x;
          dVng[(hr + i) * d.V + c0 + c] = x;
        });
    __syncthreads();
    // dH = eg_L dH + Q^T ((scale eg) ⊙ dO) - W^T dVn
    const Tp eg_last = rs[C];
    step_mm<Tp>(
        K, nv, L, [&](int kk, int i) { return Ws[i * ldk + kk]; }, [&](int i, int c) { return dVs[i * vt + c]; },
        [&](int kk, int c, Tp s) { dH[kk * vt + c] = eg_last * dH[kk * vt + c] + Qd[kk * vt + c] - s; });
    if (nbuf == 1 && n > 0) {  // block-uniform
      __syncthreads();         // the single buffer's readers are done
      load(n - 1, buf0);
    }
  }
  __syncthreads();
  if (dinitial_state)
    for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
      const int kk = e / nv, c = e - kk * nv;
      dinitial_state[s_off + int64_t(kk) * V + c] = dH[kk * vt + c];
    }
}

}  // namespace gdn::cuda::delta_rule_tiled
