"""DeepSeek-R1's pipeline on the toy task, stage by stage.

The R1 recipe (DeepSeek-AI 2025, as in the lecture), each stage from the previous one:
1. cold start: the default SFT checkpoint (160 steps x 64 demonstrations, stopped short);
2. reasoning RL: GRPO with the accuracy reward plus 0.1 x the format reward;
3. rejection-sampling SFT: sample the RL model at temperature 0.7 on fresh questions, keep the
   verified-correct responses, and fine-tune the *cold-start* checkpoint on them
   (expert_iteration.py with --teacher_checkpoint: distillation, not self-improvement);
4. final RL for all scenarios: a short GRPO from the distilled model (the verifier as reward).
After every stage: held-out greedy accuracy, format rate and pass@k at temperature 1.
Claims, thresholds fixed before the run: RL improves the cold start by at least IMPROVEMENT_MIN;
distillation keeps at least DISTILLATION_KEEPS of RL's gain; the final RL improves the distilled
model by at least IMPROVEMENT_MIN (held-out greedy accuracy, 500 problems).
"""
from __future__ import annotations

import os

import expert_iteration
import grpo
from experiments.common import (new_figure, pass_at_k_of, plot_pass_at_k, reward_plus_format,
                                save_figure, train_script)
from runs import load_checkpoint
from evaluation import evaluate
from toy_model import AdditionTask, Tokenizer

DESCRIPTION = ("DeepSeek-R1's pipeline on the toy: cold-start SFT, GRPO, rejection-sampling SFT, "
               "GRPO again")
DISTILLATION_KEEPS = 0.8  # share of stage 2's accuracy gain that stage 3 must keep
IMPROVEMENT_MIN = 0.03  # a stage's accuracy gain, at least (beyond a 500-problem set's noise)
# The GRPO stages beside grpo.py's defaults: sampled at 0.7 in groups of 8, every row trained.
GRPO = dict(temperature=0.7, group_size=8, skip_zero_advantage=False, eval_every=20,
            samples_every=1000)


def run(args) -> dict:
    base = os.path.join(args.out_dir, "r1_pipeline")
    ckpt = {"1. cold-start SFT": args.sft_checkpoint}
    train_script(grpo, args, "r1_pipeline/grpo", reward=reward_plus_format(0.1),
                 steps=2 if args.quick else 100, **GRPO)
    ckpt["2. GRPO (accuracy + format)"] = os.path.join(base, "grpo", "model.pt")
    train_script(expert_iteration, args, "r1_pipeline/rejection_sft",
                 n_ei_steps=1 if args.quick else 3,
                 teacher_checkpoint=ckpt["2. GRPO (accuracy + format)"])
    ckpt["3. rejection-sampling SFT"] = os.path.join(base, "rejection_sft", "model.pt")
    train_script(grpo, args, "r1_pipeline/final_grpo",
                 sft_checkpoint=ckpt["3. rejection-sampling SFT"],
                 steps=2 if args.quick else 40, **GRPO)
    ckpt["4. final GRPO"] = os.path.join(base, "final_grpo", "model.pt")

    stages = {}
    for label, path in ckpt.items():
        model, meta = load_checkpoint(path)
        task = AdditionTask(meta["digits"], 16 if args.quick else 500)
        greedy, _ = evaluate(model, Tokenizer(), task.test, task.max_new_tokens)
        stages[label] = {"accuracy": greedy["accuracy"], "format_rate": greedy["format_rate"],
                         "pass_at_k": pass_at_k_of(path, args)}
    top = max((k for k in stages["4. final GRPO"]["pass_at_k"] if k.startswith("pass@")),
              key=lambda k: int(k[5:]))
    print(f"{'stage':<30} accuracy  format  pass@1  {top}")
    for label, s in stages.items():
        print(f"{label:<30} {s['accuracy']:.3f}     {s['format_rate']:.3f}   "
              f"{s['pass_at_k']['pass@1']:.3f}   {s['pass_at_k'][top]:.3f}")
    plot_stages(stages, args)

    accuracy = [s["accuracy"] for s in stages.values()]
    kept = accuracy[0] + DISTILLATION_KEEPS * (accuracy[1] - accuracy[0])
    checks = {"rl_improves_cold_start": accuracy[1] - accuracy[0] >= IMPROVEMENT_MIN,
              "distillation_keeps_most_of_rl": accuracy[2] >= kept,
              "final_rl_improves_distilled": accuracy[3] - accuracy[2] >= IMPROVEMENT_MIN}
    return {"stages": stages, **checks, "claim_holds": all(checks.values())}


def plot_stages(stages: dict, args) -> None:
    """Held-out greedy accuracy and format rate per stage, and every stage's pass@k."""
    fig, (bars, ks) = new_figure(2, "DeepSeek-R1's pipeline on 3-digit addition, stage by stage")
    x = list(range(len(stages)))
    for offset, key, label in ((-0.2, "accuracy", "greedy accuracy"),
                               (0.2, "format_rate", "format rate")):
        bars.bar([i + offset for i in x], [s[key] for s in stages.values()], width=0.4, label=label)
    bars.set_xticks(x, [label.split(". ")[0] for label in stages])
    bars.set_xlabel("stage: " + ", ".join(stages))
    bars.xaxis.label.set_fontsize(6)
    bars.set_ylim(0, 1.05)
    bars.set_title("held-out, greedy", fontsize=9)
    bars.legend(fontsize=7)
    plot_pass_at_k(ks, {label: s["pass_at_k"] for label, s in stages.items()})
    save_figure(fig, args, "r1_pipeline")
