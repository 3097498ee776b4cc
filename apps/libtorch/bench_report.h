// apps/libtorch/bench_report.h — what bench-libtorch prints besides the numbers it measures: which BLAS each side
// runs on (CPU), the machine's load, and the markdown tables of a report (parity, step time and memory, loss curves).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace gdn_bench {

// The BLAS / LAPACK / MKL libraries mapped into this process (/proc/self/maps), with their real paths.
std::string loaded_blas_description();
// The BLAS_INFO=... and LAPACK_INFO=... entries of torch::show_config() (what LibTorch was built against).
std::string torch_blas_config_lines();
// What gdn.cpp multiplies with on the CPU.
std::string gdn_blas();
// openblas_set_num_threads when an OpenBLAS is loaded; returns whether it was.
bool set_openblas_threads(int n);
// The 1, 5 and 15 minute load averages.
std::string load_average();

// The markdown of a whole report (the JSON bench-libtorch writes with --out-json): a header, the parity table, the
// speed table (unless parity_only) and, for every row that has one, the loss curve every `every` steps.
std::string markdown(const nlohmann::json& report);

}  // namespace gdn_bench
