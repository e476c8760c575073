"""Expert iteration against GRPO on the same number of sampled responses, and pass@k.

Claims (the lecture; CS336 section 5; Yue et al. 2025): expert iteration, SFT on the policy's
own verified samples, is a cheap policy-improvement baseline that GRPO should beat per sample;
and RL from verifiable rewards mostly sharpens: pass@1 rises while pass@64 stays flat or falls,
because it reweights answers the model can already sample rather than finding new ones.
Both start from the same SFT model and sample the same number of responses (EI: 6 steps x 512
questions x 8; GRPO: 96 steps x 32 prompts x 8). A model counts as sharpened if its pass@1 is
above the SFT model's and its pass@k at the largest k at most SHARPEN_TOLERANCE above it.
"""
from __future__ import annotations

import os
import time

import expert_iteration
import grpo
from experiments.common import (MODEL_COLORS, new_figure, pass_at_k_of, plot_pass_at_k,
                                read_summary, save_figure, train_script)

DESCRIPTION = ("Expert iteration vs GRPO, same sampled responses: accuracy per sample and per "
               "second, pass@k")
SHARPEN_TOLERANCE = 0.02  # pass@k at the largest k may rise this much and still count as flat
RUNS = (("expert iteration", "expert_iteration"), ("GRPO", "grpo"))  # (label, run name)
# GRPO beside grpo.py's defaults: sampled at 0.7 in groups of 8 (expert iteration's temperature and
# group size), every row trained.
GRPO = dict(temperature=0.7, group_size=8, skip_zero_advantage=False, eval_every=8,
            samples_every=1000)


def run(args) -> dict:
    ei_steps = 1 if args.quick else 6
    ei_config = expert_iteration.Config
    budget = ei_steps * ei_config.questions_per_step * ei_config.group_size  # responses sampled
    grpo_steps = 2 if args.quick else budget // grpo.Config.rollout_batch_size
    # CPU seconds of this process as well as wall seconds: on a shared machine the wall clock also
    # counts the other jobs; with one thread (OMP_NUM_THREADS=1) CPU time is what the run costs.
    started = time.process_time()
    rows = {"expert_iteration": train_script(expert_iteration, args, "ei_vs_grpo/expert_iteration",
                                             n_ei_steps=ei_steps)}
    cpu = {"expert_iteration": time.process_time() - started}
    started = time.process_time()
    rows["grpo"] = train_script(grpo, args, "ei_vs_grpo/grpo", steps=grpo_steps, **GRPO)
    cpu["grpo"] = time.process_time() - started
    rollout_batch_size = 16 if args.quick else grpo.Config.rollout_batch_size
    for row in rows["grpo"]:  # GRPO samples rollout_batch_size responses per step
        row["sampled_responses"] = row["step"] * rollout_batch_size
    checkpoints = {"SFT": args.sft_checkpoint,
                   **{label: os.path.join(args.out_dir, "ei_vs_grpo", name, "model.pt")
                      for label, name in RUNS}}
    passk = {label: pass_at_k_of(path, args) for label, path in checkpoints.items()}

    fig, (per_sample, per_second, entropy, ks) = new_figure(
        4, "Expert iteration vs GRPO from the same SFT model, same number of sampled responses")
    results = {}
    for label, name in RUNS:
        summary, run_rows = read_summary(args, f"ei_vs_grpo/{name}"), rows[name]
        evals = [r for r in run_rows if r.get("eval_accuracy") is not None]
        start, color = summary["start_accuracy"], MODEL_COLORS[label]
        accuracy = [start] + [r["eval_accuracy"] for r in evals]
        per_sample.plot([0] + [r["sampled_responses"] for r in evals], accuracy, marker=".",
                        label=label, color=color)
        scale = cpu[name] / run_rows[-1]["seconds"]  # wall -> CPU seconds, as a run-wide ratio
        per_second.plot([0] + [r["seconds"] * scale for r in evals], accuracy, marker=".",
                        label=label, color=color)
        entropy.plot([r["sampled_responses"] for r in run_rows], [r["entropy"] for r in run_rows],
                     label=label, color=color)
        results[name] = {"start_accuracy": start, "final_accuracy": summary["final_accuracy"],
                         "wall_seconds": summary["wall_seconds"],
                         "cpu_seconds": round(cpu[name], 1),
                         "sampled_responses": run_rows[-1]["sampled_responses"],
                         "entropy_first": run_rows[0]["entropy"],
                         "entropy_last": run_rows[-1]["entropy"], "pass_at_k": passk[label]}
    per_sample.set_xlabel("responses sampled")
    per_sample.set_title("held-out greedy accuracy", fontsize=9)
    per_second.set_xlabel("CPU seconds of the run (wall time rescaled)")
    per_second.set_title("held-out greedy accuracy", fontsize=9)
    entropy.set_xlabel("responses sampled")
    entropy.set_title("token entropy on rollouts (nats, at T = 0.7)", fontsize=9)
    per_sample.legend(fontsize=7)
    plot_pass_at_k(ks, passk)
    save_figure(fig, args, "ei_vs_grpo")

    sft = passk["SFT"]
    top = f"pass@{max(int(k[5:]) for k in sft if k.startswith('pass@'))}"
    sharpened = {name: passk[label]["pass@1"] > sft["pass@1"]
                 and passk[label][top] <= sft[top] + SHARPEN_TOLERANCE for label, name in RUNS}
    return {**results, "pass_at_k_sft": sft, "top_k": top, "sharpened": sharpened,
            "grpo_beats_ei_per_sample":
                results["grpo"]["final_accuracy"] > results["expert_iteration"]["final_accuracy"]}
