// train/evaluate.cpp — see evaluate.h.
#include "train/evaluate.h"

#include <algorithm>
#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/ops.h"
#include "train/corpus.h"

namespace gdn {

double unigram_loss(const std::vector<int32_t>& train_tokens, const std::vector<int32_t>& val_tokens, int64_t vocab) {
  std::vector<double> counts(vocab, 1.0);
  for (int32_t t : train_tokens) counts[t] += 1.0;
  double total = static_cast<double>(train_tokens.size() + vocab);
  double nll = 0;
  for (size_t i = 1; i < val_tokens.size(); ++i) nll -= std::log(counts[val_tokens[i]] / total);
  return val_tokens.size() > 1 ? nll / static_cast<double>(val_tokens.size() - 1) : 0.0;
}

EvalMetrics evaluate(const GatedDeltaNetLM& model, const std::vector<int32_t>& tokens, const std::vector<int64_t>& starts,
                     int64_t batch, int64_t seq_len, Communicator* comm) {
  NoGradGuard no_grad;
  EvalMetrics m;
  double loss_sum = 0;
  int64_t correct = 0, count = 0, batches = 0;
  std::vector<int64_t> inputs(batch * seq_len), targets(batch * seq_len);
  // Every batch is queued first and read back afterwards, so that the host never waits between batches.
  std::vector<Tensor> losses, predictions;
  std::vector<std::vector<int64_t>> batch_targets;
  const size_t first = comm ? static_cast<size_t>(comm->rank() * batch) : 0;
  const size_t stride = comm ? static_cast<size_t>(comm->world() * batch) : static_cast<size_t>(batch);
  for (size_t at = first; at < starts.size(); at += stride) {
    const int64_t b = std::min<int64_t>(batch, static_cast<int64_t>(starts.size() - at));
    WindowSampler::gather_windows(tokens, starts.data() + at, b, seq_len, inputs.data(), targets.data());
    std::vector<int64_t> in(inputs.begin(), inputs.begin() + b * seq_len), tg(targets.begin(), targets.begin() + b * seq_len);
    Tensor ids = Tensor::from_int64(in, {b, seq_len}, model.device());
    Tensor tgt = Tensor::from_int64(tg, {b, seq_len}, model.device());
    LossOutput out = model.loss(ids, tgt);
    losses.push_back(out.ce);
    predictions.push_back(argmax(out.logits, -1));
    batch_targets.push_back(std::move(tg));
  }
  for (size_t i = 0; i < losses.size(); ++i) {
    loss_sum += losses[i].item();
    std::vector<int64_t> pred = to_device(predictions[i], kCPU).to_int64_vector();
    for (size_t j = 0; j < pred.size(); ++j) correct += pred[j] == batch_targets[i][j];
    count += static_cast<int64_t>(pred.size());
    batches++;
  }
  if (comm) {
    std::vector<double> sums{loss_sum, static_cast<double>(correct), static_cast<double>(count),
                             static_cast<double>(batches)};
    comm->sum(sums);
    loss_sum = sums[0], correct = static_cast<int64_t>(sums[1]), count = static_cast<int64_t>(sums[2]);
    batches = static_cast<int64_t>(sums[3]);
  }
  m.loss = loss_sum / static_cast<double>(std::max<int64_t>(batches, 1));
  m.accuracy = static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(count, 1));
  m.perplexity = std::exp(m.loss);
  return m;
}

}  // namespace gdn
