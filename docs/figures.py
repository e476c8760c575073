"""Draw the default runs' figures, docs/NAME_curves.png, from the metrics.csv of their three seeds
committed under docs/results/defaults/ (NAME.metrics.csv, NAME_seed1.metrics.csv, ...): the mean
over the seeds as a line, their range as a band, one colour per metric in every panel.

    python docs/figures.py        (docs/regenerate.sh runs it after the default runs)
"""
import csv
import json
import os
import pathlib
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import runs  # noqa: E402

RESULTS = ROOT / "docs" / "results" / "defaults"
SEEDS = ("", "_seed1", "_seed2")
SMOOTH = 10  # trailing mean over this many steps for the columns logged at every step

# NAME -> (title, panels: (panel title, metrics.csv columns))
FIGURES = {
    "sft": ("SFT from random weights", [
        ("training NLL per response token", ["nll_per_token"]),
        ("held-out greedy accuracy and format", ["eval_accuracy", "eval_format_rate"]),
        ("token entropy", ["entropy"])]),
    "grpo": ("GRPO from the SFT model", [
        ("held-out greedy accuracy", ["eval_accuracy"]),
        ("rollout reward (answer) and format", ["answer_reward", "format_reward"]),
        ("groups with zero reward spread", ["zero_spread_fraction"]),
        ("rollout response length", ["response_len_correct", "response_len_incorrect"]),
        ("token entropy of the rows trained", ["entropy"]),
        ("KL(pi || pi_ref) per token, at evaluations", ["kl_per_token"])]),
    "expert_iteration": ("Expert iteration from the SFT model", [
        ("held-out greedy accuracy", ["eval_accuracy"]),
        ("rollouts: reward, questions solved", ["reward", "solved_fraction"]),
        ("filtered set size |D_sft|", ["filtered_size"])]),
    "dpo": ("DPO on the SFT model's own preference pairs", [
        ("held-out greedy accuracy", ["eval_accuracy"]),
        ("implicit reward margin", ["rewards/margins"]),
        ("summed log-probs: chosen, rejected", ["logps/chosen", "logps/rejected"])]),
    "ppo": ("PPO from the SFT model (verifier score)", [
        ("held-out greedy accuracy", ["eval_accuracy"]),
        ("rollout accuracy", ["accuracy"]),
        ("KL(pi_old || pi_ref) per token", ["kl_per_token"]),
        ("critic's explained variance", ["explained_variance"]),
        ("clip fraction", ["clipfrac"]),
        ("response length", ["response_len"])]),
    "distill": ("On-policy distillation of the GRPO model into the SFT model", [
        ("held-out greedy accuracy", ["eval_accuracy"]),
        ("reverse KL(student || teacher) per token", ["reverse_kl"]),
        ("rollouts: right", ["answer_reward"])]),
}


def read_metrics(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()}
                for row in csv.DictReader(f)]


def seed_curves(seed_rows: list[list[dict]], key: str):
    """(steps, mean, low, high) over the seeds at every step all of them logged `key`; columns
    logged at every step first get a trailing mean over SMOOTH steps, per seed."""
    per_seed = []
    for rows in seed_rows:
        points = {r["step"]: r[key] for r in rows if r.get(key) is not None}
        steps = sorted(points)
        values = [points[s] for s in steps]
        if len(steps) >= len(rows) - 1:  # logged at every step: noisy, smooth it
            windows = [values[max(0, i - SMOOTH + 1):i + 1] for i in range(len(values))]
            values = [sum(w) / len(w) for w in windows]
        per_seed.append(dict(zip(steps, values)))
    steps = sorted(set.intersection(*(set(p) for p in per_seed)))
    columns = [[p[s] for p in per_seed] for s in steps]
    return (steps, [sum(c) / len(c) for c in columns], [min(c) for c in columns],
            [max(c) for c in columns])


def draw(name: str) -> str | None:
    paths = [RESULTS / f"{name}{seed}.metrics.csv" for seed in SEEDS]
    if not all(p.exists() for p in paths):
        print(f"skip {name}: no {', '.join(p.name for p in paths if not p.exists())}")
        return None
    import matplotlib.pyplot as plt
    seed_rows = [read_metrics(p) for p in paths]
    with open(RESULTS / f"{name}.json") as f:
        result = json.load(f)
    title, panels = FIGURES[name]
    fig, axes = runs.new_figure(len(panels), f"{title}: mean of {len(SEEDS)} seeds, their "
                                             f"range shaded")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {}  # one colour per metric across the figure's panels
    for ax, (panel, keys) in zip(axes, panels):
        smoothed = False
        for key in keys:
            steps, mean, low, high = seed_curves(seed_rows, key)
            if not steps:
                continue
            sparse = len(steps) < len(seed_rows[0]) - 1
            smoothed |= not sparse
            color = color_of.setdefault(key, colors[len(color_of) % len(colors)])
            ax.plot(steps, mean, color=color, label=key, marker="." if sparse else None)
            ax.fill_between(steps, low, high, color=color, alpha=0.25, linewidth=0)
        ax.set_title(textwrap.fill(panel + (f" ({SMOOTH}-step mean)" if smoothed else ""), 30))
        ax.set_xlabel("step")
    footer = (f"{result['command']} with --seed 0, 1, 2  |  code {result.get('commit', '?')}  |  "
              f"{result['machine']}")
    path = ROOT / "docs" / f"{name}_curves.png"
    runs.save_figure(fig, str(path), footer=footer)
    print(f"wrote {path.relative_to(ROOT)}")
    return str(path)


if __name__ == "__main__":
    os.chdir(ROOT)
    for figure in FIGURES:
        draw(figure)
