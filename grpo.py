"""Group Relative Policy Optimization (GRPO) on 3-digit addition, starting from the SFT model.

For each prompt q, sample a group of G responses o_1..o_G from the current policy, score each with
the rule-based reward r_i = reward_fn(o_i, answer), and give every token of o_i the same
group-normalised advantage. No critic: the group mean is the baseline.

    A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)

    J(theta) = E_{q, {o_i} ~ pi_theta_old} [ 1/G sum_i 1/|o_i| sum_t
                 min( rho_{i,t} A_i, clip(rho_{i,t}, 1 - eps_lo, 1 + eps_hi) A_i )
                 - beta KL_t(pi_theta || pi_ref) ],     rho_{i,t} = pi_theta(o_{i,t}|q, o_{i,<t})
                                                                   / pi_theta_old(o_{i,t}|q, o_{i,<t})

Two loops, as in the lecture's pseudo-code: the outer loop samples a rollout batch (n prompts x G
responses), rewards it, computes advantages and, once, the old and reference log-probs; the inner
loop runs `epochs_per_rollout_batch` passes over it in micro-batches with gradient accumulation,
gradient clipping and one AdamW step per train batch.

Default variant: CS336's on-policy GRPO-Clip. One epoch, train batch = rollout batch, so each
rollout batch gives exactly one optimizer step: pi_theta_old = pi_theta, the ratio is 1, nothing is
clipped, and the loss has the same gradient as REINFORCE with the group-mean baseline. The old
log-probs are therefore taken, detached, from the training forward itself instead of an extra pass.
Departures from the papers:
  - DeepSeekMath GRPO: same advantage (unbiased std, as in CS336) and per-sequence mean, but no KL
    penalty by default (beta 0: with verifiable rewards the reference barely matters here and its
    forward pass would double the step time), and one step per rollout instead of several.
  - Dr. GRPO removes the std division and the 1/|o_i|: `--no-use_std_normalization
    --length_normalization constant` (sum over tokens divided by max_new_tokens).
  - DAPO: clip-higher (`--cliprange_high 0.28`), token mean over the whole batch
    (`--length_normalization token_mean`), and dynamic sampling, simplified here to dropping the
    groups whose rewards are all equal (`--drop_equal_reward_groups`, no resampling).
  - The prompt set is an infinite generator of fresh problems; the held-out set is never sampled.

Run:   python grpo.py          320 s on a 2-core CPU (0.66 s/step, 480 steps), peak memory
                               516 MiB: held-out greedy accuracy 0.414 -> 0.908 (0.888-0.908 over
                               the last 160 steps). With --lr_schedule constant --lr 5e-5: 0.908
                               too; single runs differ by ~0.03 at the end. Needs out/sft/model.pt;
                               sft.py's defaults train it first if it is missing.
Sampling is at temperature 0.7 (the SFT model is right on ~5% of its samples at 1.0, on ~17% at
0.7), and the learning rate peaks at 6e-5 after a 10-step warm-up, then decays to 6e-6: four
fresh-Adam steps at 1e-4, even on SFT demonstrations, take this SFT model from 0.41 to 0.14; at
1e-5 they improve it.
Variants:  --loss_type {no_baseline, reinforce_with_baseline, grpo_clip, grpo_no_clip}
           --no-use_std_normalization  --length_normalization {sequence_mean, constant, token_mean}
           --cliprange_high 0.28  --beta 0.04 --kl_estimator {k1, k3}  --drop_equal_reward_groups
           --epochs_per_rollout_batch 2 --train_batch_size 128 (off-policy: the ratio and clip matter)
           --abstain_reward 0.3 (the answer "?" scores 0.3; `python experiments.py abstain` asks
           whether GRPO from an SFT model that abstains at random learns when to say "I don't know")
           --wrong_reward -1 (a penalty for wrong answers)  --easy_digits 2 --hard_fraction 0.5
           (a mix of easy and hard problems, as the SFT checkpoint was trained on; see sft.py)
Outputs: out/grpo/{metrics.csv, curves.png, model.pt, summary.json}. `python grpo.py -h` lists all.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Literal

import torch

import sft  # only to train the starting checkpoint when there is none
from toy_model import (ABSTENTION, AdditionTask, MetricLog, Tokenizer, encode_prompts, evaluate, format_step,
                       generate, get_response_log_probs, load_checkpoint, log_generations, lr_at, masked_mean,
                       masked_normalize, peak_rss_mib, pick_device, require, reward_fn, run_script,
                       save_checkpoint, set_seed, task_config, write_json)

LOSS_TYPES = ("no_baseline", "reinforce_with_baseline", "grpo_clip", "grpo_no_clip")
LENGTH_NORMALIZATIONS = ("sequence_mean", "constant", "token_mean")


@dataclass
class Config:
    # --- task ---
    digits: int = 3  # operand length: 3 means a + b with a, b in [0, 999]
    n_test: int = 500  # held-out problems for evaluation, never trained on
    sft_checkpoint: str = "out/sft/model.pt"  # start and reference model (trained by sft.py if missing)
    easy_digits: int | None = None  # operand length of "easy" problems (sft.py); the checkpoint's
    hard_fraction: float = 0.5  # with easy_digits: share of "hard" prompts (may differ from SFT's)
    # --- sampling ---
    group_size: int = 8  # G: responses sampled per prompt (DeepSeekMath uses 64)
    rollout_batch_size: int = 256  # responses per rollout batch = prompts x group_size
    temperature: float = 0.7  # sampling temperature; log-probs are scored at the same one
    min_new_tokens: int = 0  # end-of-text is forbidden before this many response tokens
    max_new_tokens: int | None = None  # response budget; None is the task's (10 * digits + 10)
    # --- algorithm ---
    loss_type: Literal[LOSS_TYPES] = "grpo_clip"  # CS336: -r*logp, -A*logp, clipped ratio, unclipped ratio
    use_std_normalization: bool = True  # divide A by the group std (DeepSeekMath; Dr. GRPO drops it)
    advantage_eps: float = 1e-6  # added to the group std so an all-equal group gives A = 0
    length_normalization: Literal[LENGTH_NORMALIZATIONS] = "sequence_mean"  # DeepSeekMath / Dr. GRPO / DAPO
    normalize_constant: float | None = None  # Dr. GRPO's divisor for `constant`; None is max_new_tokens
    cliprange: float = 0.2  # epsilon of the PPO/GRPO clip: ratio kept in [1 - eps, 1 + eps_high]
    cliprange_high: float | None = None  # DAPO clip-higher upper epsilon (e.g. 0.28); None is cliprange
    beta: float = 0.0  # weight of the per-token KL penalty to the reference (DeepSeekMath: 0.04)
    kl_estimator: Literal["k1", "k3"] = "k3"  # k1 = log(pi/pi_ref); k3 = r - log r - 1 (DeepSeekMath)
    format_reward_weight: float = 0.0  # reward = r1_zero reward + this x format reward (0: CS336)
    abstain_reward: float | None = None  # reward for the "?" abstention (None: unformatted, 0)
    wrong_reward: float = 0.0  # reward of any other response that is not right (e.g. -1: a penalty)
    drop_equal_reward_groups: bool = False  # skip groups with no reward spread (DAPO dynamic sampling)
    # --- optimisation ---
    steps: int = 480  # rollout batches (CS336's n_grpo_steps)
    epochs_per_rollout_batch: int = 1  # passes over each rollout batch; > 1 is off-policy
    train_batch_size: int = 256  # responses per optimizer step; < rollout_batch_size is off-policy
    gradient_accumulation_steps: int = 8  # micro-batches per optimizer step (8 x 32 rows: peak ~500 MiB)
    lr: float = 6e-5  # AdamW peak learning rate after the warm-up; 1e-4 wrecks this SFT model
    warmup_steps: int = 10  # linear warm-up from 0 over the first N steps (a fresh Adam is harsh)
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # after the warm-up: cosine decay to lr / 10, or constant
    weight_decay: float = 0.0  # AdamW decoupled weight decay (CS336 uses 0)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay
    max_grad_norm: float = 1.0  # clip the global gradient norm to this
    # --- run ---
    seed: int = 0  # seeds sampling and the training problems
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    eval_every: int = 40  # held-out greedy evaluation (and KL when beta is 0) every N steps
    samples_every: int = 50  # print one group of sampled responses with rewards every N steps
    out_dir: str = "out/grpo"  # metrics.csv, curves.png, model.pt, summary.json go here

    def __post_init__(self):
        require(1 <= self.digits <= 6, "--digits must be between 1 and 6")
        require(min(self.n_test, self.steps, self.group_size, self.epochs_per_rollout_batch,
                    self.eval_every, self.samples_every) >= 1,
                "--n_test, --steps, --group_size, --epochs_per_rollout_batch, --eval_every and "
                "--samples_every must be >= 1")
        require(self.group_size >= 2 or not self.use_std_normalization,
                "--group_size 1 has no spread to normalise by: use >= 2 or --no-use_std_normalization")
        require(min(self.rollout_batch_size, self.train_batch_size, self.gradient_accumulation_steps) >= 1,
                "--rollout_batch_size, --train_batch_size, --gradient_accumulation_steps must be >= 1")
        # CS336's derived sizes and their assertions.
        require(self.rollout_batch_size % self.group_size == 0,
                f"--rollout_batch_size {self.rollout_batch_size} is not divisible by "
                f"--group_size {self.group_size}")
        require(self.train_batch_size % self.gradient_accumulation_steps == 0,
                f"--train_batch_size {self.train_batch_size} is not divisible by "
                f"--gradient_accumulation_steps {self.gradient_accumulation_steps}")
        require(self.rollout_batch_size % self.train_batch_size == 0,
                f"--rollout_batch_size {self.rollout_batch_size} is not divisible by "
                f"--train_batch_size {self.train_batch_size}")
        require(self.train_batch_size >= self.group_size,
                f"--train_batch_size {self.train_batch_size} must be >= --group_size {self.group_size}")
        require(self.loss_type in LOSS_TYPES, f"--loss_type must be one of {', '.join(LOSS_TYPES)}")
        require(self.length_normalization in LENGTH_NORMALIZATIONS,
                f"--length_normalization must be one of {', '.join(LENGTH_NORMALIZATIONS)}")
        require(self.kl_estimator in ("k1", "k3"), "--kl_estimator must be k1 or k3")
        require(self.temperature > 0, "--temperature must be > 0 (log-probs are scored at it)")
        require(self.min_new_tokens >= 0, "--min_new_tokens must be >= 0")
        require(self.max_new_tokens is None or self.max_new_tokens >= max(1, self.min_new_tokens),
                "--max_new_tokens must be >= 1 and >= --min_new_tokens")
        require(self.advantage_eps > 0 or not self.use_std_normalization,
                "--advantage_eps must be > 0 with std normalisation (an all-equal group has std 0)")
        require(self.normalize_constant is None or self.normalize_constant > 0,
                "--normalize_constant must be > 0")
        require(0 < self.cliprange < 1, "--cliprange must be in (0, 1)")
        require(self.cliprange_high is None or self.cliprange_high >= self.cliprange,
                "--cliprange_high must be >= --cliprange")
        require(self.beta >= 0 and self.format_reward_weight >= 0,
                "--beta and --format_reward_weight must be >= 0")
        require(self.abstain_reward is None or 0 <= self.abstain_reward < 1,
                "--abstain_reward must be in [0, 1): abstaining must pay less than a right answer")
        require(self.wrong_reward <= 0, "--wrong_reward must be <= 0")
        require(self.abstain_reward is None or self.wrong_reward < self.abstain_reward,
                "--wrong_reward must be below --abstain_reward")
        require(self.easy_digits is None or 1 <= self.easy_digits < self.digits,
                "--easy_digits must be between 1 and --digits - 1 (or none)")
        require(0 <= self.hard_fraction <= 1, "--hard_fraction must be in [0, 1]")
        require(self.lr > 0 and self.max_grad_norm > 0 and self.weight_decay >= 0 and self.warmup_steps >= 0,
                "--lr and --max_grad_norm must be > 0, --weight_decay and --warmup_steps >= 0")
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "--beta1 and --beta2 must be in [0, 1)")


# ----------------------------------------------------------------------------------------------
# The algorithm (CS336 Assignment 5 names, arguments and reductions)
# ----------------------------------------------------------------------------------------------
def compute_group_normalized_rewards(reward_fn, rollout_responses, repeated_ground_truths,
                                     group_size, advantage_eps, normalize_by_std):
    """Score every response and normalise its reward within its group.

    Responses of one prompt are consecutive: rows g*G ... g*G + G - 1. A = r - group mean, divided
    by the group's unbiased std + advantage_eps if normalize_by_std. Returns (advantages (B,),
    raw_rewards (B,), metadata)."""
    require(group_size >= 2 or not normalize_by_std,
            "group_size 1 has no spread to normalise by: use group_size >= 2 or normalize_by_std=False")
    require(len(rollout_responses) % group_size == 0,
            "the number of responses must be a multiple of group_size")
    scores = [reward_fn(r, g) for r, g in zip(rollout_responses, repeated_ground_truths)]
    raw_rewards = torch.tensor([s["reward"] for s in scores])  # (B,)
    grouped = raw_rewards.view(-1, group_size)  # (n_prompts, G)
    spread = grouped.max(dim=1, keepdim=True).values - grouped.min(dim=1, keepdim=True).values
    # Exactly 0 for an all-equal group: the mean of equal floats can be off by an ulp.
    centered = torch.where(spread > 0, grouped - grouped.mean(dim=1, keepdim=True), 0.0)
    if normalize_by_std:
        centered = centered / (grouped.std(dim=1, keepdim=True) + advantage_eps)  # unbiased std
    metadata = {"reward": raw_rewards.mean().item(),
                "format_reward": sum(s["format_reward"] for s in scores) / len(scores),
                "answer_reward": sum(s["answer_reward"] for s in scores) / len(scores),
                "zero_spread_fraction": (spread == 0).float().mean().item(),
                "answer_rewards": torch.tensor([s["answer_reward"] for s in scores])}  # (B,)
    return centered.flatten(), raw_rewards, metadata


def compute_naive_policy_gradient_loss(raw_rewards_or_advantages, policy_log_probs):
    """REINFORCE per token: -A * log pi. (B, 1) and (B, T) -> (B, T)."""
    return -raw_rewards_or_advantages * policy_log_probs


def compute_grpo_clip_loss(advantages, policy_log_probs, old_log_probs, cliprange, cliprange_high=None):
    """PPO's clipped surrogate per token: -min(rho A, clip(rho, 1 - eps, 1 + eps_high) A).

    advantages (B, 1); log-probs (B, T). cliprange_high (DAPO's clip-higher, not in CS336)
    defaults to cliprange. Returns (loss (B, T), metadata with the ratio and the clipped tokens)."""
    ratio = torch.exp(policy_log_probs - old_log_probs)  # (B, T)
    high = cliprange if cliprange_high is None else cliprange_high
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - cliprange, 1 + high) * advantages
    return -torch.minimum(unclipped, clipped), {"ratio": ratio.detach(), "clipped": clipped < unclipped}


def compute_policy_gradient_loss(policy_log_probs, loss_type, raw_rewards=None, advantages=None,
                                 old_log_probs=None, cliprange=None, cliprange_high=None):
    """Dispatch on loss_type; returns (per-token loss (B, T), metadata)."""
    if loss_type == "no_baseline":  # REINFORCE on the raw reward
        return compute_naive_policy_gradient_loss(raw_rewards, policy_log_probs), {}
    if loss_type == "reinforce_with_baseline":  # REINFORCE on the group-normalised advantage
        return compute_naive_policy_gradient_loss(advantages, policy_log_probs), {}
    if loss_type == "grpo_clip":
        return compute_grpo_clip_loss(advantages, policy_log_probs, old_log_probs, cliprange, cliprange_high)
    if loss_type == "grpo_no_clip":  # CS336's ablation: the importance-weighted loss, unclipped
        ratio = torch.exp(policy_log_probs - old_log_probs)
        return -ratio * advantages, {"ratio": ratio.detach()}
    raise ValueError(f"unknown loss_type {loss_type!r}")


def kl_penalty(policy_log_probs, ref_log_probs, estimator="k3"):
    """Per-token estimate of KL(pi_theta || pi_ref) from tokens sampled by pi_theta: (B, T).

    k1 = log(pi / pi_ref): unbiased, but added to the loss its gradient is grad log pi, which averages
    to 0 on-policy. k3 = r - log r - 1 with r = pi_ref / pi: unbiased, always >= 0 (DeepSeekMath)."""
    log_r = ref_log_probs - policy_log_probs
    return -log_r if estimator == "k1" else torch.expm1(log_r) - log_r  # expm1: accurate near r = 1


def grpo_microbatch_train_step(policy_log_probs, response_mask, gradient_accumulation_steps, loss_type,
                               raw_rewards=None, advantages=None, old_log_probs=None, cliprange=None, *,
                               cliprange_high=None, ref_log_probs=None, beta=0.0, kl_estimator="k3",
                               length_normalization="sequence_mean", normalize_constant=1.0,
                               batch_response_tokens=None):
    """One micro-batch of GRPO: per-token loss, reduce, scale, backward once. Returns (loss, metadata).

    Per-token loss = policy-gradient loss + beta * KL to the reference (when ref_log_probs is given).
    Reductions (keyword-only extras, defaults are CS336's):
      sequence_mean (DeepSeekMath, CS336): masked mean per sequence, mean over the micro-batch,
          divided by gradient_accumulation_steps;
      constant (Dr. GRPO): masked sum per sequence / normalize_constant, then the same;
      token_mean (DAPO): masked sum over the micro-batch / the response-token count of the WHOLE
          train batch, so that k micro-batches add up to one batch's token mean. A micro-batch cannot
          see the others' tokens: pass that count as batch_response_tokens. Without it, this
          micro-batch's count x gradient_accumulation_steps is used, exact only for equal counts."""
    loss_per_token, metadata = compute_policy_gradient_loss(
        policy_log_probs, loss_type, raw_rewards, advantages, old_log_probs, cliprange, cliprange_high)
    if ref_log_probs is not None:
        kl = kl_penalty(policy_log_probs, ref_log_probs, kl_estimator)  # (B, T)
        loss_per_token = loss_per_token + beta * kl
        metadata["kl"] = kl.detach()
    if length_normalization == "sequence_mean":
        loss = masked_mean(loss_per_token, response_mask, dim=-1).mean() / gradient_accumulation_steps
    elif length_normalization == "constant":
        loss = masked_normalize(loss_per_token, response_mask, dim=-1,
                                normalize_constant=normalize_constant).mean() / gradient_accumulation_steps
    elif length_normalization == "token_mean":
        if batch_response_tokens is None:
            batch_response_tokens = response_mask.sum() * gradient_accumulation_steps
        loss = masked_normalize(loss_per_token, response_mask, normalize_constant=batch_response_tokens)
    else:
        raise ValueError(f"unknown length_normalization {length_normalization!r}")
    loss.backward()
    return loss.detach(), metadata


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
@torch.inference_mode()
def log_probs_without_grad(model, input_ids, labels, temperature, rows_per_pass):
    """get_response_log_probs with no gradient, rows_per_pass rows at a time: (B, P + T - 1).
    The same log-probs as one pass over all B rows (bit for bit on this CPU), for the memory of
    one micro-batch (the whole rollout batch at once adds ~100 MiB to the run's peak)."""
    return torch.cat([get_response_log_probs(model, input_ids[i:i + rows_per_pass], labels[i:i + rows_per_pass],
                                             temperature=temperature)["log_probs"]
                      for i in range(0, len(input_ids), rows_per_pass)])


def train(cfg: Config) -> dict:
    """Run GRPO, evaluate, save. Returns the summary that is also written to summary.json."""
    device = pick_device(cfg.device)
    rng = set_seed(cfg.seed)
    task = AdditionTask(cfg.digits, cfg.n_test, **task_config(dataclasses.asdict(cfg)))
    tokenizer = Tokenizer()
    sft.train_if_missing(cfg.sft_checkpoint, cfg.digits, cfg.device)
    policy, ckpt = load_checkpoint(cfg.sft_checkpoint, digits=cfg.digits, device=device)
    trained_on = task_config(ckpt["run_config"])["easy_digits"]  # same kinds; their mix may differ
    require(trained_on == cfg.easy_digits,
            f"checkpoint {cfg.sft_checkpoint} was trained with --easy_digits {trained_on}")
    reference, _ = load_checkpoint(cfg.sft_checkpoint, digits=cfg.digits, device=device)  # frozen start
    reference.requires_grad_(False)
    policy.eval()  # no dropout in RL: train the log-probs of the policy that sampled (generate runs in eval)
    reference.eval()
    max_new = cfg.max_new_tokens or task.max_new_tokens
    P = task.prompt_len
    require(P + max_new <= policy.cfg.max_seq_len,
            f"--max_new_tokens {max_new} does not fit the model's {policy.cfg.max_seq_len} positions")
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay)
    G, n_prompts = cfg.group_size, cfg.rollout_batch_size // cfg.group_size
    micro_size = cfg.train_batch_size // cfg.gradient_accumulation_steps
    on_policy = cfg.epochs_per_rollout_batch == 1 and cfg.train_batch_size == cfg.rollout_batch_size
    normalize_constant = cfg.normalize_constant or max_new  # Dr. GRPO: a constant, not |o_i|

    def scored(response, ground_truth):  # the r1_zero reward, plus optional credit for format
        r = reward_fn(response, ground_truth, cfg.abstain_reward, cfg.wrong_reward)
        return {**r, "reward": r["reward"] + cfg.format_reward_weight * r["format_reward"]}

    print(f"GRPO ({cfg.loss_type}, {cfg.length_normalization}) on {cfg.digits}-digit addition from "
          f"{cfg.sft_checkpoint} | {device} | {cfg.steps} steps x {n_prompts} prompts x {G} responses")
    log = MetricLog()
    start_metrics, samples = evaluate(policy, tokenizer, task.test, task.max_new_tokens)
    print(f"step 0 | held-out accuracy {start_metrics['accuracy']:.3f}")
    t0, step, eval_metrics, interrupted = time.time(), 0, start_metrics, False
    try:
        for step in range(1, cfg.steps + 1):
            # A fresh Adam's first updates are ~lr * sign(gradient) on every weight, and this SFT
            # model is sharp: warm up, and keep the peak lr well below SFT's.
            lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cosine=cfg.lr_schedule == "cosine")
            for group in optimizer.param_groups:
                group["lr"] = lr
            # 1. Rollout: G responses to each of n fresh prompts from the current policy (pi_theta_old).
            t_rollout = time.time()
            problems = task.sample(n_prompts, rng)
            prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], device)  # (n, P)
            response_ids, response_mask = generate(
                policy, prompt_ids, max_new, tokenizer.eos_id, tokenizer.pad_id, num_samples=G,
                temperature=cfg.temperature, min_new_tokens=cfg.min_new_tokens)  # (B, T) each
            prompt_ids = prompt_ids.repeat_interleave(G, dim=0)  # (B, P): row i answers prompt i // G
            lengths = response_mask.sum(dim=1)  # (B,)
            tokens_per_second = lengths.sum().item() / (time.time() - t_rollout)

            # 2. Reward: decode up to end-of-text and score against the ground truth.
            responses = [tokenizer.decode(row[:n]) for row, n in zip(response_ids.tolist(), lengths.tolist())]
            ground_truths = [p.answer for p in problems for _ in range(G)]
            advantages, rewards, reward_meta = compute_group_normalized_rewards(
                scored, responses, ground_truths, G, cfg.advantage_eps, cfg.use_std_normalization)
            advantages, rewards = advantages.to(device), rewards.to(device)  # (B,) each

            # 3. Advantages are done; old and reference log-probs once per rollout batch, no gradient.
            seq = torch.cat([prompt_ids, response_ids], dim=1)  # (B, P + T)
            # (B, P + T - 1) each; labels[:, j] = seq[:, j + 1], so labels[:, P - 1:] are the T response tokens
            input_ids, labels = seq[:, :-1], seq[:, 1:]
            old_log_probs = ref_log_probs = None  # on-policy, old = current: taken from the forward below
            if not on_policy and cfg.loss_type in ("grpo_clip", "grpo_no_clip"):
                old_log_probs = log_probs_without_grad(policy, input_ids, labels, cfg.temperature,
                                                       micro_size)[:, P - 1:]  # (B, T)
            is_eval = step % cfg.eval_every == 0 or step == cfg.steps
            if cfg.beta > 0 or is_eval:  # with beta 0 the reference only measures KL on eval steps
                ref_log_probs = log_probs_without_grad(reference, input_ids, labels, cfg.temperature,
                                                       micro_size)[:, P - 1:]  # (B, T)
            kept = torch.arange(len(responses), device=device)  # rows to train on
            if cfg.drop_equal_reward_groups:  # a group with one reward value has A = 0: only noise and KL
                kept = kept[(advantages.view(-1, G) != 0).any(dim=1).repeat_interleave(G)]

            # 4. Update: epochs over the rollout batch, an optimizer step per train batch, micro-batches.
            sums = dict.fromkeys(["loss", "entropy", "kl", "clipped", "tokens"], 0.0)
            ratio_min, ratio_max, grad_norm = float("inf"), -float("inf"), 0.0
            for epoch in range(cfg.epochs_per_rollout_batch):
                order = kept[torch.randperm(len(kept), device=device)]  # every row keeps its own advantage
                for b in range(0, len(order), cfg.train_batch_size):
                    batch_rows = order[b:b + cfg.train_batch_size]
                    batch_tokens = response_mask[batch_rows].sum()  # DAPO's token mean spans the train batch
                    for m in range(0, len(batch_rows), micro_size):
                        rows = batch_rows[m:m + micro_size]
                        out = get_response_log_probs(policy, input_ids[rows], labels[rows],
                                                     return_token_entropy=True, temperature=cfg.temperature)
                        log_probs = out["log_probs"][:, P - 1:]  # (len(rows), T): response tokens only
                        mask = response_mask[rows]
                        # len(batch_rows) / len(rows) is gradient_accumulation_steps unless groups were
                        # dropped: either way the micro-batches add up to the train batch's mean.
                        loss, meta = grpo_microbatch_train_step(
                            log_probs, mask, len(batch_rows) / len(rows), cfg.loss_type,
                            raw_rewards=rewards[rows, None], advantages=advantages[rows, None],
                            old_log_probs=(log_probs.detach() if old_log_probs is None
                                           else old_log_probs[rows]),
                            cliprange=cfg.cliprange, cliprange_high=cfg.cliprange_high,
                            ref_log_probs=None if ref_log_probs is None else ref_log_probs[rows],
                            beta=cfg.beta, kl_estimator=cfg.kl_estimator,
                            length_normalization=cfg.length_normalization,
                            normalize_constant=normalize_constant, batch_response_tokens=batch_tokens)
                        n_tokens = mask.sum().item()
                        sums["tokens"] += n_tokens
                        sums["loss"] += loss.item()  # summed over every optimizer step of the rollout
                        sums["entropy"] += (out["token_entropy"][:, P - 1:] * mask).sum().item()
                        if "kl" in meta:
                            sums["kl"] += (meta["kl"] * mask).sum().item()
                        if "ratio" in meta:
                            ratio_min = min(ratio_min, meta["ratio"][mask.bool()].min().item())
                            ratio_max = max(ratio_max, meta["ratio"][mask.bool()].max().item())
                        if "clipped" in meta:
                            sums["clipped"] += (meta["clipped"] * mask).sum().item()
                    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm).item()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)

            # 5. Log: rollout rewards, update statistics, held-out accuracy every eval_every steps.
            n_tok = max(sums["tokens"], 1.0)  # 0 only if every group was dropped
            correct = reward_meta["answer_rewards"].to(device) == 1
            row = {"step": step, "reward": reward_meta["reward"],
                   "format_reward": reward_meta["format_reward"],
                   "answer_reward": reward_meta["answer_reward"],
                   "zero_spread_fraction": reward_meta["zero_spread_fraction"],
                   "abstain_rate": sum(r == ABSTENTION for r in responses) / len(responses),
                   "direct_rate": sum(r.startswith("<think></think>") for r in responses)
                   / len(responses),
                   "trained_fraction": len(kept) / len(responses), "loss": sums["loss"],
                   "kl": sums["kl"] / n_tok if ref_log_probs is not None else None,
                   "entropy": sums["entropy"] / n_tok, "clip_fraction": sums["clipped"] / n_tok,
                   "ratio_min": ratio_min if ratio_min < float("inf") else None,
                   "ratio_max": ratio_max if ratio_max > -float("inf") else None, "grad_norm": grad_norm,
                   "response_len": lengths.float().mean().item(),
                   "response_len_correct": lengths[correct].float().mean().item() if correct.any() else None,
                   "response_len_incorrect": (lengths[~correct].float().mean().item()
                                              if (~correct).any() else None),
                   "tokens_per_second": tokens_per_second}
            if is_eval:
                eval_metrics, samples = evaluate(policy, tokenizer, task.test, task.max_new_tokens)
                row.update({f"eval_{k}": v for k, v in eval_metrics.items()})
            row["seconds"] = time.time() - t0
            log.append(row)
            shown = {"reward": row["reward"], "format": row["format_reward"],
                     "zero-spread": row["zero_spread_fraction"], "clip": row["clip_fraction"],
                     "entropy": row["entropy"], "len": row["response_len"]}
            if cfg.abstain_reward is not None:
                shown["abstain"] = row["abstain_rate"]
            if row["kl"] is not None:
                shown["KL"] = row["kl"]
            if is_eval:
                shown["held-out acc"] = row["eval_accuracy"]
            print(format_step(step, cfg.steps, row["seconds"], shown))
            if step % cfg.samples_every == 0:
                q = problems[0]
                shown_group = [{"prompt": q.prompt, "response": responses[i], "answer": q.answer,
                                **scored(responses[i], q.answer)} for i in range(G)]
                log_generations(shown_group, n=G, title=f"one group of rollouts at step {step}")
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted at step {step}: evaluating and saving what we have")
        eval_metrics, samples = evaluate(policy, tokenizer, task.test, task.max_new_tokens)

    # The end of the run: held-out evaluation, summary, curves, checkpoint.
    wall = time.time() - t0
    summary = {"algorithm": "grpo", "start_accuracy": start_metrics["accuracy"],
               "final_accuracy": eval_metrics["accuracy"], "final_format_rate": eval_metrics["format_rate"],
               "final_eos_rate": eval_metrics["eos_rate"], "steps": len(log.rows),
               "wall_seconds": round(wall, 2), "seconds_per_step": round(wall / max(1, len(log.rows)), 3),
               "peak_rss_mib": round(peak_rss_mib()),
               "interrupted": interrupted, "device": str(device), "config": dataclasses.asdict(cfg)}
    log_generations(samples, title="final held-out samples (greedy)")
    save_checkpoint(os.path.join(cfg.out_dir, "model.pt"), policy, cfg.digits, dataclasses.asdict(cfg))
    if log.rows:
        log.write_csv(os.path.join(cfg.out_dir, "metrics.csv"))
        log.plot(os.path.join(cfg.out_dir, "curves.png"), [
            ("rollout reward", ["reward", "format_reward", "answer_reward"]),
            ("held-out greedy accuracy and format", ["eval_accuracy", "eval_format_rate"]),
            (f"KL to the reference ({cfg.kl_estimator}, per token)", ["kl"]),
            ("rollout response length", ["response_len_correct", "response_len_incorrect"]),
            ("token entropy (nats)", ["entropy", "eval_entropy"]),
            ("groups with zero reward spread", ["zero_spread_fraction"]),
            ("clip fraction", ["clip_fraction"]),
            ("gradient norm (before clipping)", ["grad_norm"]),
        ], title=f"GRPO ({cfg.loss_type}), {cfg.digits}-digit addition")
    write_json(os.path.join(cfg.out_dir, "summary.json"), summary)
    print(f"done in {wall:.0f} s: held-out accuracy {summary['start_accuracy']:.3f} -> "
          f"{summary['final_accuracy']:.3f}, format {eval_metrics['format_rate']:.3f}; wrote {cfg.out_dir}/")
    return summary


if __name__ == "__main__":
    run_script(train, Config, __doc__)
