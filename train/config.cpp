// train/config.cpp — the table of config keys and everything it drives (see config.h).
//
// Each row of config_fields() is built by train_field / model_field from a pointer to member, so reading, writing
// and type-checking a key can never disagree with the struct. Validators see the whole TrainConfig, which lets a row
// state its cross-field rule next to its range (warmup_steps <= steps, n_v_heads % n_k_heads == 0, MoE top-k).
#include "train/config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "core/check.h"

namespace gdn {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------------------------
// presets

std::vector<std::string> preset_names() {
  return {"small", "medium", "large", "seed-small", "seed-medium", "seed-large"};
}

TrainConfig preset_config(const std::string& name) {
  TrainConfig c;  // the defaults are the small preset
  c.preset = name;
  ModelConfig& m = c.model;
  if (name == "small") {
    m.d_model = 128, m.n_layers = 4, m.ffn_dim = 256;
    c.seq_len = 128, c.batch_size = 2, c.steps = 1000, c.warmup_steps = 50;
  } else if (name == "medium") {
    m.d_model = 256, m.n_layers = 8, m.ffn_dim = 1024;
    c.seq_len = 256, c.batch_size = 4, c.steps = 2000, c.warmup_steps = 100;
  } else if (name == "large") {
    m.d_model = 512, m.n_layers = 12, m.ffn_dim = 2048;
    c.seq_len = 512, c.batch_size = 8, c.steps = 5000, c.warmup_steps = 250;
  } else if (name == "seed-small" || name == "seed-medium" || name == "seed-large") {
    // The seed experiment's model: FLA's plain DeltaNet (both gates off), 8 heads of dimension D/8, FFN 4D, untied
    // embeddings; D, L, T, B and steps those of small / medium / large. vocab_size is the seed's 49152, an upper
    // bound: the tokenizer stops where no pair occurs twice any more, on the default corpus (data/sotu, training
    // split) at 30634 tokens, and the run then uses that (train/trainer.cpp).
    TrainConfig base = preset_config(name.substr(5));
    base.preset = name;
    ModelConfig& b = base.model;
    b.decay_gate = false, b.output_gate = false;
    b.n_k_heads = 8, b.n_v_heads = 8, b.head_k_dim = b.d_model / 8, b.head_v_dim = b.d_model / 8;
    b.ffn_dim = 4 * b.d_model;
    b.tie_embeddings = false;
    b.vocab_size = 49152;
    return base;
  } else {
    throw UserError(fmt::format("unknown preset '{}' (valid presets: {})", name, fmt::join(preset_names(), ", ")));
  }
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// the table

const char* config_type_name(ConfigType type) {
  switch (type) {
    case ConfigType::Int: return "int";
    case ConfigType::UInt: return "uint";
    case ConfigType::Number: return "number";
    case ConfigType::Bool: return "bool";
    case ConfigType::String: return "string";
  }
  return "?";
}

namespace {

using Check = std::function<std::string(const TrainConfig&)>;

template <typename T> constexpr ConfigType type_of() {
  if constexpr (std::is_same_v<T, int64_t>) return ConfigType::Int;
  else if constexpr (std::is_same_v<T, uint64_t>) return ConfigType::UInt;
  else if constexpr (std::is_same_v<T, double>) return ConfigType::Number;
  else if constexpr (std::is_same_v<T, bool>) return ConfigType::Bool;
  else {
    static_assert(std::is_same_v<T, std::string>, "config fields are int64, uint64, double, bool or string");
    return ConfigType::String;
  }
}

template <typename T> ConfigField train_field(const char* name, T TrainConfig::*member, const char* help, Check check) {
  return ConfigField{name, type_of<T>(), false, help,
                     [member](const TrainConfig& c) { return json(c.*member); },
                     [member](TrainConfig& c, const json& v) { c.*member = v.get<T>(); }, std::move(check)};
}

template <typename T> ConfigField model_field(const char* name, T ModelConfig::*member, const char* help, Check check) {
  return ConfigField{name, type_of<T>(), true, help,
                     [member](const TrainConfig& c) { return json(c.model.*member); },
                     [member](TrainConfig& c, const json& v) { c.model.*member = v.get<T>(); }, std::move(check)};
}

// Value rules. Each returns "" when fine, else the problem; written as !(ok) so NaN never passes.
std::string positive(double v) { return v > 0 ? "" : fmt::format("must be positive, got {}", v); }
std::string positive(int64_t v) { return v > 0 ? "" : fmt::format("must be positive, got {}", v); }
std::string non_negative(double v) { return v >= 0 ? "" : fmt::format("must be >= 0, got {}", v); }
std::string non_negative(int64_t v) { return v >= 0 ? "" : fmt::format("must be >= 0, got {}", v); }
std::string in_0_1_open_right(double v) { return (v >= 0 && v < 1) ? "" : fmt::format("must be in [0, 1), got {}", v); }
std::string not_empty(const std::string& v) { return v.empty() ? "must not be empty" : ""; }
std::string one_of(const std::string& v, const std::vector<std::string>& choices) {
  if (std::find(choices.begin(), choices.end(), v) != choices.end()) return "";
  return fmt::format("must be one of {}, got \"{}\"", fmt::join(choices, ", "), v);
}
const Check any = [](const TrainConfig&) { return std::string(); };

bool valid_device(const std::string& d) {
  if (d == "cpu" || d == "cuda") return true;
  if (d.rfind("cuda:", 0) != 0 || d.size() == 5) return false;
  return std::all_of(d.begin() + 5, d.end(), [](unsigned char ch) { return std::isdigit(ch); });
}

std::vector<ConfigField> make_fields() {
  using C = const TrainConfig&;
  using T = TrainConfig;
  using M = ModelConfig;
  std::vector<ConfigField> f;
  // ---- run ----
  ConfigField preset = train_field("preset", &T::preset,
                                   "named starting point: small, medium, large, or seed-small, seed-medium, seed-large "
                                   "(the seed's ungated DeltaNet: both gates off, 8 heads of D/8, FFN 4D, vocab_size "
                                   "49152 as an upper bound: 30634 tokens on the default corpus, the most our BPE "
                                   "learns there); resets every key when set",
                                   [](C c) { return one_of(c.preset, preset_names()); });
  preset.set = [](TrainConfig& c, const json& v) { c = preset_config(v.get<std::string>()); };
  f.push_back(std::move(preset));
  f.push_back(train_field("data", &T::data, "corpus: a text file or a folder of text files",
                          [](C c) { return not_empty(c.data); }));
  f.push_back(train_field("out_dir", &T::out_dir, "results JSON, curves, tokenizer and checkpoints/ go here",
                          [](C c) { return not_empty(c.out_dir); }));
  f.push_back(train_field("seq_len", &T::seq_len, "T, tokens per training window", [](C c) { return positive(c.seq_len); }));
  f.push_back(train_field("batch_size", &T::batch_size, "B, windows per step", [](C c) { return positive(c.batch_size); }));
  f.push_back(train_field("steps", &T::steps, "optimizer steps of the run", [](C c) { return positive(c.steps); }));
  f.push_back(train_field("warmup_steps", &T::warmup_steps, "steps of linear learning-rate warmup", [](C c) {
    return (c.warmup_steps >= 0 && c.warmup_steps <= c.steps)
               ? std::string()
               : fmt::format("must be between 0 and steps ({}), got {}", c.steps, c.warmup_steps);
  }));
  // ---- optimizer ----
  f.push_back(train_field("lr", &T::lr, "peak learning rate", [](C c) {
    return c.lr > 0 ? std::string() : fmt::format("learning rate must be positive, got {}", c.lr);
  }));
  f.push_back(train_field("min_lr_ratio", &T::min_lr_ratio, "learning-rate floor at the end, as a fraction of lr",
                          [](C c) {
                            return (c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1)
                                       ? std::string()
                                       : fmt::format("must be in [0, 1], got {}", c.min_lr_ratio);
                          }));
  f.push_back(train_field("lr_schedule", &T::lr_schedule, "decay after warmup: linear or cosine",
                          [](C c) { return one_of(c.lr_schedule, {"linear", "cosine"}); }));
  f.push_back(train_field("beta1", &T::beta1, "AdamW first-moment decay", [](C c) { return in_0_1_open_right(c.beta1); }));
  f.push_back(train_field("beta2", &T::beta2, "AdamW second-moment decay", [](C c) { return in_0_1_open_right(c.beta2); }));
  f.push_back(train_field("adam_eps", &T::adam_eps, "AdamW epsilon", [](C c) { return positive(c.adam_eps); }));
  f.push_back(train_field("weight_decay", &T::weight_decay, "decoupled weight decay (of the parameters the model marks for decay)",
                          [](C c) { return non_negative(c.weight_decay); }));
  f.push_back(train_field("grad_clip", &T::grad_clip, "max global gradient L2 norm (0 = no clipping)",
                          [](C c) { return non_negative(c.grad_clip); }));
  // ---- evaluation, logging, checkpoints ----
  f.push_back(train_field("eval_every", &T::eval_every, "steps between validation passes",
                          [](C c) { return positive(c.eval_every); }));
  f.push_back(train_field("eval_batches", &T::eval_batches, "batches per validation pass",
                          [](C c) { return positive(c.eval_batches); }));
  f.push_back(train_field("checkpoint_every", &T::checkpoint_every, "steps between checkpoints",
                          [](C c) { return positive(c.checkpoint_every); }));
  f.push_back(train_field("log_every", &T::log_every, "steps per train_history point (their mean loss) in the results",
                          [](C c) { return positive(c.log_every); }));
  // ---- machine ----
  f.push_back(train_field("seed", &T::seed, "seed of initialisation and data order", any));
  f.push_back(train_field("threads", &T::threads, "CPU threads (0 = all cores, at most 1024)", [](C c) {
    return (c.threads >= 0 && c.threads <= 1024) ? std::string()
                                                  : fmt::format("must be between 0 and 1024, got {}", c.threads);
  }));
  f.push_back(train_field("val_fraction", &T::val_fraction, "share of the corpus held out for validation", [](C c) {
    return (c.val_fraction > 0 && c.val_fraction < 1) ? std::string()
                                                      : fmt::format("must be in (0, 1), got {}", c.val_fraction);
  }));
  f.push_back(train_field("device", &T::device, "cpu, cuda or cuda:N", [](C c) {
    return valid_device(c.device) ? std::string()
                                  : fmt::format("must be \"cpu\", \"cuda\" or \"cuda:N\", got \"{}\"", c.device);
  }));
  f.push_back(train_field("dtype", &T::dtype, "parameter and activation type: float32 or float64",
                          [](C c) { return one_of(c.dtype, {"float32", "float64"}); }));
  f.push_back(train_field("precision", &T::precision,
                          "products on the GPU: auto (bf16 on a GPU with dtype float32, float32 otherwise), float32, "
                          "or bf16 (bfloat16 inputs, float32 accumulation)",
                          [](C c) {
                            std::string bad = one_of(c.precision, {"float32", "bf16", "auto"});
                            if (!bad.empty() || c.precision != "bf16") return bad;
                            if (c.dtype != "float32") return std::string("bf16 needs dtype float32");
                            return valid_device(c.device) && c.device != "cpu"
                                       ? std::string()
                                       : std::string("bf16 runs on a GPU only (device cuda); the CPU computes in "
                                                     "float32");
                          }));
  f.push_back(train_field("cuda_graph", &T::cuda_graph,
                          "on a GPU, capture the training step once as a CUDA graph and replay it (false: eager)", any));
  f.push_back(train_field("fused_loss", &T::fused_loss,
                          "on a GPU, the lm_head and the cross-entropy fused over row chunks: no [N,V] logits in memory, "
                          "a few percent slower (docs/PERF.md)", any));
  f.push_back(train_field("dp_bucket_mb", &T::dp_bucket_mb,
                          "data parallel: MiB of gradients per all-reduce bucket, started while the backward runs "
                          "(0 = one bucket after the backward)",
                          [](C c) { return non_negative(c.dp_bucket_mb); }));
  f.push_back(train_field("sample_tokens", &T::sample_tokens, "tokens generated after training (0 = none)",
                          [](C c) { return non_negative(c.sample_tokens); }));
  f.push_back(train_field("sample_prompt", &T::sample_prompt, "prompt of the generated sample", any));
  f.push_back(train_field("no_decay", &T::no_decay,
                          "comma-separated name pieces; parameters whose name contains one get no weight decay", any));
  // ---- model ----
  f.push_back(model_field("vocab_size", &M::vocab_size, "BPE vocabulary size (256 bytes + <|endoftext|> + merges)",
                          [](C c) {
                            // Token ids are int32, so the vocabulary must fit that type.
                            const int64_t max = std::numeric_limits<int32_t>::max();
                            return (c.model.vocab_size >= 257 && c.model.vocab_size <= max)
                                       ? std::string()
                                       : fmt::format("must be between 257 (256 bytes + <|endoftext|>) and {} (token "
                                                     "ids are int32), got {}", max, c.model.vocab_size);
                          }));
  f.push_back(model_field("d_model", &M::d_model, "D, residual stream width", [](C c) { return positive(c.model.d_model); }));
  f.push_back(model_field("n_layers", &M::n_layers, "L, Gated DeltaNet blocks", [](C c) { return positive(c.model.n_layers); }));
  f.push_back(model_field("n_k_heads", &M::n_k_heads, "Hk, query/key heads", [](C c) { return positive(c.model.n_k_heads); }));
  f.push_back(model_field("n_v_heads", &M::n_v_heads, "Hv, value heads (a multiple of n_k_heads)", [](C c) {
    if (!(c.model.n_v_heads > 0)) return positive(c.model.n_v_heads);
    if (c.model.n_k_heads > 0 && c.model.n_v_heads % c.model.n_k_heads != 0)
      return fmt::format("must be a multiple of n_k_heads ({}), got {}", c.model.n_k_heads, c.model.n_v_heads);
    return std::string();
  }));
  f.push_back(model_field("head_k_dim", &M::head_k_dim, "K, key/query head dimension",
                          [](C c) { return positive(c.model.head_k_dim); }));
  f.push_back(model_field("head_v_dim", &M::head_v_dim, "V, value head dimension",
                          [](C c) { return positive(c.model.head_v_dim); }));
  f.push_back(model_field("conv_size", &M::conv_size, "W, causal conv kernel width over q|k|v", [](C c) {
    return c.model.conv_size >= 1 ? std::string() : fmt::format("must be at least 1, got {}", c.model.conv_size);
  }));
  f.push_back(model_field("decay_gate", &M::decay_gate,
                          "decay gate g = -exp(A_log) softplus(a + dt_bias) (in_proj_ba, A_log, dt_bias); false: g = 0 "
                          "(plain DeltaNet, in_proj_b)", any));
  f.push_back(model_field("output_gate", &M::output_gate,
                          "output gate: RMSNorm(o) * silu(z) (in_proj_qkvz); false: RMSNorm(o), no z (in_proj_qkv)",
                          any));
  f.push_back(model_field("ffn_dim", &M::ffn_dim, "SwiGLU hidden width", [](C c) { return positive(c.model.ffn_dim); }));
  f.push_back(model_field("tie_embeddings", &M::tie_embeddings, "lm_head shares the embedding matrix", any));
  f.push_back(model_field("norm_eps", &M::norm_eps, "RMSNorm epsilon", [](C c) { return positive(c.model.norm_eps); }));
  f.push_back(model_field("init_std", &M::init_std, "std of the normal init of linear/conv/embedding weights",
                          [](C c) { return positive(c.model.init_std); }));
  f.push_back(model_field("chunk_size", &M::chunk_size, "C, chunk length of the chunked delta rule",
                          [](C c) { return positive(c.model.chunk_size); }));
  f.push_back(model_field("n_experts", &M::n_experts, "E, experts per MoE layer (0 = dense SwiGLU FFN)",
                          [](C c) { return non_negative(c.model.n_experts); }));
  f.push_back(model_field("moe_top_k", &M::moe_top_k, "experts used per token", [](C c) {
    const ModelConfig& m = c.model;
    if (m.n_experts > 0 && !(m.moe_top_k >= 1 && m.moe_top_k <= m.n_experts))
      return fmt::format("must be between 1 and n_experts ({}), got {}", m.n_experts, m.moe_top_k);
    return std::string();
  }));
  f.push_back(model_field("moe_ffn_dim", &M::moe_ffn_dim, "hidden width of each expert", [](C c) {
    return c.model.n_experts > 0 ? positive(c.model.moe_ffn_dim) : std::string();
  }));
  f.push_back(model_field("moe_renormalize", &M::moe_renormalize, "renormalise the top-k router probabilities to 1", any));
  f.push_back(model_field("moe_shared_expert", &M::moe_shared_expert, "add one always-on shared expert", any));
  f.push_back(model_field("moe_aux_loss_coef", &M::moe_aux_loss_coef, "weight of the load-balancing loss",
                          [](C c) { return non_negative(c.model.moe_aux_loss_coef); }));
  return f;
}

// ---------------------------------------------------------------------------------------------------------------
// reading

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

const ConfigField& find_field(const std::string& key, const std::string& source) {
  const auto& fields = config_fields();
  for (const ConfigField& f : fields)
    if (f.name == key) return f;
  // Not found: suggest the closest key when it is a plausible typo, else list them all.
  const ConfigField* best = nullptr;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const ConfigField& f : fields) {
    size_t d = edit_distance(lower(key), f.name);
    if (d < best_distance) best_distance = d, best = &f;
  }
  if (best && best_distance <= std::max<size_t>(1, key.size() / 3))
    throw UserError(fmt::format("unknown config key '{}' in {} (did you mean '{}'?)", key, source, best->name));
  std::vector<std::string> names;
  for (const ConfigField& f : fields) names.push_back(f.name);
  throw UserError(fmt::format("unknown config key '{}' in {} (valid keys: {})", key, source, fmt::join(names, ", ")));
}

std::string show(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }

// The value converted to exactly the field's JSON type, or a UserError saying what was expected.
json coerce(const ConfigField& f, const json& v, const std::string& source) {
  auto fail = [&](const char* expected) -> json {
    throw UserError(fmt::format("config key '{}' must be {}, got {} (in {})", f.name, expected, show(v), source));
  };
  // A float that holds a whole number in [lo, hi) (JSON 1e3 for steps).
  auto whole = [&](double lo, double hi) { double d = v.get<double>(); return std::isfinite(d) && d == std::trunc(d) && d >= lo && d < hi; };
  switch (f.type) {
    case ConfigType::Int:
      if (v.is_number_unsigned())
        return v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                   ? json(static_cast<int64_t>(v.get<uint64_t>()))
                   : fail("an integer in the int64 range");
      if (v.is_number_integer()) return json(v.get<int64_t>());
      if (v.is_number_float() && whole(-9.2e18, 9.2e18)) return json(static_cast<int64_t>(v.get<double>()));
      return fail("an integer");
    case ConfigType::UInt:
      if (v.is_number_unsigned()) return json(v.get<uint64_t>());
      if (v.is_number_integer() && v.get<int64_t>() >= 0) return json(static_cast<uint64_t>(v.get<int64_t>()));
      if (v.is_number_float() && whole(0, 1.8e19)) return json(static_cast<uint64_t>(v.get<double>()));
      return fail("a non-negative integer");
    case ConfigType::Number:
      if (v.is_number() && std::isfinite(v.get<double>())) return json(v.get<double>());
      return fail("a finite number");
    case ConfigType::Bool:
      if (v.is_boolean()) return v;
      return fail("true or false");
    case ConfigType::String:
      if (v.is_string()) return v;
      return fail("a string");
  }
  return fail("?");
}

void apply_value(TrainConfig& cfg, const ConfigField& f, const json& v, const std::string& source) {
  f.set(cfg, coerce(f, v, source));
}

}  // namespace

const std::vector<ConfigField>& config_fields() {
  static const std::vector<ConfigField> fields = make_fields();
  return fields;
}

void apply_json(TrainConfig& cfg, const json& j, const std::string& source) {
  GDN_USER_CHECK(j.is_object(), "{} must hold a JSON object of config keys, got a {}", source, j.type_name());
  for (const auto& item : j.items()) find_field(item.key(), source);  // every key known, before changing anything
  TrainConfig out = cfg;
  if (j.contains("preset")) apply_value(out, find_field("preset", source), j.at("preset"), source);
  for (const auto& item : j.items())
    if (item.key() != "preset") apply_value(out, find_field(item.key(), source), item.value(), source);
  cfg = std::move(out);
}

std::vector<std::string> load_config_file(TrainConfig& cfg, const std::string& path) {
  std::error_code ec;
  GDN_USER_CHECK(std::filesystem::exists(path, ec), "config file not found: {}", path);
  GDN_USER_CHECK(std::filesystem::is_regular_file(path, ec), "config file is not a regular file: {}", path);
  std::ifstream in(path, std::ios::binary);
  GDN_USER_CHECK(in.good(), "cannot read config file: {}", path);
  std::stringstream text;
  text << in.rdbuf();
  // A key given twice in one object would silently keep only its last value: refuse it instead.
  std::vector<std::set<std::string>> open_objects;
  json::parser_callback_t refuse_duplicates = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) open_objects.emplace_back();
    else if (event == json::parse_event_t::object_end) open_objects.pop_back();
    else if (event == json::parse_event_t::key && !open_objects.back().insert(parsed.get<std::string>()).second)
      throw UserError(fmt::format("config file {} gives the key '{}' twice", path, parsed.get<std::string>()));
    return true;
  };
  json j;
  try {
    j = json::parse(text.str(), refuse_duplicates, /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const json::parse_error& e) {
    std::string what = e.what();
    if (size_t close = what.find("] "); what.rfind("[json.exception", 0) == 0 && close != std::string::npos)
      what = what.substr(close + 2);
    throw UserError(fmt::format("config file {} is not valid JSON: {}", path, what));
  }
  apply_json(cfg, j, path);
  std::vector<std::string> keys;
  for (const auto& item : j.items()) keys.push_back(item.key());
  return keys;
}

void apply_override(TrainConfig& cfg, const std::string& key_eq_value) {
  const size_t eq = key_eq_value.find('=');
  std::string key = eq == std::string::npos ? "" : key_eq_value.substr(0, eq);
  key.erase(0, key.find_first_not_of(" \t"));
  key.erase(key.find_last_not_of(" \t") + 1);
  GDN_USER_CHECK(!key.empty(), "--set expects key=value, got '{}'", key_eq_value);
  const std::string text = key_eq_value.substr(eq + 1);
  const std::string source = "--set " + key_eq_value;
  const ConfigField& f = find_field(key, "--set");
  // A preset resets every key, including those given before it on the command line (--data, --out, other --set):
  // there is exactly one way to choose it, which the apps apply first.
  GDN_USER_CHECK(key != "preset", "--set preset=... would reset every key given before it; use --preset NAME");
  json value;
  switch (f.type) {
    case ConfigType::String: value = text; break;
    case ConfigType::Bool: {
      const std::string t = lower(text);
      if (t == "true" || t == "1") value = true;
      else if (t == "false" || t == "0") value = false;
      else throw UserError(fmt::format("config key '{}' must be true, false, 1 or 0, got \"{}\" (in {})", key, text, source));
      break;
    }
    default:
      // Numbers: read the text as a JSON value; anything that is not one stays a string and fails the type check.
      value = json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (value.is_discarded()) value = text;
      break;
  }
  TrainConfig out = cfg;
  apply_value(out, f, value, source);
  cfg = std::move(out);
}

void validate(const TrainConfig& cfg) {
  for (const ConfigField& f : config_fields()) {
    std::string problem = f.check(cfg);
    if (!problem.empty()) throw UserError(fmt::format("config key '{}': {}", f.name, problem));
  }
}

bool uses_bf16(const TrainConfig& cfg) {
  if (cfg.precision == "bf16") return true;
  return cfg.precision == "auto" && cfg.dtype == "float32" && valid_device(cfg.device) && cfg.device != "cpu";
}

// ---------------------------------------------------------------------------------------------------------------
// writing

json to_json(const TrainConfig& cfg) {
  json j = json::object();
  for (const ConfigField& f : config_fields()) j[f.name] = f.get(cfg);
  return j;
}

std::string config_help() {
  const TrainConfig defaults = preset_config("small");
  struct Row { std::string name, type, value, help; };
  std::vector<Row> train_rows, model_rows;
  size_t w_name = 3, w_type = 4, w_value = 7;
  for (const ConfigField& f : config_fields()) {
    Row r{f.name, config_type_name(f.type), show(f.get(defaults)), f.help};
    w_name = std::max(w_name, r.name.size());
    w_type = std::max(w_type, r.type.size());
    w_value = std::max(w_value, r.value.size());
    (f.is_model ? model_rows : train_rows).push_back(std::move(r));
  }
  std::string out = fmt::format(
      "Config keys: set them in a JSON config file or with --set key=value. A \"preset\" ({}) resets every key;\n"
      "defaults shown are the small preset.\n",
      fmt::join(preset_names(), ", "));
  auto section = [&](const char* title, const std::vector<Row>& rows) {
    out += fmt::format("\n{}\n  {:<{}}  {:<{}}  {:<{}}  {}\n", title, "key", w_name, "type", w_type, "default", w_value,
                       "meaning");
    for (const Row& r : rows)
      out += fmt::format("  {:<{}}  {:<{}}  {:<{}}  {}\n", r.name, w_name, r.type, w_type, r.value, w_value, r.help);
  };
  section("Training:", train_rows);
  section("Model:", model_rows);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// checkpoint compatibility

json model_config_json(const ModelConfig& model) {
  TrainConfig c;
  c.model = model;
  json j = json::object();
  for (const ConfigField& f : config_fields())
    if (f.is_model) j[f.name] = f.get(c);
  return j;
}

json complete_model_config_json(const json& stored) {
  json out = stored;
  if (!out.is_object()) return out;
  for (const char* key : {"decay_gate", "output_gate"})
    if (!out.contains(key)) out[key] = true;
  return out;
}

std::string describe_model_mismatch(const json& checkpoint, const json& this_run) {
  GDN_USER_CHECK(checkpoint.is_object() && this_run.is_object(), "model config must be a JSON object");
  std::vector<std::string> keys;
  for (const auto& item : checkpoint.items()) keys.push_back(item.key());
  for (const auto& item : this_run.items())
    if (!checkpoint.contains(item.key())) keys.push_back(item.key());
  std::sort(keys.begin(), keys.end());
  std::vector<std::string> diffs;
  auto value = [](const json& j, const std::string& k) { return j.contains(k) ? show(j.at(k)) : std::string("(absent)"); };
  for (const std::string& k : keys) {
    // json's == compares numbers by value across integer/unsigned/float, so 128 == 128u == 128.0.
    if (checkpoint.contains(k) && this_run.contains(k) && checkpoint.at(k) == this_run.at(k)) continue;
    diffs.push_back(fmt::format("{}: checkpoint {}, this run {}", k, value(checkpoint, k), value(this_run, k)));
  }
  return fmt::format("{}", fmt::join(diffs, "; "));
}

}  // namespace gdn
