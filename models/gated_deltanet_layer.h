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
  Tensor in_proj_qkvz, in_proj_ba, conv_weight, A_log, dt_bias, norm_weight, out_proj;
  int64_t n_k_heads, n_v_heads, head_k_dim, head_v_dim, chunk_size;
  double norm_eps;

  GatedDeltaNetLayer() = default;
  GatedDeltaNetLayer(const ModelConfig& cfg, const InitContext& init);
  // x [B,T,D] -> [B,T,D]. cache: null for training; else read (if set) and updated.
  Tensor forward(const Tensor& x, LayerCache* cache = nullptr) const;
  void parameters(ParameterList& out, const std::string& prefix) const;
};

}  // namespace gdn
