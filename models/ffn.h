// models/ffn.h — the feed-forward half of a block: SwiGLU, or a mixture of SwiGLU experts.
//
// SwiGLU:  y = down(silu(gate(x)) * up(x)), no biases.
// MoE (Switch/Qwen style): p = softmax(router(x)) [N,E]; each token keeps its top-k experts (weights renormalised
// to sum 1 when configured); y = sum_k p_k * Expert_k(x). Optional shared expert: y += sigmoid(w_s . x) * Shared(x).
// Dispatch runs on the model's device with static shapes and no host read (ops/moe.h): moe_routing picks the top-k
// ids and sorts the M = N*k (token, slot) pairs by expert (device offsets [E+1], counts [E]); gather_rows builds the
// grouped batch [M,D]; each projection of every expert is one grouped GEMM over the rows of its expert
// (grouped_linear); the weighted rows are scatter-added back in one scatter_add_rows. The batch order is expert by
// expert, tokens ascending within an expert, so the sums match a per-expert loop.
// Load-balancing loss: aux = E * sum_e f_e * P_e, f_e = fraction of (token, slot) pairs routed to e (constant, from
// the device counts), P_e = mean router probability of e (differentiable).
#pragma once

#include "models/config.h"
#include "models/module.h"

namespace gdn {

struct SwiGLU {
  Tensor gate_proj, up_proj, down_proj;  // [F,D], [F,D], [D,F]

  SwiGLU() = default;
  SwiGLU(int64_t d_model, int64_t hidden, const InitContext& init);
  Tensor forward(const Tensor& x) const;  // [..., D] -> [..., D]
  // The dtype in which forward wants x: bfloat16 where gate_proj | up_proj multiply bf16 copies, else x's.
  DType input_dtype(const Tensor& x) const;
  void parameters(ParameterList& out, const std::string& prefix) const;
};

struct MoEOutput {
  Tensor y;                            // [B,T,D]
  Tensor aux_loss;                     // scalar (before the coefficient)
  Tensor expert_tokens;                // [E] int64 on the device: (token, slot) pairs routed to each expert
};

struct MoE {
  Tensor router;            // [E,D]
  std::vector<SwiGLU> experts;
  SwiGLU shared;            // when moe_shared_expert
  Tensor shared_gate;       // [1,D]
  int64_t top_k = 2;
  bool renormalize = true;
  bool has_shared = false;

  MoE() = default;
  MoE(const ModelConfig& cfg, const InitContext& init);
  MoEOutput forward(const Tensor& x) const;
  void parameters(ParameterList& out, const std::string& prefix) const;
};

}  // namespace gdn
