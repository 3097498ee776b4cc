// apps/libtorch/torch_train.h — the LibTorch side of a training step in bench-libtorch, on the CPU or a CUDA device:
// precision modes, the optimizer step, device synchronisation and peak memory.
//
// Precision (TorchPrecision):
//   Float32   every op in float32; TF32 off for cuBLAS and cuDNN (set_torch_math_modes), so products are IEEE float32
//             like gdn.cpp's float32 mode.
//   BFloat16  LibTorch's own automatic mixed precision: the forward runs under CUDA autocast with dtype bfloat16 (its
//             op lists decide what runs in bf16: matmul / linear / conv in bf16 on tensor cores, reductions, norms,
//             softmax, cross-entropy in float32); the weights, gradients and AdamW state stay float32 (master
//             weights). The autocast weight cache is cleared after every forward, as torch.autocast's exit does.
// A step = zero grads, forward (under autocast in BFloat16), backward, clip the global gradient norm at max_norm (on
// the device, without reading the norm back: torch.nn.utils.clip_grad_norm_'s math, total = ||(||g_i||)_i||,
// g *= min(max_norm / (total + 1e-6), 1)), then AdamW. The AdamW is LibTorch's fused CUDA kernel (at::_fused_adamw_,
// what torch.optim.AdamW(fused=True) calls; LibTorch >= 2 on a CUDA device) or torch::optim::AdamW (one set of ops per
// parameter), as chosen; both take two parameter groups, weight decay on the decay = true parameters only.
// GDN_TORCH_CUDA (set by apps/libtorch/CMakeLists.txt when this LibTorch has CUDA) enables the CUDA-only parts.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

#include "apps/libtorch/torch_model.h"

namespace gdn_torch {

enum class TorchPrecision { Float32, BFloat16 };

// True when this binary was built against a LibTorch with CUDA and a CUDA device is visible to it.
bool torch_cuda_usable();
// The name of CUDA device 0 ("" without CUDA).
std::string cuda_device_name();

// TF32 off for cuBLAS and cuDNN (float32 products stay IEEE float32 in both precisions).
void set_torch_math_modes();
// Waits for the device's queued work (nothing to do on the CPU).
void torch_synchronize(torch::Device device);
// Peak of the bytes held by live tensors in LibTorch's CUDA caching allocator since the last reset, in MiB (-1 on
// the CPU, where LibTorch keeps no such counter).
void torch_reset_peak_memory(torch::Device device);
double torch_peak_memory_mib(torch::Device device);

struct TorchStepOptions {
  TorchPrecision precision = TorchPrecision::Float32;
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1, max_norm = 1.0;
  bool fused_adamw = true;  // honoured only where available (see fused_adamw_available)
};

bool fused_adamw_available(torch::Device device);

class TorchTrainer {
 public:
  TorchTrainer(TorchGatedDeltaNetLM& model, const TorchStepOptions& options);
  ~TorchTrainer();
  TorchTrainer(const TorchTrainer&) = delete;
  TorchTrainer& operator=(const TorchTrainer&) = delete;

  // Zero grads, forward in the trainer's precision, backward. Returns the loss (detached).
  torch::Tensor forward_backward(const torch::Tensor& ids, const torch::Tensor& targets);
  // One whole training step (forward_backward, clip, AdamW). Returns the loss (detached; reading it waits).
  torch::Tensor step(const torch::Tensor& ids, const torch::Tensor& targets);
  // "fused at::_fused_adamw_" or "torch::optim::AdamW (per parameter)".
  std::string optimizer_name() const;

 private:
  struct Optimizer;
  TorchGatedDeltaNetLM& model_;
  TorchStepOptions options_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<Optimizer> optimizer_;
};

}  // namespace gdn_torch
