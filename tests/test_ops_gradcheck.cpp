// tests/test_ops_gradcheck.cpp — one fp64 finite-difference gradcheck per op of the foundation, on random shapes
// including broadcast and non-contiguous inputs, plus forward values checked against hand computations.
#include <cmath>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "tests/test_helpers.h"

using namespace gdn;
using test::rand_leaf;
using test::rand_leaf_transposed;

namespace {
// Entries in [0.5, 2.5): for log, sqrt, rsqrt, pow with fractional exponents.
Tensor positive_values(const Shape& shape, Generator& gen) { return rand_uniform(shape, 0.5, 2.5, gen, kFloat64); }

// Entries in +-[0.5, 2.5), signs alternating: for abs, whose derivative jumps at 0 (finite differences need
// |x| well above the step).
Tensor away_from_zero_values(const Shape& shape, Generator& gen) {
  std::vector<double> v = positive_values(shape, gen).to_double_vector();
  for (size_t i = 0; i < v.size(); i += 2) v[i] = -v[i];
  return Tensor::from_vector(v, shape, kFloat64);
}

Tensor normal_values(const Shape& shape, Generator& gen) { return randn(shape, gen, kFloat64); }

Tensor leaf(Tensor t) {
  t.set_requires_grad(true);
  return t;
}

Tensor positive_leaf(const Shape& shape, Generator& gen) { return leaf(positive_values(shape, gen)); }

// A leaf whose view of shape [rows, cols] is the transpose of a contiguous [cols, rows] tensor made by make.
Tensor transposed_leaf(int64_t rows, int64_t cols, Generator& gen, Tensor (*make)(const Shape&, Generator&)) {
  Tensor base = make({cols, rows}, gen);
  Tensor view = base.as_strided({rows, cols}, {base.stride(1), base.stride(0)}, 0);
  REQUIRE(!view.is_contiguous());
  return leaf(view);
}

enum class Domain { Any, Positive, AwayFromZero };

// Gradcheck of op on a contiguous [3,4] input and on a non-contiguous (transposed) [4,3] view, drawn from the
// domain, and forward values against ref.
void check_unary(Tensor (*op)(const Tensor&), Domain domain, double (*ref)(double)) {
  Generator gen(11);
  Tensor (*make)(const Shape&, Generator&) = domain == Domain::Positive       ? positive_values
                                             : domain == Domain::AwayFromZero ? away_from_zero_values
                                                                              : normal_values;
  Tensor x = leaf(make({3, 4}, gen));
  CHECK_GRADCHECK([op](const TensorList& in) -> TensorList { return {op(in[0])}; }, {x});
  Tensor xt = transposed_leaf(4, 3, gen, make);
  CHECK_GRADCHECK([op](const TensorList& in) -> TensorList { return {op(in[0])}; }, {xt});
  for (const Tensor& t : {x, xt}) {
    std::vector<double> xv = t.to_double_vector(), yv = op(t).to_double_vector();
    for (size_t i = 0; i < xv.size(); ++i) CHECK(yv[i] == doctest::Approx(ref(xv[i])).epsilon(1e-12));
  }
}

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }
}  // namespace

TEST_CASE("gradcheck: abs") { check_unary(gdn::abs, Domain::AwayFromZero, [](double x) { return std::fabs(x); }); }
TEST_CASE("gradcheck: neg") { check_unary(neg, Domain::Any, [](double x) { return -x; }); }
TEST_CASE("gradcheck: exp") { check_unary(gdn::exp, Domain::Any, [](double x) { return std::exp(x); }); }
TEST_CASE("gradcheck: log") { check_unary(gdn::log, Domain::Positive, [](double x) { return std::log(x); }); }
TEST_CASE("gradcheck: sqrt") { check_unary(gdn::sqrt, Domain::Positive, [](double x) { return std::sqrt(x); }); }
TEST_CASE("gradcheck: rsqrt") { check_unary(rsqrt, Domain::Positive, [](double x) { return 1 / std::sqrt(x); }); }
TEST_CASE("gradcheck: sigmoid") { check_unary(sigmoid, Domain::Any, sig); }
TEST_CASE("gradcheck: silu") { check_unary(silu, Domain::Any, [](double x) { return x * sig(x); }); }
TEST_CASE("gradcheck: softplus") { check_unary(softplus, Domain::Any, [](double x) { return std::log1p(std::exp(x)); }); }
TEST_CASE("gradcheck: logsigmoid") { check_unary(logsigmoid, Domain::Any, [](double x) { return std::log(sig(x)); }); }
TEST_CASE("gradcheck: tanh") { check_unary(gdn::tanh, Domain::Any, [](double x) { return std::tanh(x); }); }

TEST_CASE("ops: activations are stable at extreme inputs") {
  Tensor x = Tensor::from_vector({-1000, -50, 0, 50, 1000}, {5}, kFloat32);
  for (double v : sigmoid(x).to_double_vector()) CHECK(std::isfinite(v));
  std::vector<double> sp = softplus(x).to_double_vector();
  CHECK(sp[0] == 0.0);
  CHECK(sp[4] == 1000.0);
  std::vector<double> ls = logsigmoid(x).to_double_vector();
  CHECK(ls[0] == -1000.0);
  CHECK(ls[4] == 0.0);
  for (double v : silu(x).to_double_vector()) CHECK(std::isfinite(v));
}

TEST_CASE("gradcheck: add, sub, mul, div with broadcasting") {
  Generator gen(3);
  Tensor a = rand_leaf({2, 3, 4}, gen), b = rand_leaf({3, 1}, gen), c = rand_leaf({4}, gen);
  Tensor d = positive_leaf({1, 3, 4}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {in[0] + in[1]}; }, {a, b});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {in[0] - in[1]}; }, {a, c});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {in[0] * in[1]}; }, {b, a});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {in[0] / in[1]}; }, {a, d});
  // Non-contiguous operands.
  Tensor t = rand_leaf_transposed({4, 3}, gen), u = rand_leaf({4, 3}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {in[0] * in[1] + in[0]}; }, {t, u});
}

TEST_CASE("gradcheck: swiglu, and it equals silu(a) * b") {
  Generator gen(13);
  Tensor a = rand_leaf({3, 5, 7}, gen, 3.0), b = rand_leaf({3, 5, 7}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {swiglu(in[0], in[1])}; }, {a, b});
  Tensor t = rand_leaf_transposed({6, 4}, gen), u = rand_leaf({6, 4}, gen);  // a non-contiguous operand
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {swiglu(in[0], in[1])}; }, {t, u});
  CHECK(test::max_abs_diff(swiglu(a, b), silu(a) * b) < 1e-14);
  // Only b needs a gradient: a gets none.
  Tensor c = Tensor::from_vector({0.5, -2.0}, {2}, kFloat64), d = rand_leaf({2}, gen);
  backward(sum(swiglu(c, d)));
  CHECK(!c.grad().defined());
  CHECK(test::max_abs_diff(d.grad(), silu(c)) < 1e-15);
  CHECK_THROWS_WITH_AS(swiglu(a, rand_leaf({3, 5, 1}, gen)), doctest::Contains("must have one shape"), Error);
}

TEST_CASE("gradcheck: scalar ops (add, mul, pow)") {
  Generator gen(4);
  Tensor x = positive_leaf({5}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {in[0] + 2.5}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {in[0] * -1.5}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {pow(in[0], 3.0)}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {pow(in[0], -0.5)}; }, {x});
  CHECK(pow(Tensor::from_vector({2.0}, {1}, kFloat64), 3.0).item() == 8.0);
}

TEST_CASE("gradcheck: matmul 2-D, batched and transposed") {
  Generator gen(5);
  Tensor a = rand_leaf({3, 4}, gen), b = rand_leaf({4, 5}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {matmul(in[0], in[1])}; }, {a, b});
  Tensor x = rand_leaf({2, 3, 4}, gen), w = rand_leaf({5, 4}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {linear(in[0], in[1])}; }, {x, w});
  Tensor p = rand_leaf({2, 3, 4}, gen), q = rand_leaf({2, 4, 2}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {matmul(in[0], in[1])}; }, {p, q});
  Tensor at = rand_leaf_transposed({3, 4}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {matmul(in[0], in[1])}; }, {at, b});
  // Batched with a transposed (column-major) right operand.
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {matmul(in[0], transpose(in[1], 1, 2))}; },
                  {p, rand_leaf({2, 2, 4}, gen)});
  // Values against a hand computation.
  Tensor m = Tensor::from_vector({1, 2, 3, 4}, {2, 2}), n = Tensor::from_vector({5, 6, 7, 8}, {2, 2});
  CHECK(matmul(m, n).to_double_vector() == std::vector<double>{19, 22, 43, 50});
  CHECK(matmul(transpose(m, 0, 1), n).to_double_vector() == std::vector<double>{26, 30, 38, 44});
}

TEST_CASE("gradcheck: sum and mean over axes") {
  Generator gen(6);
  Tensor x = rand_leaf({2, 3, 4}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {sum(in[0])}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {sum(in[0], {1})}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {sum(in[0], {0, 2}, true)}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {mean(in[0], {-1})}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {mean(in[0])}; }, {rand_leaf_transposed({4, 3}, gen)});
  Tensor v = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(sum(v, {0}).to_double_vector() == std::vector<double>{5, 7, 9});
  CHECK(mean(v, {1}).to_double_vector() == std::vector<double>{2, 5});
}

TEST_CASE("gradcheck: max over an axis, and argmax") {
  Generator gen(7);
  Tensor x = rand_leaf({3, 5}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {max(in[0], 1)}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {max(in[0], 0, true)}; }, {x});
  Tensor v = Tensor::from_vector({1, 9, 3, 7, 2, 8}, {2, 3});
  CHECK(max(v, 1).to_double_vector() == std::vector<double>{9, 8});
  CHECK(argmax(v, 1).to_int64_vector() == std::vector<int64_t>{1, 2});
  CHECK(argmax(v, 0).to_int64_vector() == std::vector<int64_t>{1, 0, 1});
}

TEST_CASE("gradcheck: reshape, permute, transpose") {
  Generator gen(8);
  Tensor x = rand_leaf({2, 3, 4}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {reshape(in[0], {4, -1}) * 2.0}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {permute(in[0], {2, 0, 1}) * 2.0}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {reshape(transpose(in[0], 0, 2), {-1})}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {squeeze(unsqueeze(in[0], 1), 1) * 2.0}; }, {x});
}

TEST_CASE("gradcheck: slice, concat, split, expand") {
  Generator gen(9);
  Tensor x = rand_leaf({4, 6}, gen), y = rand_leaf({4, 2}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {slice(in[0], 1, 1, 5, 2) * 3.0}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {concat({in[0], in[1], in[0]}, 1)}; }, {x, y});
  CHECK_GRADCHECK(
      [](const TensorList& in) -> TensorList {
        auto parts = split(in[0], {2, 1, 3}, 1);
        return {parts[0] * 2.0, parts[2] * parts[2]};
      },
      {x});
  Tensor b = rand_leaf({1, 6}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {expand(in[0], {3, 6}) * 1.0}; }, {b});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {concat({in[0], in[1]}, 0)}; },
                  {rand_leaf_transposed({2, 3}, gen), rand_leaf({1, 3}, gen)});
}

TEST_CASE("gradcheck: contiguous, clone and to_dtype") {
  Generator gen(10);
  Tensor x = rand_leaf_transposed({3, 4}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {contiguous(in[0]) * 2.0}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {clone(in[0])}; }, {x});
  // float64 -> float32 -> float64 is lossy at 1e-7, so check with a looser tolerance.
  GradcheckOptions loose;
  loose.eps = 1e-3;
  loose.rtol = 1e-3;
  loose.atol = 1e-4;
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {to_dtype(to_dtype(in[0], kFloat32), kFloat64)}; },
                  {x}, loose);
}

TEST_CASE("gradcheck: embedding") {
  Generator gen(12);
  Tensor w = rand_leaf({7, 3}, gen);
  Tensor ids = Tensor::from_int64({1, 4, 1, 6, 0, 1}, {2, 3});  // repeated ids accumulate
  CHECK_GRADCHECK([ids](const TensorList& in) -> TensorList { return {embedding(in[0], ids)}; }, {w});
  Tensor e = embedding(w, ids);
  CHECK(e.shape() == Shape{2, 3, 3});
  CHECK(slice(reshape(e, {6, 3}), 0, 3, 4).to_double_vector() == slice(w, 0, 6, 7).to_double_vector());
  CHECK_THROWS_AS(embedding(w, Tensor::from_int64({7}, {1})), Error);
}

TEST_CASE("gradcheck: cross_entropy with ignore index") {
  Generator gen(13);
  Tensor logits = rand_leaf({5, 7}, gen, 2.0);
  Tensor targets = Tensor::from_int64({3, -100, 0, 6, 2}, {5});
  CHECK_GRADCHECK([targets](const TensorList& in) -> TensorList { return {cross_entropy(in[0], targets)}; },
                  {logits});
  // Value against a direct log-softmax computation, skipping the ignored row.
  std::vector<double> l = logits.to_double_vector();
  std::vector<int64_t> t = targets.to_int64_vector();
  double total = 0;
  int kept = 0;
  for (int i = 0; i < 5; ++i) {
    if (t[i] < 0) continue;
    double m = -1e300, s = 0;
    for (int j = 0; j < 7; ++j) m = std::max(m, l[i * 7 + j]);
    for (int j = 0; j < 7; ++j) s += std::exp(l[i * 7 + j] - m);
    total += m + std::log(s) - l[i * 7 + t[i]];
    kept++;
  }
  CHECK(cross_entropy(logits, targets).item() == doctest::Approx(total / kept).epsilon(1e-12));
  // Stable for huge logits.
  Tensor big = Tensor::from_vector({1000, 0, -1000, 1000}, {2, 2});
  CHECK(std::isfinite(cross_entropy(big, Tensor::from_int64({1, 0}, {2})).item()));
}

TEST_CASE("gradcheck: linear_multi (weights of one shape and of two shapes)") {
  Generator gen(8);
  Tensor x = rand_leaf({2, 3, 4}, gen), w1 = rand_leaf({5, 4}, gen), w2 = rand_leaf({5, 4}, gen);
  Tensor w3 = rand_leaf({2, 4}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return linear_multi(in[0], {in[1], in[2]}); },
                  {x, w1, w2});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return linear_multi(in[0], {in[1], in[2], in[3]}); },
                  {x, w1, w3, w2});
  // The values of separate linears; one output left out of the loss still gives every other gradient.
  std::vector<Tensor> ys = linear_multi(x, {w1, w3});
  CHECK(test::max_abs_diff(ys[0], linear(x, w1)) == 0.0);
  CHECK(test::max_abs_diff(ys[1], linear(x, w3)) == 0.0);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {linear_multi(in[0], {in[1], in[2]})[1]}; },
                  {x, w1, w3});
  CHECK_THROWS_AS(linear_multi(x, {w1, rand_leaf({5, 3}, gen)}), Error);
  // Parts: w1's outputs as blocks of 2 and 3 features, w3 whole; the blocks are slices of linear(x, w1). One block
  // left out of the loss: its rows of w1's gradient are zero.
  CHECK_GRADCHECK(
      [](const TensorList& in) -> TensorList { return linear_multi(in[0], {in[1], in[2]}, {{2, 3}, {}}); },
      {x, w1, w3});
  CHECK_GRADCHECK(
      [](const TensorList& in) -> TensorList {
        std::vector<Tensor> y = linear_multi(in[0], {in[1], in[2]}, {{2, 3}, {}});
        return {y[1], y[2]};
      },
      {x, w1, w3});
  std::vector<Tensor> parts = linear_multi(x, {w1, w3}, {{2, 3}, {}});
  REQUIRE(parts.size() == 3);
  CHECK(test::max_abs_diff(concat({parts[0], parts[1]}, -1), linear(x, w1)) == 0.0);
  CHECK(test::max_abs_diff(parts[2], linear(x, w3)) == 0.0);
  CHECK_THROWS_AS(linear_multi(x, {w1, w3}, {{2, 2}, {}}), Error);
}

TEST_CASE("gradcheck: linear_cross_entropy (chunked lm_head + cross-entropy)") {
  Generator gen(21);
  Tensor x = rand_leaf({2, 4, 5}, gen), w = rand_leaf({9, 5}, gen, 2.0);  // N = 8 rows, V = 9, D = 5
  Tensor targets = Tensor::from_int64({3, 0, 8, 1, 1, 7, 2, 5}, {2, 4});
  // (chunk rows, group rows): chunks of 3 (3 + 3 + 2) in one group, in groups of 6 (3 + 3 | 2: dw accumulated over
  // two groups), a group per chunk; groups of 5 rounded down to whole chunks of 2 (4 + 4); one chunk; automatic.
  const std::vector<std::pair<int64_t, int64_t>> sizes{{3, 0}, {3, 6}, {3, 3}, {2, 5}, {8, 0}, {0, 0}};
  for (const auto& [chunk, group] : sizes) {
    CAPTURE(chunk);
    CAPTURE(group);
    CHECK_GRADCHECK([targets, chunk, group](const TensorList& in) -> TensorList {
      return {linear_cross_entropy(in[0], in[1], targets, chunk, group)};
    }, {x, w});
    // The same value and gradients as the unfused cross_entropy(linear(x, w)).
    Tensor xa = x.detach().set_requires_grad(true), wa = w.detach().set_requires_grad(true);
    Tensor xb = x.detach().set_requires_grad(true), wb = w.detach().set_requires_grad(true);
    Tensor fused = linear_cross_entropy(xa, wa, targets, chunk, group);
    Tensor plain = cross_entropy(linear(xb, wb), targets);
    CHECK(fused.item() == doctest::Approx(plain.item()).epsilon(1e-13));
    backward(fused);
    backward(plain);
    std::vector<double> gxa = xa.grad().to_double_vector(), gxb = xb.grad().to_double_vector();
    std::vector<double> gwa = wa.grad().to_double_vector(), gwb = wb.grad().to_double_vector();
    for (size_t i = 0; i < gxa.size(); ++i) CHECK(gxa[i] == doctest::Approx(gxb[i]).epsilon(1e-12));
    for (size_t i = 0; i < gwa.size(); ++i) CHECK(gwa[i] == doctest::Approx(gwb[i]).epsilon(1e-12));
  }
  // Every target must be a class: the fused op ignores none.
  CHECK_THROWS_AS(linear_cross_entropy(x, w, Tensor::from_int64({3, 0, 8, 1, 1, 7, 2, -100}, {2, 4})), Error);
}

TEST_CASE("gradcheck: rms_norm") {
  Generator gen(14);
  Tensor x = rand_leaf({2, 3, 8}, gen), w = rand_leaf({8}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {rms_norm(in[0], in[1])}; }, {x, w});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {rms_norm(in[0], in[1])}; },
                  {rand_leaf_transposed({8, 2}, gen), rand_leaf({2}, gen)});
  Tensor v = Tensor::from_vector({3, 4}, {1, 2}, kFloat64);
  std::vector<double> y = rms_norm(v, ones({2}, kFloat64), 0.0).to_double_vector();
  CHECK(y[0] == doctest::Approx(3 / std::sqrt(12.5)));
  CHECK(y[1] == doctest::Approx(4 / std::sqrt(12.5)));
}

TEST_CASE("gradcheck: add_rms_norm (the residual add fused with the norm after it)") {
  Generator gen(24);
  Tensor x = rand_leaf({2, 3, 8}, gen), r = rand_leaf({2, 3, 8}, gen), w = rand_leaf({8}, gen);
  // Both outputs used (h further on, as the residual stream is), the norm alone (no gradient reaches h), h alone.
  CHECK_GRADCHECK(
      [](const TensorList& in) -> TensorList {
        auto [h, y] = add_rms_norm(in[0], in[1], in[2]);
        return {h * h, y};
      },
      {x, r, w});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {add_rms_norm(in[0], in[1], in[2]).second}; },
                  {x, r, w});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {add_rms_norm(in[0], in[1], in[2]).first}; },
                  {x, r, w});
  // The same values as the unfused ops, bit for bit.
  NoGradGuard no_grad;
  auto [h, y] = add_rms_norm(x, r, w);
  CHECK(test::max_abs_diff(h, x + r) == 0.0);
  CHECK(test::max_abs_diff(y, rms_norm(x + r, w)) == 0.0);
}

// The producers of a bf16 GEMM's operand (ops/matmul.h linear_input_dtype) with out = bfloat16: the float32 result
// rounded once, bit for bit; through a linear (which, on the CPU, takes it back to float32) the gradients are those of
// the float32 op followed by that rounding, the gradient of the bfloat16 tensor staying float32 (two consumers: the
// engine adds two float32 gradients); bfloat16 out of float64 is an error.
TEST_CASE("ops: rms_norm, add_rms_norm, rms_norm_gated and swiglu with a bfloat16 output") {
  Generator gen(31);
  auto leaf = [&](const Shape& s) { return to_dtype(rand_leaf(s, gen), kFloat32).detach().set_requires_grad(true); };
  Tensor x = leaf({3, 4, 16}), r = leaf({3, 4, 16}), z = leaf({3, 4, 16}), w = leaf({16}), lw = leaf({5, 16});
  using Producer = std::function<Tensor(std::optional<DType>)>;
  const std::vector<std::pair<const char*, Producer>> producers = {
      {"rms_norm", [&](std::optional<DType> o) { return rms_norm(x, w, 1e-6, o); }},
      {"add_rms_norm", [&](std::optional<DType> o) { return add_rms_norm(x, r, w, 1e-6, o).second; }},
      {"rms_norm_gated", [&](std::optional<DType> o) { return rms_norm_gated(x, z, w, 1e-6, o); }},
      {"swiglu", [&](std::optional<DType> o) { return swiglu(x, z, o); }},
  };
  for (const auto& [name, produce] : producers) {
    CAPTURE(name);
    const TensorList leaves{x, r, z, w, lw};
    auto grads = [&](const Tensor& y) {
      clear_grads(leaves);
      backward(sum(linear(y, lw) * linear(y, lw)));
      std::vector<Tensor> g;
      for (const Tensor& t : leaves) g.push_back(t.grad().defined() ? clone(t.grad()) : Tensor());
      return g;
    };
    // The float32 op, then one rounding to bfloat16 and back.
    auto rounded = [&] { return to_dtype(to_dtype(produce(std::nullopt), kBFloat16), kFloat32); };
    const Tensor yb = produce(kBFloat16);
    CHECK(yb.dtype() == kBFloat16);
    CHECK(test::max_abs_diff(to_dtype(yb, kFloat32), rounded()) == 0.0);
    const std::vector<Tensor> got = grads(yb), want = grads(rounded());
    for (size_t i = 0; i < got.size(); ++i) {
      REQUIRE(got[i].defined() == want[i].defined());
      if (got[i].defined()) CHECK(test::max_abs_diff(got[i], want[i]) == 0.0);
    }
  }
  // swiglu on bfloat16 storage (the FFN's gate | up under bf16 products): float32 arithmetic on the stored values, y
  // in float32 or bfloat16, the gradients of a and b in bfloat16: those of the float32 op, rounded once.
  auto bf16_leaf = [](const Tensor& t) { return to_dtype(t, kBFloat16).detach().set_requires_grad(true); };
  auto f32_leaf = [](const Tensor& t) { return to_dtype(t, kFloat32).detach().set_requires_grad(true); };
  for (DType yd : {kFloat32, kBFloat16}) {
    CAPTURE(yd);
    const Tensor ab = bf16_leaf(x), bb = bf16_leaf(z), af = f32_leaf(ab), bf = f32_leaf(bb);
    const Tensor yb = swiglu(ab, bb, yd), yf = swiglu(af, bf, yd);
    CHECK(yb.dtype() == yd);
    CHECK(test::max_abs_diff(to_dtype(yb, kFloat32), to_dtype(yf, kFloat32)) == 0.0);
    backward(sum(linear(yb, lw) * linear(yb, lw)));
    backward(sum(linear(yf, lw) * linear(yf, lw)));
    for (auto [g, want] : {std::pair{ab.grad(), af.grad()}, std::pair{bb.grad(), bf.grad()}}) {
      CHECK(g.dtype() == kBFloat16);
      CHECK(test::max_abs_diff(to_dtype(g, kFloat32), to_dtype(to_dtype(want, kBFloat16), kFloat32)) == 0.0);
    }
  }
  Tensor x64 = rand_leaf({2, 8}, gen);
  CHECK_THROWS_WITH_AS(rms_norm(x64, ones({8}, kFloat64), 1e-6, kBFloat16), doctest::Contains("bfloat16 for float32"),
                       Error);
}

// bfloat16 logits (the bf16 lm_head's in a training step): the loss of their float32 values, in float32, and their
// gradient in bfloat16, the float32 gradient rounded once.
TEST_CASE("ops: cross_entropy of bfloat16 logits") {
  Generator gen(32);
  const Tensor lb = to_dtype(randn({6, 11}, gen, kFloat32), kBFloat16).set_requires_grad(true);
  const Tensor lf = to_dtype(lb, kFloat32).detach().set_requires_grad(true);
  const Tensor t = Tensor::from_int64({0, 10, 3, -100, 7, 7}, {6});
  const Tensor loss_b = cross_entropy(lb, t), loss_f = cross_entropy(lf, t);
  CHECK(loss_b.dtype() == kFloat32);
  CHECK(loss_b.item() == loss_f.item());
  backward(loss_b * 3.0);
  backward(loss_f * 3.0);
  CHECK(lb.grad().dtype() == kBFloat16);
  CHECK(test::max_abs_diff(to_dtype(lb.grad(), kFloat32), to_dtype(to_dtype(lf.grad(), kBFloat16), kFloat32)) == 0.0);
}

TEST_CASE("ops: float32 and float64 agree") {
  Generator gen(15);
  Tensor a64 = randn({4, 8}, gen, kFloat64), w64 = randn({6, 8}, gen, kFloat64);
  Tensor a32 = to_dtype(a64, kFloat32), w32 = to_dtype(w64, kFloat32);
  Tensor y64 = silu(rms_norm(linear(a64, w64), ones({6}, kFloat64)));
  Tensor y32 = silu(rms_norm(linear(a32, w32), ones({6}, kFloat32)));
  CHECK(test::max_abs_diff(y64, y32) < 1e-5);
}

TEST_CASE("gradcheck: softmax") {
  Generator gen(16);
  Tensor x = rand_leaf({3, 5}, gen);
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {softmax(in[0], -1)}; }, {x});
  CHECK_GRADCHECK([](const TensorList& in) -> TensorList { return {softmax(in[0], 0)}; }, {x});
  std::vector<double> row = softmax(Tensor::from_vector({1, 2, 3}, {3}, kFloat64)).to_double_vector();
  double z = std::exp(1) + std::exp(2) + std::exp(3);
  CHECK(row[2] == doctest::Approx(std::exp(3) / z));
}

TEST_CASE("gradcheck: gather_rows and scatter_add_rows") {
  Generator gen(17);
  Tensor x = rand_leaf({5, 3}, gen);
  Tensor idx = Tensor::from_int64({4, 0, 4, 2}, {4});
  CHECK_GRADCHECK([idx](const TensorList& in) -> TensorList { return {gather_rows(in[0], idx)}; }, {x});
  Tensor src = rand_leaf({4, 3}, gen);
  CHECK_GRADCHECK([idx](const TensorList& in) -> TensorList { return {scatter_add_rows(in[0], idx, 6)}; }, {src});
  std::vector<double> out = scatter_add_rows(src, idx, 6).to_double_vector();
  std::vector<double> s = src.to_double_vector();
  CHECK(out[4 * 3 + 1] == doctest::Approx(s[0 * 3 + 1] + s[2 * 3 + 1]));  // rows 0 and 2 both land on row 4
  CHECK(out[1 * 3 + 0] == 0.0);
}

TEST_CASE("gradcheck: grouped_linear with an empty group") {
  Generator gen(17);
  // 7 rows in groups of 3, 0 and 4 rows; W_e [5,4].
  Tensor off = Tensor::from_int64({0, 3, 3, 7}, {4});
  Tensor x = rand_leaf({7, 4}, gen), w0 = rand_leaf({5, 4}, gen), w1 = rand_leaf({5, 4}, gen);
  Tensor w2 = rand_leaf({5, 4}, gen);
  CHECK_GRADCHECK(
      [off](const TensorList& in) -> TensorList { return {grouped_linear(in[0], {in[1], in[2], in[3]}, off)}; },
      {x, w0, w1, w2});
  // Forward: each row times the transpose of its group's weight.
  Tensor y = grouped_linear(x, {w0, w1, w2}, off);
  Tensor ref = concat(
      {matmul(slice(x, 0, 0, 3), transpose(w0, 0, 1)), matmul(slice(x, 0, 3, 7), transpose(w2, 0, 1))}, 0);
  CHECK(test::max_abs_diff(y, ref) < 1e-12);
  // The empty group's weight gets a zero gradient.
  backward(sum(y, {0, 1}));
  for (double g : w1.grad().to_double_vector()) CHECK(g == 0.0);
}

TEST_CASE("ops: moe_routing picks the top k (lower id on ties) and groups the pairs by expert") {
  // 3 tokens, 4 experts, k = 2. Row 1 ties experts 1 and 3 at the top; row 2 is all equal.
  Tensor probs =
      Tensor::from_vector({0.1, 0.2, 0.6, 0.1, 0.1, 0.4, 0.1, 0.4, 0.25, 0.25, 0.25, 0.25}, {3, 4}, kFloat64);
  MoERouting r = moe_routing(probs, 2);
  CHECK(r.ids.to_int64_vector() == std::vector<int64_t>{2, 1, 1, 3, 0, 1});
  CHECK(r.flat.to_int64_vector() == std::vector<int64_t>{2, 1, 5, 7, 8, 9});
  // Pairs p = n*2 + s by expert: e0 {4}, e1 {1, 2, 5}, e2 {0}, e3 {3}.
  CHECK(r.order.to_int64_vector() == std::vector<int64_t>{4, 1, 2, 5, 0, 3});
  CHECK(r.tokens.to_int64_vector() == std::vector<int64_t>{2, 0, 1, 2, 0, 1});
  CHECK(r.offsets.to_int64_vector() == std::vector<int64_t>{0, 1, 4, 5, 6});
  CHECK(r.counts.to_int64_vector() == std::vector<int64_t>{1, 3, 1, 1});
}
