// cuda/delta_rule_chunked_grad.cuh — chunk_grad_tiled_kernel, the tiled per-chunk gradient kernel of the chunked
// gated delta rule (included by cuda/delta_rule_chunked.cu only; the math is in that file's header comment).
//
// One block of 256 threads per chunk, grid (NC, Hv, B) (512 measured slower here, unlike the other chunk-parallel
// kernels). Every operand is staged into shared memory with coalesced row loads and every product is a block-wide
// tile_mm (cuda/delta_rule_chunked_tiled.cuh). Shared memory:
//   persistent  gam, decay [C] double; eg, r, beta, dgam, db, kd [C]; 32 for block_sum;
//               Gam, KK, X [C, C+1] (X: dP, dQK, Lm, dL, Pm in turn); Ks [C, K+1]
//   region      reused by the phases (its size is the largest of them):
//     1. value tiles of vt = 32 columns: dO, Vn, dVn [C, 33], H, dH [K, 33]. Per tile: X += dO Vn^T,
//        dQ += dO H^T, dWt += dVn H^T, dK += Vn dH^T, sum(H ⊙ dH); dQ, dK, dWt accumulate in global memory (the
//        outputs / the dWt scratch; each sum starts from the element read before the products, tile_mm_init), each
//        element read and written by one owner thread, and get their row scales
//        (scale eg, r, -1) when the last tile is added.
//     2. P [C, C+1], Q [C, K+1]: dgam from dP ⊙ P and the row dots Q·dQi, K·dKi (one warp per row); dQK = dP ⊙ Gam;
//        dQ += dQK K, dK += dQK^T Q.
//     3. the solve tile [C, NT], NT = min(K + V, 128): [dWt | dUt] = A^T [-dVn H^T | dVn] by blocked backward
//        substitution (16-row blocks from the bottom, the block update a tile_mm, the 16 x 16 block one column per
//        thread in registers, x_i -= Lm_ji x_j for j from the block's last row down), Lm = strictly_lower(beta KK ⊙ Gam) in X; results to the dWt / dUt scratch [B,Hv,T,K] / [B,Hv,T,V].
//     4. inner tiles of 64 columns of [dWt | dUt] and [W | U] ([C, 65] each): dL = -(dWt W^T + dUt U^T) into X;
//        then dK += beta eg dWt, dv = beta dUt, dbeta and dgam terms, Pm = dL ⊙ Gam, dK += beta Pm K + Pm^T beta K,
//        dg = reverse cumsum of dgam (double).
// Each output element has one owner thread and a fixed summation order (value tiles in order, then the inner index in
// order): no atomics, identical bits run to run. The sums over V are split at the value tiles, which differs from the
// CPU's GEMMs only by rounding.
#pragma once

#include "cuda/delta_rule_chunked_tiled.cuh"
#include "cuda/launch.h"

namespace gdn::cuda::delta_rule_tiled {

constexpr int kGradVT = 32;     // value columns per tile in phase 1
constexpr int kGradInner = 64;  // inner columns per tile of dL in phase 4

// Elements (in Tp) of the shared memory of chunk_grad_tiled_kernel after the two double vectors.
inline int64_t grad_tiled_elems(int64_t C, int64_t K, int64_t V) {
  const int64_t ldc = C + 1, ldk = K + 1, ldt = kGradVT + 1;
  const int64_t NT = (K + V) < kSolveCols ? (K + V) : kSolveCols;
  const int64_t persistent = 6 * C + 32 + 3 * C * ldc + C * ldk;
  int64_t region = 3 * C * ldt + 2 * K * ldt;
  const int64_t p2 = C * ldc + C * ldk, p3 = C * NT, p4 = 2 * C * (kGradInner + 1);
  region = region > p2 ? region : p2;
  region = region > p3 ? region : p3;
  region = region > p4 ? region : p4;
  return persistent + region;
}

// Every gradient of chunk blockIdx.x of (b = blockIdx.z, hv = blockIdx.y). dQ, dK rows go to dqr/dkr (the outputs
// when Hv == Hk, row stride key_stride; else [B,Hv,T,K] scratch).
template <typename Tp>
__global__ void __launch_bounds__(256)
    chunk_grad_tiled_kernel(Dims d, Tp* __restrict__ dqr, Tp* __restrict__ dkr, int64_t key_stride,
                            Tp* __restrict__ dv, Tp* __restrict__ dg, Tp* __restrict__ dbeta, Tp* __restrict__ dWtg,
                            Tp* __restrict__ dUtg, const Tp* __restrict__ do_, const Tp* __restrict__ q,
                            const Tp* __restrict__ k, const Tp* __restrict__ v, const Tp* __restrict__ g,
                            const Tp* __restrict__ beta, const Tp* __restrict__ chunk_states,
                            const Tp* __restrict__ dHend, const Tp* __restrict__ Vng, const Tp* __restrict__ dVng,
                            const Tp* __restrict__ Wg, const Tp* __restrict__ Ug, const Tp* __restrict__ Pg, Tp sc) {
  pdl_enter();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t n = blockIdx.x, hv = blockIdx.y, b = blockIdx.z;
  const int C = static_cast<int>(d.C), K = static_cast<int>(d.K), V = static_cast<int>(d.V);
  const int64_t t0 = n * d.C;
  const int L = static_cast<int>(min(d.C, d.T - t0));
  const int ldc = C + 1, ldk = K + 1, ldt = kGradVT + 1;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  double* gam = reinterpret_cast<double*>(smem_raw);
  double* decay = gam + C;
  Tp* eg = reinterpret_cast<Tp*>(decay + C);
  Tp* r = eg + C;
  Tp* bt = r + C;
  Tp* dgam = bt + C;
  Tp* db = dgam + C;
  Tp* kd = db + C;
  Tp* red = kd + C;
  Tp* Gam = red + 32;      // [C, C+1]
  Tp* KK = Gam + C * ldc;  // [C, C+1]
  Tp* X = KK + C * ldc;    // [C, C+1]
  Tp* Ks = X + C * ldc;    // [C, K+1]
  Tp* R = Ks + C * ldk;    // the phase region
  chunk_gates_tiled(d, g, beta, b, hv, t0, L, gam, decay, eg, r, bt, Gam, ldc);

  const int64_t ks = d.Hk * d.K, vs = d.Hv * d.V;
  const int64_t hr = d.head_row(b, hv, t0);
  const Tp* Qc = q + d.key_row(b, t0, hv);
  const Tp* Kc = k + d.key_row(b, t0, hv);
  const Tp* Vc = v + d.value_row(b, t0, hv);
  const Tp* dO = do_ + d.value_row(b, t0, hv);
  const Tp* H = chunk_states + d.chunk_state(b, hv, n);
  const Tp* dH = dHend + d.chunk_state(b, hv, n);
  const Tp* Vn = Vng + hr * V;
  const Tp* dVn = dVng + hr * V;
  const Tp* W = Wg + hr * K;
  const Tp* U = Ug + hr * V;
  Tp* dWt = dWtg + hr * K;
  Tp* dUt = dUtg + hr * V;
  Tp* dQ = dqr + (d.Hv == d.Hk ? d.key_row(b, t0, hv) : hr * K);
  Tp* dK = dkr + (d.Hv == d.Hk ? d.key_row(b, t0, hv) : hr * K);
  const int64_t qs = key_stride;

  stage_rows(Ks, ldk, Kc, ks, L, K);
  __syncthreads();
  // KK = strictly_lower(K K^T)
  tile_mm<4, 4, Tp>(
      L, L, K, [&](int i, int kk) { return Ks[i * ldk + kk]; }, [&](int kk, int j) { return Ks[j * ldk + kk]; },
      [&](int i, int j, Tp s) { KK[i * ldc + j] = j < i ? s : Tp(0); });

  // ---- phase 1: products over V in value tiles
  Tp* dOt = R;
  Tp* Vnt = dOt + C * ldt;
  Tp* dVnt = Vnt + C * ldt;
  Tp* Ht = dVnt + C * ldt;
  Tp* dHt = Ht + K * ldt;
  Tp hdh = 0;
  for (int c0 = 0; c0 < V; c0 += kGradVT) {
    const int nv = min(kGradVT, V - c0);
    const bool first = c0 == 0, last = c0 + kGradVT >= V;
    __syncthreads();  // the previous tile's readers are done
    stage_rows(dOt, ldt, dO + c0, vs, L, nv);
    stage_rows(Vnt, ldt, Vn + c0, V, L, nv);
    stage_rows(dVnt, ldt, dVn + c0, V, L, nv);
    for (int e = threadIdx.x; e < K * nv; e += blockDim.x) {
      const int kk = e / nv, c = e - kk * nv;
      const Tp h = H[int64_t(kk) * V + c0 + c], dh = dH[int64_t(kk) * V + c0 + c];
      Ht[kk * ldt + c] = h;
      dHt[kk * ldt + c] = dh;
      hdh += h * dh;
    }
    __syncthreads();
    // X += dO Vn^T (raw dP)
    tile_mm<4, 4, Tp>(
        L, L, nv, [&](int i, int c) { return dOt[i * ldt + c]; }, [&](int c, int j) { return Vnt[j * ldt + c]; },
        [&](int i, int j, Tp s) { X[i * ldc + j] = first ? s : X[i * ldc + j] + s; });
    // dQi = scale eg ⊙ (dO H^T), dWt = -(dVn H^T)
    tile_mm2<4, 4, Tp>(
        L, K, nv, [&](int i, int c) { return dOt[i * ldt + c]; }, [&](int i, int c) { return dVnt[i * ldt + c]; },
        [&](int c, int kk) { return Ht[kk * ldt + c]; },
        [&](int i, int kk) { return first ? Tp(0) : dQ[i * qs + kk]; },
        [&](int i, int kk) { return first ? Tp(0) : dWt[int64_t(i) * K + kk]; },
        [&](int i, int kk, Tp s1, Tp s2) {
          Tp x1 = s1;
          Tp x2 = s2;
          if (last) {
            x1 = sc * eg[i] * x1;
            x2 = -x2;
          }
          dQ[i * qs + kk] = x1;
          dWt[int64_t(i) * K + kk] = x2;
        });
    // dKi = r ⊙ (Vn dH^T)
    tile_mm_init<4, 4, Tp>(
        L, K, nv, [&](int i, int kk) { return first ? Tp(0) : dK[i * qs + kk]; },
        [&](int i, int c) { return Vnt[i * ldt + c]; }, [&](int c, int kk) { return dHt[kk * ldt + c]; },
        [&](int i, int kk, Tp s) {
          Tp x = s;
          if (last) x = r[i] * x;
          dK[i * qs + kk] = x;
        });
  }
  hdh = block_sum(hdh, red);  // synchronizes the block: phase 1 is complete

  // ---- phase 2: dgam of P and the row dots; dQK
  Tp* Ps = R;            // [C, C+1]
  Tp* Qs = R + C * ldc;  // [C, K+1]
  stage_lower(Ps, ldc, Pg + (((b * d.Hv + hv) * d.NC + n) * d.C) * d.C, C, L);
  stage_rows(Qs, ldk, Qc, ks, L, K);
  for (int e = threadIdx.x; e < L * L; e += blockDim.x) {
    const int i = e / L, j = e - i * L;
    X[i * ldc + j] = j <= i ? sc * X[i * ldc + j] : Tp(0);  // dP
  }
  __syncthreads();
  // dgam = rowsum(dP ⊙ P) - colsum(dP ⊙ P) + rowdot(Q, dQi) - rowdot(K, dKi)
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    Tp rs = 0, cs = 0;
    for (int j = 0; j < L; ++j) rs += X[i * ldc + j] * Ps[i * ldc + j];
    for (int j = 0; j < L; ++j) cs += X[j * ldc + i] * Ps[j * ldc + i];
    dgam[i] = rs - cs;
  }
  __syncthreads();
  for (int i = warp; i < L; i += nwarps) {
    Tp qd = 0, kdi = 0;
    for (int kk = lane; kk < K; kk += 32) {
      qd += Qs[i * ldk + kk] * dQ[i * qs + kk];
      kdi += Ks[i * ldk + kk] * dK[i * qs + kk];
    }
    qd = warp_sum(qd);
    kdi = warp_sum(kdi);
    if (lane == 0) {
      kd[i] = kdi;
      dgam[i] = dgam[i] + qd - kdi;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Tp kdsum = 0;
    for (int i = 0; i < L; ++i) kdsum += kd[i];
    dgam[L - 1] += eg[L - 1] * hdh + kdsum;
  }
  for (int e = threadIdx.x; e < L * L; e += blockDim.x) {
    const int i = e / L, j = e - i * L;
    X[i * ldc + j] *= Gam[i * ldc + j];  // dQK
  }
  __syncthreads();
  // dQ += dQK K, dK += dQK^T Q (X is 0 above the diagonal)
  tile_mm_init<4, 4, Tp>(
      L, K, L, [&](int i, int kk) { return dQ[i * qs + kk]; }, [&](int i, int j) { return X[i * ldc + j]; },
      [&](int j, int kk) { return Ks[j * ldk + kk]; }, [&](int i, int kk, Tp s) { dQ[i * qs + kk] = s; });
  tile_mm_init<4, 4, Tp>(
      L, K, L, [&](int i, int kk) { return dK[i * qs + kk]; }, [&](int i, int j) { return X[j * ldc + i]; },
      [&](int j, int kk) { return Qs[j * ldk + kk]; }, [&](int i, int kk, Tp s) { dK[i * qs + kk] = s; });
  __syncthreads();

  // ---- phase 3: [dWt | dUt] = A^T [-dVn H^T | dVn], backward substitution with Lm_ji = beta_j KK_ji Gam_ji
  for (int e = threadIdx.x; e < L * L; e += blockDim.x) {
    const int i = e / L, j = e - i * L;
    X[i * ldc + j] = j < i ? bt[i] * KK[i * ldc + j] * Gam[i * ldc + j] : Tp(0);  // Lm
  }
  const int NT = min(K + V, kSolveCols);
  Tp* Xs = R;  // [C, NT]
  for (int cs0 = 0; cs0 < K + V; cs0 += NT) {
    const int nc = min(NT, K + V - cs0);
    __syncthreads();  // Lm is written; the previous column tile is stored
    batched_copy<Tp>(
        L * nc,
        [&](int e) {
          const int i = e / nc, col = cs0 + (e - i * nc);
          return col < K ? dWt[int64_t(i) * K + col] : dVn[int64_t(i) * V + (col - K)];
        },
        [&](int e, Tp x) {
          const int i = e / nc;
          Xs[i * NT + (e - i * nc)] = x;
        });
    __syncthreads();
    for (int r1 = L; r1 > 0; r1 -= kSolveBlock) {
      const int r0 = max(0, r1 - kSolveBlock), rb = r1 - r0;
      // rows [r0, r1) -= Lm[r1:L, rows]^T X[r1:L]  (reads rows >= r1, writes rows < r1)
      tile_mm<4, 2, Tp>(
          rb, nc, L - r1, [&](int i, int j) { return X[(r1 + j) * ldc + r0 + i]; },
          [&](int j, int c) { return Xs[(r1 + j) * NT + c]; }, [&](int i, int c, Tp s) { Xs[(r0 + i) * NT + c] -= s; });
      __syncthreads();
      // the 16 x 16 diagonal block, one column per thread in registers: x_i -= Lm_ji x_j for j = r1-1 down to i+1
      for (int c = threadIdx.x; c < nc; c += blockDim.x) {
        Tp x[kSolveBlock];
#pragma unroll
        for (int i = 0; i < kSolveBlock; ++i) x[i] = i < rb ? Xs[(r0 + i) * NT + c] : Tp(0);
#pragma unroll
        for (int j = kSolveBlock - 1; j > 0; --j)
#pragma unroll
          for (int i = 0; i < j; ++i)
            if (j < rb) x[i] -= X[(r0 + j) * ldc + r0 + i] * x[j];
#pragma unroll
        for (int i = 0; i < kSolveBlock - 1; ++i)
          if (i < rb - 1) Xs[(r0 + i) * NT + c] = x[i];
      }
      __syncthreads();
    }
    for (int e = threadIdx.x; e < L * nc; e += blockDim.x) {
      const int i = e / nc, col = cs0 + (e - i * nc);
      const Tp x = Xs[i * NT + (col - cs0)];
      if (col < K)
        dWt[int64_t(i) * K + col] = x;
      else
        dUt[int64_t(i) * V + (col - K)] = x;
    }
  }
  __syncthreads();

  // ---- phase 4
  // dK += (beta eg) ⊙ dWt, dV = beta ⊙ dUt
  batched_copy<Tp>(
      L * K,
      [&](int e) {
        const int i = e / K, kk = e - i * K;
        return dK[i * qs + kk] + bt[i] * eg[i] * dWt[int64_t(i) * K + kk];
      },
      [&](int e, Tp x) {
        const int i = e / K;
        dK[i * qs + (e - i * K)] = x;
      });
  batched_copy<Tp>(
      L * V, [&](int e) { return bt[e / V] * dUt[e]; },
      [&](int e, Tp x) {
        const int i = e / V;
        dv[d.value_row(b, t0 + i, hv) + (e - i * V)] = x;
      });
  // dbeta = eg ⊙ rowdot(K, dWt) + rowdot(V, dUt); dgam += beta eg ⊙ rowdot(K, dWt)
  for (int i = warp; i < L; i += nwarps) {
    Tp wk = 0, vu = 0;
    for (int kk = lane; kk < K; kk += 32) wk += Ks[i * ldk + kk] * dWt[int64_t(i) * K + kk];
    for (int cc = lane; cc < V; cc += 32) vu += Vc[i * vs + cc] * dUt[int64_t(i) * V + cc];
    wk = warp_sum(wk);
    vu = warp_sum(vu);
    if (lane == 0) {
      db[i] = eg[i] * wk + vu;
      dgam[i] += bt[i] * eg[i] * wk;
    }
  }
  // X = -(dWt W^T + dUt U^T) strictly below the diagonal (dl of the CPU), over inner tiles of [dWt | dUt], [W | U]
  Tp* At = R;                             // [C, 65]
  Tp* Bt = R + C * (kGradInner + 1);      // [C, 65]
  const int ldi = kGradInner + 1;
  for (int k0 = 0; k0 < K + V; k0 += kGradInner) {
    const int nk = min(kGradInner, K + V - k0);
    const bool first = k0 == 0, last = k0 + kGradInner >= K + V;
    __syncthreads();  // X (Lm) and the previous tile's readers are done
    batched_copy<Tp>(
        L * nk,
        [&](int e) {
          const int i = e / nk, col = k0 + (e - i * nk);
          return col < K ? dWt[int64_t(i) * K + col] : dUt[int64_t(i) * V + (col - K)];
        },
        [&](int e, Tp x) {
          const int i = e / nk;
          At[i * ldi + (e - i * nk)] = x;
        });
    batched_copy<Tp>(
        L * nk,
        [&](int e) {
          const int i = e / nk, col = k0 + (e - i * nk);
          return col < K ? W[int64_t(i) * K + col] : U[int64_t(i) * V + (col - K)];
        },
        [&](int e, Tp x) {
          const int i = e / nk;
          Bt[i * ldi + (e - i * nk)] = x;
        });
    __syncthreads();
    tile_mm<4, 4, Tp>(
        L, L, nk, [&](int i, int c) { return At[i * ldi + c]; }, [&](int c, int j) { return Bt[j * ldi + c]; },
        [&](int i, int j, Tp s) {
          Tp x = first ? s : X[i * ldc + j] + s;
          if (last) x = j < i ? -x : Tp(0);
          X[i * ldc + j] = x;
        });
  }
  __syncthreads();
  // With m_ij = dl_ij Lm_ij: dgam_j += sum_{j'<j} m_jj' then -= m_ij for i > j (the CPU's order);
  // dbeta_j += (dl_jj' Gam_jj') KK_jj'.
  for (int j = threadIdx.x; j < L; j += blockDim.x) {
    Tp dgi = 0, dbj = db[j];
    for (int jj = 0; jj < j; ++jj) {
      const Tp dl = X[j * ldc + jj];
      dgi += dl * (bt[j] * KK[j * ldc + jj] * Gam[j * ldc + jj]);
      dbj += dl * Gam[j * ldc + jj] * KK[j * ldc + jj];
    }
    Tp dgj = dgam[j] + dgi;
    for (int i = j + 1; i < L; ++i) dgj -= X[i * ldc + j] * (bt[i] * KK[i * ldc + j] * Gam[i * ldc + j]);
    dgam[j] = dgj;
    db[j] = dbj;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < L * L; e += blockDim.x) {
    const int i = e / L, j = e - i * L;
    X[i * ldc + j] *= Gam[i * ldc + j];  // Pm
  }
  __syncthreads();
  // dK += beta ⊙ (Pm K) + Pm^T (beta ⊙ K); both products give (i, kk) to the same thread.
  tile_mm<4, 4, Tp>(
      L, K, L, [&](int i, int j) { return X[i * ldc + j]; }, [&](int j, int kk) { return Ks[j * ldk + kk]; },
      [&](int i, int kk, Tp s) { dK[i * qs + kk] += bt[i] * s; });
  tile_mm_init<4, 4, Tp>(
      L, K, L, [&](int i, int kk) { return dK[i * qs + kk]; }, [&](int i, int j) { return X[j * ldc + i]; },
      [&](int j, int kk) { return bt[j] * Ks[j * ldk + kk]; }, [&](int i, int kk, Tp s) { dK[i * qs + kk] = s; });
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

}  // namespace gdn::cuda::delta_rule_tiled
