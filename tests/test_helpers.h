// tests/test_helpers.h — shared helpers for the op tests: random fp64 inputs, non-contiguous views, a
// CHECK_GRADCHECK macro that prints gradcheck's located message on failure, and the skip of device-only cases.
#pragma once

#include <doctest/doctest.h>

#include <cstdio>
#include <functional>
#include <optional>
#include <string>

#include "autograd/gradcheck.h"
#include "ops/ops.h"
#include "train/device.h"

#ifndef GDN_WITH_CUDA
#define GDN_WITH_CUDA 0  // 1 when gdn_cuda is linked (its compile definition reaches the tests through gdn_train)
#endif
#if GDN_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace gdn::test {

// A float64 leaf with N(0, 1) entries that requires grad.
inline Tensor rand_leaf(const Shape& shape, Generator& gen, double scale = 1.0) {
  Tensor t = randn(shape, gen, kFloat64, kCPU, 0.0, scale);
  t.set_requires_grad(true);
  return t;
}

// A float64 leaf whose *view* is non-contiguous: the transpose of a random [shape[1], shape[0], ...] tensor.
inline Tensor rand_leaf_transposed(const Shape& shape, Generator& gen) {
  Shape swapped = shape;
  std::swap(swapped[0], swapped[1]);
  Tensor base = randn(swapped, gen, kFloat64);
  std::vector<int64_t> dims(shape.size());
  for (size_t i = 0; i < dims.size(); ++i) dims[i] = static_cast<int64_t>(i);
  std::swap(dims[0], dims[1]);
  Tensor view = base.as_strided(shape, {base.stride(1), base.stride(0)}, 0);
  if (shape.size() > 2) {
    Strides st = base.strides();
    std::swap(st[0], st[1]);
    view = base.as_strided(shape, st, 0);
  }
  view.set_requires_grad(true);
  return view;
}

// The message of the UserError that f throws, or "" when it throws none.
inline std::string user_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

// Prints the one line by which ctest reports a case as skipped: tests/CMakeLists.txt gives every discovered test
// SKIP_REGULAR_EXPRESSION "SKIPPED: ". No other output of the suite may contain that text.
inline void report_skipped(const std::string& why) {
  std::printf("SKIPPED: %s\n", why.c_str());
  std::fflush(stdout);
}

// The CUDA device with the backend registered, or nothing after printing the SKIPPED line when this build has no
// CUDA backend or no device is visible. A device that is visible but fails to start is an error, not a skip.
inline std::optional<Device> cuda_device_or_skip() {
  if (!cuda_compiled_in()) {
    report_skipped("this build has no CUDA backend (configure with -DGDN_CUDA=ON)");
    return std::nullopt;
  }
#if GDN_WITH_CUDA
  if (!cuda::cuda_available()) {
    report_skipped("no CUDA device is visible on this machine");
    return std::nullopt;
  }
#endif
  return init_device("cuda");
}

}  // namespace gdn::test

#define CHECK_GRADCHECK(...)                               \
  do {                                                     \
    ::gdn::GradcheckResult r_ = ::gdn::gradcheck(__VA_ARGS__); \
    CHECK_MESSAGE(r_.ok, r_.message);                      \
    CHECK(r_.elements_checked > 0);                        \
  } while (0)
