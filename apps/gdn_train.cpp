// apps/gdn_train.cpp — gdn-train: train a Gated DeltaNet language model (the main job).
//
// Configuration, in order of precedence (later wins): --preset, --config FILE (JSON), the direct flags
// (--data, --out, --steps, ...), then every --set key=value (never "preset": that is --preset's job, so a preset can
// never reset keys given on the command line). `gdn-train --help-config` lists all keys. With --resume the run's
// config comes from its checkpoint: the keys the user gives explicitly (file, flags, --set) may only change the
// resumable ones (gdn::resumable_keys), anything else is refused naming the key.
// Bad input ends with one line "gdn-train: error: ..." and exit code 2. SIGINT (Ctrl-C), SIGTERM (schedulers,
// `timeout`) and SIGHUP save a checkpoint and exit 128 + the signal's number (130, 143, 129); a second one ends the
// process at once.
// Data parallel (train/distributed.h): under a launcher (torchrun, mpirun, srun: RANK/WORLD_SIZE/... in the
// environment) every process is one rank; `--gpus N` starts the N ranks on this machine itself. Rank r uses the GPU
// cuda:LOCAL_RANK; ranks other than 0 print nothing but their error line (prefixed "rank r:").
#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>

#include "apps/cli_parse.h"
#include "core/allocator.h"
#include "train/config.h"
#include "train/device.h"
#include "train/distributed.h"
#include "train/rendezvous.h"
#include "train/trainer.h"

namespace {
volatile std::sig_atomic_t g_signal = 0;

void on_stop_signal(int sig) {
  g_signal = sig;
  gdn::request_stop();
  std::signal(sig, SIG_DFL);  // a second one ends the process at once
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gdn-train — train a Gated DeltaNet language model on the CPU.\n"
      "Reads a UTF-8 corpus (file or folder), trains or reuses a byte-level BPE tokenizer, trains the model, and\n"
      "writes OUT/training_results.json, OUT/training_curves.png, OUT/tokenizer.json and OUT/checkpoints/.\n"
      "Example: gdn-train --preset small --data data/sotu --out results"};
  std::string preset = "small", config_file, data, out, device;
  std::vector<std::string> sets;
  int64_t steps = 0, threads = 0;
  int gpus = 0;
  uint64_t seed = 0;
  bool resume = false, overwrite = false, help_config = false;
  std::string init_from;
  auto* preset_opt = app.add_option("--preset", preset,
                                    "small | medium | large | seed-small | seed-medium | seed-large (default small)");
  app.add_option("--config", config_file, "JSON file of config keys (see --help-config)");
  auto* data_opt = app.add_option("--data", data, "corpus: a UTF-8 text file or a folder of files (default data/sotu)");
  auto* out_opt = app.add_option("--out", out, "output folder (default results)");
  auto* steps_opt = app.add_option("--steps", steps, "number of optimizer steps (with --resume: the new total)");
  auto* threads_opt = app.add_option("--threads", threads, "CPU threads, 0 to 1024 (default 0: all cores)");
  auto* seed_opt = app.add_option("--seed", seed, "random seed (init and data order)");
  auto* device_opt = app.add_option("--device", device, "cpu, cuda or cuda:N (the same as --set device=...)");
  app.add_option("--set", sets, "override a config key: --set key=value (repeatable)");
  app.add_flag("--resume", resume,
               "continue from OUT/checkpoints/LAST with its config; only data, out_dir, steps, eval_every, "
               "checkpoint_every, log_every, threads, device, sample_tokens, sample_prompt may change");
  app.add_flag("--overwrite", overwrite,
               "start over even if OUT holds an earlier run (removed once the new input checked out)");
  app.add_option("--init-from", init_from,
                 "start from a transformers Qwen3NextForCausalLM folder (its config, weights and tokenizer.json; "
                 "see gdn-export)");
  auto* gpus_opt = app.add_option("--gpus", gpus,
                                  "start N data-parallel processes on this machine, one per GPU (device cuda unless "
                                  "given; with --device cpu: N CPU processes)");
  app.add_flag("--help-config", help_config, "list every config key with type, default and meaning");
  if (auto rc = gdn::parse_command_line(app, argc, argv, "gdn-train")) return *rc;

  int rank = 0;
  std::unique_ptr<gdn::Communicator> comm;  // outlives the try: an error is printed before the others are told
  try {
    const gdn::DistributedEnv job = gdn::distributed_env();
    rank = job.rank;
    if (help_config) {
      std::fputs(gdn::config_help().c_str(), stdout);
      return 0;
    }
    // `given`: every key the user set explicitly, so that --resume can refuse a change it cannot honour.
    std::vector<std::string> given;
    gdn::TrainConfig cfg = gdn::preset_config(preset);
    if (preset_opt->count() > 0) given.push_back("preset");
    if (!config_file.empty()) {
      std::vector<std::string> keys = gdn::load_config_file(cfg, config_file);
      GDN_USER_CHECK(preset_opt->count() == 0 || std::find(keys.begin(), keys.end(), "preset") == keys.end(),
                     "both --preset and the \"preset\" key of {} choose a preset: give it once", config_file);
      given.insert(given.end(), keys.begin(), keys.end());
    }
    // Direct flags count when given, whatever their value (--steps 0 and --threads -1 reach the validator).
    auto flag = [&](CLI::Option* opt, const std::string& key, const std::string& value) {
      if (opt->count() == 0) return;
      gdn::apply_override(cfg, key + "=" + value);
      given.push_back(key);
    };
    flag(data_opt, "data", data);
    flag(out_opt, "out_dir", out);
    flag(steps_opt, "steps", std::to_string(steps));
    flag(threads_opt, "threads", std::to_string(threads));
    flag(seed_opt, "seed", std::to_string(seed));
    flag(device_opt, "device", device);
    for (const auto& s : sets) {
      gdn::apply_override(cfg, s);
      std::string key = s.substr(0, s.find('='));
      key.erase(0, key.find_first_not_of(" \t"));
      key.erase(key.find_last_not_of(" \t") + 1);
      given.push_back(key);
    }
    GDN_USER_CHECK(!(resume && overwrite), "--resume and --overwrite contradict each other: --resume continues the "
                   "run in {}, --overwrite deletes it", cfg.out_dir);
    // A resume validates the config it will run with (the checkpoint's plus the keys given), not the preset's.
    if (resume) cfg = gdn::resume_config(cfg, given);
    gdn::validate(cfg);
    if (gpus_opt->count() > 0) {
      GDN_USER_CHECK(std::getenv("WORLD_SIZE") == nullptr, "--gpus starts the processes itself: leave it out under a "
                     "launcher (WORLD_SIZE is set)");
      std::vector<std::string> args;
      for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--gpus") ++i;
        else if (a.rfind("--gpus=", 0) != 0) args.push_back(a);
      }
      const bool cpu_given =
          gdn::parse_device(cfg.device).is_cpu() && std::find(given.begin(), given.end(), "device") != given.end();
      if (gdn::parse_device(cfg.device).is_cpu() && !cpu_given) args.insert(args.end(), {"--device", "cuda"});
      // Checked here once, not by every rank: more processes than visible GPUs.
      if (!cpu_given) {
        const int visible = gdn::visible_cuda_devices();
        GDN_USER_CHECK(gpus <= visible, "--gpus {}: {} CUDA device{} visible on this machine", gpus,
                       visible == 0 ? std::string("no") : std::to_string(visible), visible == 1 ? " is" : "s are");
      }
      return gdn::launch_local_ranks(gpus, args);
    }
    if (job.world > 1 && gdn::parse_device(cfg.device).is_cuda()) cfg.device = fmt::format("cuda:{}", job.local_rank);
    gdn::init_device(cfg.device);
    if (job.world > 1) comm = gdn::connect(job, gdn::parse_device(cfg.device));

    for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, on_stop_signal);
    gdn::TrainOptions opts;
    opts.resume = resume;
    opts.overwrite = overwrite;
    opts.init_from = init_from;
    opts.comm = comm.get();
    opts.quiet = rank != 0;  // rank 0 reports for the job
    gdn::TrainSummary s = gdn::train(cfg, opts);
    if (comm) comm->finish();
    if (rank != 0) return s.interrupted ? 128 + (g_signal ? static_cast<int>(g_signal) : SIGINT) : 0;

    auto show = [](const std::optional<double>& v, double scale = 1) {
      return v ? fmt::format("{:.4f}", *v * scale) : std::string("n/a");
    };
    fmt::print("\n== gdn-train: {} steps in {:.1f} s ({:.0f} tokens/s) ==\n", s.end_step - s.start_step, s.seconds,
               s.tokens_per_second);
    fmt::print("final train loss {} | val loss {} | val accuracy {}% | val perplexity {}\n", show(s.final_train_loss),
               show(s.final_val_loss), show(s.final_val_accuracy, 100), show(s.final_val_perplexity));
    fmt::print("best val loss {} | unigram baseline {:.4f}\n", show(s.best_val_loss), s.unigram_val_loss);
    fmt::print("results: {}\n", s.results_path);
    if (!s.curves_path.empty()) fmt::print("curves:  {}\n", s.curves_path);
    if (!s.sample.empty()) fmt::print("\n--- sample ---\n{}\n--------------\n", s.sample);
    std::fflush(stdout);
    gdn::print_allocator_stats_if_requested(gdn::parse_device(cfg.device));
    return s.interrupted ? 128 + (g_signal ? static_cast<int>(g_signal) : SIGINT) : 0;
  } catch (const gdn::PeerLost& e) {
    if (gdn::launched_locally()) return 2;  // under --gpus the cause is reported once, elsewhere (distributed.h)
    std::fprintf(stderr, "gdn-train: error: rank %d: %s\n", rank, e.what());
    return 2;
  } catch (const gdn::UserError& e) {
    if (rank != 0)
      std::fprintf(stderr, "gdn-train: error: rank %d: %s\n", rank, e.what());
    else
      std::fprintf(stderr, "gdn-train: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gdn-train: internal error: %s\n", e.what());
    return 3;
  }
}
