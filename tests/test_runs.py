"""runs.py and what every script does with it: checks before the first step, no silent loss of a
finished run, Ctrl-C, one seed one result, -h in 80 columns, sampling and scoring temperatures."""
import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import grpo
import ppo
import runs
import sft
from conftest import ROOT, run_in_process
from toy_model import GPT, GPTConfig, generate

TINY_SFT = dict(digits=2, n_layer=1, d_model=32, steps=40, eval_every=1000, samples_every=1000,
                n_test=40, device="cpu", seed=0)
TINY_GRPO = dict(digits=2, steps=3, rollout_batch_size=16, train_batch_size=16,
                 gradient_accumulation_steps=2, n_test=20, eval_every=3, samples_every=1000,
                 device="cpu", seed=0)


def run_cli(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=300)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- checks before the first step
def test_out_dir_that_is_a_file_exits_2_before_training(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    for out_dir in (target, target / "below"):
        r = run_in_process("sft.py", "--out_dir", str(out_dir), "--device", "cpu")
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "is a file" in r.stderr
        assert "step 1/" not in r.stdout  # refused before the first step
    assert target.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_unwritable_out_dir_is_refused_and_nothing_is_created(tmp_path, monkeypatch):
    # As root a read-only mode is no obstacle, so the permission answer itself is replaced.
    monkeypatch.setattr(runs.os, "access", lambda path, mode: False)
    with pytest.raises(runs.UserError, match="not writable"):
        runs.check_out_dir(str(tmp_path / "new" / "deeper"), overwrite=False)
    with pytest.raises(runs.UserError, match="not writable"):
        runs.check_out_dir(str(tmp_path), overwrite=False)
    assert os.listdir(tmp_path) == []


def test_missing_checkpoint_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "grpo"
    r = run_in_process("grpo.py", "--sft_checkpoint", str(tmp_path / "none.pt"),
                       "--out_dir", str(out), "--device", "cpu")
    assert r.returncode == 2 and "not found" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not out.exists()


def test_response_budget_too_short_for_an_answer_exits_2(small_sft, tmp_path):
    r = run_in_process("grpo.py", "--sft_checkpoint", small_sft[0], "--digits", "2",
                       "--max_new_tokens", "5", "--out_dir", str(tmp_path / "g"), "--device", "cpu")
    assert r.returncode == 2 and "cannot hold every answer" in r.stderr, r.stderr
    assert not (tmp_path / "g").exists()


@pytest.mark.usefixtures("no_curves")  # draws no curves.png (conftest)
@pytest.mark.slow
def test_a_finished_run_is_not_replaced_without_overwrite(tmp_path):
    cfg = dict(TINY_SFT, steps=2, out_dir=str(tmp_path))
    sft.train(sft.Config(**cfg))
    before = (tmp_path / "summary.json").read_bytes()
    with pytest.raises(runs.UserError, match="--overwrite"):
        sft.train(sft.Config(**cfg))
    assert (tmp_path / "summary.json").read_bytes() == before
    summary = sft.train(sft.Config(**cfg, overwrite=True))
    assert summary["steps"] == 2


# ---------------------------------------------------------------- Ctrl-C
@pytest.mark.slow
def test_interrupt_evaluates_logs_and_says_the_same_step_everywhere(tmp_path, monkeypatch):
    """Ctrl-C during step 3 ends the run once step 3 is done: no step is left half-made."""
    calls = []
    real = sft.demonstrations

    def interrupt_on_third(*args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
        return real(*args)

    monkeypatch.setattr(sft, "demonstrations", interrupt_on_third)
    summary = sft.train(sft.Config(**dict(TINY_SFT, out_dir=str(tmp_path))))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back afterwards
    rows = read_rows(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]  # the start, 3 whole steps
    assert rows[-1]["eval_accuracy"] != ""  # the final evaluation is in the CSV (and the curves)
    assert float(rows[-1]["eval_accuracy"]) == summary["final_accuracy"]
    assert summary["interrupted"] and summary["steps"] == summary["interrupted_at_step"] == 3
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 3
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "model.pt").exists()


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path, monkeypatch):
    real = sft.demonstrations

    def interrupt_twice(*args):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(sft, "demonstrations", interrupt_twice)
    with pytest.raises(KeyboardInterrupt):
        sft.train(sft.Config(**dict(TINY_SFT, out_dir=str(tmp_path))))
    assert not (tmp_path / "summary.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_ctrl_c_exits_130_after_saving(tmp_path):
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "sft.py"), "--digits", "2",
                             "--n_layer", "1", "--d_model", "32", "--steps", "100000",
                             "--log_every", "1", "--eval_every", "100000", "--n_test", "20",
                             "--device", "cpu", "--out_dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            # a shell's background job ignores SIGINT, so Python installs no
                            # KeyboardInterrupt handler: give the child a terminal's default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if line.split("/")[0].split() == ["step", "2"]:  # "step      2/100000 | ..."
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in out and "Traceback" not in err and "Warning" not in err
    steps = json.loads((tmp_path / "summary.json").read_text())["steps"]
    assert f"interrupted at step {steps}" in out
    assert read_rows(tmp_path / "metrics.csv")[-1]["eval_accuracy"] != ""


# ---------------------------------------------------------------- one seed, one result
@pytest.mark.usefixtures("no_curves")  # draws no curves.png (conftest)
@pytest.mark.slow
def test_grpo_numbers_do_not_depend_on_where_the_sft_model_was_made(tmp_path, monkeypatch):
    checkpoint = str(tmp_path / "sft" / "model.pt")

    def make_sft(cfg):  # what sft.train_if_missing does for a missing default checkpoint
        if not os.path.exists(cfg.sft_checkpoint):
            sft.train(sft.Config(**dict(TINY_SFT, out_dir=os.path.dirname(cfg.sft_checkpoint))))

    monkeypatch.setattr(sft, "train_if_missing", make_sft)
    in_process = grpo.train(grpo.Config(**TINY_GRPO, sft_checkpoint=checkpoint,
                                        out_dir=str(tmp_path / "a")))  # trains the SFT model first
    loaded = grpo.train(grpo.Config(**TINY_GRPO, sft_checkpoint=checkpoint,
                                    out_dir=str(tmp_path / "b")))  # loads it
    a, b = (read_rows(tmp_path / name / "metrics.csv") for name in ("a", "b"))
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_second")}
                         for r in rows]
    assert drop(a) == drop(b)
    assert in_process["final_accuracy"] == loaded["final_accuracy"]


# ---------------------------------------------------------------- -h and the console
@pytest.mark.parametrize("script", ["sft.py", "grpo.py", "dpo.py", "ppo.py", "distill.py", "gae.py",
                                    "bench.py"])
def test_help_fits_80_columns(script, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    r = run_in_process(script, "-h")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    description = r.stdout.split("\n\n")[1]
    assert len(description.splitlines()) <= 8  # a short description, then the options
    for line in lines:  # a default is never split across lines
        if "(default:" in line:
            assert ")" in line[line.index("(default:"):], line


@pytest.mark.usefixtures("no_curves")  # draws no curves.png (conftest)
@pytest.mark.slow
def test_console_prints_every_log_every_steps(tmp_path, capsys):
    sft.train(sft.Config(**dict(TINY_SFT, steps=12, log_every=5, eval_every=6,
                                out_dir=str(tmp_path))))
    printed = [line.split("/")[0] for line in capsys.readouterr().out.splitlines()
               if line.startswith("step ") and "/" in line.split()[1]]
    assert printed == ["step  5", "step  6", "step 10", "step 12"]  # every 5, and every evaluation


# ---------------------------------------------------------------- temperatures
class FixedLogits(GPT):
    """A model whose next-token logits are always the same: generate's sampling distribution
    can be compared with softmax(logits / T) directly."""

    def __init__(self, logits):
        super().__init__(GPTConfig(vocab_size=len(logits), n_layer=1, d_model=8, n_head=2))
        self.fixed = logits

    def forward(self, idx, cache=None):
        if cache is not None:
            cache.pos += idx.shape[1]
        return self.fixed.expand(idx.shape[0], idx.shape[1], -1).clone()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_generate_samples_from_softmax_of_logits_over_temperature(temperature):
    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    model = FixedLogits(logits)
    n = 40_000
    prompt = torch.zeros(n, 1, dtype=torch.long)
    ids, _ = generate(model, prompt, max_new_tokens=1, eos_id=4, pad_id=3, temperature=temperature)
    freq = torch.bincount(ids[:, 0], minlength=5).float() / n
    expected = torch.softmax(logits / temperature, dim=-1)
    assert torch.allclose(freq, expected, atol=0.01), (freq, expected)  # 4 std at n = 40,000


@pytest.mark.usefixtures("no_curves")  # draws no curves.png (conftest)
def test_rl_scripts_score_log_probs_at_their_sampling_temperature(small_sft, tmp_path,
                                                                  monkeypatch):
    seen = []

    def spy(module, name):
        real = getattr(module, name)

        def wrapped(*args, **kw):
            seen.append((module.__name__, name, kw.get("temperature")))
            return real(*args, **kw)
        monkeypatch.setattr(module, name, wrapped)

    for module, names in ((grpo, ["generate", "get_response_log_probs"]),
                          (ppo, ["generate", "get_response_log_probs"])):
        for name in names:
            spy(module, name)
    grpo.train(grpo.Config(**dict(TINY_GRPO, steps=1, temperature=0.6, beta=0.04),
                           sft_checkpoint=small_sft[0], out_dir=str(tmp_path / "g")))
    ppo.train(ppo.Config(digits=2, steps=1, prompts_per_step=8, n_test=20, temperature=0.6,
                         eval_every=1000, samples_every=1000, device="cpu",
                         sft_checkpoint=small_sft[0], out_dir=str(tmp_path / "p")))
    for module in ("grpo", "ppo"):
        used = {t for m, name, t in seen if m == module}
        assert used == {0.6}, (module, seen)
        assert {name for m, name, _ in seen if m == module} >= {"generate"}


def test_old_python_stops_with_one_line_naming_the_version():
    """On Python < 3.10 every script exits 2 with one line, not a TypeError from `X | None`.
    The interpreter's version is faked; each script runs as `python X.py` would run it, and the
    experiments package as `python -m experiments` would."""
    code = """
import runpy, sys
sys.version_info = (3, 9, 18, "final", 0)
for script in sys.argv[1:]:
    sys.argv = [script]
    try:
        if script.endswith(".py"):
            runpy.run_path(script, run_name="__main__")
        else:
            runpy.run_module(script, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        print(script, e.code)
"""
    scripts = ["sft.py", "grpo.py", "dpo.py", "ppo.py", "expert_iteration.py", "distill.py",
               "gae.py", "bench.py", "experiments"]
    r = run_cli("-c", code, *scripts)
    assert r.stdout.split() == [w for s in scripts for w in (s, "2")], r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == ["error: Python 3.10 or newer is needed (this is 3.9)"] * len(scripts)
