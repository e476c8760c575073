"""GRPO's advantage with and without the std division and the baseline.

Claim (the lecture, REINFORCE): a baseline (the group mean) leaves the expected gradient
unchanged but cuts its variance, so learning is faster than on the raw reward, and much faster
once the reward has a large common part: here +1 for the format, which nearly every response
earns and which only adds noise without a baseline. Dividing by the group std (DeepSeekMath;
Dr. GRPO drops it) rescales each group's advantages to unit size. All runs are on-policy
REINFORCE for 100 steps. The verdicts compare final held-out accuracies: the mean-only baseline
against each no-baseline run, and mean and std against mean only.
"""
from __future__ import annotations

import grpo
from experiments.common import (column, last, new_figure, reward_plus_format, save_figure,
                                smooth, start_and, train_script)

DESCRIPTION = "GRPO advantage with and without the std division and the baseline: held-out accuracy"

# Every run, beside grpo.py's defaults: 100 steps (the cosine still ends at lr / 10), sampled at
# 0.7 in groups of 8, so that more groups have a reward spread for the baselines to act on.
GRPO = dict(steps=100, temperature=0.7, group_size=8, eval_every=20, samples_every=1000)
NO_BASELINE = dict(loss_type="no_baseline", use_std_normalization=False)
VARIANTS = {  # label -> (run name, flags)
    "mean and std (GRPO)": ("mean_std", dict(loss_type="reinforce_with_baseline")),
    "mean only (Dr. GRPO)": ("mean_only", dict(loss_type="reinforce_with_baseline",
                                               use_std_normalization=False)),
    "no baseline, 0/1 reward": ("no_baseline", NO_BASELINE),
    "no baseline, reward + format": ("no_baseline_format", NO_BASELINE)}
REWARDS = {"no baseline, reward + format": reward_plus_format(1.0)}  # the others: reward_fn


def run(args) -> dict:
    runs = {label: train_script(grpo, args, f"std_baseline/{name}", reward=REWARDS.get(label),
                                **GRPO, **flags)
            for label, (name, flags) in VARIANTS.items()}
    fig, (acc, reward, grad) = new_figure(3, "GRPO advantage: group mean and std, mean only, "
                                             "no baseline")
    results = {}
    for label, rows in runs.items():
        acc.plot(*start_and(rows, args, f"std_baseline/{VARIANTS[label][0]}", "eval_accuracy"),
                 marker=".", label=label)
        steps, rewards = column(rows, "answer_reward")
        reward.plot(steps, smooth(rewards), label=label)
        steps, norms = column(rows, "grad_norm")
        grad.plot(steps, smooth(norms), label=label)
        results[label] = {"final_accuracy": last(rows, "eval_accuracy"),
                          "rollout_accuracy_last_20": last(rows, "answer_reward", 20),
                          "grad_norm_mean": sum(norms) / len(norms)}
    acc.set_title("held-out greedy accuracy")
    reward.set_title("rollout accuracy (10-step mean)")
    grad.set_title("gradient norm, clipped at 1 (10-step mean)")
    acc.legend(fontsize=7)
    save_figure(fig, args, "std_baseline")

    final = {label: r["final_accuracy"] for label, r in results.items()}
    mean_only = final["mean only (Dr. GRPO)"]
    return {**results,
            "baseline_beats_raw_reward": mean_only > final["no baseline, 0/1 reward"],
            "baseline_beats_shifted_reward": mean_only > final["no baseline, reward + format"],
            "std_beats_mean_only": final["mean and std (GRPO)"] > mean_only}
