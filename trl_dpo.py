"""DPO in TRL: dpo.py's preference set, held-out set and defaults, trained by TRL's DPOTrainer
from the same SFT checkpoint, exported to Hugging Face (export_hf.py).

What is the same as `python dpo.py`: the preference pairs (dpo.build_preference_pairs, with the
same seed and calls, so the very same pairs), the reference log-probs computed once, the held-out
task accuracy (toy_model.evaluate on the model imported back) and preference accuracy, and every
setting that TRL has, translated field by field in TO_TRL below. Our RPO term (--nll_weight) is
TRL's loss_type ["sigmoid", "sft"] with loss_weights [1, nll_weight]; TRL averages that NLL over
all chosen tokens of a batch, we per response and then over pairs (equal when chosen responses
have one length, nearly so here). What differs: the order of the pairs (Hugging Face's sampler,
not our permutation), and the warm-up that starts at lr 0 one step before ours. TRL's IPO averages
log-probs over tokens (ours sums); its sigmoid has no label smoothing (cDPO), and SimPO lives in
another trainer (CPOTrainer): those three are refused here.

Outputs as dpo.py's: out/trl_dpo/{metrics.csv, curves.png, model.pt, summary.json}, TRL's logged
names (rewards/margins, logps/chosen, ...) being ours already; the trained folder in out/trl_dpo/hf.

Run: python trl_dpo.py             (dpo.py's defaults; compare with out/dpo/summary.json)
     OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 trl_dpo.py --device cpu
                                   (data parallel: 2 processes, each with half of every batch)
Needs the extras: python3 -m pip install -r requirements-hf.txt
"""
from __future__ import annotations

import os
import shutil
import time
import types
from dataclasses import dataclass
from typing import Literal

import torch

import dpo
import export_hf
import runs
import sft
from evaluation import evaluate

D = dpo.Config  # our defaults, so that the two scripts cannot drift apart


@dataclass
class Config:
    # --- task ---
    digits: int = D.digits  # operand length; must match the SFT checkpoint
    n_test: int = D.n_test  # held-out problems: task accuracy and the held-out preference pairs
    # --- preference data ---
    sft_checkpoint: str = D.sft_checkpoint  # policy and frozen reference start here
    n_prompts: int = D.n_prompts  # training prompts, sampled once before training
    samples_per_prompt: int = D.samples_per_prompt  # k completions per prompt, one pair made
    temperature: float = D.temperature  # sampling temperature of the preference set
    # --- algorithm ---
    loss_type: Literal["sigmoid", "hinge", "robust"] = D.loss_type  # preference loss
    beta: float = D.beta  # strength of the implicit KL to the reference
    label_smoothing: float = D.label_smoothing  # robust: assumed share of flipped labels
    nll_weight: float | None = None  # chosen response's NLL (RPO); None: 1 if sigmoid, as dpo.py
    # --- optimisation ---
    steps: int = D.steps  # optimizer steps
    batch_size: int = D.batch_size  # preference pairs per optimizer step
    lr: float = D.lr  # AdamW peak learning rate
    warmup_steps: int = D.warmup_steps  # linear warm-up, then cosine decay to lr / 10
    weight_decay: float = D.weight_decay  # AdamW weight decay on matrices
    beta1: float = D.beta1  # AdamW first-moment decay
    beta2: float = D.beta2  # AdamW second-moment decay
    max_grad_norm: float = D.max_grad_norm  # clip the global gradient norm to this
    # --- run ---
    seed: int = D.seed  # seeds sampling and pairing (as dpo.py) and TRL's batch order
    device: str = "auto"  # auto: cuda if there is one, else cpu (mps only when named)
    eval_every: int = D.eval_every  # held-out preference and task accuracy every N steps
    log_every: int = D.log_every  # print a console line every N steps (and on every evaluation)
    out_dir: str = "out/trl_dpo"  # metrics.csv, curves.png, model.pt, summary.json, hf/
    overwrite: bool = False  # replace a finished run's outputs in out_dir (else refuse)

    def __post_init__(self):
        if self.nll_weight is None:  # as dpo.py: RPO's NLL with sigmoid, the pure loss otherwise
            self.nll_weight = 1.0 if self.loss_type == "sigmoid" else 0.0
        # every bad value exits 2 with one line: dpo.py's checks, and what TRL's sigmoid lacks
        shared = {k: getattr(self, k) for k in vars(self) if k in dpo.Config.__dataclass_fields__}
        dpo.Config(**{**shared, "out_dir": self.out_dir})  # dpo.py's checks and messages
        runs.require(self.label_smoothing == 0 or self.loss_type == "robust",
                     "TRL's sigmoid loss has no label smoothing (cDPO): use dpo.py, or "
                     "--loss_type robust")


# Our Config -> DPOConfig, field by field: (TRL's field, how our value becomes TRL's).
TO_TRL = {
    "beta": ("beta", None),
    "label_smoothing": ("label_smoothing", None),
    "steps": ("max_steps", None),
    "batch_size": ("per_device_train_batch_size", None),
    "lr": ("learning_rate", None),
    "warmup_steps": ("warmup_steps", None),
    "weight_decay": ("weight_decay", None),
    "beta1": ("adam_beta1", None),
    "beta2": ("adam_beta2", None),
    "max_grad_norm": ("max_grad_norm", None),
    "seed": ("seed", None),
}
FIXED = {"precompute_ref_log_probs": True,  # as dpo.py: the reference is scored once
         "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
         "dataloader_drop_last": True,  # every step sees batch_size pairs, as in dpo.py
         "bf16": False, "logging_steps": 1, "report_to": "none", "save_strategy": "no",
         "disable_tqdm": True, "model_init_kwargs": {"dtype": torch.float32}}
LOGGED = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
          "logps/chosen", "logps/rejected", "grad_norm"]  # TRL's names are ours


def dpo_config(cfg: Config, out_dir: str, processes: int = 1):
    """The DPOConfig of our Config: TO_TRL, FIXED, and RPO's NLL as a second loss. Its
    per_device_train_batch_size is per process: each of the `processes` takes an equal share."""
    from trl import DPOConfig
    fields = {theirs: (convert or (lambda v: v))(getattr(cfg, ours))
              for ours, (theirs, convert) in TO_TRL.items()}
    fields["per_device_train_batch_size"] //= processes
    losses = {"loss_type": [cfg.loss_type], "loss_weights": [1.0]}
    if cfg.nll_weight > 0:
        losses = {"loss_type": [cfg.loss_type, "sft"], "loss_weights": [1.0, cfg.nll_weight]}
    return DPOConfig(**fields, **FIXED, **losses, output_dir=out_dir,
                     use_cpu=runs.pick_device(cfg.device).type == "cpu")


def train(cfg: Config) -> dict:
    """Build dpo.py's preference set, train it with DPOTrainer, evaluate as dpo.py does, save.
    Under torchrun every process runs this; the main one alone builds the preference set (the
    others read it from disk), prints, evaluates and writes out_dir."""
    export_hf.require_hf("trl", "datasets", "accelerate")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    export_hf.quiet()  # in every process: no progress bars, no deprecation warnings
    from accelerate import PartialState
    from datasets import Dataset, load_from_disk
    from transformers import TrainerCallback
    from trl import DPOTrainer

    t0 = time.time()  # as dpo.py: wall_seconds includes building the preference set
    # The processes of this run: 1 under python, N under torchrun (gloo on CPUs, NCCL on GPUs).
    world = PartialState(cpu=runs.pick_device(cfg.device).type == "cpu")
    n, main = world.num_processes, world.is_main_process
    runs.require(cfg.batch_size % n == 0,
                 f"--batch_size {cfg.batch_size} does not split evenly over {n} processes")

    def make_start(c):  # the main process makes out/sft if missing, the others wait for it
        with world.main_process_first():
            sft.train_if_missing(c)

    device, rng, task, tokenizer = runs.setup(cfg, make_start)
    start, work = os.path.join(cfg.out_dir, "start"), os.path.join(cfg.out_dir, "trainer")
    if main:
        reference = runs.load_policy(cfg, device).requires_grad_(False)
        # dpo.py's preference sets: the same calls in the same order give the same pairs.
        train_pairs, train_stats = dpo.build_preference_pairs(
            reference, tokenizer, task.sample(cfg.n_prompts, rng), cfg.samples_per_prompt,
            cfg.temperature, task.max_new_tokens, rng)
        test_pairs, test_stats = dpo.build_preference_pairs(
            reference, tokenizer, task.test, cfg.samples_per_prompt, cfg.temperature,
            task.max_new_tokens, rng)
        runs.require(len(train_pairs) >= cfg.batch_size and test_pairs,
                     f"only {len(train_pairs)} training and {len(test_pairs)} held-out pairs for "
                     f"--batch_size {cfg.batch_size}: raise --n_prompts or --samples_per_prompt")
        test_data = dpo.tokenize_pairs(test_pairs, tokenizer, device)
        loss_cfg = types.SimpleNamespace(loss_type=cfg.loss_type, beta=cfg.beta, simpo_gamma=0.0,
                                         label_smoothing=cfg.label_smoothing)  # for its rewards
        test_ref_logps = dpo.all_sequence_log_probs(reference, test_data)
        export_hf.export(cfg.sft_checkpoint, start)
        Dataset.from_list([{k: q[k] for k in ("prompt", "chosen", "rejected")}
                           for q in train_pairs]).save_to_disk(os.path.join(work, "pairs"))
    world.wait_for_everyone()  # the others load the start model and the pairs once written
    # on disk, so that every process finds TRL's cache of the reference log-probs next to it
    dataset = load_from_disk(os.path.join(work, "pairs"))

    if main:
        log = runs.RunLog(cfg, f"DPO in TRL's DPOTrainer ({cfg.loss_type}, NLL weight "
                               f"{cfg.nll_weight}) | {device} | {len(dataset)} pairs | "
                               + (f"{n} processes, data parallel ({world.backend})" if n > 1
                                  else "1 process"), t0)
        metrics, samples = evaluate(reference, tokenizer, task.test, task.max_new_tokens)
        start_pref = dpo.preference_accuracy(reference, test_data, test_ref_logps, loss_cfg)
        log.start({**metrics, "preference_accuracy": start_pref}, samples)

    def evaluate_both(hf_model):  # dpo.py's evaluation, on the model imported back
        nonlocal samples
        model = export_hf.from_hf_model(hf_model).to(device)
        metrics, samples = evaluate(model, tokenizer, task.test, task.max_new_tokens)
        return {**metrics, "preference_accuracy": dpo.preference_accuracy(
            model, test_data, test_ref_logps, loss_cfg)}

    class OurLog(TrainerCallback):
        eval_metrics = None

        def on_step_end(self, args, state, control, model=None, **_):
            if state.global_step % cfg.eval_every == 0 or state.global_step == cfg.steps:
                self.eval_metrics = evaluate_both(model)

        def on_log(self, args, state, control, logs=None, **_):
            if "rewards/margins" not in (logs or {}):
                return  # the end-of-training summary line
            row = {"step": state.global_step, "lr": logs.get("learning_rate"),
                   **{k: logs[k] for k in LOGGED if k in logs}}
            if cfg.nll_weight == 0:  # else TRL's loss holds the NLL term, ours does not
                row["loss"] = logs.get("loss")
            log.step(row, ["rewards/margins", "rewards/accuracies", "logps/chosen",
                           "logps/rejected", "eval_preference_accuracy"], self.eval_metrics)
            self.eval_metrics = None

    args = dpo_config(cfg, work, n)
    trainer = DPOTrainer(model=start, args=args, train_dataset=dataset,
                         processing_class=export_hf.hf_tokenizer(),
                         callbacks=[OurLog()] if main else [])  # TRL's logs are global means
    export_hf.quiet(trainer)
    try:
        trainer.train()
    except KeyboardInterrupt:
        if main:
            log.was_interrupted = True
            log.eval_metrics = evaluate_both(trainer.model)
    trainer.save_model(os.path.join(cfg.out_dir, "hf"))  # every process calls it; main writes
    if not main:
        return {}
    shutil.rmtree(work, ignore_errors=True)  # the pairs on disk and TRL's checkpoints: not kept
    return log.finish(export_hf.from_hf_model(trainer.model), samples, f"trl-dpo-{cfg.loss_type}",
                      dpo.CURVES, f"DPO in TRL ({cfg.loss_type}, NLL weight {cfg.nll_weight}), "
                                  f"{cfg.digits} digits",
                      {"start_preference_accuracy": start_pref,
                       "final_preference_accuracy": log.eval_metrics["preference_accuracy"],
                       "train_pairs": len(train_pairs), "heldout_pairs": len(test_pairs),
                       "train_preference_set": train_stats, "heldout_preference_set": test_stats,
                       "world_size": n,
                       "trl_config": {k: v for k, v in args.to_dict().items()
                                      if k in {f for f, _ in TO_TRL.values()} | set(FIXED)
                                      | {"loss_type", "loss_weights"}}})


if __name__ == "__main__":
    runs.run_script(train, Config, __doc__)
