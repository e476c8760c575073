"""The reward model of RLHF (`ppo.py --reward model`): a Bradley-Terry model of pairwise
preferences, trained on the SFT policy's own samples, then frozen and read as PPO's score.

    P(o_w preferred to o_l | q) = sigmoid(r(q, o_w) - r(q, o_l))
    L(phi) = -E_{(q, o_w, o_l)} [ log sigmoid(r_phi(q, o_w) - r_phi(q, o_l)) ]

r_phi is a scalar head on a copy of the SFT model, read at the response's last token. The pairs
here are labelled by the verifier (a right response beats a wrong one to the same prompt).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

import runs
from toy_model import ScalarHead, encode_prompts, generate, reward_fn


def bradley_terry_loss(chosen_rewards, rejected_rewards):
    """-log sigmoid(r_chosen - r_rejected) = softplus(-(r_chosen - r_rejected)), mean over pairs."""
    return F.softplus(-(chosen_rewards - rejected_rewards)).mean()


def sequence_scores(reward_model, seq, prompt_len, response_mask):
    """The reward model's scalar at each sequence's last response token: (B,)."""
    last = prompt_len + response_mask.sum(dim=1).long() - 1  # position of end-of-text in seq
    return reward_model(seq)[torch.arange(len(seq)), last]


def train_reward_model(cfg, policy, task, tokenizer, rng, device):
    """Bradley-Terry on (correct, incorrect) pairs of the SFT model's own samples. Returns the
    reward model, frozen, and its score's mean and std on those samples (to normalise it)."""
    problems = task.sample(cfg.rm_prompts, rng)
    prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], device)  # (N, P)
    P, k = prompt_ids.shape[1], cfg.rm_samples
    response_ids, response_mask = generate(policy, prompt_ids, task.max_new_tokens,
                                           tokenizer.eos_id, tokenizer.pad_id, num_samples=k,
                                           temperature=cfg.temperature)
    seq = torch.cat([prompt_ids.repeat_interleave(k, dim=0), response_ids], dim=1)  # (N k, P + T)
    correct = [reward_fn(tokenizer.decode(ids[:m]), problems[i // k].answer)["reward"] == 1
               for i, (ids, m) in enumerate(zip(response_ids.tolist(),
                                                response_mask.sum(1).tolist()))]
    pairs = []  # (chosen row, rejected row), rows of the same prompt
    for i in range(len(problems)):
        rows = range(i * k, (i + 1) * k)
        pairs += list(zip([r for r in rows if correct[r]], [r for r in rows if not correct[r]]))
    runs.require(len(pairs) >= 10, f"only {len(pairs)} preference pairs: raise --rm_prompts")
    pairs = torch.tensor(pairs, device=device)  # (pairs, 2), prompts in order: the tail is held out
    n_train = int(0.8 * len(pairs))
    reward_model = ScalarHead(copy.deepcopy(policy))
    optimizer = torch.optim.AdamW(reward_model.parameters(), lr=cfg.rm_lr,
                                  betas=(cfg.beta1, cfg.beta2))
    for rm_step in range(1, cfg.rm_steps + 1):
        for group in optimizer.param_groups:  # the same warm-up as PPO's, for the same reason
            group["lr"] = runs.lr_at(rm_step, cfg.rm_lr, cfg.warmup_steps, cfg.rm_steps, False)
        batch = pairs[torch.randint(n_train, (cfg.rm_batch_size,))]  # (b, 2)
        rows = batch.flatten()  # (2b,): chosen, rejected, chosen, ...
        scores = sequence_scores(reward_model, seq[rows], P, response_mask[rows])
        loss = bradley_terry_loss(scores[0::2], scores[1::2])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reward_model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    reward_model.eval().requires_grad_(False)
    with torch.inference_mode():
        scores = sequence_scores(reward_model, seq, P, response_mask)  # (N k,)
        held_out = pairs[n_train:]
        accuracy = (scores[held_out[:, 0]] > scores[held_out[:, 1]]).float().mean().item()
    print(f"reward model: {len(pairs)} pairs from {len(problems)} prompts x {k} samples, "
          f"{cfg.rm_steps} steps, last loss {loss.item():.3f}, held-out pair accuracy "
          f"{accuracy:.3f}")
    return reward_model, scores.mean().item(), scores.std().clamp_min(1e-6).item(), accuracy
