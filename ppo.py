"""PPO for RLHF (InstructGPT-style): a policy, a frozen reference, a separate critic, GAE, a
per-token KL penalty in the reward and the sequence score on the last token.

Each step samples one response o per prompt q from the current policy pi_old and builds a reward
for every response token t:

    r_t = -beta * KL_t(pi_old || pi_ref) + [t = last token] * score(q, o)

KL_t is the per-token estimate k1 = log pi_old(o_t) - log pi_ref(o_t) (k2, k3 selectable): in
the reward, k1's mean is the KL. (If you move the KL from the reward into the loss, a common
homework change, use k3 there, as grpo.py's --beta does: as a loss term k1's expected gradient is
0 on-policy.) The score is the task's verifier (1 if correct, else 0) or a learned reward model;
a response that never produced end-of-text scores `missing_eos_penalty` (-1) instead. The
critic V(s_t) predicts the rest of the episode's reward from each prefix; GAE (gae.py) turns
rewards and values into advantages and value targets:

    delta_t = r_t + gamma V_{t+1} - V_t;    A_t = delta_t + gamma lambda A_{t+1};    R_t = A_t + V_t

Then `ppo_epochs` passes of shuffled minibatches minimise, averaged over a minibatch's tokens,

    L = -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)      rho_t = pi_theta(o_t) / pi_old(o_t)
        + c_v * 1/2 max((V_t - R_t)^2, (clip(V_t, V_old_t - eps_v, V_old_t + eps_v) - R_t)^2)
        - c_H * entropy_t

with A_t whitened over the rollout's valid tokens (after the value targets were taken). The
episode ends at the last response token, whether end-of-text or the budget's cut: V = 0 after it.
The logged ratio, clip fraction and approx_kl are means over every minibatch of every epoch, the
first (on-policy: ratio 1) included.

Default variant and departures from InstructGPT (Ouyang et al. 2022), Ziegler et al. (2019) and
"The N implementation details of RLHF with PPO" (Huang et al. 2024); the reasons: docs/ppo.md.
- the score is the verifier; `--reward model` first trains a Bradley-Terry reward model
  (reward_model.py: the SFT model's token log-probs plus a price per token, on right-vs-wrong
  pairs of SFT samples; `--label_length_bias` biases the labeller towards the longer response),
  its score normalised as Ziegler et al.;
- rollouts at temperature 0.5, a fixed KL coefficient, no PPO-ptx term; a response cut off by
  the length budget scores -1, not the verifier's 0 (Huang et al.'s missing-EOS penalty);
- the critic is a separate copy of the SFT model (InstructGPT starts it from the reward model) with
  a zero scalar head and its own, smaller learning rate; one backward and one AdamW for both
  networks, each gradient clipped on its own;
- 2 epochs of one whole-rollout minibatch: the first step on-policy, the second off-policy, where
  ratio and clip act (TRL: 4 epochs of 1, CleanRL: 4 of 4); a linear lr warm-up; token-mean
  losses; a rollout's epochs stop once KL(pi_old || pi_theta) after an epoch exceeds `target_kl`.

Run:   python ppo.py                   (time and result: README, Quick start)
       python ppo.py --reward model    against a learned reward model (docs/ppo.md), saved as
                                       out/ppo/reward_model.pt (--rm_checkpoint reuses one)
Variants: --ppo_epochs, --n_minibatches, --reward, --label_length_bias, --kl_estimator, --beta,
--lam, --gamma, --target_kl, --ent_coef, --no-whiten_advantages, --temperature. Outputs go to
out/ppo/; `python ppo.py -h` lists all flags.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch

import checks
import runs
import sft
from gae import gae_advantages, whiten
from reward_model import load_reward_model, save_reward_model, train_reward_model
from evaluation import evaluate
from toy_model import (ScalarHead, encode_prompts, generate, get_response_log_probs, kl_penalty,
                       masked_mean, reward_fn)
# What they give (toy_model.py): generate -> (ids, mask), (B, T) each, the mask 1 on every sampled
# token up to and including end-of-text; get_response_log_probs(model, input_ids, labels) ->
# {"log_probs": (B, L) log softmax(logits / temperature) at each label, optionally
# "token_entropy"; entropy_grad keeps its gradient for the bonus} over the whole sequence
# ([:, P - 1:] keeps the response: every prompt has one length P); ScalarHead(gpt)(ids) ->
# (B, L), one value per position, from a zero head; masked_mean(x, mask) averages the entries
# where mask is 1; kl_penalty(log_probs, ref, "k1") is log_probs - ref per token.


@dataclass
class Config:
    # --- task ---
    digits: int = 3  # operand length; must match the SFT checkpoint
    n_test: int = 500  # held-out problems for evaluation, never trained on
    sft_checkpoint: str = "out/sft/model.pt"  # starting policy (the default is made if missing)
    # --- sampling ---
    prompts_per_step: int = 128  # problems per rollout
    samples_per_prompt: int = 1  # completions per problem (no group: the critic is the baseline)
    temperature: float = 0.5  # sampling temperature of rollouts and of their log-probs
    max_new_tokens: int | None = None  # response budget; None is the task's (10 * digits + 10)
    # --- algorithm ---
    reward: Literal["rule", "model"] = "rule"  # score: the task's verifier, or a learned model
    beta: float = 0.02  # weight of the per-token KL penalty in the reward
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"  # KL estimate in the reward (as a loss term: k3)
    missing_eos_penalty: float = -1.0  # score of a response that never produced end-of-text
    gamma: float = 1.0  # discount over response tokens
    lam: float = 0.95  # GAE lambda: 0 is TD(0), 1 is Monte Carlo
    whiten_advantages: bool = True  # normalise advantages to mean 0, std 1 over valid tokens
    cliprange: float = 0.2  # epsilon of the clipped surrogate
    cliprange_value: float = 0.2  # epsilon of the clipped value loss, around the rollout's values
    vf_coef: float = 0.5  # weight of the value loss (separate critic, own clip: matters little)
    ent_coef: float = 0.0  # weight of the entropy bonus (0: none)
    target_kl: float | None = 0.05  # stop a rollout's epochs once KL(old || new) passes this
    # --- reward model (--reward model) ---
    rm_prompts: int = 512  # problems sampled from the SFT model to build preference pairs
    rm_samples: int = 4  # completions per problem; pairs are (correct, incorrect) among them
    label_length_bias: float = 0.0  # the labeller prefers the longer response with this chance
    rm_steps: int = 150  # Bradley-Terry optimizer steps
    rm_batch_size: int = 64  # pairs per reward-model step
    rm_lr: float = 3e-6  # reward-model AdamW learning rate (1e-5 already overfits the pairs)
    rm_price_lr: float = 1e-2  # learning rate of its price per token (one number)
    rm_checkpoint: str | None = None  # score with this saved reward_model.pt instead of training
    # --- optimisation ---
    steps: int = 150  # rollouts (outer loop)
    ppo_epochs: int = 2  # passes over each rollout (inner loop; the 1st minibatch is on-policy)
    n_minibatches: int = 1  # minibatches per pass (must divide the rollout size)
    lr: float = 5e-5  # policy AdamW learning rate
    critic_lr: float = 1e-4  # critic AdamW learning rate (1e-3 wrecks the SFT body it starts from)
    warmup_steps: int = 10  # linear warm-up of both learning rates over the first N rollouts
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay
    max_grad_norm: float = 1.0  # clip the policy's and the critic's gradient norms to this
    # --- run ---
    seed: int = 0  # seeds sampling, shuffling and the training problems
    device: str = "auto"  # auto: cuda if there is one, else cpu (mps only when named)
    eval_every: int = 10  # held-out greedy evaluation every N steps
    log_every: int = 5  # print a console line every N steps (and on every evaluation)
    samples_every: int = 25  # print a few rollout completions with their rewards every N steps
    out_dir: str = "out/ppo"  # metrics.csv, curves.png, model.pt, summary.json go here
    overwrite: bool = False  # replace a finished run's outputs in out_dir (else refuse)
    resume: bool = False  # continue the stopped run in out_dir from its last evaluation

    def __post_init__(self):
        checks.check_ppo(self)  # every bad value exits 2 with one line


def compute_ppo_rewards(scores, kl, response_mask, beta):
    """r_t = -beta KL_t on every response token, plus the score on the last one: (B, T)"""
    rewards = -beta * kl * response_mask
    last = response_mask.sum(dim=1).long() - 1  # index of end-of-text (or of the last token)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def compute_ppo_clip_loss(advantages, policy_log_probs, old_log_probs, cliprange):
    """Per-token clipped surrogate -min(rho A, clip(rho) A), as CS336's compute_grpo_clip_loss but
    with a different advantage for every token. Returns ((B, T) loss, metadata)."""
    ratio = torch.exp(policy_log_probs - old_log_probs)  # (B, T)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - cliprange, 1 + cliprange) * advantages
    return -torch.min(unclipped, clipped), {"ratio": ratio, "clipped": clipped < unclipped}


def compute_value_loss(values, old_values, returns, cliprange_value):
    """1/2 max((V - R)^2, (V_clipped - R)^2): the critic may move only eps_v from its rollout values
    before the pessimistic (clipped) error takes over. Returns ((B, T) loss, metadata)."""
    step = torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    values_clipped = old_values + step
    unclipped, clipped = (values - returns) ** 2, (values_clipped - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped), {"clipped": clipped > unclipped}


def ppo_minibatch_train_step(policy_log_probs, entropy, values, response_mask, old_log_probs,
                             old_values, advantages, returns, cliprange, cliprange_value, vf_coef,
                             ent_coef):
    """One minibatch: policy loss + vf_coef * value loss - ent_coef * entropy, each a mean over the
    minibatch's valid tokens; backward once. Returns (loss, metadata) for the log."""
    pg_loss, pg_meta = compute_ppo_clip_loss(advantages, policy_log_probs, old_log_probs, cliprange)
    vf_loss, vf_meta = compute_value_loss(values, old_values, returns, cliprange_value)
    pg_loss, vf_loss = masked_mean(pg_loss, response_mask), masked_mean(vf_loss, response_mask)
    entropy = masked_mean(entropy, response_mask)
    loss = pg_loss + vf_coef * vf_loss - ent_coef * entropy
    loss.backward()
    with torch.no_grad():
        log_ratio = policy_log_probs - old_log_probs  # approx KL(old || new), Schulman's k1 and k3
        return loss, {"pg_loss": pg_loss.item(), "vf_loss": vf_loss.item(),
                      "entropy": entropy.item(),
                      "clipfrac": masked_mean(pg_meta["clipped"].float(), response_mask).item(),
                      "vf_clipfrac": masked_mean(vf_meta["clipped"].float(), response_mask).item(),
                      "ratio": masked_mean(pg_meta["ratio"], response_mask).item(),
                      "approx_kl_k1": masked_mean(-log_ratio, response_mask).item(),
                      "approx_kl_k3": masked_mean(log_ratio.exp() - 1 - log_ratio,
                                                  response_mask).item()}


@torch.inference_mode()
def approx_kl(policy, seq, prompt_len, temperature, old_log_probs, response_mask) -> float:
    """KL(pi_old || pi_theta) per token over the whole rollout, after an epoch of updates (k3 on
    the rollout's own tokens): what target_kl stops on, as in CleanRL."""
    log_probs = get_response_log_probs(policy, seq[:, :-1], seq[:, 1:],
                                       temperature=temperature)["log_probs"]
    log_ratio = log_probs[:, prompt_len - 1:] - old_log_probs
    return masked_mean(torch.expm1(log_ratio) - log_ratio, response_mask).item()


def explained_variance(values, returns, mask):
    """1 - Var(R - V) / Var(R) over valid tokens: 1 is a perfect critic, 0 a constant's worth."""
    var = lambda x: masked_mean((x - masked_mean(x, mask)) ** 2, mask)
    return (1 - var(returns - values) / var(returns)).item() if var(returns) > 0 else float("nan")


def train(cfg: Config) -> dict:
    """Run PPO from the SFT checkpoint, evaluate, save; returns the summary (also summary.json).
    With --reward model the reward model is trained first and saved as reward_model.pt."""
    run = runs.Run(cfg, sft.train_if_missing)  # checks out_dir, makes out/sft if missing, seeds
    policy = run.load_policy()  # the SFT model, in eval mode: it trains as it samples (no dropout)
    task, tokenizer, device, rng = run.task, run.tokenizer, run.device, run.rng
    max_new = run.response_budget(cfg.max_new_tokens, policy)  # the task's unless given
    reference = copy.deepcopy(policy).requires_grad_(False)  # pi_ref: the SFT model, frozen
    critic = ScalarHead(copy.deepcopy(policy))  # V(s_t): SFT body, zero head
    optimizer = torch.optim.AdamW([{"params": policy.parameters(), "lr": cfg.lr},
                                   {"params": critic.parameters(), "lr": cfg.critic_lr}],
                                  betas=(cfg.beta1, cfg.beta2), weight_decay=0.0)
    B = cfg.prompts_per_step * cfg.samples_per_prompt  # sequences per rollout
    minibatch_size = B // cfg.n_minibatches
    rm_measured = {}  # 0. With --reward model: learn the score first (reward_model.py), freeze it
    if cfg.reward == "model" and cfg.rm_checkpoint is not None:  # learnt once, by an earlier run
        reward_model = load_reward_model(cfg.rm_checkpoint, device, fits=policy)
        rm_mean, rm_std = reward_model.norm
    elif cfg.reward == "model":
        reward_model, (rm_mean, rm_std), rm_measured = train_reward_model(
            cfg, policy, task, tokenizer, rng, device, max_new)
        save_reward_model(f"{cfg.out_dir}/reward_model.pt", reward_model)
    run.start(f"PPO | {device} | {B} responses a step, {cfg.ppo_epochs} epochs x "
              f"{cfg.n_minibatches} minibatches | score: {cfg.reward}",
              evaluate(policy, tokenizer, task.test, max_new),
              policy=policy, critic=critic, optimizer=optimizer)
    for step in run.steps():  # 1 .. cfg.steps; Ctrl-C ends the loop after a whole step
        for group, peak in zip(optimizer.param_groups, (cfg.lr, cfg.critic_lr)):
            # linear warm-up to lr over warmup_steps, then constant: a fresh Adam's first updates
            # are ~lr * sign(gradient) on every weight
            group["lr"] = runs.lr_at(step, peak, cfg.warmup_steps, cfg.steps, cosine=False)
        # 1. Rollout: sample responses from the current policy (pi_old for this step).
        problems = task.sample(cfg.prompts_per_step, rng)
        prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], device)  # (N, P)
        P = prompt_ids.shape[1]
        response_ids, response_mask = generate(  # (B, T) each; mask: tokens up to end-of-text
            policy, prompt_ids, max_new, tokenizer.eos_id, tokenizer.pad_id,
            num_samples=cfg.samples_per_prompt, temperature=cfg.temperature)
        seq = torch.cat([prompt_ids.repeat_interleave(cfg.samples_per_prompt, dim=0),
                         response_ids], dim=1)  # (B, P + T): row i has prompt i // samples
        # labels[:, j] = seq[:, j + 1], so labels[:, P - 1:] are the T response tokens
        input_ids, labels = seq[:, :-1], seq[:, 1:]  # (B, P + T - 1) each
        response_mask = response_mask.float()

        # 2. Reward: a score per sequence; true correctness is logged whatever the score source.
        responses = [tokenizer.decode(ids[:m]) for ids, m in
                     zip(response_ids.tolist(), response_mask.sum(1).long().tolist())]
        answers = [p.answer for p in problems for _ in range(cfg.samples_per_prompt)]
        true_rewards = [reward_fn(r, a) for r, a in zip(responses, answers)]
        has_eos = (response_ids == tokenizer.eos_id).any(dim=1)  # (B,)
        if cfg.reward == "rule":
            scores = torch.tensor([r["reward"] for r in true_rewards], device=device)  # (B,)
        else:
            with torch.inference_mode():
                scores = reward_model(seq, P, response_mask)  # (B,)
                # normalised by its mean and std on the SFT model's samples (reward_model.py)
                scores = (scores - rm_mean) / rm_std
        scores = torch.where(has_eos, scores, torch.full_like(scores, cfg.missing_eos_penalty))

        # 3. Advantage: old and reference log-probs and values once per rollout, then GAE.
        # Log-probs: log softmax(logits / temperature) at each label; [:, P - 1:] is the response.
        with torch.inference_mode():
            old_log_probs = get_response_log_probs(policy, input_ids, labels,
                                                   temperature=cfg.temperature)["log_probs"]
            ref_log_probs = get_response_log_probs(reference, input_ids, labels,
                                                   temperature=cfg.temperature)["log_probs"]
            old_log_probs, ref_log_probs = old_log_probs[:, P - 1:], ref_log_probs[:, P - 1:]
            # position P - 1 + t has read the prompt and o_<t: the critic's value there is V(s_t)
            values = critic(input_ids)[:, P - 1:] * response_mask  # (B, T)
            # k1 = log pi_old - log pi_ref per token (or k2, k3), 0 on padding
            kl = kl_penalty(old_log_probs, ref_log_probs, cfg.kl_estimator) * response_mask
            rewards = compute_ppo_rewards(scores, kl, response_mask, cfg.beta)  # (B, T)
            # GAE (gae.py): V = 0 after the last response token, padding has no reward or value
            advantages = gae_advantages(rewards, values, response_mask, cfg.gamma, cfg.lam)
            returns = advantages + values  # the critic's targets, before whitening; (B, T)
            if cfg.whiten_advantages:  # mean 0, (population) std 1 over the response tokens
                advantages = whiten(advantages, response_mask)

        # 4. Update: several epochs of shuffled minibatches against the fixed rollout.
        stats, epochs_run = [], 0
        for epoch in range(cfg.ppo_epochs):
            for idx in torch.randperm(B, device=device).split(minibatch_size):
                out = get_response_log_probs(policy, input_ids[idx], labels[idx],
                                             return_token_entropy=True,
                                             temperature=cfg.temperature,
                                             entropy_grad=cfg.ent_coef > 0)
                new_values = critic(input_ids[idx])[:, P - 1:]  # (b, T)
                _, meta = ppo_minibatch_train_step(
                    out["log_probs"][:, P - 1:], out["token_entropy"][:, P - 1:], new_values,
                    response_mask[idx], old_log_probs[idx], values[idx], advantages[idx],
                    returns[idx], cfg.cliprange, cfg.cliprange_value, cfg.vf_coef,
                    cfg.ent_coef)
                meta["grad_norm"] = torch.nn.utils.clip_grad_norm_(  # the policy's, logged
                    policy.parameters(), cfg.max_grad_norm).item()
                torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                stats.append(meta)
            epochs_run += 1
            kl_old_new = approx_kl(policy, seq, P, cfg.temperature, old_log_probs,
                                   response_mask)  # after this epoch, over the whole rollout
            if cfg.target_kl is not None and kl_old_new > cfg.target_kl:
                break  # the policy moved far enough from pi_old: sample a fresh rollout

        # 5. Log: rollout statistics, update statistics averaged over minibatches, eval every N.
        row = {"step": step, "lr": optimizer.param_groups[0]["lr"],  # the policy's
               "score": scores.mean().item(),
               "accuracy": sum(r["answer_reward"] for r in true_rewards) / B,  # the verifier's
               "format_rate": sum(r["format_reward"] for r in true_rewards) / B,
               "kl_per_token": masked_mean(kl, response_mask).item(),  # KL(pi_old || pi_ref)
               "explained_variance": explained_variance(values, returns, response_mask),
               "value_mean": masked_mean(values, response_mask).item(),
               "response_len": response_mask.sum(dim=1).mean().item(), "epochs": epochs_run,
               "kl_old_new": kl_old_new,
               **{k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}}
        is_eval = step % cfg.eval_every == 0 or step == cfg.steps
        run.log(row, SHOWN, evaluate(policy, tokenizer, task.test, max_new) if is_eval else None)
        if step % cfg.samples_every == 0:
            runs.log_generations([{"prompt": p.prompt, "response": r, "answer": p.answer, **t,
                                   "reward": s} for p, r, t, s in
                                  zip(problems, responses, true_rewards, scores.tolist())],
                                 title=f"rollout samples at step {step} (reward = score)")
    return run.finish(policy, "ppo", CURVES, f"PPO ({cfg.reward} score), {cfg.digits} digits",
                      {"reward": cfg.reward, **{f"reward_model_{k}": v
                                                for k, v in rm_measured.items()}})


SHOWN = ["score", "accuracy", "kl_per_token", "clipfrac", "vf_clipfrac", "kl_old_new",
         "explained_variance", "entropy", "response_len"]  # the console line's metrics.csv columns
CURVES = [  # curves.png: (panel title, metrics.csv columns)
    ("score next to true accuracy", ["score", "accuracy", "eval_accuracy"]),
    ("KL(pi_old || pi_ref) per response token", ["kl_per_token"]),
    ("policy: clip fraction, approx KL(old || new)", ["clipfrac", "approx_kl_k1", "approx_kl_k3"]),
    ("critic: explained variance, value clip fraction", ["explained_variance", "vf_clipfrac"]),
    ("losses", ["pg_loss", "vf_loss"]),
    ("token entropy: rollouts (at --temperature), held-out (at 1)", ["entropy", "eval_entropy"]),
    ("response length (tokens)", ["response_len", "eval_response_len"]),
    ("epochs run per rollout (early stop on target_kl)", ["epochs"]),
    ("KL(pi_old || pi_theta) after the update", ["kl_old_new"]),
    ("learning rate (policy)", ["lr"]),
]

if __name__ == "__main__":
    runs.run_script(train, Config, __doc__)
