// train/generate.h — text generation from the recurrent state.
//
// The prompt is run once through the model with a ModelCache (the conv tails and delta-rule states of every layer);
// each new token is then one forward of length 1 that reads and updates that cache: O(1) work per token, whatever
// the length of the text so far. Sampling: temperature, then top-k, then top-p (nucleus), from a seeded generator.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/random.h"
#include "models/language_model.h"
#include "train/tokenizer.h"

namespace gdn {

struct SamplingOptions {
  double temperature = 0.8;  // 0 = greedy
  int64_t top_k = 40;        // 0 = off
  double top_p = 0.95;       // 1 = off
  uint64_t seed = 0;
  int64_t max_tokens = 100;
  int64_t stop_token = -1;  // generation ends when this id is sampled (-1: never); generate_text sets end-of-text
};

// Picks the next token from one row of logits.
int64_t sample_token(const std::vector<double>& logits, const SamplingOptions& opts, Generator& gen);

// Generates up to opts.max_tokens ids after `prompt` (non-empty). on_token, when given, sees each new id.
std::vector<int64_t> generate_ids(const GatedDeltaNetLM& model, const std::vector<int64_t>& prompt,
                                  const SamplingOptions& opts,
                                  const std::function<void(int64_t)>& on_token = nullptr);

// Tokenizes the prompt (an empty prompt starts from the end-of-text token), generates, and returns prompt +
// continuation as text.
std::string generate_text(const GatedDeltaNetLM& model, const BpeTokenizer& tokenizer, const std::string& prompt,
                          const SamplingOptions& opts);

}  // namespace gdn
