// train/progress.cpp — the progress bar of progress.h: TTY redraw or throttled plain lines.
#include "train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace gdn {

namespace {
constexpr int kBarWidth = 20;
constexpr double kRedrawSeconds = 0.1;    // TTY: at most 10 redraws a second
constexpr double kLogFraction = 0.05;     // log: a line every 5% of the run ...
constexpr double kLogSeconds = 10.0;      // ... or every 10 s, whichever comes first

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60);
}

ProgressBar::ProgressBar(int64_t total_steps, int64_t start_step, std::FILE* out)
    : total_(std::max<int64_t>(total_steps, 1)),
      start_(start_step),
      out_(out),
      tty_(out != nullptr && isatty(fileno(out)) != 0),
      start_time_(Clock::now()),
      last_update_time_(start_time_),
      last_output_time_(start_time_),
      step_(start_step),
      last_output_step_(start_step) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t step, double loss, double lr, double tokens_per_s, const std::string& extra) {
  const Clock::time_point now = Clock::now();
  // ETA from the average over the whole run so far: periodic evaluations and checkpoints are part of the rate, so a
  // step that ran an eval neither inflates the estimate nor is forgotten a few steps later.
  if (step > start_) {
    seconds_per_step_ = seconds_between(start_time_, now) / static_cast<double>(step - start_);
    last_update_time_ = now;
  }
  const bool first = !have_state_;
  step_ = step, loss_ = loss, lr_ = lr, tokens_per_s_ = tokens_per_s, extra_ = extra;
  have_state_ = true;
  finished_ = false;
  if (out_ == nullptr) return;
  const bool last = step >= total_;
  const double since_output = seconds_between(last_output_time_, now);
  if (tty_) {
    if (first || last || since_output >= kRedrawSeconds) draw();
  } else {
    const auto every = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(kLogFraction * static_cast<double>(total_))));
    const bool moved = step > last_output_step_;
    if (first || (moved && (last || step - last_output_step_ >= every || since_output >= kLogSeconds))) print_line();
  }
}

void ProgressBar::message(const std::string& line) {
  if (out_ == nullptr) return;
  if (tty_) {
    std::fprintf(out_, "\r\x1b[K%s\n", line.c_str());
    if (have_state_ && !finished_) draw();
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void ProgressBar::finish() {
  if (finished_ || out_ == nullptr) return;
  finished_ = true;
  if (!have_state_) return;
  if (tty_) {
    draw();
    std::fputc('\n', out_);
  } else if (step_ != last_output_step_) {
    print_line();
  }
  std::fflush(out_);
}

std::string ProgressBar::render() const {
  const double elapsed = seconds_between(start_time_, Clock::now());
  const double eta = seconds_per_step_ < 0 ? -1.0 : seconds_per_step_ * static_cast<double>(std::max<int64_t>(0, total_ - step_));
  const double fraction = std::clamp(static_cast<double>(step_) / static_cast<double>(total_), 0.0, 1.0);
  std::string stats = fmt::format("loss {:.4f}  lr {:.2e}  {:.0f} tok/s", loss_, lr_, tokens_per_s_);
  std::string line;
  if (tty_) {
    const int filled = static_cast<int>(fraction * kBarWidth);
    line = fmt::format("[{}{}] {:>{}}/{}  {}  {}<{}", std::string(filled, '#'), std::string(kBarWidth - filled, '.'),
                       step_, fmt::format("{}", total_).size(), total_, stats, format_duration(elapsed),
                       format_duration(eta));
  } else {
    line = fmt::format("step {}/{} ({:.0f}%)  {}  elapsed {}  eta {}", step_, total_, 100.0 * fraction, stats,
                       format_duration(elapsed), format_duration(eta));
  }
  if (!extra_.empty()) line += "  " + extra_;
  return line;
}

void ProgressBar::draw() {
  std::fprintf(out_, "\r\x1b[K%s", render().c_str());
  std::fflush(out_);
  last_output_time_ = Clock::now();
  last_output_step_ = step_;
}

void ProgressBar::print_line() {
  std::fprintf(out_, "%s\n", render().c_str());
  std::fflush(out_);
  last_output_time_ = Clock::now();
  last_output_step_ = step_;
}

}  // namespace gdn
