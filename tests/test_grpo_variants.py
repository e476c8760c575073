"""grpo.py's variants from TRL, as properties that need no TRL (tests/test_trl_conformance.py
checks them against TRL's own code): on-policy each has GRPO's gradient; off-policy CISPO keeps
a damped gradient where the clip drops one; RLOO's advantage is G / (G - 1) times the group
mean's; the flags that make no sense together exit 2."""
import pytest
import torch

import grpo
import runs


def test_on_policy_every_variant_has_grpos_gradient():
    """Ratio 1 everywhere: GSPO's sequence ratio and CISPO's weight change nothing."""
    torch.manual_seed(0)
    logits = torch.randn(6, 9)
    mask = (torch.arange(9)[None] < torch.tensor([[9], [4], [7], [1], [9], [5]])).float()
    advantages = torch.randn(6, 1)
    grads = []
    for loss_type, level in (("grpo_clip", "token"), ("grpo_clip", "sequence"),
                             ("cispo", "token"), ("cispo", "sequence")):
        log_probs = logits.clone().requires_grad_()
        grpo.grpo_microbatch_train_step(log_probs, mask, 1, loss_type, advantages=advantages,
                                        old_log_probs=log_probs.detach(), cliprange=0.2,
                                        ratio_level=level)
        grads.append(log_probs.grad)
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-6, atol=1e-8)


def test_sequence_ratio_is_the_mean_token_log_ratio():
    log_probs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    old = torch.tensor([[-1.5, -2.5, -3.0], [-0.5, -1.5, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    ratio = grpo.importance_ratio(log_probs, old, mask, "sequence")  # (B, 1)
    torch.testing.assert_close(ratio, torch.tensor([[torch.e ** (1 / 3)],
                                                    [torch.e ** 0.5]]))


def test_cispo_damps_where_the_clip_drops():
    """A token past the cap with A > 0: PPO's clip gives it no gradient, CISPO a capped one."""
    log_probs = torch.tensor([[0.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0]])  # ratios e and 1
    advantages = torch.tensor([[1.0]])
    for loss_type, first_token_grad in (("grpo_clip", 0.0), ("cispo", -1.2)):
        log_probs.grad = None
        loss, _ = grpo.compute_policy_gradient_loss(log_probs, loss_type, advantages=advantages,
                                                    old_log_probs=old, cliprange=0.2)
        loss.sum().backward()
        assert log_probs.grad[0, 0].item() == pytest.approx(first_token_grad)
        assert log_probs.grad[0, 1].item() == pytest.approx(-1.0)


def test_leave_one_out_is_group_mean_scaled():
    rewards = [1.0, 0.0, 0.0, 1.0, 0.3, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    scores = lambda: iter(rewards)

    def advantages(**kwargs):
        it = scores()
        fn = lambda r, g: {"reward": next(it), "format_reward": 1.0, "answer_reward": 0.0}
        return grpo.compute_group_normalized_rewards(fn, ["x"] * 12, ["y"] * 12, 4, 1e-6,
                                                     False, **kwargs)[0]
    loo, mean = advantages(baseline="leave_one_out"), advantages()
    torch.testing.assert_close(loo, mean * 4 / 3)
    assert loo[0].item() == pytest.approx(1.0 - (0.0 + 0.0 + 1.0) / 3)
    assert torch.equal(loo[8:], torch.zeros(4))  # no spread, exactly 0


@pytest.mark.parametrize("argv", [["--ratio_level", "sequence", "--loss_type", "no_baseline"],
                                  ["--baseline", "leave_one_out", "--group_size", "1",
                                   "--no-use_std_normalization", "--rollout_batch_size", "8",
                                   "--train_batch_size", "8"],
                                  ["--baseline", "nope"], ["--ratio_level", "word"]])
def test_variant_flags_that_do_not_fit_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        runs.parse_config(grpo.Config, argv)
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
