// models/gated_deltanet_layer.cpp — see gated_deltanet_layer.h.
//
// Gate initialisation follows FLA: A ~ U(0, 16), A_log = log A; dt log-uniform in [1e-3, 0.1],
// dt_bias = softplus^-1(dt) = dt + log(-expm1(-dt)), so that softplus(dt_bias) = dt at the start of training.
#include "models/gated_deltanet_layer.h"

#include <cmath>

#include "ops/ops.h"

namespace gdn {

GatedDeltaNetLayer::GatedDeltaNetLayer(const ModelConfig& cfg, const InitContext& init)
    : n_k_heads(cfg.n_k_heads),
      n_v_heads(cfg.n_v_heads),
      head_k_dim(cfg.head_k_dim),
      head_v_dim(cfg.head_v_dim),
      chunk_size(cfg.chunk_size),
      norm_eps(cfg.norm_eps) {
  const int64_t D = cfg.d_model, key = n_k_heads * head_k_dim, value = n_v_heads * head_v_dim;
  in_proj_qkvz = init.normal({2 * key + 2 * value, D});
  in_proj_ba = init.normal({2 * n_v_heads, D});
  conv_weight = init.normal({2 * key + value, cfg.conv_size});
  std::vector<double> a_log(n_v_heads), dt_bias_v(n_v_heads);
  for (int64_t h = 0; h < n_v_heads; ++h) {
    double A = std::max(16.0 * init.gen.uniform(), 1e-4);
    a_log[h] = std::log(A);
    double dt = std::exp(std::log(1e-3) + (std::log(0.1) - std::log(1e-3)) * init.gen.uniform());
    dt = std::max(dt, 1e-4);
    dt_bias_v[h] = dt + std::log(-std::expm1(-dt));
  }
  A_log = init.from_values(a_log);
  dt_bias = init.from_values(dt_bias_v);
  norm_weight = init.constant({head_v_dim}, 1.0);
  out_proj = init.normal({D, value});
}

Tensor GatedDeltaNetLayer::forward(const Tensor& x, LayerCache* cache) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t Hk = n_k_heads, Hv = n_v_heads, K = head_k_dim, V = head_v_dim;
  const int64_t key = Hk * K, value = Hv * V;

  std::vector<Tensor> qkv_z = split(linear(x, in_proj_qkvz), {2 * key + value, value}, -1);  // [B,T,2key+2value]
  Tensor qkv = qkv_z[0];                                        // conv input: q | k | v
  Tensor z = reshape(qkv_z[1], {B, T, Hv, V});
  std::vector<Tensor> b_a = split(linear(x, in_proj_ba), {Hv, Hv}, -1);  // [B,T,2Hv] -> b | a
  const Tensor& b = b_a[0];
  const Tensor& a = b_a[1];

  Tensor conv_final;
  Tensor mixed = causal_conv1d(qkv, conv_weight, {}, /*silu=*/true, cache ? cache->conv_state : Tensor(),
                               cache ? &conv_final : nullptr);
  std::vector<Tensor> parts = split(mixed, {key, key, value}, -1);
  Tensor q = l2norm(reshape(parts[0], {B, T, Hk, K}));
  Tensor k = l2norm(reshape(parts[1], {B, T, Hk, K}));
  Tensor v = reshape(parts[2], {B, T, Hv, V});
  auto [g, beta] = gdn_gate(a, b, A_log, dt_bias);

  // Generation feeds one token at a time: the recurrent form is the cheaper one there.
  DeltaRuleMode mode = (cache && T < chunk_size) ? DeltaRuleMode::Recurrent : DeltaRuleMode::Chunked;
  DeltaRuleOutput rule = gated_delta_rule(q, k, v, g, beta, 1.0 / std::sqrt(static_cast<double>(K)),
                                          cache ? cache->ssm_state : Tensor(), /*output_final_state=*/cache != nullptr,
                                          mode, chunk_size);
  if (cache) {
    cache->conv_state = conv_final;
    cache->ssm_state = rule.final_state;
  }
  Tensor o = rms_norm_gated(rule.o, z, norm_weight, norm_eps);  // [B,T,Hv,V]
  return linear(reshape(o, {B, T, value}), out_proj);
}

void GatedDeltaNetLayer::parameters(ParameterList& out, const std::string& prefix) const {
  add_param(out, prefix + "in_proj_qkvz.weight", in_proj_qkvz, true);
  add_param(out, prefix + "in_proj_ba.weight", in_proj_ba, true);
  add_param(out, prefix + "conv1d.weight", conv_weight, true);
  add_param(out, prefix + "A_log", A_log, false);
  add_param(out, prefix + "dt_bias", dt_bias, false);
  add_param(out, prefix + "norm.weight", norm_weight, false);
  add_param(out, prefix + "out_proj.weight", out_proj, true);
}

}  // namespace gdn
