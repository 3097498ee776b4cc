// tests/test_safetensors.cpp — the safetensors reader/writer (train/safetensors.h) and atomic file writes
// (train/file_util.h): round trips of every dtype, the exact header bytes PyTorch's reader expects, and that a
// truncated or garbage file is a clean gdn::UserError, never a crash or silently wrong weights.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "tests/test_helpers.h"
#include "train/file_util.h"
#include "train/safetensors.h"

using namespace gdn;

namespace {

// A fresh empty directory under the system temp dir, removed when the test ends.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("gdn_test_safetensors_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all, ec);
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// Whether a UserError's message contains `needle` (and is one line).
void check_user_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    FAIL("expected a gdn::UserError containing: " << needle);
  } catch (const UserError& e) {
    std::string msg = e.what();
    CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
    CHECK_MESSAGE(msg.find('\n') == std::string::npos, msg);
  }
}

std::vector<std::pair<std::string, Tensor>> sample_tensors() {
  Generator gen(3);
  Tensor f32 = randn({3, 4}, gen, kFloat32);
  Tensor f64 = randn({2, 3, 2}, gen, kFloat64);
  Tensor bf16 = to_dtype(Tensor::from_vector({1.5, -2.0, 0.25, 3.0, 7.0}, {5}, kFloat64), kBFloat16);
  Tensor i32 = to_dtype(Tensor::from_int64({1, -2, 3, 2147483647}, {2, 2}), kInt32);
  Tensor i64 = Tensor::from_int64({-5, 1LL << 40, 7}, {3});
  Tensor scalar = Tensor::from_vector({42.5}, {}, kFloat32);  // 0-dim
  Tensor empty = Tensor::empty({0, 3}, kFloat32);
  Tensor base = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, kFloat64);
  Tensor transposed = transpose(base, 0, 1);  // non-contiguous view
  Tensor sliced = slice(randn({4, 6}, gen, kFloat32), 1, 1, 5, 2);  // offset + stride
  return {{"layers.0.weight", f32}, {"f64", f64}, {"bf16.odd_length", bf16},
          {"ids32", i32}, {"ids64", i64}, {"scalar", scalar},
          {"empty", empty}, {"transposed", transposed}, {"sliced", sliced}};
}

}  // namespace

TEST_CASE("safetensors: round trip of every dtype, 0-dim, empty and non-contiguous tensors") {
  auto tensors = sample_tensors();
  REQUIRE(tensors[7].first == "transposed");
  REQUIRE_FALSE(tensors[7].second.is_contiguous());
  REQUIRE_FALSE(tensors[8].second.is_contiguous());
  std::string bytes = serialize_safetensors(tensors);
  SafetensorsFile file = parse_safetensors(bytes, "memory");
  REQUIRE(file.tensors.size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, want] = tensors[i];
    CAPTURE(name);
    CHECK(file.tensors[i].first == name);  // header order = given order
    const Tensor& got = file.get(name);
    CHECK(got.dtype() == want.dtype());
    CHECK(got.shape() == want.shape());
    CHECK(got.is_contiguous());
    CHECK(got.to_double_vector() == want.to_double_vector());
  }
  CHECK(file.get("ids64").to_int64_vector()[1] == (1LL << 40));
  CHECK(file.get("scalar").dim() == 0);
  CHECK(file.get("scalar").item() == 42.5);
  CHECK(file.has("f64"));
  CHECK_FALSE(file.has("nope"));
  check_user_error([&] { (void)file.get("nope"); }, "checkpoint memory has no tensor 'nope'");
  CHECK(file.metadata.empty());
}

TEST_CASE("safetensors: save/load through a file, with metadata") {
  TempDir dir;
  std::string path = dir.file("model.safetensors");
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "1200"}, {"config", "{\"d\": 64}"}};
  Tensor w = Tensor::from_vector({1, 2, 3, 4}, {2, 2});
  save_safetensors(path, {{"w", w}}, meta);
  SafetensorsFile file = load_safetensors(path);
  CHECK(file.metadata == meta);
  CHECK(file.get("w").to_double_vector() == std::vector<double>{1, 2, 3, 4});
  check_user_error([&] { (void)load_safetensors(dir.file("missing.safetensors")); }, "cannot read");
}

TEST_CASE("safetensors: header bytes match the format PyTorch's reader expects") {
  // One F32 [2] tensor {1.0, -2.0}: 8-byte little-endian length, compact JSON padded with spaces to a multiple of
  // 8, then the raw little-endian floats.
  std::string bytes = serialize_safetensors({{"w", Tensor::from_vector({1.0, -2.0}, {2})}});
  const std::string json = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string header = json + std::string((8 - json.size() % 8) % 8, ' ');
  REQUIRE(header.size() % 8 == 0);
  std::string expected;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) expected += static_cast<char>((n >> (8 * i)) & 0xff);
  expected += header;
  const unsigned char data[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0};  // 1.0f, -2.0f little-endian
  expected.append(reinterpret_cast<const char*>(data), 8);
  CHECK(bytes == expected);

  // Every dtype name, metadata first; data laid out 8-byte types first so each tensor is aligned.
  std::string all = serialize_safetensors(
      {{"a", Tensor::from_vector({1}, {1}, kBFloat16)},
       {"b", Tensor::from_vector({1}, {1}, kFloat32)},
       {"c", Tensor::from_vector({1}, {1}, kFloat64)},
       {"d", to_dtype(Tensor::from_int64({1}, {1}), kInt32)},
       {"e", Tensor::from_int64({1}, {1})}},
      {{"format", "pt"}});
  uint64_t len = 0;
  std::memcpy(&len, all.data(), 8);
  CHECK(len % 8 == 0);
  std::string text = all.substr(8, len);
  const std::string want =
      R"({"__metadata__":{"format":"pt"},)"
      R"("a":{"dtype":"BF16","shape":[1],"data_offsets":[24,26]},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
      R"("c":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
      R"("d":{"dtype":"I32","shape":[1],"data_offsets":[20,24]},)"
      R"("e":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}})";
  CHECK(text.substr(0, want.size()) == want);
  CHECK(text.find_first_not_of(' ', want.size()) == std::string::npos);
  CHECK(all.size() == 8 + len + 26);
}

TEST_CASE("safetensors: truncated files are a clear UserError at every cut point") {
  std::string bytes = serialize_safetensors(sample_tensors(), {{"step", "7"}});
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const size_t data_start = 8 + header_len;
  std::vector<size_t> cuts = {0, 1, 7, 8, 9, data_start / 2, data_start - 1, data_start, data_start + 1,
                              (data_start + bytes.size()) / 2, bytes.size() - 1};
  for (size_t cut : cuts) {
    CAPTURE(cut);
    check_user_error([&] { (void)parse_safetensors(bytes.substr(0, cut), "ckpt/x.safetensors"); },
                     "checkpoint ckpt/x.safetensors is truncated or corrupt");
  }
  // The message for a cut inside the data says which tensor and which bytes.
  check_user_error([&] { (void)parse_safetensors(bytes.substr(0, bytes.size() - 1), "x"); }, "but the file has only");
  // Trailing bytes after the last tensor are corrupt too.
  check_user_error([&] { (void)parse_safetensors(bytes + "zz", "x"); }, "the tensors end at byte");
}

TEST_CASE("safetensors: garbage and inconsistent headers are UserErrors") {
  // A file made of a hand-written header and `data_bytes` zero bytes of data.
  auto with_header = [](const std::string& json, size_t data_bytes) {
    std::string out(8, '\0');
    uint64_t n = json.size();
    std::memcpy(out.data(), &n, 8);
    return out + json + std::string(data_bytes, '\0');
  };
  auto expect_error = [&](const std::string& json, size_t data_bytes, const std::string& needle) {
    CAPTURE(json);
    check_user_error([&] { (void)parse_safetensors(with_header(json, data_bytes), "g"); }, needle);
  };
  check_user_error([&] { (void)parse_safetensors("", "g"); }, "fewer than the 8-byte header length");
  check_user_error([&] { (void)parse_safetensors(std::string(64, '\xff'), "g"); }, "truncated or corrupt");
  expect_error("{not json", 0, "not valid JSON");
  expect_error("[1, 2]", 0, "not a JSON object");
  expect_error(R"({"w":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}})", 2, "dtype 'F16'");
  expect_error(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "needs 12 bytes");
  expect_error(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "not a non-negative integer");
  expect_error(R"({"w":{"dtype":"F32","shape":[1]}})", 4, "data_offsets");
  expect_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
               8, "overlap");
  expect_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, "belong to no tensor");
  expect_error(R"({"__metadata__":{"step":3}})", 0, "not a string");
  // A valid header written by hand (keys in another order, no padding) loads.
  SafetensorsFile ok =
      parse_safetensors(with_header(R"({"w":{"shape":[],"data_offsets":[0,8],"dtype":"I64"}})", 8), "g");
  CHECK(ok.get("w").to_int64_vector() == std::vector<int64_t>{0});
}

TEST_CASE("safetensors: write_file_atomic never leaves a partial file") {
  TempDir dir;
  std::string path = dir.file("out.bin");
  write_file_atomic(path, "old contents");
  write_file_atomic(path, "new contents");
  CHECK(read_file(path) == "new contents");
  // Success leaves no temp file behind.
  size_t entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) {
    CHECK(e.path().filename() == "out.bin");
    ++entries;
  }
  CHECK(entries == 1);

  // A directory that does not exist: UserError naming the path.
  std::string bad = dir.file("no/such/dir/out.bin");
  check_user_error([&] { write_file_atomic(bad, "x"); }, bad);

  // A read-only directory (root ignores permissions, so only checked when they apply): old file unchanged.
  std::filesystem::permissions(dir.path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  if (::access(dir.path.c_str(), W_OK) != 0) {
    check_user_error([&] { write_file_atomic(path, "newer"); }, "cannot write " + path);
    CHECK(read_file(path) == "new contents");
  } else {
    MESSAGE("running as root: the read-only directory case is skipped");
  }
  std::filesystem::permissions(dir.path, std::filesystem::perms::owner_all);

  // The temp file cannot be created (its name is taken by a directory; works even as root): old file unchanged.
  std::string blocker = path + ".tmp." + std::to_string(::getpid());
  std::filesystem::create_directory(blocker);
  check_user_error([&] { write_file_atomic(path, "newer"); }, "cannot write " + path);
  CHECK(read_file(path) == "new contents");
  std::filesystem::remove(blocker);

  // The target is a directory: rename fails, the temp file is removed, the directory is untouched.
  std::string sub = dir.file("subdir");
  ensure_directory(sub + "/a/b");
  CHECK(std::filesystem::is_directory(sub + "/a/b"));
  ensure_directory(sub + "/a/b");  // already there: fine
  check_user_error([&] { write_file_atomic(sub, "x"); }, "cannot write " + sub);
  CHECK(std::filesystem::is_directory(sub));
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) {
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
  }
  check_user_error([&] { ensure_directory(path + "/x"); }, "cannot create directory");
  check_user_error([&] { (void)read_file(dir.file("absent")); }, "cannot read " + dir.file("absent"));
}
