// train/file_util.h — whole-file reads and crash-safe whole-file writes, for checkpoints, results and caches.
//
// write_file_atomic never leaves a half-written file at `path`: it writes `path.tmp.<pid>` in the same directory
// (so the rename cannot cross file systems), flushes and fsyncs it, renames it over `path` (atomic on POSIX), then
// fsyncs the directory so the rename itself survives a power cut. On any failure the temp file is removed, the old
// file at `path` (if any) is untouched, and a gdn::UserError names the path and the system's reason (strerror).
// The <pid> suffix keeps two processes writing the same target from clobbering each other's temp file.
//
// DirectoryLock keeps two processes from writing one output folder at once: an exclusive flock(2) on DIR/.lock,
// held as long as the object lives (the kernel drops it when the process dies, even by SIGKILL, so a stale lock
// file never blocks a later run). The holder writes its pid into the file so the refusal can say who holds it.
//
// Reference: the classic "write temp, fsync, rename, fsync dir" recipe (e.g. LWN, "Ensuring data reaches disk").
#pragma once

#include <string>

namespace gdn {

// Replaces the file at `path` with `bytes`, atomically. Throws gdn::UserError on failure.
void write_file_atomic(const std::string& path, const std::string& bytes);

// The whole file as bytes. Throws gdn::UserError("cannot read PATH: reason") when it cannot be opened or read.
std::string read_file(const std::string& path);

// mkdir -p: creates `path` and any missing parents; fine if it already exists as a directory.
// Throws gdn::UserError when it cannot be created or exists as something other than a directory.
void ensure_directory(const std::string& path);

class DirectoryLock {
 public:
  // Takes the lock on `dir` (which must exist) without waiting. Held by anyone else (another process, or another
  // DirectoryLock of this process): gdn::UserError "DIR is in use by another run (pid N): ...".
  explicit DirectoryLock(const std::string& dir);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace gdn
