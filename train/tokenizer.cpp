// train/tokenizer.cpp — byte-level BPE: pre-tokenizer, trainer, encoder/decoder, JSON save/load.
//
// See tokenizer.h for the vocabulary layout, the chunk rules and the references. Notes on the implementation:
//   * A pair (left, right) of ids is packed into one uint64 key, left << 32 | right. Comparing keys as integers
//     orders pairs by (left, right), which is the tie-break of training.
//   * Training keeps, for the current segmentation of every chunk type ("word"): pair -> total count (weighted by
//     word count) and pair -> indices of words that contain it (may hold stale or repeated indices; checked on use).
//     Merging pair p into id z rewrites only the words listed for p: their old pairs are subtracted, their new pairs
//     added. Pairs that do not involve z can only lose count, so heap entries for them are upper bounds: a popped
//     entry whose count is out of date is pushed back with the true count (lazy deletion). Pairs that involve z are
//     new and are pushed once the whole merge step is done.
//   * Encoding a chunk uses the plain GPT-2 loop: find the adjacent pair of lowest merge rank, merge all its
//     occurrences, repeat. Chunks are at most kMaxChunkBytes long and results are cached, so this is cheap.
#include "train/tokenizer.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <queue>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace gdn {

uint64_t fnv1a_64(const void* data, size_t num_bytes, uint64_t hash) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < num_bytes; ++i) {
    hash ^= bytes[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

// ---------------------------------------------------------------------------------------------------------------------
// Pre-tokenizer
// ---------------------------------------------------------------------------------------------------------------------
namespace {

enum class ByteClass { kLetter, kDigit, kNewline, kSpace, kOther };

ByteClass classify(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return ByteClass::kLetter;
  if (c >= '0' && c <= '9') return ByteClass::kDigit;
  if (c == '\n' || c == '\r') return ByteClass::kNewline;
  if (c == ' ' || c == '\t' || c == '\v' || c == '\f') return ByteClass::kSpace;
  return ByteClass::kOther;
}

bool is_word_class(ByteClass k) {
  return k == ByteClass::kLetter || k == ByteClass::kDigit || k == ByteClass::kOther;
}

// End (exclusive) of the chunk that starts at `start` (< text.size()).
size_t chunk_end(std::string_view text, size_t start) {
  const size_t n = text.size();
  auto cls = [&](size_t i) { return classify(static_cast<unsigned char>(text[i])); };
  size_t end = start;
  ByteClass first = cls(start);
  if (text[start] == ' ' && start + 1 < n && is_word_class(cls(start + 1))) {
    // ' ' + run of one word class.
    ByteClass run = cls(start + 1);
    end = start + 1;
    while (end < n && cls(end) == run) ++end;
  } else if (first != ByteClass::kSpace) {
    // Run of letters, digits, other bytes, or newlines.
    while (end < n && cls(end) == first) ++end;
  } else {
    // Run of spaces; leave a final ' ' to lead the word that follows.
    while (end < n && cls(end) == ByteClass::kSpace) ++end;
    if (end < n && end - start >= 2 && text[end - 1] == ' ' && is_word_class(cls(end))) --end;
  }
  return std::min(end, start + kMaxChunkBytes);
}

// Calls fn(piece) for each piece of `document` between occurrences of "<|endoftext|>".
template <typename Fn>
void for_each_eot_separated_piece(std::string_view document, Fn&& fn) {
  size_t start = 0;
  while (true) {
    size_t found = document.find(kEndOfTextText, start);
    if (found == std::string_view::npos) {
      fn(document.substr(start));
      return;
    }
    fn(document.substr(start, found - start));
    start = found + kEndOfTextText.size();
  }
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
int32_t pair_left(uint64_t key) { return static_cast<int32_t>(key >> 32); }
int32_t pair_right(uint64_t key) { return static_cast<int32_t>(key & 0xffffffffu); }

}  // namespace

std::vector<std::string_view> pretokenize(std::string_view text) {
  std::vector<std::string_view> chunks;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = chunk_end(text, start);
    chunks.push_back(text.substr(start, end - start));
    start = end;
  }
  return chunks;
}

// ---------------------------------------------------------------------------------------------------------------------
// Construction
// ---------------------------------------------------------------------------------------------------------------------
struct BpeTokenizer::EncodeCache {
  // Transparent hashing lets encode() look chunks up by string_view without building a std::string.
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  static constexpr size_t kMaxEntries = size_t{1} << 20;  // cleared when full, to bound memory

  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> chunk_ids;
};

BpeTokenizer::BpeTokenizer() : BpeTokenizer(std::vector<Merge>{}) {}

BpeTokenizer::BpeTokenizer(std::vector<Merge> merges)
    : merges_(std::move(merges)), cache_(std::make_shared<EncodeCache>()) {
  token_bytes_.reserve(merges_.size() + 257);
  for (int byte = 0; byte < 256; ++byte) token_bytes_.push_back(std::string(1, static_cast<char>(byte)));
  merge_rank_.reserve(merges_.size());
  for (size_t rank = 0; rank < merges_.size(); ++rank) {
    auto [left, right] = merges_[rank];
    int32_t next_id = 256 + static_cast<int32_t>(rank);
    GDN_CHECK(left >= 0 && left < next_id && right >= 0 && right < next_id,
              "merge {} = ({}, {}) refers to an id not yet defined (must be < {})", rank, left, right, next_id);
    bool inserted = merge_rank_.emplace(pair_key(left, right), static_cast<int32_t>(rank)).second;
    GDN_CHECK(inserted, "merge {} = ({}, {}) is a duplicate", rank, left, right);
    token_bytes_.push_back(token_bytes_[left] + token_bytes_[right]);
  }
  token_bytes_.push_back(std::string(kEndOfTextText));
}

// ---------------------------------------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------------------------------------
namespace {

struct TrainWord {
  std::vector<int32_t> symbols;  // current segmentation of the chunk type
  int64_t count = 0;             // how many times the chunk type occurs in the corpus
};

struct HeapEntry {
  int64_t count;
  uint64_t pair;
  // std::priority_queue pops the largest: higher count first, then the smaller pair key.
  bool operator<(const HeapEntry& other) const {
    if (count != other.count) return count < other.count;
    return pair > other.pair;
  }
};

bool contains_pair(const std::vector<int32_t>& symbols, int32_t left, int32_t right) {
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (symbols[i] == left && symbols[i + 1] == right) return true;
  }
  return false;
}

}  // namespace

BpeTokenizer BpeTokenizer::train(const std::vector<std::string_view>& documents, int vocab_size) {
  GDN_USER_CHECK(vocab_size >= 257, "tokenizer vocab_size must be at least 257 (256 bytes + <|endoftext|>), got {}",
                 vocab_size);
  const int target_merges = vocab_size - 257;

  // 1. Count chunk types. Keys are views into `documents`, which outlive this function call.
  std::unordered_map<std::string_view, int64_t> chunk_counts;
  for (std::string_view document : documents) {
    for_each_eot_separated_piece(document, [&](std::string_view piece) {
      size_t start = 0;
      while (start < piece.size()) {
        size_t end = chunk_end(piece, start);
        ++chunk_counts[piece.substr(start, end - start)];
        start = end;
      }
    });
  }

  // 2. One word per chunk type of >= 2 bytes (a single byte has no pair), in byte order so indices are stable.
  std::vector<std::pair<std::string_view, int64_t>> sorted_chunks;
  sorted_chunks.reserve(chunk_counts.size());
  for (const auto& [chunk, count] : chunk_counts) {
    if (chunk.size() >= 2) sorted_chunks.emplace_back(chunk, count);
  }
  std::sort(sorted_chunks.begin(), sorted_chunks.end());
  std::vector<TrainWord> words(sorted_chunks.size());
  for (size_t w = 0; w < sorted_chunks.size(); ++w) {
    for (char c : sorted_chunks[w].first) words[w].symbols.push_back(static_cast<unsigned char>(c));
    words[w].count = sorted_chunks[w].second;
  }

  // 3. Pair index over the initial (byte) segmentation.
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;
  for (size_t w = 0; w < words.size(); ++w) {
    const std::vector<int32_t>& s = words[w].symbols;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t key = pair_key(s[i], s[i + 1]);
      pair_count[key] += words[w].count;
      std::vector<int32_t>& list = pair_words[key];
      if (list.empty() || list.back() != static_cast<int32_t>(w)) list.push_back(static_cast<int32_t>(w));
    }
  }
  std::priority_queue<HeapEntry> heap;
  for (const auto& [key, count] : pair_count) heap.push({count, key});

  // 4. Merge loop.
  std::vector<Merge> merges;
  merges.reserve(target_merges);
  std::vector<int32_t> new_symbols;
  std::vector<uint64_t> pairs_with_new_id;
  while (static_cast<int>(merges.size()) < target_merges && !heap.empty()) {
    HeapEntry top = heap.top();
    heap.pop();
    auto found = pair_count.find(top.pair);
    int64_t current = found == pair_count.end() ? 0 : found->second;
    if (current != top.count) {  // stale entry
      if (current > 0) heap.push({current, top.pair});
      continue;
    }
    if (current < 2) break;  // every remaining pair occurs at most once

    const int32_t left = pair_left(top.pair), right = pair_right(top.pair);
    const int32_t new_id = 256 + static_cast<int32_t>(merges.size());
    merges.emplace_back(left, right);

    std::vector<int32_t> word_list = std::move(pair_words[top.pair]);
    pair_words.erase(top.pair);
    std::sort(word_list.begin(), word_list.end());
    word_list.erase(std::unique(word_list.begin(), word_list.end()), word_list.end());

    pairs_with_new_id.clear();
    for (int32_t w : word_list) {
      TrainWord& word = words[w];
      if (!contains_pair(word.symbols, left, right)) continue;  // stale index entry
      const std::vector<int32_t>& old_symbols = word.symbols;
      for (size_t i = 0; i + 1 < old_symbols.size(); ++i) {
        pair_count[pair_key(old_symbols[i], old_symbols[i + 1])] -= word.count;
      }
      new_symbols.clear();
      for (size_t i = 0; i < old_symbols.size();) {
        if (i + 1 < old_symbols.size() && old_symbols[i] == left && old_symbols[i + 1] == right) {
          new_symbols.push_back(new_id);
          i += 2;
        } else {
          new_symbols.push_back(old_symbols[i]);
          i += 1;
        }
      }
      for (size_t i = 0; i + 1 < new_symbols.size(); ++i) {
        uint64_t key = pair_key(new_symbols[i], new_symbols[i + 1]);
        pair_count[key] += word.count;
        if (new_symbols[i] == new_id || new_symbols[i + 1] == new_id) {
          std::vector<int32_t>& list = pair_words[key];
          if (list.empty() || list.back() != w) list.push_back(w);
          pairs_with_new_id.push_back(key);
        }
      }
      word.symbols.swap(new_symbols);
    }
    pair_count.erase(top.pair);

    std::sort(pairs_with_new_id.begin(), pairs_with_new_id.end());
    pairs_with_new_id.erase(std::unique(pairs_with_new_id.begin(), pairs_with_new_id.end()), pairs_with_new_id.end());
    for (uint64_t key : pairs_with_new_id) heap.push({pair_count[key], key});
  }
  return BpeTokenizer(std::move(merges));
}

// ---------------------------------------------------------------------------------------------------------------------
// Encode / decode
// ---------------------------------------------------------------------------------------------------------------------
std::vector<int32_t> BpeTokenizer::encode_chunk(std::string_view chunk) const {
  std::vector<int32_t> ids;
  ids.reserve(chunk.size());
  for (char c : chunk) ids.push_back(static_cast<unsigned char>(c));
  std::vector<int32_t> merged;
  while (ids.size() >= 2) {
    int32_t best_rank = INT32_MAX;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      auto found = merge_rank_.find(pair_key(ids[i], ids[i + 1]));
      if (found != merge_rank_.end() && found->second < best_rank) best_rank = found->second;
    }
    if (best_rank == INT32_MAX) break;
    const auto [left, right] = merges_[best_rank];
    const int32_t new_id = 256 + best_rank;
    merged.clear();
    for (size_t i = 0; i < ids.size();) {
      if (i + 1 < ids.size() && ids[i] == left && ids[i + 1] == right) {
        merged.push_back(new_id);
        i += 2;
      } else {
        merged.push_back(ids[i]);
        i += 1;
      }
    }
    ids.swap(merged);
  }
  return ids;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 16);
  size_t start = 0;
  while (start < text.size()) {
    size_t end = chunk_end(text, start);
    std::string_view chunk = text.substr(start, end - start);
    start = end;
    if (chunk.size() == 1) {  // a single byte is its own id; skip the cache
      out.push_back(static_cast<unsigned char>(chunk[0]));
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      auto found = cache_->chunk_ids.find(chunk);
      if (found != cache_->chunk_ids.end()) {
        out.insert(out.end(), found->second.begin(), found->second.end());
        continue;
      }
    }
    std::vector<int32_t> ids = encode_chunk(chunk);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (cache_->chunk_ids.size() >= EncodeCache::kMaxEntries) cache_->chunk_ids.clear();
    cache_->chunk_ids.emplace(std::string(chunk), std::move(ids));
  }
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    GDN_CHECK(id >= 0 && id < vocab_size(), "token id {} outside the vocabulary [0, {})", id, vocab_size());
    out += token_bytes_[id];
  }
  return out;
}

std::string BpeTokenizer::token_text(int32_t id) const {
  GDN_CHECK(id >= 0 && id < vocab_size(), "token id {} outside the vocabulary [0, {})", id, vocab_size());
  return token_bytes_[id];
}

uint64_t BpeTokenizer::fingerprint() const {
  uint64_t hash = kFnv1aOffset64;
  for (const auto& [left, right] : merges_) {
    int32_t pair[2] = {left, right};
    hash = fnv1a_64(pair, sizeof(pair), hash);
  }
  return hash;
}

// ---------------------------------------------------------------------------------------------------------------------
// Save / load
// ---------------------------------------------------------------------------------------------------------------------
namespace {
constexpr const char* kFormatName = "gdn-bpe";
constexpr int kFormatVersion = 1;
}  // namespace

void BpeTokenizer::save(const std::string& path) const {
  nlohmann::json merges_json = nlohmann::json::array();
  for (const auto& [left, right] : merges_) merges_json.push_back({left, right});
  nlohmann::json doc = {
      {"format", kFormatName},
      {"version", kFormatVersion},
      {"vocab_size", vocab_size()},
      {"merges", std::move(merges_json)},
  };
  const std::string tmp_path = path + ".tmp";
  {
    std::ofstream file(tmp_path, std::ios::binary | std::ios::trunc);
    GDN_USER_CHECK(file.good(), "cannot write tokenizer file: {}", tmp_path);
    file << doc.dump() << '\n';
    file.close();
    GDN_USER_CHECK(!file.fail(), "cannot write tokenizer file: {}", tmp_path);
  }
  GDN_USER_CHECK(std::rename(tmp_path.c_str(), path.c_str()) == 0, "cannot rename {} to {}", tmp_path, path);
}

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  GDN_USER_CHECK(file.good(), "tokenizer file not found or unreadable: {}", path);
  std::stringstream buffer;
  buffer << file.rdbuf();

  nlohmann::json doc = nlohmann::json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  GDN_USER_CHECK(!doc.is_discarded() && doc.is_object(), "tokenizer file is not valid JSON: {}", path);
  GDN_USER_CHECK(doc.value("format", std::string()) == kFormatName, "tokenizer file {}: format is not \"{}\"", path,
                 kFormatName);
  GDN_USER_CHECK(doc.contains("version") && doc["version"].is_number_integer() && doc["version"] == kFormatVersion,
                 "tokenizer file {}: unsupported version (expected {})", path, kFormatVersion);
  GDN_USER_CHECK(doc.contains("merges") && doc["merges"].is_array(), "tokenizer file {}: missing \"merges\" array",
                 path);

  std::vector<Merge> merges;
  const nlohmann::json& merges_json = doc["merges"];
  merges.reserve(merges_json.size());
  std::unordered_map<uint64_t, int32_t> seen;
  for (size_t rank = 0; rank < merges_json.size(); ++rank) {
    const nlohmann::json& m = merges_json[rank];
    bool shape_ok = m.is_array() && m.size() == 2 && m[0].is_number_integer() && m[1].is_number_integer();
    GDN_USER_CHECK(shape_ok, "tokenizer file {}: merge {} is not a pair of integers", path, rank);
    int64_t left = m[0].get<int64_t>(), right = m[1].get<int64_t>();
    int64_t next_id = 256 + static_cast<int64_t>(rank);
    GDN_USER_CHECK(left >= 0 && left < next_id && right >= 0 && right < next_id,
                   "tokenizer file {}: merge {} = [{}, {}] refers to an undefined id", path, rank, left, right);
    bool fresh = seen.emplace(pair_key(static_cast<int32_t>(left), static_cast<int32_t>(right)), 0).second;
    GDN_USER_CHECK(fresh, "tokenizer file {}: merge {} = [{}, {}] is a duplicate", path, rank, left, right);
    merges.emplace_back(static_cast<int32_t>(left), static_cast<int32_t>(right));
  }
  BpeTokenizer tokenizer(std::move(merges));
  GDN_USER_CHECK(doc.contains("vocab_size") && doc["vocab_size"] == tokenizer.vocab_size(),
                 "tokenizer file {}: vocab_size does not match 256 + merges + 1 = {}", path, tokenizer.vocab_size());
  return tokenizer;
}

}  // namespace gdn
