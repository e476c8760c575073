"""The reward model of RLHF (`ppo.py --reward model`): a Bradley-Terry model of a labeller's
preferences between the SFT policy's own samples, trained once, then frozen and read as PPO's score.

    P(o_w preferred to o_l | q) = sigmoid(r(q, o_w) - r(q, o_l))
    L(phi) = -E_{(q, o_w, o_l)} [ log sigmoid(r_phi(q, o_w) - r_phi(q, o_l)) ]

r_phi is a copy of the SFT model, read as a sum over the response's tokens:

    r_phi(q, o) = sum_t [ log p_phi(o_t | q, o_<t) + b ]

The first term (at the policy's sampling temperature) is how likely the model finds each token
where it was written: that is what knows the arithmetic (a wrong digit is an unlikely digit), so
the reward model starts informative. Before any training it is log pi_ref(o) itself, and PPO
against it only sharpens the SFT policy towards its own mode. The second term is a learned price
per token, b, zero at the start. Length enters the score twice: each token adds its (negative)
log-probability and b, so a longer response scores higher only where b outweighs what its extra
tokens cost; and where b < 0, every score is below 0 and the shortest response, end-of-text at
once, scores highest. The usual design, a scalar head read at the last token, stays near chance
on this task: one position must judge a whole sum, and nothing trained the trunk's features
there to do so. A learned score at every position does worse under PPO, which finds the tokens
it overrates and writes them everywhere.

The labeller. Each pair is a right and a wrong response to one prompt. The gold rule prefers the
right one. A biased labeller, as human annotators are (Singhal et al. 2023 find length behind
most of the reward gain of common RLHF setups), prefers the longer response with probability
`length_bias`, whatever its correctness (a coin flip on equal lengths), and otherwise applies the
gold rule.
"""
from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import runs
from toy_model import GPT, GPTConfig, Tokenizer, encode_prompts, generate, reward_fn


def bradley_terry_loss(chosen_rewards, rejected_rewards):
    """-log sigmoid(r_chosen - r_rejected) = softplus(-(r_chosen - r_rejected)), mean over pairs."""
    return F.softplus(-(chosen_rewards - rejected_rewards)).mean()


class RewardModel(nn.Module):
    """r_phi(q, o) = sum over response tokens of [log p_phi(o_t | q, o_<t) + price], the
    log-probability taken at `temperature`; at the start, the SFT model's likelihood."""

    def __init__(self, policy: GPT, temperature: float = 1.0):
        super().__init__()
        self.body, self.temperature = copy.deepcopy(policy), temperature
        self.price = nn.Parameter(torch.zeros((), device=policy.tok_emb.weight.device))

    def forward(self, seq, prompt_len: int, response_mask):
        """seq (B, P + T) prompt and response ids, response_mask (B, T) -> scores (B,)."""
        logits = self.body(seq[:, :-1])[:, prompt_len - 1:] / self.temperature  # (B, T, V)
        log_probs = torch.gather(F.log_softmax(logits, dim=-1), -1,
                                 seq[:, prompt_len:, None]).squeeze(-1)  # (B, T)
        return ((log_probs + self.price) * response_mask).sum(dim=1)


def label_pairs(correct, lengths, k: int, length_bias: float, rng: np.random.Generator):
    """The labeller. correct, lengths: per response, k responses to each prompt in consecutive
    rows. Pairs each of a prompt's right responses with each of its wrong ones; each pair goes to
    the longer response with probability length_bias (a coin flip on equal lengths), else to the
    right one. Returns [(chosen row, rejected row)] and, per pair, whether the chosen one is the
    right one."""
    pairs, chosen_is_right = [], []
    for i in range(0, len(correct), k):
        right = [r for r in range(i, i + k) if correct[r]]
        wrong = [r for r in range(i, i + k) if not correct[r]]
        for r, w in ((r, w) for r in right for w in wrong):
            if rng.random() < length_bias:  # the surface preference: the longer one
                right_wins = (lengths[r] > lengths[w] if lengths[r] != lengths[w]
                              else rng.random() < 0.5)
            else:  # the gold rule
                right_wins = True
            pairs.append((r, w) if right_wins else (w, r))
            chosen_is_right.append(right_wins)
    return pairs, chosen_is_right


def label_ceiling(right_lengths, wrong_lengths, length_bias: float) -> float:
    """The highest pair accuracy any score can reach against label_pairs' labels: the labeller
    picks the right response with probability 1 where it is the longer, 1 - length_bias where it
    is the shorter, 1 - length_bias / 2 on equal lengths, and a score can at best always agree
    with the likelier label. right_lengths, wrong_lengths: (pairs,)."""
    p_right = torch.where(right_lengths > wrong_lengths, 1.0, torch.where(
        right_lengths < wrong_lengths, 1 - length_bias, 1 - length_bias / 2))  # (pairs,)
    return torch.maximum(p_right, 1 - p_right).float().mean().item()


def pair_accuracy(chosen_scores, rejected_scores) -> float:
    """Share of pairs the scores order as labelled, a tie counting one half."""
    return ((chosen_scores > rejected_scores).float()
            + 0.5 * (chosen_scores == rejected_scores).float()).mean().item()


def score(reward_model, seq, prompt_len: int, response_mask, batch: int = 256):
    """reward_model's scores of many sequences, `batch` at a time, without gradient: (B,)."""
    with torch.inference_mode():
        return torch.cat([reward_model(seq[i:i + batch], prompt_len, response_mask[i:i + batch])
                          for i in range(0, len(seq), batch)])


def train_reward_model(cfg, policy, task, tokenizer, rng, device, max_new_tokens: int):
    """Sample cfg.rm_samples responses to cfg.rm_prompts prompts from the SFT policy (at
    cfg.temperature), have the labeller (cfg.label_length_bias) judge right-vs-wrong pairs, and
    fit a RewardModel by Bradley-Terry on the first 80% of the pairs (in prompt order: a prompt
    may straddle the cut). Returns the model, frozen; its score's (mean, std) over all the sampled
    responses, which PPO normalises by (also kept as reward_model.norm); and, on the held-out 20%
    of the pairs: its accuracy against the gold rule, the share of pairs of unequal length where
    it scores the longer one higher (these pairs are right-vs-wrong, so correctness weighs in
    too), its accuracy against its own labels (the labeller's choices) and the most any score
    could reach against them (the labeller's coin flips), and its price per token."""
    problems = task.sample(cfg.rm_prompts, rng)
    prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], device)  # (N, P)
    P, k = prompt_ids.shape[1], cfg.rm_samples
    response_ids, response_mask = generate(policy, prompt_ids, max_new_tokens, tokenizer.eos_id,
                                           tokenizer.pad_id, num_samples=k,
                                           temperature=cfg.temperature)  # (N k, T) each
    seq = torch.cat([prompt_ids.repeat_interleave(k, dim=0), response_ids], dim=1)  # (N k, P + T)
    response_mask = response_mask.float()
    lengths = response_mask.sum(1).long().tolist()  # (N k,) as a list, as `correct`
    correct = [reward_fn(tokenizer.decode(ids[:m]), problems[i // k].answer)["reward"] == 1
               for i, (ids, m) in enumerate(zip(response_ids.tolist(), lengths))]
    pairs, _ = label_pairs(correct, lengths, k, cfg.label_length_bias, rng)
    runs.require(len(pairs) >= 10, f"only {len(pairs)} preference pairs: raise --rm_prompts")
    gold_pairs = torch.tensor([(r, w) if correct[r] else (w, r) for r, w in pairs],
                              device=device)  # (pairs, 2): the right response first
    pairs = torch.tensor(pairs, device=device)  # (pairs, 2): the labeller's choice first
    n_train = int(0.8 * len(pairs))
    reward_model = RewardModel(policy, cfg.temperature).train()
    optimizer = torch.optim.AdamW(  # the price is one number: it has its own, larger rate
        [{"params": reward_model.body.parameters(), "lr": cfg.rm_lr},
         {"params": [reward_model.price], "lr": cfg.rm_price_lr}],
        betas=(cfg.beta1, cfg.beta2), weight_decay=0.0)
    for rm_step in range(1, cfg.rm_steps + 1):
        for group, peak in zip(optimizer.param_groups, (cfg.rm_lr, cfg.rm_price_lr)):
            # the same warm-up as PPO's, for the same reason
            group["lr"] = runs.lr_at(rm_step, peak, cfg.warmup_steps, cfg.rm_steps, cosine=False)
        rows = pairs[torch.randint(n_train, (cfg.rm_batch_size,))].flatten()  # chosen, rejected..
        batch_scores = reward_model(seq[rows], P, response_mask[rows])  # (2 b,)
        loss = bradley_terry_loss(batch_scores[0::2], batch_scores[1::2])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reward_model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    reward_model.eval().requires_grad_(False)
    scores = score(reward_model, seq, P, response_mask)  # (N k,)
    held_out, right_first = pairs[n_train:], gold_pairs[n_train:]  # (held-out pairs, 2) each
    accuracy = pair_accuracy(scores[right_first[:, 0]], scores[right_first[:, 1]])
    label_accuracy = pair_accuracy(scores[held_out[:, 0]], scores[held_out[:, 1]])
    length_t = torch.tensor(lengths, device=device)  # (N k,)
    ceiling = label_ceiling(length_t[right_first[:, 0]], length_t[right_first[:, 1]],
                            cfg.label_length_bias)
    longer_first = torch.where((length_t[held_out[:, 0]] >= length_t[held_out[:, 1]])[:, None],
                               held_out, held_out.flip(1))  # (held-out pairs, 2)
    unequal = length_t[longer_first[:, 0]] > length_t[longer_first[:, 1]]
    prefers_longer = (pair_accuracy(scores[longer_first[unequal, 0]],  # ordered the longer first
                                    scores[longer_first[unequal, 1]]) if unequal.any() else None)
    price = reward_model.price.item()
    print(f"reward model: {len(pairs)} pairs from {len(problems)} prompts x {k} samples "
          f"(length bias {cfg.label_length_bias}), {cfg.rm_steps} steps, last loss "
          f"{loss.item():.3f}, price per token {price:+.3f}; held out: pair accuracy "
          f"{accuracy:.3f} (against its labels {label_accuracy:.3f}, at best "
          f"{ceiling:.3f}), prefers the longer "
          f"{prefers_longer if prefers_longer is None else round(prefers_longer, 3)}")
    reward_model.norm = (scores.mean().item(), scores.std().clamp_min(1e-6).item())
    return (reward_model, reward_model.norm,
            {"pair_accuracy": accuracy, "label_accuracy": label_accuracy,
             "label_ceiling": ceiling, "prefers_longer": prefers_longer, "price": price})


def filler_scores(reward_model, problems, max_filler: int, batch: int = 256) -> dict:
    """What the reward model pays for length: each problem's right demonstration padded with k
    empty steps (Problem.verbose(k)), k = 0..max_filler, scored and normalised by
    reward_model.norm. Returns, per k, the mean normalised score over the problems ("score") and
    the mean response length in tokens ("length"); "best_k" is the k of the highest mean score,
    the proxy's optimum, where exact optimisation of the score takes the length."""
    tokenizer, device = Tokenizer(), reward_model.price.device
    prompt_ids = encode_prompts(tokenizer, [p.prompt for p in problems], device)  # (G, P)
    responses = [tokenizer.encode(p.verbose(k)) for p in problems for k in range(max_filler + 1)]
    T, P = max(map(len, responses)), prompt_ids.shape[1]
    runs.require(P + T <= reward_model.body.cfg.max_seq_len,
                 f"{max_filler} empty steps do not fit the reward model's positions")
    response_ids = torch.tensor([r + [tokenizer.pad_id] * (T - len(r)) for r in responses],
                                device=device)  # (G (K + 1), T)
    response_mask = (response_ids != tokenizer.pad_id).float()  # (G (K + 1), T)
    seq = torch.cat([prompt_ids.repeat_interleave(max_filler + 1, dim=0), response_ids], dim=1)
    mean, std = reward_model.norm
    scores = (score(reward_model, seq, P, response_mask, batch) - mean) / std  # (G (K + 1),)
    per_k = scores.view(len(problems), max_filler + 1).mean(dim=0)  # (K + 1,)
    lengths = response_mask.sum(dim=1).view(len(problems), max_filler + 1).mean(dim=0)
    return {"k": list(range(max_filler + 1)), "score": per_k.tolist(), "length": lengths.tolist(),
            "best_k": int(per_k.argmax())}


def save_reward_model(path: str, reward_model: RewardModel) -> None:
    """The trained reward model, with what rebuilds it and the (mean, std) PPO normalises by."""
    state = {"model_config": dataclasses.asdict(reward_model.body.cfg),
             "temperature": reward_model.temperature, "norm": reward_model.norm,
             "state_dict": {k: v.detach().float().cpu()
                            for k, v in reward_model.state_dict().items()}}
    runs.atomic_write(path, lambda f: torch.save(state, f))


def load_reward_model(path: str, device="cpu", fits: GPT | None = None) -> RewardModel:
    """A reward model saved by save_reward_model, frozen, with its .norm; checked, if `fits` is
    given, to read that policy's tokens and sequences."""
    runs.require(os.path.exists(path), f"reward model {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        reward_model = RewardModel(GPT(GPTConfig(**state["model_config"])), state["temperature"])
        reward_model.load_state_dict(state["state_dict"])
    except Exception as e:  # unpickling, missing keys and shapes all land here
        raise runs.UserError(f"reward model {path} is corrupt or not a reward model "
                             f"({type(e).__name__})") from None
    body = reward_model.body.cfg
    runs.require(fits is None or (body.vocab_size == fits.cfg.vocab_size
                                  and body.max_seq_len >= fits.cfg.max_seq_len),
                 f"reward model {path} was built for another model (vocab {body.vocab_size}, "
                 f"{body.max_seq_len} positions)")
    reward_model.norm = tuple(state["norm"])
    return reward_model.to(device).eval().requires_grad_(False)
