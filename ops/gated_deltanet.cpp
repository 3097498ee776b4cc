// ops/gated_deltanet.cpp — the Gated DeltaNet operators (see gated_deltanet.h): argument checks, output allocation,
// one kernel call forward and one backward closure per op. CPU kernels: ops/cpu/gated_deltanet_cpu.cpp (conv, norms,
// gate), ops/cpu/delta_rule_recurrent_cpu.cpp and ops/cpu/delta_rule_chunked_cpu.cpp (the delta rule).
//
// What each op saves for its backward:
//   causal_conv1d:   x, weight, bias, initial_state (the pre-activation is recomputed: W multiply-adds per element)
//   l2norm:          y and 1/norm per row
//   rms_norm_gated:  x, z, weight and 1/rms per row
//   gdn_gate:        a, b, A_log, dt_bias (g and beta are recomputed)
//   gated_delta_rule recurrent: q, k, v, g, beta, initial_state (the kernel recomputes states from checkpoints)
//   gated_delta_rule chunked:   q, k, v, g, beta and the state at the start of every chunk [B,Hv,NC,K,V]
//                               (what FLA saves; per-token states are never stored)
// Non-contiguous inputs are made contiguous first (a recorded copy, so gradients still reach the original view).
#include "ops/gated_deltanet.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "core/dispatch.h"
#include "ops/creation.h"

namespace gdn {

namespace {

Tensor contiguous_or_undefined(const Tensor& t) { return t.defined() ? contiguous(t) : Tensor(); }
Tensor detach_or_undefined(const Tensor& t) { return t.defined() ? t.detach() : Tensor(); }
Tensor empty_like_or_undefined(const Tensor& t) { return t.defined() ? empty_like(t) : Tensor(); }

void check_float_dtype(const char* op, const Tensor& ref, const Tensor& t, const char* name) {
  if (!t.defined()) return;
  GDN_CHECK(t.dtype() == ref.dtype(), "{}: {} is {} but the inputs are {}", op, name, t.dtype(), ref.dtype());
  GDN_CHECK(t.device() == ref.device(), "{}: {} is on {} but the inputs are on {}", op, name, t.device(),
            ref.device());
}

// The parameters (and states) of an op whose activation input may be stored in bfloat16: in its arithmetic dtype.
void check_arithmetic_dtype(const char* op, const Tensor& ref, const Tensor& t, const char* name) {
  if (!t.defined()) return;
  const DType ad = arithmetic_dtype(ref.dtype());
  GDN_CHECK(t.dtype() == ad, "{}: {} is {} but the inputs compute in {}", op, name, t.dtype(), ad);
  GDN_CHECK(t.device() == ref.device(), "{}: {} is on {} but the inputs are on {}", op, name, t.device(),
            ref.device());
}

// float32 or float64, or bfloat16 storage of float32 arithmetic.
bool float_or_bf16(DType t) { return t == kFloat32 || t == kFloat64 || t == kBFloat16; }

}  // namespace

std::vector<Tensor> causal_conv1d_parts(const Tensor& x, const Tensor& weight, const std::vector<int64_t>& sizes,
                                        const Tensor& bias, bool silu, const Tensor& initial_state,
                                        Tensor* final_state) {
  GDN_CHECK(x.dim() == 3, "causal_conv1d: x must be [B,T,C], got {}", shape_str(x.shape()));
  GDN_CHECK(float_or_bf16(x.dtype()), "causal_conv1d: x must be float32, float64 or bfloat16, got {}", x.dtype());
  const int64_t B = x.size(0), C = x.size(2);
  GDN_CHECK(weight.dim() == 2 && weight.size(0) == C && weight.size(1) >= 1,
            "causal_conv1d: weight must be [C={},W], got {}", C, shape_str(weight.shape()));
  const int64_t W = weight.size(1);
  GDN_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == C), "causal_conv1d: bias must be [C={}], got {}",
            C, shape_str(bias.shape()));
  GDN_CHECK(!initial_state.defined() || initial_state.shape() == Shape({B, C, W - 1}),
            "causal_conv1d: initial_state must be [B,C,W-1] = [{}, {}, {}], got {}", B, C, W - 1,
            shape_str(initial_state.shape()));
  check_arithmetic_dtype("causal_conv1d", x, weight, "weight");
  check_arithmetic_dtype("causal_conv1d", x, bias, "bias");
  check_arithmetic_dtype("causal_conv1d", x, initial_state, "initial_state");
  int64_t total = 0;
  for (int64_t s : sizes) {
    GDN_CHECK(s >= 0, "causal_conv1d: part sizes must not be negative, got {}", s);
    total += s;
  }
  GDN_CHECK(total == C && !sizes.empty() && sizes.size() <= 4, "causal_conv1d: {} parts of {} channels for C = {}",
            sizes.size(), total, C);

  Tensor xc = contiguous(x), wc = contiguous(weight), bc = contiguous_or_undefined(bias);
  Tensor ic = contiguous_or_undefined(initial_state);
  const DType ad = arithmetic_dtype(x.dtype());  // of the outputs and the final state
  std::vector<Tensor> ys;
  for (int64_t s : sizes) ys.push_back(Tensor::empty({B, x.size(1), s}, ad, x.device()));
  Tensor fin = final_state ? Tensor::empty({B, C, W - 1}, ad, x.device()) : Tensor();
  kernels::causal_conv1d_forward(x.device(), ys, fin, xc, wc, bc, ic, silu);
  if (final_state) *final_state = fin;
  record("causal_conv1d", ys, {xc, wc, bc, ic},
         [xc = xc.detach(), wc = wc.detach(), bc = detach_or_undefined(bc), ic = detach_or_undefined(ic), sizes,
          silu](const TensorList& g) -> TensorList {
           // dx in x's dtype (bfloat16 x: a bf16 gradient, the operand of its producer's bf16 GEMMs).
           Tensor dx = empty_like(xc), dw = empty_like(wc), db = empty_like_or_undefined(bc),
                  di = empty_like_or_undefined(ic);
           std::vector<Tensor> dys;
           for (size_t i = 0; i < sizes.size(); ++i)
             dys.push_back(g[i].defined() ? contiguous(g[i])
                                          : zeros({xc.size(0), xc.size(1), sizes[i]}, wc.dtype(), xc.device()));
           kernels::causal_conv1d_backward(xc.device(), dx, dw, db, di, dys, xc, wc, bc, ic, silu);
           return {dx, dw, db, di};
         });
  return ys;
}

Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, bool silu, const Tensor& initial_state,
                     Tensor* final_state) {
  GDN_CHECK(x.dim() == 3, "causal_conv1d: x must be [B,T,C], got {}", shape_str(x.shape()));
  return causal_conv1d_parts(x, weight, {x.size(2)}, bias, silu, initial_state, final_state)[0];
}

Tensor l2norm(const Tensor& x, double eps) {
  GDN_CHECK(x.dim() >= 1 && x.size(-1) >= 1, "l2norm: needs a non-empty last dimension, got {}",
            shape_str(x.shape()));
  GDN_CHECK(eps >= 0, "l2norm: eps must be >= 0, got {}", eps);
  Tensor xc = contiguous(x);
  Tensor y = empty_like(xc);
  Tensor rstd = Tensor::empty({x.numel() / x.size(-1)}, x.dtype(), x.device());
  kernels::l2norm_forward(x.device(), y, rstd, xc, eps);
  record("l2norm", {y}, {xc}, [y = y.detach(), rstd](const TensorList& g) -> TensorList {
    Tensor dx = empty_like(y);
    kernels::l2norm_backward(y.device(), dx, contiguous(g[0]), y, rstd);
    return {dx};
  });
  return y;
}

Tensor rms_norm_gated(const Tensor& x, const Tensor& z, const Tensor& weight, double eps, std::optional<DType> out) {
  GDN_CHECK(x.dim() >= 1, "rms_norm_gated: x must have a last dimension");
  const int64_t V = x.size(-1);
  GDN_CHECK(z.shape() == x.shape(), "rms_norm_gated: z {} must match x {}", shape_str(z.shape()),
            shape_str(x.shape()));
  GDN_CHECK(weight.dim() == 1 && weight.size(0) == V, "rms_norm_gated: weight must be [V={}], got {}", V,
            shape_str(weight.shape()));
  GDN_CHECK(z.dtype() == x.dtype() || (z.dtype() == kBFloat16 && x.dtype() == kFloat32),
            "rms_norm_gated: z is {} for {} x (x's dtype, or bfloat16 for float32 x)", z.dtype(), x.dtype());
  GDN_CHECK(z.device() == x.device(), "rms_norm_gated: z is on {} but x is on {}", z.device(), x.device());
  check_float_dtype("rms_norm_gated", x, weight, "weight");
  Tensor xc = contiguous(x), zc = contiguous(z), wc = contiguous(weight);
  Tensor y = Tensor::empty(xc.shape(), output_dtype("rms_norm_gated", x, out), x.device());
  Tensor rstd = Tensor::empty({x.numel() / V}, x.dtype(), x.device());
  kernels::rms_norm_gated_forward(x.device(), y, rstd, xc, zc, wc, eps);
  record("rms_norm_gated", {y}, {xc, zc, wc},
         [xc = xc.detach(), zc = zc.detach(), wc = wc.detach(), rstd](const TensorList& g) -> TensorList {
           // dz in z's dtype (bfloat16 z: a bf16 gradient, the operand of its producer's bf16 GEMMs).
           Tensor dx = empty_like(xc), dz = empty_like(zc), dw = empty_like(wc);
           kernels::rms_norm_gated_backward(xc.device(), dx, dz, dw, contiguous(to_dtype(g[0], xc.dtype())), xc, zc,
                                            wc, rstd);
           return {dx, dz, dw};
         });
  return y;
}

namespace {

// Where gdn_gate's backward writes da and db: when a and b are the two halves of the rows of one [.., 2H] tensor (the
// layer's b | a, split), the same halves of one fresh contiguous [.., 2H] buffer, which split's backward then takes as
// the gradient of the whole with no copy (ops/shape_ops.h); else two contiguous tensors.
std::pair<Tensor, Tensor> gate_input_grads(const Tensor& a, const Tensor& b) {
  const int64_t H = a.size(-1);
  const bool halves = a.storage() == b.storage() && a.row_stride() == 2 * H && b.row_stride() == 2 * H &&
                      std::abs(a.offset() - b.offset()) == H;
  if (!halves) return {empty_like(a), empty_like(b)};
  Shape whole = a.shape();
  whole.back() = 2 * H;
  const Tensor buf = Tensor::empty(whole, a.dtype(), a.device());
  const Strides st = contiguous_strides(whole);
  const int64_t first = std::min(a.offset(), b.offset());
  return {buf.as_strided(a.shape(), st, a.offset() - first), buf.as_strided(b.shape(), st, b.offset() - first)};
}

}  // namespace

std::pair<Tensor, Tensor> gdn_gate(const Tensor& a, const Tensor& b, const Tensor& A_log, const Tensor& dt_bias) {
  GDN_CHECK(a.dim() >= 1 && a.shape() == b.shape(), "gdn_gate: a {} and b {} must be [B,T,Hv] of equal shape",
            shape_str(a.shape()), shape_str(b.shape()));
  const int64_t H = a.size(-1);
  GDN_CHECK(A_log.dim() == 1 && A_log.size(0) == H, "gdn_gate: A_log must be [Hv={}], got {}", H,
            shape_str(A_log.shape()));
  GDN_CHECK(dt_bias.dim() == 1 && dt_bias.size(0) == H, "gdn_gate: dt_bias must be [Hv={}], got {}", H,
            shape_str(dt_bias.shape()));
  GDN_CHECK(float_or_bf16(a.dtype()), "gdn_gate: a must be float32, float64 or bfloat16, got {}", a.dtype());
  check_float_dtype("gdn_gate", a, b, "b");
  check_arithmetic_dtype("gdn_gate", a, A_log, "A_log");
  check_arithmetic_dtype("gdn_gate", a, dt_bias, "dt_bias");
  // a and b as they are when they are rows of unit stride (the layer's b | a projection split into two column
  // windows: the kernels read them in place), else contiguous copies.
  auto rows = [](const Tensor& t) { return t.row_stride() > 0 ? t : contiguous(t); };
  Tensor ac = rows(a), bc = rows(b), Ac = contiguous(A_log), dc = contiguous(dt_bias);
  const DType ad = arithmetic_dtype(a.dtype());  // of g and beta (a, b may be bfloat16 storage)
  Tensor g = Tensor::empty(a.shape(), ad, a.device()), beta = Tensor::empty(b.shape(), ad, b.device());
  kernels::gdn_gate_forward(a.device(), g, beta, ac, bc, Ac, dc);
  record("gdn_gate", {g, beta}, {ac, bc, Ac, dc},
         [ac = ac.detach(), bc = bc.detach(), Ac = Ac.detach(), dc = dc.detach()](const TensorList& grads)
             -> TensorList {
           Tensor dg = grads[0].defined() ? contiguous(grads[0]) : zeros(ac.shape(), Ac.dtype(), ac.device());
           Tensor dbeta = grads[1].defined() ? contiguous(grads[1]) : zeros(bc.shape(), Ac.dtype(), bc.device());
           auto [da, db] = gate_input_grads(ac, bc);  // in a's dtype (bfloat16 a, b: bf16 gradients)
           Tensor dA = empty_like(Ac), ddt = empty_like(dc);
           kernels::gdn_gate_backward(ac.device(), da, db, dA, ddt, dg, dbeta, ac, bc, Ac, dc);
           return {da, db, dA, ddt};
         });
  return {g, beta};
}

DeltaRuleOutput gated_delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                 const Tensor& beta, double scale, const Tensor& initial_state,
                                 bool output_final_state, DeltaRuleMode mode, int64_t chunk_size) {
  const char* op = "gated_delta_rule";
  GDN_CHECK(q.dim() == 4, "{}: q must be [B,T,Hk,K], got {}", op, shape_str(q.shape()));
  GDN_CHECK(q.dtype() == kFloat32 || q.dtype() == kFloat64, "{}: inputs must be float32 or float64, got {}", op,
            q.dtype());
  const int64_t B = q.size(0), T = q.size(1), Hk = q.size(2), K = q.size(3);
  GDN_CHECK(k.shape() == q.shape(), "{}: k {} must match q {}", op, shape_str(k.shape()), shape_str(q.shape()));
  GDN_CHECK(v.dim() == 4 && v.size(0) == B && v.size(1) == T, "{}: v must be [B={},T={},Hv,V], got {}", op, B, T,
            shape_str(v.shape()));
  const int64_t Hv = v.size(2), V = v.size(3);
  GDN_CHECK(Hk >= 1 && Hv % Hk == 0, "{}: value heads Hv={} must be a multiple of key heads Hk={}", op, Hv, Hk);
  GDN_CHECK(g.shape() == Shape({B, T, Hv}), "{}: g must be [B,T,Hv] = [{}, {}, {}], got {}", op, B, T, Hv,
            shape_str(g.shape()));
  GDN_CHECK(beta.shape() == Shape({B, T, Hv}), "{}: beta must be [B,T,Hv] = [{}, {}, {}], got {}", op, B, T, Hv,
            shape_str(beta.shape()));
  GDN_CHECK(!initial_state.defined() || initial_state.shape() == Shape({B, Hv, K, V}),
            "{}: initial_state must be [B,Hv,K,V] = [{}, {}, {}, {}], got {}", op, B, Hv, K, V,
            shape_str(initial_state.shape()));
  GDN_CHECK(std::isfinite(scale), "{}: scale must be finite, got {}", op, scale);
  GDN_CHECK(mode == DeltaRuleMode::Recurrent || chunk_size >= 1, "{}: chunk_size must be >= 1, got {}", op,
            chunk_size);
  check_float_dtype(op, q, k, "k");
  check_float_dtype(op, q, v, "v");
  check_float_dtype(op, q, g, "g");
  check_float_dtype(op, q, beta, "beta");
  check_float_dtype(op, q, initial_state, "initial_state");

  Tensor qc = contiguous(q), kc = contiguous(k), vc = contiguous(v), gc = contiguous(g), bc = contiguous(beta);
  Tensor s0 = contiguous_or_undefined(initial_state);
  const TensorList inputs = {qc, kc, vc, gc, bc, s0};
  const Device dev = q.device();
  Tensor o = Tensor::empty({B, T, Hv, V}, q.dtype(), dev);
  Tensor final_state = output_final_state ? Tensor::empty({B, Hv, K, V}, q.dtype(), dev) : Tensor();

  // The backward's gradients, shared by both modes: dq, dk, dv, dg, dbeta, dS0 (when S0 was given).
  auto allocate_grads = [](const Tensor& qd, const Tensor& kd, const Tensor& vd, const Tensor& gd, const Tensor& bd,
                           const Tensor& sd) {
    return TensorList{empty_like(qd), empty_like(kd), empty_like(vd),
                      empty_like(gd), empty_like(bd), empty_like_or_undefined(sd)};
  };
  // Cotangents: do (zeros when only the final state received a gradient) and dS_T (undefined = 0).
  auto cotangents = [o_shape = o.shape(), dtype = q.dtype(), dev](const TensorList& grads) {
    Tensor d_o = grads[0].defined() ? contiguous(grads[0]) : zeros(o_shape, dtype, dev);
    Tensor d_s = grads.size() > 1 && grads[1].defined() ? contiguous(grads[1]) : Tensor();
    return std::pair{d_o, d_s};
  };

  if (mode == DeltaRuleMode::Recurrent) {
    kernels::gated_delta_rule_recurrent_forward(dev, o, final_state, qc, kc, vc, gc, bc, s0, scale);
    record("gated_delta_rule_recurrent", {o, final_state}, inputs,
           [qc = qc.detach(), kc = kc.detach(), vc = vc.detach(), gc = gc.detach(), bc = bc.detach(),
            s0 = detach_or_undefined(s0), scale, allocate_grads,
            cotangents](const TensorList& grads) -> TensorList {
             auto [d_o, d_s] = cotangents(grads);
             TensorList d = allocate_grads(qc, kc, vc, gc, bc, s0);
             kernels::gated_delta_rule_recurrent_backward(qc.device(), d[0], d[1], d[2], d[3], d[4], d[5], d_o, d_s,
                                                          qc, kc, vc, gc, bc, s0, scale);
             return d;
           });
    return {o, final_state};
  }

  const int64_t n_chunks = (T + chunk_size - 1) / chunk_size;
  Tensor chunk_states =
      needs_grad(inputs) ? Tensor::empty({B, Hv, n_chunks, K, V}, q.dtype(), dev) : Tensor();
  // saved: the backend's per-chunk scratch of the forward (W, U, ... on CUDA), kept for the backward instead of
  // being recomputed there.
  std::vector<Tensor> saved;
  kernels::gated_delta_rule_chunked_forward(dev, o, final_state, chunk_states, qc, kc, vc, gc, bc, s0, scale,
                                            chunk_size, chunk_states.defined() ? &saved : nullptr);
  record("gated_delta_rule_chunked", {o, final_state}, inputs,
         [qc = qc.detach(), kc = kc.detach(), vc = vc.detach(), gc = gc.detach(), bc = bc.detach(),
          s0 = detach_or_undefined(s0), chunk_states, saved = std::move(saved), scale, chunk_size, allocate_grads,
          cotangents](const TensorList& grads) -> TensorList {
           auto [d_o, d_s] = cotangents(grads);
           TensorList d = allocate_grads(qc, kc, vc, gc, bc, s0);
           kernels::gated_delta_rule_chunked_backward(qc.device(), d[0], d[1], d[2], d[3], d[4], d[5], d_o, d_s, qc,
                                                      kc, vc, gc, bc, chunk_states, scale, chunk_size, saved);
           return d;
         });
  return {o, final_state};
}

}  // namespace gdn
