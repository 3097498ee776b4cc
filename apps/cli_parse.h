// apps/cli_parse.h — command-line parsing shared by the apps: --help prints the usage and exits 0; any other
// mistake on the command line (unknown flag, a value that is not a number, ...) is one line "<app>: error: ..." and
// exit code 2, like every other bad input. split_commas reads list options ("small,medium,large").
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace gdn {

// Returns the exit code to leave with, or nothing when parsing succeeded and the app should run.
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv, const char* name) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: error: %s (see --help)\n", name, e.what());
    return 2;
  }
}

// "a,b,,c" -> {"a", "b", "c"} (empty pieces dropped).
inline std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string piece; std::getline(ss, piece, ',');)
    if (!piece.empty()) out.push_back(piece);
  return out;
}

}  // namespace gdn
