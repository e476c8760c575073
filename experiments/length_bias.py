"""GRPO's length bias: the per-sequence mean (DeepSeekMath) against a constant divisor (Dr. GRPO).

Claim (Dr. GRPO, Liu et al. 2025): dividing each response's summed loss by its own length |o_i|
shrinks the per-token penalty of a long wrong answer (and raises that of a short one), so wrong
answers drift longer; a constant divisor (max_new_tokens) treats every token alike. Both runs
start from the SFT model on mixed direct and scratchpad answers, so that a wrong answer can be
short (direct) or long (scratchpad). The claim holds if, from the first 10 to the last 10
rollout batches, wrong rollouts grow at least WRONG_LEN_EXCESS_MIN tokens more under 1/|o_i|
than under the constant.
"""
from __future__ import annotations

import grpo
from experiments.common import (column, first_and_last, last, mixed_sft, new_figure, save_figure,
                                smooth, start_and, train_script, with_direct_rate)

DESCRIPTION = "GRPO length bias: per-sequence mean (DeepSeekMath) vs a constant divisor (Dr. GRPO)"
# Threshold of the claim, fixed before any full run: growth of the wrong answers' length, tokens.
WRONG_LEN_EXCESS_MIN = 2.0
# Both runs, beside grpo.py's defaults: 100 steps of 16 prompts x 8 at 0.7, every row trained.
GRPO = dict(steps=100, rollout_batch_size=128, train_batch_size=128, gradient_accumulation_steps=4,
            temperature=0.7, group_size=8, skip_zero_advantage=False, eval_every=20,
            samples_every=1000)


def run(args) -> dict:
    sft_checkpoint = mixed_sft(args, "length_bias")
    runs = {norm: train_script(grpo, args, f"length_bias/{norm}", sft_checkpoint=sft_checkpoint,
                               reward=with_direct_rate, **GRPO, length_normalization=norm)
            for norm in ("sequence_mean", "constant")}
    plot_length_bias(runs, args)
    results = {}
    for norm, rows in runs.items():
        first, final = first_and_last(column(rows, "response_len_incorrect")[1], 10)
        results[norm] = {"final_accuracy": last(rows, "eval_accuracy"),
                         "wrong_len_first_10": first, "wrong_len_last_10": final,
                         "wrong_len_growth": final - first,
                         "len_last_10": last(rows, "response_len", 10),
                         "scratchpad_share_last_10": 1 - last(rows, "direct_rate", 10),
                         "heldout_wrong_len_final": last(rows, "eval_response_len_incorrect")}
    excess = results["sequence_mean"]["wrong_len_growth"] - results["constant"]["wrong_len_growth"]
    return {**results, "excess_wrong_len_growth": excess,
            "claim_holds": excess >= WRONG_LEN_EXCESS_MIN}


def plot_length_bias(runs: dict, args) -> None:
    """Per normalisation: held-out accuracy, the length of wrong rollouts, the scratchpad's
    share."""
    fig, (acc, wrong_len, share) = new_figure(3, "GRPO length normalisation: 1/|o_i| "
                                                 "(DeepSeekMath) vs 1/max_new_tokens (Dr. GRPO)")
    for norm, rows in runs.items():
        acc.plot(*start_and(rows, args, f"length_bias/{norm}", "eval_accuracy"), marker=".",
                 label=norm)
        steps, wrong_lengths = column(rows, "response_len_incorrect")
        wrong_len.plot(steps, smooth(wrong_lengths), label=norm)
        steps, direct = column(rows, "direct_rate")
        share.plot(steps, smooth([1 - d for d in direct]), label=norm)
    acc.set_title("held-out greedy accuracy")
    wrong_len.set_title("length of wrong rollouts (10-step mean)")
    wrong_len.set_ylabel("tokens")
    share.set_title("rollouts with a scratchpad (10-step mean)")
    for ax in (acc, wrong_len, share):
        ax.legend(fontsize=8)
    save_figure(fig, args, "length_bias")
