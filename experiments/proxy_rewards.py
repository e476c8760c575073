"""The reward_model experiment's parts: sample and verify responses, train a Bradley-Terry proxy
reward on (right, wrong) pairs, measure it, and optimise it by best-of-n.

The proxy is a language model read as a reward model: r(q, o) = sum over the response tokens of
log p_rm(o_t | q, o_<t), each token scored where it is written. It starts as a copy of the SFT
model and is trained to minimise -log sigmoid(r_chosen - r_rejected) (reward_model.bradley_terry_loss).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from reward_model import bradley_terry_loss
from runs import lr_at
from toy_model import encode_prompts, generate, get_response_log_probs, reward_fn


def sample_responses(policy, problems, k: int, temperature: float, tokenizer, max_new_tokens: int):
    """k responses to each problem from `policy` at `temperature`, padded to max_new_tokens so that
    batches stack: seq (N k, P + max_new_tokens), rows i k .. i k + k - 1 answering problem i;
    response_mask (N k, max_new_tokens); gold (N k,), 1 where the verifier says right, else 0."""
    device = next(policy.parameters()).device
    seqs, masks, gold = [], [], []
    for i in range(0, len(problems), 64):  # 64 prompts x k responses at a time
        chunk = problems[i:i + 64]
        prompt_ids = encode_prompts(tokenizer, [p.prompt for p in chunk], device)  # (n, P)
        ids, mask = generate(policy, prompt_ids, max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                             num_samples=k, temperature=temperature)  # (n k, T) each, T <= max
        gold += [reward_fn(tokenizer.decode(row[:m]), chunk[j // k].answer)["reward"]
                 for j, (row, m) in enumerate(zip(ids.tolist(), mask.sum(1).tolist()))]
        pad = max_new_tokens - ids.shape[1]
        seqs.append(torch.cat([prompt_ids.repeat_interleave(k, dim=0),
                               F.pad(ids, (0, pad), value=tokenizer.pad_id)], dim=1))
        masks.append(F.pad(mask, (0, pad)))
    return torch.cat(seqs), torch.cat(masks).float(), torch.tensor(gold, device=device)


def proxy_score(reward_model, seq, response_mask, prompt_len: int, temperature: float):
    """The proxy r(q, o) = sum over response tokens of log p_rm(o_t | q, o_<t) at `temperature`:
    a language model read as a reward model, each token scored where it is written. (B,)"""
    log_probs = get_response_log_probs(reward_model, seq[:, :-1], seq[:, 1:],
                                       temperature=temperature)["log_probs"]  # (B, P + T - 1)
    return (log_probs[:, prompt_len - 1:] * response_mask).sum(dim=1)


def proxy_scores(reward_model, seq, response_mask, prompt_len: int, temperature: float):
    """proxy_score of many sequences, 512 at a time, without gradient: (B,)."""
    with torch.inference_mode():
        return torch.cat([proxy_score(reward_model, seq[i:i + 512], response_mask[i:i + 512],
                                      prompt_len, temperature) for i in range(0, len(seq), 512)])


def comparison_pairs(gold, k: int) -> list[tuple[int, int]]:
    """(chosen, rejected) rows: for each prompt's k responses, disjoint pairs of a right and a wrong
    one (at most min(#right, #wrong) per prompt, no response used twice)."""
    pairs = []
    for i in range(0, len(gold), k):
        right = [r for r in range(i, i + k) if gold[r] == 1]
        wrong = [r for r in range(i, i + k) if gold[r] == 0]
        pairs += list(zip(right, wrong))
    return pairs


def train_proxy(policy, seq, response_mask, pairs, prompt_len: int, spec: dict):
    """A Bradley-Terry reward model: a copy of the SFT model trained for spec["rm_epochs"] passes
    over `pairs` (rows of seq, chosen then rejected) to minimise -log sigmoid(r_chosen - r_rejected)
    with r = proxy_score. Returns it frozen."""
    reward_model = copy.deepcopy(policy).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(reward_model.parameters(), lr=spec["rm_lr"], betas=(0.9, 0.98),
                                  weight_decay=0.0)
    pairs = torch.tensor(pairs, device=seq.device)  # (N, 2)
    batch = min(spec["rm_batch_size"], len(pairs))
    order = torch.cat([torch.randperm(len(pairs), device=seq.device)
                       for _ in range(spec["rm_epochs"])])
    steps = len(order) // batch
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step + 1, spec["rm_lr"], min(10, steps), steps, cosine=False)
        rows = pairs[order[step * batch:(step + 1) * batch]].flatten()  # chosen, rejected, ...
        scores = proxy_score(reward_model, seq[rows], response_mask[rows], prompt_len,
                             spec["temperature"])  # (2 b,)
        loss = bradley_terry_loss(scores[0::2], scores[1::2])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reward_model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return reward_model.eval().requires_grad_(False)


def pair_accuracy(scores, gold) -> float | None:
    """Share of (right, wrong) response pairs of one prompt that the score orders right, ties
    counting one half, over all prompts. scores, gold: (prompts, k). None if there is no pair."""
    higher = (scores[:, :, None] > scores[:, None, :]).float()  # (G, k, k): i scores above j
    wins = higher + 0.5 * (scores[:, :, None] == scores[:, None, :]).float()
    is_pair = (gold[:, :, None] == 1) & (gold[:, None, :] == 0)  # i right, j wrong
    return (wins[is_pair].mean().item() if is_pair.any() else None)


def best_of_n(scores, n: int):
    """Best-of-n: split each row of scores (G, K) into K // n groups of n consecutive samples and
    pick the highest-scoring one in each group, a tie going to the first. Returns the picked
    columns, (G, K // n)."""
    G, K = scores.shape
    assert K % n == 0, f"best_of_n: n = {n} does not divide the {K} samples"
    picked = scores.view(G, K // n, n).argmax(dim=-1)  # argmax returns the first of equal maxima
    return picked + torch.arange(0, K, n, device=scores.device)


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || pi_ref) = log n - (n - 1) / n, exact when no two samples tie in score
    (a continuous score), an upper bound otherwise (Beirami et al. 2024)."""
    return math.log(n) - (n - 1) / n


def best_of_n_of(reward_model, seq, response_mask, gold, ns: list[int], prompt_len: int,
                 temperature: float) -> tuple[dict, tuple[float, float]]:
    """One proxy on pi_ref's samples (G prompts x K, gold (G, K)): its held-out pair accuracy and,
    for each n, the mean gold and proxy score of the best-of-n picks. The score is normalised to
    mean 0, std 1 on these samples; returns ({"pair_accuracy", "best_of_n"}, (mean, std))."""
    scores = proxy_scores(reward_model, seq, response_mask, prompt_len, temperature)
    norm = (scores.mean().item(), scores.std().item())
    scores = ((scores - norm[0]) / norm[1]).view(gold.shape)  # (G, K)
    accuracy = pair_accuracy(scores, gold)
    print(f"held-out pair accuracy {accuracy:.3f}")
    picks = {n: best_of_n(scores, n) for n in ns}
    return {"pair_accuracy": accuracy,
            "best_of_n": [{"n": n, "kl": best_of_n_kl(n), "gold": gold.gather(1, i).mean().item(),
                           "proxy": scores.gather(1, i).mean().item()}
                          for n, i in picks.items()]}, norm
