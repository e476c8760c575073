"""Direct Preference Optimization (DPO) of the SFT model on an offline preference set built once
from its own samples: for each training prompt, sample k completions, judge them with reward_fn,
and pair a correct one (chosen, y_w) with a wrong one (rejected, y_l).

Objective (the lecture's DPO loss: a Bradley-Terry model whose reward is the log-ratio to the
frozen SFT reference, r(x, y) = beta log pi_theta(y|x) / pi_ref(y|x)):

    L(theta) = - E_{(x, y_w, y_l) ~ D} [ log sigma( beta log pi_theta(y_w|x)/pi_ref(y_w|x)
                                                  - beta log pi_theta(y_l|x)/pi_ref(y_l|x) ) ]
             + lambda * E [ - log pi_theta(y_w|x) / |y_w| ]          (RPO's NLL term, weight lambda)

log pi(y|x) is the sum of the response tokens' log-probs; prompt tokens never count. At the start
pi_theta = pi_ref, so every implicit reward is 0: the first sigmoid or robust loss is
ln 2 = 0.6931 (plus lambda times the chosen responses' NLL).

Default: sigmoid DPO, beta 0.1, plus the NLL term with weight 1 (RPO, Pang et al. 2024); the other
loss types default to weight 0, their papers' pure losses (`--nll_weight` sets any). Departures
from the DPO paper: the preference set is the policy's own samples (temperature 0.7) judged by a
verifier, not human labels; the NLL term is on by default because without it both log-probs fall
(DPO only needs their *difference* to grow) and greedy accuracy collapses (below); one pair per
prompt, the rejected one formatted where possible; AdamW with cosine learning-rate decay.
Variants (--loss_type; where TRL's DPOTrainer has one, the same formula, on summed log-probs):
sigmoid with --label_smoothing eps is conservative DPO (cDPO, not in TRL's sigmoid); robust is the
unbiased robust DPO of Chowdhury et al. 2024 (eps < 0.5); ipo (Azar et al. 2023) regresses the
log-ratio margin onto 1/(2 beta) (TRL averages IPO's log-probs over tokens); hinge is TRL's max(0,
1 - beta h) on the log-ratio margin h (SLiC-HF's hinge, which uses the policy's log-probs without a
reference); simpo (Meng et al. 2024) has no reference, divides each log-prob by the response length
and asks for a reward margin gamma (its paper uses beta 2-2.5 and gamma about beta / 2: --loss_type
simpo --beta 2 --simpo_gamma 1; not tuned here).

Iterative (online) DPO, --rebuild_pairs_every N: every N steps the training pairs are sampled
anew from the policy as it is then (n_prompts fresh prompts each time), the reference staying
the SFT model (Xiong et al. 2024; Guo et al. 2024's online DPO). --fresh_pair_prompts P scores
the implicit reward, at every evaluation, on pairs sampled then from the policy on P held-out
prompts: how stale the pairs it learnt from have become.

Run:   python dpo.py                 (time and result: README, Quick start)
       python dpo.py --nll_weight 0  the paper's pure DPO: both log-probs fall, and so does accuracy
Needs out/sft/model.pt (`python sft.py`; trained automatically if missing).
Outputs: out/dpo/{metrics.csv, curves.png, model.pt, summary.json}. `python dpo.py -h` lists
every flag.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

import checks
import runs
import sft
from evaluation import evaluate
from toy_model import (encode_prompts, generate, get_response_log_probs, masked_normalize,
                       reward_fn, tokenize_prompt_and_output)


@dataclass
class Config:
    # --- task ---
    digits: int = 3  # operand length; must match the SFT checkpoint
    n_test: int = 500  # held-out problems: greedy task accuracy and the held-out preference pairs
    # --- preference data ---
    sft_checkpoint: str = "out/sft/model.pt"  # policy and frozen reference start here
    n_prompts: int = 2048  # training prompts, sampled once before training
    samples_per_prompt: int = 8  # k completions per prompt, from which one pair is made
    temperature: float = 0.7  # sampling temperature (at 1.0 too few samples are right: few pairs)
    rebuild_pairs_every: int | None = None  # iterative DPO: new pairs from the policy every N steps
    fresh_pair_prompts: int = 0  # at evaluations: pairs sampled now on this many held-out prompts
    # --- algorithm ---
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "simpo"] = "sigmoid"  # preference loss
    beta: float = 0.1  # strength of the implicit KL to the reference (SimPO: reward scale)
    label_smoothing: float = 0.0  # eps, assumed share of flipped labels (sigmoid: cDPO; robust)
    simpo_gamma: float = 1.0  # SimPO's target reward margin gamma
    nll_weight: float | None = None  # lambda, the chosen response's NLL (RPO); None: 1 if sigmoid
    # --- optimisation ---
    steps: int = 200  # optimizer steps (epochs = steps * batch_size / pairs); lr schedule length
    batch_size: int = 64  # preference pairs per optimizer step
    lr: float = 1e-4  # AdamW peak learning rate (a prototype without the NLL term collapsed here)
    warmup_steps: int = 20  # linear warm-up from 0 to lr, then cosine decay to lr / 10
    weight_decay: float = 0.0  # AdamW weight decay on matrices; off: it pulls away from pi_ref
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay
    max_grad_norm: float = 1.0  # clip the global gradient norm to this
    # --- run ---
    seed: int = 0  # seeds sampling, pairing and batch order
    device: str = "auto"  # auto: cuda if there is one, else cpu (mps only when named)
    eval_every: int = 50  # held-out preference and task accuracy every N steps
    log_every: int = 20  # print a console line every N steps (and on every evaluation)
    samples_every: int = 200  # print a few held-out completions every N steps
    out_dir: str = "out/dpo"  # metrics.csv, curves.png, model.pt, summary.json go here
    overwrite: bool = False  # replace a finished run's outputs in out_dir (else refuse)
    resume: bool = False  # continue the stopped run in out_dir from its last evaluation

    def __post_init__(self):
        if self.nll_weight is None:  # RPO's NLL term with sigmoid DPO, the pure loss otherwise
            self.nll_weight = 1.0 if self.loss_type == "sigmoid" else 0.0
        checks.check_dpo(self)  # every bad value exits 2 with one line


def build_preference_pairs(model, tokenizer, problems, k, temperature, max_new_tokens, rng,
                           prompts_per_batch=128):
    """Sample k completions per prompt and pair one correct (chosen) with one wrong (rejected).

    The rejected one is a formatted-but-wrong completion when there is one: it differs from the
    chosen one in the arithmetic only, the mistake we want to remove (the SFT model's format is
    already ~100%). Prompts whose k samples are all right or all wrong give no pair. Returns
    (pairs, stats); a pair is {"prompt", "chosen", "rejected", "answer"}."""
    device = next(model.parameters()).device
    pairs, all_right, all_wrong, n_correct = [], 0, 0, 0
    for i in range(0, len(problems), prompts_per_batch):
        chunk = problems[i:i + prompts_per_batch]
        prompt_ids = encode_prompts(tokenizer, [p.prompt for p in chunk], device)  # (N, P)
        ids, mask = generate(model, prompt_ids, max_new_tokens, tokenizer.eos_id, tokenizer.pad_id,
                             num_samples=k, temperature=temperature)  # (N * k, T), prefill once
        lengths = mask.sum(1).tolist()
        for j, p in enumerate(chunk):
            texts = [tokenizer.decode(ids[j * k + s, :lengths[j * k + s]].tolist())
                     for s in range(k)]
            rewards = [reward_fn(t, p.answer) for t in texts]
            right = [t for t, r in zip(texts, rewards) if r["reward"] == 1]
            wrong = [t for t, r in zip(texts, rewards) if r["reward"] == 0]
            formatted_wrong = [t for t, r in zip(texts, rewards)
                               if r["reward"] == 0 and r["format_reward"] == 1]
            n_correct += len(right)
            if not wrong:
                all_right += 1
            elif not right:
                all_wrong += 1
            else:
                rejected_pool = formatted_wrong or wrong
                pairs.append({"prompt": p.prompt, "answer": p.answer,
                              "chosen": right[rng.integers(len(right))],
                              "rejected": rejected_pool[rng.integers(len(rejected_pool))]})
    stats = {"prompts": len(problems), "pairs": len(pairs), "skipped_all_correct": all_right,
             "skipped_all_wrong": all_wrong, "sample_accuracy": n_correct / (len(problems) * k),
             "rejected_formatted": sum(reward_fn(q["rejected"], q["answer"])["format_reward"]
                                       for q in pairs) / max(1, len(pairs))}
    return pairs, stats


def tokenize_pairs(pairs, tokenizer, device):
    """All pairs as one padded batch: rows 0..N-1 chosen, rows N..2N-1 rejected, each (2N, T)."""
    prompts = [q["prompt"] for q in pairs]
    batch = tokenize_prompt_and_output(prompts + prompts, [q["chosen"] for q in pairs] +
                                       [q["rejected"] for q in pairs], tokenizer)
    return {k: v.to(device) for k, v in batch.items()}


def sequence_log_probs(model, batch):
    """Sum of the response tokens' log-probs, and the response lengths: two (B,) tensors."""
    out = get_response_log_probs(model, batch["input_ids"], batch["labels"])
    token_log_probs = out["log_probs"]  # (B, T)
    mask = batch["response_mask"].float()  # (B, T): 0 on prompt and padding positions
    return masked_normalize(token_log_probs, mask, dim=-1), mask.sum(-1)


@torch.inference_mode()
def all_sequence_log_probs(model, data, batch_size=512):
    """sequence_log_probs over every row of a tokenized pair set, in chunks: (2N,)."""
    was_training = model.training
    model.eval()
    out = [sequence_log_probs(model, {k: v[i:i + batch_size] for k, v in data.items()})[0]
           for i in range(0, data["input_ids"].shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out)  # an inference tensor: fine as a constant in the loss, never saved


def preference_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                    ref_rejected_logps, loss_type="sigmoid", beta=0.1, label_smoothing=0.0,
                    gamma=0.0, chosen_lengths=None, rejected_lengths=None):
    """Per-pair preference losses and implicit rewards, all (B,): (losses, chosen_rewards,
    rejected_rewards).

    h = log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l) is the log-ratio margin; the implicit
    rewards are beta times each log-ratio, so their difference (rewards/margins) is beta * h.
    SimPO ignores the reference: its rewards are beta times the length-normalised log-probs."""
    if loss_type == "simpo":
        chosen_rewards = beta * policy_chosen_logps / chosen_lengths
        rejected_rewards = beta * policy_rejected_logps / rejected_lengths
        losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
        return losses, chosen_rewards.detach(), rejected_rewards.detach()
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    h = chosen_logratios - rejected_logratios  # (B,)
    eps = label_smoothing
    if loss_type == "sigmoid":  # DPO; eps > 0 is cDPO: the BCE against soft label 1 - eps
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif loss_type == "robust":  # unbiased under a flip rate eps: its expectation is the clean loss
        losses = ((-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h))
                  / (1 - 2 * eps))
    elif loss_type == "ipo":  # squared loss: a finite target margin, so no push to infinity
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":  # TRL's: SLiC's hinge on h, no gradient once beta * h passes 1
        losses = torch.relu(1 - beta * h)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def compute_per_instance_dpo_loss(lm, lm_ref, tokenizer, beta, prompt, response_chosen,
                                  response_rejected):
    """CS336's adapter: the sigmoid DPO loss of one (prompt, chosen, rejected) triple, a scalar."""
    device = next(lm.parameters()).device
    batch = {k: v.to(device) for k, v in tokenize_prompt_and_output(
        [prompt, prompt], [response_chosen, response_rejected], tokenizer).items()}
    logps, _ = sequence_log_probs(lm, batch)  # (2,): chosen, rejected
    with torch.no_grad():  # the reference is frozen: no gradient reaches it
        ref_logps, _ = sequence_log_probs(lm_ref, batch)
    losses, _, _ = preference_loss(logps[:1], logps[1:], ref_logps[:1], ref_logps[1:], "sigmoid",
                                   beta)
    return losses[0]


def pair_accuracy(chosen_rewards, rejected_rewards) -> float:
    """Share of pairs whose implicit reward ranks chosen above rejected, a tie counting half: at
    the start every reward is 0, and a coin flip is the fair score (TRL counts a tie as wrong)."""
    wins = (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards)
    return wins.mean().item()


@torch.inference_mode()
def preference_accuracy(model, data, ref_logps, cfg) -> float:
    """pair_accuracy over a tokenized pair set (eval_preference_accuracy)."""
    logps = all_sequence_log_probs(model, data)
    n = logps.shape[0] // 2
    lengths = data["response_mask"].sum(-1).float()
    ref = ref_logps if ref_logps is not None else torch.zeros_like(logps)
    _, chosen_rewards, rejected_rewards = preference_loss(
        logps[:n], logps[n:], ref[:n], ref[n:], cfg.loss_type, cfg.beta, cfg.label_smoothing,
        cfg.simpo_gamma, lengths[:n], lengths[n:])
    return pair_accuracy(chosen_rewards, rejected_rewards)


def fresh_pair_accuracy(policy, reference, tokenizer, problems, max_new_tokens, cfg) -> dict:
    """The implicit reward's accuracy on pairs sampled from the policy as it is now, on held-out
    prompts: how well the reward it learnt ranks its own current answers (offline, its pairs come
    from the SFT model and go stale as it moves away). Seeded and isolated: the run's random
    state is the same afterwards as before."""
    device = next(policy.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        pairs, stats = build_preference_pairs(policy, tokenizer, problems, cfg.samples_per_prompt,
                                              cfg.temperature, max_new_tokens,
                                              np.random.default_rng(cfg.seed))
    if not pairs:  # every group all right or all wrong: nothing to rank
        return {"fresh_preference_accuracy": None, "fresh_pairs": 0}
    data = tokenize_pairs(pairs, tokenizer, device)
    ref_logps = all_sequence_log_probs(reference, data) if reference is not None else None
    return {"fresh_preference_accuracy": preference_accuracy(policy, data, ref_logps, cfg),
            "fresh_pairs": len(pairs), "fresh_sample_accuracy": stats["sample_accuracy"]}


def train(cfg: Config) -> dict:
    """Build the preference set, train, evaluate, save. Returns the summary also in summary.json."""
    run = runs.Run(cfg, sft.train_if_missing)  # checks out_dir, makes out/sft if missing, seeds
    policy = run.load_policy()  # eval mode: pi_theta = pi_ref, the first loss is ln 2
    reference = copy.deepcopy(policy).requires_grad_(False)  # pi_ref: frozen SFT model
    task, tokenizer, device, rng = run.task, run.tokenizer, run.device, run.rng

    # The preference sets, sampled from the SFT model (= the reference). Offline DPO trains on
    # this one set throughout; iterative DPO replaces the training set every rebuild_pairs_every
    # steps with pairs sampled from the policy as it is then (the reference stays the SFT model).
    train_pairs, train_stats = build_preference_pairs(
        reference, tokenizer, task.sample(cfg.n_prompts, rng), cfg.samples_per_prompt,
        cfg.temperature, task.max_new_tokens, rng)
    test_pairs, test_stats = build_preference_pairs(
        reference, tokenizer, task.test, cfg.samples_per_prompt, cfg.temperature,
        task.max_new_tokens, rng)
    runs.require(len(train_pairs) >= cfg.batch_size and test_pairs,
                 f"only {len(train_pairs)} training and {len(test_pairs)} held-out pairs for "
                 f"--batch_size {cfg.batch_size}: raise --n_prompts or --samples_per_prompt")
    train_data = tokenize_pairs(train_pairs, tokenizer, device)  # each (2N, T)
    test_data = tokenize_pairs(test_pairs, tokenizer, device)
    n_pairs = len(train_pairs)
    # Reference log-probs never change, so compute them once (per pair set). SimPO has none.
    use_ref = cfg.loss_type != "simpo"
    ref_logps = all_sequence_log_probs(reference, train_data) if use_ref else None  # (2N,)
    test_ref_logps = all_sequence_log_probs(reference, test_data) if use_ref else None
    build_seconds = time.time() - run.t0

    def held_out():  # greedy task accuracy and the implicit reward's accuracy on held-out pairs
        metrics, samples = evaluate(policy, tokenizer, task.test, task.max_new_tokens)
        metrics["preference_accuracy"] = preference_accuracy(policy, test_data, test_ref_logps,
                                                             cfg)
        if cfg.fresh_pair_prompts:  # pairs of the policy's own samples now, never trained on
            metrics.update(fresh_pair_accuracy(policy, reference if use_ref else None,
                                               tokenizer, task.test[:cfg.fresh_pair_prompts],
                                               task.max_new_tokens, cfg))
        return metrics, samples

    decay = [p for p in policy.parameters() if p.dim() >= 2]  # no weight decay on biases and norms
    no_decay = [p for p in policy.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    run.start(f"DPO ({cfg.loss_type}, beta {cfg.beta}, NLL weight {cfg.nll_weight}) | {device} | "
              f"{n_pairs} pairs from {cfg.n_prompts} prompts "
              f"({train_stats['skipped_all_correct']} all right, "
              f"{train_stats['skipped_all_wrong']} all wrong, skipped) | "
              f"{len(test_pairs)} held-out pairs | built in {build_seconds:.0f} s",
              held_out(), policy=policy, optimizer=optimizer)
    B, per_epoch = cfg.batch_size, n_pairs // cfg.batch_size  # the last partial batch is dropped
    every = cfg.rebuild_pairs_every or cfg.steps + 1  # offline: one set for the whole run
    if cfg.rebuild_pairs_every:  # the pairs in use and the responses sampled so far, saved
        run.saved.setdefault("pairs", train_pairs)
        run.saved.setdefault("sampled_responses", cfg.n_prompts * cfg.samples_per_prompt)
    for step in run.steps():  # 1 .. cfg.steps; Ctrl-C ends the loop after a whole step
        if (step - 1) % every == 0 and step > 1:  # iterative DPO: pairs from the policy now
            new_pairs, _ = build_preference_pairs(
                policy, tokenizer, task.sample(cfg.n_prompts, rng), cfg.samples_per_prompt,
                cfg.temperature, task.max_new_tokens, rng)
            run.saved["sampled_responses"] += cfg.n_prompts * cfg.samples_per_prompt
            if len(new_pairs) >= B:  # else (most groups all right or all wrong) keep the old
                run.saved["pairs"] = new_pairs
        if cfg.rebuild_pairs_every and run.saved["pairs"] is not train_pairs:  # a new set (or,
            train_pairs = run.saved["pairs"]  # after --resume, the last one saved)
            train_data = tokenize_pairs(train_pairs, tokenizer, device)
            ref_logps = all_sequence_log_probs(reference, train_data) if use_ref else None
            n_pairs, per_epoch = len(train_pairs), len(train_pairs) // B
        # Outer loop: epochs over the preference set, each in a new order (saved with the run's
        # state, so that a resumed run goes on with its epoch's order).
        i = (step - 1) % every % per_epoch * B  # this step's first pair in the epoch's order
        if i == 0:
            run.saved["order"] = torch.from_numpy(rng.permutation(n_pairs))
        # warm-up from 0 over warmup_steps, then cosine to lr / 10 at the last step
        lr = runs.set_lr(optimizer, runs.lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps))
        # 1. A minibatch of pairs: chosen and rejected rows go through one forward pass.
        idx = run.saved["order"].to(device)[i:i + B]  # (B,)
        rows = torch.cat([idx, idx + n_pairs])  # (2B,): chosen then rejected
        batch = {k: v[rows] for k, v in train_data.items()}
        logps, lengths = sequence_log_probs(policy, batch)  # (2B,) summed log-probs
        ref = ref_logps[rows] if use_ref else torch.zeros_like(logps)  # (2B,); SimPO: none
        # 2. The preference loss on the implicit rewards, plus the chosen response's NLL.
        losses, chosen_rewards, rejected_rewards = preference_loss(
            logps[:B], logps[B:], ref[:B], ref[B:], cfg.loss_type, cfg.beta,
            cfg.label_smoothing, cfg.simpo_gamma, lengths[:B], lengths[B:])
        nll = -(logps[:B] / lengths[:B]).mean()  # per-token NLL of the chosen responses
        loss = losses.mean() + cfg.nll_weight * nll
        # 3. Backward, clip, step.
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        # 4. Log with TRL's names; the rewards are those before this step's update.
        row = {"step": step, "epoch": step * B / n_pairs, "loss": losses.mean().item(),
               "nll": nll.item(), "rewards/chosen": chosen_rewards.mean().item(),
               "rewards/rejected": rejected_rewards.mean().item(),
               "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
               "rewards/accuracies": pair_accuracy(chosen_rewards, rejected_rewards),
               "logps/chosen": logps[:B].mean().item(),
               "logps/rejected": logps[B:].mean().item(),
               "grad_norm": grad_norm.item(), "lr": lr}
        if cfg.rebuild_pairs_every:  # the budget: responses sampled for training so far
            row.update(sampled_responses=run.saved["sampled_responses"], train_pairs=n_pairs)
        is_eval = step % cfg.eval_every == 0 or step == cfg.steps
        run.log(row, ["loss", "rewards/margins", "rewards/accuracies", "logps/chosen",
                      "logps/rejected", "nll", "eval_preference_accuracy",
                      "eval_fresh_preference_accuracy"],
                held_out() if is_eval else None)
        if step % cfg.samples_every == 0:
            runs.log_generations(run.samples, title=f"held-out samples at step {step}")

    # 5. The end of the run: held-out evaluation, summary, curves, checkpoint.
    summary = run.finish(
        policy, f"dpo-{cfg.loss_type}", CURVES,
        f"DPO ({cfg.loss_type}, NLL weight {cfg.nll_weight}), {cfg.digits} digits",
        {"epochs": run.rows[-1]["step"] * B / n_pairs, "train_pairs": n_pairs,
         **({"epochs": None, "sampled_responses": run.saved["sampled_responses"]}
            if cfg.rebuild_pairs_every else {}),  # iterative: the last set's pairs
         "heldout_pairs": len(test_pairs), "train_preference_set": train_stats,
         "heldout_preference_set": test_stats, "build_seconds": round(build_seconds, 2)},
        evaluate_now=held_out)  # (start_ and final_preference_accuracy come with the evaluations)
    return summary


CURVES = [  # curves.png: (panel title, metrics.csv columns)
    ("preference loss (without NLL)", ["loss"]),
    ("implicit rewards (beta * log-ratio)",
     ["rewards/chosen", "rewards/rejected", "rewards/margins"]),
    ("summed response log-probs", ["logps/chosen", "logps/rejected"]),
    ("preference accuracy", ["rewards/accuracies", "eval_preference_accuracy",
                             "eval_fresh_preference_accuracy"]),
    ("held-out task accuracy and format", ["eval_accuracy", "eval_format_rate"]),
    ("chosen NLL per token", ["nll"]),
    ("learning rate", ["lr"]),
]

if __name__ == "__main__":
    runs.run_script(train, Config, __doc__)
