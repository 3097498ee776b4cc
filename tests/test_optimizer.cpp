// tests/test_optimizer.cpp — train/optimizer.h (AdamW against hand-computed steps, no-decay parameters, exact
// state restore, the learning-rate schedule, gradient clipping) and the small train/progress.h helpers.
#include <cmath>
#include <cstdio>
#include <numbers>

#include "core/check.h"
#include "tests/test_helpers.h"
#include "train/optimizer.h"
#include "train/progress.h"

using namespace gdn;

namespace {

// loss = sum((p - 3)^2), so dloss/dp = 2 (p - 3): backward fills p.grad().
void quadratic_backward(const Tensor& p) { backward(sum(pow(p - 3.0, 2.0))); }

// A deterministic loss of two parameters with non-trivial gradients: sum(a^3) + sum(a) sum(b) - 0.1 sum(exp(b)).
void two_param_backward(const Tensor& a, const Tensor& b) {
  backward(sum(pow(a, 3.0)) + sum(a) * sum(b) - sum(exp(b) * 0.1));
}

std::vector<float> floats(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const float* p = t.data<float>();
  std::copy(p, p + t.numel(), out.begin());
  return out;
}

}  // namespace

TEST_CASE("optimizer: AdamW matches a hand-computed two-step trajectory") {
  const double lr = 0.1, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  Tensor p = Tensor::from_vector({1.0}, {1}, kFloat64).set_requires_grad(true);
  AdamW opt({{"p", p, true}}, b1, b2, eps, wd);
  CHECK(opt.steps_taken() == 0);

  // The formulas, in plain doubles.
  double x = 1.0, m = 0, v = 0;
  std::vector<double> expected;
  for (int t = 1; t <= 2; ++t) {
    const double g = 2 * (x - 3);
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double mhat = m / (1 - std::pow(b1, t)), vhat = v / (1 - std::pow(b2, t));
    x = x * (1 - lr * wd) - lr * mhat / (std::sqrt(vhat) + eps);
    expected.push_back(x);
  }
  // Step 1 by hand: g = -4, mhat = -4, vhat = 16, so x = 1 * 0.99 + 0.1 * 4 / (4 + 1e-8).
  CHECK(expected[0] == doctest::Approx(0.99 + 0.1 * 4 / (4 + 1e-8)).epsilon(1e-15));

  for (int t = 0; t < 2; ++t) {
    quadratic_backward(p);
    opt.step(lr);
    zero_grad({p});
    CHECK(p.item() == doctest::Approx(expected[t]).epsilon(1e-13));
  }
  CHECK(opt.steps_taken() == 2);
  CHECK(p.requires_grad());
}

TEST_CASE("optimizer: decay=false parameters get no weight decay") {
  // With zero gradients m = v = 0 and the Adam term is 0 / (0 + eps) = 0: only the decay moves a parameter.
  Tensor decayed = Tensor::from_vector({2.0, -4.0}, {2}, kFloat64).set_requires_grad(true);
  Tensor plain = Tensor::from_vector({2.0, -4.0}, {2}, kFloat64).set_requires_grad(true);
  Tensor no_grad = Tensor::from_vector({5.0}, {1}, kFloat64).set_requires_grad(true);
  AdamW opt({{"w", decayed, true}, {"norm.weight", plain, false}, {"unused", no_grad, true}}, 0.9, 0.95, 1e-8, 0.5);
  decayed.set_grad(zeros({2}, kFloat64));
  plain.set_grad(zeros({2}, kFloat64));
  opt.step(0.1);
  CHECK(decayed.to_double_vector() == std::vector<double>{2.0 * 0.95, -4.0 * 0.95});
  CHECK(plain.to_double_vector() == std::vector<double>{2.0, -4.0});
  CHECK(no_grad.item() == 5.0);  // no .grad(): untouched, even by decay
  CHECK(opt.params().size() == 3);
  CHECK(opt.params()[1].name == "norm.weight");
}

TEST_CASE("optimizer: state_tensors / load_state continue bit-identically") {
  Generator gen(42);
  Tensor a0 = randn({3, 4}, gen), b0 = randn({5}, gen);
  Tensor a = clone(a0).set_requires_grad(true), b = clone(b0).set_requires_grad(true);
  AdamW first({{"a", a, true}, {"b", b, false}}, 0.9, 0.95, 1e-8, 0.1);
  auto lr = [](int step) { return learning_rate_at(step, 6, 2, 1e-2, 0.1, "cosine"); };
  for (int s = 0; s < 3; ++s) {
    two_param_backward(a, b);
    first.step(lr(s));
    zero_grad({a, b});
  }

  // What a checkpoint would hold: copies of the parameters and of the optimizer state, and the step count.
  auto state = first.state_tensors();
  REQUIRE(state.size() == 4);
  CHECK(state[0].first == "exp_avg.a");
  CHECK(state[1].first == "exp_avg_sq.a");
  CHECK(state[2].first == "exp_avg.b");
  CHECK(state[3].first == "exp_avg_sq.b");
  std::vector<std::pair<std::string, Tensor>> saved;
  for (const auto& [name, t] : state) saved.emplace_back(name, clone(t));
  saved.emplace_back("model.a", clone(a.detach()));  // other entries are ignored
  Tensor a2 = clone(a.detach()).set_requires_grad(true), b2 = clone(b.detach()).set_requires_grad(true);
  AdamW second({{"a", a2, true}, {"b", b2, false}}, 0.9, 0.95, 1e-8, 0.1);
  second.load_state(saved, first.steps_taken());
  CHECK(second.steps_taken() == 3);

  for (int s = 3; s < 6; ++s) {
    two_param_backward(a, b);
    first.step(lr(s));
    zero_grad({a, b});
    two_param_backward(a2, b2);
    second.step(lr(s));
    zero_grad({a2, b2});
  }
  CHECK(floats(a) == floats(a2));
  CHECK(floats(b) == floats(b2));
  CHECK(floats(first.state_tensors()[1].second) == floats(second.state_tensors()[1].second));
  CHECK(floats(a) != floats(a0));  // it did train

  // Errors: missing entry, wrong shape, unknown parameter; nothing changes on error.
  auto missing = saved;
  missing.erase(missing.begin() + 1);
  CHECK_THROWS_WITH_AS(second.load_state(missing, 3), doctest::Contains("missing 'exp_avg_sq.a'"), UserError);
  auto wrong = saved;
  wrong[2].second = zeros({4});
  CHECK_THROWS_WITH_AS(second.load_state(wrong, 3), doctest::Contains("'exp_avg.b' has shape [4], expected [5]"),
                       UserError);
  auto extra = saved;
  extra.emplace_back("exp_avg.c", zeros({1}));
  CHECK_THROWS_WITH_AS(second.load_state(extra, 3), doctest::Contains("no parameter 'c'"), UserError);
  CHECK(second.steps_taken() == 6);
}

TEST_CASE("optimizer: learning_rate_at, linear and cosine") {
  const double lr = 1.0, floor = 0.1;
  for (const char* schedule : {"linear", "cosine"}) {
    CAPTURE(schedule);
    // total 110, warmup 10: decay over steps 10..110.
    CHECK(learning_rate_at(0, 110, 10, lr, 0.1, schedule) == doctest::Approx(0.1));  // lr / warmup
    CHECK(learning_rate_at(4, 110, 10, lr, 0.1, schedule) == doctest::Approx(0.5));
    CHECK(learning_rate_at(9, 110, 10, lr, 0.1, schedule) == doctest::Approx(1.0));  // end of warmup
    CHECK(learning_rate_at(10, 110, 10, lr, 0.1, schedule) == doctest::Approx(1.0));
    CHECK(learning_rate_at(60, 110, 10, lr, 0.1, schedule) == doctest::Approx(0.55));  // halfway: same for both
    CHECK(learning_rate_at(110, 110, 10, lr, 0.1, schedule) == doctest::Approx(floor));
    CHECK(learning_rate_at(500, 110, 10, lr, 0.1, schedule) == doctest::Approx(floor));
    CHECK(learning_rate_at(0, 100, 0, lr, 0.1, schedule) == doctest::Approx(1.0));  // no warmup
    CHECK(learning_rate_at(100, 100, 0, 3e-4, 0.0, schedule) == doctest::Approx(0.0));
    double prev = 2.0;
    for (int s = 10; s <= 110; ++s) {  // decreasing after warmup
      double now = learning_rate_at(s, 110, 10, lr, 0.1, schedule);
      CHECK(now <= prev);
      prev = now;
    }
  }
  // A quarter of the way through the decay.
  CHECK(learning_rate_at(35, 110, 10, lr, 0.1, "linear") == doctest::Approx(0.1 + 0.9 * 0.75));
  CHECK(learning_rate_at(35, 110, 10, lr, 0.1, "cosine") ==
        doctest::Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi / 4))));
  CHECK_THROWS_WITH_AS(learning_rate_at(0, 10, 1, lr, 0.1, "step"), doctest::Contains("'step'"), UserError);
}

TEST_CASE("optimizer: clip_grad_norm") {
  Tensor a = Tensor::from_vector({0, 0}, {2}, kFloat32).set_requires_grad(true);
  Tensor b = Tensor::from_vector({0}, {1, 1}, kFloat64).set_requires_grad(true);
  Tensor none = Tensor::from_vector({1}, {1}).set_requires_grad(true);  // no gradient: skipped
  auto set_grads = [&] {
    a.set_grad(Tensor::from_vector({3, 4}, {2}, kFloat32));
    b.set_grad(Tensor::from_vector({12}, {1, 1}, kFloat64));
  };
  set_grads();
  CHECK(clip_grad_norm({a, b, none}, 20.0) == doctest::Approx(13.0));  // below max: untouched
  CHECK(a.grad().to_double_vector() == std::vector<double>{3, 4});
  CHECK(b.grad().item() == 12.0);
  CHECK(clip_grad_norm({a, b}, 0.0) == doctest::Approx(13.0));  // 0 = off
  CHECK(b.grad().item() == 12.0);

  Tensor ga = a.grad();
  CHECK(clip_grad_norm({a, b, none}, 6.5) == doctest::Approx(13.0));
  const double scale = 6.5 / (13.0 + 1e-6);
  CHECK(a.grad().same(ga));  // in place
  CHECK(a.grad().to_double_vector()[0] == doctest::Approx(3 * scale).epsilon(1e-6));
  CHECK(a.grad().to_double_vector()[1] == doctest::Approx(4 * scale).epsilon(1e-6));
  CHECK(b.grad().item() == doctest::Approx(12 * scale).epsilon(1e-12));
  CHECK(clip_grad_norm({a, b}, 0.0) == doctest::Approx(6.5).epsilon(1e-6));  // the new norm is max_norm

  CHECK(clip_grad_norm({none}, 1.0) == 0.0);
  CHECK(clip_grad_norm({}, 1.0) == 0.0);
}

TEST_CASE("progress: format_duration") {
  CHECK(format_duration(0) == "0s");
  CHECK(format_duration(45.2) == "45s");
  CHECK(format_duration(83) == "1m23s");
  CHECK(format_duration(3600 + 5 * 60 + 9) == "1h05m09s");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(std::nan("")) == "?");
}

TEST_CASE("progress: not a TTY prints a few plain lines") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    ProgressBar bar(1000, 0, f);
    CHECK_FALSE(bar.is_tty());
    for (int64_t s = 1; s <= 1000; ++s) {
      bar.update(s, 3.25, 3e-4, 1234.0, s == 1000 ? "val 3.10" : "");
      if (s == 500) bar.message("eval: val loss 3.50");
    }
  }  // the destructor finishes
  std::rewind(f);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  const auto lines = std::count(text.begin(), text.end(), '\n');
  CHECK(lines >= 20);  // first step, every 5% (50 steps), the message
  CHECK(lines <= 25);
  CHECK(text.find('\r') == std::string::npos);
  CHECK(text.find("step 1/1000") != std::string::npos);
  CHECK(text.find("step 1000/1000 (100%)  loss 3.2500  lr 3.00e-04  1234 tok/s") != std::string::npos);
  CHECK(text.find("val 3.10") != std::string::npos);
  CHECK(text.find("eval: val loss 3.50\n") != std::string::npos);
}

TEST_CASE("optimizer: clipping inside the AdamW step equals clip_grad_norm then a plain step") {
  Generator gen(5);
  Tensor a0 = randn({4, 3}, gen, kFloat64), b0 = randn({6}, gen, kFloat64);
  Tensor a1 = clone(a0).set_requires_grad(true), b1 = clone(b0).set_requires_grad(true);
  Tensor a2 = clone(a0).set_requires_grad(true), b2 = clone(b0).set_requires_grad(true);
  AdamW host_clip({{"a", a1, true}, {"b", b1, false}}, 0.9, 0.95, 1e-8, 0.1);
  AdamW fused({{"a", a2, true}, {"b", b2, false}}, 0.9, 0.95, 1e-8, 0.1);
  for (int s = 0; s < 3; ++s) {
    two_param_backward(a1, b1);
    two_param_backward(a2, b2);
    const double norm = clip_grad_norm({a1, b1}, 0.5);
    Tensor sq = grad_norm_squared({a2, b2});
    REQUIRE(sq.defined());
    CHECK(std::sqrt(sq.item()) == doctest::Approx(norm).epsilon(1e-14));
    CHECK(norm > 0.5);  // the clip is active
    host_clip.step(1e-2);
    fused.step(1e-2, sq, 0.5);
    zero_grad({a1, b1, a2, b2});
  }
  CHECK(test::max_abs_diff(a1, a2) < 1e-14);
  CHECK(test::max_abs_diff(b1, b2) < 1e-14);
}

TEST_CASE("optimizer: a non-finite gradient norm leaves parameters and moments unchanged") {
  Tensor p = Tensor::from_vector({1.0, 2.0}, {2}, kFloat64).set_requires_grad(true);
  AdamW opt({{"p", p, true}}, 0.9, 0.95, 1e-8, 0.1);
  for (double bad : {INFINITY, NAN}) {
    p.set_grad(Tensor::from_vector({bad, 1.0}, {2}, kFloat64));
    opt.step(0.1, grad_norm_squared({p}), 1.0);
    CHECK(p.to_double_vector() == std::vector<double>{1.0, 2.0});
    for (const auto& [name, t] : opt.state_tensors()) CHECK(t.to_double_vector() == std::vector<double>{0.0, 0.0});
  }
}
