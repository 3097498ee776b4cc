// apps/gdn_generate.cpp — gdn-generate: sample text from a trained checkpoint using the recurrent state.
//
// Loads OUT/tokenizer.json and the checkpoint OUT/checkpoints/BEST (or LAST, or --checkpoint DIR), runs the prompt
// once through the model with a state cache, then generates one token per length-1 step (O(1) work per token),
// printing tokens as they come. The tokenizer must be the one the checkpoint was trained with: its fingerprint
// (trainer_state.json "tokenizer_fingerprint") is checked; a checkpoint without one is accepted unchecked.
// --ids-out FILE also writes {"prompt_ids": [...], "generated_ids": [...]} (what scripts/hf_check.py compares).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>

#include <omp.h>

#include "apps/cli_parse.h"
#include "core/allocator.h"
#include "models/language_model.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/file_util.h"
#include "train/generate.h"
#include "train/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app{
      "gdn-generate — generate text from a gdn-train checkpoint (recurrent state, O(1) per token).\n"
      "Example: gdn-generate --out results --prompt \"The Congress\" --max-tokens 80"};
  std::string out = "results", checkpoint, prompt = "The", which = "BEST", device = "cpu", ids_out;
  gdn::SamplingOptions opts;
  opts.max_tokens = 100;
  int threads = 0;
  app.add_option("--out", out, "the gdn-train output folder (tokenizer.json, checkpoints/)");
  app.add_option("--checkpoint", checkpoint, "a checkpoint directory (default: OUT/checkpoints/BEST, else LAST)");
  app.add_option("--which", which, "BEST or LAST when --checkpoint is not given")->check(CLI::IsMember({"BEST", "LAST"}));
  app.add_option("--prompt", prompt, "text to continue (empty: start of a document)");
  app.add_option("--max-tokens", opts.max_tokens, "tokens to generate");
  app.add_option("--temperature", opts.temperature, "sampling temperature (0 = greedy)");
  app.add_option("--top-k", opts.top_k, "keep the k most likely tokens (0 = all)");
  app.add_option("--top-p", opts.top_p, "nucleus sampling mass (1 = off)");
  app.add_option("--seed", opts.seed, "sampling seed");
  app.add_option("--threads", threads, "CPU threads, 0 to 1024 (default 0: all cores)");
  app.add_option("--device", device, "cpu, cuda or cuda:N");
  app.add_option("--ids-out", ids_out, "JSON file to write the prompt and generated token ids to");
  if (auto rc = gdn::parse_command_line(app, argc, argv, "gdn-generate")) return *rc;

  try {
    GDN_USER_CHECK(opts.max_tokens >= 0, "--max-tokens must be >= 0");
    GDN_USER_CHECK(opts.temperature >= 0, "--temperature must be >= 0");
    GDN_USER_CHECK(opts.top_p > 0 && opts.top_p <= 1, "--top-p must be in (0, 1]");
    GDN_USER_CHECK(opts.top_k >= 0, "--top-k must be >= 0 (0 = all tokens), got {}", opts.top_k);
    GDN_USER_CHECK(threads >= 0 && threads <= 1024, "--threads must be between 0 and 1024 (0 = all cores), got {}",
                   threads);
    if (threads > 0) omp_set_num_threads(threads);
    gdn::Device dev = gdn::init_device(device);
    namespace fs = std::filesystem;
    if (checkpoint.empty()) {
      std::string root = (fs::path(out) / "checkpoints").string();
      auto dir = gdn::find_checkpoint(root, which);
      if (!dir && which == "BEST") dir = gdn::find_checkpoint(root, "LAST");
      GDN_USER_CHECK(dir.has_value(), "no checkpoint in {} (train one with gdn-train first)", root);
      checkpoint = *dir;
    }
    const std::string tok_path = (fs::path(out) / "tokenizer.json").string();
    gdn::BpeTokenizer tok = gdn::BpeTokenizer::load(tok_path);
    gdn::ModelConfig mc = gdn::read_checkpoint_model_config(checkpoint);
    GDN_USER_CHECK(mc.vocab_size == tok.vocab_size(), "tokenizer {} has {} tokens but the checkpoint expects {}",
                   tok_path, tok.vocab_size(), mc.vocab_size);
    gdn::GatedDeltaNetLM model(mc, 0, gdn::kFloat32, dev);
    const gdn::CheckpointData data = gdn::load_checkpoint(checkpoint, model, nullptr);
    // Same size is not enough: other merges give other ids, and the text would come out scrambled.
    const nlohmann::json& fp = data.trainer_state.contains("tokenizer_fingerprint")
                                   ? data.trainer_state["tokenizer_fingerprint"] : nlohmann::json();
    GDN_USER_CHECK(fp.is_null() || fp == tok.fingerprint(),
                   "tokenizer {} is not the one checkpoint {} was trained with (fingerprints differ)", tok_path,
                   checkpoint);

    std::vector<int32_t> ids32 = tok.encode(prompt);
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    if (ids.empty()) ids.push_back(tok.eot_id());
    opts.stop_token = tok.eot_id();
    std::fputs(prompt.c_str(), stdout);
    std::fflush(stdout);
    // Decode incrementally: print the text that the ids so far add beyond what was printed.
    std::vector<int32_t> generated;
    std::string printed;
    gdn::generate_ids(model, ids, opts, [&](int64_t id) {
      generated.push_back(static_cast<int32_t>(id));
      std::string text = tok.decode(generated);
      std::fputs(text.substr(printed.size()).c_str(), stdout);
      std::fflush(stdout);
      printed = text;
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (!ids_out.empty())
      gdn::write_file_atomic(ids_out, nlohmann::json{{"prompt_ids", ids}, {"generated_ids", generated}}.dump() + "\n");
    gdn::print_allocator_stats_if_requested(dev);
    return 0;
  } catch (const gdn::UserError& e) {
    std::fprintf(stderr, "gdn-generate: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gdn-generate: internal error: %s\n", e.what());
    return 3;
  }
}
