// ops/cpu/eigen.h — the one way gdn.cpp includes Eigen: as a third-party header whose compiler warnings are not ours.
//
// Eigen's include folder is already a system include (-isystem, from the imported target Eigen3::Eigen), which hides
// warnings located in Eigen itself. GCC 12 (Debian 12) still reports -Wmaybe-uninitialized from its own AVX-512
// intrinsics (avx512fintrin.h: `__m512 __Y = __Y;` in the _mm512_undefined_* helpers, GCC bug 105593) once Eigen's
// packet code is inlined into ours: hundreds of warnings per file with -march=native on an AVX-512 CPU. A diagnostic
// pragma is honoured by the location of the warning, so including the intrinsics headers (and Eigen) between
// push/pop silences that one warning inside those headers only; our own code keeps every -Wall -Wextra warning.
// The intrinsics headers have include guards, so this works only if nothing includes them earlier in the file:
// include this header before anything else that might. It must not go into a precompiled header either: GCC 12
// does not keep diagnostic pragmas in one (ops/CMakeLists.txt).
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
