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

Usage: PYTHONPATH=/path/to/flash-linear-attention python3 scripts/bench_fla.py [--shape B,T,H,K] [--repeats 20]
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
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except ImportError as e:
        sys.exit(f"bench_fla.py: needs PyTorch and FLA importable (PYTHONPATH at flash-linear-attention): {e}")
    if not torch.cuda.is_available():
        sys.exit("bench_fla.py: needs a CUDA GPU")

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


if __name__ == "__main__":
    main()
