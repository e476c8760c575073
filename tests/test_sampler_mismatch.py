"""grpo.py's sampler/trainer mismatch and its corrections, and MaxRL's advantage: with no
mismatch every correction is the plain loss exactly; TIS truncates the weight at C; a token (or a
response) that MIS masks gets no gradient; the sampler's log-probs are those it drew from (its
temperature, its nucleus, its precision); MaxRL's advantage on hand-computed values."""
import pytest
import torch

import grpo
import runs
from grpo import compute_group_normalized_rewards, compute_is_weights, grpo_microbatch_train_step
from toy_model import (GPT, GPTConfig, Tokenizer, generate, get_response_log_probs,
                       truncate_logits)
from conftest import run_in_process

TOK = Tokenizer()


def batch(seed=0, B=6, T=7):
    """Policy log-probs (B, T) as a leaf, advantages (B, 1), a mask of unequal lengths."""
    gen = torch.Generator().manual_seed(seed)
    log_probs = (-torch.rand(B, T, generator=gen) * 3).requires_grad_()
    advantages = torch.randn(B, 1, generator=gen)
    mask = (torch.arange(T)[None] < torch.tensor([[7], [3], [5], [1], [6], [4]])).float()
    return log_probs, advantages, mask


def step(log_probs, advantages, mask, loss_type, old, is_weights=None, **kw):
    log_probs.grad = None
    loss, _ = grpo_microbatch_train_step(log_probs, mask, 2, loss_type, raw_rewards=advantages,
                                         advantages=advantages, old_log_probs=old, cliprange=0.2,
                                         is_weights=is_weights, **kw)
    return loss, log_probs.grad.clone()


# ---- the corrections -------------------------------------------------------------------------
@pytest.mark.parametrize("loss_type", ["grpo_clip", "reinforce_with_baseline", "cispo",
                                       "grpo_no_clip"])
@pytest.mark.parametrize("correction, level", [("tis", "token"), ("mis", "token"),
                                               ("tis", "sequence"), ("mis", "sequence")])
def test_no_mismatch_every_correction_is_the_plain_loss_exactly(loss_type, correction, level):
    """Sampler log-probs equal to the trainer's: every weight is exp(0) = 1, so the loss and the
    gradient are bit for bit the uncorrected ones, whatever C and the floor are."""
    log_probs, advantages, mask = batch()
    old = log_probs.detach()
    plain = step(log_probs, advantages, mask, loss_type, old)
    weights, meta = compute_is_weights(old, old.clone(), mask, correction, level, cap=1.0,
                                       floor=1.0)
    assert torch.equal(weights, torch.ones_like(weights)) and not meta["is_clipped"].any()
    corrected = step(log_probs, advantages, mask, loss_type, old, is_weights=weights)
    assert torch.equal(corrected[0], plain[0]) and torch.equal(corrected[1], plain[1])
    # sampler_as_old: the sampler's log-probs are pi_old, here the trainer's own
    as_old = step(log_probs, advantages, mask, loss_type, old.clone())
    assert torch.equal(as_old[0], plain[0]) and torch.equal(as_old[1], plain[1])


def test_tis_truncates_the_weight_at_the_cap():
    """Token level: w = min(pi / pi_sampler, C), raised to the floor; sequence level: the product
    of a response's token ratios (the sum of its log-ratios over the mask), truncated."""
    old = torch.log(torch.tensor([[0.5, 0.9, 0.2], [0.4, 0.3, 0.8]]))
    sampler = torch.log(torch.tensor([[0.1, 0.9, 0.4], [0.8, 0.1, 0.2]]))  # ratios 5 1 .5 | .5 3 4
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    w, meta = compute_is_weights(old, sampler, mask, "tis", "token", cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[2.0, 1.0, 0.5], [0.5, 2.0, 1.0]]))
    assert meta["is_clipped"].tolist() == [[True, False, False], [False, True, False]]
    w, _ = compute_is_weights(old, sampler, mask, "tis", "token", cap=2.0, floor=0.8)
    torch.testing.assert_close(w, torch.tensor([[2.0, 1.0, 0.8], [0.8, 2.0, 1.0]]))
    w, meta = compute_is_weights(old, sampler, mask, "tis", "sequence", cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[2.0], [1.5]]))  # 5 x 1 x .5 = 2.5; .5 x 3
    assert meta["is_clipped"].tolist() == [[True] * 3, [False] * 3]


def test_mis_drops_tokens_and_responses_past_the_cap():
    old = torch.log(torch.tensor([[0.5, 0.9, 0.2], [0.4, 0.3, 0.8]]))
    sampler = torch.log(torch.tensor([[0.1, 0.9, 0.4], [0.8, 0.1, 0.2]]))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    w, _ = compute_is_weights(old, sampler, mask, "mis", "token", cap=2.0, floor=0.6)
    torch.testing.assert_close(w, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    w, _ = compute_is_weights(old, sampler, mask, "mis", "sequence", cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[0.0], [1.5]]))


@pytest.mark.parametrize("loss_type", ["grpo_clip", "reinforce_with_baseline"])
def test_a_masked_token_gets_no_gradient_and_the_rest_a_weighted_one(loss_type):
    """MIS: the token past C has gradient exactly 0; TIS: every token's gradient is its weight
    times the uncorrected one (on-policy the ratio is 1, so nothing is clipped by PPO)."""
    log_probs, advantages, mask = batch()
    old = log_probs.detach()
    sampler = old.clone()
    sampler[0, 2] -= 3.0  # pi / pi_sampler = e^3 > C on one token
    sampler[1, 0] += 0.5  # e^-0.5 on another
    _, plain = step(log_probs, advantages, mask, loss_type, old)
    w, _ = compute_is_weights(old, sampler, mask, "mis", "token", cap=2.0)
    _, masked = step(log_probs, advantages, mask, loss_type, old, is_weights=w)
    assert masked[0, 2] == 0 and plain[0, 2] != 0
    torch.testing.assert_close(masked[1, 0], plain[1, 0] * torch.exp(torch.tensor(-0.5)))
    w, _ = compute_is_weights(old, sampler, mask, "tis", "token", cap=2.0)
    _, truncated = step(log_probs, advantages, mask, loss_type, old, is_weights=w)
    torch.testing.assert_close(truncated, plain * w)
    w, _ = compute_is_weights(old, sampler, mask, "mis", "sequence", cap=2.0)
    _, whole = step(log_probs, advantages, mask, loss_type, old, is_weights=w)
    assert torch.equal(whole[0], torch.zeros_like(whole[0]))  # e^3 x ... > C: the whole response
    assert torch.equal(whole[2:], plain[2:])  # the untouched responses


def test_sampler_mismatch_statistics():
    trainer = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]))
    sampler = torch.log(torch.tensor([[0.5, 0.4, 0.5], [0.5, 0.5, 0.9]]))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    stats = grpo.sampler_mismatch(trainer, sampler, mask)  # ratios 1 1.25 1 1 1 on 5 tokens
    assert stats["sampler_ratio_mean"] == pytest.approx(1.05)
    assert stats["sampler_ratio_outside"] == pytest.approx(0.2)
    assert stats["sampler_kl"] == pytest.approx((0.25 - torch.log(torch.tensor(1.25))).item() / 5)


# ---- the sampler: its log-probs, its nucleus, its precision ----------------------------------
def tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, n_head=2, d_model=32, max_seq_len=24)).eval()


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_generate_reports_the_log_probs_of_the_tokens_it_drew(temperature):
    """At the full distribution they are the trainer's (a full forward at the same temperature),
    up to the KV cache's rounding; after end-of-text they are 0, like the mask."""
    model = tiny_model()
    prompt = torch.tensor([TOK.encode("12+34=")])
    torch.manual_seed(1)
    ids, mask, sampled = generate(model, prompt, 12, TOK.eos_id, TOK.pad_id, num_samples=16,
                                  temperature=temperature, return_log_probs=True)
    seq = torch.cat([prompt.repeat(16, 1), ids], dim=1)
    with torch.no_grad():
        scored = get_response_log_probs(model, seq[:, :-1], seq[:, 1:],
                                        temperature=temperature)["log_probs"][:, 5:]
    torch.testing.assert_close(sampled, scored * mask, atol=1e-5, rtol=1e-5)
    assert torch.equal(sampled[mask == 0], torch.zeros_like(sampled[mask == 0]))
    torch.manual_seed(1)  # asking for the log-probs draws the same tokens
    again, _ = generate(model, prompt, 12, TOK.eos_id, TOK.pad_id, num_samples=16,
                        temperature=temperature)
    assert torch.equal(again, ids)


def test_truncate_logits_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.15, 0.5, 0.05, 0.3]]))
    kept = lambda p: torch.isfinite(truncate_logits(logits, p))[0].tolist()
    assert kept(1.0) == [True] * 4
    assert kept(0.5) == [False, True, False, False]  # 0.5 alone reaches 0.5
    assert kept(0.7) == [False, True, False, True]  # 0.5 < 0.7 <= 0.8
    assert kept(0.81) == [True, True, False, True]


def test_a_truncated_sampler_reports_its_renormalised_log_probs():
    """With a nucleus, pi_sampler = pi / (the nucleus' mass) >= pi on every drawn token; with a
    vanishing nucleus the sampler is greedy and every log-prob is 0."""
    model = tiny_model()
    prompt = torch.tensor([TOK.encode("12+34=")])
    torch.manual_seed(2)
    ids, mask, sampled = generate(model, prompt, 10, TOK.eos_id, TOK.pad_id, num_samples=16,
                                  temperature=1.0, top_p=0.8, return_log_probs=True)
    seq = torch.cat([prompt.repeat(16, 1), ids], dim=1)
    with torch.no_grad():
        scored = get_response_log_probs(model, seq[:, :-1], seq[:, 1:])["log_probs"][:, 5:]
    assert (sampled[mask == 1] >= scored[mask == 1] - 1e-6).all()
    assert (sampled[mask == 1] > scored[mask == 1] + 1e-3).any()
    greedy, _ = generate(model, prompt, 10, TOK.eos_id, TOK.pad_id, temperature=0.0)
    ids, mask, sampled = generate(model, prompt, 10, TOK.eos_id, TOK.pad_id, temperature=1.0,
                                  top_p=1e-6, return_log_probs=True)
    assert torch.equal(ids, greedy) and torch.equal(sampled, torch.zeros_like(sampled))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_low_precision_sampler_is_close_to_the_trainer_but_not_equal(dtype):
    model = tiny_model()
    sampler = grpo.make_sampler(model, grpo.Config(sampler_dtype=str(dtype)[6:]))
    assert sampler.head.weight.dtype == dtype and model.head.weight.dtype == torch.float32
    prompt = torch.tensor([TOK.encode("12+34=")])
    torch.manual_seed(3)
    ids, mask, sampled = generate(sampler, prompt, 10, TOK.eos_id, TOK.pad_id, num_samples=8,
                                  return_log_probs=True)
    seq = torch.cat([prompt.repeat(8, 1), ids], dim=1)
    with torch.no_grad():
        scored = get_response_log_probs(model, seq[:, :-1], seq[:, 1:])["log_probs"][:, 5:]
    difference = (sampled - scored)[mask == 1].abs()
    assert sampled.dtype == torch.float32 and 0 < difference.max() < 0.1


def test_a_stale_sampler_holds_the_weights_of_n_steps_ago():
    model, history = tiny_model(), []
    sampler = grpo.make_sampler(model, grpo.Config(sampler_stale_steps=2))
    seen = []
    for step in range(5):
        with torch.no_grad():
            model.head.weight.fill_(float(step))  # the trainer's weights at this step
        grpo.sync_sampler(sampler, model, history, stale_steps=2)
        seen.append(sampler.head.weight[0, 0].item())
    assert seen == [0.0, 0.0, 0.0, 1.0, 2.0] and len(history) == 3
    assert grpo.make_sampler(model, grpo.Config()) is None  # no flag: the policy samples itself


@pytest.mark.parametrize("argv", [["--sampler_top_p", "0"], ["--sampler_stale_steps", "-1"],
                                  ["--sampler_is_cap", "0"],
                                  ["--sampler_is_floor", "3", "--sampler_is_cap", "2"],
                                  ["--sampler_correction", "sampler_as_old", "--loss_type",
                                   "reinforce_with_baseline"],
                                  ["--sampler_correction_level", "sequence"],
                                  ["--sampler_correction", "nope"],
                                  ["--baseline", "maxrl", "--use_std_normalization"],
                                  ["--baseline", "maxrl", "--no-use_std_normalization",
                                   "--loss_type", "no_baseline"]])
def test_sampler_and_maxrl_flags_that_do_not_fit_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        runs.parse_config(grpo.Config, argv)
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


# ---- MaxRL -----------------------------------------------------------------------------------
def maxrl(rewards, group_size, eps=1e-6):
    it = iter(rewards)
    fn = lambda r, g: {"reward": next(it), "format_reward": 1.0, "answer_reward": 0.0}
    return compute_group_normalized_rewards(fn, ["x"] * len(rewards), ["y"] * len(rewards),
                                            group_size, eps, False, baseline="maxrl")[0]


def test_maxrl_advantage_on_hand_computed_values():
    """A = (r - mean) / (mean + eps): one right of four (mean 1/4) gives 3 and -1, two of four
    +-1; all wrong (mean 0) and all right give exactly 0."""
    rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    eps = 1e-6
    a, b = 0.75 / (0.25 + eps), 0.25 / (0.25 + eps)
    expected = [a, -b, -b, -b] + [0.5 / (0.5 + eps)] * 2 + [-0.5 / (0.5 + eps)] * 2 + [0.0] * 8
    torch.testing.assert_close(maxrl(rewards, 4, eps), torch.tensor(expected))
    assert torch.equal(maxrl(rewards, 4, eps)[8:], torch.zeros(8))
    assert torch.equal(maxrl([0.0] * 4, 4, eps=0.0), torch.zeros(4))  # no 0 / 0 even at eps 0


def test_maxrl_matches_cs336_2026_and_the_rlhf_book():
    """CS336 (2026) adds advantage_eps to the mean: its test's rewards [1, 0, 0, 1] in groups of 2
    give +-0.999998; the rlhf-book's compute_maxrl_advantages divides by the mean itself."""
    torch.testing.assert_close(maxrl([1.0, 0.0, 0.0, 1.0], 2),
                               torch.tensor([0.999998, -0.999998, -0.999998, 0.999998]))
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    mean = rewards.view(-1, 4).mean(dim=1, keepdim=True)
    book = torch.where(mean > 0, (rewards.view(-1, 4) - mean) / mean, 0.0).flatten()
    torch.testing.assert_close(maxrl(rewards.tolist(), 4, eps=0.0), book)


def test_maxrl_gradient_weight_is_correct_mean_minus_group_mean():
    """A_i / G = r_i / K - 1 / G (K right answers of G): the gradient is the mean grad log pi over
    the right responses minus the mean over all, whatever K is (an estimate of grad log p)."""
    for k in range(1, 9):
        rewards = [1.0] * k + [0.0] * (8 - k)
        weights = maxrl(rewards, 8, eps=0.0) / 8
        torch.testing.assert_close(weights, torch.tensor([r / k - 1 / 8 for r in rewards]))


def test_maxrl_refuses_negative_rewards_and_the_std():
    with pytest.raises(runs.UserError, match="rewards >= 0"):
        maxrl([1.0, -1.0, 0.0, 0.0], 4)
    fn = lambda r, g: {"reward": 1.0, "format_reward": 1.0, "answer_reward": 1.0}
    with pytest.raises(runs.UserError, match="not the std"):
        compute_group_normalized_rewards(fn, ["x"] * 4, ["y"] * 4, 4, 1e-6, True, baseline="maxrl")


# ---- the whole loop --------------------------------------------------------------------------
def test_a_mismatched_run_logs_its_statistics_and_a_default_run_does_not(small_sft, tmp_path,
                                                                         no_curves):
    ckpt, _ = small_sft
    common = dict(digits=2, sft_checkpoint=ckpt, n_test=50, group_size=4, rollout_batch_size=32,
                  train_batch_size=32, gradient_accumulation_steps=2, steps=3, eval_every=3,
                  samples_every=1000, device="cpu")
    grpo.train(grpo.Config(**common, out_dir=str(tmp_path / "plain")))
    grpo.train(grpo.Config(**common, out_dir=str(tmp_path / "mismatch"), sampler_dtype="bfloat16",
                           sampler_stale_steps=1, sampler_correction="mis", sampler_is_cap=1.05))
    columns = {}
    for name in ("plain", "mismatch"):
        with open(tmp_path / name / "metrics.csv") as f:
            columns[name] = f.readline().strip().split(",")
    stats = ["sampler_ratio_mean", "sampler_ratio_std", "sampler_ratio_outside", "sampler_kl",
             "is_weight_mean", "is_clipped_fraction"]
    assert not set(stats) & set(columns["plain"]) and set(stats) <= set(columns["mismatch"])
    assert [c for c in columns["mismatch"] if c not in stats] == columns["plain"]


def test_cli_runs_a_stale_corrected_sampler(small_sft, tmp_path):
    ckpt, _ = small_sft
    result = run_in_process("grpo.py", "--digits", "2", "--sft_checkpoint", ckpt, "--n_test", "20",
                            "--rollout_batch_size", "16", "--train_batch_size", "16",
                            "--gradient_accumulation_steps", "1", "--steps", "2", "--eval_every",
                            "2", "--device", "cpu", "--sampler_stale_steps", "1",
                            "--sampler_correction", "tis", "--sampler_correction_level",
                            "sequence", "--out_dir", str(tmp_path / "g"))
    assert result.returncode == 0, result.stderr
    assert "sampler_kl" in result.stdout
