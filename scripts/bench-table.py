#!/usr/bin/env python3
"""Prints, as a Markdown table, the median of every figure over several `weir bench --json`
runs, with each mode's throughput as a share of raw's and a multiple of raw-serial's (medians
of the per-run ratios, so that a slow run slows every mode alike).

    scripts/bench-table.py bench/run1.json bench/run2.json bench/run3.json
"""

import json
import statistics
import sys
from collections import defaultdict


def key(run):
    return (run["partitions"], run["mode"], run["handler"])


def main(paths):
    if not paths:
        sys.exit(__doc__)
    figures = defaultdict(list)
    ratios = defaultdict(lambda: {"raw": [], "raw-serial": []})
    for path in paths:
        with open(path) as file:
            runs = json.load(file)["runs"]
        by_key = {key(run): run for run in runs}
        for run in runs:
            figures[key(run)].append(run)
            for base in ("raw", "raw-serial"):
                baseline = by_key.get((run["partitions"], base, "-"))
                if baseline and baseline["msgs_per_sec"] > 0:
                    ratios[key(run)][base].append(run["msgs_per_sec"] / baseline["msgs_per_sec"])

    def median(runs, field):
        return statistics.median(run[field] for run in runs)

    print("| partitions | mode | msgs/s | ÷ raw | × raw-serial | p50 µs | p99 µs | p999 µs | CPU s | peak RSS MiB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {"raw": 0, "raw-serial": 1, "native": 2, "wasm": 3}
    for k in sorted(figures, key=lambda k: (k[0], order.get(k[1], 9), k[2])):
        runs = figures[k]
        partitions, mode, handler = k
        name = f"wasm ({handler})" if mode == "wasm" else mode
        share = ratios[k]["raw"]
        multiple = ratios[k]["raw-serial"]
        cells = [
            str(partitions),
            name,
            f"{median(runs, 'msgs_per_sec'):,.0f}",
            f"{statistics.median(share):.2f}" if share else "–",
            f"{statistics.median(multiple):.1f}" if multiple else "–",
            f"{median(runs, 'p50_us'):,.0f}",
            f"{median(runs, 'p99_us'):,.0f}",
            f"{median(runs, 'p999_us'):,.0f}",
            f"{median(runs, 'cpu_seconds'):.2f}",
            f"{median(runs, 'peak_rss_bytes') / 2**20:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main(sys.argv[1:])
