// apps/bench_gdn_ops.cpp — micro-benchmark of the gated delta rule operator on the CPU (bin/bench-gdn-ops).
//
// For each shape (B,T,H,K,V) and each implementation (chunked WY form, token-by-token recurrent form) it times, in
// float32, the forward alone (no autograd recording) and forward + backward (loss = sum(o * do) with a random do),
// after warm-up calls, and prints the median of --repeats runs as a markdown table. Inputs follow the model: q, k
// l2-normalised, beta = sigmoid(x), g = logsigmoid(x). --threads sets the OpenMP thread count (default: all cores).
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "apps/cli_parse.h"
#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "core/random.h"
#include "ops/creation.h"
#include "ops/elementwise.h"
#include "ops/gated_deltanet.h"

using namespace gdn;

namespace {

struct BenchShape {
  int64_t B, T, H, K, V;
};

double median_ms(const std::function<void()>& fn, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "bench-gdn-ops: times the gated delta rule operator (float32, CPU), chunked and recurrent, forward and\n"
      "forward+backward, at B=4,T=256,H=4,K=V=64 and B=1,T=2048,H=4,K=V=64; prints the median of --repeats runs\n"
      "(after --warmup runs) as a markdown table."};
  int threads = omp_get_num_procs();
  int repeats = 10, warmup = 2;
  int64_t chunk_size = 64;
  app.add_option("--threads", threads, "OpenMP threads (default: all cores)")->check(CLI::PositiveNumber);
  app.add_option("--repeats", repeats, "timed runs per measurement (the median is printed)")
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed runs before timing")->check(CLI::NonNegativeNumber);
  app.add_option("--chunk-size", chunk_size, "chunk size of the chunked form")->check(CLI::PositiveNumber);
  if (auto rc = gdn::parse_command_line(app, argc, argv, "bench-gdn-ops")) return *rc;
  omp_set_num_threads(threads);

  const std::vector<BenchShape> shapes = {{4, 256, 4, 64, 64}, {1, 2048, 4, 64, 64}};
  std::printf("gated_delta_rule, float32, %d thread(s), median of %d runs after %d warm-up\n\n", threads, repeats,
              warmup);
  std::printf("| B | T | H | K | V | mode | forward (ms) | forward+backward (ms) |\n");
  std::printf("|---|---|---|---|---|------|-------------:|----------------------:|\n");
  Generator gen(0);
  for (const BenchShape& s : shapes) {
    Tensor q, k, v, g, beta, d_o;
    {
      NoGradGuard no_grad;
      q = l2norm(randn({s.B, s.T, s.H, s.K}, gen));
      k = l2norm(randn({s.B, s.T, s.H, s.K}, gen));
      v = randn({s.B, s.T, s.H, s.V}, gen);
      g = logsigmoid(randn({s.B, s.T, s.H}, gen));
      beta = sigmoid(randn({s.B, s.T, s.H}, gen));
      d_o = randn({s.B, s.T, s.H, s.V}, gen);
    }
    TensorList leaves = {q, k, v, g, beta};
    for (Tensor& t : leaves) t.set_requires_grad(true);
    const double scale = 1.0 / std::sqrt(static_cast<double>(s.K));
    for (DeltaRuleMode mode : {DeltaRuleMode::Chunked, DeltaRuleMode::Recurrent}) {
      const double fwd = median_ms(
          [&] {
            NoGradGuard no_grad;
            (void)gated_delta_rule(q, k, v, g, beta, scale, {}, false, mode, chunk_size);
          },
          warmup, repeats);
      const double fwd_bwd = median_ms(
          [&] {
            for (Tensor& t : leaves) t.set_grad(Tensor());
            DeltaRuleOutput out = gated_delta_rule(q, k, v, g, beta, scale, {}, false, mode, chunk_size);
            backward({out.o}, {d_o});
          },
          warmup, repeats);
      std::printf("| %ld | %ld | %ld | %ld | %ld | %s | %.2f | %.2f |\n", static_cast<long>(s.B),
                  static_cast<long>(s.T), static_cast<long>(s.H), static_cast<long>(s.K), static_cast<long>(s.V),
                  mode == DeltaRuleMode::Chunked ? "chunked" : "recurrent", fwd, fwd_bwd);
      std::fflush(stdout);
    }
  }
  return 0;
}
