// autograd/gradcheck.cpp — see gradcheck.h.
#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "core/random.h"

namespace gdn {

namespace {
// Storage offsets (relative to element 0 of the view) of every element in row-major order.
std::vector<int64_t> element_offsets(const Tensor& t) {
  std::vector<int64_t> offs;
  int64_t n = t.numel();
  offs.reserve(n);
  std::vector<int64_t> idx(t.dim(), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int64_t d = 0; d < t.dim(); ++d) off += idx[d] * t.stride(d);
    offs.push_back(off);
    for (int64_t d = t.dim() - 1; d >= 0; --d) {
      if (++idx[d] < t.size(d)) break;
      idx[d] = 0;
    }
  }
  return offs;
}

double projected_loss(const TensorList& outs, const std::vector<std::vector<double>>& w) {
  double l = 0;
  for (size_t j = 0; j < outs.size(); ++j) {
    if (!outs[j].defined()) continue;
    std::vector<double> v = outs[j].to_double_vector();
    for (size_t e = 0; e < v.size(); ++e) l += v[e] * w[j][e];
  }
  return l;
}
}  // namespace

GradcheckResult gradcheck(const GradcheckFn& f, const TensorList& inputs, const GradcheckOptions& opts) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined()) continue;
    GDN_CHECK(x.device().is_cpu(), "gradcheck: input {} is on {}, expected cpu", i, x.device());
    GDN_CHECK(!x.requires_grad() || x.dtype() == kFloat64, "gradcheck: input {} is {}, expected float64", i,
              x.dtype());
  }

  // Analytic gradients through the tape.
  for (const auto& x : inputs)
    if (x.defined()) x.impl().grad.reset();
  TensorList outs = f(inputs);
  Generator gen(opts.seed);
  std::vector<std::vector<double>> w(outs.size());
  TensorList roots, cotangents;
  for (size_t j = 0; j < outs.size(); ++j) {
    if (!outs[j].defined()) continue;
    Tensor wj = randn(outs[j].shape(), gen, kFloat64);
    w[j] = wj.to_double_vector();
    if (outs[j].requires_grad()) {
      roots.push_back(outs[j]);
      cotangents.push_back(wj);
    }
  }
  GDN_CHECK(!roots.empty(), "gradcheck: no output requires grad (did the op record its backward?)");
  backward(roots, cotangents);

  GradcheckResult res;
  NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    std::vector<double> analytic(x.numel(), 0.0);
    if (x.grad().defined()) analytic = x.grad().to_double_vector();
    double* base = x.data<double>();
    std::vector<int64_t> offs = element_offsets(x);
    for (int64_t e = 0; e < x.numel(); ++e) {
      double saved = base[offs[e]];
      base[offs[e]] = saved + opts.eps;
      double lp = projected_loss(f(inputs), w);
      base[offs[e]] = saved - opts.eps;
      double lm = projected_loss(f(inputs), w);
      base[offs[e]] = saved;
      double numeric = (lp - lm) / (2 * opts.eps);
      double err = std::fabs(analytic[e] - numeric);
      double rel = err / std::max(std::fabs(numeric), 1e-12);
      res.max_abs_error = std::max(res.max_abs_error, err);
      if (err > opts.atol) res.max_rel_error = std::max(res.max_rel_error, rel);
      res.elements_checked++;
      if (!(err <= opts.atol + opts.rtol * std::fabs(numeric)) && res.ok) {
        res.ok = false;
        res.message = fmt::format("input {} {} element {}: analytic {:.10g} vs numeric {:.10g} (abs err {:.3g})", i,
                                  shape_str(x.shape()), e, analytic[e], numeric, err);
      }
    }
  }
  if (!res.ok)
    res.message += fmt::format("; worst abs err {:.3g}, worst rel err {:.3g}", res.max_abs_error, res.max_rel_error);
  return res;
}

}  // namespace gdn
