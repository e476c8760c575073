"""On-policy distillation against off-policy distillation and GRPO, per sampled response.

Claims (GKD, Agarwal et al. 2024; Thinking Machines' on-policy distillation, 2025): a teacher that
scores every token of the student's own samples gives a dense signal, so that
(1) on-policy distillation reaches most of the teacher's accuracy in far fewer sampled responses
    than GRPO, which learns from the verifier's one number per response; and
(2) it beats off-policy distillation, SFT on the teacher's samples, at equal samples.
The teacher is sft.py trained for TEACHER_STEPS steps (far better than the student, and cheaper
to make than a GRPO model as good); every run starts from the same student, the default SFT
checkpoint. distill.py (the student samples) and distill.py --sampler teacher --kl_estimator k1
(the teacher samples, the student learns their NLL; every other setting the same) draw BUDGET
responses each; grpo.py with its defaults (its policy samples) draws FAR_FEWER x BUDGET, so that
"GRPO needs FAR_FEWER times as many" is measured rather than extrapolated. Seeds SEEDS for each.
The gap is the teacher's held-out greedy accuracy minus the student's (the claims are tested only
if it is at least GAP_MIN); thresholds, fixed before the full run:
(1) holds if every on-policy seed closes MOST of the gap within 1/FAR_FEWER of the samples that
    the fastest GRPO seed needs to close as much (not within its run: more than its run);
(2) holds if on-policy's mean held-out accuracy over a run's evaluations (the area under
    accuracy against samples, at the same sample counts) exceeds off-policy's by more than
    MARGIN and by more than twice the standard error of the per-seed difference (a seed draws
    the same prompts in both).
"""
from __future__ import annotations

import os
import statistics

import torch

import distill
import grpo
import sft
from experiments.common import new_figure, read_summary, save_figure, train_script
from runs import load_checkpoint
from toy_model import AdditionTask, Tokenizer, encode_prompts, generate

DESCRIPTION = ("On-policy distillation vs SFT on the teacher's samples vs GRPO, same student, "
               "same sampled responses")
MOST, FAR_FEWER = 0.75, 4  # (1): close 75% of the gap with at most a quarter of GRPO's samples
MARGIN = 0.02  # (2): on-policy's mean accuracy at least this far above off-policy's
GAP_MIN = 0.2  # the teacher must beat the student by this much for the claims to be tested
TEACHER_STEPS = 500  # sft.py's steps for the teacher (the student has its default 160)
BUDGET = 8192  # responses sampled by each distillation run: 128 steps of distill.py's 64
SEEDS = (0, 1, 2)
# distill.py, on- and off-policy alike: its defaults, BUDGET samples, an evaluation every 1024.
DISTILL = dict(steps=BUDGET // distill.Config.rollout_batch_size, eval_every=16,
               samples_every=10**6)
# grpo.py: its defaults, FAR_FEWER x BUDGET samples (so that "needs FAR_FEWER times as many" is
# measured, not extrapolated), an evaluation every 2048.
GRPO = dict(steps=FAR_FEWER * BUDGET // grpo.Config.rollout_batch_size, eval_every=8,
            samples_every=10**6)
ARMS = {  # run name -> (label, script, flags beside the ones above)
    "on_policy": ("on-policy distillation", distill, dict()),
    "off_policy": ("off-policy (SFT on the teacher's samples)", distill,
                   dict(sampler="teacher", kl_estimator="k1")),
    "grpo": ("GRPO (verifier)", grpo, dict())}
COLORS = {"on_policy": "tab:green", "off_policy": "tab:purple", "grpo": "tab:orange"}


def run(args) -> dict:
    train_script(sft, args, "distill/teacher", steps=TEACHER_STEPS, eval_every=TEACHER_STEPS,
                 samples_every=10**6)
    teacher = os.path.join(args.out_dir, "distill", "teacher", "model.pt")
    teacher_accuracy = read_summary(args, "distill/teacher")["final_accuracy"]
    curves, kl_own = {arm: [] for arm in ARMS}, {arm: [] for arm in ARMS}
    seeds = SEEDS[:2] if args.quick else SEEDS
    for arm, (_, module, flags) in ARMS.items():
        for seed in seeds:
            name = f"distill/{arm}_seed{seed}"
            extra = dict(teacher_checkpoint=teacher, **DISTILL) if module is distill else GRPO
            rows = train_script(module, args, name, seed=seed, **extra, **flags)
            summary = read_summary(args, name)
            per_step = summary["config"]["rollout_batch_size"]  # responses sampled per step
            curves[arm].append([(0, summary["start_accuracy"])]
                               + [(r["step"] * per_step, r["eval_accuracy"])
                                  for r in rows if r["eval_accuracy"] is not None])
            kl_own[arm].append(own_sample_kl(os.path.join(args.out_dir, name, "model.pt"),
                                             teacher, args))
    student_accuracy = curves["on_policy"][0][0][1]
    kl_start = own_sample_kl(args.sft_checkpoint, teacher, args)
    target = student_accuracy + MOST * (teacher_accuracy - student_accuracy)

    # (1) samples to close MOST of the gap; (2) mean accuracy over the evaluations, per seed
    needs = {arm: [samples_to(curve, target) for curve in curves[arm]] for arm in ARMS}
    area = {arm: [statistics.mean(a for _, a in curve[1:]) for curve in curves[arm]]
            for arm in ARMS}
    grpo_budget = max(s for s, _ in curves["grpo"][0])
    grpo_needs = min(float("inf") if n is None else n for n in needs["grpo"])
    fast = (None not in needs["on_policy"]
            and FAR_FEWER * max(needs["on_policy"]) <= min(grpo_needs, grpo_budget))
    diff = [a - b for a, b in zip(area["on_policy"], area["off_policy"])]
    se = statistics.stdev(diff) / len(diff) ** 0.5
    beats = statistics.mean(diff) > max(MARGIN, 2 * se)
    tested = teacher_accuracy - student_accuracy >= GAP_MIN

    plot(curves, kl_own, kl_start, teacher_accuracy, target, args)
    return {"teacher_accuracy": teacher_accuracy, "student_accuracy": student_accuracy,
            "target_accuracy": target, "claims_tested": tested, "seeds": list(seeds),
            "budget": {arm: max(s for s, _ in curves[arm][0]) for arm in ARMS},
            "runs": {arm: {"label": ARMS[arm][0], "curves": curves[arm],
                           "samples_to_target": needs[arm], "mean_accuracy": area[arm],
                           "final_accuracy": [c[-1][1] for c in curves[arm]],
                           "reverse_kl_on_own_samples": kl_own[arm]} for arm in ARMS},
            "reverse_kl_on_own_samples_start": kl_start,
            "on_minus_off_mean_accuracy": statistics.mean(diff),
            "on_minus_off_standard_error": se,
            "reaches_most_in_far_fewer_samples_than_grpo": tested and fast,
            "beats_off_policy_at_equal_samples": tested and beats,
            "claim_holds": tested and fast and beats}


def samples_to(curve: list[tuple[int, float]], target: float) -> int | None:
    """The samples drawn at the first evaluation at or above target (None: never)."""
    return next((s for s, a in curve if a >= target), None)


@torch.no_grad()
def own_sample_kl(checkpoint: str, teacher_checkpoint: str, args) -> float:
    """The reverse KL(student || teacher) per token on the student's own samples, at distill.py's
    temperature, on the held-out prompts: the quantity on-policy distillation minimises, measured
    for every final model alike (off-policy distillation and GRPO never see it)."""
    student, ckpt = load_checkpoint(checkpoint)
    teacher, _ = load_checkpoint(teacher_checkpoint)
    task, tokenizer = AdditionTask(ckpt["digits"], 16 if args.quick else 500), Tokenizer()
    temperature, P = distill.Config.temperature, task.prompt_len
    torch.manual_seed(0)
    prompt_ids = encode_prompts(tokenizer, [p.prompt for p in task.test], "cpu")  # (N, P)
    response_ids, mask = generate(student, prompt_ids, task.max_new_tokens, tokenizer.eos_id,
                                  tokenizer.pad_id, temperature=temperature)  # (N, T) each
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)[:, :-1]
    kl = distill.token_kl(*(distill.next_token_log_probs(model, input_ids, temperature)[:, P - 1:]
                            for model in (student, teacher)))  # (N, T)
    return ((kl * mask).sum() / mask.sum()).item()


def plot(curves, kl_own, kl_start, teacher_accuracy, target, args) -> None:
    fig, (acc, speed, kl) = new_figure(3, "Distilling a longer-trained SFT teacher into the "
                                          "default SFT student: on-policy, off-policy, and GRPO")
    for arm, runs in curves.items():
        for i, curve in enumerate(runs):
            xs, ys = zip(*curve)
            acc.plot(xs, ys, color=COLORS[arm], alpha=0.35 if i else 1, marker=".",
                     label=ARMS[arm][0] if i == 0 else None)
    acc.axhline(teacher_accuracy, color="black", linestyle="--", label="teacher")
    acc.axhline(target, color="gray", linestyle=":", label=f"{MOST:.0%} of the gap")
    acc.set_xscale("symlog", linthresh=1024)
    acc.set_xlim(left=0)
    acc.set_xlabel("responses sampled (linear to 1024, then log)")
    acc.set_title("held-out greedy accuracy (each seed)", fontsize=9)
    acc.legend(fontsize=7)
    budgets = {arm: max(s for s, _ in runs[0]) for arm, runs in curves.items()}
    for x, (arm, runs) in enumerate(curves.items()):
        needs = [samples_to(curve, target) for curve in runs]
        speed.scatter([x] * len(needs), [budgets[arm] * 1.3 if n is None else max(n, 1)
                                         for n in needs], color=COLORS[arm], marker="o")
        speed.plot([x - 0.3, x + 0.3], [budgets[arm]] * 2, color="gray", linestyle=":",
                   label="its run's samples" if x == 0 else None)
        if None in needs:
            speed.annotate("not reached", (x, budgets[arm] * 1.3), fontsize=7, ha="center",
                           xytext=(0, 6), textcoords="offset points")
        kl.bar(x, statistics.mean(kl_own[arm]), color=COLORS[arm], alpha=0.6)
        kl.scatter([x] * len(kl_own[arm]), kl_own[arm], color="black", s=8)
    speed.set_yscale("log")
    speed.set_title(f"samples to close {MOST:.0%}\nof the gap", fontsize=9)
    kl.axhline(kl_start, color="gray", linestyle="--", label="the student at the start")
    kl.set_title("reverse KL to the teacher,\non its own samples",
                 fontsize=9)
    for ax in (speed, kl):
        ax.set_xticks(range(len(curves)), ["on-\npolicy", "off-\npolicy", "GRPO"])
        ax.set_xlabel("")
        ax.legend(fontsize=7)
    save_figure(fig, args, "distill")
