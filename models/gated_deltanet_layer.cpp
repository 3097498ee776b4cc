// models/gated_deltanet_layer.cpp — see gated_deltanet_layer.h.
//
// Gate initialisation follows FLA: A ~ U(0, 16), A_log = log A; dt log-uniform in [1e-3, 0.1],
// dt_bias = softplus^-1(dt) = dt + log(-expm1(-dt)), so that softplus(dt_bias) = dt at the start of training.
// The parameters are drawn in the order in_proj, in_proj_gate, conv1d, the gate's (A_log, dt_bias), norm, out_proj;
// a layer without a gate skips its draws, so the gated layer's weights for a seed do not depend on the switches.
#include "models/gated_deltanet_layer.h"

#include <cmath>
#include <optional>
#include <tuple>

#include "ops/ops.h"

namespace gdn {

GatedDeltaNetLayer::GatedDeltaNetLayer(const ModelConfig& cfg, const InitContext& init)
    : n_k_heads(cfg.n_k_heads),
      n_v_heads(cfg.n_v_heads),
      head_k_dim(cfg.head_k_dim),
      head_v_dim(cfg.head_v_dim),
      chunk_size(cfg.chunk_size),
      norm_eps(cfg.norm_eps),
      decay_gate(cfg.decay_gate),
      output_gate(cfg.output_gate) {
  const int64_t D = cfg.d_model, key = n_k_heads * head_k_dim, value = n_v_heads * head_v_dim;
  in_proj = init.normal({2 * key + value + (output_gate ? value : 0), D});
  in_proj_gate = init.normal({(decay_gate ? 2 : 1) * n_v_heads, D});
  conv_weight = init.normal({2 * key + value, cfg.conv_size});
  if (decay_gate) init_gate(init);
  norm_weight = init.constant({head_v_dim}, 1.0);
  out_proj = init.normal({D, value});
}

void GatedDeltaNetLayer::init_gate(const InitContext& init) {
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
}

Tensor GatedDeltaNetLayer::forward(const Tensor& x, LayerCache* cache) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t Hk = n_k_heads, Hv = n_v_heads, K = head_k_dim, V = head_v_dim;
  const int64_t key = Hk * K, value = Hv * V;

  // Both input projections as one node (ops/matmul.h linear_multi): the conv input q | k | v [B,T,2key+value] and,
  // when gated, z [B,T,value] as two outputs of their own (row blocks of in_proj: no slicing copies either way), and
  // the gate input b | a [B,T,2Hv] (b [B,T,Hv] without the decay gate).
  // On bf16 products, with the decay gate and no generation cache, the outputs come out in bfloat16: the conv, the
  // gated norm and the gate read them with float32 arithmetic and return their gradients in bfloat16, the operands
  // of the projection's backward GEMMs (no copy either way). The conv's state and every output stay float32.
  const std::optional<DType> proj_dtype =
      decay_gate && cache == nullptr && input_dtype(x) == kBFloat16 ? std::optional<DType>(kBFloat16) : std::nullopt;
  const std::vector<Tensor> proj =
      output_gate ? linear_multi(x, {in_proj, in_proj_gate}, {{2 * key + value, value}, {}}, proj_dtype)
                  : linear_multi(x, {in_proj, in_proj_gate}, {}, proj_dtype);
  const Tensor& qkv = proj[0];
  const Tensor z = output_gate ? reshape(proj[1], {B, T, Hv, V}) : Tensor();
  const Tensor& gate_in = proj.back();
  // beta = sigmoid(b) and the log decay g: from the gate (b | a) with the decay gate, else g = 0 (alpha = 1), a
  // constant zero tensor that the delta rule takes like any other g.
  Tensor g, beta;
  if (decay_gate) {
    std::vector<Tensor> b_a = split(gate_in, {Hv, Hv}, -1);  // [B,T,2Hv] -> b | a
    std::tie(g, beta) = gdn_gate(b_a[1], b_a[0], A_log, dt_bias);
  } else {
    beta = sigmoid(gate_in);  // [B,T,Hv]
    g = zeros({B, T, Hv}, x.dtype(), x.device());
  }

  Tensor conv_final;
  const std::vector<Tensor> parts = causal_conv1d_parts(qkv, conv_weight, {key, key, value}, {}, /*silu=*/true,
                                                        cache ? cache->conv_state : Tensor(),
                                                        cache ? &conv_final : nullptr);  // q | k | v, each contiguous
  Tensor q = l2norm(reshape(parts[0], {B, T, Hk, K}));
  Tensor k = l2norm(reshape(parts[1], {B, T, Hk, K}));
  Tensor v = reshape(parts[2], {B, T, Hv, V});

  // Generation feeds one token at a time: the recurrent form is the cheaper one there.
  DeltaRuleMode mode = (cache && T < chunk_size) ? DeltaRuleMode::Recurrent : DeltaRuleMode::Chunked;
  DeltaRuleOutput rule = gated_delta_rule(q, k, v, g, beta, 1.0 / std::sqrt(static_cast<double>(K)),
                                          cache ? cache->ssm_state : Tensor(), /*output_final_state=*/cache != nullptr,
                                          mode, chunk_size);
  if (cache) {
    cache->conv_state = conv_final;
    cache->ssm_state = rule.final_state;
  }
  // Per value head: RMSNorm times silu(z), or RMSNorm alone without the output gate. [B,T,Hv,V], in bfloat16 where
  // out_proj multiplies bf16 copies (the norm writes the operand itself).
  const DType o_dtype = linear_input_dtype(rule.o, out_proj.size(0));
  Tensor o = output_gate ? rms_norm_gated(rule.o, z, norm_weight, norm_eps, o_dtype)
                         : rms_norm(rule.o, norm_weight, norm_eps, o_dtype);
  return linear(reshape(o, {B, T, value}), out_proj);
}

DType GatedDeltaNetLayer::input_dtype(const Tensor& x) const {
  return linear_input_dtype(x, in_proj.size(0) + in_proj_gate.size(0));
}

void GatedDeltaNetLayer::parameters(ParameterList& out, const std::string& prefix) const {
  add_param(out, prefix + (output_gate ? "in_proj_qkvz.weight" : "in_proj_qkv.weight"), in_proj, true);
  add_param(out, prefix + (decay_gate ? "in_proj_ba.weight" : "in_proj_b.weight"), in_proj_gate, true);
  add_param(out, prefix + "conv1d.weight", conv_weight, true);
  if (decay_gate) {
    add_param(out, prefix + "A_log", A_log, false);
    add_param(out, prefix + "dt_bias", dt_bias, false);
  }
  add_param(out, prefix + "norm.weight", norm_weight, false);
  add_param(out, prefix + "out_proj.weight", out_proj, true);
}

}  // namespace gdn
