"""trl_grpo.py and trl_dpo.py: our Config becomes TRL's field by field, a few steps run and write
grpo.py's and dpo.py's outputs (summary keys, metrics.csv columns), bad flags and a missing TRL
exit 2 with one line. Skipped without the extras (python3 -m pip install -r requirements-hf.txt)."""
import csv
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
pytest.importorskip("trl")

import dpo  # noqa: E402
import grpo  # noqa: E402
import runs  # noqa: E402
import trl_dpo  # noqa: E402
import trl_grpo  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_curves")  # their runs draw no curves.png (conftest)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("ours,script", [(grpo.Config, trl_grpo.Config),
                                         (dpo.Config, trl_dpo.Config)])
def test_shared_fields_have_our_defaults(ours, script):
    shared = [f.name for f in dataclasses.fields(script) if f.name in ours.__dataclass_fields__]
    assert len(shared) > 20
    assert all(getattr(script, name) == getattr(ours, name) for name in shared if name != "out_dir")


def test_grpo_config_is_ours_translated(tmp_path):
    """Each of our fields lands in TRL's field of the same meaning (the values passed here, not
    the defaults, so that a changed default changes nothing here)."""
    ours = dict(use_std_normalization=True, length_normalization="sequence_mean", beta=0.0,
                group_size=4, rollout_batch_size=256, train_batch_size=256,
                gradient_accumulation_steps=8, epochs_per_rollout_batch=1, steps=480,
                temperature=0.3, cliprange=0.2, cliprange_high=None, lr=6e-5, warmup_steps=10,
                beta1=0.9, beta2=0.98, weight_decay=0.0, max_grad_norm=1.0)
    args = trl_grpo.grpo_config(trl_grpo.Config(device="cpu", **ours), 40, str(tmp_path))
    assert (args.loss_type, args.scale_rewards, args.beta, args.use_bias_correction_kl) == \
        ("grpo", "group", 0.0, False)
    assert (args.num_generations, args.generation_batch_size, args.num_iterations) == (4, 256, 1)
    # one optimizer step per rollout batch, in gradient_accumulation_steps micro-batches
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 256
    assert args.steps_per_generation == args.gradient_accumulation_steps == 8
    assert args.max_steps == 480
    assert (args.temperature, args.top_p, args.top_k, args.max_completion_length) == (0.3, 1.0, 0, 40)
    assert (args.epsilon, args.epsilon_high or args.epsilon) == (0.2, 0.2)
    assert (args.learning_rate, args.warmup_steps, args.adam_beta1, args.adam_beta2,
            args.weight_decay, args.max_grad_norm) == (6e-5, 10, 0.9, 0.98, 0.0, 1.0)
    assert not args.bf16 and not args.shuffle_dataset
    variants = trl_grpo.grpo_config(trl_grpo.Config(
        **{**ours, "length_normalization": "token_mean", "use_std_normalization": False,
           "cliprange_high": 0.28}, device="cpu"), 40, str(tmp_path))
    assert (variants.loss_type, variants.scale_rewards, variants.epsilon_high) == \
        ("dapo", "none", 0.28)
    dr_grpo = trl_grpo.grpo_config(trl_grpo.Config(
        **{**ours, "length_normalization": "constant", "use_std_normalization": False},
        device="cpu"), 40, str(tmp_path))
    assert (dr_grpo.loss_type, dr_grpo.scale_rewards) == ("dr_grpo", "none")


def test_the_batches_split_over_processes(tmp_path):
    """Under N processes TRL's per-device batch is per process: N shares make our batch."""
    cfg = trl_grpo.Config(device="cpu")
    args = trl_grpo.grpo_config(cfg, 40, str(tmp_path), processes=2)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * 2 == \
        cfg.train_batch_size
    assert args.generation_batch_size == cfg.rollout_batch_size  # TRL's is global already
    dpo_args = trl_dpo.dpo_config(trl_dpo.Config(device="cpu"), str(tmp_path), processes=2)
    assert dpo_args.per_device_train_batch_size * 2 == dpo.Config.batch_size


def test_dpo_config_is_ours_translated(tmp_path):
    args = trl_dpo.dpo_config(trl_dpo.Config(device="cpu"), str(tmp_path))
    c = dpo.Config()
    assert (args.loss_type, args.loss_weights) == (["sigmoid", "sft"], [1.0, c.nll_weight])
    assert (args.beta, args.max_steps, args.per_device_train_batch_size, args.learning_rate,
            args.warmup_steps) == (c.beta, c.steps, c.batch_size, c.lr, c.warmup_steps)
    assert args.precompute_ref_log_probs and args.dataloader_drop_last and not args.bf16
    pure = trl_dpo.dpo_config(trl_dpo.Config(device="cpu", nll_weight=0.0), str(tmp_path))
    assert (pure.loss_type, pure.loss_weights) == (["sigmoid"], [1.0])


def test_hf_schedule_is_ours_one_step_earlier():
    """Hugging Face's warm-up and cosine (min 0.1) are runs.lr_at shifted by one step: its first
    step has lr 0, ours lr / warmup_steps."""
    from transformers import get_scheduler
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=6e-5)
    scheduler = get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=10,
                              num_training_steps=100, scheduler_specific_kwargs={"min_lr_rate": 0.1})
    for step in range(1, 101):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(runs.lr_at(step - 1, 6e-5, 10, 100)
                                                                if step > 1 else 0.0, rel=1e-9)
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("argv", [["--length_normalization", "nope"], ["--cliprange_high", "0.1"],
                                  ["--rollout_batch_size", "256", "--train_batch_size", "96",
                                   "--gradient_accumulation_steps", "3"]])
def test_trl_grpo_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        runs.parse_config(trl_grpo.Config, argv)
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_trl_dpo_refuses_what_trl_lacks(capsys):
    for argv in (["--label_smoothing", "0.1"], ["--loss_type", "ipo"], ["--loss_type", "simpo"]):
        with pytest.raises(SystemExit) as e:
            runs.parse_config(trl_dpo.Config, argv)
        assert e.value.code == 2
    assert runs.parse_config(trl_dpo.Config, ["--loss_type", "robust", "--label_smoothing", "0.1"])


def test_missing_trl_is_one_line_exit_2(tmp_path):
    (tmp_path / "trl.py").write_text("raise ImportError('hidden for this test')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    for script in ("trl_grpo.py", "trl_dpo.py"):
        done = subprocess.run([sys.executable, script, "--sft_checkpoint", "nowhere.pt",
                               "--out_dir", str(tmp_path / script)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0 and "requirements-hf.txt" in done.stderr


def columns(path):
    with open(path) as f:
        return next(csv.reader(f))


SMALL = dict(digits=2, n_test=50, device="cpu", eval_every=2, log_every=1)


@pytest.mark.slow
def test_trl_grpo_runs_a_few_steps(small_sft, tmp_path):
    checkpoint, _ = small_sft
    sizes = dict(SMALL, sft_checkpoint=checkpoint, steps=3, rollout_batch_size=16,
                 train_batch_size=16, gradient_accumulation_steps=2)
    theirs = trl_grpo.train(trl_grpo.Config(**sizes, out_dir=str(tmp_path / "trl")))
    ours = grpo.train(grpo.Config(**sizes, samples_every=100, out_dir=str(tmp_path / "ours")))
    assert theirs["steps"] == 3 and theirs["start_accuracy"] == ours["start_accuracy"]
    assert set(ours) - set(theirs) == set()
    on_disk = json.load(open(tmp_path / "trl" / "summary.json"))
    assert on_disk["trl_config"]["loss_type"] == "grpo"
    mapped = set(columns(tmp_path / "trl" / "metrics.csv")) - {"seconds"}
    assert mapped <= set(columns(tmp_path / "ours" / "metrics.csv"))
    assert {"reward", "zero_spread_fraction", "response_len", "entropy", "clip_fraction",
            "eval_accuracy", "lr"} <= mapped
    model, _ = runs.load_checkpoint(str(tmp_path / "trl" / "model.pt"), digits=2)
    start, _ = runs.load_checkpoint(checkpoint)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                     start.state_dict().values()))  # it trained


@pytest.mark.slow
def test_trl_dpo_runs_a_few_steps(small_sft, tmp_path):
    checkpoint, _ = small_sft
    sizes = dict(SMALL, sft_checkpoint=checkpoint, steps=3, n_prompts=96, batch_size=8)
    theirs = trl_dpo.train(trl_dpo.Config(**sizes, out_dir=str(tmp_path / "trl")))
    ours = dpo.train(dpo.Config(**sizes, samples_every=100, out_dir=str(tmp_path / "ours")))
    # the same preference set, from the same seed and the same calls
    assert theirs["train_preference_set"] == ours["train_preference_set"]
    assert theirs["start_preference_accuracy"] == ours["start_preference_accuracy"]
    assert {"start_accuracy", "final_accuracy", "steps", "wall_seconds",
            "final_preference_accuracy"} <= set(theirs)
    mapped = set(columns(tmp_path / "trl" / "metrics.csv")) - {"seconds"}
    assert mapped <= set(columns(tmp_path / "ours" / "metrics.csv"))
    assert {"rewards/margins", "logps/chosen", "eval_preference_accuracy", "lr"} <= mapped
