#!/usr/bin/env python3
"""Where a kernel's warps stall, by source line, from ncu's source page.

Input: the CSV of `ncu -i REPORT --page source --csv --print-source cuda,sass` for one kernel profiled with
`--section SourceCounters --import-source yes` (a -lineinfo build). Each SASS instruction's warp stall samples are
counted for its own (file, line) and, for code inlined from helpers in other files, for the line of KERNEL_FILE that
precedes it in address order. Prints the total, the lines with the most samples, and the per-line sums of
KERNEL_FILE (lines with at least 0.5% of the samples); with --phases LINE:NAME,... the sums of the line ranges that
start at those lines (a kernel's phases).

Usage: ncu_source_lines.py SOURCE.csv KERNEL_FILE [--top N] [--phases 0:prologue,276:phase1,...]
"""
import argparse
import collections
import csv
import gzip


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = list(csv.reader(f))
    file, line, col, src, sass = None, None, None, {}, []
    for r in rows:
        if len(r) == 2 and r[0] == "File Path":
            file = r[1]
        elif r and r[0] == "Line No":
            col = r.index("Warp Stall Sampling (All Samples)")
        elif col is not None and len(r) > col:
            if r[0].isdigit():
                line = int(r[0])
                src[(file, line)] = r[1]
            elif r[2].startswith("0x"):
                samples = int(r[col]) if r[col].isdigit() else 0
                sass.append((int(r[2], 16), file, line, samples))
    sass.sort()
    return src, sass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("kernel_file")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--phases", default="")
    a = ap.parse_args()
    src, sass = read(a.csv)
    total = sum(s[3] for s in sass) or 1
    print(f"total samples {total}, {len(sass)} SASS instructions")
    own = collections.Counter()
    kernel = collections.Counter()
    last = None
    for _, file, line, n in sass:
        own[(file, line)] += n
        if file and file.endswith(a.kernel_file):
            last = line
        kernel[last] += n
    for (file, line), n in own.most_common(a.top):
        print(f"{100 * n / total:5.1f}% {file.split('/')[-1]}:{line} {src.get((file, line), '').strip()[:80]}")
    print(f"-- by line of {a.kernel_file} (inlined code counted with the line before it)")
    for line in sorted(k for k in kernel if k is not None):
        if kernel[line] * 200 >= total:
            print(f"{a.kernel_file}:{line} {100 * kernel[line] / total:5.1f}%")
    if a.phases:
        starts = sorted((int(p.split(":", 1)[0]), p.split(":", 1)[1]) for p in a.phases.split(","))
        sums = collections.OrderedDict((name, 0) for _, name in starts)
        for line, n in kernel.items():
            name = starts[0][1]
            for first, nm in starts:
                if line is not None and line >= first:
                    name = nm
            sums[name] += n
        print("-- phases")
        for name, n in sums.items():
            print(f"{100 * n / total:5.1f}% {name}")


if __name__ == "__main__":
    main()
