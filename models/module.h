// models/module.h — named parameters and the initialisers of the model.
//
// A layer is a plain struct of Tensors plus a `parameters(prefix)` function that lists them with their names
// (PyTorch-style dotted names such as "layers.0.attn.in_proj_qkvz.weight", so safetensors checkpoints map one to one
// onto a PyTorch module of the same layout) and whether weight decay applies (matrices yes; norms and gate
// parameters no).
#pragma once

#include <string>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace gdn {

struct Parameter {
  std::string name;
  Tensor value;
  bool decay;  // AdamW weight decay applies
};

using ParameterList = std::vector<Parameter>;

// All model tensors are created with this dtype/device and drawn from one generator, in a fixed order.
struct InitContext {
  Generator& gen;
  DType dtype;
  Device device;
  double std;  // N(0, std) for matrices

  Tensor normal(const Shape& shape) const {
    Tensor t = randn(shape, gen, dtype, device, 0.0, std);
    t.set_requires_grad(true);
    return t;
  }
  Tensor constant(const Shape& shape, double value) const;
  Tensor from_values(const std::vector<double>& values) const {
    Tensor t = Tensor::from_vector(values, {static_cast<int64_t>(values.size())}, dtype, device);
    t.set_requires_grad(true);
    return t;
  }
};

inline void add_param(ParameterList& list, const std::string& name, const Tensor& t, bool decay) {
  list.push_back({name, t, decay});
}

}  // namespace gdn
