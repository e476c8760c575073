"""GRPO's advantage with and without the baseline and the std division.

Claim (the lecture, REINFORCE): subtracting a baseline (here the group mean) leaves the expected
policy gradient unchanged but cuts its variance, and the more so the larger the part of the
reward every response shares: here +1 for the format, which nearly every response earns. So
learning is faster with a baseline, much faster on the shifted reward.

Measured two ways from the same SFT model:
1. The gradient itself. BATCHES rollout batches of PROMPTS prompts x G are sampled once; on each,
   every scheme's REINFORCE gradient is taken on the same responses (common random numbers), and
   over the batches its variance V = mean ||g_k - mean g||^2, with a jackknife standard error.
   The fair pair is no baseline against the leave-one-out mean (RLOO's): both are unbiased, so
   they estimate the same expected gradient. GRPO's group mean includes the response itself, which
   shrinks the expected gradient by (G - 1) / G; the std division rescales it: both are reported.
2. Learning: a 100-step on-policy REINFORCE run per variant, held-out accuracy.
Verdict, thresholds fixed before the run: on the shifted reward, no baseline's variance is at
least VARIANCE_RATIO_MIN times the leave-one-out baseline's (beyond two standard errors each); the
ratio is larger there than on the 0/1 reward (the common part is what the baseline removes); and
on the shifted reward the run without a baseline ends at least ACCURACY_GAP_MIN below the one
with it. The 0/1 reward's learning runs and the std division are reported, not judged.
"""
from __future__ import annotations

import math

import torch

import grpo
from experiments.common import (column, last, new_figure, reward_plus_format, save_figure,
                                smooth, start_and, train_script)
from runs import checkpoint_task, load_checkpoint, set_seed
from toy_model import AdditionTask, Tokenizer, encode_prompts, generate, get_response_log_probs

DESCRIPTION = ("GRPO advantage with and without the baseline and the std division: gradient "
               "variance and learning")

# Every training run, beside grpo.py's defaults: 100 steps (the cosine still ends at lr / 10),
# sampled at 0.7 in groups of 8, so that more groups have a reward spread for a baseline to act on.
GRPO = dict(steps=100, temperature=0.7, group_size=8, eval_every=20, samples_every=1000)
NO_BASELINE = dict(loss_type="no_baseline", use_std_normalization=False)
VARIANTS = {  # label -> (run name, grpo flags, shifted reward?)
    "mean and std (GRPO)": ("mean_std", dict(loss_type="reinforce_with_baseline"), False),
    "mean only (Dr. GRPO)": ("mean_only", dict(loss_type="reinforce_with_baseline",
                                               use_std_normalization=False), False),
    "no baseline, 0/1 reward": ("no_baseline", NO_BASELINE, False),
    "no baseline, reward + format": ("no_baseline_format", NO_BASELINE, True)}
SHIFTED = reward_plus_format(1.0)  # +1 for the format: a part of the reward every response shares
# The gradient measurement: rollout batches of PROMPTS x G at GRPO's temperature.
BATCHES, PROMPTS = 16, 32
BATCHES_QUICK, PROMPTS_QUICK = 3, 4
VARIANCE_RATIO_MIN = 2.0  # on the shifted reward: V(no baseline) / V(leave-one-out), at least
ACCURACY_GAP_MIN = 0.10  # on the shifted reward: accuracy with a baseline minus without


def gradient_noise(checkpoint: str, batches: int, prompts: int, seed: int = 0) -> dict:
    """Per advantage scheme, over `batches` rollout batches shared by all schemes: the variance
    V of the REINFORCE gradient (per-sequence mean, as grpo.py), with a jackknife standard error.
    Schemes: group mean and std, group mean, leave-one-out mean, none; on the 0/1 reward and on the
    reward + format."""
    model, ckpt = load_checkpoint(checkpoint)
    model.eval()
    task, tok = AdditionTask(ckpt["digits"], **checkpoint_task(ckpt)), Tokenizer()
    rng, G, T = set_seed(seed), GRPO["group_size"], GRPO["temperature"]
    schemes = {"mean and std": ("reinforce_with_baseline", True, False),
               "mean only": ("reinforce_with_baseline", False, False),
               "leave-one-out": ("reinforce_with_baseline", False, True),
               "no baseline": ("no_baseline", False, False)}
    grads = {(s, shifted): [] for s in schemes for shifted in (False, True)}
    for _ in range(batches):
        problems = task.sample(prompts, rng)
        prompt_ids = encode_prompts(tok, [p.prompt for p in problems], "cpu")
        ids, mask = generate(model, prompt_ids, task.max_new_tokens, tok.eos_id, tok.pad_id,
                             num_samples=G, temperature=T)  # (B, T) each, shared by every scheme
        ids, mask = ids.clone(), mask.clone()  # out of inference mode, for autograd
        texts = [tok.decode(r[:m]) for r, m in zip(ids.tolist(), mask.sum(1).tolist())]
        truths = [p.answer for p in problems for _ in range(G)]
        seq = torch.cat([prompt_ids.repeat_interleave(G, dim=0), ids], dim=1)
        P = prompt_ids.shape[1]
        for shifted in (False, True):
            reward = SHIFTED if shifted else grpo.reward_fn
            for name, (loss_type, by_std, leave_one_out) in schemes.items():
                advantages, raw, _ = grpo.compute_group_normalized_rewards(
                    reward, texts, truths, G, 1e-6, by_std,
                    baseline="leave_one_out" if leave_one_out else "group_mean")
                model.zero_grad(set_to_none=True)
                log_probs = get_response_log_probs(model, seq[:, :-1], seq[:, 1:],
                                                   temperature=T)["log_probs"][:, P - 1:]
                grpo.grpo_microbatch_train_step(log_probs, mask, 1, loss_type,
                                                raw_rewards=raw[:, None],
                                                advantages=advantages[:, None])
                grads[(name, shifted)].append(
                    torch.cat([p.grad.flatten() for p in model.parameters()]).clone())
    out = {}
    for (name, shifted), g in grads.items():
        g = torch.stack(g)  # (batches, parameters)
        out[f"{name}, {'reward + format' if shifted else '0/1 reward'}"] = variance_stats(g)
    return out


def variance_stats(g: torch.Tensor) -> dict:
    """V = mean_k ||g_k - mean g||^2 over per-batch gradients g (K, N), with its jackknife
    (leave-one-batch-out) standard error."""
    def variance(rows):
        return ((rows - rows.mean(dim=0)) ** 2).sum(dim=1).mean().item()
    K = len(g)
    dropped = [variance(torch.cat([g[:k], g[k + 1:]])) for k in range(K)]
    mean_dropped = sum(dropped) / K
    se = math.sqrt((K - 1) / K * sum((v - mean_dropped) ** 2 for v in dropped))
    return {"variance": variance(g), "variance_se": se, "batches": K}


def run(args) -> dict:
    batches, prompts = (BATCHES_QUICK, PROMPTS_QUICK) if args.quick else (BATCHES, PROMPTS)
    noise = gradient_noise(args.sft_checkpoint, batches, prompts)
    runs = {label: train_script(grpo, args, f"std_baseline/{name}",
                                reward=SHIFTED if shifted else None, **GRPO, **flags)
            for label, (name, flags, shifted) in VARIANTS.items()}

    results = {"gradient_noise": noise}
    for label, rows in runs.items():
        results[label] = {"final_accuracy": last(rows, "eval_accuracy"),
                          "rollout_accuracy_last_20": last(rows, "answer_reward", 20)}
    plot(noise, runs, batches, args)

    def variance_ratio(reward_name):  # V(no baseline) / V(leave-one-out), and its low end
        raw, base = (noise[f"{s}, {reward_name}"] for s in ("no baseline", "leave-one-out"))
        low = ((raw["variance"] - 2 * raw["variance_se"])
               / (base["variance"] + 2 * base["variance_se"]))
        return {"ratio": raw["variance"] / base["variance"], "ratio_low_2se": low}

    plain, shifted = variance_ratio("0/1 reward"), variance_ratio("reward + format")
    gap = (results["mean only (Dr. GRPO)"]["final_accuracy"]
           - results["no baseline, reward + format"]["final_accuracy"])
    cuts = shifted["ratio_low_2se"] >= VARIANCE_RATIO_MIN
    larger_with_common_part = shifted["ratio_low_2se"] > plain["ratio"]
    return {**results, "variance_ratio_01": plain, "variance_ratio_shifted": shifted,
            "accuracy_gap_shifted": gap, "baseline_cuts_variance_shifted": cuts,
            "cut_grows_with_common_part": larger_with_common_part,
            "claim_holds": cuts and larger_with_common_part and gap >= ACCURACY_GAP_MIN}


def plot(noise: dict, runs: dict, batches: int, args) -> None:
    """The gradient's variance per scheme and reward; each run's held-out and rollout accuracy."""
    from matplotlib.ticker import NullFormatter
    fig, (ratio_ax, acc, reward) = new_figure(3, "GRPO's advantage: group mean and std, mean "
                                                 "only, no baseline")
    labels = list(noise)
    ratio_ax.barh(range(len(labels)), [noise[k]["variance"] for k in labels],
                  xerr=[2 * noise[k]["variance_se"] for k in labels],
                  color=["tab:orange" if "format" in k else "tab:blue" for k in labels])
    ratio_ax.set_yticks(range(len(labels)), labels)
    ratio_ax.set_xscale("log")
    ratio_ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: no overprinted labels
    ratio_ax.set_xlabel("gradient variance (+- 2 SE)")
    ratio_ax.set_title(f"at the SFT model, {batches} batches")
    colors = dict(zip(VARIANTS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for label, rows in runs.items():
        acc.plot(*start_and(rows, args, f"std_baseline/{VARIANTS[label][0]}", "eval_accuracy"),
                 marker=".", label=label, color=colors[label])
        steps, rewards = column(rows, "answer_reward")
        reward.plot(steps, smooth(rewards), color=colors[label])  # colours as in the middle
    acc.set_title("held-out greedy accuracy")
    reward.set_title("rollout accuracy (10-step mean)")
    save_figure(fig, args, "std_baseline")
