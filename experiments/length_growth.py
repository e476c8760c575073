"""Does RL make the model think longer?

Claim (the lecture; DeepSeek-R1): RL-trained models answer at greater length, because RL finds
that longer reasoning pays. Here the SFT model answers directly (an empty <think></think>) or
with the carry scratchpad, chosen by its first sampled token after <think>; the reward is
correctness alone, nothing rewards length itself. If the scratchpad is right more often, GRPO
should shift the choice towards it, and the mean response length should grow. The claim holds
if the mean rollout length grows by at least LENGTH_GROWTH_MIN (relative, from the first rollout
batch, the SFT policy's own samples before any update, to the mean of the last 10) and held-out
accuracy rises by at least ACCURACY_RISE_MIN. Both fixed before the run.
"""
from __future__ import annotations

import os

import grpo
from experiments.common import (column, first_and_last, mixed_sft, new_figure, read_summary,
                                save_figure, smooth, start_and, train_script, with_direct_rate)
from runs import checkpoint_task, load_checkpoint
from evaluation import evaluate
from toy_model import AdditionTask, Tokenizer

DESCRIPTION = ("GRPO on correctness alone, from SFT on mixed direct and scratchpad answers: does "
               "length grow?")
LENGTH_GROWTH_MIN = 0.30  # threshold of the claim, fixed before any full run
ACCURACY_RISE_MIN = 0.05  # about two standard errors of a 500-problem accuracy
# GRPO beside grpo.py's defaults: 100 steps of 16 prompts x 8 at 0.7, every row trained.
GRPO = dict(steps=100, rollout_batch_size=128, train_batch_size=128, gradient_accumulation_steps=4,
            temperature=0.7, group_size=8, skip_zero_advantage=False, eval_every=20,
            samples_every=1000)


def run(args) -> dict:
    sft_checkpoint = mixed_sft(args, "length_growth")
    rows = train_script(grpo, args, "length_growth/grpo", sft_checkpoint=sft_checkpoint,
                        reward=with_direct_rate, **GRPO)
    n_test = 16 if args.quick else 500
    before = answer_modes(sft_checkpoint, n_test)
    after = answer_modes(os.path.join(args.out_dir, "length_growth", "grpo", "model.pt"), n_test)
    steps, lengths = column(rows, "response_len")
    steps, direct = column(rows, "direct_rate")
    fig, (length, share, acc) = new_figure(3, "GRPO on correctness alone from SFT on 50% direct "
                                              "answers")
    plot_length_and_mix(length, share, rows, before)
    acc.plot(*start_and(rows, args, "length_growth/grpo", "eval_accuracy"), marker=".",
             color="C3", label="held-out (greedy)")
    acc.plot(steps, smooth(column(rows, "answer_reward")[1]), color="C0",
             label="rollouts (10-step mean)")
    acc.set_title("accuracy")
    acc.legend(fontsize=7)
    save_figure(fig, args, "length_growth")

    len_first, len_last = first_and_last(lengths, 10)
    scratch_first, scratch_last = first_and_last([1 - d for d in direct], 10)
    summary = read_summary(args, "length_growth/grpo")
    # Growth from the SFT policy's own samples (the first rollout batch, before any update) to the
    # last 10 rollout batches; the mean of the first 10 batches is kept too (the shift is fast).
    results = {"rollout_len_start": lengths[0], "rollout_len_first_10": len_first,
               "rollout_len_last_10": len_last, "len_growth": len_last / lengths[0] - 1,
               "len_growth_vs_first_10": len_last / len_first - 1,
               "scratchpad_share_start": 1 - direct[0], "scratchpad_share_first_10": scratch_first,
               "scratchpad_share_last_10": scratch_last, "heldout_before_grpo": before,
               "heldout_after_grpo": after, "start_accuracy": summary["start_accuracy"],
               "final_accuracy": summary["final_accuracy"]}
    return {**results, "claim_holds": results["len_growth"] >= LENGTH_GROWTH_MIN
            and results["final_accuracy"] - results["start_accuracy"] >= ACCURACY_RISE_MIN}


def answer_modes(checkpoint: str, n_test: int) -> dict:
    """Held-out greedy answers of a checkpoint, split by mode: direct (empty scratchpad) or with
    the scratchpad: the share of each, and each mode's accuracy and mean length in tokens."""
    model, ckpt = load_checkpoint(checkpoint)
    task = AdditionTask(ckpt["digits"], n_test, **checkpoint_task(ckpt))
    metrics, samples = evaluate(model, Tokenizer(), task.test, task.max_new_tokens)
    out = {"accuracy": metrics["accuracy"], "response_len": metrics["response_len"]}
    for mode in ("direct", "scratchpad"):
        chosen = [s for s in samples
                  if s["response"].startswith("<think></think>") == (mode == "direct")]
        out[f"{mode}_share"] = len(chosen) / len(samples)
        out[f"{mode}_accuracy"] = (sum(s["answer_reward"] for s in chosen) / len(chosen)
                                   if chosen else None)
        out[f"{mode}_len"] = sum(s["length"] for s in chosen) / len(chosen) if chosen else None
    return out


def plot_length_and_mix(length, share, rows: list[dict], sft_modes: dict) -> None:
    """Mean response length and the share of responses with a scratchpad during GRPO (rollouts and
    held-out greedy), with the length that the mix alone predicts: share x the scratchpad's length
    + (1 - share) x the direct answer's, each as the SFT model writes it. If the two length curves
    agree, the growth is the policy choosing to reason, not each answer growing longer."""
    steps, lengths = column(rows, "response_len")
    steps, direct = column(rows, "direct_rate")
    length.plot(steps, lengths, alpha=0.3, color="C0")
    length.plot(steps, smooth(lengths), color="C0", label="rollouts (10-step mean)")
    eval_steps, eval_direct = column(rows, "eval_direct_rate")
    eval_steps, eval_lengths = column(rows, "eval_response_len")
    start = [0.0] if sft_modes else []
    length.plot(start + eval_steps, [sft_modes["response_len"]] * len(start) + eval_lengths,
                marker=".", color="C3", label="held-out (greedy)")
    if sft_modes.get("direct_len") and sft_modes.get("scratchpad_len"):
        predicted = [(1 - d) * sft_modes["scratchpad_len"] + d * sft_modes["direct_len"]
                     for d in direct]
        length.plot(steps, smooth(predicted), color="k", linestyle=":",
                    label="predicted by the mix alone")
    share.plot(steps, smooth([1 - d for d in direct]), color="C0", label="rollouts (10-step mean)")
    share.plot(start + eval_steps,
               [sft_modes["scratchpad_share"]] * len(start) + [1 - d for d in eval_direct],
               marker=".", color="C3", label="held-out (greedy)")
    length.set_title("mean response length (tokens)")
    share.set_title("share of responses with a scratchpad")
    share.set_ylim(0, 1.05)
    for ax in (length, share):
        ax.legend(fontsize=7)
