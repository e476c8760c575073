"""The strength beta of GRPO's KL penalty: KL to the reference against held-out accuracy.

Claim (the lecture, DeepSeekMath's beta KL(pi_theta || pi_ref) term): a larger beta keeps the
policy closer to the reference, at the price of less reward: final KL falls as beta grows, and
so, past some point, does accuracy. Three runs of 100 steps, beta in BETAS. The verdict,
thresholds fixed before the run: the final KL falls at least KL_FACTOR_MIN times from each beta
to the next, and the final held-out accuracy at the largest beta is at least ACCURACY_DROP_MIN
below beta 0's, never rising by more than NOISE from one beta to the next (about two standard
errors of a 500-problem accuracy; a larger spread between seeds would blur the ordering).
"""
from __future__ import annotations

import grpo
from experiments.common import column, last, new_figure, save_figure, start_and, train_script

DESCRIPTION = "GRPO KL penalty strength beta: KL to the reference vs held-out accuracy"
BETAS = (0.0, 1.0, 10.0)  # 0.04 (DeepSeekMath) barely differs from 0 on this task
KL_FACTOR_MIN = 2.0  # final KL(beta) / KL(next beta), at least
ACCURACY_DROP_MIN = 0.10  # final accuracy at beta 0 minus at the largest beta, at least
NOISE = 0.05  # accuracy may rise this much from one beta to the next and still count as falling
# Every run, beside grpo.py's defaults: 100 steps (the cosine still ends at lr / 10), sampled at
# 0.7 in groups of 8, every row trained (so that the KL is measured over the whole batch).
GRPO = dict(steps=100, temperature=0.7, group_size=8, skip_zero_advantage=False, eval_every=20,
            samples_every=1000)


def run(args) -> dict:
    runs = {beta: train_script(grpo, args, f"kl_beta/beta_{beta:g}", **GRPO, beta=beta)
            for beta in BETAS}
    fig, (acc, kl, tradeoff) = new_figure(3, "GRPO with a KL penalty (k3, per token) of weight "
                                             "beta")
    results = {}
    for beta, rows in runs.items():
        label = f"beta {beta:g}"
        acc.plot(*start_and(rows, args, f"kl_beta/beta_{beta:g}", "eval_accuracy"), marker=".",
                 label=label)
        # With beta 0 the KL is only measured at the evaluation steps.
        kl.plot(*column(rows, "kl_per_token"), marker=".", markersize=3, label=label)
        eval_steps = set(column(rows, "eval_accuracy")[0])
        # The KL at the last 2 evaluations: the same steps for every beta.
        final_kl = [r["kl_per_token"] for r in rows if r["step"] in eval_steps][-2:]
        point = results[f"beta_{beta:g}"] = {"final_accuracy": last(rows, "eval_accuracy"),
                                             "final_kl": sum(final_kl) / len(final_kl)}
        tradeoff.scatter(point["final_kl"], point["final_accuracy"])
        tradeoff.annotate(label, (point["final_kl"], point["final_accuracy"]), fontsize=8)
    acc.set_title("held-out greedy accuracy")
    kl.set_title("KL to the reference per token (rollouts)")
    tradeoff.set_title("end of run: accuracy vs KL")
    tradeoff.set_xlabel("KL per token (mean of the last 2 evaluations)")
    kl.set_yscale("log")
    tradeoff.set_xscale("log")
    acc.legend(fontsize=8)
    kl.legend(fontsize=8)
    save_figure(fig, args, "kl_beta")

    kls = [results[f"beta_{b:g}"]["final_kl"] for b in BETAS]
    accs = [results[f"beta_{b:g}"]["final_accuracy"] for b in BETAS]
    kl_falls = all(a >= KL_FACTOR_MIN * b for a, b in zip(kls, kls[1:]))
    accuracy_falls = (accs[0] - accs[-1] >= ACCURACY_DROP_MIN
                      and all(b <= a + NOISE for a, b in zip(accs, accs[1:])))
    return {**results, "kl_falls_with_beta": kl_falls, "accuracy_falls_with_beta": accuracy_falls,
            "claim_holds": kl_falls and accuracy_falls}
