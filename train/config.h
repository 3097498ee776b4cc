// train/config.h — the training configuration: presets, config files, --set overrides, validation, help.
//
// One table (config_fields(), in config.cpp) lists every key once: its name, type, how to read and write it on a
// TrainConfig, a validator and a one-line help text. Keys are flat: the TrainConfig fields and the ModelConfig
// fields (models/config.h) under their own names ("lr", "d_model", ...). Everything below is driven by that table,
// so adding a field means adding one row and the JSON reader, --set parser, validator, to_json and --help-config all
// follow.
//
// Layering of a run's configuration (what gdn-train does):
//   preset_config(preset)  ->  load_config_file(cfg, file)  ->  apply_override(cfg, "key=value") ...  ->  validate(cfg)
// A "preset" key (in a file or a JSON object) resets the WHOLE config to that preset; it is applied first, before the
// other keys of the same object, whatever their order. On the command line the preset is --preset, never --set.
//
// Types: "int" (int64), "uint" (uint64, the seed), "number" (double; JSON integers accepted), "bool" (JSON true/false;
// on the command line also 1/0), "string". A JSON number with no fractional part (1e3) is accepted for an int key.
//
// Errors are gdn::UserError with one line naming the key and the source: unknown keys (with a did-you-mean or the
// list of valid keys), wrong types, out-of-range values. validate() throws at the first broken rule, in table order.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config.h"

namespace gdn {

struct TrainConfig {
  ModelConfig model;
  std::string preset = "small";
  std::string data = "data/sotu";    // corpus file or folder
  std::string out_dir = "results";   // results JSON, curves PNG, tokenizer, checkpoints/ under it
  int64_t seq_len = 128, batch_size = 2, steps = 1000, warmup_steps = 50;
  double lr = 3e-4, min_lr_ratio = 0.1;   // decay floor = min_lr_ratio * lr
  std::string lr_schedule = "linear";     // "linear" or "cosine" (warmup, then decay to the floor at `steps`)
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8, weight_decay = 0.1, grad_clip = 1.0;
  int64_t eval_every = 100, eval_batches = 50, checkpoint_every = 500, log_every = 10;
  uint64_t seed = 1337;
  int64_t threads = 0;                    // 0 = all cores
  double val_fraction = 0.1;
  std::string device = "cpu";             // "cpu", "cuda" or "cuda:N"
  std::string dtype = "float32";          // "float32" or "float64"
  // Products on the GPU (core/precision.h): "auto" (bf16 on a GPU with dtype float32, float32 otherwise; bf16 reaches
  // the float32 run's validation loss to 2e-4 on the default corpus), "float32" (exact), "bf16" (bfloat16 inputs,
  // float32 accumulation; float32 dtype on a GPU only).
  std::string precision = "auto";
  bool cuda_graph = true;                 // on a GPU, capture the training step once as a CUDA graph and replay it
  bool fused_loss = false;                // on a GPU, lm_head + cross-entropy fused over row chunks (no [N,V] logits)
  int64_t dp_bucket_mb = 25;              // data parallel: MiB of gradients per all-reduce bucket (0 = one, after backward)
  int64_t sample_tokens = 120;            // tokens generated at the end of training
  std::string sample_prompt = "The";
  // Parameters whose name contains any of these comma-separated pieces get no weight decay; all others do.
  // The default leaves out the norms and the gate parameters (A_log, dt_bias), as the model's own flags do.
  std::string no_decay = "norm,A_log,dt_bias";
};

// ---- presets ----
// small (the defaults of TrainConfig), medium, large; seed-small, seed-medium, seed-large: the same sizes with the
// seed experiment's model (FLA's plain DeltaNet: decay_gate and output_gate off, 8 heads of d_model/8, FFN 4 d_model).
// See config.cpp for the numbers. Unknown name -> UserError listing the valid ones.
TrainConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();

// ---- the table ----
enum class ConfigType { Int, UInt, Number, Bool, String };
const char* config_type_name(ConfigType type);  // "int", "uint", "number", "bool", "string"

struct ConfigField {
  std::string name;
  ConfigType type;
  bool is_model;  // a ModelConfig field (part of model_config_json)
  std::string help;
  std::function<nlohmann::json(const TrainConfig&)> get;
  std::function<void(TrainConfig&, const nlohmann::json&)> set;  // value already checked to match `type`
  std::function<std::string(const TrainConfig&)> check;          // "" when valid, else what is wrong
};
const std::vector<ConfigField>& config_fields();

// ---- reading ----
// Applies every key of the JSON object j to cfg (a "preset" key first). `source` names where j came from, for
// messages ("config.json", "checkpoint ..."). On any error cfg is left unchanged.
void apply_json(TrainConfig& cfg, const nlohmann::json& j, const std::string& source);
// Reads a JSON object from `path` (// and /* */ comments allowed; a key given twice is an error) and applies it with
// apply_json. Returns the keys the file sets.
std::vector<std::string> load_config_file(TrainConfig& cfg, const std::string& path);
// One command-line override "key=value" (--set); the value is parsed by the key's type. "preset" is refused here
// (it would reset the keys set before it): the apps take the preset from --preset.
void apply_override(TrainConfig& cfg, const std::string& key_eq_value);

// Every constraint on the values (ranges, choices, cross-field rules). Throws UserError at the first broken one.
void validate(const TrainConfig& cfg);
// The product precision a run uses: "auto" resolved for its device and dtype.
bool uses_bf16(const TrainConfig& cfg);

// ---- writing ----
// Every key; apply_json(c2, to_json(c1), ...) makes c2 == c1 exactly.
nlohmann::json to_json(const TrainConfig& cfg);
// A plain-text table of every key: name, type, default (the small preset) and help (gdn-train --help-config).
std::string config_help();

// ---- checkpoint compatibility ----
// Only the ModelConfig keys.
nlohmann::json model_config_json(const ModelConfig& model);
// A model config as a checkpoint stores it, completed with the keys added since it was written, each with the value
// that the model of that time had: decay_gate and output_gate true (only the gated layer existed). Present keys stay.
nlohmann::json complete_model_config_json(const nlohmann::json& stored);
// "" when the two model configs are equal, else every differing key: "d_model: checkpoint 128, this run 256; ...".
// `checkpoint` is the one stored in a checkpoint, `this_run` the one of the current configuration.
std::string describe_model_mismatch(const nlohmann::json& checkpoint, const nlohmann::json& this_run);

}  // namespace gdn
