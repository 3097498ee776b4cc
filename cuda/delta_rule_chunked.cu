// cuda/delta_rule_chunked.cu — the gated delta rule in chunked WY (UT) form on CUDA: forward and backward.
//
// Twin of ops/cpu/delta_rule_chunked_cpu.cpp (the truth). Shapes: q, k [B,T,Hk,K]; v, o, do [B,T,Hv,V];
// g, beta [B,T,Hv]; states [B,Hv,K,V]; chunk_states [B,Hv,NC,K,V] (NC = ceil(T/C), the state at the start of every
// chunk). Value head hv reads key head hv / (Hv/Hk). Per (batch, value head) the sequence is cut into chunks of C
// rows; the tail chunk has L = T - t0 < C rows and every kernel works on its L valid rows only (no padded row exists,
// so none can change a result). For one chunk with rows Q, K [L,K], V [L,V], gates g, beta [L], start state H [K,V]:
//   gam = inclusive cumsum of g (double), eg = e^gam, r = e^(gam_L - gam), Gam_ij = prod_{m=j+1..i} e^(g_m) (i >= j,
//   0 above: built by a running product in double, the upper triangle is never exponentiated, strong decay
//   underflows to exactly 0), Lm = strictly_lower(diag(beta) (K K^T ⊙ Gam)), A = (I + Lm)^-1 (never formed):
//   W = A diag(beta eg) K,  U = A diag(beta) V,  P = (Q K^T) ⊙ Gam (lower with diagonal),  Vn = U - W H
//   O = scale (diag(eg) Q H + P Vn),  H_next = eg_L H + K^T diag(r) Vn
// Backward, with dH the gradient of the state at the chunk end (dS_T for the last chunk):
//   dVn = scale P^T dO + diag(r) K dH,   dH_start = eg_L dH + scale Q^T diag(eg) dO - W^T dVn
//   dQK = (scale dO Vn^T) ⊙ Gam,  dQ = scale diag(eg) dO H^T + dQK K,  dK = diag(r) Vn dH^T + dQK^T Q
//   dWt = A^T (-dVn H^T), dUt = A^T dVn (backward substitution), dK += diag(beta eg) dWt, dV = diag(beta) dUt,
//   dbeta = eg ⊙ rowdot(K, dWt) + rowdot(V, dUt), dL = -strictly_lower(dWt W^T + dUt U^T), Pm = dL ⊙ Gam,
//   dbeta += rowsum(Pm ⊙ K K^T), dK += diag(beta) Pm K + Pm^T diag(beta) K,
//   dgam collects every place gam appears (P, dQ's eg, dK's r, eg_L, W's eg, Lm), dg = reverse cumsum of dgam.
//
// Parallel decomposition (256 threads per block; most chunk-parallel kernels of the tiled and split paths take
// kParThreads, see cuda/delta_rule_chunked_tiled.cuh):
//   prepare_chunk_kernel   grid (NC, Hv, B): gates, Gam, Lm in shared memory (see below); writes W [B,Hv,T,K],
//                          U [B,Hv,T,V], P [B,Hv,NC,C,C], eg, r [B,Hv,T] to scratch. W and U by forward
//                          substitution, one column per thread (K + V independent columns). The forward runs it
//                          and hands its scratch to the backward through the op (`saved`); a backward without it
//                          runs it again.
//   forward_state_kernel   grid (ceil(V/32), Hv, B): H [K,32] in shared memory, sequential over chunks: stores
//                          chunk_states, Vn = U - W H, O, H_next; final_state at the end.
//   backward_state_kernel  grid (ceil(V/32), Hv, B): dH [K,32] in shared memory, chunks last to first: stores
//                          dH_end [B,Hv,NC,K,V], Vn and dVn [B,Hv,T,V], then dH_start; dinitial_state at the end.
//   chunk_grad_kernel      grid (NC, Hv, B): everything else of the backward for one chunk with full K and V;
//                          Gam, K K^T and one work matrix (dP, dQK, dL, Pm in turn) in shared memory (below); dWt, dUt
//                          through scratch [B,Hv,T,K] / [B,Hv,T,V] (backward substitution, one column per thread).
//   key_head_sum_kernel    when Hv > Hk: dq, dk of key head hk = sum over its value heads j = 0..G-1 in order, from
//                          per-value-head rows [B,Hv,T,K] (the CPU's KeyGradRows); else the rows go straight out.
// Tiled path (cuda/delta_rule_chunked_tiled.cuh, cuda/delta_rule_chunked_grad.cuh): where its shared memory fits
// (C = 64: prepare and state kernels up to K = 128 in float64; chunk_grad_tiled_kernel up to K = V = 128 in float32,
// K = V = 64 in float64), the kernels run as prepare_tiled_kernel / *_state_tiled_kernel / chunk_grad_tiled_kernel
// instead: chunk operands staged in shared memory, block-wide register-tiled products, blocked triangular solves in
// shared memory, and state kernels on V-tiles of vt = 32, 16 or 8 columns (narrower while the grid would not cover
// the SMs; "wide" when Q and K get tiles of their own without fewer resident blocks per SM, so that a chunk step
// loads all its operands at once).
// Split path (cuda/delta_rule_chunked_split.cuh), the default where its shared memory fits and NC > 0: only the state
// recurrence is sequential. Forward: prepare_tiled_kernel, forward_recur_kernel (Vn = U - W H and H_next per chunk;
// stores chunk_states, a scratch when the caller passes none, and Vn [B,Hv,T,V]), chunk_output_kernel (O for every
// chunk in parallel). Backward: prepare_tiled_kernel, backward_pre_kernel (Vn, scale P^T dO into the dVn scratch and
// Q^T (scale eg ⊙ dO) into the dH_end scratch, every chunk in parallel), backward_recur_kernel (dVn and dH_start per
// chunk from those, overwriting them with dVn and dH_end), then chunk_grad_tiled_kernel. The fused *_state_tiled
// kernels run where the split kernels do not fit,
// and everywhere under GDN_DR_SPLIT=0.
// Tensor-core path (cuda/delta_rule_chunked_mma*.cuh), for float32 tensors when gdn::matmul_precision() is
// BFloat16, K and V multiples of 16 and every kernel's shared memory fits (checked on the host once per call,
// cuda/delta_rule_chunked_mma_host.cuh; the backward unless GDN_DR_BACKWARD=float32,
// delta_rule_chunked_backward_takes_tensor_cores in cuda/delta_rule_chunked_path.h): forward prepare_mma_kernel
// (prepare_cols_kernel at C = 64, K = V = 128: cuda/delta_rule_chunked_mma_cols.cuh, the same bits),
// forward_recur_mma_kernel, chunk_output_mma_kernel; backward (prepare_mma_kernel unless the forward's scratch is
// handed over; then Vn is the forward's too), backward_pre_mma_kernel, backward_recur_mma_kernel,
// chunk_grad_mma_kernel. At the fixed shapes the two recurrences are forward_recur_reg_kernel and
// backward_recur_reg_kernel instead (cuda/delta_rule_chunked_mma_regs.cuh: the state in registers, the same
// arithmetic), and the forward's recurrence makes the output too (forward_recur_out_kernel: O from each chunk's
// state while it is in registers, with Q and P in bf16 from prepare; no chunk_output_mma_kernel, and a forward with no
// backward stores no chunk states; GDN_DR_FUSED_OUTPUT=0 runs forward_recur_reg_kernel and chunk_output_mma_kernel
// there instead). Their tile products (K K^T, Q K^T, W H, K^T Vn, Q H, P Vn, P^T dO, Q^T dO, K dH, W^T dVn and the
// products of the chunk gradient) are bfloat16 wmma / mma.sync with float32 accumulation; the gates, Gam, Lm, both
// triangular solves, the states H and dH and every epilogue stay float32 (the cumsums double; at the fixed shapes the
// gates come from chunk_gates_scan, Gam_ij = e^(gam_i - gam_j) in float32 from the double cumsum instead of the
// running product; the chunk gradient reads dH_end as the bf16 its products take, also for its sum(H ⊙ dH)).
// float64 tensors and Precision::Float32 run the kernels below, unchanged. delta_rule_chunked_last_paths()
// (cuda/delta_rule_chunked_path.h) records which path the last forward and backward ran.
// The untiled kernels above live in cuda/delta_rule_chunked_untiled.cuh. GDN_DR_UNTILED=1 selects them (and turns the
// tensor-core path off). The untiled chunk_grad_kernel does its products with the same
// tile_mm (operands read through L1) and its transposed solve as blocked backward substitution (16-row blocks from
// the bottom).
// Every output element is written by one thread with a fixed loop order, row sums are sequential per thread or
// block_sum: no atomics, two runs give identical bits. Matrices are in the input type (fp32 accumulates in fp32 as
// Eigen does on the CPU), gate cumsums and decays in double as on the CPU. The summation order inside each dot
// product is sequential over the inner index, which differs from Eigen's blocked GEMMs only by rounding.
//
// Shared memory (C here is min(chunk_size, T)): prepare 2 C^2 + 3 C, chunk_grad 3 C^2 + 6 C + 32 elements, plus 2 C
// doubles; C = 64, float64: 66 KB and 100 KB. Where the [C,C] matrices do not fit the device's opt-in limit (C > 97
// in float64, C > 137 in float32 on an H100) they live in a global scratch [B,Hv,NC,2 or 3,C,C] instead, with the
// same code. The state kernels hold (K + C) x 32 elements (48 KB for K = 128, C = 64, float64).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/precision.h"
#include "cuda/cuda_kernels.h"
#include "cuda/delta_rule_chunked_grad.cuh"
#include "cuda/delta_rule_chunked_launch.cuh"
#include "cuda/delta_rule_chunked_mma_host.cuh"
#include "cuda/delta_rule_chunked_path.h"
#include "cuda/delta_rule_chunked_split.cuh"
#include "cuda/delta_rule_chunked_tiled.cuh"
#include "cuda/delta_rule_chunked_untiled.cuh"
#include "cuda/launch.h"

namespace gdn::cuda {

namespace {

DeltaRuleChunkedPaths g_paths;  // what the last calls ran (cuda/delta_rule_chunked_path.h)
constexpr const char* kPathMma = "bf16 tensor cores";

using delta_rule_tiled::Dims;
using namespace delta_rule_tiled;
using namespace delta_rule_untiled;

// Step 6 (Hv > Hk): out [B,T,Hk,K] = sum over j = 0..G-1 of rows [B,Hv,T,K] of value head hk G + j.
template <typename Tp>
__global__ void key_head_sum_kernel(Dims d, Tp* __restrict__ out, const Tp* __restrict__ rows) {
  pdl_enter();
  const int64_t total = d.B * d.T * d.Hk * d.K;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t kk = e % d.K, hk = (e / d.K) % d.Hk, t = (e / (d.K * d.Hk)) % d.T, b = e / (d.K * d.Hk * d.T);
    Tp acc = 0;
    for (int64_t j = 0; j < d.G; ++j) acc += rows[((b * d.Hv + hk * d.G + j) * d.T + t) * d.K + kk];
    out[e] = acc;
  }
}

// ---- host side ----

Dims dims_of(const Tensor& q, const Tensor& v, int64_t chunk_size) {
  Dims d{};
  d.B = q.size(0);
  d.T = q.size(1);
  d.Hk = q.size(2);
  d.K = q.size(3);
  d.Hv = v.size(2);
  d.V = v.size(3);
  // A chunk longer than the sequence is the sequence (one chunk, L = T): sizing by min(C, T) changes no result.
  d.C = std::max<int64_t>(1, std::min(chunk_size, d.T));
  d.NC = chunk_size >= 1 ? (d.T + chunk_size - 1) / chunk_size : 0;
  d.G = d.Hv / d.Hk;
  return d;
}

void check_inputs(const char* name, const Dims& d, int64_t chunk_size, std::initializer_list<const Tensor*> ts) {
  GDN_CHECK(chunk_size >= 1, "{}: chunk_size must be >= 1, got {}", name, chunk_size);
  GDN_CHECK(d.Hk >= 1 && d.Hv % d.Hk == 0, "{}: Hv={} must be a multiple of Hk={}", name, d.Hv, d.Hk);
  GDN_CHECK(d.K >= 1 && d.V >= 1, "{}: K={} and V={} must be >= 1", name, d.K, d.V);
  GDN_CHECK(d.C <= 32768, "{}: chunk_size {} is too large (at most 32768)", name, d.C);
  GDN_CHECK(d.B <= 65535 && d.Hv <= 65535, "{}: B={} and Hv={} must be <= 65535 (grid dimensions)", name, d.B, d.Hv);
  for (const Tensor* t : ts)
    if (t->defined()) GDN_CHECK(t->is_contiguous(), "{}: every tensor must be contiguous, got {}", name, t->str());
}

// Shared memory of the chunk kernels: vectors, then n_cc [C,C] matrices (prepare 2, chunk_grad 3) when they fit.
size_t prepare_vec_smem(const Dims& d, size_t es) { return 2 * d.C * sizeof(double) + 3 * d.C * es; }
size_t grad_vec_smem(const Dims& d, size_t es) { return 2 * d.C * sizeof(double) + (6 * d.C + 32) * es; }
size_t state_smem(const Dims& d, size_t es) { return (d.K + d.C) * kVTile * es; }

// GDN_DR_UNTILED=1 selects the untiled kernels (a reference path for bisecting a mismatch).
bool use_tiled() {
  static const bool tiled = [] {
    const char* e = std::getenv("GDN_DR_UNTILED");
    return !(e && e[0] == '1');
  }();
  return tiled;
}
// GDN_DR_SPLIT=0 turns the split and tensor-core paths off: the fused tiled state kernels run instead (an A/B switch
// for benchmarks and a second path for bisecting).
bool use_split() {
  static const bool split = [] {
    const char* e = std::getenv("GDN_DR_SPLIT");
    return use_tiled() && !(e && e[0] == '0');
  }();
  return split;
}

// Shared memory of the tiled kernels (layouts in cuda/delta_rule_chunked_tiled.cuh).
size_t prepare_tiled_smem(const Dims& d, size_t es, int64_t NT) {
  return 2 * d.C * sizeof(double) + static_cast<size_t>(3 * d.C + 2 * d.C * (d.C + 1) + prepare_region(d.C, d.K, NT)) * es;
}
// wide: Q and K get tiles of their own besides W (all operand loads of a chunk step issued together).
size_t state_tiled_smem(const Dims& d, size_t es, int64_t vt, bool backward, bool wide = false) {
  const int64_t kv = (backward ? 2 : 1) * d.K * vt, cv = (backward ? 3 : 2) * d.C * vt;
  return static_cast<size_t>(kv + cv + d.C * (d.C + 1) + (wide ? 3 : 1) * d.C * (d.K + 1) + 2 * d.C) * es;
}

// The wide state kernels where they fit without fewer resident blocks per SM than the narrow ones.
bool state_wide(const Dims& d, size_t es, int64_t vt, bool backward) {
  const size_t wide = state_tiled_smem(d, es, vt, backward, true);
  return wide <= smem_limit() && resident_blocks(wide) >= resident_blocks(state_tiled_smem(d, es, vt, backward));
}

// Value columns per block of the tiled state kernels: 32, halved (down to 8) while the grid would not cover the SMs
// or the shared memory does not fit; 0 when even 8 does not fit (the untiled kernels run instead).
int state_tile(const Dims& d, size_t es, bool backward) {
  if (!use_tiled()) return 0;
  const int64_t sms = sm_count();
  const size_t limit = smem_limit();
  int vt = 32;
  while (vt > 8 && (d.V + vt - 1) / vt * d.B * d.Hv < sms) vt /= 2;
  while (vt > 8 && state_tiled_smem(d, es, vt, backward) > limit) vt /= 2;
  return state_tiled_smem(d, es, vt, backward) <= limit ? vt : 0;
}

// Launch plan of a split recurrence (cuda/delta_rule_chunked_split.cuh) over value tiles of 32, 16 or 8 columns:
// choose_recur (cuda/delta_rule_chunked_launch.cuh) with elems(vt, nbuf) elements of shared memory.
template <typename F>
RecurChoice plan_recur(const Dims& d, size_t es, F elems) {
  return choose_recur(d, {32, 16, 8}, [&](int vt, int nbuf) { return static_cast<size_t>(elems(vt, nbuf)) * es; });
}
// Value columns per block of a chunk-parallel split kernel: 32, 16 or 8, the widest that fits; 0 when none does.
template <typename F>
int plan_par(size_t es, F elems) {
  for (int vp : {32, 16, 8})
    if (static_cast<size_t>(elems(vp)) * es <= smem_limit()) return vp;
  return 0;
}

// Shared-memory bytes of a chunk kernel and, when its n_cc [C,C] matrices do not fit, the global scratch that holds
// them instead ([B,Hv,NC,n_cc,C,C]; an undefined tensor otherwise).
template <typename Tp>
std::pair<size_t, Tensor> chunk_smem(const Dims& d, size_t vec_bytes, int64_t n_cc, const Tensor& like) {
  const size_t full = vec_bytes + static_cast<size_t>(n_cc * d.C * d.C) * sizeof(Tp);
  if (full <= smem_limit()) return {full, Tensor()};
  return {vec_bytes, Tensor::empty({d.B, d.Hv, d.NC, n_cc, d.C, d.C}, like.dtype(), like.device())};
}

// Raises the kernel's dynamic shared-memory limit when above 48 KB, after checking the device allows it.
template <typename Kernel>
void set_smem(Kernel kernel, size_t bytes, const char* name) {
  const size_t limit = smem_limit();
  GDN_CHECK(bytes <= limit,
            "{}: needs {} bytes of shared memory per block, the device allows {} (smaller chunk_size or K)", name,
            bytes, limit);
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <typename Tp>
const Tp* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<Tp>() : nullptr;
}
template <typename Tp>
Tp* mut_ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<Tp>() : nullptr;
}

// Scratch of step 1: W [B,Hv,T,K], U [B,Hv,T,V], P [B,Hv,NC,C,C], eg, r [B,Hv,T].
struct Prepared {
  Tensor W, U, P, EG, R;
};

// The forward hands its step-1 scratch to the backward through `saved` (the op keeps it between the two): W, U, P,
// eg, r of Prepared (5 tensors, W in the input's dtype) from the float32 / float64 paths, Wb, Kb, U, P, eg, r and the
// recurrence's Vn of mma::Prepared (7, Wb in bfloat16) from the tensor-core path. The backward reuses it when its own
// path takes the same layout (same kernel, same inputs: the same bits) and recomputes it otherwise.
bool saved_matches(const std::vector<Tensor>& saved, const Dims& d, DType w_dtype, size_t count) {
  return saved.size() == count && saved[0].dtype() == w_dtype && saved[0].dim() == 4 && saved[0].size(0) == d.B &&
         saved[0].size(1) == d.Hv && saved[0].size(2) == d.T && saved[0].size(3) == d.K;
}

template <typename Tp>
Prepared prepare(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                 const Tensor& beta) {
  const Device dev = q.device();
  Prepared p{Tensor::empty({d.B, d.Hv, d.T, d.K}, q.dtype(), dev), Tensor::empty({d.B, d.Hv, d.T, d.V}, q.dtype(), dev),
             Tensor::empty({d.B, d.Hv, d.NC, d.C, d.C}, q.dtype(), dev),
             Tensor::empty({d.B, d.Hv, d.T}, q.dtype(), dev), Tensor::empty({d.B, d.Hv, d.T}, q.dtype(), dev)};
  const dim3 grid(static_cast<unsigned>(d.NC), static_cast<unsigned>(d.Hv), static_cast<unsigned>(d.B));
  const int NT = static_cast<int>(std::min<int64_t>(d.K + d.V, kSolveCols));
  const size_t tsmem = prepare_tiled_smem(d, sizeof(Tp), NT);
  if (use_tiled() && tsmem <= smem_limit()) {
    set_smem(prepare_tiled_kernel<Tp>, tsmem, "gated_delta_rule_chunked (prepare)");
    launch(prepare_tiled_kernel<Tp>, grid, kParThreads<Tp>, tsmem, d, NT, p.W.data<Tp>(), p.U.data<Tp>(),
           p.P.data<Tp>(), p.EG.data<Tp>(), p.R.data<Tp>(), q.data<Tp>(), k.data<Tp>(), v.data<Tp>(), g.data<Tp>(),
           beta.data<Tp>());
    return p;
  }
  const auto [smem, cc] = chunk_smem<Tp>(d, prepare_vec_smem(d, sizeof(Tp)), 2, q);
  set_smem(prepare_chunk_kernel<Tp>, smem, "gated_delta_rule_chunked (prepare)");
  launch(prepare_chunk_kernel<Tp>, grid, kThreads, smem, d, p.W.data<Tp>(), p.U.data<Tp>(), p.P.data<Tp>(),
         p.EG.data<Tp>(), p.R.data<Tp>(), q.data<Tp>(), k.data<Tp>(), v.data<Tp>(), g.data<Tp>(), beta.data<Tp>(),
         mut_ptr_or_null<Tp>(cc));
  return p;
}

// dq, dk [B,T,Hk,K] from the per-value-head rows dqs, dks [B,Hv,T,K] (Hv > Hk).
template <typename Tp>
void key_head_sums(const Dims& d, const Tensor& dq, const Tensor& dk, const Tensor& dqs, const Tensor& dks) {
  const int64_t total = d.B * d.T * d.Hk * d.K;
  launch(key_head_sum_kernel<Tp>, grid_for(total), kThreads, 0, d, dq.data<Tp>(), dqs.data<Tp>());
  launch(key_head_sum_kernel<Tp>, grid_for(total), kThreads, 0, d, dk.data<Tp>(), dks.data<Tp>());
}

dim3 state_grid(const Dims& d, int64_t vt = kVTile) {
  return dim3(static_cast<unsigned>((d.V + vt - 1) / vt), static_cast<unsigned>(d.Hv), static_cast<unsigned>(d.B));
}

void gated_delta_rule_chunked_forward(const Tensor& o, const Tensor& final_state, const Tensor& chunk_states,
                                      const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                      const Tensor& beta, const Tensor& initial_state, double scale,
                                      int64_t chunk_size, std::vector<Tensor>* saved) {
  const char* name = "gated_delta_rule_chunked_forward";
  const Dims d = dims_of(q, v, chunk_size);
  check_inputs(name, d, chunk_size, {&o, &final_state, &chunk_states, &q, &k, &v, &g, &beta, &initial_state});
  GDN_CHECK(!chunk_states.defined() || chunk_states.size(2) == d.NC, "{}: chunk_states must hold {} chunk states", name,
            d.NC);
  if (d.B == 0 || d.Hv == 0) return;  // nothing to compute: every output is empty
  dispatch_float(q.dtype(), name, [&](auto tag) {
    using Tp = decltype(tag);
    if constexpr (std::is_same_v<Tp, float>) {  // bf16 tile products: float32 tensors under Precision::BFloat16
      if (matmul_precision() == Precision::BFloat16 && use_split()) {
        const mma::Plan mp = mma::plan(d, false);
        if (mp.ok) {
          mma::Prepared keep;
          mma::forward(d, mp, o, final_state, chunk_states, q, k, v, g, beta, initial_state, static_cast<float>(scale),
                       saved ? &keep : nullptr);
          if (saved) *saved = {keep.Wb, keep.Kb, keep.U, keep.P, keep.EG, keep.R, keep.Vn};
          g_paths.forward = kPathMma;
          return;
        }
      }
    }
    Prepared p;
    if (d.NC > 0) p = prepare<Tp>(d, q, k, v, g, beta);
    if (saved && d.NC > 0) *saved = {p.W, p.U, p.P, p.EG, p.R};
    const Tp sc = static_cast<Tp>(scale);
    const size_t es = sizeof(Tp);
    const RecurChoice rp = use_split() && d.NC > 0 ? plan_recur(d, es, [&](int vt, int nb) {
      return fwd_recur_elems(d.C, d.K, vt, nb);
    })
                                                 : RecurChoice{};
    const int vp = rp.vt ? plan_par(es, [&](int w) { return output_elems(d.C, d.K, w); }) : 0;
    if (vp) {  // split: the recurrence, then the chunk-parallel output
      const Device dev = q.device();
      const Tensor cs = chunk_states.defined() ? chunk_states : Tensor::empty({d.B, d.Hv, d.NC, d.K, d.V}, q.dtype(), dev);
      const Tensor Vn = Tensor::empty({d.B, d.Hv, d.T, d.V}, q.dtype(), dev);
      set_smem(forward_recur_kernel<Tp>, rp.smem, name);
      launch(forward_recur_kernel<Tp>, state_grid(d, rp.vt), kThreads, rp.smem, d, rp.vt, rp.nbuf,
             mut_ptr_or_null<Tp>(final_state), cs.data<Tp>(), Vn.data<Tp>(), k.data<Tp>(), p.W.data<Tp>(),
             p.U.data<Tp>(), p.EG.data<Tp>(), p.R.data<Tp>(), ptr_or_null<Tp>(initial_state));
      const size_t osmem = static_cast<size_t>(output_elems(d.C, d.K, vp)) * es;
      set_smem(chunk_output_kernel<Tp>, osmem, name);
      const dim3 ogrid(static_cast<unsigned>(d.NC * ((d.V + vp - 1) / vp)), static_cast<unsigned>(d.Hv),
                       static_cast<unsigned>(d.B));
      launch(chunk_output_kernel<Tp>, ogrid, par_threads<Tp>(ogrid.x * int64_t(ogrid.y) * ogrid.z), osmem, d, vp,
             o.data<Tp>(), cs.data<Tp>(), Vn.data<Tp>(), p.P.data<Tp>(), p.EG.data<Tp>(), q.data<Tp>(), sc);
      g_paths.forward = "float32 split";
      return;
    }
    if (const int vt = state_tile(d, sizeof(Tp), false)) {
      const bool wide = state_wide(d, sizeof(Tp), vt, false);
      const size_t tsmem = state_tiled_smem(d, sizeof(Tp), vt, false, wide);
      set_smem(forward_state_tiled_kernel<Tp>, tsmem, name);
      launch(forward_state_tiled_kernel<Tp>, state_grid(d, vt), kThreads, tsmem, d, vt, wide, o.data<Tp>(),
             mut_ptr_or_null<Tp>(final_state), mut_ptr_or_null<Tp>(chunk_states), q.data<Tp>(), k.data<Tp>(),
             ptr_or_null<Tp>(p.W), ptr_or_null<Tp>(p.U), ptr_or_null<Tp>(p.P), ptr_or_null<Tp>(p.EG),
             ptr_or_null<Tp>(p.R), ptr_or_null<Tp>(initial_state), sc);
      g_paths.forward = "float32 tiled";
      return;
    }
    g_paths.forward = "float32 untiled";
    const size_t smem = state_smem(d, sizeof(Tp));
    set_smem(forward_state_kernel<Tp>, smem, name);
    launch(forward_state_kernel<Tp>, state_grid(d), kThreads, smem, d, o.data<Tp>(), mut_ptr_or_null<Tp>(final_state),
           mut_ptr_or_null<Tp>(chunk_states), q.data<Tp>(), k.data<Tp>(), ptr_or_null<Tp>(p.W), ptr_or_null<Tp>(p.U),
           ptr_or_null<Tp>(p.P), ptr_or_null<Tp>(p.EG), ptr_or_null<Tp>(p.R), ptr_or_null<Tp>(initial_state), sc);
  });
}

void gated_delta_rule_chunked_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dg,
                                       const Tensor& dbeta, const Tensor& dinitial_state, const Tensor& do_,
                                       const Tensor& dfinal_state, const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& g, const Tensor& beta, const Tensor& chunk_states, double scale,
                                       int64_t chunk_size, const std::vector<Tensor>& saved) {
  const char* name = "gated_delta_rule_chunked_backward";
  const Dims d = dims_of(q, v, chunk_size);
  check_inputs(
      name, d, chunk_size,
      {&dq, &dk, &dv, &dg, &dbeta, &dinitial_state, &do_, &dfinal_state, &q, &k, &v, &g, &beta, &chunk_states});
  GDN_CHECK(chunk_states.defined() && chunk_states.size(2) == d.NC, "{}: chunk_states must hold {} chunk start states",
            name, d.NC);
  if (d.B == 0 || d.Hv == 0) return;  // nothing to compute: every output is empty
  dispatch_float(q.dtype(), name, [&](auto tag) {
    using Tp = decltype(tag);
    const Device dev = q.device();
    const Tp sc = static_cast<Tp>(scale);
    const bool grouped = d.G > 1;
    if constexpr (std::is_same_v<Tp, float>) {  // bf16 tile products: float32 tensors under Precision::BFloat16
      if (matmul_precision() == Precision::BFloat16 && use_split() &&
          delta_rule_chunked_backward_takes_tensor_cores()) {
        const mma::Plan mp = mma::plan(d, true);
        if (mp.ok) {
          const Tensor dqs = grouped ? Tensor::empty({d.B, d.Hv, d.T, d.K}, q.dtype(), dev) : dq;
          const Tensor dks = grouped ? Tensor::empty({d.B, d.Hv, d.T, d.K}, q.dtype(), dev) : dk;
          const bool have = saved_matches(saved, d, kBFloat16, 7);
          const mma::Prepared given =
              have ? mma::Prepared{saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6]}
                   : mma::Prepared{};
          mma::backward(d, mp, dqs, dks, grouped ? d.K : d.Hk * d.K, dv, dg, dbeta, dinitial_state, do_, dfinal_state,
                        q, k, v, g, beta, chunk_states, sc, have ? &given : nullptr);
          if (grouped) key_head_sums<Tp>(d, dq, dk, dqs, dks);
          g_paths.backward = kPathMma;
          return;
        }
      }
    }
    Prepared p;
    Tensor dHend, Vn, dVn;
    if (d.NC > 0) {
      p = saved_matches(saved, d, q.dtype(), 5) ? Prepared{saved[0], saved[1], saved[2], saved[3], saved[4]}
                                                : prepare<Tp>(d, q, k, v, g, beta);
      dHend = Tensor::empty({d.B, d.Hv, d.NC, d.K, d.V}, q.dtype(), dev);
      Vn = Tensor::empty({d.B, d.Hv, d.T, d.V}, q.dtype(), dev);
      dVn = Tensor::empty({d.B, d.Hv, d.T, d.V}, q.dtype(), dev);
    }
    const size_t es = sizeof(Tp);
    const RecurChoice rp = use_split() && d.NC > 0 ? plan_recur(d, es, [&](int vt, int nb) {
      return bwd_recur_elems(d.C, d.K, vt, nb);
    })
                                                 : RecurChoice{};
    const int vp = rp.vt ? plan_par(es, [&](int w) { return pre_elems(d.C, d.K, w); }) : 0;
    g_paths.backward = vp ? "float32 split" : state_tile(d, sizeof(Tp), true) ? "float32 tiled" : "float32 untiled";
    if (vp) {  // split: the chunk-parallel part, then the recurrence
      const size_t psmem = static_cast<size_t>(pre_elems(d.C, d.K, vp)) * es;
      set_smem(backward_pre_kernel<Tp>, psmem, name);
      const dim3 pgrid(static_cast<unsigned>(d.NC * ((d.V + vp - 1) / vp)), static_cast<unsigned>(d.Hv),
                       static_cast<unsigned>(d.B));
      launch(backward_pre_kernel<Tp>, pgrid, par_threads<Tp>(pgrid.x * int64_t(pgrid.y) * pgrid.z), psmem, d, vp,
             Vn.data<Tp>(), dVn.data<Tp>(), dHend.data<Tp>(), chunk_states.data<Tp>(), p.W.data<Tp>(), p.U.data<Tp>(),
             p.P.data<Tp>(), p.EG.data<Tp>(), q.data<Tp>(), do_.data<Tp>(), sc);
      set_smem(backward_recur_kernel<Tp>, rp.smem, name);
      launch(backward_recur_kernel<Tp>, state_grid(d, rp.vt), kThreads, rp.smem, d, rp.vt, rp.nbuf,
             mut_ptr_or_null<Tp>(dinitial_state), dHend.data<Tp>(), dVn.data<Tp>(), ptr_or_null<Tp>(dfinal_state),
             k.data<Tp>(), p.W.data<Tp>(), p.EG.data<Tp>(), p.R.data<Tp>());
    } else if (const int vt = state_tile(d, sizeof(Tp), true)) {
      const bool wide = state_wide(d, sizeof(Tp), vt, true);
      const size_t tsmem = state_tiled_smem(d, sizeof(Tp), vt, true, wide);
      set_smem(backward_state_tiled_kernel<Tp>, tsmem, name);
      launch(backward_state_tiled_kernel<Tp>, state_grid(d, vt), kThreads, tsmem, d, vt, wide,
             mut_ptr_or_null<Tp>(dinitial_state), mut_ptr_or_null<Tp>(dHend), mut_ptr_or_null<Tp>(Vn),
             mut_ptr_or_null<Tp>(dVn), do_.data<Tp>(), ptr_or_null<Tp>(dfinal_state), q.data<Tp>(), k.data<Tp>(),
             ptr_or_null<Tp>(p.W), ptr_or_null<Tp>(p.U), ptr_or_null<Tp>(p.P), ptr_or_null<Tp>(p.EG),
             ptr_or_null<Tp>(p.R), chunk_states.data<Tp>(), sc);
    } else {
      const size_t ssmem = state_smem(d, sizeof(Tp));
      set_smem(backward_state_kernel<Tp>, ssmem, name);
      launch(backward_state_kernel<Tp>, state_grid(d), kThreads, ssmem, d, mut_ptr_or_null<Tp>(dinitial_state),
             mut_ptr_or_null<Tp>(dHend), mut_ptr_or_null<Tp>(Vn), mut_ptr_or_null<Tp>(dVn), do_.data<Tp>(),
             ptr_or_null<Tp>(dfinal_state), q.data<Tp>(), k.data<Tp>(), ptr_or_null<Tp>(p.W), ptr_or_null<Tp>(p.U),
             ptr_or_null<Tp>(p.P), ptr_or_null<Tp>(p.EG), ptr_or_null<Tp>(p.R), chunk_states.data<Tp>(), sc);
    }
    if (d.NC == 0) return;  // T = 0: no rows, only dinitial_state

    Tensor dqs = grouped ? Tensor::empty({d.B, d.Hv, d.T, d.K}, q.dtype(), dev) : dq;
    Tensor dks = grouped ? Tensor::empty({d.B, d.Hv, d.T, d.K}, q.dtype(), dev) : dk;
    Tensor dWt = Tensor::empty({d.B, d.Hv, d.T, d.K}, q.dtype(), dev);
    Tensor dUt = Tensor::empty({d.B, d.Hv, d.T, d.V}, q.dtype(), dev);
    const dim3 grid(static_cast<unsigned>(d.NC), static_cast<unsigned>(d.Hv), static_cast<unsigned>(d.B));
    const size_t tgsmem = 2 * d.C * sizeof(double) + static_cast<size_t>(grad_tiled_elems(d.C, d.K, d.V)) * sizeof(Tp);
    if (use_tiled() && tgsmem <= smem_limit()) {
      set_smem(chunk_grad_tiled_kernel<Tp>, tgsmem, name);
      launch(chunk_grad_tiled_kernel<Tp>, grid, kThreads, tgsmem, d, dqs.data<Tp>(), dks.data<Tp>(),
             grouped ? d.K : d.Hk * d.K, dv.data<Tp>(), dg.data<Tp>(), dbeta.data<Tp>(), dWt.data<Tp>(), dUt.data<Tp>(),
             do_.data<Tp>(), q.data<Tp>(), k.data<Tp>(), v.data<Tp>(), g.data<Tp>(), beta.data<Tp>(),
             chunk_states.data<Tp>(), dHend.data<Tp>(), Vn.data<Tp>(), dVn.data<Tp>(), p.W.data<Tp>(), p.U.data<Tp>(),
             p.P.data<Tp>(), sc);
    } else {
      const auto [gsmem, cc] = chunk_smem<Tp>(d, grad_vec_smem(d, sizeof(Tp)), 3, q);
      set_smem(chunk_grad_kernel<Tp>, gsmem, name);
      launch(chunk_grad_kernel<Tp>, grid, kThreads, gsmem, d, dqs.data<Tp>(), dks.data<Tp>(),
             grouped ? d.K : d.Hk * d.K, dv.data<Tp>(), dg.data<Tp>(), dbeta.data<Tp>(), dWt.data<Tp>(), dUt.data<Tp>(),
             do_.data<Tp>(), q.data<Tp>(), k.data<Tp>(), v.data<Tp>(), g.data<Tp>(), beta.data<Tp>(),
             chunk_states.data<Tp>(), dHend.data<Tp>(), Vn.data<Tp>(), dVn.data<Tp>(), p.W.data<Tp>(), p.U.data<Tp>(),
             p.P.data<Tp>(), sc, mut_ptr_or_null<Tp>(cc));
    }
    if (grouped) key_head_sums<Tp>(d, dq, dk, dqs, dks);
  });
}

}  // namespace

DeltaRuleChunkedPaths delta_rule_chunked_last_paths() { return g_paths; }
bool delta_rule_chunked_tensor_cores_allowed() { return use_split(); }
bool delta_rule_chunked_backward_takes_tensor_cores() {
  // GDN_DR_BACKWARD=float32 keeps the backward on the float32 kernels (=tensor-cores, the default, is accepted too):
  // an A/B switch for benchmarks.
  static const bool takes = [] {
    const char* e = std::getenv("GDN_DR_BACKWARD");
    if (!e || !*e || std::string(e) == "tensor-cores") return true;
    if (std::string(e) == "float32") return false;
    GDN_THROW("GDN_DR_BACKWARD must be tensor-cores or float32, got '{}'", e);
  }();
  return takes;
}

void register_delta_rule_chunked_kernels(KernelTable& t) {
  t.gated_delta_rule_chunked_forward = gated_delta_rule_chunked_forward;
  t.gated_delta_rule_chunked_backward = gated_delta_rule_chunked_backward;
}

}  // namespace gdn::cuda
