// train/checkpoint.h — exact, atomic checkpoints.
//
// Layout under <out_dir>/checkpoints/:
//   step-000500/model.safetensors      weights, PyTorch-readable (names as in GatedDeltaNetLM::parameters()),
//                                      metadata: "format", "config" (the model config JSON), "step"
//   step-000500/optimizer.safetensors  AdamW moments (exp_avg.<name>, exp_avg_sq.<name>)
//   step-000500/trainer_state.json     step, data-sampler state, histories, best val loss, full train config
//   LAST, BEST                         one line each: the directory name of the newest / best checkpoint
// A checkpoint directory is written under a temporary name and renamed into place when complete; LAST and BEST are
// replaced atomically (temp file + rename) only after that. A crash or a full disk at any moment therefore leaves
// the previous checkpoint intact and LAST pointing at a complete directory. After a successful save, the checkpoints
// that LAST and BEST named before and name no more are removed, with the temporaries of a killed save; no other
// directory is ever deleted (the output folder's lock, taken by the trainer, keeps other processes out).
//
// No checkpoint holds NaN or inf: saving refuses a model or optimizer state with one (so LAST and BEST only name
// finite states), and loading refuses a file with one, naming the tensor.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "models/language_model.h"
#include "train/optimizer.h"

namespace gdn {

struct CheckpointData {
  int64_t step = 0;
  nlohmann::json trainer_state;  // free-form JSON owned by the trainer
};

// What a checkpoint holds, copied to host memory once (one device-to-host copy per tensor, a copy on the CPU too):
// the model's weights under their checkpoint names, the optimizer's moments and step count, and the model config.
// The copy is the trainer's to write from another thread while training goes on.
struct CheckpointTensors {
  std::vector<std::pair<std::string, Tensor>> weights, moments;
  int64_t steps_taken = 0;
  ModelConfig config;
};
CheckpointTensors checkpoint_tensors(const GatedDeltaNetLM& model, const AdamW& optimizer);

// Writes a checkpoint for `step` and points LAST (and BEST when is_best) at it. Returns the directory path.
std::string save_checkpoint(const std::string& checkpoint_root, const GatedDeltaNetLM& model, const AdamW& optimizer,
                            const CheckpointData& data, bool is_best);
// The same from a snapshot already taken (the trainer checks it for non-finite values first).
std::string save_checkpoint(const std::string& checkpoint_root, const CheckpointTensors& tensors,
                            const CheckpointData& data, bool is_best);

// "LAST" or "BEST" -> the directory it names, or nullopt when there is none.
std::optional<std::string> find_checkpoint(const std::string& checkpoint_root, const std::string& which);

// "" when every floating-point tensor holds only finite values, else "'NAME' holds nan at element I" for the first.
std::string describe_non_finite(const std::vector<std::pair<std::string, Tensor>>& tensors);

// Reads model.safetensors of a checkpoint directory and checks it against the model's config and parameter list
// (gdn::UserError naming the difference: another config, a missing tensor, a truncated file, a NaN or inf value).
// Loads weights into `model` (in place) and, when `optimizer` is given, the moments; returns the trainer state.
CheckpointData load_checkpoint(const std::string& dir, GatedDeltaNetLM& model, AdamW* optimizer);

// The model config stored in a checkpoint (to build the model before loading it, as gdn-generate does).
ModelConfig read_checkpoint_model_config(const std::string& dir);

}  // namespace gdn
