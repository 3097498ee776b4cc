// train/grad_buckets.cpp — see grad_buckets.h.
#include "train/grad_buckets.h"

#include <algorithm>
#include <utility>

#include "core/dispatch.h"
#include "ops/creation.h"
#include "train/distributed.h"

namespace gdn {

GradBuckets::GradBuckets(std::vector<Tensor> params, Communicator& comm, size_t bucket_bytes)
    : params_(std::move(params)), comm_(comm), bucket_of_(params_.size()), final_(params_.size(), 0) {
  size_t bytes = 0;
  for (size_t i = params_.size(); i-- > 0;) {
    const Tensor& p = params_[i];
    index_.emplace(&p.impl(), i);
    const size_t nbytes = static_cast<size_t>(p.numel()) * element_size(p.dtype());
    if (buckets_.empty() || (bucket_bytes > 0 && bytes > 0 && bytes + nbytes > bucket_bytes)) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().push_back(i);
    bucket_of_[i] = buckets_.size() - 1;
    bytes += nbytes;
  }
  missing_.resize(buckets_.size());
}

void GradBuckets::begin() {
  for (size_t b = 0; b < buckets_.size(); ++b) missing_[b] = buckets_[b].size();
  std::fill(final_.begin(), final_.end(), 0);
  next_ = 0;
  started_in_backward_ = 0;
}

void GradBuckets::leaf_ready(const TensorImpl& leaf) {
  auto it = index_.find(&leaf);
  if (it == index_.end() || final_[it->second]) return;
  final_[it->second] = 1;
  --missing_[bucket_of_[it->second]];
  while (next_ < buckets_.size() && missing_[next_] == 0) {
    start(next_++);
    ++started_in_backward_;
  }
}

void GradBuckets::start(size_t b) {
  std::vector<Tensor> grads;
  for (size_t i : buckets_[b]) {
    Tensor& p = params_[i];
    if (!p.grad().defined()) p.set_grad(zeros_like(p));  // not reached by the loss: contributes zeros
    grads.push_back(p.grad());
  }
  comm_.average_async(grads);
}

void GradBuckets::finish(const Tensor& loss) {
  while (next_ < buckets_.size()) start(next_++);
  if (loss.defined()) comm_.average_async({loss});
  comm_.wait_averages();
}

}  // namespace gdn
