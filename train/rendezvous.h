// train/rendezvous.h — the TCP connections that join the processes of a data-parallel job.
//
// A star around rank 0: rank 0 listens on MASTER_PORT (every interface), every other rank connects to
// MASTER_ADDR:MASTER_PORT, retrying until the timeout, and introduces itself with a hello {magic, rank, world size,
// transport, pid}. Rank 0 checks that every rank in 1..N-1 came exactly once with the same world size and transport,
// then sends each one a reply: a status and a payload (the NCCL unique id for the NCCL transport, nothing for the CPU
// one). Each step waits at most `timeout_s` seconds; a port in use, an unresolvable or unreachable master, a missing
// rank or a mismatched hello is a gdn::UserError of one line. The connections stay open after the rendezvous: the CPU
// transport moves its data over them, and the NCCL transport watches them to learn that a rank died (its kernel
// closes its sockets) or ended normally (it sends one "finished" byte first).
// Sends use MSG_NOSIGNAL: a peer that died makes send() fail with an error, never a SIGPIPE.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/check.h"

namespace gdn {

// A peer that ended or lost its connection while this rank sent to it or waited for it.
struct PeerLost : UserError {
  using UserError::UserError;
};

class TcpGroup {
 public:
  // Joins the job (blocking). transport: a small tag that every rank must agree on ("cpu", "nccl"). payload: rank 0's
  // bytes for every other rank (ignored on the others, which receive it: payload()).
  TcpGroup(int rank, int world, const std::string& master_addr, int master_port, const std::string& transport,
           const std::vector<uint8_t>& payload, double timeout_s);
  ~TcpGroup();
  TcpGroup(const TcpGroup&) = delete;
  TcpGroup& operator=(const TcpGroup&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  const std::vector<uint8_t>& payload() const { return payload_; }

  // The connection to `peer` (rank 0: any other rank; another rank: only 0). -1 when there is none.
  int fd(int peer) const;
  // Whole-buffer send / receive on the connection to `peer`; a closed or failed connection is a gdn::UserError that
  // names the peer ("rank N ended or lost its connection").
  void send(int peer, const void* data, size_t bytes);
  void recv(int peer, void* data, size_t bytes);
  void close_all();

 private:
  int rank_, world_;
  std::vector<int> fds_;  // by peer rank; -1 where there is no connection
  std::vector<uint8_t> payload_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (for gdn-train --gpus).
int free_local_port();

}  // namespace gdn
