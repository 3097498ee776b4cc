// apps/libtorch/torch_train.cpp — see torch_train.h. The LibTorch API changed between the versions this builds
// against (Debian's 1.13 on the CPU, the 2.x of a PyTorch install with CUDA): autocast took a device type in 2.4,
// the fused AdamW kernel appeared in 2.0 and _foreach_mul_ with a tensor factor in 2.1; TORCH_AT_LEAST picks.
#include "apps/libtorch/torch_train.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <stdexcept>

#ifdef GDN_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

#define TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace gdn_torch {

bool torch_cuda_usable() {
#ifdef GDN_TORCH_CUDA
  return torch::cuda::is_available();
#else
  return false;
#endif
}

std::string cuda_device_name() {
#ifdef GDN_TORCH_CUDA
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) return prop.name;
#endif
  return "";
}

void set_torch_math_modes() {
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
}

void torch_synchronize(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

namespace {

#ifdef GDN_TORCH_CUDA
int device_index(torch::Device device) { return device.has_index() ? device.index() : 0; }
#endif

// torch.autocast("cuda", dtype=torch.bfloat16) as a scope: on entry enables autocast with that dtype and counts one
// level of nesting; on exit the outermost level clears the cache of cast weights (they change in every AdamW step)
// and the previous state comes back.
class AutocastScope {
 public:
  explicit AutocastScope(bool on) : on_(on) {
    if (!on_) return;
#if TORCH_AT_LEAST(2, 4)
    prev_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
    prev_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
#else
    prev_enabled_ = at::autocast::is_enabled();
    prev_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(at::kCUDA, prev_enabled_);
    at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
#else
    at::autocast::set_enabled(prev_enabled_);
    at::autocast::set_autocast_gpu_dtype(prev_dtype_);
#endif
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool on_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

// Clips the global L2 norm of the gradients at max_norm without reading anything back to the host.
void clip_grad_norm_on_device(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return;
  std::vector<torch::Tensor> norms = at::_foreach_norm(grads, 2);
  torch::Tensor total = torch::stack(norms).norm(2);
  torch::Tensor coef = torch::clamp_max((total + 1e-6).reciprocal() * max_norm, 1.0);
#if TORCH_AT_LEAST(2, 1)
  at::_foreach_mul_(grads, coef);
#else
  for (auto& g : grads) g.mul_(coef);
#endif
}

}  // namespace

void torch_reset_peak_memory(torch::Device device) {
#ifdef GDN_TORCH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device_index(device));
#else
  (void)device;
#endif
}

double torch_peak_memory_mib(torch::Device device) {
#ifdef GDN_TORCH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_index(device));
    return static_cast<double>(stats.allocated_bytes[0].peak) / 1048576.0;  // [0]: all pools together
  }
#else
  (void)device;
#endif
  return -1;
}

bool fused_adamw_available(torch::Device device) {
#if TORCH_AT_LEAST(2, 0)
  return device.is_cuda();
#else
  (void)device;
  return false;
#endif
}

// The AdamW of the two parameter groups (decay, no decay): the fused kernel's state, or torch::optim::AdamW.
struct TorchTrainer::Optimizer {
  struct Group {
    std::vector<torch::Tensor> params, exp_avg, exp_avg_sq, steps;  // steps: float32 scalars on the device
    double weight_decay;
  };
  std::vector<Group> groups;
  std::unique_ptr<torch::optim::AdamW> loop;
};

TorchTrainer::TorchTrainer(TorchGatedDeltaNetLM& model, const TorchStepOptions& options)
    : model_(model), options_(options), optimizer_(std::make_unique<Optimizer>()) {
  if (options_.precision == TorchPrecision::BFloat16 && !model_.device().is_cuda())
    throw std::runtime_error("bf16 autocast is compared on a CUDA device only");
  options_.fused_adamw = options_.fused_adamw && fused_adamw_available(model_.device());
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : model_.parameters()) {
    params_.push_back(p.value);
    (p.decay ? decay : no_decay).push_back(p.value);
  }
  if (options_.fused_adamw) {
    for (auto* list : {&decay, &no_decay}) {
      if (list->empty()) continue;
      Optimizer::Group g;
      g.weight_decay = list == &decay ? options_.weight_decay : 0.0;
      for (const auto& p : *list) {
        g.params.push_back(p);
        g.exp_avg.push_back(torch::zeros_like(p));
        g.exp_avg_sq.push_back(torch::zeros_like(p));
        g.steps.push_back(torch::zeros({}, p.options().dtype(torch::kFloat32).requires_grad(false)));
      }
      optimizer_->groups.push_back(std::move(g));
    }
  } else {
    using torch::optim::AdamWOptions;
    auto group_options = [&](double wd) {
      return std::make_unique<AdamWOptions>(
          AdamWOptions(options_.lr).betas({options_.beta1, options_.beta2}).eps(options_.eps).weight_decay(wd));
    };
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, group_options(options_.weight_decay));
    if (!no_decay.empty()) groups.emplace_back(no_decay, group_options(0.0));
    optimizer_->loop = std::make_unique<torch::optim::AdamW>(
        groups, AdamWOptions(options_.lr)
                    .betas({options_.beta1, options_.beta2})
                    .eps(options_.eps)
                    .weight_decay(options_.weight_decay));
  }
}

TorchTrainer::~TorchTrainer() = default;

std::string TorchTrainer::optimizer_name() const {
  return options_.fused_adamw ? "fused at::_fused_adamw_" : "torch::optim::AdamW (per parameter)";
}

torch::Tensor TorchTrainer::forward_backward(const torch::Tensor& ids, const torch::Tensor& targets) {
  for (auto& p : params_) p.mutable_grad() = torch::Tensor();
  torch::Tensor loss;
  {
    AutocastScope autocast(options_.precision == TorchPrecision::BFloat16);
    loss = model_.loss(ids, targets).loss;
  }
  loss.backward();
  return loss.detach();
}

torch::Tensor TorchTrainer::step(const torch::Tensor& ids, const torch::Tensor& targets) {
  torch::Tensor loss = forward_backward(ids, targets);
  clip_grad_norm_on_device(params_, options_.max_norm);
  if (optimizer_->loop) {
    optimizer_->loop->step();
    return loss;
  }
#if TORCH_AT_LEAST(2, 0)
  torch::NoGradGuard no_grad;
  for (auto& g : optimizer_->groups) {
    std::vector<torch::Tensor> p, grad, m, v, steps;  // the parameters that have a gradient this step
    for (size_t i = 0; i < g.params.size(); ++i) {
      if (!g.params[i].grad().defined()) continue;
      p.push_back(g.params[i]);
      grad.push_back(g.params[i].grad());
      m.push_back(g.exp_avg[i]);
      v.push_back(g.exp_avg_sq[i]);
      steps.push_back(g.steps[i]);
    }
    if (p.empty()) continue;
    at::_foreach_add_(steps, 1);
    at::_fused_adamw_(p, grad, m, v, at::TensorList(), steps, options_.lr, options_.beta1, options_.beta2,
                      g.weight_decay, options_.eps, /*amsgrad=*/false, /*maximize=*/false);
  }
#endif
  return loss;
}

}  // namespace gdn_torch
