// train/step.h — one training step: forward, loss, backward, the global gradient norm, clipping and AdamW.
//
// Eager: every step the host issues the step's kernels one by one (autograd builds and frees the tape).
// Graph (a GPU and use_graph): the first step runs eagerly (it warms the caching allocator, cuBLAS and every kernel's
// one-time setup), the second is captured once as a CUDA graph (train/device.h CapturedWork) and every step from
// then on is one replay of it. The graph reads the batch from two device buffers that run() fills before each
// replay (host-to-device copies queued on the same stream) and the learning rate and step count from the optimizer's
// device-side schedule (AdamW::set_schedule); the clip factor and the skip on a non-finite norm are already device
// decisions inside the AdamW kernel, so the captured step has no host branch on device values and no host wait.
// The two modes issue the same kernels in the same order on the same data, so their results are the same bits.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "models/language_model.h"
#include "train/device.h"
#include "train/optimizer.h"

namespace gdn {

// What one step leaves on the device; the host reads it when it logs. The tensors are the caller's to keep.
struct StepOutputs {
  Tensor ce;                          // [] mean cross-entropy of the batch
  Tensor grad_sq_norm;                // [1] float64, before clipping
  Tensor aux_loss;                    // MoE load-balancing loss, undefined for dense models
  std::vector<Tensor> expert_tokens;  // per MoE layer [E] int64, when run() was asked for them
};

class TrainStep {
 public:
  // params: the optimizer's tensors (their gradients are zeroed, measured and clipped). batch, seq_len: the fixed
  // shape of every batch. grad_clip: the global-norm threshold (0 = none).
  TrainStep(GatedDeltaNetLM& model, AdamW& optimizer, std::vector<Tensor> params, int64_t batch, int64_t seq_len,
            double grad_clip, bool use_graph);
  ~TrainStep();

  // Queues one step on ids / targets (host, row-major [batch, seq_len]) at learning rate lr. Does not wait for the
  // device. expert_tokens are returned only when asked (they cost a copy per MoE layer in graph mode).
  StepOutputs run(const int64_t* ids, const int64_t* targets, double lr, bool want_expert_tokens);

  bool graph_mode() const { return graph_ != nullptr; }
  size_t graph_nodes() const;  // 0 before the capture or when eager

 private:
  StepOutputs issue(const Tensor& ids, const Tensor& targets);  // the step's kernels, eager or under capture

  GatedDeltaNetLM& model_;
  AdamW& optimizer_;
  std::vector<Tensor> params_;
  int64_t batch_, seq_len_;
  double grad_clip_;
  Device device_;
  std::unique_ptr<CapturedWork> graph_;
  Tensor ids_, targets_;  // graph mode: the static batch buffers [batch, seq_len] int64 on the device
  StepOutputs captured_;  // graph mode: the graph's output buffers
  int64_t runs_ = 0;
};

}  // namespace gdn
