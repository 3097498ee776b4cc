// train/grad_buckets.h — data parallel: the gradients averaged over the ranks in buckets, while the backward runs.
//
// The parameters are cut into buckets of about bucket_bytes each, in reverse order of the parameter list (the model
// lists them input to output, the backward finishes them output to input, so a bucket's gradients complete close
// together). The autograd engine reports every leaf whose gradient is final (autograd/engine.h on_leaf_ready); once
// all gradients of the next bucket are final, that bucket's average starts (Communicator::average_async: on a GPU an
// NCCL all-reduce on its own stream, beside the rest of the backward). Buckets start strictly in order, so every rank
// issues the same collectives in the same order. finish() starts what is left (parameters the loss did not reach get
// zero gradients, the loss itself is averaged too) and makes the device wait for all of it before the gradient norm
// and AdamW read the gradients. bucket_bytes = 0: one bucket, started after the whole backward (no overlap).
#pragma once

#include <cstddef>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace gdn {

class Communicator;

class GradBuckets {
 public:
  GradBuckets(std::vector<Tensor> params, Communicator& comm, size_t bucket_bytes);

  void begin();                         // before a backward: no gradient is final yet
  void leaf_ready(const TensorImpl& leaf);  // the engine's on_leaf_ready (other leaves are ignored)
  // After the backward: the remaining buckets and `loss` (undefined: none) averaged; the device waits for all.
  void finish(const Tensor& loss);

  size_t buckets() const { return buckets_.size(); }
  const std::vector<size_t>& bucket(size_t b) const { return buckets_[b]; }  // indices into the parameter list
  // How many buckets the last backward started before finish() (the ones that overlapped the backward).
  size_t started_in_backward() const { return started_in_backward_; }

 private:
  void start(size_t b);

  std::vector<Tensor> params_;
  Communicator& comm_;
  std::unordered_map<const TensorImpl*, size_t> index_;  // parameter -> its position in params_
  std::vector<std::vector<size_t>> buckets_;             // bucket -> parameter positions
  std::vector<size_t> bucket_of_;                        // parameter position -> bucket
  std::vector<size_t> missing_;                          // bucket -> gradients not final yet
  std::vector<char> final_;                              // parameter position -> final in this backward
  size_t next_ = 0;                                      // the next bucket to start
  size_t started_in_backward_ = 0;
};

}  // namespace gdn
