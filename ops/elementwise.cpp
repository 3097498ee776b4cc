// ops/elementwise.cpp — see elementwise.h.
#include "ops/elementwise.h"

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "core/dispatch.h"
#include "ops/creation.h"
#include "ops/reduce.h"
#include "ops/shape_ops.h"

namespace gdn {

namespace {

void check_float(const Tensor& x, const char* name) {
  GDN_CHECK(is_floating(x.dtype()), "{}: expected a floating tensor, got {}", name, x.str());
}

void check_pair(const Tensor& a, const Tensor& b, const char* name) {
  check_float(a, name);
  GDN_CHECK(a.dtype() == b.dtype(), "{}: dtype mismatch {} vs {}", name, a.dtype(), b.dtype());
  GDN_CHECK(a.device() == b.device(), "{}: device mismatch {} vs {}", name, a.device(), b.device());
}

Tensor unary_op(UnaryOp op, const char* name, const Tensor& x) {
  check_float(x, name);
  Tensor y = empty_like(x);
  kernels::unary(x.device(), op, y, x);
  record(name, {y}, {x}, [op, x = x.detach(), y = y.detach()](const TensorList& g) -> TensorList {
    Tensor dx = empty_like(x);
    kernels::unary_backward(x.device(), op, dx, g[0], x, y);
    return {dx};
  });
  return y;
}

Tensor binary_op(BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  check_pair(a, b, name);
  Shape shape = broadcast_shapes(a.shape(), b.shape());
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  kernels::binary(a.device(), op, out, broadcast_view(a, shape), broadcast_view(b, shape));
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  record(name, {out}, {a, b},
         [op, need_a, need_b, a = a.detach(), b = b.detach()](const TensorList& g) -> TensorList {
           const Tensor& dy = g[0];
           Tensor da, db;
           switch (op) {
             case BinaryOp::Add:
               if (need_a) da = sum_to_shape(dy, a.shape());
               if (need_b) db = sum_to_shape(dy, b.shape());
               break;
             case BinaryOp::Sub:
               if (need_a) da = sum_to_shape(dy, a.shape());
               if (need_b) db = sum_to_shape(neg(dy), b.shape());
               break;
             case BinaryOp::Mul:
               if (need_a) da = sum_to_shape(mul(dy, b), a.shape());
               if (need_b) db = sum_to_shape(mul(dy, a), b.shape());
               break;
             case BinaryOp::Div:
               if (need_a) da = sum_to_shape(div(dy, b), a.shape());
               if (need_b) db = sum_to_shape(neg(div(mul(dy, a), mul(b, b))), b.shape());
               break;
           }
           return {da, db};
         });
  return out;
}

Tensor scalar_op(ScalarOp op, const char* name, const Tensor& x, double s) {
  check_float(x, name);
  Tensor y = empty_like(x);
  kernels::scalar(x.device(), op, y, x, s);
  record(name, {y}, {x}, [op, s, x = x.detach()](const TensorList& g) -> TensorList {
    switch (op) {
      case ScalarOp::Add: return {g[0]};
      case ScalarOp::Mul: return {mul(g[0], s)};
      case ScalarOp::Pow: return {mul(g[0], mul(pow(x, s - 1.0), s))};
    }
    return {Tensor()};
  });
  return y;
}

}  // namespace

Tensor neg(const Tensor& x) { return unary_op(UnaryOp::Neg, "neg", x); }
Tensor exp(const Tensor& x) { return unary_op(UnaryOp::Exp, "exp", x); }
Tensor log(const Tensor& x) { return unary_op(UnaryOp::Log, "log", x); }
Tensor sqrt(const Tensor& x) { return unary_op(UnaryOp::Sqrt, "sqrt", x); }
Tensor rsqrt(const Tensor& x) { return unary_op(UnaryOp::Rsqrt, "rsqrt", x); }
Tensor sigmoid(const Tensor& x) { return unary_op(UnaryOp::Sigmoid, "sigmoid", x); }
Tensor silu(const Tensor& x) { return unary_op(UnaryOp::Silu, "silu", x); }
Tensor softplus(const Tensor& x) { return unary_op(UnaryOp::Softplus, "softplus", x); }
Tensor logsigmoid(const Tensor& x) { return unary_op(UnaryOp::LogSigmoid, "logsigmoid", x); }
Tensor tanh(const Tensor& x) { return unary_op(UnaryOp::Tanh, "tanh", x); }
Tensor abs(const Tensor& x) { return unary_op(UnaryOp::Abs, "abs", x); }

Tensor swiglu(const Tensor& a, const Tensor& b, std::optional<DType> out) {
  check_pair(a, b, "swiglu");
  GDN_CHECK(a.shape() == b.shape(), "swiglu: a {} and b {} must have one shape", shape_str(a.shape()),
            shape_str(b.shape()));
  const Tensor ac = contiguous(a), bc = contiguous(b);
  Tensor y = Tensor::empty(ac.shape(), output_dtype("swiglu", a, out), a.device());
  kernels::swiglu_forward(a.device(), y, ac, bc);
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  record("swiglu", {y}, {a, b},
         [need_a, need_b, a = ac.detach(), b = bc.detach()](const TensorList& g) -> TensorList {
           // da, db in a's dtype (bfloat16 a: bf16 gradients, the operands of its producer's bf16 GEMMs); dy in the
           // arithmetic type.
           Tensor da = empty_like(a), db = empty_like(b);
           kernels::swiglu_backward(a.device(), da, db, contiguous(to_dtype(g[0], arithmetic_dtype(a.dtype()))), a, b);
           return {need_a ? da : Tensor(), need_b ? db : Tensor()};
         });
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Add, "add", a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Sub, "sub", a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Mul, "mul", a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Div, "div", a, b); }

Tensor add(const Tensor& x, double s) { return scalar_op(ScalarOp::Add, "add_scalar", x, s); }
Tensor mul(const Tensor& x, double s) { return scalar_op(ScalarOp::Mul, "mul_scalar", x, s); }
Tensor pow(const Tensor& x, double p) { return scalar_op(ScalarOp::Pow, "pow", x, p); }

namespace {
void check_in_place(const Tensor& x, const char* name) {
  GDN_CHECK(!(GradMode::enabled() && x.requires_grad()),
            "{}: in-place update of a tensor that requires grad (use a NoGradGuard)", name);
}
}  // namespace

void add_scaled_(const Tensor& x, const Tensor& a, double s) {
  check_in_place(x, "add_scaled_");
  check_pair(x, a, "add_scaled_");
  GDN_CHECK(x.shape() == a.shape(), "add_scaled_: shape {} vs {}", shape_str(x.shape()), shape_str(a.shape()));
  Tensor scaled = empty_like(a);
  kernels::scalar(a.device(), ScalarOp::Mul, scaled, a, s);
  kernels::binary(x.device(), BinaryOp::Add, x, x, scaled);
}

void mul_(const Tensor& x, double s) {
  check_in_place(x, "mul_");
  kernels::scalar(x.device(), ScalarOp::Mul, x, x, s);
}

}  // namespace gdn
