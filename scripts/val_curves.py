#!/usr/bin/env python3
"""scripts/val_curves.py — validation curves of several gdn-train runs side by side, as a markdown table.

  val_curves.py NAME=RUN/training_results.json [NAME=...]

One row per evaluation step (the steps every run evaluated), one column per run: validation loss; then the final
validation loss, the difference of each run to the first one, and each run's wall time and tokens/s.
"""
import json
import sys


def main(argv):
    runs = []
    for arg in argv[1:]:
        name, _, path = arg.partition("=")
        if not path:
            print(__doc__, file=sys.stderr)
            return 2
        with open(path) as f:
            runs.append((name, json.load(f)))
    if not runs:
        print(__doc__, file=sys.stderr)
        return 2
    curves = [{p["step"]: p["loss"] for p in r["val_history"]} for _, r in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    print("| step | " + " | ".join(n for n, _ in runs) + " |")
    print("|---:|" + "---:|" * len(runs))
    for s in steps:
        print(f"| {s} | " + " | ".join(f"{c[s]:.4f}" for c in curves) + " |")
    ref = runs[0][1]["final_val"]["loss"]
    print()
    for name, r in runs:
        v = r["final_val"]["loss"]
        print(f"- {name}: final val loss {v:.4f} (vs {runs[0][0]}: {v - ref:+.4f}), {r['steps']} steps, "
              f"{r['total_time_seconds']:.1f} s wall, {r['tokens_per_second']:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
