// apps/gdn_train.cpp — gdn-train: train a Gated DeltaNet language model (the main job).
//
// Configuration, in order of precedence (later wins): --preset, --config FILE (JSON), the direct flags
// (--data, --out, --steps, ...), then every --set key=value. `gdn-train --help-config` lists all keys.
// Bad input ends with one line "gdn-train: error: ..." and exit code 2; Ctrl-C saves a checkpoint and exits 130.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>

#include "apps/cli_parse.h"
#include "core/allocator.h"
#include "train/config.h"
#include "train/device.h"
#include "train/trainer.h"

namespace {
void on_sigint(int) {
  gdn::request_stop();
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gdn-train — train a Gated DeltaNet language model on the CPU.\n"
      "Reads a UTF-8 corpus (file or folder), trains or reuses a byte-level BPE tokenizer, trains the model, and\n"
      "writes OUT/training_results.json, OUT/training_curves.png, OUT/tokenizer.json and OUT/checkpoints/.\n"
      "Example: gdn-train --preset small --data data/sotu --out results"};
  std::string preset = "small", config_file, data, out;
  std::vector<std::string> sets;
  int64_t steps = 0, threads = -1;
  uint64_t seed = 0;
  bool resume = false, overwrite = false, help_config = false, seed_given = false;
  app.add_option("--preset", preset, "small | medium | large (default small)");
  app.add_option("--config", config_file, "JSON file of config keys (see --help-config)");
  app.add_option("--data", data, "corpus: a UTF-8 text file or a folder of files (default data/sotu)");
  app.add_option("--out", out, "output folder (default results)");
  app.add_option("--steps", steps, "number of optimizer steps");
  app.add_option("--threads", threads, "CPU threads (default: all cores)");
  auto* seed_opt = app.add_option("--seed", seed, "random seed (init and data order)");
  app.add_option("--set", sets, "override a config key: --set key=value (repeatable)");
  app.add_flag("--resume", resume, "continue from OUT/checkpoints/LAST");
  app.add_flag("--overwrite", overwrite, "start over even if OUT holds checkpoints of an earlier run");
  app.add_flag("--help-config", help_config, "list every config key with type, default and meaning");
  if (auto rc = gdn::parse_command_line(app, argc, argv, "gdn-train")) return *rc;
  seed_given = seed_opt->count() > 0;

  try {
    if (help_config) {
      std::fputs(gdn::config_help().c_str(), stdout);
      return 0;
    }
    gdn::TrainConfig cfg = gdn::preset_config(preset);
    if (!config_file.empty()) gdn::load_config_file(cfg, config_file);
    if (!data.empty()) cfg.data = data;
    if (!out.empty()) cfg.out_dir = out;
    if (steps != 0) gdn::apply_override(cfg, "steps=" + std::to_string(steps));
    if (threads >= 0) gdn::apply_override(cfg, "threads=" + std::to_string(threads));
    if (seed_given) cfg.seed = seed;
    for (const auto& s : sets) gdn::apply_override(cfg, s);
    gdn::validate(cfg);
    gdn::init_device(cfg.device);

    std::signal(SIGINT, on_sigint);
    gdn::TrainOptions opts;
    opts.resume = resume;
    opts.overwrite = overwrite;
    gdn::TrainSummary s = gdn::train(cfg, opts);

    fmt::print("\n== gdn-train: {} steps in {:.1f} s ({:.0f} tokens/s) ==\n", s.end_step - s.start_step, s.seconds,
               s.tokens_per_second);
    fmt::print("final train loss {:.4f} | val loss {:.4f} | val accuracy {:.2f}% | val perplexity {:.2f}\n",
               s.final_train_loss, s.final_val_loss, 100 * s.final_val_accuracy, s.final_val_perplexity);
    fmt::print("best val loss {:.4f} | unigram baseline {:.4f}\n", s.best_val_loss, s.unigram_val_loss);
    fmt::print("results: {}\n", s.results_path);
    if (!s.curves_path.empty()) fmt::print("curves:  {}\n", s.curves_path);
    if (!s.sample.empty()) fmt::print("\n--- sample ---\n{}\n--------------\n", s.sample);
    std::fflush(stdout);
    gdn::print_allocator_stats_if_requested(gdn::parse_device(cfg.device));
    return s.interrupted ? 130 : 0;
  } catch (const gdn::UserError& e) {
    std::fprintf(stderr, "gdn-train: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gdn-train: internal error: %s\n", e.what());
    return 3;
  }
}
