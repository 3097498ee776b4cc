// models/language_model.h — the Gated DeltaNet language model (Qwen3-Next style, every layer linear attention).
//
//   tokens [B,T] -> embed [V,D]
//   L times:  x = x + GatedDeltaNet(RMSNorm(x));  x = x + FFN(RMSNorm(x))   (FFN = SwiGLU or MoE)
//   RMSNorm -> lm_head [V,D] (untied by default) -> logits [B,T,V]
//   loss = mean next-token cross-entropy (+ moe_aux_loss_coef * mean over layers of the load-balancing loss)
// forward() with a ModelCache runs the recurrent path used by generation (state in, state out).
// With ModelConfig::decay_gate and ::output_gate off every token mixer is FLA's plain DeltaNet (the seed-* presets).
#pragma once

#include <vector>

#include "models/config.h"
#include "models/ffn.h"
#include "models/gated_deltanet_layer.h"
#include "ops/matmul.h"

namespace gdn {

struct Block {
  Tensor attn_norm, ffn_norm;  // [D]
  GatedDeltaNetLayer attn;
  SwiGLU mlp;                  // dense FFN
  MoE moe;                     // when the config has experts
};

struct ModelCache {
  std::vector<LayerCache> layers;
};

struct ModelOutput {
  Tensor logits;                                    // [B,T,V]
  Tensor aux_loss;                                  // scalar, undefined for dense models
  std::vector<Tensor> expert_tokens;                // per layer: [E] int64 on the device, MoE only
};

struct LossOutput {
  Tensor loss;     // what backward() is called on: cross-entropy + coef * aux
  Tensor ce;       // cross-entropy alone
  Tensor logits;   // [B,T,V]; undefined with fused_head; bfloat16 in a training step on bf16 products
  Tensor aux_loss; // undefined for dense models
  std::vector<Tensor> expert_tokens;  // per layer: [E] int64 on the device (read on the host only when logged)
};

class GatedDeltaNetLM {
 public:
  GatedDeltaNetLM(const ModelConfig& cfg, uint64_t seed, DType dtype = kFloat32, Device device = kCPU);

  ModelOutput forward(const Tensor& ids, ModelCache* cache = nullptr) const;  // ids [B,T] int64
  // targets [B,T] int64. fused_head: the lm_head and the cross-entropy as one chunked op (ops/matmul.h
  // linear_cross_entropy), which never holds the [B,T,V] logits; then LossOutput.logits stays undefined.
  LossOutput loss(const Tensor& ids, const Tensor& targets, bool fused_head = false) const;

  // Every trainable tensor with its checkpoint name (tied embeddings appear once, as embed.weight).
  ParameterList parameters() const;
  int64_t num_parameters(bool include_embeddings = true) const;
  int64_t num_embedding_parameters() const;

  const ModelConfig& config() const { return cfg_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

 private:
  // Everything but the lm_head: the final norm's output [B,T,D]; fills out's MoE fields.
  Tensor trunk(const Tensor& ids, ModelCache* cache, ModelOutput& out) const;
  // The weights of the dense products (input and output projections, SwiGLU, lm_head), gate_proj before up_proj:
  // what forward() and loss() refresh into bf16_copies_ under bf16 products (ops/matmul.h Bf16WeightCopies).
  std::vector<Tensor> product_weights() const;

  ModelConfig cfg_;
  DType dtype_;
  Device device_;
  Tensor embed_, final_norm_, lm_head_;
  std::vector<Block> blocks_;
  mutable Bf16WeightCopies bf16_copies_;
};

// Checks a config for consistency before a model is built (throws gdn::UserError).
void validate_model_config(const ModelConfig& cfg);

}  // namespace gdn
