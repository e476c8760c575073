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
import os
import shutil
import sys
import time

from toy_model import AdditionTask, UserError, _atomic_write, write_json

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


def train_script(module, args, name: str, **flags) -> list[dict]:
    """Run `module.train` with `flags` on top of its defaults (--quick's sizes override both) into
    out_dir/name, and return its metrics.csv as a list of rows (None where a value is blank)."""
    script = module.__name__
    overrides = {"sft_checkpoint": args.sft_checkpoint} if script != "sft" else {}
    overrides.update(flags)
    if args.quick:
        overrides.update(QUICK[script])
    overrides["out_dir"] = os.path.join(args.out_dir, name)
    cfg = module.Config(**overrides)
    print(f"\n=== {script}.py {' '.join(f'--{k} {v}' for k, v in overrides.items())}", flush=True)
    module.train(cfg)
    return read_csv(os.path.join(overrides["out_dir"], "metrics.csv"))


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
    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)
    print(f"wrote {path}")
    return path


def new_figure(ncols: int, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.2), squeeze=False, layout="constrained")
    fig.suptitle(title, fontsize=10)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.set_xlabel("step")
    return fig, list(axes.flat)


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


@experiment("GRPO length bias: per-sequence mean (DeepSeekMath) vs a constant divisor (Dr. GRPO)")
def length_bias(args) -> dict:
    """Claim (Dr. GRPO, Liu et al. 2025): dividing each response's summed loss by its own length
    |o_i| shrinks the per-token penalty of a long wrong answer, so wrong answers drift longer; a
    constant divisor (max_new_tokens) treats every token alike and removes the drift."""
    import grpo
    runs = {norm: train_script(grpo, args, f"length_bias/{norm}", steps=200, eval_every=25, samples_every=1000,
                               length_normalization=norm)
            for norm in ("sequence_mean", "constant")}
    fig, (acc, rollout, held_out) = new_figure(3, "GRPO length normalisation: 1/|o_i| (DeepSeekMath) "
                                                  "vs 1/max_new_tokens (Dr. GRPO)")
    results = {}
    for norm, rows in runs.items():
        acc.plot(*start_and(rows, args, f"length_bias/{norm}", "eval_accuracy"), marker=".", label=norm)
        steps, lengths = column(rows, "response_len_incorrect")
        rollout.plot(steps, smooth(lengths), label=norm)
        held_out.plot(*column(rows, "eval_response_len_incorrect"), marker=".", label=norm)
        quarter = max(1, len(lengths) // 4)
        results[norm] = {"final_accuracy": last(rows, "eval_accuracy"),
                         "wrong_len_first_quarter": sum(lengths[:quarter]) / quarter,
                         "wrong_len_last_quarter": sum(lengths[-quarter:]) / quarter,
                         "heldout_wrong_len_final": last(rows, "eval_response_len_incorrect")}
        results[norm]["wrong_len_growth"] = (results[norm]["wrong_len_last_quarter"]
                                             - results[norm]["wrong_len_first_quarter"])
    acc.set_title("held-out greedy accuracy")
    rollout.set_title("rollout length of wrong answers (10-step mean)")
    held_out.set_title("held-out length of wrong answers (greedy)")
    budget = AdditionTask(grpo.Config.digits, 1).max_new_tokens
    for ax in (rollout, held_out):  # on the scale of the response budget, not of the noise
        ax.axhline(budget, color="gray", linestyle="--", label="max_new_tokens")
        ax.set_ylim(0, budget + 5)
        ax.set_ylabel("tokens")
    for ax in (acc, rollout, held_out):
        ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, args, "length_bias")
    # The claim holds if wrong answers grow by at least half a token more under 1/|o_i|.
    excess = results["sequence_mean"]["wrong_len_growth"] - results["constant"]["wrong_len_growth"]
    return {**results, "excess_wrong_len_growth": excess, "claim_holds": excess > 0.5}


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
        kl.plot(*column(rows, "kl"), marker=".", markersize=3, label=f"beta {beta:g}")  # beta 0: eval steps only
        eval_steps = set(column(rows, "eval_accuracy")[0])
        final_kl = [r["kl"] for r in rows if r["step"] in eval_steps][-2:]  # same steps for every beta
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


@experiment("PPO against a learned reward model: its score vs true held-out accuracy (over-optimisation)")
def reward_model(args) -> dict:
    """Claim (the lecture; Gao et al. 2023, reward-model over-optimisation): a learned reward model is
    only a proxy; optimise it hard and the policy finds what the proxy likes rather than what is
    right, so the proxy score keeps climbing while the true reward stalls or falls."""
    import ppo
    rows = train_script(ppo, args, "reward_model", reward="model")
    with open(os.path.join(args.out_dir, "reward_model", "summary.json")) as f:
        summary = json.load(f)
    fig, (score, acc, kl) = new_figure(3, f"PPO on a learned reward model (held-out pair accuracy "
                                          f"{summary['reward_model_pair_accuracy']:.2f})")
    steps, scores = column(rows, "score")
    score.plot(steps, scores, alpha=0.3, color="C0")
    score.plot(steps, smooth(scores), color="C0", label="reward-model score (10-step mean)")
    steps, rollout_acc = column(rows, "accuracy")
    acc.plot(steps, smooth(rollout_acc), color="C1", label="rollouts (10-step mean)")
    acc.plot(*start_and(rows, args, "reward_model", "eval_accuracy"), marker=".", color="C3", label="held-out (greedy)")
    kl.plot(*column(rows, "kl"), color="C2")
    score.set_title("proxy: reward-model score (std units)")
    acc.set_title("truth: accuracy (the verifier)")
    kl.set_title("KL(pi || pi_ref) per sequence")
    score.legend(fontsize=8)
    acc.legend(fontsize=8)
    save_figure(fig, args, "reward_model")
    first, final = scores[:10], scores[-10:]
    results = {"reward_model_pair_accuracy": summary["reward_model_pair_accuracy"],
               "score_first_10": sum(first) / len(first), "score_last_10": sum(final) / len(final),
               "start_accuracy": summary["start_accuracy"], "final_accuracy": summary["final_accuracy"],
               "best_accuracy": max(column(rows, "eval_accuracy")[1] + [summary["start_accuracy"]]),
               "rollout_accuracy_last_10": last(rows, "accuracy", 10), "final_kl": last(rows, "kl")}
    return {**results, "claim_holds": results["score_last_10"] > results["score_first_10"]
            and results["final_accuracy"] < results["start_accuracy"]}


def abstention_profile(checkpoint: str, n_test: int) -> dict:
    """How a checkpoint abstains on the held-out problems. Greedy with "?" forbidden says which
    problems it gets right when it must answer; free greedy says where it abstains; and
    p_abstain = p("?" | prompt, <think>) is its probability of abstaining when sampled (T = 1)."""
    import torch
    from toy_model import (ABSTENTION, AdditionTask, Tokenizer, encode_prompts, evaluate, generate,
                           load_checkpoint, reward_fn)
    model, ckpt = load_checkpoint(checkpoint)
    task, tok = AdditionTask(ckpt["digits"], n_test), Tokenizer()
    metrics, samples = evaluate(model, tok, task.test, task.max_new_tokens)
    abstained = [s["response"] == ABSTENTION for s in samples]
    question_mark, think = tok.encode("?")[0], tok.encode("<think>")[0]
    prompt_ids = encode_prompts(tok, [p.prompt for p in task.test], "cpu")  # (N, P)
    ids, mask = generate(model, prompt_ids, task.max_new_tokens, tok.eos_id, tok.pad_id,
                         temperature=0.0, suppress_ids=(question_mark,))
    right = [reward_fn(tok.decode(row[:m]), p.answer)["answer_reward"] == 1
             for p, row, m in zip(task.test, ids.tolist(), mask.sum(1).tolist())]
    with torch.inference_mode():  # the abstain decision is the first token after <think>
        logits = model(torch.cat([prompt_ids, torch.full_like(prompt_ids[:, :1], think)], dim=1))[:, -1]
        p_abstain = torch.softmax(logits, dim=-1)[:, question_mark]  # (N,)

    def mean(xs):
        xs = [float(x) for x in xs]
        return sum(xs) / len(xs) if xs else None

    on_right = [i for i, r in enumerate(right) if r]
    on_wrong = [i for i, r in enumerate(right) if not r]
    # AUROC: the chance that a problem it would get wrong has a higher p_abstain than one it
    # would get right (0.5: abstention tells nothing; 1: it abstains exactly where it is wrong).
    pr, pw = p_abstain[on_right], p_abstain[on_wrong]
    auroc = (((pw[:, None] > pr[None, :]).float() + 0.5 * (pw[:, None] == pr[None, :]).float()).mean().item()
             if on_right and on_wrong else None)
    answered = len(samples) - sum(abstained)
    return {"accuracy": metrics["accuracy"], "abstain_rate": mean(abstained),
            "wrong_rate": 1 - metrics["accuracy"] - mean(abstained),
            "accuracy_when_answering": metrics["accuracy"] * len(samples) / answered if answered else None,
            "forced_accuracy": mean(right), "n_right": len(on_right), "n_wrong": len(on_wrong),
            "abstain_rate_right": mean(abstained[i] for i in on_right),
            "abstain_rate_wrong": mean(abstained[i] for i in on_wrong),
            "p_abstain_right": mean(p_abstain[on_right].tolist()),
            "p_abstain_wrong": mean(p_abstain[on_wrong].tolist()), "auroc": auroc}


@experiment("SFT abstains ('?') at random; does GRPO, paid a little for '?', abstain where it would be wrong?")
def abstain(args) -> dict:
    """SFT on demonstrations of which 30% are the abstention, picked at random (200 steps: ~0.6
    accuracy, room to be wrong). Then GRPO with reward 1 right, 0.3 for '?', 0 wrong, as Dr. GRPO
    (no std division, constant length normalisation: advantages are reward differences, so '?'
    should win exactly where the chance of a right answer is below 0.3, and the 7-token '?' is not
    favoured over 35-token answers) with a KL penalty to the SFT model, which keeps '?' explored:
    without it, '?' died out within 20 steps (or, with std normalisation, took over every problem)."""
    import numpy as np
    import grpo
    import sft
    abstain_fraction, abstain_reward = 0.3, 0.3
    train_script(sft, args, "abstain/sft", steps=200, abstain_fraction=abstain_fraction)
    sft_checkpoint = os.path.join(args.out_dir, "abstain", "sft", "model.pt")
    grpo_rows = train_script(grpo, args, "abstain/grpo", sft_checkpoint=sft_checkpoint, steps=300,
                             abstain_reward=abstain_reward, use_std_normalization=False,
                             length_normalization="constant", beta=0.04, eval_every=50)
    n_test = 16 if args.quick else 500
    before = abstention_profile(sft_checkpoint, n_test)
    after = abstention_profile(os.path.join(args.out_dir, "abstain", "grpo", "model.pt"), n_test)
    for name, p in (("SFT", before), ("GRPO", after)):
        f = {k: "n/a" if v is None else f"{v:.3f}" for k, v in p.items()}
        print(f"{name:>4}: accuracy {f['accuracy']}, abstains {f['abstain_rate']}, wrong {f['wrong_rate']} | "
              f"abstains on right {f['abstain_rate_right']} vs wrong {f['abstain_rate_wrong']} | "
              f"p('?') on right {f['p_abstain_right']} vs wrong {f['p_abstain_wrong']} | AUROC {f['auroc']}")

    fig, (ax_out, ax_split, ax_curve) = new_figure(3, f"SFT with {abstain_fraction:.0%} random '?' "
                                                   f"demonstrations, then GRPO with reward {abstain_reward} for '?'")
    for x, p in enumerate((before, after)):  # held-out outcomes as stacked bars
        bottom = 0.0
        for key, color, label in (("accuracy", "tab:green", "right"), ("abstain_rate", "tab:gray", "'?'"),
                                  ("wrong_rate", "tab:red", "wrong")):
            ax_out.bar(x, p[key], bottom=bottom, color=color, label=label if x == 0 else None)
            bottom += p[key]
    ax_out.set_xticks([0, 1], ["SFT", "GRPO"])
    ax_out.set_xlabel("")
    ax_out.set_title("held-out greedy answers", fontsize=9)
    ax_out.legend(fontsize=7)
    groups = [("SFT\ngreedy", before, "abstain_rate"), ("SFT\np('?')", before, "p_abstain"),
              ("GRPO\ngreedy", after, "abstain_rate"), ("GRPO\np('?')", after, "p_abstain")]
    x = np.arange(len(groups))
    for offset, side, color in ((-0.2, "right", "tab:green"), (0.2, "wrong", "tab:red")):
        ax_split.bar(x + offset, [p[f"{key}_{side}"] or 0.0 for _, p, key in groups], width=0.4,
                     color=color, label=f"problems it gets {side}")
    ax_split.set_xticks(x, [g[0] for g in groups], fontsize=8)
    ax_split.set_xlabel("")
    ax_split.set_title("abstention rate, by whether it would be right", fontsize=9)
    ax_split.legend(fontsize=7)
    for key, label in (("abstain_rate", "rollouts: '?'"), ("answer_reward", "rollouts: right"),
                       ("eval_abstain_rate", "held-out greedy: '?'"), ("eval_accuracy", "held-out greedy: right")):
        ax_curve.plot(*column(grpo_rows, key), label=label, marker="." if key.startswith("eval") else None)
    ax_curve.set_title("during GRPO", fontsize=9)
    ax_curve.legend(fontsize=7)
    save_figure(fig, args, "abstain")

    # The claim, checked with thresholds fixed before the run: the SFT model's p('?') does not
    # tell right from wrong problems, and after GRPO greedy abstention is mostly on wrong ones.
    sft_random = before["auroc"] is not None and abs(before["auroc"] - 0.5) < 0.1
    rl_selective = (after["auroc"] is not None and after["auroc"] >= 0.7
                    and after["abstain_rate_wrong"] - after["abstain_rate_right"] >= 0.3)
    return {"abstain_fraction": abstain_fraction, "abstain_reward": abstain_reward,
            "grpo_rollout_abstain_rate": {"first_step": grpo_rows[0]["abstain_rate"],
                                          "last_step": grpo_rows[-1]["abstain_rate"]},
            "before_sft": before, "after_grpo": after,
            "sft_abstains_at_random": sft_random, "grpo_abstains_where_wrong": rl_selective,
            "claim_holds": sft_random and rl_selective}


# Pass@k in the experiments: n samples at temperature 1 (CS336's setting) on the first problems of
# the held-out set; --quick shrinks both.
PASS_AT_K = dict(n=64, ks=(1, 2, 4, 8, 16, 32, 64), n_problems=200)
PASS_AT_K_QUICK = dict(n=4, ks=(1, 2, 4), n_problems=8)


def pass_at_k_of(checkpoint: str, args) -> dict:
    """pass@k and maj@k of a checkpoint on the held-out problems (toy_model.evaluate_pass_at_k)."""
    from toy_model import AdditionTask, Tokenizer, evaluate_pass_at_k, load_checkpoint
    spec = PASS_AT_K_QUICK if args.quick else PASS_AT_K
    model, ckpt = load_checkpoint(checkpoint)
    task = AdditionTask(ckpt["digits"])
    result = evaluate_pass_at_k(model, Tokenizer(), task.test[:spec["n_problems"]], task.max_new_tokens,
                                n=spec["n"], ks=spec["ks"])
    result.pop("correct_counts")
    print(f"{checkpoint}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items() if "@" in k))
    return result


def plot_pass_at_k(ax, curves: dict[str, dict]) -> None:
    """pass@k against k (log scale), one line per model."""
    for label, result in curves.items():
        ks = [int(k[5:]) for k in result if k.startswith("pass@")]
        ax.plot(ks, [result[f"pass@{k}"] for k in ks], marker=".", label=label)
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
                        marker=".", label=label)
        scale = cpu[name] / rows[-1]["seconds"]  # wall seconds -> CPU seconds, as a run-wide ratio
        per_second.plot([0] + [r["seconds"] * scale for r in evals], [start] + [r["eval_accuracy"] for r in evals],
                        marker=".", label=label)
        entropy.plot([r["sampled_responses"] for r in rows], [r["entropy"] for r in rows], label=label)
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

    from toy_model import AdditionTask, Tokenizer, evaluate, load_checkpoint
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
