// ops/cpu/elementwise_cpu.cpp — CPU kernels: fill, copy, unary (+ derivative), binary, scalar, SwiGLU's activation.
//
// Each math function is written once as a scalar expression; the loops come from cpu_loops.h. Numerically stable
// forms: sigmoid never evaluates exp of a large positive number, softplus(x) = max(x,0) + log1p(exp(-|x|)),
// logsigmoid(x) = min(x,0) - log1p(exp(-|x|)).
#include "ops/cpu/eigen.h"  // first: see that header

#include <cmath>
#include <cstring>

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

// Calls body(f) with f the scalar function of `op`, a distinct lambda type per op: the loops instantiated inside
// body are specialised (and vectorised) per op instead of switching per element.
template <typename T, typename Body> void with_unary_op(UnaryOp op, Body&& body) {
  switch (op) {
    case UnaryOp::Neg: return body([](T x) { return -x; });
    case UnaryOp::Exp: return body([](T x) { return std::exp(x); });
    case UnaryOp::Log: return body([](T x) { return std::log(x); });
    case UnaryOp::Sqrt: return body([](T x) { return std::sqrt(x); });
    case UnaryOp::Rsqrt: return body([](T x) { return T(1) / std::sqrt(x); });
    case UnaryOp::Sigmoid: return body([](T x) { return sigmoid_of(x); });
    case UnaryOp::Silu: return body([](T x) { return x * sigmoid_of(x); });
    case UnaryOp::Softplus: return body([](T x) { return std::max(x, T(0)) + std::log1p(std::exp(-std::fabs(x))); });
    case UnaryOp::LogSigmoid:
      return body([](T x) { return std::min(x, T(0)) - std::log1p(std::exp(-std::fabs(x))); });
    case UnaryOp::Tanh: return body([](T x) { return std::tanh(x); });
    case UnaryOp::Abs: return body([](T x) { return std::fabs(x); });
  }
}

// d op(x) / dx as f(x, y) with y = op(x) (cheaper for exp, sigmoid, tanh, sqrt).
template <typename T, typename Body> void with_unary_derivative(UnaryOp op, Body&& body) {
  switch (op) {
    case UnaryOp::Neg: return body([](T, T) { return T(-1); });
    case UnaryOp::Exp: return body([](T, T y) { return y; });
    case UnaryOp::Log: return body([](T x, T) { return T(1) / x; });
    case UnaryOp::Sqrt: return body([](T, T y) { return T(0.5) / y; });
    case UnaryOp::Rsqrt: return body([](T, T y) { return T(-0.5) * y * y * y; });
    case UnaryOp::Sigmoid: return body([](T, T y) { return y * (T(1) - y); });
    case UnaryOp::Silu:
      return body([](T x, T) {
        T s = sigmoid_of(x);
        return s * (T(1) + x * (T(1) - s));
      });
    case UnaryOp::Softplus: return body([](T x, T) { return sigmoid_of(x); });
    case UnaryOp::LogSigmoid: return body([](T x, T) { return sigmoid_of(-x); });
    case UnaryOp::Tanh: return body([](T, T y) { return T(1) - y * y; });
    case UnaryOp::Abs: return body([](T x, T) { return x > 0 ? T(1) : (x < 0 ? T(-1) : T(0)); });
  }
}

template <typename T, typename Body> void with_binary_op(BinaryOp op, Body&& body) {
  switch (op) {
    case BinaryOp::Add: return body([](T a, T b) { return a + b; });
    case BinaryOp::Sub: return body([](T a, T b) { return a - b; });
    case BinaryOp::Mul: return body([](T a, T b) { return a * b; });
    case BinaryOp::Div: return body([](T a, T b) { return a / b; });
  }
}

template <typename T, typename Body> void with_scalar_op(ScalarOp op, T s, Body&& body) {
  switch (op) {
    case ScalarOp::Add: return body([s](T x) { return x + s; });
    case ScalarOp::Mul: return body([s](T x) { return x * s; });
    case ScalarOp::Pow:
      if (s == T(2)) return body([](T x) { return x * x; });
      return body([s](T x) { return std::pow(x, s); });
  }
}

// Contiguous ranges of the exp-based ops go through Eigen's vectorised exp/tanh/logistic: glibc's vector math
// is only used by GCC under -ffast-math, which we do not want. Returns false for ops left to the scalar loop.
template <typename T> bool unary_vectorised(UnaryOp op, T* o, const T* x, int64_t n) {
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  Eigen::Map<const Array> in(x, n);
  Eigen::Map<Array> out(o, n);
  switch (op) {
    case UnaryOp::Exp: out = in.exp(); return true;
    case UnaryOp::Sigmoid: out = in.logistic(); return true;
    case UnaryOp::Silu: out = in * in.logistic(); return true;
    case UnaryOp::Tanh: out = in.tanh(); return true;
    default: return false;
  }
}

template <typename T> bool unary_backward_vectorised(UnaryOp op, T* dx, const T* dy, const T* x, int64_t n) {
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  Eigen::Map<const Array> g(dy, n), in(x, n);
  Eigen::Map<Array> out(dx, n);
  switch (op) {
    case UnaryOp::Silu: {
      Array s = in.logistic();
      out = g * s * (T(1) + in * (T(1) - s));
      return true;
    }
    case UnaryOp::Softplus: out = g * in.logistic(); return true;
    case UnaryOp::LogSigmoid: out = g * (-in).logistic(); return true;
    default: return false;
  }
}

void fill(const Tensor& out, double value) {
  dispatch_all(out.dtype(), [&](auto tag_) {
    using T = decltype(tag_);
    T* o = out.data<T>();
    const T v = convert<T>(value);
    if (out.is_contiguous()) {
      parallel_for(out.numel(), kParallelGrain, [&](int64_t b, int64_t e) { std::fill(o + b, o + e, v); });
    } else {
      strided_for_each<1>({&out}, [&](const std::array<int64_t, 1>& off) { o[off[0]] = v; });
    }
  });
}

void copy(const Tensor& out, const Tensor& in) {
  GDN_CHECK(out.shape() == in.shape(), "copy: {} <- {}", shape_str(out.shape()), shape_str(in.shape()));
  if (out.dtype() == in.dtype() && out.is_contiguous() && in.is_contiguous()) {
    const size_t bytes = element_size(out.dtype());
    auto* o = static_cast<char*>(out.raw_data());
    const auto* x = static_cast<const char*>(in.raw_data());
    parallel_for(out.numel(), kParallelGrain, [&](int64_t b, int64_t e) {
      std::memcpy(o + b * bytes, x + b * bytes, (e - b) * bytes);
    });
    return;
  }
  dispatch_all(out.dtype(), [&](auto out_tag) {
    using out_t = decltype(out_tag);
    out_t* o = out.data<out_t>();
    dispatch_all(in.dtype(), [&](auto in_tag) {
      using in_t = decltype(in_tag);
      const in_t* x = in.data<in_t>();
      strided_rows<2>({&out, &in}, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
        out_t* orow = o + off[0];
        const in_t* xrow = x + off[1];
        if (st[0] == 1 && st[1] == 1) {
          for (int64_t j = 0; j < n; ++j) orow[j] = convert<out_t>(xrow[j]);
        } else {
          for (int64_t j = 0; j < n; ++j) orow[j * st[0]] = convert<out_t>(xrow[j * st[1]]);
        }
      });
    });
  });
}

void unary(UnaryOp op, const Tensor& out, const Tensor& in) {
  dispatch_float(out.dtype(), "unary", [&](auto tag_) {
    using T = decltype(tag_);
    T* o = out.data<T>();
    const T* x = in.data<T>();
    with_unary_op<T>(op, [&](auto f) {
      if (all_contiguous_same_shape<2>({&out, &in})) {
        parallel_for(out.numel(), kParallelGrain, [&](int64_t b, int64_t e) {
          if (unary_vectorised(op, o + b, x + b, e - b)) return;
#pragma omp simd
          for (int64_t i = b; i < e; ++i) o[i] = f(x[i]);
        });
      } else {
        strided_for_each<2>({&out, &in}, [&](const std::array<int64_t, 2>& off) { o[off[0]] = f(x[off[1]]); });
      }
    });
  });
}

void unary_backward(UnaryOp op, const Tensor& dx, const Tensor& dy, const Tensor& x, const Tensor& y) {
  dispatch_float(dx.dtype(), "unary_backward", [&](auto tag_) {
    using T = decltype(tag_);
    T* o = dx.data<T>();
    const T* g = dy.data<T>();
    const T* xp = x.data<T>();
    const T* yp = y.data<T>();
    with_unary_derivative<T>(op, [&](auto df) {
      if (all_contiguous_same_shape<4>({&dx, &dy, &x, &y})) {
        parallel_for(dx.numel(), kParallelGrain, [&](int64_t b, int64_t e) {
          if (unary_backward_vectorised(op, o + b, g + b, xp + b, e - b)) return;
#pragma omp simd
          for (int64_t i = b; i < e; ++i) o[i] = g[i] * df(xp[i], yp[i]);
        });
      } else {
        strided_for_each<4>({&dx, &dy, &x, &y}, [&](const std::array<int64_t, 4>& off) {
          o[off[0]] = g[off[1]] * df(xp[off[2]], yp[off[3]]);
        });
      }
    });
  });
}

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  dispatch_float(out.dtype(), "binary", [&](auto tag_) {
    using T = decltype(tag_);
    T* o = out.data<T>();
    const T* ap = a.data<T>();
    const T* bp = b.data<T>();
    with_binary_op<T>(op, [&](auto f) {
      if (all_contiguous_same_shape<3>({&out, &a, &b})) {
        parallel_for(out.numel(), kParallelGrain, [&](int64_t lo, int64_t hi) {
#pragma omp simd
          for (int64_t i = lo; i < hi; ++i) o[i] = f(ap[i], bp[i]);
        });
      } else {
        strided_rows<3>({&out, &a, &b}, [&](const std::array<int64_t, 3>& off, int64_t n,
                                            const std::array<int64_t, 3>& st) {
          for (int64_t j = 0; j < n; ++j) o[off[0] + j * st[0]] = f(ap[off[1] + j * st[1]], bp[off[2] + j * st[2]]);
        });
      }
    });
  });
}

void scalar(ScalarOp op, const Tensor& out, const Tensor& in, double s) {
  dispatch_float(out.dtype(), "scalar", [&](auto tag_) {
    using T = decltype(tag_);
    T* o = out.data<T>();
    const T* x = in.data<T>();
    with_scalar_op<T>(op, static_cast<T>(s), [&](auto f) {
      if (all_contiguous_same_shape<2>({&out, &in})) {
        parallel_for(out.numel(), kParallelGrain, [&](int64_t b, int64_t e) {
#pragma omp simd
          for (int64_t i = b; i < e; ++i) o[i] = f(x[i]);
        });
      } else {
        strided_for_each<2>({&out, &in}, [&](const std::array<int64_t, 2>& off) { o[off[0]] = f(x[off[1]]); });
      }
    });
  });
}

// SwiGLU: one pass each way, one element per iteration (the same expressions as the CUDA twin). Storage may be
// bfloat16 with float32 arithmetic: a, b (and da, db) the FFN's gate | up products under bf16 products, y the down
// projection's operand; each stored value rounded once. dy is in the arithmetic type.
void swiglu_forward(const Tensor& y, const Tensor& a, const Tensor& b) {
  GDN_CHECK(all_contiguous_same_shape<3>({&y, &a, &b}) && a.dtype() == b.dtype(),
            "swiglu: y, a, b must be contiguous and of one shape, a and b of one dtype");
  dispatch_float(arithmetic_dtype(a.dtype()), "swiglu_forward", [&](auto tag_) {
    using T = decltype(tag_);
    with_storage<T>(a, [&](auto* ap) {
      const auto* bp = static_cast<decltype(ap)>(b.raw_data());
      with_storage<T>(y, [&](auto* o) {
        using Y = std::remove_pointer_t<decltype(o)>;
        parallel_for(y.numel(), kParallelGrain, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) {
            const T x = in_value<T>(ap[i]);
            o[i] = out_value<Y>(x * sigmoid_of(x) * in_value<T>(bp[i]));
          }
        });
      });
    });
  });
}

void swiglu_backward(const Tensor& da, const Tensor& db, const Tensor& dy, const Tensor& a, const Tensor& b) {
  GDN_CHECK(all_contiguous_same_shape<5>({&da, &db, &dy, &a, &b}) && a.dtype() == b.dtype() &&
                da.dtype() == a.dtype() && db.dtype() == a.dtype(),
            "swiglu_backward: da, db, dy, a, b must be contiguous and of one shape, da, db, a, b of one dtype");
  dispatch_float(dy.dtype(), "swiglu_backward", [&](auto tag_) {
    using T = decltype(tag_);
    const T* g = dy.data<T>();
    with_storage<T>(a, [&](auto* ap) {
      using A = std::remove_pointer_t<decltype(ap)>;
      const A* bp = static_cast<const A*>(b.raw_data());
      A* dap = static_cast<A*>(da.raw_data());
      A* dbp = static_cast<A*>(db.raw_data());
      parallel_for(dy.numel(), kParallelGrain, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const T x = in_value<T>(ap[i]), s = sigmoid_of(x);
          dap[i] = out_value<A>(g[i] * in_value<T>(bp[i]) * (s * (T(1) + x * (T(1) - s))));
          dbp[i] = out_value<A>(g[i] * (x * s));
        }
      });
    });
  });
}

}  // namespace

void copy_to_bf16(const std::vector<Tensor>& outs, const std::vector<Tensor>& ins) {
  GDN_CHECK(outs.size() == ins.size(), "copy_to_bf16: {} outputs for {} inputs", outs.size(), ins.size());
  for (size_t i = 0; i < outs.size(); ++i) {
    GDN_CHECK(outs[i].dtype() == kBFloat16 && ins[i].dtype() == kFloat32 && outs[i].is_contiguous() &&
                  ins[i].is_contiguous() && outs[i].numel() == ins[i].numel(),
              "copy_to_bf16: tensor {}: {} <- {} (contiguous bfloat16 <- float32 of equal numel)", i, outs[i].str(),
              ins[i].str());
    copy(outs[i].as_strided(ins[i].shape(), ins[i].strides(), outs[i].offset()), ins[i]);
  }
}

void register_elementwise_kernels(KernelTable& t) {
  t.fill = fill;
  t.copy = copy;
  t.copy_to_bf16 = copy_to_bf16;
  t.unary = unary;
  t.unary_backward = unary_backward;
  t.binary = binary;
  t.scalar = scalar;
  t.swiglu_forward = swiglu_forward;
  t.swiglu_backward = swiglu_backward;
}

}  // namespace gdn::cpu
