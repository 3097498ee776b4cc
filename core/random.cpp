// core/random.cpp — xoshiro256** and tensor fills (see random.h).
#include "core/random.h"

#include <cmath>
#include <vector>

namespace gdn {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Generator::manual_seed(uint64_t seed) {
  uint64_t x = seed;
  for (auto& w : s_) w = splitmix64(x);
}

uint64_t Generator::next_u64() {
  uint64_t result = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Generator::normal() {
  double u1 = uniform(), u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

uint64_t Generator::below(uint64_t n) {
  GDN_CHECK(n > 0, "Generator::below(0)");
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // rejection: no modulo bias
  uint64_t x = next_u64();
  while (x >= limit) x = next_u64();
  return x % n;
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

Tensor rand_uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype, Device device) {
  std::vector<double> v(shape_numel(shape));
  for (auto& x : v) x = low + (high - low) * gen.uniform();
  return Tensor::from_vector(v, shape, dtype, device);
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device, double mean, double std) {
  std::vector<double> v(shape_numel(shape));
  for (auto& x : v) x = mean + std * gen.normal();
  return Tensor::from_vector(v, shape, dtype, device);
}

}  // namespace gdn
