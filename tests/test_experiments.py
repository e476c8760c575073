"""experiments.py: every registered experiment runs end to end in --quick mode (a few steps of each
training run, from the default 3-digit SFT checkpoint) and writes its figure and results.json;
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
