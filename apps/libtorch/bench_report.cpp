// apps/libtorch/bench_report.cpp — see bench_report.h.
#include "ops/cpu/eigen.h"  // first: it must be the first to include the x86 intrinsics headers (see there)

#include "apps/libtorch/bench_report.h"

#include <dlfcn.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

namespace fs = std::filesystem;
using nlohmann::json;

namespace gdn_bench {

std::string loaded_blas_description() {
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
  std::string out;
  for (const std::string& l : libs) {
    std::error_code ec;
    fs::path real = fs::canonical(l, ec);
    out += (out.empty() ? "" : ", ") + l + (ec || real == l ? "" : " -> " + real.string());
  }
  return out.empty() ? "(no BLAS library mapped)" : out;
}

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

namespace {

std::string mib(double v) { return v < 0 ? "—" : fmt::format("{:.0f}", v); }

}  // namespace

std::string markdown(const json& report) {
  const bool cuda = report["device"].get<std::string>().rfind("cuda", 0) == 0;
  std::string md;
  md += fmt::format("bench-libtorch: device {}{}, {} thread(s), LibTorch {}, load average before/after: {} / {}\n\n",
                    report["device"].get<std::string>(),
                    cuda ? " (" + report["device_name"].get<std::string>() + ")" : std::string(),
                    report["threads"].get<int>(), report["torch_version"].get<std::string>(),
                    report["load_average_before"].get<std::string>(), report["load_average_after"].get<std::string>());
  if (cuda) {
    md += "- gdn.cpp: CUDA backend; float32 = IEEE float32 GEMMs, bf16 = set_matmul_precision(BFloat16)\n";
    md += fmt::format("- LibTorch: float32 = TF32 off (cuBLAS, cuDNN), bf16 = CUDA autocast bfloat16 with float32 "
                      "master weights; AdamW: {}\n\n", report["torch_optimizer"].get<std::string>());
  } else {
    md += fmt::format("- gdn.cpp BLAS: {}\n- LibTorch BLAS: {}; AdamW: {}\n\n", report["blas_gdn"].get<std::string>(),
                      report["blas_torch"].get<std::string>(), report["torch_optimizer"].get<std::string>());
  }
  md += "| config | precision | params | loss gdn.cpp | loss LibTorch | loss rel err | max grad rel err (param) | "
        "step-loss max rel err | parity |\n|---|---|---:|---:|---:|---:|---|---:|---|\n";
  for (const json& c : report["configs"]) {
    const json& p = c["parity"];
    md += fmt::format("| {} | {} | {} | {:.7f} | {:.7f} | {:.2e} | {:.2e} ({}) | {:.2e} ({} steps) | {} |\n",
                      c["config"].get<std::string>(), c["precision"].get<std::string>(),
                      c["parameters"].get<int64_t>(), p["loss_gdn"].get<double>(), p["loss_torch"].get<double>(),
                      p["loss_rel_error"].get<double>(), p["max_grad_rel_error"].get<double>(),
                      p["worst_grad"].get<std::string>(), p["max_step_loss_rel_error"].get<double>(),
                      p["steps_compared"].get<int>(), p["pass"].get<bool>() ? "PASS" : "FAIL");
  }
  const bool graph = report.value("gdn_graph", false);
  if (!report["parity_only"].get<bool>()) {
    md += "\n| config | precision | B x T | vocab | gdn.cpp ms/step | LibTorch ms/step | gdn.cpp tok/s | "
          "LibTorch tok/s | gdn.cpp peak MiB | LibTorch peak MiB | gdn.cpp speedup |" +
          std::string(graph ? " gdn.cpp graph ms/step | graph speedup |" : "") +
          "\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + (graph ? "---:|---:|" : "") + "\n";
    for (const json& c : report["configs"]) {
      const json& t = c["timing"];
      md += fmt::format("| {} | {} | {} x {} | {} | {:.2f} | {:.2f} | {:.0f} | {:.0f} | {} | {} | {:.2f}x |\n",
                        c["config"].get<std::string>(), c["precision"].get<std::string>(), c["batch"].get<int64_t>(),
                        c["seq_len"].get<int64_t>(), c["model"]["vocab_size"].get<int64_t>(),
                        t["gdn_ms_per_step"].get<double>(), t["torch_ms_per_step"].get<double>(),
                        t["gdn_tokens_per_s"].get<double>(), t["torch_tokens_per_s"].get<double>(),
                        mib(t["gdn_peak_mib"].get<double>()), mib(t["torch_peak_mib"].get<double>()),
                        t["speedup_gdn_over_torch"].get<double>());
      if (graph)
        md.insert(md.size() - 1, fmt::format(" {:.2f} | {:.2f}x |", t["gdn_graph_ms_per_step"].get<double>(),
                                             t["speedup_gdn_graph_over_torch"].get<double>()));
    }
  }
  const int every = report["curve_every"].get<int>();
  for (const json& c : report["configs"]) {
    const json& p = c["parity"];
    const auto g = p["step_losses_gdn"].get<std::vector<double>>();
    const auto t = p["step_losses_torch"].get<std::vector<double>>();
    const size_t n = std::min(g.size(), t.size());
    if (report["curve_steps"].get<int>() <= 0 || n == 0 || every <= 0) continue;
    md += fmt::format("\n{} {}: training loss, the same batch every step (AdamW lr {}), every {} steps\n\n"
                      "| step | gdn.cpp | LibTorch | rel diff |\n|---:|---:|---:|---:|\n",
                      c["config"].get<std::string>(), c["precision"].get<std::string>(), p["lr"].get<double>(), every);
    for (size_t s = 0; s < n; ++s) {
      if (s != 0 && (s + 1) % static_cast<size_t>(every) != 0 && s + 1 != n) continue;
      md += fmt::format("| {} | {:.5f} | {:.5f} | {:.1e} |\n", s + 1, g[s], t[s],
                        std::abs(g[s] - t[s]) / std::max(std::abs(t[s]), 1e-30));
    }
  }
  return md;
}

}  // namespace gdn_bench
