// ops/matmul.cpp — see matmul.h.
#include "ops/matmul.h"

#include "autograd/node.h"
#include "core/dispatch.h"
#include "ops/creation.h"
#include "ops/shape_ops.h"

namespace gdn {

namespace {

uint64_t g_gemm_flops = 0;  // see gemm_flops()

void count_gemm(const Tensor& a3, const Tensor& b3) {
  g_gemm_flops += 2 * static_cast<uint64_t>(a3.size(0) * a3.size(1) * a3.size(2) * b3.size(2));
}

bool matrix_ok(const Tensor& t) {
  const int64_t R = t.size(-2), C = t.size(-1);
  return t.stride(-1) == 1 || t.stride(-2) == 1 || R == 1 || C == 1;
}

// t [..., R, C] seen as [P, R, C]: a view when the batch dimensions collapse to one stride, else a copy.
Tensor as_batched3(const Tensor& t) {
  const int64_t nd = t.dim(), R = t.size(-2), C = t.size(-1);
  int64_t P = 1;
  for (int64_t d = 0; d < nd - 2; ++d) P *= t.size(d);
  bool collapses = matrix_ok(t);
  for (int64_t d = 0; d + 1 < nd - 2 && collapses; ++d)
    if (t.size(d) != 1 && t.stride(d) != t.stride(d + 1) * t.size(d + 1)) collapses = false;
  Tensor src = collapses ? t : contiguous(t);
  int64_t batch_stride = nd > 2 ? src.stride(nd - 3) : R * C;
  return src.as_strided({P, R, C}, {batch_stride, src.stride(-2), src.stride(-1)}, src.offset());
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  GDN_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: needs rank >= 2, got {} and {}", a.str(), b.str());
  GDN_CHECK(a.dtype() == b.dtype() && a.device() == b.device(), "matmul: {} vs {}", a.str(), b.str());
  GDN_CHECK(a.size(-1) == b.size(-2), "matmul: inner dimensions differ: {} @ {}", shape_str(a.shape()),
            shape_str(b.shape()));
  const int64_t K = a.size(-1), N = b.size(-1);
  Shape out_shape = a.shape();
  out_shape.back() = N;
  Tensor out;
  if (b.dim() == 2) {
    // Every row of a against one weight matrix: a single [R, K] @ [K, N] GEMM.
    Tensor a3 = a.dim() == 2 ? as_batched3(a) : as_batched3(reshape(a, {-1, K}));
    Tensor b3 = as_batched3(b);
    out = Tensor::empty({1, a3.size(1), N}, a.dtype(), a.device());
    kernels::gemm(a.device(), out, a3, b3, 1.0, 0.0);
    count_gemm(a3, b3);
  } else {
    GDN_CHECK(a.dim() == b.dim(), "matmul: batched operands need equal rank, got {} and {}", shape_str(a.shape()),
              shape_str(b.shape()));
    for (int64_t d = 0; d < a.dim() - 2; ++d)
      GDN_CHECK(a.size(d) == b.size(d), "matmul: batch dimensions differ: {} @ {}", shape_str(a.shape()),
                shape_str(b.shape()));
    Tensor a3 = as_batched3(a), b3 = as_batched3(b);
    out = Tensor::empty({a3.size(0), a3.size(1), N}, a.dtype(), a.device());
    kernels::gemm(a.device(), out, a3, b3, 1.0, 0.0);
    count_gemm(a3, b3);
  }
  Tensor y = out.as_strided(out_shape, contiguous_strides(out_shape), 0);
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  record("matmul", {y}, {a, b}, [need_a, need_b, a = a.detach(), b = b.detach()](const TensorList& g) -> TensorList {
    Tensor da, db;
    if (need_a) da = matmul(g[0], transpose(b, -1, -2));
    if (need_b) {
      if (b.dim() == 2) {
        Tensor a_rows = reshape(a, {-1, a.size(-1)}), g_rows = reshape(g[0], {-1, g[0].size(-1)});
        db = matmul(transpose(a_rows, 0, 1), g_rows);
      } else {
        db = matmul(transpose(a, -1, -2), g[0]);
      }
    }
    return {da, db};
  });
  return y;
}

uint64_t gemm_flops() { return g_gemm_flops; }

Tensor linear(const Tensor& x, const Tensor& weight) {
  GDN_CHECK(weight.dim() == 2 && weight.size(1) == x.size(-1), "linear: input {} with weight {}",
            shape_str(x.shape()), shape_str(weight.shape()));
  return matmul(x, transpose(weight, 0, 1));
}

}  // namespace gdn
