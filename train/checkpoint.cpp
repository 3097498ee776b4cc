// train/checkpoint.cpp — see checkpoint.h.
#include "train/checkpoint.h"

#include <charconv>
#include <cmath>
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

// The directory names LAST and BEST point at now (absent pointers give nothing).
std::set<std::string> pointed_at(const std::string& root) {
  std::set<std::string> names;
  for (const char* which : {"LAST", "BEST"})
    if (auto d = find_checkpoint(root, which)) names.insert(fs::path(*d).filename().string());
  return names;
}

// After LAST/BEST moved: removes the checkpoints they named before (`released`) and name no more, and the
// temporaries of a save that was killed ("step-N.tmp-PID", "step-N.old-PID"; the output folder's lock guarantees
// that no other process is writing them). Any other directory, even one called step-N, is not ours to delete.
void prune(const std::string& root, const std::set<std::string>& released) {
  const std::set<std::string> keep = pointed_at(root);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("step-", 0) != 0 || keep.count(name)) continue;
    const bool temporary = name.find(".tmp-") != std::string::npos || name.find(".old-") != std::string::npos;
    if (temporary || released.count(name)) remove_quietly(entry.path());
  }
}

// Parses a whole decimal int64 (metadata values); nullopt for anything else.
std::optional<int64_t> parse_int64(const std::string& text) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}
}  // namespace

std::string describe_non_finite(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  for (const auto& [name, t] : tensors) {
    if (!t.defined() || !(t.dtype() == kFloat32 || t.dtype() == kFloat64 || t.dtype() == kBFloat16)) continue;
    const Tensor h = contiguous(t.device().is_cpu() ? t : to_device(t, kCPU));
    auto scan = [&](const auto* p) -> std::string {  // in the tensor's own type: no copy to double
      for (int64_t i = 0; i < h.numel(); ++i)
        if (!std::isfinite(static_cast<double>(p[i])))
          return fmt::format("'{}' holds {} at element {}", name, static_cast<double>(p[i]), i);
      return "";
    };
    std::string bad;
    if (h.dtype() == kFloat32) bad = scan(h.data<float>());
    else if (h.dtype() == kFloat64) bad = scan(h.data<double>());
    else {
      const std::vector<double> values = h.to_double_vector();
      bad = scan(values.data());
    }
    if (!bad.empty()) return bad;
  }
  return "";
}

CheckpointTensors checkpoint_tensors(const GatedDeltaNetLM& model, const AdamW& optimizer) {
  auto on_host = [](std::vector<std::pair<std::string, Tensor>> list) {
    for (auto& [name, t] : list) t = t.device().is_cpu() ? clone(t.detach()) : to_device(t.detach(), kCPU);
    return list;
  };
  return {on_host(named_weights(model)), on_host(optimizer.state_tensors()), optimizer.steps_taken(),
          model.config()};
}

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
  return save_checkpoint(root, checkpoint_tensors(model, optimizer), data, is_best);
}

std::string save_checkpoint(const std::string& root, const CheckpointTensors& tensors, const CheckpointData& data,
                            bool is_best) {
  // A checkpoint is a state to come back to: one that holds NaN or inf is never written, so LAST and BEST only ever
  // name finite ones.
  const std::string bad_weights = describe_non_finite(tensors.weights);
  GDN_USER_CHECK(bad_weights.empty(), "refusing to write a checkpoint of step {}: parameter {}", data.step, bad_weights);
  const std::vector<std::pair<std::string, Tensor>>& moments = tensors.moments;
  const std::string bad_moments = describe_non_finite(moments);
  GDN_USER_CHECK(bad_moments.empty(), "refusing to write a checkpoint of step {}: optimizer state {}", data.step,
                 bad_moments);
  ensure_directory(root);
  const std::set<std::string> pointed_before = pointed_at(root);
  const std::string name = step_dir_name(data.step);
  const fs::path final_dir = fs::path(root) / name;
  const fs::path tmp_dir = fs::path(root) / fmt::format("{}.tmp-{}", name, ::getpid());
  remove_quietly(tmp_dir);
  ensure_directory(tmp_dir.string());

  std::map<std::string, std::string> meta = {{"format", kFormat},
                                             {"config", model_config_json(tensors.config).dump()},
                                             {"step", std::to_string(data.step)}};
  save_safetensors((tmp_dir / "model.safetensors").string(), tensors.weights, meta);
  save_safetensors((tmp_dir / "optimizer.safetensors").string(), moments,
                   {{"format", kFormat}, {"steps_taken", std::to_string(tensors.steps_taken)}});
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
  prune(root, pointed_before);
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
  apply_json(cfg, complete_model_config_json(j), dir + "/model.safetensors");
  return cfg.model;
}

CheckpointData load_checkpoint(const std::string& dir, GatedDeltaNetLM& model, AdamW* optimizer) {
  const std::string model_path = (fs::path(dir) / "model.safetensors").string();
  SafetensorsFile weights = load_safetensors(model_path);
  auto it = weights.metadata.find("config");
  GDN_USER_CHECK(it != weights.metadata.end(), "{} has no model config in its metadata", model_path);
  std::string mismatch = describe_model_mismatch(complete_model_config_json(nlohmann::json::parse(it->second)),
                                                 model_config_json(model.config()));
  GDN_USER_CHECK(mismatch.empty(), "checkpoint {} was trained with another model config ({})", dir, mismatch);

  // Check every tensor (presence, shape, finite values) before changing the model.
  for (const auto& p : model.parameters()) {
    GDN_USER_CHECK(weights.has(p.name), "checkpoint {} lacks tensor '{}'", model_path, p.name);
    const Tensor& src = weights.get(p.name);
    GDN_USER_CHECK(src.shape() == p.value.shape(), "checkpoint tensor '{}' has shape {}, the model expects {}",
                   p.name, shape_str(src.shape()), shape_str(p.value.shape()));
  }
  const std::string bad_weights = describe_non_finite(weights.tensors);
  GDN_USER_CHECK(bad_weights.empty(), "checkpoint {} is corrupt: tensor {}", model_path, bad_weights);

  NoGradGuard no_grad;
  for (const auto& p : model.parameters()) {
    Tensor converted = to_device(to_dtype(weights.get(p.name), p.value.dtype()), p.value.device());
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
  GDN_USER_CHECK(data.step >= 0, "checkpoint {} has a corrupt trainer_state.json: step {}", dir, data.step);
  if (optimizer) {
    const std::string opt_path = (fs::path(dir) / "optimizer.safetensors").string();
    SafetensorsFile opt = load_safetensors(opt_path);
    auto st = opt.metadata.find("steps_taken");
    GDN_USER_CHECK(st != opt.metadata.end(), "checkpoint {} optimizer state lacks steps_taken", dir);
    const std::optional<int64_t> steps_taken = parse_int64(st->second);
    GDN_USER_CHECK(steps_taken.has_value(), "checkpoint {} is corrupt: steps_taken is \"{}\"", opt_path, st->second);
    const std::string bad_moments = describe_non_finite(opt.tensors);
    GDN_USER_CHECK(bad_moments.empty(), "checkpoint {} is corrupt: tensor {}", opt_path, bad_moments);
    optimizer->load_state(opt.tensors, *steps_taken);
  }
  return data;
}

}  // namespace gdn
