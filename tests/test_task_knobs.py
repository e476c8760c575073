"""The task's knobs for the lecture's claims about RL and SFT: easy and hard problems that the
prompt tells apart (easy_digits, hard_fraction), direct answers (direct_fraction), the
abstention's reward (abstain_reward, wrong_reward), the task an RL run takes from its start
checkpoint, and the AUROC helper of experiments/abstain.py.
The defaults must reproduce the original task exactly: golden strings below."""
import numpy as np
import pytest
import torch

from conftest import drawing_no_curves
from experiments.abstain import auroc
import sft
from runs import UserError, task_config
from toy_model import ABSTENTION, EOS, RESPONSE_RE, AdditionTask, Problem, Tokenizer, reward_fn

TOK = Tokenizer()
# (digits, easy_digits, hard_fraction): the default task and mixes of each size
SETTINGS = [(3, None, 0.5), (3, 2, 0.05), (3, 2, 0.5), (3, 1, 0.9), (2, 1, 0.5), (4, 2, 0.0), (3, 2, 1.0)]


def test_defaults_reproduce_the_original_task_exactly():
    """Golden strings from the task before the knobs existed: test set, training draws, targets."""
    task = AdditionTask(3)
    assert [p.prompt for p in task.test[:3]] == ["139+671=", "858+936=", "991+834="]
    assert [p.prompt for p in task.test[-2:]] == ["033+796=", "657+355="]
    problems = task.sample(4, np.random.default_rng(0))
    assert [p.prompt for p in problems] == ["850+636=", "511+269=", "307+040=", "075+016="]
    assert sft.demonstrations(problems, 0.0, np.random.default_rng(0))[:2] == [
        "<think>0+6+0=06,5+3+0=08,8+6+0=14</think><answer>1486</answer>" + EOS,
        "<think>1+9+0=10,1+6+1=08,5+2+0=07</think><answer>780</answer>" + EOS]
    with_abstention = sft.demonstrations(problems, 0.5, np.random.default_rng(1))  # same draws as before
    assert with_abstention[2] == ABSTENTION
    assert with_abstention[3] == "<think>5+6+0=11,7+1+1=09,0+0+0=00</think><answer>91</answer>" + EOS
    assert sft.demonstrations(problems, 0.5, np.random.default_rng(1), direct_fraction=0.0) == with_abstention
    small = AdditionTask(2, 300)
    assert [p.prompt for p in small.test[:2]] == ["64+19=", "90+38="]
    assert [p.prompt for p in small.sample(3, np.random.default_rng(5))] == ["67+80=", "02+80=", "46+51="]
    assert task_config(None) == task_config(sft.Config().__dict__) == {"easy_digits": None, "hard_fraction": 0.5,
                                                                       "verbose_max": 0}


@pytest.mark.parametrize("digits,easy_digits,hard_fraction", SETTINGS)
def test_heldout_disjoint_and_in_the_stated_proportions(digits, easy_digits, hard_fraction):
    task = AdditionTask(digits, 200, easy_digits=easy_digits, hard_fraction=hard_fraction)
    test = {(p.a, p.b) for p in task.test}
    n_easy = 0 if easy_digits is None else min(100, 10 ** (2 * easy_digits) // 5)  # a fifth of the easy ones at most
    assert len(test) == len(task.test) == (200 if easy_digits is None else n_easy + 100)  # no duplicates
    train = task.sample(5000, np.random.default_rng(0))
    assert not test & {(p.a, p.b) for p in train}
    kinds = [task.kind(p) for p in task.test]
    if easy_digits is None:
        assert set(kinds) == {"hard"}
    else:  # the test set: half of each kind (fewer easy when there are few), whatever the training mix
        assert kinds.count("easy") == n_easy and kinds.count("hard") == 100
        assert all(max(p.a, p.b) < 10 ** easy_digits for p, k in zip(task.test, kinds) if k == "easy")
        share = [task.kind(p) for p in train].count("hard") / len(train)
        assert abs(share - hard_fraction) < 0.03  # training: hard with probability hard_fraction
    # one prompt length for every problem, and a model of max_seq_len holds the longest response
    lengths = {len(TOK.encode(p.prompt)) for p in task.test + train}
    assert lengths == {task.prompt_len}
    longest = max(len(TOK.encode(t)) for p in train for t in (p.demonstration, p.direct, p.abstention))
    assert longest <= task.response_len <= task.max_new_tokens
    assert task.prompt_len + task.max_new_tokens == task.max_seq_len
    again = AdditionTask(digits, 200, easy_digits=easy_digits, hard_fraction=hard_fraction)
    assert [(p.a, p.b) for p in again.test] == [(p.a, p.b) for p in task.test]  # deterministic


def test_kind_shows_in_the_prompt():
    task = AdditionTask(3, 10, easy_digits=2)
    assert task.kind(Problem(57, 32, 3)) == "easy" and Problem(57, 32, 3).prompt == "057+032="
    assert task.kind(Problem(100, 2, 3)) == "hard" and task.kind(Problem(5, 999, 3)) == "hard"
    assert AdditionTask(3, 10).kind(Problem(57, 32, 3)) == "hard"  # no mix: one kind


def test_both_modes_parse_score_one_and_direct_is_shorter():
    for p in AdditionTask(3, 10, easy_digits=2).sample(200, np.random.default_rng(3)):
        for response in (p.demonstration, p.direct):
            assert RESPONSE_RE.fullmatch(response)
            assert reward_fn(response, p.answer) == {"reward": 1.0, "format_reward": 1.0, "answer_reward": 1.0}
        assert len(TOK.encode(p.direct)) < len(TOK.encode(p.demonstration))
    assert Problem(357, 68, 3).direct == "<think></think><answer>425</answer>" + EOS


def test_direct_fraction_mixes_the_modes():
    problems = AdditionTask(3).sample(3000, np.random.default_rng(0))
    targets = sft.demonstrations(problems, 0.2, np.random.default_rng(1), direct_fraction=0.5)
    assert targets == sft.demonstrations(problems, 0.2, np.random.default_rng(1), direct_fraction=0.5)
    direct = sum(t == p.direct for t, p in zip(targets, problems)) / len(problems)
    abstained = sum(t == ABSTENTION for t in targets) / len(problems)
    scratch = sum(t == p.demonstration for t, p in zip(targets, problems)) / len(problems)
    assert abs(direct - 0.5) < 0.03 and abs(abstained - 0.2) < 0.03 and abs(scratch - 0.3) < 0.03
    assert all(t == p.direct for t, p in zip(sft.demonstrations(problems, 0.0, np.random.default_rng(0), 1.0),
                                            problems))


@pytest.mark.parametrize("abstain_reward,wrong_reward", [(None, 0.0), (0.3, 0.0), (0.0, 0.0), (0.3, -1.0), (0.5, -0.5)])
def test_reward_of_abstention_right_and_wrong(abstain_reward, wrong_reward):
    p = Problem(357, 68, 3)
    wrong = p.demonstration.replace("425", "426")
    reward = lambda response: reward_fn(response, p.answer, abstain_reward, wrong_reward)["reward"]
    assert reward(p.demonstration) == reward(p.direct) == 1.0
    assert reward(wrong) == reward(p.direct.replace("425", "426")) == wrong_reward
    assert reward("425" + EOS) == wrong_reward  # unformatted: no escape from the penalty
    assert reward(ABSTENTION) == (0.0 if abstain_reward is None and wrong_reward == 0 else
                                  wrong_reward if abstain_reward is None else abstain_reward)


def test_rl_runs_the_task_of_their_start_checkpoint(tmp_path, monkeypatch):
    """An RL run builds the task its start model learnt (saved in the checkpoint): here a
    verbose one, whose response budget is verbose_max tokens longer; an experiment's own task
    must be of the same kinds."""
    import grpo
    from runs import save_checkpoint
    from toy_model import GPT, GPTConfig
    task = AdditionTask(2, 8, easy_digits=1, verbose_max=4)
    torch.manual_seed(0)
    model = GPT(GPTConfig(max_seq_len=task.max_seq_len, n_layer=1, d_model=32))
    save_checkpoint(str(tmp_path / "start.pt"), model, 2, {"lr": 1.0}, task)
    budgets = []
    monkeypatch.setattr(grpo, "evaluate", lambda m, t, problems, budget: (
        budgets.append((budget, len(problems))) or ({"accuracy": 0.0, "format_rate": 0.0,
                                                     "eos_rate": 0.0}, [])))
    cfg = dict(digits=2, sft_checkpoint=str(tmp_path / "start.pt"), steps=1, n_test=8,
               rollout_batch_size=8, train_batch_size=8, gradient_accumulation_steps=1,
               samples_every=1000, device="cpu")
    with drawing_no_curves():
        grpo.train(grpo.Config(**cfg, out_dir=str(tmp_path / "a")))
    assert budgets == [(task.max_new_tokens, 8)] * 2 and task.max_new_tokens == 34
    saved = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["task"]
    assert saved == {"easy_digits": 1, "hard_fraction": 0.5, "verbose_max": 4}
    with pytest.raises(UserError, match="another task"):
        grpo.train(grpo.Config(**cfg, out_dir=str(tmp_path / "b")), task=AdditionTask(2, 8))


@pytest.mark.parametrize("flags", [dict(direct_fraction=1.1), dict(direct_fraction=0.8, abstain_fraction=0.3),
                                   dict(easy_digits=3), dict(easy_digits=0), dict(hard_fraction=1.5)])
def test_sft_rejects_bad_knobs(flags):
    with pytest.raises(UserError):
        sft.Config(**flags)


def test_auroc_hand_computed_with_ties():
    # positives 0.9, 0.5, 0.5 against negatives 0.5, 0.1: pairs won 1, 1 | 0.5, 1 | 0.5, 1 -> 5 / 6
    assert auroc([0.9, 0.5, 0.5], [0.5, 0.1]) == pytest.approx(5 / 6)
    assert auroc([0.2, 0.2], [0.2]) == 0.5  # all tied: no information
    assert auroc([1.0], [0.0, 0.5]) == 1.0 and auroc([0.0], [1.0]) == 0.0
    assert auroc([], [0.3]) is None and auroc([0.3], []) is None


def test_evaluate_suppress_forbids_characters_and_counts_direct_answers():
    """abstention_profile's "would it be right if it could not abstain?" is evaluate(suppress="?")."""
    import torch
    from evaluation import evaluate
    from toy_model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, d_model=32, n_head=4))
    with torch.no_grad():  # make "?" the greedy choice: every final hidden state leans towards its embedding
        lean = torch.randn(32)
        model.ln_f.bias.copy_(lean)
        model.tok_emb.weight[TOK.encode("?")[0]] = 3 * lean
    problems = AdditionTask(3, 40).test
    _, free = evaluate(model, TOK, problems, 12)
    metrics, forced = evaluate(model, TOK, problems, 12, suppress="?")
    assert any("?" in s["response"] for s in free)
    assert not any("?" in s["response"] for s in forced)
    assert metrics["direct_rate"] == sum(s["response"].startswith("<think></think>") for s in forced) / 40
