// train/trainer.h — the training loop of gdn-train.
//
// One run: load the corpus, train or reuse the BPE tokenizer (<out>/tokenizer.json), encode (cached under
// <out>/cache), build the model, then for each step: sample a batch of random windows, forward, backward, clip,
// AdamW with warmup + decay. Every eval_every steps (and at the end) the validation split gives loss, next-token
// accuracy and perplexity; a new best writes a checkpoint marked BEST. Checkpoints every checkpoint_every steps, at
// the end, and on Ctrl-C; --resume continues from LAST exactly (weights, AdamW moments, step, data order).
// Outputs in <out>: training_results.json, training_curves.png, tokenizer.json, checkpoints/.
//
// Host syncs per step, all explicit: the loss (progress bar, NaN check) and the gradient norm (clipping).
#pragma once

#include <string>

#include "train/config.h"

namespace gdn {

struct TrainOptions {
  bool resume = false;     // continue from <out>/checkpoints/LAST
  bool overwrite = false;  // start over even if <out> holds checkpoints of an earlier run
  bool quiet = false;      // no progress bar, no sample (tests)
  int64_t stop_after = -1; // behave as if Ctrl-C came right after this step (tests of resume)
};

struct TrainSummary {
  int64_t start_step = 0, end_step = 0;
  bool interrupted = false;
  double final_train_loss = 0, final_val_loss = 0, final_val_accuracy = 0, final_val_perplexity = 0;
  double best_val_loss = 0, unigram_val_loss = 0;
  double tokens_per_second = 0, seconds = 0;
  std::vector<double> train_losses;  // one per step run in this call (for resume tests)
  std::string results_path, curves_path, sample;
};

TrainSummary train(const TrainConfig& cfg, const TrainOptions& opts);

// Whether AdamW decays the parameter `name` under the comma-separated `no_decay` list (TrainConfig::no_decay).
bool decays(const std::string& name, const std::string& no_decay);

// Set by the SIGINT handler that gdn-train installs; the loop checks it after every step.
void request_stop();

}  // namespace gdn
