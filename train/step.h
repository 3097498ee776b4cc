// train/step.h — one training step: forward, loss, backward, the global gradient norm, clipping and AdamW.
//
// With fused_loss, on a GPU, the loss is the fused lm_head + cross-entropy (ops/matmul.h linear_cross_entropy: no
// [N, V] logits in memory, at a few percent of step time); otherwise, and always on the CPU, the plain one.
//
// Eager: every step the host issues the step's kernels one by one (autograd builds and frees the tape).
// Graph (a GPU and cuda_graph): the first step runs eagerly (it warms the caching allocator, cuBLAS and every kernel's
// one-time setup), the second is captured once as a CUDA graph (train/device.h CapturedWork) and every step from
// then on is one replay of it. The graph reads the batch from two device buffers that run() fills before each
// replay (host-to-device copies queued on the same stream) and the learning rate and step count from the optimizer's
// device-side schedule (AdamW::set_schedule); the clip factor and the skip on a non-finite norm are already device
// decisions inside the AdamW kernel, so the captured step has no host branch on device values and no host wait.
// The two modes issue the same kernels in the same order on the same data, so their results are the same bits.
// Data parallel (a Communicator, train/distributed.h): the gradients are averaged over the ranks in buckets that
// start while the backward still runs (train/grad_buckets.h; on GPUs NCCL on a stream of its own, forked from the
// device's stream and joined back before the norm, so the graph captures it too), and the loss with the last one;
// the norm, the clip and AdamW then see the same numbers on every rank and keep the replicas identical.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "models/language_model.h"
#include "train/device.h"
#include "train/optimizer.h"

namespace gdn {

class Communicator;
class GradBuckets;

// What one step leaves on the device; the host reads it when it logs. The tensors are the caller's to keep.
struct StepOutputs {
  Tensor ce;                          // [] mean cross-entropy of the batch
  Tensor grad_sq_norm;                // [1] float64, before clipping
  Tensor aux_loss;                    // MoE load-balancing loss, undefined for dense models
  std::vector<Tensor> expert_tokens;  // per MoE layer [E] int64, when run() was asked for them
};

struct StepOptions {
  double grad_clip = 0;     // the global-norm threshold (0 = none)
  bool cuda_graph = true;   // on a GPU: capture the step at the second run and replay it
  bool fused_loss = false;  // on a GPU: lm_head + cross-entropy as one chunked op (GatedDeltaNetLM::loss fused_head)
  Communicator* comm = nullptr;  // data parallel: average gradients and loss over its ranks (null: one process)
  size_t bucket_bytes = size_t{25} << 20;  // data parallel: gradient bytes per bucket (0: one bucket after backward)
};

class TrainStep {
 public:
  // params: the optimizer's tensors (their gradients are dropped, measured and clipped). batch, seq_len: the fixed
  // shape of every batch.
  TrainStep(GatedDeltaNetLM& model, AdamW& optimizer, std::vector<Tensor> params, int64_t batch, int64_t seq_len,
            const StepOptions& options);
  ~TrainStep();

  // Queues one step on ids / targets (host, row-major [batch, seq_len]) at learning rate lr. Does not wait for the
  // device. expert_tokens are returned only when asked (they cost a copy per MoE layer in graph mode).
  StepOutputs run(const int64_t* ids, const int64_t* targets, double lr, bool want_expert_tokens);

  bool graph_mode() const { return graph_ != nullptr; }
  const GradBuckets* buckets() const { return buckets_.get(); }  // null without a communicator
  size_t graph_nodes() const;  // 0 before the capture or when eager

 private:
  StepOutputs issue(const Tensor& ids, const Tensor& targets);  // the step's kernels, eager or under capture

  GatedDeltaNetLM& model_;
  AdamW& optimizer_;
  std::vector<Tensor> params_;
  int64_t batch_, seq_len_;
  double grad_clip_;
  bool fused_loss_;
  Communicator* comm_;
  std::unique_ptr<GradBuckets> buckets_;  // data parallel
  Device device_;
  std::unique_ptr<CapturedWork> graph_;
  Tensor ids_, targets_;  // graph mode: the static batch buffers [batch, seq_len] int64 on the device
  StepOutputs captured_;  // graph mode: the graph's output buffers
  int64_t runs_ = 0;
};

}  // namespace gdn
