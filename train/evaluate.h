// train/evaluate.h — the validation metrics of a model on a token stream, and the unigram baseline.
//
// evaluate() runs the model (no autograd) over windows of the validation tokens, batch by batch: every batch is
// queued first and read back afterwards, so the host never waits between batches. Loss is the mean of the batches'
// mean cross-entropy, accuracy the share of next tokens predicted by the argmax, perplexity exp(loss). With a
// communicator (data parallel), batch i runs on rank i % world and the sums are added up over the ranks.
#pragma once

#include <cstdint>
#include <vector>

#include "models/language_model.h"
#include "train/distributed.h"

namespace gdn {

struct EvalMetrics {
  double loss = 0, accuracy = 0, perplexity = 0;
};

// starts: the first token of every window (WindowSampler::gather_windows); windows of seq_len + 1 tokens.
EvalMetrics evaluate(const GatedDeltaNetLM& model, const std::vector<int32_t>& tokens, const std::vector<int64_t>& starts,
                     int64_t batch, int64_t seq_len, Communicator* comm);

// Cross-entropy (nats/token) of the validation tokens under the add-one smoothed unigram distribution of the
// training tokens: the baseline a language model must beat.
double unigram_loss(const std::vector<int32_t>& train_tokens, const std::vector<int32_t>& val_tokens, int64_t vocab);

}  // namespace gdn
