"""expert_iteration.py: the filter, the SFT step's reduction, an EI step with nothing correct, a
seeded run's determinism and what it learns, and the command line."""
import json
import os
import subprocess
import sys

import pytest
import torch

import expert_iteration as ei
import sft
from conftest import ROOT, run_in_process
from runs import load_checkpoint, parse_config
from toy_model import (GPT, GPTConfig, Tokenizer, get_response_log_probs, reward_fn,
                       tokenize_prompt_and_output)

pytestmark = pytest.mark.usefixtures("no_curves")  # their runs draw no curves.png (conftest)

TOK = Tokenizer()
RIGHT = "<think>2+3+0=05,1+0+0=01</think><answer>15</answer><|endoftext|>"
WRONG = "<think>2+3+0=05,1+0+0=01</think><answer>16</answer><|endoftext|>"


def small_config(checkpoint, out_dir, **overrides):
    flags = dict(digits=2, sft_checkpoint=checkpoint, n_test=20, n_ei_steps=1, questions_per_step=16,
                 group_size=4, batch_size=16, gradient_accumulation_steps=2, lr=1e-4, warmup_steps=1,
                 eval_every=1, samples_every=1, device="cpu", out_dir=str(out_dir))
    return ei.Config(**{**flags, **overrides})


def test_filter_keeps_exactly_the_reward_one_responses():
    prompts = ["12+03=", "12+03=", "12+03=", "12+03=", "40+40="]
    responses = [WRONG, RIGHT, "15", RIGHT + "1", "<think></think><answer>80</answer><|endoftext|>"]
    truths = ["15", "15", "15", "15", "80"]
    kept_prompts, kept_responses, rewards = ei.filter_correct(prompts, responses, truths, reward_fn)
    assert rewards.tolist() == [0, 1, 0, 0, 1]
    assert kept_responses == [responses[1], responses[4]] and kept_prompts == ["12+03=", "40+40="]
    # With any reward: only exactly 1 is kept (0.5 is not "correct").
    graded = lambda r, g: {"reward": {"a": 1.0, "b": 0.5, "c": 0.0}[r]}
    assert ei.filter_correct(["p"] * 4, ["a", "b", "c", "a"], [""] * 4, graded)[1] == ["a", "a"]


def test_sft_step_is_the_cs336_reduction():
    """EI trains with sft.py's step: grad of each response log-prob is -mask / (B * k)."""
    assert ei.sft_microbatch_train_step is sft.sft_microbatch_train_step
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, d_model=16))
    prompts, responses = ["12+03=", "40+40=", "11+11=", "09+01="], [RIGHT, RIGHT[:20], WRONG, RIGHT[7:]]
    batch = tokenize_prompt_and_output(prompts, responses, TOK)
    mask = batch["response_mask"].float()
    # Two micro-batches of two with k = 2, as the EI loop runs them ...
    for rows in ([0, 1], [2, 3]):
        log_probs = get_response_log_probs(model, batch["input_ids"][rows], batch["labels"][rows])["log_probs"]
        log_probs.retain_grad()
        ei.sft_microbatch_train_step(log_probs, batch["response_mask"][rows], 2)
        torch.testing.assert_close(log_probs.grad, -mask[rows] / (2 * 2), atol=1e-7, rtol=0)
    got = [p.grad.clone() for p in model.parameters()]
    # ... equal the gradient of the hand-written loss: -(1/B) sum_i sum_{t in o_i} log p.
    model.zero_grad()
    log_probs = get_response_log_probs(model, batch["input_ids"], batch["labels"])["log_probs"]
    (-(log_probs * mask).sum() / 4).backward()
    for g, p in zip(got, model.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-6, rtol=1e-5)


def test_step_with_no_correct_response_changes_no_weight(small_sft, tmp_path, monkeypatch):
    monkeypatch.setattr(ei, "reward_fn", lambda r, g: {"reward": 0.0, "format_reward": 1.0, "answer_reward": 0.0})
    summary = ei.train(small_config(small_sft[0], tmp_path))
    start = torch.load(small_sft[0], weights_only=True)["state_dict"]
    end = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    assert summary["optimizer_steps"] == 0
    assert all(torch.equal(start[k], end[k]) for k in start)
    assert summary["final_accuracy"] == summary["start_accuracy"]


def test_seeded_run_is_deterministic_and_raises_its_filtered_set(small_sft, tmp_path, monkeypatch):
    filtered, real_filter = [], ei.filter_correct

    def spy(*args):
        out = real_filter(*args)
        filtered.append(out[:2])
        return out

    accumulation, real_step = [], ei.sft_microbatch_train_step

    def spy_step(log_probs, mask, gradient_accumulation_steps, *rest):
        accumulation.append((log_probs.shape[0], gradient_accumulation_steps))
        return real_step(log_probs, mask, gradient_accumulation_steps, *rest)

    monkeypatch.setattr(ei, "filter_correct", spy)
    monkeypatch.setattr(ei, "sft_microbatch_train_step", spy_step)
    cfg = dict(n_ei_steps=1, sft_epochs=2, questions_per_step=32)
    a = ei.train(small_config(small_sft[0], tmp_path / "a", **cfg))
    # Every row of an optimizer step weighs the same, 1 / (rows in the step): each micro-batch's
    # mean is divided by k = rows in the step / rows in the micro-batch, and the 1/k add up to 1.
    assert sum(1 / k for _, k in accumulation) == pytest.approx(a["optimizer_steps"])
    # rows x k is the step's row count: at least a micro-batch (8) whenever a step has two of
    # them, so a short last micro-batch (rows < 8) is not divided by the micro-batch count.
    assert all(k == 1 or rows * k >= 8 for rows, k in accumulation), accumulation
    b = ei.train(small_config(small_sft[0], tmp_path / "b", **cfg))
    assert a["final_accuracy"] == b["final_accuracy"]
    strip = lambda path: [line.rsplit(",", 1)[0] for line in open(path).read().splitlines()]  # seconds last
    assert strip(tmp_path / "a" / "metrics.csv") == strip(tmp_path / "b" / "metrics.csv")
    ma = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    mb = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)

    prompts, responses = filtered[0]  # step 1's D_sft: its log-likelihood must rise
    assert len(responses) > 0
    batch = tokenize_prompt_and_output(prompts, responses, TOK)

    def nll(path):
        model, _ = load_checkpoint(path)
        with torch.no_grad():
            lp = get_response_log_probs(model, batch["input_ids"], batch["labels"])["log_probs"]
        return -(lp * batch["response_mask"]).sum().item() / batch["response_mask"].sum().item()

    assert nll(tmp_path / "a" / "model.pt") < nll(small_sft[0]) - 0.01


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "expert_iteration.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_smoke_writes_all_outputs(small_sft, tmp_path):
    out = tmp_path / "run"
    r = run_cli("--digits", "2", "--sft_checkpoint", small_sft[0], "--n_test", "20", "--n_ei_steps", "1",
                "--questions_per_step", "8", "--group_size", "4", "--batch_size", "8", "--device", "cpu",
                "--out_dir", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["curves.png", "metrics.csv", "model.pt", "state.pt", "summary.json"]
    summary = json.load(open(out / "summary.json"))
    assert {"start_accuracy", "final_accuracy", "steps", "wall_seconds"} <= set(summary)
    assert summary["steps"] == 1 and summary["sampled_responses"] == 32
    header = open(out / "metrics.csv").readline().strip().split(",")
    assert {"filtered_size", "solved_fraction", "eval_accuracy", "entropy", "sampled_responses",
            "seconds"} <= set(header)


def test_help_lists_every_field():
    r = run_in_process("expert_iteration.py", "-h")
    assert r.returncode == 0
    for field in ei.Config.__dataclass_fields__:
        assert f"--{field}" in r.stdout


@pytest.mark.parametrize("args", [["--no-such-flag"], ["--batch_size", "30", "--gradient_accumulation_steps", "4"],
                                  ["--temperature", "0"], ["--n_ei_steps", "0"], ["--lr", "0"],
                                  ["--sft_checkpoint", "/nonexistent/model.pt", "--digits", "2"]])
def test_bad_input_exits_2_in_one_line(args, tmp_path):
    r = run_in_process("expert_iteration.py", *args, "--device", "cpu", "--out_dir", str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_bad_values_parse_to_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(ei.Config, ["--group_size", "0"])
    assert e.value.code == 2


def test_a_short_last_micro_batch_weighs_each_row_like_the_others(small_sft, tmp_path, monkeypatch):
    """12 kept responses, batches of 16 in micro-batches of 8: one step of 8 + 4 rows. Each row
    must weigh 1/12, so the micro-batch means are divided by 12/8 and 12/4, not by 2 and 2."""
    real_filter, seen = ei.filter_correct, []

    def keep_twelve(prompts, responses, ground_truths, reward_fn):
        _, _, rewards = real_filter(prompts, responses, ground_truths, reward_fn)
        return prompts[:12], responses[:12], rewards

    def spy_step(log_probs, mask, gradient_accumulation_steps, *rest):
        seen.append((log_probs.shape[0], gradient_accumulation_steps))
        return real_step(log_probs, mask, gradient_accumulation_steps, *rest)

    real_step = ei.sft_microbatch_train_step
    monkeypatch.setattr(ei, "filter_correct", keep_twelve)
    monkeypatch.setattr(ei, "sft_microbatch_train_step", spy_step)
    ei.train(small_config(small_sft[0], tmp_path, sft_epochs=1))
    assert seen == [(8, pytest.approx(1.5)), (4, pytest.approx(3.0))]
