"""experiments.py: every registered experiment runs end to end in --quick mode (a few steps of each
training run, from the default 3-digit SFT checkpoint or its own SFT run) and writes its figure and
results.json with its numbers and claim flags;
an unknown name is one line and exit code 2."""
import json
import os
import subprocess
import sys

import pytest

import experiments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_quick_mode_writes_figure_and_results(name, default_sft, tmp_path):
    checkpoint, _ = default_sft
    docs, out = tmp_path / "docs", tmp_path / "out"
    results = experiments.main([name, "--quick", "--sft_checkpoint", checkpoint,
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
    if name == "abstain":  # the task's two kinds are both measured, before and after GRPO
        assert set(saved["before_sft"]["by_kind"]) == set(saved["after_grpo"]["by_kind"]) == {"easy", "hard"}
        assert saved["before_sft"]["n"] == 16 and saved["break_even_accuracy"] == pytest.approx(0.3)


# The issue-13 experiments' numbers and claim flags (thresholds are constants in experiments.py).
EXPECTED_KEYS = {
    "abstain": ["before_sft", "after_grpo", "sft_abstains_at_random", "grpo_abstains_where_wrong",
                "selective_accuracy_rises", "claim_holds"],
    "length_growth": ["rollout_len_first_10", "rollout_len_last_10", "len_growth", "scratchpad_share_first_10",
                      "scratchpad_share_last_10", "start_accuracy", "final_accuracy", "claim_holds"],
    "length_bias": ["sequence_mean", "constant", "excess_wrong_len_growth", "claim_holds"],
}


def test_unknown_name_is_one_line_and_exit_2():
    run = subprocess.run([sys.executable, "experiments.py", "no_such_experiment"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and "no_such_experiment" in run.stderr


def test_list_names_every_experiment():
    run = subprocess.run([sys.executable, "experiments.py", "--list"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert [line.split()[0] for line in run.stdout.splitlines()] == list(experiments.EXPERIMENTS)
