// core/random.h — a seeded, portable random generator.
//
// xoshiro256** (Blackman & Vigna) seeded through splitmix64: the same seed gives the same numbers on every compiler
// and platform (std::normal_distribution does not), and its whole state is four words (state() / set_state() copy it
// exactly). Training checkpoints do not store a Generator: the only randomness after initialisation is the window
// sampler's (train/corpus.h), which derives its generator from (seed, epoch) and is saved as those plus a cursor.
// Normals use Box-Muller. Tensors are filled on the host and copied to their device once.
#pragma once

#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace gdn {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { manual_seed(seed); }
  void manual_seed(uint64_t seed);
  uint64_t next_u64();
  double uniform();                 // [0, 1)
  double normal();                  // N(0, 1)
  uint64_t below(uint64_t n);       // uniform integer in [0, n)

  using State = std::array<uint64_t, 4>;
  State state() const { return s_; }
  void set_state(const State& s) { s_ = s; }

 private:
  State s_{};
};

// The process-wide generator used when none is passed (seeded with 0 at start-up).
Generator& default_generator();

Tensor rand_uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype = kFloat32,
                    Device device = kCPU);
Tensor randn(const Shape& shape, Generator& gen, DType dtype = kFloat32, Device device = kCPU, double mean = 0.0,
             double std = 1.0);

}  // namespace gdn
