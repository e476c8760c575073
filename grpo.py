"""Group Relative Policy Optimization (GRPO) on 3-digit addition, starting from the SFT model.

For each prompt q, sample a group of G responses o_1..o_G from the current policy, score each with
the rule-based reward r_i = reward_fn(o_i, answer) (toy_model.py: 1 if formatted and right, else
0), and give every token of o_i the same group-normalised advantage. No critic: the group mean is
the baseline.

    A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)

    J(theta) = E_{q, {o_i} ~ pi_old} [ 1/G sum_i 1/|o_i| sum_t
                 min( rho_{i,t} A_i, clip(rho_{i,t}, 1 - eps_lo, 1 + eps_hi) A_i )
                 - beta KL_t(pi_theta || pi_ref) ],
    rho_{i,t} = pi_theta(o_{i,t} | q, o_{i,<t}) / pi_old(o_{i,t} | q, o_{i,<t})

KL_t is DeepSeekMath's k3 estimate, r - 1 - log r with r = pi_ref / pi_theta on the sampled token
(toy_model.kl_penalty); as a loss term its gradient is that of KL(pi_ref || pi_theta).

Two loops, as in the lecture's pseudo-code: the outer one samples a rollout batch (n prompts x G
responses), scores it and takes the old and reference log-probs once (where they are needed); the
inner one runs `epochs_per_rollout_batch` passes over it, one AdamW step per train batch.

Default variant: on-policy GRPO-Clip, DeepSeekMath's advantage (unbiased std, as CS336) and
per-sequence mean. One epoch, train batch = rollout batch: one optimizer step per rollout batch,
so pi_old = pi_theta, the ratio is 1, nothing is clipped, and the gradient is REINFORCE's with the
group-normalised advantage (CS336's reinforce_with_baseline). Departures (why: docs/grpo.md):
  - 64 prompts x G = 4 at temperature 0.3, lr 6e-5 after a 10-step warm-up, cosine to 6e-6, AdamW
    beta2 0.98, 480 steps. `--preset cs336` is the handout's instead: G = 8 at 1.0, lr 1e-5
    constant, beta2 0.95, 200 steps. At 1.0 this SFT model is right on few samples, so most groups
    have no reward spread, and hotter sampling makes greedy accuracy fall for many steps first.
  - No KL penalty by default (DeepSeekMath: beta 0.04, `--beta 0.04`): with a verifier the
    reference barely matters here, and its forward pass would double the step time.
  - Speed only, the same update: with beta 0 a row whose advantage is exactly 0 gets no forward or
    backward pass (`--no-skip_zero_advantage` trains every row); the logged entropy, clip fraction
    and KL are then means over the rows trained.
The std division makes every group's advantages unit-size, whatever the rewards' scale: a tiny
shaping term (a length penalty) in a group whose answers are all right becomes advantages of +-1.
Run: python grpo.py (from out/sft/model.pt, made by sft.py's defaults if missing; time and result
in the README). Outputs go to out/grpo/; `python grpo.py -h` lists every flag. A shaped reward
is a function passed to train: grpo.train(Config(), reward=lambda response, answer:
{**reward_fn(response, answer), "reward": ...}) (the other keys are logged as columns). A
response's length in tokens is len(toy_model.Tokenizer().encode(response)): a tag or end-of-text
is one token, every other character one.
Variants, each one flag set or more (TRL implements each the same way):
  - Dr. GRPO: --no-use_std_normalization --length_normalization constant.
  - DAPO: --cliprange_high 0.28 --length_normalization token_mean --drop_equal_reward_groups
    (the last without DAPO's resampling).
  - RLOO (Ahmadian et al. 2024): --baseline leave_one_out --no-use_std_normalization: the mean
    of the other G - 1 rewards, G / (G - 1) times GRPO's r - mean (the paper divides by no std).
  - GSPO (Zheng et al. 2025): --ratio_level sequence, one ratio per response, the exp of its mean
    token log-ratio; its paper clips at --cliprange 3e-4 --cliprange_high 4e-4.
  - CISPO (MiniMax-M1, 2025): --loss_type cispo --length_normalization token_mean,
    -sg(min(rho, 1 + eps_high)) A log pi: a damped gradient where the clip gives none.
  - MaxRL (Tajwar et al. 2026): --baseline maxrl --no-use_std_normalization, A = (r - mean) /
    mean: the gradient of log pass-rate, not of the pass rate (CS336 2026 adds
    --length_normalization constant).
  - off-policy: --epochs_per_rollout_batch 2 --train_batch_size 128.
The sampler (off by default): an inference engine that is not the trainer, as in production RL,
where vLLM samples in bf16 with its own kernels: --sampler_dtype bfloat16 (or float16), a
truncated --sampler_top_p, --sampler_stale_steps N (asynchronous RL). Its log-probs against the
trainer's are logged (sampler_kl, sampler_ratio_*), and --sampler_correction chooses what the loss
does about them: none (TRL's vllm_importance_sampling_correction=False), sampler_as_old (they are
pi_old in the ratio), tis or mis at --sampler_correction_level token or sequence, capped at
--sampler_is_cap (compute_is_weights; TRL's vllm_importance_sampling_mode).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn.utils import clip_grad_norm_

import checks
import runs
import sft
from evaluation import evaluate
from toy_model import (encode_prompts, generate, get_response_log_probs, kl_penalty, masked_mean,
                       masked_normalize, reward_fn)
# What they give (toy_model.py): reward_fn(response, answer) -> {"reward", "format_reward",
# "answer_reward"} floats (the response text ends in <|endoftext|>). Every prompt of the task has
# one length P, so prompt and response ids concatenate as they are (CS336's
# tokenize_prompt_and_output for prompts of many lengths). get_response_log_probs(model, input_ids,
# labels) -> {"log_probs": (B, L) log softmax(logits / temperature) at each label, optionally
# "token_entropy"}, over the whole sequence: [:, P - 1:] keeps the response. masked_mean(x, mask,
# dim=None) averages the entries where mask is 1 (dim None: all of them); masked_normalize sums
# them and divides by a constant. kl_penalty(log_probs, ref_log_probs, "k3") is r - 1 - log r
# per token with r = pi_ref / pi_theta.

LOSS_TYPES = ("no_baseline", "reinforce_with_baseline", "grpo_clip", "grpo_no_clip", "cispo")
LENGTH_NORMALIZATIONS = ("sequence_mean", "constant", "token_mean")
SAMPLER_CORRECTIONS = ("none", "sampler_as_old", "tis", "mis")


@dataclass
class Config:
    # --- task ---
    digits: int = 3  # operand length: 3 means a + b with a, b in [0, 999]
    n_test: int = 500  # held-out problems for evaluation, never trained on
    sft_checkpoint: str = "out/sft/model.pt"  # start and reference (the default is made if missing)
    # --- sampling ---
    group_size: int = 4  # G: responses sampled per prompt (DeepSeekMath uses 64)
    rollout_batch_size: int = 256  # responses per rollout batch = prompts x group_size
    temperature: float = 0.3  # sampling temperature; log-probs are scored at the same one
    min_new_tokens: int = 0  # end-of-text is forbidden before this many response tokens
    max_new_tokens: int | None = None  # response budget; None is the task's (10 * digits + 10)
    # --- algorithm ---
    loss_type: Literal[LOSS_TYPES] = "grpo_clip"  # -r logp, -A logp, clipped/plain ratio; cispo
    use_std_normalization: bool = True  # divide A by the group std (Dr. GRPO drops it)
    baseline: Literal["group_mean", "leave_one_out", "maxrl"] = "group_mean"  # RLOO, MaxRL
    ratio_level: Literal["token", "sequence"] = "token"  # sequence: GSPO's one ratio per response
    advantage_eps: float = 1e-6  # added to the group std: never a division by 0
    length_normalization: Literal[LENGTH_NORMALIZATIONS] = "sequence_mean"  # or Dr. GRPO, DAPO
    normalize_constant: float | None = None  # Dr. GRPO's `constant` divisor; None: max_new_tokens
    cliprange: float = 0.2  # epsilon of the PPO/GRPO clip: ratio kept in [1 - eps, 1 + eps_high]
    cliprange_high: float | None = None  # DAPO clip-higher upper epsilon (0.28); None: cliprange
    beta: float = 0.0  # weight of the per-token KL penalty to the reference (DeepSeekMath: 0.04)
    kl_estimator: Literal["k1", "k3"] = "k3"  # k3 (DeepSeekMath); warning: k1 has no mean gradient
    drop_equal_reward_groups: bool = False  # skip groups with one reward value (DAPO-like)
    skip_zero_advantage: bool = True  # no forward/backward for rows with A = 0 (same gradient)
    # --- sampler: an inference engine that differs from the trainer (off unless set) ---
    sampler_dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # its copy's precision
    sampler_top_p: float = 1.0  # it samples from the nucleus holding top_p (1.0: everything)
    sampler_stale_steps: int = 0  # its weights are the trainer's of N steps ago (asynchronous RL)
    sampler_correction: Literal[SAMPLER_CORRECTIONS] = "none"  # the loss's answer to the mismatch
    sampler_correction_level: Literal["token", "sequence"] = "token"  # w per token or per response
    sampler_is_cap: float = 2.0  # C: tis truncates w at C, mis drops tokens (responses) past C
    sampler_is_floor: float | None = None  # tis raises w to it, mis drops below it; None: no floor
    # --- optimisation ---
    steps: int = 480  # rollout batches (CS336's n_grpo_steps); also the length of the lr schedule
    epochs_per_rollout_batch: int = 1  # passes over each rollout batch; > 1 is off-policy
    train_batch_size: int = 256  # responses per optimizer step; < rollout_batch_size is off-policy
    gradient_accumulation_steps: int = 8  # micro-batches per train batch: sets their size (memory)
    lr: float = 6e-5  # AdamW peak learning rate after the warm-up
    warmup_steps: int = 10  # linear warm-up from 0 over the first N steps (a fresh Adam is harsh)
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # after warm-up: cosine to lr / 10
    weight_decay: float = 0.0  # AdamW decoupled weight decay (CS336 uses 0)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay
    max_grad_norm: float = 1.0  # clip the global gradient norm to this
    # --- run ---
    seed: int = 0  # seeds sampling and the training problems
    device: str = "auto"  # auto: cuda if there is one, else cpu (mps only when named)
    eval_every: int = 40  # held-out greedy evaluation (and KL when beta is 0) every N steps
    log_every: int = 10  # print a console line every N steps (and on every evaluation)
    samples_every: int = 50  # print one group of sampled responses with rewards every N steps
    out_dir: str = "out/grpo"  # metrics.csv, curves.png, model.pt, summary.json go here
    overwrite: bool = False  # replace a finished run's outputs in out_dir (else refuse)
    resume: bool = False  # continue the stopped run in out_dir from its last evaluation

    def __post_init__(self):
        checks.check_grpo(self)  # every bad value exits 2 with one line


# CS336 Assignment 5's GRPO settings: `--preset cs336` (the 2025 handout) or `--preset
# cs336_2026` sets every flag not given explicitly; in Python, Config(**PRESETS["cs336"])
PRESETS = {"cs336": dict(
    loss_type="reinforce_with_baseline", group_size=8, rollout_batch_size=256, temperature=1.0,
    min_new_tokens=4, train_batch_size=256, epochs_per_rollout_batch=1, steps=200, lr=1e-5,
    lr_schedule="constant", warmup_steps=0, weight_decay=0.0, beta1=0.9, beta2=0.95, beta=0.0)}
PRESETS["cs336_2026"] = {**PRESETS["cs336"], "min_new_tokens": 0}  # no sampling_min_tokens


# --- The algorithm (CS336 Assignment 5 names, arguments and reductions) -------------------------
def compute_group_normalized_rewards(reward_fn, rollout_responses, repeated_ground_truths,
                                     group_size, advantage_eps, normalize_by_std, *,
                                     baseline="group_mean"):
    """Score every response and normalise its reward within its group. Responses of one prompt
    are consecutive: rows g*G ... g*G + G - 1. A = r - b, b the group mean (baseline
    "leave_one_out", RLOO: the mean of the group's other rewards), divided by the group's unbiased
    std + advantage_eps if normalize_by_std. Baseline "maxrl" (MaxRL, Tajwar et al. 2026,
    arXiv:2602.02710) divides by the group mean instead, A = (r - mean) / (mean + advantage_eps):
    its gradient is the mean grad log pi over the group's correct responses minus that over all
    of them, an estimate of grad log p(x), p(x) the prompt's pass rate, where REINFORCE estimates
    grad p(x) = p(x) grad log p(x): hard prompts count 1 / p(x) times more. It needs rewards >= 0
    and no std; a group with no spread (all wrong: mean 0) gets A = 0, as in GRPO.
    Returns (advantages, raw_rewards, metadata), (B,) each."""
    runs.require(len(rollout_responses) % group_size == 0 and (group_size >= 2 or not
                 normalize_by_std), "responses must be groups of group_size, and a std needs 2")
    runs.require(baseline != "maxrl" or not normalize_by_std,
                 "baseline maxrl divides by the group mean, not the std: normalize_by_std=False")
    scores = [reward_fn(r, g) for r, g in zip(rollout_responses, repeated_ground_truths)]
    raw_rewards = torch.tensor([s["reward"] for s in scores], dtype=torch.float32)  # (B,)
    grouped = raw_rewards.view(-1, group_size)  # (n_prompts, G)
    spread = grouped.max(dim=1, keepdim=True).values - grouped.min(dim=1, keepdim=True).values
    mean = grouped.mean(dim=1, keepdim=True)  # (n_prompts, 1)
    if baseline == "leave_one_out":  # b: mean of the other G - 1, (sum - r_i) / (G - 1)
        b = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    else:
        b = mean  # the group mean (GRPO, MaxRL)
    # Exactly 0 for an all-equal group: the mean of equal floats can be off by an ulp.
    advantages = torch.where(spread > 0, grouped - b, 0.0)  # (n_prompts, G)
    if normalize_by_std:
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + advantage_eps)  # unbiased
    if baseline == "maxrl":  # a group with spread has mean > 0 when no reward is negative
        runs.require(bool((raw_rewards >= 0).all()), "--baseline maxrl needs rewards >= 0 "
                     "(it divides by the group's mean reward, a pass rate)")
        advantages = torch.where(spread > 0, advantages / (mean + advantage_eps), 0.0)
    metadata = {"reward": raw_rewards.mean().item(),  # and the mean of each other reward_fn key
                **{k: sum(s[k] for s in scores) / len(scores) for k in scores[0] if k != "reward"},
                "zero_spread_fraction": (spread == 0).float().mean().item(),
                "answer_rewards": torch.tensor([s["answer_reward"] for s in scores])}  # (B,)
    return advantages.flatten(), raw_rewards, metadata


def compute_naive_policy_gradient_loss(raw_rewards_or_advantages, policy_log_probs):
    """REINFORCE per token: -A * log pi. (B, 1) and (B, T) -> (B, T)."""
    return -raw_rewards_or_advantages * policy_log_probs


def importance_ratio(policy_log_probs, old_log_probs, response_mask=None, ratio_level="token"):
    """pi_theta / pi_old per token, (B, T); or GSPO's per response, exp(mean token log-ratio)."""
    log_ratio = policy_log_probs - old_log_probs  # (B, T)
    if ratio_level == "sequence":
        log_ratio = masked_mean(log_ratio, response_mask, dim=-1).unsqueeze(-1)  # (B, 1)
    return torch.exp(log_ratio)


def compute_grpo_clip_loss(advantages, policy_log_probs, old_log_probs, cliprange,
                           cliprange_high=None, response_mask=None, ratio_level="token"):
    """PPO's clipped surrogate per token: -min(rho A, clip(rho, 1 - eps, 1 + eps_high) A).
    advantages (B, 1); log-probs (B, T). cliprange_high (DAPO's clip-higher, not in CS336)
    defaults to cliprange; ratio_level "sequence" is GSPO's (needs response_mask). Returns
    (loss (B, T), metadata with the ratio and the clipped tokens)."""
    ratio = importance_ratio(policy_log_probs, old_log_probs, response_mask, ratio_level)
    ratio = ratio.expand_as(policy_log_probs)  # (B, T): a sequence ratio on each of its tokens
    high = cliprange if cliprange_high is None else cliprange_high
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - cliprange, 1 + high) * advantages
    metadata = {"ratio": ratio.detach(), "clipped": clipped < unclipped}
    return -torch.minimum(unclipped, clipped), metadata


def compute_cispo_loss(advantages, policy_log_probs, old_log_probs, cliprange_high,
                       response_mask=None, ratio_level="token"):
    """CISPO per token: -sg(min(rho, 1 + eps_high)) A log pi, the capped ratio a detached weight:
    a token past the cap gets a damped gradient, where PPO's clip gives none. (loss, metadata)."""
    ratio = importance_ratio(policy_log_probs, old_log_probs, response_mask, ratio_level)
    ratio = ratio.expand_as(policy_log_probs).detach()  # (B, T)
    weight = torch.clamp(ratio, max=1 + cliprange_high)
    metadata = {"ratio": ratio, "clipped": ratio > 1 + cliprange_high}
    return -weight * advantages * policy_log_probs, metadata


def compute_policy_gradient_loss(policy_log_probs, loss_type, raw_rewards=None, advantages=None,
                                 old_log_probs=None, cliprange=None, cliprange_high=None,
                                 response_mask=None, ratio_level="token"):
    """Dispatch on loss_type; returns (per-token loss (B, T), metadata)."""
    if loss_type == "no_baseline":  # REINFORCE on the raw reward
        return compute_naive_policy_gradient_loss(raw_rewards, policy_log_probs), {}
    if loss_type == "reinforce_with_baseline":  # REINFORCE on the group-normalised advantage
        return compute_naive_policy_gradient_loss(advantages, policy_log_probs), {}
    if loss_type == "grpo_clip":
        return compute_grpo_clip_loss(advantages, policy_log_probs, old_log_probs, cliprange,
                                      cliprange_high, response_mask, ratio_level)
    if loss_type == "grpo_no_clip":  # CS336's ablation: the importance-weighted loss, unclipped
        ratio = importance_ratio(policy_log_probs, old_log_probs, response_mask, ratio_level)
        ratio = ratio.expand_as(policy_log_probs)
        return -ratio * advantages, {"ratio": ratio.detach()}
    if loss_type == "cispo":
        high = cliprange if cliprange_high is None else cliprange_high  # CISPO caps at 1 + high
        return compute_cispo_loss(advantages, policy_log_probs, old_log_probs, high,
                                  response_mask, ratio_level)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def compute_is_weights(old_log_probs, sampler_log_probs, response_mask, correction,
                       level="token", cap=2.0, floor=None):
    """The sampler/trainer correction. An inference engine samples from pi_sampler, not from the
    trainer's pi_old (lower precision, other kernels, truncation, stale weights), so the on-policy
    gradient E_{pi_sampler}[A grad log pi] is biased; an importance weight w = pi_old / pi_sampler,
    detached, on each token's loss turns it back into an estimate under pi_old. level "token":
    one w per token, (B, T); "sequence": one per response, (B, 1), the product of its token
    ratios. correction "tis" (truncated IS, Yao et al. 2025, fengyao.notion.site/off-policy-rl)
    clamps w to [floor, cap]: bias where w > C, variance bounded by C. "mis" (masked IS, the
    IcePop of Ring-1T, ringtech.notion.site/icepop) sets w to 0 outside [floor, cap]: those tokens
    (responses) get no gradient at all. Sequence-level weights correct the whole response's
    distribution (Liu, Li et al. 2025, richardli.xyz/rl-collapse) but their
    spread grows with the length. TRL's GRPOTrainer does the same with
    vllm_importance_sampling_mode = token_truncate, token_mask, sequence_truncate, sequence_mask
    (vllm_importance_sampling_clip_max = C, _clip_min = floor). Cost: the trainer's log-probs of
    the rollouts, one forward pass without gradient. Returns (weights, metadata)."""
    log_ratio = (old_log_probs - sampler_log_probs) * response_mask  # (B, T)
    if level == "sequence":
        log_ratio = log_ratio.sum(dim=-1, keepdim=True)  # (B, 1): log of the product
    ratio = torch.exp(log_ratio)
    low = 0.0 if floor is None else floor
    outside = (ratio > cap) | (ratio < low)  # (B, T) or (B, 1)
    if correction == "tis":
        weights = torch.clamp(ratio, min=low, max=cap)
    elif correction == "mis":
        weights = torch.where(outside, 0.0, ratio)
    else:
        raise ValueError(f"unknown sampler correction {correction!r}: tis or mis")
    return weights, {"is_clipped": outside.expand_as(old_log_probs)}


def grpo_microbatch_train_step(policy_log_probs, response_mask, gradient_accumulation_steps,
                               loss_type, raw_rewards=None, advantages=None, old_log_probs=None,
                               cliprange=None, *, cliprange_high=None, ref_log_probs=None, beta=0.0,
                               kl_estimator="k3", length_normalization="sequence_mean",
                               normalize_constant=1.0, batch_response_tokens=None,
                               ratio_level="token", is_weights=None):
    """One micro-batch of GRPO: per-token loss (times the sampler correction's is_weights, from
    compute_is_weights, if given; + beta * KL to the reference if ref_log_probs is given), reduce,
    scale, backward once; (loss, metadata). Reductions (defaults are CS336's):
    sequence_mean (DeepSeekMath, CS336): masked mean per sequence, mean over the micro-batch, / k
    (gradient_accumulation_steps); constant (Dr. GRPO): masked sum per sequence / normalize_constant
    then the same; token_mean (DAPO): masked sum / batch_response_tokens, the response-token count
    of the WHOLE train batch (default: this micro-batch's count x k), so micro-batches add up."""
    loss_per_token, metadata = compute_policy_gradient_loss(
        policy_log_probs, loss_type, raw_rewards, advantages, old_log_probs, cliprange,
        cliprange_high, response_mask, ratio_level)
    if is_weights is not None:  # the sampler correction: a detached weight on each token's loss
        loss_per_token = loss_per_token * is_weights
    if ref_log_probs is not None:
        kl = kl_penalty(policy_log_probs, ref_log_probs, kl_estimator)  # (B, T)
        loss_per_token = loss_per_token + beta * kl
        metadata["kl"] = kl.detach()
    k = gradient_accumulation_steps
    if length_normalization == "sequence_mean":
        # each sequence's mean over its response tokens, then the mean over sequences
        loss = masked_mean(loss_per_token, response_mask, dim=-1).mean() / k
    elif length_normalization == "constant":
        loss = masked_normalize(loss_per_token, response_mask, dim=-1,  # each sequence's sum /
                                normalize_constant=normalize_constant).mean() / k  # the constant
    elif length_normalization == "token_mean":
        if batch_response_tokens is None:
            batch_response_tokens = response_mask.sum() * k
        loss = masked_normalize(loss_per_token, response_mask,
                                normalize_constant=batch_response_tokens)
    else:
        raise ValueError(f"unknown length_normalization {length_normalization!r}")
    loss.backward()
    return loss.detach(), metadata


# --- Training ----------------------------------------------------------------------------------
@torch.inference_mode()
def log_probs_without_grad(model, input_ids, labels, temperature, rows_per_pass):
    """get_response_log_probs without gradient, rows_per_pass rows at a time: (B, P + T - 1)."""
    return torch.cat([get_response_log_probs(model, input_ids[i:i + rows_per_pass],
                                             labels[i:i + rows_per_pass],
                                             temperature=temperature)["log_probs"]
                      for i in range(0, len(input_ids), rows_per_pass)])


def token_mean(trained: list[dict], key: str) -> float | None:
    """A per-token statistic (entropy, clipped, kl) averaged over every response token trained on
    in one step; trained holds one dict per micro-batch, with its "mask" (rows, T). None if
    absent."""
    if not trained or key not in trained[0]:
        return None
    mask = torch.cat([t["mask"] for t in trained])  # (rows trained, T)
    return masked_mean(torch.cat([t[key] for t in trained]).float(), mask).item()


def train(cfg: Config, reward=reward_fn, task=None) -> dict:
    """Run GRPO from the SFT checkpoint, evaluate, save; returns the summary (also summary.json).
    reward(response, ground_truth) -> {"reward", "format_reward", "answer_reward", ...} scores a
    response (CS336's r1_zero reward_fn unless given); the mean of each key is a metrics.csv
    column. task: the start checkpoint's addition task, unless an experiment passes its own."""
    run = runs.Run(cfg, sft.train_if_missing, task)  # checks out_dir, makes out/sft if missing
    policy = run.load_policy()  # the SFT model, in eval mode: it trains as it samples (no dropout)
    reference = run.load_policy().requires_grad_(False)  # pi_ref: the frozen SFT model
    task, tokenizer, device, rng = run.task, run.tokenizer, run.device, run.rng
    max_new = run.response_budget(cfg.max_new_tokens, policy)  # the task's unless given
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay)
    P, G, B = task.prompt_len, cfg.group_size, cfg.rollout_batch_size  # B = n_prompts x G
    micro_size = cfg.train_batch_size // cfg.gradient_accumulation_steps  # rows per forward
    on_policy = cfg.epochs_per_rollout_batch == 1 and cfg.train_batch_size == B  # 1 step a batch
    sampler = make_sampler(policy, cfg)  # an inference engine unlike the trainer, or None
    loss_options = dict(  # the loss's fixed settings; Dr. GRPO's constant defaults to the budget
        cliprange=cfg.cliprange, cliprange_high=cfg.cliprange_high, beta=cfg.beta,
        kl_estimator=cfg.kl_estimator, length_normalization=cfg.length_normalization,
        normalize_constant=cfg.normalize_constant or max_new, ratio_level=cfg.ratio_level)
    # Speed only: with beta 0 a row whose advantage is exactly 0 has loss 0 whatever theta is, so
    # its forward and backward are skipped; the divisors still count it, so the update is the same.
    skip_zero = cfg.skip_zero_advantage and cfg.beta == 0 and cfg.loss_type != "no_baseline"
    # step 0: held-out greedy accuracy of the start; state.pt will save the policy and optimizer
    run.start(f"GRPO ({cfg.loss_type}) | {device} | {B // G} prompts x {G}",
              evaluate(policy, tokenizer, task.test, max_new), policy=policy, optimizer=optimizer)
    history = None if sampler is None else run.saved.setdefault("sampler_history", [])  # stale
    for step in run.steps():  # 1 .. cfg.steps; Ctrl-C ends the loop after a whole step
        # linear warm-up to lr over warmup_steps (lr / warmup_steps at step 1), then cosine decay
        # to lr / 10 at the last step (or constant)
        lr = runs.set_lr(optimizer, runs.lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps,
                                               cfg.lr_schedule == "cosine"))
        is_eval = step % cfg.eval_every == 0 or step == cfg.steps
        # 1. Rollout: G responses to each of n fresh prompts from the current policy (pi_old).
        t_rollout = time.time()
        problems = task.sample(B // G, rng)
        prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], device)  # (n, P)
        if sampler is not None:  # the engine gets the trainer's weights (of N steps ago)
            sync_sampler(sampler, policy, history, cfg.sampler_stale_steps)
        # (B, T) each: the mask is 1 on every sampled token up to and including end-of-text, 0 on
        # the padding after it; with a sampler, a third: the engine's log-probs of its tokens
        rollout = generate(
            policy if sampler is None else sampler, prompt_ids, max_new, tokenizer.eos_id,
            tokenizer.pad_id, num_samples=G, temperature=cfg.temperature,
            min_new_tokens=cfg.min_new_tokens, top_p=cfg.sampler_top_p,
            return_log_probs=sampler is not None)
        response_ids, response_mask = rollout[:2]
        prompt_ids = prompt_ids.repeat_interleave(G, dim=0)  # (B, P): row i has prompt i // G
        lengths = response_mask.sum(dim=1)  # (B,)
        tokens_per_second = lengths.sum().item() / (time.time() - t_rollout)

        # 2. Reward and advantage: score against the ground truth, normalise within each group.
        responses = [tokenizer.decode(row[:n])
                     for row, n in zip(response_ids.tolist(), lengths.tolist())]
        ground_truths = [p.answer for p in problems for _ in range(G)]
        advantages, rewards, reward_meta = compute_group_normalized_rewards(
            reward, responses, ground_truths, G, cfg.advantage_eps, cfg.use_std_normalization,
            baseline=cfg.baseline)
        advantages, rewards = advantages.to(device), rewards.to(device)  # (B,) each

        # 3. Old and reference log-probs, once per rollout batch, no gradient. Every log-prob is
        # get_response_log_probs': log softmax(logits / temperature) at each label token.
        seq = torch.cat([prompt_ids, response_ids], dim=1)  # (B, P + T)
        # labels[:, j] = seq[:, j + 1], so labels[:, P - 1:] are the T response tokens
        input_ids, labels = seq[:, :-1], seq[:, 1:]  # (B, P + T - 1) each
        # pi_old: on-policy it is the policy being trained, so its log-probs are the training
        # forward's own, detached (step 4); off-policy they are fixed here, before any update.
        old_log_probs = None if on_policy else log_probs_without_grad(
            policy, input_ids, labels, cfg.temperature, micro_size)[:, P - 1:]  # (B, T)
        need_ref = cfg.beta > 0 or is_eval  # with beta 0 the KL is only measured, at evaluations
        ref_log_probs = None if not need_ref else log_probs_without_grad(
            reference, input_ids, labels, cfg.temperature, micro_size)[:, P - 1:]  # (B, T)
        is_weights, mismatch = None, {}  # the sampler correction's weights (tis, mis); its log
        if sampler is not None:  # the engine's log-probs against the trainer's (pi_old's)
            trainer_log_probs = old_log_probs if old_log_probs is not None else \
                log_probs_without_grad(policy, input_ids, labels, cfg.temperature,
                                       micro_size)[:, P - 1:]  # (B, T)
            old_log_probs, is_weights, mismatch = correct_for_sampler(
                cfg, old_log_probs, trainer_log_probs, rollout[2], response_mask)
        kept = torch.arange(len(responses), device=device)  # rows to train on
        # A group with one reward value has A = 0: its rows add no gradient (beta 0). Dropping them
        # (DAPO-like) also drops them from the divisor, so the other rows weigh more; the speed-only
        # skip below keeps the divisor, and so the update.
        if cfg.drop_equal_reward_groups:
            kept = kept[(advantages.view(-1, G) != 0).any(dim=1).repeat_interleave(G)]

        # 4. Update: epochs over the rollout batch, an optimizer step per train batch.
        trained, losses, grad_norms = [], [], []  # per micro-batch, per optimizer step: the log's
        for epoch in range(cfg.epochs_per_rollout_batch):
            order = kept[torch.randperm(len(kept), device=device)]  # rows keep their advantage
            for b in range(0, len(order), cfg.train_batch_size):
                batch_rows = order[b:b + cfg.train_batch_size]
                # divisors: the whole train batch, so that its micro-batches add up to its mean
                batch_size, batch_tokens = len(batch_rows), response_mask[batch_rows].sum()
                if skip_zero:  # speed only: rows with A = 0 add nothing (skip_zero, above)
                    batch_rows = batch_rows[advantages[batch_rows] != 0]
                for m in range(0, len(batch_rows), micro_size):
                    rows = batch_rows[m:m + micro_size]
                    out = get_response_log_probs(policy, input_ids[rows], labels[rows],
                                                 return_token_entropy=True,
                                                 temperature=cfg.temperature)
                    log_probs = out["log_probs"][:, P - 1:]  # (rows, T): response tokens only
                    # CS336's train step returns (these rows' mean loss) / gradient_accumulation_
                    # steps; k = batch_size / len(rows) makes that (these rows' sum) / batch_size,
                    # so the micro-batches, of any size after the skip, add up to the batch mean
                    k = batch_size / len(rows)  # = gradient_accumulation_steps when none skipped
                    loss, meta = grpo_microbatch_train_step(
                        log_probs, response_mask[rows], k, cfg.loss_type,
                        raw_rewards=rewards[rows, None], advantages=advantages[rows, None],
                        old_log_probs=log_probs.detach() if old_log_probs is None
                        else old_log_probs[rows],  # on-policy: the forward's own, detached
                        ref_log_probs=None if ref_log_probs is None else ref_log_probs[rows],
                        is_weights=None if is_weights is None else is_weights[rows],
                        batch_response_tokens=batch_tokens, **loss_options)
                    trained.append({"mask": response_mask[rows], **meta,
                                    "entropy": out["token_entropy"][:, P - 1:]})
                    losses.append(loss.item())
                grad_norms.append(clip_grad_norm_(policy.parameters(), cfg.max_grad_norm).item())
                optimizer.step()
                # zeros, not None: a batch whose rows were all skipped still takes AdamW's step
                optimizer.zero_grad(set_to_none=False)

        # 5. Log: rollout rewards, update statistics, held-out accuracy every eval_every steps.
        correct = reward_meta.pop("answer_rewards").to(device) == 1  # (B,)
        ratios = [t["ratio"][t["mask"].bool()] for t in trained if "ratio" in t]
        row = {"step": step, "lr": lr, **reward_meta,
               "loss": sum(losses) / max(len(grad_norms), 1),  # micro-batches add up: per step
               "grad_norm": grad_norms[-1] if grad_norms else None,  # the last, before clipping
               "entropy": token_mean(trained, "entropy"),  # over the rows trained
               "clip_fraction": token_mean(trained, "clipped"),
               "kl_per_token": token_mean(trained, "kl"),  # on eval steps only, if beta is 0
               "ratio_min": torch.cat(ratios).min().item() if ratios else None,
               "ratio_max": torch.cat(ratios).max().item() if ratios else None,
               "response_len": lengths.float().mean().item(),
               "response_len_correct": lengths[correct].float().mean().item()
               if correct.any() else None,
               "response_len_incorrect": lengths[~correct].float().mean().item()
               if not correct.all() else None,
               "tokens_per_second": tokens_per_second, **mismatch}
        # metrics.csv and the console line; every eval_every steps, held-out greedy accuracy
        run.log(row, SHOWN, evaluate(policy, tokenizer, task.test, max_new) if is_eval else None)
        if step % cfg.samples_every == 0:  # the first group of this step's rollouts
            q = problems[0]
            runs.log_generations([{"prompt": q.prompt, "response": r, "answer": q.answer,
                                   **reward(r, q.answer)} for r in responses[:G]],
                                 G, f"a group at step {step}")
    return run.finish(policy, "grpo", CURVES + (SAMPLER_CURVES if sampler is not None else []),
                      f"GRPO ({cfg.loss_type}), {cfg.digits} digits")



# --- The sampler: an inference engine unlike the trainer (off by default) -----------------------
def make_sampler(policy, cfg):
    """The inference engine, where a --sampler_ flag makes it differ from the trainer: a copy of
    the policy in its own precision (synced each step by sync_sampler); else None, and the policy
    samples itself, as in the lecture's loop."""
    differs = (cfg.sampler_dtype != "float32" or cfg.sampler_top_p < 1
               or cfg.sampler_stale_steps > 0 or cfg.sampler_correction != "none")
    return copy.deepcopy(policy).to(getattr(torch, cfg.sampler_dtype)) if differs else None


def sync_sampler(sampler, policy, history: list, stale_steps: int) -> None:
    """Give the inference engine the trainer's weights as they were stale_steps steps ago (the
    start's until then), cast to its precision; history keeps the last stale_steps + 1."""
    history.append({k: v.detach().clone() for k, v in policy.state_dict().items()})
    del history[:-(stale_steps + 1)]
    sampler.load_state_dict(history[0])


def sampler_mismatch(trainer_log_probs, sampler_log_probs, response_mask) -> dict:
    """How far the sampler is from the trainer on the rollout's tokens: the ratio pi / pi_sampler
    (mean, std, share outside [0.9, 1.1]) and KL(pi_sampler || pi) per token (k3, unbiased on
    tokens the sampler drew)."""
    log_ratio = (trainer_log_probs - sampler_log_probs)[response_mask.bool()]  # (tokens,)
    ratio = log_ratio.exp()
    return {"sampler_ratio_mean": ratio.mean().item(), "sampler_ratio_std": ratio.std().item(),
            "sampler_ratio_outside": ((ratio < 0.9) | (ratio > 1.1)).float().mean().item(),
            "sampler_kl": (torch.expm1(log_ratio) - log_ratio).mean().item()}


def correct_for_sampler(cfg, old_log_probs, trainer_log_probs, sampler_log_probs, response_mask):
    """--sampler_correction: none leaves the loss as it is (the sampler's tokens are trained on as
    if pi_old had drawn them); sampler_as_old makes the engine's log-probs the loss's pi_old, so
    that the ratio is pi / pi_sampler and grpo_clip clips it (Tinker's PPO loss); tis and mis
    weight each token's loss (compute_is_weights). Returns (old_log_probs, is_weights or None, the
    log: sampler_mismatch's statistics, and the weights' mean and share truncated or masked)."""
    log = sampler_mismatch(trainer_log_probs, sampler_log_probs, response_mask)
    if cfg.sampler_correction in ("none", "sampler_as_old"):
        return (sampler_log_probs if cfg.sampler_correction == "sampler_as_old"
                else old_log_probs), None, log
    weights, meta = compute_is_weights(trainer_log_probs, sampler_log_probs, response_mask,
                                       cfg.sampler_correction, cfg.sampler_correction_level,
                                       cfg.sampler_is_cap, cfg.sampler_is_floor)
    log["is_weight_mean"] = masked_mean(weights.expand_as(response_mask), response_mask).item()
    log["is_clipped_fraction"] = masked_mean(meta["is_clipped"].float(), response_mask).item()
    return old_log_probs, weights, log


SHOWN = ["reward", "format_reward", "zero_spread_fraction", "clip_fraction", "kl_per_token",
         "entropy", "response_len", "sampler_kl"]  # the console line's metrics.csv columns
CURVES = [  # curves.png: (panel title, metrics.csv columns)
    ("rollout reward", ["reward", "format_reward", "answer_reward"]),
    ("held-out greedy accuracy and format", ["eval_accuracy", "eval_format_rate"]),
    ("KL(pi || pi_ref) per token of the rows trained (beta 0: at evaluations)", ["kl_per_token"]),
    ("rollout response length", ["response_len_correct", "response_len_incorrect"]),
    ("token entropy: rollouts at --temperature, held-out greedy at 1", ["entropy", "eval_entropy"]),
    ("groups with zero reward spread", ["zero_spread_fraction"]),
    ("clip fraction", ["clip_fraction"]), ("gradient norm (before clipping)", ["grad_norm"]),
    ("learning rate", ["lr"])]
SAMPLER_CURVES = [  # with a sampler that differs from the trainer
    ("sampler vs trainer: KL(pi_sampler || pi) per token", ["sampler_kl"]),
    ("ratio pi / pi_sampler: std, share outside [0.9, 1.1]",
     ["sampler_ratio_std", "sampler_ratio_outside"]),
    ("correction: mean weight, share truncated or masked",
     ["is_weight_mean", "is_clipped_fraction"])]

if __name__ == "__main__":
    runs.run_script(train, Config, __doc__)
