// ops/nn.cpp — see nn.h. Kernels in ops/cpu/nn_cpu.cpp.
#include "ops/nn.h"

#include "autograd/node.h"
#include "core/dispatch.h"
#include "autograd/grad_mode.h"
#include "ops/creation.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "ops/shape_ops.h"

namespace gdn {

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  GDN_CHECK(weight.dim() == 2, "embedding: weight must be [V, D], got {}", shape_str(weight.shape()));
  GDN_CHECK(ids.dtype() == kInt64 || ids.dtype() == kInt32, "embedding: ids must be int64 or int32, got {}",
            ids.dtype());
  Tensor w = contiguous(weight), id = contiguous(ids);
  Shape out_shape = ids.shape();
  out_shape.push_back(weight.size(1));
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  kernels::embedding_forward(weight.device(), out, w, id);
  record("embedding", {out}, {w}, [id, shape = weight.shape()](const TensorList& g) -> TensorList {
    Tensor dw = Tensor::empty(shape, g[0].dtype(), g[0].device());
    kernels::embedding_backward(dw.device(), dw, contiguous(g[0]), id);
    return {dw};
  });
  return out;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  GDN_CHECK(targets.dtype() == kInt64, "cross_entropy: targets must be int64, got {}", targets.dtype());
  const int64_t V = logits.size(-1);
  GDN_CHECK(targets.numel() * V == logits.numel(), "cross_entropy: logits {} vs targets {}",
            shape_str(logits.shape()), shape_str(targets.shape()));
  Tensor x = reshape(contiguous(logits), {-1, V});
  Tensor t = contiguous(targets);
  const int64_t N = x.size(0);
  // bfloat16 logits (the bf16 lm_head's): float32 arithmetic, so loss, lse and count are float32; dlogits bfloat16.
  const DType at = arithmetic_dtype(x.dtype());
  Tensor loss = Tensor::empty({}, at, x.device());
  Tensor lse = Tensor::empty({N}, at, x.device());
  Tensor count = Tensor::empty({1}, at, x.device());
  kernels::cross_entropy_forward(x.device(), loss, lse, count, x, t, ignore_index);
  record("cross_entropy", {loss}, {x},
         [x = x.detach(), t, lse, count, ignore_index](const TensorList& g) -> TensorList {
           Tensor dx = empty_like(x);
           kernels::cross_entropy_backward(dx.device(), dx, contiguous(g[0]), x, lse, count, t, ignore_index);
           return {dx};
         });
  return loss;
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps, std::optional<DType> out) {
  const int64_t D = x.size(-1);
  GDN_CHECK(weight.dim() == 1 && weight.size(0) == D, "rms_norm: weight {} for input {}",
            shape_str(weight.shape()), shape_str(x.shape()));
  GDN_CHECK(x.dtype() == weight.dtype(), "rms_norm: dtype {} vs {}", x.dtype(), weight.dtype());
  Tensor xc = contiguous(x), w = contiguous(weight);
  Tensor y = Tensor::empty(xc.shape(), output_dtype("rms_norm", x, out), x.device());
  Tensor rstd = Tensor::empty({x.numel() / D}, x.dtype(), x.device());
  kernels::rms_norm_forward(x.device(), y, rstd, Tensor(), xc, Tensor(), w, eps);
  record("rms_norm", {y}, {xc, w}, [xc = xc.detach(), w = w.detach(), rstd](const TensorList& g) -> TensorList {
    Tensor dx = empty_like(xc), dw = empty_like(w);
    kernels::rms_norm_backward(xc.device(), dx, dw, contiguous(to_dtype(g[0], xc.dtype())), Tensor(), xc, w, rstd);
    return {dx, dw};
  });
  return y;
}

std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& r, const Tensor& weight, double eps,
                                       std::optional<DType> out) {
  const int64_t D = x.size(-1);
  GDN_CHECK(r.shape() == x.shape(), "add_rms_norm: residual {} for input {}", shape_str(r.shape()),
            shape_str(x.shape()));
  GDN_CHECK(weight.dim() == 1 && weight.size(0) == D, "add_rms_norm: weight {} for input {}",
            shape_str(weight.shape()), shape_str(x.shape()));
  GDN_CHECK(x.dtype() == r.dtype() && x.dtype() == weight.dtype() && x.device() == r.device(),
            "add_rms_norm: {} + {} with weight {}", x.str(), r.str(), weight.str());
  Tensor xc = contiguous(x), rc = contiguous(r), w = contiguous(weight);
  Tensor h = empty_like(xc), y = Tensor::empty(xc.shape(), output_dtype("add_rms_norm", x, out), x.device());
  Tensor rstd = Tensor::empty({x.numel() / D}, x.dtype(), x.device());
  kernels::rms_norm_forward(x.device(), y, rstd, h, xc, rc, w, eps);
  // The gradient of h: what reached it from its other consumers (g[0]) plus the norm's; x and r both get it.
  record("add_rms_norm", {h, y}, {xc, rc, w},
         [h = h.detach(), w = w.detach(), rstd](const TensorList& g) -> TensorList {
           Tensor dh = empty_like(h), dw = empty_like(w);
           const Tensor dy = g[1].defined() ? contiguous(to_dtype(g[1], h.dtype())) : zeros_like(h);
           kernels::rms_norm_backward(h.device(), dh, dw, dy, g[0].defined() ? contiguous(g[0]) : Tensor(), h, w,
                                      rstd);
           return {dh, dh, dw};
         });
  return {h, y};
}

Tensor softmax(const Tensor& x, int64_t dim) {
  Tensor m;
  {
    NoGradGuard no_grad;  // the shift cancels out of the result, so it needs no gradient
    m = max(x, dim, /*keepdim=*/true);
  }
  Tensor e = exp(x - m);
  return e / sum(e, {dim}, /*keepdim=*/true);
}

Tensor gather_rows(const Tensor& x, const Tensor& idx) { return embedding(x, idx); }

Tensor scatter_add_rows(const Tensor& src, const Tensor& idx, int64_t num_rows) {
  GDN_CHECK(src.dim() == 2 && idx.dim() == 1 && idx.size(0) == src.size(0),
            "scatter_add_rows: src {} with idx {}", shape_str(src.shape()), shape_str(idx.shape()));
  Tensor s = contiguous(src), id = contiguous(idx);
  Tensor out = Tensor::empty({num_rows, src.size(1)}, src.dtype(), src.device());
  kernels::embedding_backward(src.device(), out, s, id);  // out = 0, then out[idx[i]] += src[i]
  record("scatter_add_rows", {out}, {s}, [id](const TensorList& g) -> TensorList {
    Tensor gc = contiguous(g[0]);
    Tensor ds = Tensor::empty({id.numel(), gc.size(1)}, gc.dtype(), gc.device());
    kernels::embedding_forward(gc.device(), ds, gc, id);
    return {ds};
  });
  return out;
}

}  // namespace gdn
