// apps/gdn_import.cpp — gdn-import: a transformers Qwen3NextForCausalLM folder (every layer linear attention) as a
// gdn.cpp run folder.
//
//   gdn-import --from hf_model --out imported
// reads hf_model/config.json, model.safetensors and tokenizer.json (a tokenizer of the form gdn-export writes) and
// writes imported/tokenizer.json and imported/checkpoints/step-000000 (LAST and BEST), which gdn-generate and
// gdn-export read. To train from such a model, `gdn-train --init-from hf_model` reads the folder directly.
// The conversions are stated once, in train/hf_format.h. What gdn.cpp cannot represent is one line naming the
// config field or tensor, exit code 2, and nothing is written; --out must not hold an earlier run.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>

#include "apps/cli_parse.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/file_util.h"
#include "train/hf_format.h"

int main(int argc, char** argv) {
  CLI::App app{
      "gdn-import — read a transformers Qwen3NextForCausalLM (all layers linear attention) into a gdn.cpp run "
      "folder.\nExample: gdn-import --from hf_model --out imported"};
  std::string from, out;
  app.add_option("--from", from, "the transformers folder (config.json, model.safetensors, tokenizer.json)")
      ->required();
  app.add_option("--out", out, "the gdn.cpp run folder to create (tokenizer.json, checkpoints/)")->required();
  if (auto rc = gdn::parse_command_line(app, argc, argv, "gdn-import")) return *rc;

  try {
    namespace fs = std::filesystem;
    std::error_code ec;
    GDN_USER_CHECK(!fs::exists(fs::path(out) / "checkpoints", ec) && !fs::exists(fs::path(out) / "tokenizer.json", ec),
                   "{} already holds a run (checkpoints/ or tokenizer.json): choose a new folder", out);
    gdn::HfCheckpoint ckpt = gdn::read_hf_checkpoint(from);
    std::optional<gdn::BpeTokenizer> tok = gdn::read_hf_tokenizer(from);
    GDN_USER_CHECK(tok.has_value(), "{} has no tokenizer.json (gdn.cpp needs the byte-level BPE tokenizer that "
                   "gdn-export writes)", from);
    GDN_USER_CHECK(tok->vocab_size() == ckpt.config.vocab_size, "{}: tokenizer.json has {} tokens, config.json "
                   "field 'vocab_size' is {}", from, tok->vocab_size(), ckpt.config.vocab_size);
    gdn::GatedDeltaNetLM model(ckpt.config, 0, gdn::kFloat32, gdn::kCPU);
    gdn::load_hf_weights(model, ckpt);

    gdn::ensure_directory(out);
    tok->save((fs::path(out) / "tokenizer.json").string());
    std::vector<gdn::NamedParameter> named;
    for (const auto& p : model.parameters()) named.push_back({p.name, p.value, p.decay});
    gdn::AdamW optimizer(named, 0.9, 0.95, 1e-8, 0.0);
    gdn::TrainConfig tc;
    tc.model = ckpt.config;
    tc.out_dir = out;
    gdn::CheckpointData data;
    data.step = 0;
    data.trainer_state = {{"tokenizer_fingerprint", tok->fingerprint()}, {"imported_from", from},
                          {"config", gdn::to_json(tc)}};
    std::string dir = gdn::save_checkpoint((fs::path(out) / "checkpoints").string(), model, optimizer, data, true);
    std::printf("gdn-import: %s -> %s (%s, %lld layers, %lld parameters)\n", from.c_str(), dir.c_str(),
                ckpt.config.is_moe() ? "MoE" : "dense", static_cast<long long>(ckpt.config.n_layers),
                static_cast<long long>(model.num_parameters()));
    return 0;
  } catch (const gdn::UserError& e) {
    std::fprintf(stderr, "gdn-import: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gdn-import: internal error: %s\n", e.what());
    return 3;
  }
}
