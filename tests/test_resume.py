"""Runs that lose nothing when stopped: every script saves out_dir/state.pt at each evaluation,
handles SIGTERM as Ctrl-C (evaluate, save, exit 143), and `--resume` goes on from the last
evaluation to the same numbers, cell for cell on a CPU, as a run that was never stopped.

Each case runs a tiny configuration three ways: whole (in this process), stopped by a signal
right after an evaluation (a child process), and resumed from what the stopped one left."""
import csv
import os
import signal
import subprocess
import sys

import pytest
import torch

import distill
import dpo
import expert_iteration
import grpo
import ppo
import sft
from runs import UserError

pytestmark = pytest.mark.usefixtures("no_curves")  # their runs draw no curves.png (conftest)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {"sft": sft, "grpo": grpo, "dpo": dpo, "ppo": ppo, "expert_iteration": expert_iteration,
           "distill": distill,
           "sft_fixed_set": sft, "dpo_iterative": dpo}  # the last two: state of their own
TINY = {  # a few seconds each; evaluations (and so saves) every few steps; the step counter name
    "sft": (dict(digits=2, n_layer=1, d_model=32, steps=12, eval_every=4, n_test=20), "steps"),
    "grpo": (dict(digits=2, n_test=20, steps=8, group_size=4, rollout_batch_size=16,
                  train_batch_size=16, eval_every=3, temperature=1.0), "steps"),
    "dpo": (dict(digits=2, n_test=40, n_prompts=64, samples_per_prompt=4, steps=12, batch_size=8,
                 warmup_steps=1, eval_every=4), "steps"),
    "ppo": (dict(digits=2, steps=6, prompts_per_step=8, n_minibatches=2, n_test=20, eval_every=2),
            "steps"),
    "expert_iteration": (dict(digits=2, n_test=20, n_ei_steps=4, questions_per_step=8,
                              group_size=4, batch_size=8, eval_every=1), "n_ei_steps"),
    "distill": (dict(digits=2, n_test=20, steps=8, rollout_batch_size=16, eval_every=3,
                     temperature=1.0), "steps"),
    # a fixed set read epoch by epoch, stopped mid-epoch; pairs rebuilt at steps 4, 7 and 10,
    # stopped after step 4: the resumed run trains on the set that step 4 built
    "sft_fixed_set": (dict(digits=2, n_layer=1, d_model=32, steps=12, eval_every=4, n_test=20,
                           n_demonstrations=5, batch_size=4), "steps"),
    "dpo_iterative": (dict(digits=2, n_test=40, n_prompts=64, samples_per_prompt=4, steps=12,
                           batch_size=8, warmup_steps=1, eval_every=4, rebuild_pairs_every=3),
                      "steps"),
}


def flags(name: str, sft_checkpoint: str, out_dir: str) -> dict:
    cfg = dict(TINY[name][0], device="cpu", log_every=1, samples_every=1000, out_dir=out_dir)
    if MODULES[name] is not sft:
        cfg["sft_checkpoint"] = sft_checkpoint
    if name == "distill":  # the teacher: the student's own start will do here
        cfg["teacher_checkpoint"] = sft_checkpoint
    return cfg


def read_csv(path) -> list[dict]:
    """metrics.csv without its clock columns (seconds, tokens per second...)."""
    with open(path) as f:
        return [{k: v for k, v in row.items() if "second" not in k} for row in csv.DictReader(f)]


def stop_after_first_evaluation(name: str, cfg: dict, sig: int) -> subprocess.CompletedProcess:
    """Run the script as a child and send it `sig` once the line of its first evaluated step
    (after which state.pt is on disk) is printed."""
    first_eval = cfg.get("eval_every", 1)
    argv = [sys.executable, os.path.join(ROOT, f"{MODULES[name].__name__}.py")]
    for k, v in cfg.items():
        argv += [f"--{k}", str(v)]
    # the child computes with the threads of this process (the whole run's), whatever the machine
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    for line in proc.stdout:
        words = line.split("/")[0].split()
        if len(words) == 2 and words[0] == "step" and int(words[1]) == first_eval:
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.fixture(scope="module")
def whole_run(small_sft, tmp_path_factory):
    """name -> metrics.csv of that script's tiny run never stopped (one run per script, in this
    process, shared by the SIGTERM and SIGKILL cases)."""
    done = {}

    def metrics(name: str) -> list[dict]:
        if name not in done:
            whole = tmp_path_factory.mktemp(f"whole_{name}")
            MODULES[name].train(MODULES[name].Config(**flags(name, small_sft[0], str(whole))))
            done[name] = read_csv(whole / "metrics.csv")
        return done[name]
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("name, sig", [(n, signal.SIGTERM) for n in MODULES]
                         + [("sft", signal.SIGKILL)])  # runs.Run's kill path, shared by all
def test_stopped_run_resumes_to_the_same_numbers(name, sig, small_sft, whole_run, tmp_path):
    module = MODULES[name]
    whole = whole_run(name)
    stopped = tmp_path / "stopped"
    cfg = flags(name, small_sft[0], str(stopped))
    done = stop_after_first_evaluation(name, cfg, sig)
    steps = TINY[name][0][TINY[name][1]]
    if sig == signal.SIGTERM:  # as Ctrl-C: evaluated, saved, exit 128 + 15
        assert done.returncode == 143, done.stderr
        assert "Traceback" not in done.stderr
        assert (stopped / "summary.json").exists() and (stopped / "model.pt").exists()
    else:  # nothing ran after the kill: what the last evaluation saved is all there is
        assert done.returncode == -signal.SIGKILL
        assert not (stopped / "summary.json").exists()
        assert len(read_csv(stopped / "metrics.csv")) - 1 < steps
    assert (stopped / "state.pt").exists()

    summary = module.train(module.Config(**cfg, resume=True))
    assert summary["steps"] == steps and not summary["interrupted"]
    assert read_csv(stopped / "metrics.csv") == whole


def test_resume_refuses_what_it_cannot_continue(small_sft, tmp_path):
    """No state.pt; other flags than the saved run's; a run that already finished; --overwrite."""
    cfg = flags("sft", small_sft[0], str(tmp_path / "run"))
    with pytest.raises(UserError, match="state.pt not found"):
        sft.train(sft.Config(**cfg, resume=True))
    sft.train(sft.Config(**cfg))
    with pytest.raises(UserError, match="already finished"):
        sft.train(sft.Config(**cfg, resume=True))
    with pytest.raises(UserError, match="other flags: --lr"):
        sft.train(sft.Config(**{**cfg, "lr": 3e-4}, resume=True))
    with pytest.raises(UserError, match="exclude each other"):
        sft.train(sft.Config(**cfg, resume=True, overwrite=True))
