// tests/test_trainer.cpp — the training loop end to end on a tiny corpus: a resumed run reproduces the
// uninterrupted loss curve exactly, checkpoints are complete and refuse another config, bad corpora fail clearly.
#include <filesystem>
#include <fstream>

#include "models/language_model.h"
#include "tests/test_helpers.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace gdn;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("gdn_test_trainer_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
}

// A small corpus folder: 12 "documents" of simple English so the tokenizer learns some merges.
fs::path make_corpus(const fs::path& root) {
  fs::path dir = root / "corpus";
  fs::create_directories(dir);
  const char* words[] = {"the", "state", "of", "union", "is", "strong", "and", "we", "will", "build", "a", "nation"};
  Generator g(3);
  for (int d = 0; d < 12; ++d) {
    std::string text;
    for (int w = 0; w < 400; ++w) text += std::string(words[g.below(12)]) + (w % 13 == 12 ? ".\n" : " ");
    write(dir / fmt::format("doc{:02d}.txt", d), text);
  }
  return dir;
}

TrainConfig tiny(const fs::path& corpus, const fs::path& out) {
  TrainConfig c;
  c.data = corpus.string();
  c.out_dir = out.string();
  c.model.vocab_size = 300;
  c.model.d_model = 16;
  c.model.n_layers = 1;
  c.model.n_k_heads = 2;
  c.model.n_v_heads = 2;
  c.model.head_k_dim = 8;
  c.model.head_v_dim = 8;
  c.model.ffn_dim = 16;
  c.model.chunk_size = 8;
  c.seq_len = 16;
  c.batch_size = 2;
  c.steps = 8;
  c.warmup_steps = 2;
  c.eval_every = 4;
  c.eval_batches = 2;
  c.checkpoint_every = 4;
  c.threads = 1;
  return c;
}

TrainOptions quiet() {
  TrainOptions o;
  o.quiet = true;
  return o;
}
}  // namespace

TEST_CASE("trainer: a resumed run reproduces the uninterrupted loss curve") {
  fs::path root = temp_dir("resume");
  fs::path corpus = make_corpus(root);
  TrainSummary full = train(tiny(corpus, root / "full"), quiet());
  REQUIRE(full.train_losses.size() == 8);
  CHECK(full.train_losses.back() < full.train_losses.front());  // it learns something

  TrainOptions stop = quiet();
  stop.stop_after = 3;  // as if Ctrl-C came after step 3
  TrainSummary first = train(tiny(corpus, root / "split"), stop);
  CHECK(first.interrupted);
  CHECK(first.end_step == 3);
  TrainOptions resume = quiet();
  resume.resume = true;
  TrainSummary second = train(tiny(corpus, root / "split"), resume);
  CHECK(second.start_step == 3);
  REQUIRE(second.train_losses.size() == 5);
  for (int i = 0; i < 3; ++i) CHECK(first.train_losses[i] == full.train_losses[i]);
  for (int i = 0; i < 5; ++i) CHECK(second.train_losses[i] == doctest::Approx(full.train_losses[i + 3]).epsilon(1e-6));
  CHECK(second.final_val_loss == doctest::Approx(full.final_val_loss).epsilon(1e-6));
  CHECK(fs::exists(root / "split" / "training_results.json"));
}

TEST_CASE("trainer: checkpoints are complete, refuse another config, and a rerun needs --overwrite") {
  fs::path root = temp_dir("ckpt");
  fs::path corpus = make_corpus(root);
  TrainConfig cfg = tiny(corpus, root / "run");
  train(cfg, quiet());
  std::string ckroot = (root / "run" / "checkpoints").string();
  auto last = find_checkpoint(ckroot, "LAST");
  auto best = find_checkpoint(ckroot, "BEST");
  REQUIRE(last.has_value());
  REQUIRE(best.has_value());
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    CHECK(fs::exists(fs::path(*last) / f));
  // Only LAST and BEST survive pruning.
  int dirs = 0;
  for (const auto& e : fs::directory_iterator(ckroot)) dirs += e.is_directory();
  CHECK(dirs <= 2);

  // The checkpoint's weights load into a model of the same config ...
  ModelConfig mc = read_checkpoint_model_config(*last);
  GatedDeltaNetLM same(mc, 99);
  CHECK_NOTHROW(load_checkpoint(*last, same, nullptr));
  // ... and not into another one.
  ModelConfig other = mc;
  other.d_model = 32;
  GatedDeltaNetLM different(other, 99);
  CHECK_THROWS_WITH_AS(load_checkpoint(*last, different, nullptr), doctest::Contains("d_model"), UserError);

  // Training again into the same folder without --resume/--overwrite is refused; nothing is touched.
  auto before = fs::last_write_time(fs::path(*last) / "model.safetensors");
  CHECK_THROWS_WITH_AS(train(cfg, quiet()), doctest::Contains("--overwrite"), UserError);
  CHECK(fs::last_write_time(fs::path(*last) / "model.safetensors") == before);

  // A truncated weights file is a clear error, and the file is left as it was.
  fs::path weights = fs::path(*last) / "model.safetensors";
  fs::resize_file(weights, fs::file_size(weights) / 2);
  TrainOptions resume = quiet();
  resume.resume = true;
  CHECK_THROWS_WITH_AS(train(cfg, resume), doctest::Contains("truncated"), UserError);
}

TEST_CASE("trainer: bad corpora give one clear error") {
  fs::path root = temp_dir("bad");
  TrainConfig cfg = tiny(root / "missing", root / "out");
  CHECK_THROWS_WITH_AS(train(cfg, quiet()), doctest::Contains("not found"), UserError);
  write(root / "empty.txt", "");
  cfg.data = (root / "empty.txt").string();
  CHECK_THROWS_WITH_AS(train(cfg, quiet()), doctest::Contains("empty"), UserError);
  write(root / "short.txt", "hello world.\n");
  cfg.data = (root / "short.txt").string();
  CHECK_THROWS_WITH_AS(train(cfg, quiet()), doctest::Contains("too short"), UserError);
}

TEST_CASE("trainer: the default no_decay list matches the model's own decay flags") {
  ModelConfig mc;
  mc.vocab_size = 300;
  mc.d_model = 16;
  mc.n_layers = 2;
  mc.n_experts = 3;
  mc.moe_shared_expert = true;
  mc.moe_ffn_dim = 8;
  GatedDeltaNetLM model(mc, 1);
  const std::string no_decay = TrainConfig{}.no_decay;
  int decayed = 0;
  for (const auto& p : model.parameters()) {
    CHECK_MESSAGE(decays(p.name, no_decay) == p.decay, p.name);
    decayed += decays(p.name, no_decay);
  }
  CHECK(decayed > 0);
  CHECK_FALSE(decays("embed.weight", "norm,embed"));
  CHECK(decays("embed.weight", ""));
}
