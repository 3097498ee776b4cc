// train/tokenizer.h — our own byte-level BPE tokenizer (train, encode, decode, save, load).
//
// Vocabulary layout (ids are int32):
//   0..255                 the 256 byte values, so every byte string is encodable (no unknown token)
//   256..256+M-1           the M learned merges, in the order they were learned (= their rank)
//   256+M                  the one special token <|endoftext|> (eot_id()), placed between documents
// so vocab_size() = 256 + M + 1.
//
// Pre-tokenization (GPT-2-like, written by hand, no regex): the bytes of a text are cut into chunks and merges
// never cross a chunk boundary. Byte classes: letter (ASCII a-z A-Z, or any byte >= 0x80 so UTF-8 words stay
// whole), digit, newline (\n \r), space (other ASCII whitespace), other (punctuation, symbols, control bytes).
// A chunk is one of:
//   * an optional single leading ' ' + a run of letters        (" hello", "world")
//   * an optional single leading ' ' + a run of digits         (" 1790")
//   * an optional single leading ' ' + a run of other bytes    (" --", ".")
//   * a run of newline bytes                                   ("\n\n")
//   * a run of space bytes; when it is followed by a word, its last ' ' is left to lead that word
// A run longer than kMaxChunkBytes is cut into pieces, which bounds the quadratic per-chunk merge loop on
// pathological input (a megabyte without spaces). Unlike GPT-2 there is no special case for contractions:
// "don't" becomes "don" "'" "t".
//
// Training (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units"; byte-level as in
// GPT-2, Radford et al. 2019): count chunk TYPES, then repeatedly merge the most frequent adjacent pair, weighted by
// chunk count. An index pair -> count and pair -> words containing it makes each merge touch only the words that
// hold the pair; a max-heap with lazy deletion finds the best pair. Ties go to the smallest (left id, right id), so
// training is deterministic. A pair must occur at least twice to be merged, so a small corpus may yield fewer merges
// than asked for. The literal text "<|endoftext|>" in training documents is treated as a document separator.
//
// Encoding applies merges by rank inside each chunk (lowest rank first, as GPT-2 does) and caches chunk -> ids in a
// mutex-guarded map, so encoding a large corpus costs little more than pre-tokenizing it. encode() never produces
// eot; the literal text "<|endoftext|>" is encoded as ordinary bytes. decode(encode(s)) == s for every byte string.
//
// File format (JSON, nlohmann): {"format": "gdn-bpe", "version": 1, "vocab_size": N, "merges": [[a, b], ...]}.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace gdn {

// FNV-1a 64-bit hash (Fowler–Noll–Vo), chainable: pass a previous result as `hash` to continue it.
inline constexpr uint64_t kFnv1aOffset64 = 0xcbf29ce484222325ull;
uint64_t fnv1a_64(const void* data, size_t num_bytes, uint64_t hash = kFnv1aOffset64);

// The text of the special end-of-text token.
inline constexpr std::string_view kEndOfTextText = "<|endoftext|>";

// Longest chunk the pre-tokenizer emits, in bytes.
inline constexpr size_t kMaxChunkBytes = 256;

// Cuts `text` into pre-tokenization chunks (views into `text`), in order; concatenated they equal `text`.
std::vector<std::string_view> pretokenize(std::string_view text);

class BpeTokenizer {
 public:
  using Merge = std::pair<int32_t, int32_t>;  // (left id, right id) -> new id 256 + rank

  // No merges: vocab = 256 bytes + eot.
  BpeTokenizer();
  // From an explicit merge list; merge i may only refer to ids < 256 + i (GDN_CHECK otherwise).
  explicit BpeTokenizer(std::vector<Merge> merges);

  // Learns merges until vocab_size() == vocab_size or no pair occurs twice. vocab_size must be >= 257.
  static BpeTokenizer train(const std::vector<std::string_view>& documents, int vocab_size);

  // Token ids of `text`, no special tokens added.
  std::vector<int32_t> encode(std::string_view text) const;
  // Concatenated bytes of the tokens; eot decodes to "<|endoftext|>". An id outside the vocab is a GDN_CHECK error.
  std::string decode(const std::vector<int32_t>& ids) const;
  // Bytes of one token (eot -> "<|endoftext|>").
  std::string token_text(int32_t id) const;

  int vocab_size() const { return 256 + static_cast<int>(merges_.size()) + 1; }
  int32_t eot_id() const { return 256 + static_cast<int32_t>(merges_.size()); }
  int num_merges() const { return static_cast<int>(merges_.size()); }
  const std::vector<Merge>& merges() const { return merges_; }

  // FNV-1a 64 over the merges: equal fingerprints <=> equal tokenizers (for cache keys).
  uint64_t fingerprint() const;

  // Writes the JSON file atomically (path + ".tmp", then rename). Failure to write -> gdn::UserError.
  void save(const std::string& path) const;
  // Reads a file written by save(). Missing or corrupt file -> gdn::UserError naming the path.
  static BpeTokenizer load(const std::string& path);

 private:
  struct EncodeCache;  // chunk bytes -> ids, behind a mutex; shared by copies (the merges never change)

  std::vector<int32_t> encode_chunk(std::string_view chunk) const;

  std::vector<Merge> merges_;
  std::unordered_map<uint64_t, int32_t> merge_rank_;  // (left << 32 | right) -> rank
  std::vector<std::string> token_bytes_;  // (vocab_size) bytes of each id, eot included
  std::shared_ptr<EncodeCache> cache_;
};

}  // namespace gdn
