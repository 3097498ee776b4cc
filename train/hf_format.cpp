// train/hf_format.cpp — see hf_format.h (which holds the conversion table).
//
// Every conversion goes through one function, hf_entry(), that names the transformers tensor of one of our
// parameters and the conversion to apply; export and import both iterate over GatedDeltaNetLM::parameters() and
// apply it forwards or backwards, so the two directions cannot drift apart. Values travel as double vectors
// (exact for float32) and are stored as float32.
#include "train/hf_format.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <set>

#include "core/dispatch.h"
#include "ops/ops.h"
#include "train/checkpoint.h"
#include "train/file_util.h"
#include "train/safetensors.h"

namespace gdn {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

enum class Conv { kNone, kNormMinusOne, kQkvzRows, kBaRows, kConvReshape };

struct HfEntry {
  std::string name;
  Conv conv = Conv::kNone;
};

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// Our parameter name -> transformers name and conversion.
HfEntry hf_entry(const std::string& ours) {
  if (ours == "embed.weight") return {"model.embed_tokens.weight"};
  if (ours == "norm.weight") return {"model.norm.weight", Conv::kNormMinusOne};
  if (ours == "lm_head.weight") return {"lm_head.weight"};
  GDN_CHECK(starts_with(ours, "layers."), "hf_entry: unexpected parameter '{}'", ours);
  const size_t dot = ours.find('.', 7);
  const std::string layer = "model.layers." + ours.substr(7, dot - 7) + ".";
  const std::string rest = ours.substr(dot + 1);
  if (rest == "attn_norm.weight") return {layer + "input_layernorm.weight", Conv::kNormMinusOne};
  if (rest == "ffn_norm.weight") return {layer + "post_attention_layernorm.weight", Conv::kNormMinusOne};
  if (rest == "attn.in_proj_qkvz.weight") return {layer + "linear_attn.in_proj_qkvz.weight", Conv::kQkvzRows};
  if (rest == "attn.in_proj_ba.weight") return {layer + "linear_attn.in_proj_ba.weight", Conv::kBaRows};
  if (rest == "attn.conv1d.weight") return {layer + "linear_attn.conv1d.weight", Conv::kConvReshape};
  if (starts_with(rest, "attn.")) return {layer + "linear_attn." + rest.substr(5)};
  if (starts_with(rest, "mlp.")) return {layer + rest};
  if (rest == "moe.router.weight") return {layer + "mlp.gate.weight"};
  if (starts_with(rest, "moe.")) return {layer + "mlp." + rest.substr(4)};
  GDN_CHECK(false, "hf_entry: unexpected parameter '{}'", ours);
  return {};
}

// hf row i = our row perm[i].
std::vector<int64_t> qkvz_perm(const ModelConfig& c) {
  const int64_t Hk = c.n_k_heads, K = c.head_k_dim, V = c.head_v_dim, r = c.n_v_heads / c.n_k_heads;
  const int64_t key = Hk * K, value = c.n_v_heads * V;
  std::vector<int64_t> perm;
  for (int64_t g = 0; g < Hk; ++g) {
    for (int64_t i = 0; i < K; ++i) perm.push_back(g * K + i);                           // q_g
    for (int64_t i = 0; i < K; ++i) perm.push_back(key + g * K + i);                     // k_g
    for (int64_t i = 0; i < r * V; ++i) perm.push_back(2 * key + g * r * V + i);         // v_g
    for (int64_t i = 0; i < r * V; ++i) perm.push_back(2 * key + value + g * r * V + i); // z_g
  }
  return perm;
}

std::vector<int64_t> ba_perm(const ModelConfig& c) {
  const int64_t Hv = c.n_v_heads, r = c.n_v_heads / c.n_k_heads;
  std::vector<int64_t> perm;
  for (int64_t g = 0; g < c.n_k_heads; ++g) {
    for (int64_t i = 0; i < r; ++i) perm.push_back(g * r + i);       // b_g
    for (int64_t i = 0; i < r; ++i) perm.push_back(Hv + g * r + i);  // a_g
  }
  return perm;
}

std::vector<double> permute_rows(const std::vector<double>& src, int64_t cols, const std::vector<int64_t>& perm,
                                 bool to_hf) {
  std::vector<double> dst(src.size());
  for (size_t i = 0; i < perm.size(); ++i) {
    const size_t hf = i * static_cast<size_t>(cols), ours = static_cast<size_t>(perm[i] * cols);
    for (int64_t j = 0; j < cols; ++j) {
      if (to_hf)
        dst[hf + j] = src[ours + j];
      else
        dst[ours + j] = src[hf + j];
    }
  }
  return dst;
}

// Our values -> transformers' (to_hf) or back. Shapes: ours `shape`; transformers' the same except conv [C,1,W].
std::vector<double> convert(Conv conv, const std::vector<double>& v, const Shape& shape, const ModelConfig& cfg,
                            bool to_hf) {
  std::vector<double> out = v;
  switch (conv) {
    case Conv::kNone:
    case Conv::kConvReshape:
      break;
    case Conv::kNormMinusOne:
      for (double& x : out) x = static_cast<double>(static_cast<float>(to_hf ? x - 1.0 : x + 1.0));
      break;
    case Conv::kQkvzRows:
      out = permute_rows(v, shape[1], qkvz_perm(cfg), to_hf);
      break;
    case Conv::kBaRows:
      out = permute_rows(v, shape[1], ba_perm(cfg), to_hf);
      break;
  }
  return out;
}

Shape hf_shape(Conv conv, const Shape& ours) {
  if (conv == Conv::kConvReshape) return {ours[0], 1, ours[1]};
  return ours;
}

std::string layer_prefix(int64_t l) { return "model.layers." + std::to_string(l) + ".mlp."; }

// The zero shared expert that stands for "none" (hf_format.h, note 8), in transformers' names.
std::vector<std::pair<std::string, Shape>> zero_shared_expert(const ModelConfig& c, int64_t l) {
  const std::string p = layer_prefix(l);
  return {{p + "shared_expert.gate_proj.weight", {1, c.d_model}},
          {p + "shared_expert.up_proj.weight", {1, c.d_model}},
          {p + "shared_expert.down_proj.weight", {c.d_model, 1}},
          {p + "shared_expert_gate.weight", {1, c.d_model}}};
}

// Reading config.json fields with one-line errors naming the field.
struct ConfigReader {
  const json& j;
  std::string source;

  const json& at(const std::string& key) const {
    GDN_USER_CHECK(j.contains(key) && !j[key].is_null(), "{}: config.json lacks the field '{}'", source, key);
    return j[key];
  }
  int64_t integer(const std::string& key) const {
    const json& v = at(key);
    GDN_USER_CHECK(v.is_number_integer(), "{}: config.json field '{}' must be an integer, got {}", source, key,
                   v.dump());
    return v.get<int64_t>();
  }
  int64_t integer(const std::string& key, int64_t fallback) const {
    return j.contains(key) && !j[key].is_null() ? integer(key) : fallback;
  }
  double number(const std::string& key, double fallback) const {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    GDN_USER_CHECK(j[key].is_number(), "{}: config.json field '{}' must be a number, got {}", source, key,
                   j[key].dump());
    return j[key].get<double>();
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    GDN_USER_CHECK(j[key].is_boolean(), "{}: config.json field '{}' must be true or false, got {}", source, key,
                   j[key].dump());
    return j[key].get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    GDN_USER_CHECK(j[key].is_string(), "{}: config.json field '{}' must be a string, got {}", source, key,
                   j[key].dump());
    return j[key].get<std::string>();
  }
};

bool all_zero(const Tensor& t) {
  for (double x : t.to_double_vector())
    if (x != 0.0) return false;
  return true;
}

}  // namespace

json hf_config_json(const ModelConfig& c, int64_t eot_id) {
  return json{
      {"architectures", {"Qwen3NextForCausalLM"}},
      {"model_type", "qwen3_next"},
      {"dtype", "float32"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.d_model},
      {"intermediate_size", c.ffn_dim},
      {"num_hidden_layers", c.n_layers},
      {"layer_types", std::vector<std::string>(static_cast<size_t>(c.n_layers), "linear_attention")},
      {"hidden_act", "silu"},
      {"rms_norm_eps", c.norm_eps},
      {"initializer_range", c.init_std},
      {"tie_word_embeddings", c.tie_embeddings},
      {"use_cache", true},
      {"linear_conv_kernel_dim", c.conv_size},
      {"linear_key_head_dim", c.head_k_dim},
      {"linear_value_head_dim", c.head_v_dim},
      {"linear_num_key_heads", c.n_k_heads},
      {"linear_num_value_heads", c.n_v_heads},
      {"num_experts", c.n_experts},
      {"num_experts_per_tok", c.moe_top_k},
      {"moe_intermediate_size", c.moe_ffn_dim},
      {"shared_expert_intermediate_size", c.is_moe() && !c.moe_shared_expert ? int64_t{1} : c.moe_ffn_dim},
      {"norm_topk_prob", c.moe_renormalize},
      {"router_aux_loss_coef", c.moe_aux_loss_coef},
      {"output_router_logits", false},
      {"decoder_sparse_step", 1},
      {"mlp_only_layers", json::array()},
      // Required by the class, used by no layer (there is no full-attention layer).
      {"num_attention_heads", c.n_v_heads},
      {"num_key_value_heads", c.n_k_heads},
      {"head_dim", c.head_k_dim},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"max_position_embeddings", 32768},
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 10000.0}, {"partial_rotary_factor", 0.25}}},
      {"bos_token_id", eot_id},
      {"eos_token_id", eot_id},
  };
}

json hf_generation_config_json(int64_t eot_id) {
  return json{{"bos_token_id", eot_id}, {"eos_token_id", eot_id}, {"pad_token_id", eot_id}};
}

std::vector<std::pair<std::string, Tensor>> hf_tensors(const GatedDeltaNetLM& model) {
  const ModelConfig& c = model.config();
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& p : model.parameters()) {
    HfEntry e = hf_entry(p.name);
    std::vector<double> v = to_device(p.value, kCPU).to_double_vector();
    if (p.name.size() > 6 && p.name.compare(p.name.size() - 6, 6, ".A_log") == 0) {
      for (size_t h = 0; h < v.size(); ++h)
        GDN_USER_CHECK(v[h] < 80.0, "transformers cannot represent {}[{}] = {}: its gate computes exp(A_log) "
                       "without gdn.cpp's guard at 80 (docs/MATH.md, Gates)", p.name, h, v[h]);
    }
    out.emplace_back(e.name, Tensor::from_vector(convert(e.conv, v, p.value.shape(), c, true),
                                                 hf_shape(e.conv, p.value.shape()), kFloat32));
    // The all-zero shared expert of a MoE model without one, after the layer's last expert.
    if (c.is_moe() && !c.moe_shared_expert &&
        p.name.find(".moe.experts." + std::to_string(c.n_experts - 1) + ".down_proj") != std::string::npos) {
      const int64_t l = std::stoll(p.name.substr(7, p.name.find('.', 7) - 7));
      for (const auto& [name, shape] : zero_shared_expert(c, l))
        out.emplace_back(name, Tensor::from_vector(std::vector<double>(shape_numel(shape), 0.0), shape, kFloat32));
    }
  }
  return out;
}

void export_hf(const GatedDeltaNetLM& model, const BpeTokenizer& tok, const std::string& dir) {
  GDN_USER_CHECK(model.config().vocab_size == tok.vocab_size(), "the tokenizer has {} tokens, the model {}",
                 tok.vocab_size(), model.config().vocab_size);
  // Everything is built (and refused) before the folder is touched.
  const auto tensors = hf_tensors(model);
  const json tokenizer = hf_tokenizer_json(tok);
  ensure_directory(dir);
  const fs::path d(dir);
  save_safetensors((d / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_file_atomic((d / "config.json").string(), hf_config_json(model.config(), tok.eot_id()).dump(2) + "\n");
  write_file_atomic((d / "generation_config.json").string(), hf_generation_config_json(tok.eot_id()).dump(2) + "\n");
  write_file_atomic((d / "tokenizer.json").string(), tokenizer.dump(2) + "\n");
  const json tok_cfg{{"tokenizer_class", "PreTrainedTokenizerFast"}, {"bos_token", std::string(kEndOfTextText)},
                     {"eos_token", std::string(kEndOfTextText)}, {"pad_token", std::string(kEndOfTextText)},
                     {"add_prefix_space", false}, {"model_max_length", 1000000}};
  write_file_atomic((d / "tokenizer_config.json").string(), tok_cfg.dump(2) + "\n");
}

HfCheckpoint hf_checkpoint_from(const json& j, std::map<std::string, Tensor> tensors, const std::string& source) {
  GDN_USER_CHECK(j.is_object(), "{}: config.json is not a JSON object", source);
  ConfigReader r{j, source};
  GDN_USER_CHECK(r.string("model_type", "") == "qwen3_next",
                 "{}: config.json field 'model_type' is {}, gdn.cpp reads only \"qwen3_next\"", source,
                 j.contains("model_type") ? j["model_type"].dump() : "missing");
  GDN_USER_CHECK(r.string("hidden_act", "silu") == "silu",
                 "{}: config.json field 'hidden_act' is {}, gdn.cpp has only silu", source, j["hidden_act"].dump());
  ModelConfig c;
  c.vocab_size = r.integer("vocab_size");
  c.d_model = r.integer("hidden_size");
  c.n_layers = r.integer("num_hidden_layers");
  c.n_k_heads = r.integer("linear_num_key_heads");
  c.n_v_heads = r.integer("linear_num_value_heads");
  c.head_k_dim = r.integer("linear_key_head_dim");
  c.head_v_dim = r.integer("linear_value_head_dim");
  c.conv_size = r.integer("linear_conv_kernel_dim");
  c.ffn_dim = r.integer("intermediate_size");
  c.tie_embeddings = r.boolean("tie_word_embeddings", false);
  c.norm_eps = r.number("rms_norm_eps", 1e-6);
  c.init_std = r.number("initializer_range", 0.02);
  c.n_experts = r.integer("num_experts", 0);
  c.moe_top_k = r.integer("num_experts_per_tok", c.moe_top_k);
  c.moe_ffn_dim = r.integer("moe_intermediate_size", c.moe_ffn_dim);
  c.moe_renormalize = r.boolean("norm_topk_prob", c.moe_renormalize);
  c.moe_aux_loss_coef = r.number("router_aux_loss_coef", c.moe_aux_loss_coef);
  c.moe_shared_expert = false;

  const json& types = r.at("layer_types");
  GDN_USER_CHECK(types.is_array() && static_cast<int64_t>(types.size()) == c.n_layers,
                 "{}: config.json field 'layer_types' must list {} layers", source, c.n_layers);
  for (size_t l = 0; l < types.size(); ++l)
    GDN_USER_CHECK(types[l] == "linear_attention", "{}: config.json field 'layer_types' has {} for layer {}: "
                   "gdn.cpp has only linear attention", source, types[l].dump(), l);
  if (c.is_moe()) {
    GDN_USER_CHECK(r.integer("decoder_sparse_step", 1) == 1, "{}: config.json field 'decoder_sparse_step' must be 1 "
                   "(gdn.cpp has MoE in every layer or in none)", source);
    GDN_USER_CHECK(!j.contains("mlp_only_layers") || j["mlp_only_layers"].is_null() ||
                       (j["mlp_only_layers"].is_array() && j["mlp_only_layers"].empty()),
                   "{}: config.json field 'mlp_only_layers' must be empty (gdn.cpp has MoE in every layer or in none)",
                   source);
  }
  try {
    validate_model_config(c);
  } catch (const UserError& e) {
    throw UserError(fmt::format("{}: config.json describes a model gdn.cpp cannot build: {}", source, e.what()));
  }

  // Fused experts (transformers' in-memory form) -> one tensor per expert.
  for (int64_t l = 0; l < c.n_layers && c.is_moe(); ++l) {
    const std::string p = layer_prefix(l);
    auto gu = tensors.find(p + "experts.gate_up_proj"), dn = tensors.find(p + "experts.down_proj");
    if (gu == tensors.end() && dn == tensors.end()) continue;
    GDN_USER_CHECK(gu != tensors.end() && dn != tensors.end(), "{}: layer {} has only one of the fused expert "
                   "tensors experts.gate_up_proj and experts.down_proj", source, l);
    const int64_t E = c.n_experts, I = c.moe_ffn_dim, D = c.d_model;
    GDN_USER_CHECK(gu->second.shape() == Shape({E, 2 * I, D}) && dn->second.shape() == Shape({E, D, I}),
                   "{}: layer {} fused experts have shapes {} and {}, config.json says [{}, {}, {}] and [{}, {}, {}]",
                   source, l, shape_str(gu->second.shape()), shape_str(dn->second.shape()), E, 2 * I, D, E, D, I);
    std::vector<double> guv = gu->second.to_double_vector(), dnv = dn->second.to_double_vector();
    for (int64_t e = 0; e < E; ++e) {
      auto slice = [](const std::vector<double>& v, int64_t begin, int64_t n) {
        return std::vector<double>(v.begin() + begin, v.begin() + begin + n);
      };
      const std::string ep = p + "experts." + std::to_string(e) + ".";
      tensors[ep + "gate_proj.weight"] = Tensor::from_vector(slice(guv, e * 2 * I * D, I * D), {I, D}, kFloat32);
      tensors[ep + "up_proj.weight"] = Tensor::from_vector(slice(guv, e * 2 * I * D + I * D, I * D), {I, D}, kFloat32);
      tensors[ep + "down_proj.weight"] = Tensor::from_vector(slice(dnv, e * D * I, D * I), {D, I}, kFloat32);
    }
    tensors.erase(p + "experts.gate_up_proj");
    tensors.erase(p + "experts.down_proj");
  }
  // Shared expert: all zero in every layer = none; otherwise it must have the experts' width.
  if (c.is_moe()) {
    bool any = false;
    for (int64_t l = 0; l < c.n_layers; ++l)
      for (const char* n : {"shared_expert.gate_proj.weight", "shared_expert.up_proj.weight",
                            "shared_expert.down_proj.weight"}) {
        auto it = tensors.find(layer_prefix(l) + n);
        GDN_USER_CHECK(it != tensors.end(), "{}: model.safetensors lacks tensor '{}'", source, layer_prefix(l) + n);
        any = any || !all_zero(it->second);
      }
    if (any) {
      GDN_USER_CHECK(r.integer("shared_expert_intermediate_size") == c.moe_ffn_dim,
                     "{}: config.json field 'shared_expert_intermediate_size' is {}, gdn.cpp's shared expert has the "
                     "experts' width moe_intermediate_size = {}", source, r.integer("shared_expert_intermediate_size"),
                     c.moe_ffn_dim);
      c.moe_shared_expert = true;
    } else {
      for (int64_t l = 0; l < c.n_layers; ++l)
        for (const char* n : {"shared_expert.gate_proj.weight", "shared_expert.up_proj.weight",
                              "shared_expert.down_proj.weight", "shared_expert_gate.weight"})
          tensors.erase(layer_prefix(l) + n);
    }
  }
  return HfCheckpoint{c, std::move(tensors), source};
}

HfCheckpoint read_hf_checkpoint(const std::string& dir) {
  const fs::path d(dir);
  std::error_code ec;
  GDN_USER_CHECK(fs::is_directory(d, ec), "{} is not a folder", dir);
  const std::string cfg_path = (d / "config.json").string();
  GDN_USER_CHECK(fs::exists(cfg_path, ec), "{} has no config.json", dir);
  json j;
  try {
    j = json::parse(read_file(cfg_path));
  } catch (const json::exception& e) {
    throw UserError(fmt::format("{} is not valid JSON: {}", cfg_path, e.what()));
  }
  const std::string weights = (d / "model.safetensors").string();
  GDN_USER_CHECK(fs::exists(weights, ec), "{} has no model.safetensors{}", dir,
                 fs::exists(d / "model.safetensors.index.json", ec)
                     ? " (a sharded checkpoint: save it with a larger max_shard_size)" : "");
  SafetensorsFile f = load_safetensors(weights);
  std::map<std::string, Tensor> tensors(f.tensors.begin(), f.tensors.end());
  return hf_checkpoint_from(j, std::move(tensors), dir);
}

void load_hf_weights(GatedDeltaNetLM& model, const HfCheckpoint& ckpt) {
  const ModelConfig& c = model.config();
  std::set<std::string> used;
  std::vector<std::pair<std::string, Tensor>> converted;
  for (const auto& p : model.parameters()) {
    HfEntry e = hf_entry(p.name);
    auto it = ckpt.tensors.find(e.name);
    GDN_USER_CHECK(it != ckpt.tensors.end(), "{}: model.safetensors lacks tensor '{}'", ckpt.source, e.name);
    const Shape want = hf_shape(e.conv, p.value.shape());
    GDN_USER_CHECK(it->second.shape() == want, "{}: tensor '{}' has shape {}, config.json implies {}", ckpt.source,
                   e.name, shape_str(it->second.shape()), shape_str(want));
    used.insert(e.name);
    std::vector<double> v = convert(e.conv, it->second.to_double_vector(), p.value.shape(), c, false);
    converted.emplace_back(p.name, Tensor::from_vector(v, p.value.shape(), p.value.dtype()));
  }
  // A tied lm_head may also be stored; it must then equal the embedding.
  if (c.tie_embeddings) {
    auto it = ckpt.tensors.find("lm_head.weight");
    if (it != ckpt.tensors.end()) {
      GDN_USER_CHECK(it->second.to_double_vector() == ckpt.tensors.at("model.embed_tokens.weight").to_double_vector(),
                     "{}: tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight",
                     ckpt.source);
      used.insert("lm_head.weight");
    }
  }
  for (const auto& [name, t] : ckpt.tensors)
    GDN_USER_CHECK(used.count(name), "{}: model.safetensors has tensor '{}', which a gdn.cpp model of this "
                   "config.json has no place for", ckpt.source, name);
  const std::string bad = describe_non_finite(converted);
  GDN_USER_CHECK(bad.empty(), "{}: model.safetensors holds a non-finite value: tensor {}", ckpt.source, bad);
  NoGradGuard no_grad;
  size_t i = 0;
  for (const auto& p : model.parameters()) {
    Tensor src = to_device(converted[i++].second, p.value.device());
    kernels::copy(p.value.device(), p.value, src);
  }
}

}  // namespace gdn
