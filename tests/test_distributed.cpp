// tests/test_distributed.cpp — data parallel without GPUs: the environment, the sampler's sharding, the gradient
// buckets (against a recording transport), the TCP rendezvous and transport (two ranks as two threads of this
// process), and its failures (port in use, nobody at the master, a rank that goes away). tests/distributed_cpu.sh
// trains with two real processes.
#include <doctest/doctest.h>

#include <map>
#include <thread>

#include "core/check.h"
#include "ops/ops.h"
#include "tests/test_helpers.h"
#include "train/corpus.h"
#include "autograd/engine.h"
#include "models/language_model.h"
#include "train/distributed.h"
#include "train/grad_buckets.h"
#include "train/rendezvous.h"

using namespace gdn;

namespace {

std::function<const char*(const char*)> env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

// A transport of one rank that records what it was asked to average, and when: "average" halves the tensors (so a
// gradient averaged twice, or never, shows), and `leaves_seen` tells how far the backward was at each call.
class RecordingComm final : public Communicator {
 public:
  RecordingComm() : Communicator(0, 2) {}
  std::string transport() const override { return "recording"; }
  void average(const std::vector<Tensor>& tensors) override {
    std::vector<const TensorImpl*> call;
    for (const Tensor& t : tensors) {
      NoGradGuard no_grad;
      const Tensor h = t * 0.5;
      copy_bytes(t.raw_data(), t.device(), h.raw_data(), h.device(), static_cast<size_t>(t.numel()) * element_size(t.dtype()));
      call.push_back(&t.impl());
    }
    calls.push_back(call);
    leaves_at_call.push_back(leaves_seen);
  }
  void wait_averages() override { ++waits; }
  void sum(std::vector<double>&) override {}
  void finish() override {}

  std::vector<std::vector<const TensorImpl*>> calls;
  std::vector<size_t> leaves_at_call;
  size_t leaves_seen = 0, waits = 0;
};

ModelConfig bucket_model() {
  ModelConfig c;
  c.vocab_size = 50;
  c.d_model = 16;
  c.n_layers = 3;
  c.n_k_heads = 2;
  c.n_v_heads = 2;
  c.head_k_dim = 8;
  c.head_v_dim = 8;
  c.ffn_dim = 32;
  return c;
}

}  // namespace

TEST_CASE("distributed: gradient buckets start in order during the backward, each gradient averaged once") {
  const ModelConfig cfg = bucket_model();
  Generator g(5);
  std::vector<int64_t> ids(2 * 12), targets(2 * 12);
  for (auto& x : ids) x = static_cast<int64_t>(g.below(cfg.vocab_size));
  for (auto& x : targets) x = static_cast<int64_t>(g.below(cfg.vocab_size));
  const Tensor in = Tensor::from_int64(ids, {2, 12}), tg = Tensor::from_int64(targets, {2, 12});

  // The reference: the same model's gradients from a plain backward.
  GatedDeltaNetLM ref(cfg, 3);
  std::vector<Tensor> ref_params;
  for (const auto& p : ref.parameters()) ref_params.push_back(p.value);
  backward(ref.loss(in, tg).loss);

  for (size_t bucket_bytes : {size_t{0}, size_t{4096}, size_t{1} << 30}) {
    CAPTURE(bucket_bytes);
    GatedDeltaNetLM model(cfg, 3);
    std::vector<Tensor> params;
    for (const auto& p : model.parameters()) params.push_back(p.value);
    RecordingComm comm;
    GradBuckets buckets(params, comm, bucket_bytes);
    // Buckets cover the parameters once, last parameter first, and stay under the size unless one tensor is larger.
    std::vector<size_t> order;
    for (size_t b = 0; b < buckets.buckets(); ++b) {
      size_t bytes = 0;
      for (size_t i : buckets.bucket(b)) {
        order.push_back(i);
        bytes += static_cast<size_t>(params[i].numel()) * sizeof(float);
      }
      if (bucket_bytes > 0) CHECK((bytes <= bucket_bytes || buckets.bucket(b).size() == 1));
    }
    REQUIRE(order.size() == params.size());
    for (size_t k = 0; k < order.size(); ++k) CHECK(order[k] == params.size() - 1 - k);
    if (bucket_bytes == 0 || bucket_bytes == (size_t{1} << 30)) CHECK(buckets.buckets() == 1);
    if (bucket_bytes == 4096) CHECK(buckets.buckets() > 3);

    LossOutput out = model.loss(in, tg);
    buckets.begin();
    backward({out.loss}, {}, false, [&](const TensorImpl& leaf) {
      ++comm.leaves_seen;
      buckets.leaf_ready(leaf);
    });
    const size_t leaves_total = comm.leaves_seen;
    buckets.finish(out.ce);
    // Every parameter reached the loss here, so every bucket started from the backward, in order, and the loss came
    // last; with several buckets the first one started before the backward had finished its leaves.
    CHECK(buckets.started_in_backward() == buckets.buckets());
    REQUIRE(comm.calls.size() == buckets.buckets() + 1);
    for (size_t b = 0; b < buckets.buckets(); ++b) {
      REQUIRE(comm.calls[b].size() == buckets.bucket(b).size());
      for (size_t k = 0; k < comm.calls[b].size(); ++k)
        CHECK(comm.calls[b][k] == &params[buckets.bucket(b)[k]].grad().impl());
    }
    CHECK(comm.calls.back() == std::vector<const TensorImpl*>{&out.ce.impl()});
    if (buckets.buckets() > 3) CHECK(comm.leaves_at_call.front() < leaves_total);
    CHECK(comm.waits == 1);
    // Each gradient halved exactly once.
    for (size_t i = 0; i < params.size(); ++i)
      CHECK(test::max_abs_diff(params[i].grad() * 2.0, ref_params[i].grad()) < 1e-6);
  }
}

TEST_CASE("distributed: the job comes from torchrun's, mpirun's or srun's variables, and bad values are refused") {
  CHECK(distributed_env(env_of({})).world == 1);
  CHECK(distributed_env(env_of({{"WORLD_SIZE", "1"}})).world == 1);
  // An allocation's SLURM / Open MPI variables alone do not make a job: MASTER_PORT must be set too.
  CHECK(distributed_env(env_of({{"SLURM_NTASKS", "4"}, {"SLURM_PROCID", "2"}})).world == 1);
  const DistributedEnv t = distributed_env(env_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"},
                                                   {"MASTER_ADDR", "node0"}, {"MASTER_PORT", "29500"}}));
  CHECK(t.rank == 1);
  CHECK(t.world == 2);
  CHECK(t.local_rank == 1);
  CHECK(t.master_addr == "node0");
  CHECK(t.master_port == 29500);
  const DistributedEnv m = distributed_env(env_of({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                                   {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"MASTER_ADDR", "a"},
                                                   {"MASTER_PORT", "1234"}}));
  CHECK((m.rank == 3 && m.world == 4 && m.local_rank == 1));
  const DistributedEnv s = distributed_env(env_of({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                                                   {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1234"}}));
  CHECK((s.rank == 5 && s.world == 8 && s.local_rank == 1));
  const std::map<std::string, std::string> ok = {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"},
                                                 {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29500"}};
  auto with = [&](const std::string& k, const std::string& v) {
    auto e = ok;
    e[k] = v;
    return test::user_error_of([&] { distributed_env(env_of(e)); });
  };
  CHECK(with("WORLD_SIZE", "two").find("WORLD_SIZE='two' is not an integer") != std::string::npos);
  CHECK(with("RANK", "2").find("RANK=2 is not below WORLD_SIZE=2") != std::string::npos);
  CHECK(with("RANK", "-1").find("RANK='-1'") != std::string::npos);
  CHECK(with("MASTER_PORT", "70000").find("MASTER_PORT='70000'") != std::string::npos);
  CHECK(with("MASTER_ADDR", "").find("needs MASTER_ADDR and MASTER_PORT") != std::string::npos);
  CHECK(with("LOCAL_RANK", "").find("LOCAL_RANK is not set") != std::string::npos);
}

TEST_CASE("distributed: the ranks' shards of a step are the single process's batch of world x batch") {
  std::vector<int32_t> tokens(5000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7919) % 1000);
  const int64_t T = 16, B = 3, world = 3;
  WindowSampler one(&tokens, T, 42);
  std::vector<WindowSampler> ranks(world, WindowSampler(&tokens, T, 42));
  // Enough steps to cross several epochs (5000 / 16 = 312 windows, 9 per step).
  for (int step = 0; step < 80; ++step) {
    std::vector<int64_t> in(B * world * T), tg(B * world * T);
    one.next_batch(B * world, in.data(), tg.data());
    for (int r = 0; r < world; ++r) {
      std::vector<int64_t> rin(B * T), rtg(B * T);
      ranks[r].next_batch(B, rin.data(), rtg.data(), r, static_cast<int>(world));
      CHECK(std::equal(rin.begin(), rin.end(), in.begin() + r * B * T));
      CHECK(std::equal(rtg.begin(), rtg.end(), tg.begin() + r * B * T));
      CHECK(ranks[r].state().cursor == one.state().cursor);
      CHECK(ranks[r].state().epoch == one.state().epoch);
    }
  }
}

TEST_CASE("distributed: two ranks meet over TCP and average tensors and sum values") {
  const int port = free_local_port();
  DistributedEnv env;
  env.world = 2, env.master_addr = "127.0.0.1", env.master_port = port, env.timeout_s = 20;
  std::vector<Tensor> result(2);
  std::vector<std::vector<double>> sums(2);
  std::vector<std::string> errors(2);
  auto rank_main = [&](int r) {
    try {
      DistributedEnv e = env;
      e.rank = r;
      std::unique_ptr<Communicator> comm = connect(e, kCPU);
      CHECK(comm->transport() == "tcp");
      Tensor a = Tensor::from_vector({1.0 + r, 10.0 * (r + 1), -3.0}, {3});
      Tensor b = Tensor::from_vector({0.5 * r}, {1}, kFloat64);
      comm->average({a, b});
      result[r] = a;
      CHECK(b.item() == doctest::Approx(0.25));
      std::vector<double> v{static_cast<double>(r), 1.0};
      comm->sum(v);
      sums[r] = v;
      CHECK(comm->any(r == 1));
      CHECK(!comm->any(false));
      comm->barrier();
      comm->finish();
    } catch (const std::exception& e) {
      errors[r] = e.what();
    }
  };
  std::thread t0(rank_main, 0), t1(rank_main, 1);
  t0.join();
  t1.join();
  CHECK(errors[0] == "");
  CHECK(errors[1] == "");
  for (int r = 0; r < 2; ++r) {
    REQUIRE(result[r].defined());
    CHECK(result[r].to_double_vector() == std::vector<double>{1.5, 15.0, -3.0});
    CHECK(sums[r] == std::vector<double>{1.0, 2.0});
  }
}

TEST_CASE("distributed: a port in use, nobody at the master and a rank that goes away are one clear error") {
  const int port = free_local_port();
  DistributedEnv env;
  env.world = 2, env.master_addr = "127.0.0.1", env.master_port = port, env.timeout_s = 1;
  // Nobody listens: rank 1 gives up after the timeout.
  env.rank = 1;
  CHECK(test::user_error_of([&] { connect(env, kCPU); }).find("could not reach rank 0 at 127.0.0.1:" + std::to_string(port) +
                                                   " within 1 s") != std::string::npos);
  // Rank 0 alone: it names the rank that never came.
  env.rank = 0;
  CHECK(test::user_error_of([&] { connect(env, kCPU); }).find("timed out after 1 s on port " + std::to_string(port) +
                                                   " waiting for rank 1 of 2") != std::string::npos);
  // An unresolvable master.
  env.rank = 1;
  env.master_addr = "no-such-host.invalid";
  CHECK(test::user_error_of([&] { connect(env, kCPU); }).find("cannot resolve MASTER_ADDR 'no-such-host.invalid'") !=
        std::string::npos);
  // The port is taken by a rendezvous already in progress.
  env.master_addr = "127.0.0.1";
  env.timeout_s = 5;
  std::string first_error, second_error;
  std::thread holder([&] {
    DistributedEnv e = env;
    e.rank = 0;
    first_error = test::user_error_of([&] { connect(e, kCPU); });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  {
    DistributedEnv e = env;
    e.rank = 0;
    second_error = test::user_error_of([&] { connect(e, kCPU); });
  }
  // Rank 1 joins the first rank 0, then goes away: rank 0's next collective fails naming it.
  std::string gone_error;
  std::thread peer([&] {
    DistributedEnv e = env;
    e.rank = 1;
    std::unique_ptr<Communicator> c = connect(e, kCPU);
  });
  peer.join();
  holder.join();
  CHECK(second_error.find("MASTER_PORT " + std::to_string(port) + " is in use") != std::string::npos);
  CHECK(first_error == "");
  // A rank that left: the survivor's collective fails naming it (a fresh pair, rank 1 leaving at once).
  const int port2 = free_local_port();
  env.master_port = port2;
  std::thread leaver([&] {
    DistributedEnv e = env;
    e.rank = 1;
    std::unique_ptr<Communicator> c = connect(e, kCPU);
  });
  env.rank = 0;
  std::unique_ptr<Communicator> survivor = connect(env, kCPU);
  leaver.join();
  std::vector<double> v{1.0};
  CHECK(test::user_error_of([&] { survivor->sum(v); }).find("rank 1 ended or lost its connection") != std::string::npos);
}
