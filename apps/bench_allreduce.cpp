// apps/bench_allreduce.cpp — times the gradient all-reduce of data-parallel training (bin/bench-allreduce).
//
// Every rank makes one float32 tensor per parameter of a preset's model (the shapes of its gradients) and averages
// them with Communicator::average, the call the training step makes after its backward pass (one grouped
// all-reduce); --warmup untimed calls, then --iters timed ones on the device (CUDA events on the device's stream; the
// steady clock on the CPU). Rank 0 prints the bytes, the time per all-reduce, the algorithm bandwidth (bytes / time)
// and the bus bandwidth (algbw x 2 (n - 1) / n, nccl-tests' convention: what each link carries), and --json FILE
// writes them. Run it under a launcher, or with --gpus N to start N ranks on this machine.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/cli_parse.h"
#include "models/language_model.h"
#include "ops/ops.h"
#include "train/config.h"
#include "train/device.h"
#include "train/distributed.h"

using namespace gdn;

int main(int argc, char** argv) {
  CLI::App app{"bench-allreduce — time the data-parallel gradient all-reduce of a preset's model"};
  std::string preset = "medium", device_name = "cuda", json_path;
  std::vector<std::string> sets;
  int iters = 50, warmup = 5, gpus = 0;
  app.add_option("--preset", preset, "model preset (default medium)");
  app.add_option("--set", sets, "override a model key: --set key=value (repeatable)");
  app.add_option("--device", device_name, "cuda (default) or cpu");
  app.add_option("--iters", iters, "timed all-reduces (default 50)");
  app.add_option("--warmup", warmup, "untimed all-reduces first (default 5)");
  auto* gpus_opt = app.add_option("--gpus", gpus, "start N ranks on this machine");
  app.add_option("--json", json_path, "also write the numbers to this JSON file (rank 0)");
  if (auto rc = parse_command_line(app, argc, argv, "bench-allreduce")) return *rc;
  try {
    if (gpus_opt->count() > 0) {
      std::vector<std::string> args;
      for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--gpus") ++i;
        else args.push_back(a);
      }
      return launch_local_ranks(gpus, args);
    }
    const DistributedEnv job = distributed_env();
    GDN_USER_CHECK(job.world > 1, "bench-allreduce needs several ranks: --gpus N, or a launcher (WORLD_SIZE)");
    TrainConfig cfg = preset_config(preset);
    for (const auto& s : sets) apply_override(cfg, s);
    validate(cfg);
    const std::string dev = device_name == "cuda" ? fmt::format("cuda:{}", job.local_rank) : device_name;
    const Device device = init_device(dev);
    std::unique_ptr<Communicator> comm = connect(job, device);
    GatedDeltaNetLM model(cfg.model, cfg.seed, kFloat32, device);
    std::vector<Tensor> grads;
    double bytes = 0;
    for (const auto& p : model.parameters()) {
      grads.push_back(zeros_like(p.value));
      bytes += static_cast<double>(p.value.numel()) * 4;
    }
    for (int i = 0; i < warmup; ++i) comm->average(grads);
    synchronize(device);
    comm->barrier();
    DeviceTimer timer(device);
    timer.start();
    for (int i = 0; i < iters; ++i) comm->average(grads);
    const double ms = timer.stop_ms() / iters;
    const int n = comm->world();
    const double algbw = bytes / (ms * 1e-3) / 1e9, busbw = algbw * 2.0 * (n - 1) / n;
    if (comm->rank() == 0) {
      fmt::print("bench-allreduce: {} ranks over {}, preset {}: {} tensors, {:.1f} MB fp32 | {:.3f} ms per all-reduce"
                 " | algbw {:.1f} GB/s | busbw {:.1f} GB/s\n", n, comm->transport(), preset, grads.size(),
                 bytes / 1e6, ms, algbw, busbw);
      if (!json_path.empty()) {
        nlohmann::json j = {{"ranks", n},           {"transport", comm->transport()}, {"preset", preset},
                            {"tensors", grads.size()}, {"bytes", bytes},               {"ms", ms},
                            {"algbw_gbps", algbw},   {"busbw_gbps", busbw}};
        std::ofstream(json_path) << j.dump(2) << "\n";
      }
    }
    comm->barrier();
    comm->finish();
    return 0;
  } catch (const UserError& e) {
    std::fprintf(stderr, "bench-allreduce: error: %s\n", e.what());
    return 2;
  }
}
