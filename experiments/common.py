"""What the experiments share: running a script with a few flags changed (each experiment names
its own), reading its metrics, pass@k, and the figure every experiment draws."""
from __future__ import annotations

import csv
import dataclasses
import json
import os

import runs
from runs import checkpoint_task, load_checkpoint
from evaluation import evaluate_pass_at_k
from reward_model import filler_scores
from toy_model import AdditionTask, Tokenizer, reward_fn

# ----------------------------------------------------------------------------- running a script

# Flags that shrink each script to a few seconds in --quick mode (the tests); a full run uses the
# experiment's own flags on top of the script's defaults.
QUICK = {
    "sft": dict(steps=3, batch_size=8, n_test=16, eval_every=3),
    "grpo": dict(steps=2, rollout_batch_size=16, train_batch_size=16,
                 gradient_accumulation_steps=1, n_test=16, eval_every=1, samples_every=100),
    "dpo": dict(steps=2, n_test=16, n_prompts=64, batch_size=8, eval_every=1),
    "ppo": dict(steps=2, prompts_per_step=8, n_test=16, eval_every=1, samples_every=100,
                rm_prompts=48, rm_steps=2, rm_batch_size=8),
    "expert_iteration": dict(questions_per_step=8, group_size=4, batch_size=8, n_test=16,
                             eval_every=1, samples_every=100),
    "distill": dict(steps=2, rollout_batch_size=16, gradient_accumulation_steps=1, n_test=16,
                    eval_every=1, samples_every=100),
}


# Every run of the experiment being run: its script, flags and whole config (results.json keeps
# them, so that a check can see that today's defaults still give the config it ran with).
SCRIPT_RUNS: list[dict] = []


def train_script(module, args, name: str, *, reward=None, task: dict | None = None,
                 **flags) -> list[dict]:
    """Run `module.train` with `flags` on top of its defaults (--quick's sizes override both) into
    out_dir/name, and return its metrics.csv as a list of rows (None where a value is blank).
    grpo.py also takes the experiment's `reward` function and `task` knobs (AdditionTask's
    easy_digits, hard_fraction: the start checkpoint's task unless given); for ppo.py, `reward`
    is its --reward flag."""
    script = module.__name__
    if isinstance(reward, str):  # ppo.py's --reward flag ("rule" or "model"), not a function
        flags["reward"], reward = reward, None
    overrides = {"sft_checkpoint": args.sft_checkpoint} if script != "sft" else {}
    overrides.update(flags)
    if args.quick:
        overrides.update(QUICK[script])
    overrides["out_dir"] = os.path.join(args.out_dir, name)
    overrides["overwrite"] = True  # an experiment reruns into its own folder
    cfg = module.Config(**overrides)
    SCRIPT_RUNS.append({"script": script, "name": name, "reward": getattr(reward, "__name__", None),
                        "task": task, "flags": {k: v for k, v in overrides.items()
                                                if k not in ("out_dir", "overwrite")},
                        "config": dataclasses.asdict(cfg)})
    own = {}  # what only grpo.train takes
    if reward is not None:
        own["reward"] = reward
    if task is not None:
        own["task"] = AdditionTask(cfg.digits, cfg.n_test, **task)
    print(f"\n=== {script}.py {' '.join(f'--{k} {v}' for k, v in overrides.items())}"
          + "".join(f" [{k}: {v}]" for k, v in {"reward": getattr(reward, "__name__", None),
                                                  "task": task}.items() if v), flush=True)
    module.train(cfg, **own)
    rows = read_csv(os.path.join(overrides["out_dir"], "metrics.csv"))
    return [r for r in rows if r["step"] > 0]  # row 0 is the starting evaluation (summary.json)


def reward_plus_format(weight: float):
    """r1_zero's reward plus weight x its format reward (R1's format reward, shaped)."""
    def reward(response: str, ground_truth: str) -> dict:
        r = reward_fn(response, ground_truth)
        return {**r, "reward": r["reward"] + weight * r["format_reward"]}
    reward.__name__ = f"reward_fn + {weight:g} x format_reward"
    return reward


def with_direct_rate(response: str, ground_truth: str) -> dict:
    """r1_zero's reward, and whether the response answered directly (an empty scratchpad): the
    mean of "direct_rate" over a rollout batch is its metrics.csv column."""
    return {**reward_fn(response, ground_truth),
            "direct_rate": float(response.startswith("<think></think>"))}


def mixed_sft(args, name: str, **flags) -> str:
    """Train the SFT model on mixed direct and scratchpad demonstrations (half each, 300 steps:
    long enough for both modes to be learnt); return its checkpoint."""
    import sft
    train_script(sft, args, f"{name}/sft", **{**dict(direct_fraction=0.5, steps=300), **flags})
    return os.path.join(args.out_dir, name, "sft", "model.pt")


def proxy_by_padding(reward_model, checkpoint: str, n_prompts: int) -> dict:
    """What a reward model pays for length, before any RL: reward_model.filler_scores on the
    right demonstrations of the first n_prompts held-out problems of the checkpoint's task,
    padded with k = 0..K empty steps, K the most its response budget holds after the longest
    right demonstration."""
    _, ckpt = load_checkpoint(checkpoint)
    task = AdditionTask(ckpt["digits"], **checkpoint_task(ckpt))
    longest = max(len(Tokenizer().encode(p.demonstration)) for p in task.test)
    return filler_scores(reward_model.cpu(), task.test[:n_prompts], task.max_new_tokens - longest)


# ----------------------------------------------------------------------------- reading a run

def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(f)]


def read_summary(args, name: str) -> dict:
    """The summary.json of the run in out_dir/name."""
    with open(os.path.join(args.out_dir, name, "summary.json")) as f:
        return json.load(f)


def column(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric, skipping the steps where it was not logged."""
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return tuple(map(list, zip(*points))) if points else ([], [])


def start_and(rows: list[dict], args, name: str, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of a held-out metric with the run's step-0 value (summary.json) in front."""
    start = read_summary(args, name)[key.replace("eval_", "start_")]
    steps, values = column(rows, key)
    return [0.0] + steps, [start] + values


def last(rows: list[dict], key: str, n: int = 1) -> float | None:
    """Mean of the last n logged values of one metric (None if it was never logged)."""
    values = column(rows, key)[1][-n:]
    return sum(values) / len(values) if values else None


def first_and_last(values: list[float], n: int) -> tuple[float, float]:
    """Mean of the first n and of the last n values (n at least 1, at most half of them)."""
    n = max(1, min(n, len(values) // 2 or 1))
    return sum(values[:n]) / n, sum(values[-n:]) / n


def smooth(values: list[float], k: int = 10) -> list[float]:
    """Trailing moving average over k points, for the noisy once-per-rollout curves."""
    windows = [values[max(0, i - k + 1):i + 1] for i in range(len(values))]
    return [sum(w) / len(w) for w in windows]


# ----------------------------------------------------------------------------- pass@k

# n samples at temperature 1 (CS336's setting) on the first problems of the held-out set;
# --quick shrinks both.
PASS_AT_K = dict(n=64, ks=(1, 2, 4, 8, 16, 32, 64), n_problems=200)
PASS_AT_K_QUICK = dict(n=4, ks=(1, 2, 4), n_problems=8)
# The same model keeps the same colour in every panel of a figure.
MODEL_COLORS = {"SFT": "tab:gray", "expert iteration": "tab:blue", "GRPO": "tab:orange"}


def pass_at_k_of(checkpoint: str, args, keep_counts: bool = False) -> dict:
    """pass@k and maj@k of a checkpoint on the held-out problems (toy_model.evaluate_pass_at_k);
    with keep_counts, also each problem's count of correct samples ("correct_counts")."""
    spec = PASS_AT_K_QUICK if args.quick else PASS_AT_K
    model, ckpt = load_checkpoint(checkpoint)
    task = AdditionTask(ckpt["digits"])
    result = evaluate_pass_at_k(model, Tokenizer(), task.test[:spec["n_problems"]],
                                task.max_new_tokens, n=spec["n"], ks=spec["ks"])
    counts = result.pop("correct_counts")
    print(f"{checkpoint}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items() if "@" in k))
    return {**result, "correct_counts": counts} if keep_counts else result


def plot_pass_at_k(ax, curves: dict[str, dict]) -> None:
    """pass@k against k (log scale), one line per model."""
    for label, result in curves.items():
        ks = [int(k[5:]) for k in result if k.startswith("pass@")]
        ax.plot(ks, [result[f"pass@{k}"] for k in ks], marker=".", label=label,
                color=MODEL_COLORS.get(label))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples at temperature 1)")
    ax.set_ylim(0, 1.02)
    ax.set_title("held-out pass@k", fontsize=9)
    ax.legend(fontsize=7)


# ----------------------------------------------------------------------------- the figure

def new_figure(n_panels: int, title: str):
    """runs.new_figure: at most 3 panels a row, 800 px wide, 9-point text; x is the step."""
    fig, axes = runs.new_figure(n_panels, title)
    for ax in axes:
        ax.set_xlabel("step")
    return fig, axes


def save_figure(fig, args, name: str) -> str:
    """Write exp_NAME.png beside the experiment's results.json (out_dir/NAME/), or into
    --docs_dir (docs/regenerate.sh)."""
    path = os.path.join(args.docs_dir or os.path.join(args.out_dir, name), f"exp_{name}.png")
    runs.save_figure(fig, path)  # legends under their panels; command, code, machine at the foot
    print(f"wrote {path}")
    return path
