"""Can RL teach a model when to abstain, where SFT cannot?

Claim (the lecture): SFT cannot teach a model when not to answer, because the demonstrator does
not know what the model knows; RL with a reward that prefers '?' to a wrong answer can.
The task mixes easy problems (2-digit operands, zero-padded: 057+032=) with hard ones (3-digit)
that only 5% of the demonstrations cover, so the model's competence shows in the prompt.
SFT on demonstrations of which 30% are the abstention, picked at random. Then GRPO, on prompts
of which half are hard (the held-out set is always half and half), with reward 1 right, 0.3 for
'?', 0 wrong, as Dr. GRPO (no std division, constant length normalisation: advantages are
reward differences, so '?' wins exactly where the chance of a right answer is below 0.3, and
the 7-token '?' is not favoured over longer answers) with a KL penalty to the SFT model
(beta 0.04) that keeps '?' explored.
The measure is the AUROC of p('?') as a predictor of a wrong answer (0.5: abstains at random).
The claim holds if after SFT |AUROC - 0.5| <= SFT_AUROC_TOLERANCE; after GRPO AUROC >=
GRPO_AUROC_MIN, with greedy '?' on at least ABSTAIN_ON_WRONG_MIN of the problems it would get
wrong and at most ABSTAIN_ON_RIGHT_MAX of those it would get right; and the accuracy on the
problems it answers rises.
"""
from __future__ import annotations

import os

import torch

import grpo
import sft
from experiments.common import column, new_figure, save_figure, train_script
from runs import checkpoint_task, load_checkpoint
from evaluation import evaluate
from toy_model import ABSTENTION, AdditionTask, Tokenizer, encode_prompts, reward_fn

DESCRIPTION = ("SFT abstains ('?') at random; does GRPO, paid a little for '?', abstain where it "
               "would be wrong?")

# The task, the rewards and the thresholds, fixed before any full run.
ABSTAIN_TASK = dict(easy_digits=2, hard_fraction=0.05)  # 3-digit prompts; 5% of SFT's are hard
ABSTAIN_RL_HARD_FRACTION = 0.5  # GRPO's prompts: half hard, or the few hard ones teach too little
ABSTAIN_FRACTION = 0.3  # of the SFT demonstrations, picked at random
ABSTAIN_REWARD, WRONG_REWARD = 0.3, 0.0  # and 1 for a right answer
SFT_AUROC_TOLERANCE = 0.1  # after SFT: |AUROC - 0.5| <= 0.1
GRPO_AUROC_MIN = 0.85  # after GRPO: AUROC >= 0.85
ABSTAIN_ON_WRONG_MIN = 0.60  # after GRPO: greedy '?' on at least 60% of the problems it would miss
ABSTAIN_ON_RIGHT_MAX = 0.10  # after GRPO: and on at most 10% of those it would get right
# GRPO beside grpo.py's defaults: Dr. GRPO (see above) with a k3 KL penalty, 100 steps of 16
# prompts x 8 at 0.7, every row trained.
GRPO = dict(use_std_normalization=False, length_normalization="constant", beta=0.04, steps=100,
            rollout_batch_size=128, train_batch_size=128, gradient_accumulation_steps=4,
            temperature=0.7, group_size=8, skip_zero_advantage=False, eval_every=20,
            samples_every=1000)


def abstain_reward(response: str, ground_truth: str) -> dict:
    """1 right, ABSTAIN_REWARD for the abstention '?', WRONG_REWARD otherwise (reward_fn's
    abstain_reward and wrong_reward); the mean of "abstain_rate" is its metrics.csv column."""
    return {**reward_fn(response, ground_truth, ABSTAIN_REWARD, WRONG_REWARD),
            "abstain_rate": float(response == ABSTENTION)}


def run(args) -> dict:
    train_script(sft, args, "abstain/sft", steps=300, abstain_fraction=ABSTAIN_FRACTION,
                 **ABSTAIN_TASK)
    sft_checkpoint = os.path.join(args.out_dir, "abstain", "sft", "model.pt")
    grpo_rows = train_script(grpo, args, "abstain/grpo", sft_checkpoint=sft_checkpoint,
                             reward=abstain_reward,
                             task={**ABSTAIN_TASK, "hard_fraction": ABSTAIN_RL_HARD_FRACTION},
                             **GRPO)
    n_test = 16 if args.quick else 500
    before = abstention_profile(sft_checkpoint, n_test)
    after = abstention_profile(os.path.join(args.out_dir, "abstain", "grpo", "model.pt"), n_test)
    for name, profile in (("SFT", before), ("GRPO", after)):
        for kind, p in [("all", profile)] + list(profile["by_kind"].items()):
            f = {k: "n/a" if v is None else f"{v:.3f}" for k, v in p.items() if k != "by_kind"}
            print(f"{name:>4} {kind:>4}: accuracy {f['accuracy']} "
                  f"('?' forbidden {f['forced_accuracy']}), abstains {f['abstain_rate']}, "
                  f"wrong {f['wrong_rate']} | abstains on right {f['abstain_rate_right']} "
                  f"vs wrong {f['abstain_rate_wrong']} | AUROC {f['auroc']}")

    # Answer when p(right) * 1 + (1 - p(right)) * WRONG_REWARD > ABSTAIN_REWARD.
    break_even = (ABSTAIN_REWARD - WRONG_REWARD) / (1 - WRONG_REWARD)
    fig, (ax_out, ax_kind, ax_curve) = new_figure(
        3, f"SFT with {ABSTAIN_FRACTION:.0%} random '?' demonstrations, then GRPO with reward "
           f"{ABSTAIN_REWARD} for '?'")
    plot_outcomes(ax_out, {"SFT": before, "GRPO": after})
    plot_abstention_by_kind(ax_kind, {"SFT": before, "GRPO": after}, break_even)
    for key, label in (("abstain_rate", "rollouts: '?'"), ("answer_reward", "rollouts: right"),
                       ("eval_abstain_rate", "held-out greedy: '?'"),
                       ("eval_accuracy", "held-out greedy: right")):
        ax_curve.plot(*column(grpo_rows, key), label=label,
                      marker="." if key.startswith("eval") else None)
    ax_curve.set_title("during GRPO", fontsize=9)
    ax_curve.legend(fontsize=7)
    save_figure(fig, args, "abstain")

    sft_random = before["auroc"] is not None and abs(before["auroc"] - 0.5) <= SFT_AUROC_TOLERANCE
    rl_selective = (after["auroc"] is not None and after["auroc"] >= GRPO_AUROC_MIN
                    and (after["abstain_rate_wrong"] or 0) >= ABSTAIN_ON_WRONG_MIN
                    and (after["abstain_rate_right"] or 0) <= ABSTAIN_ON_RIGHT_MAX)
    more_selective = (after["selective_accuracy"] or 0) > (before["selective_accuracy"] or 0)
    return {"abstain_fraction": ABSTAIN_FRACTION, "abstain_reward": ABSTAIN_REWARD,
            "wrong_reward": WRONG_REWARD, "break_even_accuracy": break_even, **ABSTAIN_TASK,
            "grpo_rollout_abstain_rate": {"first_step": grpo_rows[0]["abstain_rate"],
                                          "last_step": grpo_rows[-1]["abstain_rate"]},
            "before_sft": before, "after_grpo": after,
            "sft_abstains_at_random": sft_random, "grpo_abstains_where_wrong": rl_selective,
            "selective_accuracy_rises": more_selective,
            "claim_holds": sft_random and rl_selective and more_selective}


def abstention_profile(checkpoint: str, n_test: int) -> dict:
    """How a checkpoint abstains on the held-out problems, overall and per kind of problem. Greedy
    with "?" forbidden says which problems it would get right if it had to answer; free greedy says
    where it abstains; and p_abstain = p("?" | prompt, <think>) is its chance of abstaining when
    sampled (T = 1): its first response token after <think> decides."""
    model, ckpt = load_checkpoint(checkpoint)
    task, tok = AdditionTask(ckpt["digits"], n_test, **checkpoint_task(ckpt)), Tokenizer()
    metrics, samples = evaluate(model, tok, task.test, task.max_new_tokens)
    _, forced = evaluate(model, tok, task.test, task.max_new_tokens, suppress="?")
    abstained = [s["response"] == ABSTENTION for s in samples]
    right = [s["answer_reward"] == 1 for s in forced]
    prompt_ids = encode_prompts(tok, [p.prompt for p in task.test], "cpu")  # (N, P)
    think = torch.full_like(prompt_ids[:, :1], tok.encode("<think>")[0])
    with torch.inference_mode():
        logits = model(torch.cat([prompt_ids, think], dim=1))[:, -1]  # (N, V)
        p_abstain = torch.softmax(logits, dim=-1)[:, tok.encode("?")[0]].tolist()

    def mean(xs):
        xs = [float(x) for x in xs]
        return sum(xs) / len(xs) if xs else None

    def summary(idx: list[int]) -> dict:
        on_right = [i for i in idx if right[i]]
        on_wrong = [i for i in idx if not right[i]]
        answered = [i for i in idx if not abstained[i]]
        return {"n": len(idx), "accuracy": mean(samples[i]["answer_reward"] for i in idx),
                "abstain_rate": mean(abstained[i] for i in idx),
                "wrong_rate": mean(not abstained[i] and samples[i]["answer_reward"] == 0
                                   for i in idx),
                "selective_accuracy": mean(samples[i]["answer_reward"] for i in answered),
                "forced_accuracy": mean(right[i] for i in idx),
                "n_right": len(on_right), "n_wrong": len(on_wrong),
                "abstain_rate_right": mean(abstained[i] for i in on_right),
                "abstain_rate_wrong": mean(abstained[i] for i in on_wrong),
                "p_abstain": mean(p_abstain[i] for i in idx),
                "p_abstain_right": mean(p_abstain[i] for i in on_right),
                "p_abstain_wrong": mean(p_abstain[i] for i in on_wrong),
                # 1: p("?") is higher on every problem it would get wrong than on every one it
                # would get right
                "auroc": auroc([p_abstain[i] for i in on_wrong], [p_abstain[i] for i in on_right])}

    kinds = sorted({task.kind(p) for p in task.test})
    return {**summary(list(range(len(task.test)))),
            "by_kind": {k: summary([i for i, p in enumerate(task.test) if task.kind(p) == k])
                        for k in kinds}}


def auroc(positive: list[float], negative: list[float]) -> float | None:
    """The chance that a random positive scores above a random negative, ties counting one half
    (the area under the ROC curve; 0.5: the score tells nothing). None if either side is empty."""
    if not positive or not negative:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def plot_outcomes(ax, profiles: dict) -> None:
    """Held-out greedy outcomes (right, '?', wrong) as one stacked bar per model."""
    for x, p in enumerate(profiles.values()):
        bottom = 0.0
        for key, color, label in (("accuracy", "tab:green", "right"),
                                  ("abstain_rate", "tab:gray", "'?'"),
                                  ("wrong_rate", "tab:red", "wrong")):
            ax.bar(x, p[key], bottom=bottom, color=color, label=label if x == 0 else None)
            bottom += p[key]
    ax.set_xticks(range(len(profiles)), list(profiles))
    ax.set_xlabel("")
    ax.set_title("held-out greedy answers", fontsize=9)
    ax.legend(fontsize=7)


def plot_abstention_by_kind(ax, profiles: dict, break_even: float) -> None:
    """Abstention rate against the model's own accuracy (greedy, '?' forbidden), one point per
    model and kind of problem, with the reward's break-even accuracy: below it '?' pays more."""
    ax.axvspan(0, break_even, color="tab:gray", alpha=0.12, label="'?' pays more")
    ax.axvline(break_even, color="gray", linestyle="--",
               label=f"break-even p(right) = {break_even:.2f}")
    for (name, profile), color in zip(profiles.items(), ("C0", "C1")):
        for kind, p in profile["by_kind"].items():
            ax.scatter(p["forced_accuracy"], p["abstain_rate"], color=color, marker="o",
                       label=f"{name}: greedy" if kind == "hard" else None)
            ax.scatter(p["forced_accuracy"], p["p_abstain"], color=color, marker="x",
                       label=f"{name}: p('?')" if kind == "hard" else None)
            ax.annotate(kind, (p["forced_accuracy"], p["abstain_rate"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("its own accuracy on the kind ('?' forbidden)")
    ax.set_title("abstention rate per kind of problem", fontsize=9)
    ax.legend(fontsize=6)
