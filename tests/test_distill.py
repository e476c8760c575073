"""distill.py: the per-token KL (golden values, 0 when student = teacher, gradient against finite
differences, k1's gradient in expectation), the reduction, and the loop: the teacher never gets a
gradient, the student's own samples are the ones scored, what it learns, the command line."""
import csv
import os

import pytest
import torch
import torch.nn.functional as F

import distill
import runs
from conftest import run_in_process
from distill import (Config, compute_distillation_loss, distill_microbatch_train_step,
                     token_kl)
from runs import UserError, parse_config
from toy_model import AdditionTask

pytestmark = pytest.mark.usefixtures("no_curves")  # their runs draw no curves.png (conftest)


def logits_pair(seed=0, B=3, T=5, V=7):
    """Random student and teacher logits (B, T, V) in float64, sampled tokens and a ragged mask."""
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(B, T, V, generator=gen, dtype=torch.float64)
    teacher = torch.randn(B, T, V, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, V, (B, T), generator=gen)
    lengths = torch.tensor([T, 2, 4])[:B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T)
    return student, teacher, ids, mask


def step_loss(student_logits, teacher_logits, ids, mask, n_tokens, **kw):
    """distill_microbatch_train_step's loss on logits; its backward lands in student_logits.grad."""
    return distill_microbatch_train_step(F.log_softmax(student_logits, -1),
                                         F.log_softmax(teacher_logits, -1), ids, mask, n_tokens,
                                         **kw)[0]


# ---- the per-token KL ---------------------------------------------------------------------------
def test_token_kl_golden_and_direction():
    p = torch.tensor([[0.5, 0.5]]).log()
    q = torch.tensor([[0.25, 0.75]]).log()
    expected = 0.5 * torch.log(torch.tensor(2.0)) + 0.5 * torch.log(torch.tensor(2 / 3))
    torch.testing.assert_close(token_kl(p, q), expected.view(1), atol=1e-7, rtol=0)
    reverse = 0.25 * torch.log(torch.tensor(0.5)) + 0.75 * torch.log(torch.tensor(1.5))
    torch.testing.assert_close(token_kl(q, p), reverse.view(1), atol=1e-7, rtol=0)
    # the distillation loss is KL(student || teacher) on the student's samples, the reverse one
    loss, meta = compute_distillation_loss(p.view(1, 1, 2), q.view(1, 1, 2), torch.zeros(1, 1,
                                           dtype=torch.long), "exact", "student")
    torch.testing.assert_close(loss, expected.view(1, 1), atol=1e-7, rtol=0)
    torch.testing.assert_close(meta["reverse_kl"], expected.view(1, 1), atol=1e-7, rtol=0)
    loss, _ = compute_distillation_loss(p.view(1, 1, 2), q.view(1, 1, 2), torch.zeros(1, 1,
                                        dtype=torch.long), "exact", "teacher")
    torch.testing.assert_close(loss, reverse.view(1, 1), atol=1e-7, rtol=0)  # forward KL(T || S)


def test_k1_golden():
    """k1 on the sampled token: the on-policy weight is log pi_theta(o) - log pi_T(o) on log
    pi_theta(o); off-policy, the NLL of the teacher's token."""
    student = torch.tensor([[[0.5, 0.5]]]).log()
    teacher = torch.tensor([[[0.25, 0.75]]]).log()
    ids = torch.tensor([[1]])
    loss, _ = compute_distillation_loss(student, teacher, ids, "k1", "student")
    expected = torch.log(torch.tensor(0.5 / 0.75)) * torch.log(torch.tensor(0.5))
    torch.testing.assert_close(loss, expected.view(1, 1), atol=1e-7, rtol=0)
    loss, _ = compute_distillation_loss(student, teacher, ids, "k1", "teacher")
    torch.testing.assert_close(loss, -torch.log(torch.tensor(0.5)).view(1, 1), atol=1e-7, rtol=0)


@pytest.mark.parametrize("estimator, sampler", [("exact", "student"), ("exact", "teacher"),
                                                ("k1", "student")])
def test_loss_and_gradient_are_zero_when_student_equals_teacher(estimator, sampler):
    logits, _, ids, mask = logits_pair()
    student = logits.clone().requires_grad_(True)
    loss = step_loss(student, logits.clone(), ids, mask, mask.sum(), kl_estimator=estimator,
                     sampler=sampler)
    assert abs(loss.item()) < 1e-12
    assert student.grad.abs().max() < 1e-12


@pytest.mark.parametrize("estimator, sampler", [("exact", "student"), ("exact", "teacher"),
                                                ("k1", "student"), ("k1", "teacher")])
def test_gradient_matches_finite_differences(estimator, sampler):
    """The gradient the step backpropagates, against central differences of the loss it returns,
    masked positions and the division by the batch's token count included."""
    student, teacher, ids, mask = logits_pair()
    n_tokens = mask.sum() + 3  # as if another micro-batch held 3 more tokens
    x = student.clone().requires_grad_(True)
    step_loss(x, teacher, ids, mask, n_tokens, kl_estimator=estimator, sampler=sampler)
    grad = x.grad.clone()
    if estimator == "k1" and sampler == "student":  # its value is a surrogate with a fixed weight
        weight = (F.log_softmax(student, -1) - F.log_softmax(teacher, -1)).gather(
            -1, ids.unsqueeze(-1)).squeeze(-1)
        value = lambda s: ((weight * F.log_softmax(s, -1).gather(-1, ids.unsqueeze(-1))
                            .squeeze(-1)) * mask).sum() / n_tokens
    else:
        value = lambda s: step_loss(s.clone().requires_grad_(True), teacher, ids, mask, n_tokens,
                                    kl_estimator=estimator, sampler=sampler)
    h = 1e-6
    gen = torch.Generator().manual_seed(1)
    for flat in torch.randint(0, student.numel(), (12,), generator=gen).tolist():
        e = torch.zeros(student.numel(), dtype=torch.float64)
        e[flat] = h
        e = e.view_as(student)
        numeric = (value(student + e) - value(student - e)) / (2 * h)
        assert grad.flatten()[flat].item() == pytest.approx(numeric.item(), abs=1e-8)
    b, t = 1, 3  # past the end of row 1: masked, no gradient
    assert mask[b, t] == 0 and torch.equal(grad[b, t], torch.zeros_like(grad[b, t]))
    assert grad.abs().max() > 1e-3


def test_k1_gradient_in_expectation_is_the_exact_gradient():
    """Averaged over the sampled token with the sampler's own probabilities, k1's gradient is the
    exact KL's: on the student's samples (REINFORCE) and on the teacher's (the NLL)."""
    student, teacher, _, _ = logits_pair(B=1, T=1, V=6)
    mask = torch.ones(1, 1, dtype=torch.long)
    for sampler, probs in (("student", student.softmax(-1)), ("teacher", teacher.softmax(-1))):
        x = student.clone().requires_grad_(True)
        step_loss(x, teacher, torch.zeros(1, 1, dtype=torch.long), mask, 1, kl_estimator="exact",
                  sampler=sampler)
        exact = x.grad.clone()
        expected = torch.zeros_like(student)
        for v in range(student.shape[-1]):
            x = student.clone().requires_grad_(True)
            step_loss(x, teacher, torch.tensor([[v]]), mask, 1, kl_estimator="k1", sampler=sampler)
            expected += probs[0, 0, v] * x.grad
        torch.testing.assert_close(expected, exact, atol=1e-12, rtol=1e-9)


def test_micro_batches_add_up_to_the_whole_batch():
    """Each micro-batch divides by the whole batch's token count: two halves give one batch's
    gradient, although their token counts differ."""
    student, teacher, ids, mask = logits_pair(B=3)
    whole = student.clone().requires_grad_(True)
    step_loss(whole, teacher, ids, mask, mask.sum())
    parts = student.clone().requires_grad_(True)
    for rows in (slice(0, 1), slice(1, 3)):
        step_loss(parts[rows], teacher[rows], ids[rows], mask[rows], mask.sum())
    assert mask[:1].sum() != mask[1:].sum()
    torch.testing.assert_close(parts.grad, whole.grad, atol=1e-12, rtol=0)
    loss = step_loss(student.clone().requires_grad_(True), teacher, ids, mask, mask.sum())
    kl = token_kl(F.log_softmax(student, -1), F.log_softmax(teacher, -1))
    assert loss.item() == pytest.approx((kl * mask).sum().item() / mask.sum().item(), rel=1e-12)


# ---- the training loop --------------------------------------------------------------------------
def perturbed(checkpoint, path, scale):
    """Another model of the same task: the checkpoint with every weight perturbed."""
    model, ckpt = runs.load_checkpoint(checkpoint)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    runs.save_checkpoint(str(path), model, ckpt["digits"], ckpt["run_config"])
    return str(path)


def small_config(student, teacher, out, **kw):
    base = dict(digits=2, sft_checkpoint=student, teacher_checkpoint=teacher, n_test=20,
                rollout_batch_size=16, gradient_accumulation_steps=2, steps=2, eval_every=1000,
                samples_every=1000, device="cpu", out_dir=str(out))
    return Config(**{**base, **kw})


@pytest.mark.parametrize("sampler", ["student", "teacher"])
def test_the_samplers_tokens_are_scored_and_the_teacher_gets_no_gradient(
        sampler, small_sft, tmp_path, monkeypatch):
    """Spy on the loop: every rollout is generated by the model --sampler names (the student,
    whose weights move, or the frozen teacher), and exactly those tokens are what the teacher
    and the student score; the teacher's weights end as they began, with no gradient."""
    teacher_path = perturbed(small_sft[0], tmp_path / "teacher.pt", scale=0.05)
    models, generated, scored = {}, [], []
    real_load_teacher, real_load_policy = distill.load_teacher, runs.Run.load_policy
    real_generate, real_scores = distill.generate, distill.next_token_log_probs

    def spy_load_teacher(*args):
        models["teacher"] = real_load_teacher(*args)
        return models["teacher"]

    def spy_load_policy(*args):
        models["student"] = real_load_policy(*args)
        return models["student"]

    def spy_generate(model, prompt_ids, *args, **kw):
        ids, mask = real_generate(model, prompt_ids, *args, **kw)
        generated.append((model, torch.cat([prompt_ids, ids], dim=1)[:, :-1], kw["temperature"]))
        return ids, mask

    def spy_scores(model, input_ids, temperature):
        scored.append((model, input_ids.clone(), temperature))
        return real_scores(model, input_ids, temperature)

    monkeypatch.setattr(distill, "load_teacher", spy_load_teacher)
    monkeypatch.setattr(runs.Run, "load_policy", spy_load_policy)
    monkeypatch.setattr(distill, "generate", spy_generate)
    monkeypatch.setattr(distill, "next_token_log_probs", spy_scores)
    distill.train(small_config(small_sft[0], teacher_path, tmp_path / "run", steps=2,
                               sampler=sampler, temperature=0.6))
    student, teacher = models["student"], models["teacher"]
    assert len(generated) == 2  # one rollout batch per step; evaluate() calls its own generate
    for step, (model, sequences, _) in enumerate(generated):
        assert model is models[sampler]
        for who in (teacher, student):  # each scores the whole batch, in micro-batches
            seen = torch.cat([ids for m, ids, _ in scored[4 * step:4 * step + 4] if m is who])
            assert torch.equal(seen, sequences)
    # sampled and scored at the one temperature
    assert {t for *_, t in generated} == {t for *_, t in scored} == {0.6}
    start = torch.load(teacher_path, weights_only=True)["state_dict"]
    assert all(torch.equal(p, start[k]) for k, p in teacher.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert any(not torch.equal(p, start[k]) for k, p in student.state_dict().items())


def test_a_seeded_run_logs_every_column_and_is_deterministic(small_sft, tmp_path):
    teacher_path = perturbed(small_sft[0], tmp_path / "teacher.pt", scale=0.05)
    for name in "ab":
        distill.train(small_config(small_sft[0], teacher_path, tmp_path / name, steps=2,
                                   eval_every=2, kl_estimator="k1"))
    rows = {}
    for name in "ab":
        with open(tmp_path / name / "metrics.csv") as f:
            rows[name] = [{k: v for k, v in r.items() if "second" not in k}
                          for r in csv.DictReader(f)]
    assert rows["a"] == rows["b"] and len(rows["a"]) == 3
    last = rows["a"][-1]
    for key in ("reverse_kl", "answer_reward", "entropy", "response_len", "tokens",
                "sampled_responses", "eval_accuracy"):
        assert last[key] != "", key
    assert int(last["sampled_responses"]) == 2 * 16
    assert float(last["reverse_kl"]) > 0
    assert float(last["response_len"]) == pytest.approx(float(last["tokens"]) / 16)


def test_learning_the_student_moves_to_its_teacher(small_sft, tmp_path):
    """A student made from the small model by a small random change to every weight (it loses
    most of its accuracy) is distilled from the small model: its KL to it falls by half and its
    held-out accuracy climbs back."""
    student = perturbed(small_sft[0], tmp_path / "student.pt", scale=0.006)
    summary = distill.train(small_config(student, small_sft[0], tmp_path / "run", steps=20,
                                         rollout_batch_size=32, gradient_accumulation_steps=1,
                                         lr=1e-4, n_test=200))
    with open(tmp_path / "run" / "metrics.csv") as f:
        kl = [float(r["reverse_kl"]) for r in csv.DictReader(f) if r["reverse_kl"]]
    assert sum(kl[-5:]) / 5 < 0.5 * sum(kl[:5]) / 5, kl
    assert summary["final_accuracy"] >= summary["start_accuracy"] + 0.1, summary


# ---- the command line ---------------------------------------------------------------------------
def test_a_missing_default_teacher_says_to_run_grpo(small_sft, tmp_path):
    r = run_in_process("distill.py", "--sft_checkpoint", small_sft[0], "--digits", "2",
                       "--device", "cpu", "--out_dir", str(tmp_path / "run"), cwd=str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "python grpo.py" in r.stderr, r.stderr
    with pytest.raises(UserError, match="not found"):  # another path: missing, said plainly
        distill.train(small_config(small_sft[0], str(tmp_path / "none.pt"), tmp_path / "b"))


def test_a_teacher_of_another_task_is_refused(small_sft, tmp_path):
    model, ckpt = runs.load_checkpoint(small_sft[0])
    runs.save_checkpoint(str(tmp_path / "three.pt"), model, 3, ckpt["run_config"])
    with pytest.raises(UserError, match="3-digit"):
        distill.train(small_config(small_sft[0], str(tmp_path / "three.pt"), tmp_path / "a"))
    runs.save_checkpoint(str(tmp_path / "easy.pt"), model, 2, ckpt["run_config"],
                         AdditionTask(2, easy_digits=1))
    with pytest.raises(UserError, match="another task"):
        distill.train(small_config(small_sft[0], str(tmp_path / "easy.pt"), tmp_path / "b"))


@pytest.mark.parametrize("args", [["--no-such-flag"],
                                  ["--rollout_batch_size", "30", "--gradient_accumulation_steps", "4"],
                                  ["--temperature", "0"], ["--kl_estimator", "k3"],
                                  ["--sampler", "both"], ["--lr", "0"], ["--steps", "0"],
                                  ["--max_new_tokens", "0"]])
def test_bad_values_are_one_line_errors(args, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Config, args)
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
