# third_party/dependencies.cmake — finds every external dependency (Debian packages, CUDA toolkit). Build glue only:
# no third-party source lives in this repository; scripts/setup.sh installs the packages.
# Every dependency reaches the build as an IMPORTED target, whose include folders CMake passes as -isystem: warnings
# located in third-party headers are not printed. The one exception GCC 12 still reports (its own AVX-512 intrinsics,
# inlined through Eigen) is silenced in ops/cpu/eigen.h, the only way the code includes Eigen.
find_package(Eigen3 3.3 REQUIRED NO_MODULE)
find_package(fmt REQUIRED)
# Header-only fmt makes binaries that need no libfmt.so at run time (for copying a build to another machine).
option(GDN_FMT_HEADER_ONLY "Use fmt header-only" OFF)
if(GDN_FMT_HEADER_ONLY)
  set(GDN_FMT_TARGET fmt::fmt-header-only)
else()
  set(GDN_FMT_TARGET fmt::fmt)
endif()
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(nlohmann_json 3 QUIET)
if(NOT nlohmann_json_FOUND)  # headers without the CMake package (e.g. copied onto a build machine)
  find_path(NLOHMANN_JSON_INCLUDE_DIR nlohmann/json.hpp REQUIRED)
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  set_target_properties(nlohmann_json::nlohmann_json PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${NLOHMANN_JSON_INCLUDE_DIR}")
endif()
find_package(CLI11 CONFIG QUIET)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  set_target_properties(CLI11::CLI11 PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${CLI11_INCLUDE_DIR}")
endif()
find_package(PNG QUIET)
if(GDN_BUILD_TESTS)
  find_package(doctest QUIET)
  if(NOT doctest_FOUND)  # the header alone: the test binary is then one ctest test instead of one per case
    find_path(DOCTEST_INCLUDE_DIR doctest/doctest.h REQUIRED)
    add_library(doctest::doctest INTERFACE IMPORTED)
    set_target_properties(doctest::doctest PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${DOCTEST_INCLUDE_DIR}")
  endif()
endif()

# CUDA: AUTO turns it on only when a CUDA compiler is present.
set(GDN_WITH_CUDA OFF)
if(GDN_CUDA STREQUAL "ON" OR GDN_CUDA STREQUAL "AUTO")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(GDN_WITH_CUDA ON)
  elseif(GDN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "GDN_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()
message(STATUS "gdn.cpp: CUDA backend ${GDN_WITH_CUDA}")

# PLplot (Debian: libplplot-dev + plplot-driver-cairo) draws results/training_curves.png. Optional: without it
# gdn::plplot is not defined, gdn_train compiles train/plot.cpp's fallback, and plotting throws a UserError that
# names the packages to install.
find_path(PLPLOT_INCLUDE_DIR plplot/plplot.h)
find_library(PLPLOT_LIBRARY NAMES plplotd plplot)
if(PLPLOT_INCLUDE_DIR AND PLPLOT_LIBRARY)
  add_library(gdn::plplot INTERFACE IMPORTED)
  set_target_properties(gdn::plplot PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${PLPLOT_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${PLPLOT_LIBRARY}")
  message(STATUS "gdn.cpp: PLplot found (${PLPLOT_LIBRARY}): training-curve plots on")
else()
  message(STATUS "gdn.cpp: PLplot not found: training-curve plots off (apt-get install libplplot-dev plplot-driver-cairo)")
endif()

# LibTorch (optional; Debian: libtorch-dev, installed by scripts/setup_libtorch.sh; or a PyTorch install's, with
# -DCMAKE_PREFIX_PATH=$(python3 -c "import torch; print(torch.utils.cmake_prefix_path)"), CUDA included) builds
# bench-libtorch, the parity and speed comparison in apps/libtorch/. The core never links it.
# GDN_LIBTORCH = AUTO (default: on when found) | ON (an error when not found) | OFF.
set(GDN_LIBTORCH "AUTO" CACHE STRING "Build apps/libtorch (bench-libtorch) when LibTorch is found: AUTO, ON or OFF")
set_property(CACHE GDN_LIBTORCH PROPERTY STRINGS AUTO ON OFF)
set(GDN_WITH_TORCH OFF)
if(NOT GDN_LIBTORCH STREQUAL "OFF")
  find_package(Torch CONFIG QUIET PATHS /usr/lib/x86_64-linux-gnu/cmake/Torch /usr/share/cmake/Torch)
  if(Torch_FOUND OR TORCH_FOUND)
    set(GDN_WITH_TORCH ON)
  elseif(GDN_LIBTORCH STREQUAL "ON")
    message(FATAL_ERROR "GDN_LIBTORCH=ON but LibTorch was not found (set CMAKE_PREFIX_PATH to its cmake folder)")
  endif()
endif()
if(GDN_WITH_TORCH)
  message(STATUS "gdn.cpp: LibTorch found (${Torch_DIR}): bench-libtorch on")
else()
  message(STATUS "gdn.cpp: LibTorch not found: bench-libtorch off (scripts/setup_libtorch.sh installs it)")
endif()
