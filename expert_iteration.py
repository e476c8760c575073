"""Expert iteration (CS336 Assignment 5, Algorithm 2) on 3-digit addition, from the SFT model:
sample, keep what the verifier accepts, fine-tune on it, repeat.

For each of n_ei_steps steps: draw a batch D_b of questions, sample G responses to each from the
current policy pi_theta, score them with reward_fn, keep only the correct ones (reward 1), and run
SFT on that filtered set D_sft for a few epochs. The SFT objective is the usual NLL, on the
policy's own correct answers:

    D_sft = {(q, o_i) : q in D_b, o_i ~ pi_theta(. | q), i = 1..G, R(q, o_i) = 1}
    L(theta) = - E_{(q, o) ~ D_sft} [ sum_{t in o} log pi_theta(o_t | q, o_<t) ]

Expert iteration is REINFORCE with a 0/1 reward and no baseline, run off-policy in big batches:
the gradient on each kept response is grad log pi(o | q), on each discarded one 0. The two loops
are the lecture's: the outer loop samples and filters, the inner loop is epochs of SFT over D_sft.

Default variant: CS336's Algorithm 2 with `sft_microbatch_train_step` (imported from sft.py: the
same reduction, per-sequence summed NLL, batch mean, divided by the accumulation steps), gradient
clipping at 1.0, one AdamW kept across EI steps. Departures from the handout:
  - sampling at temperature 0.7, not 1.0: the SFT model is right on few of its samples at 1.0,
    and a question with no correct sample teaches nothing;
  - a small learning rate with a short warm-up, for the same reason as in grpo.py: a fresh Adam's
    first steps move every weight by about lr, and this SFT model is sharp;
  - the questions are fresh problems from an infinite generator; the held-out set is never sampled;
  - duplicate correct responses to one question are all kept (sampling frequency is the weight).
`--teacher_checkpoint PATH` samples from a fixed model instead of the current policy: that is the
rejection-sampling SFT (distillation) stage of DeepSeek-R1's pipeline
(`python -m experiments r1_pipeline`).

Run:   python expert_iteration.py        held-out accuracy and time in the README; needs
                                         out/sft/model.pt (sft.py's defaults train it if missing)
       python expert_iteration.py --preset cs336   the handout's settings: 5 EI steps x 512
                                         questions, temperature 1.0, at least 4 tokens
Variants:  --questions_per_step  --group_size  --sft_epochs  --temperature  --min_new_tokens  --lr
Outputs: out/expert_iteration/{metrics.csv, curves.png, model.pt, summary.json}.
`python expert_iteration.py -h` lists every flag.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import checks
import runs
import sft
from sft import sft_microbatch_train_step  # the SFT step, with CS336's reduction
from evaluation import evaluate
from toy_model import (encode_prompts, extract_answer, generate, get_response_log_probs, reward_fn,
                       tokenize_prompt_and_output)


@dataclass
class Config:
    # --- task ---
    digits: int = 3  # operand length: 3 means a + b with a, b in [0, 999]
    n_test: int = 500  # held-out problems for evaluation, never trained on
    sft_checkpoint: str = "out/sft/model.pt"  # start model (the default is made if missing)
    teacher_checkpoint: str | None = None  # sample from this fixed model (R1's rejection sampling)
    # --- sampling ---
    n_ei_steps: int = 6  # outer loop: sample, filter, SFT
    questions_per_step: int = 512  # D_b: questions sampled per EI step
    group_size: int = 8  # G: responses sampled per question
    temperature: float = 0.7  # sampling temperature of the rollouts
    min_new_tokens: int = 0  # end-of-text is forbidden before this many response tokens
    # --- optimisation ---
    sft_epochs: int = 3  # inner loop: passes over the filtered set per EI step
    batch_size: int = 64  # filtered responses per optimizer step
    gradient_accumulation_steps: int = 2  # micro-batches per optimizer step
    lr: float = 1e-4  # AdamW learning rate after the warm-up, then constant
    warmup_steps: int = 10  # linear warm-up over the first N optimizer steps (Adam is harsh)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay
    max_grad_norm: float = 1.0  # clip the global gradient norm to this (CS336)
    # --- run ---
    seed: int = 0  # seeds sampling and the training problems
    device: str = "auto"  # auto: cuda if there is one, else cpu (mps only when named)
    eval_every: int = 1  # held-out greedy evaluation every N EI steps
    log_every: int = 1  # print a console line every N EI steps (and on every evaluation)
    samples_every: int = 2  # print a few filtered responses every N EI steps
    out_dir: str = "out/expert_iteration"  # metrics.csv, curves.png, model.pt, summary.json
    overwrite: bool = False  # replace a finished run's outputs in out_dir (else refuse)
    resume: bool = False  # continue the stopped run in out_dir from its last evaluation

    def __post_init__(self):
        checks.check_expert_iteration(self)  # every bad value exits 2 with one line


# CS336 Assignment 5's expert-iteration settings (5 steps of 512 questions, sampled at
# temperature 1.0 with at least 4 tokens); the handout sweeps G and the SFT epochs.
PRESETS = {"cs336": dict(n_ei_steps=5, questions_per_step=512, temperature=1.0,
                         min_new_tokens=4)}


# ----------------------------------------------------------------------------------------------
# The algorithm
# ----------------------------------------------------------------------------------------------
def filter_correct(prompts, responses, ground_truths, reward_fn):
    """Score every response and keep the pairs with reward 1. Returns (kept_prompts,
    kept_responses, rewards): the kept lists in their original order, and all rewards (B,)."""
    rewards = torch.tensor([reward_fn(r, g)["reward"] for r, g in zip(responses, ground_truths)])
    kept = [i for i, r in enumerate(rewards.tolist()) if r == 1]
    return [prompts[i] for i in kept], [responses[i] for i in kept], rewards


@torch.inference_mode()
def response_entropy(model, tokenizer, prompts, responses, temperature, rows_per_pass=256):
    """Mean per-token entropy of the model's next-token distribution (at `temperature`) over the
    response tokens of (prompt, response) pairs: how spread out the policy is on its own samples."""
    total, n_tokens = 0.0, 0
    for i in range(0, len(prompts), rows_per_pass):
        batch = tokenize_prompt_and_output(prompts[i:i + rows_per_pass],
                                           responses[i:i + rows_per_pass], tokenizer)
        device = next(model.parameters()).device
        out = get_response_log_probs(model, batch["input_ids"].to(device),
                                     batch["labels"].to(device), return_token_entropy=True,
                                     temperature=temperature)
        mask = batch["response_mask"].to(device)
        total += (out["token_entropy"] * mask).sum().item()
        n_tokens += mask.sum().item()
    return total / max(n_tokens, 1)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(cfg: Config) -> dict:
    """Run expert iteration, evaluate, save. Returns the summary also written to summary.json."""
    run = runs.Run(cfg, sft.train_if_missing, total_steps=cfg.n_ei_steps)  # out/sft if missing
    policy = run.load_policy()  # the SFT model, in eval mode: no dropout
    task, tokenizer, device, rng = run.task, run.tokenizer, run.device, run.rng
    sampler = policy  # Algorithm 2 samples from the current policy (R1's distillation: a teacher)
    if cfg.teacher_checkpoint is not None:
        sampler, _ = runs.load_checkpoint(cfg.teacher_checkpoint, digits=cfg.digits, device=device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay)
    micro_size = cfg.batch_size // cfg.gradient_accumulation_steps
    G, n_questions = cfg.group_size, cfg.questions_per_step
    run.start(f"expert iteration | {device} | {cfg.n_ei_steps} steps x {n_questions} questions x "
              f"{G} responses, {cfg.sft_epochs} SFT epochs",
              evaluate(policy, tokenizer, task.test, task.max_new_tokens),
              policy=policy, optimizer=optimizer)
    last = run.rows[-1]  # step 0's, or with --resume the last saved step's
    opt_step, sampled = last.get("optimizer_steps", 0), last.get("sampled_responses", 0)
    for step in run.steps():  # 1 .. n_ei_steps; Ctrl-C ends the loop after a whole step
        # 1. Rollout: G responses to each of D_b fresh questions.
        problems = task.sample(n_questions, rng)
        prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], device)  # (D_b, P)
        response_ids, response_mask = generate(
            sampler, prompt_ids, task.max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
            num_samples=G, temperature=cfg.temperature,
            min_new_tokens=cfg.min_new_tokens)  # (B, T) each
        lengths = response_mask.sum(dim=1).tolist()
        responses = [tokenizer.decode(row[:n])
                     for row, n in zip(response_ids.tolist(), lengths)]
        prompts = [p.prompt for p in problems for _ in range(G)]  # row i: question i // G
        sampled += len(responses)

        # 2. Reward and filter: D_sft is the responses with reward 1, nothing else.
        sft_prompts, sft_responses, rewards = filter_correct(
            prompts, responses, [p.answer for p in problems for _ in range(G)], reward_fn)
        solved = (rewards.view(-1, G) == 1).any(dim=1).float().mean().item()
        entropy = response_entropy(policy, tokenizer, prompts, responses, cfg.temperature)

        # 3. SFT on D_sft: epochs of shuffled batches, micro-batches, clip, one step per batch.
        nll_sum, n_tokens, grad_norm = 0.0, 0, None
        for epoch in range(cfg.sft_epochs):
            order = torch.randperm(len(sft_responses)).tolist()  # empty D_sft: no step
            for b in range(0, len(order), cfg.batch_size):
                batch_rows = order[b:b + cfg.batch_size]
                for m in range(0, len(batch_rows), micro_size):
                    rows = batch_rows[m:m + micro_size]
                    batch = tokenize_prompt_and_output([sft_prompts[i] for i in rows],
                                                       [sft_responses[i] for i in rows],
                                                       tokenizer)
                    mask = batch["response_mask"].to(device)  # (len(rows), P + T - 1)
                    log_probs = get_response_log_probs(policy, batch["input_ids"].to(device),
                                                       batch["labels"].to(device))["log_probs"]
                    # CS336's gradient_accumulation_steps k: the step divides these rows' mean
                    # by k; k = batch size / len(rows) makes that their sum / batch size
                    k = len(batch_rows) / len(rows)
                    sft_microbatch_train_step(log_probs, mask, k)
                    nll_sum -= (log_probs.detach() * mask).sum().item()
                    n_tokens += mask.sum().item()
                opt_step += 1
                for group in optimizer.param_groups:
                    group["lr"] = runs.lr_at(opt_step, cfg.lr, cfg.warmup_steps, 0, False)
                grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(),
                                                           cfg.max_grad_norm).item()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        # 4. Log: filtered-set size, questions solved, rollout entropy, held-out accuracy.
        row = {"step": step, "filtered_size": len(sft_responses),
               "reward": rewards.mean().item(), "solved_fraction": solved, "entropy": entropy,
               "nll_per_token": nll_sum / n_tokens if n_tokens else None,
               "grad_norm": grad_norm, "lr": optimizer.param_groups[0]["lr"],
               "optimizer_steps": opt_step, "sampled_responses": sampled,
               "response_len": sum(lengths) / len(lengths)}
        is_eval = step % cfg.eval_every == 0 or step == cfg.n_ei_steps
        run.log(row, ["filtered_size", "reward", "solved_fraction", "entropy"],
                evaluate(policy, tokenizer, task.test, task.max_new_tokens) if is_eval else None)
        if step % cfg.samples_every == 0 and sft_responses:
            runs.log_generations([{"prompt": p, "response": r, "answer": extract_answer(r),
                                   "format_reward": 1, "reward": 1}
                                  for p, r in zip(sft_prompts[:4], sft_responses[:4])],
                                 title=f"filtered responses at step {step}")

    # 5. The end of the run: held-out evaluation, summary, curves, checkpoint.
    return run.finish(policy, "expert_iteration", CURVES,
                      f"Expert iteration, {cfg.digits}-digit addition",
                      {"optimizer_steps": opt_step, "sampled_responses": sampled})


CURVES = [  # curves.png: (panel title, metrics.csv columns)
    ("held-out greedy accuracy and format", ["eval_accuracy", "eval_format_rate"]),
    ("rollouts: reward, questions with a correct answer", ["reward", "solved_fraction"]),
    ("filtered set size |D_sft|", ["filtered_size"]),
    ("token entropy: rollouts at --temperature, held-out greedy at 1", ["entropy", "eval_entropy"]),
    ("SFT NLL per response token", ["nll_per_token"]),
    ("gradient norm (before clipping)", ["grad_norm"]),
]

if __name__ == "__main__":
    runs.run_script(train, Config, __doc__)
