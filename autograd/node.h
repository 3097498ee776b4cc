// autograd/node.h — one recorded op on the tape.
//
// Design (flashlight / micrograd): each differentiable op is one function that computes its forward, then calls
// record() with a backward closure that captures only what the backward needs. The closure gets one gradient per
// output (undefined when that output received none — multi-output ops must handle it) and returns one gradient per
// input, in the order the inputs were given to record() (undefined = no gradient for that input).
//
// What a node holds: edges to the producers of its inputs (not the input tensors themselves, so activations the
// backward does not need are freed as soon as the forward is done), and the closure. Saved tensors must be
// detach()ed copies of the handle: a closure holding its own output with the grad_fn would form a reference cycle.
//
// How gradients accumulate (written down once, here):
//   * leaves (parameters, requires_grad inputs): .grad += incoming, across backward calls, until zero_grad();
//   * activations: contributions from every consumer are summed in the engine's buffer, then passed on once.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace gdn {

using TensorList = std::vector<Tensor>;
using BackwardFn = std::function<TensorList(const TensorList& grad_outputs)>;

struct Edge {
  std::shared_ptr<Node> fn;            // producer node (non-leaf input), or
  std::shared_ptr<TensorImpl> leaf;    // the leaf tensor whose .grad receives the gradient
  int output_nr = 0;
  bool valid() const { return fn != nullptr || leaf != nullptr; }
};

struct Node {
  std::string name;             // op name, for errors and GDN_TRACE
  std::vector<Edge> next;       // one per input, in record() order
  std::vector<Shape> output_shapes;
  std::vector<DType> output_dtypes;
  BackwardFn backward;          // released after use unless retain_graph
  int64_t sequence_nr = 0;      // creation order; ties in the engine's queue go to the newest node
};

// True when grad mode is on and some input requires a gradient (op must record).
bool needs_grad(const TensorList& inputs);

// Makes every defined output a non-leaf of a new node whose backward is `fn`. Call after computing outputs.
// No-op when !needs_grad(inputs).
void record(const char* name, const TensorList& outputs, const TensorList& inputs, BackwardFn fn);

}  // namespace gdn
