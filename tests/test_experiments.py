"""experiments/: every registered experiment runs end to end in --quick mode (a few steps of each
training run, from the default 3-digit SFT checkpoint or its own SFT run) and writes its figure and
results.json with its numbers and claim flags;
an unknown name is one line and exit code 2; the reward model experiment's parts on known cases."""
import importlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import experiments
from experiments.__main__ import main
from experiments.proxy_rewards import best_of_n, best_of_n_kl, comparison_pairs, pair_accuracy

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
    if name == "reward_model":  # every number the figure draws, for every proxy
        assert len(saved["best_of_n_kl"]) == len(saved["best_of_n_oracle_gold"]) >= 3
        assert len(saved["proxies"]) == 3
        assert all([r["step"] for r in p["rl"]] == [0, 1, 2] for p in saved["proxies"].values())
        for proxy in [saved["untrained_proxy"], *saved["proxies"].values()]:  # N = 0, then each N
            assert 0 <= proxy["pair_accuracy"] <= 1
            assert [r["kl"] for r in proxy["best_of_n"]] == saved["best_of_n_kl"]
            for row in proxy["best_of_n"] + proxy.get("rl", []):  # N = 0 is not optimised by RL
                assert all(math.isfinite(row[k]) for k in ("kl", "gold", "proxy")), row
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
    "reward_model": ["proxies", "best_of_n_kl", "best_of_n_oracle_gold", "rl_overoptimised",
                     "larger_proxy_peaks_later_or_higher", "largest_proxy_accurate", "claim_holds"],
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
        "gae_lambda", "length_bias", "std_baseline", "kl_beta", "off_policy", "ei_vs_grpo",
        "reward_model", "dpo_nll", "abstain", "length_growth", "r1_pipeline"]
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
        picked = outcomes.gather(1, best_of_n(scores[outcomes], n))  # (draws, 1)
        q = torch.bincount(picked.flatten(), minlength=len(p)).float() / draws
        return (q[q > 0] * (q[q > 0] / p[q > 0]).log()).sum().item()

    many = 1 + torch.rand(100, generator=gen)
    for n in (2, 4, 16):
        assert monte_carlo_kl(many / many.sum(), n) == pytest.approx(best_of_n_kl(n), abs=0.02)
    assert best_of_n_kl(1) == 0
    assert monte_carlo_kl(torch.full((3,), 1 / 3), 4) < best_of_n_kl(4) - 0.05


def test_best_of_n_picks_the_highest_score_of_each_group_first_on_ties():
    scores = torch.tensor([[0.1, 0.9, 0.5, 2.0, 2.0, -1.0],
                           [3.0, 3.0, 3.0, -5.0, 7.0, 7.0]])
    assert best_of_n(scores, 3).tolist() == [[1, 3], [0, 4]]
    assert best_of_n(scores, 6).tolist() == [[3], [4]]
    assert best_of_n(scores, 1).tolist() == [list(range(6))] * 2


def test_pair_accuracy_counts_right_over_wrong_pairs_of_one_prompt():
    scores = torch.tensor([[2.0, 1.0, 3.0], [0.0, 0.0, 5.0]])
    gold = torch.tensor([[1, 0, 0], [1, 0, 1]])
    # prompt 0: right 2.0 over wrong 1.0 (won), 3.0 (lost); prompt 1: 0 vs 0 (tie), 5 vs 0 (won)
    assert pair_accuracy(scores, gold) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert pair_accuracy(scores, torch.ones_like(gold)) is None
    assert comparison_pairs([1, 0, 0, 1, 1, 1, 0, 1], 4) == [(0, 1), (3, 2), (4, 6)]
