"""pass@k and maj@k (toy_model.py): golden values of the unbiased estimator, its equality with the
empirical frequency over random subsets, majority voting with its tie rule, and the sampled
evaluation on a model."""
import itertools
import math
import random

import pytest
import torch

from runs import load_checkpoint
from evaluation import evaluate_pass_at_k, majority_vote, pass_at_k
from toy_model import AdditionTask, Tokenizer, extract_answer


def test_golden_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 10) == 1.0
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 3, 8) == 1.0  # k = 8 > n - c = 7: every subset holds a correct one
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))  # 8/15
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)


def test_stable_for_large_n():
    n, c, k = 5000, 7, 64  # the binomials overflow a float; the product does not
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)  # Python's ints are exact
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)


def test_equals_empirical_frequency_over_subsets():
    rng = random.Random(0)
    for n, c, k in [(10, 3, 4), (12, 2, 5), (8, 1, 3)]:
        samples = [True] * c + [False] * (n - c)
        exact = sum(any(s) for s in itertools.combinations(samples, k)) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)  # every subset
        hits = sum(any(rng.sample(samples, k)) for _ in range(20000))
        assert pass_at_k(n, c, k) == pytest.approx(hits / 20000, abs=0.015)  # random subsets


def test_bad_arguments_raise():
    for n, c, k in [(10, 11, 1), (10, 3, 0), (10, 3, 11)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_majority_vote():
    assert majority_vote(["12", "13", "12", None, None, None]) == "12"  # None never wins
    assert majority_vote(["13", "12"]) == "13"  # a tie goes to the answer that reached its count first
    assert majority_vote(["13", "12", "12", "13"]) == "12"  # "12" had 2 votes before "13" did
    assert majority_vote(["12", "13", "13", "12"]) == "13"
    assert majority_vote([None, None]) is None and majority_vote([]) is None


def test_extract_answer():
    assert extract_answer("<think>1+2+0=03</think><answer>3</answer><|endoftext|>") == "3"
    assert extract_answer("<think></think><answer>3</answer>") is None  # no end-of-text
    assert extract_answer("3") is None


def test_evaluation_on_a_model(small_sft):
    model, ckpt = load_checkpoint(small_sft[0])
    task, tok = AdditionTask(ckpt["digits"], 12), Tokenizer()
    state = torch.get_rng_state()
    a = evaluate_pass_at_k(model, tok, task.test, task.max_new_tokens, n=16, ks=(1, 4, 16), seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    b = evaluate_pass_at_k(model, tok, task.test, task.max_new_tokens, n=16, ks=(1, 4, 16), seed=3)
    assert a == b  # seeded
    assert len(a["correct_counts"]) == 12
    assert a["pass@1"] == pytest.approx(sum(a["correct_counts"]) / (16 * 12))
    assert a["pass@1"] <= a["pass@4"] <= a["pass@16"] <= 1
    assert a["pass@16"] == pytest.approx(sum(c > 0 for c in a["correct_counts"]) / 12)
    assert 0 <= a["maj@16"] <= a["pass@16"]  # a majority answer is right only where some sample is
