// train/plot.h — the training-curves figure (results/training_curves.png): a 2x2 grid of train loss, validation
// loss, validation accuracy (%) and validation perplexity against the optimizer step.
//
// Drawn with PLplot (Debian: libplplot-dev + plplot-driver-cairo, the "pngcairo" device), a real plotting library,
// rather than a hand-made rasterizer: anti-aliased lines, proper tick placement, real fonts. PLplot is optional at
// build time; without it (or without its cairo driver at run time) plotting_available() is false and
// plot_training_curves throws a gdn::UserError that says which packages to install, so a training run can skip the
// figure and still finish.
#pragma once

#include <string>
#include <vector>

namespace gdn {

struct CurvePoint {
  double step;
  double value;
};

struct TrainingCurves {
  std::vector<CurvePoint> train_loss;        // cross-entropy in nats, one point per logged step
  std::vector<CurvePoint> val_loss;          // cross-entropy in nats, one point per evaluation
  std::vector<CurvePoint> val_accuracy_pct;  // next-token accuracy in percent
  std::vector<CurvePoint> val_perplexity;    // exp(val_loss)
  std::string title;                         // figure title, e.g. the run name; "Training curves" when empty
};

// Writes a 1200x900 PNG to png_path. The image is drawn into a temp file next to png_path and renamed into place,
// so a failed plot never leaves a broken PNG behind. Any series may be empty ("no data" is shown); non-finite
// values (a diverged loss) are left out. Throws gdn::UserError when plotting is unavailable or the file cannot be
// written. Safe to call from several threads (PLplot is not re-entrant; calls are serialized).
void plot_training_curves(const std::string& png_path, const TrainingCurves& curves);

// True when this build has PLplot and its pngcairo driver is installed.
bool plotting_available();

}  // namespace gdn
