"""Expert iteration against GRPO on the same number of sampled responses, and pass@k.

Claims (the lecture; CS336 section 5; Yue et al. 2025, arXiv:2504.13837): RL from verifiable
rewards mostly sharpens: pass@1 rises while pass@k at large k does not, because it reweights
answers the model can already sample rather than finding new ones. Expert iteration, SFT on the
policy's own verified samples, is the cheap baseline it is compared with, per sampled response.
Both start from the same SFT model and sample the same number of responses (EI: 6 steps x 512
questions x 8; GRPO: 96 steps x 32 prompts x 8). pass@k comes from n samples per held-out problem;
its noise is the standard error of the mean per-problem difference from the SFT model (the same
problems for both). The claim holds if GRPO's pass@1 is above the SFT model's by more than Z_SE
standard errors and its pass@k at the largest k is not above it by more than Z_SE standard errors.
Yue et al.'s crossover (the base model's pass@k above RL's at large k) is reported, not required.
"""
from __future__ import annotations

import math
import os
import time

import expert_iteration
import grpo
from evaluation import pass_at_k
from experiments.common import (MODEL_COLORS, new_figure, pass_at_k_of, plot_pass_at_k,
                                read_summary, save_figure, train_script)

DESCRIPTION = ("Expert iteration vs GRPO, same sampled responses: accuracy per sample and per "
               "second, pass@k")
Z_SE = 2.0  # a difference counts when it is more than 2 standard errors (fixed before the run)
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
    passk = {label: pass_at_k_of(path, args, keep_counts=True)
             for label, path in checkpoints.items()}
    counts = {label: result.pop("correct_counts") for label, result in passk.items()}

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
    n, top_k = sft["n"], max(int(k[5:]) for k in sft if k.startswith("pass@"))
    top = f"pass@{top_k}"
    versus_sft = {}  # per model: pass@1 and pass@top minus the SFT model's, with standard errors
    for label, name in RUNS:
        d1, se1 = paired_difference(counts[label], counts["SFT"], n, 1)
        dk, sek = paired_difference(counts[label], counts["SFT"], n, top_k)
        versus_sft[name] = {"pass@1_gain": d1, "pass@1_gain_se": se1, f"{top}_gain": dk,
                            f"{top}_gain_se": sek, "pass@1_up": d1 > Z_SE * se1,
                            f"{top}_not_up": dk <= Z_SE * sek,
                            "crossover": dk < -Z_SE * sek}  # the base ahead at large k
    grpo_sharpens = versus_sft["grpo"]["pass@1_up"] and versus_sft["grpo"][f"{top}_not_up"]
    return {**results, "pass_at_k_sft": sft, "top_k": top, "z_se": Z_SE,
            "versus_sft": versus_sft,
            "grpo_beats_ei_per_sample":
                results["grpo"]["final_accuracy"] > results["expert_iteration"]["final_accuracy"],
            "claim_holds": grpo_sharpens}


def paired_difference(counts: list[int], base_counts: list[int], n: int, k: int):
    """(mean, standard error) over problems of pass@k minus the base model's pass@k, from the
    number of correct samples out of n on each problem (the same problems for both)."""
    diffs = [pass_at_k(n, c, k) - pass_at_k(n, b, k) for c, b in zip(counts, base_counts)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1)  # unbiased
    return mean, math.sqrt(var / len(diffs))
