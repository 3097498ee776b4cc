// models/config.h — the shape of a Gated DeltaNet language model.
//
// Defaults are the model of the "small" preset (train/config.cpp); docs/MATH.md has the notation. Presets and the config-file / command-line
// layer live in train/config.h; this struct only says what the network looks like.
// decay_gate and output_gate switch the two gates of the token mixer; with both off the layer is FLA's plain DeltaNet
// (models/gated_deltanet_layer.h, docs/MATH.md "The ungated variant"), the model of the seed-* presets.
#pragma once

#include <cstdint>
#include <string>

namespace gdn {

struct ModelConfig {
  int64_t vocab_size = 8192;
  int64_t d_model = 128;       // D
  int64_t n_layers = 4;        // L
  int64_t n_k_heads = 4;       // Hk
  int64_t n_v_heads = 4;       // Hv (a multiple of Hk)
  int64_t head_k_dim = 64;     // K
  int64_t head_v_dim = 64;     // V
  int64_t conv_size = 4;       // W, causal depthwise conv over q|k|v
  bool decay_gate = true;      // g = -A softplus(a + dt_bias) from in_proj_ba; false: g = 0 (alpha = 1), in_proj_b only
  bool output_gate = true;     // o normalised then times silu(z), z from in_proj_qkvz; false: no z, plain RMSNorm
  int64_t ffn_dim = 256;       // SwiGLU hidden width (2x D for small, 4x otherwise)
  bool tie_embeddings = false; // lm_head shares the embedding matrix
  double norm_eps = 1e-6;
  double init_std = 0.02;      // N(0, init_std) for linear, conv and embedding weights
  int64_t chunk_size = 64;     // C, chunk length of the training form of the delta rule

  // Mixture of experts (replaces the SwiGLU FFN in every layer when n_experts > 0).
  int64_t n_experts = 0;        // E; 0 = dense FFN
  int64_t moe_top_k = 2;
  int64_t moe_ffn_dim = 128;    // hidden width of each expert
  bool moe_renormalize = true;  // top-k probabilities renormalised to sum 1
  bool moe_shared_expert = false;
  double moe_aux_loss_coef = 0.01;

  bool is_moe() const { return n_experts > 0; }
};

}  // namespace gdn
