// models/language_model.cpp — see language_model.h.
#include "models/language_model.h"

#include <optional>
#include <tuple>

#include "autograd/grad_mode.h"
#include "ops/ops.h"

namespace gdn {

void validate_model_config(const ModelConfig& c) {
  GDN_USER_CHECK(c.vocab_size > 0 && c.d_model > 0 && c.n_layers > 0, "model sizes must be positive");
  GDN_USER_CHECK(c.n_k_heads > 0 && c.n_v_heads > 0 && c.n_v_heads % c.n_k_heads == 0,
                 "n_v_heads ({}) must be a positive multiple of n_k_heads ({})", c.n_v_heads, c.n_k_heads);
  GDN_USER_CHECK(c.head_k_dim > 0 && c.head_v_dim > 0 && c.conv_size > 0 && c.ffn_dim > 0 && c.chunk_size > 0,
                 "head dims, conv_size, ffn_dim and chunk_size must be positive");
  GDN_USER_CHECK(!c.is_moe() || (c.moe_top_k >= 1 && c.moe_top_k <= c.n_experts && c.moe_ffn_dim > 0),
                 "moe_top_k must be in [1, n_experts] and moe_ffn_dim positive");
}

GatedDeltaNetLM::GatedDeltaNetLM(const ModelConfig& cfg, uint64_t seed, DType dtype, Device device)
    : cfg_(cfg), dtype_(dtype), device_(device) {
  validate_model_config(cfg);
  Generator gen(seed);
  InitContext init{gen, dtype, device, cfg.init_std};
  embed_ = init.normal({cfg.vocab_size, cfg.d_model});
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    Block b;
    b.attn_norm = init.constant({cfg.d_model}, 1.0);
    b.attn = GatedDeltaNetLayer(cfg, init);
    b.ffn_norm = init.constant({cfg.d_model}, 1.0);
    if (cfg.is_moe())
      b.moe = MoE(cfg, init);
    else
      b.mlp = SwiGLU(cfg.d_model, cfg.ffn_dim, init);
    blocks_.push_back(std::move(b));
  }
  final_norm_ = init.constant({cfg.d_model}, 1.0);
  lm_head_ = cfg.tie_embeddings ? embed_ : init.normal({cfg.vocab_size, cfg.d_model});
}

Tensor GatedDeltaNetLM::trunk(const Tensor& ids, ModelCache* cache, ModelOutput& out) const {
  GDN_CHECK(ids.dim() == 2, "forward: ids must be [B,T], got {}", shape_str(ids.shape()));
  if (cache && cache->layers.empty()) cache->layers.resize(blocks_.size());
  // The residual stream x and the normalised input y of the next sublayer: each residual add is fused with the norm
  // that follows it (add_rms_norm: the attention's norm of the next block, or the final norm after the last). Each
  // norm writes y in the dtype its reader's products want (bfloat16 under bf16 products: no copy for the GEMM).
  Tensor x = embedding(embed_, ids);  // [B,T,D]
  const double eps = cfg_.norm_eps;
  // The dtype of the input of block l's attention (l = blocks_.size(): of lm_head) and of its FFN.
  auto attn_dtype = [&](size_t l) {
    return l < blocks_.size() ? blocks_[l].attn.input_dtype(x) : linear_input_dtype(x, lm_head_.size(0));
  };
  auto ffn_dtype = [&](size_t l) { return cfg_.is_moe() ? x.dtype() : blocks_[l].mlp.input_dtype(x); };
  Tensor y = rms_norm(x, blocks_.empty() ? final_norm_ : blocks_[0].attn_norm, eps, attn_dtype(0));
  std::vector<Tensor> aux;
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& b = blocks_[l];
    const Tensor& next_norm = l + 1 < blocks_.size() ? blocks_[l + 1].attn_norm : final_norm_;
    Tensor h;
    std::tie(x, h) =
        add_rms_norm(x, b.attn.forward(y, cache ? &cache->layers[l] : nullptr), b.ffn_norm, eps, ffn_dtype(l));
    Tensor f;
    if (cfg_.is_moe()) {
      MoEOutput m = b.moe.forward(h);
      f = m.y;
      aux.push_back(m.aux_loss);
      out.expert_tokens.push_back(std::move(m.expert_tokens));
    } else {
      f = b.mlp.forward(h);
    }
    std::tie(x, y) = add_rms_norm(x, f, next_norm, eps, attn_dtype(l + 1));
  }
  if (!aux.empty()) {
    Tensor total = aux[0];
    for (size_t i = 1; i < aux.size(); ++i) total = total + aux[i];
    out.aux_loss = total * (1.0 / static_cast<double>(aux.size()));
  }
  return y;
}

std::vector<Tensor> GatedDeltaNetLM::product_weights() const {
  std::vector<Tensor> w;
  for (const Block& b : blocks_) {
    w.insert(w.end(), {b.attn.in_proj, b.attn.in_proj_gate, b.attn.out_proj});
    if (!cfg_.is_moe()) w.insert(w.end(), {b.mlp.gate_proj, b.mlp.up_proj, b.mlp.down_proj});
  }
  w.push_back(lm_head_);
  return w;
}

ModelOutput GatedDeltaNetLM::forward(const Tensor& ids, ModelCache* cache) const {
  const Bf16WeightCopies::Scope bf16 = bf16_copies_.refresh(product_weights(), ids.numel());
  ModelOutput out;
  out.logits = linear(trunk(ids, cache, out), lm_head_);
  return out;
}

LossOutput GatedDeltaNetLM::loss(const Tensor& ids, const Tensor& targets, bool fused_head) const {
  const Bf16WeightCopies::Scope bf16 = bf16_copies_.refresh(product_weights(), ids.numel());
  ModelOutput m;
  Tensor h = trunk(ids, nullptr, m);
  LossOutput out;
  if (fused_head) {
    out.ce = linear_cross_entropy(h, lm_head_, targets);
  } else {
    // On bf16 products a training step's logits are stored in bfloat16: the cross-entropy reads them with float32
    // arithmetic and writes their gradient in bfloat16, the lm_head backward's operand (no float32 [N, V] tensor
    // either way, and no copy). Evaluation (no gradients) keeps float32 logits.
    const bool bf16_logits = GradMode::enabled() && linear_input_dtype(h, lm_head_.size(0)) == kBFloat16;
    out.logits = linear(h, lm_head_, bf16_logits ? std::optional<DType>(kBFloat16) : std::nullopt);
    out.ce = cross_entropy(out.logits, targets);
  }
  out.loss = out.ce;
  if (m.aux_loss.defined()) {
    out.aux_loss = m.aux_loss;
    out.loss = out.ce + m.aux_loss * cfg_.moe_aux_loss_coef;
  }
  out.expert_tokens = std::move(m.expert_tokens);
  return out;
}

ParameterList GatedDeltaNetLM::parameters() const {
  ParameterList p;
  add_param(p, "embed.weight", embed_, true);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const Block& b = blocks_[l];
    std::string prefix = "layers." + std::to_string(l) + ".";
    add_param(p, prefix + "attn_norm.weight", b.attn_norm, false);
    b.attn.parameters(p, prefix + "attn.");
    add_param(p, prefix + "ffn_norm.weight", b.ffn_norm, false);
    if (cfg_.is_moe())
      b.moe.parameters(p, prefix + "moe.");
    else
      b.mlp.parameters(p, prefix + "mlp.");
  }
  add_param(p, "norm.weight", final_norm_, false);
  if (!cfg_.tie_embeddings) add_param(p, "lm_head.weight", lm_head_, true);
  return p;
}

int64_t GatedDeltaNetLM::num_embedding_parameters() const {
  return embed_.numel() + (cfg_.tie_embeddings ? 0 : lm_head_.numel());
}

int64_t GatedDeltaNetLM::num_parameters(bool include_embeddings) const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.value.numel();
  return include_embeddings ? n : n - num_embedding_parameters();
}

}  // namespace gdn
