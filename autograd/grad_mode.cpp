// autograd/grad_mode.cpp — storage for the thread-local grad mode flag.
#include "autograd/grad_mode.h"

namespace gdn {

namespace {
thread_local bool g_grad_enabled = true;
}

bool GradMode::enabled() { return g_grad_enabled; }
void GradMode::set_enabled(bool on) { g_grad_enabled = on; }

}  // namespace gdn
