// train/distributed.cpp — see distributed.h. The environment, the two transports, the watchdog and the --gpus
// launcher. This file and train/device.cpp are the only places above the dispatch layer that know whether CUDA and
// NCCL were compiled in (GDN_WITH_NCCL, set by the gdn_nccl target).
#include "train/distributed.h"

#include <poll.h>
#include <csignal>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "train/rendezvous.h"

#ifndef GDN_WITH_NCCL
#define GDN_WITH_NCCL 0
#endif
#if GDN_WITH_NCCL
#include "cuda/nccl_transport.h"
#endif

namespace gdn {

// ---- the environment ----

namespace {

// A non-negative integer variable, or `fallback` when unset; anything else is a UserError naming it.
long env_int(const std::function<const char*(const char*)>& get, const char* name, long fallback, long lo, long hi) {
  const char* v = get(name);
  if (v == nullptr || *v == 0) return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  GDN_USER_CHECK(errno == 0 && *end == 0 && x >= lo && x <= hi, "environment: {}='{}' is not an integer in [{}, {}]",
                 name, v, lo, hi);
  return x;
}

}  // namespace

DistributedEnv distributed_env(const std::function<const char*(const char*)>& lookup) {
  const std::function<const char*(const char*)> get =
      lookup ? lookup : [](const char* n) -> const char* { return std::getenv(n); };
  const auto set = [&](const char* n) { const char* v = get(n); return v != nullptr && *v != 0; };
  DistributedEnv env;
  const char *rank_var = nullptr, *world_var = nullptr, *local_var = nullptr;
  if (set("WORLD_SIZE") || set("RANK")) {
    rank_var = "RANK", world_var = "WORLD_SIZE", local_var = "LOCAL_RANK", env.source = "RANK/WORLD_SIZE";
  } else if (set("MASTER_PORT") && set("OMPI_COMM_WORLD_SIZE")) {
    rank_var = "OMPI_COMM_WORLD_RANK", world_var = "OMPI_COMM_WORLD_SIZE", local_var = "OMPI_COMM_WORLD_LOCAL_RANK";
    env.source = "OMPI_COMM_WORLD_*";
  } else if (set("MASTER_PORT") && set("SLURM_NTASKS") && set("SLURM_PROCID")) {
    rank_var = "SLURM_PROCID", world_var = "SLURM_NTASKS", local_var = "SLURM_LOCALID", env.source = "SLURM_*";
  } else {
    return env;  // one process
  }
  env.world = static_cast<int>(env_int(get, world_var, 1, 1, 1 << 20));
  env.rank = static_cast<int>(env_int(get, rank_var, 0, 0, 1 << 20));
  env.local_rank = static_cast<int>(env_int(get, local_var, env.world == 1 ? 0 : -1, 0, 1 << 20));
  GDN_USER_CHECK(env.rank < env.world, "environment: {}={} is not below {}={}", rank_var, env.rank, world_var,
                 env.world);
  if (env.world == 1) return env;
  GDN_USER_CHECK(set(rank_var), "environment: {}={} but {} is not set", world_var, env.world, rank_var);
  GDN_USER_CHECK(env.local_rank >= 0, "environment: {}={} but {} is not set", world_var, env.world, local_var);
  GDN_USER_CHECK(set("MASTER_ADDR") && set("MASTER_PORT"),
                 "environment: {}={} needs MASTER_ADDR and MASTER_PORT (the address and port of rank 0)", world_var,
                 env.world);
  env.master_addr = get("MASTER_ADDR");
  env.master_port = static_cast<int>(env_int(get, "MASTER_PORT", 0, 1, 65535));
  // torchrun's agent serves its own store on MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE): ours takes the next port.
  const char* agent_store = get("TORCHELASTIC_USE_AGENT_STORE");
  if (agent_store != nullptr && std::string(agent_store) == "True") {
    GDN_USER_CHECK(env.master_port < 65535, "environment: under torchrun the rendezvous uses MASTER_PORT + 1, and "
                   "MASTER_PORT is 65535");
    env.master_port += 1;
  }
  env.timeout_s = static_cast<double>(env_int(get, "GDN_DIST_TIMEOUT", 120, 1, 86400));
  return env;
}

// ---- the interface ----

bool Communicator::any(bool flag) {
  std::vector<double> v{flag ? 1.0 : 0.0};
  sum(v);
  return v[0] > 0;
}

void Communicator::barrier() {
  std::vector<double> v{0.0};
  sum(v);
}

// ---- TCP transport (CPU processes) ----

namespace {

class TcpCommunicator final : public Communicator {
 public:
  TcpCommunicator(const DistributedEnv& env)
      : Communicator(env.rank, env.world),
        group_(env.rank, env.world, env.master_addr, env.master_port, "tcp", {}, env.timeout_s) {}
  std::string transport() const override { return "tcp"; }

  void average(const std::vector<Tensor>& tensors) override {
    size_t bytes = 0;
    for (const Tensor& t : tensors) {
      GDN_CHECK(t.device().is_cpu() && t.is_contiguous() && (t.dtype() == kFloat32 || t.dtype() == kFloat64),
                "the TCP transport averages contiguous float32/float64 CPU tensors, got {} {}", dtype_name(t.dtype()),
                t.device());
      bytes += static_cast<size_t>(t.numel()) * element_size(t.dtype());
    }
    std::vector<char> mine(bytes);
    size_t at = 0;
    for (const Tensor& t : tensors) {
      const size_t n = static_cast<size_t>(t.numel()) * element_size(t.dtype());
      std::memcpy(mine.data() + at, t.raw_data(), n);
      at += n;
    }
    if (rank_ == 0) {
      std::vector<std::vector<char>> all(static_cast<size_t>(world_));
      all[0] = std::move(mine);
      for (int r = 1; r < world_; ++r) {
        all[r].resize(bytes);
        group_.recv(r, all[r].data(), bytes);
      }
      at = 0;
      for (const Tensor& t : tensors) {
        const size_t n = static_cast<size_t>(t.numel());
        if (t.dtype() == kFloat32)
          reduce<float>(all, at, n, t.raw_data());
        else
          reduce<double>(all, at, n, t.raw_data());
        at += n * element_size(t.dtype());
      }
      mine.resize(bytes);
      at = 0;
      for (const Tensor& t : tensors) {
        const size_t n = static_cast<size_t>(t.numel()) * element_size(t.dtype());
        std::memcpy(mine.data() + at, t.raw_data(), n);
        at += n;
      }
      for (int r = 1; r < world_; ++r) group_.send(r, mine.data(), bytes);
    } else {
      group_.send(0, mine.data(), bytes);
      group_.recv(0, mine.data(), bytes);
      at = 0;
      for (const Tensor& t : tensors) {
        const size_t n = static_cast<size_t>(t.numel()) * element_size(t.dtype());
        std::memcpy(t.raw_data(), mine.data() + at, n);
        at += n;
      }
    }
  }

  void sum(std::vector<double>& values) override {
    const size_t bytes = values.size() * sizeof(double);
    if (rank_ == 0) {
      std::vector<double> other(values.size());
      for (int r = 1; r < world_; ++r) {
        group_.recv(r, other.data(), bytes);
        for (size_t i = 0; i < values.size(); ++i) values[i] += other[i];
      }
      for (int r = 1; r < world_; ++r) group_.send(r, values.data(), bytes);
    } else {
      group_.send(0, values.data(), bytes);
      group_.recv(0, values.data(), bytes);
    }
  }

  void finish() override {}

 private:
  // out[i] = (sum over ranks, in rank order, in double) / world, for the n elements at byte offset `at`.
  template <typename T>
  void reduce(const std::vector<std::vector<char>>& all, size_t at, size_t n, void* out) const {
    T* o = static_cast<T*>(out);
    for (size_t i = 0; i < n; ++i) {
      double s = 0;
      for (const auto& buf : all) s += static_cast<double>(reinterpret_cast<const T*>(buf.data() + at)[i]);
      o[i] = static_cast<T>(s / world_);
    }
  }

  TcpGroup group_;
};

// ---- NCCL transport (GPUs) ----

#if GDN_WITH_NCCL
class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const DistributedEnv& env)
      : Communicator(env.rank, env.world),
        group_(env.rank, env.world, env.master_addr, env.master_port, "nccl",
               env.rank == 0 ? cuda::nccl_unique_id() : std::vector<uint8_t>(), env.timeout_s) {
    GDN_CHECK(pipe(stop_pipe_) == 0, "pipe: {}", std::strerror(errno));
    // Watching starts before NCCL's own init, which would wait forever for a rank that died meanwhile.
    watchdog_ = std::thread([this] { watch(); });
    try {
      nccl_ = std::make_unique<cuda::NcclComm>(group_.payload(), env.rank, env.world);
    } catch (...) {
      stop_watchdog();
      throw;
    }
    nccl_ready_ = true;
  }
  ~NcclCommunicator() override { stop_watchdog(); }
  std::string transport() const override { return "nccl " + cuda::nccl_version(); }

  void average(const std::vector<Tensor>& tensors) override { all_reduce(tensors, false); }
  void average_async(const std::vector<Tensor>& tensors) override { all_reduce(tensors, true); }
  void wait_averages() override { nccl_->join(); }

  void sum(std::vector<double>& values) override { nccl_->sum_host(values.data(), values.size()); }

  void finish() override {
    const char done = 'F';
    for (int r = 0; r < world_; ++r)
      if (r != rank_ && group_.fd(r) >= 0) (void)::send(group_.fd(r), &done, 1, MSG_NOSIGNAL);
  }

 private:
  // One NCCL group per dtype: on the device's stream, or (async) on the communicator's own.
  void all_reduce(const std::vector<Tensor>& tensors, bool async) {
    for (DType dt : {kFloat32, kFloat64}) {
      std::vector<void*> ptrs;
      std::vector<size_t> counts;
      for (const Tensor& t : tensors) {
        GDN_CHECK(t.device().is_cuda() && t.is_contiguous() && (t.dtype() == kFloat32 || t.dtype() == kFloat64),
                  "the NCCL transport averages contiguous float32/float64 GPU tensors");
        if (t.dtype() != dt) continue;
        ptrs.push_back(t.raw_data());
        counts.push_back(static_cast<size_t>(t.numel()));
      }
      if (ptrs.empty()) continue;
      if (async)
        nccl_->all_reduce_async(ptrs.data(), counts.data(), ptrs.size(), dt == kFloat64, true);
      else
        nccl_->all_reduce(ptrs.data(), counts.data(), ptrs.size(), dt == kFloat64, true);
    }
  }

  void stop_watchdog() {
    if (watchdog_.joinable()) {
      const char c = 1;
      (void)!write(stop_pipe_[1], &c, 1);
      watchdog_.join();
      close(stop_pipe_[0]);
      close(stop_pipe_[1]);
    }
  }

  // Ends the process with one line, unless the process stops the watchdog within 2 s (it is ending on its own,
  // for example with the same error as the peer, and says so itself).
  void fail(const std::string& why, bool peer_lost = false) {
    pollfd p{stop_pipe_[0], POLLIN, 0};
    if (poll(&p, 1, 2000) > 0) return;
    if (peer_lost && launched_locally()) std::_Exit(2);  // the launcher or the failed rank reports it
    std::fprintf(stderr, "gdn-train: error: rank %d: %s; ending the job\n", rank_, why.c_str());
    std::fflush(stderr);
    std::_Exit(2);
  }

  // Polls the rendezvous connections (a 'F' byte: that rank finished; end of stream: it died) and NCCL's
  // asynchronous error, until stop_watchdog().
  void watch() {
    std::vector<pollfd> fds{{stop_pipe_[0], POLLIN, 0}};
    std::vector<int> peer{-1};
    for (int r = 0; r < world_; ++r)
      if (r != rank_ && group_.fd(r) >= 0) {
        fds.push_back({group_.fd(r), POLLIN, 0});
        peer.push_back(r);
      }
    for (;;) {
      const int n = poll(fds.data(), fds.size(), 500);
      if (n > 0 && (fds[0].revents & POLLIN)) return;
      for (size_t i = 1; n > 0 && i < fds.size(); ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        char c = 0;
        const ssize_t k = ::recv(fds[i].fd, &c, 1, 0);
        if (k == 1 && c == 'F') {
          fds[i].fd = -1;  // finished normally: its end of stream is expected
        } else {
          fail(fmt::format("rank {} ended without finishing (it died or lost its connection)", peer[i]),
               /*peer_lost=*/true);
          return;
        }
      }
      if (nccl_ready_) {
        const std::string e = nccl_->async_error();
        if (!e.empty()) {
          fail("NCCL error: " + e);
          return;
        }
      }
    }
  }

  TcpGroup group_;
  std::unique_ptr<cuda::NcclComm> nccl_;
  std::atomic<bool> nccl_ready_{false};
  int stop_pipe_[2] = {-1, -1};
  std::thread watchdog_;
};
#endif

}  // namespace

std::unique_ptr<Communicator> connect(const DistributedEnv& env, Device device) {
  GDN_CHECK(env.world > 1, "connect() is for a job of several processes");
  if (!device.is_cuda()) return std::make_unique<TcpCommunicator>(env);
#if GDN_WITH_NCCL
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  return std::make_unique<NcclCommunicator>(env);
#else
  throw UserError(fmt::format("{}: a job of {} GPU processes needs the NCCL transport, and this build has none (NCCL "
                              "was not found at configure time); CPU processes (--device cpu) use TCP",
                              env.source, env.world));
#endif
}

// ---- gdn-train --gpus N ----

namespace {
volatile sig_atomic_t g_forward = 0;
void on_launcher_signal(int sig) { g_forward = sig; }
}  // namespace

bool launched_locally() {
  const char* e = std::getenv("GDN_LOCAL_LAUNCH");
  return e != nullptr && std::string(e) == "1";
}

int launch_local_ranks(int n, const std::vector<std::string>& argv) {
  GDN_USER_CHECK(n >= 1 && n <= 1024, "--gpus {}: give 1 to 1024 processes", n);
  const std::string port = std::to_string(free_local_port());
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, on_launcher_signal);
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    const pid_t pid = fork();
    GDN_USER_CHECK(pid >= 0, "--gpus: fork failed: {}", std::strerror(errno));
    if (pid == 0) {
      setpgid(0, 0);  // a terminal's Ctrl-C reaches the launcher only, which forwards it once
      for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, SIG_DFL);
      const std::string rank = std::to_string(r), world = std::to_string(n);
      setenv("RANK", rank.c_str(), 1);
      setenv("LOCAL_RANK", rank.c_str(), 1);
      setenv("WORLD_SIZE", world.c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", world.c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", port.c_str(), 1);
      setenv("GDN_LOCAL_LAUNCH", "1", 1);
      execv("/proc/self/exe", args.data());
      std::fprintf(stderr, "gdn-train: error: --gpus: cannot start rank %d: %s\n", r, std::strerror(errno));
      std::_Exit(2);
    }
    pids.push_back(pid);
  }
  int result = 0, running = n, forwarded = 0;
  std::vector<bool> alive(static_cast<size_t>(n), true), killed_here(static_cast<size_t>(n), false);
  auto failed_at = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    if (g_forward != 0) {
      const int sig = g_forward;
      g_forward = 0;
      forwarded = sig;
      for (int r = 0; r < n; ++r)
        if (alive[r]) kill(pids[r], sig);
    }
    if (std::chrono::steady_clock::now() - failed_at > std::chrono::seconds(15))
      for (int r = 0; r < n; ++r)
        if (alive[r] && !killed_here[r]) {
          kill(pids[r], SIGKILL);
          killed_here[r] = true;
        }
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    for (int r = 0; r < n; ++r) {
      if (pids[r] != pid || !alive[r]) continue;
      alive[r] = false;
      running--;
      int code = 0;
      if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
      } else if (WIFSIGNALED(status)) {
        code = 128 + WTERMSIG(status);
        if (!killed_here[r] && WTERMSIG(status) != forwarded)  // a signal from elsewhere: name the rank
          std::fprintf(stderr, "gdn-train: error: rank %d was killed by signal %d\n", r, WTERMSIG(status));
      }
      if (code != 0 && result == 0) {
        result = code;
        failed_at = std::chrono::steady_clock::now();
      }
    }
  }
  return result;
}

}  // namespace gdn
