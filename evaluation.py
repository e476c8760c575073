"""Evaluation, read once: greedy held-out accuracy (what every script reports), and pass@k and
maj@k from many samples per problem (what RL does to the distribution, not only to its mode).
"""
from __future__ import annotations

import numpy as np
import torch

from toy_model import (ABSTENTION, EOS, GPT, Problem, Tokenizer, encode_prompts, extract_answer,
                       generate, get_response_log_probs, masked_mean, reward_fn)


def evaluate(model: GPT, tokenizer: Tokenizer, problems: list[Problem], max_new_tokens: int,
             batch_size: int = 125, suppress: str = "") -> tuple[dict, list[dict]]:
    """Greedy decoding on `problems`. Returns (metrics, samples): accuracy, format, abstention,
    direct-answer (empty scratchpad) and end-of-text rates, mean response length over all, correct
    and incorrect answers, and the policy's mean token entropy on its own responses; samples hold
    each prompt, response, reward. `suppress` lists characters never generated (e.g. "?": what
    would it answer if it could not abstain?)."""
    suppress_ids = tuple(tokenizer.encode(c)[0] for c in suppress)
    device = next(model.parameters()).device
    samples, entropies = [], []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        prompt_ids = encode_prompts(tokenizer, [p.prompt for p in chunk], device)
        ids, mask = generate(model, prompt_ids, max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                             temperature=0.0, suppress_ids=suppress_ids)
        with torch.inference_mode():
            seq = torch.cat([prompt_ids, ids], dim=1)
            out = get_response_log_probs(model, seq[:, :-1], seq[:, 1:], return_token_entropy=True)
            resp = slice(prompt_ids.shape[1] - 1, None)
            entropies.append(masked_mean(out["token_entropy"][:, resp], mask.float(), dim=1))
        for p, row, m in zip(chunk, ids.tolist(), mask.sum(1).tolist()):
            text = tokenizer.decode(row[:m])
            samples.append({"prompt": p.prompt, "response": text, "answer": p.answer,
                            "length": m, "eos": text.endswith(EOS), **reward_fn(text, p.answer)})

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    correct = [s for s in samples if s["answer_reward"] == 1]
    wrong = [s for s in samples if s["answer_reward"] == 0]
    metrics = {
        "accuracy": len(correct) / len(samples),
        "format_rate": mean([s["format_reward"] for s in samples]),
        "abstain_rate": mean([float(s["response"] == ABSTENTION) for s in samples]),
        "direct_rate": mean([float(s["response"].startswith("<think></think>")) for s in samples]),
        "eos_rate": mean([float(s["eos"]) for s in samples]),
        "response_len": mean([s["length"] for s in samples]),
        "response_len_correct": mean([s["length"] for s in correct]),
        "response_len_incorrect": mean([s["length"] for s in wrong]),
        "entropy": torch.cat(entropies).mean().item(),
    }
    return metrics, samples


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n - c, k) / C(n, k), the chance that k of the n drawn without replacement hold a correct
    one. As a product, 1 - prod_{i = n - c + 1}^{n} (1 - k / i), so that no factorial overflows."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_vote(answers: list[str | None]) -> str | None:
    """The most frequent answer; unformatted responses (None) do not vote. Ties go to the answer
    that reached the winning count first, i.e. whose last needed vote came earliest in the list
    (deterministic). None if nothing voted."""
    counts: dict[str, int] = {}
    winner, best = None, 0
    for a in answers:
        if a is None:
            continue
        counts[a] = counts.get(a, 0) + 1
        if counts[a] > best:  # strictly more: an earlier answer keeps a tie
            winner, best = a, counts[a]
    return winner


def evaluate_pass_at_k(model: GPT, tokenizer: Tokenizer, problems: list[Problem],
                       max_new_tokens: int, n: int = 64, ks: tuple[int, ...] = (1, 4, 16, 64),
                       temperature: float = 1.0, seed: int = 0,
                       prompts_per_batch: int = 32) -> dict:
    """Sample n responses per problem at `temperature` (1.0: CS336's leaderboard setting) and
    return {"pass@k": mean over problems of pass_at_k(n, c, k), "maj@k": accuracy of the majority
    answer of the first k samples, "correct_counts": c per problem, "format_rate"}.
    Seeded and isolated: torch's global random state is the same afterwards as before."""
    if not all(1 <= k <= n for k in ks):
        raise ValueError(f"every k must be in [1, n = {n}]: {ks}")
    device = next(model.parameters()).device
    counts, majority_right, formatted = [], {k: 0 for k in ks}, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(problems), prompts_per_batch):
            chunk = problems[i:i + prompts_per_batch]
            prompt_ids = encode_prompts(tokenizer, [p.prompt for p in chunk], device)
            ids, mask = generate(model, prompt_ids, max_new_tokens, tokenizer.eos_id,
                                 tokenizer.pad_id, num_samples=n,
                                 temperature=temperature)  # (len(chunk) * n, T)
            texts = [tokenizer.decode(row[:m])
                     for row, m in zip(ids.tolist(), mask.sum(1).tolist())]
            for j, p in enumerate(chunk):
                answers = [extract_answer(t) for t in texts[j * n:(j + 1) * n]]
                counts.append(sum(a == p.answer for a in answers))
                formatted += sum(a is not None for a in answers)
                for k in ks:
                    majority_right[k] += majority_vote(answers[:k]) == p.answer
    out = {f"pass@{k}": sum(pass_at_k(n, c, k) for c in counts) / len(counts) for k in ks}
    out.update({f"maj@{k}": majority_right[k] / len(counts) for k in ks})
    return {**out, "format_rate": formatted / (n * len(counts)), "n": n, "temperature": temperature,
            "correct_counts": counts}
