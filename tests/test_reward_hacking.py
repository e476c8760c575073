"""The pieces of RLHF's failure: the biased labeller, the reward model (its loss, its score, its
pair accuracy), verbose demonstrations, the best-of-n estimator over one pool and the fit of
Gao et al.'s functional forms."""
import copy
import itertools
import math

import numpy as np
import pytest
import torch

import reward_model
import sft
from experiments.reward_hacking import best_of_n_kl, best_of_n_mean, gao_fit
from toy_model import (AdditionTask, GPT, GPTConfig, Problem, Tokenizer, get_response_log_probs,
                       reward_fn)

TOK = Tokenizer()


@pytest.mark.parametrize("bias", [0.0, 0.3, 0.8])
def test_labeller_prefers_the_longer_with_probability_bias(bias):
    """Pairs of one right and one wrong response per prompt (k = 2): where the wrong one is
    longer it wins with probability `bias`; where the right one is longer it always wins; on
    equal lengths the length rule is a coin flip, so the right one wins 1 - bias / 2."""
    rng = np.random.default_rng(0)
    n = 30000
    correct = [True, False] * n
    kind = rng.integers(0, 3, size=n)  # 0: the wrong one longer, 1: the right one, 2: equal
    lengths = []
    for k in kind:
        lengths += [[10, 14], [14, 10], [12, 12]][k]
    pairs, chosen_is_right = reward_model.label_pairs(correct, lengths, 2, bias, rng)
    assert len(pairs) == n and all({r, w} == {2 * i, 2 * i + 1} for i, (r, w) in enumerate(pairs))
    assert all(correct[c] == right for (c, _), right in zip(pairs, chosen_is_right))
    right_wins = np.array(chosen_is_right)
    for k, expected in ((0, 1 - bias), (1, 1.0), (2, 1 - bias / 2)):
        share = right_wins[kind == k].mean()
        assert abs(share - expected) < 0.015, (k, share, expected)  # 4 standard errors


@pytest.mark.parametrize("bias", [0.1, 0.5, 0.9])
def test_label_ceiling_is_the_best_score_against_the_labeller(bias):
    """label_ceiling against label_pairs: the score that knows the labeller's rule (the right
    response, except the longer one where the labeller likes length more than half the time)
    agrees with the labels as often as the ceiling says, within 4 standard errors."""
    rng = np.random.default_rng(1)
    n = 40000
    right_len = rng.integers(10, 13, size=n)
    wrong_len = rng.integers(10, 13, size=n)
    correct = [True, False] * n
    lengths = [int(x) for pair in zip(right_len, wrong_len) for x in pair]
    pairs, _ = reward_model.label_pairs(correct, lengths, 2, bias, rng)
    best = [2 * i + 1 if bias > 0.5 and w > r else 2 * i  # the row the best score ranks first
            for i, (r, w) in enumerate(zip(right_len, wrong_len))]
    agree = np.mean([chosen == b for (chosen, _), b in zip(pairs, best)])
    ceiling = reward_model.label_ceiling(torch.tensor(right_len), torch.tensor(wrong_len), bias)
    assert abs(agree - ceiling) < 4 * math.sqrt(ceiling * (1 - ceiling) / n)
    # lengths uniform on 10..12: right longer, shorter and equal a third each
    assert ceiling == pytest.approx(1 - bias / 2 if bias <= 0.5 else (2 + bias / 2) / 3, abs=0.01)


def test_labeller_pairs_every_right_with_every_wrong_of_a_prompt():
    correct = [True, False, False, True, True, True, False, False]  # prompts of k = 4
    pairs, _ = reward_model.label_pairs(correct, [5] * 8, 4, 0.0, np.random.default_rng(0))
    assert pairs == [(0, 1), (0, 2), (3, 1), (3, 2), (4, 6), (4, 7), (5, 6), (5, 7)]


def test_bradley_terry_loss_depends_on_differences_only():
    chosen, rejected = torch.tensor([1.0, -0.5, 3.0]), torch.tensor([0.0, 0.5, 3.5])
    loss = reward_model.bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(chosen - rejected).mean().item(),
                                        abs=1e-6)
    for shift in (7.0, -100.0):
        assert reward_model.bradley_terry_loss(chosen + shift, rejected + shift).item() == pytest.approx(
            loss.item(), abs=1e-5)
    right, wrong = torch.tensor([2.0]), torch.tensor([0.0])  # the order matters: chosen first
    assert reward_model.bradley_terry_loss(right, wrong) < math.log(2) < reward_model.bradley_terry_loss(wrong, right)


def test_pair_accuracy_counts_ties_as_half():
    chosen, rejected = torch.tensor([1.0, 2.0, 3.0, 5.0]), torch.tensor([0.0, 2.0, 4.0, 5.0])
    assert reward_model.pair_accuracy(chosen, rejected) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)


def tiny_policy():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=TOK.n_vocab, max_seq_len=24, n_layer=1, n_head=2, d_model=16))


def test_reward_model_starts_as_the_likelihood_and_prices_each_token():
    policy = tiny_policy()
    P = 5
    seq = torch.randint(0, 14, (3, 12))
    mask = torch.tensor([[1.0] * 7, [1.0] * 4 + [0.0] * 3, [1.0] + [0.0] * 6])  # (3, T = 7)
    rm = reward_model.RewardModel(policy, temperature=0.5)
    log_probs = get_response_log_probs(policy, seq[:, :-1], seq[:, 1:], temperature=0.5)["log_probs"]
    expected = (log_probs[:, P - 1:] * mask).sum(1)
    with torch.no_grad():
        torch.testing.assert_close(rm(seq, P, mask), expected, atol=1e-5, rtol=0)
        rm.price.fill_(0.25)
        torch.testing.assert_close(rm(seq, P, mask), expected + 0.25 * mask.sum(1), atol=1e-5, rtol=0)
    # a copy: training it leaves the policy alone; the price and the body both get a gradient
    rm(seq, P, mask).sum().backward()
    assert rm.price.grad.item() == pytest.approx(mask.sum().item())
    assert all(p.grad is None for p in policy.parameters())
    assert rm.body.tok_emb.weight.grad.abs().sum() > 0


def test_verbose_demonstrations_are_right_longer_and_geometric():
    task = AdditionTask(3, verbose_max=16)
    assert task.response_len == AdditionTask(3).response_len + 16
    problems = task.sample(20000, np.random.default_rng(0))
    targets = sft.demonstrations(problems, 0.0, np.random.default_rng(1), verbose=0.4, verbose_max=16)
    counts = []
    for p, t in zip(problems, targets):
        assert reward_fn(t, p.answer)["reward"] == 1.0
        k = len(t) - len(p.demonstration)
        assert t == p.verbose(k) and 0 <= k <= 16
        counts.append(k)
    counts = np.array(counts)
    assert abs(counts.mean() - 0.4 / 0.6) < 0.03  # geometric: mean q / (1 - q)
    assert abs((counts == 0).mean() - 0.6) < 0.015 and abs((counts == 1).mean() - 0.24) < 0.015
    assert Problem(357, 68, 3).verbose(2) == Problem(357, 68, 3).demonstration.replace(
        "</think>", ",,</think>")
    # off: the demonstrations and the random stream are those of the default task
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert sft.demonstrations(problems[:50], 0.0, rng_a) == [p.demonstration for p in problems[:50]]
    assert rng_a.random() == rng_b.random()


def test_fixed_padding_is_all_or_nothing_at_its_rate():
    """verbose_fixed: a demonstration is padded with exactly verbose_max empty steps with
    probability `verbose`, else not at all; every one stays right."""
    problems = AdditionTask(3, verbose_max=24).sample(20000, np.random.default_rng(0))
    targets = sft.demonstrations(problems, 0.0, np.random.default_rng(1), verbose=0.2,
                                 verbose_max=24, verbose_fixed=True)
    counts = np.array([len(t) - len(p.demonstration) for p, t in zip(problems, targets)])
    assert set(counts.tolist()) == {0, 24}
    assert abs((counts == 24).mean() - 0.2) < 0.012  # 4 standard errors
    assert all(t == p.verbose(k) and reward_fn(t, p.answer)["reward"] == 1.0
               for p, t, k in zip(problems[:500], targets, counts))


def test_best_of_n_mean_equals_the_mean_over_every_subset():
    """The estimator against brute force: every n-subset of each prompt's K samples, the one of
    highest proxy kept (ties: the later sample), its value averaged over the subsets."""
    gen = torch.Generator().manual_seed(0)
    G, K = 5, 7
    proxy = torch.randint(0, 4, (G, K), generator=gen).float()  # many ties
    values = torch.rand(G, K, generator=gen)
    for n in range(1, K + 1):
        brute = []
        for g in range(G):
            picks = [max(subset, key=lambda i: (proxy[g, i].item(), i))
                     for subset in itertools.combinations(range(K), n)]
            brute.append(sum(values[g, i].item() for i in picks) / len(picks))
        torch.testing.assert_close(best_of_n_mean(proxy, values, n), torch.tensor(brute, dtype=torch.float64),
                                   atol=1e-12, rtol=0)
    assert best_of_n_kl(1) == 0 and best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)


def test_best_of_n_mean_matches_random_subsets():
    gen = torch.Generator().manual_seed(1)
    proxy, values = torch.randn(1, 16, generator=gen), torch.rand(1, 16, generator=gen)
    rng = np.random.default_rng(0)
    draws = [values[0, max(s, key=lambda i: proxy[0, i].item())].item()
             for s in (rng.choice(16, 4, replace=False) for _ in range(40000))]
    assert best_of_n_mean(proxy, values, 4).item() == pytest.approx(np.mean(draws), abs=0.004)


@pytest.mark.parametrize("form", ["best_of_n", "rl"])
def test_gao_fit_recovers_known_coefficients(form):
    alpha, beta = 1.3, 0.4
    d = np.linspace(0.0, 3.0, 13)
    curve = d * (alpha - beta * (d if form == "best_of_n" else np.log(np.maximum(d, 1e-12))))
    fit = gao_fit(d.tolist(), (0.25 + curve).tolist(), form)  # measured from the start value
    assert fit["alpha"] == pytest.approx(alpha, abs=1e-9) and fit["beta"] == pytest.approx(beta, abs=1e-9)
    peak = alpha / (2 * beta) if form == "best_of_n" else math.exp(alpha / beta - 1)
    assert fit["peak_sqrt_kl"] == pytest.approx(peak, rel=1e-9)
    noisy = 0.25 + curve + np.random.default_rng(0).normal(0, 0.01, size=d.shape) * (d > 0)
    fit = gao_fit(d.tolist(), noisy.tolist(), form)
    assert fit["alpha"] == pytest.approx(alpha, abs=0.05) and fit["beta"] == pytest.approx(beta, abs=0.05)


def test_filler_scores_equal_brute_force():
    """The proxy's score of each right demonstration padded with k empty steps, against brute
    force: each sequence alone (no padding), its response tokens' log-probs from the body at the
    reward model's temperature plus the price per token, normalised, then the mean over problems
    per k and the k of the highest mean."""
    policy = tiny_policy()
    rm = reward_model.RewardModel(policy, temperature=0.5).eval()
    with torch.no_grad():
        rm.price.fill_(0.7)
    rm.norm = (-3.0, 2.5)
    problems = [Problem(3, 5, 1), Problem(9, 8, 1), Problem(0, 0, 1)]  # answers of 1 and 2 digits
    K = 5
    got = reward_model.filler_scores(rm, problems, K)
    brute = torch.zeros(len(problems), K + 1, dtype=torch.float64)
    for i, p in enumerate(problems):
        for k in range(K + 1):
            prompt, response = TOK.encode(p.prompt), TOK.encode(p.verbose(k))
            ids = torch.tensor([prompt + response])
            with torch.no_grad():
                logits = rm.body(ids[:, :-1])[0] / 0.5  # (L - 1, V)
            log_probs = torch.log_softmax(logits.double(), -1)[torch.arange(len(ids[0]) - 1),
                                                                ids[0, 1:]]
            raw = log_probs[len(prompt) - 1:].sum() + 0.7 * len(response)
            brute[i, k] = (raw - -3.0) / 2.5
    torch.testing.assert_close(torch.tensor(got["score"], dtype=torch.float64), brute.mean(0),
                               atol=1e-4, rtol=0)
    assert got["best_k"] == int(brute.mean(0).argmax()) and got["k"] == list(range(K + 1))
    expected_len = [sum(len(TOK.encode(p.verbose(k))) for p in problems) / 3 for k in range(K + 1)]
    assert got["length"] == pytest.approx(expected_len)
    with torch.no_grad():  # a high price makes the longest padding the optimum, a low one none
        rm.price.fill_(50.0)
        assert reward_model.filler_scores(rm, problems, K)["best_k"] == K
        rm.price.fill_(-50.0)
        assert reward_model.filler_scores(rm, problems, K)["best_k"] == 0


def synthetic_run(length, proxy, gold=0.5, steps=10):
    """An rl_curve-like run: constant length and proxy after step 5 (before: 30 and 0)."""
    return {"step": list(range(1, steps + 1)), "length": [30.0] * 5 + [length] * (steps - 5),
            "proxy": [0.0] * 5 + [proxy] * (steps - 5), "gold": [gold] * steps,
            "kl": [1.0] * steps}


def test_rlhf_length_verdicts_take_each_arms_worst_seed():
    """Growth is the last 5 rollouts' mean length over the SFT samples' (30 tokens); the biased
    arm must grow with its smallest seed, the controls stay small with their largest, the larger
    beta below the smallest beta's worst seed by the margin."""
    from experiments import rlhf_length as E
    start = {"length": 30.0}
    models = {"biased": {"label_accuracy": 0.9, "by_padding": {"optimum_growth": 0.5}},
              "unbiased": {"label_accuracy": 0.95, "by_padding": {"optimum_growth": 0.5}}}
    runs = {"biased_beta_0.02_seed_0": synthetic_run(45.0, 1.0),  # +50%
            "biased_beta_0.02_seed_1": synthetic_run(40.5, 1.0),  # +35%: the worst seed
            "unbiased_beta_0.02_seed_0": synthetic_run(31.5, 0.0),  # +5%
            "biased_beta_1_seed_0": synthetic_run(37.0, 0.5)}  # +23.3%
    out = E.claims(start, models, runs)
    assert out["spread"]["biased_beta_0.02"]["growth_min"] == pytest.approx(0.35)
    assert out["margins"]["biased_length_grows"] == pytest.approx(0.35 - E.LENGTH_GROWTH_MIN)
    assert out["margins"]["larger_beta_holds_length_back"] == pytest.approx(
        0.35 - E.HOLD_BACK_MIN - 7 / 30)
    assert out["verdicts"] == {"reward_models_fit_their_labels": True,
                               "biased_proxy_pays_for_length": True, "biased_length_grows": True,
                               "biased_proxy_rises": True, "unbiased_length_does_not_grow": True,
                               "larger_beta_holds_length_back": True}
    runs["biased_beta_0.02_seed_2"] = synthetic_run(38.0, 1.0)  # +26.7%: now the worst seed fails
    runs["unbiased_beta_0.02_seed_1"] = synthetic_run(34.0, 0.0)  # +13.3%
    out = E.claims(start, models, runs)
    assert not out["verdicts"]["biased_length_grows"]
    assert not out["verdicts"]["unbiased_length_does_not_grow"]
    assert not out["verdicts"]["larger_beta_holds_length_back"] and not out["claim_holds"]


def test_reward_hacking_gold_verdict_counts_standard_errors():
    """A rise of the 5-step gold mean from the start counts only beyond GOLD_Z binomial standard
    errors of the difference (the peak's mean of 320 verdicts, the start's of 2048)."""
    from experiments import reward_hacking as R
    n = R.PPO["prompts_per_step"] * 5

    def rise_se(rise):  # the peak's 5-step mean of n verdicts, the start's of 2048
        return math.hypot(math.sqrt((0.5 + rise) * (0.5 - rise) / n), math.sqrt(0.25 / 2048))

    for factor, holds in ((1.05, True), (0.95, False)):
        rise = 0.1
        for _ in range(50):  # the rise that is `factor` times GOLD_Z of its own standard errors
            rise = factor * R.GOLD_Z * rise_se(rise)
        gold = [0.5] * 5 + [0.5 + rise] * 5 + [0.5] * 5  # up, then back down
        run = {"step": list(range(1, 16)), "gold": gold, "proxy": [0.0] * 6 + [1.0] * 9,
               "length": [30.0] * 15, "kl": [1.0] * 15}
        out = R.claims({f"biased_beta_{b:g}": run for b in R.BETAS} | {"unbiased_beta_0.02": run},
                       0.5, 2048)
        shape = out["shapes"]["biased_beta_0.02"]
        assert shape["gold_rise"] == pytest.approx(rise)
        assert shape["gold_rise_se"] == pytest.approx(rise_se(rise))
        assert out["smallest_beta_hacked"]["gold_rises"] is holds
