// train/step.cpp — see step.h.
#include "train/step.h"

#include <utility>

#include "autograd/engine.h"
#include "ops/ops.h"
#include "train/distributed.h"
#include "train/grad_buckets.h"

namespace gdn {

TrainStep::TrainStep(GatedDeltaNetLM& model, AdamW& optimizer, std::vector<Tensor> params, int64_t batch,
                     int64_t seq_len, const StepOptions& options)
    : model_(model), optimizer_(optimizer), params_(std::move(params)), batch_(batch), seq_len_(seq_len),
      grad_clip_(options.grad_clip), fused_loss_(options.fused_loss && model.device().is_cuda()),
      comm_(options.comm), device_(model.device()) {
  if (comm_) buckets_ = std::make_unique<GradBuckets>(params_, *comm_, options.bucket_bytes);
  if (options.cuda_graph && device_.is_cuda()) {
    graph_ = std::make_unique<CapturedWork>(device_);
    ids_ = Tensor::empty({batch, seq_len}, kInt64, device_);
    targets_ = Tensor::empty({batch, seq_len}, kInt64, device_);
  }
}

TrainStep::~TrainStep() = default;

size_t TrainStep::graph_nodes() const { return graph_ ? graph_->nodes() : 0; }

StepOutputs TrainStep::issue(const Tensor& ids, const Tensor& targets) {
  clear_grads(params_);
  LossOutput out = model_.loss(ids, targets, fused_loss_);
  if (buckets_) {  // data parallel: gradients averaged bucket by bucket while the backward runs, then the loss
    buckets_->begin();
    backward({out.loss}, {}, false, [this](const TensorImpl& leaf) { buckets_->leaf_ready(leaf); });
    buckets_->finish(out.ce);
  } else {
    backward(out.loss);
  }
  Tensor grad_sq_norm = grad_norm_squared(params_);
  optimizer_.apply(grad_sq_norm, grad_clip_);
  return {out.ce.detach(), grad_sq_norm, out.aux_loss.defined() ? out.aux_loss.detach() : Tensor(),
          out.expert_tokens};
}

StepOutputs TrainStep::run(const int64_t* ids, const int64_t* targets, double lr, bool want_expert_tokens) {
  const size_t nbytes = static_cast<size_t>(batch_ * seq_len_) * sizeof(int64_t);
  optimizer_.set_schedule(lr);
  ++runs_;
  // Eager: fresh batch tensors every step; graph: the static buffers the graph reads.
  Tensor in = graph_ ? ids_ : Tensor::empty({batch_, seq_len_}, kInt64, device_);
  Tensor tg = graph_ ? targets_ : Tensor::empty({batch_, seq_len_}, kInt64, device_);
  copy_bytes(in.raw_data(), device_, ids, kCPU, nbytes);
  copy_bytes(tg.raw_data(), device_, targets, kCPU, nbytes);
  if (!graph_ || runs_ == 1) {  // eager; in graph mode the first step is the eager warm-up, on the same buffers
    StepOutputs out = issue(in, tg);
    if (!want_expert_tokens) out.expert_tokens.clear();
    return out;
  }
  if (!graph_->ready()) {
    graph_->begin_capture();
    captured_ = issue(ids_, targets_);
    graph_->end_capture();
  }
  graph_->replay();
  // The graph overwrites its outputs at every replay: hand out copies.
  NoGradGuard no_grad;
  StepOutputs out{clone(captured_.ce), clone(captured_.grad_sq_norm),
                  captured_.aux_loss.defined() ? clone(captured_.aux_loss) : Tensor(), {}};
  if (want_expert_tokens)
    for (const Tensor& t : captured_.expert_tokens) out.expert_tokens.push_back(clone(t));
  return out;
}

}  // namespace gdn
