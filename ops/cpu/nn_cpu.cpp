// ops/cpu/nn_cpu.cpp — CPU kernels of the neural-network ops: embedding, fused cross-entropy, RMSNorm.
//
// Row-parallel loops (OpenMP) with per-row work in the element type and reductions in double:
//   cross-entropy: loss_i = logsumexp(x_i) - x_i[t_i] with the max subtracted first (stable); the backward rebuilds
//   softmax from the saved logsumexp instead of storing the [N,V] probabilities.
//   RMSNorm: y = x * r * w, r = 1/sqrt(mean(x^2) + eps); with xh = x * r and gh = dy * w,
//   dx = r * (gh - xh * mean(gh * xh)), dw = sum_rows dy * xh.
#include "ops/cpu/eigen.h"  // first: see that header

#include <cmath>
#include <vector>

#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/cpu_loops.h"

namespace gdn::cpu {

namespace {

template <typename I> void check_ids(const I* ids, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; ++i)
    GDN_CHECK(ids[i] >= 0 && ids[i] < vocab, "embedding: id {} at position {} is outside [0, {})",
              static_cast<int64_t>(ids[i]), i, vocab);
}

void embedding_forward(const Tensor& out, const Tensor& weight, const Tensor& ids) {
  GDN_CHECK(out.is_contiguous() && weight.is_contiguous() && ids.is_contiguous(), "embedding: contiguous only");
  const int64_t N = ids.numel(), V = weight.size(0), D = weight.size(1);
  dispatch_index(ids.dtype(), "embedding", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    const auto* id = ids.data<scalar_t>();
    check_ids(id, N, V);
    dispatch_float(out.dtype(), "embedding", [&](auto tag_) {
    using scalar_t = decltype(tag_);
      const auto* w = weight.data<scalar_t>();
      auto* o = out.data<scalar_t>();
#pragma omp parallel for if (N * D >= kParallelGrain)
      for (int64_t i = 0; i < N; ++i) std::copy(w + id[i] * D, w + id[i] * D + D, o + i * D);
    });
  });
}

void embedding_backward(const Tensor& dweight, const Tensor& dout, const Tensor& ids) {
  GDN_CHECK(dweight.is_contiguous() && dout.is_contiguous() && ids.is_contiguous(), "embedding: contiguous only");
  const int64_t N = ids.numel(), D = dweight.size(1);
  dispatch_index(ids.dtype(), "embedding_backward", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    const auto* id = ids.data<scalar_t>();
    dispatch_float(dweight.dtype(), "embedding_backward", [&](auto tag_) {
    using scalar_t = decltype(tag_);
      auto* dw = dweight.data<scalar_t>();
      const auto* g = dout.data<scalar_t>();
      std::fill(dw, dw + dweight.numel(), scalar_t(0));
      for (int64_t i = 0; i < N; ++i)  // serial: rows with equal ids collide
        for (int64_t d = 0; d < D; ++d) dw[id[i] * D + d] += g[i * D + d];
    });
  });
}

void cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& count, const Tensor& logits,
                           const Tensor& targets, int64_t ignore_index) {
  GDN_CHECK(logits.is_contiguous() && targets.is_contiguous(), "cross_entropy: contiguous only");
  if (logits.dtype() == kBFloat16)  // bfloat16 logits: their exact float32 values, float32 arithmetic
    return cross_entropy_forward(loss, lse, count, float32_copy(logits), targets, ignore_index);
  const int64_t N = logits.size(0), V = logits.size(1);
  const auto* t = targets.data<int64_t>();
  for (int64_t i = 0; i < N; ++i)
    GDN_CHECK(t[i] == ignore_index || (t[i] >= 0 && t[i] < V), "cross_entropy: target {} at row {} outside [0, {})",
              t[i], i, V);
  dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag_) {
    using T = decltype(tag_);
    using Row = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
    const T* x = logits.data<T>();
    T* l = lse.data<T>();
    double total = 0;
    int64_t kept = 0;
#pragma omp parallel for reduction(+ : total, kept) if (N * V >= kParallelGrain)
    for (int64_t i = 0; i < N; ++i) {
      Row row(x + i * V, V);
      const T m = row.maxCoeff();
      const double s = static_cast<double>((row - m).exp().sum());  // Eigen's vectorised exp
      const double lsei = static_cast<double>(m) + std::log(s);
      l[i] = static_cast<T>(lsei);
      if (t[i] != ignore_index) {
        total += lsei - static_cast<double>(row[t[i]]);
        kept += 1;
      }
    }
    loss.data<T>()[0] = static_cast<T>(kept > 0 ? total / kept : 0.0);
    count.data<T>()[0] = static_cast<T>(kept);
  });
}

void cross_entropy_backward(const Tensor& dlogits, const Tensor& dloss, const Tensor& logits, const Tensor& lse,
                            const Tensor& count, const Tensor& targets, int64_t ignore_index) {
  if (logits.dtype() == kBFloat16)  // bfloat16 logits: their exact float32 values (dlogits in bfloat16)
    return cross_entropy_backward(dlogits, dloss, float32_copy(logits), lse, count, targets, ignore_index);
  if (dlogits.dtype() == kBFloat16 && logits.dtype() == kFloat32) {  // float32 values, rounded once to bfloat16
    Tensor d = Tensor::empty(dlogits.shape(), kFloat32, kCPU);
    cross_entropy_backward(d, dloss, logits, lse, count, targets, ignore_index);
    kernels::copy(kCPU, dlogits, d);
    return;
  }
  GDN_CHECK(dlogits.dtype() == logits.dtype(), "cross_entropy_backward: {} dlogits for {} logits", dlogits.dtype(),
            logits.dtype());
  const int64_t N = logits.size(0), V = logits.size(1);
  const auto* t = targets.data<int64_t>();
  dispatch_float(logits.dtype(), "cross_entropy_backward", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    const auto* x = logits.data<scalar_t>();
    const auto* l = lse.data<scalar_t>();
    auto* dx = dlogits.data<scalar_t>();
    const scalar_t c = count.data<scalar_t>()[0];
    const scalar_t scale = c > 0 ? dloss.data<scalar_t>()[0] / c : scalar_t(0);
#pragma omp parallel for if (N * V >= kParallelGrain)
    for (int64_t i = 0; i < N; ++i) {
      scalar_t* drow = dx + i * V;
      if (t[i] == ignore_index) {
        std::fill(drow, drow + V, scalar_t(0));
        continue;
      }
      using Row = Eigen::Map<const Eigen::Array<scalar_t, Eigen::Dynamic, 1>>;
      Eigen::Map<Eigen::Array<scalar_t, Eigen::Dynamic, 1>>(drow, V) = scale * (Row(x + i * V, V) - l[i]).exp();
      drow[t[i]] -= scale;
    }
  });
}

void cross_entropy_fused(const Tensor& loss, const Tensor& lse, const Tensor& count, const Tensor& dlogits,
                         const Tensor& dscale, const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  cross_entropy_forward(loss, lse, count, logits, targets, ignore_index);
  Tensor one = Tensor::empty({1}, count.dtype(), kCPU);  // the backward's scale: dloss / 1 = dscale
  kernels::fill(kCPU, one, 1.0);
  cross_entropy_backward(dlogits, dscale, logits, lse, one, targets, ignore_index);
}

void rms_norm_forward(const Tensor& y, const Tensor& rstd, const Tensor& h, const Tensor& x, const Tensor& r,
                      const Tensor& w, double eps) {
  GDN_CHECK(x.is_contiguous() && y.is_contiguous() && w.is_contiguous(), "rms_norm: contiguous only");
  GDN_CHECK(!r.defined() || (r.is_contiguous() && h.is_contiguous() && r.numel() == x.numel() &&
                             h.numel() == x.numel()),
            "rms_norm: the residual and the sum must be contiguous, of x's size");
  const int64_t D = x.size(-1), N = x.numel() / D;
  dispatch_float(x.dtype(), "rms_norm", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    const auto* wp = w.data<scalar_t>();
    auto* rp = rstd.data<scalar_t>();
    const scalar_t* xp = x.data<scalar_t>();
    if (r.defined()) {  // h = x + r, then h is the norm's input
      const auto* res = r.data<scalar_t>();
      auto* hp = h.data<scalar_t>();
#pragma omp parallel for if (N * D >= kParallelGrain)
      for (int64_t e = 0; e < N * D; ++e) hp[e] = xp[e] + res[e];
      xp = hp;
    }
    with_storage<scalar_t>(y, [&](auto* yp) {  // y may be bfloat16 for float32 x
      using Y = std::remove_pointer_t<decltype(yp)>;
#pragma omp parallel for if (N * D >= kParallelGrain)
      for (int64_t i = 0; i < N; ++i) {
        const scalar_t* row = xp + i * D;
        double ss = 0;
        for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(row[d]) * row[d];
        const scalar_t rs = static_cast<scalar_t>(1.0 / std::sqrt(ss / D + eps));
        rp[i] = rs;
        for (int64_t d = 0; d < D; ++d) yp[i * D + d] = out_value<Y>(row[d] * rs * wp[d]);
      }
    });
  });
}

void rms_norm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& dres, const Tensor& x,
                       const Tensor& w, const Tensor& rstd) {
  GDN_CHECK(dx.is_contiguous() && dy.is_contiguous() && x.is_contiguous(), "rms_norm_backward: contiguous only");
  GDN_CHECK(!dres.defined() || (dres.is_contiguous() && dres.numel() == x.numel()),
            "rms_norm_backward: the residual gradient must be contiguous, of x's size");
  const int64_t D = x.size(-1), N = x.numel() / D;
  dispatch_float(x.dtype(), "rms_norm_backward", [&](auto tag_) {
    using scalar_t = decltype(tag_);
    const auto* xp = x.data<scalar_t>();
    const auto* wp = w.data<scalar_t>();
    const auto* gp = dy.data<scalar_t>();
    const auto* rp = rstd.data<scalar_t>();
    const scalar_t* dr = dres.defined() ? dres.data<scalar_t>() : nullptr;
    auto* dxp = dx.data<scalar_t>();
#pragma omp parallel for if (N * D >= kParallelGrain)
    for (int64_t i = 0; i < N; ++i) {
      const scalar_t r = rp[i];
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(gp[i * D + d]) * wp[d] * xp[i * D + d] * r;
      const scalar_t mean_dot = static_cast<scalar_t>(dot / D);
      for (int64_t d = 0; d < D; ++d) {
        scalar_t xh = xp[i * D + d] * r;
        const scalar_t v = r * (gp[i * D + d] * wp[d] - xh * mean_dot);
        dxp[i * D + d] = dr ? v + dr[i * D + d] : v;
      }
    }
    std::vector<double> acc(D, 0.0);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t d = 0; d < D; ++d) acc[d] += static_cast<double>(gp[i * D + d]) * xp[i * D + d] * rp[i];
    auto* dwp = dw.data<scalar_t>();
    for (int64_t d = 0; d < D; ++d) dwp[d] = static_cast<scalar_t>(acc[d]);
  });
}

}  // namespace

void register_nn_kernels(KernelTable& t) {
  t.embedding_forward = embedding_forward;
  t.embedding_backward = embedding_backward;
  t.cross_entropy_forward = cross_entropy_forward;
  t.cross_entropy_backward = cross_entropy_backward;
  t.cross_entropy_fused = cross_entropy_fused;
  t.rms_norm_forward = rms_norm_forward;
  t.rms_norm_backward = rms_norm_backward;
}

}  // namespace gdn::cpu
