"""GRPO's length bias: the per-sequence mean (DeepSeekMath) against a constant divisor (Dr. GRPO).

Claim (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783): dividing each response's summed loss by its
own length |o_i| shrinks the per-token penalty of a long wrong answer (and raises that of a short
one), so wrong answers drift longer; a constant divisor (max_new_tokens) treats every token alike.
Both runs start from one SFT model trained on demonstrations of which half answer directly (an
empty scratchpad), so that an answer can be short (direct) or long (scratchpad). The test needs
the two lengths to be about equally often right, or correctness alone picks the length: on
1-digit problems the scratchpad's one step is the direct answer written out (7+8+0=15), so both
rest on the same fact, and a short SFT leaves it often wrong. Precondition, on the first 10
rollout batches of both runs: each mode right on a share in [MODE_ACCURACY_LOW,
MODE_ACCURACY_HIGH] of its rollouts, the two shares within MODE_GAP_MAX. If it fails, the verdict
is "not tested by this setup" (claim_holds None). If it holds, the claim holds if, from the first
10 to the last 10 rollout batches, wrong rollouts grow at least WRONG_LEN_EXCESS_MIN tokens more
under 1/|o_i| than under the constant.
"""
from __future__ import annotations

import grpo
from experiments.common import (column, first_and_last, last, mixed_sft, new_figure, save_figure,
                                smooth, train_script)
from toy_model import reward_fn

DESCRIPTION = "GRPO length bias: per-sequence mean (DeepSeekMath) vs a constant divisor (Dr. GRPO)"
# Thresholds, fixed before the full run: the precondition, then the claim (tokens).
MODE_ACCURACY_LOW, MODE_ACCURACY_HIGH = 0.2, 0.8  # each mode right, and wrong, often enough
MODE_GAP_MAX = 0.15  # and the two about equally often right
WRONG_LEN_EXCESS_MIN = 2.0
# 1-digit problems: 3-digit direct sums are almost never right (the policy drops them within 12
# steps), 2-digit ones right on 8% of samples against 86% with the scratchpad (300 SFT steps).
DIGITS = 1
SFT_STEPS = 150  # half the demonstrations direct; short: both modes still often wrong
# Both runs, beside grpo.py's defaults: 100 steps of 16 prompts x 8 at 0.7, every row trained.
GRPO = dict(digits=DIGITS, steps=100, rollout_batch_size=128, train_batch_size=128,
            gradient_accumulation_steps=4, temperature=0.7, group_size=8,
            skip_zero_advantage=False, eval_every=20, samples_every=1000)


def with_mode(response: str, ground_truth: str) -> dict:
    """r1_zero's reward, whether the response answered directly (an empty scratchpad), and whether
    it did and was right: the means of the extra keys are metrics.csv columns."""
    r = reward_fn(response, ground_truth)
    direct = float(response.startswith("<think></think>"))
    return {**r, "direct_rate": direct, "direct_right": direct * r["answer_reward"]}


def run(args) -> dict:
    sft_checkpoint = mixed_sft(args, "length_bias", digits=DIGITS, steps=SFT_STEPS)
    runs = {norm: train_script(grpo, args, f"length_bias/{norm}", sft_checkpoint=sft_checkpoint,
                               reward=with_mode, **GRPO, length_normalization=norm)
            for norm in ("sequence_mean", "constant")}
    plot_length_bias(runs, args)
    results = {}
    for norm, rows in runs.items():
        first, final = first_and_last(column(rows, "response_len_incorrect")[1], 10)
        results[norm] = {"final_accuracy": last(rows, "eval_accuracy"),
                         **mode_accuracy(rows[:10]),
                         "wrong_len_first_10": first, "wrong_len_last_10": final,
                         "wrong_len_growth": final - first,
                         "len_last_10": last(rows, "response_len", 10),
                         "scratchpad_share_last_10": 1 - last(rows, "direct_rate", 10),
                         "heldout_wrong_len_final": last(rows, "eval_response_len_incorrect")}
    tested = all(MODE_ACCURACY_LOW <= r[k] <= MODE_ACCURACY_HIGH for r in results.values()
                 for k in ("direct_accuracy_first_10", "scratchpad_accuracy_first_10"))
    tested = tested and all(abs(r["direct_accuracy_first_10"] - r["scratchpad_accuracy_first_10"])
                            <= MODE_GAP_MAX for r in results.values())
    excess = results["sequence_mean"]["wrong_len_growth"] - results["constant"]["wrong_len_growth"]
    return {**results, "precondition_met": tested, "excess_wrong_len_growth": excess,
            "claim_holds": excess >= WRONG_LEN_EXCESS_MIN if tested else None}


def mode_accuracy(rows: list[dict]) -> dict:
    """Each mode's share of right answers over these rollout batches (of equal size)."""
    direct = sum(r["direct_rate"] for r in rows)
    direct_right = sum(r["direct_right"] for r in rows)
    right = sum(r["answer_reward"] for r in rows)
    return {"direct_share_first_10": direct / len(rows),
            "direct_accuracy_first_10": direct_right / direct if direct else 0.0,
            "scratchpad_accuracy_first_10": ((right - direct_right) / (len(rows) - direct)
                                             if len(rows) > direct else 0.0)}


def plot_length_bias(runs: dict, args) -> None:
    """Per normalisation: how often each mode is right in the rollouts, the length of wrong
    rollouts, the scratchpad's share (10-step means)."""
    fig, (acc, wrong_len, share) = new_figure(
        3, "GRPO length normalisation, 10-step means: 1/|o_i| (DeepSeekMath) vs 1/max_new_tokens "
           "(Dr. GRPO)")
    for (norm, rows), color in zip(runs.items(), ("C0", "C1")):
        direct = smooth([r["direct_rate"] for r in rows])
        direct_right = smooth([r["direct_right"] for r in rows])
        right = smooth([r["answer_reward"] for r in rows])
        steps = [r["step"] for r in rows]
        acc.plot(steps, [dr / d if d else None for dr, d in zip(direct_right, direct)],
                 color=color, label=f"{norm}: direct")
        acc.plot(steps, [(a - dr) / (1 - d) if d < 1 else None
                         for a, dr, d in zip(right, direct_right, direct)],
                 color=color, linestyle="--", label=f"{norm}: scratchpad")
        steps, wrong_lengths = column(rows, "response_len_incorrect")
        wrong_len.plot(steps, smooth(wrong_lengths), color=color, label=norm)
        share.plot([r["step"] for r in rows], [1 - d for d in direct], color=color, label=norm)
    acc.axhspan(MODE_ACCURACY_LOW, MODE_ACCURACY_HIGH, color="gray", alpha=0.1,
                label="precondition band")
    acc.set_title("share right, per mode")
    wrong_len.set_title("length of wrong rollouts")
    wrong_len.set_ylabel("tokens")
    share.set_title("share with a scratchpad")
    for ax in (acc, wrong_len, share):
        ax.legend(fontsize=7)
    save_figure(fig, args, "length_bias")
