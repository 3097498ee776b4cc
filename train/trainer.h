// train/trainer.h — the training loop of gdn-train.
//
// One run: load the corpus, train or reuse the BPE tokenizer (<out>/tokenizer.json), encode (cached under
// <out>/cache), build the model, then for each step: sample a batch of random windows, forward, backward, clip,
// AdamW with warmup + decay. Every log_every steps (and at the end) train_history gets a point: the mean training
// loss of the steps since the previous point, and the step's lr and gradient norm. Every eval_every steps (and at the
// end) the validation split gives loss, next-token accuracy and perplexity; a new best writes a checkpoint marked
// BEST. Checkpoints every checkpoint_every steps, at the end, and on a stop request (SIGINT/SIGTERM in gdn-train);
// --resume continues from LAST exactly (weights, AdamW moments and step count, data order, logging interval): the
// losses of a resumed run are bit-identical to those of an uninterrupted one.
// Outputs in <out>: training_results.json, training_curves.png, tokenizer.json, checkpoints/, cache/, .lock.
//
// Safety of the output folder:
//   * <out>/.lock is flock'ed for the whole run: a second run on the same folder is refused, naming the holder's pid.
//   * A run without --resume refuses a folder that holds an earlier run (checkpoint pointers, step-* entries,
//     training_results.json) unless --overwrite; --overwrite removes that run (and its tokenizer) only after the
//     whole new input (config, corpus, tokenizer, sizes) checked out, right before the first file is written.
//   * --out may not lie inside a --data folder (the next run would read its own outputs as text).
//   * A non-finite loss, gradient norm or validation loss stops the run before the optimizer step, naming the last
//     checkpoint that holds a finite state; no checkpoint with NaN/inf is ever written (train/checkpoint.h).
//   * A resume takes the config from the checkpoint (resume_config) and refuses another tokenizer or corpus, and a
//     checkpoint that has nothing left to do (step >= steps).
//
// Host syncs per step, all explicit: the loss (progress bar, NaN check) and the gradient norm (clipping, NaN check).
//
// Data parallel (TrainOptions::comm, train/distributed.h): every rank runs this loop on its own shard of each global
// batch (batch_size windows per rank, world * batch_size in all; WindowSampler::next_batch), the step averages the
// gradients and the loss over the ranks, so every rank logs the same losses and keeps the same weights. Evaluation
// is split across the ranks (batch i on rank i % world) and summed. Only rank 0 locks and writes the output folder
// (tokenizer, cache, checkpoints, results); the other ranks wait for it once its input checked out and then only
// read. A stop request is agreed on at logging points, so every rank stops after the same step. A resume with another
// number of ranks keeps the global batch: each rank takes (batch_size x the checkpoint's world size) / world windows.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "train/config.h"

namespace gdn {

class Communicator;

struct TrainOptions {
  bool resume = false;     // continue from <out>/checkpoints/LAST (with the config stored there: resume_config)
  bool overwrite = false;  // start over even if <out> holds an earlier run (removed once the new input checked out)
  bool quiet = false;      // no progress bar, no sample (tests)
  int64_t stop_after = -1; // behave as if Ctrl-C came right after this step (tests of resume)
  std::string init_from;   // a transformers folder (train/hf_format.h): model shape, weights and tokenizer from it
  Communicator* comm = nullptr;  // data parallel: this rank's view of the job (null: one process)
};

struct TrainSummary {
  int64_t start_step = 0, end_step = 0;
  bool interrupted = false;
  // Empty when never measured (e.g. interrupted before the first evaluation); null in training_results.json.
  std::optional<double> final_train_loss, final_val_loss, final_val_accuracy, final_val_perplexity, best_val_loss;
  double unigram_val_loss = 0;
  double tokens_per_second = 0, seconds = 0;  // of the steps run in this call (at least one)
  // The same rate over the steps after the first 10 of this call (the eager warm-up step, the CUDA graph capture,
  // NCCL's connection setup): the steady state; empty when 10 or fewer steps ran.
  std::optional<double> steady_tokens_per_second;
  std::vector<double> train_losses;  // one per step run in this call (for resume tests)
  std::string results_path, curves_path, sample;
};

// With opts.resume, the config is resume_config(cfg, resumable_keys()): the checkpoint's, with only the resumable
// keys taken from cfg.
TrainSummary train(const TrainConfig& cfg, const TrainOptions& opts);

// The keys a resumed run may change (how long, how often, where and how fast it runs, the sample); every other key,
// the model's shape and the optimizer's settings included, is the one stored in the checkpoint.
const std::vector<std::string>& resumable_keys();

// The config to resume the run in asked.out_dir with: the train config stored in its LAST checkpoint, with the keys
// listed in `given` (set explicitly by the user) taken from `asked` when they are resumable. A given key that is not
// resumable and differs from the checkpoint's value is a gdn::UserError naming it. No checkpoint: gdn::UserError.
TrainConfig resume_config(const TrainConfig& asked, const std::vector<std::string>& given);

// Whether AdamW decays the parameter `name` under the comma-separated `no_decay` list (TrainConfig::no_decay).
bool decays(const std::string& name, const std::string& no_decay);

// Set by the SIGINT/SIGTERM/SIGHUP handler that gdn-train installs; the loop checks it after every step and then
// writes a checkpoint and returns (summary.interrupted). Safe to call from a signal handler (one atomic store).
void request_stop();

}  // namespace gdn
