// apps/libtorch/bench_libtorch.cpp — gdn.cpp against LibTorch on the same Gated DeltaNet model: correctness and
// speed, on the CPU or a CUDA device (bin/bench-libtorch; built only when CMake finds LibTorch, see
// apps/libtorch/CMakeLists.txt).
//
// For every configuration named in --presets and every precision named in --precision:
//   1. gdn.cpp builds the model (GatedDeltaNetLM, float32, --seed, on --device) and WRITES its parameters with
//      save_safetensors to <work-dir>/<config>.safetensors — the real checkpoint path. The LibTorch side READS that
//      file (load_safetensors, then a copy into torch tensors) into TorchGatedDeltaNetLM (torch_model.h) on the same
//      device, so both start from bit-identical weights. One batch of random token ids [B, T+1] (inputs /
//      next-token targets) is shared.
//   2. Parity: loss of one forward on each side, then the gradient of every parameter after backward, compared as
//      max|a - b| / max(max|b|, 1e-30) (b = LibTorch), so tiny gradient entries do not inflate the error.
//   3. Optimizer steps on each side, the same batch every step (zero grads, forward, backward, clip the global grad
//      norm at --clip on the device, AdamW at constant --lr with beta1 0.9, beta2 0.95, eps 1e-8, weight decay 0.1 on
//      the decay=true parameters only); the losses of the first warmup + steps are compared and steps warmup ..
//      warmup + steps - 1 are timed (median ms per step, tokens/s = B*T / median; CUDA events on gdn.cpp's stream
//      (DeviceTimer), device synchronisation around each LibTorch step), with the peak memory of each side's caching
//      allocator over the timed steps. --curve-steps N runs N steps in all and reports the losses every
//      --curve-every steps side by side.
// Precisions (torch_train.h for the LibTorch side): fp32 — IEEE float32 on both sides (TF32 off); bf16 (CUDA only)
// — gdn.cpp's set_matmul_precision(BFloat16) (GEMMs of bf16-rounded inputs, float32 accumulation) against
// LibTorch's bf16 autocast (float32 master weights).
// Tolerances (--parity-only turns a miss into exit code 1; ctest tests libtorch_parity, libtorch_parity_cuda):
// fp32: loss 1e-5, gradients 1e-4, step losses 1e-4; bf16: loss 1e-2 (gradients and steps reported); all relative.
// With --parity-only and --device cuda on a machine without a usable CUDA device it prints one "SKIPPED: " line and
// exits 77 (ctest's skip code).
//
// Configurations: tiny (D 64, L 2, Hk 1, Hv 2 (grouped heads), K = V = 32, vocab 512, T 100: a padded last chunk),
// small / medium / large (train/config.h presets: their D, L, FFN, T, B, vocab 8192), seed-small / seed-medium /
// seed-large (the ungated DeltaNet presets, vocab 49152: the batch is random ids, so no tokenizer caps it), with any
// of these suffixes: -moe (4 experts, top-2, renormalised, shared expert), -ungated (decay_gate and output_gate off),
// -bN (batch N), -vN (vocabulary N); e.g. medium-b32-v49152.
//
// Threads: --threads N sets at::set_num_threads, omp_set_num_threads and (when OpenBLAS is loaded)
// openblas_set_num_threads, so both sides use the same number of cores. On the CPU the BLAS each side uses is
// printed: gdn.cpp multiplies with Eigen's own GEMM; LibTorch calls the system libblas.so.3, found in /proc/self/maps.
#include <omp.h>
#include <torch/torch.h>

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "apps/cli_parse.h"
#include "apps/libtorch/bench_report.h"
#include "apps/libtorch/torch_model.h"
#include "apps/libtorch/torch_train.h"
#include "autograd/engine.h"
#include "core/allocator.h"
#include "core/precision.h"
#include "core/random.h"
#include "models/language_model.h"
#include "train/config.h"
#include "train/device.h"
#include "train/optimizer.h"
#include "train/safetensors.h"
#include "train/step.h"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct BenchConfig {
  std::string name;
  gdn::ModelConfig model;
  int64_t batch = 2, seq_len = 128;
};

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

BenchConfig make_config(const std::string& name) {
  BenchConfig c;
  c.name = name;
  std::string base = name;
  bool moe = false, ungated = false;
  int64_t batch = 0, vocab = 0;
  for (size_t dash; (dash = base.rfind('-')) != std::string::npos;) {  // peel the suffixes off the end
    const std::string s = base.substr(dash + 1);
    if (s == "moe") moe = true;
    else if (s == "ungated") ungated = true;
    else if (s.size() > 1 && s[0] == 'b' && all_digits(s.substr(1))) batch = std::stoll(s.substr(1));
    else if (s.size() > 1 && s[0] == 'v' && all_digits(s.substr(1))) vocab = std::stoll(s.substr(1));
    else break;
    base = base.substr(0, dash);
  }
  if (base == "tiny") {
    gdn::ModelConfig& m = c.model;
    m.vocab_size = 512, m.d_model = 64, m.n_layers = 2, m.n_k_heads = 1, m.n_v_heads = 2;
    m.head_k_dim = 32, m.head_v_dim = 32, m.ffn_dim = 128, m.moe_ffn_dim = 64;
    c.batch = 2, c.seq_len = 100;
  } else {
    gdn::TrainConfig t = gdn::preset_config(base);  // UserError for an unknown name
    c.model = t.model;
    c.batch = t.batch_size, c.seq_len = t.seq_len;
  }
  if (moe) c.model.n_experts = 4, c.model.moe_top_k = 2, c.model.moe_shared_expert = true;
  if (ungated) c.model.decay_gate = false, c.model.output_gate = false;
  if (batch > 0) c.batch = batch;
  if (vocab > 0) c.model.vocab_size = vocab;
  return c;
}

// ---- tensors across the two libraries (via float64: exact for float32 values) ----

torch::Tensor to_torch(const gdn::Tensor& t) {
  std::vector<double> v = t.to_double_vector();
  std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
  torch::Tensor d = torch::from_blob(v.data(), shape, torch::kFloat64).clone();
  return t.dtype() == gdn::kFloat64 ? d : d.to(torch::kFloat32);
}

std::vector<double> torch_values(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// max|a - b| / max(max|b|, tiny); b is the reference.
double max_rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / std::max(scale, 1e-30);
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ---- one configuration in one precision ----

struct Options {
  int threads = 0, blas_threads = 0, steps = 20, warmup = 3, curve_steps = 0, curve_every = 20;
  double lr = 1e-3, clip = 1.0, tol_loss = 1e-5, tol_grad = 1e-4, tol_steps = 1e-4, tol_loss_bf16 = 1e-2;
  uint64_t seed = 1337;
  bool parity_only = false, keep_weights = false, quiet = false, gdn_graph = false;
  std::string device = "cpu", work_dir, only = "both", torch_adamw = "fused";  // only: both | gdn | torch
  std::vector<std::string> precisions{"fp32"};
};

struct Result {
  json j;
  bool pass = true;
};

Result run_config(const BenchConfig& bc, const std::string& precision, const Options& opt, gdn::Device gdev,
                  torch::Device tdev) {
  const gdn::ModelConfig& mc = bc.model;
  const int64_t B = bc.batch, T = bc.seq_len;
  const bool bf16 = precision == "bf16";
  const int compared_steps = opt.warmup + opt.steps;
  const int total_steps = std::max(compared_steps, opt.curve_steps);
  gdn::PrecisionGuard gdn_precision(bf16 ? gdn::Precision::BFloat16 : gdn::Precision::Float32);
  Result r;
  json& j = r.j;
  j["config"] = bc.name;
  j["precision"] = precision;
  j["model"] = gdn::model_config_json(mc);
  j["batch"] = B;
  j["seq_len"] = T;

  // gdn.cpp model, written to safetensors by our writer.
  gdn::GatedDeltaNetLM model(mc, opt.seed, gdn::kFloat32, gdev);
  gdn::ParameterList params = model.parameters();
  j["parameters"] = model.num_parameters();
  const std::string weights = (fs::path(opt.work_dir) / (bc.name + ".safetensors")).string();
  {
    std::vector<std::pair<std::string, gdn::Tensor>> named;
    for (const gdn::Parameter& p : params) named.emplace_back(p.name, p.value);
    gdn::save_safetensors(weights, named, {{"source", "bench-libtorch"}, {"config", bc.name}});
  }
  // LibTorch model, read from that file.
  std::vector<std::pair<std::string, torch::Tensor>> loaded;
  for (const auto& [name, t] : gdn::load_safetensors(weights).tensors) loaded.emplace_back(name, to_torch(t));
  gdn_torch::TorchGatedDeltaNetLM tmodel(mc, loaded, tdev);
  loaded.clear();
  if (!opt.keep_weights) fs::remove(weights);
  const auto& tparams = tmodel.parameters();
  GDN_CHECK(tparams.size() == params.size(), "parameter count differs: torch {} vs gdn {}", tparams.size(),
            params.size());
  bool identical = true;
  for (size_t i = 0; i < params.size(); ++i)
    identical = identical && tparams[i].name == params[i].name && tparams[i].decay == params[i].decay &&
                max_rel_error(torch_values(tparams[i].value), params[i].value.to_double_vector()) == 0.0;
  j["weights_identical"] = identical;
  r.pass = r.pass && identical;

  // One shared batch: ids [B,T] and next-token targets [B,T].
  gdn::Generator gen(opt.seed + 1);
  std::vector<int64_t> in(B * T), tg(B * T);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> row(T + 1);
    for (auto& x : row) x = static_cast<int64_t>(gen.next_u64() % static_cast<uint64_t>(mc.vocab_size));
    std::copy(row.begin(), row.begin() + T, in.begin() + b * T);
    std::copy(row.begin() + 1, row.end(), tg.begin() + b * T);
  }
  gdn::Tensor ids = gdn::Tensor::from_int64(in, {B, T}, gdev), targets = gdn::Tensor::from_int64(tg, {B, T}, gdev);
  torch::Tensor tids = torch::tensor(in, torch::kInt64).reshape({B, T}).to(tdev);
  torch::Tensor ttargets = torch::tensor(tg, torch::kInt64).reshape({B, T}).to(tdev);

  gdn::TensorList gp;
  std::vector<gdn::NamedParameter> named;
  for (const gdn::Parameter& p : params) {
    gp.push_back(p.value);
    named.push_back({p.name, p.value, p.decay});
  }
  gdn_torch::TorchStepOptions topt;
  topt.precision = bf16 ? gdn_torch::TorchPrecision::BFloat16 : gdn_torch::TorchPrecision::Float32;
  topt.lr = opt.lr, topt.max_norm = opt.clip, topt.fused_adamw = opt.torch_adamw == "fused";
  gdn_torch::TorchTrainer trainer(tmodel, topt);
  j["torch_optimizer"] = trainer.optimizer_name();

  // ---- parity of one forward/backward ----
  gdn::zero_grad(gp);
  gdn::LossOutput out = model.loss(ids, targets);
  gdn::backward(out.loss);
  const double loss_g = out.loss.item(), loss_t = trainer.forward_backward(tids, ttargets).item<double>();
  json& par = j["parity"];
  par["loss_gdn"] = loss_g;
  par["loss_torch"] = loss_t;
  par["loss_rel_error"] = rel(loss_g, loss_t);
  double worst = 0;
  std::string worst_name;
  json grads = json::array();
  for (size_t i = 0; i < params.size(); ++i) {
    gdn::Tensor g = params[i].value.grad();
    std::vector<double> a = g.defined() ? g.to_double_vector() : std::vector<double>(params[i].value.numel(), 0.0);
    const torch::Tensor& tg_ = tparams[i].value.grad();
    std::vector<double> b = tg_.defined() ? torch_values(tg_) : std::vector<double>(a.size(), 0.0);
    const double e = max_rel_error(a, b);
    grads.push_back({{"name", params[i].name}, {"max_rel_error", e}});
    if (e > worst || worst_name.empty()) worst = e, worst_name = params[i].name;
  }
  par["grads"] = grads;
  par["max_grad_rel_error"] = worst;
  par["worst_grad"] = worst_name;

  // ---- optimizer steps on each side (gdn first, then torch, so the timings do not interleave) ----
  std::vector<double> losses_g, losses_t, ms_g, ms_t;
  double peak_g = -1, peak_t = -1;
  if (opt.only != "torch") {
    gdn::AdamW adam(named, 0.9, 0.95, 1e-8, 0.1);
    gdn::DeviceTimer timer(gdev);
    gdn::Allocator* alloc = gdn::get_allocator(gdev);
    for (int s = 0; s < total_steps; ++s) {
      if (s == opt.warmup) {
        gdn::synchronize(gdev);
        alloc->reset_peak();
      }
      timer.start();
      gdn::clear_grads(gp);
      gdn::LossOutput o = model.loss(ids, targets);
      gdn::backward(o.loss);
      adam.step(opt.lr, gdn::grad_norm_squared(gp), opt.clip);  // clipped on the device, as gdn-train does
      const double ms = timer.stop_ms();
      losses_g.push_back(o.loss.item());
      if (s >= opt.warmup && s < compared_steps) ms_g.push_back(ms);
      if (s + 1 == compared_steps) peak_g = static_cast<double>(alloc->stats().peak_bytes) / 1048576.0;
    }
  }
  // gdn-train's step on the GPU (train/step.h): captured once as a CUDA graph and replayed; a fresh model from the
  // same seed, timed over the same steps (its losses are cross-entropy only, so they are not compared).
  std::vector<double> ms_graph;
  if (opt.gdn_graph && gdev.is_cuda() && opt.only != "torch") {
    gdn::GatedDeltaNetLM gmodel(mc, opt.seed, gdn::kFloat32, gdev);
    std::vector<gdn::NamedParameter> gnamed;
    gdn::TensorList gparams;
    for (const gdn::Parameter& p : gmodel.parameters()) {
      gnamed.push_back({p.name, p.value, p.decay});
      gparams.push_back(p.value);
    }
    gdn::AdamW gadam(gnamed, 0.9, 0.95, 1e-8, 0.1);
    gdn::TrainStep step(gmodel, gadam, gparams, B, T, {opt.clip, /*cuda_graph=*/true});
    gdn::DeviceTimer timer(gdev);
    for (int s = 0; s < compared_steps; ++s) {
      timer.start();
      gdn::StepOutputs o = step.run(in.data(), tg.data(), opt.lr, false);
      const double ms = timer.stop_ms();
      if (s >= opt.warmup) ms_graph.push_back(ms);
    }
  }
  if (opt.only != "gdn") {
    for (int s = 0; s < total_steps; ++s) {
      if (s == opt.warmup) {
        gdn_torch::torch_synchronize(tdev);
        gdn_torch::torch_reset_peak_memory(tdev);
      }
      gdn_torch::torch_synchronize(tdev);
      auto t0 = Clock::now();
      torch::Tensor l = trainer.step(tids, ttargets);
      gdn_torch::torch_synchronize(tdev);
      const double ms = ms_since(t0);
      losses_t.push_back(l.item<double>());
      if (s >= opt.warmup && s < compared_steps) ms_t.push_back(ms);
      if (s + 1 == compared_steps) peak_t = gdn_torch::torch_peak_memory_mib(tdev);
    }
  }
  double worst_step = 0;
  const size_t n_compared = std::min({losses_g.size(), losses_t.size(), static_cast<size_t>(compared_steps)});
  for (size_t s = 0; s < n_compared; ++s) worst_step = std::max(worst_step, rel(losses_g[s], losses_t[s]));
  par["lr"] = opt.lr;
  par["step_losses_gdn"] = losses_g;
  par["step_losses_torch"] = losses_t;
  par["steps_compared"] = static_cast<int>(n_compared);
  par["max_step_loss_rel_error"] = worst_step;
  const bool pass = bf16 ? rel(loss_g, loss_t) <= opt.tol_loss_bf16
                         : rel(loss_g, loss_t) <= opt.tol_loss && worst <= opt.tol_grad &&
                               worst_step <= opt.tol_steps && opt.only == "both";
  par["pass"] = pass;
  r.pass = r.pass && pass;

  json& tm = j["timing"];
  const double mg = median(ms_g), mt = median(ms_t);
  tm["steps_timed"] = opt.steps;
  tm["gdn_ms_per_step"] = mg;
  tm["torch_ms_per_step"] = mt;
  tm["gdn_tokens_per_s"] = mg > 0 ? 1000.0 * static_cast<double>(B * T) / mg : 0.0;
  tm["torch_tokens_per_s"] = mt > 0 ? 1000.0 * static_cast<double>(B * T) / mt : 0.0;
  tm["speedup_gdn_over_torch"] = mg > 0 ? mt / mg : 0.0;
  const double mgr = median(ms_graph);
  tm["gdn_graph_ms_per_step"] = ms_graph.empty() ? -1.0 : mgr;
  tm["speedup_gdn_graph_over_torch"] = ms_graph.empty() || mgr <= 0 ? -1.0 : mt / mgr;
  tm["gdn_peak_mib"] = peak_g;
  tm["torch_peak_mib"] = peak_t;
  tm["gdn_ms_all"] = ms_g;
  tm["torch_ms_all"] = ms_t;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "bench-libtorch: the same Gated DeltaNet model in gdn.cpp and in LibTorch (C++ API), from the same weights\n"
      "(written by gdn.cpp as safetensors, read back by the LibTorch side) and the same batch of token ids, on the\n"
      "CPU or a CUDA device. Reports, per configuration and precision: the loss of both, the max relative error of\n"
      "every parameter gradient, the losses over warmup+steps AdamW steps on both, and the time of one training\n"
      "step (forward + backward + clip + AdamW; median over --steps after --warmup) with tokens/s, peak memory\n"
      "(CUDA) and the speedup of gdn.cpp.\n"
      "Configurations: tiny, small, medium, large, seed-small, seed-medium, seed-large, with suffixes -moe (4\n"
      "experts, top-2, shared expert), -ungated (FLA's plain DeltaNet), -bN (batch N), -vN (vocabulary N).\n"
      "Precisions: fp32 (both sides IEEE float32, TF32 off) and bf16 (CUDA: gdn.cpp's bf16 GEMMs against\n"
      "LibTorch's bf16 autocast).\n"
      "--parity-only: steps only for the loss trajectory (no timing table), exit 1 unless, in fp32, loss <= 1e-5,\n"
      "every gradient <= 1e-4 and every step loss <= 1e-4, and in bf16 loss <= 1e-2 (relative)."};
  Options opt;
  opt.threads = omp_get_num_procs();
  std::string presets = "small,medium,small-moe", precisions = "fp32", out_json, out_md;
  app.add_option("--presets", presets, "comma-separated configurations (tiny, small, medium, large, seed-small, "
                                       "seed-medium, seed-large; suffixes -moe, -ungated, -bN, -vN)")
      ->capture_default_str();
  app.add_option("--precision", precisions, "comma-separated: fp32, bf16 (bf16 on CUDA only)")->capture_default_str();
  app.add_option("--threads", opt.threads, "threads for BOTH sides (at::set_num_threads, omp_set_num_threads, "
                                           "openblas_set_num_threads); default: all cores")
      ->check(CLI::PositiveNumber);
  app.add_option("--blas-threads", opt.blas_threads, "OpenBLAS threads of the LibTorch side (default: --threads)")
      ->check(CLI::PositiveNumber);
  app.add_option("--steps", opt.steps, "timed optimizer steps (also compared)")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--warmup", opt.warmup, "untimed optimizer steps first (also compared; 0 with --parity-only)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--curve-steps", opt.curve_steps, "run this many optimizer steps in all (at least warmup + steps) "
                                                   "and print the losses of both sides every --curve-every steps")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--curve-every", opt.curve_every, "the spacing of the loss-curve table")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--lr", opt.lr, "constant AdamW learning rate")->capture_default_str();
  app.add_option("--clip", opt.clip, "global gradient-norm clip")->capture_default_str();
  app.add_option("--seed", opt.seed, "seed of the weights (gdn.cpp init) and of the batch")->capture_default_str();
  app.add_option("--device", opt.device, "device of BOTH sides: cpu, cuda or cuda:0")->capture_default_str();
  app.add_option("--torch-adamw", opt.torch_adamw, "LibTorch's AdamW: fused (at::_fused_adamw_, LibTorch >= 2 on "
                                                   "CUDA; else falls back to loop) or loop (torch::optim::AdamW)")
      ->check(CLI::IsMember({"fused", "loop"}))->capture_default_str();
  app.add_option("--work-dir", opt.work_dir, "where the .safetensors weights are written (default: a temp dir)");
  app.add_option("--only", opt.only, "run the optimizer steps of one side only, for profiling (e.g. under perf "
                                     "record -g): both, gdn or torch; step losses are then not compared")
      ->check(CLI::IsMember({"both", "gdn", "torch"}))->capture_default_str();
  app.add_flag("--gdn-graph", opt.gdn_graph, "CUDA: also time gdn-train's step captured as a CUDA graph (train/step.h)");
  app.add_flag("--keep-weights", opt.keep_weights, "keep the .safetensors files");
  app.add_flag("--parity-only", opt.parity_only, "correctness only; non-zero exit when a tolerance is missed");
  app.add_option("--tol-loss", opt.tol_loss, "fp32 loss tolerance (relative)")->capture_default_str();
  app.add_option("--tol-grad", opt.tol_grad, "fp32 gradient tolerance (max|a-b| / max|b|)")->capture_default_str();
  app.add_option("--tol-steps", opt.tol_steps, "fp32 step-loss tolerance (relative)")->capture_default_str();
  app.add_option("--tol-loss-bf16", opt.tol_loss_bf16, "bf16 loss tolerance (relative)")->capture_default_str();
  app.add_option("--out-json", out_json, "write the full report as JSON");
  app.add_option("--out-md", out_md, "write the tables as markdown");
  app.add_flag("--quiet", opt.quiet, "print only the tables");
  if (auto rc = gdn::parse_command_line(app, argc, argv, "bench-libtorch")) return *rc;
  if (opt.parity_only && app.count("--warmup") == 0) opt.warmup = 0;

  try {
    opt.precisions = gdn::split_commas(precisions);
    for (const std::string& p : opt.precisions)
      GDN_USER_CHECK(p == "fp32" || p == "bf16", "--precision: unknown precision '{}' (fp32, bf16)", p);
    const bool cuda = opt.device.rfind("cuda", 0) == 0;
    if (cuda && !gdn_torch::torch_cuda_usable()) {
      const std::string why = "this LibTorch has no CUDA or sees no CUDA device";
      if (opt.parity_only) return std::printf("SKIPPED: %s\n", why.c_str()), 77;
      GDN_USER_CHECK(false, "--device {}: {}", opt.device, why);
    }
    gdn::Device gdev;
    try {
      gdev = gdn::init_device(opt.device);
    } catch (const gdn::UserError& e) {
      if (cuda && opt.parity_only) return std::printf("SKIPPED: gdn.cpp: %s\n", e.what()), 77;
      throw;
    }
    const torch::Device tdev(opt.device);
    for (const std::string& p : opt.precisions)
      GDN_USER_CHECK(p == "fp32" || cuda, "--precision bf16 needs --device cuda (gdn.cpp's bf16 is a GPU mode)");
    gdn_torch::set_torch_math_modes();
    omp_set_num_threads(opt.threads);
    at::set_num_threads(opt.threads);
    if (opt.blas_threads == 0) opt.blas_threads = opt.threads;
    const bool openblas = gdn_bench::set_openblas_threads(opt.blas_threads);
    if (opt.work_dir.empty())
      opt.work_dir = (fs::temp_directory_path() / ("bench-libtorch-" + std::to_string(getpid()))).string();
    fs::create_directories(opt.work_dir);

    json report;
    report["threads"] = opt.threads;
    report["device"] = opt.device;
    report["device_name"] = cuda ? gdn_torch::cuda_device_name() : std::string("cpu");
    report["torch_version"] = TORCH_VERSION;
    report["blas_gdn"] = gdn_bench::gdn_blas();
    report["blas_torch"] = gdn_bench::loaded_blas_description() +
                           (openblas ? fmt::format(" ({} OpenBLAS threads)", opt.blas_threads) : "");
    report["blas_threads"] = opt.blas_threads;
    report["blas_torch_config"] = gdn_bench::torch_blas_config_lines();
    report["load_average_before"] = gdn_bench::load_average();
    report["steps"] = opt.steps;
    report["warmup"] = opt.warmup;
    report["curve_steps"] = opt.curve_steps;
    report["curve_every"] = opt.curve_every;
    report["parity_only"] = opt.parity_only;
    report["gdn_graph"] = opt.gdn_graph && cuda;
    report["torch_optimizer"] = "";
    if (!opt.quiet) {
      std::printf("bench-libtorch: device %s %s, %d thread(s), LibTorch %s\n", opt.device.c_str(),
                  report["device_name"].get<std::string>().c_str(), opt.threads, TORCH_VERSION);
      if (!cuda)
        std::printf("gdn.cpp BLAS: %s\nLibTorch BLAS: %s\n  build config: %s\n", gdn_bench::gdn_blas().c_str(),
                    report["blas_torch"].get<std::string>().c_str(),
                    report["blas_torch_config"].get<std::string>().c_str());
      std::fflush(stdout);
    }

    bool all_pass = true;
    json configs = json::array();
    for (const std::string& name : gdn::split_commas(presets)) {
      const BenchConfig bc = make_config(name);
      for (const std::string& precision : opt.precisions) {
        if (!opt.quiet) {
          std::printf("%s %s: B=%lld T=%lld vocab=%lld ...\n", name.c_str(), precision.c_str(),
                      static_cast<long long>(bc.batch), static_cast<long long>(bc.seq_len),
                      static_cast<long long>(bc.model.vocab_size));
          std::fflush(stdout);
        }
        Result r = run_config(bc, precision, opt, gdev, tdev);
        all_pass = all_pass && r.pass;
        report["torch_optimizer"] = r.j["torch_optimizer"];
        if (!opt.quiet) {
          const json& p = r.j["parity"];
          std::printf("  loss %.7f vs %.7f, max grad rel err %.2e (%s), step-loss max rel err %.2e: %s\n",
                      p["loss_gdn"].get<double>(), p["loss_torch"].get<double>(),
                      p["max_grad_rel_error"].get<double>(), p["worst_grad"].get<std::string>().c_str(),
                      p["max_step_loss_rel_error"].get<double>(), r.pass ? "PASS" : "FAIL");
          if (!opt.parity_only)
            std::printf("  ms/step: gdn.cpp %.2f, LibTorch %.2f (%.2fx)\n",
                        r.j["timing"]["gdn_ms_per_step"].get<double>(),
                        r.j["timing"]["torch_ms_per_step"].get<double>(),
                        r.j["timing"]["speedup_gdn_over_torch"].get<double>());
          std::fflush(stdout);
        }
        configs.push_back(std::move(r.j));
      }
    }
    report["configs"] = configs;
    report["load_average_after"] = gdn_bench::load_average();
    report["all_pass"] = all_pass;
    if (!opt.keep_weights) fs::remove_all(opt.work_dir);

    const std::string md = gdn_bench::markdown(report);
    std::printf("\n%s", md.c_str());
    if (!out_json.empty()) std::ofstream(out_json) << report.dump(2) << "\n";
    if (!out_md.empty()) std::ofstream(out_md) << md;
    if (opt.parity_only && !all_pass) {
      std::fprintf(stderr, "bench-libtorch: parity FAILED (see the table)\n");
      return 1;
    }
    return 0;
  } catch (const gdn::UserError& e) {
    std::fprintf(stderr, "bench-libtorch: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench-libtorch: error: %s\n", e.what());
    return 2;
  }
}
