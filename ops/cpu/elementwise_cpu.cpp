// ops/cpu/elementwise_cpu.cpp — CPU kernels: fill, copy, unary (+ derivative), binary, scalar.
//
// Each math function is written once as a scalar expression; the loops come from cpu_loops.h. Numerically stable
// forms: sigmoid never evaluates exp of a large positive number, softplus(x) = max(x,0) + log1p(exp(-|x|)),
// logsigmoid(x) = min(x,0) - log1p(exp(-|x|)).
#include <cmath>

#include "core/dispatch.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/cpu_loops.h"

namespace gdn::cpu {

namespace {

template <typename T> T sigmoid_of(T x) {
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  T e = std::exp(x);
  return e / (T(1) + e);
}

template <typename T> T unary_value(UnaryOp op, T x) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Rsqrt: return T(1) / std::sqrt(x);
    case UnaryOp::Sigmoid: return sigmoid_of(x);
    case UnaryOp::Silu: return x * sigmoid_of(x);
    case UnaryOp::Softplus: return std::max(x, T(0)) + std::log1p(std::exp(-std::fabs(x)));
    case UnaryOp::LogSigmoid: return std::min(x, T(0)) - std::log1p(std::exp(-std::fabs(x)));
    case UnaryOp::Tanh: return std::tanh(x);
    case UnaryOp::Abs: return std::fabs(x);
  }
  return x;
}

// d op(x) / dx, given x and y = op(x).
template <typename T> T unary_derivative(UnaryOp op, T x, T y) {
  switch (op) {
    case UnaryOp::Neg: return T(-1);
    case UnaryOp::Exp: return y;
    case UnaryOp::Log: return T(1) / x;
    case UnaryOp::Sqrt: return T(0.5) / y;
    case UnaryOp::Rsqrt: return T(-0.5) * y * y * y;
    case UnaryOp::Sigmoid: return y * (T(1) - y);
    case UnaryOp::Silu: {
      T s = sigmoid_of(x);
      return s * (T(1) + x * (T(1) - s));
    }
    case UnaryOp::Softplus: return sigmoid_of(x);
    case UnaryOp::LogSigmoid: return sigmoid_of(-x);
    case UnaryOp::Tanh: return T(1) - y * y;
    case UnaryOp::Abs: return x > 0 ? T(1) : (x < 0 ? T(-1) : T(0));
  }
  return T(0);
}

template <typename T> T binary_value(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
  }
  return a;
}

template <typename T> T scalar_value(ScalarOp op, T x, T s) {
  switch (op) {
    case ScalarOp::Add: return x + s;
    case ScalarOp::Mul: return x * s;
    case ScalarOp::Pow: return std::pow(x, s);
  }
  return x;
}

void fill(const Tensor& out, double value) {
  dispatch_all(out.dtype(), [&](auto tag_) {
    using scalar_t = decltype(tag_);
    auto* o = out.data<scalar_t>();
    const scalar_t v = convert<scalar_t>(value);
    strided_for_each<1>({&out}, [&](const std::array<int64_t, 1>& off) { o[off[0]] = v; });
  });
}

void copy(const Tensor& out, const Tensor& in) {
  GDN_CHECK(out.shape() == in.shape(), "copy: {} <- {}", shape_str(out.shape()), shape_str(in.shape()));
  dispatch_all(out.dtype(), [&](auto tag_) {
    using scalar_t = decltype(tag_);
    using out_t = scalar_t;
    auto* o = out.data<out_t>();
    dispatch_all(in.dtype(), [&](auto tag_) {
    using scalar_t = decltype(tag_);
      const auto* x = in.data<scalar_t>();
      strided_for_each<2>({&out, &in}, [&](const std::array<int64_t, 2>& off) {
        o[off[0]] = convert<out_t>(x[off[1]]);
      });
    });
  });
}

void unary(UnaryOp op, const Tensor& out, const Tensor& in) {
  dispatch_float(out.dtype(), "unary", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    auto* o = out.data<scalar_t>();
    const auto* x = in.data<scalar_t>();
    strided_for_each<2>({&out, &in}, [&](const std::array<int64_t, 2>& off) {
      o[off[0]] = unary_value(op, x[off[1]]);
    });
  });
}

void unary_backward(UnaryOp op, const Tensor& dx, const Tensor& dy, const Tensor& x, const Tensor& y) {
  dispatch_float(dx.dtype(), "unary_backward", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    auto* o = dx.data<scalar_t>();
    const auto* g = dy.data<scalar_t>();
    const auto* xp = x.data<scalar_t>();
    const auto* yp = y.data<scalar_t>();
    strided_for_each<4>({&dx, &dy, &x, &y}, [&](const std::array<int64_t, 4>& off) {
      o[off[0]] = g[off[1]] * unary_derivative(op, xp[off[2]], yp[off[3]]);
    });
  });
}

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  dispatch_float(out.dtype(), "binary", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    auto* o = out.data<scalar_t>();
    const auto* ap = a.data<scalar_t>();
    const auto* bp = b.data<scalar_t>();
    strided_for_each<3>({&out, &a, &b}, [&](const std::array<int64_t, 3>& off) {
      o[off[0]] = binary_value(op, ap[off[1]], bp[off[2]]);
    });
  });
}

void scalar(ScalarOp op, const Tensor& out, const Tensor& in, double s) {
  dispatch_float(out.dtype(), "scalar", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    auto* o = out.data<scalar_t>();
    const auto* x = in.data<scalar_t>();
    const auto sv = static_cast<scalar_t>(s);
    strided_for_each<2>({&out, &in}, [&](const std::array<int64_t, 2>& off) {
      o[off[0]] = scalar_value(op, x[off[1]], sv);
    });
  });
}

}  // namespace

void register_elementwise_kernels(KernelTable& t) {
  t.fill = fill;
  t.copy = copy;
  t.unary = unary;
  t.unary_backward = unary_backward;
  t.binary = binary;
  t.scalar = scalar;
}

}  // namespace gdn::cpu
