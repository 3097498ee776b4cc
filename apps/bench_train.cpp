// apps/bench_train.cpp — times one whole training step of the model (bin/bench-train).
//
// A step is what gdn-train does per batch: forward, loss, backward, gradient clipping and the AdamW step, on random
// token ids (so any vocabulary can be timed without a corpus, e.g. 49152 to compare with stacks that use that
// tokenizer). After --warmup untimed steps, each of --steps steps is timed on the device (CUDA events on the device's
// stream; the steady clock on the CPU) and the median is reported with tokens/s, the kernel calls per step (calls
// through the dispatch table; a cuBLAS call counts once; with the step replayed as a CUDA graph, --graph on, the
// default on the GPU, only the few calls around the replay, and the graph's node count beside), the host time to
// issue one step (the host does not wait
// for the device inside a step, so a step whose issue time is close to its device time is bound by the host) and the
// device allocator's peak memory; a step whose loss is inf or NaN is an error (exit code 1), since its time would
// mean nothing. One line of the markdown table per preset; --json FILE also writes the numbers as
// JSON. The GEMM work of a step (counted by matmul) over its time, next to the rate of one large matmul, shows how
// far a step is from the GEMM roofline. --precision bf16 runs the GPU's products in bfloat16 with float32
// accumulation (core/precision.h). --profile adds, per preset, the device time of every kernel over a few more eager
// steps (train/device.h KernelProfile).
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "apps/cli_parse.h"
#include "core/allocator.h"
#include "core/dispatch.h"
#include "core/precision.h"
#include "core/random.h"
#include "models/language_model.h"
#include "ops/ops.h"
#include "train/config.h"
#include "train/device.h"
#include "train/optimizer.h"
#include "train/step.h"

using namespace gdn;
using json = nlohmann::json;

namespace {

struct StepResult {
  double median_ms = 0, min_ms = 0, max_ms = 0, issue_ms = 0, kernel_calls = 0, peak_mib = 0, loss = 0;
  double gemm_gflop = 0;  // GEMM work of one step (forward and backward)
  double graph_nodes = 0;  // nodes of the captured step (0 when eager)
  double params_millions = 0;
  std::vector<KernelProfile::Row> profile;  // per step, with --profile
};

void random_ids(std::vector<int64_t>& v, int64_t V, Generator& gen) {
  for (auto& x : v) x = static_cast<int64_t>(gen.below(static_cast<uint64_t>(V)));
}

StepResult time_training_step(const TrainConfig& cfg, Device device, DType dtype, int warmup, int steps,
                              int profile_steps, bool use_graph, bool fused_loss) {
  GatedDeltaNetLM model(cfg.model, cfg.seed, dtype, device);
  std::vector<NamedParameter> named;
  std::vector<Tensor> params;
  for (const auto& p : model.parameters()) {
    named.push_back({p.name, p.value, true});
    params.push_back(p.value);
  }
  AdamW optimizer(named, cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay);
  StepResult r;
  r.params_millions = static_cast<double>(model.num_parameters()) / 1e6;
  Generator gen(cfg.seed);
  const int64_t B = cfg.batch_size, T = cfg.seq_len, V = cfg.model.vocab_size;
  std::vector<int64_t> ids(B * T), targets(B * T);
  // The step of gdn-train (train/step.h): eager, or captured as a CUDA graph at the second step and replayed.
  TrainStep train_step(model, optimizer, params, B, T, {cfg.grad_clip, use_graph, fused_loss});
  auto one_step = [&](TrainStep& ts, double* loss_out) {
    random_ids(ids, V, gen);
    random_ids(targets, V, gen);
    StepOutputs out = ts.run(ids.data(), targets.data(), cfg.lr, false);  // clipped on the device, as gdn-train does
    if (loss_out) *loss_out = out.ce.item();
  };
  // The first step is eager in both modes: it counts the GEMM work (a replayed graph issues nothing from the host).
  const uint64_t flops_before = gemm_flops();
  one_step(train_step, nullptr);
  r.gemm_gflop = static_cast<double>(gemm_flops() - flops_before) / 1e9;
  // Peak memory from the second step on: it covers the capture, where a graph's step allocates its memory once.
  synchronize(device);
  get_allocator(device)->reset_peak();
  for (int i = 1; i < warmup; ++i) one_step(train_step, nullptr);
  synchronize(device);
  DeviceTimer timer(device);
  std::vector<double> ms;
  const uint64_t calls_before = kernel_calls();
  for (int i = 0; i < steps; ++i) {
    timer.start();
    one_step(train_step, nullptr);
    ms.push_back(timer.stop_ms());
  }
  r.kernel_calls = static_cast<double>(kernel_calls() - calls_before) / steps;
  r.graph_nodes = static_cast<double>(train_step.graph_nodes());
  std::vector<double> issue;
  for (int i = 0; i < std::min(steps, 10); ++i) {
    synchronize(device);
    const auto t0 = std::chrono::steady_clock::now();
    one_step(train_step, nullptr);
    issue.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(issue.begin(), issue.end());
  r.issue_ms = issue[issue.size() / 2];
  one_step(train_step, &r.loss);
  r.peak_mib = static_cast<double>(get_allocator(device)->stats().peak_bytes) / 1048576.0;
  if (profile_steps > 0) {  // per-kernel events need the host's calls: an eager step on the same model
    TrainStep eager(model, optimizer, params, B, T, {cfg.grad_clip, false, fused_loss});
    one_step(eager, nullptr);
    synchronize(device);
    KernelProfile profile(device);
    for (int i = 0; i < profile_steps; ++i) one_step(eager, nullptr);
    r.profile = profile.rows();
    for (auto& row : r.profile) {
      row.ms /= profile_steps;
      row.calls /= profile_steps;
    }
  }
  std::sort(ms.begin(), ms.end());
  r.median_ms = ms[ms.size() / 2];
  r.min_ms = ms.front();
  r.max_ms = ms.back();
  return r;
}

// GFLOP/s of one n x n x n matmul on the device (median of 10 after 2 warm-up): the GEMM roofline a step is held to.
double gemm_roofline(Device device, DType dtype, int64_t n) {
  Generator gen(1);
  Tensor a = randn({n, n}, gen, dtype, device), b = randn({n, n}, gen, dtype, device);
  NoGradGuard no_grad;
  DeviceTimer timer(device);
  std::vector<double> ms;
  for (int i = 0; i < 12; ++i) {
    timer.start();
    Tensor c = matmul(a, b);
    const double t = timer.stop_ms();
    if (i >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / (ms[ms.size() / 2] * 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "bench-train: times the whole training step (forward, backward, clipping, AdamW) of the Gated DeltaNet LM on\n"
      "random token ids; prints ms/step (median), tokens/s, kernel calls per step and peak device memory (a step\n"
      "whose loss is inf or NaN is an error, exit code 1)"};
  std::string presets = "small,medium,large", device_name = "cpu", dtype_name_arg = "float32", json_path;
  std::string precision = "float32", graph = "on", fused = "off";
  int64_t batch = 0, seq_len = 0, vocab = 0;
  int steps = 50, warmup = 5, threads = 0, profile_steps = 0;
  app.add_option("--presets", presets,
                 "comma-separated presets to time (small, medium, large, seed-small, seed-medium, seed-large)");
  app.add_option("--device", device_name, "cpu, cuda or cuda:N");
  app.add_option("--dtype", dtype_name_arg, "float32 or float64")->check(CLI::IsMember({"float32", "float64"}));
  app.add_option("--precision", precision, "products on the GPU: float32 or bf16 (bfloat16 inputs, float32 accumulation)")
      ->check(CLI::IsMember({"float32", "bf16"}));
  app.add_option("--graph", graph, "on the GPU, replay the step as a captured CUDA graph (on) or issue it eagerly (off)")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--fused-loss", fused, "on the GPU, lm_head + cross-entropy fused over row chunks (on) or not (off)")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--batch", batch, "batch size (default: the preset's)")->check(CLI::PositiveNumber);
  app.add_option("--seq-len", seq_len, "sequence length (default: the preset's)")->check(CLI::PositiveNumber);
  app.add_option("--vocab", vocab, "vocabulary size (default: the preset's)")->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "timed steps (the median is reported)")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed steps before timing")->check(CLI::NonNegativeNumber);
  app.add_option("--threads", threads, "OpenMP threads on the CPU (default: all cores)")->check(CLI::NonNegativeNumber);
  app.add_option("--json", json_path, "also write the results to this JSON file");
  app.add_option("--profile", profile_steps, "also time every kernel over this many more steps (0 = off)")
      ->check(CLI::NonNegativeNumber);
  if (auto rc = parse_command_line(app, argc, argv, "bench-train")) return *rc;
  try {
    if (threads > 0) omp_set_num_threads(threads);
    const Device device = init_device(device_name);
    const DType dtype = dtype_name_arg == "float64" ? kFloat64 : kFloat32;
    GDN_USER_CHECK(precision == "float32" || (device.is_cuda() && dtype == kFloat32),
                   "--precision bf16 needs --device cuda and --dtype float32");
    const bool use_graph = device.is_cuda() && graph == "on";
    if (use_graph) warmup = std::max(warmup, 2);  // the eager first step, then the capture
    PrecisionGuard guard(precision == "bf16" ? Precision::BFloat16 : Precision::Float32);
    std::printf("bench-train: %s, %s, products %s, %s, %s loss, median of %d steps after %d warm-up steps\n\n",
                device.str().c_str(), dtype_name_arg.c_str(), precision.c_str(),
                use_graph ? "step replayed as a CUDA graph" : "eager step",
                device.is_cuda() && fused == "on" ? "fused" : "unfused", steps, warmup);
    std::printf("| preset | B | T | vocab | params (M) | ms/step | min | max | tokens/s | host issue ms/step | "
                "kernel calls/step | graph nodes | GEMM GFLOP/step | GEMM GFLOP / step time (GFLOP/s) | peak MiB |\n");
    std::printf("|--------|---|---|------:|-----------:|--------:|----:|----:|---------:|-------------------:|"
                "------------------:|------------:|----------------:|-------------------------------:|---------:|\n");
    std::vector<std::pair<std::string, StepResult>> profiles;
    json rows = json::array();
    for (const std::string& preset : split_commas(presets)) {
      TrainConfig cfg = preset_config(preset);
      if (batch > 0) cfg.batch_size = batch;
      if (seq_len > 0) cfg.seq_len = seq_len;
      if (vocab > 0) cfg.model.vocab_size = vocab;
      cfg.device = device.str();
      validate(cfg);
      const StepResult r = time_training_step(cfg, device, dtype, warmup, steps, profile_steps, use_graph,
                                              fused == "on");
      if (!std::isfinite(r.loss)) {  // the time of a step that computes inf or NaN means nothing
        std::fprintf(stderr, "bench-train: error: %s: the timed step's loss is %g\n", preset.c_str(), r.loss);
        return 1;
      }
      const double params_m = r.params_millions;
      const double tokens = static_cast<double>(cfg.batch_size * cfg.seq_len);
      std::printf("| %s | %lld | %lld | %lld | %.1f | %.2f | %.2f | %.2f | %.0f | %.2f | %.0f | %.0f | %.2f | %.0f | "
                  "%.0f |\n",
                  preset.c_str(), static_cast<long long>(cfg.batch_size), static_cast<long long>(cfg.seq_len),
                  static_cast<long long>(cfg.model.vocab_size), params_m, r.median_ms, r.min_ms, r.max_ms,
                  tokens / (r.median_ms / 1000.0), r.issue_ms, r.kernel_calls, r.graph_nodes, r.gemm_gflop,
                  r.gemm_gflop / (r.median_ms / 1000.0), r.peak_mib);
      if (!r.profile.empty()) profiles.emplace_back(preset, r);
      std::fflush(stdout);
      rows.push_back({{"preset", preset}, {"device", device.str()}, {"dtype", dtype_name_arg},
                      {"precision", precision}, {"cuda_graph", use_graph},
                      {"fused_loss", device.is_cuda() && fused == "on"}, {"graph_nodes", r.graph_nodes},
                      {"batch", cfg.batch_size}, {"seq_len", cfg.seq_len}, {"vocab", cfg.model.vocab_size},
                      {"parameters_millions", params_m}, {"ms_per_step_median", r.median_ms},
                      {"ms_per_step_min", r.min_ms}, {"ms_per_step_max", r.max_ms},
                      {"tokens_per_second", tokens / (r.median_ms / 1000.0)},
                      {"kernel_calls_per_step", r.kernel_calls}, {"host_issue_ms_per_step", r.issue_ms},
                      {"gemm_gflop_per_step", r.gemm_gflop},
                      {"peak_device_mib", r.peak_mib},
                      {"final_loss", r.loss}, {"steps", steps}, {"warmup", warmup}});
    }
    const int64_t n = device.is_cuda() ? 4096 : 1024;
    std::printf("\nGEMM roofline: one %lld x %lld x %lld matmul runs at %.0f GFLOP/s (%s, products %s)\n",
                static_cast<long long>(n), static_cast<long long>(n), static_cast<long long>(n),
                gemm_roofline(device, dtype, n), dtype_name_arg.c_str(), precision.c_str());
    for (const auto& [preset, r] : profiles) {
      double total = 0;
      for (const auto& row : r.profile) total += row.ms;
      std::printf("\n%s: device time per step by kernel (%.2f ms in kernels, %.2f ms per step)\n\n", preset.c_str(),
                  total, r.median_ms);
      std::printf("| kernel | calls/step | ms/step | share of kernel time |\n|---|---:|---:|---:|\n");
      for (const auto& row : r.profile)
        std::printf("| %s | %lld | %.3f | %.1f%% |\n", row.name.c_str(), static_cast<long long>(row.calls),
                    row.ms, 100.0 * row.ms / total);
    }
    if (!json_path.empty()) {
      std::ofstream f(json_path);
      GDN_USER_CHECK(f.good(), "cannot write {}", json_path);
      f << rows.dump(2) << "\n";
    }
  } catch (const UserError& e) {
    std::fprintf(stderr, "bench-train: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
