"""gae.py: TD(0), Monte Carlo and GAE(lambda) on right-padded batches, whitening, and the demo."""

import pytest
import torch

import gae
from conftest import run_in_process


def batch(seed=0, B=4, T=7):
    """Random rewards and values with rows of lengths T, T-2, 1, 4; garbage on the padding."""
    g = torch.Generator().manual_seed(seed)
    rewards, values = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    lengths = torch.tensor([T, T - 2, 1, 4][:B])
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    return rewards, values, mask, lengths


def reference_gae(rewards, values, length, gamma, lam):
    """The O(T^2) definition on one unpadded row: A_t = sum_l (gamma lam)^l delta_{t+l}."""
    r, v = rewards[:length].double(), torch.cat([values[:length].double(), torch.zeros(1, dtype=torch.float64)])
    deltas = r + gamma * v[1:] - v[:-1]
    return torch.stack([sum((gamma * lam) ** l * deltas[t + l] for l in range(length - t))
                        for t in range(length)]).float()


def test_lambda_0_is_the_td_residual():
    rewards, values, mask, lengths = batch()
    gamma = 0.9
    advantages = gae.gae_advantages(rewards, values, mask, gamma, lam=0.0)
    for i, n in enumerate(lengths.tolist()):
        next_values = torch.cat([values[i, 1:n], torch.zeros(1)])  # terminal after the last step
        expected = rewards[i, :n] + gamma * next_values - values[i, :n]
        torch.testing.assert_close(advantages[i, :n], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(advantages, gae.td0_advantages(rewards, values, mask, gamma), atol=1e-6, rtol=0)


def test_lambda_1_is_the_discounted_return_minus_the_value():
    rewards, values, mask, lengths = batch(1)
    gamma = 0.8
    advantages = gae.gae_advantages(rewards, values, mask, gamma, lam=1.0)
    for i, n in enumerate(lengths.tolist()):
        returns = torch.stack([sum(gamma ** l * rewards[i, t + l] for l in range(n - t)) for t in range(n)])
        torch.testing.assert_close(advantages[i, :n], returns - values[i, :n], atol=1e-6, rtol=0)
    torch.testing.assert_close(advantages, gae.mc_advantages(rewards, values, mask, gamma), atol=1e-6, rtol=0)


def test_gamma_lambda_1_with_zero_values_is_reward_to_go():
    rewards, _, mask, _ = batch(2)
    advantages = gae.gae_advantages(rewards, torch.zeros_like(rewards), mask, 1.0, 1.0)
    reward_to_go = (rewards * mask).flip(1).cumsum(1).flip(1) * mask
    torch.testing.assert_close(advantages, reward_to_go, atol=1e-6, rtol=0)


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.5), (0.99, 0.0), (0.7, 1.0)])
def test_recursion_equals_the_quadratic_definition(gamma, lam):
    rewards, values, mask, lengths = batch(3, B=4, T=9)
    advantages = gae.gae_advantages(rewards, values, mask, gamma, lam)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(advantages[i, :n], reference_gae(rewards[i], values[i], n, gamma, lam),
                                   atol=1e-6, rtol=0)
    assert (advantages[mask == 0] == 0).all()  # zero on padding


@pytest.mark.parametrize("estimator", ["td0", "mc", "gae"])
def test_padding_after_the_end_changes_nothing_before_it(estimator):
    rewards, values, mask, _ = batch(4)
    fn = {"td0": lambda r, v, m: gae.td0_advantages(r, v, m, 0.9),
          "mc": lambda r, v, m: gae.mc_advantages(r, v, m, 0.9),
          "gae": lambda r, v, m: gae.gae_advantages(r, v, m, 0.9, 0.8)}[estimator]
    before = fn(rewards, values, mask)
    noisy_r = torch.where(mask.bool(), rewards, torch.full_like(rewards, 1e3))  # garbage on the padding
    noisy_v = torch.where(mask.bool(), values, torch.full_like(values, -7.0))
    longer = lambda x, fill: torch.cat([x, torch.full((x.shape[0], 3), fill)], dim=1)  # 3 more padded steps
    after = fn(longer(noisy_r, 5.0), longer(noisy_v, 5.0), longer(mask, 0.0))
    torch.testing.assert_close(after[:, :before.shape[1]], before, atol=1e-6, rtol=0)
    assert (after[:, before.shape[1]:] == 0).all()


def test_a_batch_equals_each_sequence_alone():
    rewards, values, mask, lengths = batch(5)
    together = gae.gae_advantages(rewards, values, mask, 0.95, 0.9)
    for i, n in enumerate(lengths.tolist()):
        alone = gae.gae_advantages(rewards[i:i + 1, :n], values[i:i + 1, :n], torch.ones(1, n), 0.95, 0.9)
        torch.testing.assert_close(together[i, :n], alone[0], atol=1e-6, rtol=0)


def test_whitened_advantages_have_masked_mean_0_and_std_1():
    rewards, values, mask, _ = batch(6)
    advantages = gae.gae_advantages(rewards * 3 + 2, values, mask, 1.0, 0.95)
    white = gae.whiten(advantages, mask)
    valid = white[mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert valid.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    assert (white[mask == 0] == 0).all()


def test_demo_shows_the_trade_off(tmp_path):
    """TD(0): low variance, biased. Monte Carlo: unbiased, high variance. GAE in between."""
    table = gae.main(["--episodes", "400", "--out_dir", str(tmp_path)])
    td0, mc, mid = table[0], table[-1], [row for row in table if 0 < row["lambda"] < 1]
    assert td0["estimator"] == "TD(0)" and mc["estimator"] == "Monte Carlo"
    assert td0["variance"] < 0.1 * mc["variance"] and mc["bias2"] < 0.1 * td0["bias2"]
    for row in mid:
        assert td0["variance"] <= row["variance"] <= mc["variance"]
        assert mc["bias2"] <= row["bias2"] <= td0["bias2"]
    assert (tmp_path / "bias_variance.png").stat().st_size > 1000


def test_true_values_solve_the_bellman_equation():
    v = gae.true_values(19, 1.0)
    torch.testing.assert_close(torch.tensor(v[1:]), torch.arange(1, 20, dtype=torch.float64) / 10 - 1,
                               atol=1e-9, rtol=0)


@pytest.mark.parametrize("args, message", [(["--no-such-flag"], "unrecognized arguments"),
                                           (["--gamma", "1.5"], "--gamma"),
                                           (["--episodes", "x"], "invalid int value")])
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gae.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_script_bad_flag_exits_2_without_traceback():
    res = run_in_process("gae.py", "--no-such-flag")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == "gae.py: error: unrecognized arguments: --no-such-flag"
