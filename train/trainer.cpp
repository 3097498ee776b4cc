// train/trainer.cpp — see trainer.h.
#include "train/trainer.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <future>
#include <optional>

#include "core/precision.h"
#include "models/language_model.h"
#include "ops/ops.h"
#include "train/checkpoint.h"
#include "train/corpus.h"
#include "train/distributed.h"
#include "train/file_util.h"
#include "train/evaluate.h"
#include "train/generate.h"
#include "train/hf_format.h"
#include "train/optimizer.h"
#include "train/plot.h"
#include "train/progress.h"
#include "train/step.h"
#include "train/tokenizer.h"

namespace gdn {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

namespace {

std::atomic<bool> g_stop{false};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Paths under the output folder that belong to an earlier run: the checkpoint pointers, every step-* entry of
// checkpoints/, the results. A fresh run refuses such a folder unless --overwrite; --overwrite removes exactly these
// (and the tokenizer) once the new run is about to write.
std::vector<std::string> earlier_run_files(const fs::path& out) {
  std::vector<std::string> found;
  std::error_code ec;
  const fs::path ckpt = out / "checkpoints";
  for (const char* pointer : {"LAST", "BEST"})
    if (fs::exists(ckpt / pointer, ec)) found.push_back((fs::path("checkpoints") / pointer).string());
  if (fs::is_directory(ckpt, ec)) {
    std::vector<std::string> steps;
    for (const auto& entry : fs::directory_iterator(ckpt, ec))
      if (entry.path().filename().string().rfind("step-", 0) == 0)
        steps.push_back((fs::path("checkpoints") / entry.path().filename()).string());
    std::sort(steps.begin(), steps.end());
    found.insert(found.end(), steps.begin(), steps.end());
  }
  for (const char* file : {"training_results.json", "training_curves.png"})
    if (fs::exists(out / file, ec)) found.push_back(file);
  return found;
}

// Whether `inner` is `outer` or lies under it (both resolved, so "a/../b" and symlinks compare right).
bool is_within(const fs::path& inner, const fs::path& outer) {
  std::error_code ec;
  const fs::path a = fs::weakly_canonical(inner, ec), b = fs::weakly_canonical(outer, ec);
  auto ai = a.begin(), bi = b.begin();
  for (; bi != b.end() && !bi->empty(); ++ai, ++bi)
    if (ai == a.end() || *ai != *bi) return false;
  return true;
}

// FNV-1a 64 of the token streams a run trains and evaluates on: a resume checks it, so a changed corpus is refused
// instead of silently continuing on other data.
uint64_t corpus_fingerprint(const std::vector<int32_t>& train_tokens, const std::vector<int32_t>& val_tokens) {
  uint64_t h = fnv1a_64(train_tokens.data(), train_tokens.size() * sizeof(int32_t));
  return fnv1a_64(val_tokens.data(), val_tokens.size() * sizeof(int32_t), h);
}

json history_point(int64_t step, const EvalMetrics& m) {
  return {{"step", step}, {"loss", m.loss}, {"accuracy", m.accuracy}, {"perplexity", m.perplexity}};
}

json or_null(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

// The train config stored in the LAST checkpoint under out_dir.
TrainConfig stored_config(const std::string& out_dir, std::string* checkpoint_dir) {
  const std::string root = (fs::path(out_dir) / "checkpoints").string();
  std::optional<std::string> last = find_checkpoint(root, "LAST");
  GDN_USER_CHECK(last.has_value(), "--resume: no checkpoint in {}", root);
  const std::string state_path = (fs::path(*last) / "trainer_state.json").string();
  const std::string text = read_file(state_path);
  json state = json::parse(text, nullptr, /*allow_exceptions=*/false);
  GDN_USER_CHECK(!state.is_discarded() && state.is_object() && state.contains("config") && state["config"].is_object(),
                 "checkpoint {} has a corrupt trainer_state.json: no train config", *last);
  TrainConfig cfg;
  apply_json(cfg, state["config"], state_path);
  if (checkpoint_dir) *checkpoint_dir = *last;
  return cfg;
}

}  // namespace

const std::vector<std::string>& resumable_keys() {
  static const std::vector<std::string> keys = {"data",       "out_dir",  "steps",  "eval_every",    "checkpoint_every",
                                                "log_every",  "threads",  "device", "sample_tokens", "sample_prompt",
                                                "precision",  "cuda_graph", "fused_loss", "dp_bucket_mb"};
  return keys;
}

TrainConfig resume_config(const TrainConfig& asked, const std::vector<std::string>& given) {
  std::string dir;
  TrainConfig cfg = stored_config(asked.out_dir, &dir);
  const auto& resumable = resumable_keys();
  for (const ConfigField& f : config_fields()) {
    if (std::find(given.begin(), given.end(), f.name) == given.end()) continue;  // not given: the checkpoint's
    if (std::find(resumable.begin(), resumable.end(), f.name) != resumable.end()) {
      f.set(cfg, f.get(asked));
    } else if (f.name == "vocab_size" && asked.model.vocab_size >= cfg.model.vocab_size) {
      // vocab_size is an upper bound that the tokenizer falls short of when no pair occurs twice any more, so the
      // command line that produced the checkpoint (asking more than it got) resumes; the checkpoint's size stays.
    } else if (f.get(asked) != f.get(cfg)) {
      throw UserError(fmt::format("--resume: '{}' cannot change when resuming (checkpoint {}: {}, asked {}); only {} "
                                  "may", f.name, dir, f.get(cfg).dump(), f.get(asked).dump(),
                                  fmt::join(resumable, ", ")));
    }
  }
  return cfg;
}

void request_stop() { g_stop = true; }

bool decays(const std::string& name, const std::string& no_decay) {
  size_t start = 0;
  while (start <= no_decay.size()) {
    size_t end = no_decay.find(',', start);
    if (end == std::string::npos) end = no_decay.size();
    const std::string piece = no_decay.substr(start, end - start);
    if (!piece.empty() && name.find(piece) != std::string::npos) return false;
    start = end + 1;
  }
  return true;
}

TrainSummary train(const TrainConfig& cfg_in, const TrainOptions& opts) {
  // Everything is checked before anything in the output folder changes: the config, the folder's state, the corpus,
  // the tokenizer, the checkpoint to resume. Only then ("commit" below) is an earlier run removed (--overwrite) and
  // the first file written.
  GDN_USER_CHECK(!(opts.resume && opts.overwrite),
                 "--resume and --overwrite contradict each other: --resume continues the run in {}, --overwrite "
                 "deletes it", cfg_in.out_dir);
  validate(cfg_in);
  TrainConfig cfg = opts.resume ? resume_config(cfg_in, resumable_keys()) : cfg_in;
  // --init-from: the model's shape, its weights and the tokenizer come from a transformers folder (hf_format.h).
  std::optional<HfCheckpoint> init;
  std::optional<BpeTokenizer> init_tok;
  if (!opts.init_from.empty()) {
    GDN_USER_CHECK(!opts.resume, "--init-from starts a new run from {}; --resume continues an earlier one: give one",
                   opts.init_from);
    init = read_hf_checkpoint(opts.init_from);
    init_tok = read_hf_tokenizer(opts.init_from);
    GDN_USER_CHECK(init_tok.has_value(), "--init-from {}: the folder has no tokenizer.json", opts.init_from);
    GDN_USER_CHECK(init_tok->vocab_size() == init->config.vocab_size, "--init-from {}: tokenizer.json has {} tokens, "
                   "config.json field 'vocab_size' is {}", opts.init_from, init_tok->vocab_size(),
                   init->config.vocab_size);
    const int64_t chunk = cfg.model.chunk_size;
    cfg.model = init->config;
    cfg.model.chunk_size = chunk;
  }
  validate(cfg);
  if (cfg.threads > 0) omp_set_num_threads(static_cast<int>(cfg.threads));
  const DType dtype = cfg.dtype == "float64" ? kFloat64 : kFloat32;
  const Device device = parse_device(cfg.device);
  const auto t_start = Clock::now();
  // Data parallel: rank 0 alone prepares and writes the output folder; the others start once it is ready.
  const bool writer = !opts.comm || opts.comm->rank() == 0;
  const int world = opts.comm ? opts.comm->world() : 1, rank = opts.comm ? opts.comm->rank() : 0;
  if (!writer) opts.comm->barrier();

  // ---- the output folder: not inside the corpus, locked, and never an earlier run's without --resume/--overwrite ----
  std::error_code ec;
  GDN_USER_CHECK(!(fs::is_directory(cfg.data, ec) && is_within(cfg.out_dir, cfg.data)),
                 "--out {} lies inside the corpus folder --data {}: the next run would train on its own outputs",
                 cfg.out_dir, cfg.data);
  std::optional<DirectoryLock> lock;
  if (writer) {
    ensure_directory(cfg.out_dir);
    lock.emplace(cfg.out_dir);
  }
  const fs::path out(cfg.out_dir);
  const std::string ckpt_root = (out / "checkpoints").string();
  const std::vector<std::string> earlier = earlier_run_files(out);
  std::optional<std::string> last;
  if (opts.resume) {
    last = find_checkpoint(ckpt_root, "LAST");
    GDN_USER_CHECK(last.has_value(), "--resume: no checkpoint in {}", ckpt_root);
  } else if (writer && !earlier.empty()) {
    GDN_USER_CHECK(opts.overwrite, "{} already holds an earlier run ({}{}): pass --resume to continue it or "
                   "--overwrite to start over", cfg.out_dir, fmt::join(earlier.begin(), earlier.begin() +
                   static_cast<std::ptrdiff_t>(std::min<size_t>(earlier.size(), 3)), ", "),
                   earlier.size() > 3 ? ", ..." : "");
  }

  // ---- data ----
  Corpus corpus = load_corpus(cfg.data, cfg.val_fraction);
  const std::string tok_path = (out / "tokenizer.json").string();
  // --overwrite trains a new tokenizer (the old file is removed at the commit); otherwise an existing one is reused.
  const bool reuse_tokenizer = !init_tok && (!writer || (!opts.overwrite && fs::exists(tok_path, ec)));
  GDN_USER_CHECK(!opts.resume || reuse_tokenizer, "--resume: the run's tokenizer {} is missing", tok_path);
  BpeTokenizer tok;
  if (init_tok) {
    tok = *init_tok;
    if (!opts.quiet) fmt::print(stderr, "tokenizer: from {} ({} tokens)\n", opts.init_from, tok.vocab_size());
  } else if (reuse_tokenizer) {
    tok = BpeTokenizer::load(tok_path);
    GDN_USER_CHECK(opts.resume || !writer || tok.vocab_size() == cfg.model.vocab_size,
                   "{} holds a tokenizer of {} tokens but vocab_size is {}: pass --set vocab_size={} to reuse it, or "
                   "--overwrite (or remove the file) to train a new one", tok_path, tok.vocab_size(),
                   cfg.model.vocab_size, tok.vocab_size());
    if (!opts.quiet) fmt::print(stderr, "tokenizer: reusing {} ({} tokens)\n", tok_path, tok.vocab_size());
  } else {
    auto t0 = Clock::now();
    std::vector<std::string_view> docs(corpus.train_docs.begin(), corpus.train_docs.end());
    tok = BpeTokenizer::train(docs, static_cast<int>(cfg.model.vocab_size));  // validate() bounds it to int32
    if (!opts.quiet)
      fmt::print(stderr, "tokenizer: trained {} tokens in {:.1f} s\n", tok.vocab_size(), seconds_since(t0));
    if (tok.vocab_size() < cfg.model.vocab_size && !opts.quiet)
      fmt::print(stderr, "tokenizer: the training split has no pair left that occurs twice after {} tokens; "
                 "vocab_size set to {} (asked {})\n", tok.vocab_size(), tok.vocab_size(), cfg.model.vocab_size);
  }
  const std::string cache_dir = (out / "cache").string();
  std::vector<int32_t> train_tokens = encode_cached(tok, corpus.train_docs, cache_dir);
  std::vector<int32_t> val_tokens = encode_cached(tok, corpus.val_docs, cache_dir);
  WindowSampler sampler(&train_tokens, cfg.seq_len, cfg.seed);  // a corpus shorter than one window stops here
  GDN_USER_CHECK(static_cast<int64_t>(val_tokens.size()) > cfg.seq_len,
                 "validation split too short: {} tokens, need more than seq_len = {}", val_tokens.size(), cfg.seq_len);
  if (!opts.resume) cfg.model.vocab_size = tok.vocab_size();
  const uint64_t corpus_fp = corpus_fingerprint(train_tokens, val_tokens);
  const double unigram = unigram_loss(train_tokens, val_tokens, tok.vocab_size());
  if (!opts.quiet)
    fmt::print(stderr, "data: {} train docs ({} tokens), {} val docs ({} tokens); unigram val loss {:.3f}\n",
               corpus.train_docs.size(), train_tokens.size(), corpus.val_docs.size(), val_tokens.size(), unigram);

  // ---- model and optimizer ----
  GatedDeltaNetLM model(cfg.model, cfg.seed, dtype, device);
  if (init) {
    load_hf_weights(model, *init);
    if (!opts.quiet) fmt::print(stderr, "model: weights from {}\n", opts.init_from);
  }
  std::vector<NamedParameter> named;
  std::vector<Tensor> params;
  for (const auto& p : model.parameters()) {
    named.push_back({p.name, p.value, decays(p.name, cfg.no_decay)});
    params.push_back(p.value);
  }
  AdamW optimizer(named, cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay);
  // The product precision holds for the whole run (training, evaluation, the sample) and is restored on return.
  PrecisionGuard precision(uses_bf16(cfg) ? Precision::BFloat16 : Precision::Float32);
  if (!opts.quiet)
    fmt::print(stderr, "model: {} parameters ({} in embeddings, {} in the rest), {} layers, D={}, {} on {}\n",
               model.num_parameters(), model.num_embedding_parameters(), model.num_parameters(false),
               cfg.model.n_layers, cfg.model.d_model, dtype_name(dtype), device);
  if (!opts.quiet && device.is_cuda())
    fmt::print(stderr, "gpu: products in {}, training step {}, loss {}\n",
               uses_bf16(cfg) ? "bf16 (float32 accumulation)" : "float32",
               cfg.cuda_graph ? "captured as a CUDA graph" : "eager",
               cfg.fused_loss ? "lm_head + cross-entropy fused" : "unfused");

  // ---- state (fresh or resumed) ----
  int64_t step = 0;
  json train_history = json::array(), val_history = json::array();
  double best_val = INFINITY, elapsed_before = 0;
  int64_t best_step = -1, tokens_seen = 0;
  double interval_loss_sum = 0;  // training losses since the last train_history point (log_every)
  int64_t interval_steps = 0;
  if (opts.resume) {
    int64_t global_batch = cfg.batch_size;
    CheckpointData data = load_checkpoint(*last, model, &optimizer);
    const json& st = data.trainer_state;
    // A checkpoint without a fingerprint (none is written without one today) resumes unchecked.
    GDN_USER_CHECK(!st.contains("tokenizer_fingerprint") || st["tokenizer_fingerprint"] == tok.fingerprint(),
                   "checkpoint {} was trained with another tokenizer than {}", *last, tok_path);
    // Checkpoints written before the corpus fingerprint was stored carry none: they resume unchecked.
    GDN_USER_CHECK(!st.contains("corpus_fingerprint") || st["corpus_fingerprint"] == corpus_fp,
                   "checkpoint {} was trained on another corpus than {} (its text or split differs)", *last, cfg.data);
    step = data.step;
    GDN_USER_CHECK(step < cfg.steps, "nothing left to do: checkpoint {} is at step {} and steps is {} (raise --steps "
                   "to train further)", *last, step, cfg.steps);
    try {
      SamplerState ss{st.at("sampler").at("seed").get<uint64_t>(), st.at("sampler").at("epoch").get<uint64_t>(),
                      st.at("sampler").at("cursor").get<uint64_t>()};
      GDN_USER_CHECK(ss.seed == cfg.seed, "checkpoint {} has a corrupt trainer_state.json: sampler seed", *last);
      sampler.set_state(ss);
      train_history = st.at("train_history");
      val_history = st.at("val_history");
      best_val = st.at("best_val_loss").is_number() ? st.at("best_val_loss").get<double>() : INFINITY;
      best_step = st.value("best_step", int64_t{-1});
      tokens_seen = st.value("tokens_seen", int64_t{0});
      elapsed_before = st.value("elapsed_seconds", 0.0);
      interval_loss_sum = st.value("interval_loss_sum", 0.0);
      interval_steps = st.value("interval_steps", int64_t{0});
      global_batch = cfg.batch_size * st.value("world_size", int64_t{1});
    } catch (const json::exception& e) {
      throw UserError(fmt::format("checkpoint {} has a corrupt trainer_state.json: {}", *last, e.what()));
    } catch (const Error& e) {
      throw UserError(fmt::format("checkpoint {} has a corrupt trainer_state.json: {}", *last, e.what()));
    }
    GDN_USER_CHECK(global_batch % world == 0, "--resume: the checkpoint's global batch of {} windows does not split "
                   "over {} ranks", global_batch, world);
    cfg.batch_size = global_batch / world;  // the same global batch on any number of ranks
    if (!opts.quiet) fmt::print(stderr, "resume: step {} from {}\n", step, *last);
  }

  // ---- commit: from here on the output folder changes ----
  if (opts.overwrite && writer) {
    for (const std::string& rel : earlier) fs::remove_all(out / rel);
    fs::remove(tok_path, ec);
  }
  if (!reuse_tokenizer) tok.save(tok_path);
  if (opts.comm && writer) opts.comm->barrier();  // the other ranks may read the folder now

  auto trainer_state = [&]() {
    SamplerState s = sampler.state();
    json state = json{{"sampler", {{"seed", s.seed}, {"epoch", s.epoch}, {"cursor", s.cursor}}},
                {"train_history", train_history},
                {"val_history", val_history},
                {"best_val_loss", std::isfinite(best_val) ? json(best_val) : json(nullptr)},
                {"best_step", best_step},
                {"tokens_seen", tokens_seen},
                {"interval_loss_sum", interval_loss_sum},
                {"interval_steps", interval_steps},
                {"elapsed_seconds", elapsed_before + seconds_since(t_start)},
                {"tokenizer_fingerprint", tok.fingerprint()},
                {"corpus_fingerprint", corpus_fp},
                {"config", to_json(cfg)}};
    if (world > 1) state["world_size"] = world;
    return state;
  };
  std::string last_good = last ? *last : std::string();  // the newest checkpoint known to hold a finite state
  // Checkpoint files are written by a background thread while training goes on: the state of the step is copied to
  // the host first (a snapshot of its own), so the files hold exactly that step. The next checkpoint, a stop and the
  // end of the run wait for the write (finish_writing), and last_good names a checkpoint only once it is complete
  // (LAST moves only then, save_checkpoint). A write that failed reports its error there.
  std::future<std::string> writing;
  auto finish_writing = [&]() {
    if (writing.valid()) last_good = writing.get();
  };
  auto stop_non_finite = [&](const std::string& what) {
    finish_writing();
    throw UserError(fmt::format("{}: stopping; the last good checkpoint is {}", what,
                                last_good.empty() ? std::string("(none yet)") : last_good));
  };
  auto checkpoint = [&](bool is_best) {
    CheckpointTensors snapshot = checkpoint_tensors(model, optimizer);  // one copy to the host
    if (std::string bad = describe_non_finite(snapshot.weights); !bad.empty())
      stop_non_finite(fmt::format("the weights became non-finite at step {} (parameter {})", step, bad));
    if (!writer) return;
    finish_writing();
    writing = std::async(std::launch::async, [&ckpt_root, snap = std::move(snapshot),
                                              data = CheckpointData{step, trainer_state()}, is_best]() {
      return save_checkpoint(ckpt_root, snap, data, is_best);
    });
  };

  // ---- the loop ----
  TrainSummary summary;
  summary.start_step = step;
  summary.unigram_val_loss = unigram;
  const int64_t B = cfg.batch_size, T = cfg.seq_len;
  const std::vector<int64_t> eval_starts = WindowSampler::eval_window_starts(
      static_cast<int64_t>(val_tokens.size()), cfg.seq_len, cfg.eval_batches * cfg.batch_size * world);
  if (opts.comm && !opts.quiet)
    fmt::print(stderr, "data parallel: {} ranks over {}, {} windows per rank, global batch {}\n", world,
               opts.comm->transport(), B, B * world);
  std::vector<int64_t> in(B * T), tg(B * T);
  std::unique_ptr<ProgressBar> bar;
  if (!opts.quiet) bar = std::make_unique<ProgressBar>(cfg.steps, step);
  double step_seconds_total = 0, steady_seconds = 0;
  constexpr int64_t kWarmSteps = 10;  // left out of the steady-state rate
  int64_t steps_this_run = 0;
  std::optional<EvalMetrics> last_eval;
  // The host does not wait for the device inside a step: the loss and the squared gradient norm stay on the device
  // (the clip factor is applied, and a non-finite norm skips the update, inside the AdamW kernel) and are read back
  // in one go at the next logging point, evaluation, checkpoint or stop. Reading is where a non-finite loss or norm
  // is caught; the weights stayed finite meanwhile, and a checkpoint is only written after the read.
  struct PendingStep {
    int64_t step;
    double lr;
    Tensor ce, grad_sq_norm, aux_loss;
    std::vector<Tensor> expert_tokens;  // per MoE layer [E] int64 on the device; kept for logged steps only
  };
  std::vector<PendingStep> pending;
  TrainStep train_step(model, optimizer, params, B, T, {cfg.grad_clip, cfg.cuda_graph, cfg.fused_loss, opts.comm,
                                                                static_cast<size_t>(cfg.dp_bucket_mb) << 20});
  bool stop_asked = false;
  double last_loss = NAN;
  auto read_pending = [&]() {
    for (const PendingStep& p : pending) {
      const double loss = p.ce.item();
      const double grad_norm = p.grad_sq_norm.defined() ? std::sqrt(p.grad_sq_norm.item()) : 0.0;
      if (!std::isfinite(loss)) {
        if (bar) bar->finish();
        stop_non_finite(fmt::format("loss became {} at step {}", loss, p.step));
      }
      // A non-finite gradient would have turned the AdamW moments and then the weights into NaN: the kernel skipped
      // that update.
      if (!std::isfinite(grad_norm)) {
        if (bar) bar->finish();
        stop_non_finite(fmt::format("gradient norm became {} at step {} (the optimizer step was not applied)",
                                    grad_norm, p.step));
      }
      summary.train_losses.push_back(loss);
      last_loss = loss;
      interval_loss_sum += loss;
      interval_steps++;
      if (p.step % cfg.log_every == 0 || p.step == cfg.steps) {
        json point = {{"step", p.step}, {"loss", interval_loss_sum / static_cast<double>(interval_steps)},
                      {"steps", interval_steps}, {"lr", p.lr}, {"grad_norm", grad_norm}};
        if (p.aux_loss.defined()) {
          point["aux_loss"] = p.aux_loss.item();
          std::vector<std::vector<int64_t>> counts;
          for (const Tensor& t : p.expert_tokens) counts.push_back(t.to_int64_vector());
          point["expert_tokens"] = counts;
        }
        train_history.push_back(point);
        interval_loss_sum = 0;
        interval_steps = 0;
      }
    }
    pending.clear();
  };
  while (step < cfg.steps) {
    auto t0 = Clock::now();
    sampler.next_batch(B, in.data(), tg.data(), rank, world);
    const double lr = learning_rate_at(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.min_lr_ratio, cfg.lr_schedule);
    const bool log_step = (step + 1) % cfg.log_every == 0 || step + 1 == cfg.steps;
    StepOutputs out = train_step.run(in.data(), tg.data(), lr, log_step);
    step++;
    tokens_seen += B * T * world;
    pending.push_back({step, lr, out.ce, out.grad_sq_norm, out.aux_loss, out.expert_tokens});
    const bool last_step = step == cfg.steps;
    const bool evaluate_now = step % cfg.eval_every == 0 || last_step;
    stop_asked = g_stop.exchange(false) || step == opts.stop_after || stop_asked;  // a stop request is consumed here
    // Data parallel: the ranks agree at logging points (a host collective), so that all stop after the same step.
    const bool stopping = opts.comm ? (step % cfg.log_every == 0 || last_step) && opts.comm->any(stop_asked)
                                    : stop_asked;
    if (step % cfg.log_every == 0 || last_step || evaluate_now || step % cfg.checkpoint_every == 0 || stopping)
      read_pending();
    const double dt = seconds_since(t0);
    step_seconds_total += dt;
    steps_this_run++;
    if (steps_this_run > kWarmSteps) steady_seconds += dt;
    const double tok_per_s = static_cast<double>(B * T * world * steps_this_run) / step_seconds_total;
    if (bar) bar->update(step, last_loss, lr, tok_per_s);

    if (evaluate_now) {
      const EvalMetrics m = evaluate(model, val_tokens, eval_starts, B, T, opts.comm);
      if (!std::isfinite(m.loss)) {
        if (bar) bar->finish();
        stop_non_finite(fmt::format("validation loss became {} at step {}", m.loss, step));
      }
      last_eval = m;
      val_history.push_back(history_point(step, m));
      const bool is_best = m.loss < best_val;
      if (is_best) {
        best_val = m.loss;
        best_step = step;
      }
      if (bar)
        bar->message(fmt::format("step {:>5}  val loss {:.4f}  acc {:.2f}%  ppl {:.1f}{}", step, m.loss,
                                 100 * m.accuracy, m.perplexity, is_best ? "  (best)" : ""));
      if (is_best || last_step || step % cfg.checkpoint_every == 0) checkpoint(is_best);
    } else if (step % cfg.checkpoint_every == 0) {
      checkpoint(false);
    }
    if (stopping) {
      if (!last_step) checkpoint(false);
      finish_writing();
      summary.interrupted = true;
      if (bar) bar->message(fmt::format("interrupted at step {}: checkpoint {}; continue with --resume", step,
                                        last_good));
      break;
    }
  }
  if (bar) bar->finish();
  finish_writing();

  // ---- results (a metric that was never measured is absent: null in the JSON, empty in the summary) ----
  summary.end_step = step;
  summary.seconds = seconds_since(t_start);
  summary.tokens_per_second = static_cast<double>(B * T * world * steps_this_run) / step_seconds_total;  // >= 1 ran
  if (steps_this_run > kWarmSteps && steady_seconds > 0)
    summary.steady_tokens_per_second =
        static_cast<double>(B * T * world * (steps_this_run - kWarmSteps)) / steady_seconds;
  if (std::isfinite(best_val)) summary.best_val_loss = best_val;
  if (!last_eval && !val_history.empty()) {
    const json& lv = val_history.back();
    last_eval = EvalMetrics{lv.at("loss").get<double>(), lv.at("accuracy").get<double>(),
                            lv.at("perplexity").get<double>()};
  }
  if (last_eval) {
    summary.final_val_loss = last_eval->loss;
    summary.final_val_accuracy = last_eval->accuracy;
    summary.final_val_perplexity = last_eval->perplexity;
  }
  {
    // Final train loss: the mean over the last (at least 50, or all) steps, from the logged interval means.
    double s = 0;
    int64_t n = 0;
    for (int64_t i = static_cast<int64_t>(train_history.size()) - 1; i >= 0 && n < 50; --i) {
      const int64_t k = train_history[i].value("steps", int64_t{1});
      s += train_history[i].at("loss").get<double>() * static_cast<double>(k);
      n += k;
    }
    if (interval_steps > 0) {  // interrupted inside a logging interval: its steps count too
      s += interval_loss_sum;
      n += interval_steps;
    }
    if (n > 0) summary.final_train_loss = s / static_cast<double>(n);
  }
  if (!writer) return summary;  // rank 0 writes the results

  if (!opts.quiet && !summary.interrupted) {
    SamplingOptions so;
    so.max_tokens = cfg.sample_tokens;
    so.seed = cfg.seed;
    summary.sample = generate_text(model, tok, cfg.sample_prompt, so);
  }

  json results = {
      {"config", to_json(cfg)},
      {"model", {{"parameters", model.num_parameters()},
                 {"embedding_parameters", model.num_embedding_parameters()},
                 {"non_embedding_parameters", model.num_parameters(false)},
                 {"vocab_size", cfg.model.vocab_size}}},
      {"data", {{"path", cfg.data}, {"train_documents", corpus.train_docs.size()},
                {"val_documents", corpus.val_docs.size()}, {"train_tokens", train_tokens.size()},
                {"val_tokens", val_tokens.size()}}},
      {"train_history", train_history},
      {"val_history", val_history},
      {"steps", step},
      {"interrupted", summary.interrupted},
      {"total_time_seconds", elapsed_before + summary.seconds},
      {"tokens_per_second", summary.tokens_per_second},
      {"steady_tokens_per_second", or_null(summary.steady_tokens_per_second)},
      {"best_val_loss", or_null(summary.best_val_loss)},
      {"best_step", best_step},
      {"final_train_loss", or_null(summary.final_train_loss)},
      {"final_val", {{"loss", or_null(summary.final_val_loss)},
                     {"accuracy", or_null(summary.final_val_accuracy)},
                     {"perplexity", or_null(summary.final_val_perplexity)}}},
      {"unigram_val_loss", unigram},
      {"sample", summary.sample},
  };
  summary.results_path = (out / "training_results.json").string();
  write_file_atomic(summary.results_path, results.dump(2, ' ', false, json::error_handler_t::replace) + "\n");

  TrainingCurves curves;
  curves.title = fmt::format("gdn.cpp {} (D={}, L={})", cfg.preset, cfg.model.d_model, cfg.model.n_layers);
  for (const auto& p : train_history) curves.train_loss.push_back({p.at("step").get<double>(), p.at("loss").get<double>()});
  for (const auto& p : val_history) {
    double s = p.at("step").get<double>();
    curves.val_loss.push_back({s, p.at("loss").get<double>()});
    curves.val_accuracy_pct.push_back({s, 100 * p.at("accuracy").get<double>()});
    curves.val_perplexity.push_back({s, p.at("perplexity").get<double>()});
  }
  if (plotting_available()) {
    summary.curves_path = (out / "training_curves.png").string();
    plot_training_curves(summary.curves_path, curves);
  } else if (!opts.quiet) {
    fmt::print(stderr, "plot: PLplot is not available, no training_curves.png\n");
  }
  return summary;
}

}  // namespace gdn
