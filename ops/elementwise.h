// ops/elementwise.h — differentiable elementwise math with NumPy broadcasting.
//
// Forward: one kernel call (ops/cpu/elementwise_cpu.cpp on the CPU). Backward:
//   unary:   dx = dy * f'(x)               (one unary_backward kernel; saves x and y)
//   a + b:   da = sum_to(dy, a), db = sum_to(dy, b)
//   a * b:   da = sum_to(dy * b, a), db = sum_to(dy * a, b)
//   a / b:   da = sum_to(dy / b, a), db = -sum_to(dy * a / b^2, b)
//   x ^ p:   dx = dy * p * x^(p-1)
// where sum_to reduces the broadcast dimensions away (ops/reduce.h).
#pragma once

#include <optional>

#include "core/tensor.h"

namespace gdn {

Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor silu(const Tensor& x);        // x * sigmoid(x)
Tensor softplus(const Tensor& x);    // log(1 + e^x)
Tensor logsigmoid(const Tensor& x);  // log(sigmoid(x))
Tensor tanh(const Tensor& x);
Tensor abs(const Tensor& x);

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);

// silu(a) * b in one kernel each way (SwiGLU's activation): a and b of one shape, no broadcasting. Backward: one
// swiglu_backward kernel, da = dy * b * silu'(a) and db = dy * silu(a) (saves a and b, not silu(a)).
// out: y's dtype (unset: a's; bfloat16 for float32 a, b where a bf16 GEMM is its only reader, ops/creation.h). a and
// b may be bfloat16 (the gate | up products stored in bf16, linear_multi's out): float32 arithmetic, y in float32 or
// bfloat16, and their gradients in bfloat16.
Tensor swiglu(const Tensor& a, const Tensor& b, std::optional<DType> out = std::nullopt);

Tensor add(const Tensor& x, double s);
Tensor mul(const Tensor& x, double s);
Tensor pow(const Tensor& x, double p);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator+(const Tensor& x, double s) { return add(x, s); }
inline Tensor operator+(double s, const Tensor& x) { return add(x, s); }
inline Tensor operator-(const Tensor& x, double s) { return add(x, -s); }
inline Tensor operator-(double s, const Tensor& x) { return add(neg(x), s); }
inline Tensor operator*(const Tensor& x, double s) { return mul(x, s); }
inline Tensor operator*(double s, const Tensor& x) { return mul(x, s); }
inline Tensor operator/(const Tensor& x, double s) { return mul(x, 1.0 / s); }

// In place, outside autograd (optimizers, gradient clipping): x += a * s, x *= s. Refuse tensors that require grad
// while grad mode is on.
void add_scaled_(const Tensor& x, const Tensor& a, double s);
void mul_(const Tensor& x, double s);

}  // namespace gdn
