"""Compare runs: the same metrics of several runs' metrics.csv side by side, one colour per run in
every panel, and one table of their final numbers and of the flags they differ in.

    python grpo.py --out_dir out/grpo_a
    python grpo.py --out_dir out/grpo_drgrpo --no-use_std_normalization \
        --length_normalization constant
    python compare.py out/grpo_a out/grpo_drgrpo                # writes out/compare.png
    python compare.py out/grpo_a out/grpo_drgrpo --metrics eval_accuracy response_len entropy

Each run is a folder written by a script of this repository (metrics.csv, and summary.json once
it has finished). Columns logged at every step (rollout reward, entropy...) are drawn as a
trailing mean over --smooth steps; those logged every N steps (the held-out eval_* columns) as
measured, with a marker at each.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from runs import UserError, new_figure, require, save_figure

DEFAULT_METRICS = ["eval_accuracy", "reward", "response_len", "entropy", "kl_per_token", "loss"]
MAX_DEFAULT = 6  # panels drawn when --metrics is not given: those of DEFAULT_METRICS every run has


def read_run(folder: str) -> dict:
    """A run's metrics.csv rows (numbers, None where blank), its summary.json ({} while it runs)."""
    path = os.path.join(folder, "metrics.csv")
    require(os.path.isfile(path), f"{folder}: no metrics.csv (is it a run's --out_dir?)")
    with open(path, newline="") as f:
        rows = [{k: float(v) if v not in ("", None) else None for k, v in row.items()}
                for row in csv.DictReader(f)]
    require(rows, f"{path} has no rows")
    summary_path = os.path.join(folder, "summary.json")
    summary = {}
    if os.path.isfile(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
    return {"name": folder.rstrip("/"), "rows": rows, "summary": summary}


def column(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric where it was logged."""
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return tuple(map(list, zip(*points))) if points else ([], [])


def trailing_mean(values: list[float], k: int) -> list[float]:
    return [sum(values[max(0, i - k + 1):i + 1]) / len(values[max(0, i - k + 1):i + 1])
            for i in range(len(values))]


def pick_metrics(runs: list[dict], asked: list[str] | None) -> list[str]:
    """The metrics asked for, each checked to be a column of every run; else the defaults that
    every run has."""
    columns = [set(k for row in run["rows"] for k, v in row.items() if v is not None)
               for run in runs]
    if asked is None:
        shared = set.intersection(*columns)
        return [m for m in DEFAULT_METRICS if m in shared][:MAX_DEFAULT] or ["eval_accuracy"]
    for metric in asked:
        missing = [run["name"] for run, cols in zip(runs, columns) if metric not in cols]
        require(not missing, f"no column {metric!r} in {', '.join(missing)} (its columns: "
                             f"{', '.join(sorted(columns[0] - {'step'}))})")
    return asked


def differing_flags(runs: list[dict]) -> dict[str, list]:
    """The config fields whose values differ among the finished runs (out_dir aside); "-" for
    a run not finished (its summary.json, which holds the config, is written at the end)."""
    configs = [run["summary"].get("config") for run in runs]
    known = [c for c in configs if c is not None]
    keys = sorted(set().union(*known) - {"out_dir", "overwrite", "resume"}) if known else []
    return {k: [c.get(k, "-") if c is not None else "-" for c in configs] for k in keys
            if len({json.dumps(c.get(k)) for c in known}) > 1}


def table(runs: list[dict], metrics: list[str]) -> str:
    """One row per run: steps, start and final held-out accuracy, wall time, each metric's last
    value, and the flags the runs differ in."""
    flags = differing_flags(runs)
    header = (["run", "last step", "start acc", "final acc", "wall s"] + metrics
              + [f"--{k}" for k in flags])
    lines = []
    for i, run in enumerate(runs):
        s, rows = run["summary"], run["rows"]
        last = {m: column(rows, m)[1][-1] if column(rows, m)[1] else None for m in metrics}
        cells = [run["name"], f"{rows[-1]['step']:.0f}",
                 fmt(s.get("start_accuracy", rows[0].get("eval_accuracy"))),
                 fmt(s.get("final_accuracy")), fmt(s.get("wall_seconds"), 0)]
        cells += [fmt(last[m]) for m in metrics] + [str(v[i]) for v in flags.values()]
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
    note = "" if all(r["summary"] for r in runs) else "\n(no summary.json: a run not finished)"
    return "\n".join([render(header), render(["-" * w for w in widths])]
                     + [render(c) for c in lines]) + note


def fmt(value, decimals: int = 3) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def plot(runs: list[dict], metrics: list[str], smooth: int, path: str) -> None:
    import matplotlib.pyplot as plt
    fig, axes = new_figure(len(metrics), "")  # the legend above names the runs
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, metrics):
        smoothed = False
        for i, run in enumerate(runs):
            steps, values = column(run["rows"], metric)
            every_step = len(steps) >= len(run["rows"]) - 1  # not held-out, not every N steps
            if every_step and smooth > 1:
                values, smoothed = trailing_mean(values, smooth), True
            ax.plot(steps, values, color=colors[i % len(colors)],
                    label=f"_{run['name']}",  # no legend per panel: one for the figure, below
                    marker="." if not every_step or len(steps) < 30 else None)
        ax.set_title(f"{metric} ({smooth}-step mean)" if smoothed else metric)
        ax.set_xlabel("step")
    fig.legend(axes[0].get_lines(), [run["name"] for run in runs], loc="outside upper center",
               ncol=min(3, len(runs)), frameon=False)
    save_figure(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="compare.py", description="Draw several runs' metrics side by side and print a "
        "table of their final numbers.")
    parser.error = lambda message: parser.exit(2, f"compare.py: error: {message}\n")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="output folders of runs (each holds metrics.csv)")
    parser.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                        help=f"metrics.csv columns to draw (default: those of "
                             f"{', '.join(DEFAULT_METRICS)} that every run has)")
    parser.add_argument("--smooth", type=int, default=10, metavar="N",
                        help="trailing mean over N steps for per-step columns (default: 10)")
    parser.add_argument("--out", default="out/compare.png",
                        help="the figure (default: out/compare.png)")
    args = parser.parse_args(argv)
    try:
        require(args.smooth >= 1, "--smooth must be >= 1")
        require(len(set(args.runs)) == len(args.runs), "a run is named twice")
        runs = [read_run(folder) for folder in args.runs]
        metrics = pick_metrics(runs, args.metrics)
        require(not os.path.isdir(args.out), f"--out {args.out} is a folder; name a .png file")
        print(table(runs, metrics))
        plot(runs, metrics, args.smooth, args.out)
    except UserError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
