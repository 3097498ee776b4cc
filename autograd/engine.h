// autograd/engine.h — running the tape backwards.
//
// backward(roots, grads) walks the graph from the roots' nodes: it counts, for each node, how many consumers will
// send it a gradient, then processes nodes in reverse topological order (Kahn's algorithm on the reversed graph,
// newest node first among the ready ones), summing each node's incoming gradients before calling its closure once.
// Leaves accumulate into .grad with +=; on_leaf_ready hears of each leaf whose gradient is complete. With
// retain_graph=false the closures (and their saved tensors) are freed as soon as they ran, so a second backward
// through the same graph is a loud error, not silent garbage.
// A gradient has its tensor's shape and dtype, with one exception: a bfloat16 activation (a norm's or swiglu's output
// stored in bf16 for a bf16 GEMM, ops/matmul.h linear_input_dtype) gets a float32 gradient, as bf16 storage is for
// the product's operand only; its producer's backward then reads a float32 dy like any other.
#pragma once

#include <functional>

#include "autograd/node.h"

namespace gdn {

// Called during backward() once for each leaf reached from the roots' nodes, as soon as every node that feeds it has
// run: its .grad is final from then on (it may have none, when every contribution was undefined). Data-parallel
// training starts averaging finished gradients over the ranks from it while the rest of the backward runs
// (train/grad_buckets.h). Leaves come in the order the engine finishes them, which is the same for the same graph.
using LeafReadyFn = std::function<void(const TensorImpl& leaf)>;

// roots: tensors to differentiate; grads: their incoming gradients (undefined = ones, only for 1-element roots).
void backward(const TensorList& roots, const TensorList& grads = {}, bool retain_graph = false,
              const LeafReadyFn& on_leaf_ready = nullptr);
inline void backward(const Tensor& root) { backward(TensorList{root}); }

// Fills .grad of every tensor in the list with zeros, keeping the buffer (stable addresses, no allocation on the
// next backward); a tensor that has no .grad yet keeps none.
void zero_grad(const TensorList& params);

// Drops the .grad of every tensor in the list (PyTorch's zero_grad(set_to_none=True)): the next backward gives each
// leaf a fresh buffer with one copy, instead of a fill now and an add then. A leaf that then receives no gradient has
// none, which AdamW and the gradient norm skip. train/step.h uses it.
void clear_grads(const TensorList& params);

}  // namespace gdn
