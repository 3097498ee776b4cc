// core/check.h — loud, located errors.
//
// Two kinds of failure, kept apart on purpose:
//   * GDN_CHECK(cond, fmt, args...)  — an invariant of the program or a bad argument to an op. Throws gdn::Error
//     whose message carries file:line, so a failing shape assert points at the op that raised it.
//   * gdn::UserError                — bad input from a person (missing file, bad config value). Apps catch it and
//     print one clean line, no file:line noise, then exit non-zero.
// Both derive from std::runtime_error so tests can REQUIRE_THROWS them.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>

namespace gdn {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
[[noreturn]] inline void throw_error(const char* file, int line, const std::string& msg) {
  throw Error(fmt::format("{}:{}: {}", file, line, msg));
}
}  // namespace detail

}  // namespace gdn

// GDN_CHECK(cond, "format {}", args...): throws gdn::Error("file:line: message") when cond is false.
#define GDN_CHECK(cond, ...)                                                              \
  do {                                                                                    \
    if (!(cond)) ::gdn::detail::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)

// GDN_THROW("format {}", args...): unconditional located error.
#define GDN_THROW(...) ::gdn::detail::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))

// GDN_USER_CHECK(cond, "format {}", args...): throws gdn::UserError with just the message (for apps to print).
#define GDN_USER_CHECK(cond, ...)                                      \
  do {                                                                 \
    if (!(cond)) throw ::gdn::UserError(::fmt::format(__VA_ARGS__));   \
  } while (0)
