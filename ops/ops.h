// ops/ops.h — everything an model or test needs from the op library, in one include.
#pragma once

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "core/random.h"
#include "ops/creation.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/moe.h"
#include "ops/nn.h"
#include "ops/reduce.h"
#include "ops/shape_ops.h"
#include "ops/gated_deltanet.h"
