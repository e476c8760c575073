"""DPO with and without the NLL term on the chosen response.

Claim (the lecture; Pal et al. 2024, Pang et al. 2024): DPO only asks the chosen-minus-rejected
log-ratio to grow, and often gets there by pushing both log-probs down, the chosen one too,
which hurts generation; adding the NLL of the chosen response (RPO) keeps it up. Two default
dpo.py runs, NLL weight 1 and 0. The verdict, thresholds fixed before the run: without the NLL
term the chosen response's summed log-prob (mean of the last 10 steps against the first 10) falls
by at least LOGP_FALL_MIN nats, with it by less than LOGP_KEPT_MAX; and the final held-out
accuracy with the term is at least ACCURACY_GAP_MIN above the one without.
"""
from __future__ import annotations

import dpo
from experiments.common import (column, last, new_figure, save_figure, smooth, start_and,
                                train_script)

DESCRIPTION = "DPO with and without the NLL term: chosen and rejected log-probs, held-out accuracy"
NLL_WEIGHTS = (1.0, 0.0)
LOGP_FALL_MIN, LOGP_KEPT_MAX = 1.0, 0.25  # nats: the chosen log-prob's fall without, with NLL
ACCURACY_GAP_MIN = 0.10
DPO = dict(lr=3e-5, steps=400, eval_every=40)  # beside dpo.py's defaults: slower, longer


def run(args) -> dict:
    runs = {weight: train_script(dpo, args, f"dpo_nll/nll_{weight:g}", nll_weight=weight, **DPO)
            for weight in NLL_WEIGHTS}
    fig, (logps, acc) = new_figure(2, "DPO (sigmoid, beta 0.1) with NLL weight 1 (RPO) and 0 "
                                      "(the paper)")
    results = {}
    for (weight, rows), color in zip(runs.items(), ("C0", "C3")):
        steps, chosen = column(rows, "logps/chosen")
        steps, rejected = column(rows, "logps/rejected")
        logps.plot(steps, smooth(chosen), color=color, label=f"chosen, NLL {weight:g}")
        logps.plot(steps, smooth(rejected), color=color, linestyle="--",
                   label=f"rejected, NLL {weight:g}")
        acc.plot(*start_and(rows, args, f"dpo_nll/nll_{weight:g}", "eval_accuracy"), marker=".",
                 color=color, label=f"task accuracy, NLL {weight:g}")
        acc.plot(*column(rows, "eval_preference_accuracy"), linestyle=":", color=color,
                 label=f"preference accuracy, NLL {weight:g}")
        results[f"nll_{weight:g}"] = {
            "final_accuracy": last(rows, "eval_accuracy"),
            "final_preference_accuracy": last(rows, "eval_preference_accuracy"),
            "logps_chosen_first_10": sum(chosen[:10]) / len(chosen[:10]),
            "logps_chosen_last_10": last(rows, "logps/chosen", 10),
            "logps_rejected_first_10": sum(rejected[:10]) / len(rejected[:10]),
            "logps_rejected_last_10": last(rows, "logps/rejected", 10)}
    logps.set_title("summed response log-probs (10-step mean)")
    acc.set_title("held-out accuracy")
    logps.legend(fontsize=7)
    acc.legend(fontsize=7)
    save_figure(fig, args, "dpo_nll")

    pure, rpo = results["nll_0"], results["nll_1"]  # DPO alone, and with the NLL term (RPO)
    falls = pure["logps_chosen_first_10"] - pure["logps_chosen_last_10"] >= LOGP_FALL_MIN
    kept = rpo["logps_chosen_first_10"] - rpo["logps_chosen_last_10"] < LOGP_KEPT_MAX
    helps = rpo["final_accuracy"] - pure["final_accuracy"] >= ACCURACY_GAP_MIN
    return {**results, "chosen_falls_without_nll": falls, "chosen_kept_with_nll": kept,
            "nll_helps_accuracy": helps, "claim_holds": falls and kept and helps}
