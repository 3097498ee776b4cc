// train/corpus.h — from text on disk to batches of token ids: corpus loading and split, token cache, window sampler.
//
// Pipeline: load_corpus(path) -> Corpus{train_docs, val_docs} -> encode_cached(tokenizer, docs, cache_dir) -> one
// flat int32 token stream (documents joined by <|endoftext|>) -> WindowSampler -> (inputs, targets) batches.
//
// Corpus layout: a path is either one UTF-8 text file or a directory. In a directory every regular file (recursively,
// sorted by path; names starting with '.' skipped, so marker files and hidden cache folders are not text) is one
// document; any file is further split into documents at the literal text "<|endoftext|>". Pieces that are empty or
// only whitespace are dropped. Every file must be UTF-8 text (well-formed UTF-8 without NUL bytes): a file that is not
// is refused, naming it with the offset and value of its first bad byte; in a folder, every such file is named.
//
// Validation split: for a directory of >= 2 files, whole files go to validation: with stride = round(1/val_fraction)
// (10 for the default 0.1), file i is validation when i % stride == stride - 1, and if that picks none (fewer files
// than the stride) the last file is. For a single file (or a directory holding one), the last val_fraction of its
// bytes is validation, the cut moved to just after a newline when one lies within 64 KiB before the cut point.
//
// Token cache: encoding a 10 MB corpus takes seconds; the cache makes every later run instant. The key hashes the
// tokenizer fingerprint and every document's length and bytes (FNV-1a 64), so any change to either misses. File
// cache_dir/tokens-<16 hex digits>.bin: header {char magic[8] = "GDNTOK1\0", uint64 key, uint64 count,
// uint64 fnv1a of the data}, then count raw int32 ids (native byte order; little-endian on every supported host).
// A file that fails any check is ignored and rewritten; writes go to a temp file renamed into place (atomic).
//
// Window sampler: a training example is a window of T+1 consecutive tokens: inputs = the first T, targets = the same
// window shifted by one. Each epoch uses the non-overlapping window starts {offset + i*T}, with a per-epoch random
// offset in [0, T) (so the window edges move between epochs), in a per-epoch random order. Randomness comes from the
// project's seeded generator (core/random.h, xoshiro256**, unbiased integers by rejection) and a Fisher–Yates
// shuffle, so the order is identical on every compiler and platform (std::shuffle and std::uniform_int_distribution are not). The state is just
// (seed, epoch, cursor); a resumed run recomputes the epoch's permutation from (seed, epoch) and continues exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/tokenizer.h"

namespace gdn {

struct Corpus {
  std::vector<std::string> train_docs;
  std::vector<std::string> val_docs;
  std::vector<std::string> names;  // the files read, relative to the corpus path (a file: its own name), in order
};

// Loads a text file or a directory of text files (see the header comment). Errors are gdn::UserError, one line:
// "corpus not found: PATH", "corpus is empty: PATH", "cannot read corpus file: PATH", "corpus file is not UTF-8
// text: PATH (byte 0xNN at offset K)", "corpus DIR holds N file(s) that are not UTF-8 text: NAME (...), ...".
Corpus load_corpus(const std::string& path, double val_fraction = 0.1);

// All documents encoded and joined, with eot between consecutive documents (none before the first or after the last).
std::vector<int32_t> encode_documents(const BpeTokenizer& tokenizer, const std::vector<std::string>& docs);

// encode_documents() through the on-disk cache in cache_dir (created if missing).
std::vector<int32_t> encode_cached(const BpeTokenizer& tokenizer, const std::vector<std::string>& docs,
                                   const std::string& cache_dir);

// Where a sampler is in its stream of batches; enough to resume it exactly.
struct SamplerState {
  uint64_t seed = 0;
  uint64_t epoch = 0;   // epochs completed
  uint64_t cursor = 0;  // windows of the current epoch already handed out
};

class WindowSampler {
 public:
  // `tokens` must outlive the sampler. Fewer than seq_len + 1 tokens -> gdn::UserError.
  WindowSampler(const std::vector<int32_t>* tokens, int64_t seq_len, uint64_t seed);

  // Fills inputs and targets, each (B, T) row-major with B = batch and T = seq_len, and advances by B windows,
  // starting a new epoch whenever the current one runs out. Sharded (data-parallel rank `rank` of `world`): the
  // step's global batch is the next world * batch windows, of which this rank takes the rows
  // [rank * batch, (rank + 1) * batch); every rank advances by the whole global batch, so all ranks keep the same
  // state, and the ranks' batches put together are the batch of one process with world * batch.
  void next_batch(int64_t batch, int64_t* inputs, int64_t* targets, int rank = 0, int world = 1);

  SamplerState state() const { return state_; }
  void set_state(const SamplerState& state);

  // Windows in the current epoch (it varies by at most one between epochs, with the offset).
  int64_t windows_per_epoch() const { return static_cast<int64_t>(window_starts_.size()); }
  int64_t seq_len() const { return seq_len_; }

  // A fixed, deterministic set of evaluation windows over a stream of num_tokens tokens: the non-overlapping
  // starts {0, T, 2T, ...}, thinned to at most max_windows evenly spaced ones (max_windows <= 0: all).
  // The same every call, so successive evaluations are comparable.
  static std::vector<int64_t> eval_window_starts(int64_t num_tokens, int64_t seq_len, int64_t max_windows);
  // Fills inputs and targets, each (count, T), from the windows starting at starts[0..count).
  static void gather_windows(const std::vector<int32_t>& tokens, const int64_t* starts, int64_t count, int64_t seq_len,
                             int64_t* inputs, int64_t* targets);

 private:
  void build_epoch();  // window_starts_ for state_.epoch

  const std::vector<int32_t>* tokens_;
  int64_t seq_len_;
  SamplerState state_;
  std::vector<int64_t> window_starts_;  // this epoch's window starts, in the order they are handed out
};

}  // namespace gdn
