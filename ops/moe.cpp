// ops/moe.cpp — see moe.h. Kernels in ops/cpu/moe_cpu.cpp and cuda/moe.cu.
#include "ops/moe.h"

#include "autograd/node.h"
#include "core/dispatch.h"
#include "ops/creation.h"
#include "ops/shape_ops.h"

namespace gdn {

MoERouting moe_routing(const Tensor& probs, int64_t k) {
  GDN_CHECK(probs.dim() == 2, "moe_routing: probs must be [N, E], got {}", shape_str(probs.shape()));
  const int64_t N = probs.size(0), E = probs.size(1);
  GDN_CHECK(k >= 1 && k <= E, "moe_routing: k = {} outside [1, E = {}]", k, E);
  const Tensor p = contiguous(probs.detach());
  const Device dev = p.device();
  MoERouting r;
  r.ids = Tensor::empty({N, k}, kInt64, dev);
  r.flat = Tensor::empty({N, k}, kInt64, dev);
  kernels::moe_route(dev, r.ids, r.flat, p);
  r.order = Tensor::empty({N * k}, kInt64, dev);
  r.tokens = Tensor::empty({N * k}, kInt64, dev);
  r.offsets = Tensor::empty({E + 1}, kInt64, dev);
  r.counts = Tensor::empty({E}, kInt64, dev);
  kernels::moe_plan(dev, r.order, r.tokens, r.offsets, r.counts, r.ids);
  return r;
}

Tensor grouped_linear(const Tensor& x, const std::vector<Tensor>& weights, const Tensor& offsets) {
  GDN_CHECK(x.dim() == 2 && !weights.empty() && weights[0].dim() == 2 && weights[0].size(1) == x.size(1),
            "grouped_linear: x {} with {} weights", shape_str(x.shape()), weights.size());
  GDN_CHECK(offsets.numel() == static_cast<int64_t>(weights.size()) + 1, "grouped_linear: {} offsets for {} weights",
            offsets.numel(), weights.size());
  const Tensor xc = contiguous(x);
  std::vector<Tensor> ws;
  for (const Tensor& w : weights) ws.push_back(contiguous(w));
  const Tensor off = contiguous(offsets);
  Tensor out = Tensor::empty({xc.size(0), ws[0].size(0)}, xc.dtype(), xc.device());
  kernels::grouped_gemm(xc.device(), out, xc, ws, off, /*transpose_w=*/true);
  TensorList inputs = {xc};
  std::vector<Tensor> saved;
  for (const Tensor& w : ws) {
    inputs.push_back(w);
    saved.push_back(w.detach());
  }
  record("grouped_linear", {out}, inputs, [xd = xc.detach(), saved, off](const TensorList& g) -> TensorList {
    const Tensor dy = contiguous(g[0]);
    Tensor dx = Tensor::empty(xd.shape(), dy.dtype(), dy.device());
    kernels::grouped_gemm(dy.device(), dx, dy, saved, off, /*transpose_w=*/false);
    std::vector<Tensor> dws;
    for (const Tensor& w : saved) dws.push_back(Tensor::empty(w.shape(), dy.dtype(), dy.device()));
    kernels::grouped_gemm_dweight(dy.device(), dws, dy, xd, off);
    TensorList grads = {dx};
    for (const Tensor& dw : dws) grads.push_back(dw);
    return grads;
  });
  return out;
}

}  // namespace gdn
