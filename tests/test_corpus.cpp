// tests/test_corpus.cpp — corpus loading and validation split, the token cache, and the window sampler.
//
// Every test writes its own small files under a fresh temp directory, so nothing depends on data/ being fetched.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "train/corpus.h"
#include "train/tokenizer.h"

namespace fs = std::filesystem;

namespace {

// A fresh empty directory under the system temp dir, removed when the object goes out of scope.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(fs::temp_directory_path() / ("gdn_test_corpus_" + name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

void write_file(const fs::path& path, const std::string& contents) {
  fs::create_directories(path.parent_path());
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << contents;
}

std::string expect_user_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const gdn::UserError& e) {
    return e.what();
  }
  FAIL("expected gdn::UserError");
  return "";
}

std::vector<int32_t> iota_tokens(int32_t count) {
  std::vector<int32_t> tokens(count);
  for (int32_t i = 0; i < count; ++i) tokens[i] = i;
  return tokens;
}

}  // namespace

TEST_CASE("corpus: a directory splits whole files, every 10th to validation") {
  TempDir dir("directory");
  for (int i = 0; i < 12; ++i) write_file(dir.path / fmt::format("doc{:02d}.txt", i), fmt::format("text of file {}", i));
  write_file(dir.path / ".fetched", "marker, not a document");
  write_file(dir.path / "sub" / "z_nested.txt", "nested file<|endoftext|>second part<|endoftext|>  \n");

  gdn::Corpus corpus = gdn::load_corpus(dir.path.string());
  // 13 files sorted by path: doc00..doc11, sub/z_nested.txt; index 9 (doc09) is validation.
  REQUIRE(corpus.names.size() == 13);
  CHECK(corpus.names.front() == "doc00.txt");
  CHECK(corpus.names.back() == (fs::path("sub") / "z_nested.txt").string());
  REQUIRE(corpus.val_docs.size() == 1);
  CHECK(corpus.val_docs[0] == "text of file 9");
  // 11 plain files + the nested file split in two at <|endoftext|> (its blank tail dropped).
  REQUIRE(corpus.train_docs.size() == 13);
  CHECK(corpus.train_docs[11] == "nested file");
  CHECK(corpus.train_docs[12] == "second part");

  // Fewer than 10 files: the last one is validation.
  TempDir small("small_directory");
  write_file(small.path / "a.txt", "first");
  write_file(small.path / "b.txt", "second");
  write_file(small.path / "c.txt", "third");
  gdn::Corpus small_corpus = gdn::load_corpus(small.path.string());
  CHECK(small_corpus.train_docs == std::vector<std::string>{"first", "second"});
  CHECK(small_corpus.val_docs == std::vector<std::string>{"third"});
}

TEST_CASE("corpus: a single file puts its last tenth in validation, cut at a newline") {
  TempDir dir("single_file");
  std::string text;
  for (int i = 0; i < 100; ++i) text += fmt::format("line number {:03d} of the file\n", i);
  write_file(dir.path / "all.txt", text);

  gdn::Corpus corpus = gdn::load_corpus((dir.path / "all.txt").string());
  CHECK(corpus.names == std::vector<std::string>{"all.txt"});
  REQUIRE(corpus.train_docs.size() == 1);
  REQUIRE(corpus.val_docs.size() == 1);
  CHECK(corpus.train_docs[0] + corpus.val_docs[0] == text);
  CHECK(corpus.train_docs[0].back() == '\n');
  double val_share = static_cast<double>(corpus.val_docs[0].size()) / static_cast<double>(text.size());
  CHECK(val_share > 0.09);
  CHECK(val_share < 0.12);

  // A directory with one file behaves like that file.
  gdn::Corpus from_dir = gdn::load_corpus(dir.path.string());
  CHECK(from_dir.train_docs == corpus.train_docs);
  CHECK(from_dir.val_docs == corpus.val_docs);
}

TEST_CASE("corpus: missing path and empty corpus are UserErrors with clear messages") {
  TempDir dir("errors");
  std::string missing = (dir.path / "nope").string();
  CHECK(expect_user_error([&] { gdn::load_corpus(missing); }) == "corpus not found: " + missing);

  fs::create_directories(dir.path / "empty_dir");
  CHECK(expect_user_error([&] { gdn::load_corpus((dir.path / "empty_dir").string()); })
            .find("corpus is empty: ") == 0);

  write_file(dir.path / "blank.txt", " \n\n\t  \n");
  CHECK(expect_user_error([&] { gdn::load_corpus((dir.path / "blank.txt").string()); }).find("corpus is empty: ") ==
        0);
  write_file(dir.path / "zero.txt", "");
  CHECK(expect_user_error([&] { gdn::load_corpus((dir.path / "zero.txt").string()); }).find("corpus is empty: ") ==
        0);
}

TEST_CASE("corpus: encode_documents puts eot between documents") {
  gdn::BpeTokenizer tokenizer;  // bytes only
  std::vector<int32_t> tokens = gdn::encode_documents(tokenizer, {"ab", "c"});
  CHECK(tokens == std::vector<int32_t>{'a', 'b', tokenizer.eot_id(), 'c'});
}

TEST_CASE("corpus: token cache hits return identical tokens and a corrupted file is rewritten") {
  TempDir dir("cache");
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the union of the states is strong. ";
  gdn::BpeTokenizer tokenizer = gdn::BpeTokenizer::train({text}, 300);
  std::vector<std::string> docs = {text, "second document", text.substr(0, 100)};
  std::string cache_dir = (dir.path / "cache").string();

  std::vector<int32_t> expected = gdn::encode_documents(tokenizer, docs);
  std::vector<int32_t> first = gdn::encode_cached(tokenizer, docs, cache_dir);
  CHECK(first == expected);
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(cache_dir)) files.push_back(entry.path());
  REQUIRE(files.size() == 1);
  CHECK(files[0].filename().string().rfind("tokens-", 0) == 0);
  const auto good_size = fs::file_size(files[0]);
  CHECK(gdn::encode_cached(tokenizer, docs, cache_dir) == expected);

  // Truncate the file: the next call re-encodes and rewrites it.
  fs::resize_file(files[0], good_size - 6);
  CHECK(gdn::encode_cached(tokenizer, docs, cache_dir) == expected);
  CHECK(fs::file_size(files[0]) == good_size);

  // Flip a data byte (same size): the checksum catches it.
  {
    std::fstream file(files[0], std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(good_size - 3));
    file.put('\x7f');
  }
  CHECK(gdn::encode_cached(tokenizer, docs, cache_dir) == expected);

  // Different documents get a different cache file.
  std::vector<std::string> other_docs = {"something else"};
  CHECK(gdn::encode_cached(tokenizer, other_docs, cache_dir) == gdn::encode_documents(tokenizer, other_docs));
  int num_files = 0;
  for (const auto& entry : fs::directory_iterator(cache_dir)) num_files += entry.path().extension() == ".bin";
  CHECK(num_files == 2);
}

TEST_CASE("sampler: targets are inputs shifted by one, and an epoch covers disjoint windows") {
  std::vector<int32_t> tokens = iota_tokens(1000);
  const int64_t T = 16;
  gdn::WindowSampler sampler(&tokens, T, 3);
  const int64_t windows = sampler.windows_per_epoch();
  CHECK(windows >= (1000 - 1 - (T - 1)) / T);
  CHECK(windows <= (1000 - 1) / T);
  std::vector<int64_t> inputs(windows * T), targets(windows * T);
  sampler.next_batch(windows, inputs.data(), targets.data());
  std::set<int64_t> starts;
  for (int64_t w = 0; w < windows; ++w) {
    starts.insert(inputs[w * T]);
    for (int64_t t = 0; t < T; ++t) {
      CHECK(targets[w * T + t] == inputs[w * T + t] + 1);
      if (t > 0) CHECK(inputs[w * T + t] == inputs[w * T + t - 1] + 1);
    }
  }
  CHECK(static_cast<int64_t>(starts.size()) == windows);  // each window once
  const int64_t offset = *starts.begin();
  for (int64_t start : starts) CHECK((start - offset) % T == 0);
  CHECK(sampler.state().epoch == 0);
  sampler.next_batch(1, inputs.data(), targets.data());
  CHECK(sampler.state().epoch == 1);
  CHECK(sampler.state().cursor == 1);
}

TEST_CASE("sampler: same seed gives the same batches, another seed does not") {
  std::vector<int32_t> tokens = iota_tokens(5000);
  gdn::WindowSampler a(&tokens, 32, 7), b(&tokens, 32, 7), c(&tokens, 32, 8);
  std::vector<int64_t> in_a(4 * 32), tg_a(4 * 32), in_b(4 * 32), tg_b(4 * 32), in_c(4 * 32), tg_c(4 * 32);
  bool all_same_as_c = true;
  for (int step = 0; step < 100; ++step) {  // several epochs
    a.next_batch(4, in_a.data(), tg_a.data());
    b.next_batch(4, in_b.data(), tg_b.data());
    c.next_batch(4, in_c.data(), tg_c.data());
    CHECK(in_a == in_b);
    CHECK(tg_a == tg_b);
    all_same_as_c = all_same_as_c && in_a == in_c;
  }
  CHECK_FALSE(all_same_as_c);
}

TEST_CASE("sampler: restoring a saved state mid-epoch continues exactly") {
  std::vector<int32_t> tokens = iota_tokens(3000);
  gdn::WindowSampler original(&tokens, 20, 11);
  std::vector<int64_t> inputs(3 * 20), targets(3 * 20);
  for (int step = 0; step < 70; ++step) original.next_batch(3, inputs.data(), targets.data());  // into epoch 1
  gdn::SamplerState saved = original.state();
  CHECK(saved.epoch >= 1);
  CHECK(saved.cursor > 0);

  gdn::WindowSampler resumed(&tokens, 20, 0);
  resumed.set_state(saved);
  std::vector<int64_t> inputs2(3 * 20), targets2(3 * 20);
  for (int step = 0; step < 100; ++step) {
    original.next_batch(3, inputs.data(), targets.data());
    resumed.next_batch(3, inputs2.data(), targets2.data());
    CHECK(inputs == inputs2);
    CHECK(targets == targets2);
  }
  CHECK(original.state().epoch == resumed.state().epoch);
  CHECK(original.state().cursor == resumed.state().cursor);
}

TEST_CASE("sampler: a stream shorter than seq_len+1 throws, one of exactly seq_len+1 works") {
  std::vector<int32_t> short_tokens = iota_tokens(10);
  std::string message = expect_user_error([&] { gdn::WindowSampler sampler(&short_tokens, 10, 1); });
  CHECK(message == "corpus too short: 10 tokens, need at least seq_len+1 = 11");

  std::vector<int32_t> exact = iota_tokens(11);
  gdn::WindowSampler sampler(&exact, 10, 1);
  CHECK(sampler.windows_per_epoch() == 1);
  std::vector<int64_t> inputs(2 * 10), targets(2 * 10);
  sampler.next_batch(2, inputs.data(), targets.data());
  CHECK(inputs[0] == 0);
  CHECK(targets[9] == 10);
  CHECK(inputs[10] == 0);  // second row comes from the next epoch: the same only window
}

TEST_CASE("sampler: eval windows are fixed, non-overlapping and evenly spread") {
  std::vector<int64_t> all = gdn::WindowSampler::eval_window_starts(1001, 10, 0);
  CHECK(all.size() == 100);
  CHECK(all.front() == 0);
  CHECK(all.back() == 990);
  std::vector<int64_t> some = gdn::WindowSampler::eval_window_starts(1001, 10, 7);
  CHECK(some == gdn::WindowSampler::eval_window_starts(1001, 10, 7));
  REQUIRE(some.size() == 7);
  for (size_t i = 1; i < some.size(); ++i) CHECK(some[i] - some[i - 1] >= 10);

  std::vector<int32_t> tokens = iota_tokens(1001);
  std::vector<int64_t> inputs(7 * 10), targets(7 * 10);
  gdn::WindowSampler::gather_windows(tokens, some.data(), 7, 10, inputs.data(), targets.data());
  for (int64_t w = 0; w < 7; ++w) {
    CHECK(inputs[w * 10] == some[w]);
    CHECK(targets[w * 10 + 9] == some[w] + 10);
  }
}

TEST_CASE("corpus: a file that is not UTF-8 text is refused, naming it and its first bad byte") {
  TempDir dir("utf8");
  const std::string ok = "Fellow citizens, caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 ok.\n";  // 2-, 3- and 4-byte forms
  write_file(dir.path / "good.txt", ok);
  CHECK_NOTHROW(gdn::load_corpus((dir.path / "good.txt").string()));
  struct Bad { const char* name; std::string bytes; const char* where; };
  const Bad cases[] = {
      {"nul.bin", std::string("abc\0def", 7), "byte 0x00 at offset 3"},
      {"latin1.txt", "caf\xe9 au lait", "byte 0xe9 at offset 3"},
      {"overlong.txt", "ab\xc0\xaf", "byte 0xc0 at offset 2"},
      {"surrogate.txt", "x\xed\xa0\x80", "byte 0xed at offset 1"},
      {"cut.txt", "hello \xe2\x82", "byte 0xe2 at offset 6"},
      {"stray.txt", "\x80hello", "byte 0x80 at offset 0"},
  };
  for (const Bad& b : cases) {
    write_file(dir.path / b.name, b.bytes);
    CHECK_THROWS_WITH_AS(gdn::load_corpus((dir.path / b.name).string()),
                         doctest::Contains(fmt::format("{} ({})", b.name, b.where).c_str()), gdn::UserError);
  }
}

TEST_CASE("corpus: a folder holding non-text files names every one of them") {
  TempDir dir("utf8_dir");
  write_file(dir.path / "a.txt", "some text here\n");
  write_file(dir.path / "b.png", std::string("\x89PNG\r\n\x1a\n\0\0", 10));
  write_file(dir.path / "c.txt", "more text here\n");
  write_file(dir.path / "sub" / "d.bin", std::string("\xff\xfe", 2));
  std::string message;
  try {
    gdn::load_corpus(dir.path.string());
  } catch (const gdn::UserError& e) {
    message = e.what();
  }
  CHECK(message.find("2 file(s) that are not UTF-8 text") != std::string::npos);
  CHECK(message.find("b.png (byte 0x89 at offset 0)") != std::string::npos);
  CHECK(message.find("sub/d.bin (byte 0xff at offset 0)") != std::string::npos);
  CHECK(message.find("a.txt") == std::string::npos);
}
