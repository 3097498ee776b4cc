// tests/test_plot.cpp — the training-curves PNG (train/plot.h): fake curves give a real PNG of sensible size, edge
// cases (empty series, one point, constant values, NaN) still plot, and without PLplot the error names the fix.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "train/plot.h"

using namespace gdn;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool has_png_signature(const std::string& bytes) { return bytes.rfind("\x89PNG\r\n\x1a\n", 0) == 0; }

TrainingCurves fake_curves() {
  TrainingCurves c;
  c.title = "test run #1";
  for (int step = 0; step <= 2000; step += 10) {
    double loss = 2.2 + 8.6 * std::exp(-step / 300.0) + 0.08 * std::sin(step * 0.7);
    c.train_loss.push_back({double(step), loss});
  }
  for (int step = 0; step <= 2000; step += 200) {
    double loss = 2.5 + 8.3 * std::exp(-step / 320.0);
    c.val_loss.push_back({double(step), loss});
    c.val_accuracy_pct.push_back({double(step), 45.0 * (1 - std::exp(-step / 400.0))});
    c.val_perplexity.push_back({double(step), std::exp(loss)});
  }
  return c;
}

std::string temp_png(const std::string& tag) {
  return (std::filesystem::temp_directory_path() / ("gdn_test_plot_" + std::to_string(::getpid()) + tag + ".png"))
      .string();
}

}  // namespace

TEST_CASE("plot: training curves PNG") {
  std::string path = temp_png("_curves");
  std::filesystem::remove(path);
  if (!plotting_available()) {
    MESSAGE("PLplot (pngcairo) is not available: checking the error instead of the image");
    try {
      plot_training_curves(path, fake_curves());
      FAIL("expected a gdn::UserError");
    } catch (const UserError& e) {
      CHECK(std::string(e.what()).find("apt-get install") != std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists(path));
    return;
  }
  plot_training_curves(path, fake_curves());
  std::string png = read_bytes(path);
  CHECK(has_png_signature(png));
  CHECK(png.size() > 10 * 1024);
  // No temp file left next to it.
  CHECK_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(::getpid())));
  std::filesystem::remove(path);
}

TEST_CASE("plot: edge cases still plot, a bad directory is a UserError") {
  if (!plotting_available()) {
    MESSAGE("PLplot (pngcairo) is not available: skipped");
    return;
  }
  std::string path = temp_png("_edge");
  TrainingCurves c;  // val series empty, train one point, then constant + NaN
  c.train_loss.push_back({0, 5.0});
  plot_training_curves(path, c);
  CHECK(has_png_signature(read_bytes(path)));
  c.train_loss = {{0, 3.0}, {10, 3.0}, {20, std::nan("")}, {30, 3.0}};
  c.val_accuracy_pct = {{30, 0.0}};
  c.val_perplexity = {{30, 20.0}};
  plot_training_curves(path, c);
  CHECK(has_png_signature(read_bytes(path)));
  std::filesystem::remove(path);

  std::string bad = "/nonexistent_dir_gdn_test/curves.png";
  try {
    plot_training_curves(bad, c);
    FAIL("expected a gdn::UserError");
  } catch (const UserError& e) {
    CHECK(std::string(e.what()).find(bad) != std::string::npos);
  }
}
