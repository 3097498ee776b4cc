// models/gated_deltanet_layer.h — one Gated DeltaNet token mixer in the Qwen3-Next layout.
//
//   qkvz = in_proj_qkvz(x)                       [B,T, 2*Hk*K + 2*Hv*V]  -> q | k | v | z
//   ba   = in_proj_ba(x)                         [B,T, 2*Hv]             -> b | a
//   q,k,v = silu(causal depthwise conv1d over q|k|v, width W, no bias)
//   q, k  = l2norm per head;  g, beta = gdn_gate(a, b, A_log, dt_bias)
//   o     = gated_delta_rule(q, k, v, g, beta, scale 1/sqrt(K))            [B,T,Hv,V]
//   y     = out_proj(rms_norm_gated(o, z, norm.weight))                    [B,T,D]
// With a cache (generation) the conv tail and the delta-rule state are read and written, so feeding a sequence in
// pieces gives the same outputs as feeding it whole; one token costs O(1) work.
// Under bf16 products (core/precision.h) without a cache, the decay-gated layer keeps the projection's outputs
// q | k | v, z and b | a in bfloat16 (rounded once from float32 sums): the conv, the gated norm and the gate read them
// with float32 arithmetic and write their gradients in bfloat16.
//
// The two gates can be switched off (ModelConfig::decay_gate, ::output_gate); with both off the layer is FLA's plain
// DeltaNet (docs/MATH.md, "The ungated variant"):
//   decay_gate = false:  in_proj_b(x) [B,T,Hv] -> b only, beta = sigmoid(b), g = 0 (a zero tensor passed to the same
//                        delta-rule kernels: exp(g) = 1, the state is never decayed); no A_log, no dt_bias.
//   output_gate = false: in_proj_qkv(x) [B,T, 2*Hk*K + Hv*V] -> q | k | v (no z);
//                        y = out_proj(rms_norm(o, norm.weight)), the RMSNorm per value head.
// Only the parameters a layer uses exist, under names that say what they hold (in_proj_qkv, in_proj_b), so a
// checkpoint of the ungated layer has no z rows and no gate tensors. FLA's DeltaNet has separate q_proj / k_proj /
// v_proj and q_conv1d / k_conv1d / v_conv1d: the rows of in_proj_qkv and of conv1d.weight are exactly those weights
// stacked (q rows, then k, then v), and a depthwise convolution over the stacked channels is the three separate
// convolutions, so the fused form computes the same function.
#pragma once

#include "models/config.h"
#include "models/module.h"
#include "ops/gated_deltanet.h"

namespace gdn {

struct LayerCache {
  Tensor conv_state;  // [B, 2*Hk*K + Hv*V, W-1]
  Tensor ssm_state;   // [B, Hv, K, V]
};

struct GatedDeltaNetLayer {
  Tensor in_proj;       // in_proj_qkvz [2*Hk*K + 2*Hv*V, D]; without the output gate in_proj_qkv [2*Hk*K + Hv*V, D]
  Tensor in_proj_gate;  // in_proj_ba [2*Hv, D] (b | a); without the decay gate in_proj_b [Hv, D]
  Tensor conv_weight;   // [2*Hk*K + Hv*V, W]
  Tensor A_log, dt_bias;  // [Hv] each; undefined without the decay gate
  Tensor norm_weight, out_proj;
  int64_t n_k_heads, n_v_heads, head_k_dim, head_v_dim, chunk_size;
  double norm_eps;
  bool decay_gate = true, output_gate = true;

  GatedDeltaNetLayer() = default;
  GatedDeltaNetLayer(const ModelConfig& cfg, const InitContext& init);
  // x [B,T,D] -> [B,T,D]. cache: null for training; else read (if set) and updated.
  Tensor forward(const Tensor& x, LayerCache* cache = nullptr) const;
  // The dtype in which forward wants x (its norm writes it so): bfloat16 where the input projections multiply bf16
  // copies (ops/matmul.h linear_input_dtype), else x's.
  DType input_dtype(const Tensor& x) const;
  void parameters(ParameterList& out, const std::string& prefix) const;

 private:
  void init_gate(const InitContext& init);  // A_log and dt_bias (FLA's initialisation)
};

}  // namespace gdn
