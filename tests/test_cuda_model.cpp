// tests/test_cuda_model.cpp — the whole model on CUDA against the same model on the CPU: the same weights (built from
// one seed on each device) and the same batch give the same loss and the same gradient for every parameter, dense
// and MoE, float32 and float64, and the ungated DeltaNet (decay_gate and output_gate off, g = 0 as a zero tensor);
// a few AdamW steps stay together. The CPU is the truth.
//
// Runs where the CUDA backend is compiled in and a device is visible (the lent GPU machine); elsewhere each case
// prints one "SKIPPED: " line (test::cuda_device_or_skip), which ctest reports as skipped.
#include <fmt/core.h>

#include <cmath>
#include <optional>

#include "models/language_model.h"
#include "tests/test_helpers.h"
#include "train/device.h"
#include "train/optimizer.h"

using namespace gdn;

namespace {

ModelConfig small_config(bool moe) {
  ModelConfig c;
  c.vocab_size = 301;
  c.d_model = 64;
  c.n_layers = 2;
  c.n_k_heads = 2;
  c.n_v_heads = 4;  // Hv = 2 Hk
  c.head_k_dim = 32;
  c.head_v_dim = 24;
  c.conv_size = 4;
  c.ffn_dim = 96;
  c.chunk_size = 16;  // T = 70 below: 4 full chunks and a tail of 6
  c.init_std = 0.1;
  if (moe) {
    c.n_experts = 4;
    c.moe_top_k = 2;
    c.moe_ffn_dim = 48;
    c.moe_shared_expert = true;
    c.moe_aux_loss_coef = 0.01;
  }
  return c;
}

Tensor random_ids(int64_t B, int64_t T, int64_t V, uint64_t seed, Device device) {
  Generator g(seed);
  std::vector<int64_t> v(B * T);
  for (auto& x : v) x = static_cast<int64_t>(g.below(V));
  return Tensor::from_int64(v, {B, T}, device);
}

// max |a - b| / max |b| over the elements of one tensor (b is the CPU's).
double normwise(const Tensor& gpu, const Tensor& cpu) {
  std::vector<double> a = to_device(gpu, kCPU).to_double_vector(), b = cpu.to_double_vector();
  REQUIRE(a.size() == b.size());
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return err / scale;
}

void compare_model(bool moe, DType dtype, bool gates = true) {
  const std::optional<Device> dev = test::cuda_device_or_skip();
  if (!dev) return;
  const Device cuda = *dev;
  ModelConfig cfg = small_config(moe);
  cfg.decay_gate = cfg.output_gate = gates;
  GatedDeltaNetLM cpu_model(cfg, 7, dtype, kCPU), gpu_model(cfg, 7, dtype, cuda);
  const int64_t B = 2, T = 70;
  // float32: the loss to 1e-5 relative at every step; the gradients to 1e-4 (normwise, per parameter) at step 0,
  // where both devices start from the same weights. Every AdamW step after that divides gradients by sqrt(v), which
  // turns float32 rounding in near-zero gradients into weight differences of order lr, so later steps allow 2e-3.
  // float64 agrees to ~1e-12 throughout.
  const double loss_tol = dtype == kFloat64 ? 1e-11 : 1e-5;
  ParameterList pc = cpu_model.parameters(), pg = gpu_model.parameters();
  REQUIRE(pc.size() == pg.size());
  std::vector<NamedParameter> nc, ng;
  for (size_t i = 0; i < pc.size(); ++i) {
    nc.push_back({pc[i].name, pc[i].value, true});
    ng.push_back({pg[i].name, pg[i].value, true});
  }
  AdamW opt_c(nc, 0.9, 0.95, 1e-8, 0.1), opt_g(ng, 0.9, 0.95, 1e-8, 0.1);
  for (int step = 0; step < 3; ++step) {
    const double grad_tol = dtype == kFloat64 ? 1e-9 : step == 0 ? 1e-4 : 2e-3;
    LossOutput lc = cpu_model.loss(random_ids(B, T, cfg.vocab_size, 100 + step, kCPU),
                                   random_ids(B, T, cfg.vocab_size, 200 + step, kCPU));
    LossOutput lg = gpu_model.loss(random_ids(B, T, cfg.vocab_size, 100 + step, cuda),
                                   random_ids(B, T, cfg.vocab_size, 200 + step, cuda));
    const double a = lg.loss.item(), b = lc.loss.item();
    INFO("step ", step, " loss gpu ", a, " cpu ", b);
    CHECK(std::fabs(a - b) <= loss_tol * std::fabs(b));
    if (moe) {
      REQUIRE(lg.expert_tokens.size() == lc.expert_tokens.size());
      for (size_t l = 0; l < lc.expert_tokens.size(); ++l)
        CHECK(lg.expert_tokens[l].to_int64_vector() == lc.expert_tokens[l].to_int64_vector());
    }
    TensorList vc, vg;
    for (size_t i = 0; i < pc.size(); ++i) vc.push_back(pc[i].value), vg.push_back(pg[i].value);
    zero_grad(vc);
    zero_grad(vg);
    backward(lc.loss);
    backward(lg.loss);
    double worst = 0;
    std::string worst_name;
    for (size_t i = 0; i < pc.size(); ++i) {
      REQUIRE(pg[i].value.grad().defined());
      const double e = normwise(pg[i].value.grad(), pc[i].value.grad());
      INFO("step ", step, " parameter ", pc[i].name, " gradient error ", e);
      CHECK(e <= grad_tol);
      if (e > worst) worst = e, worst_name = pc[i].name;
    }
    MESSAGE(fmt::format("step {} ({}, {}{}): loss rel err {:.3g}, worst gradient {} {:.3g}", step,
                        dtype_name(dtype), moe ? "MoE" : "dense", gates ? "" : ", ungated",
                        std::fabs(a - b) / std::fabs(b), worst_name, worst));
    opt_c.step(1e-3);
    opt_g.step(1e-3);
  }
}

}  // namespace

TEST_CASE("cuda model: loss and every gradient match the CPU over 3 AdamW steps (dense, float32)") {
  compare_model(false, kFloat32);
}
TEST_CASE("cuda model: loss and every gradient match the CPU over 3 AdamW steps (MoE, float32)") {
  compare_model(true, kFloat32);
}
TEST_CASE("cuda model: loss and every gradient match the CPU over 3 AdamW steps (dense, float64)") {
  compare_model(false, kFloat64);
}
TEST_CASE("cuda model: loss and every gradient match the CPU over 3 AdamW steps (MoE, float64)") {
  compare_model(true, kFloat64);
}
TEST_CASE("cuda model: loss and every gradient match the CPU over 3 AdamW steps (ungated DeltaNet, float32)") {
  compare_model(false, kFloat32, /*gates=*/false);
}
TEST_CASE("cuda model: loss and every gradient match the CPU over 3 AdamW steps (ungated DeltaNet, float64)") {
  compare_model(false, kFloat64, /*gates=*/false);
}
