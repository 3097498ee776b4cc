// ops/cpu/optimizer_cpu.cpp — CPU kernels of the optimizer: the squared global gradient norm and AdamW, each over a
// whole list of tensors in one call (the CUDA twins, cuda/optimizer.cu, make that one launch).
//
// sum_squares: out = sum_i sum_j xs[i][j]^2 in double, tensor by tensor in list order.
// adamw_step (torch.optim.AdamW, decoupled weight decay; t = p.step, 1-based; g already times the clip factor c):
//   m = beta1 m + (1 - beta1) g          v = beta2 v + (1 - beta2) g^2
//   p = p (1 - lr wd) - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The clip factor c = max_norm / (norm + 1e-6) when max_norm > 0 and norm = sqrt(grad_sq_norm) > max_norm, else 1
// (torch.nn.utils.clip_grad_norm_); applying it here saves a pass over the gradients. A non-finite norm leaves every
// parameter and moment as it was, so an overflowing step cannot write NaN into the weights.
#include <cmath>

#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/cpu_loops.h"

namespace gdn::cpu {

namespace {

void sum_squares(const Tensor& out, const std::vector<Tensor>& xs) {
  GDN_CHECK(out.dtype() == kFloat64 && out.numel() == 1, "sum_squares: out must be one float64");
  double total = 0;
  for (const Tensor& x : xs) {
    GDN_CHECK(x.is_contiguous(), "sum_squares: contiguous only");
    dispatch_float(x.dtype(), "sum_squares", [&](auto tag) {
      using T = decltype(tag);
      const T* p = x.data<T>();
      const int64_t n = x.numel();
      double s = 0;
#pragma omp parallel for reduction(+ : s) if (n >= kParallelGrain)
      for (int64_t i = 0; i < n; ++i) s += static_cast<double>(p[i]) * static_cast<double>(p[i]);
      total += s;
    });
  }
  out.data<double>()[0] = total;
}

// The factor the gradients are multiplied by, or NaN when the step must be skipped.
double clip_factor(const Tensor& grad_sq_norm, double max_norm) {
  if (!grad_sq_norm.defined()) return 1.0;
  const double norm = std::sqrt(grad_sq_norm.data<double>()[0]);
  if (!std::isfinite(norm)) return NAN;
  return max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
}

void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& ms, const std::vector<Tensor>& vs,
                const std::vector<Tensor>& grads, const Tensor& grad_sq_norm, const Tensor& schedule,
                const AdamWParams& hp) {
  GDN_CHECK(ms.size() == params.size() && vs.size() == params.size() && grads.size() == params.size(),
            "adamw_step: {} params, {} m, {} v, {} grads", params.size(), ms.size(), vs.size(), grads.size());
  AdamWParams p = hp;
  if (schedule.defined()) {
    GDN_CHECK(schedule.dtype() == kFloat64 && schedule.numel() == 2 && schedule.is_contiguous(),
              "adamw_step: schedule must be two float64 (lr, step)");
    p.lr = schedule.data<double>()[0];
    p.step = static_cast<int64_t>(schedule.data<double>()[1]);
  }
  const double c = clip_factor(grad_sq_norm, p.max_norm);
  if (!std::isfinite(c)) return;
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  for (size_t k = 0; k < params.size(); ++k) {
    const Tensor &param = params[k], &m = ms[k], &v = vs[k], &grad = grads[k];
    GDN_CHECK(param.is_contiguous() && m.is_contiguous() && v.is_contiguous() && grad.is_contiguous(),
              "adamw_step: contiguous only");
    GDN_CHECK(m.numel() == param.numel() && v.numel() == param.numel() && grad.numel() == param.numel(),
              "adamw_step: tensor {} sizes differ", k);
    dispatch_float(param.dtype(), "adamw_step", [&](auto tag) {
      using T = decltype(tag);
      T* w = param.data<T>();
      T* mp = m.data<T>();
      T* vp = v.data<T>();
      const T* g = grad.data<T>();
      const T b1 = static_cast<T>(p.beta1), b2 = static_cast<T>(p.beta2), scale = static_cast<T>(c);
      const T decay = static_cast<T>(1.0 - p.lr * p.weight_decay);
      const T step_size = static_cast<T>(p.lr / bc1);
      const T inv_sqrt_bc2 = static_cast<T>(1.0 / std::sqrt(bc2));
      const T eps = static_cast<T>(p.eps);
      const int64_t n = param.numel();
#pragma omp parallel for if (n >= kParallelGrain)
      for (int64_t i = 0; i < n; ++i) {
        const T gi = g[i] * scale;
        mp[i] = b1 * mp[i] + (T(1) - b1) * gi;
        vp[i] = b2 * vp[i] + (T(1) - b2) * gi * gi;
        w[i] = w[i] * decay - step_size * mp[i] / (std::sqrt(vp[i]) * inv_sqrt_bc2 + eps);
      }
    });
  }
}

}  // namespace

void register_optimizer_kernels(KernelTable& t) {
  t.sum_squares = sum_squares;
  t.adamw_step = adamw_step;
}

}  // namespace gdn::cpu
