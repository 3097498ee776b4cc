// train/checkpoint.cpp — see checkpoint.h.
#include "train/checkpoint.h"

#include <filesystem>
#include <set>

#include <unistd.h>

#include "core/dispatch.h"
#include "ops/ops.h"
#include "train/config.h"
#include "train/file_util.h"
#include "train/safetensors.h"

namespace gdn {

namespace fs = std::filesystem;

namespace {
constexpr const char* kFormat = "gdn.cpp-checkpoint-v1";

std::string step_dir_name(int64_t step) { return fmt::format("step-{:06d}", step); }

std::vector<std::pair<std::string, Tensor>> named_weights(const GatedDeltaNetLM& model) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& p : model.parameters()) out.emplace_back(p.name, p.value);
  return out;
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

// Removes step directories (and leftover temporaries) that neither LAST nor BEST names.
void prune(const std::string& root) {
  std::set<std::string> keep;
  for (const char* which : {"LAST", "BEST"})
    if (auto d = find_checkpoint(root, which)) keep.insert(fs::path(*d).filename().string());
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind("step-", 0) == 0 && !keep.count(name)) remove_quietly(entry.path());
  }
}
}  // namespace

std::optional<std::string> find_checkpoint(const std::string& root, const std::string& which) {
  fs::path pointer = fs::path(root) / which;
  if (!fs::exists(pointer)) return std::nullopt;
  std::string name = read_file(pointer.string());
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  GDN_USER_CHECK(!name.empty() && name.find('/') == std::string::npos, "checkpoint pointer {} is corrupt",
                 pointer.string());
  fs::path dir = fs::path(root) / name;
  GDN_USER_CHECK(fs::is_directory(dir), "checkpoint pointer {} names {}, which does not exist", pointer.string(),
                 dir.string());
  return dir.string();
}

std::string save_checkpoint(const std::string& root, const GatedDeltaNetLM& model, const AdamW& optimizer,
                            const CheckpointData& data, bool is_best) {
  ensure_directory(root);
  const std::string name = step_dir_name(data.step);
  const fs::path final_dir = fs::path(root) / name;
  const fs::path tmp_dir = fs::path(root) / fmt::format("{}.tmp-{}", name, ::getpid());
  remove_quietly(tmp_dir);
  ensure_directory(tmp_dir.string());

  std::map<std::string, std::string> meta = {{"format", kFormat},
                                             {"config", model_config_json(model.config()).dump()},
                                             {"step", std::to_string(data.step)}};
  save_safetensors((tmp_dir / "model.safetensors").string(), named_weights(model), meta);
  save_safetensors((tmp_dir / "optimizer.safetensors").string(), optimizer.state_tensors(),
                   {{"format", kFormat}, {"steps_taken", std::to_string(optimizer.steps_taken())}});
  nlohmann::json state = data.trainer_state;
  state["step"] = data.step;
  state["format"] = kFormat;
  write_file_atomic((tmp_dir / "trainer_state.json").string(), state.dump(1, ' ', false, nlohmann::json::error_handler_t::replace));

  // Put the complete directory in place. If a directory of the same step exists (a re-save after resume), move it
  // aside first and drop it only once the new one is in place.
  fs::path old_dir;
  if (fs::exists(final_dir)) {
    old_dir = fs::path(root) / fmt::format("{}.old-{}", name, ::getpid());
    fs::rename(final_dir, old_dir);
  }
  fs::rename(tmp_dir, final_dir);
  write_file_atomic((fs::path(root) / "LAST").string(), name + "\n");
  if (is_best) write_file_atomic((fs::path(root) / "BEST").string(), name + "\n");
  if (!old_dir.empty()) remove_quietly(old_dir);
  prune(root);
  return final_dir.string();
}

ModelConfig read_checkpoint_model_config(const std::string& dir) {
  SafetensorsFile f = load_safetensors((fs::path(dir) / "model.safetensors").string());
  auto it = f.metadata.find("config");
  GDN_USER_CHECK(it != f.metadata.end(), "checkpoint {} has no model config in its metadata", dir);
  TrainConfig cfg;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const std::exception& e) {
    throw UserError(fmt::format("checkpoint {} has a corrupt model config: {}", dir, e.what()));
  }
  apply_json(cfg, j, dir + "/model.safetensors");
  return cfg.model;
}

CheckpointData load_checkpoint(const std::string& dir, GatedDeltaNetLM& model, AdamW* optimizer) {
  const std::string model_path = (fs::path(dir) / "model.safetensors").string();
  SafetensorsFile weights = load_safetensors(model_path);
  auto it = weights.metadata.find("config");
  GDN_USER_CHECK(it != weights.metadata.end(), "{} has no model config in its metadata", model_path);
  std::string mismatch =
      describe_model_mismatch(nlohmann::json::parse(it->second), model_config_json(model.config()));
  GDN_USER_CHECK(mismatch.empty(), "checkpoint {} was trained with another model config ({})", dir, mismatch);

  NoGradGuard no_grad;
  for (const auto& p : model.parameters()) {
    GDN_USER_CHECK(weights.has(p.name), "checkpoint {} lacks tensor '{}'", model_path, p.name);
    const Tensor& src = weights.get(p.name);
    GDN_USER_CHECK(src.shape() == p.value.shape(), "checkpoint tensor '{}' has shape {}, the model expects {}",
                   p.name, shape_str(src.shape()), shape_str(p.value.shape()));
    Tensor converted = to_device(to_dtype(src, p.value.dtype()), p.value.device());
    kernels::copy(p.value.device(), p.value, converted);
  }

  CheckpointData data;
  std::string state_text = read_file((fs::path(dir) / "trainer_state.json").string());
  try {
    data.trainer_state = nlohmann::json::parse(state_text);
    data.step = data.trainer_state.at("step").get<int64_t>();
  } catch (const std::exception& e) {
    throw UserError(fmt::format("checkpoint {} has a corrupt trainer_state.json: {}", dir, e.what()));
  }
  if (optimizer) {
    SafetensorsFile opt = load_safetensors((fs::path(dir) / "optimizer.safetensors").string());
    auto st = opt.metadata.find("steps_taken");
    GDN_USER_CHECK(st != opt.metadata.end(), "checkpoint {} optimizer state lacks steps_taken", dir);
    optimizer->load_state(opt.tensors, std::stoll(st->second));
  }
  return data;
}

}  // namespace gdn
