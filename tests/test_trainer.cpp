// tests/test_trainer.cpp — the training loop end to end on a tiny corpus: a resumed run reproduces the
// uninterrupted run bit for bit, checkpoints are complete and refuse another config, bad corpora fail clearly, and
// the output folder is safe: nothing of an earlier run is lost to a bad input, a concurrent run, a stray directory
// or a diverging run, and no checkpoint ever holds NaN/inf.
#include <filesystem>
#include <fstream>
#include <set>

#include "models/language_model.h"
#include "tests/test_helpers.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/file_util.h"
#include "train/safetensors.h"
#include "train/tokenizer.h"
#include "train/trainer.h"

#include <unistd.h>

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
  c.log_every = 3;
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
  // Exact, not approximate: same weights, moments, step count, data order, hence the same floats.
  for (int i = 0; i < 3; ++i) CHECK(first.train_losses[i] == full.train_losses[i]);
  for (int i = 0; i < 5; ++i) CHECK(second.train_losses[i] == full.train_losses[i + 3]);
  REQUIRE(second.final_val_loss.has_value());
  CHECK(*second.final_val_loss == *full.final_val_loss);
  CHECK(*second.final_train_loss == *full.final_train_loss);
  // The histories (log_every = 3: points at 3, 6 and the last step 8) and the final weights are identical too.
  auto results = [](const fs::path& dir) {
    return nlohmann::json::parse(read_file((dir / "training_results.json").string()));
  };
  nlohmann::json a = results(root / "full"), b = results(root / "split");
  CHECK(a["train_history"].size() == 3);
  CHECK(a["train_history"] == b["train_history"]);
  CHECK(a["val_history"] == b["val_history"]);
  auto last_weights = [](const fs::path& dir) {
    return read_file((fs::path(*find_checkpoint((dir / "checkpoints").string(), "LAST")) / "model.safetensors").string());
  };
  CHECK(last_weights(root / "full") == last_weights(root / "split"));
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

TEST_CASE("trainer: the ungated DeltaNet trains, resumes exactly, and its checkpoint holds no gate tensors") {
  fs::path root = temp_dir("ungated");
  fs::path corpus = make_corpus(root);
  TrainConfig cfg = tiny(corpus, root / "full");
  cfg.model.decay_gate = false;
  cfg.model.output_gate = false;
  TrainSummary full = train(cfg, quiet());
  REQUIRE(full.train_losses.size() == 8);
  CHECK(full.train_losses.back() < full.train_losses.front());

  TrainConfig split = cfg;
  split.out_dir = (root / "split").string();
  TrainOptions stop = quiet();
  stop.stop_after = 5;
  train(split, stop);
  TrainOptions resume = quiet();
  resume.resume = true;
  TrainSummary second = train(split, resume);
  REQUIRE(second.train_losses.size() == 3);
  for (int i = 0; i < 3; ++i) CHECK(second.train_losses[i] == full.train_losses[i + 5]);

  const std::string last = *find_checkpoint((root / "full" / "checkpoints").string(), "LAST");
  SafetensorsFile weights = load_safetensors((fs::path(last) / "model.safetensors").string());
  std::set<std::string> attn;
  for (const auto& [name, t] : weights.tensors)
    if (name.rfind("layers.0.attn.", 0) == 0) attn.insert(name.substr(14));
  CHECK(attn == std::set<std::string>{"in_proj_qkv.weight", "in_proj_b.weight", "conv1d.weight", "norm.weight",
                                      "out_proj.weight"});
  ModelConfig mc = read_checkpoint_model_config(last);
  CHECK_FALSE(mc.decay_gate);
  CHECK_FALSE(mc.output_gate);
  GatedDeltaNetLM gated(tiny(corpus, root / "x").model, 1);
  CHECK_THROWS_WITH_AS(load_checkpoint(last, gated, nullptr), doctest::Contains("decay_gate"), UserError);
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

namespace {
// Every file under dir (path and FNV-1a of its bytes; the lock file and the token cache aside), to show that nothing
// of a run changed.
std::string snapshot(const fs::path& dir) {
  std::vector<std::string> parts;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != ".lock" && fs::relative(e.path(), dir).begin()->string() != "cache")
      parts.push_back(fs::relative(e.path(), dir).string() + ":" +
                      std::to_string(fnv1a_64(read_file(e.path().string()).data(), fs::file_size(e.path()))));
  std::sort(parts.begin(), parts.end());
  return fmt::format("{}", fmt::join(parts, "\n"));
}

std::string user_error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TrainOptions with(bool resume, bool overwrite) {
  TrainOptions o = quiet();
  o.resume = resume;
  o.overwrite = overwrite;
  return o;
}
}  // namespace

TEST_CASE("trainer: --overwrite removes the earlier run only after the new input checked out") {
  fs::path root = temp_dir("overwrite");
  fs::path corpus = make_corpus(root);
  TrainConfig cfg = tiny(corpus, root / "run");
  train(cfg, quiet());
  const std::string before = snapshot(root / "run" / "checkpoints") + snapshot(root / "run");
  // A typo in --data, a window longer than the corpus, a binary corpus: each refused, the finished run intact.
  TrainConfig typo = cfg;
  typo.data = (root / "corpsu").string();
  CHECK(user_error_of([&] { train(typo, with(false, true)); }).find("corpus not found") != std::string::npos);
  TrainConfig long_window = cfg;
  long_window.seq_len = 100000;
  CHECK(user_error_of([&] { train(long_window, with(false, true)); }).find("too short") != std::string::npos);
  write(root / "binary.bin", std::string("\x7f" "ELF\0\0\0", 7));
  TrainConfig binary = cfg;
  binary.data = (root / "binary.bin").string();
  CHECK(user_error_of([&] { train(binary, with(false, true)); }).find("not UTF-8") != std::string::npos);
  CHECK(snapshot(root / "run" / "checkpoints") + snapshot(root / "run") == before);
  // --resume with --overwrite contradict each other.
  CHECK(user_error_of([&] { train(cfg, with(true, true)); }).find("contradict") != std::string::npos);
  // A valid --overwrite does start over.
  TrainConfig again = cfg;
  again.steps = 2;
  again.warmup_steps = 0;
  train(again, with(false, true));
  CHECK(find_checkpoint((root / "run" / "checkpoints").string(), "LAST")->find("step-000002") != std::string::npos);
  CHECK_FALSE(fs::exists(root / "run" / "checkpoints" / "step-000008"));
}

TEST_CASE("trainer: folders the program did not write are never deleted") {
  fs::path root = temp_dir("stray");
  fs::path corpus = make_corpus(root);
  TrainConfig cfg = tiny(corpus, root / "run");
  // checkpoints/ holds step-* folders but no LAST: a plain run refuses the folder instead of pruning them.
  fs::create_directories(root / "run" / "checkpoints" / "step-000004");
  write(root / "run" / "checkpoints" / "step-000004" / "notes.txt", "mine");
  CHECK(user_error_of([&] { train(cfg, quiet()); }).find("step-000004") != std::string::npos);
  CHECK(fs::exists(root / "run" / "checkpoints" / "step-000004" / "notes.txt"));
  // A resumed run prunes only the checkpoints its pointers released, never a folder no pointer named.
  fs::remove_all(root / "run");
  TrainOptions stop = quiet();
  stop.stop_after = 2;
  train(cfg, stop);
  fs::create_directories(root / "run" / "checkpoints" / "step-000099");
  write(root / "run" / "checkpoints" / "step-000099" / "notes.txt", "mine");
  train(cfg, with(true, false));
  CHECK(fs::exists(root / "run" / "checkpoints" / "step-000099" / "notes.txt"));
  CHECK_FALSE(fs::exists(root / "run" / "checkpoints" / "step-000002"));  // released by LAST: pruned
}

TEST_CASE("trainer: a second run on the same output folder is refused, naming the holder") {
  fs::path root = temp_dir("lock");
  fs::path corpus = make_corpus(root);
  TrainConfig cfg = tiny(corpus, root / "run");
  fs::create_directories(root / "run");
  {
    DirectoryLock held((root / "run").string());
    const std::string msg = user_error_of([&] { train(cfg, quiet()); });
    CHECK(msg.find("in use by another run (pid " + std::to_string(::getpid()) + ")") != std::string::npos);
    CHECK_FALSE(fs::exists(root / "run" / "checkpoints"));
  }
  CHECK_NOTHROW(train(cfg, quiet()));  // released with its holder
}

TEST_CASE("trainer: a diverging run stops before the optimizer step and never writes a non-finite checkpoint") {
  fs::path root = temp_dir("diverge");
  fs::path corpus = make_corpus(root);
  // lr 1e3 blows the tiny model up after some finite checkpoints, 1e30 at the first step.
  for (double lr : {1e3, 1e30}) {
    TrainConfig cfg = tiny(corpus, root / fmt::format("lr{}", lr));
    cfg.lr = lr;
    cfg.warmup_steps = 0;
    cfg.grad_clip = 0;
    cfg.checkpoint_every = 1;
    cfg.eval_every = 1;
    const std::string msg = user_error_of([&] { train(cfg, quiet()); });
    INFO("lr ", lr, ": ", msg);
    const std::string ckroot = (fs::path(cfg.out_dir) / "checkpoints").string();
    // Every checkpoint on disk is finite; the one the message names exists and is LAST.
    if (fs::exists(ckroot)) {
      for (const auto& e : fs::directory_iterator(ckroot)) {
        if (!e.is_directory()) continue;
        for (const char* file : {"model.safetensors", "optimizer.safetensors"})
          CHECK_MESSAGE(describe_non_finite(load_safetensors((e.path() / file).string()).tensors) == "", e.path());
      }
    }
    REQUIRE(!msg.empty());
    CHECK(msg.find("stopping; the last good checkpoint is") != std::string::npos);
    if (auto last = find_checkpoint(ckroot, "LAST")) CHECK(msg.find(*last) != std::string::npos);
    else CHECK(msg.find("(none yet)") != std::string::npos);
  }
}

TEST_CASE("trainer: a checkpoint holding NaN or inf is refused on load and on resume") {
  fs::path root = temp_dir("nan_ckpt");
  fs::path corpus = make_corpus(root);
  TrainConfig cfg = tiny(corpus, root / "run");
  TrainOptions stop = quiet();
  stop.stop_after = 4;
  train(cfg, stop);
  const std::string last = *find_checkpoint((root / "run" / "checkpoints").string(), "LAST");
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    const std::string path = (fs::path(last) / file).string();
    const std::string original = read_file(path);
    SafetensorsFile f = load_safetensors(path);
    Tensor& t = f.tensors.back().second;
    std::vector<double> v = t.to_double_vector();
    v[v.size() / 2] = std::nan("");
    t = Tensor::from_vector(v, t.shape(), t.dtype());
    save_safetensors(path, f.tensors, f.metadata);
    const std::string msg = user_error_of([&] { train(cfg, with(true, false)); });
    CHECK(msg.find("is corrupt: tensor '" + f.tensors.back().first + "' holds nan") != std::string::npos);
    if (std::string(file) == "model.safetensors") {
      GatedDeltaNetLM model(read_checkpoint_model_config(last), 1);
      CHECK_THROWS_WITH_AS(load_checkpoint(last, model, nullptr), doctest::Contains("holds nan"), UserError);
    }
    write_file_atomic(path, original);
  }
  CHECK_NOTHROW(train(cfg, with(true, false)));
}

TEST_CASE("trainer: resume takes the run's config from its checkpoint and refuses what cannot change") {
  fs::path root = temp_dir("resume_cfg");
  fs::path corpus = make_corpus(root);
  TrainConfig cfg = tiny(corpus, root / "run");
  TrainOptions stop = quiet();
  stop.stop_after = 2;  // before the first evaluation (eval_every 4)
  TrainSummary first = train(cfg, stop);
  // Metrics never measured are absent, not 0.
  CHECK_FALSE(first.final_val_loss.has_value());
  nlohmann::json r = nlohmann::json::parse(read_file((root / "run" / "training_results.json").string()));
  CHECK(r["final_val"]["loss"].is_null());
  CHECK(r["best_val_loss"].is_null());
  CHECK(r["final_train_loss"].is_number());
  CHECK(r["steady_tokens_per_second"].is_null());  // 2 steps: no steady state
  CHECK(r["tokens_per_second"].get<double>() > 0);

  // Like the README's `gdn-train --out DIR --resume`: the defaults (another model) plus out_dir.
  TrainConfig asked;
  asked.out_dir = cfg.out_dir;
  asked.data = cfg.data;
  TrainConfig resumed = resume_config(asked, {"out_dir", "data"});
  CHECK(resumed.model.d_model == 16);
  CHECK(resumed.seq_len == 16);
  CHECK(resumed.steps == 8);  // not given: the checkpoint's
  CHECK(resume_config(asked, {"steps"}).steps == asked.steps);  // given and resumable: taken
  // An explicit change of a non-resumable key is refused, naming it.
  asked.lr = 1e-2;
  CHECK(user_error_of([&] { resume_config(asked, {"lr"}); }).find("'lr' cannot change") != std::string::npos);
  asked.model.d_model = 64;
  CHECK(user_error_of([&] { resume_config(asked, {"d_model"}); }).find("'d_model' cannot change") !=
        std::string::npos);
  // train() itself resumes with the checkpoint's config whatever it is given.
  TrainConfig other = asked;
  other.steps = 4;
  other.warmup_steps = 0;
  TrainSummary second = train(other, with(true, false));
  CHECK(second.start_step == 2);
  CHECK(second.end_step == 4);

  // Nothing left to do: refused, and the results are not rewritten.
  const std::string results_before = read_file((root / "run" / "training_results.json").string());
  CHECK(user_error_of([&] { train(other, with(true, false)); }).find("nothing left to do") != std::string::npos);
  CHECK(read_file((root / "run" / "training_results.json").string()) == results_before);

  // Another corpus under the same path: refused instead of continuing on other data.
  fs::path changed = root / "changed";
  fs::copy(corpus, changed, fs::copy_options::recursive);
  write(changed / "doc00.txt", "the nation is strong and the union will build a state.\n");
  TrainConfig moved = other;
  moved.data = changed.string();
  moved.steps = 6;
  CHECK(user_error_of([&] { train(moved, with(true, false)); }).find("another corpus") != std::string::npos);
}

TEST_CASE("trainer: inputs that would misuse the output folder are refused") {
  fs::path root = temp_dir("misuse");
  fs::path corpus = make_corpus(root);
  // --out inside --data: the next run would train on its own checkpoints.
  TrainConfig inside = tiny(corpus, corpus / "results");
  CHECK(user_error_of([&] { train(inside, quiet()); }).find("inside the corpus folder") != std::string::npos);
  CHECK_FALSE(fs::exists(corpus / "results"));
  // A tokenizer.json of another size is not silently reused under a wrong message.
  TrainConfig cfg = tiny(corpus, root / "run");
  fs::create_directories(root / "run");
  BpeTokenizer(std::vector<BpeTokenizer::Merge>{{'t', 'h'}, {256, 'e'}}).save((root / "run" / "tokenizer.json").string());
  const std::string msg = user_error_of([&] { train(cfg, quiet()); });
  CHECK(msg.find("holds a tokenizer of 259 tokens but vocab_size is 300") != std::string::npos);
  cfg.model.vocab_size = 259;
  CHECK_NOTHROW(train(cfg, quiet()));
}
