"""Flag checks for every script's Config (each Config's __post_init__ calls one): a bad value,
or sizes that do not divide, exits 2 with one line before anything runs. Plumbing: you need not
read it to follow an algorithm."""
from __future__ import annotations

import dataclasses
import typing

from runs import require


def check_run(cfg) -> None:
    """The fields every script has, and every choice among named values (a Literal field)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if typing.get_origin(hints[f.name]) is typing.Literal:
            choices = typing.get_args(hints[f.name])
            require(getattr(cfg, f.name) in choices,
                    f"--{f.name} must be one of {', '.join(map(str, choices))}")
    require(1 <= cfg.digits <= 6, "--digits must be between 1 and 6")
    require(min(cfg.n_test, cfg.steps, cfg.eval_every, cfg.log_every, cfg.samples_every) >= 1,
            "--n_test, --steps, --eval_every, --log_every and --samples_every must be >= 1")
    require(0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1, "--beta1 and --beta2 must be in [0, 1)")


def check_sft(cfg) -> None:
    check_run(cfg)
    require(cfg.batch_size >= 1, "--batch_size must be >= 1")
    require(cfg.gradient_accumulation_steps >= 1, "--gradient_accumulation_steps must be >= 1")
    require(cfg.batch_size % cfg.gradient_accumulation_steps == 0,
            f"--batch_size {cfg.batch_size} is not divisible by "
            f"--gradient_accumulation_steps {cfg.gradient_accumulation_steps}")
    require(cfg.d_model % cfg.n_head == 0, "--d_model must be divisible by --n_head")
    require(min(cfg.n_layer, cfg.n_head, cfg.d_model) >= 1, "model sizes must be >= 1")
    require(cfg.lr > 0 and cfg.normalize_constant > 0, "--lr and --normalize_constant must be > 0")
    require(0 <= cfg.dropout < 1, "--dropout must be in [0, 1)")
    require(cfg.warmup_steps >= 0 and cfg.weight_decay >= 0 and cfg.max_grad_norm > 0,
            "--warmup_steps, --weight_decay must be >= 0 and --max_grad_norm > 0")
    require(0 <= cfg.abstain_fraction < 1, "--abstain_fraction must be in [0, 1)")
    require(0 <= cfg.direct_fraction and cfg.abstain_fraction + cfg.direct_fraction <= 1,
            "--direct_fraction must be >= 0, and with --abstain_fraction at most 1")
    require(0 <= cfg.verbose < 1 and 0 <= cfg.verbose_max <= 64,
            "--verbose must be in [0, 1) and --verbose_max in [0, 64]")
    require(not cfg.verbose_fixed or (cfg.verbose > 0 and cfg.verbose_max >= 1),
            "--verbose_fixed pads with --verbose_max empty steps at the chance --verbose: "
            "both must be > 0")
    require(0 <= cfg.mixed_fraction <= 1, "--mixed_fraction must be in [0, 1]")
    require(cfg.n_demonstrations is None or cfg.n_demonstrations >= 1,
            "--n_demonstrations must be >= 1 (or none)")
    require(cfg.corpus == "demonstrations" or not (cfg.abstain_fraction or cfg.direct_fraction
                                                   or cfg.verbose),
            f"--corpus {cfg.corpus} is plain text: --abstain_fraction, --direct_fraction and "
            f"--verbose shape demonstrations only")
    check_task(cfg)


def check_task(cfg) -> None:
    """The difficulty knobs of the task (sft.py)."""
    require(cfg.easy_digits is None or 1 <= cfg.easy_digits < cfg.digits,
            "--easy_digits must be between 1 and --digits - 1 (or none)")
    require(0 <= cfg.hard_fraction <= 1, "--hard_fraction must be in [0, 1]")


def check_dpo(cfg) -> None:
    check_run(cfg)
    require(cfg.n_prompts >= 1 and cfg.samples_per_prompt >= 2,
            "--n_prompts must be >= 1 and --samples_per_prompt >= 2 (a pair needs two samples)")
    require(cfg.temperature > 0, "--temperature must be > 0 (greedy samples are all equal)")
    require(cfg.beta > 0, "--beta must be > 0")
    require(0 <= cfg.label_smoothing < 0.5,
            "--label_smoothing must be in [0, 0.5): at 0.5 the labels carry no information")
    require(cfg.label_smoothing == 0 or cfg.loss_type in ("sigmoid", "robust"),
            f"--label_smoothing applies to sigmoid and robust, not {cfg.loss_type}")
    require(cfg.simpo_gamma >= 0 and cfg.nll_weight >= 0, "--simpo_gamma and --nll_weight must be >= 0")
    require(cfg.batch_size >= 1, "--batch_size must be >= 1")
    require(cfg.rebuild_pairs_every is None or cfg.rebuild_pairs_every >= 1,
            "--rebuild_pairs_every must be >= 1 (or none)")
    require(0 <= cfg.fresh_pair_prompts <= cfg.n_test,
            "--fresh_pair_prompts must be in [0, --n_test]")
    require(cfg.lr > 0, "--lr must be > 0")
    require(cfg.warmup_steps >= 0 and cfg.weight_decay >= 0 and cfg.max_grad_norm > 0,
            "--warmup_steps, --weight_decay must be >= 0 and --max_grad_norm > 0")


def check_ppo(cfg) -> None:
    check_run(cfg)
    require(min(cfg.prompts_per_step, cfg.samples_per_prompt, cfg.steps, cfg.ppo_epochs,
                cfg.n_minibatches) >= 1, "sizes and step counts must be >= 1")
    require((cfg.prompts_per_step * cfg.samples_per_prompt) % cfg.n_minibatches == 0,
            f"rollout size {cfg.prompts_per_step * cfg.samples_per_prompt} is not divisible by "
            f"--n_minibatches {cfg.n_minibatches}")
    require(cfg.temperature > 0, "--temperature must be > 0")
    require(cfg.beta >= 0 and cfg.vf_coef >= 0 and cfg.ent_coef >= 0,
            "--beta, --vf_coef and --ent_coef must be >= 0")
    require(0 < cfg.gamma <= 1 and 0 <= cfg.lam <= 1, "need 0 < --gamma <= 1 and 0 <= --lam <= 1")
    require(cfg.cliprange > 0 and cfg.cliprange_value > 0, "--cliprange and --cliprange_value must be > 0")
    require(cfg.target_kl is None or cfg.target_kl > 0, "--target_kl must be > 0 (or none)")
    require(min(cfg.rm_prompts, cfg.rm_samples - 1, cfg.rm_steps, cfg.rm_batch_size) >= 1,
            "--rm_prompts, --rm_steps, --rm_batch_size must be >= 1 and --rm_samples >= 2")
    require(0 <= cfg.label_length_bias <= 1, "--label_length_bias must be in [0, 1]")
    require(cfg.rm_checkpoint is None or cfg.reward == "model",
            "--rm_checkpoint is a reward model: it needs --reward model")
    require(cfg.max_new_tokens is None or cfg.max_new_tokens >= 1, "--max_new_tokens must be >= 1")
    require(cfg.warmup_steps >= 0, "--warmup_steps must be >= 0")
    require(min(cfg.lr, cfg.critic_lr, cfg.rm_lr, cfg.rm_price_lr, cfg.max_grad_norm) > 0,
            "learning rates and --max_grad_norm must be > 0")


def check_grpo(cfg) -> None:
    check_run(cfg)
    require(min(cfg.group_size, cfg.epochs_per_rollout_batch) >= 1,
            "--group_size and --epochs_per_rollout_batch must be >= 1")
    require(cfg.group_size >= 2 or not cfg.use_std_normalization,
            "--group_size 1 has no spread to normalise by: use >= 2 or --no-use_std_normalization")
    require(cfg.group_size >= 2 or cfg.baseline != "leave_one_out",
            "--baseline leave_one_out needs --group_size >= 2 (the others' mean)")
    require(cfg.ratio_level == "token" or cfg.loss_type in ("grpo_clip", "grpo_no_clip", "cispo"),
            f"--ratio_level sequence needs a ratio: --loss_type grpo_clip, grpo_no_clip or cispo, "
            f"not {cfg.loss_type}")
    require(min(cfg.rollout_batch_size, cfg.train_batch_size, cfg.gradient_accumulation_steps) >= 1,
            "--rollout_batch_size, --train_batch_size, --gradient_accumulation_steps must be >= 1")
    # CS336's derived sizes and their assertions.
    for big, small in (("rollout_batch_size", "group_size"),
                       ("train_batch_size", "gradient_accumulation_steps"),
                       ("rollout_batch_size", "train_batch_size")):
        require(getattr(cfg, big) % getattr(cfg, small) == 0,
                f"--{big} {getattr(cfg, big)} is not divisible by --{small} {getattr(cfg, small)}")
    require(cfg.train_batch_size >= cfg.group_size,
            f"--train_batch_size {cfg.train_batch_size} must be >= --group_size {cfg.group_size}")
    require(cfg.temperature > 0, "--temperature must be > 0 (log-probs are scored at it)")
    require(cfg.min_new_tokens >= 0, "--min_new_tokens must be >= 0")
    require(cfg.max_new_tokens is None or cfg.max_new_tokens >= max(1, cfg.min_new_tokens),
            "--max_new_tokens must be >= 1 and >= --min_new_tokens")
    require(cfg.advantage_eps > 0 or not cfg.use_std_normalization,
            "--advantage_eps must be > 0 with std normalisation (an all-equal group has std 0)")
    require(cfg.normalize_constant is None or cfg.normalize_constant > 0,
            "--normalize_constant must be > 0")
    require(0 < cfg.cliprange < 1, "--cliprange must be in (0, 1)")
    require(cfg.cliprange_high is None or cfg.cliprange_high >= cfg.cliprange,
            "--cliprange_high must be >= --cliprange")
    require(cfg.beta >= 0, "--beta must be >= 0")
    require(not (cfg.drop_equal_reward_groups and cfg.loss_type == "no_baseline"),
            "--drop_equal_reward_groups drops groups whose advantage is 0; with --loss_type "
            "no_baseline the raw reward is the weight, and an all-right group still carries a "
            "gradient")
    require(cfg.lr > 0 and cfg.max_grad_norm > 0 and cfg.weight_decay >= 0 and cfg.warmup_steps >= 0,
            "--lr and --max_grad_norm must be > 0, --weight_decay and --warmup_steps >= 0")
    require(cfg.baseline != "maxrl" or not cfg.use_std_normalization,
            "--baseline maxrl divides by the group mean instead of the std: add "
            "--no-use_std_normalization")
    require(cfg.baseline != "maxrl" or cfg.loss_type != "no_baseline",
            "--baseline maxrl is an advantage; --loss_type no_baseline trains on the raw reward")
    check_sampler(cfg)


def check_sampler(cfg) -> None:
    """grpo.py's inference engine and its correction."""
    require(0 < cfg.sampler_top_p <= 1, "--sampler_top_p must be in (0, 1]")
    require(cfg.sampler_stale_steps >= 0, "--sampler_stale_steps must be >= 0")
    require(cfg.sampler_is_cap > 0, "--sampler_is_cap must be > 0")
    require(cfg.sampler_is_floor is None or 0 <= cfg.sampler_is_floor < cfg.sampler_is_cap,
            "--sampler_is_floor must be >= 0 and below --sampler_is_cap")
    require(cfg.sampler_correction != "sampler_as_old"
            or cfg.loss_type in ("grpo_clip", "grpo_no_clip", "cispo"),
            f"--sampler_correction sampler_as_old puts the sampler in the ratio pi / pi_old: "
            f"--loss_type grpo_clip, grpo_no_clip or cispo, not {cfg.loss_type}")
    require(cfg.sampler_correction_level == "token" or cfg.sampler_correction in ("tis", "mis"),
            "--sampler_correction_level sequence applies to --sampler_correction tis and mis")


def check_distill(cfg) -> None:
    check_run(cfg)
    require(min(cfg.rollout_batch_size, cfg.gradient_accumulation_steps) >= 1,
            "--rollout_batch_size and --gradient_accumulation_steps must be >= 1")
    require(cfg.rollout_batch_size % cfg.gradient_accumulation_steps == 0,
            f"--rollout_batch_size {cfg.rollout_batch_size} is not divisible by "
            f"--gradient_accumulation_steps {cfg.gradient_accumulation_steps}")
    require(cfg.temperature > 0, "--temperature must be > 0 (both models are scored at it)")
    require(cfg.max_new_tokens is None or cfg.max_new_tokens >= 1, "--max_new_tokens must be >= 1")
    require(min(cfg.lr, cfg.max_grad_norm) > 0 and min(cfg.weight_decay, cfg.warmup_steps) >= 0,
            "--lr and --max_grad_norm must be > 0, --weight_decay and --warmup_steps >= 0")


def check_expert_iteration(cfg) -> None:
    require(cfg.log_every >= 1, "--log_every must be >= 1")
    require(1 <= cfg.digits <= 6, "--digits must be between 1 and 6")
    require(min(cfg.n_test, cfg.n_ei_steps, cfg.questions_per_step, cfg.group_size, cfg.sft_epochs,
                cfg.batch_size, cfg.gradient_accumulation_steps, cfg.eval_every, cfg.samples_every) >= 1,
            "--n_test, --n_ei_steps, --questions_per_step, --group_size, --sft_epochs, --batch_size, "
            "--gradient_accumulation_steps, --eval_every and --samples_every must be >= 1")
    require(cfg.batch_size % cfg.gradient_accumulation_steps == 0,
            f"--batch_size {cfg.batch_size} is not divisible by "
            f"--gradient_accumulation_steps {cfg.gradient_accumulation_steps}")
    require(cfg.temperature > 0, "--temperature must be > 0")
    require(cfg.min_new_tokens >= 0, "--min_new_tokens must be >= 0")
    require(cfg.lr > 0 and cfg.max_grad_norm > 0 and cfg.weight_decay >= 0 and cfg.warmup_steps >= 0,
            "--lr and --max_grad_norm must be > 0, --weight_decay and --warmup_steps >= 0")
    require(0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1, "--beta1 and --beta2 must be in [0, 1)")

