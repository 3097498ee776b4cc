// tests/test_cuda_kernels_basic.cpp — the harness cases of the elementwise and reduction kernels (see
// tests/test_cuda_kernels.cpp for the machinery and the doctest cases that run them): fill, copy (strided, broadcast,
// dtype conversion incl. bfloat16), copy_to_bf16, unary and its derivative, broadcasting binary, scalar, swiglu,
// sum_to, max_dim, scatter_dim; the GEMM, nn and optimizer kernels are in tests/test_cuda_kernels_nn.cpp.
// Tolerances (normwise): float64 1e-12, float32 1e-5; copies, fills, gathers and integer outputs exact.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "tests/cuda_harness.h"
#include "tests/test_helpers.h"

namespace gdn::harness {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// views

// The [rows, cols] transpose (strides (1, rows)) of a contiguous [cols, rows] matrix.
Tensor transposed(const Tensor& base) { return base.as_strided({base.size(1), base.size(0)}, {1, base.size(1)}, 0); }

// A [rows, cols] output view with strides (2, 2*rows + 1) and offset 1 over a random [cols, 2*rows + 1] base:
// column-major with every other element skipped, so half the storage lies outside the view.
Tensor sparse_out_view(Ctx& c, int64_t rows, int64_t cols) {
  Tensor base = c.normal({cols, 2 * rows + 1});
  return base.as_strided({rows, cols}, {2, 2 * rows + 1}, 1);
}

// ---------------------------------------------------------------------------------------------------------------
// elementwise: fill, copy, unary, unary_backward, binary, scalar

void case_fill(Ctx& c) {
  for (double value : {2.5, -0.0625}) {
    c.run(fmt::format("[37,100] value {}", value), [&] {
      Tensor o = Ctx::out({37, 100}, c.dt), og = c.gpu(o);
      cpu_kernels().fill(o, value);
      need_cuda(c.under_test().fill, "fill")(og, value);
      c.compare("out", og, o, 0.0);
    });
  }
  c.run("[37,100] strided out", [&] {
    Tensor o = sparse_out_view(c, 37, 100), og = c.gpu(o);
    cpu_kernels().fill(o, -3.25);
    need_cuda(c.under_test().fill, "fill")(og, -3.25);
    c.compare("out", og, o, 0.0);
    c.compare_outside_view("out", og, o);
  });
  c.run("[1]", [&] {
    Tensor o = Ctx::out({1}, c.dt), og = c.gpu(o);
    cpu_kernels().fill(o, 1.5);
    need_cuda(c.under_test().fill, "fill")(og, 1.5);
    c.compare("out", og, o, 0.0);
  });
  if (c.dt == kFloat64) {  // integer outputs: once, in the float64 pass
    for (DType idt : {kInt32, kInt64}) {
      c.run(fmt::format("[37,100] {}", dtype_name(idt)), [&] {
        Tensor o = Ctx::out({37, 100}, idt), og = c.gpu(o);
        cpu_kernels().fill(o, 7.0);
        need_cuda(c.under_test().fill, "fill")(og, 7.0);
        c.compare("out", og, o, 0.0);
      });
    }
  }
}

void case_copy(Ctx& c) {
  auto both = [&](const Tensor& o, const Tensor& in) {
    Tensor og = c.gpu(o), ig = c.gpu(in);
    cpu_kernels().copy(o, in);
    need_cuda(c.under_test().copy, "copy")(og, ig);
    c.compare("out", og, o, 0.0);  // a copy is exact, conversions round the same way
    if (!o.is_contiguous()) c.compare_outside_view("out", og, o);
  };
  c.run("[37,100] contiguous", [&] { both(Ctx::out({37, 100}, c.dt), c.normal({37, 100})); });
  c.run("[37,100] transposed in", [&] { both(Ctx::out({37, 100}, c.dt), transposed(c.normal({100, 37}))); });
  c.run("[37,100] broadcast in (stride 0)", [&] {
    both(Ctx::out({37, 100}, c.dt), c.normal({100}).as_strided({37, 100}, {0, 1}, 0));
  });
  c.run("[37,100] strided out", [&] { both(sparse_out_view(c, 37, 100), c.normal({37, 100})); });
  c.run("[70000,3] transposed in (more rows than one grid column)",
        [&] { both(Ctx::out({70000, 3}, c.dt), transposed(c.normal({3, 70000}))); });
  c.run("[2,65,3,33] permuted in (0,2,1,3)", [&] {
    Tensor base = c.normal({2, 3, 65, 33});
    both(Ctx::out({2, 65, 3, 33}, c.dt), permute(base, {0, 2, 1, 3}));
  });
  c.run("[37,100] slice step 3 in", [&] { both(Ctx::out({37, 34}, c.dt), slice(c.normal({37, 100}), 1, 0, 100, 3)); });
  const DType other = c.dt == kFloat32 ? kFloat64 : kFloat32;
  c.run(fmt::format("[37,100] {} -> {}", dtype_name(c.dt), dtype_name(other)), [&] {
    both(Ctx::out({37, 100}, other), c.normal({37, 100}, 3.0));
  });
  c.run(fmt::format("[37,100] transposed {} -> {}", dtype_name(other), dtype_name(c.dt)), [&] {
    both(Ctx::out({37, 100}, c.dt), transposed(Ctx::with_dtype(c.normal({100, 37}), other)));
  });
  if (c.dt == kFloat32) {
    // [37,100]: contiguous, four elements per thread (float4 in); [5,7]: 35 elements, the general kernel.
    c.run("[37,100] float32 -> bfloat16", [&] { both(Ctx::out({37, 100}, kBFloat16), c.normal({37, 100}, 5.0)); });
    c.run("[5,7] float32 -> bfloat16", [&] { both(Ctx::out({5, 7}, kBFloat16), c.normal({5, 7}, 5.0)); });
    c.run("[37,100] bfloat16 -> float32", [&] {
      both(Ctx::out({37, 100}, kFloat32), Ctx::with_dtype(c.normal({37, 100}, 5.0), kBFloat16));
    });
  }
  c.run(fmt::format("[1000] int32 -> {}", dtype_name(c.dt)), [&] {
    both(Ctx::out({1000}, c.dt), c.ids({1000}, 50000, kInt32));
  });
  if (c.dt == kFloat64) {
    c.run("[1000] int64 -> int32", [&] { both(Ctx::out({1000}, kInt32), c.ids({1000}, 50000, kInt64)); });
    c.run("[1000] int32 -> int64", [&] { both(Ctx::out({1000}, kInt64), c.ids({1000}, 50000, kInt32)); });
  }
}

struct UnaryInfo {
  UnaryOp op;
  const char* name;
  bool positive;  // log, sqrt, rsqrt: inputs in [0.5, 3]
};
const UnaryInfo kUnaryOps[] = {
    {UnaryOp::Neg, "neg", false},          {UnaryOp::Exp, "exp", false},
    {UnaryOp::Log, "log", true},           {UnaryOp::Sqrt, "sqrt", true},
    {UnaryOp::Rsqrt, "rsqrt", true},       {UnaryOp::Sigmoid, "sigmoid", false},
    {UnaryOp::Silu, "silu", false},        {UnaryOp::Softplus, "softplus", false},
    {UnaryOp::LogSigmoid, "logsigmoid", false}, {UnaryOp::Tanh, "tanh", false},
    {UnaryOp::Abs, "abs", false},
};

// A unary input: positive for log/sqrt/rsqrt, else N(0, scale^2); [rows, cols] or its transposed view.
Tensor unary_input(Ctx& c, const UnaryInfo& u, int64_t rows, int64_t cols, double scale, bool transpose) {
  const Shape s = transpose ? Shape{cols, rows} : Shape{rows, cols};
  Tensor x = u.positive ? c.uniform(s, 0.5, 3.0) : c.normal(s, scale);
  return transpose ? transposed(x) : x;
}

// Several float32 tensors into bfloat16 in one call: sizes with and without a multiple of 4 (the row tails), an empty
// one, a single element, and one starting at an odd offset of its storage (no float4 there).
void case_copy_to_bf16(Ctx& c) {
  if (c.dt != kFloat32) return;
  c.run("sizes 3700, 35, 0, 1, 1024 at offset 1, 65536", [&] {
    std::vector<Tensor> ins = {c.normal({37, 100}, 5.0), c.normal({5, 7}), c.normal({0}), c.normal({1}),
                               c.normal({1025}).as_strided({1024}, {1}, 1), c.normal({256, 256}, 0.01)};
    std::vector<Tensor> outs, outs_gpu, ins_gpu;
    for (const Tensor& x : ins) {
      outs.push_back(Ctx::out(x.shape(), kBFloat16));
      outs_gpu.push_back(c.gpu(outs.back()));
      ins_gpu.push_back(c.gpu(x));
    }
    cpu_kernels().copy_to_bf16(outs, ins);
    need_cuda(c.under_test().copy_to_bf16, "copy_to_bf16")(outs_gpu, ins_gpu);
    for (size_t i = 0; i < outs.size(); ++i) c.compare(fmt::format("out {}", i), outs_gpu[i], outs[i], 0.0);
  });
}

void case_unary(Ctx& c) {
  for (const UnaryInfo& u : kUnaryOps) {
    // scale 12 reaches the saturated ranges of sigmoid/softplus/logsigmoid/tanh (|x| up to ~50).
    for (auto [tag, scale, tin, tout] : {std::tuple{"[37,100]", 2.0, false, false},
                                         std::tuple{"[37,100] wide range", 12.0, false, false},
                                         std::tuple{"[37,100] transposed in", 2.0, true, false},
                                         std::tuple{"[37,100] strided out", 2.0, false, true}}) {
      if (u.op == UnaryOp::Exp && scale > 3) continue;  // exp(50) only measures the largest element
      c.run(fmt::format("{} {}", u.name, tag), [&] {
        Tensor x = unary_input(c, u, 37, 100, scale, tin);
        Tensor o = tout ? sparse_out_view(c, 37, 100) : Ctx::out({37, 100}, c.dt);
        Tensor og = c.gpu(o);
        cpu_kernels().unary(u.op, o, x);
        need_cuda(c.under_test().unary, "unary")(u.op, og, c.gpu(x));
        c.compare("out", og, o, c.simple());
        if (tout) c.compare_outside_view("out", og, o);
      });
    }
  }
}

void case_unary_backward(Ctx& c) {
  for (const UnaryInfo& u : kUnaryOps) {
    for (auto [tag, scale, strided] : {std::tuple{"[37,100]", 2.0, false}, std::tuple{"[37,100] wide range", 12.0, false},
                                       std::tuple{"[37,100] transposed inputs", 2.0, true}}) {
      if (u.op == UnaryOp::Exp && scale > 3) continue;
      c.run(fmt::format("{} {}", u.name, tag), [&] {
        Tensor x = unary_input(c, u, 37, 100, scale, strided);
        Tensor y = Ctx::out({37, 100}, c.dt);
        cpu_kernels().unary(u.op, y, x);  // y = op(x), the same bytes on both sides
        if (strided) y = transposed(Ctx::with_dtype(transposed(y), c.dt));
        Tensor dy = strided ? transposed(c.normal({100, 37})) : c.normal({37, 100});
        Tensor dx = Ctx::out({37, 100}, c.dt), dxg = c.gpu(dx);
        cpu_kernels().unary_backward(u.op, dx, dy, x, y);
        need_cuda(c.under_test().unary_backward, "unary_backward")(u.op, dxg, c.gpu(dy), c.gpu(x), c.gpu(y));
        c.compare("dx", dxg, dx, c.simple());
      });
    }
  }
}

void case_binary(Ctx& c) {
  const std::pair<BinaryOp, const char*> ops[] = {
      {BinaryOp::Add, "add"}, {BinaryOp::Sub, "sub"}, {BinaryOp::Mul, "mul"}, {BinaryOp::Div, "div"}};
  for (auto [op, name] : ops) {
    auto both = [&](const Tensor& o, const Tensor& a, const Tensor& b) {
      Tensor og = c.gpu(o);
      cpu_kernels().binary(op, o, a, b);
      need_cuda(c.under_test().binary, "binary")(op, og, c.gpu(a), c.gpu(b));
      c.compare("out", og, o, c.simple());
      if (!o.is_contiguous()) c.compare_outside_view("out", og, o);
    };
    // b in [0.5, 2] (a divisor far from 0 for div; any values are valid for the other ops).
    c.run(fmt::format("{} [37,100]", name), [&] {
      both(Ctx::out({37, 100}, c.dt), c.normal({37, 100}), c.uniform({37, 100}, 0.5, 2.0));
    });
    c.run(fmt::format("{} [37,100] = [37,1] op [1,100] broadcast (stride 0)", name), [&] {
      Tensor a = c.normal({37}).as_strided({37, 100}, {1, 0}, 0);
      Tensor b = c.uniform({100}, 0.5, 2.0).as_strided({37, 100}, {0, 1}, 0);
      both(Ctx::out({37, 100}, c.dt), a, b);
    });
    c.run(fmt::format("{} [6,4,5] = [6,1,5] op [4,1] broadcast", name), [&] {
      Tensor a = broadcast_view(c.normal({6, 1, 5}), {6, 4, 5});
      Tensor b = broadcast_view(c.uniform({4, 1}, 0.5, 2.0), {6, 4, 5});
      both(Ctx::out({6, 4, 5}, c.dt), a, b);
    });
    c.run(fmt::format("{} [37,100] transposed a, strided out", name), [&] {
      both(sparse_out_view(c, 37, 100), transposed(c.normal({100, 37})), c.uniform({37, 100}, 0.5, 2.0));
    });
    c.run(fmt::format("{} [2,130,4,33] permuted b", name), [&] {
      Tensor b = permute(c.uniform({2, 4, 130, 33}, 0.5, 2.0), {0, 2, 1, 3});
      both(Ctx::out({2, 130, 4, 33}, c.dt), c.normal({2, 130, 4, 33}), b);
    });
  }
}

void case_scalar(Ctx& c) {
  const std::tuple<ScalarOp, double, const char*, bool> ops[] = {
      {ScalarOp::Add, 0.3, "add 0.3", false},   {ScalarOp::Mul, -1.7, "mul -1.7", false},
      {ScalarOp::Pow, 2.0, "pow 2", false},     {ScalarOp::Pow, 1.5, "pow 1.5", true},
      {ScalarOp::Pow, -0.5, "pow -0.5", true},  {ScalarOp::Pow, 3.0, "pow 3", false}};
  for (auto [op, s, name, positive] : ops) {
    for (bool transpose : {false, true}) {
      c.run(fmt::format("{} [37,100]{}", name, transpose ? " transposed in" : ""), [&] {
        Tensor x = positive ? c.uniform({100, 37}, 0.5, 3.0) : c.normal({100, 37}, 2.0);
        x = transpose ? transposed(x) : x.as_strided({37, 100}, {100, 1}, 0);
        Tensor o = Ctx::out({37, 100}, c.dt), og = c.gpu(o);
        cpu_kernels().scalar(op, o, x, s);
        need_cuda(c.under_test().scalar, "scalar")(op, og, c.gpu(x), s);
        c.compare("out", og, o, c.simple());
      });
    }
  }
}

// SwiGLU's activation: [37,100] at scale 2 and 12 (the saturated sigmoid), and a 1-D tail of odd length.
void case_swiglu(Ctx& c, bool backward) {
  for (auto [tag, shape, scale] : {std::tuple{"[37,100]", Shape{37, 100}, 2.0},
                                   std::tuple{"[37,100] wide range", Shape{37, 100}, 12.0},
                                   std::tuple{"[1001]", Shape{1001}, 2.0}}) {
    c.run(tag, [&] {
      Tensor a = c.normal(shape, scale), b = c.normal(shape);
      // Storage (of a, b and y; of a, b, da and db): the dtype, and for float32 bfloat16 storage of y, of a and b,
      // and of all three (the FFN's bf16 products: gate | up and the down projection's operand).
      std::vector<std::pair<DType, DType>> storage{{c.dt, c.dt}};
      if (c.dt == kFloat32)
        storage.insert(storage.end(), {{kFloat32, kBFloat16}, {kBFloat16, kFloat32}, {kBFloat16, kBFloat16}});
      for (auto [ad, yd] : storage) {
        const Tensor as = Ctx::with_dtype(a, ad), bs = Ctx::with_dtype(b, ad);
        const std::string what = fmt::format(" (a, b {}, y {})", dtype_name(ad), dtype_name(yd));
        if (!backward) {
          Tensor y = Ctx::out(shape, yd), yg = c.gpu(y);
          cpu_kernels().swiglu_forward(y, as, bs);
          need_cuda(c.under_test().swiglu_forward, "swiglu_forward")(yg, c.gpu(as), c.gpu(bs));
          c.compare("y" + what, yg, y, yd == kBFloat16 ? 8e-3 : c.simple());  // one rounding apart at most
          continue;
        }
        if (yd != c.dt && ad == c.dt) continue;  // the backward has no y
        Tensor dy = c.normal(shape);
        Tensor da = Ctx::out(shape, ad), db = Ctx::out(shape, ad), dag = c.gpu(da), dbg = c.gpu(db);
        cpu_kernels().swiglu_backward(da, db, dy, as, bs);
        need_cuda(c.under_test().swiglu_backward, "swiglu_backward")(dag, dbg, c.gpu(dy), c.gpu(as), c.gpu(bs));
        c.compare("da" + what, dag, da, ad == kBFloat16 ? 8e-3 : c.simple());
        c.compare("db" + what, dbg, db, ad == kBFloat16 ? 8e-3 : c.simple());
      }
    });
  }
}
void case_swiglu_forward(Ctx& c) { case_swiglu(c, false); }
void case_swiglu_backward(Ctx& c) { case_swiglu(c, true); }

// ---------------------------------------------------------------------------------------------------------------
// reductions: sum_to, max_dim, scatter_dim

void case_sum_to(Ctx& c) {
  // Inputs N(0.5, 1): a non-zero mean keeps the sums away from cancellation, so the normwise error measures the
  // summation, not the condition of the sum.
  const std::pair<Shape, Shape> shapes[] = {
      {{2, 130, 37}, {1, 1, 37}}, {{2, 130, 37}, {2, 1, 37}}, {{2, 130, 37}, {1, 130, 1}},
      {{2, 130, 37}, {1, 1, 1}},  {{37, 100}, {37, 1}},       {{37, 100}, {1, 100}},
      {{5, 1, 3}, {5, 1, 1}},     {{1000}, {1}}};
  for (const auto& [in_shape, out_shape] : shapes) {
    c.run(fmt::format("{} -> {}", shape_str(in_shape), shape_str(out_shape)), [&] {
      Tensor x = c.normal(in_shape, 1.0, 0.5);
      Tensor o = Ctx::out(out_shape, c.dt), og = c.gpu(o);
      cpu_kernels().sum_to(o, x);
      need_cuda(c.under_test().sum_to, "sum_to")(og, c.gpu(x));
      c.compare("out", og, o, c.simple());
    });
  }
  c.run("[37,100] transposed -> [37,1]", [&] {
    Tensor x = transposed(c.normal({100, 37}, 1.0, 0.5));
    Tensor o = Ctx::out({37, 1}, c.dt), og = c.gpu(o);
    cpu_kernels().sum_to(o, x);
    need_cuda(c.under_test().sum_to, "sum_to")(og, c.gpu(x));
    c.compare("out", og, o, c.simple());
  });
  c.run("[6,4,5] broadcast from [6,1,5] -> [1,4,1]", [&] {
    Tensor x = broadcast_view(c.normal({6, 1, 5}, 1.0, 0.5), {6, 4, 5});
    Tensor o = Ctx::out({1, 4, 1}, c.dt), og = c.gpu(o);
    cpu_kernels().sum_to(o, x);
    need_cuda(c.under_test().sum_to, "sum_to")(og, c.gpu(x));
    c.compare("out", og, o, c.simple());
  });
}

void case_max_dim(Ctx& c) {
  const std::pair<Shape, int64_t> shapes[] = {{{37, 100}, 1}, {{37, 100}, 0}, {{2, 65, 37}, 1}, {{2, 65, 37}, 2},
                                              {{1000}, 0},    {{3, 1, 5}, 1}};
  for (bool ties : {false, true}) {
    for (const auto& [shape, dim] : shapes) {
      c.run(fmt::format("{} dim {}{}", shape_str(shape), dim, ties ? " with ties" : ""), [&] {
        // Ties: values in {1, 2, 3, 4}, so most rows hold their maximum several times (first index wins).
        Tensor x = c.normal(shape);
        if (ties) {
          std::vector<double> v = x.to_double_vector();
          for (double& e : v) e = std::floor(std::fabs(e) * 1.5) + 1.0;
          for (double& e : v) e = std::min(e, 4.0);
          x = Tensor::from_vector(v, shape, c.dt);
        }
        Shape rs = shape;
        rs[static_cast<size_t>(dim)] = 1;
        Tensor values = Ctx::out(rs, c.dt), indices = Ctx::out(rs, kInt64);
        Tensor vg = c.gpu(values), ig = c.gpu(indices);
        cpu_kernels().max_dim(values, indices, x, dim);
        need_cuda(c.under_test().max_dim, "max_dim")(vg, ig, c.gpu(x), dim);
        c.compare("values", vg, values, 0.0);  // a maximum is one of the inputs: exact
        c.compare("indices", ig, indices, 0.0);
      });
    }
  }
}

void case_scatter_dim(Ctx& c) {
  const std::pair<Shape, int64_t> shapes[] = {{{37, 100}, 1}, {{37, 100}, 0}, {{2, 65, 37}, 1}, {{1000}, 0}};
  for (const auto& [shape, dim] : shapes) {
    c.run(fmt::format("{} dim {}", shape_str(shape), dim), [&] {
      Shape rs = shape;
      rs[static_cast<size_t>(dim)] = 1;
      Tensor dy = c.normal(rs), idx = c.ids(rs, shape[static_cast<size_t>(dim)]);
      Tensor dx = Ctx::out(shape, c.dt), dxg = c.gpu(dx);
      cpu_kernels().scatter_dim(dx, dy, idx, dim);
      need_cuda(c.under_test().scatter_dim, "scatter_dim")(dxg, c.gpu(dy), c.gpu(idx), dim);
      c.compare("dx", dxg, dx, 0.0);  // copies and zeros: exact
    });
  }
}

}  // namespace

std::vector<HarnessCase> basic_harness_cases() {
  return {
      {"fill", "elementwise", case_fill},
      {"copy", "elementwise", case_copy},
      {"copy_to_bf16", "elementwise", case_copy_to_bf16},
      {"unary", "elementwise", case_unary},
      {"unary_backward", "elementwise", case_unary_backward},
      {"binary", "elementwise", case_binary},
      {"scalar", "elementwise", case_scalar},
      {"swiglu_forward", "elementwise", case_swiglu_forward},
      {"swiglu_backward", "elementwise", case_swiglu_backward},
      {"sum_to", "reductions", case_sum_to},
      {"max_dim", "reductions", case_max_dim},
      {"scatter_dim", "reductions", case_scatter_dim},
  };
}

}  // namespace gdn::harness
