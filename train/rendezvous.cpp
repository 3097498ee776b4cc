// train/rendezvous.cpp — see rendezvous.h.
#include "train/rendezvous.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "core/check.h"

namespace gdn {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMagic = 0x47444e52;  // "GDNR"

struct Hello {
  uint32_t magic;
  int32_t rank, world, pid;
  char transport[16];
};

struct Reply {
  uint32_t magic;
  int32_t status;  // 0: joined; otherwise the payload is rank 0's reason, as text
  uint32_t bytes;  // payload size
};

std::string errno_text() { return std::strerror(errno); }

// Milliseconds left until `deadline` (0 when past).
int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

void set_nodelay(int fd) {
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Waits until fd is readable (or closed) before `deadline`; false on timeout.
bool wait_readable(int fd, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int r = poll(&p, 1, ms_left(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

// A listening socket on every interface (IPv6 dual stack, else IPv4).
int listen_on(int port) {
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1, zero = 0;
  if (fd >= 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_any;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
      GDN_USER_CHECK(listen(fd, 1024) == 0, "rendezvous: cannot listen on port {}: {}", port, errno_text());
      return fd;
    }
    const int err = errno;
    close(fd);
    GDN_USER_CHECK(err != EADDRINUSE, "rendezvous: MASTER_PORT {} is in use on this machine (rank 0 listens on it)",
                   port);
  }
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  GDN_USER_CHECK(fd >= 0, "rendezvous: cannot create a socket: {}", errno_text());
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    const int err = errno;
    close(fd);
    GDN_USER_CHECK(err != EADDRINUSE, "rendezvous: MASTER_PORT {} is in use on this machine (rank 0 listens on it)",
                   port);
    throw UserError(fmt::format("rendezvous: cannot listen on port {}: {}", port, std::strerror(err)));
  }
  GDN_USER_CHECK(listen(fd, 1024) == 0, "rendezvous: cannot listen on port {}: {}", port, errno_text());
  return fd;
}

// One non-blocking connect to `ai`, given at most `ms`; the connected socket or -1 (errno set).
int try_connect(const addrinfo* ai, int ms) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) return -1;
  const int flags = fcntl(fd, F_GETFL, 0);
  (void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int err = 0;
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      err = errno;
    } else {
      pollfd p{fd, POLLOUT, 0};
      if (poll(&p, 1, ms) <= 0) {
        err = ETIMEDOUT;
      } else {
        socklen_t len = sizeof(err);
        (void)getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
  }
  if (err != 0) {
    close(fd);
    errno = err;
    return -1;
  }
  (void)fcntl(fd, F_SETFL, flags);
  return fd;
}

void send_bytes(int fd, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw UserError("send failed");
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

// false when the connection closed or failed before `bytes` arrived.
bool recv_bytes(int fd, void* data, size_t bytes) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::recv(fd, p, bytes, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

TcpGroup::TcpGroup(int rank, int world, const std::string& master_addr, int master_port, const std::string& transport,
                   const std::vector<uint8_t>& payload, double timeout_s)
    : rank_(rank), world_(world), fds_(static_cast<size_t>(world), -1) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  Hello mine{kMagic, rank, world, static_cast<int32_t>(getpid()), {}};
  std::strncpy(mine.transport, transport.c_str(), sizeof(mine.transport) - 1);
  try {
    if (rank == 0) {
      const int lfd = listen_on(master_port);
      int joined = 0;
      std::string refusal;
      while (joined < world - 1) {
        if (!wait_readable(lfd, deadline)) {
          std::vector<int> missing;
          for (int r = 1; r < world; ++r)
            if (fds_[r] < 0) missing.push_back(r);
          close(lfd);
          throw UserError(fmt::format("rendezvous: timed out after {} s on port {} waiting for rank{} {} of {}",
                                      timeout_s, master_port, missing.size() > 1 ? "s" : "", fmt::join(missing, ", "),
                                      world));
        }
        const int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        set_nodelay(fd);
        Hello h{};
        if (!wait_readable(fd, deadline) || !recv_bytes(fd, &h, sizeof(h)) || h.magic != kMagic) {
          close(fd);  // not one of ours (a port scan, a stale client): ignore it
          continue;
        }
        h.transport[sizeof(h.transport) - 1] = 0;
        if (h.world != world)
          refusal = fmt::format("rank {} (pid {}) has WORLD_SIZE {}, rank 0 has {}", h.rank, h.pid, h.world, world);
        else if (h.rank < 1 || h.rank >= world || fds_[h.rank] >= 0)
          refusal = fmt::format("rank {} (pid {}) joined twice or is out of range for WORLD_SIZE {}", h.rank, h.pid,
                                world);
        else if (transport != h.transport)
          refusal = fmt::format("rank {} uses the {} transport, rank 0 the {} one (every rank needs the same --device "
                                "type)", h.rank, h.transport, transport);
        if (!refusal.empty()) {
          Reply r{kMagic, 1, static_cast<uint32_t>(refusal.size())};
          try {
            send_bytes(fd, &r, sizeof(r));
            send_bytes(fd, refusal.data(), refusal.size());
          } catch (const UserError&) {
          }
          close(fd);
          close(lfd);
          throw UserError("rendezvous: " + refusal);
        }
        fds_[h.rank] = fd;
        joined++;
      }
      close(lfd);
      payload_ = payload;
      for (int r = 1; r < world; ++r) {
        Reply reply{kMagic, 0, static_cast<uint32_t>(payload.size())};
        send(r, &reply, sizeof(reply));
        if (!payload.empty()) send(r, payload.data(), payload.size());
      }
    } else {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      const std::string port = std::to_string(master_port);
      const int gai = getaddrinfo(master_addr.c_str(), port.c_str(), &hints, &res);
      GDN_USER_CHECK(gai == 0, "rendezvous: cannot resolve MASTER_ADDR '{}': {}", master_addr, gai_strerror(gai));
      int fd = -1;
      std::string last_error = "no address";
      while (fd < 0) {
        for (const addrinfo* ai = res; ai && fd < 0; ai = ai->ai_next) {
          fd = try_connect(ai, std::max(1, std::min(ms_left(deadline), 1000)));
          if (fd < 0) last_error = errno_text();
        }
        if (fd >= 0) break;
        if (ms_left(deadline) == 0) {
          freeaddrinfo(res);
          throw UserError(fmt::format("rendezvous: could not reach rank 0 at {}:{} within {} s ({})", master_addr,
                                      master_port, timeout_s, last_error));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, ms_left(deadline))));
      }
      freeaddrinfo(res);
      set_nodelay(fd);
      fds_[0] = fd;
      send(0, &mine, sizeof(mine));
      Reply reply{};
      GDN_USER_CHECK(wait_readable(fd, deadline), "rendezvous: rank 0 at {}:{} did not complete the rendezvous within "
                     "{} s (are all {} ranks started?)", master_addr, master_port, timeout_s, world);
      recv(0, &reply, sizeof(reply));
      GDN_USER_CHECK(reply.magic == kMagic, "rendezvous: {}:{} is not a gdn-train rank 0", master_addr, master_port);
      payload_.resize(reply.bytes);
      if (reply.bytes > 0) recv(0, payload_.data(), payload_.size());
      if (reply.status != 0)
        throw UserError("rendezvous refused by rank 0: " + std::string(payload_.begin(), payload_.end()));
    }
  } catch (...) {
    close_all();
    throw;
  }
}

TcpGroup::~TcpGroup() { close_all(); }

int TcpGroup::fd(int peer) const { return peer >= 0 && peer < world_ ? fds_[peer] : -1; }

void TcpGroup::send(int peer, const void* data, size_t bytes) {
  const int f = fd(peer);
  GDN_CHECK(f >= 0, "rank {} has no connection to rank {}", rank_, peer);
  try {
    send_bytes(f, data, bytes);
  } catch (const UserError&) {
    throw PeerLost(fmt::format("rank {} ended or lost its connection ({})", peer, errno_text()));
  }
}

void TcpGroup::recv(int peer, void* data, size_t bytes) {
  const int f = fd(peer);
  GDN_CHECK(f >= 0, "rank {} has no connection to rank {}", rank_, peer);
  if (!recv_bytes(f, data, bytes)) throw PeerLost(fmt::format("rank {} ended or lost its connection", peer));
}

void TcpGroup::close_all() {
  for (int& f : fds_)
    if (f >= 0) {
      close(f);
      f = -1;
    }
}

int free_local_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  GDN_USER_CHECK(fd >= 0, "cannot create a socket: {}", errno_text());
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  close(fd);
  GDN_USER_CHECK(ok, "cannot find a free local port: {}", errno_text());
  return ntohs(a.sin_port);
}

}  // namespace gdn
