// train/corpus.cpp — corpus loading and split, token cache, window sampler. See corpus.h for the formats and rules.
#include "train/corpus.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "core/check.h"
#include "core/random.h"

namespace gdn {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------------------------
namespace {

std::string read_file_bytes(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  GDN_USER_CHECK(file.good(), "cannot read corpus file: {}", path.string());
  std::string bytes;
  file.seekg(0, std::ios::end);
  std::streamoff size = file.tellg();
  GDN_USER_CHECK(size >= 0, "cannot read corpus file: {}", path.string());
  file.seekg(0, std::ios::beg);
  bytes.resize(static_cast<size_t>(size));
  file.read(bytes.data(), size);
  GDN_USER_CHECK(file.gcount() == size, "cannot read corpus file: {}", path.string());
  return bytes;
}

// Offset of the first byte of `text` that is not part of well-formed UTF-8 text, or npos when it all is. Well-formed
// means the Unicode standard's table 3-7 (no overlong forms, no surrogates, nothing above U+10FFFF, no truncated
// sequence at the end); the NUL byte is refused too, because text files do not hold it and binary files do.
size_t first_non_text_byte(std::string_view text) {
  const auto* b = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = b[i];
    if (c >= 0x01 && c <= 0x7F) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else return i;  // NUL, a continuation byte out of place, C0, C1, F5..FF
    if (i + len > n || b[i + 1] < lo || b[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (b[i + k] < 0x80 || b[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

// "FILE (byte 0xNN at offset K)" for a file that is not UTF-8 text, "" for one that is.
std::string describe_non_text(const std::string& name, std::string_view text) {
  const size_t at = first_non_text_byte(text);
  if (at == std::string_view::npos) return "";
  return fmt::format("{} (byte 0x{:02x} at offset {})", name, static_cast<unsigned char>(text[at]), at);
}

bool is_blank(std::string_view text) {
  for (char c : text) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f') return false;
  }
  return true;
}

// Appends the pieces of `text` between "<|endoftext|>" separators that hold more than whitespace.
void append_documents(std::string_view text, std::vector<std::string>* docs) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t found = text.find(kEndOfTextText, start);
    size_t end = found == std::string_view::npos ? text.size() : found;
    std::string_view piece = text.substr(start, end - start);
    if (!is_blank(piece)) docs->emplace_back(piece);
    if (found == std::string_view::npos) break;
    start = found + kEndOfTextText.size();
  }
}

bool is_hidden(const fs::path& path) {
  std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

// Regular, non-hidden files under `dir`, recursively, not descending into hidden folders; sorted by path.
std::vector<fs::path> list_corpus_files(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code error;
  fs::recursive_directory_iterator it(dir, error);
  GDN_USER_CHECK(!error, "cannot read corpus directory: {}", dir.string());
  for (; it != fs::recursive_directory_iterator(); it.increment(error)) {
    GDN_USER_CHECK(!error, "cannot read corpus directory: {}", dir.string());
    if (is_hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) files.push_back(it->path());
  }
  GDN_USER_CHECK(!error, "cannot read corpus directory: {}", dir.string());
  std::sort(files.begin(), files.end());
  return files;
}

// Byte index where the validation part of a single file starts.
size_t single_file_split_point(std::string_view text, double val_fraction) {
  size_t cut = static_cast<size_t>(static_cast<double>(text.size()) * (1.0 - val_fraction));
  cut = std::min(cut, text.size());
  if (cut == 0 || cut == text.size()) return cut;
  constexpr size_t kNewlineSearchBytes = 64 * 1024;
  size_t lowest = cut > kNewlineSearchBytes ? cut - kNewlineSearchBytes : 0;
  for (size_t i = cut; i > lowest; --i) {
    if (text[i - 1] == '\n') return i;  // just after the newline
  }
  return cut;
}

}  // namespace

Corpus load_corpus(const std::string& path, double val_fraction) {
  GDN_USER_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, "val_fraction must be in [0, 1), got {}", val_fraction);
  std::error_code error;
  GDN_USER_CHECK(fs::exists(path, error), "corpus not found: {}", path);

  std::vector<fs::path> files;
  if (fs::is_directory(path, error)) {
    files = list_corpus_files(path);
  } else {
    files.push_back(path);
  }
  GDN_USER_CHECK(!files.empty(), "corpus is empty: {} (no files)", path);

  Corpus corpus;
  if (files.size() == 1) {
    std::string text = read_file_bytes(files[0]);
    const std::string bad = describe_non_text(files[0].string(), text);
    GDN_USER_CHECK(bad.empty(), "corpus file is not UTF-8 text: {}", bad);
    corpus.names.push_back(fs::is_directory(path) ? fs::relative(files[0], path).string()
                                                  : files[0].filename().string());
    size_t split = single_file_split_point(text, val_fraction);
    append_documents(std::string_view(text).substr(0, split), &corpus.train_docs);
    append_documents(std::string_view(text).substr(split), &corpus.val_docs);
  } else {
    int64_t stride = 0;  // 0: no validation files
    if (val_fraction > 0.0) stride = std::max<int64_t>(1, std::llround(1.0 / val_fraction));
    const int64_t num_files = static_cast<int64_t>(files.size());
    bool any_validation = false;
    for (int64_t i = 0; i < num_files; ++i) {
      if (stride > 0 && i % stride == stride - 1) any_validation = true;
    }
    std::vector<std::string> bad;  // every file that is not UTF-8 text, so one run names them all
    for (int64_t i = 0; i < num_files; ++i) {
      bool validation = stride > 0 && (i % stride == stride - 1 || (!any_validation && i == num_files - 1));
      std::string text = read_file_bytes(files[i]);
      if (std::string b = describe_non_text(fs::relative(files[i], path).string(), text); !b.empty()) {
        bad.push_back(std::move(b));
        continue;
      }
      corpus.names.push_back(fs::relative(files[i], path).string());
      append_documents(text, validation ? &corpus.val_docs : &corpus.train_docs);
    }
    if (!bad.empty()) {
      const size_t shown = std::min<size_t>(bad.size(), 5);
      throw UserError(fmt::format("corpus {} holds {} file(s) that are not UTF-8 text: {}{}", path, bad.size(),
                                  fmt::join(bad.begin(), bad.begin() + static_cast<std::ptrdiff_t>(shown), ", "),
                                  bad.size() > shown ? fmt::format(" and {} more", bad.size() - shown) : ""));
    }
  }
  GDN_USER_CHECK(!corpus.train_docs.empty() || !corpus.val_docs.empty(),
                 "corpus is empty: {} (no text besides whitespace)", path);
  GDN_USER_CHECK(!corpus.train_docs.empty(), "corpus has no training text after the validation split: {}", path);
  return corpus;
}

// ---------------------------------------------------------------------------------------------------------------------
// Encoding and the token cache
// ---------------------------------------------------------------------------------------------------------------------
std::vector<int32_t> encode_documents(const BpeTokenizer& tokenizer, const std::vector<std::string>& docs) {
  std::vector<int32_t> tokens;
  for (size_t d = 0; d < docs.size(); ++d) {
    if (d > 0) tokens.push_back(tokenizer.eot_id());
    std::vector<int32_t> ids = tokenizer.encode(docs[d]);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  }
  return tokens;
}

namespace {

constexpr char kCacheMagic[8] = {'G', 'D', 'N', 'T', 'O', 'K', '1', '\0'};

struct CacheHeader {
  char magic[8];
  uint64_t key;
  uint64_t count;
  uint64_t data_hash;
};
static_assert(sizeof(CacheHeader) == 32, "cache header must have no padding");

uint64_t cache_key(const BpeTokenizer& tokenizer, const std::vector<std::string>& docs) {
  uint64_t fingerprint = tokenizer.fingerprint();
  uint64_t hash = fnv1a_64(&fingerprint, sizeof(fingerprint));
  uint64_t num_docs = docs.size();
  hash = fnv1a_64(&num_docs, sizeof(num_docs), hash);
  for (const std::string& doc : docs) {
    uint64_t length = doc.size();
    hash = fnv1a_64(&length, sizeof(length), hash);
    hash = fnv1a_64(doc.data(), doc.size(), hash);
  }
  return hash;
}

// Fills `tokens` and returns true if `path` is a complete cache file for `key` whose data checks out.
bool read_cache_file(const std::string& path, uint64_t key, int vocab_size, std::vector<int32_t>* tokens) {
  std::ifstream file(path, std::ios::binary);
  if (!file.good()) return false;
  CacheHeader header{};
  file.read(reinterpret_cast<char*>(&header), sizeof(header));
  if (file.gcount() != static_cast<std::streamsize>(sizeof(header))) return false;
  if (std::memcmp(header.magic, kCacheMagic, sizeof(kCacheMagic)) != 0 || header.key != key) return false;
  std::error_code error;
  uint64_t file_size = fs::file_size(path, error);
  if (error || file_size < sizeof(header) || header.count != (file_size - sizeof(header)) / sizeof(int32_t) ||
      (file_size - sizeof(header)) % sizeof(int32_t) != 0) {
    return false;
  }
  tokens->resize(header.count);
  file.read(reinterpret_cast<char*>(tokens->data()), static_cast<std::streamsize>(header.count * sizeof(int32_t)));
  if (file.gcount() != static_cast<std::streamsize>(header.count * sizeof(int32_t))) return false;
  if (fnv1a_64(tokens->data(), tokens->size() * sizeof(int32_t)) != header.data_hash) return false;
  for (int32_t id : *tokens) {
    if (id < 0 || id >= vocab_size) return false;
  }
  return true;
}

void write_cache_file(const std::string& path, uint64_t key, const std::vector<int32_t>& tokens) {
  CacheHeader header{};
  std::memcpy(header.magic, kCacheMagic, sizeof(kCacheMagic));
  header.key = key;
  header.count = tokens.size();
  header.data_hash = fnv1a_64(tokens.data(), tokens.size() * sizeof(int32_t));
  const std::string tmp_path = path + ".tmp";
  {
    std::ofstream file(tmp_path, std::ios::binary | std::ios::trunc);
    GDN_USER_CHECK(file.good(), "cannot write token cache file: {}", tmp_path);
    file.write(reinterpret_cast<const char*>(&header), sizeof(header));
    file.write(reinterpret_cast<const char*>(tokens.data()),
               static_cast<std::streamsize>(tokens.size() * sizeof(int32_t)));
    file.close();
    GDN_USER_CHECK(!file.fail(), "cannot write token cache file: {}", tmp_path);
  }
  GDN_USER_CHECK(std::rename(tmp_path.c_str(), path.c_str()) == 0, "cannot rename {} to {}", tmp_path, path);
}

}  // namespace

std::vector<int32_t> encode_cached(const BpeTokenizer& tokenizer, const std::vector<std::string>& docs,
                                   const std::string& cache_dir) {
  std::error_code error;
  fs::create_directories(cache_dir, error);
  GDN_USER_CHECK(!error, "cannot create token cache directory: {} ({})", cache_dir, error.message());
  const uint64_t key = cache_key(tokenizer, docs);
  const std::string path = (fs::path(cache_dir) / fmt::format("tokens-{:016x}.bin", key)).string();

  std::vector<int32_t> tokens;
  if (read_cache_file(path, key, tokenizer.vocab_size(), &tokens)) return tokens;
  tokens = encode_documents(tokenizer, docs);
  write_cache_file(path, key, tokens);
  return tokens;
}

// ---------------------------------------------------------------------------------------------------------------------
// Window sampler
// ---------------------------------------------------------------------------------------------------------------------
WindowSampler::WindowSampler(const std::vector<int32_t>* tokens, int64_t seq_len, uint64_t seed)
    : tokens_(tokens), seq_len_(seq_len) {
  GDN_CHECK(tokens != nullptr, "WindowSampler needs a token stream");
  GDN_CHECK(seq_len >= 1, "seq_len must be >= 1, got {}", seq_len);
  const int64_t num_tokens = static_cast<int64_t>(tokens->size());
  GDN_USER_CHECK(num_tokens >= seq_len + 1, "corpus too short: {} tokens, need at least seq_len+1 = {}", num_tokens,
                 seq_len + 1);
  state_.seed = seed;
  build_epoch();
}

void WindowSampler::build_epoch() {
  const int64_t num_tokens = static_cast<int64_t>(tokens_->size());
  // One generator per (seed, epoch), so any epoch can be rebuilt on its own.
  Generator rng(state_.seed ^ (0x5851f42d4c957f2dull * (state_.epoch + 1)));
  // Offset in [0, seq_len), limited so at least one window fits: start + seq_len + 1 <= num_tokens.
  const int64_t max_offset = std::min(seq_len_ - 1, num_tokens - 1 - seq_len_);
  const int64_t offset = static_cast<int64_t>(rng.below(static_cast<uint64_t>(max_offset) + 1));
  const int64_t count = (num_tokens - 1 - offset) / seq_len_;
  window_starts_.resize(count);
  for (int64_t i = 0; i < count; ++i) window_starts_[i] = offset + i * seq_len_;
  // Fisher–Yates.
  for (int64_t i = count - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(window_starts_[i], window_starts_[j]);
  }
}

void WindowSampler::next_batch(int64_t batch, int64_t* inputs, int64_t* targets, int rank, int world) {
  GDN_CHECK(batch >= 1, "batch must be >= 1, got {}", batch);
  GDN_CHECK(world >= 1 && rank >= 0 && rank < world, "rank {} of {}", rank, world);
  for (int64_t g = 0; g < batch * world; ++g) {
    if (state_.cursor >= window_starts_.size()) {
      state_.epoch += 1;
      state_.cursor = 0;
      build_epoch();
    }
    int64_t start = window_starts_[state_.cursor];
    state_.cursor += 1;
    if (g / batch != rank) continue;  // another rank's row of the global batch
    const int64_t b = g % batch;
    gather_windows(*tokens_, &start, 1, seq_len_, inputs + b * seq_len_, targets + b * seq_len_);
  }
}

void WindowSampler::set_state(const SamplerState& state) {
  bool rebuild = state.seed != state_.seed || state.epoch != state_.epoch;
  state_ = state;
  if (rebuild) build_epoch();
  GDN_CHECK(state_.cursor <= window_starts_.size(), "sampler cursor {} past the {} windows of epoch {}", state_.cursor,
            window_starts_.size(), state_.epoch);
}

std::vector<int64_t> WindowSampler::eval_window_starts(int64_t num_tokens, int64_t seq_len, int64_t max_windows) {
  GDN_CHECK(seq_len >= 1, "seq_len must be >= 1, got {}", seq_len);
  GDN_USER_CHECK(num_tokens >= seq_len + 1, "corpus too short: {} tokens, need at least seq_len+1 = {}", num_tokens,
                 seq_len + 1);
  const int64_t available = (num_tokens - 1) / seq_len;
  const int64_t count = max_windows > 0 ? std::min(max_windows, available) : available;
  std::vector<int64_t> starts(count);
  for (int64_t i = 0; i < count; ++i) {
    int64_t window = i * available / count;  // evenly spaced over the available windows
    starts[i] = window * seq_len;
  }
  return starts;
}

void WindowSampler::gather_windows(const std::vector<int32_t>& tokens, const int64_t* starts, int64_t count,
                                   int64_t seq_len, int64_t* inputs, int64_t* targets) {
  const int64_t num_tokens = static_cast<int64_t>(tokens.size());
  for (int64_t w = 0; w < count; ++w) {
    const int64_t start = starts[w];
    GDN_CHECK(start >= 0 && start + seq_len + 1 <= num_tokens, "window [{}, {}) outside the {} tokens", start,
              start + seq_len + 1, num_tokens);
    for (int64_t t = 0; t < seq_len; ++t) {
      inputs[w * seq_len + t] = tokens[start + t];
      targets[w * seq_len + t] = tokens[start + t + 1];
    }
  }
}

}  // namespace gdn
