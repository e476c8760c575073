"""The sampler is not the trainer: how much the mismatch hurts GRPO, and which correction helps.

Claim (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL
training", fengyao.notion.site/off-policy-rl; TRL corrects for it by default): an inference
engine that differs from the trainer makes "on-policy" RL off-policy, and the uncorrected run
learns worse or less stably than a matched one; an importance-sampling correction (truncated,
TIS, or masked, MIS; per token or per response) recovers most of the gap.
Two engines, both realistic: a bfloat16 copy of the policy (production engines sample in bf16)
and one whose weights are two steps stale (asynchronous RL overlaps sampling with training). The
log-ratio statistics of more engines (float16, nucleus sampling) are measured on the start
model's rollouts, without training. Then GRPO for STEPS steps, seeds SEEDS, with the matched
sampler, each engine uncorrected, and the stale one with each correction at C = 2 and with the
PPO clip on pi / pi_sampler (its log-probs as pi_old). Thresholds, fixed before the runs, on the
final held-out accuracy averaged over the seeds: an engine "hurts" if it ends at least GAP below
the matched run; a correction "recovers most of the gap" if it closes at least RECOVERED of it
and ends at least GAP above the uncorrected run.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

import grpo
from experiments.common import column, new_figure, save_figure, start_and, train_script
from runs import load_checkpoint
from toy_model import AdditionTask, Tokenizer, encode_prompts, generate, get_response_log_probs

DESCRIPTION = "Sampler/trainer mismatch (bf16, stale weights) and its corrections (TIS, MIS)"
SEEDS = (0, 1)
STEPS = 40
GAP = 0.10  # an engine hurts if it ends this far below the matched run (noise: about 0.03)
RECOVERED = 0.5  # a correction must close at least this share of the gap, and GAP in absolute
# Every run, beside grpo.py's defaults: STEPS steps (the cosine still ends at lr / 10).
GRPO = dict(steps=STEPS, eval_every=10, samples_every=1000)
STALE = dict(sampler_stale_steps=2)
SEQUENCE = dict(sampler_correction_level="sequence")
RUNS = {  # label -> (run name, flags); the corrections at grpo.py's cap C = 2
    "matched": ("matched", {}),
    "bf16 none": ("bf16_none", dict(sampler_dtype="bfloat16")),
    "stale none": ("stale_none", STALE),
    "stale TIS token": ("stale_tis_token", dict(**STALE, sampler_correction="tis")),
    "stale MIS token": ("stale_mis_token", dict(**STALE, sampler_correction="mis")),
    "stale TIS seq": ("stale_tis_sequence", dict(**STALE, sampler_correction="tis", **SEQUENCE)),
    "stale MIS seq": ("stale_mis_sequence", dict(**STALE, sampler_correction="mis", **SEQUENCE)),
    "stale PPO clip": ("stale_sampler_as_old", dict(**STALE, sampler_correction="sampler_as_old"))}
IS_CORRECTIONS = ["stale TIS token", "stale MIS token", "stale TIS seq", "stale MIS seq"]
COLORS = dict(zip(RUNS, ["black", "tab:gray", "tab:red", "tab:blue", "tab:orange", "tab:cyan",
                         "tab:purple", "tab:green"]))
# Engines measured on one rollout batch of the start model at grpo.py's temperature, untrained.
ENGINES = {"bfloat16": dict(dtype=torch.bfloat16), "float16": dict(dtype=torch.float16),
           "top-p 0.95": dict(top_p=0.95), "top-p 0.9": dict(top_p=0.9)}


def engine_statistics(args) -> dict:
    """sampler_mismatch's statistics of each ENGINES sampler against the fp32 trainer, on 64
    prompts x 4 responses from the start checkpoint (16 x 4 in --quick)."""
    model, ckpt = load_checkpoint(args.sft_checkpoint)
    model.eval()
    task, tokenizer, cfg = AdditionTask(ckpt["digits"]), Tokenizer(), grpo.Config()
    problems = task.sample(16 if args.quick else 64, np.random.default_rng(0))
    prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], "cpu")  # (n, P)
    stats = {}
    for name, engine in ENGINES.items():
        sampler = copy.deepcopy(model).to(engine.get("dtype", torch.float32))
        torch.manual_seed(0)
        ids, mask, sampler_log_probs = generate(
            sampler, prompt_ids, task.max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
            num_samples=cfg.group_size, temperature=cfg.temperature,
            top_p=engine.get("top_p", 1.0), return_log_probs=True)
        seq = torch.cat([prompt_ids.repeat_interleave(cfg.group_size, dim=0), ids], dim=1)
        with torch.no_grad():
            trainer_log_probs = get_response_log_probs(
                model, seq[:, :-1], seq[:, 1:], temperature=cfg.temperature)["log_probs"]
        stats[name] = grpo.sampler_mismatch(trainer_log_probs[:, task.prompt_len - 1:],
                                            sampler_log_probs, mask)
        print(f"{name}: " + ", ".join(f"{k} {v:.3g}" for k, v in stats[name].items()))
    return stats


def run(args) -> dict:
    engines = engine_statistics(args)
    seeds = SEEDS[:1] if args.quick else SEEDS  # --quick: one seed, a few steps of each run
    runs = {(label, seed): train_script(grpo, args, f"sampler_mismatch/{name}_seed{seed}",
                                        seed=seed, **GRPO, **flags)
            for label, (name, flags) in RUNS.items() for seed in seeds}
    steps = int(runs["matched", 0][-1]["step"])
    fig, (acc, kl, final) = new_figure(3, f"GRPO with a sampler unlike the trainer "
                                          f"({len(seeds)} seeds, {steps} steps)")
    results = {"engines_at_start": engines}
    for label, (name, _) in RUNS.items():
        finals, lowest, kls = [], [], []
        for seed in seeds:
            rows = runs[label, seed]
            steps, accuracy = start_and(rows, args, f"sampler_mismatch/{name}_seed{seed}",
                                        "eval_accuracy")
            acc.plot(steps, accuracy, color=COLORS[label], marker=".", alpha=0.8,
                     label=label if seed == seeds[0] else None)
            finals.append(accuracy[-1])
            lowest.append(min(accuracy))
            kl_steps, kl_values = column(rows, "sampler_kl")
            if kl_values and seed == seeds[0]:
                kl.semilogy(kl_steps, kl_values, color=COLORS[label], label=label)
            kls += kl_values
        results[label] = {"final_accuracy": finals, "mean_final_accuracy": float(np.mean(finals)),
                          "lowest_accuracy": lowest,
                          "mean_sampler_kl": float(np.mean(kls)) if kls else None}
        final.scatter(finals, [label] * len(finals), color=COLORS[label])
    acc.set_title("held-out greedy accuracy (each seed)")
    kl.set_title("KL(pi_sampler || pi) per token (seed 0)")
    final.set_title("final held-out accuracy (each seed)")
    final.set_xlabel("held-out accuracy")
    final.invert_yaxis()  # the runs top to bottom in RUNS' order
    acc.legend(fontsize=7)
    save_figure(fig, args, "sampler_mismatch")

    matched = results["matched"]["mean_final_accuracy"]
    stale = results["stale none"]["mean_final_accuracy"]
    gap = matched - stale
    for label in IS_CORRECTIONS + ["stale PPO clip"]:
        gained = results[label]["mean_final_accuracy"] - stale
        results[label]["share_of_gap_recovered"] = gained / gap if gap > 0 else None
        results[label]["recovers"] = bool(gap >= GAP and gained >= GAP
                                          and gained >= RECOVERED * gap)
    stale_hurts = gap >= GAP
    is_recovers = any(results[label]["recovers"] for label in IS_CORRECTIONS)
    return {**results,
            "bf16_hurts": bool(matched - results["bf16 none"]["mean_final_accuracy"] >= GAP),
            "stale_hurts": bool(stale_hurts), "is_correction_recovers": bool(is_recovers),
            "ppo_clip_recovers": results["stale PPO clip"]["recovers"],
            "claim_holds": bool(stale_hurts and is_recovers)}
