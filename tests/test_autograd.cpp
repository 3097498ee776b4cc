// tests/test_autograd.cpp — the tape and the engine: diamonds, reuse, accumulation, no-grad, retain_graph, errors.
#include <map>
#include <utility>
#include <vector>

#include "tests/test_helpers.h"

using namespace gdn;

TEST_CASE("autograd: a tensor used twice gets both contributions") {
  Tensor x = Tensor::from_vector({2.0}, {}, kFloat64).set_requires_grad(true);
  Tensor y = x * x + x;  // dy/dx = 2x + 1 = 5
  backward(y);
  CHECK(x.grad().item() == doctest::Approx(5.0));
}

TEST_CASE("autograd: on_leaf_ready hears of each leaf once, when its gradient is complete") {
  // x feeds three ops that run at different times, w one; `unused` is not in the graph and is never reported.
  Tensor x = Tensor::from_vector({2.0}, {}, kFloat64).set_requires_grad(true);
  Tensor w = Tensor::from_vector({3.0}, {}, kFloat64).set_requires_grad(true);
  Tensor unused = Tensor::from_vector({1.0}, {}, kFloat64).set_requires_grad(true);
  Tensor y = (x * w) * x + x;  // dy/dx = 2xw + 1 = 13, dy/dw = x^2 = 4
  std::vector<std::pair<const TensorImpl*, double>> heard;
  backward({y}, {}, false, [&](const TensorImpl& leaf) {
    heard.emplace_back(&leaf, Tensor(leaf.grad).item());
  });
  REQUIRE(heard.size() == 2);
  std::map<const TensorImpl*, double> at_ready(heard.begin(), heard.end());
  REQUIRE(at_ready.count(&x.impl()) == 1);
  REQUIRE(at_ready.count(&w.impl()) == 1);
  CHECK(at_ready[&x.impl()] == doctest::Approx(13.0));  // already the full gradient when it was reported
  CHECK(at_ready[&w.impl()] == doctest::Approx(4.0));
  CHECK(!unused.grad().defined());
}

TEST_CASE("autograd: diamond graph") {
  // a -> (b = 3a, c = a^2) -> d = b * c = 3a^3, dd/da = 9a^2
  Tensor a = Tensor::from_vector({1.5}, {}, kFloat64).set_requires_grad(true);
  Tensor b = a * 3.0, c = pow(a, 2.0);
  Tensor d = b * c;
  backward(d);
  CHECK(a.grad().item() == doctest::Approx(9 * 1.5 * 1.5));
}

TEST_CASE("autograd: leaves accumulate across backward calls until zero_grad") {
  Tensor w = Tensor::from_vector({1, 2, 3}, {3}, kFloat64).set_requires_grad(true);
  backward(sum(w * 2.0));
  backward(sum(w * 2.0));
  CHECK(w.grad().to_double_vector() == std::vector<double>{4, 4, 4});
  Tensor before = w.grad();
  zero_grad({w});
  CHECK(w.grad().to_double_vector() == std::vector<double>{0, 0, 0});
  CHECK(w.grad().same(before));  // the buffer is kept
  backward(sum(w));
  CHECK(w.grad().to_double_vector() == std::vector<double>{1, 1, 1});
}

TEST_CASE("autograd: a leaf keeps a fresh gradient without a copy, never one another tensor shares") {
  Tensor a = Tensor::from_vector({1, 2}, {2}, kFloat64).set_requires_grad(true);
  Tensor b = Tensor::from_vector({3, 4}, {2}, kFloat64).set_requires_grad(true);
  backward(sum(a + b));  // add hands the same gradient to both leaves: each must get a buffer of its own
  CHECK(a.grad().storage() != b.grad().storage());
  backward(sum(a * 3.0));  // accumulates into a's buffer only
  CHECK(a.grad().to_double_vector() == std::vector<double>{4, 4});
  CHECK(b.grad().to_double_vector() == std::vector<double>{1, 1});
  Tensor c = Tensor::from_vector({5}, {1}, kFloat64).set_requires_grad(true);
  backward(sum(c + c));  // one leaf reached twice
  CHECK(c.grad().to_double_vector() == std::vector<double>{2});
}

TEST_CASE("autograd: no-grad guard records nothing") {
  Tensor w = Tensor::from_vector({1, 2}, {2}, kFloat64).set_requires_grad(true);
  Tensor y;
  {
    NoGradGuard guard;
    y = w * 2.0;
  }
  CHECK_FALSE(y.requires_grad());
  CHECK(y.grad_fn() == nullptr);
  Tensor z = w * 2.0;
  CHECK(z.requires_grad());
  CHECK(z.grad_fn() != nullptr);
  CHECK(z.grad_fn()->name == "mul_scalar");
}

TEST_CASE("autograd: inputs that do not require grad get none") {
  Tensor a = Tensor::from_vector({1, 2}, {2}, kFloat64).set_requires_grad(true);
  Tensor b = Tensor::from_vector({3, 4}, {2}, kFloat64);
  backward(sum(a * b));
  CHECK(a.grad().to_double_vector() == std::vector<double>{3, 4});
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("autograd: a second backward without retain_graph is a loud error") {
  Tensor a = Tensor::from_vector({1, 2}, {2}, kFloat64).set_requires_grad(true);
  Tensor y = sum(exp(a));
  backward({y}, {}, /*retain_graph=*/true);
  backward(y);  // allowed: the first call retained the graph
  CHECK(a.grad().to_double_vector()[0] == doctest::Approx(2 * std::exp(1.0)));
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("a second time"), Error);
}

TEST_CASE("autograd: implicit gradient needs a scalar root") {
  Tensor a = Tensor::from_vector({1, 2}, {2}, kFloat64).set_requires_grad(true);
  CHECK_THROWS_AS(backward(a * 2.0), Error);
}

TEST_CASE("autograd: deep chains run in reverse topological order") {
  // y = x * 1.01 applied 2000 times: the engine must not recurse and must give 1.01^2000.
  Tensor x = Tensor::from_vector({1.0}, {}, kFloat64).set_requires_grad(true);
  Tensor y = x;
  for (int i = 0; i < 2000; ++i) y = y * 1.01;
  backward(y);
  CHECK(x.grad().item() == doctest::Approx(std::pow(1.01, 2000)).epsilon(1e-9));
}

TEST_CASE("autograd: multi-output node with one output unused") {
  Tensor x = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, kFloat64).set_requires_grad(true);
  std::vector<Tensor> parts = split(x, {1, 2}, 1);
  backward(sum(parts[1] * 3.0));
  CHECK(x.grad().to_double_vector() == std::vector<double>{0, 3, 3, 0, 3, 3});
}

TEST_CASE("gradcheck: catches a wrong gradient") {
  // A deliberately wrong op: forward 2x, backward claims 3.
  auto wrong = [](const TensorList& in) -> TensorList {
    Tensor y = Tensor::empty(in[0].shape(), kFloat64);
    {
      NoGradGuard g;
      Tensor t = in[0] * 2.0;
      std::copy(t.data<double>(), t.data<double>() + t.numel(), y.data<double>());
    }
    record("wrong", {y}, {in[0]}, [](const TensorList& g) -> TensorList { return {g[0] * 3.0}; });
    return {y};
  };
  Generator gen(1);
  Tensor x = test::rand_leaf({3}, gen);
  GradcheckResult r = gradcheck(wrong, {x});
  CHECK_FALSE(r.ok);
  CHECK(r.message.find("input 0") != std::string::npos);
}
