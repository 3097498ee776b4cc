// apps/gdn_export.cpp — gdn-export: a gdn-train checkpoint in Hugging Face form, and the reference outputs that
// scripts/hf_check.py compares transformers against.
//
//   gdn-export --run results --format hf --out hf_model      config.json, model.safetensors, tokenizer.json,
//                                                             tokenizer_config.json, generation_config.json
//   gdn-export --run results --dump-logits ids.json logits.bin
//       runs the model (float32, CPU) on the token ids of ids.json (a JSON array) and writes the logits [T, vocab]
//       as raw little-endian float32
//   gdn-export --run results --encode-val val.json [--data DIR]
//       writes the validation split of the run's corpus (its data and val_fraction, or --data) as
//       [{"text": ..., "ids": [...]}, ...], one entry per document, encoded with the run's tokenizer
// The conversions are stated once, in train/hf_format.h. Anything transformers cannot represent is refused with
// one line before the output folder is touched; bad input is one line "gdn-export: error: ..." and exit code 2.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "apps/cli_parse.h"
#include "models/language_model.h"
#include "ops/ops.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/corpus.h"
#include "train/file_util.h"
#include "train/hf_format.h"
#include "train/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app{
      "gdn-export — write a gdn-train checkpoint as a Hugging Face transformers model (Qwen3NextForCausalLM).\n"
      "Example: gdn-export --run results --format hf --out hf_model"};
  std::string run = "results", checkpoint, which = "BEST", format = "hf", out, encode_val, data;
  std::vector<std::string> dump_logits;
  app.add_option("--run", run, "the gdn-train output folder (tokenizer.json, checkpoints/)");
  app.add_option("--checkpoint", checkpoint, "a checkpoint directory (default: RUN/checkpoints/BEST, else LAST)");
  app.add_option("--which", which, "BEST or LAST when --checkpoint is not given")->check(CLI::IsMember({"BEST", "LAST"}));
  app.add_option("--format", format, "export format (hf: transformers Qwen3NextForCausalLM)")
      ->check(CLI::IsMember({"hf"}));
  app.add_option("--out", out, "folder to write the exported model to");
  app.add_option("--dump-logits", dump_logits, "IDS_JSON LOGITS_BIN: logits of the ids (float32 [T, vocab])")
      ->expected(2);
  app.add_option("--encode-val", encode_val, "JSON file to write the validation documents and their ids to");
  app.add_option("--data", data, "corpus for --encode-val (default: the run's)");
  if (auto rc = gdn::parse_command_line(app, argc, argv, "gdn-export")) return *rc;

  try {
    namespace fs = std::filesystem;
    GDN_USER_CHECK(!out.empty() || !dump_logits.empty() || !encode_val.empty(),
                   "nothing to do: give --out DIR, --dump-logits IDS LOGITS or --encode-val FILE");
    if (checkpoint.empty()) {
      std::string root = (fs::path(run) / "checkpoints").string();
      auto dir = gdn::find_checkpoint(root, which);
      if (!dir && which == "BEST") dir = gdn::find_checkpoint(root, "LAST");
      GDN_USER_CHECK(dir.has_value(), "no checkpoint in {} (train one with gdn-train first)", root);
      checkpoint = *dir;
    }
    const std::string tok_path = (fs::path(run) / "tokenizer.json").string();
    gdn::BpeTokenizer tok = gdn::BpeTokenizer::load(tok_path);
    gdn::ModelConfig mc = gdn::read_checkpoint_model_config(checkpoint);
    GDN_USER_CHECK(mc.vocab_size == tok.vocab_size(), "tokenizer {} has {} tokens but the checkpoint expects {}",
                   tok_path, tok.vocab_size(), mc.vocab_size);
    gdn::GatedDeltaNetLM model(mc, 0, gdn::kFloat32, gdn::kCPU);
    const gdn::CheckpointData ck = gdn::load_checkpoint(checkpoint, model, nullptr);
    const nlohmann::json& fp = ck.trainer_state.contains("tokenizer_fingerprint")
                                   ? ck.trainer_state["tokenizer_fingerprint"] : nlohmann::json();
    GDN_USER_CHECK(fp.is_null() || fp == tok.fingerprint(),
                   "tokenizer {} is not the one checkpoint {} was trained with (fingerprints differ)", tok_path,
                   checkpoint);

    if (!out.empty()) {
      gdn::export_hf(model, tok, out);
      std::printf("gdn-export: %s -> %s (Qwen3NextForCausalLM, %s, %lld layers)\n", checkpoint.c_str(), out.c_str(),
                  mc.is_moe() ? "MoE" : "dense", static_cast<long long>(mc.n_layers));
    }
    if (!dump_logits.empty()) {
      nlohmann::json ids_json;
      try {
        ids_json = nlohmann::json::parse(gdn::read_file(dump_logits[0]));
      } catch (const nlohmann::json::exception& e) {
        throw gdn::UserError(fmt::format("{} is not valid JSON: {}", dump_logits[0], e.what()));
      }
      GDN_USER_CHECK(ids_json.is_array() && !ids_json.empty(), "{} must be a non-empty JSON array of token ids",
                     dump_logits[0]);
      std::vector<int64_t> ids;
      for (const auto& v : ids_json) {
        GDN_USER_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < mc.vocab_size,
                       "{}: {} is not a token id below {}", dump_logits[0], v.dump(), mc.vocab_size);
        ids.push_back(v.get<int64_t>());
      }
      gdn::NoGradGuard no_grad;
      const int64_t T = static_cast<int64_t>(ids.size());
      gdn::Tensor logits = model.forward(gdn::Tensor::from_int64(ids, {1, T})).logits;
      std::vector<double> v = logits.to_double_vector();
      std::vector<float> f(v.begin(), v.end());
      gdn::write_file_atomic(dump_logits[1], std::string(reinterpret_cast<const char*>(f.data()),
                                                         f.size() * sizeof(float)));
      std::printf("gdn-export: logits [%lld, %lld] -> %s\n", static_cast<long long>(T),
                  static_cast<long long>(mc.vocab_size), dump_logits[1].c_str());
    }
    if (!encode_val.empty()) {
      gdn::TrainConfig tc;
      GDN_USER_CHECK(ck.trainer_state.contains("config") || !data.empty(),
                     "checkpoint {} does not name its corpus: pass --data", checkpoint);
      if (ck.trainer_state.contains("config")) gdn::apply_json(tc, ck.trainer_state["config"], checkpoint);
      if (!data.empty()) tc.data = data;
      gdn::Corpus corpus = gdn::load_corpus(tc.data, tc.val_fraction);
      nlohmann::json docs = nlohmann::json::array();
      for (const std::string& d : corpus.val_docs) docs.push_back({{"text", d}, {"ids", tok.encode(d)}});
      gdn::write_file_atomic(encode_val, docs.dump() + "\n");
      std::printf("gdn-export: %zu validation documents of %s -> %s\n", corpus.val_docs.size(), tc.data.c_str(),
                  encode_val.c_str());
    }
    return 0;
  } catch (const gdn::UserError& e) {
    std::fprintf(stderr, "gdn-export: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gdn-export: internal error: %s\n", e.what());
    return 3;
  }
}
