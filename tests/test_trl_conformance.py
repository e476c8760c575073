"""Our objectives are the ones TRL computes: on identical tensors, grpo.py's and dpo.py's losses
equal those of TRL's own trainers (their loss methods, called on a tiny exported model), in value
and in gradient. Where a definition differs on purpose the test pins the difference:
TRL adds 1e-4 to the group std (we add --advantage_eps), averages IPO's log-probs over tokens,
and its sigmoid DPO has no label smoothing (cDPO). Skipped without the extras."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

import dpo  # noqa: E402
import export_hf  # noqa: E402
import grpo  # noqa: E402
from toy_model import GPT, GPTConfig  # noqa: E402

B, P, T, GAS = 4, 6, 8, 2  # rows of a micro-batch, prompt and completion widths, accumulation


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random GPT, exported: TRL's trainers load it by path (their reference too)."""
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("tiny_hf"))
    export_hf.to_hf_model(GPT(GPTConfig(n_layer=1, d_model=32, n_head=2))).save_pretrained(path)
    export_hf.hf_tokenizer().save_pretrained(path)
    return path


def grpo_trainer(folder, tmp_path, rewards=None, trainer_cls=None, **config):
    """TRL's GRPOTrainer (or RLOOTrainer) on the tiny model; the reward of row i is rewards[i]."""
    trainer_cls = trainer_cls or trl.GRPOTrainer
    config_cls = trl.RLOOConfig if trainer_cls is trl.RLOOTrainer else trl.GRPOConfig
    n = len(rewards) if rewards is not None else B * GAS
    args = config_cls(output_dir=str(tmp_path), per_device_train_batch_size=n // GAS,
                      gradient_accumulation_steps=GAS, num_generations=4, max_completion_length=T,
                      report_to="none", use_cpu=True, save_strategy="no", **config)
    dataset = datasets.Dataset.from_list([{"prompt": "12+34=", "preset": 0.0}] * n)
    trainer = trainer_cls(model=folder, reward_funcs=lambda completions, preset, **_: preset,
                          args=args, train_dataset=dataset,
                          processing_class=export_hf.hf_tokenizer())
    trainer.current_gradient_accumulation_steps = GAS  # set by the training loop
    return trainer.model.train(), trainer


def rollout_tensors(seed=0):
    """One micro-batch as TRL's loss takes it, with old and reference log-probs that differ from
    the policy's enough that the clip acts (ratios roughly 0.5 to 2)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([[8], [5], [2], [6]])
    completion_mask = (torch.arange(T)[None] < lengths).long()  # (B, T)
    return {"prompt_ids": torch.randint(0, 14, (B, P), generator=g),
            "prompt_mask": torch.ones(B, P, dtype=torch.long),
            "completion_ids": torch.randint(0, 20, (B, T), generator=g),
            "completion_mask": completion_mask,
            "advantages": torch.tensor([1.3, -0.7, 0.4, -1.1]),
            # the whole generation batch: this micro-batch and another with 17 tokens
            "num_items_in_batch": completion_mask.sum() + 17,
            "noise_old": 0.4 * torch.randn(B, T, generator=g),
            "noise_ref": 0.3 * torch.randn(B, T, generator=g)}


def policy_log_probs(trainer, model, inputs):
    """TRL's own per-token log-probs of the completion: (B, T), with gradient."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    return trainer._get_per_token_logps_and_entropies(model, ids, mask, T)[0]


def loss_and_grads(model, compute):
    model.zero_grad(set_to_none=True)
    loss = compute()
    if loss.requires_grad:
        loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def trl_and_ours(trainer, model, inputs, ours_kwargs, loss_type="grpo_clip"):
    """(TRL's loss and gradients, ours) on the same log-probs, old and reference log-probs."""
    with torch.no_grad():
        current = policy_log_probs(trainer, model, inputs)
    inputs = {**inputs, "old_per_token_logps": current + inputs["noise_old"],
              "ref_per_token_logps": current + inputs["noise_ref"]}
    theirs = loss_and_grads(model, lambda: trainer._compute_loss(model, inputs))

    model.zero_grad(set_to_none=True)
    log_probs = policy_log_probs(trainer, model, inputs)  # (B, T)
    kwargs = {"batch_response_tokens": inputs["num_items_in_batch"], **ours_kwargs}
    if trainer.beta > 0:
        kwargs.update(ref_log_probs=inputs["ref_per_token_logps"], beta=trainer.beta,
                      kl_estimator="k3")
    loss, _ = grpo.grpo_microbatch_train_step(  # calls backward itself
        log_probs, inputs["completion_mask"], GAS, loss_type,
        advantages=inputs["advantages"][:, None], old_log_probs=inputs["old_per_token_logps"],
        cliprange=trainer.epsilon_low, **kwargs)
    mine = (loss, [p.grad.clone() for p in model.parameters() if p.grad is not None])
    return theirs, mine


def assert_same(theirs, mine):
    torch.testing.assert_close(mine[0], theirs[0], rtol=1e-5, atol=1e-7)
    assert len(mine[1]) == len(theirs[1]) > 0
    for a, b in zip(mine[1], theirs[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


# TRL's loss_type is our --length_normalization (bnpo: token_mean over the micro-batch only)
REDUCTIONS = {"grpo": {"length_normalization": "sequence_mean"},
              "dr_grpo": {"length_normalization": "constant", "normalize_constant": T},
              "dapo": {"length_normalization": "token_mean"},
              "bnpo": {"length_normalization": "token_mean", "batch_response_tokens": None}}


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("epsilon_high", [None, 0.28])
@pytest.mark.parametrize("loss_type", list(REDUCTIONS))
def test_grpo_loss_equals_trl(folder, tmp_path, loss_type, epsilon_high, beta):
    model, trainer = grpo_trainer(folder, tmp_path, loss_type=loss_type, epsilon=0.2,
                                  epsilon_high=epsilon_high, beta=beta,
                                  use_bias_correction_kl=False)  # DeepSeekMath's k3
    theirs, mine = trl_and_ours(trainer, model, rollout_tensors(),
                                {**REDUCTIONS[loss_type], "cliprange_high": epsilon_high})
    assert_same(theirs, mine)


def test_the_clip_acts_in_these_tensors(folder, tmp_path):
    """The tensors above are off-policy enough that a wrong clip would show."""
    model, trainer = grpo_trainer(folder, tmp_path, loss_type="grpo")
    theirs, mine = trl_and_ours(trainer, model, rollout_tensors(),
                                {**REDUCTIONS["grpo"], "cliprange_high": 0.5})
    assert (theirs[0] - mine[0]).abs() > 1e-4


def test_trl_kl_bias_correction_differs_on_purpose(folder, tmp_path):
    """TRL's default multiplies the k3 KL by the ratio (DeepSeek-V3.2): another gradient, even
    on-policy. Ours is DeepSeekMath's plain k3 (trl_grpo.py turns the correction off)."""
    model, trainer = grpo_trainer(folder, tmp_path, loss_type="grpo", beta=0.04)
    assert trainer.args.use_bias_correction_kl
    theirs, mine = trl_and_ours(trainer, model, rollout_tensors(), REDUCTIONS["grpo"])
    assert (theirs[0] - mine[0]).abs() > 1e-6


# --- Advantages: TRL's own scoring, with preset rewards -------------------------------------------
REWARDS = [1.0, 0.0, 0.0, 1.0, 0.3, 1.0, 0.0, 0.5]  # two groups of four


def trl_advantages(folder, tmp_path, trainer_cls=None, **config):
    _, trainer = grpo_trainer(folder, tmp_path, REWARDS, trainer_cls, **config)
    rows = [{"prompt": "12+34=", "preset": r} for r in REWARDS]
    return trainer._generate_and_score_completions(rows)["advantages"]


def our_advantages(eps, normalize_by_std, **kwargs):
    rewards = iter(REWARDS)
    advantages, _, _ = grpo.compute_group_normalized_rewards(
        lambda response, truth: {"reward": next(rewards), "format_reward": 1.0,
                                 "answer_reward": 0.0},
        ["x"] * len(REWARDS), ["y"] * len(REWARDS), 4, eps, normalize_by_std, **kwargs)
    return advantages


@pytest.mark.parametrize("scale_rewards", ["group", "none"])
def test_group_advantages_equal_trl(folder, tmp_path, scale_rewards):
    theirs = trl_advantages(folder, tmp_path, scale_rewards=scale_rewards)
    mine = our_advantages(1e-4, scale_rewards == "group")  # TRL's eps, 1e-4
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)


def test_std_eps_differs_on_purpose(folder, tmp_path):
    """TRL adds 1e-4 to the std; our default --advantage_eps is CS336's 1e-6."""
    theirs = trl_advantages(folder, tmp_path, scale_rewards="group")
    mine = our_advantages(grpo.Config.advantage_eps, True)
    assert grpo.Config.advantage_eps == 1e-6
    assert 1e-5 < (mine - theirs).abs().max() < 1e-3


# --- DPO: DPOTrainer's loss on the same log-probs -------------------------------------------------
PAIRS = [("12+34=", "<think>4+2</think><answer>46</answer><|endoftext|>",
          "<think>4</think><answer>47</answer><|endoftext|>"),
         ("50+50=", "<think>0+0</think><answer>100</answer><|endoftext|>",
          "<answer>10</answer><|endoftext|>"),
         ("07+01=", "<answer>8</answer><|endoftext|>",
          "<think>7+1+0=08,0+0+0=00</think><answer>9</answer><|endoftext|>")]


def dpo_trainer(folder, tmp_path, **config):
    args = trl.DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(PAIRS),
                         report_to="none", use_cpu=True, save_strategy="no",
                         precompute_ref_log_probs=True, **config)
    dataset = datasets.Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r}
                                          for p, c, r in PAIRS])
    trainer = trl.DPOTrainer(model=folder, args=args, train_dataset=dataset,
                             processing_class=export_hf.hf_tokenizer())
    return trainer.model.train(), trainer


def dpo_batch(trainer):
    """DPOTrainer's own collated batch of all pairs, with made-up reference log-probs."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    batch["ref_chosen_logps"] = torch.tensor([-9.0, -14.0, -6.5])
    batch["ref_rejected_logps"] = torch.tensor([-11.0, -8.0, -17.0])
    return batch


def summed_log_probs(model, batch):
    """(sum of completion-token log-probs (2N,), completion lengths (2N,)), rows chosen then
    rejected: dpo.sequence_log_probs on the HF model, from the collated ids."""
    ids, completion = batch["input_ids"], batch["completion_mask"]
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1]
    token = torch.gather(logits.log_softmax(-1), -1, ids[:, 1:, None]).squeeze(-1)
    mask = completion[:, 1:].float()
    return (token * mask).sum(-1), mask.sum(-1)


def ours_dpo(model, batch, loss_type, beta, label_smoothing=0.0, per_token=False, nll_weight=0.0):
    logps, lengths = summed_log_probs(model, batch)
    n = len(logps) // 2
    ref = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    if per_token:  # TRL's IPO: log-ratios averaged over each completion's tokens
        logps, ref = logps / lengths, ref / lengths
    losses, _, _ = dpo.preference_loss(logps[:n], logps[n:], ref[:n], ref[n:], loss_type, beta,
                                       label_smoothing)
    nll = -(logps[:n] / lengths[:n]).mean()
    return losses.mean() + nll_weight * nll


@pytest.mark.parametrize("loss_type,label_smoothing", [("sigmoid", 0.0), ("hinge", 0.0),
                                                       ("robust", 0.0), ("robust", 0.2)])
def test_dpo_loss_equals_trl(folder, tmp_path, loss_type, label_smoothing):
    model, trainer = dpo_trainer(folder, tmp_path, loss_type=loss_type, beta=0.3,
                                 label_smoothing=label_smoothing)
    batch = dpo_batch(trainer)
    theirs = loss_and_grads(model, lambda: trainer._compute_loss(model, batch, False))
    mine = loss_and_grads(model, lambda: ours_dpo(model, batch, loss_type, 0.3, label_smoothing))
    assert_same(theirs, mine)


def test_ipo_averages_over_tokens_in_trl(folder, tmp_path):
    """TRL's IPO divides each log-ratio by its completion's length; ours sums (the paper's)."""
    model, trainer = dpo_trainer(folder, tmp_path, loss_type="ipo", beta=0.3)
    batch = dpo_batch(trainer)
    theirs = loss_and_grads(model, lambda: trainer._compute_loss(model, batch, False))
    assert_same(theirs, loss_and_grads(model, lambda: ours_dpo(model, batch, "ipo", 0.3,
                                                              per_token=True)))
    summed = loss_and_grads(model, lambda: ours_dpo(model, batch, "ipo", 0.3))
    assert (summed[0] - theirs[0]).abs() > 1e-2


def test_trl_sigmoid_has_no_label_smoothing(folder, tmp_path):
    """cDPO (sigmoid with label smoothing) is ours only: TRL's sigmoid ignores label_smoothing."""
    model, trainer = dpo_trainer(folder, tmp_path, loss_type="sigmoid", beta=0.3,
                                 label_smoothing=0.2)
    batch = dpo_batch(trainer)
    theirs = loss_and_grads(model, lambda: trainer._compute_loss(model, batch, False))
    assert_same(theirs, loss_and_grads(model, lambda: ours_dpo(model, batch, "sigmoid", 0.3)))
    smoothed = loss_and_grads(model, lambda: ours_dpo(model, batch, "sigmoid", 0.3, 0.2))
    assert (smoothed[0] - theirs[0]).abs() > 1e-3


def test_rpo_nll_is_trl_sft_loss_with_equal_lengths(folder, tmp_path):
    """Our --nll_weight w is TRL's loss_type ["sigmoid", "sft"] with loss_weights [1, w] where
    every chosen completion has one length; TRL averages over all chosen tokens, we per response."""
    model, trainer = dpo_trainer(folder, tmp_path, loss_type=["sigmoid", "sft"],
                                 loss_weights=[1.0, 0.7], beta=0.3)
    batch = dpo_batch(trainer)
    theirs = loss_and_grads(model, lambda: trainer._compute_loss(model, batch, False))
    mine = loss_and_grads(model, lambda: ours_dpo(model, batch, "sigmoid", 0.3, nll_weight=0.7))
    _, lengths = summed_log_probs(model, batch)
    assert len(set(lengths[:len(PAIRS)].tolist())) > 1  # unequal chosen lengths here: they differ
    assert (theirs[0] - mine[0]).abs() > 1e-4
    equal = {k: v[:1] for k, v in batch.items()}  # one pair: one chosen length
    equal["ref_chosen_logps"], equal["ref_rejected_logps"] = (batch["ref_chosen_logps"][:1],
                                                              batch["ref_rejected_logps"][:1])
    rows = [0, len(PAIRS)]  # the collated batch is [chosen..., rejected...]
    equal.update({k: batch[k][rows] for k in ("input_ids", "attention_mask", "completion_mask")})
    assert_same(loss_and_grads(model, lambda: trainer._compute_loss(model, equal, False)),
                loss_and_grads(model, lambda: ours_dpo(model, equal, "sigmoid", 0.3,
                                                       nll_weight=0.7)))


# --- Variants from TRL: GSPO's sequence ratio, CISPO, RLOO's leave-one-out baseline ----------------
@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_gspo_sequence_ratio_equals_trl(folder, tmp_path, loss_type):
    model, trainer = grpo_trainer(folder, tmp_path, loss_type=loss_type, epsilon=0.05,
                                  epsilon_high=0.08, importance_sampling_level="sequence")
    theirs, mine = trl_and_ours(trainer, model, rollout_tensors(),
                                {**REDUCTIONS[loss_type], "cliprange_high": 0.08,
                                 "ratio_level": "sequence"})
    assert_same(theirs, mine)
    _, token_level = trl_and_ours(trainer, model, rollout_tensors(),
                                  {**REDUCTIONS[loss_type], "cliprange_high": 0.08})
    assert (token_level[0] - theirs[0]).abs() > 1e-4  # the level matters in these tensors


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_cispo_equals_trl(folder, tmp_path, level):
    """TRL's epsilon_high is CISPO's cap on the ratio itself; ours is 1 + --cliprange_high."""
    model, trainer = grpo_trainer(folder, tmp_path, loss_type="cispo", epsilon_high=1.1,
                                  importance_sampling_level=level)
    theirs, mine = trl_and_ours(trainer, model, rollout_tensors(),
                                {**REDUCTIONS["dapo"], "cliprange_high": 0.1,
                                 "ratio_level": level}, loss_type="cispo")
    assert_same(theirs, mine)


def test_rloo_advantages_equal_trl(folder, tmp_path):
    theirs = trl_advantages(folder, tmp_path, trl.RLOOTrainer, normalize_advantages=False)
    mine = our_advantages(1e-6, False, baseline="leave_one_out")
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
    assert (mine - our_advantages(1e-6, False)).abs().max() > 0.1  # not the group mean's


# --- The sampler correction: TRL's vLLM importance sampling ---------------------------------------
@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate",
                                  "sequence_mask"])
def test_sampler_correction_equals_trl(folder, tmp_path, mode):
    """TRL multiplies each token's loss by its vllm_importance_sampling_mode weight (before the KL
    term is added); ours multiplies it by compute_is_weights' weight: the same loss and gradient.
    TRL computes the weight while it samples with vLLM, absent here: its loss path only."""
    model, trainer = grpo_trainer(folder, tmp_path, loss_type="grpo", beta=0.04,
                                  use_bias_correction_kl=False)
    trainer.use_vllm = trainer.vllm_importance_sampling_correction = True
    inputs = rollout_tensors()
    with torch.no_grad():  # pi_old as trl_and_ours makes it, and an engine 0.3 nats off
        old = policy_log_probs(trainer, model, inputs) + inputs["noise_old"]
    sampler = old + 0.3 * torch.randn(B, T, generator=torch.Generator().manual_seed(1))
    level, kind = mode.split("_")
    weights, meta = grpo.compute_is_weights(old, sampler, inputs["completion_mask"],
                                            {"truncate": "tis", "mask": "mis"}[kind], level,
                                            cap=1.2 if level == "token" else 2.0)
    assert meta["is_clipped"].any() and not meta["is_clipped"].all()
    inputs = {**inputs, "importance_sampling_ratio": weights}
    theirs, mine = trl_and_ours(trainer, model, inputs,
                                {**REDUCTIONS["grpo"], "is_weights": weights})
    assert_same(theirs, mine)
    _, plain = trl_and_ours(trainer, model, inputs, REDUCTIONS["grpo"])
    assert (plain[0] - theirs[0]).abs() > 1e-4  # the weights matter in these tensors
