// train/plot.cpp — see plot.h. The figure, drawn with PLplot's C API on the "pngcairo" device.
//
// Layout: a 1200x900 page, white background, the run title on top, then four panels placed with explicit
// viewports (normalized page coordinates) rather than plssub, so the title has its own band and the margins can
// fit horizontal tick labels. Every panel shares one x range [0, last step] (+2% margins) so the panels line up; y
// ranges are the data's range padded by 5% (a constant series or a single point gets a band around its value).
// Validation perplexity switches to a log y-axis when it spans a factor of 10 or more (it starts near the vocabulary
// size). Series with few points (evaluations) get a marker on each point, so a single evaluation is still visible.
//
// Two PLplot behaviours shape the error handling:
//   * on a fatal error PLplot calls exit() (after its plsexit handler), and when it cannot open the output file it
//     retries ten times and then exits. We create the temp file ourselves first (so an unwritable directory is an
//     ordinary UserError before PLplot runs), and install a plsexit handler that throws, so no PLplot failure can
//     end a training run. The C frames it unwinds through have unwind tables (the default on Debian's targets).
//   * PLplot keeps global state and is not re-entrant, so calls are serialized by a mutex.
// The image goes to "<png_path>.tmp.<pid>", is checked for the PNG signature, then renamed over png_path.
//
// PLplot text treats '#' as an escape character ("#u" superscript, ...); the user's title is escaped ("##").
// Reference: PLplot 5.15 manual, "The C API" (plinit, plvpor, plwind, plbox, plmtex, plline, plstring, plend).
#include "train/plot.h"

#include "core/check.h"

#ifdef GDN_HAVE_PLPLOT
#include <fcntl.h>
#include <plplot/plplot.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <mutex>
#endif

namespace gdn {

namespace {
const char* const kPlplotMissing = "training curves need PLplot (apt-get install libplplot-dev plplot-driver-cairo)";
}  // namespace

#ifndef GDN_HAVE_PLPLOT

bool plotting_available() { return false; }

void plot_training_curves(const std::string& png_path, const TrainingCurves& curves) {
  throw UserError(kPlplotMissing);
}

#else

namespace {

std::mutex g_plplot_mutex;

// cmap0 slots (slot 0 is the background).
constexpr PLINT kInk = 1, kGrid = 2, kMuted = 3, kBlue = 4, kOrange = 5, kGreen = 6, kRed = 7;

// Page geometry in normalized page coordinates.
constexpr double kColumnX[2][2] = {{0.09, 0.47}, {0.585, 0.965}};
constexpr double kRowY[2][2] = {{0.555, 0.865}, {0.08, 0.39}};
// Character sizes, as scales of PLplot's default height (which is large on a 1200x900 page).
constexpr double kTextScale = 0.72, kPanelTitleScale = 0.82, kFigureTitleScale = 1.0, kMarkerScale = 0.45;

struct PlplotFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// plsexit handler: turn PLplot's fatal error (which would exit the process) into an exception.
int throw_on_plplot_exit(const char* message) { throw PlplotFailure(message ? message : "unknown PLplot error"); }

bool pngcairo_installed() {
  std::vector<const char*> menu(256), names(256);
  const char** menu_ptr = menu.data();
  const char** names_ptr = names.data();
  int count = static_cast<int>(names.size());
  plgDevs(&menu_ptr, &names_ptr, &count);
  for (int i = 0; i < count; ++i) {
    if (names_ptr[i] && std::strcmp(names_ptr[i], "pngcairo") == 0) return true;
  }
  return false;
}

std::string escape_plplot_text(const std::string& s) {
  std::string out;
  for (char c : s) {
    out += c;
    if (c == '#') out += '#';
  }
  return out;
}

struct Range {
  double lo, hi;
};

// [lo, hi] padded by 5%; a zero-width range becomes a band of +-10% of the value (or +-1 around 0).
Range padded(double lo, double hi) {
  double span = hi - lo;
  if (!(span > 1e-12 * std::max(1.0, std::fabs(hi)))) {
    double pad = lo != 0 ? 0.1 * std::fabs(lo) : 1.0;
    return {lo - pad, hi + pad};
  }
  return {lo - 0.05 * span, hi + 0.05 * span};
}

struct Panel {
  const std::vector<CurvePoint>* points;
  std::string title;
  std::string ylabel;
  PLINT color;
  int decimals;        // for the "last value" in the title
  std::string suffix;  // unit after the last value
  bool log_when_wide;  // log10 y-axis when max/min >= 10
};

void draw_panel(const Panel& panel, int column, int row, Range x) {
  // Finite points only: a diverged (NaN) loss must not break the whole figure.
  std::vector<PLFLT> xs, ys;
  for (const CurvePoint& p : *panel.points) {
    if (std::isfinite(p.step) && std::isfinite(p.value)) {
      xs.push_back(p.step);
      ys.push_back(p.value);
    }
  }
  bool log_y = false;
  Range y{0, 1};
  if (!ys.empty()) {
    auto [lo_it, hi_it] = std::minmax_element(ys.begin(), ys.end());
    double lo = *lo_it, hi = *hi_it;
    log_y = panel.log_when_wide && lo > 0 && hi / lo >= 10;
    if (log_y) {
      for (PLFLT& v : ys) v = std::log10(v);
      y = padded(std::log10(lo), std::log10(hi));
    } else {
      y = padded(lo, hi);
    }
  }

  plvpor(kColumnX[column][0], kColumnX[column][1], kRowY[row][0], kRowY[row][1]);
  plwind(x.lo, x.hi, y.lo, y.hi);

  // Light dashed grid under everything, then the axes box with ticks and numbers.
  plcol0(kGrid);
  plwidth(1.0);
  pllsty(3);
  plbox("g", 0, 0, log_y ? "gl" : "g", 0, 0);
  pllsty(1);
  plcol0(kInk);
  plwidth(1.2);
  plbox("bcnst", 0, 0, log_y ? "bcnstvl" : "bcnstv", 0, 0);

  std::string title = panel.title;
  if (!panel.points->empty() && std::isfinite(panel.points->back().value)) {
    title += fmt::format("   (last {:.{}f}{})", panel.points->back().value, panel.decimals, panel.suffix);
  }
  plschr(0, kPanelTitleScale);
  plmtex("t", 1.0, 0.5, 0.5, title.c_str());
  plschr(0, kTextScale);
  plmtex("b", 3.0, 0.5, 0.5, "step");
  // Tick numbers of four or more digits are wider: move the axis label out so they do not touch.
  const double ylabel_offset = (!log_y && std::max(std::fabs(y.lo), std::fabs(y.hi)) >= 1000) ? 5.6 : 4.6;
  plmtex("l", ylabel_offset, 0.5, 0.5, panel.ylabel.c_str());

  if (xs.empty()) {
    plcol0(kMuted);
    plptex(0.5 * (x.lo + x.hi), 0.5 * (y.lo + y.hi), 1, 0, 0.5, "no data yet");
    return;
  }
  plcol0(panel.color);
  plwidth(2.2);
  plline(static_cast<PLINT>(xs.size()), xs.data(), ys.data());
  if (xs.size() <= 40) {
    plschr(0, kMarkerScale);
    plstring(static_cast<PLINT>(xs.size()), xs.data(), ys.data(), "●");
    plschr(0, kTextScale);
  }
  plwidth(1.0);
}

void draw_figure(const std::string& file, const TrainingCurves& curves) {
  plsdev("pngcairo");
  plsfnam(file.c_str());
  plspage(0, 0, 1200, 900, 0, 0);
  plscolbg(255, 255, 255);
  plinit();
  plscol0(kInk, 25, 25, 25);
  plscol0(kGrid, 200, 200, 200);
  plscol0(kMuted, 130, 130, 130);
  plscol0(kBlue, 31, 119, 180);
  plscol0(kOrange, 230, 115, 0);
  plscol0(kGreen, 44, 160, 44);
  plscol0(kRed, 200, 40, 40);
  plsxax(7, 0);  // plain step numbers up to 7 digits, no "x10^4" factor
  plsyax(6, 0);
  pladv(0);

  // Figure title in its own band at the top.
  plvpor(0, 1, 0, 1);
  plwind(0, 1, 0, 1);
  plcol0(kInk);
  plschr(0, kFigureTitleScale);
  std::string title = curves.title.empty() ? "Training curves" : curves.title;
  plptex(0.5, 0.955, 1, 0, 0.5, escape_plplot_text(title).c_str());
  plschr(0, kTextScale);

  // One x range for all panels: [0, last step] (or the data's own range if steps go below 0).
  double x_lo = 0, x_hi = 0;
  for (const auto* series : {&curves.train_loss, &curves.val_loss, &curves.val_accuracy_pct, &curves.val_perplexity}) {
    for (const CurvePoint& p : *series) {
      if (!std::isfinite(p.step)) continue;
      x_lo = std::min(x_lo, p.step);
      x_hi = std::max(x_hi, p.step);
    }
  }
  // 2% margins on both sides so the first and last points do not sit on the frame; one step gets +-1.
  Range x = x_hi > x_lo ? Range{x_lo - 0.02 * (x_hi - x_lo), x_hi + 0.02 * (x_hi - x_lo)} : Range{x_lo - 1, x_lo + 1};

  draw_panel({&curves.train_loss, "Train loss", "loss (nats/token)", kBlue, 3, "", false}, 0, 0, x);
  draw_panel({&curves.val_loss, "Validation loss", "loss (nats/token)", kOrange, 3, "", false}, 1, 0, x);
  draw_panel({&curves.val_accuracy_pct, "Validation accuracy", "next-token accuracy (%)", kGreen, 1, "%", false}, 0, 1,
             x);
  draw_panel({&curves.val_perplexity, "Validation perplexity", "perplexity", kRed, 1, "", true}, 1, 1, x);
}

bool file_starts_with_png_signature(const std::string& path) {
  static const unsigned char kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::ifstream in(path, std::ios::binary);
  char head[8] = {};
  if (!in.read(head, 8)) return false;
  return std::memcmp(head, kSignature, 8) == 0;
}

}  // namespace

bool plotting_available() {
  std::lock_guard<std::mutex> lock(g_plplot_mutex);
  return pngcairo_installed();
}

void plot_training_curves(const std::string& png_path, const TrainingCurves& curves) {
  std::lock_guard<std::mutex> lock(g_plplot_mutex);
  GDN_USER_CHECK(pngcairo_installed(),
                 "training curves need PLplot's cairo driver (apt-get install plplot-driver-cairo)");
  const std::string tmp = png_path + ".tmp." + std::to_string(::getpid());

  // Create the temp file ourselves: a bad directory becomes a clear error here instead of PLplot's exit().
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    int err = errno;
    throw UserError("cannot write " + png_path + ": " + std::strerror(err));
  }
  ::close(fd);

  try {
    plsexit(throw_on_plplot_exit);
    draw_figure(tmp, curves);
    plend();
    plsexit(nullptr);
  } catch (const std::exception& e) {
    plsexit(nullptr);
    plend();
    ::unlink(tmp.c_str());
    throw UserError("cannot plot " + png_path + ": " + e.what());
  }

  if (!file_starts_with_png_signature(tmp)) {
    ::unlink(tmp.c_str());
    throw UserError("cannot plot " + png_path + ": PLplot wrote no PNG image (is the disk full?)");
  }
  if (::rename(tmp.c_str(), png_path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw UserError("cannot write " + png_path + ": " + std::strerror(err));
  }
}

#endif  // GDN_HAVE_PLPLOT

}  // namespace gdn
