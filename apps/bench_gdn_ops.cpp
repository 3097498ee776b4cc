// apps/bench_gdn_ops.cpp — micro-benchmark of the gated delta rule operator (bin/bench-gdn-ops).
//
// For each shape (B,T,H,K,V) and each implementation (chunked WY form, token-by-token recurrent form) it times the
// forward alone (no autograd recording) and forward + backward (loss = sum(o * do) with a random do), after warm-up
// calls, and prints the median of --repeats runs as a markdown table. Inputs follow the model: q, k l2-normalised, beta
// = sigmoid(x), g = logsigmoid(x). --threads sets the OpenMP thread count (default: all cores). --device cpu (default):
// float32 at two small shapes, both forms, steady clock. --device cuda: the chunked form at the training shapes (B4
// T256 H4 K=V=64 up to B4 T4096 H16 K=V=128), in --dtype float32, float64 or both, timed with CUDA events on the
// device's stream (train/device.h DeviceTimer); after the timed runs of a row one more forward+backward has its output
// and gradients checked for inf / NaN (an error, exit code 1, if any; the check of train/checkpoint.h). The shape
// columns (with NC, the chunks per sequence) do not depend on the card, so tables from two cards or two builds line up
// row by row. --precision bfloat16 (CUDA only) sets gdn::matmul_precision (core/precision.h) for the timed calls:
// float32 tensors, tile products of the chunked kernels on bfloat16 tensor cores with float32 accumulation where K and
// V are multiples of 16 and the shared memory fits (cuda/delta_rule_chunked_mma*.cuh), else the float32 kernels. The
// "path" column names the kernels the last forward / backward of the row ran (cuda/delta_rule_chunked_path.h: "bf16
// tensor cores", "float32 split", "float32 tiled", "float32 untiled"; "cpu" on the CPU). --shape B,T,H,K[,V] times that
// one shape instead of the list (V = K when left out), e.g. to profile one size alone.
#include <omp.h>

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/cli_parse.h"
#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "core/precision.h"
#include "core/random.h"
#include "ops/creation.h"
#include "ops/elementwise.h"
#include "ops/gated_deltanet.h"
#include "train/checkpoint.h"
#include "train/device.h"

#if GDN_WITH_CUDA
#include "cuda/delta_rule_chunked_path.h"
#endif

using namespace gdn;

namespace {

struct BenchShape {
  int64_t B, T, H, K, V;
};

// Median milliseconds of fn over `repeats` runs after `warmup` runs, timed on the device (events on the GPU).
double median_ms(const std::function<void()>& fn, int warmup, int repeats, Device device) {
  for (int i = 0; i < warmup; ++i) fn();
  synchronize(device);
  DeviceTimer timer(device);
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    timer.start();
    fn();
    ms.push_back(timer.stop_ms());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// "B,T,H,K" or "B,T,H,K,V" (positive integers; V = K when left out), or nothing.
std::optional<BenchShape> parse_shape(const std::string& text) {
  const std::vector<std::string> parts = split_commas(text);
  if (parts.size() != 4 && parts.size() != 5) return std::nullopt;
  int64_t x[5];
  for (size_t i = 0; i < parts.size(); ++i) {
    size_t used = 0;
    try {
      x[i] = std::stoll(parts[i], &used);
    } catch (const std::exception&) {
      return std::nullopt;
    }
    if (used != parts[i].size() || x[i] <= 0) return std::nullopt;
  }
  return BenchShape{x[0], x[1], x[2], x[3], parts.size() == 5 ? x[4] : x[3]};
}

// "forward / backward" paths of the last chunked calls on the device; "cpu" on the CPU.
std::string chunked_paths(bool on_cpu) {
#if GDN_WITH_CUDA
  if (!on_cpu) {
    const gdn::cuda::DeltaRuleChunkedPaths p = gdn::cuda::delta_rule_chunked_last_paths();
    return fmt::format("{} / {}", p.forward, p.backward);
  }
#endif
  return "cpu";
}

int run(int argc, char** argv) {
  CLI::App app{
      "bench-gdn-ops: times the gated delta rule operator, forward and forward+backward; prints the median of\n"
      "--repeats runs (after --warmup runs) as a markdown table. --device cpu (default): float32, chunked and\n"
      "recurrent, at B=4,T=256,H=4,K=V=64 and B=1,T=2048,H=4,K=V=64. --device cuda: the chunked form at the\n"
      "training shapes, --dtype float32|float64|both, timed with CUDA events. A row whose output or gradients hold\n"
      "an inf or a NaN is an error (exit code 1)."};
  int threads = omp_get_num_procs();
  int repeats = 10, warmup = 2;
  int64_t chunk_size = 64;
  std::string device_name = "cpu", dtype_name = "float32", precision_name = "float32", shape_text;
  app.add_option("--threads", threads, "OpenMP threads (default: all cores)")->check(CLI::PositiveNumber);
  app.add_option("--repeats", repeats, "timed runs per measurement (the median is printed)")
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed runs before timing")->check(CLI::NonNegativeNumber);
  app.add_option("--chunk-size", chunk_size, "chunk size of the chunked form")->check(CLI::PositiveNumber);
  app.add_option("--device", device_name, "cpu (default) or cuda[:0]");
  app.add_option("--dtype", dtype_name, "float32 (default), float64 or both")
      ->check(CLI::IsMember({"float32", "float64", "both"}));
  app.add_option("--precision", precision_name, "products of float32 tensors on CUDA: float32 (default) or bfloat16")
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  app.add_option("--shape", shape_text, "B,T,H,K[,V]: time this shape only (V = K when left out)");
  if (auto rc = gdn::parse_command_line(app, argc, argv, "bench-gdn-ops")) return *rc;
  omp_set_num_threads(threads);
  const Device device = init_device(device_name);
  const bool on_cpu = device.type == DeviceType::CPU;
  if (precision_name == "bfloat16" && on_cpu) {
    std::fprintf(stderr, "bench-gdn-ops: error: --precision bfloat16 needs --device cuda\n");
    return 2;
  }
  PrecisionGuard precision(precision_name == "bfloat16" ? Precision::BFloat16 : Precision::Float32);

  std::vector<BenchShape> shapes =
      on_cpu ? std::vector<BenchShape>{{4, 256, 4, 64, 64}, {1, 2048, 4, 64, 64}}
             : std::vector<BenchShape>{{4, 256, 4, 64, 64},
                                       {8, 512, 4, 64, 64},
                                       {16, 512, 4, 64, 64},
                                       {8, 2048, 8, 64, 64},
                                       {4, 4096, 16, 128, 128}};
  if (!shape_text.empty()) {
    const std::optional<BenchShape> one = parse_shape(shape_text);
    if (!one) {
      std::fprintf(stderr, "bench-gdn-ops: error: --shape wants B,T,H,K or B,T,H,K,V (positive integers), got '%s'\n",
                   shape_text.c_str());
      return 2;
    }
    shapes = {*one};
  }
  std::vector<DType> dtypes;
  if (dtype_name != "float64") dtypes.push_back(kFloat32);
  if (dtype_name != "float32") dtypes.push_back(kFloat64);
  const std::vector<DeltaRuleMode> modes =
      on_cpu ? std::vector<DeltaRuleMode>{DeltaRuleMode::Chunked, DeltaRuleMode::Recurrent}
             : std::vector<DeltaRuleMode>{DeltaRuleMode::Chunked};
  std::printf("gated_delta_rule on %s, chunk %ld, %s, products in %s, median of %d runs after %d warm-up\n\n",
              device_name.c_str(), static_cast<long>(chunk_size),
              on_cpu ? fmt::format("{} thread(s)", threads).c_str() : "CUDA events", precision_name.c_str(), repeats,
              warmup);
  std::printf("| dtype | B | T | H | K | V | NC | mode | path (forward / backward) | forward (ms) | forward+backward (ms) |\n");
  std::printf("|-------|---|---|---|---|---|---:|------|------|-------------:|----------------------:|\n");
  Generator gen(0);
  for (DType dt : dtypes)
    for (const BenchShape& s : shapes) {
      Tensor q, k, v, g, beta, d_o;
      {
        NoGradGuard no_grad;
        auto put = [&](const Tensor& x) { return to_device(to_dtype(x, dt), device); };
        q = put(l2norm(randn({s.B, s.T, s.H, s.K}, gen)));
        k = put(l2norm(randn({s.B, s.T, s.H, s.K}, gen)));
        v = put(randn({s.B, s.T, s.H, s.V}, gen));
        g = put(logsigmoid(randn({s.B, s.T, s.H}, gen)));
        beta = put(sigmoid(randn({s.B, s.T, s.H}, gen)));
        d_o = put(randn({s.B, s.T, s.H, s.V}, gen));
      }
      TensorList leaves = {q, k, v, g, beta};
      for (Tensor& t : leaves) t.set_requires_grad(true);
      const double scale = 1.0 / std::sqrt(static_cast<double>(s.K));
      for (DeltaRuleMode mode : modes) {
        const double fwd = median_ms(
            [&] {
              NoGradGuard no_grad;
              (void)gated_delta_rule(q, k, v, g, beta, scale, {}, false, mode, chunk_size);
            },
            warmup, repeats, device);
        const double fwd_bwd = median_ms(
            [&] {
              for (Tensor& t : leaves) t.set_grad(Tensor());
              DeltaRuleOutput out = gated_delta_rule(q, k, v, g, beta, scale, {}, false, mode, chunk_size);
              backward({out.o}, {d_o});
            },
            warmup, repeats, device);
        {  // a time of kernels whose outputs are inf or NaN means nothing: one more call, its outputs checked
          for (Tensor& t : leaves) t.set_grad(Tensor());
          DeltaRuleOutput out = gated_delta_rule(q, k, v, g, beta, scale, {}, false, mode, chunk_size);
          backward({out.o}, {d_o});
          const std::string bad = describe_non_finite(
              {{"o", out.o}, {"dq", q.grad()}, {"dk", k.grad()}, {"dv", v.grad()}, {"dg", g.grad()},
               {"dbeta", beta.grad()}});
          if (!bad.empty()) {
            std::fprintf(stderr, "bench-gdn-ops: error: B=%ld T=%ld H=%ld K=%ld V=%ld: %s\n",
                         static_cast<long>(s.B), static_cast<long>(s.T), static_cast<long>(s.H),
                         static_cast<long>(s.K), static_cast<long>(s.V), bad.c_str());
            return 1;
          }
        }
        const std::string path = chunked_paths(on_cpu);  // the recurrent form runs on the CPU only
        std::printf("| %s | %ld | %ld | %ld | %ld | %ld | %ld | %s | %s | %.3f | %.3f |\n",
                    dt == kFloat32 ? "float32" : "float64", static_cast<long>(s.B), static_cast<long>(s.T),
                    static_cast<long>(s.H), static_cast<long>(s.K), static_cast<long>(s.V),
                    static_cast<long>((s.T + chunk_size - 1) / chunk_size),
                    mode == DeltaRuleMode::Chunked ? "chunked" : "recurrent", path.c_str(), fwd, fwd_bwd);
        std::fflush(stdout);
      }
    }
  return 0;
}

}  // namespace

// Bad input (an unknown --device, a bad GDN_* switch in the environment) ends in one error line and exit code 2.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const gdn::UserError& e) {
    std::fprintf(stderr, "bench-gdn-ops: error: %s\n", e.what());
    return 2;
  }
}
