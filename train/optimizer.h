// train/optimizer.h — AdamW, the learning-rate schedule, and global gradient-norm clipping.
//
// AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"), as torch.optim.AdamW computes it:
//   m = beta1 m + (1 - beta1) g            v = beta2 v + (1 - beta2) g^2
//   mhat = m / (1 - beta1^t)               vhat = v / (1 - beta2^t)          t = 1, 2, ... (1-based)
//   p = p (1 - lr wd) - lr mhat / (sqrt(vhat) + eps)
// The update is one kernel call per parameter group (kernels::adamw_step over a list of tensors: one launch on the
// GPU; ops/cpu/optimizer_cpu.cpp and cuda/optimizer.cu), the groups being "with" and "without" weight decay; it can
// apply the global-norm clip factor itself, computed on the device from the squared norm. The m ("exp_avg")
// and v ("exp_avg_sq") buffers are allocated once in the constructor, zeros with the parameter's dtype and device,
// so a step allocates nothing. Parameters marked decay = false get weight_decay 0; the trainer marks them from the
// config key no_decay (default: the norm weights and the gate parameters A_log and dt_bias; the model has no biases).
//
// Step counting: ONE counter for the whole optimizer, incremented by every step(); a parameter without a .grad() in
// some step is skipped but the counter still moves (torch keeps one per parameter; the two agree whenever every
// parameter gets a gradient every step, which is the case when training a whole model).
//
// Schedule: learning_rate_at(step) — linear warmup, then linear or cosine decay to a floor (see below).
// Clipping: clip_grad_norm — torch.nn.utils.clip_grad_norm_ with the L2 norm.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace gdn {

struct NamedParameter {
  std::string name;  // e.g. "layers.0.attn.in_proj_qkvz.weight"; unique within one optimizer
  Tensor value;      // a contiguous leaf
  bool decay;        // apply weight decay to it
};

class AdamW {
 public:
  AdamW(std::vector<NamedParameter> params, double beta1, double beta2, double eps, double weight_decay);

  // One update of every parameter that has a .grad() (others are left alone), at learning rate lr. Runs under a
  // NoGradGuard. Does not zero the gradients. With grad_sq_norm (grad_norm_squared(), on the parameters' device) and
  // max_norm > 0 the gradients are clipped to that global norm inside the update, and a non-finite norm makes the
  // update a no-op (the step counter still moves) — all on the device, without the host reading the norm.
  void step(double lr, const Tensor& grad_sq_norm = Tensor(), double max_norm = 0);
  // step() in two halves, for a step captured as a CUDA graph: set_schedule() counts the step and writes (lr, step)
  // into a small device buffer (queued on the device's stream, outside the graph); apply() queues the update, which
  // reads them from that buffer, so a replay of a captured apply() uses the values of the latest set_schedule().
  void set_schedule(double lr);
  void apply(const Tensor& grad_sq_norm = Tensor(), double max_norm = 0);
  int64_t steps_taken() const { return steps_taken_; }

  // The moment buffers under PyTorch's names, "exp_avg.<name>" then "exp_avg_sq.<name>" per parameter, in parameter
  // order. The tensors ARE the live buffers (no copy): write them out before the next step().
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  // Restores the buffers (copied in, converted to each buffer's dtype/device) and the step counter; training then
  // continues bit-identically. Entries named neither "exp_avg.*" nor "exp_avg_sq.*" are ignored (a checkpoint may
  // hold the model's tensors in the same list). A missing entry, a wrong shape, or an entry for an unknown parameter
  // is a UserError; on error nothing is changed.
  void load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps_taken);

  const std::vector<NamedParameter>& params() const { return params_; }

 private:
  std::vector<NamedParameter> params_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;  // m, v; one per parameter, same shape/dtype/device
  Tensor schedule_;                           // (lr, step) as float64 on the parameters' device
  double lr_ = 0;
  double beta1_, beta2_, eps_, weight_decay_;
  int64_t steps_taken_ = 0;
};

// The learning rate of 0-based step `step` of a run of total_steps:
//   step < warmup_steps:  lr * (step + 1) / warmup_steps           (lr / warmup_steps at step 0, lr at warmup - 1)
//   afterwards:           floor + (lr - floor) * f(progress),  floor = min_lr_ratio * lr,
//                         progress = (step - warmup_steps) / (total_steps - warmup_steps), clamped to [0, 1],
//                         f = 1 - progress (schedule "linear") or (1 + cos(pi progress)) / 2 ("cosine"),
// so the rate is lr right after warmup and reaches the floor at step == total_steps. Unknown schedule: UserError.
double learning_rate_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr, double min_lr_ratio,
                        const std::string& schedule);

// Global L2 norm of the .grad() of every tensor in params (those without a gradient are skipped), each tensor's sum
// of squares added up in double. If max_norm > 0 and norm > max_norm, every gradient is scaled in place by
// max_norm / (norm + 1e-6), as torch does. A non-finite norm is returned as is and nothing is scaled (the caller
// decides whether to skip the step). Returns the norm before clipping.
// Host sync: reads ONE number (the squared norm) back to the host per call, on any device.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// The squared global L2 norm of the .grad() of params as a float64 [1] tensor on their device (one sum_squares
// kernel, accumulated in double; nothing is read back). Undefined when no parameter has a gradient.
Tensor grad_norm_squared(const std::vector<Tensor>& params);

}  // namespace gdn
