"""sft.py: the CS336 micro-batch step, the script's outputs, its command line, and that it learns."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

import sft
from conftest import run_in_process
from conftest import ROOT

TINY = ["--digits", "2", "--n_layer", "1", "--d_model", "32", "--batch_size", "8", "--device", "cpu",
        "--eval_every", "2", "--n_test", "20"]


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "sft.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_microbatch_gradient_is_minus_mask_over_b_c_k():
    log_probs = torch.randn(3, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]).float()
    loss, meta = sft.sft_microbatch_train_step(log_probs, mask, gradient_accumulation_steps=4,
                                               normalize_constant=2.5)
    torch.testing.assert_close(log_probs.grad, -mask / (3 * 2.5 * 4), atol=1e-6, rtol=0)
    expected = -(log_probs.detach() * mask).sum(1) / 2.5
    assert loss.item() == pytest.approx(expected.mean().item() / 4, abs=1e-6)
    torch.testing.assert_close(meta["per_sequence_nll"], expected, atol=1e-6, rtol=0)
    sft.sft_microbatch_train_step(log_probs, mask, 4, 2.5)  # no zeroing: gradients add up
    torch.testing.assert_close(log_probs.grad, -2 * mask / (3 * 2.5 * 4), atol=1e-6, rtol=0)


def test_accumulation_equals_one_big_batch():
    torch.manual_seed(0)
    from toy_model import GPT, GPTConfig, Tokenizer, get_response_log_probs, tokenize_prompt_and_output
    tok, model = Tokenizer(), GPT(GPTConfig(n_layer=1, d_model=32))
    prompts = ["1+2=", "12+34=", "5+5=", "99+1="]
    outputs = ["3" + "<|endoftext|>", "46<|endoftext|>", "<think>1</think>10<|endoftext|>", "100<|endoftext|>"]

    def grads(k):
        model.zero_grad()
        for i in range(0, 4, 4 // k):
            b = tokenize_prompt_and_output(prompts[i:i + 4 // k], outputs[i:i + 4 // k], tok)
            lp = get_response_log_probs(model, b["input_ids"], b["labels"])["log_probs"]
            sft.sft_microbatch_train_step(lp, b["response_mask"], k)
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    torch.testing.assert_close(grads(2), grads(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads(4), grads(1), atol=1e-6, rtol=1e-5)


def test_lr_schedule():
    from runs import lr_at
    assert lr_at(5, 1e-3, 10, 100) == pytest.approx(5e-4)
    assert lr_at(10, 1e-3, 10, 100) == pytest.approx(1e-3)
    assert lr_at(100, 1e-3, 10, 100) == pytest.approx(1e-4)
    assert lr_at(100, 1e-3, 10, 100, cosine=False) == pytest.approx(1e-3)


@pytest.mark.slow
def test_script_writes_outputs(tmp_path):
    res = run("--steps", "3", *TINY, "--out_dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "metrics.csv", "model.pt", "state.pt", "summary.json"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 3 and {"start_accuracy", "final_accuracy", "wall_seconds"} <= set(summary)
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 5  # header, step 0, 3 steps


def test_help_lists_every_field():
    res = run_in_process("sft.py", "-h")
    assert res.returncode == 0
    for field in sft.Config.__dataclass_fields__:
        assert f"--{field}" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["--no-such-flag"], "unrecognized arguments"),
    (["--lr", "-1"], "--lr"),
    (["--steps", "abc"], "invalid int value"),
    (["--batch_size", "10", "--gradient_accumulation_steps", "3"], "not divisible"),
    (["--d_model", "30", "--n_head", "4"], "--d_model"),
    (["--abstain_fraction", "1"], "--abstain_fraction"),
    (["--verbose_fixed", "--verbose_max", "8"], "--verbose_fixed"),
    (["--corpus", "web"], "--corpus"),
    (["--corpus", "mixed", "--mixed_fraction", "1.5"], "--mixed_fraction"),
    (["--n_demonstrations", "0"], "--n_demonstrations"),
    (["--corpus", "traces", "--direct_fraction", "0.5"], "plain text"),
    (["--init_checkpoint", "no/such/model.pt"], "not found"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    res = run_in_process("sft.py", *args, "--out_dir", str(tmp_path / "out"))
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("no_curves")  # draws no curves.png (conftest)
@pytest.mark.slow
def test_seeded_runs_are_identical(tmp_path):
    cfg = dict(digits=2, n_layer=1, d_model=32, batch_size=8, steps=4, device="cpu", n_test=20,
               eval_every=100, samples_every=100)
    sft.train(sft.Config(**cfg, out_dir=str(tmp_path / "a")))
    sft.train(sft.Config(**cfg, out_dir=str(tmp_path / "b")))
    sft.train(sft.Config(**cfg, seed=1, out_dir=str(tmp_path / "c")))
    def metrics(d):  # every column but the wall-clock one
        with open(tmp_path / d / "metrics.csv") as f:
            return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]
    assert metrics("a") == metrics("b")
    assert [r["nll_per_token"] for r in metrics("a")] != [r["nll_per_token"] for r in metrics("c")]


def test_abstain_fraction_replaces_a_random_share_of_demonstrations():
    import numpy as np
    from toy_model import ABSTENTION, AdditionTask
    problems = AdditionTask(3).sample(2000, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    assert sft.demonstrations(problems, 0.0, rng) == [p.demonstration for p in problems]
    assert rng.random() == np.random.default_rng(1).random()  # fraction 0 draws nothing
    targets = sft.demonstrations(problems, 0.3, np.random.default_rng(2))
    assert targets == sft.demonstrations(problems, 0.3, np.random.default_rng(2))  # seeded
    abstained = [t == ABSTENTION for t in targets]
    assert 0.27 <= sum(abstained) / len(problems) <= 0.33
    assert all(t == p.demonstration for t, p, a in zip(targets, problems, abstained) if not a)


@pytest.mark.usefixtures("no_curves")  # draws no curves.png (conftest)
@pytest.mark.slow
def test_abstain_fraction_run_logs_abstention(tmp_path):
    cfg = dict(digits=2, n_layer=1, d_model=32, batch_size=8, steps=2, device="cpu", n_test=20,
               eval_every=2, samples_every=100)
    sft.train(sft.Config(**cfg, abstain_fraction=0.5, out_dir=str(tmp_path / "a")))
    sft.train(sft.Config(**cfg, out_dir=str(tmp_path / "b")))
    with open(tmp_path / "a" / "metrics.csv") as f:
        a = list(csv.DictReader(f))
    with open(tmp_path / "b" / "metrics.csv") as f:
        b = list(csv.DictReader(f))
    assert 0 <= float(a[-1]["eval_abstain_rate"]) <= 1
    assert a[1]["nll_per_token"] != b[1]["nll_per_token"]  # the abstentions changed the targets


def test_sft_learns(small_sft):
    """The session's small SFT run (2 digits, 300 steps) goes from 0 to well above chance."""
    _, summary = small_sft
    assert summary["start_accuracy"] == 0.0
    assert summary["final_accuracy"] >= 0.3
    assert summary["final_format_rate"] >= 0.95


def test_plain_document_is_the_demonstration_without_its_tags_at_the_same_positions():
    """Pre-training text: each tag a plain character, so every step keeps its position."""
    from toy_model import Problem, Tokenizer
    p = Problem(357, 68, 3)
    assert p.prompt + sft.plain_document(p) == \
        "357+068=,7+8+0=15,5+6+1=12,3+0+1=04,=425<|endoftext|>"
    tok = Tokenizer()
    plain = tok.encode(p.prompt + sft.plain_document(p))
    formatted = tok.encode(p.prompt + p.demonstration)
    tags = {tok.encode(t)[0] for t in ("<think>", "</think>", "<answer>", "</answer>")}
    same = [i for i, t in enumerate(formatted[:len(plain) - 1]) if t not in tags]
    assert all(plain[i] == formatted[i] for i in same)  # digits, signs: where they were


def corpus_cfg(**flags):
    return sft.Config(**{"device": "cpu", **flags})


def test_pretraining_corpus_holds_no_formatted_demonstration():
    """--corpus traces: no prompt (every token is a target) and no tag anywhere, on many
    problems; a run on demonstrations gets its prompts and formatted targets."""
    import numpy as np
    from toy_model import AdditionTask, tokenize_prompt_and_output, Tokenizer
    problems = AdditionTask(3).sample(2000, np.random.default_rng(0))
    prompts, texts = sft.corpus_texts(problems, corpus_cfg(corpus="traces"),
                                      np.random.default_rng(1))
    assert set(prompts) == {""}
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    assert not any(tag in t for t in texts for tag in tags)
    assert texts == [p.prompt + sft.plain_document(p) for p in problems]
    batch = tokenize_prompt_and_output(prompts[:3], texts[:3], Tokenizer())
    lengths = [len(Tokenizer().encode(t)) for t in texts[:3]]
    assert batch["response_mask"].sum(1).tolist() == [n - 1 for n in lengths]  # all but the first
    prompts, texts = sft.corpus_texts(problems[:5], corpus_cfg(), np.random.default_rng(1))
    assert prompts == [p.prompt for p in problems[:5]]
    assert texts == [p.demonstration for p in problems[:5]]


@pytest.mark.parametrize("fraction", [0.0, 0.1, 1.0])
def test_mixed_corpus_holds_the_share_of_demonstrations_the_flag_asks(fraction):
    import numpy as np
    from toy_model import AdditionTask
    problems = AdditionTask(3).sample(4000, np.random.default_rng(0))
    cfg = corpus_cfg(corpus="mixed", mixed_fraction=fraction)
    prompts, texts = sft.corpus_texts(problems, cfg, np.random.default_rng(2))
    formatted = [t == p.prompt + p.demonstration for t, p in zip(texts, problems)]
    plain = [t == p.prompt + sft.plain_document(p) for t, p in zip(texts, problems)]
    assert all(f != q for f, q in zip(formatted, plain)) and set(prompts) == {""}
    assert abs(sum(formatted) / len(problems) - fraction) <= 0.015  # 3 standard errors at 0.1


@pytest.mark.usefixtures("no_curves")
@pytest.mark.slow
def test_n_demonstrations_reads_a_fixed_set_epoch_by_epoch(tmp_path, monkeypatch):
    """--n_demonstrations 4 with batches of 6: 3 steps read 18 documents, every one of the 4
    distinct documents 4 or 5 times (each epoch holds each once), and nothing else."""
    seen = []
    real = sft.tokenize_prompt_and_output
    monkeypatch.setattr(sft, "tokenize_prompt_and_output",
                        lambda p, o, t: seen.extend(zip(p, o)) or real(p, o, t))
    sft.train(sft.Config(digits=2, n_layer=1, d_model=32, batch_size=6, steps=3, device="cpu",
                         n_test=20, eval_every=100, samples_every=100, n_demonstrations=4,
                         out_dir=str(tmp_path)))
    counts = {d: seen.count(d) for d in set(seen)}
    assert len(seen) == 18 and len(counts) == 4 and sorted(counts.values()) == [4, 4, 5, 5]
    assert seen[:4] != seen[4:8] or seen[4:8] != seen[8:12]  # each epoch in a new order


@pytest.mark.usefixtures("no_curves")
@pytest.mark.slow
def test_init_checkpoint_starts_from_its_weights(tmp_path):
    """A run from --init_checkpoint starts where that model ended (the same step-0 held-out
    evaluation); a model of other sizes is one line, exit 2."""
    tiny = dict(digits=2, n_layer=1, d_model=32, batch_size=8, device="cpu", n_test=20,
                eval_every=100, samples_every=100)
    first = sft.train(sft.Config(**tiny, steps=30, out_dir=str(tmp_path / "a")))
    second = sft.train(sft.Config(**tiny, steps=1, init_checkpoint=str(tmp_path / "a" / "model.pt"),
                                  out_dir=str(tmp_path / "b")))
    assert second["start_entropy"] == first["final_entropy"]  # greedy on the same problems
    assert first["start_entropy"] != first["final_entropy"]  # the check is not trivially true
    res = run_in_process("sft.py", "--digits", "2", "--d_model", "64", "--init_checkpoint",
                         str(tmp_path / "a" / "model.pt"), "--out_dir", str(tmp_path / "c"))
    assert res.returncode == 2 and "--d_model 32" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
