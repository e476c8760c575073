"""On-policy distillation on 3-digit addition: the student samples, the teacher scores every token
of the student's own samples, and the student minimises the per-token reverse KL to the teacher
(GKD, Agarwal et al. 2024; MiniLLM, Gu et al. 2024; Qwen3's post-training).

For each prompt q, sample a response o from the student pi_theta, run the frozen teacher pi_T on
the same tokens (q, o), and at every response position t compare the two next-token distributions
over the whole vocabulary V. No reward and no verifier: the teacher is the only judge, and it
judges every token, where GRPO gives a whole response one scalar.

    KL_t(o) = sum_{v in V} pi_theta(v | q, o_<t) [log pi_theta(v | q, o_<t) - log pi_T(v | q, o_<t)]

    L(theta) = E_{q, o ~ pi_theta} [ 1/N sum_{i, t} KL_t(o_i) ],   N: response tokens in the batch

The prefixes o_<t are the student's own samples, but the gradient does not flow through which
prefixes were sampled: each KL_t is minimised with its prefix given (GKD's loss; Thinking Machines'
"on-policy distillation" with discount 0). Two loops as in grpo.py, the inner one a single
optimizer step: one rollout batch, one step, so every sample is on-policy.

Default variant: the reverse KL exact over the vocabulary at each position (`--kl_estimator
exact`), TRL's GKD and DistillationTrainer with beta 1 and lmbda 1. `--kl_estimator k1` instead
scores only the sampled token, log pi_theta(o_t) - log pi_T(o_t), as a negative per-token reward
with REINFORCE's gradient, sg(log pi_theta(o_t) - log pi_T(o_t)) * log pi_theta(o_t). Both have
the same expected gradient (E_{o_t ~ pi_theta}[grad log pi_theta(o_t)] = 0 removes the rest); k1
needs only the teacher's log-prob of one token (all an inference server may give), exact has no
sampling noise over the vocabulary and costs nothing here (20 tokens), hence the default.
Departures (why: docs/distill.md):
  - per token: no gradient for how a token changes the later positions' KL (MiniLLM's
    sequence-level policy gradient keeps it as a return);
  - one response per prompt, 64 prompts a step; loss = sum over the batch's response tokens /
    their count (TRL's reduction);
  - both models are scored at the sampling temperature (TRL's DistillationTrainer does so), so
    the student's samples come from exactly the distribution whose KL is minimised; 0.3 by
    default (grpo.py's), not 1: at 1 a third of this SFT student's samples break the format,
    and the signal goes to prefixes that greedy decoding never reaches.
`--sampler teacher` is off-policy distillation, for comparison: the teacher samples, and the
student minimises the forward KL(pi_T || pi_theta) on the teacher's samples; with `--kl_estimator
k1` that is the NLL of the teacher's tokens, SFT on the teacher's samples (sequence-level KD, Kim
& Rush 2016); with exact, the teacher's whole distribution at each position is the target.
Run: python distill.py (the teacher out/grpo/model.pt comes from `python grpo.py`; the student
out/sft/model.pt is made by sft.py's defaults if missing; time and result: docs/distill.md).
Outputs go to out/distill/; `python distill.py -h` lists every flag.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.nn.utils import clip_grad_norm_

import checks
import runs
import sft
from evaluation import evaluate
from toy_model import compute_entropy, encode_prompts, generate, masked_normalize, reward_fn


@dataclass
class Config:
    # --- task ---
    digits: int = 3  # operand length: 3 means a + b with a, b in [0, 999]
    n_test: int = 500  # held-out problems for evaluation, never trained on
    sft_checkpoint: str = "out/sft/model.pt"  # the student's start (the default is made if missing)
    teacher_checkpoint: str = "out/grpo/model.pt"  # the frozen teacher (`python grpo.py` makes it)
    # --- sampling ---
    rollout_batch_size: int = 64  # prompts per step, one response to each
    temperature: float = 0.3  # sampling temperature; both models are scored at the same one
    max_new_tokens: int | None = None  # response budget; None is the task's (10 * digits + 10)
    sampler: Literal["student", "teacher"] = "student"  # teacher: off-policy, forward KL
    # --- algorithm ---
    kl_estimator: Literal["exact", "k1"] = "exact"  # sum over the vocabulary, or the sampled token
    # --- optimisation ---
    steps: int = 200  # rollout batches, one optimizer step each; also the lr schedule's length
    gradient_accumulation_steps: int = 1  # micro-batches per step: sets their size (memory)
    lr: float = 1e-4  # AdamW peak learning rate after the warm-up
    warmup_steps: int = 10  # linear warm-up from 0 over the first N steps (a fresh Adam is harsh)
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # after warm-up: cosine to lr / 10
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay
    max_grad_norm: float = 1.0  # clip the global gradient norm to this
    # --- run ---
    seed: int = 0  # seeds sampling and the training problems
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    eval_every: int = 20  # held-out greedy evaluation every N steps
    log_every: int = 10  # print a console line every N steps (and on every evaluation)
    samples_every: int = 50  # print a few rollouts with their rewards every N steps
    out_dir: str = "out/distill"  # metrics.csv, curves.png, model.pt, summary.json go here
    overwrite: bool = False  # replace a finished run's outputs in out_dir (else refuse)
    resume: bool = False  # continue the stopped run in out_dir from its last evaluation

    def __post_init__(self):
        checks.check_distill(self)  # every bad value exits 2 with one line


# --- The algorithm -------------------------------------------------------------------------------
def token_kl(log_p, log_q):
    """KL(p || q) at every position, exact over the vocabulary: sum_v p(v) (log p(v) - log q(v)).
    log_p, log_q: (B, T, V) log-probabilities -> (B, T)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def compute_distillation_loss(student_log_probs, teacher_log_probs, response_ids,
                              kl_estimator="exact", sampler="student"):
    """Per-token loss whose gradient is that of the per-token KL between student and teacher.
    student_log_probs, teacher_log_probs: (B, T, V) log-softmax at the scoring temperature, the
    teacher's without gradient; response_ids: (B, T), the sampled tokens. Returns (loss (B, T),
    metadata with the exact reverse KL per token, for the log).
    sampler "student" (on-policy): reverse KL(pi_theta || pi_T); exact: the sum over V; k1: the
    sampled token's log-ratio as a detached weight on its log-prob (REINFORCE, as its mean
    gradient needs: the KL's own expectation is over pi_theta).
    sampler "teacher" (off-policy): forward KL(pi_T || pi_theta) on the teacher's samples; exact:
    the sum over V (soft targets); k1: -log pi_theta(o_t), the NLL of the teacher's token (SFT)."""
    reverse_kl = token_kl(student_log_probs, teacher_log_probs)  # (B, T)
    if kl_estimator == "exact":
        loss = reverse_kl if sampler == "student" else token_kl(teacher_log_probs,
                                                                student_log_probs)
    elif kl_estimator == "k1":
        index = response_ids.unsqueeze(-1)  # (B, T, 1)
        log_prob = student_log_probs.gather(-1, index).squeeze(-1)  # (B, T): log pi_theta(o_t)
        log_ratio = log_prob - teacher_log_probs.gather(-1, index).squeeze(-1)  # k1 per token
        loss = log_ratio.detach() * log_prob if sampler == "student" else -log_prob
    else:
        raise ValueError(f"unknown kl_estimator {kl_estimator!r}")
    return loss, {"reverse_kl": reverse_kl.detach()}


def distill_microbatch_train_step(student_log_probs, teacher_log_probs, response_ids,
                                  response_mask, batch_response_tokens, kl_estimator="exact",
                                  sampler="student"):
    """One micro-batch: the per-token loss, summed over its response tokens and divided by the
    response-token count of the WHOLE train batch (so that micro-batches add up to the batch's
    token mean), backward once; (loss, metadata)."""
    loss_per_token, metadata = compute_distillation_loss(
        student_log_probs, teacher_log_probs, response_ids, kl_estimator, sampler)
    loss = masked_normalize(loss_per_token, response_mask, normalize_constant=batch_response_tokens)
    loss.backward()
    return loss.detach(), metadata


# --- Training ----------------------------------------------------------------------------------
def next_token_log_probs(model, input_ids, temperature):
    """log-softmax of the model's next-token logits at `temperature`: (B, L) -> (B, L, V)."""
    return F.log_softmax(model(input_ids) / temperature, dim=-1)


def load_teacher(cfg, run):
    """The frozen teacher, in eval mode with no gradient, checked to be of the student's task."""
    runs.require(os.path.exists(cfg.teacher_checkpoint)
                 or cfg.teacher_checkpoint != Config.teacher_checkpoint,
                 f"teacher {cfg.teacher_checkpoint} not found: train it first with `python "
                 f"grpo.py`, or pass --teacher_checkpoint")
    teacher, ckpt = runs.load_checkpoint(cfg.teacher_checkpoint, cfg.digits, run.device)
    knobs = runs.checkpoint_task(ckpt)
    runs.require((knobs["easy_digits"], knobs["verbose_max"])
                 == (run.task.easy_digits, run.task.verbose_max),
                 f"teacher {cfg.teacher_checkpoint} was trained on another task ({knobs})")
    return teacher.eval().requires_grad_(False)


def train(cfg: Config) -> dict:
    """Distil the teacher into the student (the SFT checkpoint), evaluate, save; returns the
    summary (also summary.json)."""
    run = runs.Run(cfg, sft.train_if_missing)  # checks out_dir, makes out/sft if missing
    student = run.load_policy()  # the SFT model in eval mode (no dropout): it trains as it samples
    teacher = load_teacher(cfg, run)  # pi_T: frozen, never a gradient
    task, tokenizer, device, rng = run.task, run.tokenizer, run.device, run.rng
    max_new = run.response_budget(cfg.max_new_tokens, student)  # the task's unless given
    runs.check_response_budget(max_new, task, teacher)  # the teacher must read as far
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay)
    P, B = task.prompt_len, cfg.rollout_batch_size  # B prompts, one response each
    micro_size = B // cfg.gradient_accumulation_steps  # rows per forward
    sampler = student if cfg.sampler == "student" else teacher  # teacher: off-policy
    run.start(f"distillation ({cfg.sampler} samples, {cfg.kl_estimator} KL) | {device} | "
              f"{B} prompts", evaluate(student, tokenizer, task.test, max_new),
              policy=student, optimizer=optimizer)
    for step in run.steps():  # 1 .. cfg.steps; Ctrl-C ends the loop after a whole step
        # warm-up from 0 over warmup_steps, then cosine to lr / 10 at the last step (or constant)
        lr = runs.set_lr(optimizer, runs.lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps,
                                               cfg.lr_schedule == "cosine"))
        is_eval = step % cfg.eval_every == 0 or step == cfg.steps
        # 1. Rollout: one response to each of B fresh prompts, sampled by the student itself.
        t_rollout = time.time()
        problems = task.sample(B, rng)
        prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], device)  # (B, P)
        response_ids, response_mask = generate(  # (B, T) each; mask: tokens up to end-of-text
            sampler, prompt_ids, max_new, tokenizer.eos_id, tokenizer.pad_id,
            temperature=cfg.temperature)
        lengths = response_mask.sum(dim=1)  # (B,)
        tokens_per_second = lengths.sum().item() / (time.time() - t_rollout)

        # 2. Score for the log only: the loss never sees a reward.
        responses = [tokenizer.decode(row[:n])
                     for row, n in zip(response_ids.tolist(), lengths.tolist())]
        scores = [reward_fn(r, p.answer) for r, p in zip(responses, problems)]

        # 3. The teacher's next-token distribution at every response position, once, no gradient.
        seq = torch.cat([prompt_ids, response_ids], dim=1)  # (B, P + T)
        input_ids = seq[:, :-1]  # (B, P + T - 1): position P - 1 + t predicts response token t
        with torch.no_grad():
            teacher_log_probs = torch.cat([  # (B, T, V)
                next_token_log_probs(teacher, input_ids[i:i + micro_size], cfg.temperature)
                for i in range(0, B, micro_size)])[:, P - 1:]

        # 4. Update: one optimizer step on the whole rollout batch, in micro-batches.
        batch_tokens = response_mask.sum()  # the token mean's divisor: the whole batch's count
        loss_sum, kl_sum, entropy_sum = 0.0, 0.0, 0.0
        for m in range(0, B, micro_size):
            rows = torch.arange(m, m + micro_size, device=device)  # this micro-batch's rows
            student_log_probs = next_token_log_probs(student, input_ids[rows],
                                                     cfg.temperature)[:, P - 1:]  # (rows, T, V)
            loss, meta = distill_microbatch_train_step(
                student_log_probs, teacher_log_probs[rows], response_ids[rows],
                response_mask[rows], batch_tokens, cfg.kl_estimator, cfg.sampler)
            mask = response_mask[rows]
            loss_sum += loss.item()
            kl_sum += (meta["reverse_kl"] * mask).sum().item()
            entropy_sum += (compute_entropy(student_log_probs.detach()) * mask).sum().item()
        grad_norm = clip_grad_norm_(student.parameters(), cfg.max_grad_norm).item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

        # 5. Log: the KL, the rollouts, held-out accuracy every eval_every steps.
        n_tokens = batch_tokens.item()
        row = {"step": step, "lr": lr, "reverse_kl": kl_sum / n_tokens,
               **{k: sum(s[k] for s in scores) / B for k in scores[0]},
               "loss": loss_sum, "grad_norm": grad_norm, "entropy": entropy_sum / n_tokens,
               "response_len": n_tokens / B, "tokens": n_tokens, "sampled_responses": step * B,
               "tokens_per_second": tokens_per_second}
        run.log(row, SHOWN, evaluate(student, tokenizer, task.test, max_new) if is_eval else None)
        if step % cfg.samples_every == 0:  # the first rollouts of this step
            runs.log_generations([{"prompt": p.prompt, "response": r, "answer": p.answer, **s}
                                  for p, r, s in zip(problems, responses, scores)],
                                 title=f"{cfg.sampler} rollouts at step {step}")
    return run.finish(student, "distill", CURVES,
                      f"Distillation ({cfg.sampler} samples, {cfg.kl_estimator} KL), "
                      f"{cfg.digits} digits")


SHOWN = ["reverse_kl", "answer_reward", "format_reward", "entropy", "response_len"]  # console
CURVES = [  # curves.png: (panel title, metrics.csv columns)
    ("held-out greedy accuracy and format", ["eval_accuracy", "eval_format_rate"]),
    ("reverse KL(student || teacher) per response token", ["reverse_kl"]),
    ("rollouts: right and formatted", ["answer_reward", "format_reward"]),
    ("token entropy: rollouts at --temperature, held-out greedy at 1", ["entropy", "eval_entropy"]),
    ("rollout response length", ["response_len"]),
    ("gradient norm (before clipping)", ["grad_norm"]),
    ("learning rate", ["lr"])]

if __name__ == "__main__":
    runs.run_script(train, Config, __doc__)
