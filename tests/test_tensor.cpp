// tests/test_tensor.cpp — tensor semantics: storage sharing, strides, views, broadcasting, dtype conversion, RNG,
// shape-size overflow, and the allocator statistics switch (GDN_DEBUG_ALLOC).
#include <cstdlib>

#include "core/allocator.h"
#include "tests/test_helpers.h"

using namespace gdn;

TEST_CASE("tensor: contiguous strides and metadata") {
  Tensor t = Tensor::empty({2, 3, 4});
  CHECK(t.strides() == Strides{12, 4, 1});
  CHECK(t.numel() == 24);
  CHECK(t.is_contiguous());
  CHECK(t.dtype() == kFloat32);
  CHECK(t.device() == kCPU);
  CHECK(t.str() == "float32[2, 3, 4] cpu");
  CHECK(reinterpret_cast<uintptr_t>(t.raw_data()) % 64 == 0);
}

TEST_CASE("tensor: views share storage") {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor t = transpose(a, 0, 1);
  CHECK(t.storage() == a.storage());
  CHECK(t.shape() == Shape{3, 2});
  CHECK(t.strides() == Strides{1, 3});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.to_double_vector() == std::vector<double>{1, 4, 2, 5, 3, 6});
  Tensor r = reshape(a, {3, 2});
  CHECK(r.storage() == a.storage());  // contiguous: a view, no copy
  Tensor rt = reshape(t, {6});        // not contiguous: copies
  CHECK(rt.storage() != a.storage());
  CHECK(rt.to_double_vector() == std::vector<double>{1, 4, 2, 5, 3, 6});
  Tensor s = slice(a, 1, 1, 3);
  CHECK(s.storage() == a.storage());
  CHECK(s.offset() == 1);
  CHECK(s.to_double_vector() == std::vector<double>{2, 3, 5, 6});
  // Writing through a view is visible in the base.
  s.data<float>()[0] = 42;
  CHECK(a.to_double_vector()[1] == 42);
  Tensor stepped = slice(a, 1, 0, 3, 2);
  CHECK(stepped.to_double_vector() == std::vector<double>{1, 3, 4, 6});
}

TEST_CASE("tensor: row_stride of contiguous tensors, column windows and other layouts") {
  Tensor t = Tensor::empty({2, 3, 8});
  CHECK(t.row_stride() == 8);
  CHECK(t.as_strided({2, 3, 4}, t.strides(), 4).row_stride() == 8);  // a column window: the wider row
  CHECK(t.as_strided({1, 1, 5}, {99, 7, 1}, 0).row_stride() == 5);    // one row: any leading strides
  CHECK(t.as_strided({3, 2, 4}, {8, 24, 1}, 0).row_stride() == -1);   // leading dimensions that do not collapse
  CHECK(t.as_strided({2, 4}, {1, 2}, 0).row_stride() == -1);          // last dimension not of unit stride
  CHECK(t.as_strided({6, 4}, {2, 1}, 0).row_stride() == -1);          // overlapping rows
  CHECK_THROWS_WITH_AS(t.as_strided({2, 4}, {1, 2}, 0).checked_row_stride("op: x"),
                       doctest::Contains("op: x: float32[2, 4] cpu must be rows of unit stride"), Error);
}

TEST_CASE("shape: element counts that overflow int64 are refused, not wrapped") {
  CHECK(shape_numel({}) == 1);
  CHECK(shape_numel({2, 0, 5}) == 0);
  CHECK(shape_numel({int64_t{1} << 31, int64_t{1} << 31}) == int64_t{1} << 62);
  CHECK_THROWS_AS(shape_numel({-1, 3}), Error);
  // 2^32 * 2^32 = 2^64 wraps to 0 in int64 arithmetic; 3 * 2^62 wraps to a negative number.
  CHECK_THROWS_AS(shape_numel({int64_t{1} << 32, int64_t{1} << 32}), Error);
  CHECK_THROWS_AS(shape_numel({3, int64_t{1} << 62}), Error);
  CHECK_THROWS_AS(shape_numel({0, int64_t{1} << 40, int64_t{1} << 40}), Error);  // no elements, strides overflow
  try {
    (void)shape_numel({int64_t{1} << 32, int64_t{1} << 32});
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("[4294967296, 4294967296]") != std::string::npos);
  }
  // Fits in int64 elements but not in size_t bytes: refused before any allocation.
  CHECK_THROWS_AS(Tensor::empty({int64_t{1} << 62}, kFloat64), Error);
}

TEST_CASE("tensor: broadcasting rules") {
  CHECK(broadcast_shapes({2, 1, 4}, {3, 1}) == Shape{2, 3, 4});
  CHECK(broadcast_shapes({}, {5}) == Shape{5});
  CHECK_THROWS_AS(broadcast_shapes({2, 3}, {4}), Error);
  Tensor a = Tensor::from_vector({1, 2, 3}, {3});
  Tensor e = expand(a, {2, 3});
  CHECK(e.strides() == Strides{0, 1});
  CHECK(e.to_double_vector() == std::vector<double>{1, 2, 3, 1, 2, 3});
  Tensor col = Tensor::from_vector({10, 20}, {2, 1});
  CHECK((a + col).to_double_vector() == std::vector<double>{11, 12, 13, 21, 22, 23});
}

TEST_CASE("tensor: dtype conversion and bfloat16") {
  Tensor a = Tensor::from_vector({1.5, -2.25, 3.0}, {3}, kFloat64);
  Tensor f = to_dtype(a, kFloat32);
  CHECK(f.dtype() == kFloat32);
  CHECK(f.to_double_vector() == std::vector<double>{1.5, -2.25, 3.0});
  Tensor b = to_dtype(a, kBFloat16);
  CHECK(b.to_double_vector() == std::vector<double>{1.5, -2.25, 3.0});  // exactly representable
  CHECK(static_cast<float>(bfloat16(1.00390625f)) == 1.0f);             // rounds to nearest even
  Tensor i = to_dtype(a, kInt64);
  CHECK(i.to_int64_vector() == std::vector<int64_t>{1, -2, 3});
}

TEST_CASE("tensor: errors are located and clear") {
  Tensor a = Tensor::empty({2, 3});
  try {
    (void)reshape(a, {4, 2});
    FAIL("expected an error");
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK(msg.find("shape_ops.cpp:") != std::string::npos);
    CHECK(msg.find("[2, 3]") != std::string::npos);
  }
  CHECK_THROWS_AS(a.data<double>(), Error);
  CHECK_THROWS_AS(matmul(a, a), Error);
}

TEST_CASE("random: seeded generator is reproducible and well distributed") {
  Generator g1(7), g2(7), g3(8);
  Tensor x = randn({1000}, g1, kFloat64), y = randn({1000}, g2, kFloat64), z = randn({1000}, g3, kFloat64);
  CHECK(x.to_double_vector() == y.to_double_vector());
  CHECK(x.to_double_vector() != z.to_double_vector());
  double m = mean(x).item(), v = mean(x * x).item() - m * m;
  CHECK(std::fabs(m) < 0.1);
  CHECK(std::fabs(v - 1.0) < 0.15);
  Generator g4(7);
  auto st = g4.state();
  double first = g4.uniform();
  g4.set_state(st);
  CHECK(g4.uniform() == first);
}

TEST_CASE("allocator: statistics track live and peak bytes") {
  Allocator* a = get_allocator(kCPU);
  size_t before = a->stats().current_bytes;
  {
    Tensor t = Tensor::empty({1024}, kFloat64);
    CHECK(a->stats().current_bytes == before + 8192);
    CHECK(a->stats().peak_bytes >= before + 8192);
  }
  CHECK(a->stats().current_bytes == before);
}

TEST_CASE("allocator: GDN_DEBUG_ALLOC turns on the end-of-run statistics line") {
  const char* old = std::getenv("GDN_DEBUG_ALLOC");
  const std::string saved = old ? old : "";
  unsetenv("GDN_DEBUG_ALLOC");
  CHECK_FALSE(print_allocator_stats_if_requested(kCPU));
  setenv("GDN_DEBUG_ALLOC", "0", 1);
  CHECK_FALSE(print_allocator_stats_if_requested(kCPU));
  setenv("GDN_DEBUG_ALLOC", "1", 1);
  Tensor t = Tensor::empty({1000}, kFloat64);
  CHECK(print_allocator_stats_if_requested(kCPU));  // one line on stderr
  CHECK(format_allocator_stats(kCPU).find("cpu allocator: ") == 0);
  if (old) setenv("GDN_DEBUG_ALLOC", saved.c_str(), 1);
  else unsetenv("GDN_DEBUG_ALLOC");
}
