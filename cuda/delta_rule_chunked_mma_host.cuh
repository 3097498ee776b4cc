// cuda/delta_rule_chunked_mma_host.cuh — host side of the bfloat16 tensor-core path of the chunked gated delta rule
// (included by cuda/delta_rule_chunked.cu only; the kernels are in cuda/delta_rule_chunked_mma*.cuh).
//
// plan() decides once per call, on the host, whether the path can run and with which tiles: float32 tensors and
// gdn::matmul_precision() == BFloat16 are the caller's checks; here NC > 0, K and V multiples of 16, a device of
// compute capability 8.0 or newer (bfloat16 wmma), and every kernel of the pass within the device's opt-in shared
// memory (prepare_mma, the recurrence with vt in {32, 16} and one or two buffers, the chunk-parallel kernel with
// vp in {64, 32, 16}, chunk_grad_mma). When any check fails the caller runs the float32 kernels instead, unchanged.
// The recurrence's (vt, nbuf) come from choose_recur (cuda/delta_rule_chunked_launch.cuh), as the float32 split
// path's do: fewest waves of resident blocks, then two buffers, then the narrowest tile. At the fixed shapes the
// recurrences keep the state in registers instead (cuda/delta_rule_chunked_mma_regs.cuh) with the value tile of
// reg_vt (cuda/delta_rule_chunked_launch.cuh); p.vt, p.nbuf stay the fallback for a call whose tensors are not
// 16-byte aligned, which runs the Generic kernels. At C = 64, K = V = 128 prepare_cols_kernel prepares the chunks
// (unless GDN_DR_PREPARE_COLS=0, prepare_by_columns in cuda/delta_rule_chunked_launch.cuh). At the fixed shapes the
// forward's recurrence makes the output too (forward_recur_out_kernel, value tile p.ovt; unless GDN_DR_FUSED_OUTPUT=0,
// fused_output in the same file). Nothing here reads device memory; the scratch tensors come from the caching
// allocator on the current stream (a captured CUDA graph replays the same launches).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_kernels.h"
#include "cuda/delta_rule_chunked_launch.cuh"
#include "cuda/delta_rule_chunked_mma.cuh"
#include "cuda/delta_rule_chunked_mma_cols.cuh"
#include "cuda/delta_rule_chunked_mma_grad.cuh"
#include "cuda/delta_rule_chunked_mma_recur.cuh"
#include "cuda/delta_rule_chunked_mma_regs.cuh"
#include "cuda/launch.h"
#include "cuda/stream.h"

namespace gdn::cuda::delta_rule_tiled::mma {

struct Plan {
  bool ok = false;
  int NT = 0, vt = 0, nbuf = 0, vp = 0;
  int rvt = 0;                                    // the register recurrences' value tile at fixed shapes, 0: none
  size_t prep = 0, recur = 0, par = 0, grad = 0;  // dynamic shared-memory bytes of each kernel
  size_t rsmem = 0;                               // ... of the register recurrence
  int ovt = 0;       // the value tile of the forward recurrence that makes the output too, 0: none (fused_output)
  size_t osmem = 0;  // ... its shared memory
  size_t cols = 0;                                // ... of prepare_cols_kernel, 0: prepare_mma_kernel at every shape
};

inline Plan plan(const Dims& d, bool backward) {
  Plan p;
  if (d.NC <= 0 || d.K % 16 != 0 || d.V % 16 != 0) return p;
  if (device_attr(cudaDevAttrComputeCapabilityMajor) < 8) return p;
  const size_t limit = smem_limit();
  p.NT = static_cast<int>(std::min<int64_t>(d.K + d.V, kMmaSolveCols));
  p.prep = PrepareLayout(d.C, d.K, p.NT).total;
  if (p.prep > limit) return p;
  const RecurChoice rc =
      choose_recur(d, {32, 16}, [&](int vt, int nbuf) { return RecurLayout(d.C, d.K, vt, nbuf, backward).total; });
  if (rc.vt == 0) return p;
  p.vt = rc.vt;
  p.nbuf = rc.nbuf;
  p.recur = rc.smem;
  for (int vp : {64, 32, 16}) {
    const size_t smem = backward ? PreLayout(d.C, d.K, vp, true).total : OutputLayout(d.C, d.K, vp).total;
    if (smem <= limit) {
      p.vp = vp;
      p.par = smem;
      break;
    }
  }
  if (p.vp == 0) return p;
  const bool may_fix = d.C == 64 && d.K == d.V && (d.K == 64 || d.K == 128);  // with_shape may pick a fixed shape
  if (may_fix) {
    p.rvt = reg_vt(d, [&](int vt) { return reg_smem(d.C, d.K, vt, backward); });
    p.rsmem = p.rvt ? reg_smem(d.C, d.K, p.rvt, backward) : 0;
    if (p.rsmem > limit) p.rvt = 0;
    if (!backward && fused_output()) {
      p.ovt = reg_vt(d, [&](int vt) { return reg_out_smem(d.C, d.K, vt); });
      p.osmem = p.ovt ? reg_out_smem(d.C, d.K, p.ovt) : 0;
      if (p.osmem > limit) p.ovt = 0;
    }
    if (d.K + d.V == kColsThreads && prepare_by_columns()) p.cols = ColsLayout(d.C, d.K).total;
    if (p.cols > limit) p.cols = 0;
  }
  if (backward) {
    // a fixed shape's layout (one phase-4 tile of K + V columns) where with_shape may pick one, else the Generic's
    p.grad = GradLayout(d.C, d.K, d.V, may_fix ? d.K + d.V : kGradTile).total;
    if (p.grad > limit) return p;
  }
  p.ok = true;
  return p;
}

// Calls f(S()) with the Shape (cuda/delta_rule_chunked_mma_common.cuh) the chunk-parallel kernels of this call run:
// Shape<64, 64, 64> or Shape<64, 128, 128> where d has those dimensions, the plan's value tile is kFixedTile and every
// pointer in `rows` (the tensors staged four floats per load) is 16-byte aligned; Generic otherwise.
template <typename F>
void with_shape(const Dims& d, const Plan& p, std::initializer_list<const void*> rows, F f) {
  bool aligned = true;
  for (const void* r : rows) aligned = aligned && is_aligned(r, 16);
  const bool tile = aligned && p.vp == kFixedTile && d.C == 64;
  if (tile && d.K == 64 && d.V == 64)
    f(Shape<64, 64, 64>());
  else if (tile && d.K == 128 && d.V == 128)
    f(Shape<64, 128, 128>());
  else
    f(Generic());
}

// The recurrence kernels {forward, backward} for shape S and the plan's value tile: VT = vt (32 or 16, the tiles
// plan() chooses from) at fixed shapes, 0 (vt read at run time) for Generic.
template <typename S>
auto recur_kernels(int vt) {
  if constexpr (S::fixed) {
    if (vt == 32) return std::make_pair(forward_recur_mma_kernel<S, 32>, backward_recur_mma_kernel<S, 32>);
    return std::make_pair(forward_recur_mma_kernel<S, 16>, backward_recur_mma_kernel<S, 16>);
  } else {
    return std::make_pair(forward_recur_mma_kernel<S, 0>, backward_recur_mma_kernel<S, 0>);
  }
}

// The register recurrences {forward, backward} for fixed shape S and value tile vt (64, 32 or 16: reg_vt's choices).
template <typename S>
auto reg_kernels(int vt) {
  if (vt == 64) return std::make_pair(forward_recur_reg_kernel<S, 64>, backward_recur_reg_kernel<S, 64>);
  if (vt == 32) return std::make_pair(forward_recur_reg_kernel<S, 32>, backward_recur_reg_kernel<S, 32>);
  return std::make_pair(forward_recur_reg_kernel<S, 16>, backward_recur_reg_kernel<S, 16>);
}
// forward_recur_out_kernel for fixed shape S, value tile vt (reg_vt's choices) and kKeep.
template <typename S, bool kKeep>
auto reg_out_kernel(int vt) {
  if (vt == 64) return forward_recur_out_kernel<S, 64, kKeep>;
  if (vt == 32) return forward_recur_out_kernel<S, 32, kKeep>;
  return forward_recur_out_kernel<S, 16, kKeep>;
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

inline bf16* bf16_ptr(const Tensor& t) { return static_cast<bf16*>(t.raw_data()); }
template <typename T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Scratch of prepare_mma_kernel: W and K of the value head in bfloat16 [B,Hv,T,K]; U [B,Hv,T,V], P [B,Hv,NC,C,C],
// eg, r [B,Hv,T] in float32. Vn [B,Hv,T,V] (bf16, U - W H of each chunk: its consumers take it as a bf16 operand
// only) is the forward recurrence's, kept for the backward by forward() (undefined after prepare()).
struct Prepared {
  Tensor Wb, Kb, U, P, EG, R, Vn;
};
// The operands prepare makes for forward_recur_out_kernel only: Q of the value head [B,Hv,T,K] and P [B,Hv,NC,C,C]
// in bfloat16.
struct OutputOperands {
  Tensor Qb, Pb;
};

// Whether this call's chunk-parallel kernels run a fixed shape (with_shape on q, k, v, as prepare()).
inline bool fixed_shape(const Dims& d, const Plan& p, const Tensor& q, const Tensor& k, const Tensor& v) {
  bool fixed = false;
  with_shape(d, p, {q.raw_data(), k.raw_data(), v.raw_data()},
             [&](auto shape) { fixed = decltype(shape)::fixed; });
  return fixed;
}

// want_p: P in float32 (chunk_output_mma and the backward read it); qp (fixed shapes only): receives Q and P in bf16.
inline Prepared prepare(const Dims& d, const Plan& p, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& g, const Tensor& beta, bool want_p = true, OutputOperands* qp = nullptr) {
  const Device dev = q.device();
  Prepared s{Tensor::empty({d.B, d.Hv, d.T, d.K}, kBFloat16, dev), Tensor::empty({d.B, d.Hv, d.T, d.K}, kBFloat16, dev),
             Tensor::empty({d.B, d.Hv, d.T, d.V}, kFloat32, dev),
             want_p ? Tensor::empty({d.B, d.Hv, d.NC, d.C, d.C}, kFloat32, dev) : Tensor(),
             Tensor::empty({d.B, d.Hv, d.T}, kFloat32, dev), Tensor::empty({d.B, d.Hv, d.T}, kFloat32, dev)};
  if (qp)
    *qp = {Tensor::empty({d.B, d.Hv, d.T, d.K}, kBFloat16, dev),
           Tensor::empty({d.B, d.Hv, d.NC, d.C, d.C}, kBFloat16, dev)};
  bf16* Qb = qp ? bf16_ptr(qp->Qb) : nullptr;
  bf16* Pb = qp ? bf16_ptr(qp->Pb) : nullptr;
  const dim3 grid(static_cast<unsigned>(d.NC), static_cast<unsigned>(d.Hv), static_cast<unsigned>(d.B));
  with_shape(d, p, {q.raw_data(), k.raw_data(), v.raw_data()}, [&](auto shape) {
    using S = decltype(shape);
    GDN_CHECK(S::fixed || !qp, "delta rule prepare: Q and P in bf16 are made at the fixed shapes only");
    if constexpr (S::fixed && S::K + S::V == kColsThreads) {
      if (p.cols) {
        allow_smem(prepare_cols_kernel<S>, p.cols);
        launch(prepare_cols_kernel<S>, grid, kColsThreads, p.cols, d, bf16_ptr(s.Wb), s.U.data<float>(),
               ptr_or_null<float>(s.P), s.EG.data<float>(), s.R.data<float>(), bf16_ptr(s.Kb), Qb, Pb,
               q.data<float>(), k.data<float>(), v.data<float>(), g.data<float>(), beta.data<float>());
        return;
      }
    }
    allow_smem(prepare_mma_kernel<S>, p.prep);
    launch(prepare_mma_kernel<S>, grid, kParThreads<float>, p.prep, d, p.NT, bf16_ptr(s.Wb), s.U.data<float>(),
           ptr_or_null<float>(s.P), s.EG.data<float>(), s.R.data<float>(), bf16_ptr(s.Kb), Qb, Pb, q.data<float>(),
           k.data<float>(), v.data<float>(), g.data<float>(), beta.data<float>());
  });
  return s;
}

// Threads of a chunk_output_mma or backward_pre_mma launch: kParThreads at the fixed shapes, whose one-pass staging
// (fetch_rows / put_rows) gives each of kParThreads threads its share of every tile; par_threads' choice for Generic,
// whose loops take their stride from blockDim.
template <typename S>
int par_kernel_threads(const dim3& grid) {
  return S::fixed ? kParThreads<float> : par_threads<float>(grid.x * int64_t(grid.y) * grid.z);
}

inline dim3 recur_grid(const Dims& d, int vt) {
  return dim3(static_cast<unsigned>((d.V + vt - 1) / vt), static_cast<unsigned>(d.Hv), static_cast<unsigned>(d.B));
}
inline dim3 par_grid(const Dims& d, int vp) {
  return dim3(static_cast<unsigned>(d.NC * ((d.V + vp - 1) / vp)), static_cast<unsigned>(d.Hv),
              static_cast<unsigned>(d.B));
}

// The forward on tensor cores: prepare, then at the fixed shapes the recurrence that makes the output too (unless
// GDN_DR_FUSED_OUTPUT=0), elsewhere the recurrence and the chunk-parallel output. keep (optional) receives the
// prepared scratch for the backward.
inline void forward(const Dims& d, const Plan& p, const Tensor& o, const Tensor& final_state,
                    const Tensor& chunk_states, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                    const Tensor& beta, const Tensor& initial_state, float sc, Prepared* keep) {
  const Device dev = q.device();
  if (p.ovt > 0 && fixed_shape(d, p, q, k, v)) {
    OutputOperands qp;
    const Prepared s = prepare(d, p, q, k, v, g, beta, /*want_p=*/keep != nullptr, &qp);
    const bool states = keep || chunk_states.defined();  // chunk states and Vn wanted
    const Tensor cs = !states || chunk_states.defined() ? chunk_states
                                                        : Tensor::empty({d.B, d.Hv, d.NC, d.K, d.V}, kFloat32, dev);
    const Tensor Vn = states ? Tensor::empty({d.B, d.Hv, d.T, d.V}, kBFloat16, dev) : Tensor();
    if (keep) {
      *keep = s;
      keep->Vn = Vn;
    }
    with_shape(d, p, {q.raw_data(), k.raw_data(), v.raw_data()}, [&](auto shape) {
      using S = decltype(shape);
      if constexpr (S::fixed) {
        const auto kernel = states ? reg_out_kernel<S, true>(p.ovt) : reg_out_kernel<S, false>(p.ovt);
        allow_smem(kernel, p.osmem);
        launch(kernel, recur_grid(d, p.ovt), 2 * p.ovt, p.osmem, d, o.data<float>(), ptr_or_null<float>(final_state),
               ptr_or_null<float>(cs), states ? bf16_ptr(Vn) : nullptr, bf16_ptr(s.Kb), bf16_ptr(s.Wb),
               bf16_ptr(qp.Qb), bf16_ptr(qp.Pb), s.U.data<float>(), s.EG.data<float>(), s.R.data<float>(),
               ptr_or_null<float>(initial_state), sc);
      }
    });
    return;
  }
  const Prepared s = prepare(d, p, q, k, v, g, beta);
  const Tensor cs = chunk_states.defined() ? chunk_states : Tensor::empty({d.B, d.Hv, d.NC, d.K, d.V}, kFloat32, dev);
  const Tensor Vn = Tensor::empty({d.B, d.Hv, d.T, d.V}, kBFloat16, dev);
  if (keep) {
    *keep = s;
    keep->Vn = Vn;
  }
  with_shape(d, p, {cs.raw_data()}, [&](auto shape) {
    using S = decltype(shape);
    if constexpr (S::fixed) {
      if (p.rvt) {
        const auto kernel = reg_kernels<S>(p.rvt).first;
        allow_smem(kernel, p.rsmem);
        launch(kernel, recur_grid(d, p.rvt), 2 * p.rvt, p.rsmem, d, ptr_or_null<float>(final_state), cs.data<float>(),
               bf16_ptr(Vn), bf16_ptr(s.Kb), bf16_ptr(s.Wb), s.U.data<float>(), s.EG.data<float>(),
               s.R.data<float>(), ptr_or_null<float>(initial_state));
        return;
      }
    }
    const auto kernel = recur_kernels<S>(p.vt).first;
    allow_smem(kernel, p.recur);
    launch(kernel, recur_grid(d, p.vt), kThreads, p.recur, d, p.vt, p.nbuf, ptr_or_null<float>(final_state),
           cs.data<float>(), bf16_ptr(Vn), bf16_ptr(s.Kb), bf16_ptr(s.Wb), s.U.data<float>(), s.EG.data<float>(),
           s.R.data<float>(), ptr_or_null<float>(initial_state));
  });
  const dim3 ogrid = par_grid(d, p.vp);
  with_shape(d, p, {q.raw_data(), cs.raw_data(), Vn.raw_data()}, [&](auto shape) {
    using S = decltype(shape);
    allow_smem(chunk_output_mma_kernel<S>, p.par);
    launch(chunk_output_mma_kernel<S>, ogrid, par_kernel_threads<S>(ogrid), p.par, d, p.vp,
           o.data<float>(), cs.data<float>(), bf16_ptr(Vn), s.P.data<float>(), s.EG.data<float>(), q.data<float>(),
           sc);
  });
}

// The backward on tensor cores up to the per-value-head rows of dq, dk: prepare (unless the forward's is given),
// the chunk-parallel part of the state pass (which also makes Vn unless the forward's is given), the recurrence,
// chunk_grad_mma. dqr, dkr: the outputs (key_stride Hk K) or [B,Hv,T,K] scratch (K).
inline void backward(const Dims& d, const Plan& p, const Tensor& dqr, const Tensor& dkr, int64_t key_stride,
                     const Tensor& dv, const Tensor& dg, const Tensor& dbeta, const Tensor& dinitial_state,
                     const Tensor& do_, const Tensor& dfinal_state, const Tensor& q, const Tensor& k, const Tensor& v,
                     const Tensor& g, const Tensor& beta, const Tensor& chunk_states, float sc,
                     const Prepared* given) {
  const Device dev = q.device();
  const Prepared s = given ? *given : prepare(d, p, q, k, v, g, beta);
  const Tensor Qd = Tensor::empty({d.B, d.Hv, d.NC, d.K, d.V}, kFloat32, dev);      // Q^T (scale eg ⊙ dO) per chunk
  const Tensor dHend = Tensor::empty({d.B, d.Hv, d.NC, d.K, d.V}, kBFloat16, dev);  // dH_end, the chunk gradient's
  const bool make_vn = !s.Vn.defined();
  const Tensor Vn = make_vn ? Tensor::empty({d.B, d.Hv, d.T, d.V}, kBFloat16, dev) : s.Vn;
  const Tensor dVn = Tensor::empty({d.B, d.Hv, d.T, d.V}, kFloat32, dev);
  const dim3 pgrid = par_grid(d, p.vp);
  with_shape(d, p, {q.raw_data(), do_.raw_data(), chunk_states.raw_data()}, [&](auto shape) {
    using S = decltype(shape);
    const auto kernel = make_vn ? backward_pre_mma_kernel<S, true> : backward_pre_mma_kernel<S, false>;
    const size_t smem = PreLayout(d.C, d.K, p.vp, make_vn).total;  // p.par is the larger, with Vn
    allow_smem(kernel, smem);
    launch(kernel, pgrid, par_kernel_threads<S>(pgrid), smem, d, p.vp, bf16_ptr(Vn),
           dVn.data<float>(), Qd.data<float>(), chunk_states.data<float>(), bf16_ptr(s.Wb),
           s.U.data<float>(), s.P.data<float>(), s.EG.data<float>(), q.data<float>(), do_.data<float>(), sc);
  });
  with_shape(d, p, {}, [&](auto shape) {
    using S = decltype(shape);
    if constexpr (S::fixed) {
      if (p.rvt) {
        const auto kernel = reg_kernels<S>(p.rvt).second;
        allow_smem(kernel, p.rsmem);
        launch(kernel, recur_grid(d, p.rvt), 2 * p.rvt, p.rsmem, d, ptr_or_null<float>(dinitial_state),
               Qd.data<float>(), bf16_ptr(dHend), dVn.data<float>(), ptr_or_null<float>(dfinal_state),
               bf16_ptr(s.Kb), bf16_ptr(s.Wb), s.EG.data<float>(), s.R.data<float>());
        return;
      }
    }
    const auto kernel = recur_kernels<S>(p.vt).second;
    allow_smem(kernel, p.recur);
    launch(kernel, recur_grid(d, p.vt), kThreads, p.recur, d, p.vt, p.nbuf, ptr_or_null<float>(dinitial_state),
           Qd.data<float>(), bf16_ptr(dHend), dVn.data<float>(), ptr_or_null<float>(dfinal_state), bf16_ptr(s.Kb),
           bf16_ptr(s.Wb), s.EG.data<float>(), s.R.data<float>());
  });
  const dim3 grid(static_cast<unsigned>(d.NC), static_cast<unsigned>(d.Hv), static_cast<unsigned>(d.B));
  with_shape(d, p, {q.raw_data(), k.raw_data(), do_.raw_data()}, [&](auto shape) {
    using S = decltype(shape);
    const size_t smem = GradLayout(d.C, d.K, d.V, grad_inner<S>()).total;
    allow_smem(chunk_grad_mma_kernel<S>, smem);
    launch(chunk_grad_mma_kernel<S>, grid, kParThreads<float>, smem, d, dqr.data<float>(), dkr.data<float>(),
           key_stride, dv.data<float>(), dg.data<float>(), dbeta.data<float>(), do_.data<float>(), q.data<float>(),
           k.data<float>(), v.data<float>(), g.data<float>(), beta.data<float>(), chunk_states.data<float>(),
           bf16_ptr(dHend), bf16_ptr(Vn), dVn.data<float>(), bf16_ptr(s.Wb), s.U.data<float>(),
           s.P.data<float>(), sc);
  });
}

}  // namespace gdn::cuda::delta_rule_tiled::mma
