"""Everything that is not an algorithm: the addition task, the tokenizer, a tiny GPT with a KV
cache, sampling, the CS336 model helpers, evaluation, checkpoints, metric logs and plots.

The algorithm files (sft.py, grpo.py, dpo.py, ppo.py) import from here and keep their own
objective inline. Read this file once; after that every script reads on its own.

Task. Add two d-digit numbers. Operands are zero-padded to d digits so that every prompt has the
same length (2d + 2 tokens): batched sampling then needs no left padding. The response follows
the DeepSeek-R1 template, a scratchpad then the answer, then end-of-text:

    prompt   357+068=
    response <think>7+8+0=15,5+6+1=12,3+0+1=04</think><answer>425</answer><|endoftext|>

The scratchpad adds digit pairs right to left, `a+b+carry_in=sum`, each sum written with two
digits so the carry is always visible.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import inspect
import json
import math
import os
import random
import re
import sys
import tempfile
import types
import typing
from dataclasses import dataclass

import numpy as np
import tiktoken
import torch
import torch.nn as nn
import torch.nn.functional as F


class UserError(ValueError):
    """Bad input from the user (a flag, a file): scripts print it in one line and exit 2."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


# ----------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    digits: int

    @property
    def prompt(self) -> str:  # "357+068="
        return f"{self.a:0{self.digits}d}+{self.b:0{self.digits}d}="

    @property
    def answer(self) -> str:  # the ground truth handed to reward_fn: "425"
        return str(self.a + self.b)

    @property
    def demonstration(self) -> str:  # the SFT target: scratchpad, answer, end-of-text
        a, b = f"{self.a:0{self.digits}d}", f"{self.b:0{self.digits}d}"
        steps, carry = [], 0
        for da, db in zip(reversed(a), reversed(b)):
            total = int(da) + int(db) + carry
            steps.append(f"{da}+{db}+{carry}={total:02d}")
            carry = total // 10
        return f"<think>{','.join(steps)}</think><answer>{self.answer}</answer>{EOS}"

    @property
    def abstention(self) -> str:  # "I don't know": no scratchpad, answer "?" (see reward_fn)
        return ABSTENTION


class AdditionTask:
    """d-digit addition with a fixed held-out test set that training never samples.

    The test set is drawn once from its own seed; `sample` rejects any problem in it, so a score
    on `test` is a score on problems the model never saw. With few possible problems (1 digit has
    100) the test set is capped at a fifth of them.
    """

    def __init__(self, digits: int = 3, n_test: int = 500, test_seed: int = 1234):
        self.digits = digits
        n_problems = (10 ** digits) ** 2
        n_test = min(n_test, n_problems // 5)
        rng = np.random.default_rng(test_seed)
        ids = rng.choice(n_problems, size=n_test, replace=False)
        self.test = [Problem(int(i) // 10 ** digits, int(i) % 10 ** digits, digits) for i in ids]
        self._test_set = {(p.a, p.b) for p in self.test}
        self.prompt_len = 2 * digits + 2
        self.response_len = 10 * digits + 5  # longest correct response in tokens, end-of-text included
        self.max_new_tokens = self.response_len + 5  # sampling budget: a little room for wrong answers
        self.max_seq_len = self.prompt_len + self.max_new_tokens  # what the model must hold: 48 at 3 digits

    def sample(self, n: int, rng: np.random.Generator) -> list[Problem]:
        """n training problems, operands uniform in [0, 10^d), never one from the test set."""
        out = []
        while len(out) < n:
            a, b = (int(x) for x in rng.integers(0, 10 ** self.digits, size=2))
            if (a, b) not in self._test_set:
                out.append(Problem(a, b, self.digits))
        return out


RESPONSE_RE = re.compile(r"<think>[0-9+=,]*</think><answer>([0-9]+)</answer><\|endoftext\|>")
# The one response that abstains. Its first token after <think> is "?": the model decides to
# abstain from the problem alone, before computing anything.
ABSTENTION = "<think>?</think><answer>?</answer><|endoftext|>"


def reward_fn(response: str, ground_truth: str, abstain_reward: float | None = None) -> dict[str, float]:
    """CS336's r1_zero convention, {"reward", "format_reward", "answer_reward"}: unformatted
    gives 0, 0, 0; formatted but wrong 0, 1, 0; correct 1, 1, 1. Formatted means the whole response is
    <think>scratchpad</think><answer>digits</answer> followed by end-of-text and nothing else.
    With abstain_reward set (not in CS336), the ABSTENTION response counts as formatted and scores
    abstain_reward, 1, 0; without it, it is unformatted like any other stray text."""
    if abstain_reward is not None and response == ABSTENTION:
        return {"reward": float(abstain_reward), "format_reward": 1.0, "answer_reward": 0.0}
    match = RESPONSE_RE.fullmatch(response)
    if match is None:
        return {"reward": 0.0, "format_reward": 0.0, "answer_reward": 0.0}
    correct = float(match.group(1) == ground_truth)
    return {"reward": correct, "format_reward": 1.0, "answer_reward": correct}


# ----------------------------------------------------------------------------------------------
# Tokenizer: a tiktoken.Encoding built in code, one token per character, nothing downloaded
# ----------------------------------------------------------------------------------------------
CHARS = "0123456789+=,?"  # '?' is unused by the default task; it lets an answer abstain
EOS, PAD = "<|endoftext|>", "<|pad|>"
SPECIALS = ["<think>", "</think>", "<answer>", "</answer>", EOS, PAD]


class Tokenizer(tiktoken.Encoding):
    """20 tokens: the task's characters, then the tags, end-of-text and a separate padding token.

    tiktoken aborts the process on a byte outside its vocabulary, so `encode` checks first and
    `decode` checks ids; both raise ValueError naming what is unknown.
    """

    def __init__(self):
        ranks = {c.encode(): i for i, c in enumerate(CHARS)}
        specials = {s: len(CHARS) + i for i, s in enumerate(SPECIALS)}
        super().__init__("addition", pat_str=r".", mergeable_ranks=ranks, special_tokens=specials)
        self.eos_id, self.pad_id = specials[EOS], specials[PAD]

    def encode(self, text: str, **_ignored) -> list[int]:
        plain = re.sub("|".join(re.escape(s) for s in SPECIALS), "", text)
        unknown = sorted(set(plain) - set(CHARS))
        if unknown:
            raise ValueError(f"characters outside the vocabulary: {unknown!r} in {text!r}")
        return super().encode(text, allowed_special="all")

    def decode(self, ids, **_ignored) -> str:
        ids = [int(i) for i in ids]
        unknown = sorted({i for i in ids if not 0 <= i < self.n_vocab})
        if unknown:
            raise ValueError(f"token ids outside the vocabulary (0..{self.n_vocab - 1}): {unknown}")
        return super().decode(ids)


# ----------------------------------------------------------------------------------------------
# The model: a pre-LayerNorm GPT with learned positions and a KV cache
# ----------------------------------------------------------------------------------------------
@dataclass
class GPTConfig:
    vocab_size: int = 20
    max_seq_len: int = 48
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0


class KVCache:
    """Keys and values of every position seen so far, per layer: (layers, B, heads, max_len, d_head).

    Sized for the prompt plus the new tokens and filled in place (reallocated once, G times bigger,
    when each prompt gets G samples); a position is only read after it has been written, so the
    buffers start uninitialised (torch.empty: no time spent zeroing)."""

    def __init__(self, cfg: GPTConfig, batch: int, device, max_len: int | None = None):
        max_len = cfg.max_seq_len if max_len is None else max_len
        shape = (cfg.n_layer, batch, cfg.n_head, max_len, cfg.d_model // cfg.n_head)
        self.k = torch.empty(shape, device=device)
        self.v = torch.empty(shape, device=device)
        self.pos = 0  # how many positions are filled

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store the new (B, heads, T, d_head) keys/values at positions pos .. pos + T - 1; return
        all keys/values so far. pos does not move here: every layer writes the same positions, and
        GPT.hidden advances pos after the last layer."""
        end = self.pos + k.shape[2]
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def repeat_interleave(self, n: int) -> None:
        """Give each row n copies: prefill a prompt once, then sample n completions of it.
        Only the filled positions are copied, straight into the bigger buffers."""
        if n == 1:
            return
        L, B, H, max_len, D = self.k.shape
        for name in ("k", "v"):
            old = getattr(self, name)
            new = old.new_empty(L, B * n, H, max_len, D)
            # row b * n + j of new = row b of old: view new's rows as (B, n) and broadcast over n
            new.view(L, B, n, H, max_len, D)[:, :, :, :, :self.pos] = old[:, :, None, :, :self.pos]
            setattr(self, name, new)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)  # fused query, key, value projection
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout))

    def forward(self, x, layer: int, cache: KVCache | None):
        B, T, C = x.shape
        # q, k, v: each (B, heads, T, d_head), split out of one fused projection
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, heads, positions so far, d_head)
        S = k.shape[2]  # positions attended to: the cache's so far, or T without a cache
        # softmax(q k^T / sqrt(d_head)) v, written out: at these lengths (48 positions at 3 digits)
        # two small matmuls beat the fused kernel on a CPU, and a student can print every step.
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, heads, T, S)
        if T > 1:  # causal: new token i sits at position S - T + i and sees positions <= that
            visible = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            scores = scores.masked_fill(~visible, float("-inf"))
        attention = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)  # (B, heads, T, S)
        y = attention @ v  # (B, heads, T, d_head)
        x = x + F.dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)), self.dropout, self.training)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied input and output embeddings
        for name, p in self.named_parameters():  # GPT-2 initialisation
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, d_model) final hidden states. With a cache, idx continues it."""
        start = cache.pos if cache is not None else 0
        assert start == 0 or idx.shape[1] == 1, "the cache takes a whole prompt, then one token at a time"
        assert start + idx.shape[1] <= self.cfg.max_seq_len, "sequence longer than max_seq_len"
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(start, start + idx.shape[1], device=idx.device))
        x = F.dropout(x, self.cfg.dropout, self.training)
        for layer, block in enumerate(self.blocks):
            x = block(x, layer, cache)
        if cache is not None:
            cache.pos += idx.shape[1]
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.head(self.hidden(idx, cache))  # (B, T, vocab) logits


@torch.inference_mode()
def generate(model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, eos_id: int, pad_id: int,
             num_samples: int = 1, temperature: float = 1.0, min_new_tokens: int = 0,
             use_cache: bool = True, suppress_ids: tuple[int, ...] = ()):
    """Sample num_samples completions of each prompt.

    prompt_ids: (N, P), all prompts the same length. Returns (response_ids, response_mask), both
    (N * num_samples, T) with T <= max_new_tokens, completions of prompt i in rows
    i*num_samples ... (i+1)*num_samples - 1. The mask covers every sampled token up to and
    including end-of-text; after it the ids are padding and the mask is 0. temperature 0 is
    greedy. End-of-text is suppressed for the first min_new_tokens tokens, the tokens in
    suppress_ids at every step (e.g. "?": what would the model answer if it could not abstain?).
    """
    was_training = model.training
    model.eval()
    if use_cache:  # prefill each distinct prompt once, then copy its cache for every sample
        cache = KVCache(model.cfg, prompt_ids.shape[0], prompt_ids.device,
                        max_len=min(prompt_ids.shape[1] + max_new_tokens, model.cfg.max_seq_len))
        logits = model(prompt_ids, cache)[:, -1].repeat_interleave(num_samples, dim=0)  # (B, V)
        cache.repeat_interleave(num_samples)
    else:  # recompute the whole sequence every step: what the cache saves us from
        seq = prompt_ids.repeat_interleave(num_samples, dim=0)
        logits = model(seq)[:, -1]
    B = logits.shape[0]
    done = torch.zeros(B, dtype=torch.bool, device=prompt_ids.device)
    tokens, masks = [], []
    for t in range(max_new_tokens):
        if t < min_new_tokens:
            logits[:, eos_id] = -float("inf")
        if suppress_ids:
            logits[:, list(suppress_ids)] = -float("inf")
        if temperature == 0:
            next_id = logits.argmax(dim=-1)
        else:
            next_id = torch.multinomial(F.softmax(logits / temperature, dim=-1), 1).squeeze(1)
        masks.append(~done)  # done is still the previous step's: this token, end-of-text included, counts
        next_id = torch.where(done, pad_id, next_id)  # finished rows only get padding
        tokens.append(next_id)
        done = done | (next_id == eos_id)
        if done.all() or t == max_new_tokens - 1:
            break
        if use_cache:
            logits = model(next_id[:, None], cache)[:, -1]
        else:
            seq = torch.cat([seq, next_id[:, None]], dim=1)
            logits = model(seq)[:, -1]
    model.train(was_training)
    return torch.stack(tokens, dim=1), torch.stack(masks, dim=1).long()


def encode_prompts(tokenizer: Tokenizer, prompts: list[str], device) -> torch.Tensor:
    """Prompts of equal length -> (N, P) token ids."""
    ids = [tokenizer.encode(p) for p in prompts]
    assert len({len(i) for i in ids}) == 1, "generate() takes prompts of one length"
    return torch.tensor(ids, device=device)


# ----------------------------------------------------------------------------------------------
# CS336 Assignment 5 helpers (same names, arguments and reductions)
# ----------------------------------------------------------------------------------------------
def tokenize_prompt_and_output(prompt_strs, output_strs, tokenizer):
    """Tokenize prompt+output pairs, right-pad with the pad token, shift by one.

    Returns {"input_ids", "labels", "response_mask"}, each (B, max_len - 1): labels are
    input_ids shifted left, and response_mask is 1 where the label is an output token."""
    rows, masks = [], []
    for prompt, output in zip(prompt_strs, output_strs):
        p, o = tokenizer.encode(prompt), tokenizer.encode(output)
        rows.append(p + o)
        masks.append([0] * len(p) + [1] * len(o))
    max_len = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.pad_id] * (max_len - len(r)) for r in rows])
    mask = torch.tensor([m + [0] * (max_len - len(m)) for m in masks])
    return {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "response_mask": mask[:, 1:]}


def compute_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution over the last dimension: (..., V) -> (...).
    Written with logsumexp so that very large logits stay finite."""
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def get_response_log_probs(model, input_ids, labels, return_token_entropy=False, temperature=1.0):
    """log p(label_t | input_ids_<=t) for every position: {"log_probs": (B, T)} and, if asked,
    {"token_entropy": (B, T)}. `temperature` (not in CS336) scores at the sampling temperature."""
    logits = model(input_ids)
    if temperature != 1.0:
        logits = logits / temperature
    log_probs = torch.gather(F.log_softmax(logits, dim=-1), -1, labels.unsqueeze(-1)).squeeze(-1)
    out = {"log_probs": log_probs}
    if return_token_entropy:
        with torch.no_grad():
            out["token_entropy"] = compute_entropy(logits)
    return out


def masked_normalize(tensor, mask, dim=None, normalize_constant=1.0):
    """Sum of the elements where mask is 1, divided by a constant (Dr. GRPO's normalisation)."""
    total = (tensor * mask).sum() if dim is None else (tensor * mask).sum(dim=dim)
    return total / normalize_constant


def masked_mean(tensor, mask, dim=None):
    """Mean over the elements where mask is 1. A fully masked slice gives 0/0 = NaN, as in CS336."""
    if dim is None:
        return (tensor * mask).sum() / mask.sum()
    return (tensor * mask).sum(dim=dim) / mask.sum(dim=dim)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def evaluate(model: GPT, tokenizer: Tokenizer, problems: list[Problem], max_new_tokens: int,
             batch_size: int = 125) -> tuple[dict, list[dict]]:
    """Greedy decoding on `problems`. Returns (metrics, samples): accuracy, format, abstention and
    end-of-text rates, mean response length over all, correct and incorrect answers, and the
    policy's mean token entropy on its own responses; samples hold each prompt, response, reward.
    125 prompts per batch: on a CPU as fast as 512, for a quarter of the memory."""
    device = next(model.parameters()).device
    samples, entropies = [], []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        prompt_ids = encode_prompts(tokenizer, [p.prompt for p in chunk], device)
        ids, mask = generate(model, prompt_ids, max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                             temperature=0.0)
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
    one. Written as a product, 1 - prod_{i = n - c + 1}^{n} (1 - k / i), so no factorial overflows."""
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


def extract_answer(response: str) -> str | None:
    """The digits inside <answer> of a well-formatted response, else None."""
    match = RESPONSE_RE.fullmatch(response)
    return match.group(1) if match else None


def evaluate_pass_at_k(model: GPT, tokenizer: Tokenizer, problems: list[Problem], max_new_tokens: int,
                       n: int = 64, ks: tuple[int, ...] = (1, 4, 16, 64), temperature: float = 1.0,
                       seed: int = 0, prompts_per_batch: int = 32) -> dict:
    """Sample n responses per problem at `temperature` (1.0: CS336's leaderboard setting) and
    return {"pass@k": mean over problems of pass_at_k(n, c, k), "maj@k": accuracy of the majority
    answer of the first k samples, "correct_counts": c per problem, "format_rate"}.
    Seeded and isolated: torch's global random state is the same afterwards as before."""
    require(all(1 <= k <= n for k in ks), f"every k must be in [1, n = {n}]: {ks}")
    device = next(model.parameters()).device
    counts, majority_right, formatted = [], {k: 0 for k in ks}, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(problems), prompts_per_batch):
            chunk = problems[i:i + prompts_per_batch]
            prompt_ids = encode_prompts(tokenizer, [p.prompt for p in chunk], device)
            ids, mask = generate(model, prompt_ids, max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                                 num_samples=n, temperature=temperature)  # (len(chunk) * n, T)
            texts = [tokenizer.decode(row[:m]) for row, m in zip(ids.tolist(), mask.sum(1).tolist())]
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


def log_generations(samples: list[dict], n: int = 4, title: str = "samples") -> None:
    """Print a few completions with their rewards (CS336's log_generations, in the console)."""
    print(f"  -- {title} --")
    for s in samples[:n]:
        print(f"  {s['prompt']}{s['response']}  [answer {s['answer']}, "
              f"format {s['format_reward']:.0f}, reward {s['reward']:.0f}]")


# ----------------------------------------------------------------------------------------------
# Config dataclass -> command line, with the field comments as help
# ----------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_config(config_cls, argv=None, description: str | None = None):
    """Build argparse from a Config dataclass: one --flag per field, the comment after the field
    as its help, `# --- name ---` lines as groups. Invalid values exit 2 with one line."""
    help_of, group_of, group = {}, {}, "options"
    for line in inspect.getsource(config_cls).splitlines():
        line = line.strip()
        if m := re.fullmatch(r"#\s*-+\s*(.+?)\s*-+", line):
            group = m.group(1)
        elif m := re.match(r"(\w+)\s*:.*?#\s*(.+)$", line):
            help_of[m.group(1)], group_of[m.group(1)] = m.group(2), group
    prog = os.path.basename(sys.argv[0]) if argv is None else config_cls.__module__ + ".py"
    parser = _Parser(prog=prog, description=description,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {}
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        g = groups.setdefault(group_of.get(f.name, "options"),
                              parser.add_argument_group(group_of.get(f.name, "options")))
        kind, flag = hints[f.name], "--" + f.name
        text = f"{help_of.get(f.name, '')} (default: {f.default})".replace("%", "%%")  # argparse formats help
        if kind is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=text)
        elif typing.get_origin(kind) is typing.Literal:
            g.add_argument(flag, choices=typing.get_args(kind), default=f.default, help=text)
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):  # Optional[float]: "none" or a number
            base = [t for t in typing.get_args(kind) if t is not type(None)][0]
            g.add_argument(flag, type=lambda s, b=base: None if s.lower() == "none" else b(s),
                           default=f.default, metavar=base.__name__.upper(), help=text)
        else:
            g.add_argument(flag, type=kind, default=f.default, metavar=kind.__name__.upper(), help=text)
    args = parser.parse_args(argv)
    try:
        return config_cls(**vars(args))
    except UserError as e:
        parser.error(str(e))


def run_script(main, config_cls, description: str) -> None:
    """`python X.py --flags`: parse the Config, run main(cfg), turn a UserError into one line + exit 2."""
    cfg = parse_config(config_cls, description=description)
    try:
        main(cfg)
    except UserError as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)


# ----------------------------------------------------------------------------------------------
# Runs: device, seeds, checkpoints, metric logs, plots (all writes atomic)
# ----------------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    require(name in ("cpu", "cuda", "mps"), f"--device must be auto, cpu, cuda or mps, not {name!r}")
    require(name != "cuda" or torch.cuda.is_available(), "--device cuda: no CUDA device found")
    return torch.device(name)


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB (Linux VmHWM; elsewhere ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource, sys
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2 ** 20 if sys.platform == "darwin" else 1024)


def set_seed(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return the NumPy generator that draws the training problems."""
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _atomic_write(path: str, write) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give outputs the usual mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: str, obj) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_checkpoint(path: str, model: GPT, digits: int, run_config: dict | None = None) -> None:
    """fp32 state dict plus what rebuilds the model: its GPTConfig, the task's digits, the vocab."""
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    ckpt = {"model_config": dataclasses.asdict(model.cfg), "digits": digits,
            "vocab": CHARS + "".join(SPECIALS), "state_dict": state, "run_config": run_config}
    _atomic_write(path, lambda f: torch.save(ckpt, f))


def load_checkpoint(path: str, digits: int | None = None, device="cpu") -> tuple[GPT, dict]:
    """Rebuild the model saved at `path`. Missing, corrupt, or built for another task: UserError."""
    require(os.path.exists(path), f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = GPT(GPTConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["state_dict"])
    except Exception as e:  # unpickling, missing keys and shape mismatches all land here
        raise UserError(f"checkpoint {path} is corrupt or not a model checkpoint "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    require(ckpt.get("vocab") == CHARS + "".join(SPECIALS),
            f"checkpoint {path} was built with another tokenizer")
    require(digits is None or ckpt.get("digits") == digits,
            f"checkpoint {path} was trained on {ckpt.get('digits')}-digit problems, not {digits}")
    return model.to(device), ckpt


class MetricLog:
    """One row per step; metrics.csv is rewritten atomically, so a crash never leaves half a file."""

    def __init__(self):
        self.rows: list[dict] = []

    def append(self, row: dict) -> None:
        self.rows.append(row)

    def write_csv(self, path: str) -> None:
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        def write(f):
            text = open(f.fileno(), "w", newline="", closefd=False)
            writer = csv.DictWriter(text, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
            text.flush()
        _atomic_write(path, write)

    def plot(self, path: str, panels: list[tuple[str, list[str]]], title: str = "") -> None:
        """One subplot per (title, keys); steps on x; missing values (eval every N steps) skipped."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        cols = min(3, len(panels))
        fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols,
                                 figsize=(4.2 * cols, 3.0 * ((len(panels) + cols - 1) // cols)),
                                 squeeze=False)
        for ax, (name, keys) in zip(axes.flat, panels):
            for key in keys:
                pts = [(r["step"], r[key]) for r in self.rows if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=key)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if len(keys) > 1:
                ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
        plt.close(fig)


def lr_at(step: int, peak_lr: float, warmup_steps: int, total_steps: int, cosine: bool = True) -> float:
    """Linear warm-up to peak_lr over warmup_steps, then cosine decay to peak_lr / 10 at
    total_steps (or constant, with cosine=False). Steps count from 1."""
    if step <= warmup_steps:
        return peak_lr * step / warmup_steps
    if not cosine:
        return peak_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def format_step(step: int, total: int, elapsed: float, metrics: dict) -> str:
    """`step 12/300 | loss 0.123 | ... | 0.21 s/step | 1m02s left`: the per-step console line."""
    per_step = elapsed / step
    left = per_step * (total - step)
    parts = [f"step {step:>{len(str(total))}}/{total}"]
    parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()]
    parts += [f"{per_step:.2f} s/step", f"{int(left // 60)}m{int(left % 60):02d}s left"]
    return " | ".join(parts)
