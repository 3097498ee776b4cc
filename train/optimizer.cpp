// train/optimizer.cpp — AdamW over the adamw_step kernel (one call per parameter group), the warmup + decay
// schedule, global-norm clipping.
// Formulas and conventions: optimizer.h.
#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <set>

#include "core/check.h"
#include "core/dispatch.h"
#include "ops/ops.h"

namespace gdn {

AdamW::AdamW(std::vector<NamedParameter> params, double beta1, double beta2, double eps, double weight_decay)
    : params_(std::move(params)), beta1_(beta1), beta2_(beta2), eps_(eps), weight_decay_(weight_decay) {
  std::set<std::string> names;
  exp_avg_.reserve(params_.size());
  exp_avg_sq_.reserve(params_.size());
  for (const NamedParameter& p : params_) {
    GDN_CHECK(p.value.defined(), "AdamW: parameter '{}' is undefined", p.name);
    GDN_CHECK(p.value.is_contiguous(), "AdamW: parameter '{}' must be contiguous", p.name);
    GDN_CHECK(names.insert(p.name).second, "AdamW: two parameters are named '{}'", p.name);
    exp_avg_.push_back(zeros(p.value.shape(), p.value.dtype(), p.value.device()));
    exp_avg_sq_.push_back(zeros(p.value.shape(), p.value.dtype(), p.value.device()));
  }
  if (!params_.empty()) schedule_ = zeros({2}, kFloat64, params_[0].value.device());
}

void AdamW::step(double lr, const Tensor& grad_sq_norm, double max_norm) {
  set_schedule(lr);
  apply(grad_sq_norm, max_norm);
}

void AdamW::set_schedule(double lr) {
  ++steps_taken_;
  lr_ = lr;
  if (!schedule_.defined()) return;
  const double values[2] = {lr, static_cast<double>(steps_taken_)};
  copy_bytes(schedule_.raw_data(), schedule_.device(), values, kCPU, sizeof(values));
}

void AdamW::apply(const Tensor& grad_sq_norm, double max_norm) {
  NoGradGuard no_grad;
  // Two groups (with and without weight decay), one kernel call each, over every parameter that has a gradient.
  struct Group {
    std::vector<Tensor> params, ms, vs, grads;
  } groups[2];
  for (size_t i = 0; i < params_.size(); ++i) {
    const NamedParameter& p = params_[i];
    Tensor grad = p.value.grad();
    if (!grad.defined()) continue;
    GDN_CHECK(grad.shape() == p.value.shape() && grad.dtype() == p.value.dtype() && grad.device() == p.value.device(),
              "AdamW: gradient {} of '{}' does not match the parameter {}", grad.str(), p.name, p.value.str());
    if (!grad.is_contiguous()) grad = contiguous(grad);
    Group& g = groups[p.decay ? 1 : 0];
    GDN_CHECK(g.params.empty() || (g.params[0].dtype() == p.value.dtype() && g.params[0].device() == p.value.device()),
              "AdamW: parameter '{}' is {} on {}, unlike the others", p.name, p.value.dtype(), p.value.device());
    g.params.push_back(p.value);
    g.ms.push_back(exp_avg_[i]);
    g.vs.push_back(exp_avg_sq_[i]);
    g.grads.push_back(grad);
  }
  for (int decay = 0; decay < 2; ++decay) {
    const Group& g = groups[decay];
    if (g.params.empty()) continue;
    AdamWParams hp{lr_, beta1_, beta2_, eps_, decay ? weight_decay_ : 0.0, steps_taken_, max_norm};
    kernels::adamw_step(g.params[0].device(), g.params, g.ms, g.vs, g.grads, grad_sq_norm, schedule_, hp);
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(2 * params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].name, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + params_[i].name, exp_avg_sq_[i]);
  }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps_taken) {
  GDN_USER_CHECK(steps_taken >= 0, "optimizer state: step count must be >= 0, got {}", steps_taken);
  // Index the entries of interest; reject duplicates and entries for parameters we do not have.
  std::map<std::string, Tensor> by_name;
  std::set<std::string> known;
  for (const NamedParameter& p : params_) known.insert(p.name);
  for (const auto& [name, t] : tensors) {
    std::string param;
    if (name.rfind("exp_avg.", 0) == 0) param = name.substr(8);
    else if (name.rfind("exp_avg_sq.", 0) == 0) param = name.substr(11);
    else continue;
    GDN_USER_CHECK(known.count(param), "optimizer state has '{}' but the model has no parameter '{}'", name, param);
    GDN_USER_CHECK(by_name.emplace(name, t).second, "optimizer state has '{}' twice", name);
  }
  // Check everything before changing anything.
  std::vector<std::pair<Tensor, Tensor>> copies;  // (buffer, source)
  for (size_t i = 0; i < params_.size(); ++i) {
    for (const auto& [prefix, buffer] : {std::pair<std::string, Tensor>{"exp_avg.", exp_avg_[i]},
                                         std::pair<std::string, Tensor>{"exp_avg_sq.", exp_avg_sq_[i]}}) {
      const std::string name = prefix + params_[i].name;
      auto it = by_name.find(name);
      GDN_USER_CHECK(it != by_name.end() && it->second.defined(), "optimizer state is missing '{}'", name);
      GDN_USER_CHECK(it->second.shape() == buffer.shape(), "optimizer state '{}' has shape {}, expected {}", name,
                     shape_str(it->second.shape()), shape_str(buffer.shape()));
      copies.emplace_back(buffer, it->second);
    }
  }
  NoGradGuard no_grad;
  for (auto& [buffer, source] : copies) {
    Tensor src = source.device() == buffer.device() ? source : to_device(source, buffer.device());
    kernels::copy(buffer.device(), buffer, src);  // converts the dtype if needed
  }
  steps_taken_ = steps_taken;
}

double learning_rate_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr, double min_lr_ratio,
                        const std::string& schedule) {
  GDN_USER_CHECK(schedule == "linear" || schedule == "cosine",
                 "unknown learning-rate schedule '{}' (valid: linear, cosine)", schedule);
  GDN_CHECK(step >= 0 && warmup_steps >= 0, "learning_rate_at: step {} warmup {}", step, warmup_steps);
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const double floor = min_lr_ratio * lr;
  const int64_t decay_steps = total_steps - warmup_steps;
  double progress = decay_steps > 0 ? static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps) : 1.0;
  progress = std::clamp(progress, 0.0, 1.0);
  const double f = schedule == "linear" ? 1.0 - progress : 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return floor + (lr - floor) * f;
}

Tensor grad_norm_squared(const std::vector<Tensor>& params) {
  NoGradGuard no_grad;
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined()) grads.push_back(g.is_contiguous() ? g : contiguous(g));
  }
  if (grads.empty()) return Tensor();
  Tensor out = Tensor::empty({1}, kFloat64, grads[0].device());
  kernels::sum_squares(out.device(), out, grads);
  return out;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  Tensor sq = grad_norm_squared(params);
  if (!sq.defined()) return 0.0;
  const double norm = std::sqrt(sq.item());
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const Tensor& p : params)
      if (p.grad().defined()) mul_(p.grad(), scale);
  }
  return norm;
}

}  // namespace gdn
