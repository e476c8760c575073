"""GRPO in TRL: grpo.py's task, prompts, held-out set, reward and defaults, trained by TRL's
GRPOTrainer from the same SFT checkpoint, exported to Hugging Face (export_hf.py).

What is the same as `python grpo.py`: the SFT start; the training prompts, drawn with the same
seed in the same order (TRL's shuffle is off); reward_fn on the response up to and including
end-of-text; the held-out set, scored by toy_model.evaluate on the model imported back after each
evaluation interval; and every setting that TRL has, translated field by field in TO_TRL below
(the docs' mapping table, as code). What differs: TRL samples with `transformers.generate`, not
our KV-cache sampler (same distribution, other random numbers), its warm-up starts at lr 0 one
step before ours, and it has no counterpart of --skip_zero_advantage (the same update, slower).

Outputs as grpo.py's: out/trl_grpo/{metrics.csv, curves.png, model.pt, summary.json}, metrics.csv
with our column names where TRL logs the same quantity (METRICS below), so the curves overlay;
the trained Hugging Face folder in out/trl_grpo/hf.

Run: python trl_grpo.py            (grpo.py's defaults; compare with out/grpo/summary.json)
     python trl_grpo.py --steps 5  (a few steps: does it run here?)
     OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 trl_grpo.py --device cpu
                                   (data parallel: 2 processes, each with half of every batch;
                                    --nproc_per_node N --device cuda on N GPUs; docs/trl.md)
Needs the extras: python3 -m pip install -r requirements-hf.txt
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Literal

import torch

import export_hf
import grpo
import runs
import sft
from evaluation import evaluate
from toy_model import reward_fn

D = grpo.Config  # our defaults, so that the two scripts cannot drift apart


@dataclass
class Config:
    # --- task ---
    digits: int = D.digits  # operand length: must match the SFT checkpoint
    n_test: int = D.n_test  # held-out problems for evaluation, never trained on
    sft_checkpoint: str = D.sft_checkpoint  # start (exported to out_dir/start; made if missing)
    # --- sampling ---
    group_size: int = D.group_size  # G: responses sampled per prompt
    rollout_batch_size: int = D.rollout_batch_size  # responses per rollout batch
    temperature: float = D.temperature  # sampling temperature; log-probs are scored at it
    max_new_tokens: int | None = D.max_new_tokens  # response budget; None is the task's
    # --- algorithm ---
    use_std_normalization: bool = D.use_std_normalization  # divide A by the group std
    length_normalization: Literal[grpo.LENGTH_NORMALIZATIONS] = D.length_normalization  # reduction
    cliprange: float = D.cliprange  # epsilon of the clip (low side)
    cliprange_high: float | None = D.cliprange_high  # upper epsilon; None: cliprange
    beta: float = D.beta  # weight of the k3 KL penalty to the reference
    ratio_level: Literal["token", "sequence"] = D.ratio_level  # sequence: GSPO
    # --- optimisation ---
    steps: int = D.steps  # rollout batches; one optimizer step each when on-policy
    epochs_per_rollout_batch: int = D.epochs_per_rollout_batch  # passes over each rollout batch
    train_batch_size: int = D.train_batch_size  # responses per optimizer step
    gradient_accumulation_steps: int = D.gradient_accumulation_steps  # micro-batches per step
    lr: float = D.lr  # AdamW peak learning rate after the warm-up
    warmup_steps: int = D.warmup_steps  # linear warm-up steps
    lr_schedule: Literal["constant", "cosine"] = D.lr_schedule  # after warm-up: cosine to lr / 10
    weight_decay: float = D.weight_decay  # AdamW decoupled weight decay
    beta1: float = D.beta1  # AdamW first-moment decay
    beta2: float = D.beta2  # AdamW second-moment decay
    max_grad_norm: float = D.max_grad_norm  # clip the global gradient norm to this
    # --- run ---
    seed: int = D.seed  # seeds the training problems and TRL's sampling
    device: str = "auto"  # auto: cuda if there is one, else cpu (mps only when named)
    use_vllm: bool = False  # sample with vLLM in the training process (a CUDA GPU, pip vllm)
    eval_every: int = D.eval_every  # held-out greedy evaluation every N steps
    log_every: int = D.log_every  # print a console line every N steps (and on every evaluation)
    out_dir: str = "out/trl_grpo"  # metrics.csv, curves.png, model.pt, summary.json, hf/
    overwrite: bool = False  # replace a finished run's outputs in out_dir (else refuse)

    def __post_init__(self):  # every bad value exits 2 with one line, as in grpo.py
        shared = {k: getattr(self, k) for k in vars(self) if k in grpo.Config.__dataclass_fields__}
        grpo.Config(**{**shared, "out_dir": self.out_dir})  # grpo.py's checks and messages
        runs.require(self.rollout_batch_size % self.train_batch_size == 0,
                     f"--rollout_batch_size {self.rollout_batch_size} must be a multiple of "
                     f"--train_batch_size {self.train_batch_size} (TRL's steps_per_generation)")


# Our Config -> GRPOConfig, field by field: (TRL's field, how our value becomes TRL's).
TO_TRL = {
    "group_size": ("num_generations", None),
    "rollout_batch_size": ("generation_batch_size", None),
    "temperature": ("temperature", None),
    "use_std_normalization": ("scale_rewards", lambda on: "group" if on else "none"),
    "length_normalization": ("loss_type", {"sequence_mean": "grpo", "constant": "dr_grpo",
                                           "token_mean": "dapo"}.get),
    "cliprange": ("epsilon", None),
    "cliprange_high": ("epsilon_high", None),
    "beta": ("beta", None),
    "ratio_level": ("importance_sampling_level", None),
    "epochs_per_rollout_batch": ("num_iterations", None),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", None),
    "lr": ("learning_rate", None),
    "warmup_steps": ("warmup_steps", None),
    "lr_schedule": ("lr_scheduler_type", {"constant": "constant_with_warmup",
                                          "cosine": "cosine_with_min_lr"}.get),
    "weight_decay": ("weight_decay", None),
    "beta1": ("adam_beta1", None),
    "beta2": ("adam_beta2", None),
    "max_grad_norm": ("max_grad_norm", None),
    "seed": ("seed", None),
    "use_vllm": ("use_vllm", None),  # vllm_mode "colocate": on the training GPU
}
# What has no field of ours: fixed so that TRL computes our objective on our hardware.
FIXED = {"top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0,  # plain sampling at temperature
         "use_bias_correction_kl": False,  # DeepSeekMath's k3, not the ratio-weighted one
         "mask_truncated_completions": False, "shuffle_dataset": False,  # grpo.py's order
         "bf16": False, "logging_steps": 1, "report_to": "none", "save_strategy": "no",
         "disable_dropout": True, "disable_tqdm": True,
         "model_init_kwargs": {"dtype": torch.float32}}
# TRL's logged names -> our metrics.csv columns (the quantities that both log)
METRICS = {"reward": "reward", "frac_reward_zero_std": "zero_spread_fraction",
           "completions/mean_length": "response_len", "entropy": "entropy", "kl": "kl_per_token",
           "clip_ratio/region_mean": "clip_fraction", "loss": "loss", "grad_norm": "grad_norm",
           "learning_rate": "lr"}


def grpo_config(cfg: Config, max_new_tokens: int, out_dir: str, processes: int = 1):
    """The GRPOConfig of our Config: TO_TRL, FIXED, and the sizes TRL counts differently. Its
    generation_batch_size is global, its per_device_train_batch_size per process: each of the
    `processes` takes an equal share of every micro-batch, so that the global sizes stay ours."""
    from trl import GRPOConfig
    fields = {theirs: (convert or (lambda v: v))(getattr(cfg, ours))
              for ours, (theirs, convert) in TO_TRL.items()}
    micro_batch = cfg.train_batch_size // (cfg.gradient_accumulation_steps * processes)
    optimizer_steps = (cfg.steps * cfg.epochs_per_rollout_batch * cfg.rollout_batch_size
                       // cfg.train_batch_size)
    return GRPOConfig(**fields, **FIXED, output_dir=out_dir, max_completion_length=max_new_tokens,
                      per_device_train_batch_size=micro_batch, max_steps=optimizer_steps,
                      lr_scheduler_kwargs={"min_lr_rate": 0.1} if cfg.lr_schedule == "cosine"
                      else {}, use_cpu=runs.pick_device(cfg.device).type == "cpu")


def train(cfg: Config) -> dict:
    """Export the SFT model, train it with GRPOTrainer, evaluate as grpo.py does, save. Under
    torchrun every process runs this; the main one alone prints, evaluates and writes out_dir."""
    export_hf.require_hf("trl", "datasets", "accelerate")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    export_hf.quiet()  # in every process: no progress bars, no deprecation warnings
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    # The processes of this run: 1 under python, N under torchrun (gloo on CPUs, NCCL on GPUs).
    world = PartialState(cpu=runs.pick_device(cfg.device).type == "cpu")
    n, main = world.num_processes, world.is_main_process
    runs.require(cfg.train_batch_size % (cfg.gradient_accumulation_steps * n) == 0,
                 f"--train_batch_size {cfg.train_batch_size} does not split into "
                 f"--gradient_accumulation_steps {cfg.gradient_accumulation_steps} equal "
                 f"micro-batches on each of {n} processes")

    def make_start(c):  # the main process makes out/sft if missing, the others wait for it
        with world.main_process_first():
            sft.train_if_missing(c)

    device, rng, task, tokenizer = runs.setup(cfg, make_start)
    policy = runs.load_policy(cfg, device)
    max_new = runs.check_response_budget(cfg.max_new_tokens, task, policy)
    start = os.path.join(cfg.out_dir, "start")
    if main:
        export_hf.export(cfg.sft_checkpoint, start)
    world.wait_for_everyone()  # every process loads the start model once it is written

    # The prompts grpo.py draws, step after step, in its order; each row is repeated G times.
    # Every process holds them all; TRL's sampler gives each its share of every rollout batch.
    n_prompts = cfg.rollout_batch_size // cfg.group_size
    problems = [p for _ in range(cfg.steps) for p in task.sample(n_prompts, rng)]
    dataset = Dataset.from_list([{"prompt": p.prompt, "answer": p.answer} for p in problems])

    def reward(completions, answer, completion_ids, **_):  # TRL's signature: one float each
        return [reward_fn(tokenizer.decode(ids), truth)["reward"]
                for ids, truth in zip(completion_ids, answer)]  # ids end at end-of-text

    if main:
        log = runs.RunLog(cfg, f"GRPO in TRL's GRPOTrainer | {device} | {n_prompts} prompts x "
                               f"{cfg.group_size} | " + (f"{n} processes, data parallel "
                                                         f"({world.backend})" if n > 1
                                                         else "1 process"))
        samples = log.start(*evaluate(policy, tokenizer, task.test, task.max_new_tokens))
    del policy
    args = grpo_config(cfg, max_new, os.path.join(cfg.out_dir, "trainer"), n)

    class OurLog(TrainerCallback):
        """Evaluate as grpo.py does (import back, greedy on the held-out set); log our names."""
        eval_metrics = None

        def on_step_end(self, args, state, control, model=None, **_):
            step = state.global_step
            if step % cfg.eval_every == 0 or step == args.max_steps:
                nonlocal samples
                self.eval_metrics, samples = evaluate(export_hf.from_hf_model(model).to(device),
                                                      tokenizer, task.test, task.max_new_tokens)

        def on_log(self, args, state, control, logs=None, **_):
            if "reward" not in (logs or {}):
                return  # the end-of-training summary line
            row = {"step": state.global_step,
                   **{ours: logs[theirs] for theirs, ours in METRICS.items() if theirs in logs}}
            log.step(row, SHOWN, self.eval_metrics)
            self.eval_metrics = None

    trainer = GRPOTrainer(model=start, reward_funcs=reward, args=args, train_dataset=dataset,
                          processing_class=export_hf.hf_tokenizer(),
                          callbacks=[OurLog()] if main else [])  # TRL's logs are global means
    export_hf.quiet(trainer)  # our console line, not TRL's progress bar and log dicts
    try:
        trainer.train()
    except KeyboardInterrupt:
        if main:
            samples = log.interrupted(export_hf.from_hf_model(trainer.model).to(device),
                                      tokenizer, task)
    trainer.save_model(os.path.join(cfg.out_dir, "hf"))  # every process calls it; main writes
    if not main:
        return {}
    shutil.rmtree(args.output_dir, ignore_errors=True)  # TRL's own checkpoints: none are kept
    return log.finish(export_hf.from_hf_model(trainer.model), samples, "trl-grpo", CURVES,
                      f"GRPO in TRL ({args.loss_type}), {cfg.digits}-digit addition",
                      {"world_size": n,
                       "trl_config": {k: v for k, v in args.to_dict().items()
                                      if k in {f for f, _ in TO_TRL.values()} | set(FIXED)
                                      | {"max_completion_length", "max_steps",
                                         "per_device_train_batch_size"}}})


SHOWN = ["reward", "zero_spread_fraction", "clip_fraction", "kl_per_token", "entropy",
         "response_len"]  # the console line's metrics.csv columns
CURVES = [(title, keys) for title, keys in grpo.CURVES
          if any(k in keys for k in (*METRICS.values(), "eval_accuracy", "eval_entropy"))]

if __name__ == "__main__":
    runs.run_script(train, Config, __doc__)
