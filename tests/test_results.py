"""The committed results (docs/results/**.json) are today's: each run's recorded config equals
the config its command, or its experiment's flags, give with today's code, so that a changed
default flags the result it makes stale (rerun `bash docs/regenerate.sh ...`). Docs checks: the
full suite runs them, the fast tier does not."""
import dataclasses
import glob
import importlib
import json
import os
import shlex

import pytest

from runs import parse_config

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORED = {"out_dir", "overwrite", "resume", "device"}  # where and how, not what, it ran
RUN_RESULTS = sorted(p for kind in ("defaults", "trl")
                     for p in glob.glob(os.path.join(ROOT, "docs", "results", kind, "*.json"))
                     if not p.endswith("bench.json"))
EXPERIMENT_RESULTS = sorted(glob.glob(os.path.join(ROOT, "docs", "results", "experiments",
                                                   "*.json")))


def config_differences(recorded: dict, today: dict) -> dict:
    """{field: (recorded, today)} for every field, either side, that differs."""
    keys = (set(recorded) | set(today)) - IGNORED
    return {k: (recorded.get(k, "absent"), today.get(k, "absent")) for k in sorted(keys)
            if recorded.get(k, "absent") != today.get(k, "absent")}


def todays_config(command: str) -> dict:
    """The config the command's script builds from its flags with today's code."""
    words = shlex.split(command)
    at = next(i for i, w in enumerate(words) if w.endswith(".py"))  # after python or torchrun
    module = importlib.import_module(words[at][:-3])
    return dataclasses.asdict(parse_config(module.Config, words[at + 1:]))


def name(path: str) -> str:
    return os.path.relpath(path, os.path.join(ROOT, "docs", "results"))


@pytest.mark.parametrize("path", RUN_RESULTS, ids=name)
def test_a_run_result_is_what_its_command_runs_today(path):
    with open(path) as f:
        result = json.load(f)
    assert result.get("commit"), f"{name(path)} records no commit: rerun it"
    differences = config_differences(result["summary"]["config"], todays_config(result["command"]))
    assert not differences, (f"{name(path)} ran with other settings than `{result['command']}` "
                             f"has today (recorded, today): {differences}")


@pytest.mark.parametrize("path", EXPERIMENT_RESULTS, ids=name)
def test_an_experiment_result_is_what_its_runs_give_today(path):
    with open(path) as f:
        result = json.load(f)
    assert result.get("commit"), f"{name(path)} records no commit: rerun it"
    runs = result["results"].get("script_runs")
    assert runs is not None, f"{name(path)} does not record its runs' configs: rerun it"
    for run in runs:
        module = importlib.import_module(run["script"])
        today = dataclasses.asdict(module.Config(**run["flags"]))
        differences = config_differences(run["config"], today)
        assert not differences, (f"{name(path)}, run {run['name']}: {run['script']}.py with "
                                 f"{run['flags']} gives other settings today "
                                 f"(recorded, today): {differences}")


def test_the_check_sees_a_changed_default():
    recorded = dataclasses.asdict(parse_config(importlib.import_module("grpo").Config, []))
    assert not config_differences(recorded, todays_config("python grpo.py"))
    assert config_differences({**recorded, "lr": 1e-4}, todays_config("python grpo.py")) == \
        {"lr": (1e-4, recorded["lr"])}
    assert config_differences({**recorded, "old_flag": 1}, recorded) == {"old_flag": (1, "absent")}
    assert not config_differences({**recorded, "out_dir": "x"}, recorded)
    assert todays_config("torchrun --nproc_per_node 2 grpo.py --lr 1e-4")["lr"] == 1e-4
