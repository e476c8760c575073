"""ppo.py: per-token rewards, the clipped losses, the reward model's loss, the training loop's
invariants (ratio 1 at the first minibatch, frozen reference, determinism), its outputs, its
command line, and that it learns."""
import copy
import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import ppo
import reward_model
import runs
from conftest import ROOT, run_in_process
from gae import gae_advantages
from runs import load_checkpoint, parse_config
from toy_model import GPT, GPTConfig, ScalarHead, get_response_log_probs, kl_penalty

pytestmark = pytest.mark.usefixtures("no_curves")  # their runs draw no curves.png (conftest)


def response_log_probs(model, seq, P):
    """log pi(o_t) of the response tokens of (B, P + T) sequences: (B, T)."""
    return get_response_log_probs(model, seq[:, :-1], seq[:, 1:])["log_probs"][:, P - 1:]

# A few seconds per run: the small SFT model, few and small rollouts, a short held-out set.
TINY = dict(digits=2, device="cpu", steps=3, prompts_per_step=16, n_minibatches=2, n_test=20,
            eval_every=2, samples_every=1000, rm_prompts=64, rm_samples=4, rm_steps=3, rm_batch_size=8)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_lambda_gamma_1_zero_values_beta_0_every_advantage_is_the_score():
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]).float()
    scores = torch.tensor([0.7, -1.0, 2.5])
    kl = torch.randn(3, 4)  # ignored at beta 0
    rewards = ppo.compute_ppo_rewards(scores, kl, mask, beta=0.0)
    advantages = gae_advantages(rewards, torch.zeros(3, 4), mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, scores[:, None] * mask, atol=1e-6, rtol=0)


def test_rewards_are_minus_beta_kl_plus_the_score_on_the_last_token():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]]).float()
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    rewards = ppo.compute_ppo_rewards(torch.tensor([1.0, 0.0]), kl, mask, beta=0.5)
    expected = torch.tensor([[-0.05, -0.1, -0.15 + 1.0], [-0.2, -0.25, 0.0]])
    torch.testing.assert_close(rewards, expected, atol=1e-6, rtol=0)


def toy_rollout(seed=0, B=6, P=4, T=5):
    """A random 1-layer model and random right-padded sequences: (model, seq, response_mask)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=1, d_model=32, n_head=2, max_seq_len=16)).eval()
    seq = torch.randint(0, 19, (B, P + T))
    lengths = torch.tensor([5, 3, 1, 5, 4, 2])[:B]
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    return model, seq, mask


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_reward_is_zero_when_policy_equals_reference(estimator):
    policy, seq, mask = toy_rollout()
    reference = copy.deepcopy(policy)
    with torch.inference_mode():
        log_probs = response_log_probs(policy, seq, 4)
        ref_log_probs = response_log_probs(reference, seq, 4)
    kl = kl_penalty(log_probs, ref_log_probs, estimator)
    assert (kl == 0).all()
    scores = torch.randn(len(seq))
    rewards = ppo.compute_ppo_rewards(scores, kl, mask, beta=0.1)
    assert (rewards.sum(dim=1) == scores).all()


def test_kl_estimators_golden_values():
    log_p, log_q = torch.tensor([-0.5, -2.0]), torch.tensor([-1.0, -1.0])  # log pi, log pi_ref
    log_r = log_q - log_p  # [-0.5, 1.0]
    torch.testing.assert_close(kl_penalty(log_p, log_q, "k1"), torch.tensor([0.5, -1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(kl_penalty(log_p, log_q, "k2"), 0.5 * log_r ** 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(kl_penalty(log_p, log_q, "k3"), log_r.exp() - 1 - log_r, atol=1e-6, rtol=0)


def test_first_minibatch_ratio_is_1_and_nothing_is_clipped():
    policy, seq, mask = toy_rollout(1)
    critic = ScalarHead(copy.deepcopy(policy))
    with torch.no_grad():
        critic.head.bias.fill_(0.3)  # non-zero values, so that the value clip is really exercised
    with torch.inference_mode():
        old_log_probs = response_log_probs(policy, seq, 4)
        old_values = critic(seq[:, :-1])[:, 3:]
    advantages, returns = torch.randn(mask.shape), torch.randn(mask.shape) * 5
    idx = torch.tensor([4, 0, 2])  # a shuffled minibatch
    out = get_response_log_probs(policy, seq[idx, :-1], seq[idx, 1:], return_token_entropy=True)
    log_probs, entropy = out["log_probs"][:, 3:], out["token_entropy"][:, 3:]
    values = critic(seq[idx, :-1])[:, 3:]
    _, meta = ppo.ppo_minibatch_train_step(log_probs, entropy, values, mask[idx], old_log_probs[idx],
                                            old_values[idx], advantages[idx], returns[idx], 0.2, 0.2, 0.5, 0.01)
    assert meta["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert meta["clipfrac"] == 0 and meta["vf_clipfrac"] == 0
    assert abs(meta["approx_kl_k1"]) < 1e-6 and abs(meta["approx_kl_k3"]) < 1e-6
    assert all(p.grad is not None for p in policy.parameters()) and critic.head.weight.grad is not None


def test_clipped_surrogate_golden_values():
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    ratio = torch.tensor([[1.5, 0.5, 1.5, 0.5]])
    loss, meta = ppo.compute_ppo_clip_loss(advantages, ratio.log(), torch.zeros(1, 4), cliprange=0.2)
    # A > 0: the gain is capped at 1.2; A < 0: the loss is capped at -0.8 from below.
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -0.5, 1.5, 0.8]]), atol=1e-6, rtol=0)
    assert meta["clipped"].tolist() == [[True, False, False, True]]


def test_clipped_value_loss_golden_values():
    old_values = torch.tensor([0.0, 0.0, 0.0])
    values = torch.tensor([0.5, 0.1, -0.5])
    returns = torch.tensor([1.0, 1.0, 1.0])
    loss, meta = ppo.compute_value_loss(values, old_values, returns, cliprange_value=0.2)
    # clipped values 0.2, 0.1, -0.2: the larger of the two squared errors wins
    torch.testing.assert_close(loss, 0.5 * torch.tensor([0.64, 0.81, 2.25]), atol=1e-6, rtol=0)
    assert meta["clipped"].tolist() == [True, False, False]


def test_explained_variance():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    returns = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    assert ppo.explained_variance(returns, returns, mask) == pytest.approx(1.0, abs=1e-6)
    assert ppo.explained_variance(torch.full_like(returns, 2.0), returns, mask) == pytest.approx(0.0, abs=1e-6)
    values = torch.tensor([[1.0, 2.0, 2.0, -50.0]])  # residuals 0, 0, 1: variance 2/9 against 2/3
    assert ppo.explained_variance(values, returns, mask) == pytest.approx(2 / 3, abs=1e-6)


def test_reward_model_loss_is_softplus_and_shift_invariant():
    chosen, rejected = torch.tensor([1.0, -0.5, 3.0]), torch.tensor([0.0, 0.5, 3.5])
    loss = reward_model.bradley_terry_loss(chosen, rejected)
    expected = F.softplus(-(chosen - rejected)).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert loss.item() == pytest.approx(-F.logsigmoid(chosen - rejected).mean().item(), abs=1e-6)
    assert reward_model.bradley_terry_loss(chosen + 7.0, rejected + 7.0).item() == pytest.approx(loss.item(), abs=1e-6)


def test_scalar_head_starts_at_zero():
    model, seq, mask = toy_rollout(2)
    head = ScalarHead(copy.deepcopy(model))
    assert head(seq).shape == seq.shape and (head(seq) == 0).all()  # the critic's V(s_t), at first 0


def test_seeded_run_is_deterministic_and_moves_policy_and_critic_not_reference(small_sft, tmp_path,
                                                                                 monkeypatch):
    path, _ = small_sft
    scored, critics = [], []  # every network ppo.py takes log-probs with; the critic it builds
    real_log_probs, real_head = ppo.get_response_log_probs, ppo.ScalarHead

    def spy_log_probs(model, *args, **kw):
        if all(model is not m for m in scored):
            scored.append(model)
        return real_log_probs(model, *args, **kw)
    monkeypatch.setattr(ppo, "get_response_log_probs", spy_log_probs)
    monkeypatch.setattr(ppo, "ScalarHead", lambda body: critics.append(real_head(body)) or critics[-1])
    for name in ("a", "b"):
        ppo.train(ppo.Config(**TINY, sft_checkpoint=path, out_dir=str(tmp_path / name)))
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert drop(read_csv(tmp_path / "a" / "metrics.csv")) == drop(read_csv(tmp_path / "b" / "metrics.csv"))
    start = load_checkpoint(path, digits=2)[0].state_dict()
    trained = [load_checkpoint(str(tmp_path / n / "model.pt"), digits=2)[0].state_dict() for n in "ab"]
    policy, reference = scored[:2]  # run a's: the policy samples and is scored first, then pi_ref
    assert all(torch.equal(policy.state_dict()[k], trained[0][k]) for k in start)
    for key, value in start.items():
        assert torch.equal(reference.state_dict()[key], value)  # frozen
        assert torch.equal(trained[0][key], trained[1][key])  # the same seed, the same weights
    assert any(not torch.equal(trained[0][k], v) for k, v in start.items())
    assert any(not torch.equal(critics[0].body.state_dict()[k], v) for k, v in start.items())
    assert critics[0].head.weight.abs().sum() > 0


def gae_by_hand(rewards, values, mask, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, summed term by term (not gae.py's recursion)."""
    B, T = rewards.shape
    next_values = torch.cat([values[:, 1:], torch.zeros(B, 1)], dim=1) * mask
    deltas = (rewards + gamma * next_values - values) * mask
    return torch.stack([sum((gamma * lam) ** (l - t) * deltas[:, l] for l in range(t, T))
                        for t in range(T)], dim=1) * mask


@pytest.mark.parametrize("lam, whiten", [(0.0, False), (1.0, False), (0.7, True)])
def test_the_loss_sees_gae_advantages_and_returns_of_the_given_lambda(small_sft, tmp_path,
                                                                    monkeypatch, lam, whiten):
    """What the minibatch step receives, against the rollout's own rewards and values: advantages
    = GAE(gamma, lambda) (TD(0) at 0, Monte Carlo at 1), whitened if asked, and the critic's
    targets R_t = A_t + V_t from the advantages before whitening. Step 2, where the critic's
    values are no longer 0 and lambda matters; beta > 0 puts a reward on every token."""
    path, _ = small_sft
    seen = {}
    real_rewards, real_step = ppo.compute_ppo_rewards, ppo.ppo_minibatch_train_step
    monkeypatch.setattr(ppo, "compute_ppo_rewards", lambda *a: seen.setdefault(
        "rewards", []).append(real_rewards(*a)) or seen["rewards"][-1])
    monkeypatch.setattr(ppo, "ppo_minibatch_train_step", lambda *a: seen.setdefault(
        "step", []).append(a) or real_step(*a))
    monkeypatch.setattr(torch, "randperm", lambda n, **kw: torch.arange(n))  # rollout order
    # A 22-token budget cuts most responses before end-of-text: they score missing_eos_penalty, so
    # step 1's returns are not all 0 (as they are when no sampled answer is right) and V moves.
    ppo.train(ppo.Config(**{**TINY, "steps": 2, "n_minibatches": 1, "ppo_epochs": 1}, lam=lam,
                         gamma=0.9, beta=0.05, whiten_advantages=whiten, critic_lr=1e-2,
                         max_new_tokens=22, missing_eos_penalty=-1.0,
                         sft_checkpoint=path, out_dir=str(tmp_path)))
    _, _, _, mask, _, values, advantages, returns, *_ = seen["step"][1]  # step 2's minibatch
    assert values.abs().max() > 1e-3  # the critic has moved: V is not 0
    expected = gae_by_hand(seen["rewards"][1], values, mask, 0.9, lam)
    assert torch.allclose(returns, (expected + values) * mask, atol=1e-5)
    if whiten:
        n = mask.sum()
        mean = (expected * mask).sum() / n
        std = (((expected - mean) * mask) ** 2).sum().div(n).sqrt()
        expected = (expected - mean) / std * mask
    assert torch.allclose(advantages, expected, atol=1e-4)


def test_one_epoch_one_minibatch_logs_ratio_1_and_no_clipping(small_sft, tmp_path):
    """Every minibatch is a first minibatch: the logged ratio is 1 and clip fractions 0 at every step."""
    path, _ = small_sft
    ppo.train(ppo.Config(**{**TINY, "n_minibatches": 1, "ppo_epochs": 1}, sft_checkpoint=path,
                         out_dir=str(tmp_path)))
    for row in read_csv(tmp_path / "metrics.csv")[1:]:  # after step 0, the starting evaluation
        assert float(row["ratio"]) == pytest.approx(1.0, abs=1e-6)
        assert float(row["clipfrac"]) == 0 and float(row["vf_clipfrac"]) == 0


def test_reward_model_run(small_sft, tmp_path):
    path, _ = small_sft
    summary = ppo.train(ppo.Config(**TINY, reward="model", sft_checkpoint=path, out_dir=str(tmp_path)))
    assert 0 <= summary["reward_model_pair_accuracy"] <= 1
    assert {"reward_model_prefers_longer", "reward_model_price"} <= set(summary)
    saved = reward_model.load_reward_model(str(tmp_path / "reward_model.pt"))  # for best-of-n
    assert saved.price.item() == pytest.approx(summary["reward_model_price"])
    rows = read_csv(tmp_path / "metrics.csv")
    rows = rows[1:]  # after the step-0 row of the starting evaluation
    assert len(rows) == 3 and all(row["score"] != row["accuracy"] for row in rows)


def test_saved_reward_model_is_the_score(small_sft, tmp_path):
    """--rm_checkpoint scores with the saved reward model, normalised as saved, and trains none:
    the same seed with the same model gives the same rollouts and scores; a copy whose saved mean
    is one standard deviation lower scores the same first rollout (drawn before any update)
    exactly 1 higher on every response that ends (the others get missing_eos_penalty); a bad
    path is one line."""
    path, _ = small_sft
    ppo.train(ppo.Config(**TINY, reward="model", sft_checkpoint=path, out_dir=str(tmp_path / "a")))
    saved = str(tmp_path / "a" / "reward_model.pt")
    shifted = reward_model.load_reward_model(saved)
    mean, std = shifted.norm
    shifted.norm = (mean - std, std)
    reward_model.save_reward_model(str(tmp_path / "shifted.pt"), shifted)
    first = {}
    for name, rm_path in (("b", saved), ("c", saved), ("d", str(tmp_path / "shifted.pt"))):
        summary = ppo.train(ppo.Config(**TINY, reward="model", sft_checkpoint=path, seed=1,
                                       rm_checkpoint=rm_path, out_dir=str(tmp_path / name)))
        assert "reward_model_price" not in summary  # loaded, not trained
        assert not (tmp_path / name / "reward_model.pt").exists()
        first[name] = read_csv(tmp_path / name / "metrics.csv")[1]  # step 1
    assert first["b"] == first["c"] | {"seconds": first["b"]["seconds"]}
    assert float(first["b"]["response_len"]) == float(first["d"]["response_len"])  # same rollout
    ended = (float(first["d"]["score"]) - float(first["b"]["score"])) * TINY["prompts_per_step"]
    assert ended == pytest.approx(round(ended), abs=1e-3) and round(ended) >= 12  # of 16
    with pytest.raises(runs.UserError, match="not found"):
        ppo.train(ppo.Config(**TINY, reward="model", sft_checkpoint=path, overwrite=True,
                             rm_checkpoint=str(tmp_path / "missing.pt"),
                             out_dir=str(tmp_path / "b")))


def test_script_writes_outputs(small_sft, tmp_path):
    path, _ = small_sft
    args = [f"--{k}={v}" for k, v in TINY.items()] + ["--sft_checkpoint", path, "--out_dir", str(tmp_path)]
    res = subprocess.run([sys.executable, "ppo.py", *args, "--steps", "2"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "metrics.csv", "model.pt", "state.pt", "summary.json"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2 and {"start_accuracy", "final_accuracy", "wall_seconds"} <= set(summary)
    assert len(read_csv(tmp_path / "metrics.csv")) == 3  # step 0 (the starting evaluation), 1, 2
    load_checkpoint(str(tmp_path / "model.pt"), digits=2)  # the policy, loadable


@pytest.mark.parametrize("args, message", [
    (["--no-such-flag"], "unrecognized arguments"),
    (["--lam", "1.5"], "--lam"),
    (["--prompts_per_step", "10", "--n_minibatches", "3"], "not divisible"),
    (["--reward", "oracle"], "invalid choice"),
    (["--target_kl", "0"], "--target_kl"),
    (["--rm_checkpoint", "out/ppo/reward_model.pt"], "--reward model"),
])
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(ppo.Config, args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_script_bad_input_exits_2_without_traceback(tmp_path):
    for args in (["--no-such-flag"], ["--sft_checkpoint", str(tmp_path / "missing.pt")]):
        res = run_in_process("ppo.py", *args, "--out_dir", str(tmp_path / "out"))
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_ppo_raises_the_score_it_optimises_and_the_critic_tracks_it(small_sft, tmp_path):
    """From the small SFT model, PPO against a learned reward model raises that model's score
    within a few steps by hacking it, and the critic learns to predict it. The reward model sums
    token log-probs plus a price per token, which comes out near 0: the fewer tokens, the fewer
    unlikely ones, so the policy learns to end its response at once (as `ppo.py --reward model`
    does on the default task, more slowly).

    Held-out accuracy is not checked here: measured from this 2-layer model, no short PPO run raised
    it reliably (8 settings of lr, temperature and epochs, 20-30 steps: 0.48 -> 0.10..0.49); the
    default 3-digit run does (see the README, and test_learning below)."""
    path, _ = small_sft
    # Temperature 1 and lr 2e-4: at 0.5 and 5e-5, 12 to 20 steps do not find the hack (score
    # -0.18..+0.09). critic_lr 1e-3, not 1e-4: twenty steps are too few for the slower critic.
    ppo.train(ppo.Config(digits=2, device="cpu", sft_checkpoint=path, reward="model", steps=20,
                         lr=2e-4, temperature=1.0, critic_lr=1e-3, prompts_per_step=64,
                         rm_prompts=128, rm_steps=20, rm_batch_size=16, n_test=50,
                         eval_every=1000, samples_every=1000, out_dir=str(tmp_path)))
    rows = read_csv(tmp_path / "metrics.csv")[1:]  # after step 0, the starting evaluation
    score = [float(r["score"]) for r in rows]
    length = [float(r["response_len"]) for r in rows]
    # measured on seeds 0, 1, 2: the score rose 1.0..1.4 reward-model standard deviations, the
    # responses shrank from 22..23 to 2..3 tokens, explained variance 0.11..0.17
    assert sum(score[-3:]) / 3 >= sum(score[:3]) / 3 + 0.5, score
    assert sum(length[-3:]) / 3 <= 0.5 * sum(length[:3]) / 3, length
    explained = [float(r["explained_variance"]) for r in rows[-10:]]
    assert sum(explained) / 10 > 0.05, explained  # a learned score is predictable


@pytest.mark.extended  # the longest check: -m extended runs it
def test_learning(default_sft, tmp_path):
    """30 steps of the default PPO (rule-based score) from the default SFT model raise held-out
    greedy accuracy. (The critic's explained variance stays near 0 this early, too close to 0 to
    assert its sign on every CPU: the critic is checked on a learned score, which it can predict,
    in test_ppo_raises_the_score_it_optimises_and_the_critic_tracks_it.)"""
    summary = ppo.train(ppo.Config(sft_checkpoint=default_sft[0], steps=30, eval_every=1000,
                                   samples_every=1000, device="cpu", out_dir=str(tmp_path)))
    assert summary["start_accuracy"] == default_sft[1]["final_accuracy"]
    assert summary["final_accuracy"] >= summary["start_accuracy"] + 0.08, summary


def test_target_kl_stops_on_the_kl_measured_after_the_epoch(small_sft, tmp_path):
    """Before the first update of a rollout the policy is pi_old, so with one minibatch a KL
    taken before the update is exactly 0 after the first epoch; the one measured after the epoch
    is not. A tiny target_kl must therefore stop every rollout after its first epoch."""
    path, _ = small_sft
    for target, epochs in ((1e-9, "1"), (None, "3")):
        out = tmp_path / str(target)
        ppo.train(ppo.Config(**{**TINY, "ppo_epochs": 3, "n_minibatches": 1, "warmup_steps": 0,
                                "target_kl": target}, sft_checkpoint=path, out_dir=str(out)))
        rows = read_csv(out / "metrics.csv")[1:]
        # A rollout whose advantages are all 0 (every score equal) moves nothing: KL 0, no stop.
        moved = [row for row in rows if float(row["kl_old_new"]) > 1e-9]
        assert len(moved) >= 2 and {row["epochs"] for row in moved} == {epochs}
