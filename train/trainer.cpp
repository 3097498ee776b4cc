// train/trainer.cpp — see trainer.h.
#include "train/trainer.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>

#include "models/language_model.h"
#include "ops/ops.h"
#include "train/checkpoint.h"
#include "train/corpus.h"
#include "train/file_util.h"
#include "train/generate.h"
#include "train/optimizer.h"
#include "train/plot.h"
#include "train/progress.h"
#include "train/tokenizer.h"

namespace gdn {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

namespace {

std::atomic<bool> g_stop{false};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct EvalMetrics {
  double loss = 0, accuracy = 0, perplexity = 0;
};

// Cross-entropy (nats/token) of the validation tokens under the add-one smoothed unigram distribution of the
// training tokens: the baseline a language model must beat.
double unigram_loss(const std::vector<int32_t>& train_tokens, const std::vector<int32_t>& val_tokens, int64_t vocab) {
  std::vector<double> counts(vocab, 1.0);
  for (int32_t t : train_tokens) counts[t] += 1.0;
  double total = static_cast<double>(train_tokens.size() + vocab);
  double nll = 0;
  for (size_t i = 1; i < val_tokens.size(); ++i) nll -= std::log(counts[val_tokens[i]] / total);
  return val_tokens.size() > 1 ? nll / static_cast<double>(val_tokens.size() - 1) : 0.0;
}

EvalMetrics evaluate(const GatedDeltaNetLM& model, const std::vector<int32_t>& tokens, const std::vector<int64_t>& starts,
                     int64_t batch, int64_t seq_len) {
  NoGradGuard no_grad;
  EvalMetrics m;
  double loss_sum = 0;
  int64_t correct = 0, count = 0, batches = 0;
  std::vector<int64_t> inputs(batch * seq_len), targets(batch * seq_len);
  for (size_t at = 0; at < starts.size(); at += batch) {
    const int64_t b = std::min<int64_t>(batch, static_cast<int64_t>(starts.size() - at));
    WindowSampler::gather_windows(tokens, starts.data() + at, b, seq_len, inputs.data(), targets.data());
    std::vector<int64_t> in(inputs.begin(), inputs.begin() + b * seq_len), tg(targets.begin(), targets.begin() + b * seq_len);
    Tensor ids = Tensor::from_int64(in, {b, seq_len}, model.device());
    Tensor tgt = Tensor::from_int64(tg, {b, seq_len}, model.device());
    LossOutput out = model.loss(ids, tgt);
    loss_sum += out.ce.item();
    std::vector<int64_t> pred = to_device(argmax(out.logits, -1), kCPU).to_int64_vector();
    for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == tg[i];
    count += static_cast<int64_t>(pred.size());
    batches++;
  }
  m.loss = loss_sum / static_cast<double>(std::max<int64_t>(batches, 1));
  m.accuracy = static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(count, 1));
  m.perplexity = std::exp(m.loss);
  return m;
}

BpeTokenizer load_or_train_tokenizer(const std::string& path, const Corpus& corpus, int64_t vocab, bool quiet) {
  if (fs::exists(path)) {
    BpeTokenizer tok = BpeTokenizer::load(path);
    if (!quiet) fmt::print(stderr, "tokenizer: reusing {} ({} tokens)\n", path, tok.vocab_size());
    return tok;
  }
  auto t0 = Clock::now();
  std::vector<std::string_view> docs(corpus.train_docs.begin(), corpus.train_docs.end());
  BpeTokenizer tok = BpeTokenizer::train(docs, static_cast<int>(vocab));
  tok.save(path);
  if (!quiet)
    fmt::print(stderr, "tokenizer: trained {} tokens in {:.1f} s -> {}\n", tok.vocab_size(), seconds_since(t0), path);
  return tok;
}

json history_point(int64_t step, const EvalMetrics& m) {
  return {{"step", step}, {"loss", m.loss}, {"accuracy", m.accuracy}, {"perplexity", m.perplexity}};
}

}  // namespace

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
  TrainConfig cfg = cfg_in;
  validate(cfg);
  g_stop = false;
  if (cfg.threads > 0) omp_set_num_threads(static_cast<int>(cfg.threads));
  const DType dtype = cfg.dtype == "float64" ? kFloat64 : kFloat32;
  const Device device = parse_device(cfg.device);
  const auto t_start = Clock::now();

  // ---- output folder and the refusal to silently clobber an earlier run ----
  ensure_directory(cfg.out_dir);
  const std::string ckpt_root = (fs::path(cfg.out_dir) / "checkpoints").string();
  std::optional<std::string> last = find_checkpoint(ckpt_root, "LAST");
  GDN_USER_CHECK(!opts.resume || last, "--resume: no checkpoint in {}", ckpt_root);
  if (last && !opts.resume) {
    GDN_USER_CHECK(opts.overwrite, "{} already holds checkpoints of a run: pass --resume to continue it or --overwrite "
                   "to start over", cfg.out_dir);
    fs::remove_all(ckpt_root);
    fs::remove(fs::path(cfg.out_dir) / "tokenizer.json");
    last.reset();
  }

  // ---- data ----
  Corpus corpus = load_corpus(cfg.data, cfg.val_fraction);
  BpeTokenizer tok = load_or_train_tokenizer((fs::path(cfg.out_dir) / "tokenizer.json").string(), corpus,
                                             cfg.model.vocab_size, opts.quiet);
  const std::string cache_dir = (fs::path(cfg.out_dir) / "cache").string();
  ensure_directory(cache_dir);
  std::vector<int32_t> train_tokens = encode_cached(tok, corpus.train_docs, cache_dir);
  std::vector<int32_t> val_tokens = encode_cached(tok, corpus.val_docs, cache_dir);
  WindowSampler sampler(&train_tokens, cfg.seq_len, cfg.seed);  // a corpus shorter than one window stops here
  GDN_USER_CHECK(static_cast<int64_t>(val_tokens.size()) > cfg.seq_len,
                 "validation split too short: {} tokens, need more than seq_len = {}", val_tokens.size(), cfg.seq_len);
  std::vector<int64_t> eval_starts =
      WindowSampler::eval_window_starts(static_cast<int64_t>(val_tokens.size()), cfg.seq_len,
                                        cfg.eval_batches * cfg.batch_size);
  if (tok.vocab_size() != cfg.model.vocab_size && !opts.quiet)
    fmt::print(stderr, "tokenizer: the corpus supports {} tokens; model vocab_size set to match (asked {})\n",
               tok.vocab_size(), cfg.model.vocab_size);
  cfg.model.vocab_size = tok.vocab_size();
  const double unigram = unigram_loss(train_tokens, val_tokens, cfg.model.vocab_size);
  if (!opts.quiet)
    fmt::print(stderr, "data: {} train docs ({} tokens), {} val docs ({} tokens); unigram val loss {:.3f}\n",
               corpus.train_docs.size(), train_tokens.size(), corpus.val_docs.size(), val_tokens.size(), unigram);

  // ---- model and optimizer ----
  GatedDeltaNetLM model(cfg.model, cfg.seed, dtype, device);
  std::vector<NamedParameter> named;
  std::vector<Tensor> params;
  for (const auto& p : model.parameters()) {
    named.push_back({p.name, p.value, decays(p.name, cfg.no_decay)});
    params.push_back(p.value);
  }
  AdamW optimizer(named, cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay);
  if (!opts.quiet)
    fmt::print(stderr, "model: {} parameters ({} in embeddings, {} in the rest), {} layers, D={}, {} on {}\n",
               model.num_parameters(), model.num_embedding_parameters(), model.num_parameters(false),
               cfg.model.n_layers, cfg.model.d_model, dtype_name(dtype), device);

  // ---- state (fresh or resumed) ----
  int64_t step = 0;
  json train_history = json::array(), val_history = json::array();
  double best_val = INFINITY, elapsed_before = 0;
  int64_t best_step = -1, tokens_seen = 0;
  if (opts.resume) {
    CheckpointData data = load_checkpoint(*last, model, &optimizer);
    const json& st = data.trainer_state;
    GDN_USER_CHECK(st.value("tokenizer_fingerprint", uint64_t{0}) == tok.fingerprint(),
                   "checkpoint {} was trained with another tokenizer than {}/tokenizer.json", *last, cfg.out_dir);
    step = data.step;
    sampler.set_state({st.at("sampler").at("seed").get<uint64_t>(), st.at("sampler").at("epoch").get<uint64_t>(),
                       st.at("sampler").at("cursor").get<uint64_t>()});
    train_history = st.at("train_history");
    val_history = st.at("val_history");
    best_val = st.at("best_val_loss").is_number() ? st.at("best_val_loss").get<double>() : INFINITY;
    best_step = st.value("best_step", int64_t{-1});
    tokens_seen = st.value("tokens_seen", int64_t{0});
    elapsed_before = st.value("elapsed_seconds", 0.0);
    if (!opts.quiet) fmt::print(stderr, "resume: step {} from {}\n", step, *last);
  }

  auto trainer_state = [&]() {
    SamplerState s = sampler.state();
    return json{{"sampler", {{"seed", s.seed}, {"epoch", s.epoch}, {"cursor", s.cursor}}},
                {"train_history", train_history},
                {"val_history", val_history},
                {"best_val_loss", std::isfinite(best_val) ? json(best_val) : json(nullptr)},
                {"best_step", best_step},
                {"tokens_seen", tokens_seen},
                {"elapsed_seconds", elapsed_before + seconds_since(t_start)},
                {"tokenizer_fingerprint", tok.fingerprint()},
                {"config", to_json(cfg)}};
  };
  std::string last_saved;
  auto checkpoint = [&](bool is_best) {
    last_saved = save_checkpoint(ckpt_root, model, optimizer, {step, trainer_state()}, is_best);
  };

  // ---- the loop ----
  TrainSummary summary;
  summary.start_step = step;
  summary.unigram_val_loss = unigram;
  const int64_t B = cfg.batch_size, T = cfg.seq_len;
  std::vector<int64_t> in(B * T), tg(B * T);
  std::unique_ptr<ProgressBar> bar;
  if (!opts.quiet) bar = std::make_unique<ProgressBar>(cfg.steps, step);
  double step_seconds_total = 0;
  int64_t steps_this_run = 0;
  EvalMetrics last_eval;
  bool have_eval = false;
  while (step < cfg.steps) {
    auto t0 = Clock::now();
    sampler.next_batch(B, in.data(), tg.data());
    Tensor ids = Tensor::from_int64(in, {B, T}, device), targets = Tensor::from_int64(tg, {B, T}, device);
    const double lr = learning_rate_at(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.min_lr_ratio, cfg.lr_schedule);
    zero_grad(params);
    LossOutput out = model.loss(ids, targets);
    const double loss = out.ce.item();
    if (!std::isfinite(loss)) {
      if (bar) bar->finish();
      throw UserError(fmt::format("loss became {} at step {}: stopping; the last good checkpoint is {}", loss, step + 1,
                                  last_saved.empty() ? (last ? *last : std::string("(none yet)")) : last_saved));
    }
    backward(out.loss);
    const double grad_norm = clip_grad_norm(params, cfg.grad_clip);
    optimizer.step(lr);
    step++;
    tokens_seen += B * T;
    const double dt = seconds_since(t0);
    step_seconds_total += dt;
    steps_this_run++;
    summary.train_losses.push_back(loss);
    json point = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm}};
    if (out.aux_loss.defined()) {
      point["aux_loss"] = out.aux_loss.item();
      point["expert_tokens"] = out.expert_tokens;
    }
    train_history.push_back(point);
    const double tok_per_s = static_cast<double>(B * T * steps_this_run) / step_seconds_total;
    if (bar) bar->update(step, loss, lr, tok_per_s);

    const bool last_step = step == cfg.steps;
    if (step % cfg.eval_every == 0 || last_step) {
      last_eval = evaluate(model, val_tokens, eval_starts, B, T);
      have_eval = true;
      val_history.push_back(history_point(step, last_eval));
      const bool is_best = last_eval.loss < best_val;
      if (is_best) {
        best_val = last_eval.loss;
        best_step = step;
      }
      if (bar)
        bar->message(fmt::format("step {:>5}  val loss {:.4f}  acc {:.2f}%  ppl {:.1f}{}", step, last_eval.loss,
                                 100 * last_eval.accuracy, last_eval.perplexity, is_best ? "  (best)" : ""));
      if (is_best || last_step || step % cfg.checkpoint_every == 0) checkpoint(is_best);
    } else if (step % cfg.checkpoint_every == 0) {
      checkpoint(false);
    }
    if (g_stop || step == opts.stop_after) {
      if (!last_step) checkpoint(false);
      summary.interrupted = true;
      if (bar) bar->message(fmt::format("interrupted at step {}: checkpoint {}; continue with --resume", step,
                                        last_saved));
      break;
    }
  }
  if (bar) bar->finish();

  // ---- results ----
  summary.end_step = step;
  summary.seconds = seconds_since(t_start);
  summary.tokens_per_second = step_seconds_total > 0 ? static_cast<double>(B * T * steps_this_run) / step_seconds_total : 0;
  summary.best_val_loss = best_val;
  if (!have_eval && !val_history.empty()) {
    const json& lv = val_history.back();
    last_eval = {lv.at("loss").get<double>(), lv.at("accuracy").get<double>(), lv.at("perplexity").get<double>()};
  }
  summary.final_val_loss = last_eval.loss;
  summary.final_val_accuracy = last_eval.accuracy;
  summary.final_val_perplexity = last_eval.perplexity;
  {
    // Final train loss: the mean over the last (up to) 50 steps, which is less noisy than one batch.
    double s = 0;
    int64_t n = 0;
    for (int64_t i = static_cast<int64_t>(train_history.size()) - 1; i >= 0 && n < 50; --i, ++n)
      s += train_history[i].at("loss").get<double>();
    summary.final_train_loss = n ? s / n : 0;
  }

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
      {"best_val_loss", std::isfinite(best_val) ? json(best_val) : json(nullptr)},
      {"best_step", best_step},
      {"final_train_loss", summary.final_train_loss},
      {"final_val", {{"loss", last_eval.loss}, {"accuracy", last_eval.accuracy}, {"perplexity", last_eval.perplexity}}},
      {"unigram_val_loss", unigram},
      {"sample", summary.sample},
  };
  summary.results_path = (fs::path(cfg.out_dir) / "training_results.json").string();
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
    summary.curves_path = (fs::path(cfg.out_dir) / "training_curves.png").string();
    plot_training_curves(summary.curves_path, curves);
  } else if (!opts.quiet) {
    fmt::print(stderr, "plot: PLplot is not available, no training_curves.png\n");
  }
  return summary;
}

}  // namespace gdn
