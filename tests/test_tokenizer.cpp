// tests/test_tokenizer.cpp — byte-level BPE: pre-tokenizer chunks, exact round trip on arbitrary bytes, training
// learns useful and deterministic merges, save/load round trip, bad files rejected as gdn::UserError.
//
// Training text is generated here (a seeded mix of a small word list), so the tests need no data files and run in
// milliseconds.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/random.h"
#include "train/tokenizer.h"

namespace {

// Test data comes from the project's seeded generator (core/random.h).
using TestRng = gdn::Generator;

// About `num_words` words of English-like text with punctuation, digits, newlines and some UTF-8.
std::string make_text(uint64_t seed, int num_words) {
  const char* words[] = {"the",   "state", "of",     "union", "congress", "nation", "people", "government",
                         "war",   "peace", "year",   "trade", "treaty",   "citizens", "and",  "to",
                         "in",    "our",   "public", "with",  "naïve",    "café",   "über",  "law"};
  const char* separators[] = {" ", " ", " ", " ", " ", ", ", ". ", ".\n", "; ", " 1790 ", "\n\n", "  "};
  TestRng rng(seed);
  std::string text;
  for (int i = 0; i < num_words; ++i) {
    text += words[rng.next_u64() % (sizeof(words) / sizeof(words[0]))];
    text += separators[rng.next_u64() % (sizeof(separators) / sizeof(separators[0]))];
  }
  return text;
}

std::string random_bytes(TestRng& rng, size_t length) {
  std::string bytes(length, '\0');
  for (size_t i = 0; i < length; ++i) bytes[i] = static_cast<char>(rng.next_u64() & 0xff);
  return bytes;
}

gdn::BpeTokenizer train_small(int vocab_size) {
  std::string a = make_text(1, 1500), b = make_text(2, 1500);
  return gdn::BpeTokenizer::train({a, b}, vocab_size);
}

// The textbook BPE trainer, recounting every pair from scratch before each merge: the reference the incremental
// trainer must match merge for merge (same tie-break: highest count, then smallest (left, right); count >= 2).
std::vector<gdn::BpeTokenizer::Merge> naive_train(const std::vector<std::string>& documents, int vocab_size) {
  std::map<std::string, int64_t> chunk_counts;
  for (const std::string& document : documents) {
    size_t start = 0;
    while (true) {
      size_t found = document.find("<|endoftext|>", start);
      std::string_view piece = std::string_view(document).substr(start, found == std::string::npos ? std::string::npos
                                                                                                   : found - start);
      for (std::string_view chunk : gdn::pretokenize(piece)) chunk_counts[std::string(chunk)] += 1;
      if (found == std::string::npos) break;
      start = found + 13;
    }
  }
  std::vector<std::pair<std::vector<int32_t>, int64_t>> words;
  for (const auto& [chunk, count] : chunk_counts) {
    std::vector<int32_t> symbols;
    for (char c : chunk) symbols.push_back(static_cast<unsigned char>(c));
    words.emplace_back(symbols, count);
  }
  std::vector<gdn::BpeTokenizer::Merge> merges;
  while (static_cast<int>(merges.size()) < vocab_size - 257) {
    std::map<gdn::BpeTokenizer::Merge, int64_t> pair_counts;
    for (const auto& [symbols, count] : words) {
      for (size_t i = 0; i + 1 < symbols.size(); ++i) pair_counts[{symbols[i], symbols[i + 1]}] += count;
    }
    gdn::BpeTokenizer::Merge best{-1, -1};
    int64_t best_count = 1;
    for (const auto& [pair, count] : pair_counts) {  // ascending pair order: strict > keeps the smallest on ties
      if (count > best_count) {
        best = pair;
        best_count = count;
      }
    }
    if (best_count < 2) break;
    const int32_t new_id = 256 + static_cast<int32_t>(merges.size());
    merges.push_back(best);
    for (auto& [symbols, count] : words) {
      std::vector<int32_t> merged;
      for (size_t i = 0; i < symbols.size();) {
        if (i + 1 < symbols.size() && symbols[i] == best.first && symbols[i + 1] == best.second) {
          merged.push_back(new_id);
          i += 2;
        } else {
          merged.push_back(symbols[i]);
          i += 1;
        }
      }
      symbols = merged;
    }
  }
  return merges;
}

std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("gdn_test_tokenizer_" + name);
}

}  // namespace

TEST_CASE("tokenizer: pretokenize splits words, digits, punctuation and whitespace") {
  std::vector<std::string_view> chunks = gdn::pretokenize("Hello world, 1790 naïve!\n\n  next   x");
  std::vector<std::string> got(chunks.begin(), chunks.end());
  std::vector<std::string> expected = {"Hello", " world", ",", " 1790", " naïve", "!", "\n\n", " ", " next", "  ",
                                       " x"};
  CHECK(got == expected);
  // Chunks always concatenate back to the input.
  TestRng rng(7);
  std::string bytes = random_bytes(rng, 5000);
  std::string joined;
  for (std::string_view c : gdn::pretokenize(bytes)) {
    CHECK(c.size() <= gdn::kMaxChunkBytes);
    joined += c;
  }
  CHECK(joined == bytes);
}

TEST_CASE("tokenizer: round trip on invalid utf-8 and random bytes") {
  gdn::BpeTokenizer tokenizer = train_small(400);
  TestRng rng(12345);
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes = random_bytes(rng, rng.next_u64() % 300);
    CHECK(tokenizer.decode(tokenizer.encode(bytes)) == bytes);
  }
  const std::string special_cases[] = {
      std::string("\0\0abc\0", 6),        "\x80\x80\xbf lone continuation", "\xc3 truncated \xe2\x82",
      "\xff\xfe\xfd", "text <|endoftext|> inside",  std::string(1000, 'a'), std::string(600, '\xc3'), "", " ",
      "\r\n\r\n\t\v\f",
  };
  for (const std::string& s : special_cases) CHECK(tokenizer.decode(tokenizer.encode(s)) == s);
  // Ids are always inside the vocabulary and never the special token.
  for (int32_t id : tokenizer.encode(make_text(99, 300))) {
    CHECK(id >= 0);
    CHECK(id < tokenizer.eot_id());
  }
}

TEST_CASE("tokenizer: training learns merges that shorten its training text") {
  std::string text = make_text(1, 1500);
  gdn::BpeTokenizer untrained;
  CHECK(untrained.vocab_size() == 257);
  CHECK(untrained.eot_id() == 256);
  CHECK(untrained.encode(text).size() == text.size());

  gdn::BpeTokenizer tokenizer = train_small(340);
  CHECK(tokenizer.vocab_size() == 340);
  CHECK(tokenizer.num_merges() == 340 - 257);
  CHECK(tokenizer.eot_id() == 339);
  CHECK(tokenizer.token_text(tokenizer.eot_id()) == "<|endoftext|>");
  CHECK(tokenizer.decode({tokenizer.eot_id()}) == "<|endoftext|>");
  std::vector<int32_t> ids = tokenizer.encode(text);
  CHECK(ids.size() * 2 < text.size());
  CHECK(tokenizer.decode(ids) == text);
  // Bad ids are errors, not garbage.
  CHECK_THROWS_AS(tokenizer.decode({-1}), gdn::Error);
  CHECK_THROWS_AS(tokenizer.decode({tokenizer.vocab_size()}), gdn::Error);
  CHECK_THROWS_AS(gdn::BpeTokenizer::train({text}, 100), gdn::UserError);
}

TEST_CASE("tokenizer: training is deterministic and never learns the end-of-text text") {
  std::string a = make_text(5, 800) + "<|endoftext|>" + make_text(6, 800);
  std::string repeated_marker;
  for (int i = 0; i < 200; ++i) repeated_marker += "<|endoftext|>";
  gdn::BpeTokenizer first = gdn::BpeTokenizer::train({a, repeated_marker}, 350);
  gdn::BpeTokenizer second = gdn::BpeTokenizer::train({a, repeated_marker}, 350);
  CHECK(first.merges() == second.merges());
  CHECK(first.fingerprint() == second.fingerprint());
  for (int32_t id = 256; id < first.eot_id(); ++id) {
    std::string bytes = first.token_text(id);
    CHECK(bytes.find("<|") == std::string::npos);
    CHECK(bytes.find("|>") == std::string::npos);
  }
  gdn::BpeTokenizer other = gdn::BpeTokenizer::train({make_text(7, 800)}, 350);
  CHECK(other.fingerprint() != first.fingerprint());
}

TEST_CASE("tokenizer: incremental training matches the naive reference trainer merge for merge") {
  std::vector<std::string> documents = {make_text(11, 600) + "<|endoftext|>" + make_text(12, 300), make_text(13, 400),
                                        "aaaaaaaa aaaa aaa aa abababab ba ba 1111 111 11 ..... ...."};
  TestRng rng(3);
  documents.push_back(random_bytes(rng, 2000));
  std::vector<std::string_view> views(documents.begin(), documents.end());
  gdn::BpeTokenizer tokenizer = gdn::BpeTokenizer::train(views, 420);
  CHECK(tokenizer.merges() == naive_train(documents, 420));
}

TEST_CASE("tokenizer: a small corpus stops early when no pair occurs twice") {
  gdn::BpeTokenizer tokenizer = gdn::BpeTokenizer::train({"ab ab cd"}, 1000);
  CHECK(tokenizer.num_merges() >= 1);
  CHECK(tokenizer.vocab_size() < 1000);
  CHECK(tokenizer.decode(tokenizer.encode("ab ab cd ef")) == "ab ab cd ef");
}

TEST_CASE("tokenizer: save and load give identical encodings") {
  gdn::BpeTokenizer tokenizer = train_small(380);
  std::string path = temp_path("roundtrip.json").string();
  tokenizer.save(path);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  gdn::BpeTokenizer loaded = gdn::BpeTokenizer::load(path);
  CHECK(loaded.merges() == tokenizer.merges());
  CHECK(loaded.vocab_size() == tokenizer.vocab_size());
  CHECK(loaded.fingerprint() == tokenizer.fingerprint());
  std::string text = make_text(42, 500);
  CHECK(loaded.encode(text) == tokenizer.encode(text));
  std::filesystem::remove(path);
}

TEST_CASE("tokenizer: missing or corrupt file is a UserError naming the path") {
  std::string missing = temp_path("does_not_exist.json").string();
  std::filesystem::remove(missing);
  try {
    gdn::BpeTokenizer::load(missing);
    FAIL("load of a missing file should throw");
  } catch (const gdn::UserError& e) {
    CHECK(std::string(e.what()).find(missing) != std::string::npos);
  }

  const std::string bad_contents[] = {
      "not json at all {",
      R"({"format": "something-else", "version": 1, "vocab_size": 257, "merges": []})",
      R"({"format": "gdn-bpe", "version": 99, "vocab_size": 257, "merges": []})",
      R"({"format": "gdn-bpe", "version": 1, "vocab_size": 258, "merges": [[1, 999]]})",
      R"({"format": "gdn-bpe", "version": 1, "vocab_size": 259, "merges": [[1, 2], [1, 2]]})",
      R"({"format": "gdn-bpe", "version": 1, "vocab_size": 300, "merges": [[1, 2]]})",
      R"({"format": "gdn-bpe", "version": 1, "vocab_size": 258, "merges": [["a", 2]]})",
  };
  std::string path = temp_path("corrupt.json").string();
  for (const std::string& contents : bad_contents) {
    {
      std::ofstream file(path, std::ios::binary | std::ios::trunc);
      file << contents;
    }
    try {
      gdn::BpeTokenizer::load(path);
      FAIL("load of a corrupt file should throw: " << contents);
    } catch (const gdn::UserError& e) {
      std::string message = e.what();
      CHECK(message.find(path) != std::string::npos);
      CHECK(message.find('\n') == std::string::npos);
    }
  }
  std::filesystem::remove(path);
}
