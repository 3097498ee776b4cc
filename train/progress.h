// train/progress.h — a training progress bar that behaves in a terminal and in a log file.
//
// On a TTY it redraws one line in place with '\r' (at most ~10 times a second, and always for the last step):
//   [#########...........]  450/1000  loss 3.4567  lr 3.00e-04  12345 tok/s  1m23s<1m41s  <extra>
// When the output is not a TTY (CI, pipes, `| tee log`) carriage returns would fill the log with junk, so it prints a
// plain line instead, only when 5% of the run has passed or 10 s have passed since the last line (whichever comes
// first), plus the first and the last update:
//   step 450/1000 (45%)  loss 3.4567  lr 3.00e-04  12345 tok/s  elapsed 1m23s  eta 1m41s  <extra>
// message() prints a line of its own (eval results, checkpoint saved) above the bar without breaking it.
//
// ETA = (total - step) * the average seconds per step since the bar started, evaluations and checkpoints included
// (they recur at a fixed rate, so they belong in the estimate). Only steps done in this process count: a resumed
// run passes its first step as start_step.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace gdn {

// "45s", "1m23s", "2h05m09s"; "?" for a negative or non-finite duration.
std::string format_duration(double seconds);

class ProgressBar {
 public:
  ProgressBar(int64_t total_steps, int64_t start_step = 0, std::FILE* out = stderr);
  ~ProgressBar();  // finish()
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // step = steps completed so far (start_step < step <= total_steps). `extra` is appended to the line as is.
  void update(int64_t step, double loss, double lr, double tokens_per_s, const std::string& extra = "");
  // A line printed above the bar (on a TTY the bar is redrawn under it).
  void message(const std::string& line);
  // Leaves the last state on screen (TTY) or prints it if it was not yet (log); then a newline. Idempotent.
  void finish();

  bool is_tty() const { return tty_; }

 private:
  using Clock = std::chrono::steady_clock;
  std::string render() const;
  void draw();        // TTY: redraw the bar line
  void print_line();  // log: one plain line

  int64_t total_, start_;
  std::FILE* out_;
  bool tty_;
  bool finished_ = false;
  bool have_state_ = false;  // update() called at least once
  Clock::time_point start_time_, last_update_time_, last_output_time_;
  int64_t step_, last_output_step_;
  double seconds_per_step_ = -1;  // average since start; < 0 until known
  double loss_ = 0, lr_ = 0, tokens_per_s_ = 0;
  std::string extra_;
};

}  // namespace gdn
