// autograd/engine.cpp — record() and backward() (see node.h and engine.h).
#include "autograd/engine.h"

#include <atomic>
#include <queue>
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "core/dispatch.h"

namespace gdn {

namespace {
std::atomic<int64_t> g_next_sequence_nr{0};

Edge edge_of(const Tensor& t) {
  Edge e;
  if (!t.defined() || !t.requires_grad()) return e;
  if (t.grad_fn()) {
    e.fn = t.grad_fn();
    e.output_nr = t.output_nr();
  } else {
    e.leaf = t.impl_ptr();
  }
  return e;
}

// a + b into a fresh tensor (gradient summation for activations).
Tensor add_grads(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  kernels::binary(a.device(), BinaryOp::Add, out, a, b);
  return out;
}

// Whether nothing but this one handle can see g's memory: then it may become a leaf's .grad as it is.
bool sole_owner(const Tensor& g) {
  return g.impl_ptr().use_count() == 1 && g.storage() && g.storage().use_count() == 1 && g.offset() == 0 &&
         g.is_contiguous() && g.storage()->nbytes() == static_cast<size_t>(g.numel()) * element_size(g.dtype());
}

void accumulate_into_leaf(TensorImpl& leaf, const Tensor& g) {
  if (!leaf.grad && sole_owner(g) && g.shape() == leaf.shape && g.dtype() == leaf.dtype &&
      g.device() == leaf.storage->device()) {
    leaf.grad = g.impl_ptr();  // a fresh gradient no one else holds: kept without a copy
    return;
  }
  if (!leaf.grad) {
    Tensor fresh = Tensor::empty(leaf.shape, leaf.dtype, leaf.storage->device());
    kernels::copy(fresh.device(), fresh, g);
    leaf.grad = fresh.impl_ptr();
  } else {
    Tensor acc(leaf.grad);
    kernels::binary(acc.device(), BinaryOp::Add, acc, acc, g);
  }
}

void check_grad(const Tensor& g, const Shape& shape, DType dtype, const std::string& node_name, size_t input) {
  GDN_CHECK(g.shape() == shape, "backward of '{}' returned a gradient of shape {} for input {} of shape {}",
            node_name, shape_str(g.shape()), input, shape_str(shape));
  GDN_CHECK(g.dtype() == dtype || (dtype == kBFloat16 && g.dtype() == kFloat32),
            "backward of '{}' returned a {} gradient for a {} input {}", node_name, g.dtype(), dtype, input);
}
}  // namespace

bool needs_grad(const TensorList& inputs) {
  if (!GradMode::enabled()) return false;
  for (const auto& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* name, const TensorList& outputs, const TensorList& inputs, BackwardFn fn) {
  if (!needs_grad(inputs)) return;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->backward = std::move(fn);
  node->sequence_nr = g_next_sequence_nr++;
  for (const auto& t : inputs) node->next.push_back(edge_of(t));
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    node->output_shapes.push_back(out.defined() ? out.shape() : Shape{});
    node->output_dtypes.push_back(out.defined() ? out.dtype() : kFloat32);
    if (!out.defined()) continue;
    GDN_CHECK(out.is_leaf() && !out.requires_grad(), "record('{}'): output {} is already part of a graph", name, i);
    out.impl().requires_grad = true;
    out.impl().grad_fn = node;
    out.impl().output_nr = static_cast<int>(i);
  }
}

void backward(const TensorList& roots, const TensorList& grads, bool retain_graph, const LeafReadyFn& on_leaf_ready) {
  NoGradGuard no_grad;
  GDN_CHECK(grads.empty() || grads.size() == roots.size(), "backward: {} roots but {} gradients", roots.size(),
            grads.size());

  // Seed gradients.
  std::unordered_map<Node*, TensorList> buffers;
  std::vector<std::shared_ptr<Node>> root_nodes;
  auto deliver = [&](const Edge& e, const Tensor& g) {
    if (e.leaf) {
      accumulate_into_leaf(*e.leaf, g);
      return;
    }
    TensorList& buf = buffers[e.fn.get()];
    if (buf.empty()) buf.resize(e.fn->output_shapes.size());
    Tensor& slot = buf[e.output_nr];
    slot = slot.defined() ? add_grads(slot, g) : g;
  };
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    GDN_CHECK(r.defined() && r.requires_grad(), "backward: root {} does not require grad", i);
    Tensor g = grads.empty() ? Tensor() : grads[i];
    if (!g.defined()) {
      GDN_CHECK(r.numel() == 1, "backward: an implicit gradient needs a 1-element root, got {}", shape_str(r.shape()));
      g = Tensor::empty(r.shape(), r.dtype(), r.device());
      kernels::fill(g.device(), g, 1.0);
    }
    GDN_CHECK(g.shape() == r.shape(), "backward: gradient {} for root {}", shape_str(g.shape()), shape_str(r.shape()));
    Edge e = edge_of(r);
    if (e.fn) root_nodes.push_back(e.fn);
    deliver(e, g);
  }

  // Count consumers of each reachable node, and (for on_leaf_ready) the edges into each leaf.
  std::unordered_map<Node*, int> pending;
  std::unordered_map<const TensorImpl*, int> leaf_pending;
  std::vector<Node*> stack;
  for (auto& n : root_nodes)
    if (pending.emplace(n.get(), 0).second) stack.push_back(n.get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next) {
      if (e.leaf && on_leaf_ready) leaf_pending[e.leaf.get()]++;
      if (!e.fn) continue;
      auto [it, inserted] = pending.emplace(e.fn.get(), 0);
      it->second++;
      if (inserted) stack.push_back(e.fn.get());
    }
  }

  // Process in reverse topological order; among ready nodes the most recently created goes first.
  auto later = [](Node* a, Node* b) { return a->sequence_nr < b->sequence_nr; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(later)> ready(later);
  for (auto& n : root_nodes)
    if (pending[n.get()] == 0) {
      pending[n.get()] = -1;  // queued
      ready.push(n.get());
    }
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    GDN_CHECK(n->backward != nullptr,
              "backward through '{}' a second time: its saved tensors were freed (use retain_graph)", n->name);
    TensorList grad_out = std::move(buffers[n]);
    buffers.erase(n);
    grad_out.resize(n->output_shapes.size());
    TensorList grad_in = n->backward(grad_out);
    GDN_CHECK(grad_in.size() == n->next.size(), "backward of '{}' returned {} gradients for {} inputs", n->name,
              grad_in.size(), n->next.size());
    if (!retain_graph) n->backward = nullptr;
    for (size_t i = 0; i < grad_in.size(); ++i) {
      const Edge& e = n->next[i];
      if (!e.valid()) continue;
      if (grad_in[i].defined()) {
        if (e.leaf)
          check_grad(grad_in[i], e.leaf->shape, e.leaf->dtype, n->name, i);
        else
          check_grad(grad_in[i], e.fn->output_shapes[e.output_nr], e.fn->output_dtypes[e.output_nr], n->name, i);
        deliver(e, grad_in[i]);
      }
      if (e.fn && --pending[e.fn.get()] == 0) ready.push(e.fn.get());
      if (e.leaf && on_leaf_ready && --leaf_pending[e.leaf.get()] == 0) on_leaf_ready(*e.leaf);
    }
  }
}

void zero_grad(const TensorList& params) {
  for (const auto& p : params) {
    Tensor g = p.grad();
    if (g.defined()) kernels::fill(g.device(), g, 0.0);  // keep the buffer: stable addresses for CUDA graphs
  }
}

void clear_grads(const TensorList& params) {
  for (const auto& p : params) Tensor(p).set_grad(Tensor());
}

}  // namespace gdn
