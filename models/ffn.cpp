// models/ffn.cpp — see ffn.h.
#include "models/ffn.h"

#include <algorithm>
#include <numeric>

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
  return linear(silu(linear(x, gate_proj)) * linear(x, up_proj), down_proj);
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

std::vector<int64_t> top_k_rows(const Tensor& probs, int64_t k) {
  const int64_t N = probs.size(0), E = probs.size(1);
  std::vector<double> p = probs.to_double_vector();
  std::vector<int64_t> ids(N * k);
  std::vector<int64_t> order(E);
  for (int64_t n = 0; n < N; ++n) {
    std::iota(order.begin(), order.end(), 0);
    const double* row = p.data() + n * E;
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [row](int64_t a, int64_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
    std::copy(order.begin(), order.begin() + k, ids.begin() + n * k);
  }
  return ids;
}

MoEOutput MoE::forward(const Tensor& x) const {
  const int64_t D = x.size(-1), E = static_cast<int64_t>(experts.size());
  Tensor xf = reshape(x, {-1, D});  // [N,D]
  const int64_t N = xf.size(0);
  Tensor probs = softmax(linear(xf, router), -1);  // [N,E]

  std::vector<int64_t> chosen;
  {
    NoGradGuard no_grad;
    chosen = top_k_rows(to_device(probs, kCPU), top_k);
  }
  // Constant one-hot mask of the chosen experts, the per-expert row lists and the routing fractions.
  std::vector<double> mask(N * E, 0.0);
  std::vector<std::vector<int64_t>> rows(E);
  MoEOutput out;
  out.expert_tokens.assign(E, 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t s = 0; s < top_k; ++s) {
      int64_t e = chosen[n * top_k + s];
      mask[n * E + e] = 1.0;
      rows[e].push_back(n);
      out.expert_tokens[e]++;
    }
  Tensor weights = probs * Tensor::from_vector(mask, {N, E}, x.dtype(), x.device());
  if (renormalize) weights = weights / sum(weights, {-1}, /*keepdim=*/true);
  Tensor weights_flat = reshape(weights, {N * E, 1});

  std::vector<Tensor> expert_out;
  std::vector<int64_t> all_rows;
  for (int64_t e = 0; e < E; ++e) {
    if (rows[e].empty()) continue;
    const int64_t M = static_cast<int64_t>(rows[e].size());
    Tensor idx = Tensor::from_int64(rows[e], {M}, x.device());
    std::vector<int64_t> flat(M);
    for (int64_t i = 0; i < M; ++i) flat[i] = rows[e][i] * E + e;
    Tensor w = gather_rows(weights_flat, Tensor::from_int64(flat, {M}, x.device()));  // [M,1]
    expert_out.push_back(experts[e].forward(gather_rows(xf, idx)) * w);
    all_rows.insert(all_rows.end(), rows[e].begin(), rows[e].end());
  }
  Tensor idx_all = Tensor::from_int64(all_rows, {static_cast<int64_t>(all_rows.size())}, x.device());
  Tensor y = scatter_add_rows(concat(expert_out, 0), idx_all, N);
  if (has_shared) y = y + sigmoid(linear(xf, shared_gate)) * shared.forward(xf);

  std::vector<double> frac(E);
  for (int64_t e = 0; e < E; ++e) frac[e] = static_cast<double>(out.expert_tokens[e]) / static_cast<double>(N * top_k);
  Tensor f = Tensor::from_vector(frac, {E}, x.dtype(), x.device());
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
