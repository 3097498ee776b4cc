// autograd/gradcheck.h — finite-difference check of a backward pass, in float64.
//
// For a function f: inputs -> outputs, pick fixed random cotangents w_j (one per output) and the scalar
//   L(x) = sum_j <f(x)_j, w_j>.
// The analytic gradient dL/dx comes from one backward(outputs, w). The numeric one perturbs every element of every
// input that requires grad by +-eps and takes the central difference (L(x+eps) - L(x-eps)) / (2 eps).
// An element passes when |analytic - numeric| <= atol + rtol * |numeric| (relative error per element); the result
// names the first failing input and element and the worst errors seen. A random projection instead of the full
// Jacobian keeps the cost at 2 forward passes per input element while catching any wrong backward term with
// probability 1.
//
// Inputs must be float64 CPU tensors (they may be non-contiguous views). Used by every op test in tests/.
#pragma once

#include <functional>
#include <string>

#include "autograd/node.h"

namespace gdn {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-8;
  double rtol = 1e-5;
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // empty when ok; else the first failure and the worst errors
  double max_abs_error = 0;
  double max_rel_error = 0;
  int64_t elements_checked = 0;
};

using GradcheckFn = std::function<TensorList(const TensorList& inputs)>;

GradcheckResult gradcheck(const GradcheckFn& f, const TensorList& inputs, const GradcheckOptions& opts = {});

}  // namespace gdn
