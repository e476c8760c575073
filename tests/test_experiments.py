"""experiments/: every registered experiment runs end to end in --quick mode (a few steps of each
training run, from the default 3-digit SFT checkpoint or its own SFT run) and writes its figure and
results.json with its numbers and claim flags;
an unknown name is one line and exit code 2; best-of-n's KL against Monte Carlo."""
import importlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import experiments
from experiments.reward_hacking import best_of_n_kl
from experiments.__main__ import main

pytestmark = pytest.mark.usefixtures("no_curves")  # their runs draw no curves.png (conftest)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


LONGEST_QUICK = {"sampler_mismatch", "reward_hacking", "rlhf_length", "distill"}  # -m extended


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.extended)
                                  if name in LONGEST_QUICK else name
                                  for name in sorted(experiments.EXPERIMENTS)])
def test_quick_mode_writes_figure_and_results(name, default_sft, tmp_path, no_curves):
    checkpoint, _ = default_sft
    out = tmp_path / "out"
    results = main([name, "--quick", "--sft_checkpoint", checkpoint, "--out_dir", str(out)])
    png = out / name / f"exp_{name}.png"  # beside results.json; docs/ only by regenerate.sh
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / name / "results.json") as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(results))  # what main returns is what it saved
    assert saved["experiment"] == name and saved["quick"] is True
    assert len(saved) > 3  # the numbers behind the figure, not only the bookkeeping
    for key in EXPECTED_KEYS.get(name, ()):
        assert key in saved, key
    if name == "reward_hacking":  # every number the figure draws, for every run and pool
        for run in saved["runs"].values():
            lengths = {len(run[k]) for k in ("step", "gold", "proxy", "length", "kl", "sqrt_kl")}
            assert lengths == {2} and len(run["eval_step"]) == len(run["eval_accuracy"]) >= 1
            assert all(math.isfinite(x) for k in ("gold", "proxy", "length", "kl") for x in run[k])
            assert set(run["reward_model"]) == {"pair_accuracy", "label_accuracy", "label_ceiling",
                                                "prefers_longer", "price"}
        assert set(saved["best_of_n"]) == {"biased", "unbiased"}
        for pool in saved["best_of_n"].values():
            assert {len(pool[k]) for k in ("n", "kl", "sqrt_kl", "gold", "proxy", "length")} == {3}
        assert set(saved["gao_fits"]) == set(saved["runs"]) | {"biased", "unbiased"}
    if name == "rlhf_length":  # the proxy's optimum before RL, one run per arm (--quick: 1 seed)
        for rm in saved["reward_models"].values():
            pay = rm["by_padding"]
            assert len(pay["k"]) == len(pay["score"]) == len(pay["length"]) >= 2
            assert pay["score"][pay["best_k"]] == max(pay["score"])
            assert 0 <= rm["label_accuracy"] <= 1
        assert set(saved["spread"]) == {"biased_beta_0.02", "biased_beta_1", "unbiased_beta_0.02"}
        assert set(saved["verdicts"]) <= set(saved["margins"]) | {
            "reward_models_fit_their_labels", "biased_proxy_pays_for_length"}
    if name == "sft_data":  # every point of the figure: each N from both starts, the mixed run
        for points in saved["sft"].values():
            assert [p["n"] for p in points] == [2, 8]
            assert all(0 <= p[k] <= 1 for p in points for k in ("accuracy", "format_rate"))
        assert {"accuracy", "format_rate", "template_accuracy", "template_format_rate",
                "formatted_read"} <= set(saved["mixed"])
        assert 0 <= saved["pretrained"]["plain_accuracy"] <= 1
    if name == "dpo_online":  # every curve of the figure, one point per evaluation
        for run in ("offline", "iterative", "grpo"):
            curve = saved[run]["curve"]
            assert len(curve["step"]) == len(curve["accuracy"]) == len(curve["sampled_responses"])
            if run != "grpo":
                assert (len(curve["preference_accuracy"]) == len(curve["fresh_preference_accuracy"])
                        == len(curve["step"]) - 1)
        assert saved["iterative"]["sampled_responses"] > saved["offline"]["sampled_responses"]
    if name == "ei_vs_grpo":  # pass@1 and pass@64 against the SFT model, with standard errors
        for versus in saved["versus_sft"].values():
            assert versus["pass@1_gain_se"] >= 0 and versus[f"{saved['top_k']}_gain_se"] >= 0
    if name == "abstain":  # the task's two kinds are both measured, before and after GRPO
        assert set(saved["before_sft"]["by_kind"]) == set(saved["after_grpo"]["by_kind"]) == {"easy", "hard"}
        assert saved["before_sft"]["n"] == 16 and saved["break_even_accuracy"] == pytest.approx(0.3)


# Numbers and claim flags that these experiments must report (thresholds: constants in their files).
EXPECTED_KEYS = {
    "abstain": ["before_sft", "after_grpo", "sft_abstains_at_random", "grpo_abstains_where_wrong",
                "selective_accuracy_rises", "claim_holds"],
    "length_growth": ["rollout_len_first_10", "rollout_len_last_10", "len_growth", "scratchpad_share_first_10",
                      "scratchpad_share_last_10", "start_accuracy", "final_accuracy", "claim_holds"],
    "length_bias": ["sequence_mean", "constant", "precondition_met", "excess_wrong_len_growth",
                    "claim_holds"],
    "ei_vs_grpo": ["versus_sft", "top_k", "z_se", "claim_holds"],
    "sft_data": ["pretrained", "sft", "mixed", "small_sft_goes_far",
                 "sft_gives_format_not_knowledge", "mixed_pretraining_follows_format"],
    "dpo_online": ["offline", "iterative", "grpo", "offline_pairs_go_stale",
                   "rebuilding_closes_gap"],
    "rlhf_length": ["start", "reward_models", "runs", "measured", "spread", "verdicts", "margins",
                    "claim_holds"],
    "reward_hacking": ["runs", "best_of_n", "by_padding", "gao_fits", "shapes", "smallest_beta_hacked",
                       "larger_beta_delays_fall", "claim_holds"],
    "distill": ["teacher_accuracy", "student_accuracy", "target_accuracy", "runs",
                "reverse_kl_on_own_samples_start", "reaches_most_in_far_fewer_samples_than_grpo",
                "beats_off_policy_at_equal_samples", "claim_holds"],
    "sampler_mismatch": ["engines_at_start", "matched", "stale none", "stale TIS token",
                         "stale PPO clip", "bf16_hurts", "stale_hurts", "is_correction_recovers",
                         "ppo_clip_recovers", "claim_holds"],
}


@pytest.mark.parametrize("argv, named", [(["no_such_experiment"], "no_such_experiment"),
                                         (["gae_lambda", "--quik"], "--quik"),
                                         ([], "name an experiment")])
def test_bad_input_is_one_line_and_exit_2(argv, named, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    out, err = capsys.readouterr()
    assert stop.value.code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and named in err


def test_every_experiment_file_is_registered_and_runnable_by_name():
    """Each experiments/NAME.py (but the shared ones) is `python -m experiments NAME`."""
    here = os.path.dirname(experiments.__file__)
    files = {f[:-3] for f in os.listdir(here) if f.endswith(".py")} - {"__init__", "__main__",
                                                                        "common"}
    assert set(experiments.EXPERIMENTS) == files
    for name, (run, description) in experiments.EXPERIMENTS.items():
        module = importlib.import_module(f"experiments.{name}")
        assert run is module.run and description == module.DESCRIPTION
        assert description and "\n" not in description


def test_list_names_every_experiment(capsys):
    main(["--list"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(experiments.EXPERIMENTS)


def test_the_package_runs_as_a_module():
    run = subprocess.run([sys.executable, "-m", "experiments", "--list"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.split()[0] == next(iter(experiments.EXPERIMENTS))


def test_best_of_n_kl_matches_monte_carlo():
    """KL(best-of-n || pi_ref) = log n - (n - 1) / n, against the empirical distribution of many
    best-of-n draws from a categorical pi_ref of 100 outcomes with distinct scores (each outcome
    rare, so the formula is nearly exact); on 3 outcomes, ties of repeated draws make it a bound."""
    gen = torch.Generator().manual_seed(0)

    def monte_carlo_kl(p, n, draws=100_000):
        scores = torch.randperm(len(p), generator=gen).float()  # distinct: one per outcome
        outcomes = torch.multinomial(p, draws * n, replacement=True, generator=gen).view(draws, n)
        picked = outcomes.gather(1, scores[outcomes].argmax(dim=1, keepdim=True))  # (draws, 1)
        q = torch.bincount(picked.flatten(), minlength=len(p)).float() / draws
        return (q[q > 0] * (q[q > 0] / p[q > 0]).log()).sum().item()

    many = 1 + torch.rand(100, generator=gen)
    for n in (2, 4, 16):
        assert monte_carlo_kl(many / many.sum(), n) == pytest.approx(best_of_n_kl(n), abs=0.02)
    assert best_of_n_kl(1) == 0
    assert monte_carlo_kl(torch.full((3,), 1 / 3), 4) < best_of_n_kl(4) - 0.05
