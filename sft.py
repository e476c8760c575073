"""Supervised fine-tuning (SFT) of a tiny GPT, from random initialisation, on demonstrations of
3-digit addition with a carry scratchpad. Its checkpoint is where grpo.py, dpo.py and ppo.py start.

Objective (the lecture's negative log-likelihood of the demonstration, response tokens only):

    L(theta) = - E_{(q, o) ~ D} [ sum_{t in o} log pi_theta(o_t | q, o_<t) ]

Variant: CS336's `sft_microbatch_train_step` reduction. Each sequence's loss is the sum of its
response-token log-probs divided by `normalize_constant` (1 by default), averaged over the
micro-batch, then divided by the gradient-accumulation steps, so k micro-batches give the
gradient of one batch k times larger. Prompt tokens are never a target. Departures from a
real cold-start SFT: the model starts from scratch (no pretraining), and demonstrations come from
an infinite generator rather than a fixed data set, so there is no epoch and no overfitting.

Run:   python sft.py                (time and result: README, Quick start)
       python sft.py --steps 1000   the same, trained to near-perfect accuracy
The default is deliberately short of perfect, like a cold-start SFT, so that RL has headroom.
Task knobs (off by default) for the experiments: --easy_digits 2 --hard_fraction 0.05 (easy and
hard problems, the kind visible in the prompt), --direct_fraction 0.5 (answers with an empty
scratchpad), --abstain_fraction 0.3 (the "?" abstention), --verbose 0.4 --verbose_max 16
(scratchpads padded with a few empty steps, at most 16: length that buys nothing).
Pre-training is this file's loss on another text (off by default): --corpus traces reads plain
documents, the demonstrations with their tags written as plain characters, every token a target
(no prompt mask: plain text has no prompt); --corpus mixed --mixed_fraction 0.1 puts formatted
demonstrations among them. --init_checkpoint starts from a trained model (SFT after
pre-training); --n_demonstrations N reads a fixed set of N documents, epoch after epoch.
Outputs: out/sft/{metrics.csv, curves.png, model.pt, summary.json}. `python sft.py -h` lists
every flag.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch

import checks
import runs
from evaluation import evaluate
from toy_model import (GPT, GPTConfig, get_response_log_probs, masked_mean, masked_normalize,
                       tokenize_prompt_and_output)

CORPORA = ("demonstrations", "traces", "mixed")


@dataclass
class Config:
    # --- task ---
    digits: int = 3  # operand length: 3 means a + b with a, b in [0, 999]
    n_test: int = 500  # held-out problems for evaluation, never trained on
    abstain_fraction: float = 0.0  # share of demonstrations replaced by the "?" abstention
    direct_fraction: float = 0.0  # share answered directly, with an empty scratchpad, at random
    verbose: float = 0.0  # scratchpads end with k empty steps, P(k) ~ verbose^k: length to buy
    verbose_max: int = 0  # ... k at most this (the task's length budget grows by as much)
    verbose_fixed: bool = False  # ... k is verbose_max with chance verbose, else 0 (no geometric)
    easy_digits: int | None = None  # if set, "easy" problems have operands below 10^easy_digits
    hard_fraction: float = 0.5  # with easy_digits: share of full-width "hard" training problems
    # --- data ---
    corpus: Literal[CORPORA] = "demonstrations"  # SFT's, plain text (pre-training) or a mix
    mixed_fraction: float = 0.1  # corpus mixed: share of formatted demonstrations among traces
    n_demonstrations: int | None = None  # a fixed set of N documents, cycled; None: fresh ones
    init_checkpoint: str | None = None  # start from this model (a pre-trained one); None: random
    # --- model ---
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    d_model: int = 128  # width of the residual stream
    dropout: float = 0.0  # off: RL needs the ratio pi_theta / pi_old to be exactly 1 on-policy
    # --- optimisation ---
    steps: int = 160  # optimizer steps, also the length of the lr schedule; short of perfect
    batch_size: int = 64  # demonstrations per optimizer step
    gradient_accumulation_steps: int = 1  # micro-batches per step (batch_size must divide)
    normalize_constant: float = 1.0  # each sequence's summed NLL is divided by this (CS336)
    lr: float = 1e-3  # AdamW peak learning rate
    warmup_steps: int = 50  # linear warm-up from 0 to lr, then cosine decay to lr / 10
    weight_decay: float = 0.01  # AdamW decoupled weight decay on matrices
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay
    max_grad_norm: float = 1.0  # clip the global gradient norm to this
    # --- run ---
    seed: int = 0  # seeds initialisation and the training problems
    device: str = "auto"  # auto: cuda if there is one, else cpu (mps only when named)
    eval_every: int = 50  # held-out greedy evaluation every N steps
    log_every: int = 10  # print a console line every N steps (and on every evaluation)
    samples_every: int = 100  # print a few held-out completions every N steps
    out_dir: str = "out/sft"  # metrics.csv, curves.png, model.pt, summary.json go here
    overwrite: bool = False  # replace a finished run's outputs in out_dir (else refuse)
    resume: bool = False  # continue the stopped run in out_dir from its last evaluation

    def __post_init__(self):
        checks.check_sft(self)  # every bad value exits 2 with one line


def demonstrations(problems, abstain_fraction, rng, direct_fraction=0.0, verbose=0.0,
                   verbose_max=0, verbose_fixed=False) -> list[str]:
    """The SFT targets: each problem's scratchpad demonstration, or, with probability
    abstain_fraction, the abstention "?", or, with probability direct_fraction, the direct answer
    (empty scratchpad). The choice is a coin flip, not a judgement of what the model can do: a
    demonstrator cannot know that. With `verbose` > 0, a scratchpad ends with k empty steps, k
    geometric (P(k) = (1 - verbose) verbose^k) and at most verbose_max: longer, and no more right;
    with verbose_fixed, k is verbose_max with probability `verbose`, else 0: every padded
    demonstration equally likely, so a likelihood prices padding once, not per step.
    With every knob at 0 nothing is drawn from rng, else one draw per knob that is on."""
    if abstain_fraction == 0 and direct_fraction == 0 and verbose == 0:
        return [p.demonstration for p in problems]
    targets = []
    for p in problems:
        u = rng.random() if abstain_fraction or direct_fraction else 1.0
        if verbose_fixed:
            k = verbose_max if rng.random() < verbose else 0
        else:
            k = min(int(rng.geometric(1 - verbose)) - 1, verbose_max) if verbose else 0
        targets.append(p.abstention if u < abstain_fraction else
                       p.direct if u < abstain_fraction + direct_fraction else p.verbose(k))
    return targets


def plain_document(problem) -> str:
    """Pre-training text: the demonstration's knowledge without its format, each tag written as a
    plain character (<think> and </think> as ",", <answer> as "=", </answer> dropped), so that
    every step sits at the position it holds in the demonstration (the model's positions are
    learnt: a step one place later is a new thing to learn):
    "357+068=,7+8+0=15,5+6+1=12,3+0+1=04,=425<|endoftext|>"."""
    return (problem.demonstration.replace("<think>", ",").replace("</think>", ",")
            .replace("<answer>", "=").replace("</answer>", ""))


def corpus_texts(problems, cfg, rng) -> tuple[list[str], list[str]]:
    """(prompts, targets) of a batch; the loss reads the targets only. SFT (corpus
    demonstrations): the problem's prompt, then its demonstration. Pre-training (the others): no
    prompt, the whole document is the target, as plain text is read. corpus mixed: each document
    is a formatted demonstration (prompt included) with probability mixed_fraction, else a
    trace. Draws from rng only where a knob asks for a coin flip."""
    if cfg.corpus == "demonstrations":
        return [p.prompt for p in problems], demonstrations(
            problems, cfg.abstain_fraction, rng, cfg.direct_fraction, cfg.verbose, cfg.verbose_max,
            cfg.verbose_fixed)
    if cfg.corpus == "mixed":
        formatted = (rng.random(len(problems)) < cfg.mixed_fraction).tolist()
        texts = [p.prompt + (p.demonstration if f else plain_document(p))
                 for p, f in zip(problems, formatted)]
    else:
        texts = [p.prompt + plain_document(p) for p in problems]
    return [""] * len(problems), texts


def sft_microbatch_train_step(policy_log_probs, response_mask, gradient_accumulation_steps,
                              normalize_constant=1.0):
    """One micro-batch of SFT: backward on the scaled negative log-likelihood.

    policy_log_probs, response_mask: (B, T). Per sequence, the masked sum of -log p divided by
    normalize_constant; then the mean over the batch; then divided by the accumulation steps.
    Returns (loss, metadata) where loss is the scaled value that was backpropagated."""
    per_sequence_nll = -masked_normalize(policy_log_probs, response_mask, dim=-1,
                                         normalize_constant=normalize_constant)  # (B,)
    loss = per_sequence_nll.mean() / gradient_accumulation_steps
    loss.backward()
    return loss, {"per_sequence_nll": per_sequence_nll.detach()}


def train(cfg: Config) -> dict:
    """Train, evaluate, save. Returns the summary that is also written to summary.json."""
    run = runs.Run(cfg)  # checks the output folder, seeds, builds the task
    task, tokenizer, device, rng = run.task, run.tokenizer, run.device, run.rng
    if cfg.init_checkpoint is None:  # random weights (GPT-2 initialisation)
        model = GPT(GPTConfig(vocab_size=tokenizer.n_vocab, max_seq_len=task.max_seq_len,
                              n_layer=cfg.n_layer, n_head=cfg.n_head, d_model=cfg.d_model,
                              dropout=cfg.dropout)).to(device)
    else:  # a trained model, e.g. one pre-trained with --corpus traces
        model = load_start(cfg, task, device)
    fixed = None  # with n_demonstrations: (prompts, targets) of a fixed set, drawn once
    if cfg.n_demonstrations is not None:
        fixed = corpus_texts(task.sample(cfg.n_demonstrations, rng), cfg, rng)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # no weight decay on biases and norms
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    micro_size = cfg.batch_size // cfg.gradient_accumulation_steps
    n_params = sum(p.numel() for p in model.parameters())
    run.start(f"SFT on {cfg.digits}-digit addition | {n_params:,} parameters | {device} | "
              f"{cfg.steps} steps x {cfg.batch_size} demonstrations",
              evaluate(model, tokenizer, task.test, task.max_new_tokens),
              model=model, optimizer=optimizer)
    for step in run.steps():  # 1 .. cfg.steps; Ctrl-C ends the loop after a whole step
        # warm-up from 0 over warmup_steps, then cosine to lr / 10 at the last step
        lr = runs.set_lr(optimizer, runs.lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps))
        # 1. A batch of documents, never from the held-out set: fresh ones, or the fixed set's
        # next ones (each epoch in a new order).
        if fixed is None:
            prompts, targets = corpus_texts(task.sample(cfg.batch_size, rng), cfg, rng)
        else:
            queue = run.saved.setdefault("queue", [])
            while len(queue) < cfg.batch_size:
                queue += rng.permutation(cfg.n_demonstrations).tolist()
            batch, run.saved["queue"] = queue[:cfg.batch_size], queue[cfg.batch_size:]
            prompts, targets = [fixed[0][i] for i in batch], [fixed[1][i] for i in batch]
        nll_sum, n_tokens, entropy_sum = 0.0, 0, 0.0
        # 2. Gradient accumulation over micro-batches; each backward adds 1/k of the gradient.
        for i in range(0, cfg.batch_size, micro_size):
            batch = tokenize_prompt_and_output(prompts[i:i + micro_size],
                                               targets[i:i + micro_size], tokenizer)
            input_ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
            response_mask = batch["response_mask"].to(device)  # (B, T)
            out = get_response_log_probs(model, input_ids, labels, return_token_entropy=True)
            sft_microbatch_train_step(out["log_probs"], response_mask,
                                      cfg.gradient_accumulation_steps, cfg.normalize_constant)
            nll_sum -= (out["log_probs"].detach() * response_mask).sum().item()
            n_tokens += response_mask.sum().item()
            entropy_sum += masked_mean(out["token_entropy"], response_mask).item() * micro_size
        # 3. Clip and step.
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm).item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        # 4. Log: per-token NLL (the loss without the CS336 scaling), entropy, grad norm.
        row = {"step": step, "nll_per_token": nll_sum / n_tokens,
               "entropy": entropy_sum / cfg.batch_size, "grad_norm": grad_norm, "lr": lr}
        is_eval = step % cfg.eval_every == 0 or step == cfg.steps
        run.log(row, ["nll_per_token", "entropy", "grad_norm"]
                + (["eval_abstain_rate"] if cfg.abstain_fraction > 0 else []),
                evaluate(model, tokenizer, task.test, task.max_new_tokens) if is_eval else None)
        if step % cfg.samples_every == 0:
            runs.log_generations(run.samples, title=f"held-out samples at step {step}")

    # 5. The end of the run: held-out evaluation, summary, curves, checkpoint.
    return run.finish(model, "sft", CURVES, f"SFT, {cfg.digits}-digit addition")


def load_start(cfg: Config, task, device) -> GPT:
    """--init_checkpoint's model, checked to be of this task and of the Config's sizes."""
    model, _ = runs.load_checkpoint(cfg.init_checkpoint, digits=cfg.digits, device=device)
    sizes = ("n_layer", "n_head", "d_model", "dropout")
    runs.require(all(getattr(model.cfg, k) == getattr(cfg, k) for k in sizes),
                 f"--init_checkpoint {cfg.init_checkpoint} is a model of other sizes: "
                 + ", ".join(f"--{k} {getattr(model.cfg, k)}" for k in sizes))
    runs.require(model.cfg.max_seq_len >= task.max_seq_len,
                 f"--init_checkpoint {cfg.init_checkpoint} holds {model.cfg.max_seq_len} "
                 f"positions; this task needs {task.max_seq_len}")
    return model


def train_if_missing(cfg) -> None:
    """The RL scripts start from cfg.sft_checkpoint; if it is the default one (out/sft/model.pt)
    and does not exist yet, train it first with this file's defaults. Any other missing path is
    an error."""
    default = os.path.join(Config.out_dir, "model.pt")
    runs.require(os.path.exists(cfg.sft_checkpoint) or cfg.sft_checkpoint == default,
                 f"checkpoint {cfg.sft_checkpoint} not found (only the default {default} is "
                 f"trained when missing)")
    if not os.path.exists(cfg.sft_checkpoint):
        print(f"no SFT checkpoint at {cfg.sft_checkpoint}: training one first with sft.py's "
              f"defaults")
        train(Config(digits=cfg.digits, device=cfg.device))


CURVES = [  # curves.png: (panel title, metrics.csv columns)
    ("training NLL per response token", ["nll_per_token"]),
    ("held-out accuracy and format", ["eval_accuracy", "eval_format_rate", "eval_eos_rate"]),
    ("token entropy (nats)", ["entropy", "eval_entropy"]),
    ("gradient norm (before clipping)", ["grad_norm"]),
    ("held-out response length", ["eval_response_len_correct", "eval_response_len_incorrect"]),
    ("learning rate", ["lr"]),
]

if __name__ == "__main__":
    runs.run_script(train, Config, __doc__)
