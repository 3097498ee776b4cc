// apps/libtorch/torch_model.h — the Gated DeltaNet language model written directly in LibTorch ops (C++ API), the
// independent implementation that bench-libtorch compares gdn.cpp against (correctness and speed).
//
// Same network as models/language_model.h, same parameter names as GatedDeltaNetLM::parameters() (so a safetensors
// file written by gdn.cpp loads one to one), same math as docs/MATH.md:
//   tokens [B,T] -> embed -> L x { x += GDN(RMSNorm(x)); x += FFN(RMSNorm(x)) } -> RMSNorm -> lm_head -> CE
//   GDN:  in_proj_qkvz -> q|k|v|z; in_proj_ba -> b|a; SiLU(depthwise causal conv1d over q|k|v: torch conv1d with
//         groups = C and W-1 zeros of left padding); l2norm(q), l2norm(k);
//         g = max(-exp(min(A_log, 80)) softplus(a + dt_bias), -110), beta = sigmoid(b); o = gated delta rule
//         (below); gated RMSNorm; out_proj.
//         With decay_gate = false: in_proj_b -> b, beta = sigmoid(b), g = 0 (a zero tensor through the same chunked
//         form), no A_log / dt_bias. With output_gate = false: in_proj_qkv -> q|k|v (no z), plain RMSNorm of o.
//   FFN:  SwiGLU, or MoE (softmax router, top-k, renormalised weights, optional sigmoid-gated shared expert,
//         Switch load-balancing loss E * sum_e f_e P_e averaged over layers, times moe_aux_loss_coef).
// The delta rule is the CHUNKED WY form (docs/MATH.md, "Gated delta rule: chunked form"), as a plain loop of torch ops
// (LibTorch has no fused kernel): every chunk's decay matrix Gam, the triangular system (I + L) [W|U] = [diag(beta
// e^gam) K | diag(beta) V] (torch::linalg_solve_triangular, unit diagonal) and the intra-chunk products are computed
// for all chunks at once as batched matmuls; only the state recurrence H -> H_next runs as a loop over chunks. Torch
// autograd differentiates all of it (no hand-written backward here: that is the point of an independent check).
//
// Device-agnostic: every tensor lives on the device the parameters were loaded to (torch::Device passed in).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "models/config.h"

namespace gdn_torch {

// One named parameter, as gdn::GatedDeltaNetLM::parameters() lists it.
struct TorchParameter {
  std::string name;
  torch::Tensor value;  // a leaf with requires_grad
  bool decay;           // AdamW weight decay applies (matrices), as in gdn.cpp
};

struct TorchLossOutput {
  torch::Tensor loss;  // cross-entropy + coef * aux (what backward runs on)
  torch::Tensor ce;    // cross-entropy alone
};

class TorchGatedDeltaNetLM {
 public:
  // The parameters are taken as given (name -> tensor, moved to `device`, made leaves with requires_grad). Every
  // name the config implies must be present with the right shape and nothing else; otherwise std::runtime_error.
  TorchGatedDeltaNetLM(const gdn::ModelConfig& cfg, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       torch::Device device);

  // ids, targets [B,T] int64 (on any device; moved to the model's).
  TorchLossOutput loss(const torch::Tensor& ids, const torch::Tensor& targets) const;

  // In gdn.cpp's order, with its decay flags.
  const std::vector<TorchParameter>& parameters() const { return params_; }
  torch::Device device() const { return device_; }

 private:
  const torch::Tensor& p(const std::string& name) const;
  torch::Tensor forward_layer(const torch::Tensor& x, const std::string& prefix) const;  // GDN mixer
  torch::Tensor swiglu(const torch::Tensor& x, const std::string& prefix) const;
  torch::Tensor moe(const torch::Tensor& x, const std::string& prefix, torch::Tensor& aux) const;

  gdn::ModelConfig cfg_;
  torch::Device device_;
  std::vector<TorchParameter> params_;
  std::map<std::string, size_t> index_;
};

// The expected (name, shape, decay) list of a config, in gdn.cpp's parameter order.
struct ParameterSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool decay;
};
std::vector<ParameterSpec> parameter_specs(const gdn::ModelConfig& cfg);

// The gated delta rule, chunked WY form. q, k [B,T,Hk,K] (l2-normalised), v [B,T,Hv,V], g, beta [B,T,Hv];
// zero initial state. Returns o [B,T,Hv,V].
torch::Tensor gated_delta_rule_chunked(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const torch::Tensor& g, const torch::Tensor& beta, double scale,
                                       int64_t chunk_size);

}  // namespace gdn_torch
