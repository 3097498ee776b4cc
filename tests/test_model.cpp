// tests/test_model.cpp — the whole model: fp64 gradcheck of every parameter (dense, MoE, and with the decay and
// output gates off: FLA's plain DeltaNet), recurrent generation equals the parallel forward (gated and ungated), the
// chunked and recurrent forms give the same logits in fp64, parameter names and shapes of each layer variant, MoE
// routing counts, output and load-balancing loss against a hand computation.
#include <omp.h>

#include <cmath>
#include <map>

#include "models/language_model.h"
#include "ops/cpu/cpu_loops.h"
#include "tests/test_helpers.h"

using namespace gdn;

namespace {
ModelConfig tiny_config(bool moe) {
  ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_k_heads = 1;
  c.n_v_heads = 2;
  c.head_k_dim = 4;
  c.head_v_dim = 3;
  c.conv_size = 3;
  c.ffn_dim = 6;
  c.chunk_size = 4;
  c.init_std = 0.3;  // larger than 0.02 so every path carries signal in the check
  if (moe) {
    c.n_experts = 3;
    c.moe_top_k = 2;
    c.moe_ffn_dim = 4;
    c.moe_shared_expert = true;
    c.moe_aux_loss_coef = 0.1;
  }
  return c;
}

Tensor random_ids(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Generator g(seed);
  std::vector<int64_t> v(B * T);
  for (auto& x : v) x = static_cast<int64_t>(g.below(V));
  return Tensor::from_int64(v, {B, T});
}

ModelConfig with_gates(ModelConfig c, bool decay_gate, bool output_gate) {
  c.decay_gate = decay_gate;
  c.output_gate = output_gate;
  return c;
}

void model_gradcheck(const ModelConfig& cfg) {
  GatedDeltaNetLM model(cfg, 7, kFloat64);
  Tensor ids = random_ids(2, 6, cfg.vocab_size, 1), targets = random_ids(2, 6, cfg.vocab_size, 2);
  TensorList params;
  for (const auto& p : model.parameters()) params.push_back(p.value);
  GradcheckOptions opts;
  opts.rtol = 1e-4;
  opts.atol = 1e-7;
  GradcheckResult r =
      gradcheck([&](const TensorList&) -> TensorList { return {model.loss(ids, targets).loss}; }, params, opts);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.elements_checked > 0);
  MESSAGE("gradcheck: " << r.elements_checked << " elements, max abs error " << r.max_abs_error
                        << " (atol " << opts.atol << ", rtol " << opts.rtol << ")");
}
}  // namespace

TEST_CASE("model: fp64 gradcheck of every parameter (dense)") { model_gradcheck(tiny_config(false)); }
TEST_CASE("model: fp64 gradcheck of every parameter (MoE with shared expert)") { model_gradcheck(tiny_config(true)); }
TEST_CASE("model: fp64 gradcheck of every parameter (both gates off: plain DeltaNet)") {
  model_gradcheck(with_gates(tiny_config(false), false, false));
}
TEST_CASE("model: fp64 gradcheck of every parameter (decay gate off, output gate on)") {
  model_gradcheck(with_gates(tiny_config(false), false, true));
}
TEST_CASE("model: fp64 gradcheck of every parameter (decay gate on, output gate off)") {
  model_gradcheck(with_gates(tiny_config(false), true, false));
}

TEST_CASE("model: each gate switch removes exactly its parameters") {
  const ModelConfig base = tiny_config(false);
  const int64_t D = base.d_model, Hv = base.n_v_heads, key = base.n_k_heads * base.head_k_dim,
                value = Hv * base.head_v_dim;
  for (bool decay : {true, false})
    for (bool output : {true, false}) {
      CAPTURE(decay);
      CAPTURE(output);
      GatedDeltaNetLM model(with_gates(base, decay, output), 1);
      std::map<std::string, Shape> shapes;
      for (const auto& p : model.parameters())
        if (p.name.rfind("layers.0.attn.", 0) == 0) shapes[p.name.substr(14)] = p.value.shape();
      std::map<std::string, Shape> expected = {{"conv1d.weight", {2 * key + value, base.conv_size}},
                                               {"norm.weight", {base.head_v_dim}},
                                               {"out_proj.weight", {D, value}}};
      if (output)
        expected["in_proj_qkvz.weight"] = {2 * key + 2 * value, D};
      else
        expected["in_proj_qkv.weight"] = {2 * key + value, D};
      if (decay) {
        expected["in_proj_ba.weight"] = {2 * Hv, D};
        expected["A_log"] = {Hv};
        expected["dt_bias"] = {Hv};
      } else {
        expected["in_proj_b.weight"] = {Hv, D};
      }
      CHECK(shapes == expected);
    }
}

TEST_CASE("model: parameter names and counts") {
  ModelConfig cfg = tiny_config(false);
  GatedDeltaNetLM model(cfg, 1);
  ParameterList p = model.parameters();
  CHECK(p.front().name == "embed.weight");
  CHECK(p.back().name == "lm_head.weight");
  int64_t expected = 0;
  for (const auto& x : p) expected += x.value.numel();
  CHECK(model.num_parameters() == expected);
  CHECK(model.num_embedding_parameters() == 2 * cfg.vocab_size * cfg.d_model);
  cfg.tie_embeddings = true;
  GatedDeltaNetLM tied(cfg, 1);
  CHECK(tied.num_parameters() == expected - cfg.vocab_size * cfg.d_model);
  for (const auto& x : p)
    if (x.name.find("norm") != std::string::npos || x.name.find("A_log") != std::string::npos ||
        x.name.find("dt_bias") != std::string::npos)
      CHECK_MESSAGE(!x.decay, x.name);
}

TEST_CASE("model: recurrent generation logits equal the parallel forward") {
  for (int variant = 0; variant < 3; ++variant) {  // dense gated, MoE gated, dense with both gates off
    const bool moe = variant == 1;
    ModelConfig cfg = tiny_config(moe);
    if (variant == 2) cfg = with_gates(cfg, false, false);
    cfg.d_model = 16;
    cfg.chunk_size = 8;
    cfg.init_std = 0.1;
    GatedDeltaNetLM model(cfg, 3);  // float32
    NoGradGuard no_grad;
    const int64_t T = 21;
    Tensor ids = random_ids(1, T, cfg.vocab_size, 5);
    Tensor full = model.forward(ids).logits;  // chunked
    std::vector<int64_t> idv = ids.to_int64_vector();
    // Prefill 5 tokens, then one token at a time.
    ModelCache cache;
    std::vector<double> stepped =
        contiguous(model.forward(Tensor::from_int64({idv.begin(), idv.begin() + 5}, {1, 5}), &cache).logits)
            .to_double_vector();
    for (int64_t t = 5; t < T; ++t) {
      std::vector<double> l = model.forward(Tensor::from_int64({idv[t]}, {1, 1}), &cache).logits.to_double_vector();
      stepped.insert(stepped.end(), l.begin(), l.end());
    }
    std::vector<double> f = full.to_double_vector();
    REQUIRE(f.size() == stepped.size());
    double worst = 0;
    for (size_t i = 0; i < f.size(); ++i) worst = std::max(worst, std::fabs(f[i] - stepped[i]));
    CHECK_MESSAGE(worst < 1e-5, "variant " << variant << " worst diff " << worst);
    MESSAGE("variant " << variant << ": generation vs parallel logits (float32), max abs diff " << worst);
  }
}

TEST_CASE("model: chunked and recurrent forms give the same logits in fp64 (gated and ungated)") {
  // Two models with the same weights (chunk_size plays no part in the initialisation): chunk 4 without a cache runs
  // the chunked form over 5 chunks and a tail; chunk 64 with a cache runs the whole window through the recurrent form
  // (T < chunk_size). With the decay gate off, g = 0 goes through both forms.
  for (bool gates : {true, false}) {
    CAPTURE(gates);
    ModelConfig chunked_cfg = with_gates(tiny_config(false), gates, gates);
    chunked_cfg.chunk_size = 4;
    ModelConfig recurrent_cfg = chunked_cfg;
    recurrent_cfg.chunk_size = 64;
    GatedDeltaNetLM chunked(chunked_cfg, 13, kFloat64), recurrent(recurrent_cfg, 13, kFloat64);
    NoGradGuard no_grad;
    Tensor ids = random_ids(2, 23, chunked_cfg.vocab_size, 14);
    ModelCache cache;
    std::vector<double> a = chunked.forward(ids).logits.to_double_vector();
    std::vector<double> b = recurrent.forward(ids, &cache).logits.to_double_vector();
    REQUIRE(a.size() == b.size());
    double worst = 0, largest = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, std::fabs(a[i] - b[i]));
      largest = std::max(largest, std::fabs(b[i]));
    }
    CHECK(largest > 0);
    CHECK_MESSAGE(worst <= 1e-12 * largest, "worst " << worst << " of " << largest);
    MESSAGE("gates " << gates << ": chunked vs recurrent logits, max abs diff " << worst << " (max |logit| " << largest
                     << ")");
  }
}

TEST_CASE("model: MoE routing counts and load-balancing loss match a hand computation") {
  ModelConfig cfg = tiny_config(true);
  cfg.moe_shared_expert = false;
  Generator gen(9);
  InitContext init{gen, kFloat64, kCPU, 0.5};
  MoE moe(cfg, init);
  const int64_t N = 7, D = cfg.d_model, E = cfg.n_experts, k = cfg.moe_top_k;
  Tensor x = randn({1, N, D}, gen, kFloat64);
  MoEOutput out = moe.forward(x);

  std::vector<double> xv = x.to_double_vector(), rv = moe.router.to_double_vector();
  std::vector<int64_t> counts(E, 0);
  std::vector<double> mean_p(E, 0.0), y_ref(N * D, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> logit(E, 0.0), p(E);
    for (int64_t e = 0; e < E; ++e)
      for (int64_t d = 0; d < D; ++d) logit[e] += xv[n * D + d] * rv[e * D + d];
    double mx = *std::max_element(logit.begin(), logit.end()), z = 0;
    for (int64_t e = 0; e < E; ++e) z += p[e] = std::exp(logit[e] - mx);
    for (int64_t e = 0; e < E; ++e) mean_p[e] += p[e] / z / N;
    std::vector<int64_t> order = {0, 1, 2};
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
    double chosen_sum = 0;
    for (int64_t s = 0; s < k; ++s) chosen_sum += p[order[s]];
    // y_n = sum over the chosen experts of (renormalised) p_ne * SwiGLU_e(x_n), each expert run on the row alone.
    Tensor xn = slice(reshape(x, {N, D}), 0, n, n + 1);
    for (int64_t s = 0; s < k; ++s) {
      const int64_t e = order[s];
      counts[e]++;
      std::vector<double> ye = moe.experts[e].forward(xn).to_double_vector();
      for (int64_t d = 0; d < D; ++d) y_ref[n * D + d] += p[e] / chosen_sum * ye[d];
    }
  }
  CHECK(out.expert_tokens.to_int64_vector() == counts);
  std::vector<double> y = out.y.to_double_vector();
  for (int64_t i = 0; i < N * D; ++i) CHECK(y[i] == doctest::Approx(y_ref[i]).epsilon(1e-12));
  double aux = 0;
  for (int64_t e = 0; e < E; ++e) aux += static_cast<double>(counts[e]) / (N * k) * mean_p[e];
  aux *= E;
  CHECK(out.aux_loss.item() == doctest::Approx(aux).epsilon(1e-12));
  // Perfectly balanced routing gives aux = 1 when probabilities are uniform; any routing gives aux >= ... > 0.
  CHECK(out.aux_loss.item() > 0);
}

TEST_CASE("model: one and two threads give the same loss and gradients") {
  // Sizes chosen so that every OpenMP loop of the CPU kernels takes its parallel path with two threads: each
  // kernel's work count below is at least kParallelGrain (ops/cpu/cpu_loops.h), checked first so that a change of
  // the threshold cannot silently turn this back into a serial-vs-serial comparison. Float64, so that the only
  // allowed difference is the order of a few double reductions.
  ModelConfig cfg = tiny_config(false);
  cfg.vocab_size = 64;
  cfg.d_model = 64;
  cfg.n_k_heads = 16;
  cfg.n_v_heads = 32;  // grouped heads: the delta-rule backward reduces dq/dk across value heads
  cfg.head_k_dim = 4;
  cfg.head_v_dim = 4;
  cfg.conv_size = 4;
  cfg.ffn_dim = 64;
  cfg.chunk_size = 64;
  const int64_t B = 2, T = 512, N = B * T;
  const int64_t conv_channels = 2 * cfg.n_k_heads * cfg.head_k_dim + cfg.n_v_heads * cfg.head_v_dim;
  CHECK(N * cfg.d_model >= cpu::kParallelGrain);                                  // elementwise, rms_norm
  CHECK(N * cfg.vocab_size >= cpu::kParallelGrain);                               // cross-entropy
  CHECK(N * conv_channels * cfg.conv_size >= cpu::kParallelGrain);                // causal conv1d
  CHECK(N * cfg.n_k_heads * cfg.head_k_dim >= cpu::kParallelGrain);               // l2norm of q, k
  CHECK(N * cfg.n_v_heads * cfg.head_v_dim >= cpu::kParallelGrain);               // gated RMSNorm
  CHECK(N * cfg.n_v_heads >= cpu::kParallelGrain);                                // gate
  CHECK(N * cfg.n_v_heads * cfg.head_k_dim * cfg.head_v_dim >= cpu::kParallelGrain);  // delta rule
  CHECK(N * cfg.n_v_heads * cfg.head_k_dim >= (1 << 15));  // dq/dk sum over value heads (delta_rule_common.h)
  GatedDeltaNetLM model(cfg, 5, kFloat64);
  Tensor ids = random_ids(B, T, cfg.vocab_size, 8), targets = random_ids(B, T, cfg.vocab_size, 9);
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    for (const auto& p : model.parameters()) p.value.impl().grad.reset();
    LossOutput out = model.loss(ids, targets);
    backward(out.loss);
    std::vector<double> all = {out.loss.item()};
    for (const auto& p : model.parameters()) {
      std::vector<double> g = p.value.grad().to_double_vector();
      all.insert(all.end(), g.begin(), g.end());
    }
    return all;
  };
  const int before = omp_get_max_threads();
  std::vector<double> one = run(1), two = run(2);
  omp_set_num_threads(before);
  REQUIRE(one.size() == two.size());
  double worst = 0, largest = 0;
  for (size_t i = 0; i < one.size(); ++i) {
    worst = std::max(worst, std::fabs(one[i] - two[i]));
    largest = std::max(largest, std::fabs(one[i]));
  }
  CHECK(largest > 0);
  CHECK(worst <= 1e-12 * largest);
}
