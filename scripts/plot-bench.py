#!/usr/bin/env python3
"""Summarises repeated `weir bench --json` runs: the median of each figure per partition count,
mode and handler, printed as a Markdown table, and throughput against partitions plotted to a
PNG, one line per mode (`-` instead of a PNG for the table alone).

    scripts/plot-bench.py bench/throughput.png bench/run1.json bench/run2.json ...

A mode's share of raw's throughput, and its multiple of raw-serial's, are the medians of the
ratios within each run, so that a run the shared machine slowed slows every mode alike.
The plot needs matplotlib (`.venv/bin/pip install matplotlib`); nothing else in weir does.
"""
import json
import statistics
import sys

FIGURES = ["msgs_per_sec", "p50_us", "p99_us", "p999_us", "cpu_seconds", "peak_rss_bytes"]
STYLES = {
    "raw": "k-o",
    "raw-serial": "k:o",
    "native": "b-s",
    "wasm (noop)": "g-^",
    "wasm (orders)": "r-v",
}


def label(run):
    return f"wasm ({run['handler']})" if run["mode"] == "wasm" else run["mode"]


def medians(files):
    """{(partitions, label): {figure: median}} over every file, in first-seen order, with the
    medians of the per-run ratios to raw and raw-serial as "÷ raw" and "× raw-serial"."""
    samples, ratios = {}, {}
    for path in files:
        with open(path) as f:
            runs = json.load(f)["runs"]
        per_run = {(run["partitions"], label(run)): run["msgs_per_sec"] for run in runs}
        for run in runs:
            key = (run["partitions"], label(run))
            samples.setdefault(key, []).append(run)
            for base in ("raw", "raw-serial"):
                baseline = per_run.get((run["partitions"], base))
                if baseline:
                    ratios.setdefault((key, base), []).append(run["msgs_per_sec"] / baseline)
    summary = {}
    for key, runs in samples.items():
        summary[key] = {figure: statistics.median(run[figure] for run in runs) for figure in FIGURES}
        for base, name in (("raw", "÷ raw"), ("raw-serial", "× raw-serial")):
            shares = ratios.get((key, base))
            summary[key][name] = statistics.median(shares) if shares else None
    return summary, samples


def table(summary):
    lines = [
        "| partitions | mode | msgs/s | ÷ raw | × raw-serial | p50 µs | p99 µs | p999 µs | CPU s "
        "| peak RSS MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (partitions, name), m in summary.items():
        share = "–" if m["÷ raw"] is None else f"{m['÷ raw']:.2f}"
        multiple = "–" if m["× raw-serial"] is None else f"{m['× raw-serial']:.1f}"
        lines.append(
            f"| {partitions} | {name} | {m['msgs_per_sec']:,.0f} | {share} | {multiple} "
            f"| {m['p50_us']:,.0f} | {m['p99_us']:,.0f} | {m['p999_us']:,.0f} "
            f"| {m['cpu_seconds']:.2f} | {m['peak_rss_bytes'] / 2**20:.0f} |"
        )
    return "\n".join(lines)


def plot(summary, samples, target, runs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    names = list(dict.fromkeys(name for _, name in summary))
    for name in names:
        points = sorted((p, m["msgs_per_sec"]) for (p, n), m in summary.items() if n == name)
        xs, ys = zip(*points)
        ax.plot(xs, ys, STYLES.get(name, "-x"), label=name)
        # Every sample, faintly, so the spread shows.
        for (p, n), group in samples.items():
            if n == name:
                ax.scatter([p] * len(group), [r["msgs_per_sec"] for r in group],
                           s=8, alpha=0.3, color=STYLES.get(name, "k")[0])
    partitions = sorted({p for p, _ in summary})
    ax.set_xscale("log", base=2)
    ax.set_xticks(partitions)
    ax.set_xticklabels([str(p) for p in partitions])
    ax.set_xlabel("partitions")
    ax.set_ylabel("messages acked per second (median)")
    first = next(iter(samples.values()))[0]
    ax.set_title(
        f"weir bench, 2 cores: {first['messages']:,} messages of "
        f"{first['payload_bytes']} B per run, median of {runs}"
    )
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(target)


def main(target, files):
    summary, samples = medians(files)
    print(table(summary))
    if target != "-":
        plot(summary, samples, target, len(files))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
