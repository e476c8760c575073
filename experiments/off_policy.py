"""On-policy against off-policy GRPO: when does the clip act?

Claim (the lecture, PPO/GRPO-Clip): on-policy, pi_theta_old = pi_theta, the ratio is 1 and the
clip never acts; reusing a rollout batch for several optimizer steps makes the later steps
off-policy, the ratio drifts from 1 and the clip starts to bind (clip fraction > 0), while the
extra updates per rollout make learning faster per sampled response. The claim holds if the
on-policy run's mean clip fraction is exactly 0 and the off-policy run's is above 0; faster
learning is reported per rollout and per second.
"""
from __future__ import annotations

import grpo
from experiments.common import column, last, new_figure, save_figure, start_and, train_script

DESCRIPTION = "On-policy vs off-policy GRPO (2 epochs, 2 optimizer steps per epoch): clip fraction"
ON_POLICY, OFF_POLICY = "on-policy (1 step per rollout)", "off-policy (2 epochs x 2 batches)"
# Both runs, beside grpo.py's defaults: 120 steps (the cosine still ends at lr / 10), sampled at
# 0.7 in groups of 8, every row trained (the clip fraction is then over the whole batch).
GRPO = dict(steps=120, temperature=0.7, group_size=8, skip_zero_advantage=False, eval_every=20,
            samples_every=1000)
VARIANTS = {ON_POLICY: ("off_policy/on", dict()),  # label -> (run name, flags)
            OFF_POLICY: ("off_policy/off", dict(epochs_per_rollout_batch=2, train_batch_size=128))}


def run(args) -> dict:
    runs = {label: train_script(grpo, args, name, **GRPO, **flags)
            for label, (name, flags) in VARIANTS.items()}
    fig, (acc, clip, ratio) = new_figure(3, "GRPO-Clip on- and off-policy (cliprange 0.2)")
    results = {}
    for label, rows in runs.items():
        acc.plot(*start_and(rows, args, VARIANTS[label][0], "eval_accuracy"), marker=".",
                 label=label)
        steps, clipped = column(rows, "clip_fraction")
        clip.plot(steps, clipped, label=label)
        ratio.semilogy(*column(rows, "ratio_max"), label=label)
        results[label] = {"final_accuracy": last(rows, "eval_accuracy"),
                          "clip_fraction_mean": sum(clipped) / len(clipped),
                          "ratio_max_max": max(column(rows, "ratio_max")[1]),
                          "seconds": rows[-1]["seconds"]}
    acc.set_title("held-out greedy accuracy")
    clip.set_title("clip fraction (share of response tokens)")
    ratio.set_title("largest ratio pi_theta / pi_old in the batch")
    for ax in (acc, clip, ratio):
        ax.set_xlabel("rollout batch")
    acc.legend(fontsize=8)
    save_figure(fig, args, "off_policy")

    on, off = results[ON_POLICY], results[OFF_POLICY]
    # Per second rather than per rollout: the off-policy run's last evaluation within the
    # on-policy run's time.
    in_time = [r["eval_accuracy"] for r in runs[OFF_POLICY]
               if r["eval_accuracy"] is not None and r["seconds"] <= on["seconds"]]
    return {**results,
            "claim_holds": on["clip_fraction_mean"] == 0 and off["clip_fraction_mean"] > 0,
            "off_policy_learns_faster_per_rollout": off["final_accuracy"] > on["final_accuracy"],
            "off_policy_accuracy_at_on_policy_seconds": in_time[-1] if in_time else None}
