// train/hf_format.h — the Hugging Face form of a gdn.cpp model: transformers' Qwen3NextForCausalLM (every layer
// linear attention) for the weights and config, a `tokenizers` tokenizer.json for the BPE tokenizer. Export and
// import; this table is the one place that states every conversion (README "Using the model elsewhere" repeats it).
//
//   gdn.cpp name (GatedDeltaNetLM::parameters)   transformers name (model.safetensors)             conversion
//   embed.weight [V,D]                           model.embed_tokens.weight                          none
//   layers.L.attn_norm.weight [D]                model.layers.L.input_layernorm.weight              w_hf = w - 1 (1)
//   layers.L.attn.in_proj_qkvz.weight            model.layers.L.linear_attn.in_proj_qkvz.weight     row order (2)
//   layers.L.attn.in_proj_ba.weight              model.layers.L.linear_attn.in_proj_ba.weight       row order (3)
//   layers.L.attn.conv1d.weight [C,W]            model.layers.L.linear_attn.conv1d.weight [C,1,W]   reshape (4)
//   layers.L.attn.A_log [Hv], dt_bias [Hv]       model.layers.L.linear_attn.A_log, dt_bias          none (5)
//   layers.L.attn.norm.weight [V]                model.layers.L.linear_attn.norm.weight             none (6)
//   layers.L.attn.out_proj.weight                model.layers.L.linear_attn.out_proj.weight         none
//   layers.L.ffn_norm.weight                     model.layers.L.post_attention_layernorm.weight     w_hf = w - 1 (1)
//   layers.L.mlp.{gate,up,down}_proj.weight      model.layers.L.mlp.{gate,up,down}_proj.weight      none
//   layers.L.moe.router.weight [E,D]             model.layers.L.mlp.gate.weight                     none
//   layers.L.moe.experts.e.X_proj.weight         model.layers.L.mlp.experts.e.X_proj.weight         none (7)
//   layers.L.moe.shared_expert.X_proj.weight     model.layers.L.mlp.shared_expert.X_proj.weight     none (8)
//   layers.L.moe.shared_expert_gate.weight       model.layers.L.mlp.shared_expert_gate.weight       none (8)
//   norm.weight                                  model.norm.weight                                  w_hf = w - 1 (1)
//   lm_head.weight (absent when tied)            lm_head.weight (absent when tie_word_embeddings)   none
//
// (1) Qwen3NextRMSNorm computes x̂ (1 + w) with w initialised to 0; ours computes x̂ w with w initialised to 1. The
//     subtraction and addition are done in double and rounded to float32: exact (bit-identical round trip) for
//     weights in [0.5, 2] (Sterbenz), otherwise rounded to float32 once.
// (2) Ours: [q (Hk·K) | k (Hk·K) | v (Hv·V) | z (Hv·V)]. transformers (fix_query_key_value_ordering) views the
//     output as [Hk, 2K + 2rV] with r = Hv/Hk: per key head g the rows q_g (K), k_g (K), v_g (rV), z_g (rV), where
//     v_g / z_g are the r value heads g·r .. g·r+r-1. The conv channels (q|k|v after that reshuffle) are ours.
// (3) Ours: [b (Hv) | a (Hv)]. transformers: per key head g, b_g (r rows) then a_g (r rows).
// (4) nn.Conv1d(groups=C, padding=W-1) keeps the first T outputs: y[t] = Σ_w weight[c,0,w] x[t-W+1+w], ours exactly.
// (5) transformers: g = -exp(A_log) softplus(a + dt_bias), beta = σ(b); ours adds the guards A_log ≤ 80 and g ≥ -110
//     (docs/MATH.md, Gates). Export refuses a model with A_log ≥ 80 (transformers' exp would overflow there); the
//     floor on g never changes a float32 result (exp(-110) is 0 in float32 already).
// (6) Qwen3NextRMSNormGated: n ⊙ w ⊙ silu(z), plain weight initialised to 1, as ours.
// (7) Export writes one tensor per expert (the checkpoint form transformers converts on load, as Qwen3-Next's own
//     checkpoints). Import also reads the fused form mlp.experts.gate_up_proj [E,2I,D] (gate rows first) and
//     mlp.experts.down_proj [E,D,I].
// (8) transformers' Qwen3NextSparseMoeBlock always has a shared expert. A model without one is exported with a
//     shared expert of width 1 whose weights are all zero (its output is exactly 0); import reads an all-zero shared
//     expert as "no shared expert", and otherwise needs shared_expert_intermediate_size == moe_intermediate_size.
//
// Config: hidden_size = d_model, num_hidden_layers = n_layers, linear_num_key_heads / linear_num_value_heads =
// n_k_heads / n_v_heads, linear_key_head_dim / linear_value_head_dim = head_k_dim / head_v_dim,
// linear_conv_kernel_dim = conv_size, intermediate_size = ffn_dim, rms_norm_eps = norm_eps (every RMSNorm, the
// gated one included; the q/k l2norm uses 1e-6 on both sides), initializer_range = init_std, tie_word_embeddings,
// num_experts = n_experts (0: dense), num_experts_per_tok = moe_top_k, moe_intermediate_size = moe_ffn_dim,
// norm_topk_prob = moe_renormalize, router_aux_loss_coef = moe_aux_loss_coef, decoder_sparse_step = 1,
// mlp_only_layers = [], layer_types = ["linear_attention"] × L, hidden_act = "silu". The attention and rope fields
// (num_attention_heads, num_key_value_heads, head_dim, rope_parameters, max_position_embeddings) must exist but no
// layer uses them. chunk_size has no counterpart (transformers' chunked form uses 64); import takes the default.
// Import refuses, naming the field: another model_type, a layer that is not linear attention, hidden_act other than
// silu, dense layers mixed with MoE ones (mlp_only_layers, decoder_sparse_step), a shared expert of another width.
//
// Tokenizer (tokenizer.json, `tokenizers` format): model BPE with the 256 byte tokens, the merges in rank order
// ("left right" in GPT-2's byte-to-unicode alphabet) and <|endoftext|> as an added special token; no normalizer;
// pre_tokenizer Sequence[ByteLevel(use_regex=false), Split(regex, Isolated)], where the regex, run on the
// byte-level characters (one per byte), cuts exactly the chunks of our pretokenize() (train/tokenizer.h), the
// 256-byte cap included; decoder ByteLevel. Export refuses a tokenizer with two tokens of the same bytes
// (tokenizers' vocab is a map from string to id). One difference remains: tokenizers turns the literal text
// "<|endoftext|>" into the special token, which our encode() keeps as bytes.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "models/language_model.h"
#include "train/tokenizer.h"

namespace gdn {

// config.json of Qwen3NextForCausalLM for `cfg`; eot_id becomes bos/eos.
nlohmann::json hf_config_json(const ModelConfig& cfg, int64_t eot_id);
// generation_config.json.
nlohmann::json hf_generation_config_json(int64_t eot_id);
// Every tensor of model.safetensors, transformers' names and layouts, float32, in parameter order.
// gdn::UserError for what transformers cannot represent (A_log ≥ 80).
std::vector<std::pair<std::string, Tensor>> hf_tensors(const GatedDeltaNetLM& model);

// tokenizer.json; gdn::UserError when two tokens have the same bytes.
nlohmann::json hf_tokenizer_json(const BpeTokenizer& tok);
// The pre-tokenization regex (on byte-level characters, UTF-8) and the byte -> character map (UTF-8), for tests.
std::string hf_pretokenize_regex();
std::string byte_level_char(unsigned char byte);
// Our tokenizer back from a tokenizer.json of the form hf_tokenizer_json writes; gdn::UserError naming `source`
// and the first difference otherwise.
BpeTokenizer tokenizer_from_hf_json(const nlohmann::json& j, const std::string& source);

// Writes DIR/config.json, model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json.
void export_hf(const GatedDeltaNetLM& model, const BpeTokenizer& tok, const std::string& dir);

// A transformers checkpoint read back: our config, and the tensors under transformers' names (fused experts split).
struct HfCheckpoint {
  ModelConfig config;
  std::map<std::string, Tensor> tensors;
  std::string source;  // the folder, for messages
};
// Reads DIR/config.json and DIR/model.safetensors; gdn::UserError (one line, naming the field or tensor) when
// gdn.cpp cannot represent the model.
HfCheckpoint read_hf_checkpoint(const std::string& dir);
// Same from a parsed config and tensors (tests).
HfCheckpoint hf_checkpoint_from(const nlohmann::json& config, std::map<std::string, Tensor> tensors,
                                const std::string& source);
// Copies the weights into `model` (built with ckpt.config); gdn::UserError for a missing, extra or misshapen
// tensor or a non-finite value.
void load_hf_weights(GatedDeltaNetLM& model, const HfCheckpoint& ckpt);
// DIR/tokenizer.json as our tokenizer; nullopt when the file does not exist.
std::optional<BpeTokenizer> read_hf_tokenizer(const std::string& dir);

}  // namespace gdn
