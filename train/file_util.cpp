// train/file_util.cpp — see file_util.h.
//
// Plain POSIX calls (open/write/fsync/rename) rather than iostreams: every step has an errno we can report, and
// write() on a raw fd has no user-space buffer, so there is nothing to fflush before the fsync.
#include "train/file_util.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "core/check.h"

namespace gdn {

namespace {

std::string directory_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Writes all of `bytes` to fd, retrying short writes and EINTR. Returns 0 or the errno of the failure.
int write_all(int fd, const std::string& bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  GDN_USER_CHECK(!path.empty(), "cannot write a file with an empty path");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());

  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    int err = errno;
    throw UserError("cannot write " + path + ": " + std::strerror(err));
  }
  // Every failure from here on removes the temp file; the old file at `path` is never touched until the rename.
  auto fail = [&](const char* step, int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw UserError("cannot write " + path + " (" + step + "): " + std::strerror(err));
  };
  if (int err = write_all(fd, bytes)) fail("write", err);
  if (::fsync(fd) != 0) fail("fsync", errno);
  int close_result = ::close(fd);
  fd = -1;
  if (close_result != 0) fail("close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename", errno);

  // Make the rename durable. Some file systems cannot fsync a directory (EINVAL); the data is in place either way.
  int dir_fd = ::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    int sync_result = ::fsync(dir_fd);
    int err = errno;
    ::close(dir_fd);
    if (sync_result != 0 && err != EINVAL) {
      throw UserError("cannot write " + path + " (fsync of its directory): " + std::strerror(err));
    }
  }
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    throw UserError("cannot read " + path + ": " + std::strerror(err));
  }
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      throw UserError("cannot read " + path + ": " + std::strerror(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

void ensure_directory(const std::string& path) {
  GDN_USER_CHECK(!path.empty(), "cannot create a directory with an empty path");
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) throw UserError("cannot create directory " + path + ": " + ec.message());
  GDN_USER_CHECK(std::filesystem::is_directory(path, ec),
                 "cannot create directory {}: it exists and is not a directory", path);
}

DirectoryLock::DirectoryLock(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    int err = errno;
    throw UserError("cannot open " + path + ": " + std::strerror(err));
  }
  int rc;
  do rc = ::flock(fd_, LOCK_EX | LOCK_NB);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    std::string holder;
    char buf[32] = {};
    ssize_t n = ::pread(fd_, buf, sizeof(buf) - 1, 0);
    if (n > 0) holder = std::string(buf, static_cast<size_t>(n));
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw UserError(fmt::format("{} is in use by another run (pid {}): wait for it to end or choose another --out",
                                  dir, holder.empty() ? std::string("unknown") : holder));
    throw UserError("cannot lock " + path + ": " + std::strerror(err));
  }
  // Ours now: record who holds it. A failure here only loses the pid in another run's message.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    [[maybe_unused]] ssize_t written = ::pwrite(fd_, pid.data(), pid.size(), 0);
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ < 0) return;
  // Forget our pid while still holding the lock, then release it by closing. The file stays: removing it would race
  // with a process that opened it and is about to lock it.
  [[maybe_unused]] int truncated = ::ftruncate(fd_, 0);
  ::close(fd_);
}

}  // namespace gdn
