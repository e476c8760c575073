"""Reward over-optimisation (Gao, Schulman and Hilton 2022): best-of-n and RL against proxies.

Claim (the lecture; Gao et al.): against a proxy reward that is informative but imperfect,
optimisation first raises the true ("gold") reward, then lowers it while the proxy keeps rising;
a proxy learnt from more comparisons peaks later or higher. Gold: the verifier (answer
correctness). Proxies: Bradley-Terry reward models trained on N (right, wrong) pairs of the SFT
policy's own samples, for three N (proxy_rewards.py). Each is optimised by best-of-n
(KL = log n - (n - 1) / n) and by GRPO on its score (KL measured along the run).
The claim holds if the largest proxy's held-out pair accuracy reaches RM_ACCURACY_MIN; RL on
every smaller proxy raises gold by GOLD_RISE_MIN, then ends GOLD_FALL_MIN below its peak while
the proxy ends above its value at the gold peak; and each larger proxy's gold peak is higher, or
at a larger KL, than the next smaller one's.
"""
from __future__ import annotations

import copy

import torch

import grpo
from experiments.common import new_figure, save_figure
from experiments.proxy_rewards import (best_of_n, best_of_n_kl, best_of_n_of, comparison_pairs,
                                       proxy_scores, sample_responses, train_proxy)
from runs import load_checkpoint, lr_at, pick_device, require, set_seed
from toy_model import AdditionTask, Tokenizer, get_response_log_probs

DESCRIPTION = "Reward over-optimisation (Gao et al.): best-of-n and RL on proxies of N comparisons"

# Settings and claim thresholds, fixed before the full run. pi_ref is the SFT policy sampled at
# `temperature`: best-of-n and RL both sample at it, so that their KLs to pi_ref compare.
# --quick shrinks every size.
OVEROPT = dict(
    temperature=0.7,  # of pi_ref, best-of-n and RL (at 1.0 few SFT samples are right)
    rm_sizes=(250, 1000, 4000),  # N: gold-labelled comparisons each proxy is trained on
    rm_prompts=7000, rm_samples=4,  # SFT samples that the comparisons are drawn from
    rm_epochs=2, rm_batch_size=64, rm_lr=1e-5,  # at 1e-4 Adam's steps wreck the LM's arithmetic
    bon_prompts=200, bon_samples=64,  # held-out prompts x SFT samples for best-of-n (n <= 64)
    rl_steps=80, rl_prompts=32, rl_group=8, rl_lr=6e-5, rl_warmup=10, rl_beta=0.0,
    eval_every=10, eval_prompts=128, eval_samples=4)  # RL: held-out prompts x samples, every N
OVEROPT_QUICK = dict(OVEROPT, rm_sizes=(8, 16, 32), rm_prompts=96, bon_prompts=8, bon_samples=8,
                     rl_steps=2, rl_prompts=4, rl_group=4, eval_every=1, eval_prompts=8)
RM_ACCURACY_MIN = 0.85  # the largest proxy's held-out pair accuracy must reach this
GOLD_RISE_MIN = 0.02  # RL: gold must first rise at least this far above its start ...
GOLD_FALL_MIN = 0.10  # ... then end at least this far below its peak, the proxy still rising


def run(args) -> dict:
    spec = OVEROPT_QUICK if args.quick else OVEROPT
    T = spec["temperature"]
    rng = set_seed(0)
    policy, ckpt = load_checkpoint(args.sft_checkpoint, device=pick_device("auto"))
    policy.eval().requires_grad_(False)  # pi_ref, frozen; RL trains a copy
    task, tokenizer = AdditionTask(ckpt["digits"]), Tokenizer()
    P = task.prompt_len

    # 1. Comparisons: pairs of a right and a wrong SFT sample to one training prompt.
    seq, mask, gold = sample_responses(policy, task.sample(spec["rm_prompts"], rng),
                                       spec["rm_samples"], T, tokenizer, task.max_new_tokens)
    pairs = comparison_pairs(gold.tolist(), spec["rm_samples"])
    require(len(pairs) >= max(spec["rm_sizes"]), f"only {len(pairs)} comparisons from "
            f"{spec['rm_prompts']} prompts: too few prompts with both a right and a wrong sample")
    print(f"{len(pairs)} comparisons from {len(gold)} SFT samples (right: {gold.mean():.3f})")

    # 2. pi_ref's samples on held-out prompts: best-of-n picks among them; their pairs measure
    # each proxy's accuracy.
    bon_seq, bon_mask, bon_gold = sample_responses(policy, task.test[:spec["bon_prompts"]],
                                                   spec["bon_samples"], T, tokenizer,
                                                   task.max_new_tokens)
    bon_gold = bon_gold.view(spec["bon_prompts"], -1)  # (prompts, K)
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= spec["bon_samples"]]
    oracle = [bon_gold.gather(1, best_of_n(bon_gold, n)).mean().item() for n in ns]  # gold picks

    # 3. Per proxy: train it, measure it, optimise it by best-of-n and by RL. The SFT model itself
    # (N = 0: its own likelihood) is measured too, for reference.
    results = {"temperature": T, "sft_sample_accuracy": bon_gold.mean().item(),
               "comparisons_available": len(pairs), "best_of_n_kl": [best_of_n_kl(n) for n in ns],
               "best_of_n_oracle_gold": oracle,
               "untrained_proxy": best_of_n_of(policy, bon_seq, bon_mask, bon_gold, ns, P, T)[0],
               "proxies": {}}
    eval_prompts = task.test[-spec["eval_prompts"]:]  # held-out, and apart from best-of-n's
    for N in spec["rm_sizes"]:
        print(f"\n=== proxy trained on {N} comparisons", flush=True)
        torch.manual_seed(N)
        reward_model = train_proxy(policy, seq, mask, pairs[:N], P, spec)
        measured, norm = best_of_n_of(reward_model, bon_seq, bon_mask, bon_gold, ns, P, T)
        rl = rl_against_proxy(policy, policy, reward_model, norm, eval_prompts, task, tokenizer,
                              rng, spec)
        results["proxies"][str(N)] = {"comparisons": N, **measured, "rl": rl, **rl_summary(rl)}
    plot_overoptimisation(results, args)
    return {**results, **overoptimisation_claims(results, spec)}


def rl_against_proxy(policy, reference, reward_model, norm, eval_prompts, task, tokenizer, rng,
                     spec: dict) -> list[dict]:
    """GRPO (on-policy, one AdamW step per rollout batch) whose reward is the proxy's score, with
    the group's mean and std as baseline and scale, and a beta KL(pi || pi_ref) penalty (k3). Every
    eval_every steps, on the held-out prompts: gold accuracy and the proxy's score (normalised by
    `norm`, its mean and std on pi_ref's samples) of samples at the temperature, and
    KL(pi || pi_ref) per sequence, estimated as the mean of sum_t log pi(o_t) - log pi_ref(o_t)."""
    policy = copy.deepcopy(policy).eval().requires_grad_(True)  # eval: no dropout, ratio exactly 1
    optimizer = torch.optim.AdamW(policy.parameters(), lr=spec["rl_lr"], betas=(0.9, 0.98),
                                  weight_decay=0.0)
    T, P, G = spec["temperature"], task.prompt_len, spec["rl_group"]

    def log_probs(model, seq):  # log pi(o_t | q, o_<t) at the temperature, (B, T)
        out = get_response_log_probs(model, seq[:, :-1], seq[:, 1:], temperature=T)
        return out["log_probs"][:, P - 1:]

    rows = []
    for step in range(spec["rl_steps"] + 1):
        if step % spec["eval_every"] == 0 or step == spec["rl_steps"]:  # measure, then train on
            seq, mask, gold = sample_responses(policy, eval_prompts, spec["eval_samples"], T,
                                               tokenizer, task.max_new_tokens)
            with torch.inference_mode():
                log_ratio = log_probs(policy, seq) - log_probs(reference, seq)  # (B, T)
                kl = (log_ratio * mask).sum(dim=1)  # (B,): k1 summed over the sequence
            score = (proxy_scores(reward_model, seq, mask, P, T) - norm[0]) / norm[1]
            rows.append({"step": step, "kl": kl.mean().item(), "gold": gold.mean().item(),
                         "proxy": score.mean().item(), "response_len": mask.sum(1).mean().item()})
            print(f"  step {step:>3}: gold {rows[-1]['gold']:.3f}  proxy {rows[-1]['proxy']:+.3f}"
                  f"  KL {rows[-1]['kl']:.3f}  length {rows[-1]['response_len']:.1f}", flush=True)
        if step == spec["rl_steps"]:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step + 1, spec["rl_lr"], spec["rl_warmup"], spec["rl_steps"], False)
        # 1. Rollout and reward: G responses to each fresh prompt, scored by the proxy alone.
        seq, mask, _ = sample_responses(policy, task.sample(spec["rl_prompts"], rng), G, T,
                                        tokenizer, task.max_new_tokens)  # gold unused
        scores = proxy_scores(reward_model, seq, mask, P, T).view(-1, G)  # (prompts, G)
        advantages = (scores - scores.mean(1, keepdim=True)) / (scores.std(1, keepdim=True) + 1e-6)
        # 2. Update: REINFORCE with the group baseline (on-policy GRPO) plus beta KL to pi_ref.
        with torch.inference_mode():
            ref_log_probs = log_probs(reference, seq) if spec["rl_beta"] > 0 else None
        grpo.grpo_microbatch_train_step(log_probs(policy, seq), mask, 1, "reinforce_with_baseline",
                                        advantages=advantages.flatten()[:, None],
                                        ref_log_probs=ref_log_probs, beta=spec["rl_beta"])
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return rows


def rl_summary(rows: list[dict]) -> dict:
    """Gold and proxy at the start, at the gold peak and at the end of an RL run, and KL there."""
    peak = max(rows, key=lambda r: r["gold"])  # the first of equal peaks
    return {"gold_start": rows[0]["gold"], "gold_peak": peak["gold"], "gold_end": rows[-1]["gold"],
            "kl_at_gold_peak": peak["kl"], "step_at_gold_peak": peak["step"],
            "proxy_start": rows[0]["proxy"], "proxy_at_gold_peak": peak["proxy"],
            "proxy_end": rows[-1]["proxy"], "kl_end": rows[-1]["kl"]}


def overoptimisation_claims(results: dict, spec: dict) -> dict:
    """The claim's parts: per proxy, RL's gold rose by GOLD_RISE_MIN, then ended GOLD_FALL_MIN
    below its peak while the proxy ended above its value at the gold peak; that holds for every
    proxy but the largest; each larger proxy's gold peak is higher or at a larger KL than the next
    smaller one's; and the largest proxy's pair accuracy reaches RM_ACCURACY_MIN."""
    proxies = [results["proxies"][str(N)] for N in spec["rm_sizes"]]
    overoptimised = {str(N): p["gold_peak"] >= p["gold_start"] + GOLD_RISE_MIN
                     and p["gold_peak"] - p["gold_end"] >= GOLD_FALL_MIN
                     and p["proxy_end"] > p["proxy_at_gold_peak"]
                     for N, p in zip(spec["rm_sizes"], proxies)}
    sizes = spec["rm_sizes"]
    later_or_higher = {f"{a}->{b}": q["gold_peak"] > p["gold_peak"]
                       or q["kl_at_gold_peak"] > p["kl_at_gold_peak"]
                       for a, b, p, q in zip(sizes, sizes[1:], proxies, proxies[1:])}
    accurate = (proxies[-1]["pair_accuracy"] or 0) >= RM_ACCURACY_MIN
    smaller_overoptimised = all(overoptimised[str(N)] for N in spec["rm_sizes"][:-1])
    return {"rl_overoptimised": overoptimised,
            "larger_proxy_peaks_later_or_higher": later_or_higher,
            "largest_proxy_accurate": accurate,
            "claim_holds": accurate and smaller_overoptimised and all(later_or_higher.values())}


def plot_overoptimisation(results: dict, args) -> None:
    """Gold accuracy and proxy score against sqrt(KL(pi || pi_ref)), one colour per proxy:
    best-of-n (with the verifier's own best-of-n for reference) and RL side by side."""
    fig, axes = new_figure(4, f"Optimising Bradley-Terry proxies trained on N comparisons "
                              f"(pi_ref: the SFT model at T = {results['temperature']})")
    bon_gold, bon_proxy, rl_gold, rl_proxy = axes
    kls = results["best_of_n_kl"]
    bon_gold.plot([k ** 0.5 for k in kls], results["best_of_n_oracle_gold"], color="k",
                  linestyle=":", label="the verifier picks (upper bound)")
    untrained = results["untrained_proxy"]
    bon_gold.plot([k ** 0.5 for k in kls], [r["gold"] for r in untrained["best_of_n"]],
                  color="gray", linestyle="--", label=f"N = 0: the SFT model's likelihood "
                                        f"({untrained['pair_accuracy']:.2f})")
    for i, (N, p) in enumerate(results["proxies"].items()):
        style = dict(color=f"C{i}", marker=".",
                     label=f"N = {N} (pair accuracy {p['pair_accuracy']:.2f})")
        for ax, key in ((bon_gold, "gold"), (bon_proxy, "proxy")):
            ax.plot([r["kl"] ** 0.5 for r in p["best_of_n"]], [r[key] for r in p["best_of_n"]],
                    **style)
        for ax, key in ((rl_gold, "gold"), (rl_proxy, "proxy")):
            xs, ys = [max(r["kl"], 0) ** 0.5 for r in p["rl"]], [r[key] for r in p["rl"]]
            ax.plot(xs, ys, **style)
            ax.plot(xs[:1], ys[:1], "o", mfc="none", color=style["color"])  # start
            ax.plot(xs[-1:], ys[-1:], "s", color=style["color"])  # end
    for ax, title in ((bon_gold, "best-of-n: gold (accuracy of the pick)"),
                      (bon_proxy, "best-of-n: proxy score of the pick"),
                      (rl_gold, "RL (GRPO on the proxy): gold, held-out samples"),
                      (rl_proxy, "RL: proxy score, held-out samples")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("sqrt(KL(pi || pi_ref)), nats^1/2")
    for ax in (bon_proxy, rl_proxy):
        ax.set_ylabel("std of the proxy on pi_ref's samples")
    bon_gold.legend(fontsize=7)
    rl_gold.plot([], [], "o", mfc="none", color="k", label="start of an RL run")
    rl_gold.plot([], [], "s", color="k", label="end")
    rl_gold.legend(fontsize=7)
    save_figure(fig, args, "reward_model")
