// cuda/delta_rule_chunked_tiled.cuh — the tiled kernels of cuda/delta_rule_chunked.cu (included by that file only).
//
// Same math and the same stored intermediates as the kernels there (see its header comment); what differs is how a
// block computes: every chunk operand a kernel multiplies is first staged into shared memory with coalesced row
// loads, and every product is done by all threads of the block together (tile_mm: each thread owns a TM x TN
// register tile of the output, rows i = ti + u*ceil(M/TM), columns j = tj + w*ceil(N/TN), so that neighbouring
// threads read neighbouring columns of the right operand). The unit-lower triangular solve W|U = A (rhs) is blocked
// forward substitution: rows in blocks of 16; the update of a block by the solved rows above it is a tile_mm over
// all threads, the 16 x 16 diagonal block is solved one column per thread with the column in registers (row
// updates x_i -= Lm_ij x_j in the order j = 0, 1, ..: the same sums as row-by-row substitution). Operand loads go
// through batched_copy (8 loads of a thread in flight before its stores); tile_mm_init starts each sum from a value
// read before the products (read-modify-write of global accumulators).
//
//   prepare_tiled_kernel       grid (NC, Hv, B), kParThreads. Shared: gam, decay [C] double; eg, r, beta [C];
//                              Gam, Lm [C, C+1]; Q, K [C, K+1] (later the solve tile [C, NT], NT = min(K+V, 128)).
//                              Stores W, U, P, eg, r exactly as prepare_chunk_kernel.
//   forward_state_tiled_kernel grid (ceil(V/vt), Hv, B), vt in {8, 16, 32} chosen so the grid covers the SMs.
//                              Shared: H, [K, vt]; Vn, QH [C, vt]; P [C, C+1]; one operand tile [C, K+1] that holds
//                              W, then Q, then K of the chunk; eg, r [C]. When "wide" (the host's choice, where it
//                              fits), Q and K have tiles [C, K+1] of their own after r and every operand of a chunk
//                              step is loaded at once (one memory latency per step instead of three).
//   backward_state_tiled_kernel grid as the forward. Shared: dH, H (then Q^T dO) [K, vt]; Vn, dVn, dO [C, vt];
//                              P [C, C+1]; the operand tile [C, K+1] (W, K, Q, W in turn); eg, r [C]; when wide,
//                              K and Q tiles [C, K+1] of their own (W stays, one load phase per step instead of four).
// Each output element keeps one owner thread with a fixed loop order: no atomics, identical bits run to run. The
// inner sums of tile_mm run over the inner index in order, like the per-thread dots of the untiled kernels.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/launch.h"

namespace gdn::cuda::delta_rule_tiled {

struct Dims {
  int64_t B, T, Hk, Hv, K, V, C, NC, G;
  __device__ int64_t key_row(int64_t b, int64_t t, int64_t hv) const { return ((b * T + t) * Hk + hv / G) * K; }
  __device__ int64_t value_row(int64_t b, int64_t t, int64_t hv) const { return ((b * T + t) * Hv + hv) * V; }
  __device__ int64_t gate(int64_t b, int64_t t, int64_t hv) const { return (b * T + t) * Hv + hv; }
  // Rows of one (b, hv) in the per-value-head scratch tensors [B,Hv,T,D].
  __device__ int64_t head_row(int64_t b, int64_t hv, int64_t t) const { return (b * Hv + hv) * T + t; }
  // One [K,V] state of chunk n in [B,Hv,NC,K,V].
  __device__ int64_t chunk_state(int64_t b, int64_t hv, int64_t n) const { return ((b * Hv + hv) * NC + n) * K * V; }
};

constexpr int kSolveBlock = 16;  // rows per block of the blocked forward substitution
constexpr int kSolveCols = 128;  // widest column tile of the solve (NT)

// Threads per block of the chunk-parallel kernels: one block works through a chunk alone, phase after phase, so at
// a few blocks per SM its latency is the kernel's time; 512 threads halve every block-wide loop and give each
// scheduler four warps to hide it (float32; float64 keeps 256, its registers would not fit). The prepare kernels and
// the bf16 chunk gradient always take it, the chunk output and backward pre kernels while the grid is small
// (par_threads, cuda/delta_rule_chunked_launch.cuh); the float32 chunk gradient keeps 256 (it measured slower).
template <typename Tp>
constexpr int kParThreads = sizeof(Tp) == 4 ? 512 : 256;

// out(i, j, sum_{k < Kd} a(i, k) b(k, j)) for every i < M, j < N, by all threads of the block; no synchronization
// inside (callers separate producers and consumers with __syncthreads). Two calls with the same M, N, TM, TN give
// every (i, j) to the same thread.
template <int TM, int TN, typename Tp, typename FI, typename FA, typename FB, typename FO>
__device__ __forceinline__ void tile_mm_init(int M, int N, int Kd, FI init, FA a, FB b, FO out);
template <int TM, int TN, typename Tp, typename FA, typename FB, typename FO>
__device__ __forceinline__ void tile_mm(int M, int N, int Kd, FA a, FB b, FO out) {
  tile_mm_init<TM, TN, Tp>(M, N, Kd, [](int, int) { return Tp(0); }, a, b, out);
}

// As tile_mm, but the sum of (i, j) starts from init(i, j) (read before the products, so that a read-modify-write of
// global memory waits on no load after them).
template <int TM, int TN, typename Tp, typename FI, typename FA, typename FB, typename FO>
__device__ __forceinline__ void tile_mm_init(int M, int N, int Kd, FI init, FA a, FB b, FO out) {
  if (M <= 0 || N <= 0) return;
  const int mt = (M + TM - 1) / TM, nt = (N + TN - 1) / TN;
  for (int e = threadIdx.x; e < mt * nt; e += blockDim.x) {
    const int ti = e / nt, tj = e - ti * nt;
    int ii[TM], jj[TN];
#pragma unroll
    for (int u = 0; u < TM; ++u) ii[u] = min(ti + u * mt, M - 1);  // clamped: rows past M are computed, not stored
#pragma unroll
    for (int w = 0; w < TN; ++w) jj[w] = min(tj + w * nt, N - 1);
    Tp acc[TM][TN];
#pragma unroll
    for (int u = 0; u < TM; ++u)
#pragma unroll
      for (int w = 0; w < TN; ++w) acc[u][w] = init(ii[u], jj[w]);
#pragma unroll 4
    for (int kk = 0; kk < Kd; ++kk) {
      Tp av[TM], bv[TN];
#pragma unroll
      for (int u = 0; u < TM; ++u) av[u] = a(ii[u], kk);
#pragma unroll
      for (int w = 0; w < TN; ++w) bv[w] = b(kk, jj[w]);
#pragma unroll
      for (int u = 0; u < TM; ++u)
#pragma unroll
        for (int w = 0; w < TN; ++w) acc[u][w] += av[u] * bv[w];
    }
#pragma unroll
    for (int u = 0; u < TM; ++u)
#pragma unroll
      for (int w = 0; w < TN; ++w) {
        const int i = ti + u * mt, j = tj + w * nt;
        if (i < M && j < N) out(i, j, acc[u][w]);
      }
  }
}

// Two products with the same right operand: out(i, j, init1(i,j) + sum_k a1(i,k) b(k,j), init2(i,j) + sum_k a2(i,k)
// b(k,j)) (the inits read before the products, as in tile_mm_init).
template <int TM, int TN, typename Tp, typename FA1, typename FA2, typename FB, typename FI1, typename FI2,
          typename FO>
__device__ __forceinline__ void tile_mm2(int M, int N, int Kd, FA1 a1, FA2 a2, FB b, FI1 init1, FI2 init2, FO out) {
  if (M <= 0 || N <= 0) return;
  const int mt = (M + TM - 1) / TM, nt = (N + TN - 1) / TN;
  for (int e = threadIdx.x; e < mt * nt; e += blockDim.x) {
    const int ti = e / nt, tj = e - ti * nt;
    int ii[TM], jj[TN];
#pragma unroll
    for (int u = 0; u < TM; ++u) ii[u] = min(ti + u * mt, M - 1);
#pragma unroll
    for (int w = 0; w < TN; ++w) jj[w] = min(tj + w * nt, N - 1);
    Tp acc1[TM][TN], acc2[TM][TN];
#pragma unroll
    for (int u = 0; u < TM; ++u)
#pragma unroll
      for (int w = 0; w < TN; ++w) {
        acc1[u][w] = init1(ii[u], jj[w]);
        acc2[u][w] = init2(ii[u], jj[w]);
      }
#pragma unroll 2
    for (int kk = 0; kk < Kd; ++kk) {
      Tp av1[TM], av2[TM], bv[TN];
#pragma unroll
      for (int u = 0; u < TM; ++u) {
        av1[u] = a1(ii[u], kk);
        av2[u] = a2(ii[u], kk);
      }
#pragma unroll
      for (int w = 0; w < TN; ++w) bv[w] = b(kk, jj[w]);
#pragma unroll
      for (int u = 0; u < TM; ++u)
#pragma unroll
        for (int w = 0; w < TN; ++w) {
          acc1[u][w] += av1[u] * bv[w];
          acc2[u][w] += av2[u] * bv[w];
        }
    }
#pragma unroll
    for (int u = 0; u < TM; ++u)
#pragma unroll
      for (int w = 0; w < TN; ++w) {
        const int i = ti + u * mt, j = tj + w * nt;
        if (i < M && j < N) out(i, j, acc1[u][w], acc2[u][w]);
      }
  }
}

// store(e, load(e)) for every e < n, spread over the block; each thread issues 8 loads before its 8 stores, so that
// their memory latencies overlap instead of adding up.
template <typename Tp, typename FL, typename FS>
__device__ __forceinline__ void batched_copy(int n, FL load, FS store) {
  constexpr int kBatch = 8;
  for (int e0 = threadIdx.x; e0 < n; e0 += kBatch * blockDim.x) {
    Tp v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int e = e0 + u * blockDim.x;
      if (e < n) v[u] = load(e);
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int e = e0 + u * blockDim.x;
      if (e < n) store(e, v[u]);
    }
  }
}

// dst[i*ld + c] = src[i*stride + c] for i < rows, c < cols (coalesced along c).
template <typename Tp>
__device__ __forceinline__ void stage_rows(Tp* dst, int ld, const Tp* src, int64_t stride, int rows, int cols) {
  batched_copy<Tp>(
      rows * cols,
      [&](int e) {
        const int i = e / cols;
        return src[i * stride + (e - i * cols)];
      },
      [&](int e, Tp x) {
        const int i = e / cols;
        dst[i * ld + (e - i * cols)] = x;
      });
}

// The lower triangle (with diagonal) of P [L,L] (global, row stride C; only j <= i < L was written) into Ps (row
// stride ld), 0 above the diagonal.
// The loops run over [C, C] (a constant divisor where C is one) and skip the elements outside [L, L].
template <typename Tp>
__device__ __forceinline__ void stage_lower(Tp* Ps, int ld, const Tp* P, int C, int L) {
  batched_copy<Tp>(
      C * C,
      [&](int e) {
        const int i = e / C, j = e - i * C;
        return i < L && j <= i ? P[i * C + j] : Tp(0);
      },
      [&](int e, Tp x) {
        const int i = e / C, j = e - i * C;
        if (i < L && j < L) Ps[i * ld + j] = x;
      });
}

// Gates of one chunk into shared memory, as chunk_gates of the untiled kernels (same values, same order of the double
// cumsum) but with the loads and exponentials spread over the block: gam, decay, eg, r, bt [C]; Gam with row stride
// ld. Ends with a __syncthreads.
template <typename Tp>
__device__ void chunk_gates_tiled(const Dims& d, const Tp* g, const Tp* beta, int64_t b, int64_t hv, int64_t t0,
                                  int L, double* gam, double* decay, Tp* eg, Tp* r, Tp* bt, Tp* Gam, int ld) {
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    const double gi = static_cast<double>(g[d.gate(b, t0 + i, hv)]);
    gam[i] = gi;
    decay[i] = exp(gi);
    bt[i] = beta[d.gate(b, t0 + i, hv)];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double acc = 0;
    for (int i = 0; i < L; ++i) {
      acc += gam[i];
      gam[i] = acc;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    eg[i] = static_cast<Tp>(exp(gam[i]));
    r[i] = static_cast<Tp>(exp(gam[L - 1] - gam[i]));
  }
  for (int j = threadIdx.x; j < L; j += blockDim.x) {
    double prod = 1.0;
    for (int i = 0; i < L; ++i) {
      if (i > j) prod *= decay[i];
      Gam[i * ld + j] = i < j ? Tp(0) : static_cast<Tp>(prod);
    }
  }
  __syncthreads();
}

// Elements of the shared solve region of prepare_tiled_kernel.
inline int64_t prepare_region(int64_t C, int64_t K, int64_t NT) {
  const int64_t qk = 2 * C * (K + 1), x = C * NT;
  return qk > x ? qk : x;
}

// Step 1, tiled: W, U, P, eg, r of chunk blockIdx.x of (b = blockIdx.z, hv = blockIdx.y).
template <typename Tp>
__global__ void __launch_bounds__(kParThreads<Tp>)
    prepare_tiled_kernel(Dims d, int NT, Tp* __restrict__ Wg, Tp* __restrict__ Ug, Tp* __restrict__ Pg,
                         Tp* __restrict__ EGg, Tp* __restrict__ Rg, const Tp* __restrict__ q, const Tp* __restrict__ k,
                         const Tp* __restrict__ v, const Tp* __restrict__ g, const Tp* __restrict__ beta) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t n = blockIdx.x, hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int64_t t0 = n * d.C;
  const int L = static_cast<int>(min(d.C, d.T - t0));
  const int ldc = C + 1, ldk = K + 1;
  double* gam = reinterpret_cast<double*>(smem_raw);
  double* decay = gam + C;
  Tp* eg = reinterpret_cast<Tp*>(decay + C);
  Tp* r = eg + C;
  Tp* bt = r + C;
  Tp* Gam = bt + C;        // [C, C+1]
  Tp* Lm = Gam + C * ldc;  // [C, C+1]
  Tp* Qs = Lm + C * ldc;   // [C, K+1]
  Tp* Ks = Qs + C * ldk;   // [C, K+1]
  Tp* X = Qs;              // [C, NT] once Q and K are no longer needed
  chunk_gates_tiled(d, g, beta, b, hv, t0, L, gam, decay, eg, r, bt, Gam, ldc);

  const int64_t ks = d.Hk * d.K, vs = d.Hv * d.V;  // row strides of q/k and v
  const Tp* Qc = q + d.key_row(b, t0, hv);
  const Tp* Kc = k + d.key_row(b, t0, hv);
  const Tp* Vc = v + d.value_row(b, t0, hv);
  stage_rows(Qs, ldk, Qc, ks, L, K);
  stage_rows(Ks, ldk, Kc, ks, L, K);
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    EGg[d.head_row(b, hv, t0 + i)] = eg[i];
    Rg[d.head_row(b, hv, t0 + i)] = r[i];
  }
  __syncthreads();
  // Lm = strictly_lower(beta ⊙ (K K^T) ⊙ Gam), P = lower((Q K^T) ⊙ Gam)
  Tp* P = Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C;
  tile_mm2<4, 4, Tp>(
      L, L, K, [&](int i, int kk) { return Ks[i * ldk + kk]; }, [&](int i, int kk) { return Qs[i * ldk + kk]; },
      [&](int kk, int j) { return Ks[j * ldk + kk]; }, [](int, int) { return Tp(0); }, [](int, int) { return Tp(0); },
      [&](int i, int j, Tp kkv, Tp qkv) {
        Lm[i * ldc + j] = j < i ? bt[i] * kkv * Gam[i * ldc + j] : Tp(0);
        P[i * C + j] = j <= i ? qkv * Gam[i * ldc + j] : Tp(0);
      });
  __syncthreads();
  // Forward substitution x_i = rhs_i - sum_{j<i} Lm_ij x_j on column tiles [c0, c0+nc) of [W | U] (K + V columns).
  Tp* Wc = Wg + d.head_row(b, hv, t0) * d.K;
  Tp* Uc = Ug + d.head_row(b, hv, t0) * d.V;
  for (int c0 = 0; c0 < K + V; c0 += NT) {
    const int nc = min(NT, K + V - c0);
    batched_copy<Tp>(
        L * nc,
        [&](int e) {
          const int i = e / nc, col = c0 + (e - i * nc);
          return col < K ? Kc[i * ks + col] : Vc[i * vs + (col - K)];
        },
        [&](int e, Tp x) {
          const int i = e / nc, col = c0 + (e - i * nc);
          X[i * NT + (col - c0)] = col < K ? bt[i] * eg[i] * x : bt[i] * x;
        });
    __syncthreads();
    for (int r0 = 0; r0 < L; r0 += kSolveBlock) {
      const int rb = min(kSolveBlock, L - r0);
      // rows [r0, r0+rb) -= Lm[rows, 0:r0] X[0:r0]  (reads rows < r0, writes rows >= r0)
      tile_mm<4, 2, Tp>(
          rb, nc, r0, [&](int i, int j) { return Lm[(r0 + i) * ldc + j]; },
          [&](int j, int c) { return X[j * NT + c]; }, [&](int i, int c, Tp s) { X[(r0 + i) * NT + c] -= s; });
      __syncthreads();
      // the 16 x 16 diagonal block, one column per thread in registers: x_i -= Lm_ij x_j for j = 0, 1, .. in order
      for (int c = threadIdx.x; c < nc; c += blockDim.x) {
        Tp x[kSolveBlock];
#pragma unroll
        for (int i = 0; i < kSolveBlock; ++i) x[i] = i < rb ? X[(r0 + i) * NT + c] : Tp(0);
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
    for (int e = threadIdx.x; e < L * nc; e += blockDim.x) {
      const int i = e / nc, col = c0 + (e - i * nc);
      const Tp x = X[i * NT + (col - c0)];
      if (col < K)
        Wc[int64_t(i) * K + col] = x;
      else
        Uc[int64_t(i) * V + (col - K)] = x;
    }
    __syncthreads();  // X is reloaded by the next column tile
  }
}

// Step 2, tiled: the sequential state pass over chunks for value columns [vt blockIdx.x, +vt) of (b, hv).
template <typename Tp>
__global__ void __launch_bounds__(256)
    forward_state_tiled_kernel(Dims d, int vt, bool wide, Tp* __restrict__ o, Tp* __restrict__ final_state,
                               Tp* __restrict__ chunk_states, const Tp* __restrict__ q, const Tp* __restrict__ k,
                               const Tp* __restrict__ Wg, const Tp* __restrict__ Ug, const Tp* __restrict__ Pg,
                               const Tp* __restrict__ EGg, const Tp* __restrict__ Rg, const Tp* __restrict__ s0,
                               Tp sc) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int c0 = blockIdx.x * vt, nv = min(vt, V - c0);
  const int ldc = C + 1, ldk = K + 1;
  Tp* H = reinterpret_cast<Tp*>(smem_raw);  // [K, vt]
  Tp* Vn = H + K * vt;                      // [C, vt]
  Tp* QH = Vn + C * vt;                     // [C, vt]
  Tp* Ps = QH + C * vt;                     // [C, C+1]
  Tp* Ts = Ps + C * ldc;                    // [C, K+1]: W, then Q, then K of the chunk
  Tp* egs = Ts + C * ldk;                   // [C]
  Tp* rs = egs + C;                         // [C]
  Tp* Tq = wide ? rs + C : Ts;              // [C, K+1]: Q of the chunk (its own tile when wide)
  Tp* Tk = wide ? Tq + C * ldk : Ts;        // [C, K+1]: K of the chunk (its own tile when wide)
  const int64_t s_off = (b * d.Hv + hv) * d.K * d.V + c0;
  for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
    const int kk = e / nv, c = e - kk * nv;
    H[kk * vt + c] = s0 ? s0[s_off + int64_t(kk) * V + c] : Tp(0);
  }
  const int64_t ks = d.Hk * d.K;
  for (int64_t n = 0; n < d.NC; ++n) {
    const int64_t t0 = n * d.C;
    const int L = static_cast<int>(min(d.C, d.T - t0));
    __syncthreads();  // H of the previous chunk is complete; its readers of the tiles are done
    if (chunk_states)
      for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
        const int kk = e / nv, c = e - kk * nv;
        chunk_states[d.chunk_state(b, hv, n) + c0 + int64_t(kk) * V + c] = H[kk * vt + c];
      }
    const int64_t hr = d.head_row(b, hv, t0);
    stage_rows(Ts, ldk, Wg + hr * d.K, d.K, L, K);
    if (wide) {  // all loads of the step issued together: one memory latency instead of three
      stage_rows(Tq, ldk, q + d.key_row(b, t0, hv), ks, L, K);
      stage_rows(Tk, ldk, k + d.key_row(b, t0, hv), ks, L, K);
    }
    stage_rows(Vn, vt, Ug + hr * d.V + c0, d.V, L, nv);
    stage_lower(Ps, ldc, Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C, C, L);
    for (int i = threadIdx.x; i < L; i += blockDim.x) {
      egs[i] = EGg[hr + i];
      rs[i] = Rg[hr + i];
    }
    __syncthreads();
    // Vn = U - W H
    tile_mm<2, 2, Tp>(
        L, nv, K, [&](int i, int kk) { return Ts[i * ldk + kk]; }, [&](int kk, int c) { return H[kk * vt + c]; },
        [&](int i, int c, Tp s) { Vn[i * vt + c] -= s; });
    __syncthreads();
    if (!wide) {  // block-uniform
      stage_rows(Tq, ldk, q + d.key_row(b, t0, hv), ks, L, K);
      __syncthreads();
    }
    // O = (scale eg) ⊙ (Q H) + scale (P Vn); both products give (i, c) to the same thread, so QH needs no sync.
    tile_mm<2, 2, Tp>(
        L, nv, K, [&](int i, int kk) { return Tq[i * ldk + kk]; }, [&](int kk, int c) { return H[kk * vt + c]; },
        [&](int i, int c, Tp s) { QH[i * vt + c] = s; });
    tile_mm<2, 2, Tp>(
        L, nv, L, [&](int i, int j) { return Ps[i * ldc + j]; }, [&](int j, int c) { return Vn[j * vt + c]; },
        [&](int i, int c, Tp s) { o[d.value_row(b, t0 + i, hv) + c0 + c] = sc * egs[i] * QH[i * vt + c] + sc * s; });
    __syncthreads();
    if (!wide) stage_rows(Tk, ldk, k + d.key_row(b, t0, hv), ks, L, K);
    for (int e = threadIdx.x; e < L * nv; e += blockDim.x) {
      const int i = e / nv, c = e - i * nv;
      Vn[i * vt + c] = rs[i] * Vn[i * vt + c];
    }
    __syncthreads();
    // H = eg_L H + K^T (r ⊙ Vn)
    const Tp eg_last = egs[L - 1];
    tile_mm<2, 2, Tp>(
        K, nv, L, [&](int kk, int i) { return Tk[i * ldk + kk]; }, [&](int i, int c) { return Vn[i * vt + c]; },
        [&](int kk, int c, Tp s) { H[kk * vt + c] = eg_last * H[kk * vt + c] + s; });
  }
  __syncthreads();
  if (final_state)
    for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
      const int kk = e / nv, c = e - kk * nv;
      final_state[s_off + int64_t(kk) * V + c] = H[kk * vt + c];
    }
}

// Step 4, tiled: the reverse state pass for value columns [vt blockIdx.x, +vt) of (b, hv): stores dH_end per chunk,
// Vn and dVn; dinitial_state at the end.
template <typename Tp>
__global__ void __launch_bounds__(256)
    backward_state_tiled_kernel(Dims d, int vt, bool wide, Tp* __restrict__ dinitial_state, Tp* __restrict__ dHend,
                                Tp* __restrict__ Vng, Tp* __restrict__ dVng, const Tp* __restrict__ do_,
                                const Tp* __restrict__ dfinal_state, const Tp* __restrict__ q,
                                const Tp* __restrict__ k, const Tp* __restrict__ Wg, const Tp* __restrict__ Ug,
                                const Tp* __restrict__ Pg, const Tp* __restrict__ EGg, const Tp* __restrict__ Rg,
                                const Tp* __restrict__ chunk_states, Tp sc) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int c0 = blockIdx.x * vt, nv = min(vt, V - c0);
  const int ldc = C + 1, ldk = K + 1;
  Tp* dH = reinterpret_cast<Tp*>(smem_raw);  // [K, vt]
  Tp* Hs = dH + K * vt;                      // [K, vt]: H of the chunk, then Q^T (scale eg ⊙ dO)
  Tp* Vn = Hs + K * vt;                      // [C, vt]
  Tp* dVn = Vn + C * vt;                     // [C, vt]
  Tp* dOs = dVn + C * vt;                    // [C, vt]
  Tp* Ps = dOs + C * vt;                     // [C, C+1]
  Tp* Ts = Ps + C * ldc;                     // [C, K+1]: W, K, Q, W of the chunk in turn
  Tp* egs = Ts + C * ldk;                    // [C]
  Tp* rs = egs + C;                          // [C]
  Tp* Tk = wide ? rs + C : Ts;               // [C, K+1]: K of the chunk (its own tile when wide)
  Tp* Tq = wide ? Tk + C * ldk : Ts;         // [C, K+1]: Q of the chunk (its own tile when wide)
  const int64_t s_off = (b * d.Hv + hv) * d.K * d.V + c0;
  for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
    const int kk = e / nv, c = e - kk * nv;
    dH[kk * vt + c] = dfinal_state ? dfinal_state[s_off + int64_t(kk) * V + c] : Tp(0);
  }
  const int64_t ks = d.Hk * d.K, vs = d.Hv * d.V;
  for (int64_t n = d.NC - 1; n >= 0; --n) {
    const int64_t t0 = n * d.C;
    const int L = static_cast<int>(min(d.C, d.T - t0));
    const int64_t hr = d.head_row(b, hv, t0);
    __syncthreads();  // dH of the previous step is complete; its readers of the tiles are done
    for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
      const int kk = e / nv, c = e - kk * nv;
      dHend[d.chunk_state(b, hv, n) + c0 + int64_t(kk) * V + c] = dH[kk * vt + c];
    }
    stage_rows(Ts, ldk, Wg + hr * d.K, d.K, L, K);
    if (wide) {  // all loads of the step issued together: one memory latency instead of four
      stage_rows(Tk, ldk, k + d.key_row(b, t0, hv), ks, L, K);
      stage_rows(Tq, ldk, q + d.key_row(b, t0, hv), ks, L, K);
    }
    stage_rows(Hs, vt, chunk_states + d.chunk_state(b, hv, n) + c0, d.V, K, nv);
    stage_rows(Vn, vt, Ug + hr * d.V + c0, d.V, L, nv);
    stage_rows(dOs, vt, do_ + d.value_row(b, t0, hv) + c0, vs, L, nv);
    stage_lower(Ps, ldc, Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C, C, L);
    for (int i = threadIdx.x; i < L; i += blockDim.x) {
      egs[i] = EGg[hr + i];
      rs[i] = Rg[hr + i];
    }
    __syncthreads();
    // Vn = U - W H (stored for the chunk-gradient kernel)
    tile_mm<2, 2, Tp>(
        L, nv, K, [&](int i, int kk) { return Ts[i * ldk + kk]; }, [&](int kk, int c) { return Hs[kk * vt + c]; },
        [&](int i, int c, Tp s) {
          const Tp x = Vn[i * vt + c] - s;
          Vn[i * vt + c] = x;
          Vng[(hr + i) * d.V + c0 + c] = x;
        });
    __syncthreads();
    if (!wide) {  // block-uniform
      stage_rows(Tk, ldk, k + d.key_row(b, t0, hv), ks, L, K);
      __syncthreads();
    }
    // dVn = scale (P^T dO) + r ⊙ (K dH); the two products give (i, c) to the same thread.
    tile_mm<2, 2, Tp>(
        L, nv, L, [&](int i, int j) { return Ps[j * ldc + i]; }, [&](int j, int c) { return dOs[j * vt + c]; },
        [&](int i, int c, Tp s) { dVn[i * vt + c] = sc * s; });
    tile_mm<2, 2, Tp>(
        L, nv, K, [&](int i, int kk) { return Tk[i * ldk + kk]; }, [&](int kk, int c) { return dH[kk * vt + c]; },
        [&](int i, int c, Tp s) {
          const Tp x = dVn[i * vt + c] + rs[i] * s;
          dVn[i * vt + c] = x;
          dVng[(hr + i) * d.V + c0 + c] = x;
        });
    __syncthreads();
    if (!wide) stage_rows(Tq, ldk, q + d.key_row(b, t0, hv), ks, L, K);
    for (int e = threadIdx.x; e < L * nv; e += blockDim.x) {
      const int i = e / nv, c = e - i * nv;
      dOs[i * vt + c] = sc * egs[i] * dOs[i * vt + c];
    }
    __syncthreads();
    // Hs = Q^T ((scale eg) ⊙ dO)
    tile_mm<2, 2, Tp>(
        K, nv, L, [&](int kk, int i) { return Tq[i * ldk + kk]; }, [&](int i, int c) { return dOs[i * vt + c]; },
        [&](int kk, int c, Tp s) { Hs[kk * vt + c] = s; });
    __syncthreads();
    if (!wide) {  // W was overwritten by K and Q
      stage_rows(Ts, ldk, Wg + hr * d.K, d.K, L, K);
      __syncthreads();
    }
    // dH = eg_L dH + Q^T ((scale eg) ⊙ dO) - W^T dVn; (kk, c) has the owner that wrote Hs.
    const Tp eg_last = egs[L - 1];
    tile_mm<2, 2, Tp>(
        K, nv, L, [&](int kk, int i) { return Ts[i * ldk + kk]; }, [&](int i, int c) { return dVn[i * vt + c]; },
        [&](int kk, int c, Tp s) { dH[kk * vt + c] = eg_last * dH[kk * vt + c] + Hs[kk * vt + c] - s; });
  }
  __syncthreads();
  if (dinitial_state)
    for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
      const int kk = e / nv, c = e - kk * nv;
      dinitial_state[s_off + int64_t(kk) * V + c] = dH[kk * vt + c];
    }
}

}  // namespace gdn::cuda::delta_rule_tiled
