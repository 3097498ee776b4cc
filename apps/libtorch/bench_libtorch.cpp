// apps/libtorch/bench_libtorch.cpp — gdn.cpp against LibTorch on the same Gated DeltaNet model: correctness and
// speed (bin/bench-libtorch; built only when CMake finds LibTorch, see apps/libtorch/CMakeLists.txt).
//
// For every configuration named in --presets:
//   1. gdn.cpp builds the model (GatedDeltaNetLM, float32, --seed) and WRITES its parameters with save_safetensors
//      to <work-dir>/<config>.safetensors — the real checkpoint path. The LibTorch side READS that file
//      (load_safetensors, then a copy into torch tensors) into TorchGatedDeltaNetLM (torch_model.h), so both start
//      from bit-identical weights. One batch of random token ids [B, T+1] (inputs / next-token targets) is shared.
//   2. Parity: loss of one forward on each side, then the gradient of every parameter after backward, compared as
//      max|a - b| / max(max|b|, 1e-30) (b = LibTorch), so tiny gradient entries do not inflate the error.
//   3. warmup + steps optimizer steps on each side, the same batch every step (step = zero grads, forward, backward,
//      clip the global grad norm at --clip, AdamW at constant --lr with beta1 0.9, beta2 0.95, eps 1e-8, weight
//      decay 0.1 on the decay=true parameters only (torch: two parameter groups)); the losses of all steps are
//      compared and the last `steps` are timed (median ms per step, tokens/s = B*T / median).
// Tolerances (--parity-only turns a miss into exit code 1; ctest test libtorch_parity): loss 1e-5, gradients 1e-4,
// step losses 1e-4, all relative.
//
// Configurations: tiny (D 64, L 2, Hk 1, Hv 2 (grouped heads), K = V = 32, vocab 512, T 100: a padded last chunk),
// small / medium / large (train/config.h presets: their D, L, FFN, T, B, vocab 8192), and NAME-moe = NAME with 4
// experts, top-2, renormalised, shared expert; seed-small / seed-medium / seed-large (the ungated DeltaNet presets,
// vocab 49152: the batch is random ids, so no tokenizer caps it) and NAME-ungated (NAME with decay_gate and
// output_gate off, e.g. tiny-ungated).
//
// Threads: --threads N sets at::set_num_threads, omp_set_num_threads and (when OpenBLAS is loaded)
// openblas_set_num_threads, so both sides use the same number of cores. The BLAS each side uses is printed: gdn.cpp
// multiplies with Eigen's own GEMM; LibTorch calls the system libblas.so.3, found in /proc/self/maps.
#include "ops/cpu/eigen.h"  // first: it must be the first to include the x86 intrinsics headers (see there)

#include <dlfcn.h>
#include <omp.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "apps/cli_parse.h"
#include "apps/libtorch/torch_model.h"
#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "core/random.h"
#include "models/language_model.h"
#include "train/config.h"
#include "train/optimizer.h"
#include "train/safetensors.h"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct BenchConfig {
  std::string name;
  gdn::ModelConfig model;
  int64_t batch = 2, seq_len = 128;
};

BenchConfig make_config(const std::string& name) {
  BenchConfig c;
  c.name = name;
  std::string base = name;
  const bool moe = base.size() > 4 && base.substr(base.size() - 4) == "-moe";
  if (moe) base = base.substr(0, base.size() - 4);
  const bool ungated = base.size() > 8 && base.substr(base.size() - 8) == "-ungated";
  if (ungated) base = base.substr(0, base.size() - 8);
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

// ---- which BLAS ----

std::vector<std::string> loaded_blas_libraries() {
  std::ifstream maps("/proc/self/maps");
  std::set<std::string> libs;
  std::string line;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    std::string file = fs::path(path).filename().string();
    if (file.find("blas") != std::string::npos || file.find("lapack") != std::string::npos ||
        file.find("mkl") != std::string::npos)
      libs.insert(path);
  }
  return {libs.begin(), libs.end()};
}

// The BLAS_INFO=... and LAPACK_INFO=... entries of torch::show_config() (what LibTorch was built against).
std::string torch_blas_config_lines() {
  const std::string config = torch::show_config();
  std::string out;
  for (const char* key : {"BLAS_INFO=", "LAPACK_INFO="}) {
    const size_t at = config.find(key);
    if (at == std::string::npos) continue;
    const size_t end = config.find_first_of(", \n", at);
    out += (out.empty() ? "" : ", ") + config.substr(at, end == std::string::npos ? std::string::npos : end - at);
  }
  return out;
}

std::string gdn_blas() {
#ifdef EIGEN_USE_BLAS
  return "external BLAS through Eigen (EIGEN_USE_BLAS)";
#else
  return "Eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION) + " built-in GEMM (no external BLAS), OpenMP";
#endif
}

// openblas_set_num_threads when an OpenBLAS is loaded; returns whether it was.
bool set_openblas_threads(int n) {
  using Fn = void (*)(int);
  auto fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (fn) fn(n);
  return fn != nullptr;
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

// ---- one configuration ----

struct Options {
  int threads = 0, blas_threads = 0, steps = 20, warmup = 3;
  double lr = 1e-3, clip = 1.0, tol_loss = 1e-5, tol_grad = 1e-4, tol_steps = 1e-4;
  uint64_t seed = 1337;
  bool parity_only = false, keep_weights = false, quiet = false;
  std::string device = "cpu", work_dir, only = "both";  // only: both | gdn | torch (optimizer steps of one side)
};

struct Result {
  json j;
  bool pass = true;
};

Result run_config(const BenchConfig& bc, const Options& opt) {
  const gdn::ModelConfig& mc = bc.model;
  const int64_t B = bc.batch, T = bc.seq_len;
  const int total_steps = opt.warmup + opt.steps;
  Result r;
  json& j = r.j;
  j["config"] = bc.name;
  j["model"] = gdn::model_config_json(mc);
  j["batch"] = B;
  j["seq_len"] = T;

  // gdn.cpp model, written to safetensors by our writer.
  gdn::GatedDeltaNetLM model(mc, opt.seed, gdn::kFloat32);
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
  const torch::Device device(opt.device);
  gdn_torch::TorchGatedDeltaNetLM tmodel(mc, loaded, device);
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
  gdn::Tensor ids = gdn::Tensor::from_int64(in, {B, T}), targets = gdn::Tensor::from_int64(tg, {B, T});
  torch::Tensor tids = torch::tensor(in, torch::kInt64).reshape({B, T}).to(device);
  torch::Tensor ttargets = torch::tensor(tg, torch::kInt64).reshape({B, T}).to(device);

  gdn::TensorList gp;
  std::vector<gdn::NamedParameter> named;
  for (const gdn::Parameter& p : params) {
    gp.push_back(p.value);
    named.push_back({p.name, p.value, p.decay});
  }
  std::vector<torch::Tensor> tp, tdecay, tno_decay;
  for (const auto& p : tparams) {
    tp.push_back(p.value);
    (p.decay ? tdecay : tno_decay).push_back(p.value);
  }
  auto torch_zero_grad = [&]() {
    for (auto& p : tp) p.mutable_grad() = torch::Tensor();
  };

  // ---- parity of one forward/backward ----
  gdn::zero_grad(gp);
  gdn::LossOutput out = model.loss(ids, targets);
  gdn::backward(out.loss);
  torch_zero_grad();
  gdn_torch::TorchLossOutput tout = tmodel.loss(tids, ttargets);
  tout.loss.backward();
  const double loss_g = out.loss.item(), loss_t = tout.loss.item<double>();
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
  if (opt.only != "torch") {
    gdn::AdamW adam(named, 0.9, 0.95, 1e-8, 0.1);
    for (int s = 0; s < total_steps; ++s) {
      auto t0 = Clock::now();
      gdn::zero_grad(gp);
      gdn::LossOutput o = model.loss(ids, targets);
      const double l = o.loss.item();
      gdn::backward(o.loss);
      gdn::clip_grad_norm(gp, opt.clip);
      adam.step(opt.lr);
      const double ms = ms_since(t0);
      losses_g.push_back(l);
      if (s >= opt.warmup) ms_g.push_back(ms);
    }
  }
  if (opt.only != "gdn") {
    using torch::optim::AdamWOptions;
    auto options = [&](double wd) {
      return std::make_unique<AdamWOptions>(AdamWOptions(opt.lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd));
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(tdecay, options(0.1));
    if (!tno_decay.empty()) groups.emplace_back(tno_decay, options(0.0));
    torch::optim::AdamW adam(groups, AdamWOptions(opt.lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1));
    for (int s = 0; s < total_steps; ++s) {
      auto t0 = Clock::now();
      torch_zero_grad();
      gdn_torch::TorchLossOutput o = tmodel.loss(tids, ttargets);
      const double l = o.loss.item<double>();
      o.loss.backward();
      torch::nn::utils::clip_grad_norm_(tp, opt.clip);
      adam.step();
      const double ms = ms_since(t0);
      losses_t.push_back(l);
      if (s >= opt.warmup) ms_t.push_back(ms);
    }
  }
  double worst_step = 0;
  for (size_t s = 0; s < std::min(losses_g.size(), losses_t.size()); ++s)
    worst_step = std::max(worst_step, rel(losses_g[s], losses_t[s]));
  par["lr"] = opt.lr;
  par["step_losses_gdn"] = losses_g;
  par["step_losses_torch"] = losses_t;
  par["max_step_loss_rel_error"] = worst_step;
  const bool pass = rel(loss_g, loss_t) <= opt.tol_loss && worst <= opt.tol_grad && worst_step <= opt.tol_steps &&
                    opt.only == "both";
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
  tm["gdn_ms_all"] = ms_g;
  tm["torch_ms_all"] = ms_t;
  return r;
}

std::string markdown(const json& report, bool parity_only) {
  std::string md;
  md += fmt::format("bench-libtorch: {} thread(s), float32, device {}, load average before/after: {} / {}\n\n",
                    report["threads"].get<int>(), report["device"].get<std::string>(),
                    report["load_average_before"].get<std::string>(), report["load_average_after"].get<std::string>());
  md += fmt::format("- gdn.cpp BLAS: {}\n- LibTorch {} BLAS: {}\n\n", report["blas_gdn"].get<std::string>(),
                    report["torch_version"].get<std::string>(), report["blas_torch"].get<std::string>());
  md += "| config | params | loss gdn.cpp | loss LibTorch | loss rel err | max grad rel err (param) | "
        "step-loss max rel err | parity |\n|---|---:|---:|---:|---:|---|---:|---|\n";
  for (const json& c : report["configs"]) {
    const json& p = c["parity"];
    md += fmt::format("| {} | {} | {:.7f} | {:.7f} | {:.2e} | {:.2e} ({}) | {:.2e} | {} |\n",
                      c["config"].get<std::string>(), c["parameters"].get<int64_t>(), p["loss_gdn"].get<double>(),
                      p["loss_torch"].get<double>(), p["loss_rel_error"].get<double>(),
                      p["max_grad_rel_error"].get<double>(), p["worst_grad"].get<std::string>(),
                      p["max_step_loss_rel_error"].get<double>(), p["pass"].get<bool>() ? "PASS" : "FAIL");
  }
  if (!parity_only) {
    md += "\n| config | B x T | gdn.cpp ms/step | LibTorch ms/step | gdn.cpp tok/s | LibTorch tok/s | "
          "gdn.cpp speedup |\n|---|---|---:|---:|---:|---:|---:|\n";
    for (const json& c : report["configs"]) {
      const json& t = c["timing"];
      md += fmt::format("| {} | {} x {} | {:.1f} | {:.1f} | {:.0f} | {:.0f} | {:.2f}x |\n",
                        c["config"].get<std::string>(), c["batch"].get<int64_t>(), c["seq_len"].get<int64_t>(),
                        t["gdn_ms_per_step"].get<double>(), t["torch_ms_per_step"].get<double>(),
                        t["gdn_tokens_per_s"].get<double>(), t["torch_tokens_per_s"].get<double>(),
                        t["speedup_gdn_over_torch"].get<double>());
    }
  }
  return md;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "bench-libtorch: the same Gated DeltaNet model in gdn.cpp and in LibTorch (C++ API), from the same weights\n"
      "(written by gdn.cpp as safetensors, read back by the LibTorch side) and the same batch of token ids.\n"
      "Reports, per configuration: the loss of both, the max relative error of every parameter gradient, the\n"
      "losses over warmup+steps AdamW steps on both, and the time of one training step (forward + backward +\n"
      "clip + AdamW; median over --steps after --warmup) with tokens/s and the speedup of gdn.cpp.\n"
      "Configurations: tiny, small, medium, large, seed-small, seed-medium, seed-large, NAME-moe (4 experts,\n"
      "top-2, shared expert) and NAME-ungated (decay_gate and output_gate off: FLA's plain DeltaNet).\n"
      "--parity-only: steps only for the loss trajectory (no timing table), exit 1 unless loss <= 1e-5,\n"
      "every gradient <= 1e-4 and every step loss <= 1e-4 (relative)."};
  Options opt;
  opt.threads = omp_get_num_procs();
  std::string presets = "small,medium,small-moe", out_json, out_md;
  bool steps_given = false;
  app.add_option("--presets", presets, "comma-separated configurations (tiny, small, medium, large, seed-small, seed-medium, "
                                        "seed-large, NAME-moe, NAME-ungated)")
      ->capture_default_str();
  app.add_option("--threads", opt.threads, "threads for BOTH sides (at::set_num_threads, omp_set_num_threads, "
                                           "openblas_set_num_threads); default: all cores")
      ->check(CLI::PositiveNumber);
  app.add_option("--blas-threads", opt.blas_threads, "OpenBLAS threads of the LibTorch side (default: --threads)")
      ->check(CLI::PositiveNumber);
  app.add_option("--steps", opt.steps, "timed optimizer steps (also compared)")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--warmup", opt.warmup, "untimed optimizer steps first (also compared; 0 with --parity-only)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--lr", opt.lr, "constant AdamW learning rate")->capture_default_str();
  app.add_option("--clip", opt.clip, "global gradient-norm clip")->capture_default_str();
  app.add_option("--seed", opt.seed, "seed of the weights (gdn.cpp init) and of the batch")->capture_default_str();
  app.add_option("--device", opt.device, "LibTorch device (gdn.cpp runs on the CPU)")->capture_default_str();
  app.add_option("--work-dir", opt.work_dir, "where the .safetensors weights are written (default: a temp dir)");
  app.add_option("--only", opt.only, "run the optimizer steps of one side only, for profiling (e.g. under perf "
                                     "record -g): both, gdn or torch; step losses are then not compared")
      ->check(CLI::IsMember({"both", "gdn", "torch"}))->capture_default_str();
  app.add_flag("--keep-weights", opt.keep_weights, "keep the .safetensors files");
  app.add_flag("--parity-only", opt.parity_only, "correctness only; non-zero exit when a tolerance is missed");
  app.add_option("--tol-loss", opt.tol_loss, "loss tolerance (relative)")->capture_default_str();
  app.add_option("--tol-grad", opt.tol_grad, "gradient tolerance (max|a-b| / max|b|)")->capture_default_str();
  app.add_option("--tol-steps", opt.tol_steps, "step-loss tolerance (relative)")->capture_default_str();
  app.add_option("--out-json", out_json, "write the full report as JSON");
  app.add_option("--out-md", out_md, "write the tables as markdown");
  app.add_flag("--quiet", opt.quiet, "print only the tables");
  if (auto rc = gdn::parse_command_line(app, argc, argv, "bench-libtorch")) return *rc;
  steps_given = app.count("--warmup") > 0;
  if (opt.parity_only && !steps_given) opt.warmup = 0;

  try {
    omp_set_num_threads(opt.threads);
    at::set_num_threads(opt.threads);
    if (opt.blas_threads == 0) opt.blas_threads = opt.threads;
    const bool openblas = set_openblas_threads(opt.blas_threads);
    if (opt.work_dir.empty())
      opt.work_dir = (fs::temp_directory_path() / ("bench-libtorch-" + std::to_string(getpid()))).string();
    fs::create_directories(opt.work_dir);

    json report;
    report["threads"] = opt.threads;
    report["device"] = opt.device;
    report["torch_version"] = TORCH_VERSION;
    report["blas_gdn"] = gdn_blas();
    std::vector<std::string> libs = loaded_blas_libraries();
    std::string torch_blas;
    for (const std::string& l : libs) {
      std::error_code ec;
      fs::path real = fs::canonical(l, ec);
      torch_blas += (torch_blas.empty() ? "" : ", ") + l + (ec || real == l ? "" : " -> " + real.string());
    }
    if (torch_blas.empty()) torch_blas = "(no BLAS library mapped)";
    report["blas_torch"] = torch_blas + (openblas ? fmt::format(" ({} OpenBLAS threads)", opt.blas_threads) : "");
    report["blas_threads"] = opt.blas_threads;
    report["blas_torch_config"] = torch_blas_config_lines();
    report["load_average_before"] = load_average();
    report["steps"] = opt.steps;
    report["warmup"] = opt.warmup;
    report["parity_only"] = opt.parity_only;
    if (!opt.quiet) {
      std::printf("bench-libtorch: %d thread(s); gdn.cpp BLAS: %s\n", opt.threads, gdn_blas().c_str());
      std::printf("LibTorch %s BLAS: %s\n  build config: %s\n", TORCH_VERSION, report["blas_torch"].get<std::string>().c_str(),
                  report["blas_torch_config"].get<std::string>().c_str());
      std::fflush(stdout);
    }

    bool all_pass = true;
    std::stringstream list(presets);
    std::string name;
    json configs = json::array();
    while (std::getline(list, name, ',')) {
      if (name.empty()) continue;
      BenchConfig bc = make_config(name);
      if (!opt.quiet) {
        std::printf("%s: B=%lld T=%lld ...\n", name.c_str(), static_cast<long long>(bc.batch),
                    static_cast<long long>(bc.seq_len));
        std::fflush(stdout);
      }
      Result r = run_config(bc, opt);
      all_pass = all_pass && r.pass;
      if (!opt.quiet) {
        const json& p = r.j["parity"];
        std::printf("  loss %.7f vs %.7f, max grad rel err %.2e (%s), step-loss max rel err %.2e: %s\n",
                    p["loss_gdn"].get<double>(), p["loss_torch"].get<double>(), p["max_grad_rel_error"].get<double>(),
                    p["worst_grad"].get<std::string>().c_str(), p["max_step_loss_rel_error"].get<double>(),
                    r.pass ? "PASS" : "FAIL");
        if (!opt.parity_only)
          std::printf("  ms/step: gdn.cpp %.1f, LibTorch %.1f (%.2fx)\n", r.j["timing"]["gdn_ms_per_step"].get<double>(),
                      r.j["timing"]["torch_ms_per_step"].get<double>(),
                      r.j["timing"]["speedup_gdn_over_torch"].get<double>());
        std::fflush(stdout);
      }
      configs.push_back(std::move(r.j));
    }
    report["configs"] = configs;
    report["load_average_after"] = load_average();
    report["all_pass"] = all_pass;
    if (!opt.keep_weights) fs::remove_all(opt.work_dir);

    const std::string md = markdown(report, opt.parity_only);
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
