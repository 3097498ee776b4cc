// ops/matmul.cpp — see matmul.h.
#include "ops/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <climits>

#include "autograd/node.h"
#include "core/dispatch.h"
#include "core/precision.h"
#include "ops/creation.h"
#include "ops/elementwise.h"
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

namespace {

// out [1, n, N] (=, or += with beta 1) = a [n, K] @ b [K, N] through the gemm kernel; a and b may be transposed views.
void gemm2(const Tensor& out, const Tensor& a, const Tensor& b, double beta) {
  Tensor a3 = as_batched3(a), b3 = as_batched3(b);
  kernels::gemm(out.device(), out, a3, b3, 1.0, beta);
  count_gemm(a3, b3);
}

// The bf16 paths of linear and linear_cross_entropy: under Precision::BFloat16, a float32 product x w^T on a CUDA
// device with at least bf16_gemm_min_flops() (core/precision.h) multiplies bfloat16 copies (the gemm kernel takes bf16
// operands with a float32 out). Each operand is copied once: x and w in the forward, kept for the backward in place
// of the float32 ones, and the incoming gradient once in the backward for both of its products (linear_cross_entropy
// has the cross-entropy backward write it in bfloat16 directly). Left to the gemm kernel, the same products would
// copy w and g twice each (its own bf16 copies are per call).
// x (or an incoming gradient) may already be bfloat16: written so by its producer for this product
// (linear_input_dtype; swiglu's gradients of linear_multi's bf16 outputs); bf16_copy then returns it as it is.
bool linear_takes_bf16(const Tensor& x, int64_t rows, int64_t in, int64_t out) {
  return x.device().type == DeviceType::CUDA && (x.dtype() == kFloat32 || x.dtype() == kBFloat16) &&
         matmul_precision() == Precision::BFloat16 &&
         2.0 * static_cast<double>(rows) * in * out >= bf16_gemm_min_flops();
}

Tensor bf16_copy(const Tensor& t) {
  if (t.dtype() == kBFloat16) return t.detach();
  Tensor o = Tensor::empty(t.shape(), kBFloat16, t.device());
  kernels::copy(t.device(), o, t);
  return o;
}

// A bfloat16 x given to a float32 product (a producer's choice that no longer holds): x converted back, as a node.
bool bf16_input_for_float32(const Tensor& x, const Tensor& weight) {
  return x.dtype() == kBFloat16 && weight.dtype() == kFloat32;
}

void check_input(const char* op, const Tensor& x, const Tensor& w) {
  GDN_CHECK((x.dtype() == w.dtype() || bf16_input_for_float32(x, w)) && x.device() == w.device(), "{}: {} vs {}", op,
            x.str(), w.str());
}

const Bf16WeightCopies* g_active_copies = nullptr;  // see Bf16WeightCopies::Scope

// The weight's bf16 copy: the active Bf16WeightCopies' one, else a fresh copy.
Tensor bf16_weight(const Tensor& w) {
  const Tensor* c = Bf16WeightCopies::find(w);
  return c ? *c : bf16_copy(w);
}

// linear_cross_entropy ignores no target: an ignore_index no int64 target can equal, so the kernels' range check
// sees every row.
constexpr int64_t kNoIgnore = INT64_MIN;

// Bytes of one chunk's logits in linear_cross_entropy when chunk_rows is 0: 128 MiB, or GDN_LOSS_CHUNK_MIB (read at
// the first call) for A/B runs, e.g. chunks small enough for their logits to stay in the GPU's L2 cache.
int64_t loss_chunk_bytes() {
  static const int64_t bytes = [] {
    int64_t mib = 128;
    if (const char* e = std::getenv("GDN_LOSS_CHUNK_MIB"); e && *e) {
      char* end = nullptr;
      const long long v = std::strtoll(e, &end, 10);
      GDN_USER_CHECK(end && *end == '\0' && v >= 1, "GDN_LOSS_CHUNK_MIB must be a whole number >= 1, got '{}'", e);
      mib = v;
    }
    return mib << 20;
  }();
  return bytes;
}

// Bytes of one group's dlogits in linear_cross_entropy when group_rows is 0: their GEMMs (dx, dw += ...) run once
// per group, so that dw, float32 [V, D], is read and written once per group rather than once per chunk.
constexpr int64_t kLossGroupBytes = int64_t{1} << 30;

// Rows [r0, r0 + n) of a contiguous [N, C] matrix, as a contiguous [n, C] view.
Tensor rows(const Tensor& m, int64_t r0, int64_t n) {
  return m.as_strided({n, m.size(1)}, {m.size(1), 1}, m.offset() + r0 * m.size(1));
}

}  // namespace

Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t chunk_rows,
                            int64_t group_rows) {
  const int64_t D = x.size(-1), V = weight.size(0);
  GDN_CHECK(weight.dim() == 2 && weight.size(1) == D, "linear_cross_entropy: input {} with weight {}",
            shape_str(x.shape()), shape_str(weight.shape()));
  GDN_CHECK(targets.dtype() == kInt64, "linear_cross_entropy: targets must be int64, got {}", targets.dtype());
  check_input("linear_cross_entropy", x, weight);
  const int64_t rows_in = x.numel() / std::max<int64_t>(D, 1);
  if (bf16_input_for_float32(x, weight) && !linear_takes_bf16(x, rows_in, D, V))
    return linear_cross_entropy(to_dtype(x, kFloat32), weight, targets, chunk_rows, group_rows);
  Tensor xr = contiguous(reshape(x, {-1, D})), w = contiguous(weight), t = contiguous(reshape(targets, {-1}));
  const int64_t N = xr.size(0);
  GDN_CHECK(t.numel() == N && N > 0, "linear_cross_entropy: {} rows vs targets {}", N, shape_str(targets.shape()));
  const Device dev = x.device();
  const DType dt = weight.dtype();
  const bool need_x = needs_grad({x}), need_w = needs_grad({weight}), grads = need_x || need_w;
  // The GEMM operands: x and w, or their bf16 copies; then the logits and the dlogits are bf16 too (ldt).
  const bool bf16 = linear_takes_bf16(x, N, D, V);
  const DType ldt = bf16 ? kBFloat16 : dt;
  const int64_t row_bytes = V * static_cast<int64_t>(element_size(ldt));
  if (chunk_rows <= 0) chunk_rows = std::max<int64_t>(1, loss_chunk_bytes() / row_bytes);
  chunk_rows = std::min(chunk_rows, N);
  if (group_rows <= 0) group_rows = std::max<int64_t>(1, kLossGroupBytes / row_bytes);
  group_rows = std::min(std::max(group_rows / chunk_rows, int64_t{1}) * chunk_rows, N);  // whole chunks
  // With gradients wanted, each chunk's dlogits are made at once (the mean is over all N rows, so dloss / N is known
  // now) into the group's dlogits, which go through both GEMMs when the group is complete: dx [N, D] and dw [V, D]
  // for dloss = 1, scaled by the actual dloss later.
  Tensor dx = need_x ? Tensor::empty({1, N, D}, dt, dev) : Tensor();
  Tensor dw = need_w ? Tensor::empty({1, V, D}, dt, dev) : Tensor();
  const Tensor xs = bf16 ? bf16_copy(xr) : xr, ws = bf16 ? bf16_weight(w) : w;
  Tensor wt = transpose(ws, 0, 1);  // [D, V] view
  Tensor loss = zeros({}, dt, dev), lse = Tensor::empty({N}, dt, dev);
  {
    Tensor loss_c = Tensor::empty({}, dt, dev), count_c = Tensor::empty({1}, dt, dev);
    Tensor logits = Tensor::empty({1, chunk_rows, V}, ldt, dev), dlogits, dscale;
    if (grads) {
      dlogits = Tensor::empty({group_rows, V}, ldt, dev);
      dscale = full({1}, 1.0 / static_cast<double>(N), dt, dev);  // dloss / count for dloss = 1
    }
    for (int64_t g0 = 0; g0 < N; g0 += group_rows) {
      const int64_t gn = std::min(group_rows, N - g0);
      for (int64_t r0 = g0; r0 < g0 + gn; r0 += chunk_rows) {
        const int64_t n = std::min(chunk_rows, g0 + gn - r0);
        Tensor lc = logits.as_strided({1, n, V}, {n * V, V, 1}, 0);
        Tensor lse_c = lse.as_strided({n}, {1}, r0), t_c = t.as_strided({n}, {1}, t.offset() + r0);
        const Tensor l2 = lc.as_strided({n, V}, {V, 1}, 0);
        gemm2(lc, rows(xs, r0, n), wt, 0.0);
        if (grads) {  // the chunk's loss and dlogits in one pass over its logits
          kernels::cross_entropy_fused(dev, loss_c, lse_c, count_c, rows(dlogits, r0 - g0, n), dscale, l2, t_c,
                                       kNoIgnore);
        } else {
          kernels::cross_entropy_forward(dev, loss_c, lse_c, count_c, l2, t_c, kNoIgnore);
        }
        kernels::scalar(dev, ScalarOp::Mul, loss_c, loss_c, static_cast<double>(n) / static_cast<double>(N));
        kernels::binary(dev, BinaryOp::Add, loss, loss, loss_c);
      }
      if (!grads) continue;
      const Tensor dl = rows(dlogits, 0, gn);
      if (need_x) gemm2(dx.as_strided({1, gn, D}, {gn * D, D, 1}, g0 * D), dl, ws, 0.0);
      if (need_w) gemm2(dw, transpose(dl, 0, 1), rows(xs, g0, gn), g0 == 0 ? 0.0 : 1.0);
    }
  }
  if (!need_x && !need_w) return loss;
  const Shape x_shape = x.shape();
  record("linear_cross_entropy", {loss}, {x, weight}, [dx, dw, x_shape, V, D](const TensorList& g) -> TensorList {
    // d/dx and d/dw for dloss = 1 were made in the forward; times the incoming dloss (a device scalar).
    auto scaled = [&](const Tensor& d, const Shape& shape) {
      Tensor out = Tensor::empty(shape, d.dtype(), d.device());
      Tensor dv = d.as_strided(shape, contiguous_strides(shape), 0);
      const Tensor scale = g[0].as_strided(shape, Strides(shape.size(), 0), g[0].offset());
      kernels::binary(d.device(), BinaryOp::Mul, out, dv, scale);
      return out;
    };
    return {dx.defined() ? scaled(dx, x_shape) : Tensor(), dw.defined() ? scaled(dw, {V, D}) : Tensor()};
  });
  return loss;
}

namespace {

Tensor linear_bf16(const Tensor& x, const Tensor& weight, const Shape& out_shape, DType out_dtype) {
  const int64_t in = weight.size(1), out_features = weight.size(0);
  const Tensor xb = bf16_copy(reshape(x, {-1, in})), wb = bf16_weight(weight);  // [N, in], [out, in]
  const int64_t N = xb.size(0);
  Tensor out = Tensor::empty({1, N, out_features}, out_dtype, x.device());
  gemm2(out, xb, transpose(wb, 0, 1), 0.0);
  Tensor y = out.as_strided(out_shape, contiguous_strides(out_shape), 0);
  const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
  record("linear", {y}, {x, weight},
         [need_x, need_w, xb, wb, x_shape = x.shape(), N, in, out_features](const TensorList& g) -> TensorList {
           const Tensor gb = bf16_copy(reshape(g[0], {N, out_features}));
           Tensor dx, dw;
           if (need_x) {
             dx = Tensor::empty({1, N, in}, kFloat32, gb.device());
             gemm2(dx, gb, wb, 0.0);
             dx = dx.as_strided(x_shape, contiguous_strides(x_shape), 0);
           }
           if (need_w) {
             dw = Tensor::empty({1, out_features, in}, kFloat32, gb.device());
             gemm2(dw, transpose(gb, 0, 1), xb, 0.0);
             dw = dw.as_strided({out_features, in}, {in, 1}, 0);  // [out, in]
           }
           return {dx, dw};
         });
  return y;
}

}  // namespace

std::vector<Tensor> linear_multi(const Tensor& x, const std::vector<Tensor>& weights,
                                 const std::vector<std::vector<int64_t>>& parts, std::optional<DType> out) {
  GDN_CHECK(!weights.empty(), "linear_multi: no weights");
  GDN_CHECK(parts.empty() || parts.size() == weights.size(), "linear_multi: {} part lists for {} weights",
            parts.size(), weights.size());
  const int64_t in = x.size(-1), P = static_cast<int64_t>(weights.size());
  int64_t total_out = 0;
  bool same_shape = true, split = false;
  // The pieces: row blocks of the weights, one output each (a weight without a part list is one piece).
  struct Piece {
    int64_t p, r0, rows;
  };
  std::vector<Piece> pieces;
  for (int64_t p = 0; p < P; ++p) {
    const Tensor& w = weights[p];
    GDN_CHECK(w.dim() == 2 && w.size(1) == in, "linear_multi: input {} with weight {}", shape_str(x.shape()),
              shape_str(w.shape()));
    check_input("linear_multi", x, w);
    total_out += w.size(0);
    same_shape = same_shape && w.shape() == weights[0].shape();
    const std::vector<int64_t> rows = parts.empty() || parts[p].empty() ? std::vector<int64_t>{w.size(0)} : parts[p];
    int64_t r0 = 0;
    for (int64_t r : rows) {
      GDN_CHECK(r >= 1, "linear_multi: part sizes must be positive, got {}", r);
      pieces.push_back({p, r0, r});
      r0 += r;
    }
    GDN_CHECK(r0 == w.size(0), "linear_multi: parts of {} rows for weight {}", r0, shape_str(w.shape()));
    split = split || rows.size() > 1;
  }
  const Device dev = x.device();
  const DType dt = weights[0].dtype();
  const Tensor x2 = x.dim() == 2 ? x : reshape(x, {-1, in});
  const int64_t N = x2.size(0);
  const bool bf16 = linear_takes_bf16(x, N, in, total_out);
  if (bf16_input_for_float32(x, weights[0]) && !bf16)
    return linear_multi(to_dtype(x, kFloat32), weights, parts, out);
  const DType out_dt = out.value_or(dt);  // the outputs' dtype: the weights', or bfloat16 (bf16 products only)
  GDN_CHECK(out_dt == dt || (out_dt == kBFloat16 && bf16), "linear_multi: {} outputs for {} weights ({})", out_dt, dt,
            bf16 ? "bf16 products" : "not on bf16 products: outputs in the weights' dtype");
  const Tensor xs = bf16 ? bf16_copy(x2) : x2.detach();
  // The weights as GEMM operands: the parameters themselves, or bf16 copies; equal shapes under bf16 share one
  // [P, out, in] copy, so that all P products are one batched GEMM (not with parts).
  std::vector<Tensor> ws(weights.size());
  Tensor outs_all;
  if (bf16 && same_shape && P > 1 && !split) {
    const int64_t out_f = weights[0].size(0);
    // The copies of Bf16WeightCopies when they lie one after the other, else a fresh [P, out, in] copy.
    const Tensor* first = Bf16WeightCopies::find(weights[0]);
    bool adjacent = first != nullptr;
    for (int64_t p = 1; p < P && adjacent; ++p) {
      const Tensor* c = Bf16WeightCopies::find(weights[p]);
      adjacent = c && c->storage() == first->storage() && c->offset() == first->offset() + p * out_f * in;
    }
    Tensor w_all;  // [P, out, in]
    if (adjacent) {
      w_all = first->as_strided({P, out_f, in}, {out_f * in, in, 1}, first->offset());
    } else {
      w_all = Tensor::empty({P, out_f, in}, kBFloat16, dev);
      for (int64_t p = 0; p < P; ++p)
        kernels::copy(dev, w_all.as_strided({out_f, in}, {in, 1}, p * out_f * in), weights[p]);
    }
    for (int64_t p = 0; p < P; ++p) ws[p] = w_all.as_strided({out_f, in}, {in, 1}, w_all.offset() + p * out_f * in);
    outs_all = Tensor::empty({P, N, out_f}, out_dt, dev);
    const Tensor a = xs.as_strided({P, N, in}, {0, in, 1}, 0);
    const Tensor b = w_all.as_strided({P, in, out_f}, {out_f * in, 1, in}, w_all.offset());  // w_p^T, column-major
    kernels::gemm(dev, outs_all, a, b, 1.0, 0.0);
    count_gemm(a, b);
  } else {
    for (int64_t p = 0; p < P; ++p) ws[p] = bf16 ? bf16_weight(weights[p]) : weights[p].detach();
  }
  // Piece k's operand: rows [r0, r0 + rows) of its weight (a contiguous row block).
  std::vector<Tensor> wk;
  for (const Piece& q : pieces) wk.push_back(ws[q.p].as_strided({q.rows, in}, {in, 1}, ws[q.p].offset() + q.r0 * in));
  std::vector<Tensor> ys(pieces.size());
  for (size_t k = 0; k < pieces.size(); ++k) {
    const int64_t out_f = pieces[k].rows;
    Shape out_shape = x.shape();
    out_shape.back() = out_f;
    if (outs_all.defined()) {
      ys[k] = outs_all.as_strided(out_shape, contiguous_strides(out_shape), static_cast<int64_t>(k) * N * out_f);
      continue;
    }
    Tensor y = Tensor::empty({1, N, out_f}, out_dt, dev);
    gemm2(y, xs, transpose(wk[k], 0, 1), 0.0);
    ys[k] = y.as_strided(out_shape, contiguous_strides(out_shape), 0);
  }
  TensorList inputs{x};
  inputs.insert(inputs.end(), weights.begin(), weights.end());
  std::vector<bool> need_w;
  for (const Tensor& w : weights) need_w.push_back(w.requires_grad());
  std::vector<int64_t> out_rows;
  for (const Tensor& w : weights) out_rows.push_back(w.size(0));
  record("linear_multi", ys, inputs,
         [need_x = x.requires_grad(), need_w, xs, wk, pieces, out_rows, bf16, dt, x_shape = x.shape(), N,
          in](const TensorList& g) {
           TensorList grads(need_w.size() + 1);
           Tensor dx;
           std::vector<Tensor> dw(need_w.size());  // [1, out_p, in] per weight, written piece by piece
           for (size_t k = 0; k < pieces.size(); ++k) {
             if (!g[k].defined()) continue;
             const Piece& q = pieces[k];
             const Tensor gk = bf16 ? bf16_copy(reshape(g[k], {N, q.rows})) : reshape(g[k], {N, q.rows});
             if (need_x) {  // dx = sum_k g_k w_k: the first product writes, the others add (beta = 1)
               const bool first = !dx.defined();
               if (first) dx = Tensor::empty({1, N, in}, dt, g[k].device());
               gemm2(dx, gk, wk[k], first ? 0.0 : 1.0);
             }
             if (need_w[q.p]) {
               if (!dw[q.p].defined()) dw[q.p] = Tensor::empty({1, out_rows[q.p], in}, dt, g[k].device());
               gemm2(dw[q.p].as_strided({1, q.rows, in}, {q.rows * in, in, 1}, q.r0 * in), transpose(gk, 0, 1), xs,
                     0.0);
             }
           }
           for (size_t k = 0; k < pieces.size(); ++k) {  // the rows of a piece that got no gradient: zero
             const Piece& q = pieces[k];
             if (!g[k].defined() && dw[q.p].defined())
               kernels::fill(dw[q.p].device(), dw[q.p].as_strided({q.rows, in}, {in, 1}, q.r0 * in), 0.0);
           }
           for (size_t p = 0; p < dw.size(); ++p)
             if (dw[p].defined()) grads[p + 1] = dw[p].as_strided({out_rows[p], in}, {in, 1}, 0);
           if (dx.defined()) grads[0] = dx.as_strided(x_shape, contiguous_strides(x_shape), 0);
           return grads;
         });
  return ys;
}

DType linear_input_dtype(const Tensor& x, int64_t out_features) {
  const int64_t in = x.dim() > 0 ? x.size(-1) : 1;
  const int64_t rows = x.numel() / std::max<int64_t>(in, 1);
  if (x.dtype() != kFloat32 && x.dtype() != kBFloat16) return x.dtype();
  return linear_takes_bf16(x, rows, in, out_features) ? kBFloat16 : kFloat32;
}

// Its own node rather than matmul(x, w^T): the weight's gradient comes out as g^T x, [out, in] and contiguous, so the
// parameter adopts it as it is (autograd/engine.cpp); through the transposed view it would be a transposed [in, out]
// product and need a copy per weight per step.
Tensor linear(const Tensor& x, const Tensor& weight, std::optional<DType> out) {
  GDN_CHECK(weight.dim() == 2 && weight.size(1) == x.size(-1), "linear: input {} with weight {}",
            shape_str(x.shape()), shape_str(weight.shape()));
  check_input("linear", x, weight);
  const int64_t in = weight.size(1), out_features = weight.size(0);
  Shape out_shape = x.shape();
  out_shape.back() = out_features;
  const bool bf16 = linear_takes_bf16(x, x.numel() / std::max<int64_t>(in, 1), in, out_features);
  const DType out_dt = out.value_or(weight.dtype());
  GDN_CHECK(out_dt == weight.dtype() || (out_dt == kBFloat16 && bf16), "linear: a {} output for {} weights ({})",
            out_dt, weight.dtype(), bf16 ? "bf16 products" : "not on bf16 products: outputs in the weights' dtype");
  if (bf16) return linear_bf16(x, weight, out_shape, out_dt);
  if (bf16_input_for_float32(x, weight)) return linear(to_dtype(x, kFloat32), weight);
  Tensor x3 = as_batched3(x.dim() == 2 ? x : reshape(x, {-1, in}));
  Tensor w3 = as_batched3(transpose(weight, 0, 1));
  Tensor o = Tensor::empty({1, x3.size(1), out_features}, x.dtype(), x.device());
  kernels::gemm(x.device(), o, x3, w3, 1.0, 0.0);
  count_gemm(x3, w3);
  Tensor y = o.as_strided(out_shape, contiguous_strides(out_shape), 0);
  const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
  record("linear", {y}, {x, weight},
         [need_x, need_w, x = x.detach(), weight = weight.detach()](const TensorList& g) -> TensorList {
           Tensor dx, dw;
           if (need_x) dx = matmul(g[0], weight);
           if (need_w) {
             const Tensor g_rows = reshape(g[0], {-1, g[0].size(-1)}), x_rows = reshape(x, {-1, x.size(-1)});
             dw = matmul(transpose(g_rows, 0, 1), x_rows);  // [out, in]
           }
           return {dx, dw};
         });
  return y;
}

Bf16WeightCopies::Scope::Scope(const Bf16WeightCopies* active)
    : previous_(g_active_copies), engaged_(active != nullptr) {
  if (engaged_) g_active_copies = active;
}
Bf16WeightCopies::Scope::~Scope() {
  if (engaged_) g_active_copies = previous_;
}

Bf16WeightCopies::Scope Bf16WeightCopies::refresh(const std::vector<Tensor>& weights, int64_t rows) {
  if (weights.empty() || matmul_precision() != Precision::BFloat16 || weights[0].dtype() != kFloat32 ||
      weights[0].device().type != DeviceType::CUDA)
    return Scope(nullptr);
  bool used = false;  // some product of `rows` rows takes the bf16 path (generation's one-token steps do not)
  for (const Tensor& w : weights)
    used = used || 2.0 * static_cast<double>(rows) * static_cast<double>(w.numel()) >= bf16_gemm_min_flops();
  if (!used) return Scope(nullptr);
  std::vector<const void*> sources;
  for (const Tensor& w : weights) {
    GDN_CHECK(w.dtype() == kFloat32 && w.device() == weights[0].device() && w.is_contiguous(),
              "Bf16WeightCopies: weight {} (contiguous float32 on {} expected)", w.str(), weights[0].device());
    sources.push_back(w.raw_data());
  }
  if (sources != sources_ || copies_.size() != weights.size()) {
    // One buffer, every copy starting at a multiple of 8 elements (16 bytes, cuBLAS's preferred alignment).
    std::vector<int64_t> begin;
    int64_t total = 0;
    for (const Tensor& w : weights) {
      begin.push_back(total);
      total += (w.numel() + 7) / 8 * 8;
    }
    const Tensor buffer = Tensor::empty({total}, kBFloat16, weights[0].device());
    copies_.clear();
    for (size_t k = 0; k < weights.size(); ++k)
      copies_.push_back(buffer.as_strided(weights[k].shape(), contiguous_strides(weights[k].shape()), begin[k]));
    sources_ = std::move(sources);
  }
  kernels::copy_to_bf16(weights[0].device(), copies_, weights);
  return Scope(this);
}

const Tensor* Bf16WeightCopies::find(const Tensor& weight) {
  if (!g_active_copies) return nullptr;
  const auto& src = g_active_copies->sources_;
  for (size_t k = 0; k < src.size(); ++k)
    if (src[k] == weight.raw_data() && g_active_copies->copies_[k].shape() == weight.shape())
      return &g_active_copies->copies_[k];
  return nullptr;
}

}  // namespace gdn
