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


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_quick_mode_writes_figure_and_results(name, default_sft, tmp_path):
    checkpoint, _ = default_sft
    docs, out = tmp_path / "docs", tmp_path / "out"
    results = main([name, "--quick", "--sft_checkpoint", checkpoint,
                                "--docs_dir", str(docs), "--out_dir", str(out)])
    png = docs / f"exp_{name}.png"
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
            assert set(run["reward_model"]) == {"pair_accuracy", "prefers_longer", "price"}
        assert set(saved["best_of_n"]) == {"biased", "unbiased"}
        for pool in saved["best_of_n"].values():
            assert {len(pool[k]) for k in ("n", "kl", "sqrt_kl", "gold", "proxy", "length")} == {3}
        assert set(saved["gao_fits"]) == set(saved["runs"]) | {"biased", "unbiased"}
    if name == "abstain":  # the task's two kinds are both measured, before and after GRPO
        assert set(saved["before_sft"]["by_kind"]) == set(saved["after_grpo"]["by_kind"]) == {"easy", "hard"}
        assert saved["before_sft"]["n"] == 16 and saved["break_even_accuracy"] == pytest.approx(0.3)


# Numbers and claim flags that these experiments must report (thresholds: constants in their files).
EXPECTED_KEYS = {
    "abstain": ["before_sft", "after_grpo", "sft_abstains_at_random", "grpo_abstains_where_wrong",
                "selective_accuracy_rises", "claim_holds"],
    "length_growth": ["rollout_len_first_10", "rollout_len_last_10", "len_growth", "scratchpad_share_first_10",
                      "scratchpad_share_last_10", "start_accuracy", "final_accuracy", "claim_holds"],
    "length_bias": ["sequence_mean", "constant", "excess_wrong_len_growth", "claim_holds"],
    "reward_hacking": ["runs", "best_of_n", "gao_fits", "shapes", "smallest_beta_hacked",
                       "larger_beta_delays_fall", "claim_holds"],
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


def test_registry_holds_each_experiment_module_in_order():
    assert list(experiments.EXPERIMENTS) == [
        "gae_lambda", "length_bias", "std_baseline", "kl_beta", "off_policy", "sampler_mismatch",
        "ei_vs_grpo", "reward_hacking", "dpo_nll", "abstain", "length_growth", "r1_pipeline"]
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
    assert run.returncode == 0 and run.stdout.split()[0] == "gae_lambda"


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
