"""The lecture's claims as experiments: each is one command that trains, measures and saves a plot.

    python experiments.py NAME            full run (each under 10 minutes on a 2-core CPU)
    python experiments.py NAME --quick    a few steps of the same code, for the tests
    python experiments.py --list          the names and what each shows

Each experiment calls the scripts' own `train(cfg)` (or `main`) with a few flags changed, reads
their metrics.csv and draws one figure: docs/exp_NAME.png (--docs_dir) plus the numbers behind
it in out/experiments/NAME/results.json (--out_dir). The README shows every figure with a caption
saying what was measured and whether the lecture's claim held.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import time

from runs import UserError, atomic_write, finish_figure, require, write_json
from toy_model import AdditionTask

EXPERIMENTS: dict = {}  # name -> (function(args) -> dict of results, one-line description)


def experiment(description: str):
    """Register an experiment under its function's name."""
    def register(fn):
        EXPERIMENTS[fn.__name__] = (fn, description)
        return fn
    return register


# ----------------------------------------------------------------------------- plumbing

# Flags that shrink each script to a few seconds in --quick mode (the tests); a full run uses the
# experiment's own flags on top of the script's defaults.
QUICK = {
    "sft": dict(steps=3, batch_size=8, n_test=16, eval_every=3),
    "grpo": dict(steps=2, rollout_batch_size=16, train_batch_size=16, gradient_accumulation_steps=1,
                 n_test=16, eval_every=1, samples_every=100),
    "dpo": dict(steps=2, n_test=16, n_prompts=64, batch_size=8, eval_every=1),
    "ppo": dict(steps=2, prompts_per_step=8, n_test=16, eval_every=1, samples_every=100,
                rm_prompts=48, rm_steps=2, rm_batch_size=8),
    "expert_iteration": dict(questions_per_step=8, group_size=4, batch_size=8, n_test=16, eval_every=1,
                             samples_every=100),
}


# The experiments were measured with the scripts' defaults of their time. Issue 16 later changed
# some defaults to reach the same accuracy sooner (below); every experiment keeps the settings it
# was measured with, so that its command still gives the numbers in the README.
MEASURED_WITH = {"grpo": dict(temperature=0.7, group_size=8, skip_zero_advantage=False),
                 "ppo": dict(ppo_epochs=2, n_minibatches=2),
                 "dpo": dict(lr=3e-5, steps=400)}


def train_script(module, args, name: str, **flags) -> list[dict]:
    """Run `module.train` with `flags` on top of its defaults (--quick's sizes override both) into
    out_dir/name, and return its metrics.csv as a list of rows (None where a value is blank)."""
    script = module.__name__
    overrides = {"sft_checkpoint": args.sft_checkpoint} if script != "sft" else {}
    overrides.update(MEASURED_WITH.get(script, {}))
    overrides.update(flags)
    if args.quick:
        overrides.update(QUICK[script])
    overrides["out_dir"] = os.path.join(args.out_dir, name)
    overrides["overwrite"] = True  # an experiment reruns into its own folder
    cfg = module.Config(**overrides)
    print(f"\n=== {script}.py {' '.join(f'--{k} {v}' for k, v in overrides.items())}", flush=True)
    module.train(cfg)
    rows = read_csv(os.path.join(overrides["out_dir"], "metrics.csv"))
    return [r for r in rows if r["step"] > 0]  # row 0 is the starting evaluation (summary.json)


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def column(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric, skipping the steps where it was not logged."""
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return tuple(map(list, zip(*points))) if points else ([], [])


def save_figure(fig, args, name: str) -> str:
    import matplotlib.pyplot as plt
    path = os.path.join(args.docs_dir, f"exp_{name}.png")
    finish_figure(fig)  # legends under their panels; the command, code and machine at the foot
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)
    print(f"wrote {path}")
    return path


def new_figure(n_panels: int, title: str):
    """A figure of n_panels, at most 3 a row (readable at the README's width)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = 2 if n_panels == 4 else min(3, n_panels)
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.5 * rows), squeeze=False,
                             layout="constrained")
    fig.suptitle(title, fontsize=10)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[n_panels:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n_panels]


# ----------------------------------------------------------------------------- the experiments

@experiment("TD(0), Monte Carlo and GAE: bias and variance of the value target against lambda")
def gae_lambda(args) -> dict:
    import gae
    out = os.path.join(args.out_dir, "gae_lambda")
    table = gae.main(["--out_dir", out] + (["--episodes", "200"] if args.quick else []))
    path = os.path.join(args.docs_dir, "exp_gae_lambda.png")
    os.makedirs(args.docs_dir, exist_ok=True)
    shutil.copyfile(os.path.join(out, "bias_variance.png"), path + ".tmp")
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")
    td0, mc = table[0], table[-1]
    return {"table": table, "claim_holds": td0["variance"] < mc["variance"] and mc["bias2"] < td0["bias2"]}


def start_and(rows: list[dict], args, name: str, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of a held-out metric with the run's step-0 value (from summary.json) in front."""
    with open(os.path.join(args.out_dir, name, "summary.json")) as f:
        start = json.load(f)[key.replace("eval_", "start_")]
    steps, values = column(rows, key)
    return [0.0] + steps, [start] + values


def last(rows: list[dict], key: str, n: int = 1) -> float | None:
    """Mean of the last n logged values of one metric (None if it was never logged)."""
    values = column(rows, key)[1][-n:]
    return sum(values) / len(values) if values else None


def smooth(values: list[float], k: int = 10) -> list[float]:
    """Trailing moving average over k points, for the noisy once-per-rollout curves."""
    windows = [values[max(0, i - k + 1):i + 1] for i in range(len(values))]
    return [sum(w) / len(w) for w in windows]


# GRPO runs in the experiments: shorter than grpo.py's 480 steps (the cosine decay follows --steps,
# so each run still ends at lr / 10; some experiments set their own --steps), held-out evaluation
# every 20 steps, no sample printing.
GRPO_RUN = dict(steps=120, eval_every=20, samples_every=1000)


# The task where length is a choice (length_growth, length_bias): SFT on 3-digit addition where half
# the demonstrations answer directly (empty scratchpad) and half work digit by digit, long enough
# for both modes to be learnt; GRPO then starts from it with a smaller rollout batch than grpo.py's
# (128 responses, 16 prompts x 8) so that each experiment stays within minutes on a CPU.
MIXED_SFT = dict(direct_fraction=0.5, steps=300)
MIXED_GRPO = dict(steps=100, rollout_batch_size=128, train_batch_size=128, gradient_accumulation_steps=4,
                  eval_every=20, samples_every=1000)


def mixed_sft(args, name: str) -> str:
    """Train the SFT model on mixed direct and scratchpad demonstrations; return its checkpoint."""
    import sft
    train_script(sft, args, f"{name}/sft", **MIXED_SFT)
    return os.path.join(args.out_dir, name, "sft", "model.pt")


def answer_modes(checkpoint: str, n_test: int) -> dict:
    """Held-out greedy answers of a checkpoint, split by mode: direct (empty scratchpad) or with the
    scratchpad: the share of each, and each mode's accuracy and mean length in tokens."""
    from runs import load_checkpoint, task_config
    from evaluation import evaluate
    from toy_model import AdditionTask, Tokenizer
    model, ckpt = load_checkpoint(checkpoint)
    task = AdditionTask(ckpt["digits"], n_test, **task_config(ckpt["run_config"]))
    metrics, samples = evaluate(model, Tokenizer(), task.test, task.max_new_tokens)
    out = {"accuracy": metrics["accuracy"], "response_len": metrics["response_len"]}
    for mode in ("direct", "scratchpad"):
        chosen = [s for s in samples if s["response"].startswith("<think></think>") == (mode == "direct")]
        out[f"{mode}_share"] = len(chosen) / len(samples)
        out[f"{mode}_accuracy"] = sum(s["answer_reward"] for s in chosen) / len(chosen) if chosen else None
        out[f"{mode}_len"] = sum(s["length"] for s in chosen) / len(chosen) if chosen else None
    return out


def first_and_last(values: list[float], n: int) -> tuple[float, float]:
    """Mean of the first n and of the last n values (n at least 1, at most half of them)."""
    n = max(1, min(n, len(values) // 2 or 1))
    return sum(values[:n]) / n, sum(values[-n:]) / n


# Thresholds of the claims, fixed before any full run.
LENGTH_GROWTH_MIN = 0.30  # length_growth: mean rollout length grows by at least 30%
WRONG_LEN_EXCESS_MIN = 2.0  # length_bias: 1/|o_i| grows wrong answers >= 2 tokens more than a constant


@experiment("GRPO length bias: per-sequence mean (DeepSeekMath) vs a constant divisor (Dr. GRPO)")
def length_bias(args) -> dict:
    """Claim (Dr. GRPO, Liu et al. 2025): dividing each response's summed loss by its own length
    |o_i| shrinks the per-token penalty of a long wrong answer (and raises that of a short one), so
    wrong answers drift longer; a constant divisor (max_new_tokens) treats every token alike. Both
    runs start from the SFT model on mixed direct and scratchpad answers, so that a wrong answer
    can be short (direct) or long (scratchpad)."""
    import grpo
    sft_checkpoint = mixed_sft(args, "length_bias")
    runs = {norm: train_script(grpo, args, f"length_bias/{norm}", sft_checkpoint=sft_checkpoint,
                               **MIXED_GRPO, length_normalization=norm)
            for norm in ("sequence_mean", "constant")}
    plot_length_bias(runs, args)
    results = {}
    for norm, rows in runs.items():
        first, final = first_and_last(column(rows, "response_len_incorrect")[1], 10)
        results[norm] = {"final_accuracy": last(rows, "eval_accuracy"),
                         "wrong_len_first_10": first, "wrong_len_last_10": final, "wrong_len_growth": final - first,
                         "len_last_10": last(rows, "response_len", 10),
                         "scratchpad_share_last_10": 1 - last(rows, "direct_rate", 10),
                         "heldout_wrong_len_final": last(rows, "eval_response_len_incorrect")}
    excess = results["sequence_mean"]["wrong_len_growth"] - results["constant"]["wrong_len_growth"]
    return {**results, "excess_wrong_len_growth": excess, "claim_holds": excess >= WRONG_LEN_EXCESS_MIN}


def plot_length_bias(runs: dict, args) -> None:
    """Per normalisation: held-out accuracy, the length of wrong rollouts, the scratchpad's share."""
    fig, (acc, wrong_len, share) = new_figure(3, "GRPO length normalisation: 1/|o_i| (DeepSeekMath) "
                                                 "vs 1/max_new_tokens (Dr. GRPO)")
    for norm, rows in runs.items():
        acc.plot(*start_and(rows, args, f"length_bias/{norm}", "eval_accuracy"), marker=".", label=norm)
        wrong_len.plot(*(lambda s, v: (s, smooth(v)))(*column(rows, "response_len_incorrect")), label=norm)
        steps, direct = column(rows, "direct_rate")
        share.plot(steps, smooth([1 - d for d in direct]), label=norm)
    acc.set_title("held-out greedy accuracy")
    wrong_len.set_title("length of wrong rollouts (10-step mean)")
    wrong_len.set_ylabel("tokens")
    share.set_title("rollouts with a scratchpad (10-step mean)")
    for ax in (acc, wrong_len, share):
        ax.legend(fontsize=8)
    save_figure(fig, args, "length_bias")


@experiment("GRPO advantage with and without the std division and the baseline: held-out accuracy")
def std_baseline(args) -> dict:
    """Claim (the lecture, REINFORCE): a baseline (the group mean) leaves the expected gradient
    unchanged but cuts its variance, so learning is faster than on the raw reward, and much faster
    once the reward has a large common part: here +1 for the format, which ~97% of responses earn
    and which only adds noise without a baseline. Dividing by the group std (DeepSeekMath; Dr. GRPO
    drops it) rescales each group's advantages to unit size. All runs are on-policy REINFORCE."""
    import grpo
    no_baseline = dict(loss_type="no_baseline", use_std_normalization=False)
    variants = {  # label -> (run name, flags)
        "mean and std (GRPO)": ("mean_std", dict(loss_type="reinforce_with_baseline")),
        "mean only (Dr. GRPO)": ("mean_only", dict(loss_type="reinforce_with_baseline", use_std_normalization=False)),
        "no baseline, 0/1 reward": ("no_baseline", no_baseline),
        "no baseline, reward + format": ("no_baseline_format", dict(**no_baseline, format_reward_weight=1.0))}
    runs = {label: train_script(grpo, args, f"std_baseline/{name}", **{**GRPO_RUN, "steps": 100}, **flags)
            for label, (name, flags) in variants.items()}
    fig, (acc, reward, grad) = new_figure(3, "GRPO advantage: group mean and std, mean only, no baseline")
    results = {}
    for label, rows in runs.items():
        acc.plot(*start_and(rows, args, f"std_baseline/{variants[label][0]}", "eval_accuracy"), marker=".", label=label)
        steps, rewards = column(rows, "answer_reward")
        reward.plot(steps, smooth(rewards), label=label)
        steps, norms = column(rows, "grad_norm")
        grad.plot(steps, smooth(norms), label=label)
        results[label] = {"final_accuracy": last(rows, "eval_accuracy"),
                          "rollout_accuracy_last_20": last(rows, "answer_reward", 20),
                          "grad_norm_mean": sum(norms) / len(norms)}
    acc.set_title("held-out greedy accuracy")
    reward.set_title("rollout accuracy (10-step mean)")
    grad.set_title("gradient norm, clipped at 1 (10-step mean)")
    acc.legend(fontsize=7)
    save_figure(fig, args, "std_baseline")
    final = {label: r["final_accuracy"] for label, r in results.items()}
    return {**results,
            "baseline_beats_raw_reward": final["mean only (Dr. GRPO)"] > final["no baseline, 0/1 reward"],
            "baseline_beats_shifted_reward": final["mean only (Dr. GRPO)"] > final["no baseline, reward + format"],
            "std_beats_mean_only": final["mean and std (GRPO)"] > final["mean only (Dr. GRPO)"]}


@experiment("GRPO KL penalty strength beta: KL to the reference vs held-out accuracy")
def kl_beta(args) -> dict:
    """Claim (the lecture, DeepSeekMath's beta KL(pi_theta || pi_ref) term): a larger beta keeps the
    policy closer to the reference, at the price of less reward: final KL falls as beta grows,
    and so, past some point, does accuracy."""
    import grpo
    betas = (0.0, 1.0, 10.0)  # 0.04 (DeepSeekMath) barely differs from 0 on this task
    runs = {beta: train_script(grpo, args, f"kl_beta/beta_{beta:g}", **{**GRPO_RUN, "steps": 100}, beta=beta)
            for beta in betas}
    fig, (acc, kl, tradeoff) = new_figure(3, "GRPO with a KL penalty (k3, per token) of weight beta")
    results = {}
    for beta, rows in runs.items():
        acc.plot(*start_and(rows, args, f"kl_beta/beta_{beta:g}", "eval_accuracy"), marker=".", label=f"beta {beta:g}")
        kl.plot(*column(rows, "kl_per_token"), marker=".", markersize=3, label=f"beta {beta:g}")  # beta 0: eval steps only
        eval_steps = set(column(rows, "eval_accuracy")[0])
        final_kl = [r["kl_per_token"] for r in rows if r["step"] in eval_steps][-2:]  # same steps for every beta
        point = results[f"beta_{beta:g}"] = {"final_accuracy": last(rows, "eval_accuracy"),
                                             "final_kl": sum(final_kl) / len(final_kl)}
        tradeoff.scatter(point["final_kl"], point["final_accuracy"])
        tradeoff.annotate(f"beta {beta:g}", (point["final_kl"], point["final_accuracy"]), fontsize=8)
    acc.set_title("held-out greedy accuracy")
    kl.set_title("KL to the reference per token (rollouts)")
    tradeoff.set_title("end of run: accuracy vs KL")
    tradeoff.set_xlabel("KL per token (mean of the last 2 evaluations)")
    kl.set_yscale("log")
    tradeoff.set_xscale("log")
    acc.legend(fontsize=8)
    kl.legend(fontsize=8)
    save_figure(fig, args, "kl_beta")
    kls = [results[f"beta_{b:g}"]["final_kl"] for b in betas]
    accs = [results[f"beta_{b:g}"]["final_accuracy"] for b in betas]
    return {**results, "kl_falls_with_beta": kls == sorted(kls, reverse=True),
            "accuracy_falls_with_beta": accs == sorted(accs, reverse=True)}


@experiment("On-policy vs off-policy GRPO (2 epochs, 2 optimizer steps per epoch): clip fraction")
def off_policy(args) -> dict:
    """Claim (the lecture, PPO/GRPO-Clip): on-policy, pi_theta_old = pi_theta, the ratio is 1 and
    the clip never acts; reusing a rollout batch for several optimizer steps makes the later steps
    off-policy, the ratio drifts from 1 and the clip starts to bind (clip fraction > 0), while the
    extra updates per rollout make learning faster per sampled response."""
    import grpo
    variants = {"on-policy (1 step per rollout)": dict(),
                "off-policy (2 epochs x 2 batches)": dict(epochs_per_rollout_batch=2, train_batch_size=128)}
    names = {label: f"off_policy/{'on' if not flags else 'off'}" for label, flags in variants.items()}
    runs = {label: train_script(grpo, args, names[label], **GRPO_RUN, **flags) for label, flags in variants.items()}
    fig, (acc, clip, ratio) = new_figure(3, "GRPO-Clip on- and off-policy (cliprange 0.2)")
    results = {}
    for label, rows in runs.items():
        acc.plot(*start_and(rows, args, names[label], "eval_accuracy"), marker=".", label=label)
        steps, clipped = column(rows, "clip_fraction")
        clip.plot(steps, clipped, label=label)
        ratio.semilogy(*column(rows, "ratio_max"), label=label)
        results[label] = {"final_accuracy": last(rows, "eval_accuracy"),
                          "clip_fraction_mean": sum(clipped) / len(clipped),
                          "ratio_max_max": max(column(rows, "ratio_max")[1]),
                          "seconds": rows[-1]["seconds"]}
    acc.set_title("held-out greedy accuracy")
    clip.set_title("clip fraction (share of response tokens)")
    ratio.set_title("largest ratio pi_theta / pi_old in the batch")
    for ax in (acc, clip, ratio):
        ax.set_xlabel("rollout batch")
    acc.legend(fontsize=8)
    save_figure(fig, args, "off_policy")
    on, off = results.values()
    # Per second rather than per rollout: the off-policy run's last evaluation within the on-policy run's time.
    off_rows = runs["off-policy (2 epochs x 2 batches)"]
    in_time = [r["eval_accuracy"] for r in off_rows if r["eval_accuracy"] is not None and r["seconds"] <= on["seconds"]]
    return {**results, "claim_holds": on["clip_fraction_mean"] == 0 and off["clip_fraction_mean"] > 0,
            "off_policy_learns_faster_per_rollout": off["final_accuracy"] > on["final_accuracy"],
            "off_policy_accuracy_at_on_policy_seconds": in_time[-1] if in_time else None}


@experiment("DPO with and without the NLL term: chosen and rejected log-probs, held-out accuracy")
def dpo_nll(args) -> dict:
    """Claim (the lecture; Pal et al. 2024, Pang et al. 2024): DPO only asks the chosen-minus-rejected
    log-ratio to grow, and often gets there by pushing both log-probs down, the chosen one too,
    which hurts generation; adding the NLL of the chosen response (RPO) keeps it up."""
    import dpo
    runs = {weight: train_script(dpo, args, f"dpo_nll/nll_{weight:g}", nll_weight=weight, eval_every=40)
            for weight in (1.0, 0.0)}
    fig, (logps, acc) = new_figure(2, "DPO (sigmoid, beta 0.1) with NLL weight 1 (RPO) and 0 (the paper)")
    results = {}
    for (weight, rows), color in zip(runs.items(), ("C0", "C3")):
        steps, chosen = column(rows, "logps/chosen")
        steps, rejected = column(rows, "logps/rejected")
        logps.plot(steps, smooth(chosen), color=color, label=f"chosen, NLL {weight:g}")
        logps.plot(steps, smooth(rejected), color=color, linestyle="--", label=f"rejected, NLL {weight:g}")
        acc.plot(*start_and(rows, args, f"dpo_nll/nll_{weight:g}", "eval_accuracy"), marker=".", color=color,
                 label=f"task accuracy, NLL {weight:g}")
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
    pure, rpo = results["nll_0"], results["nll_1"]
    return {**results, "chosen_falls_without_nll": pure["logps_chosen_last_10"] < pure["logps_chosen_first_10"],
            "chosen_kept_with_nll": rpo["logps_chosen_last_10"] >= rpo["logps_chosen_first_10"],
            "nll_helps_accuracy": rpo["final_accuracy"] > pure["final_accuracy"]}


# The reward_model experiment's settings and claim thresholds, fixed before the full run. pi_ref is
# the SFT policy sampled at `temperature`: best-of-n and RL both sample at it, so that their KLs
# to pi_ref compare. --quick shrinks every size.
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


def sample_responses(policy, problems, k: int, temperature: float, tokenizer, max_new_tokens: int):
    """k responses to each problem from `policy` at `temperature`, padded to max_new_tokens so that
    batches stack: seq (N k, P + max_new_tokens), rows i k .. i k + k - 1 answering problem i;
    response_mask (N k, max_new_tokens); gold (N k,), 1 where the verifier says right, else 0."""
    import torch
    import torch.nn.functional as F
    from toy_model import encode_prompts, generate, reward_fn
    device = next(policy.parameters()).device
    seqs, masks, gold = [], [], []
    for i in range(0, len(problems), 64):  # 64 prompts x k responses at a time
        chunk = problems[i:i + 64]
        prompt_ids = encode_prompts(tokenizer, [p.prompt for p in chunk], device)  # (n, P)
        ids, mask = generate(policy, prompt_ids, max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                             num_samples=k, temperature=temperature)  # (n k, T) each, T <= max
        gold += [reward_fn(tokenizer.decode(row[:m]), chunk[j // k].answer)["reward"]
                 for j, (row, m) in enumerate(zip(ids.tolist(), mask.sum(1).tolist()))]
        pad = max_new_tokens - ids.shape[1]
        seqs.append(torch.cat([prompt_ids.repeat_interleave(k, dim=0),
                               F.pad(ids, (0, pad), value=tokenizer.pad_id)], dim=1))
        masks.append(F.pad(mask, (0, pad)))
    return torch.cat(seqs), torch.cat(masks).float(), torch.tensor(gold, device=device)


def proxy_score(reward_model, seq, response_mask, prompt_len: int, temperature: float):
    """The proxy r(q, o) = sum over response tokens of log p_rm(o_t | q, o_<t) at `temperature`:
    a language model read as a reward model, each token scored where it is written. (B,)"""
    from toy_model import get_response_log_probs
    log_probs = get_response_log_probs(reward_model, seq[:, :-1], seq[:, 1:],
                                       temperature=temperature)["log_probs"]  # (B, P + T - 1)
    return (log_probs[:, prompt_len - 1:] * response_mask).sum(dim=1)


def proxy_scores(reward_model, seq, response_mask, prompt_len: int, temperature: float):
    """proxy_score of many sequences, 512 at a time, without gradient: (B,)."""
    import torch
    with torch.inference_mode():
        return torch.cat([proxy_score(reward_model, seq[i:i + 512], response_mask[i:i + 512],
                                      prompt_len, temperature) for i in range(0, len(seq), 512)])


def comparison_pairs(gold, k: int) -> list[tuple[int, int]]:
    """(chosen, rejected) rows: for each prompt's k responses, disjoint pairs of a right and a wrong
    one (at most min(#right, #wrong) per prompt, no response used twice)."""
    pairs = []
    for i in range(0, len(gold), k):
        right = [r for r in range(i, i + k) if gold[r] == 1]
        wrong = [r for r in range(i, i + k) if gold[r] == 0]
        pairs += list(zip(right, wrong))
    return pairs


def train_proxy(policy, seq, response_mask, pairs, prompt_len: int, spec: dict):
    """A Bradley-Terry reward model: a copy of the SFT model trained for spec["rm_epochs"] passes
    over `pairs` (rows of seq, chosen then rejected) to minimise -log sigmoid(r_chosen - r_rejected)
    with r = proxy_score. Returns it frozen."""
    import copy
    import torch
    from reward_model import bradley_terry_loss
    from runs import lr_at
    reward_model = copy.deepcopy(policy).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(reward_model.parameters(), lr=spec["rm_lr"], betas=(0.9, 0.98),
                                  weight_decay=0.0)
    pairs = torch.tensor(pairs, device=seq.device)  # (N, 2)
    batch = min(spec["rm_batch_size"], len(pairs))
    order = torch.cat([torch.randperm(len(pairs), device=seq.device)
                       for _ in range(spec["rm_epochs"])])
    steps = len(order) // batch
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step + 1, spec["rm_lr"], min(10, steps), steps, cosine=False)
        rows = pairs[order[step * batch:(step + 1) * batch]].flatten()  # chosen, rejected, ...
        scores = proxy_score(reward_model, seq[rows], response_mask[rows], prompt_len,
                             spec["temperature"])  # (2 b,)
        loss = bradley_terry_loss(scores[0::2], scores[1::2])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reward_model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return reward_model.eval().requires_grad_(False)


def pair_accuracy(scores, gold) -> float | None:
    """Share of (right, wrong) response pairs of one prompt that the score orders right, ties
    counting one half, over all prompts. scores, gold: (prompts, k). None if there is no pair."""
    import torch
    higher = (scores[:, :, None] > scores[:, None, :]).float()  # (G, k, k): i scores above j
    wins = higher + 0.5 * (scores[:, :, None] == scores[:, None, :]).float()
    is_pair = (gold[:, :, None] == 1) & (gold[:, None, :] == 0)  # i right, j wrong
    return (wins[is_pair].mean().item() if is_pair.any() else None)


def best_of_n(scores, n: int):
    """Best-of-n: split each row of scores (G, K) into K // n groups of n consecutive samples and
    pick the highest-scoring one in each group, a tie going to the first. Returns the picked
    columns, (G, K // n)."""
    import torch
    G, K = scores.shape
    assert K % n == 0, f"best_of_n: n = {n} does not divide the {K} samples"
    picked = scores.view(G, K // n, n).argmax(dim=-1)  # argmax returns the first of equal maxima
    return picked + torch.arange(0, K, n, device=scores.device)


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || pi_ref) = log n - (n - 1) / n, exact when no two samples tie in score
    (a continuous score), an upper bound otherwise (Beirami et al. 2024)."""
    return math.log(n) - (n - 1) / n


def best_of_n_of(reward_model, seq, response_mask, gold, ns: list[int], prompt_len: int,
                 temperature: float) -> tuple[dict, tuple[float, float]]:
    """One proxy on pi_ref's samples (G prompts x K, gold (G, K)): its held-out pair accuracy and,
    for each n, the mean gold and proxy score of the best-of-n picks. The score is normalised to
    mean 0, std 1 on these samples; returns ({"pair_accuracy", "best_of_n"}, (mean, std))."""
    scores = proxy_scores(reward_model, seq, response_mask, prompt_len, temperature)
    norm = (scores.mean().item(), scores.std().item())
    scores = ((scores - norm[0]) / norm[1]).view(gold.shape)  # (G, K)
    accuracy = pair_accuracy(scores, gold)
    print(f"held-out pair accuracy {accuracy:.3f}")
    picks = {n: best_of_n(scores, n) for n in ns}
    return {"pair_accuracy": accuracy,
            "best_of_n": [{"n": n, "kl": best_of_n_kl(n), "gold": gold.gather(1, i).mean().item(),
                           "proxy": scores.gather(1, i).mean().item()}
                          for n, i in picks.items()]}, norm


def rl_against_proxy(policy, reference, reward_model, norm, eval_prompts, task, tokenizer, rng,
                     spec: dict) -> list[dict]:
    """GRPO (on-policy, one AdamW step per rollout batch) whose reward is the proxy's score, with
    the group's mean and std as baseline and scale, and a beta KL(pi || pi_ref) penalty (k3). Every
    eval_every steps, on the held-out prompts: gold accuracy and the proxy's score (normalised by
    `norm`, its mean and std on pi_ref's samples) of samples at the temperature, and
    KL(pi || pi_ref) per sequence, estimated as the mean of sum_t log pi(o_t) - log pi_ref(o_t)."""
    import copy
    import torch
    import grpo
    from runs import lr_at
    from toy_model import get_response_log_probs
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


@experiment("Reward over-optimisation (Gao et al.): best-of-n and RL on proxies of N comparisons")
def reward_model(args) -> dict:
    """Claim (the lecture; Gao, Schulman and Hilton 2022): against a proxy reward that is
    informative but imperfect, optimisation first raises the true ("gold") reward, then lowers it
    while the proxy keeps rising; a proxy learnt from more comparisons peaks later or higher.
    Gold: the verifier (answer correctness). Proxies: Bradley-Terry reward models trained on N
    (right, wrong) pairs of the SFT policy's own samples, for three N. Each is optimised by
    best-of-n (KL = log n - (n - 1) / n) and by GRPO on its score (KL measured along the run)."""
    import torch
    from runs import load_checkpoint, pick_device, set_seed
    from toy_model import Tokenizer
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


def auroc(positive: list[float], negative: list[float]) -> float | None:
    """The chance that a random positive scores above a random negative, ties counting one half
    (the area under the ROC curve; 0.5: the score tells nothing). None if either side is empty."""
    if not positive or not negative:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def abstention_profile(checkpoint: str, n_test: int) -> dict:
    """How a checkpoint abstains on the held-out problems, overall and per kind of problem. Greedy
    with "?" forbidden says which problems it would get right if it had to answer; free greedy says
    where it abstains; and p_abstain = p("?" | prompt, <think>) is its chance of abstaining when
    sampled (T = 1): its first response token after <think> decides."""
    import torch
    from runs import load_checkpoint, task_config
    from evaluation import evaluate
    from toy_model import ABSTENTION, AdditionTask, Tokenizer, encode_prompts
    model, ckpt = load_checkpoint(checkpoint)
    task, tok = AdditionTask(ckpt["digits"], n_test, **task_config(ckpt["run_config"])), Tokenizer()
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
                "wrong_rate": mean(not abstained[i] and samples[i]["answer_reward"] == 0 for i in idx),
                "selective_accuracy": mean(samples[i]["answer_reward"] for i in answered),
                "forced_accuracy": mean(right[i] for i in idx), "n_right": len(on_right), "n_wrong": len(on_wrong),
                "abstain_rate_right": mean(abstained[i] for i in on_right),
                "abstain_rate_wrong": mean(abstained[i] for i in on_wrong),
                "p_abstain": mean(p_abstain[i] for i in idx),
                "p_abstain_right": mean(p_abstain[i] for i in on_right),
                "p_abstain_wrong": mean(p_abstain[i] for i in on_wrong),
                # 1: p("?") is higher on every problem it would get wrong than on every one it would get right
                "auroc": auroc([p_abstain[i] for i in on_wrong], [p_abstain[i] for i in on_right])}

    kinds = sorted({task.kind(p) for p in task.test})
    return {**summary(list(range(len(task.test)))),
            "by_kind": {k: summary([i for i, p in enumerate(task.test) if task.kind(p) == k]) for k in kinds}}


def plot_outcomes(ax, profiles: dict) -> None:
    """Held-out greedy outcomes (right, '?', wrong) as one stacked bar per model."""
    for x, p in enumerate(profiles.values()):
        bottom = 0.0
        for key, color, label in (("accuracy", "tab:green", "right"), ("abstain_rate", "tab:gray", "'?'"),
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
    ax.axvline(break_even, color="gray", linestyle="--", label=f"break-even p(right) = {break_even:.2f}")
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


# The abstain experiment's task and thresholds, fixed before any full run.
ABSTAIN_TASK = dict(easy_digits=2, hard_fraction=0.05)  # 3-digit prompts; 5% of SFT problems use the top digit
ABSTAIN_RL_HARD_FRACTION = 0.5  # GRPO's prompts: half hard, or the few hard ones teach too little
SFT_AUROC_TOLERANCE = 0.1  # after SFT: |AUROC - 0.5| <= 0.1
GRPO_AUROC_MIN = 0.85  # after GRPO: AUROC >= 0.85
ABSTAIN_ON_WRONG_MIN = 0.60  # after GRPO: greedy '?' on at least 60% of the problems it would get wrong
ABSTAIN_ON_RIGHT_MAX = 0.10  # after GRPO: and on at most 10% of those it would get right


@experiment("SFT abstains ('?') at random; does GRPO, paid a little for '?', abstain where it would be wrong?")
def abstain(args) -> dict:
    """Claim (the lecture): SFT cannot teach a model when not to answer, because the demonstrator
    does not know what the model knows; RL with a reward that prefers '?' to a wrong answer can.
    The task mixes easy problems (2-digit operands, zero-padded: 057+032=) with hard ones (3-digit)
    that only 5% of the demonstrations cover, so the model's competence shows in the prompt.
    SFT on demonstrations of which 30% are the abstention, picked at random. Then GRPO, on prompts
    of which half are hard (the held-out set is always half and half), with
    reward 1 right, 0.3 for '?', 0 wrong, as Dr. GRPO (no std division, constant length
    normalisation: advantages are reward differences, so '?' wins exactly where the chance of a
    right answer is below 0.3, and the 7-token '?' is not favoured over longer answers) with a KL
    penalty to the SFT model (beta 0.04) that keeps '?' explored."""
    import grpo
    import sft
    abstain_fraction, abstain_reward, wrong_reward = 0.3, 0.3, 0.0
    train_script(sft, args, "abstain/sft", steps=300, abstain_fraction=abstain_fraction, **ABSTAIN_TASK)
    sft_checkpoint = os.path.join(args.out_dir, "abstain", "sft", "model.pt")
    grpo_rows = train_script(grpo, args, "abstain/grpo", sft_checkpoint=sft_checkpoint,
                             **{**ABSTAIN_TASK, "hard_fraction": ABSTAIN_RL_HARD_FRACTION},
                             **{**MIXED_GRPO, "steps": 100}, abstain_reward=abstain_reward,
                             wrong_reward=wrong_reward, use_std_normalization=False,
                             length_normalization="constant", beta=0.04)
    n_test = 16 if args.quick else 500
    before = abstention_profile(sft_checkpoint, n_test)
    after = abstention_profile(os.path.join(args.out_dir, "abstain", "grpo", "model.pt"), n_test)
    for name, profile in (("SFT", before), ("GRPO", after)):
        for kind, p in [("all", profile)] + list(profile["by_kind"].items()):
            f = {k: "n/a" if v is None else f"{v:.3f}" for k, v in p.items() if k != "by_kind"}
            print(f"{name:>4} {kind:>4}: accuracy {f['accuracy']} ('?' forbidden {f['forced_accuracy']}), "
                  f"abstains {f['abstain_rate']}, wrong {f['wrong_rate']} | abstains on right "
                  f"{f['abstain_rate_right']} vs wrong {f['abstain_rate_wrong']} | AUROC {f['auroc']}")

    # Answer when p(right) * 1 + (1 - p(right)) * wrong_reward > abstain_reward.
    break_even = (abstain_reward - wrong_reward) / (1 - wrong_reward)
    fig, (ax_out, ax_kind, ax_curve) = new_figure(3, f"SFT with {abstain_fraction:.0%} random '?' "
                                                  f"demonstrations, then GRPO with reward {abstain_reward} for '?'")
    plot_outcomes(ax_out, {"SFT": before, "GRPO": after})
    plot_abstention_by_kind(ax_kind, {"SFT": before, "GRPO": after}, break_even)
    for key, label in (("abstain_rate", "rollouts: '?'"), ("answer_reward", "rollouts: right"),
                       ("eval_abstain_rate", "held-out greedy: '?'"), ("eval_accuracy", "held-out greedy: right")):
        ax_curve.plot(*column(grpo_rows, key), label=label, marker="." if key.startswith("eval") else None)
    ax_curve.set_title("during GRPO", fontsize=9)
    ax_curve.legend(fontsize=7)
    save_figure(fig, args, "abstain")

    sft_random = before["auroc"] is not None and abs(before["auroc"] - 0.5) <= SFT_AUROC_TOLERANCE
    rl_selective = (after["auroc"] is not None and after["auroc"] >= GRPO_AUROC_MIN
                    and (after["abstain_rate_wrong"] or 0) >= ABSTAIN_ON_WRONG_MIN
                    and (after["abstain_rate_right"] or 0) <= ABSTAIN_ON_RIGHT_MAX)
    more_selective = (after["selective_accuracy"] or 0) > (before["selective_accuracy"] or 0)
    return {"abstain_fraction": abstain_fraction, "abstain_reward": abstain_reward, "wrong_reward": wrong_reward,
            "break_even_accuracy": break_even, **ABSTAIN_TASK,
            "grpo_rollout_abstain_rate": {"first_step": grpo_rows[0]["abstain_rate"],
                                          "last_step": grpo_rows[-1]["abstain_rate"]},
            "before_sft": before, "after_grpo": after,
            "sft_abstains_at_random": sft_random, "grpo_abstains_where_wrong": rl_selective,
            "selective_accuracy_rises": more_selective,
            "claim_holds": sft_random and rl_selective and more_selective}


@experiment("GRPO on correctness alone, from SFT on mixed direct and scratchpad answers: does length grow?")
def length_growth(args) -> dict:
    """Claim (the lecture; DeepSeek-R1): RL-trained models answer at greater length, because RL finds
    that longer reasoning pays. Here the SFT model answers directly (an empty <think></think>) or
    with the carry scratchpad, chosen by its first sampled token after <think>; the reward is
    correctness alone, nothing rewards length itself. If the scratchpad is right more often,
    GRPO should shift the choice towards it, and the mean response length should grow."""
    import grpo
    sft_checkpoint = mixed_sft(args, "length_growth")
    rows = train_script(grpo, args, "length_growth/grpo", sft_checkpoint=sft_checkpoint, **MIXED_GRPO)
    n_test = 16 if args.quick else 500
    before = answer_modes(sft_checkpoint, n_test)
    after = answer_modes(os.path.join(args.out_dir, "length_growth", "grpo", "model.pt"), n_test)
    steps, lengths = column(rows, "response_len")
    steps, direct = column(rows, "direct_rate")
    fig, (length, share, acc) = new_figure(3, "GRPO on correctness alone from SFT on 50% direct answers")
    plot_length_and_mix(length, share, rows, before)
    acc.plot(*start_and(rows, args, "length_growth/grpo", "eval_accuracy"), marker=".", color="C3",
             label="held-out (greedy)")
    acc.plot(steps, smooth(column(rows, "answer_reward")[1]), color="C0", label="rollouts (10-step mean)")
    acc.set_title("accuracy")
    acc.legend(fontsize=7)
    save_figure(fig, args, "length_growth")
    len_first, len_last = first_and_last(lengths, 10)
    scratch_first, scratch_last = first_and_last([1 - d for d in direct], 10)
    with open(os.path.join(args.out_dir, "length_growth", "grpo", "summary.json")) as f:
        summary = json.load(f)
    # Growth from the SFT policy's own samples (the first rollout batch, before any update) to the
    # last 10 rollout batches; the mean of the first 10 batches is kept too (the shift is fast).
    results = {"rollout_len_start": lengths[0], "rollout_len_first_10": len_first, "rollout_len_last_10": len_last,
               "len_growth": len_last / lengths[0] - 1, "len_growth_vs_first_10": len_last / len_first - 1,
               "scratchpad_share_start": 1 - direct[0], "scratchpad_share_first_10": scratch_first,
               "scratchpad_share_last_10": scratch_last, "heldout_before_grpo": before, "heldout_after_grpo": after,
               "start_accuracy": summary["start_accuracy"], "final_accuracy": summary["final_accuracy"]}
    return {**results, "claim_holds": results["len_growth"] >= LENGTH_GROWTH_MIN
            and results["final_accuracy"] > results["start_accuracy"]}


def plot_length_and_mix(length, share, rows: list[dict], sft_modes: dict) -> None:
    """Mean response length and the share of responses with a scratchpad during GRPO (rollouts and
    held-out greedy), with the length that the mix alone predicts: share x the scratchpad's length +
    (1 - share) x the direct answer's, each as the SFT model writes it. If the two length curves
    agree, the growth is the policy choosing to reason, not each answer growing longer."""
    steps, lengths = column(rows, "response_len")
    steps, direct = column(rows, "direct_rate")
    length.plot(steps, lengths, alpha=0.3, color="C0")
    length.plot(steps, smooth(lengths), color="C0", label="rollouts (10-step mean)")
    eval_steps, eval_direct = column(rows, "eval_direct_rate")
    eval_steps, eval_lengths = column(rows, "eval_response_len")
    start = [0.0] if sft_modes else []
    length.plot(start + eval_steps, [sft_modes["response_len"]] * len(start) + eval_lengths, marker=".",
                color="C3", label="held-out (greedy)")
    if sft_modes.get("direct_len") and sft_modes.get("scratchpad_len"):
        predicted = [(1 - d) * sft_modes["scratchpad_len"] + d * sft_modes["direct_len"] for d in direct]
        length.plot(steps, smooth(predicted), color="k", linestyle=":", label="predicted by the mix alone")
    share.plot(steps, smooth([1 - d for d in direct]), color="C0", label="rollouts (10-step mean)")
    share.plot(start + eval_steps, [sft_modes["scratchpad_share"]] * len(start) + [1 - d for d in eval_direct],
               marker=".", color="C3", label="held-out (greedy)")
    length.set_title("mean response length (tokens)")
    share.set_title("share of responses with a scratchpad")
    share.set_ylim(0, 1.05)
    for ax in (length, share):
        ax.legend(fontsize=7)


# Pass@k in the experiments: n samples at temperature 1 (CS336's setting) on the first problems of
# the held-out set; --quick shrinks both.
PASS_AT_K = dict(n=64, ks=(1, 2, 4, 8, 16, 32, 64), n_problems=200)
PASS_AT_K_QUICK = dict(n=4, ks=(1, 2, 4), n_problems=8)


def pass_at_k_of(checkpoint: str, args) -> dict:
    """pass@k and maj@k of a checkpoint on the held-out problems (toy_model.evaluate_pass_at_k)."""
    from runs import load_checkpoint
    from evaluation import evaluate_pass_at_k
    from toy_model import AdditionTask, Tokenizer
    spec = PASS_AT_K_QUICK if args.quick else PASS_AT_K
    model, ckpt = load_checkpoint(checkpoint)
    task = AdditionTask(ckpt["digits"])
    result = evaluate_pass_at_k(model, Tokenizer(), task.test[:spec["n_problems"]], task.max_new_tokens,
                                n=spec["n"], ks=spec["ks"])
    result.pop("correct_counts")
    print(f"{checkpoint}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items() if "@" in k))
    return result


# The same model keeps the same colour in every panel of a figure.
MODEL_COLORS = {"SFT": "tab:gray", "expert iteration": "tab:blue", "GRPO": "tab:orange"}


def plot_pass_at_k(ax, curves: dict[str, dict]) -> None:
    """pass@k against k (log scale), one line per model."""
    for label, result in curves.items():
        ks = [int(k[5:]) for k in result if k.startswith("pass@")]
        ax.plot(ks, [result[f"pass@{k}"] for k in ks], marker=".", label=label,
                color=MODEL_COLORS.get(label))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples at temperature 1)")
    ax.set_ylim(0, 1.02)
    ax.set_title("held-out pass@k", fontsize=9)
    ax.legend(fontsize=7)


@experiment("Expert iteration vs GRPO, same sampled responses: accuracy per sample and per second, pass@k")
def ei_vs_grpo(args) -> dict:
    """Claims (the lecture; CS336 section 5; Yue et al. 2025): expert iteration, SFT on the policy's
    own verified samples, is a cheap policy-improvement baseline that GRPO should beat per sample;
    and RL from verifiable rewards mostly sharpens: pass@1 rises while pass@64 stays flat or falls,
    because it reweights answers the model can already sample rather than finding new ones.
    Both start from the same SFT model and sample the same number of responses (EI: 6 steps x 512
    questions x 8; GRPO: 96 steps x 32 prompts x 8)."""
    import expert_iteration
    import grpo
    ei_steps = 1 if args.quick else 6
    budget = ei_steps * expert_iteration.Config.questions_per_step * expert_iteration.Config.group_size
    grpo_steps = 2 if args.quick else budget // grpo.Config.rollout_batch_size
    # CPU seconds of this process as well as wall seconds: on a shared machine the wall clock also
    # counts the other jobs; with one thread (OMP_NUM_THREADS=1) CPU time is what the run costs.
    cpu = {}
    cpu["expert_iteration"] = time.process_time()
    ei_rows = train_script(expert_iteration, args, "ei_vs_grpo/expert_iteration", n_ei_steps=ei_steps)
    cpu["grpo"] = time.process_time()
    cpu["expert_iteration"] = cpu["grpo"] - cpu["expert_iteration"]
    grpo_rows = train_script(grpo, args, "ei_vs_grpo/grpo", steps=grpo_steps, eval_every=8, samples_every=1000)
    cpu["grpo"] = time.process_time() - cpu["grpo"]
    for row in grpo_rows:  # GRPO samples rollout_batch_size responses per step
        row["sampled_responses"] = row["step"] * (16 if args.quick else grpo.Config.rollout_batch_size)
    checkpoints = {"SFT": args.sft_checkpoint,
                   "expert iteration": os.path.join(args.out_dir, "ei_vs_grpo", "expert_iteration", "model.pt"),
                   "GRPO": os.path.join(args.out_dir, "ei_vs_grpo", "grpo", "model.pt")}
    passk = {label: pass_at_k_of(path, args) for label, path in checkpoints.items()}

    fig, (per_sample, per_second, entropy, ks) = new_figure(4, "Expert iteration vs GRPO from the same SFT "
                                                               "model, same number of sampled responses")
    results = {}
    for label, rows, name in (("expert iteration", ei_rows, "expert_iteration"), ("GRPO", grpo_rows, "grpo")):
        with open(os.path.join(args.out_dir, "ei_vs_grpo", name, "summary.json")) as f:
            summary = json.load(f)
        evals = [r for r in rows if r.get("eval_accuracy") is not None]
        start = summary["start_accuracy"]
        per_sample.plot([0] + [r["sampled_responses"] for r in evals], [start] + [r["eval_accuracy"] for r in evals],
                        marker=".", label=label, color=MODEL_COLORS[label])
        scale = cpu[name] / rows[-1]["seconds"]  # wall seconds -> CPU seconds, as a run-wide ratio
        per_second.plot([0] + [r["seconds"] * scale for r in evals], [start] + [r["eval_accuracy"] for r in evals],
                        marker=".", label=label, color=MODEL_COLORS[label])
        entropy.plot([r["sampled_responses"] for r in rows], [r["entropy"] for r in rows], label=label, color=MODEL_COLORS[label])
        results[name] = {"start_accuracy": start, "final_accuracy": summary["final_accuracy"],
                         "wall_seconds": summary["wall_seconds"], "cpu_seconds": round(cpu[name], 1),
                         "sampled_responses": rows[-1]["sampled_responses"],
                         "entropy_first": rows[0]["entropy"], "entropy_last": rows[-1]["entropy"],
                         "pass_at_k": passk[label]}
    per_sample.set_xlabel("responses sampled")
    per_sample.set_title("held-out greedy accuracy", fontsize=9)
    per_second.set_xlabel("CPU seconds of the run (wall time rescaled)")
    per_second.set_title("held-out greedy accuracy", fontsize=9)
    entropy.set_xlabel("responses sampled")
    entropy.set_title("token entropy on rollouts (nats, at T = 0.7)", fontsize=9)
    per_sample.legend(fontsize=7)
    plot_pass_at_k(ks, passk)
    save_figure(fig, args, "ei_vs_grpo")
    top = f"pass@{max(int(k[5:]) for k in passk['SFT'] if k.startswith('pass@'))}"
    sharpened = {name: passk[label]["pass@1"] > passk["SFT"]["pass@1"] and passk[label][top] <= passk["SFT"][top] + 0.02
                 for label, name in (("expert iteration", "expert_iteration"), ("GRPO", "grpo"))}
    return {**results, "pass_at_k_sft": passk["SFT"], "top_k": top, "sharpened": sharpened,
            "grpo_beats_ei_per_sample": results["grpo"]["final_accuracy"] > results["expert_iteration"]["final_accuracy"]}


@experiment("DeepSeek-R1's pipeline on the toy: cold-start SFT, GRPO, rejection-sampling SFT, GRPO again")
def r1_pipeline(args) -> dict:
    """The R1 recipe (DeepSeek-AI 2025, as in the lecture), stage by stage, each from the previous:
    1. cold start: the default SFT checkpoint (160 steps x 64 demonstrations, stopped short);
    2. reasoning RL: GRPO with the accuracy reward plus 0.1 x the format reward;
    3. rejection-sampling SFT: sample the RL model at temperature 0.7 on fresh questions, keep the
       verified-correct responses, and fine-tune the *cold-start* checkpoint on them
       (expert_iteration.py with --teacher_checkpoint: distillation, not self-improvement);
    4. final RL for all scenarios: a short GRPO from the distilled model (the verifier as reward).
    After every stage: held-out greedy accuracy, format rate and pass@k at temperature 1."""
    import expert_iteration
    import grpo
    base = os.path.join(args.out_dir, "r1_pipeline")
    ckpt = {"1. cold-start SFT": args.sft_checkpoint}
    train_script(grpo, args, "r1_pipeline/grpo", steps=2 if args.quick else 100, eval_every=20,
                 samples_every=1000, format_reward_weight=0.1)
    ckpt["2. GRPO (accuracy + format)"] = os.path.join(base, "grpo", "model.pt")
    train_script(expert_iteration, args, "r1_pipeline/rejection_sft", n_ei_steps=1 if args.quick else 3,
                 teacher_checkpoint=ckpt["2. GRPO (accuracy + format)"])
    ckpt["3. rejection-sampling SFT"] = os.path.join(base, "rejection_sft", "model.pt")
    train_script(grpo, args, "r1_pipeline/final_grpo", sft_checkpoint=ckpt["3. rejection-sampling SFT"],
                 steps=2 if args.quick else 40, eval_every=20, samples_every=1000)
    ckpt["4. final GRPO"] = os.path.join(base, "final_grpo", "model.pt")

    from runs import load_checkpoint
    from evaluation import evaluate
    from toy_model import AdditionTask, Tokenizer
    stages = {}
    for label, path in ckpt.items():
        model, meta = load_checkpoint(path)
        task = AdditionTask(meta["digits"], 16 if args.quick else 500)
        greedy, _ = evaluate(model, Tokenizer(), task.test, task.max_new_tokens)
        stages[label] = {"accuracy": greedy["accuracy"], "format_rate": greedy["format_rate"],
                         "pass_at_k": pass_at_k_of(path, args)}
    top = max((k for k in stages["4. final GRPO"]["pass_at_k"] if k.startswith("pass@")), key=lambda k: int(k[5:]))
    print(f"{'stage':<30} accuracy  format  pass@1  {top}")
    for label, s in stages.items():
        print(f"{label:<30} {s['accuracy']:.3f}     {s['format_rate']:.3f}   {s['pass_at_k']['pass@1']:.3f}   "
              f"{s['pass_at_k'][top]:.3f}")

    fig, (bars, ks) = new_figure(2, "DeepSeek-R1's pipeline on 3-digit addition, stage by stage")
    x = list(range(len(stages)))
    for offset, key, label in ((-0.2, "accuracy", "greedy accuracy"), (0.2, "format_rate", "format rate")):
        bars.bar([i + offset for i in x], [s[key] for s in stages.values()], width=0.4, label=label)
    bars.set_xticks(x, [label.split(". ")[0] for label in stages])
    bars.set_xlabel("stage: " + ", ".join(stages))
    bars.xaxis.label.set_fontsize(6)
    bars.set_ylim(0, 1.05)
    bars.set_title("held-out, greedy", fontsize=9)
    bars.legend(fontsize=7)
    plot_pass_at_k(ks, {label: s["pass_at_k"] for label, s in stages.items()})
    save_figure(fig, args, "r1_pipeline")
    accuracy = [s["accuracy"] for s in stages.values()]
    return {"stages": stages, "rl_improves_cold_start": accuracy[1] > accuracy[0],
            "distillation_keeps_most_of_rl": accuracy[2] >= accuracy[0] + 0.8 * (accuracy[1] - accuracy[0]),
            "final_rl_improves_distilled": accuracy[3] > accuracy[2]}


# ----------------------------------------------------------------------------- command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage block or traceback
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None) -> dict | None:
    parser = _Parser(prog="experiments.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", choices=sorted(EXPERIMENTS), metavar="NAME",
                        help="one of: " + ", ".join(EXPERIMENTS))
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--quick", action="store_true", help="a few steps of each run (for the tests)")
    parser.add_argument("--sft_checkpoint", default="out/sft/model.pt",
                        help="starting model of the RL runs; the default one is trained with sft.py's defaults if missing")
    parser.add_argument("--docs_dir", default="docs", help="where exp_NAME.png goes (default: docs)")
    parser.add_argument("--out_dir", default="out/experiments", help="runs and results.json (default: out/experiments)")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, description) in EXPERIMENTS.items():
            print(f"{name:<16} {description}")
        return None
    if args.name is None:
        parser.error("name an experiment (--list shows them)")
    fn, description = EXPERIMENTS[args.name]
    print(f"{args.name}: {description}")
    start = time.time()
    try:
        results = fn(args)
    except UserError as e:
        parser.exit(2, f"experiments.py: error: {e}\n")
    results = {"experiment": args.name, "quick": args.quick, "seconds": round(time.time() - start, 1), **results}
    write_json(os.path.join(args.out_dir, args.name, "results.json"), results)
    print(f"{args.name}: {results['seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
