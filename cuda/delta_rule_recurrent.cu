// cuda/delta_rule_recurrent.cu — the gated delta rule token by token on CUDA (forward and backward), float32 and
// float64; the CPU twin is ops/cpu/delta_rule_recurrent_cpu.cpp.
//
// Shapes: q, k [B,T,Hk,K]; v, o [B,T,Hv,V]; g, beta [B,T,Hv]; states [B,Hv,K,V]; value head hv reads key head
// hv / (Hv/Hk). Per (batch, value head), state S [K,V] from S0 (0 when absent):
//   S' = exp(g_t) S;  e = v_t - S'^T k_t;  u = beta_t e;  S = S' + k_t u^T;  o_t = S^T (scale q_t)
// Backward, t = T-1 .. 0, dS = dS_T (0 if absent):
//   dS += scale q do^T;  du = dS^T k;  de = beta du;  dv = de;  dbeta = e . du;
//   dq = scale (S' do + k (u . do));  dk = dS u - S' de;  dS' = dS - k de^T;  dg = <S', dS'>;  dS = exp(g) dS'.
//
// Parallel decomposition. Every column j of S evolves on its own (e_j, u_j, o_j only read column j), so a warp owns
// CW = 32/KS columns of one (b, hv): lane = c*KS + ks holds rows i = ks + KS*r (r < R) of column c in registers
// (KS*R >= K, rows >= K stay 0). Sums over rows (S'^T k, S^T q, dS^T k) are butterfly shuffles over the KS lanes of a
// column; CW consecutive columns of one row are one 32-byte sector (forward float: KS=4, double: KS=8) when states
// are loaded and stored. A block is nw warps = VB = nw*CW consecutive columns; grid (B*Hv, ceil(V/VB)).
// The block stages the inputs of up to kStage time steps in shared memory (k, scale*q [kStage][KP], v, do
// [kStage][VB], exp(g), beta [kStage]) with coalesced loads between two __syncthreads; warps never exit early, so
// every thread reaches every barrier (columns >= V compute on zeros and store nothing).
//
// Backward states (no inverse steps, as on the CPU): one forward sweep stores the state before every C-th token
// (C = ceil(sqrt(T)), checkpoints), then segment by segment from the last, the states S_{t-1} of the segment are
// recomputed from its checkpoint and kept, then the segment is walked backwards. Both live in global scratch in a
// thread-private layout ([slot][step][r][lane], coalesced, read back only by the thread that wrote them):
// (ceil(T/C) + C) * B*Hv*KP*Vpad values, Vpad = V rounded up to VB.
//
// Determinism: dv and dS0 have one writer per element. dq, dk (sums over value columns), dg and dbeta are summed in a
// fixed order: shuffles over the CW columns of a warp, then the nw warps of the block in warp order through
// shared memory (double-buffered by step parity: one barrier per step) into per-block-tile partials
// [B,T,Hv,NT,K] and [B,T,Hv,NT] in scratch; a second pass sums the NT tiles (and the Hv/Hk value heads of a key head,
// in head order) per output element. No atomics: two runs give identical bits.
//
// Differences from the CPU twin: only summation order (row sums by a shuffle tree instead of i = 0..K-1; dq, dk
// as column tiles then tiles; scale applied to the total dq), and exp(g) from the device's exp.
// Limits: K <= 256 (registers); any V, any Hv multiple of Hk.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "cuda/cuda_kernels.h"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

constexpr int kStage = 8;         // time steps staged in shared memory per load
constexpr int kMaxFwdWarps = 4;   // warps per forward block
constexpr int kMaxBwdWarps = 8;   // warps per backward block
constexpr int kMaxK = 256;

struct Dims {
  int64_t B, T, Hk, Hv, K, V;
  int kp;      // KS*R: padded rows of the staged k and q
  int vb;      // columns per block
  int nt;      // column tiles (blocks) per (b, hv)
  int nw;      // warps per block
  int stage;   // time steps per staged load (<= kStage)
};

// Sum over the KS lanes of a column (lanes c*KS .. c*KS+KS-1); every lane gets the same bits.
template <int KS, typename T> __device__ inline T sum_rows(T v) {
#pragma unroll
  for (int off = KS / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the CW columns of a warp (lanes ks, ks+KS, ...); every lane gets the same bits.
template <int KS, typename T> __device__ inline T sum_cols(T v) {
#pragma unroll
  for (int off = 16; off >= KS; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Shared-memory staging of time steps [t0, t0+n) of one (b, hv) and the block's columns [jb, jb+vb):
// sk, sq [stage][kp] (scale*q, zero rows >= K), sv, sdo [stage][vb] (zero columns >= V), sd = exp(g), sb = beta.
template <typename T> struct Stage {
  T *sk, *sq, *sv, *sdo, *sd, *sb;

  __device__ Stage(T* base, const Dims& d, bool with_do) {
    sk = base;
    sq = sk + d.stage * d.kp;
    sv = sq + d.stage * d.kp;
    sdo = sv + d.stage * d.vb;
    sd = sdo + (with_do ? d.stage * d.vb : 0);
    sb = sd + d.stage;
  }

  // Every thread of the block must call it (two barriers). q and do are loaded when given.
  __device__ void load(const Dims& d, int64_t b, int64_t hv, int64_t jb, int64_t t0, int n, const T* k, const T* q,
                       T scale, const T* v, const T* dout, const T* g, const T* beta) {
    __syncthreads();  // the previous stage may still be read
    const int tid = threadIdx.x, nth = blockDim.x;
    const int64_t hk = hv / (d.Hv / d.Hk);
    for (int idx = tid; idx < n * d.kp; idx += nth) {
      const int s = idx / d.kp, i = idx % d.kp;
      const int64_t row = ((b * d.T + t0 + s) * d.Hk + hk) * d.K;
      sk[idx] = i < d.K ? k[row + i] : T(0);
      if (q) sq[idx] = i < d.K ? scale * q[row + i] : T(0);
    }
    for (int idx = tid; idx < n * d.vb; idx += nth) {
      const int s = idx / d.vb, jj = idx % d.vb;
      const int64_t col = jb + jj;
      const int64_t row = ((b * d.T + t0 + s) * d.Hv + hv) * d.V;
      sv[idx] = col < d.V ? v[row + col] : T(0);
      if (dout) sdo[idx] = col < d.V ? dout[row + col] : T(0);
    }
    for (int idx = tid; idx < n; idx += nth) {
      const int64_t gi = (b * d.T + t0 + idx) * d.Hv + hv;
      sd[idx] = exp(g[gi]);
      sb[idx] = beta[gi];
    }
    __syncthreads();
  }
};

// One forward step of a thread's rows of column c: S = exp(g) S; u = beta (v - S^T k); S += k u. Returns nothing;
// the caller reads S.
template <int KS, int R, typename T>
__device__ inline void forward_step(T (&S)[R], const T* kt, T decay, T bt, T vj, int ks) {
  T acc = T(0);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    S[r] *= decay;
    acc += kt[ks + KS * r] * S[r];
  }
  const T u = bt * (vj - sum_rows<KS>(acc));
#pragma unroll
  for (int r = 0; r < R; ++r) S[r] += kt[ks + KS * r] * u;
}

template <typename T> struct FwdArgs {
  T* o;
  T* final_state;  // may be null
  const T *q, *k, *v, *g, *beta;
  const T* s0;     // may be null
  T scale;
  Dims d;
};

template <typename T, int KS, int R>
__global__ void __launch_bounds__(kMaxFwdWarps * 32) recurrent_forward_kernel(FwdArgs<T> a) {
  pdl_enter();
  constexpr int CW = 32 / KS;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const Dims& d = a.d;
  Stage<T> st(reinterpret_cast<T*>(smem_raw), d, false);
  const int64_t bh = blockIdx.x, b = bh / d.Hv, hv = bh % d.Hv;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, c = lane / KS, ks = lane % KS;
  const int64_t jb = int64_t(blockIdx.y) * d.vb;
  const int jl = warp * CW + c;  // column inside the block
  const int64_t j = jb + jl;
  const bool active = j < d.V;
  const int64_t soff = bh * d.K * d.V;

  T S[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = ks + KS * r;
    S[r] = (a.s0 && active && i < d.K) ? a.s0[soff + i * d.V + j] : T(0);
  }
  for (int64_t t0 = 0; t0 < d.T; t0 += d.stage) {
    const int n = static_cast<int>(std::min<int64_t>(d.stage, d.T - t0));
    st.load(d, b, hv, jb, t0, n, a.k, a.q, a.scale, a.v, nullptr, a.g, a.beta);
    for (int s = 0; s < n; ++s) {
      const T* kt = st.sk + s * d.kp;
      const T* qt = st.sq + s * d.kp;
      forward_step<KS, R>(S, kt, st.sd[s], st.sb[s], st.sv[s * d.vb + jl], ks);
      T oa = T(0);  // o = S^T (scale q)
#pragma unroll
      for (int r = 0; r < R; ++r) oa += qt[ks + KS * r] * S[r];
      oa = sum_rows<KS>(oa);
      if (active && ks == 0) a.o[((b * d.T + t0 + s) * d.Hv + hv) * d.V + j] = oa;
    }
  }
  if (a.final_state && active) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = ks + KS * r;
      if (i < d.K) a.final_state[soff + i * d.V + j] = S[r];
    }
  }
}

template <typename T> struct BwdArgs {
  T* dv;
  T* dinit;              // may be null
  T *dq_part, *dk_part;  // [B,T,Hv,NT,K]
  T *dg_part, *db_part;  // [B,T,Hv,NT]
  T *ckpt, *seg;         // thread-private state scratch
  const T* dout;
  const T* dfinal;       // may be null
  const T *q, *k, *v, *g, *beta;
  const T* s0;           // may be null
  T scale;
  Dims d;
  int64_t C, nseg;       // segment length and count
};

template <typename T, int KS, int R>
__global__ void __launch_bounds__(kMaxBwdWarps * 32) recurrent_backward_kernel(BwdArgs<T> a) {
  pdl_enter();
  constexpr int CW = 32 / KS;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const Dims& d = a.d;
  Stage<T> st(reinterpret_cast<T*>(smem_raw), d, true);
  // Reduction buffers after the stage: rq, rk [2][nw][kp], rs [2][nw][2].
  T* rq = st.sb + d.stage;
  T* rk = rq + 2 * d.nw * d.kp;
  T* rs = rk + 2 * d.nw * d.kp;

  const int64_t bh = blockIdx.x, b = bh / d.Hv, hv = bh % d.Hv;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, c = lane / KS, ks = lane % KS;
  const int64_t tile = blockIdx.y, jb = tile * d.vb;
  const int jl = warp * CW + c;
  const int64_t j = jb + jl;
  const bool active = j < d.V;
  const int64_t soff = bh * d.K * d.V;
  const int64_t slot = (bh * d.nt + tile) * d.nw + warp;
  // Thread-private scratch: state number n of this thread, element r.
  auto ckpt_at = [&](int64_t n, int r) { return ((slot * a.nseg + n) * R + r) * 32 + lane; };
  auto seg_at = [&](int64_t n, int r) { return ((slot * a.C + n) * R + r) * 32 + lane; };

  // Forward sweep: checkpoints (the state before tokens 0, C, 2C, ...).
  T S[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = ks + KS * r;
    S[r] = (a.s0 && active && i < d.K) ? a.s0[soff + i * d.V + j] : T(0);
  }
  for (int64_t t0 = 0; t0 < d.T; t0 += d.stage) {
    const int n = static_cast<int>(std::min<int64_t>(d.stage, d.T - t0));
    st.load(d, b, hv, jb, t0, n, a.k, nullptr, T(0), a.v, nullptr, a.g, a.beta);
    for (int s = 0; s < n; ++s) {
      const int64_t t = t0 + s;
      if (t % a.C == 0) {
#pragma unroll
        for (int r = 0; r < R; ++r) a.ckpt[ckpt_at(t / a.C, r)] = S[r];
      }
      forward_step<KS, R>(S, st.sk + s * d.kp, st.sd[s], st.sb[s], st.sv[s * d.vb + jl], ks);
    }
  }

  T dS[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = ks + KS * r;
    dS[r] = (a.dfinal && active && i < d.K) ? a.dfinal[soff + i * d.V + j] : T(0);
  }
  int buf = 0;
  for (int64_t sg = a.nseg - 1; sg >= 0; --sg) {
    const int64_t ts = sg * a.C, te = std::min(d.T, ts + a.C);
    // Recompute the segment: seg[t - ts] = S_{t-1}.
#pragma unroll
    for (int r = 0; r < R; ++r) S[r] = a.ckpt[ckpt_at(sg, r)];
    for (int64_t t0 = ts; t0 < te; t0 += d.stage) {
      const int n = static_cast<int>(std::min<int64_t>(d.stage, te - t0));
      st.load(d, b, hv, jb, t0, n, a.k, nullptr, T(0), a.v, nullptr, a.g, a.beta);
      for (int s = 0; s < n; ++s) {
#pragma unroll
        for (int r = 0; r < R; ++r) a.seg[seg_at(t0 + s - ts, r)] = S[r];
        forward_step<KS, R>(S, st.sk + s * d.kp, st.sd[s], st.sb[s], st.sv[s * d.vb + jl], ks);
      }
    }
    // Walk the segment backwards, staged from its end.
    for (int64_t t1 = te; t1 > ts; t1 -= d.stage) {
      const int64_t t0 = std::max(ts, t1 - d.stage);
      const int n = static_cast<int>(t1 - t0);
      st.load(d, b, hv, jb, t0, n, a.k, a.q, a.scale, a.v, a.dout, a.g, a.beta);
      for (int s = n - 1; s >= 0; --s) {
        const int64_t t = t0 + s;
        const T* kt = st.sk + s * d.kp;
        const T* qt = st.sq + s * d.kp;  // scale q
        const T decay = st.sd[s], bt = st.sb[s];
        const T vj = st.sv[s * d.vb + jl], doj = st.sdo[s * d.vb + jl];
        T Sp[R];  // S' = exp(g) S_{t-1}
        T acc = T(0);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          Sp[r] = a.seg[seg_at(t - ts, r)] * decay;
          acc += kt[ks + KS * r] * Sp[r];
        }
        const T e = vj - sum_rows<KS>(acc), u = bt * e;
        T dua = T(0);  // dS += scale q do^T; du = dS^T k
#pragma unroll
        for (int r = 0; r < R; ++r) {
          dS[r] += qt[ks + KS * r] * doj;
          dua += kt[ks + KS * r] * dS[r];
        }
        const T du = sum_rows<KS>(dua), de = bt * du;
        if (active && ks == 0) a.dv[((b * d.T + t) * d.Hv + hv) * d.V + j] = de;
        const T udo = u * doj;
        T dga = T(0);
        T* rqb = rq + (buf * d.nw + warp) * d.kp;
        T* rkb = rk + (buf * d.nw + warp) * d.kp;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const T ki = kt[ks + KS * r];
          const T xq = sum_cols<KS>(Sp[r] * doj + ki * udo);   // (S' do + k (u . do)) over the warp's columns
          const T xk = sum_cols<KS>(dS[r] * u - Sp[r] * de);   // (dS u - S' de) over the warp's columns
          if (c == 0) {
            rqb[ks + KS * r] = xq;
            rkb[ks + KS * r] = xk;
          }
          dS[r] -= ki * de;  // dS' = dS - k de^T; dg = <S', dS'>; dS = exp(g) dS'
          dga += Sp[r] * dS[r];
          dS[r] *= decay;
        }
        const T dgw = warp_sum(dga);
        const T dbw = warp_sum(ks == 0 ? e * du : T(0));
        if (lane == 0) {
          rs[(buf * d.nw + warp) * 2] = dgw;
          rs[(buf * d.nw + warp) * 2 + 1] = dbw;
        }
        __syncthreads();
        const int64_t row = (b * d.T + t) * d.Hv + hv;
        for (int idx = tid; idx < 2 * d.K + 2; idx += blockDim.x) {
          if (idx < 2 * d.K) {
            const T* src = (idx < d.K ? rq : rk) + buf * d.nw * d.kp;
            const int i = idx < d.K ? idx : idx - static_cast<int>(d.K);
            T sum = T(0);
            for (int w = 0; w < d.nw; ++w) sum += src[w * d.kp + i];
            (idx < d.K ? a.dq_part : a.dk_part)[(row * d.nt + tile) * d.K + i] = sum;
          } else {
            const int which = idx - 2 * static_cast<int>(d.K);
            T sum = T(0);
            for (int w = 0; w < d.nw; ++w) sum += rs[(buf * d.nw + w) * 2 + which];
            (which == 0 ? a.dg_part : a.db_part)[row * d.nt + tile] = sum;
          }
        }
        buf ^= 1;
      }
    }
  }
  if (a.dinit && active) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = ks + KS * r;
      if (i < d.K) a.dinit[soff + i * d.V + j] = dS[r];
    }
  }
}

// dq, dk [B,T,Hk,K] = sums over the G = Hv/Hk value heads (in head order) and the NT column tiles (in tile order) of
// the partials [B,T,Hv,NT,K]; dq gets the scale.
template <typename T>
__global__ void key_grad_reduce_kernel(T* dq, T* dk, const T* dq_part, const T* dk_part, T scale, int64_t n,
                                       int64_t Hk, int64_t G, int64_t nt, int64_t K) {
  pdl_enter();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t i = idx % K, rest = idx / K, hk = rest % Hk, bt = rest / Hk;
    T sq = T(0), sk = T(0);
    for (int64_t gg = 0; gg < G; ++gg) {
      const int64_t base = ((bt * Hk * G + hk * G + gg) * nt) * K + i;
      for (int64_t tile = 0; tile < nt; ++tile) {
        sq += dq_part[base + tile * K];
        sk += dk_part[base + tile * K];
      }
    }
    dq[idx] = scale * sq;
    dk[idx] = sk;
  }
}

// dg, dbeta [B,T,Hv] = sums of the partials [B,T,Hv,NT] in tile order.
template <typename T>
__global__ void gate_grad_reduce_kernel(T* dg, T* dbeta, const T* dg_part, const T* db_part, int64_t n, int64_t nt) {
  pdl_enter();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(blockDim.x) * gridDim.x) {
    T sg = T(0), sb = T(0);
    for (int64_t tile = 0; tile < nt; ++tile) {
      sg += dg_part[idx * nt + tile];
      sb += db_part[idx * nt + tile];
    }
    dg[idx] = sg;
    dbeta[idx] = sb;
  }
}

template <int N> using Int = std::integral_constant<int, N>;

// The register layout (KS lanes per column, R rows per lane, KS*R >= K) for K: f(Int<KS>, Int<R>).
// Forward float32 uses KS = 4 (8 columns = one 32-byte sector per row); everything else KS >= 8 (float64: 4 columns
// = 32 bytes), and KS = 16 past K = 128 to keep 2R state registers per thread in the backward.
template <typename T, bool kForward, typename F> void with_layout(int64_t K, F&& f) {
  constexpr bool wide = kForward && sizeof(T) == 4;
  if (K <= 64) {
    if constexpr (wide) f(Int<4>{}, Int<16>{}); else f(Int<8>{}, Int<8>{});
  } else if (K <= 128) {
    if constexpr (wide) f(Int<4>{}, Int<32>{}); else f(Int<8>{}, Int<16>{});
  } else {
    if constexpr (wide) f(Int<8>{}, Int<32>{}); else f(Int<16>{}, Int<16>{});
  }
}

Dims make_dims(const Tensor& q, const Tensor& v, int ks, int r, int max_warps) {
  Dims d{q.size(0), q.size(1), q.size(2), v.size(2), q.size(3), v.size(3), ks * r, 0, 0, 0, 0};
  const int cw = 32 / ks;
  d.nw = static_cast<int>(std::clamp<int64_t>((d.V + cw - 1) / cw, 1, max_warps));
  d.vb = d.nw * cw;
  d.nt = static_cast<int>((d.V + d.vb - 1) / d.vb);
  d.stage = static_cast<int>(std::clamp<int64_t>(d.T, 1, kStage));
  return d;
}

void check_args(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                const Tensor& beta, const Tensor& state) {
  GDN_CHECK(q.dim() == 4 && k.shape() == q.shape() && v.dim() == 4, "{}: q, k must be [B,T,Hk,K], v [B,T,Hv,V]",
            op);
  const int64_t B = q.size(0), T = q.size(1), Hk = q.size(2), K = q.size(3), Hv = v.size(2), V = v.size(3);
  GDN_CHECK(v.size(0) == B && v.size(1) == T && Hk >= 1 && Hv % Hk == 0,
            "{}: v must be [B,T,Hv,V] with Hv a multiple of Hk={}, got {}", op, Hk, shape_str(v.shape()));
  GDN_CHECK(g.shape() == Shape({B, T, Hv}) && beta.shape() == Shape({B, T, Hv}), "{}: g, beta must be [B,T,Hv]",
            op);
  GDN_CHECK(!state.defined() || state.shape() == Shape({B, Hv, K, V}), "{}: states must be [B,Hv,K,V]", op);
  GDN_CHECK(K <= kMaxK, "{}: the CUDA kernel supports K <= {}, got K={}", op, kMaxK, K);
  for (const Tensor* t : {&q, &k, &v, &g, &beta, &state})
    if (t->defined()) {
      GDN_CHECK(t->is_contiguous(), "{}: inputs must be contiguous", op);
      GDN_CHECK(t->dtype() == q.dtype() && t->device() == q.device(), "{}: inputs must share q's dtype and device",
                op);
    }
}

template <typename T> T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

void gated_delta_rule_recurrent_forward(const Tensor& o, const Tensor& final_state, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& g, const Tensor& beta,
                                        const Tensor& initial_state, double scale) {
  constexpr const char* op = "cuda gated_delta_rule_recurrent_forward";
  check_args(op, q, k, v, g, beta, initial_state);
  GDN_CHECK(o.shape() == v.shape() && o.is_contiguous(), "{}: o must be contiguous [B,T,Hv,V]", op);
  GDN_CHECK(!final_state.defined() || (final_state.is_contiguous() && final_state.numel() == v.size(0) * v.size(2) *
                                                                                           q.size(3) * v.size(3)),
            "{}: final_state must be contiguous [B,Hv,K,V]", op);
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    with_layout<T, true>(q.size(3), [&](auto ks_c, auto r_c) {
      constexpr int KS = decltype(ks_c)::value, R = decltype(r_c)::value;
      const Dims d = make_dims(q, v, KS, R, kMaxFwdWarps);
      if (d.B * d.Hv == 0 || d.V == 0) return;
      FwdArgs<T> a{o.data<T>(), ptr_or_null<T>(final_state), q.data<T>(), k.data<T>(), v.data<T>(), g.data<T>(),
                   beta.data<T>(), ptr_or_null<T>(initial_state), static_cast<T>(scale), d};
      const size_t smem = sizeof(T) * (2 * size_t(d.stage) * d.kp + size_t(d.stage) * d.vb + 2 * size_t(d.stage));
      const dim3 grid(static_cast<unsigned>(d.B * d.Hv), static_cast<unsigned>(d.nt));
      launch(recurrent_forward_kernel<T, KS, R>, grid, d.nw * 32, smem, a);
    });
  });
}

void gated_delta_rule_recurrent_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dg,
                                         const Tensor& dbeta, const Tensor& dinitial_state, const Tensor& do_,
                                         const Tensor& dfinal_state, const Tensor& q, const Tensor& k,
                                         const Tensor& v, const Tensor& g, const Tensor& beta,
                                         const Tensor& initial_state, double scale) {
  constexpr const char* op = "cuda gated_delta_rule_recurrent_backward";
  check_args(op, q, k, v, g, beta, initial_state);
  check_args(op, q, k, do_, g, beta, dfinal_state);
  GDN_CHECK(do_.shape() == v.shape(), "{}: do must be [B,T,Hv,V]", op);
  GDN_CHECK(dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == v.shape() &&
                dg.shape() == g.shape() && dbeta.shape() == beta.shape(),
            "{}: gradients must have their inputs' shapes", op);
  for (const Tensor* t : {&dq, &dk, &dv, &dg, &dbeta, &dinitial_state})
    if (t->defined())
      GDN_CHECK(t->is_contiguous() && t->dtype() == q.dtype() && t->device() == q.device(),
                "{}: gradients must be contiguous, with q's dtype and device", op);
  GDN_CHECK(!dinitial_state.defined() || dinitial_state.numel() == v.size(0) * v.size(2) * q.size(3) * v.size(3),
            "{}: dinitial_state must be [B,Hv,K,V]", op);
  const Device dev = q.device();
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    with_layout<T, false>(q.size(3), [&](auto ks_c, auto r_c) {
      constexpr int KS = decltype(ks_c)::value, R = decltype(r_c)::value;
      const Dims d = make_dims(q, v, KS, R, kMaxBwdWarps);
      const int64_t C = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(d.T)))));
      const int64_t nseg = (d.T + C - 1) / C;
      const int64_t rows = d.B * d.T * d.Hv * d.nt;
      Tensor dq_part = Tensor::empty({rows * d.K}, q.dtype(), dev), dk_part = Tensor::empty({rows * d.K}, q.dtype(), dev);
      Tensor dg_part = Tensor::empty({rows}, q.dtype(), dev), db_part = Tensor::empty({rows}, q.dtype(), dev);
      if (d.B * d.Hv > 0 && d.nt > 0) {
        const int64_t slots = d.B * d.Hv * d.nt * d.nw;
        Tensor ckpt = Tensor::empty({slots * nseg * R * 32}, q.dtype(), dev);
        Tensor seg = Tensor::empty({slots * C * R * 32}, q.dtype(), dev);
        BwdArgs<T> a{dv.data<T>(), ptr_or_null<T>(dinitial_state), dq_part.data<T>(), dk_part.data<T>(),
                     dg_part.data<T>(), db_part.data<T>(), ckpt.data<T>(), seg.data<T>(), do_.data<T>(),
                     ptr_or_null<T>(dfinal_state), q.data<T>(), k.data<T>(), v.data<T>(), g.data<T>(),
                     beta.data<T>(), ptr_or_null<T>(initial_state), static_cast<T>(scale), d, C, nseg};
        const size_t smem = sizeof(T) * (2 * size_t(d.stage) * d.kp + 2 * size_t(d.stage) * d.vb +
                                         2 * size_t(d.stage) + 2 * size_t(d.nw) * (2 * d.kp + 2));
        auto kernel = recurrent_backward_kernel<T, KS, R>;
        if (smem > 48 * 1024)
          CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
        const dim3 grid(static_cast<unsigned>(d.B * d.Hv), static_cast<unsigned>(d.nt));
        launch(kernel, grid, d.nw * 32, smem, a);
      }
      const int64_t nk = d.B * d.T * d.Hk * d.K;
      if (nk > 0) {
        launch(key_grad_reduce_kernel<T>, grid_for(nk), kThreads, 0, dq.data<T>(), dk.data<T>(), dq_part.data<T>(),
               dk_part.data<T>(), static_cast<T>(scale), nk, d.Hk, d.Hv / d.Hk, d.nt, d.K);
      }
      const int64_t ng = d.B * d.T * d.Hv;
      if (ng > 0) {
        launch(gate_grad_reduce_kernel<T>, grid_for(ng), kThreads, 0, dg.data<T>(), dbeta.data<T>(), dg_part.data<T>(),
               db_part.data<T>(), ng, d.nt);
      }
    });
  });
}

}  // namespace

void register_delta_rule_recurrent_kernels(KernelTable& t) {
  t.gated_delta_rule_recurrent_forward = gated_delta_rule_recurrent_forward;
  t.gated_delta_rule_recurrent_backward = gated_delta_rule_recurrent_backward;
}

}  // namespace gdn::cuda
