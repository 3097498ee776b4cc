#!/usr/bin/env python3
"""scripts/compare_runs.py — compares two gdn-train runs (training_results.json), e.g. the same seed on CPU and GPU.

Prints the largest relative difference of the training losses over the first 10 and the first 100 steps, the final
validation losses and their difference, and PASS/FAIL against the bounds a CUDA run must meet against its CPU twin:
first 10 steps within 1e-4 relative, first 100 within 1%, final val loss within 0.02.
  compare_runs.py REFERENCE.json OTHER.json
  compare_runs.py --one RUN.json        (one line: steps, final val loss, tokens/s)
"""
import json
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def final_val(r):
    v = r.get("final_val") or {}
    return v.get("loss")


def main(argv):
    if len(argv) == 3 and argv[1] == "--one":
        r = load(argv[2])
        print(f"{r['steps']} steps, final val loss {final_val(r)}, {r.get('tokens_per_second', 0):.0f} tokens/s")
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = load(argv[1]), load(argv[2])
    la = [p["loss"] for p in a["train_history"]]
    lb = [p["loss"] for p in b["train_history"]]
    n = min(len(la), len(lb))

    def worst(k):
        k = min(k, n)
        return max((abs(x - y) / abs(x) for x, y in zip(la[:k], lb[:k])), default=float("nan")), k

    w10, k10 = worst(10)
    w100, k100 = worst(100)
    va, vb = final_val(a), final_val(b)
    dv = abs(va - vb) if va is not None and vb is not None else float("nan")
    ok10, ok100, okv = w10 <= 1e-4, w100 <= 1e-2, dv <= 0.02
    print(f"losses, first {k10} steps: max rel diff {w10:.2e} ({'PASS' if ok10 else 'FAIL'} <= 1e-4)")
    print(f"losses, first {k100} steps: max rel diff {w100:.2e} ({'PASS' if ok100 else 'FAIL'} <= 1e-2)")
    print(f"final val loss: {va} vs {vb}, diff {dv:.4f} ({'PASS' if okv else 'FAIL'} <= 0.02); "
          f"tokens/s {a.get('tokens_per_second', 0):.0f} vs {b.get('tokens_per_second', 0):.0f}")
    return 0 if ok10 and ok100 and okv else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
