#!/usr/bin/env python3
"""FLA's chunk_gated_delta_rule timed the way bench-gdn-ops times gdn.cpp's delta rule, on the same card.

The comparator of issue 10's delta-rule benchmark: flash-linear-attention's Triton kernels (`fla.ops.gated_delta_rule.
chunk_gated_delta_rule`, bf16 q, k, v as in FLA's own benchmarks) at bench-gdn-ops' shapes, with its inputs (q, k
l2-normalised, beta = sigmoid(x), g = logsigmoid(x), scale K^-1/2, chunk 64), forward alone under no_grad and forward
+ backward (o.backward(do) with a random do), median of --repeats runs after --warmup runs, CUDA events. The first
calls of each shape include Triton's compilation and autotuning (the warm-up absorbs them; it can take minutes).
Prints markdown rows with bench-gdn-ops' columns, so that the two tables line up row by row.

FLA is not a dependency of gdn.cpp and is not in this repository: point PYTHONPATH at a checkout of
flash-linear-attention (its fla/ folder), on a machine with PyTorch, Triton and einops.

FLA refuses the gated backward on Hopper with Triton 3.4 to 3.7.0 (its issue #640: a Triton code-generation bug
corrupts dk of chunk_bwd_dqkwg at a 64-wide key block, that is at K = 64; K = 128 takes a 128-wide block).
--bypass-triton-guard lets it run anyway: the kernels do the same work, so the timing stands, but dk may be wrong
at K = 64. --profile adds each shape's per-kernel CUDA times (torch.profiler) of one forward and of one
forward+backward.

Usage: PYTHONPATH=/path/to/flash-linear-attention python3 scripts/bench_fla.py [--shape B,T,H,K] [--repeats 20]
       [--bypass-triton-guard] [--profile]
"""
import argparse
import statistics
import sys

SHAPES = [(16, 512, 4, 64), (8, 2048, 8, 64), (4, 4096, 16, 128), (32, 256, 4, 64)]


def parse_shape(text):
    parts = [int(x) for x in text.split(",")]
    if len(parts) != 4 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"--shape wants B,T,H,K with positive numbers, got '{text}'")
    return tuple(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=parse_shape, action="append", help="B,T,H,K (repeatable; default: four shapes)")
    ap.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (the median is printed)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    ap.add_argument("--bypass-triton-guard", action="store_true",
                    help="run FLA's gated backward on Hopper with Triton 3.4 to 3.7.0 (FLA issue #640; timing only)")
    ap.add_argument("--profile", action="store_true",
                    help="per-kernel CUDA times of one forward and one forward+backward per shape")
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except ImportError as e:
        sys.exit(f"bench_fla.py: needs PyTorch and FLA importable (PYTHONPATH at flash-linear-attention): {e}")
    if not torch.cuda.is_available():
        sys.exit("bench_fla.py: needs a CUDA GPU")
    if a.bypass_triton_guard:
        import fla.ops.common.chunk_o as chunk_o
        chunk_o.TRITON_ABOVE_3_7_1 = True
        print("FLA's Triton guard bypassed (issue #640): the timing stands, dk may be wrong at K = 64\n")

    def median_ms(fn):
        for _ in range(a.warmup):
            fn()
        times = []
        for _ in range(a.repeats):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        return statistics.median(times)

    print(f"chunk_gated_delta_rule (FLA) on {torch.cuda.get_device_name()}, chunk 64, bfloat16 q, k, v, "
          f"median of {a.repeats} runs after {a.warmup} warm-up\n")
    print("| dtype | B | T | H | K | V | NC | mode | path | forward (ms) | forward+backward (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|")
    def kernel_times(fn):
        from torch.profiler import ProfilerActivity, profile
        try:
            fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
            rows = [(e.key[:90], e.device_time_total) for e in prof.key_averages() if e.device_time_total > 0]
        except Exception as e:  # the timings above stand without the profile
            return [(f"torch.profiler failed: {e}", 0.0)]
        return sorted(rows, key=lambda r: -r[1])[:16]

    profiles = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for B, T, H, K in a.shape or SHAPES:
        def normal(*shape):
            return torch.randn(*shape, device="cuda", generator=gen)
        q = F.normalize(normal(B, T, H, K), dim=-1).bfloat16().requires_grad_()
        k = F.normalize(normal(B, T, H, K), dim=-1).bfloat16().requires_grad_()
        v = normal(B, T, H, K).bfloat16().requires_grad_()
        beta = torch.sigmoid(normal(B, T, H)).bfloat16().requires_grad_()
        g = F.logsigmoid(normal(B, T, H)).requires_grad_()
        do = normal(B, T, H, K).bfloat16()

        def forward():
            with torch.no_grad():
                chunk_gated_delta_rule(q, k, v, g, beta, scale=K ** -0.5)

        def forward_backward():
            o, _ = chunk_gated_delta_rule(q, k, v, g, beta, scale=K ** -0.5)
            o.backward(do)

        fwd, fwd_bwd = median_ms(forward), median_ms(forward_backward)
        print(f"| bfloat16 | {B} | {T} | {H} | {K} | {K} | {(T + 63) // 64} | chunked | FLA Triton | {fwd:.3f} | "
              f"{fwd_bwd:.3f} |", flush=True)
        if a.profile:
            profiles.append(((B, T, H, K), "forward", kernel_times(forward)))
            profiles.append(((B, T, H, K), "forward+backward", kernel_times(forward_backward)))
    for shape, what, rows in profiles:
        print(f"\nper kernel, one {what} at {','.join(map(str, shape))} (us, torch.profiler):")
        for name, us in rows:
            print(f"  {us:9.1f}  {name}")


if __name__ == "__main__":
    main()
