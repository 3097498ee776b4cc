// train/distributed.h — data-parallel training: who this process is in the job, and the collectives it needs.
//
// One process per GPU (or per CPU process). The job comes from the environment the usual launchers set:
// RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT (torchrun, or gdn-train --gpus N, which starts the N
// processes itself); without RANK and WORLD_SIZE, OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK (mpirun), then
// SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (srun) — these two only when MASTER_PORT is set, since an allocation
// sets them for a plain single process too. World size unset or 1: one process, no communicator, nothing changes.
// GDN_DIST_TIMEOUT (seconds, default 120) bounds every wait of the rendezvous. Under torchrun, whose agent serves its
// own store on MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True), the rendezvous uses MASTER_PORT + 1.
//
// Communicator is the whole interface the trainer sees; its transports:
//   * NCCL (GPUs; cuda/nccl_transport.h, built when NCCL is found): collectives are queued on the device's stream,
//     or for average_async on the communicator's own stream forked from it and joined back by wait_averages()
//     (both capturable into the training step's CUDA graph). The NCCL unique id travels over the TCP rendezvous
//     (train/rendezvous.h). A watchdog thread watches the rendezvous connections and NCCL's asynchronous error:
//     a rank that dies, or an NCCL error, ends this process with one line and exit code 2.
//   * TCP (CPU processes): the data itself moves over the rendezvous connections, reduced through rank 0 in rank
//     order (every rank gets the same bits). A rank that dies makes the others' next collective fail with one line.
// NCCL_NVLS_ENABLE is set to 0 (NVLink multicast off) unless the environment sets it already.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace gdn {

struct DistributedEnv {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr;
  int master_port = 0;
  double timeout_s = 120;
  std::string source;  // which variables it came from ("RANK/WORLD_SIZE", "OMPI_COMM_WORLD_*", "SLURM_*")
};

// Reads the job from `lookup` (getenv by default). Malformed or inconsistent values (a rank outside [0, world), a
// port outside 1..65535, a missing MASTER_ADDR/MASTER_PORT when world > 1) are a gdn::UserError of one line.
DistributedEnv distributed_env(const std::function<const char*(const char*)>& lookup = nullptr);

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int world() const { return world_; }
  virtual std::string transport() const = 0;  // "nccl 2.x.y" or "tcp"

  // Replaces each tensor (contiguous, float32 or float64, on this rank's device) by its average over the ranks.
  // NCCL: queued on the device's stream, capturable; TCP: done when it returns.
  virtual void average(const std::vector<Tensor>& tensors) = 0;
  // The same average, started after the work queued so far on this rank's device and left running beside the work
  // queued after it (NCCL: on a stream of its own; a gradient bucket's all-reduce overlaps the rest of the backward).
  // The tensors must stay alive and unwritten until wait_averages(), which makes the device's stream wait for every
  // average started so far. TCP: done when it returns (the CPU backend has nothing to overlap with).
  virtual void average_async(const std::vector<Tensor>& tensors) { average(tensors); }
  virtual void wait_averages() {}
  // Sums host values over the ranks; every rank gets the same result. Waits.
  virtual void sum(std::vector<double>& values) = 0;
  // Whether `flag` is true on any rank (a host collective: every rank must call it at the same point).
  bool any(bool flag);
  // Returns once every rank called it.
  void barrier();
  // Tells the other ranks that this one ends normally; a rank that goes away without it is a failure to them.
  virtual void finish() = 0;

 protected:
  Communicator(int rank, int world) : rank_(rank), world_(world) {}
  int rank_, world_;
};

// Joins the job described by env (world > 1) on `device`: NCCL for a GPU, TCP for the CPU. Blocks until every rank
// joined or the rendezvous timed out (gdn::UserError).
std::unique_ptr<Communicator> connect(const DistributedEnv& env, Device device);

// gdn-train --gpus N: starts N copies of this program (argv without --gpus) on this machine with RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT, forwards SIGINT/SIGTERM/SIGHUP to them, and returns the
// first non-zero exit code among them (0 when all succeeded). Ranks left running 15 s after one failed are killed.
// The ranks it starts see GDN_LOCAL_LAUNCH=1 (launched_locally()): a rank that only lost a peer (PeerLost, or the
// NCCL watchdog seeing a rank end) then exits with code 2 without a line of its own, because the cause is already on
// the terminal once: a rank that failed printed its own error, and the launcher names a rank killed by a signal.
int launch_local_ranks(int n, const std::vector<std::string>& argv);
bool launched_locally();

}  // namespace gdn
