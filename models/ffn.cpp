// models/ffn.cpp — see ffn.h.
#include "models/ffn.h"

#include "ops/ops.h"

namespace gdn {

Tensor InitContext::constant(const Shape& shape, double value) const {
  Tensor t = full(shape, value, dtype, device);
  t.set_requires_grad(true);
  return t;
}

SwiGLU::SwiGLU(int64_t d_model, int64_t hidden, const InitContext& init)
    : gate_proj(init.normal({hidden, d_model})),
      up_proj(init.normal({hidden, d_model})),
      down_proj(init.normal({d_model, hidden})) {}

Tensor SwiGLU::forward(const Tensor& x) const {
  // One node, one x gradient. On bf16 products gate | up come out in bfloat16: swiglu reads them with float32
  // arithmetic and returns their gradients in bfloat16, the operands of the backward's GEMMs (no copy either way);
  // it writes its output in bfloat16 where down_proj multiplies bf16 copies.
  const bool bf16 = input_dtype(x) == kBFloat16;
  const std::vector<Tensor> gate_up =
      linear_multi(x, {gate_proj, up_proj}, {}, bf16 ? std::optional<DType>(kBFloat16) : std::nullopt);
  return linear(swiglu(gate_up[0], gate_up[1], linear_input_dtype(gate_up[0], down_proj.size(0))), down_proj);
}

DType SwiGLU::input_dtype(const Tensor& x) const {
  return linear_input_dtype(x, gate_proj.size(0) + up_proj.size(0));
}

void SwiGLU::parameters(ParameterList& out, const std::string& prefix) const {
  add_param(out, prefix + "gate_proj.weight", gate_proj, true);
  add_param(out, prefix + "up_proj.weight", up_proj, true);
  add_param(out, prefix + "down_proj.weight", down_proj, true);
}

MoE::MoE(const ModelConfig& cfg, const InitContext& init)
    : router(init.normal({cfg.n_experts, cfg.d_model})),
      top_k(cfg.moe_top_k),
      renormalize(cfg.moe_renormalize),
      has_shared(cfg.moe_shared_expert) {
  for (int64_t e = 0; e < cfg.n_experts; ++e) experts.emplace_back(cfg.d_model, cfg.moe_ffn_dim, init);
  if (has_shared) {
    shared = SwiGLU(cfg.d_model, cfg.moe_ffn_dim, init);
    shared_gate = init.normal({1, cfg.d_model});
  }
}

MoEOutput MoE::forward(const Tensor& x) const {
  const int64_t D = x.size(-1), E = static_cast<int64_t>(experts.size()), k = top_k;
  Tensor xf = reshape(x, {-1, D});  // [N,D]
  const int64_t N = xf.size(0);
  Tensor probs = softmax(linear(xf, router), -1);  // [N,E]
  MoERouting r;
  {
    NoGradGuard no_grad;
    r = moe_routing(probs, k);  // on the device: ids, plan and counts
  }
  // Gate weights of the (token, slot) pairs, [N,k]: the chosen probabilities, renormalised per token if configured.
  Tensor w = reshape(gather_rows(reshape(probs, {N * E, 1}), r.flat), {N, k});
  if (renormalize) w = w / sum(w, {-1}, /*keepdim=*/true);
  Tensor w_rows = gather_rows(reshape(w, {N * k, 1}), r.order);  // [M,1], M = N*k, rows grouped by expert

  // Every expert at once on its rows of the grouped batch [M,D] (one grouped GEMM per projection).
  std::vector<Tensor> gate_w, up_w, down_w;
  for (const SwiGLU& ex : experts) {
    gate_w.push_back(ex.gate_proj);
    up_w.push_back(ex.up_proj);
    down_w.push_back(ex.down_proj);
  }
  Tensor xs = gather_rows(xf, r.tokens);  // [M,D]
  Tensor h = swiglu(grouped_linear(xs, gate_w, r.offsets), grouped_linear(xs, up_w, r.offsets));  // [M,F]
  Tensor y = scatter_add_rows(grouped_linear(h, down_w, r.offsets) * w_rows, r.tokens, N);        // [N,D]
  if (has_shared) y = y + sigmoid(linear(xf, shared_gate)) * shared.forward(xf);

  MoEOutput out;
  out.expert_tokens = r.counts;
  Tensor f = to_dtype(r.counts, x.dtype()) * (1.0 / static_cast<double>(N * k));  // routed fraction, constant
  out.aux_loss = sum(f * mean(probs, {0})) * static_cast<double>(E);
  out.y = reshape(y, x.shape());
  return out;
}

void MoE::parameters(ParameterList& out, const std::string& prefix) const {
  add_param(out, prefix + "router.weight", router, true);
  for (size_t e = 0; e < experts.size(); ++e) experts[e].parameters(out, prefix + "experts." + std::to_string(e) + ".");
  if (has_shared) {
    shared.parameters(out, prefix + "shared_expert.");
    add_param(out, prefix + "shared_expert_gate.weight", shared_gate, true);
  }
}

}  // namespace gdn
