// cuda/delta_rule_chunked_untiled.cuh — the untiled kernels of cuda/delta_rule_chunked.cu (included by that file
// only): prepare_chunk_kernel, forward_state_kernel, backward_state_kernel and chunk_grad_kernel, with their helpers.
//
// The math, the grids and the shared memory of each kernel are in the header comment of cuda/delta_rule_chunked.cu.
// They run where the tiled kernels' shared memory does not fit, and for every shape under GDN_DR_UNTILED=1.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/delta_rule_chunked_tiled.cuh"
#include "cuda/launch.h"

namespace gdn::cuda::delta_rule_untiled {

using delta_rule_tiled::Dims;
using namespace delta_rule_tiled;

constexpr int kVTile = 32;  // value columns per block in the state passes (one warp wide)

// f(i, j) for every i < M, j < N, spread over the block's threads.
template <typename F>
__device__ inline void for_each_elem(int M, int N, F f) {
  for (int e = threadIdx.x; e < M * N; e += blockDim.x) f(e / N, e % N);
}

// Gates of one chunk into shared memory: gam (double inclusive cumsum), decay = e^g (double), eg = e^gam,
// r = e^(gam_L - gam), bt = beta (input type); then Gam [C,C] (row stride C; rows/columns < L written, 0 above the
// diagonal) by the CPU's running product in double, one column per thread. Ends with a __syncthreads.
template <typename Tp>
__device__ void chunk_gates(const Dims& d, const Tp* g, const Tp* beta, int64_t b, int64_t hv, int64_t t0, int L,
                            double* gam, double* decay, Tp* eg, Tp* r, Tp* bt, Tp* Gam) {
  const int C = static_cast<int>(d.C);
  if (threadIdx.x == 0) {
    double acc = 0;
    for (int i = 0; i < L; ++i) {
      const double gi = static_cast<double>(g[d.gate(b, t0 + i, hv)]);
      acc += gi;
      gam[i] = acc;
      decay[i] = exp(gi);
    }
  }
  for (int i = threadIdx.x; i < L; i += blockDim.x) bt[i] = beta[d.gate(b, t0 + i, hv)];
  __syncthreads();
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    eg[i] = static_cast<Tp>(exp(gam[i]));
    r[i] = static_cast<Tp>(exp(gam[L - 1] - gam[i]));
  }
  for (int j = threadIdx.x; j < L; j += blockDim.x) {
    double prod = 1.0;
    for (int i = 0; i < L; ++i) {
      if (i > j) prod *= decay[i];
      Gam[i * C + j] = i < j ? Tp(0) : static_cast<Tp>(prod);
    }
  }
  __syncthreads();
}

template <typename Tp>
__device__ inline Tp dot(const Tp* a, const Tp* b, int64_t n) {
  Tp acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// Step 1: W, U, P, eg, r of chunk blockIdx.x of (b = blockIdx.z, hv = blockIdx.y).
template <typename Tp>
__global__ void prepare_chunk_kernel(Dims d, Tp* __restrict__ Wg, Tp* __restrict__ Ug, Tp* __restrict__ Pg,
                                     Tp* __restrict__ EGg, Tp* __restrict__ Rg, const Tp* __restrict__ q,
                                     const Tp* __restrict__ k, const Tp* __restrict__ v, const Tp* __restrict__ g,
                                     const Tp* __restrict__ beta, Tp* __restrict__ cc_scratch) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t n = blockIdx.x, hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C);
  const int64_t t0 = n * d.C;
  const int L = static_cast<int>(min(d.C, d.T - t0));
  double* gam = reinterpret_cast<double*>(smem_raw);
  double* decay = gam + C;
  Tp* eg = reinterpret_cast<Tp*>(decay + C);
  Tp* r = eg + C;
  Tp* bt = r + C;
  // Gam, Lm [C,C]: after the vectors in shared memory, or this block's slice of cc_scratch when they do not fit.
  Tp* Gam = cc_scratch ? cc_scratch + ((b * d.Hv + hv) * d.NC + n) * 2 * d.C * d.C : bt + C;
  Tp* Lm = Gam + C * C;
  chunk_gates(d, g, beta, b, hv, t0, L, gam, decay, eg, r, bt, Gam);

  const int64_t ks = d.Hk * d.K, vs = d.Hv * d.V;  // row strides of q/k and v
  const Tp* Qc = q + d.key_row(b, t0, hv);
  const Tp* Kc = k + d.key_row(b, t0, hv);
  const Tp* Vc = v + d.value_row(b, t0, hv);
  Tp* P = Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C;
  for_each_elem(L, L, [&](int i, int j) {
    Tp lm = 0, p = 0;
    if (j < i) lm = bt[i] * dot(Kc + i * ks, Kc + j * ks, d.K) * Gam[i * C + j];
    if (j <= i) p = dot(Qc + i * ks, Kc + j * ks, d.K) * Gam[i * C + j];
    Lm[i * C + j] = lm;
    P[i * C + j] = p;
  });
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    EGg[d.head_row(b, hv, t0 + i)] = eg[i];
    Rg[d.head_row(b, hv, t0 + i)] = r[i];
  }
  __syncthreads();
  // Forward substitution x_i = rhs_i - sum_{j<i} Lm_ij x_j, one column of W (c < K) or U (c >= K) per thread.
  for (int64_t c = threadIdx.x; c < d.K + d.V; c += blockDim.x) {
    const bool is_w = c < d.K;
    Tp* x = is_w ? Wg + d.head_row(b, hv, t0) * d.K + c : Ug + d.head_row(b, hv, t0) * d.V + (c - d.K);
    const int64_t xs = is_w ? d.K : d.V;
    for (int i = 0; i < L; ++i) {
      Tp acc = is_w ? bt[i] * eg[i] * Kc[i * ks + c] : bt[i] * Vc[i * vs + (c - d.K)];
      for (int j = 0; j < i; ++j) acc -= Lm[i * C + j] * x[j * xs];
      x[i * xs] = acc;
    }
  }
}

// Step 2: the sequential state pass over chunks for value columns [32 blockIdx.x, +32) of (b, hv).
template <typename Tp>
__global__ void forward_state_kernel(Dims d, Tp* __restrict__ o, Tp* __restrict__ final_state,
                                     Tp* __restrict__ chunk_states, const Tp* __restrict__ q, const Tp* __restrict__ k,
                                     const Tp* __restrict__ Wg, const Tp* __restrict__ Ug, const Tp* __restrict__ Pg,
                                     const Tp* __restrict__ EGg, const Tp* __restrict__ Rg, const Tp* __restrict__ s0,
                                     Tp sc) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C);
  const int tx = threadIdx.x % kVTile, ty = threadIdx.x / kVTile, ny = blockDim.x / kVTile;
  const int64_t c = int64_t(blockIdx.x) * kVTile + tx;
  const bool valid = c < d.V;
  Tp* H = reinterpret_cast<Tp*>(smem_raw);  // [K,32]
  Tp* Vn = H + d.K * kVTile;                // [C,32]
  const int64_t s_off = (b * d.Hv + hv) * d.K * d.V;
  for (int64_t kk = ty; kk < d.K; kk += ny) H[kk * kVTile + tx] = valid && s0 ? s0[s_off + kk * d.V + c] : Tp(0);
  __syncthreads();
  const int64_t ks = d.Hk * d.K;
  for (int64_t n = 0; n < d.NC; ++n) {
    const int64_t t0 = n * d.C;
    const int L = static_cast<int>(min(d.C, d.T - t0));
    if (chunk_states && valid)
      for (int64_t kk = ty; kk < d.K; kk += ny)
        chunk_states[d.chunk_state(b, hv, n) + kk * d.V + c] = H[kk * kVTile + tx];
    const Tp* W = Wg + d.head_row(b, hv, t0) * d.K;
    const Tp* U = Ug + d.head_row(b, hv, t0) * d.V;
    const Tp* P = Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C;
    const Tp* eg = EGg + d.head_row(b, hv, t0);
    const Tp* r = Rg + d.head_row(b, hv, t0);
    const Tp* Qc = q + d.key_row(b, t0, hv);
    const Tp* Kc = k + d.key_row(b, t0, hv);
    // Vn = U - W H
    if (valid)
      for (int i = ty; i < L; i += ny) {
        Tp acc = 0;
        for (int64_t kk = 0; kk < d.K; ++kk) acc += W[i * d.K + kk] * H[kk * kVTile + tx];
        Vn[i * kVTile + tx] = U[i * d.V + c] - acc;
      }
    __syncthreads();
    // O = (scale eg) ⊙ (Q H) + scale (P Vn)
    if (valid)
      for (int i = ty; i < L; i += ny) {
        Tp qh = 0, pv = 0;
        for (int64_t kk = 0; kk < d.K; ++kk) qh += Qc[i * ks + kk] * H[kk * kVTile + tx];
        for (int j = 0; j <= i; ++j) pv += P[i * C + j] * Vn[j * kVTile + tx];
        o[d.value_row(b, t0 + i, hv) + c] = sc * eg[i] * qh + sc * pv;
      }
    __syncthreads();
    // H = eg_L H + K^T (r ⊙ Vn)
    const Tp eg_last = eg[L - 1];
    if (valid)
      for (int64_t kk = ty; kk < d.K; kk += ny) {
        Tp acc = 0;
        for (int i = 0; i < L; ++i) acc += Kc[i * ks + kk] * (r[i] * Vn[i * kVTile + tx]);
        H[kk * kVTile + tx] = eg_last * H[kk * kVTile + tx] + acc;
      }
    __syncthreads();
  }
  if (final_state && valid)
    for (int64_t kk = ty; kk < d.K; kk += ny) final_state[s_off + kk * d.V + c] = H[kk * kVTile + tx];
}

// Step 4: the reverse state pass for value columns [32 blockIdx.x, +32) of (b, hv): stores dH_end per chunk,
// Vn and dVn; dinitial_state at the end.
template <typename Tp>
__global__ void backward_state_kernel(Dims d, Tp* __restrict__ dinitial_state, Tp* __restrict__ dHend,
                                      Tp* __restrict__ Vng, Tp* __restrict__ dVng, const Tp* __restrict__ do_,
                                      const Tp* __restrict__ dfinal_state, const Tp* __restrict__ q,
                                      const Tp* __restrict__ k, const Tp* __restrict__ Wg, const Tp* __restrict__ Ug,
                                      const Tp* __restrict__ Pg, const Tp* __restrict__ EGg, const Tp* __restrict__ Rg,
                                      const Tp* __restrict__ chunk_states, Tp sc) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C);
  const int tx = threadIdx.x % kVTile, ty = threadIdx.x / kVTile, ny = blockDim.x / kVTile;
  const int64_t c = int64_t(blockIdx.x) * kVTile + tx;
  const bool valid = c < d.V;
  Tp* dH = reinterpret_cast<Tp*>(smem_raw);  // [K,32]
  Tp* dVn = dH + d.K * kVTile;               // [C,32]
  const int64_t s_off = (b * d.Hv + hv) * d.K * d.V;
  for (int64_t kk = ty; kk < d.K; kk += ny)
    dH[kk * kVTile + tx] = valid && dfinal_state ? dfinal_state[s_off + kk * d.V + c] : Tp(0);
  __syncthreads();
  const int64_t ks = d.Hk * d.K, vs = d.Hv * d.V;
  for (int64_t n = d.NC - 1; n >= 0; --n) {
    const int64_t t0 = n * d.C;
    const int L = static_cast<int>(min(d.C, d.T - t0));
    const Tp* H = chunk_states + d.chunk_state(b, hv, n);
    const Tp* W = Wg + d.head_row(b, hv, t0) * d.K;
    const Tp* U = Ug + d.head_row(b, hv, t0) * d.V;
    const Tp* P = Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C;
    const Tp* eg = EGg + d.head_row(b, hv, t0);
    const Tp* r = Rg + d.head_row(b, hv, t0);
    const Tp* Qc = q + d.key_row(b, t0, hv);
    const Tp* Kc = k + d.key_row(b, t0, hv);
    const Tp* dO = do_ + d.value_row(b, t0, hv);
    if (valid) {
      for (int64_t kk = ty; kk < d.K; kk += ny) dHend[d.chunk_state(b, hv, n) + kk * d.V + c] = dH[kk * kVTile + tx];
      for (int i = ty; i < L; i += ny) {
        // Vn = U - W H (for the chunk-gradient kernel)
        Tp wh = 0;
        for (int64_t kk = 0; kk < d.K; ++kk) wh += W[i * d.K + kk] * H[kk * d.V + c];
        Vng[d.head_row(b, hv, t0 + i) * d.V + c] = U[i * d.V + c] - wh;
        // dVn = scale (P^T dO) + r ⊙ (K dH)
        Tp pd = 0, kdh = 0;
        for (int j = i; j < L; ++j) pd += P[j * C + i] * dO[j * vs + c];
        for (int64_t kk = 0; kk < d.K; ++kk) kdh += Kc[i * ks + kk] * dH[kk * kVTile + tx];
        const Tp dvn = sc * pd + r[i] * kdh;
        dVn[i * kVTile + tx] = dvn;
        dVng[d.head_row(b, hv, t0 + i) * d.V + c] = dvn;
      }
    }
    __syncthreads();
    // dH = eg_L dH + Q^T ((scale eg) ⊙ dO) - W^T dVn
    const Tp eg_last = eg[L - 1];
    if (valid)
      for (int64_t kk = ty; kk < d.K; kk += ny) {
        Tp qd = 0, wd = 0;
        for (int i = 0; i < L; ++i) qd += Qc[i * ks + kk] * (sc * eg[i] * dO[i * vs + c]);
        for (int i = 0; i < L; ++i) wd += W[i * d.K + kk] * dVn[i * kVTile + tx];
        dH[kk * kVTile + tx] = eg_last * dH[kk * kVTile + tx] + qd - wd;
      }
    __syncthreads();
  }
  if (dinitial_state && valid)
    for (int64_t kk = ty; kk < d.K; kk += ny) dinitial_state[s_off + kk * d.V + c] = dH[kk * kVTile + tx];
}

// Step 5: every gradient of chunk blockIdx.x of (b = blockIdx.z, hv = blockIdx.y) from the stored H, dH_end, Vn, dVn,
// W, U, P. dQ, dK rows go to dqr/dkr (the outputs when Hv == Hk, row stride key_stride; else [B,Hv,T,K] scratch).
template <typename Tp>
__global__ void chunk_grad_kernel(Dims d, Tp* __restrict__ dqr, Tp* __restrict__ dkr, int64_t key_stride,
                                  Tp* __restrict__ dv, Tp* __restrict__ dg, Tp* __restrict__ dbeta,
                                  Tp* __restrict__ dWtg, Tp* __restrict__ dUtg, const Tp* __restrict__ do_,
                                  const Tp* __restrict__ q, const Tp* __restrict__ k, const Tp* __restrict__ v,
                                  const Tp* __restrict__ g, const Tp* __restrict__ beta,
                                  const Tp* __restrict__ chunk_states, const Tp* __restrict__ dHend,
                                  const Tp* __restrict__ Vng, const Tp* __restrict__ dVng, const Tp* __restrict__ Wg,
                                  const Tp* __restrict__ Ug, const Tp* __restrict__ Pg, Tp sc,
                                  Tp* __restrict__ cc_scratch) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t n = blockIdx.x, hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C);
  const int64_t t0 = n * d.C;
  const int L = static_cast<int>(min(d.C, d.T - t0));
  const int64_t K = d.K, V = d.V;
  double* gam = reinterpret_cast<double*>(smem_raw);
  double* decay = gam + C;
  Tp* eg = reinterpret_cast<Tp*>(decay + C);
  Tp* r = eg + C;
  Tp* bt = r + C;
  Tp* dgam = bt + C;
  Tp* db = dgam + C;
  Tp* kd = db + C;
  Tp* red = kd + C;  // 32 values for block_sum
  // Gam, KK, X [C,C]: after the vectors in shared memory, or this block's slice of cc_scratch when they do not fit.
  Tp* Gam = cc_scratch ? cc_scratch + ((b * d.Hv + hv) * d.NC + n) * 3 * d.C * d.C : red + 32;
  Tp* KK = Gam + C * C;
  Tp* X = KK + C * C;  // work matrix: dP, then dQK, then dL (negated), then Pm
  chunk_gates(d, g, beta, b, hv, t0, L, gam, decay, eg, r, bt, Gam);

  const int64_t ks = d.Hk * K, vs = d.Hv * V;
  const Tp* Qc = q + d.key_row(b, t0, hv);
  const Tp* Kc = k + d.key_row(b, t0, hv);
  const Tp* Vc = v + d.value_row(b, t0, hv);
  const Tp* dO = do_ + d.value_row(b, t0, hv);
  const Tp* H = chunk_states + d.chunk_state(b, hv, n);
  const Tp* dH = dHend + d.chunk_state(b, hv, n);
  const Tp* Vn = Vng + d.head_row(b, hv, t0) * V;
  const Tp* dVn = dVng + d.head_row(b, hv, t0) * V;
  const Tp* W = Wg + d.head_row(b, hv, t0) * K;
  const Tp* U = Ug + d.head_row(b, hv, t0) * V;
  const Tp* P = Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C;
  Tp* dWt = dWtg + d.head_row(b, hv, t0) * K;
  Tp* dUt = dUtg + d.head_row(b, hv, t0) * V;
  Tp* dQ = dqr + (d.Hv == d.Hk ? d.key_row(b, t0, hv) : d.head_row(b, hv, t0) * K);
  Tp* dK = dkr + (d.Hv == d.Hk ? d.key_row(b, t0, hv) : d.head_row(b, hv, t0) * K);
  const int64_t qs = key_stride;

  // K K^T below the diagonal; dP = scale dO Vn^T on and below it (P and Gam are 0 above).
  // (Products by tile_mm: every thread a register tile, operands read through L1.)
  const int Ki = static_cast<int>(K), Vi = static_cast<int>(V);
  tile_mm<4, 4, Tp>(
      L, L, Ki, [&](int i, int kk) { return Kc[i * ks + kk]; }, [&](int kk, int j) { return Kc[j * ks + kk]; },
      [&](int i, int j, Tp s) { KK[i * C + j] = j < i ? s : Tp(0); });
  tile_mm<4, 4, Tp>(
      L, L, Vi, [&](int i, int cc) { return dO[i * vs + cc]; }, [&](int cc, int j) { return Vn[j * V + cc]; },
      [&](int i, int j, Tp s) { X[i * C + j] = j <= i ? sc * s : Tp(0); });
  // dQi = (scale eg) ⊙ (dO H^T), dKi = r ⊙ (Vn dH^T) into dQ, dK; sum(H ⊙ dH).
  tile_mm<4, 4, Tp>(
      L, Ki, Vi, [&](int i, int cc) { return dO[i * vs + cc]; }, [&](int cc, int kk) { return H[kk * V + cc]; },
      [&](int i, int kk, Tp s) { dQ[i * qs + kk] = sc * eg[i] * s; });
  tile_mm<4, 4, Tp>(
      L, Ki, Vi, [&](int i, int cc) { return Vn[i * V + cc]; }, [&](int cc, int kk) { return dH[kk * V + cc]; },
      [&](int i, int kk, Tp s) { dK[i * qs + kk] = r[i] * s; });
  Tp hdh = 0;
  for (int64_t e = threadIdx.x; e < K * V; e += blockDim.x) hdh += H[e] * dH[e];
  hdh = block_sum(hdh, red);  // synchronizes the block
  // dgam = rowsum(dP ⊙ P) - colsum(dP ⊙ P) + rowdot(Q, dQi) - rowdot(K, dKi)
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    Tp rs = 0, cs = 0;
    for (int j = 0; j < L; ++j) rs += X[i * C + j] * P[i * C + j];
    for (int j = 0; j < L; ++j) cs += X[j * C + i] * P[j * C + i];
    Tp gi = rs - cs;
    gi += dot(Qc + i * ks, dQ + i * qs, K);
    const Tp kdi = dot(Kc + i * ks, dK + i * qs, K);
    kd[i] = kdi;
    dgam[i] = gi - kdi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Tp kdsum = 0;
    for (int i = 0; i < L; ++i) kdsum += kd[i];
    dgam[L - 1] += eg[L - 1] * hdh + kdsum;
  }
  for_each_elem(L, L, [&](int i, int j) { X[i * C + j] *= Gam[i * C + j]; });  // dQK
  __syncthreads();
  // dQ += dQK K, dK += dQK^T Q
  // (X is 0 above the diagonal, so the full sums over j < L are the triangular ones.)
  tile_mm<4, 4, Tp>(
      L, Ki, L, [&](int i, int j) { return X[i * C + j]; }, [&](int j, int kk) { return Kc[j * ks + kk]; },
      [&](int i, int kk, Tp s) { dQ[i * qs + kk] += s; });
  tile_mm<4, 4, Tp>(
      L, Ki, L, [&](int i, int j) { return X[j * C + i]; }, [&](int j, int kk) { return Qc[j * ks + kk]; },
      [&](int i, int kk, Tp s) { dK[i * qs + kk] += s; });
  // dWt = A^T (-dVn H^T), dUt = A^T dVn: right-hand sides into dWt, dUt (columns c < K of [dWt | dUt] are dWt).
  tile_mm<4, 4, Tp>(
      L, Ki, Vi, [&](int i, int cc) { return dVn[i * V + cc]; }, [&](int cc, int kk) { return H[kk * V + cc]; },
      [&](int i, int kk, Tp s) { dWt[i * K + kk] = -s; });
  for_each_elem(L, Vi, [&](int i, int cc) { dUt[i * V + cc] = dVn[i * V + cc]; });
  __syncthreads();
  // Blocked backward substitution x_i = rhs_i - sum_{j>i} Lm_ji x_j, Lm_ji = beta_j KK_ji Gam_ji: row blocks of 16
  // from the bottom; the block is first updated by the solved rows below it (all threads), then solved one column
  // per thread. x lives in dWt / dUt (global, visible to the block after __syncthreads).
  auto xat = [&](int i, int c) -> Tp& { return c < Ki ? dWt[i * K + c] : dUt[i * V + (c - Ki)]; };
  auto lmt = [&](int j, int i) { return bt[j] * KK[j * C + i] * Gam[j * C + i]; };
  for (int r1 = L; r1 > 0; r1 -= kSolveBlock) {
    const int r0 = max(0, r1 - kSolveBlock), rb = r1 - r0;
    tile_mm<4, 2, Tp>(
        rb, Ki + Vi, L - r1, [&](int i, int j) { return lmt(r1 + j, r0 + i); },
        [&](int j, int c) { return xat(r1 + j, c); }, [&](int i, int c, Tp s) { xat(r0 + i, c) -= s; });
    __syncthreads();
    for (int c = threadIdx.x; c < Ki + Vi; c += blockDim.x)
      for (int i = r1 - 2; i >= r0; --i) {
        Tp acc = xat(i, c);
        for (int j = i + 1; j < r1; ++j) acc -= lmt(j, i) * xat(j, c);
        xat(i, c) = acc;
      }
    __syncthreads();
  }
  // dK += (beta eg) ⊙ dWt, dV = beta ⊙ dUt; dbeta = eg ⊙ rowdot(K, dWt) + rowdot(V, dUt); dgam += beta eg ⊙ wk
  for_each_elem(L, static_cast<int>(K), [&](int i, int kk) { dK[i * qs + kk] += bt[i] * eg[i] * dWt[i * K + kk]; });
  for_each_elem(L, static_cast<int>(V),
                [&](int i, int cc) { dv[d.value_row(b, t0 + i, hv) + cc] = bt[i] * dUt[i * V + cc]; });
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    const Tp wk = dot(Kc + i * ks, dWt + i * K, K);
    db[i] = eg[i] * wk + dot(Vc + i * vs, dUt + i * V, V);
    dgam[i] += bt[i] * eg[i] * wk;
  }
  // X = -(dWt W^T + dUt U^T) strictly below the diagonal (dl of the CPU)
  tile_mm<4, 4, Tp>(
      L, L, Ki + Vi, [&](int i, int kk) { return kk < Ki ? dWt[i * K + kk] : dUt[i * V + (kk - Ki)]; },
      [&](int kk, int j) { return kk < Ki ? W[j * K + kk] : U[j * V + (kk - Ki)]; },
      [&](int i, int j, Tp s) { X[i * C + j] = j < i ? -s : Tp(0); });
  __syncthreads();
  // With m_ij = dl_ij Lm_ij: dgam_j += sum_{j'<j} m_jj' then -= m_ij for i > j (the CPU's order);
  // dbeta_j += (dl_jj' Gam_jj') KK_jj'.
  for (int j = threadIdx.x; j < L; j += blockDim.x) {
    Tp dgi = 0, dbj = db[j];
    for (int jj = 0; jj < j; ++jj) {
      const Tp dl = X[j * C + jj];
      dgi += dl * (bt[j] * KK[j * C + jj] * Gam[j * C + jj]);
      dbj += dl * Gam[j * C + jj] * KK[j * C + jj];
    }
    Tp dgj = dgam[j] + dgi;
    for (int i = j + 1; i < L; ++i) dgj -= X[i * C + j] * (bt[i] * KK[i * C + j] * Gam[i * C + j]);
    dgam[j] = dgj;
    db[j] = dbj;
  }
  __syncthreads();
  for_each_elem(L, L, [&](int i, int j) { X[i * C + j] *= Gam[i * C + j]; });  // Pm
  __syncthreads();
  // dK += beta ⊙ (Pm K) + Pm^T (beta ⊙ K)
  // (Pm is 0 on and above the diagonal; both products give (i, kk) to the same thread.)
  tile_mm<4, 4, Tp>(
      L, Ki, L, [&](int i, int j) { return X[i * C + j]; }, [&](int j, int kk) { return Kc[j * ks + kk]; },
      [&](int i, int kk, Tp s) { dK[i * qs + kk] += bt[i] * s; });
  tile_mm<4, 4, Tp>(
      L, Ki, L, [&](int i, int j) { return X[j * C + i]; }, [&](int j, int kk) { return bt[j] * Kc[j * ks + kk]; },
      [&](int i, int kk, Tp s) { dK[i * qs + kk] += s; });
  // dg = reverse cumsum of dgam (double), dbeta
  if (threadIdx.x == 0) {
    double acc = 0;
    for (int i = L - 1; i >= 0; --i) {
      acc += static_cast<double>(dgam[i]);
      dg[d.gate(b, t0 + i, hv)] = static_cast<Tp>(acc);
      dbeta[d.gate(b, t0 + i, hv)] = db[i];
    }
  }
}

}  // namespace gdn::cuda::delta_rule_untiled
