// tests/test_gated_deltanet.cpp — the Gated DeltaNet operators (ops/gated_deltanet.h).
//
// Layers (the equations under test are in docs/MATH.md):
//   * forward values of conv / norms / gate against compositions of the elementary ops (independent code);
//   * fp64 finite-difference gradcheck of every operator and every input (gradcheck uses a random projection,
//     i.e. loss = sum(o * do) + sum(S_T * dS_T) with random cotangents);
//   * chunked == recurrent in fp64 (outputs, final state, every gradient) over T, K, V, Hv/Hk, gates and S0;
//   * fp32 chunked against the fp64 recurrent reference at long T (relative RMS error);
//   * token-by-token calls carrying the state == one full call (conv1d and the delta rule).
// Inputs follow FLA's recipe: q, k random then l2-normalised, beta = sigmoid(random), g = logsigmoid(random) / n.
#include <cmath>

#include "autograd/engine.h"
#include "core/dispatch.h"
#include "ops/gated_deltanet.h"
#include "tests/test_helpers.h"

using namespace gdn;
using namespace gdn::test;

namespace {

// ---- delta-rule inputs ----------------------------------------------------------------------------------------

struct DeltaConfig {
  int64_t B = 1, T = 8, Hk = 1, Hv = 1, K = 4, V = 3;
  double gate_div = 1.0;  // g = logsigmoid(x) / gate_div; 0 means g = 0 exactly
  bool initial_state = false;
};

// Plain (non-leaf-free) fp64 values of the inputs; leaves are made from them per run.
struct DeltaInputs {
  Tensor q, k, v, g, beta, s0;  // s0 undefined when not used
};

DeltaInputs make_delta_inputs(const DeltaConfig& c, Generator& gen) {
  NoGradGuard no_grad;
  DeltaInputs in;
  in.q = l2norm(randn({c.B, c.T, c.Hk, c.K}, gen, kFloat64));
  in.k = l2norm(randn({c.B, c.T, c.Hk, c.K}, gen, kFloat64));
  in.v = randn({c.B, c.T, c.Hv, c.V}, gen, kFloat64);
  in.beta = sigmoid(randn({c.B, c.T, c.Hv}, gen, kFloat64));
  Tensor x = randn({c.B, c.T, c.Hv}, gen, kFloat64);
  in.g = c.gate_div == 0 ? zeros({c.B, c.T, c.Hv}, kFloat64) : logsigmoid(x) / c.gate_div;
  if (c.initial_state) in.s0 = randn({c.B, c.Hv, c.K, c.V}, gen, kFloat64);
  return in;
}

// Fresh leaves (requiring grad) holding the values of `in`, converted to dtype.
TensorList leaves_of(const DeltaInputs& in, DType dtype = kFloat64) {
  NoGradGuard no_grad;
  TensorList out;
  for (const Tensor& t : {in.q, in.k, in.v, in.g, in.beta, in.s0}) {
    if (!t.defined()) {
      out.emplace_back();
      continue;
    }
    Tensor leaf = clone(to_dtype(t, dtype));
    leaf.set_requires_grad(true);
    out.push_back(leaf);
  }
  return out;
}

struct DeltaRun {
  Tensor o, final_state;
  TensorList grads;  // dq, dk, dv, dg, dbeta, dS0 (undefined without S0)
};

// One forward and backward with cotangents d_o, d_final (fp64, converted to the run's dtype).
DeltaRun run_delta(const DeltaInputs& in, DType dtype, DeltaRuleMode mode, int64_t chunk, const Tensor& d_o,
                   const Tensor& d_final) {
  TensorList x = leaves_of(in, dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(in.q.size(3)));
  DeltaRuleOutput out = gated_delta_rule(x[0], x[1], x[2], x[3], x[4], scale, x[5], true, mode, chunk);
  backward({out.o, out.final_state}, {to_dtype(d_o, dtype), to_dtype(d_final, dtype)});
  DeltaRun r{out.o.detach(), out.final_state.detach(), {}};
  for (const Tensor& t : x) r.grads.push_back(t.defined() ? t.grad() : Tensor());
  return r;
}

// sqrt(sum (a - b)^2 / sum b^2)
double rel_rms(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  REQUIRE(x.size() == y.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// max |a - b| / (max |b| + 1e-5): relative to the tensor's scale, with a floor for tensors that are tiny as a
// whole (dg under very strong decay is ~1e-7 everywhere, reached by cancelling O(1) terms: its error is ~1e-17,
// machine precision of the terms, not of the result).
double rel_max(const Tensor& a, const Tensor& b) {
  std::vector<double> y = b.to_double_vector();
  double m = 0;
  for (double v : y) m = std::max(m, std::fabs(v));
  return max_abs_diff(a, b) / (m + 1e-5);
}

const std::string kGradNames[] = {"dq", "dk", "dv", "dg", "dbeta", "dS0"};

// A float64 leaf of `shape` whose view is non-contiguous: dims 0 and 1 swapped over a contiguous base.
Tensor transposed_leaf(const Shape& shape, Generator& gen) {
  Shape swapped = shape;
  std::swap(swapped[0], swapped[1]);
  Tensor base = randn(swapped, gen, kFloat64);
  Strides st = base.strides();
  std::swap(st[0], st[1]);
  Tensor view = base.as_strided(shape, st, 0);
  view.set_requires_grad(true);
  return view;
}

GradcheckResult gradcheck_delta(const DeltaConfig& c, DeltaRuleMode mode, int64_t chunk, uint64_t seed) {
  Generator gen(seed);
  TensorList x = leaves_of(make_delta_inputs(c, gen));
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.K));
  auto f = [&](const TensorList& in) -> TensorList {
    DeltaRuleOutput out = gated_delta_rule(in[0], in[1], in[2], in[3], in[4], scale, in[5], true, mode, chunk);
    return {out.o, out.final_state};
  };
  return gradcheck(f, x);
}

}  // namespace

// ---- causal conv1d --------------------------------------------------------------------------------------------

TEST_CASE("causal_conv1d: forward matches the definition") {
  Generator gen(1);
  const int64_t B = 2, T = 6, C = 3, W = 4;
  Tensor x = randn({B, T, C}, gen, kFloat64), w = randn({C, W}, gen, kFloat64), bias = randn({C}, gen, kFloat64);
  Tensor init = randn({B, C, W - 1}, gen, kFloat64);
  Tensor fin;
  Tensor y = causal_conv1d(x, w, bias, true, init, &fin);
  std::vector<double> xv = x.to_double_vector(), wv = w.to_double_vector(), bv = bias.to_double_vector();
  std::vector<double> iv = init.to_double_vector(), yv = y.to_double_vector(), fv = fin.to_double_vector();
  auto input = [&](int64_t b, int64_t t, int64_t c) {
    return t >= 0 ? xv[(b * T + t) * C + c] : iv[(b * C + c) * (W - 1) + (W - 1 + t)];
  };
  double err = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double p = bv[c];
        for (int64_t k = 0; k < W; ++k) p += wv[c * W + k] * input(b, t - W + 1 + k, c);
        err = std::max(err, std::fabs(yv[(b * T + t) * C + c] - p / (1 + std::exp(-p))));
      }
  CHECK(err < 1e-12);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t j = 0; j < W - 1; ++j) CHECK(fv[(b * C + c) * (W - 1) + j] == input(b, T - W + 1 + j, c));
}

TEST_CASE("gradcheck: causal_conv1d") {
  for (bool silu : {true, false})
    for (bool with_bias : {true, false})
      for (bool with_init : {true, false})
        for (int64_t T : {2, 7}) {  // T = 2 < W - 1: the final state still reaches into the initial state
          CAPTURE(silu);
          CAPTURE(with_bias);
          CAPTURE(with_init);
          CAPTURE(T);
          Generator gen(10 + T);
          const int64_t B = 2, C = 3, W = 4;
          TensorList in = {rand_leaf({B, T, C}, gen), rand_leaf({C, W}, gen),
                           with_bias ? rand_leaf({C}, gen) : Tensor(),
                           with_init ? rand_leaf({B, C, W - 1}, gen) : Tensor()};
          CHECK_GRADCHECK([&](const TensorList& x) -> TensorList { return {causal_conv1d(x[0], x[1], x[2], silu, x[3])}; },
                          in);
        }
  // A non-contiguous input view (x as a transpose) goes through the recorded copy.
  Generator gen(3);
  TensorList in = {transposed_leaf({5, 2, 3}, gen), rand_leaf({3, 2}, gen)};
  CHECK_GRADCHECK([](const TensorList& x) -> TensorList { return {causal_conv1d(x[0], x[1])}; }, in);
}

TEST_CASE("causal_conv1d_parts: the output's channel parts equal slices of the whole, gradients too") {
  Generator gen(4);
  const int64_t B = 2, T = 6, C = 7, W = 4;
  TensorList in = {rand_leaf({B, T, C}, gen), rand_leaf({C, W}, gen), rand_leaf({C}, gen)};
  // Parts 2 | 2 | 3, each weighted differently downstream (part 1 unused: its gradient is zero).
  CHECK_GRADCHECK(
      [](const TensorList& x) -> TensorList {
        std::vector<Tensor> p = causal_conv1d_parts(x[0], x[1], {2, 2, 3}, x[2]);
        return {p[0], p[2] * p[2]};
      },
      in);
  NoGradGuard no_grad;
  Tensor full = causal_conv1d(in[0], in[1], in[2]);
  std::vector<Tensor> parts = causal_conv1d_parts(in[0], in[1], {2, 2, 3}, in[2]);
  CHECK(max_abs_diff(concat(parts, 2), full) == 0);
  CHECK_THROWS_AS((void)causal_conv1d_parts(in[0], in[1], {2, 2}), Error);
}

TEST_CASE("causal_conv1d: token-by-token with state carry equals one full call") {
  Generator gen(2);
  const int64_t B = 2, T = 9, C = 5, W = 4;
  Tensor x = randn({B, T, C}, gen), w = randn({C, W}, gen), bias = randn({C}, gen);
  Tensor init = randn({B, C, W - 1}, gen);
  Tensor full_final;
  Tensor full = causal_conv1d(x, w, bias, true, init, &full_final);
  Tensor state = init;
  std::vector<Tensor> steps;
  for (int64_t t = 0; t < T; ++t) {
    Tensor next;
    steps.push_back(causal_conv1d(slice(x, 1, t, t + 1), w, bias, true, state, &next));
    state = next;
  }
  CHECK(max_abs_diff(concat(steps, 1), full) < 1e-6);
  CHECK(max_abs_diff(state, full_final) == 0);
}

// ---- norms and gate -------------------------------------------------------------------------------------------

TEST_CASE("l2norm, rms_norm_gated, gdn_gate: forward matches the elementary ops") {
  Generator gen(4);
  Tensor x = randn({2, 3, 6}, gen, kFloat64), z = randn({2, 3, 6}, gen, kFloat64), w = randn({6}, gen, kFloat64);
  CHECK(max_abs_diff(l2norm(x), x * rsqrt(sum(x * x, {-1}, true) + 1e-6)) < 1e-14);
  Tensor ref = x * rsqrt(mean(x * x, {-1}, true) + 1e-6) * w * silu(z);
  CHECK(max_abs_diff(rms_norm_gated(x, z, w), ref) < 1e-13);
  Tensor a = randn({2, 3, 4}, gen, kFloat64), b = randn({2, 3, 4}, gen, kFloat64);
  Tensor A_log = randn({4}, gen, kFloat64), dt_bias = randn({4}, gen, kFloat64);
  auto [g, beta] = gdn_gate(a, b, A_log, dt_bias);
  CHECK(max_abs_diff(g, -exp(A_log) * softplus(a + dt_bias)) < 1e-14);
  CHECK(max_abs_diff(beta, sigmoid(b)) < 1e-15);
}

TEST_CASE("gradcheck: l2norm") {
  Generator gen(5);
  CHECK_GRADCHECK([](const TensorList& x) -> TensorList { return {l2norm(x[0])}; }, {rand_leaf({2, 3, 5}, gen)});
  CHECK_GRADCHECK([](const TensorList& x) -> TensorList { return {l2norm(x[0])}; },
                  {transposed_leaf({4, 3, 2}, gen)});
}

TEST_CASE("gradcheck: rms_norm_gated") {
  Generator gen(6);
  TensorList in = {rand_leaf({2, 3, 6}, gen), rand_leaf({2, 3, 6}, gen), rand_leaf({6}, gen)};
  CHECK_GRADCHECK([](const TensorList& x) -> TensorList { return {rms_norm_gated(x[0], x[1], x[2])}; }, in);
}

TEST_CASE("gradcheck: gdn_gate") {
  Generator gen(7);
  TensorList in = {rand_leaf({2, 3, 4}, gen), rand_leaf({2, 3, 4}, gen), rand_leaf({4}, gen), rand_leaf({4}, gen)};
  CHECK_GRADCHECK(
      [](const TensorList& x) -> TensorList {
        auto [g, beta] = gdn_gate(x[0], x[1], x[2], x[3]);
        return {g, beta};
      },
      in);
  // Only one of the two outputs used: the other's gradient is undefined and must count as zero.
  CHECK_GRADCHECK(
      [](const TensorList& x) -> TensorList { return {gdn_gate(x[0], x[1], x[2], x[3]).first}; }, in);
  // a and b the two halves of one [.., 2H] tensor, as the layer splits its b | a projection: read in place, and the
  // gradient of the whole made without a copy (split's backward takes gdn_gate's one buffer), used twice so that the
  // engine adds it to another; also a and b the other way round, and each half used alone.
  TensorList packed = {rand_leaf({2, 3, 8}, gen), in[2], in[3]};
  for (bool swapped : {false, true}) {
    CAPTURE(swapped);
    CHECK_GRADCHECK(
        [swapped](const TensorList& x) -> TensorList {
          std::vector<Tensor> h = split(x[0], {4, 4}, -1);
          auto [g, beta] = gdn_gate(h[swapped ? 0 : 1], h[swapped ? 1 : 0], x[1], x[2]);
          return {g, beta, x[0] * 0.5};
        },
        packed);
    CHECK_GRADCHECK(
        [swapped](const TensorList& x) -> TensorList {
          std::vector<Tensor> h = split(x[0], {4, 4}, -1);
          return {gdn_gate(h[swapped ? 0 : 1], h[swapped ? 1 : 0], x[1], x[2]).second};
        },
        packed);
  }
  // The same values as on contiguous copies.
  NoGradGuard no_grad;
  std::vector<Tensor> h = split(packed[0], {4, 4}, -1);
  auto [g1, b1] = gdn_gate(h[1], h[0], packed[1], packed[2]);
  auto [g2, b2] = gdn_gate(contiguous(h[1]), contiguous(h[0]), packed[1], packed[2]);
  CHECK(test::max_abs_diff(g1, g2) == 0.0);
  CHECK(test::max_abs_diff(b1, b2) == 0.0);
}

namespace {
Tensor leaf_of(Tensor t) {
  t.set_requires_grad(true);
  return t;
}
}  // namespace

// The layer's input projection outputs under bf16 products reach the conv, the gated norm and the gate in bfloat16:
// the ops read them with float32 arithmetic (the same outputs, bit for bit, as for float32 inputs holding the same
// rounded values) and return their gradients in bfloat16 (the float32 gradients rounded once). The gate's a and b
// are the two halves of one bf16 b | a tensor, whose gradient split's backward takes whole (the one bf16 buffer).
TEST_CASE("causal_conv1d, rms_norm_gated, gdn_gate: bfloat16 inputs, float32 arithmetic, bfloat16 gradients") {
  Generator gen(11);
  // A bfloat16 leaf and a float32 leaf of the same (rounded) values.
  auto pair_of = [&](const Shape& shape) {
    NoGradGuard no_grad;
    Tensor b = to_dtype(randn(shape, gen), kBFloat16), f = to_dtype(b, kFloat32);
    b.set_requires_grad(true);
    f.set_requires_grad(true);
    return std::pair{b, f};
  };
  auto f32_leaf = [&](const Shape& s, double mean = 0.0) { return leaf_of(randn(s, gen, kFloat32, kCPU, mean)); };
  auto twin = [](const Tensor& t) { return leaf_of(clone(t.detach())); };  // a second leaf with t's values
  auto rounded = [](const Tensor& t) { return to_dtype(t, kBFloat16); };

  SUBCASE("causal_conv1d_parts") {
    const int64_t B = 2, T = 9, C = 7, W = 4;
    auto [xb, xf] = pair_of({B, T, C});
    Tensor wb = f32_leaf({C, W}), wf = twin(wb);
    const std::vector<Tensor> pb = causal_conv1d_parts(xb, wb, {2, 2, 3}), pf = causal_conv1d_parts(xf, wf, {2, 2, 3});
    TensorList cot;
    for (size_t i = 0; i < pb.size(); ++i) {
      CHECK(pb[i].dtype() == kFloat32);
      CHECK(max_abs_diff(pb[i], pf[i]) == 0.0);
      cot.push_back(randn(pb[i].shape(), gen));
    }
    backward(TensorList(pb.begin(), pb.end()), cot);
    backward(TensorList(pf.begin(), pf.end()), cot);
    REQUIRE(xb.grad().dtype() == kBFloat16);
    CHECK(max_abs_diff(xb.grad(), rounded(xf.grad())) == 0.0);
    CHECK(max_abs_diff(wb.grad(), wf.grad()) == 0.0);
    // The weights (and states) must be float32 for bfloat16 x.
    CHECK_THROWS_AS((void)causal_conv1d(xb.detach(), to_dtype(wb.detach(), kFloat64)), Error);
  }

  SUBCASE("rms_norm_gated") {
    const Shape s = {2, 5, 3, 8};
    Tensor x = f32_leaf(s), w = f32_leaf({8}, 1.0), xf = twin(x), wf = twin(w);
    auto [zb, zf] = pair_of(s);
    const Tensor yb = rms_norm_gated(x, zb, w), yf = rms_norm_gated(xf, zf, wf);
    CHECK(yb.dtype() == kFloat32);
    CHECK(max_abs_diff(yb, yf) == 0.0);
    const Tensor cot = randn(s, gen);
    CHECK(max_abs_diff(rms_norm_gated(x.detach(), zb.detach(), w.detach(), 1e-6, kBFloat16), rounded(yf)) == 0.0);
    backward({yb}, {cot});
    backward({yf}, {cot});
    REQUIRE(zb.grad().dtype() == kBFloat16);
    CHECK(max_abs_diff(zb.grad(), rounded(zf.grad())) == 0.0);
    CHECK(max_abs_diff(x.grad(), xf.grad()) == 0.0);
    CHECK(max_abs_diff(w.grad(), wf.grad()) == 0.0);
    CHECK_THROWS_AS((void)rms_norm_gated(to_dtype(x.detach(), kFloat64), zb.detach(), to_dtype(w.detach(), kFloat64)),
                    Error);
  }

  SUBCASE("gdn_gate on the halves of one b | a") {
    const int64_t H = 4;
    auto [bab, baf] = pair_of({2, 5, 2 * H});
    Tensor A_log = f32_leaf({H}), dt_bias = f32_leaf({H}), A_log_f = twin(A_log), dt_bias_f = twin(dt_bias);
    std::vector<Tensor> hb = split(bab, {H, H}, -1), hf = split(baf, {H, H}, -1);
    auto [gb, betab] = gdn_gate(hb[1], hb[0], A_log, dt_bias);
    auto [gf, betaf] = gdn_gate(hf[1], hf[0], A_log_f, dt_bias_f);
    CHECK((gb.dtype() == kFloat32 && betab.dtype() == kFloat32));
    CHECK(max_abs_diff(gb, gf) == 0.0);
    CHECK(max_abs_diff(betab, betaf) == 0.0);
    const TensorList cot = {randn(gb.shape(), gen), randn(gb.shape(), gen)};
    backward({gb, betab}, cot);
    backward({gf, betaf}, cot);
    REQUIRE(bab.grad().dtype() == kBFloat16);
    CHECK(max_abs_diff(bab.grad(), rounded(baf.grad())) == 0.0);
    CHECK(max_abs_diff(A_log.grad(), A_log_f.grad()) == 0.0);
    CHECK(max_abs_diff(dt_bias.grad(), dt_bias_f.grad()) == 0.0);
  }
}

TEST_CASE("gdn_gate: the guards keep g finite for a huge A_log (float32 and float64), through the delta rule") {
  // Head 0 has A_log = 100: exp(100) overflows float32, and unguarded g = -inf made the chunked decay
  // exp(gam_L - gam_i) = exp(-inf + inf) = NaN. One entry of a is -200, where softplus underflows to 0 in float32
  // (the unguarded product was inf * 0 = NaN there). T = 70 crosses a chunk boundary.
  for (DType dt : {kFloat32, kFloat64}) {
    CAPTURE(dtype_name(dt));
    Generator gen(21);
    const int64_t T = 70, Hv = 2, K = 4, V = 3;
    std::vector<double> av = randn({1, T, Hv}, gen, kFloat64).to_double_vector();
    av[2 * 5] = -200.0;
    auto leaf_of = [dt](const Tensor& t) {
      Tensor l = clone(to_dtype(t, dt));
      l.set_requires_grad(true);
      return l;
    };
    Tensor a = leaf_of(Tensor::from_vector(av, {1, T, Hv}, kFloat64));
    Tensor b = leaf_of(randn({1, T, Hv}, gen, kFloat64));
    Tensor A_log = leaf_of(Tensor::from_vector({100.0, 1.0}, {Hv}, kFloat64));
    Tensor dt_bias = leaf_of(Tensor::from_vector({0.5, -1.0}, {Hv}, kFloat64));
    Tensor q = leaf_of(l2norm(randn({1, T, 1, K}, gen, kFloat64)));
    Tensor k = leaf_of(l2norm(randn({1, T, 1, K}, gen, kFloat64)));
    Tensor v = leaf_of(randn({1, T, Hv, V}, gen, kFloat64));
    auto [g, beta] = gdn_gate(a, b, A_log, dt_bias);
    std::vector<double> gv = g.to_double_vector();
    for (size_t i = 0; i < gv.size(); ++i) {
      CAPTURE(i);
      REQUIRE(std::isfinite(gv[i]));
      CHECK(gv[i] >= kGateMin);
      CHECK(gv[i] <= 0.0);
      if (i % Hv == 0 && i != 2 * 5) CHECK(gv[i] == kGateMin);  // head 0: every gate clamped except at a = -200
    }
    for (DeltaRuleMode mode : {DeltaRuleMode::Chunked, DeltaRuleMode::Recurrent}) {
      for (Tensor* p : {&a, &b, &A_log, &dt_bias, &q, &k, &v}) p->impl().grad.reset();
      auto [g2, beta2] = gdn_gate(a, b, A_log, dt_bias);
      DeltaRuleOutput out = gated_delta_rule(q, k, v, g2, beta2, 0.5, {}, true, mode, 64);
      Tensor d_o = to_dtype(randn({1, T, Hv, V}, gen, kFloat64), dt);
      backward({out.o, out.final_state}, {d_o, ones(out.final_state.shape(), dt)});
      for (double x : out.o.to_double_vector()) REQUIRE(std::isfinite(x));
      for (double x : out.final_state.to_double_vector()) REQUIRE(std::isfinite(x));
      for (Tensor* p : {&a, &b, &A_log, &dt_bias, &q, &k, &v})
        for (double x : p->grad().to_double_vector()) REQUIRE(std::isfinite(x));
      CHECK(A_log.grad().to_double_vector()[0] == 0.0);  // A_log above kGateALogMax: its guard has derivative 0
    }
  }
}

TEST_CASE("gradcheck: gdn_gate inside and across its guards") {
  // Head 0: A_log = 85 > kGateALogMax, so A = exp(80); most gates are clamped at kGateMin (derivative 0), one (a =
  // -100) is not: there only a and dt_bias carry a derivative. Head 1 is an ordinary gate.
  Generator gen(8);
  std::vector<double> av = randn({2, 3, 2}, gen, kFloat64).to_double_vector();
  av[2 * 4] = -100.0;
  Tensor a = Tensor::from_vector(av, {2, 3, 2}, kFloat64);
  a.set_requires_grad(true);
  Tensor A_log = Tensor::from_vector({85.0, 0.3}, {2}, kFloat64);
  A_log.set_requires_grad(true);
  TensorList in = {a, rand_leaf({2, 3, 2}, gen), A_log, rand_leaf({2}, gen)};
  CHECK_GRADCHECK([](const TensorList& x) -> TensorList { return {gdn_gate(x[0], x[1], x[2], x[3]).first}; }, in);
}

// ---- gated delta rule -----------------------------------------------------------------------------------------

TEST_CASE("gradcheck: gated_delta_rule recurrent") {
  const DeltaConfig configs[] = {
      {1, 7, 1, 1, 4, 3, 1.0, false},  {2, 5, 1, 2, 3, 4, 0.1, true}, {1, 6, 2, 2, 4, 2, 0.0, true},
      {1, 6, 1, 2, 3, 3, 0.01, false}, {1, 4, 1, 1, 5, 2, 10.0, true},
  };
  uint64_t seed = 100;
  for (const DeltaConfig& c : configs) {
    CAPTURE(c.T);
    CAPTURE(c.Hv);
    CAPTURE(c.gate_div);
    CAPTURE(c.initial_state);
    GradcheckResult r = gradcheck_delta(c, DeltaRuleMode::Recurrent, 0, seed++);
    CHECK_MESSAGE(r.ok, r.message);
  }
}

TEST_CASE("gradcheck: gated_delta_rule chunked") {
  struct Case {
    DeltaConfig c;
    int64_t chunk;
  };
  const Case cases[] = {
      {{1, 11, 1, 1, 4, 3, 1.0, true}, 4},    // two full chunks and a tail of 3
      {{2, 13, 1, 2, 3, 4, 0.1, true}, 4},    // Hv = 2 Hk, strong decay
      {{1, 10, 2, 2, 4, 3, 0.0, false}, 8},   // g = 0 exactly
      {{1, 9, 1, 2, 3, 2, 0.01, true}, 3},    // very strong decay: inter-chunk terms underflow to 0
      {{1, 7, 1, 1, 4, 3, 10.0, false}, 16},  // one chunk, shorter than the chunk size
      {{1, 65, 1, 1, 4, 3, 1.0, true}, 64},   // the default chunk size plus a tail of one row
  };
  uint64_t seed = 200;
  for (const Case& cs : cases) {
    CAPTURE(cs.c.T);
    CAPTURE(cs.c.Hv);
    CAPTURE(cs.c.gate_div);
    CAPTURE(cs.chunk);
    GradcheckResult r = gradcheck_delta(cs.c, DeltaRuleMode::Chunked, cs.chunk, seed++);
    CHECK_MESSAGE(r.ok, r.message);
  }
}

TEST_CASE("gated_delta_rule: chunked equals recurrent in fp64") {
  // Each value of each factor appears at least once: T {1,63,64,65,75,200}, K {16,32,60}, V {16,48},
  // Hv/Hk {1,2}, gates {0, logsigmoid/1, /0.01, /0.1, /10}, S0 {no, yes}, chunk sizes 64 and others.
  struct Case {
    DeltaConfig c;
    int64_t chunk;
  };
  const Case cases[] = {
      {{2, 1, 1, 1, 16, 16, 0.0, false}, 64},  {{1, 63, 1, 2, 32, 48, 1.0, true}, 64},
      {{1, 64, 2, 2, 60, 16, 0.01, false}, 64}, {{1, 65, 1, 2, 16, 48, 0.0, true}, 64},
      {{1, 75, 1, 1, 60, 48, 0.1, true}, 64},   {{2, 200, 1, 2, 32, 16, 10.0, true}, 64},
      {{1, 200, 1, 1, 60, 48, 0.01, true}, 64}, {{1, 75, 2, 4, 16, 16, 1.0, true}, 16},
      {{1, 65, 1, 1, 32, 16, 1.0, false}, 7},
  };
  uint64_t seed = 300;
  for (const Case& cs : cases) {
    const DeltaConfig& c = cs.c;
    CAPTURE(c.T);
    CAPTURE(c.K);
    CAPTURE(c.V);
    CAPTURE(c.Hv);
    CAPTURE(c.gate_div);
    CAPTURE(c.initial_state);
    CAPTURE(cs.chunk);
    Generator gen(seed++);
    DeltaInputs in = make_delta_inputs(c, gen);
    Tensor d_o = randn({c.B, c.T, c.Hv, c.V}, gen, kFloat64);
    Tensor d_final = randn({c.B, c.Hv, c.K, c.V}, gen, kFloat64);
    DeltaRun ref = run_delta(in, kFloat64, DeltaRuleMode::Recurrent, 0, d_o, d_final);
    DeltaRun got = run_delta(in, kFloat64, DeltaRuleMode::Chunked, cs.chunk, d_o, d_final);
    CHECK(rel_max(got.o, ref.o) < 1e-10);
    CHECK(rel_max(got.final_state, ref.final_state) < 1e-10);
    for (size_t i = 0; i < ref.grads.size(); ++i) {
      if (!ref.grads[i].defined()) continue;
      CAPTURE(kGradNames[i]);
      CHECK(rel_max(got.grads[i], ref.grads[i]) < 1e-10);
    }
  }
}

TEST_CASE("gated_delta_rule: fp32 chunked against the fp64 recurrent reference") {
  // Doc tolerances for a reduced-precision GPU path: o, S_T 0.005; dq, dk, dv, dS0 0.008; dbeta, dg 0.02.
  // The fp32 CPU path keeps everything in fp32 with double gate sums, so it must be far tighter.
  const double tol = 1e-4;
  uint64_t seed = 400;
  for (int64_t T : {500, 1000})
    for (double gate_div : {1.0, 0.1}) {
      CAPTURE(T);
      CAPTURE(gate_div);
      DeltaConfig c{1, T, 1, 2, 64, 64, gate_div, true};
      Generator gen(seed++);
      DeltaInputs in = make_delta_inputs(c, gen);
      Tensor d_o = randn({c.B, c.T, c.Hv, c.V}, gen, kFloat64);
      Tensor d_final = randn({c.B, c.Hv, c.K, c.V}, gen, kFloat64);
      DeltaRun ref = run_delta(in, kFloat64, DeltaRuleMode::Recurrent, 0, d_o, d_final);
      DeltaRun got = run_delta(in, kFloat32, DeltaRuleMode::Chunked, 64, d_o, d_final);
      CHECK(got.o.dtype() == kFloat32);
      CHECK(rel_rms(got.o, ref.o) < tol);
      CHECK(rel_rms(got.final_state, ref.final_state) < tol);
      for (size_t i = 0; i < ref.grads.size(); ++i) {
        CAPTURE(kGradNames[i]);
        CHECK(rel_rms(got.grads[i], ref.grads[i]) < tol);
      }
    }
}

TEST_CASE("gated_delta_rule: token-by-token recurrent steps with state carry equal one full call") {
  DeltaConfig c{2, 20, 1, 2, 8, 6, 1.0, true};
  Generator gen(500);
  DeltaInputs in = make_delta_inputs(c, gen);
  NoGradGuard no_grad;
  const double scale = 0.3;
  DeltaRuleOutput full = gated_delta_rule(in.q, in.k, in.v, in.g, in.beta, scale, in.s0, true, DeltaRuleMode::Recurrent);
  DeltaRuleOutput chunked =
      gated_delta_rule(in.q, in.k, in.v, in.g, in.beta, scale, in.s0, true, DeltaRuleMode::Chunked, 8);
  Tensor state = in.s0;
  std::vector<Tensor> outs;
  for (int64_t t = 0; t < c.T; ++t) {
    auto step = [&](const Tensor& x) { return slice(x, 1, t, t + 1); };
    DeltaRuleOutput r = gated_delta_rule(step(in.q), step(in.k), step(in.v), step(in.g), step(in.beta), scale, state,
                                         true, DeltaRuleMode::Recurrent);
    outs.push_back(r.o);
    state = r.final_state;
  }
  CHECK(max_abs_diff(concat(outs, 1), full.o) < 1e-13);
  CHECK(max_abs_diff(state, full.final_state) < 1e-13);
  CHECK(max_abs_diff(chunked.o, full.o) < 1e-12);
  // Two chunked calls (13 + 7 tokens) carrying the state equal one call too.
  auto part = [&](const Tensor& x, int64_t a, int64_t b) { return slice(x, 1, a, b); };
  DeltaRuleOutput first = gated_delta_rule(part(in.q, 0, 13), part(in.k, 0, 13), part(in.v, 0, 13),
                                           part(in.g, 0, 13), part(in.beta, 0, 13), scale, in.s0, true,
                                           DeltaRuleMode::Chunked, 8);
  DeltaRuleOutput second = gated_delta_rule(part(in.q, 13, 20), part(in.k, 13, 20), part(in.v, 13, 20),
                                            part(in.g, 13, 20), part(in.beta, 13, 20), scale, first.final_state,
                                            true, DeltaRuleMode::Chunked, 8);
  CHECK(max_abs_diff(concat({first.o, second.o}, 1), full.o) < 1e-12);
  CHECK(max_abs_diff(second.final_state, full.final_state) < 1e-12);
}

TEST_CASE("gated_delta_rule: only the final state receives a gradient") {
  // o unused: the backward gets an undefined do and must treat it as zero (checked against finite differences).
  DeltaConfig c{1, 9, 1, 1, 4, 3, 1.0, true};
  for (DeltaRuleMode mode : {DeltaRuleMode::Recurrent, DeltaRuleMode::Chunked}) {
    Generator gen(600);
    TensorList x = leaves_of(make_delta_inputs(c, gen));
    CHECK_GRADCHECK(
        [&](const TensorList& in) -> TensorList {
          return {gated_delta_rule(in[0], in[1], in[2], in[3], in[4], 0.5, in[5], true, mode, 4).final_state};
        },
        x);
  }
}

TEST_CASE("gated_delta_rule: argument errors are clear") {
  Tensor q = zeros({1, 4, 2, 8}, kFloat64), v = zeros({1, 4, 3, 8}, kFloat64), g = zeros({1, 4, 3}, kFloat64);
  try {
    (void)gated_delta_rule(q, q, v, g, g, 1.0);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("multiple of key heads") != std::string::npos);
  }
  Tensor v2 = zeros({1, 4, 2, 8}, kFloat64), g2 = zeros({1, 4, 2}, kFloat64);
  CHECK_THROWS_AS((void)gated_delta_rule(q, q, v2, g2, zeros({1, 4, 3}, kFloat64), 1.0), Error);
  CHECK_THROWS_AS((void)gated_delta_rule(q, q, v2, g2, to_dtype(g2, kFloat32), 1.0), Error);
  CHECK_THROWS_AS((void)gated_delta_rule(q, q, v2, g2, g2, 1.0, {}, false, DeltaRuleMode::Chunked, 0), Error);
  CHECK_THROWS_AS((void)causal_conv1d(zeros({1, 4, 3}), zeros({2, 4})), Error);
}
