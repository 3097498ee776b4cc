// autograd/grad_mode.h — a thread-local switch for recording the tape.
//
// While a NoGradGuard is alive, ops record nothing (inference, optimizer updates, gradcheck perturbations).
// The engine runs every backward function under one, so backward passes never build a second graph.
#pragma once

namespace gdn {

class GradMode {
 public:
  static bool enabled();
  static void set_enabled(bool on);
};

class NoGradGuard {
 public:
  NoGradGuard() : prev_(GradMode::enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace gdn
