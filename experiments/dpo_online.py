"""DPO is offline: pairs built once go stale. Iterative DPO and GRPO on the same sampled responses.

Claims (the lecture): "DPO is roughly an offline algorithm: a large set of pairs collected up
front"; "DPO does not suit math problems, because there are no paired answers". A math problem
comes with a checker, not with pairs: dpo.py makes them by sampling k answers per prompt and
pairing a right one with a wrong one, so a prompt gives a pair only where the policy is sometimes
right and sometimes wrong, and the pairs say only what the policy got wrong when they were drawn.
Three runs from the same SFT model, each sampling SAMPLES responses for training: offline DPO
(dpo.py's defaults: 2048 prompts x 8, once, then 200 steps), iterative DPO (the same 200 steps, new
pairs from the current policy every REBUILD_EVERY steps, 1/8 of the prompts each time; the
reference stays the SFT model, as in Xiong et al. 2024, arXiv:2312.11456, and Guo et al. 2024,
arXiv:2402.04792) and GRPO (grpo.py's defaults, SAMPLES / 256 steps). Every evaluation also
samples pairs from the policy as it is then, on held-out prompts, and scores the implicit reward
beta log pi/pi_ref on them (fresh pairs).
The claims hold if offline DPO's pairs go stale: at its end its implicit reward ranks fresh pairs
at least STALE_GAP_MIN worse than the held-out pairs of the SFT model it was trained on, and at
least FRESH_GAIN_MIN worse than iterative DPO's ranks its own fresh pairs; and if rebuilding
closes part of the gap to GRPO: iterative DPO's final accuracy at least ACCURACY_GAIN_MIN above
offline DPO's, and at most GRPO's + ACCURACY_GAIN_MIN.
"""
from __future__ import annotations

import dpo
import grpo
from experiments.common import new_figure, read_summary, save_figure, train_script

DESCRIPTION = ("Offline vs iterative DPO vs GRPO on the same sampled responses: accuracy, and the "
               "implicit reward on fresh pairs")

# Thresholds, fixed before any full run. With 500 held-out problems an accuracy is +-0.02 (one
# standard error); fresh pairs number a hundred or more, so their accuracy is +-0.04.
STALE_GAP_MIN = 0.1  # offline: held-out SFT pairs minus fresh pairs, at the end
FRESH_GAIN_MIN = 0.1  # iterative minus offline DPO, implicit reward on fresh pairs, at the end
ACCURACY_GAIN_MIN = 0.05  # iterative minus offline DPO, final held-out accuracy
# The budget and the runs.
REBUILD_EVERY = 25  # iterative DPO: steps per pair set
FRESH = dict(fresh_pair_prompts=200, eval_every=25)  # both DPO runs: fresh pairs every 25 steps
ITERATIVE = dict(rebuild_pairs_every=REBUILD_EVERY,
                 n_prompts=dpo.Config.n_prompts * REBUILD_EVERY // dpo.Config.steps)
SAMPLES = dpo.Config.n_prompts * dpo.Config.samples_per_prompt  # responses sampled for training
GRPO = dict(steps=SAMPLES // grpo.Config.rollout_batch_size, eval_every=8, samples_every=1000)
RUNS = {"offline DPO": "offline", "iterative DPO": "iterative", "GRPO": "grpo"}
COLORS = {"offline DPO": "tab:red", "iterative DPO": "tab:purple", "GRPO": "tab:orange"}


def run(args) -> dict:
    fresh = {**FRESH, "fresh_pair_prompts": 8} if args.quick else FRESH  # --quick: a few
    iterative = {**fresh, **ITERATIVE, **({"rebuild_pairs_every": 1} if args.quick else {})}
    rows = {"offline": train_script(dpo, args, "dpo_online/offline", **fresh),
            "iterative": train_script(dpo, args, "dpo_online/iterative", **iterative),
            "grpo": train_script(grpo, args, "dpo_online/grpo", **GRPO)}
    offline_samples = (read_summary(args, "dpo_online/offline")["train_preference_set"]["prompts"]
                       * dpo.Config.samples_per_prompt)
    rollout = read_summary(args, "dpo_online/grpo")["config"]["rollout_batch_size"]
    for row in rows["offline"]:  # every response was sampled before the first step
        row["sampled_responses"] = offline_samples
    for row in rows["grpo"]:
        row["sampled_responses"] = row["step"] * rollout
    results = {}
    for label, name in RUNS.items():
        summary = read_summary(args, f"dpo_online/{name}")
        evals = [r for r in rows[name] if r.get("eval_accuracy") is not None]
        first_build = (summary["train_preference_set"]["prompts"] * dpo.Config.samples_per_prompt
                       if name != "grpo" else 0)  # what was sampled before step 1
        results[name] = {
            "start_accuracy": summary["start_accuracy"],
            "final_accuracy": summary["final_accuracy"],
            "sampled_responses": rows[name][-1]["sampled_responses"],
            "curve": {"step": [0] + [r["step"] for r in evals],
                      "sampled_responses": [first_build] + [r["sampled_responses"]
                                                            for r in evals],
                      "accuracy": [summary["start_accuracy"]] + [r["eval_accuracy"]
                                                                 for r in evals]}}
        if name != "grpo":
            results[name]["curve"].update(
                preference_accuracy=[r["eval_preference_accuracy"] for r in evals],
                fresh_preference_accuracy=[r["eval_fresh_preference_accuracy"] for r in evals],
                fresh_pairs=[r["eval_fresh_pairs"] for r in evals])
            results[name].update(
                final_preference_accuracy=summary["final_preference_accuracy"],
                final_fresh_preference_accuracy=summary["final_fresh_preference_accuracy"])
    plot(results, args)

    off, it, rl = results["offline"], results["iterative"], results["grpo"]
    stale_gap = off["final_preference_accuracy"] - (off["final_fresh_preference_accuracy"] or 0)
    fresh_gain = ((it["final_fresh_preference_accuracy"] or 0)
                  - (off["final_fresh_preference_accuracy"] or 0))
    accuracy_gain = it["final_accuracy"] - off["final_accuracy"]
    pairs_go_stale = stale_gap >= STALE_GAP_MIN and fresh_gain >= FRESH_GAIN_MIN
    closes_gap = (accuracy_gain >= ACCURACY_GAIN_MIN
                  and it["final_accuracy"] <= rl["final_accuracy"] + ACCURACY_GAIN_MIN)
    return {**results, "samples_per_run": SAMPLES, "offline_stale_gap": stale_gap,
            "iterative_fresh_gain": fresh_gain, "iterative_accuracy_gain": accuracy_gain,
            "gap_to_grpo_closed": (accuracy_gain / (rl["final_accuracy"] - off["final_accuracy"])
                                   if rl["final_accuracy"] > off["final_accuracy"] else None),
            "offline_pairs_go_stale": pairs_go_stale, "rebuilding_closes_gap": closes_gap}


def plot(results: dict, args) -> None:
    """Held-out accuracy against responses sampled and against steps; the implicit reward's
    accuracy on the SFT model's held-out pairs and on fresh pairs of the policy."""
    fig, (per_sample, per_step, reward) = new_figure(
        3, "Offline and iterative DPO and GRPO from the same SFT model, same sampled responses")
    for label, name in RUNS.items():
        curve, color = results[name]["curve"], COLORS[label]
        per_sample.plot(curve["sampled_responses"], curve["accuracy"], marker=".", color=color,
                        label=label)
        per_step.plot(curve["step"], curve["accuracy"], marker=".", color=color, label=label)
        if name != "grpo":
            steps = curve["step"][1:]
            reward.plot(steps, curve["preference_accuracy"], color=color, linestyle="--",
                        marker=".", label=f"{label}: the SFT model's pairs")
            reward.plot(steps, curve["fresh_preference_accuracy"], color=color, marker="o",
                        label=f"{label}: fresh pairs of the policy")
    per_sample.set_xlabel("responses sampled")
    per_sample.set_title("held-out greedy accuracy", fontsize=9)
    per_step.set_xlabel("optimizer step")
    per_step.set_title("held-out greedy accuracy", fontsize=9)
    reward.axhline(0.5, color="gray", linestyle=":", label="chance")
    reward.set_title("implicit reward ranks right above wrong", fontsize=9)
    reward.set_ylim(0.2, 1.02)
    for ax in (per_sample, reward):
        ax.legend(fontsize=7)
    save_figure(fig, args, "dpo_online")
