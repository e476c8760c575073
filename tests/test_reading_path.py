"""What a reader relies on without checking: each script passes its Config's values to the
algorithm's functions (a flag that silently did nothing would pass every loss test), the presets
and the defaults that depend on another flag."""
import os

import pytest
import torch

import dpo
import expert_iteration
import grpo
import ppo
from runs import UserError, parse_config
from toy_model import kl_penalty

pytestmark = pytest.mark.usefixtures("no_curves")  # their runs draw no curves.png (conftest)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spy(monkeypatch, module, name, calls):
    """Replace module.name by a wrapper that records each call's arguments in calls[name]."""
    real = getattr(module, name)

    def wrapped(*args, **kwargs):
        calls.setdefault(name, []).append((args, kwargs))
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapped)


# ---------------------------------------------------------------- the loops use their flags
def test_ppo_passes_its_flags_to_gae_rewards_kl_and_the_loss(small_sft, tmp_path, monkeypatch):
    calls = {}
    for name in ("gae_advantages", "compute_ppo_rewards", "kl_penalty", "ppo_minibatch_train_step",
                 "whiten"):
        spy(monkeypatch, ppo, name, calls)
    cfg = ppo.Config(digits=2, device="cpu", steps=1, prompts_per_step=8, n_minibatches=2,
                     n_test=8, eval_every=1000, samples_every=1000, lam=0.7, gamma=0.9, beta=0.05,
                     kl_estimator="k3", cliprange=0.15, cliprange_value=0.25, vf_coef=0.3,
                     ent_coef=0.01, whiten_advantages=False, target_kl=None,
                     sft_checkpoint=small_sft[0],
                     out_dir=str(tmp_path))
    ppo.train(cfg)
    (args, kwargs), = calls["gae_advantages"]
    assert args[3:] == (0.9, 0.7)  # gamma, lam
    (args, kwargs), = calls["compute_ppo_rewards"]
    assert args[3] == 0.05  # beta
    assert calls["kl_penalty"][0][0][2] == "k3"
    assert "whiten" not in calls  # --no-whiten_advantages
    steps = calls["ppo_minibatch_train_step"]
    assert len(steps) == 2 * 2  # 2 epochs x 2 minibatches
    for args, _ in steps:
        assert args[8:] == (0.15, 0.25, 0.3, 0.01)  # cliprange, cliprange_value, vf, ent coefs


def test_grpo_passes_its_flags_to_the_train_step(small_sft, tmp_path, monkeypatch):
    calls = {}
    spy(monkeypatch, grpo, "grpo_microbatch_train_step", calls)
    spy(monkeypatch, grpo, "evaluate", calls)
    cfg = grpo.Config(digits=2, device="cpu", steps=1, rollout_batch_size=16, train_batch_size=16,
                      gradient_accumulation_steps=2, group_size=4, n_test=8, samples_every=1000,
                      cliprange=0.15, cliprange_high=0.3, beta=0.02, kl_estimator="k1",
                      length_normalization="constant", normalize_constant=17.0,
                      max_new_tokens=28, sft_checkpoint=small_sft[0], out_dir=str(tmp_path))
    grpo.train(cfg)
    steps = calls["grpo_microbatch_train_step"]
    assert len(steps) == 2  # one train batch of 16 rows in 2 micro-batches
    for args, kwargs in steps:
        assert args[2] == 2 and args[3] == "grpo_clip"  # micro-batches per batch, loss type
        assert (kwargs["cliprange"], kwargs["cliprange_high"], kwargs["beta"],
                kwargs["kl_estimator"], kwargs["length_normalization"],
                kwargs["normalize_constant"]) == (0.15, 0.3, 0.02, "k1", "constant", 17.0)
    # the held-out evaluations use the run's response budget, not the task's
    assert [args[3] for args, _ in calls["evaluate"]] == [28, 28]


# ---------------------------------------------------------------- presets and linked defaults
def test_cs336_preset_sets_the_handouts_values_and_explicit_flags_win():
    cfg = parse_config(grpo.Config, ["--preset", "cs336"])
    for key, value in grpo.PRESETS["cs336"].items():
        assert getattr(cfg, key) == value, key
    assert (cfg.loss_type, cfg.group_size, cfg.temperature, cfg.lr, cfg.beta2, cfg.steps) == \
        ("reinforce_with_baseline", 8, 1.0, 1e-5, 0.95, 200)
    # an explicit flag wins, even when it repeats the script's own default
    cfg = parse_config(grpo.Config, ["--preset", "cs336", "--temperature", "0.5", "--lr", "6e-5"])
    assert (cfg.temperature, cfg.lr, cfg.group_size) == (0.5, 6e-5, 8)
    assert parse_config(grpo.Config, []).temperature == grpo.Config.temperature  # no preset
    cfg = parse_config(expert_iteration.Config, ["--preset", "cs336", "--n_ei_steps", "2"])
    assert (cfg.n_ei_steps, cfg.questions_per_step, cfg.temperature, cfg.min_new_tokens) == \
        (2, 512, 1.0, 4)


def test_dpo_nll_term_is_on_for_sigmoid_only_unless_set():
    assert dpo.Config().nll_weight == 1.0
    for loss_type in ("ipo", "hinge", "robust", "simpo"):
        assert dpo.Config(loss_type=loss_type).nll_weight == 0.0, loss_type
    assert dpo.Config(loss_type="ipo", nll_weight=0.5).nll_weight == 0.5
    assert dpo.Config(nll_weight=0.0).nll_weight == 0.0


def test_refused_combinations_and_names(capsys):
    with pytest.raises(UserError, match="no_baseline"):
        grpo.Config(loss_type="no_baseline", drop_equal_reward_groups=True)
    with pytest.raises(ValueError, match="k4"):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(SystemExit) as e:
        parse_config(expert_iteration.Config, ["--preset", "cs999"])
    assert e.value.code == 2 and "cs999" in capsys.readouterr().err


@pytest.mark.parametrize("module", [grpo, expert_iteration])
def test_a_preset_in_python_is_its_values(module):
    """A preset is a set of flags, not a field: Config(preset=...) cannot silently keep the
    defaults, and Config(**PRESETS[name]) is what `--preset name` gives."""
    with pytest.raises(TypeError):
        module.Config(preset="cs336")
    assert module.Config(**module.PRESETS["cs336"]) == parse_config(module.Config,
                                                                    ["--preset", "cs336"])
