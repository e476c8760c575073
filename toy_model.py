"""What every script shares and a student reads once: the addition task and its reward, the
tokenizer, a tiny GPT with a KV cache, sampling, the CS336 model helpers and the KL estimators.
Evaluation (greedy accuracy, pass@k) is in evaluation.py; the run plumbing (flags, checkpoints,
logs, plots) in runs.py, which you need not read. The algorithm files import from here and keep
their own objective inline.

Task. Add two d-digit numbers. Operands are zero-padded to d digits so that every prompt has the
same length (2d + 2 tokens): batched sampling then needs no left padding. The response follows
the DeepSeek-R1 template, a scratchpad then the answer, then end-of-text:

    prompt   357+068=
    response <think>7+8+0=15,5+6+1=12,3+0+1=04</think><answer>425</answer><|endoftext|>

The scratchpad adds digit pairs right to left, `a+b+carry_in=sum`, each sum written with two
digits so the carry is always visible.
"""
from __future__ import annotations

import sys

if sys.version_info < (3, 10):  # `X | None` types are evaluated at run time
    sys.stderr.write("error: Python 3.10 or newer is needed (this is %d.%d)\n"
                     % sys.version_info[:2])
    raise SystemExit(2)

import math
import re
from dataclasses import dataclass

import numpy as np
import tiktoken
import torch
import torch.nn as nn
import torch.nn.functional as F


# --- The task -------------------------------------------------------------------------------------
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
    def direct(self) -> str:  # the answer without working: an empty scratchpad, "<think></think>"
        return f"<think></think><answer>{self.answer}</answer>{EOS}"

    def verbose(self, k: int) -> str:  # the demonstration padded with k empty steps: ",,,</think>"
        return self.demonstration.replace("</think>", "," * k + "</think>")

    @property
    def abstention(self) -> str:  # "I don't know": no scratchpad, answer "?" (see reward_fn)
        return ABSTENTION


class AdditionTask:
    """d-digit addition with a fixed held-out test set that training never samples.

    The test set is drawn once from its own seed; `sample` rejects any problem in it, so a score
    on `test` is a score on problems the model never saw (at most a fifth of all problems).
    Difficulty in the prompt (off by default): with `easy_digits` set, a problem is "hard" with
    probability `hard_fraction` (an operand >= 10^easy_digits) and "easy" otherwise. Both are
    zero-padded to `digits`: the leading zeros show the kind, and every prompt keeps one length.
    The test set then holds n_test // 2 easy and the rest hard problems, whatever the training mix
    (each kind capped at a fifth of its own problems). Verbose scratchpads (off by default): with
    `verbose_max` set, a demonstration may end its scratchpad with up to that many empty steps
    (Problem.verbose), so every length budget grows by verbose_max tokens."""

    def __init__(self, digits: int = 3, n_test: int = 500, test_seed: int = 1234,
                 easy_digits: int | None = None, hard_fraction: float = 0.5, verbose_max: int = 0):
        self.digits, self.easy_digits, self.hard_fraction = digits, easy_digits, hard_fraction
        self.verbose_max = verbose_max
        n_problems = (10 ** digits) ** 2
        rng = np.random.default_rng(test_seed)
        if easy_digits is None:
            n_test = min(n_test, n_problems // 5)
            ids = rng.choice(n_problems, size=n_test, replace=False)
        else:
            assert 1 <= easy_digits < digits and 0 <= hard_fraction <= 1, "bad easy_digits"
            n_easy_problems = (10 ** easy_digits) ** 2
            n_easy = min(n_test // 2, n_easy_problems // 5)
            n_hard = min(n_test - n_test // 2, (n_problems - n_easy_problems) // 5)
            easy = [int(i // 10 ** easy_digits) * 10 ** digits + int(i % 10 ** easy_digits)
                    for i in rng.choice(n_easy_problems, size=n_easy, replace=False)]
            hard = [int(i) for i in rng.choice(n_problems, size=2 * n_hard + 10, replace=False)
                    if max(divmod(int(i), 10 ** digits)) >= 10 ** easy_digits][:n_hard]
            ids = rng.permutation(np.array(easy + hard, dtype=np.int64))
        self.test = [Problem(int(i) // 10 ** digits, int(i) % 10 ** digits, digits) for i in ids]
        self._test_set = {(p.a, p.b) for p in self.test}
        self.prompt_len = 2 * digits + 2
        self.response_len = 10 * digits + 5 + verbose_max  # longest correct response, with EOS
        self.max_new_tokens = self.response_len + 5  # sampling budget: room for wrong answers
        self.max_seq_len = self.prompt_len + self.max_new_tokens  # what the model must hold

    def kind(self, problem: Problem) -> str:
        """ "easy" (both operands below 10^easy_digits) or "hard"; by default all are "hard"."""
        small = self.easy_digits is not None and max(problem.a, problem.b) < 10 ** self.easy_digits
        return "easy" if small else "hard"

    def sample(self, n: int, rng: np.random.Generator) -> list[Problem]:
        """n training problems, never one from the test set: operands uniform in [0, 10^d), or,
        with easy_digits set, of a kind drawn first (hard with probability hard_fraction)."""
        out = []
        while len(out) < n:
            hard = self.easy_digits is None or rng.random() < self.hard_fraction
            width = self.digits if hard else self.easy_digits
            while True:  # redraw until the problem is of the drawn kind and not a held-out one
                a, b = (int(x) for x in rng.integers(0, 10 ** width, size=2))
                problem = Problem(a, b, self.digits)
                if (a, b) not in self._test_set and (not hard or self.kind(problem) == "hard"):
                    break
            out.append(problem)
        return out


RESPONSE_RE = re.compile(r"<think>[0-9+=,]*</think><answer>([0-9]+)</answer><\|endoftext\|>")
# The one response that abstains. Its first token after <think> is "?": the model decides to
# abstain from the problem alone, before computing anything.
ABSTENTION = "<think>?</think><answer>?</answer><|endoftext|>"


def reward_fn(response: str, ground_truth: str, abstain_reward: float | None = None,
              wrong_reward: float = 0.0) -> dict[str, float]:
    """CS336's r1_zero convention, {"reward", "format_reward", "answer_reward"}: unformatted
    gives 0, 0, 0; formatted but wrong 0, 1, 0; correct 1, 1, 1. Formatted: the whole response is
    <think>scratchpad</think><answer>digits</answer> followed by end-of-text and nothing else.
    With abstain_reward set (not in CS336), the ABSTENTION response counts as formatted and scores
    abstain_reward, 1, 0; without it, it is unformatted like any other stray text. wrong_reward
    (not in CS336; e.g. -1) is the reward of every response that is neither right nor ABSTENTION,
    unformatted ones included, so that bad format cannot dodge a penalty for a wrong answer."""
    if abstain_reward is not None and response == ABSTENTION:
        return {"reward": float(abstain_reward), "format_reward": 1.0, "answer_reward": 0.0}
    match = RESPONSE_RE.fullmatch(response)
    if match is None:
        return {"reward": float(wrong_reward), "format_reward": 0.0, "answer_reward": 0.0}
    correct = float(match.group(1) == ground_truth)
    reward = correct if correct else float(wrong_reward)
    return {"reward": reward, "format_reward": 1.0, "answer_reward": correct}


def extract_answer(response: str) -> str | None:
    """The digits inside <answer> of a well-formatted response, else None."""
    match = RESPONSE_RE.fullmatch(response)
    return match.group(1) if match else None


# --- Tokenizer: a tiktoken.Encoding built in code, nothing downloaded -----------------------------
CHARS = "0123456789+=,?"  # '?' is unused by the default task; it lets an answer abstain
EOS, PAD = "<|endoftext|>", "<|pad|>"
SPECIALS = ["<think>", "</think>", "<answer>", "</answer>", EOS, PAD]


class Tokenizer(tiktoken.Encoding):
    """20 tokens: the task's characters, then the tags, end-of-text and a separate padding token.
    tiktoken aborts the process on a byte outside its vocabulary, so `encode` checks first and
    `decode` checks ids; both raise ValueError naming what is unknown."""

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


# --- The model: a pre-LayerNorm GPT with a KV cache -----------------------------------------------
@dataclass
class GPTConfig:
    vocab_size: int = 20
    max_seq_len: int = 48
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0


class KVCache:
    """Keys and values of every position seen so far: (layers, B, heads, max_len, d_head). Sized
    for the prompt plus the new tokens, filled in place (reallocated once, G times bigger, when each
    prompt gets G samples); a position is read only after it is written, so torch.empty will do."""

    def __init__(self, cfg: GPTConfig, batch: int, device, max_len: int | None = None,
                 dtype=torch.float32):
        max_len = cfg.max_seq_len if max_len is None else max_len
        shape = (cfg.n_layer, batch, cfg.n_head, max_len, cfg.d_model // cfg.n_head)
        self.k = torch.empty(shape, device=device, dtype=dtype)  # the model's dtype
        self.v = torch.empty(shape, device=device, dtype=dtype)
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
        qkv = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, C // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, heads, positions so far, d_head)
        S = k.shape[2]  # positions attended to: the cache's so far, or T without a cache
        # softmax(q k^T / sqrt(d_head)) v, written out: at these lengths (48 positions at 3 digits)
        # two small matmuls beat the fused kernel on a CPU, and a student can print every step.
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, heads, T, S)
        if T > 1:  # causal: new token i sits at position S - T + i and sees positions <= that
            visible = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            scores = scores.masked_fill(~visible, float("-inf"))
        attention = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)  # (B, h, T, S)
        y = attention @ v  # (B, heads, T, d_head)
        y = self.proj(y.transpose(1, 2).reshape(B, T, C))  # heads side by side, then mixed
        x = x + F.dropout(y, self.dropout, self.training)
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
                residual = name.endswith(("proj.weight", "mlp.2.weight"))  # scaled by depth
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if residual else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, d_model) hidden states; with a cache, idx continues it."""
        start = cache.pos if cache is not None else 0
        assert start == 0 or idx.shape[1] == 1, "a cache takes a prompt, then one token at a time"
        assert start + idx.shape[1] <= self.cfg.max_seq_len, "sequence longer than max_seq_len"
        positions = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions)
        x = F.dropout(x, self.cfg.dropout, self.training)
        for layer, block in enumerate(self.blocks):
            x = block(x, layer, cache)
        if cache is not None:
            cache.pos += idx.shape[1]
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.head(self.hidden(idx, cache))  # (B, T, vocab) logits


def truncate_logits(logits: torch.Tensor, top_p: float = 1.0) -> torch.Tensor:
    """Nucleus (top-p) truncation, as inference engines sample: keep the smallest set of likeliest
    tokens whose probability reaches top_p, give the rest -inf. (B, V) -> (B, V); 1.0 keeps all."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each
    probs = sorted_logits.softmax(dim=-1)
    drop_sorted = probs.cumsum(dim=-1) - probs >= top_p  # the likelier tokens already hold top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocab order
    return logits.masked_fill(drop, -float("inf"))


@torch.inference_mode()
def generate(model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, eos_id: int, pad_id: int,
             num_samples: int = 1, temperature: float = 1.0, min_new_tokens: int = 0,
             use_cache: bool = True, suppress_ids: tuple[int, ...] = (), top_p: float = 1.0,
             return_log_probs: bool = False):
    """Sample num_samples completions of each prompt. prompt_ids: (N, P), all of one length.
    Returns (response_ids, response_mask), both (N * num_samples, T) with T <= max_new_tokens,
    completions of prompt i in rows i*num_samples ... (i+1)*num_samples - 1. The mask covers
    every sampled token up to and including end-of-text; after it the ids are padding and the mask
    is 0. temperature 0 is greedy. End-of-text is suppressed for the first min_new_tokens tokens,
    the tokens in suppress_ids at every step (e.g. "?": what would it say if it cannot abstain?).
    top_p < 1 samples from the nucleus (truncate_logits). return_log_probs adds a third (N *
    num_samples, T) tensor: each sampled token's log-prob under the distribution it was drawn from
    (after the temperature, the suppressions and top_p; 0 when greedy), what an inference engine
    reports as its log-probs. A model in bfloat16 or float16 samples in that precision."""
    was_training = model.training
    model.eval()
    if use_cache:  # prefill each distinct prompt once, then copy its cache for every sample
        cache = KVCache(model.cfg, prompt_ids.shape[0], prompt_ids.device,
                        max_len=min(prompt_ids.shape[1] + max_new_tokens, model.cfg.max_seq_len),
                        dtype=model.head.weight.dtype)
        logits = model(prompt_ids, cache)[:, -1].repeat_interleave(num_samples, dim=0)  # (B, V)
        cache.repeat_interleave(num_samples)
    else:  # recompute the whole sequence every step: what the cache saves us from
        seq = prompt_ids.repeat_interleave(num_samples, dim=0)
        logits = model(seq)[:, -1]
    B = logits.shape[0]
    done = torch.zeros(B, dtype=torch.bool, device=prompt_ids.device)
    tokens, masks, log_probs = [], [], []
    for t in range(max_new_tokens):
        logits = logits.float()  # a low-precision model's logits, sampled in float32 as engines do
        if t < min_new_tokens:
            logits[:, eos_id] = -float("inf")
        if suppress_ids:
            logits[:, list(suppress_ids)] = -float("inf")
        if temperature == 0:
            next_id = logits.argmax(dim=-1)
        else:
            scaled = truncate_logits(logits / temperature, top_p)  # (B, V)
            next_id = torch.multinomial(F.softmax(scaled, dim=-1), 1).squeeze(1)
        if return_log_probs:
            log_probs.append(torch.zeros(B, device=logits.device) if temperature == 0 else
                             F.log_softmax(scaled, dim=-1).gather(1, next_id[:, None]).squeeze(1))
        masks.append(~done)  # done is the previous step's: this token (even end-of-text) counts
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
    mask = torch.stack(masks, dim=1).long()
    if return_log_probs:  # 0 after end-of-text, like the padding
        return torch.stack(tokens, dim=1), mask, torch.stack(log_probs, dim=1) * mask
    return torch.stack(tokens, dim=1), mask


def encode_prompts(tokenizer: Tokenizer, prompts: list[str], device) -> torch.Tensor:
    """Prompts of equal length -> (N, P) token ids."""
    ids = [tokenizer.encode(p) for p in prompts]
    assert len({len(i) for i in ids}) == 1, "generate() takes prompts of one length"
    return torch.tensor(ids, device=device)


# --- CS336 Assignment 5 helpers (same names, arguments, reductions) -------------------------------
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


def get_response_log_probs(model, input_ids, labels, return_token_entropy=False, temperature=1.0,
                           entropy_grad=False):
    """log p(label_t | input_ids_<=t) for every position: {"log_probs": (B, T)} and, if asked,
    {"token_entropy": (B, T)}. Not in CS336: `temperature` scores at the sampling temperature, and
    `entropy_grad` keeps the entropy's gradient (PPO's entropy bonus needs it)."""
    logits = model(input_ids)
    if temperature != 1.0:
        logits = logits / temperature
    log_probs = torch.gather(F.log_softmax(logits, dim=-1), -1, labels.unsqueeze(-1)).squeeze(-1)
    out = {"log_probs": log_probs}
    if return_token_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
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


def kl_penalty(policy_log_probs, ref_log_probs, estimator):
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled by pi (Schulman's k1, k2, k3),
    all (B, T). With r = pi_ref / pi: k1 = -log r is unbiased but can be negative on one token, and
    as a loss term its expected gradient on-policy is 0 (it is grad log pi, whose mean is 0); k2 =
    (log r)^2 / 2 is biased, always >= 0; k3 = r - 1 - log r is unbiased and >= 0, and as a loss
    term its gradient is that of KL(pi_ref || pi), not KL(pi || pi_ref) (DeepSeekMath's choice)."""
    log_r = ref_log_probs - policy_log_probs
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r ** 2
    if estimator == "k3":
        return torch.expm1(log_r) - log_r  # expm1 is accurate near r = 1
    raise ValueError(f"unknown KL estimator {estimator!r}: k1, k2 or k3")


class ScalarHead(nn.Module):
    """A transformer with a scalar output per position: PPO's critic, which reads V(s_t) at every
    response position. The body starts from the SFT weights, the head at zero, so the first values
    are 0. (The reward model of reward_model.py is not one: it sums token log-probs.)"""

    def __init__(self, body: GPT):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.cfg.d_model, 1, device=body.tok_emb.weight.device)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.body.hidden(idx)).squeeze(-1)  # (B, T)
