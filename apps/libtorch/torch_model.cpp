// apps/libtorch/torch_model.cpp — see torch_model.h. Shapes: B batch, T time, D width, H heads, K key dim,
// V value dim, E experts, C chunk length, N number of chunks.
#include "apps/libtorch/torch_model.h"

#include <cmath>
#include <limits>
#include <set>
#include <stdexcept>

namespace gdn_torch {

namespace F = torch::nn::functional;

std::vector<ParameterSpec> parameter_specs(const gdn::ModelConfig& c) {
  const int64_t D = c.d_model, key = c.n_k_heads * c.head_k_dim, value = c.n_v_heads * c.head_v_dim;
  std::vector<ParameterSpec> s;
  auto swiglu = [&](const std::string& prefix, int64_t hidden) {
    s.push_back({prefix + "gate_proj.weight", {hidden, D}, true});
    s.push_back({prefix + "up_proj.weight", {hidden, D}, true});
    s.push_back({prefix + "down_proj.weight", {D, hidden}, true});
  };
  s.push_back({"embed.weight", {c.vocab_size, D}, true});
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string pre = "layers." + std::to_string(l) + ".";
    s.push_back({pre + "attn_norm.weight", {D}, false});
    if (c.output_gate)
      s.push_back({pre + "attn.in_proj_qkvz.weight", {2 * key + 2 * value, D}, true});
    else
      s.push_back({pre + "attn.in_proj_qkv.weight", {2 * key + value, D}, true});
    if (c.decay_gate)
      s.push_back({pre + "attn.in_proj_ba.weight", {2 * c.n_v_heads, D}, true});
    else
      s.push_back({pre + "attn.in_proj_b.weight", {c.n_v_heads, D}, true});
    s.push_back({pre + "attn.conv1d.weight", {2 * key + value, c.conv_size}, true});
    if (c.decay_gate) {
      s.push_back({pre + "attn.A_log", {c.n_v_heads}, false});
      s.push_back({pre + "attn.dt_bias", {c.n_v_heads}, false});
    }
    s.push_back({pre + "attn.norm.weight", {c.head_v_dim}, false});
    s.push_back({pre + "attn.out_proj.weight", {D, value}, true});
    s.push_back({pre + "ffn_norm.weight", {D}, false});
    if (c.is_moe()) {
      s.push_back({pre + "moe.router.weight", {c.n_experts, D}, true});
      for (int64_t e = 0; e < c.n_experts; ++e) swiglu(pre + "moe.experts." + std::to_string(e) + ".", c.moe_ffn_dim);
      if (c.moe_shared_expert) {
        swiglu(pre + "moe.shared_expert.", c.moe_ffn_dim);
        s.push_back({pre + "moe.shared_expert_gate.weight", {1, D}, true});
      }
    } else {
      swiglu(pre + "mlp.", c.ffn_dim);
    }
  }
  s.push_back({"norm.weight", {D}, false});
  if (!c.tie_embeddings) s.push_back({"lm_head.weight", {c.vocab_size, D}, true});
  return s;
}

TorchGatedDeltaNetLM::TorchGatedDeltaNetLM(const gdn::ModelConfig& cfg,
                                           const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                           torch::Device device)
    : cfg_(cfg), device_(device) {
  std::map<std::string, torch::Tensor> given;
  for (const auto& [name, t] : tensors)
    if (!given.emplace(name, t).second) throw std::runtime_error("weights: tensor '" + name + "' appears twice");
  for (const ParameterSpec& spec : parameter_specs(cfg)) {
    auto it = given.find(spec.name);
    if (it == given.end()) throw std::runtime_error("weights: missing tensor '" + spec.name + "'");
    if (it->second.sizes().vec() != spec.shape)
      throw std::runtime_error("weights: tensor '" + spec.name + "' has the wrong shape");
    torch::Tensor t = it->second.detach().to(device).contiguous().clone().set_requires_grad(true);
    index_[spec.name] = params_.size();
    params_.push_back({spec.name, t, spec.decay});
    given.erase(it);
  }
  if (!given.empty()) throw std::runtime_error("weights: unexpected tensor '" + given.begin()->first + "'");
}

const torch::Tensor& TorchGatedDeltaNetLM::p(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw std::runtime_error("no parameter '" + name + "'");
  return params_[it->second].value;
}

namespace {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * w;
}

torch::Tensor l2norm(const torch::Tensor& x, double eps = 1e-6) {
  return x * torch::rsqrt(x.pow(2).sum(-1, /*keepdim=*/true) + eps);
}

}  // namespace

torch::Tensor gated_delta_rule_chunked(const torch::Tensor& q_in, const torch::Tensor& k_in, const torch::Tensor& v_in,
                                       const torch::Tensor& g_in, const torch::Tensor& beta_in, double scale,
                                       int64_t C) {
  const int64_t B = q_in.size(0), T = q_in.size(1), Hk = q_in.size(2), K = q_in.size(3);
  const int64_t H = v_in.size(2), V = v_in.size(3);
  torch::Tensor q = q_in, k = k_in;
  if (H > Hk) {  // value head h reads key head h / (H / Hk)
    q = q.repeat_interleave(H / Hk, 2);
    k = k.repeat_interleave(H / Hk, 2);
  }
  // [B,H,T,*], T padded to a multiple of C with zeros (k = 0, beta = 0 rows leave the state alone; g = 0 keeps gam).
  const int64_t pad = (C - T % C) % C, Tp = T + pad, N = Tp / C;
  q = torch::constant_pad_nd(q.transpose(1, 2), {0, 0, 0, pad}).reshape({B, H, N, C, K});
  k = torch::constant_pad_nd(k.transpose(1, 2), {0, 0, 0, pad}).reshape({B, H, N, C, K});
  torch::Tensor v = torch::constant_pad_nd(v_in.transpose(1, 2), {0, 0, 0, pad}).reshape({B, H, N, C, V});
  torch::Tensor g = torch::constant_pad_nd(g_in.transpose(1, 2), {0, pad}).reshape({B, H, N, C});
  torch::Tensor beta = torch::constant_pad_nd(beta_in.transpose(1, 2), {0, pad}).reshape({B, H, N, C});

  auto opts = q.options();
  torch::Tensor gam = g.cumsum(-1);                                            // [B,H,N,C], non-increasing
  torch::Tensor lower_incl = torch::ones({C, C}, opts.dtype(torch::kBool)).tril();
  torch::Tensor diff = gam.unsqueeze(-1) - gam.unsqueeze(-2);                  // [..,i,j] = gam_i - gam_j
  torch::Tensor Gam = diff.masked_fill(lower_incl.logical_not(), -std::numeric_limits<double>::infinity()).exp();
  torch::Tensor L = (beta.unsqueeze(-1) * k.matmul(k.transpose(-1, -2)) * Gam).tril(-1);  // strictly lower
  torch::Tensor I = torch::eye(C, opts);
  torch::Tensor eg = gam.exp();
  torch::Tensor rhs = torch::cat({(beta * eg).unsqueeze(-1) * k, beta.unsqueeze(-1) * v}, -1);  // [..,C,K+V]
  torch::Tensor WU = torch::linalg_solve_triangular(I + L, rhs, /*upper=*/false, /*left=*/true,
                                                    /*unitriangular=*/true);
  torch::Tensor W = WU.narrow(-1, 0, K), U = WU.narrow(-1, K, V);
  torch::Tensor QK = q.matmul(k.transpose(-1, -2)) * Gam;                      // causal, decayed
  torch::Tensor gam_last = gam.select(-1, C - 1);                              // [B,H,N]
  torch::Tensor to_end = (gam_last.unsqueeze(-1) - gam).exp();                 // exp(gam_C - gam) [B,H,N,C]
  torch::Tensor decay_chunk = gam_last.exp();

  torch::Tensor S = torch::zeros({B, H, K, V}, opts);  // the state at the chunk start
  std::vector<torch::Tensor> outs;
  outs.reserve(N);
  for (int64_t n = 0; n < N; ++n) {
    torch::Tensor qn = q.select(2, n), kn = k.select(2, n);
    torch::Tensor vn = U.select(2, n) - W.select(2, n).matmul(S);                // new values [B,H,C,V]
    outs.push_back(scale * (eg.select(2, n).unsqueeze(-1) * qn.matmul(S) + QK.select(2, n).matmul(vn)));
    S = decay_chunk.select(2, n).unsqueeze(-1).unsqueeze(-1) * S +
        kn.transpose(-1, -2).matmul(to_end.select(2, n).unsqueeze(-1) * vn);
  }
  torch::Tensor o = torch::stack(outs, 2).reshape({B, H, Tp, V}).narrow(2, 0, T);
  return o.transpose(1, 2);  // [B,T,H,V]
}

torch::Tensor TorchGatedDeltaNetLM::forward_layer(const torch::Tensor& x, const std::string& pre) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t Hk = cfg_.n_k_heads, Hv = cfg_.n_v_heads, K = cfg_.head_k_dim, V = cfg_.head_v_dim;
  const int64_t key = Hk * K, value = Hv * V, Cc = 2 * key + value, Wc = cfg_.conv_size;

  // q | k | v, and z after them when the output gate is on.
  torch::Tensor qkv, z;
  if (cfg_.output_gate) {
    torch::Tensor qkvz = torch::linear(x, p(pre + "in_proj_qkvz.weight"));  // [B,T,2key+2value]
    qkv = qkvz.narrow(-1, 0, Cc);
    z = qkvz.narrow(-1, Cc, value).reshape({B, T, Hv, V});
  } else {
    qkv = torch::linear(x, p(pre + "in_proj_qkv.weight"));                  // [B,T,2key+value]
  }

  // Depthwise causal conv: [B,C,T] with W-1 zeros on the left, one group per channel, then SiLU.
  torch::Tensor xc = torch::constant_pad_nd(qkv.transpose(1, 2), {Wc - 1, 0});
  torch::Tensor mixed = torch::silu(torch::conv1d(xc, p(pre + "conv1d.weight").unsqueeze(1), torch::Tensor(),
                                                           /*stride=*/torch::IntArrayRef{1},
                                                           /*padding=*/torch::IntArrayRef{0},
                                                           /*dilation=*/torch::IntArrayRef{1}, /*groups=*/Cc))
                            .transpose(1, 2);                               // [B,T,C]
  torch::Tensor q = l2norm(mixed.narrow(-1, 0, key).reshape({B, T, Hk, K}));
  torch::Tensor k = l2norm(mixed.narrow(-1, key, key).reshape({B, T, Hk, K}));
  torch::Tensor v = mixed.narrow(-1, 2 * key, value).reshape({B, T, Hv, V});
  torch::Tensor g, beta;
  if (cfg_.decay_gate) {
    torch::Tensor ba = torch::linear(x, p(pre + "in_proj_ba.weight"));  // [B,T,2Hv]
    torch::Tensor b = ba.narrow(-1, 0, Hv), a = ba.narrow(-1, Hv, Hv);
    // The gate with gdn.cpp's two guards (docs/MATH.md, "Gates"): exp of A_log clamped at 80, g clamped below at -110.
    torch::Tensor A = torch::clamp_max(p(pre + "A_log"), 80.0).exp();
    g = torch::clamp_min(-A * F::softplus(a + p(pre + "dt_bias")), -110.0);  // [B,T,Hv]
    beta = torch::sigmoid(b);
  } else {
    beta = torch::sigmoid(torch::linear(x, p(pre + "in_proj_b.weight")));  // [B,T,Hv]
    g = torch::zeros_like(beta);  // no decay: alpha = exp(0) = 1
  }

  torch::Tensor o = gated_delta_rule_chunked(q, k, v, g, beta, 1.0 / std::sqrt(static_cast<double>(K)),
                                             cfg_.chunk_size);
  o = rms_norm(o, p(pre + "norm.weight"), cfg_.norm_eps);
  if (cfg_.output_gate) o = o * torch::silu(z);  // gated RMSNorm
  return torch::linear(o.reshape({B, T, value}), p(pre + "out_proj.weight"));
}

torch::Tensor TorchGatedDeltaNetLM::swiglu(const torch::Tensor& x, const std::string& pre) const {
  return torch::linear(torch::silu(torch::linear(x, p(pre + "gate_proj.weight"))) *
                           torch::linear(x, p(pre + "up_proj.weight")),
                       p(pre + "down_proj.weight"));
}

torch::Tensor TorchGatedDeltaNetLM::moe(const torch::Tensor& x, const std::string& pre, torch::Tensor& aux) const {
  const int64_t D = x.size(-1), E = cfg_.n_experts, top_k = cfg_.moe_top_k;
  torch::Tensor xf = x.reshape({-1, D});  // [N,D]
  const int64_t N = xf.size(0);
  torch::Tensor probs = torch::softmax(torch::linear(xf, p(pre + "router.weight")), -1);  // [N,E]
  torch::Tensor mask;  // one-hot of the chosen experts, a constant
  {
    torch::NoGradGuard no_grad;
    torch::Tensor chosen = std::get<1>(probs.topk(top_k, -1));
    mask = torch::zeros_like(probs).scatter_(1, chosen, 1.0);
  }
  torch::Tensor weights = probs * mask;
  if (cfg_.moe_renormalize) weights = weights / weights.sum(-1, /*keepdim=*/true);

  torch::Tensor y = torch::zeros_like(xf);
  for (int64_t e = 0; e < E; ++e) {
    torch::Tensor rows = mask.select(1, e).nonzero().squeeze(1);  // token rows routed to e
    if (rows.numel() == 0) continue;
    torch::Tensor w = weights.index_select(0, rows).select(1, e).unsqueeze(1);  // [M,1]
    y = y.index_add(0, rows, swiglu(xf.index_select(0, rows), pre + "experts." + std::to_string(e) + ".") * w);
  }
  if (cfg_.moe_shared_expert)
    y = y + torch::sigmoid(torch::linear(xf, p(pre + "shared_expert_gate.weight"))) * swiglu(xf, pre + "shared_expert.");
  torch::Tensor frac = mask.sum(0) / static_cast<double>(N * top_k);  // f_e, constant
  aux = (frac * probs.mean(0)).sum() * static_cast<double>(E);
  return y.reshape(x.sizes());
}

TorchLossOutput TorchGatedDeltaNetLM::loss(const torch::Tensor& ids_in, const torch::Tensor& targets_in) const {
  torch::Tensor ids = ids_in.to(device_), targets = targets_in.to(device_);
  torch::Tensor x = F::embedding(ids, p("embed.weight"));  // [B,T,D]
  torch::Tensor aux_total;
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    const std::string pre = "layers." + std::to_string(l) + ".";
    x = x + forward_layer(rms_norm(x, p(pre + "attn_norm.weight"), cfg_.norm_eps), pre + "attn.");
    torch::Tensor h = rms_norm(x, p(pre + "ffn_norm.weight"), cfg_.norm_eps);
    if (cfg_.is_moe()) {
      torch::Tensor aux;
      x = x + moe(h, pre + "moe.", aux);
      aux_total = aux_total.defined() ? aux_total + aux : aux;
    } else {
      x = x + swiglu(h, pre + "mlp.");
    }
  }
  const torch::Tensor& head = cfg_.tie_embeddings ? p("embed.weight") : p("lm_head.weight");
  torch::Tensor logits = torch::linear(rms_norm(x, p("norm.weight"), cfg_.norm_eps), head);
  TorchLossOutput out;
  out.ce = F::cross_entropy(logits.reshape({-1, cfg_.vocab_size}), targets.reshape({-1}));
  out.loss = out.ce;
  if (aux_total.defined())
    out.loss = out.ce + aux_total * (cfg_.moe_aux_loss_coef / static_cast<double>(cfg_.n_layers));
  return out;
}

}  // namespace gdn_torch
