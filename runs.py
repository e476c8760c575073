"""Run plumbing shared by every script. You need not read this file to follow an algorithm (it
plays the part of nanoGPT's configurator.py): flags from a Config dataclass, one-line errors
with exit code 2, devices and seeds, checks made before the first step, atomic writes,
checkpoints, the metric log with its CSV and plots, the console line and the end of a run.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import inspect
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
import typing

import numpy as np
import torch

from evaluation import evaluate
from toy_model import CHARS, EOS, GPT, SPECIALS, AdditionTask, GPTConfig, Tokenizer


class UserError(ValueError):
    """Bad input from the user (a flag, a file): scripts print it in one line and exit 2."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


# ----------------------------------------------------------------------------------------------
# Config dataclass -> command line, with the field comments as help
# ----------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's wrapping, except that `(default: X)` is never split across two lines."""

    def _split_lines(self, text, width):
        text = re.sub(r"\(default: ([^)]*)\)", lambda m: "(default:\0" + m.group(1).replace(" ", "\0") + ")",
                      self._whitespace_matcher.sub(" ", text).strip())
        return [line.replace("\0", " ") for line in textwrap.wrap(text, width)]


def short_description(doc: str | None, prog: str) -> str:
    """The docstring's first paragraph, unwrapped, and a pointer to the rest."""
    first = (doc or "").strip().split("\n\n")[0]
    return " ".join(first.split()) + f" The algorithm, its variants and their flags: see {prog}."


def parse_config(config_cls, argv=None, description: str | None = None):
    """Build argparse from a Config dataclass: one --flag per field, the comment after the field
    as its help, `# --- name ---` lines as groups. Invalid values exit 2 with one line."""
    help_of, group_of, group = {}, {}, "options"
    for line in inspect.getsource(config_cls).splitlines():
        line = line.strip()
        if m := re.fullmatch(r"#\s*-+\s*(.+?)\s*-+", line):
            group = m.group(1)
        elif m := re.match(r"(\w+)\s*:.*?#\s*(.+)$", line):
            help_of[m.group(1)], group_of[m.group(1)] = m.group(2), group
    prog = os.path.basename(sys.argv[0]) if argv is None else config_cls.__module__ + ".py"
    parser = _Parser(prog=prog, description=description, formatter_class=_HelpFormatter)
    groups = {}
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        g = groups.setdefault(group_of.get(f.name, "options"),
                              parser.add_argument_group(group_of.get(f.name, "options")))
        kind, flag = hints[f.name], "--" + f.name
        text = f"{help_of.get(f.name, '')} (default: {f.default})".replace("%", "%%")
        if kind is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=text)
        elif typing.get_origin(kind) is typing.Literal:  # choices listed in the help, not the usage
            choices = typing.get_args(kind)
            g.add_argument(flag, choices=choices, default=f.default, metavar="NAME",
                           help=text.replace(" (default:", f"; one of {', '.join(choices)} (default:"))
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):  # Optional[x]: "none" or x
            base = [t for t in typing.get_args(kind) if t is not type(None)][0]
            g.add_argument(flag, type=lambda s, b=base: None if s.lower() == "none" else b(s),
                           default=f.default, metavar=base.__name__.upper(), help=text)
        else:
            g.add_argument(flag, type=kind, default=f.default, metavar=kind.__name__.upper(),
                           help=text)
    presets = getattr(sys.modules[config_cls.__module__], "PRESETS", {})
    if presets:  # --preset NAME: not a Config field, so that Config(...) in Python has no trap
        parser.add_argument("--preset", choices=sorted(presets), default=None, metavar="NAME",
                            help=f"set every field of a named set of settings ({', '.join(presets)}"
                                 f"; the script's PRESETS) that is not given as a flag")
    values = vars(parser.parse_args(argv))
    preset = values.pop("preset", None)
    if preset is not None:  # the preset's values, except for explicit flags
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        explicit = vars(parser.parse_args(argv))
        values.update({k: v for k, v in presets[preset].items() if k not in explicit})
    try:
        return config_cls(**values)
    except UserError as e:
        parser.error(str(e))


def run_script(main, config_cls, doc: str) -> None:
    """`python X.py --flags`: parse the Config, run main(cfg). A UserError becomes one line and
    exit code 2; an interrupted run (Ctrl-C, after saving) exits 130, as the shell expects."""
    prog = os.path.basename(sys.argv[0])
    cfg = parse_config(config_cls, description=short_description(doc, prog))
    signal.signal(signal.SIGTERM, _stop)  # a `kill`, `timeout` or preemption: as Ctrl-C
    try:
        summary = main(cfg)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # outside the training loop, or a second Ctrl-C inside it
        print(f"\n{prog}: stopped; nothing more was saved", file=sys.stderr)
        sys.exit(128 + _stopped_by[0])
    if isinstance(summary, dict) and summary.get("interrupted"):
        sys.exit(128 + _stopped_by[0])  # 130 after Ctrl-C, 143 after SIGTERM


_stopped_by = [signal.SIGINT]


def _stop(signum, frame):
    """SIGTERM: stop the run as Ctrl-C does (evaluate, save, exit), ignoring a second signal."""
    _stopped_by[0] = signum
    signal.signal(signum, signal.SIG_IGN)
    raise KeyboardInterrupt


# ----------------------------------------------------------------------------------------------
# Devices, seeds, memory
# ----------------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    """auto: CUDA if there is a GPU, else the CPU. A Mac's MPS only when named (--device mps):
    for a model this small it is not shown to beat the CPU, and nothing here has timed it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    require(name in ("cpu", "cuda", "mps"), f"--device must be auto, cpu, cuda or mps, not {name!r}")
    require(name != "cuda" or torch.cuda.is_available(), "--device cuda: no CUDA device found")
    return torch.device(name)


def machine_description() -> str:
    """The machine by what it is, for results and figures: cores, CPU family, vector width, torch
    (for example "2-core AMD EPYC, AVX-512, torch 2.13.0 CPU"); a GPU by its own name."""
    import platform
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    name, flags = platform.processor() or platform.machine(), ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            info = f.read()
        found = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        name = found.group(1) if found else name
        flags = (re.search(r"^flags\s*:\s*(.+)$", info, re.M) or [None, ""])[1].split()
    words = re.sub(r"\((R|TM|tm)\)|\bCPU\b|@.*|\bProcessor\b|\d+-Core", " ", name).split()
    name = " ".join(w for w in words if not any(c.isdigit() for c in w))  # no model numbers
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    parts = [f"{os.cpu_count()}-core {name}", vector, f"torch {torch.__version__.split('+')[0]} CPU"]
    return ", ".join(p for p in parts if p)


def provenance() -> str:
    """One line for the foot of a figure: the command that drew it, the code and the machine."""
    script = os.path.basename(sys.argv[0])
    if script == "__main__.py":  # python -m PACKAGE
        script = "-m " + os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0])))
    command = " ".join(["python", script] + sys.argv[1:])
    code = "unknown code"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        here = os.path.dirname(os.path.abspath(__file__))
        git = lambda *a: subprocess.run(["git", "-C", here, *a], capture_output=True, text=True,
                                        timeout=5).stdout.strip()
        head = git("rev-parse", "--short", "HEAD")
        if head:
            code = f"code {head}" + ("+changes" if git("status", "--porcelain", "--", "*.py") else "")
    return f"{command}  |  {code}  |  {machine_description()}"


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB (Linux VmHWM; elsewhere ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource
        scale = 2 ** 20 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def set_seed(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return the NumPy generator that draws the training problems."""
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def set_lr(optimizer, lr: float) -> float:
    """Set every parameter group's learning rate to lr; return lr."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def lr_at(step: int, peak_lr: float, warmup_steps: int, total_steps: int, cosine: bool = True) -> float:
    """Linear warm-up to peak_lr over warmup_steps, then cosine decay to peak_lr / 10 at
    total_steps (or constant, with cosine=False). Steps count from 1."""
    if step <= warmup_steps:
        return peak_lr * step / warmup_steps
    if not cosine:
        return peak_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# ----------------------------------------------------------------------------------------------
# Files: atomic writes, checkpoints
# ----------------------------------------------------------------------------------------------
def atomic_write(path: str, write) -> None:
    """write(f) into a temporary file next to `path`, then rename: a reader never sees half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give outputs the usual mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: str, obj) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_checkpoint(path: str, model: GPT, digits: int, run_config: dict | None = None,
                    task: AdditionTask | None = None) -> None:
    """fp32 state dict plus what rebuilds the model: its GPTConfig, the task (digits and knobs),
    the vocab, and the run's config."""
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    ckpt = {"model_config": dataclasses.asdict(model.cfg), "digits": digits,
            "vocab": CHARS + "".join(SPECIALS), "state_dict": state, "run_config": run_config,
            "task": task_knobs(task) if task is not None else None}
    atomic_write(path, lambda f: torch.save(ckpt, f))


def load_checkpoint(path: str, digits: int | None = None, device="cpu") -> tuple[GPT, dict]:
    """Rebuild the model saved at `path`. Missing, corrupt, or built for another task: UserError."""
    require(os.path.exists(path), f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = GPT(GPTConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["state_dict"])
    except Exception as e:  # unpickling, missing keys and shape mismatches all land here
        first_line = " ".join(str(e).split())
        raise UserError(f"checkpoint {path} is corrupt or not a model checkpoint "
                        f"({type(e).__name__}: {first_line})") from None
    require(ckpt.get("vocab") == CHARS + "".join(SPECIALS),
            f"checkpoint {path} was built with another tokenizer")
    require(digits is None or ckpt.get("digits") == digits,
            f"checkpoint {path} was trained on {ckpt.get('digits')}-digit problems, not {digits}")
    return model.to(device), ckpt


def setup(cfg, make_start=None):
    """The start of every run: check the output folder and the device, call make_start(cfg) (the
    RL scripts pass sft.train_if_missing, which trains the default SFT checkpoint if it is missing)
    before seeding, so that a run's numbers do not depend on whether that checkpoint was made in
    this process; then seed and build the task and the tokenizer."""
    resume = getattr(cfg, "resume", False)  # the TRL scripts have no --resume
    require(not (resume and cfg.overwrite), "--resume and --overwrite exclude each other")
    check_out_dir(cfg.out_dir, cfg.overwrite or resume)
    device = pick_device(cfg.device)
    if make_start is not None:
        make_start(cfg)
    rng = set_seed(cfg.seed)
    task = AdditionTask(cfg.digits, cfg.n_test, **task_config(dataclasses.asdict(cfg)))
    return device, rng, task, Tokenizer()


def load_policy(cfg, device):
    """The SFT checkpoint an RL run starts from, in eval mode (no dropout: the ratio pi_theta /
    pi_old is exactly 1 on-policy), checked to be of the run's task (digits and easy_digits)."""
    model, ckpt = load_checkpoint(cfg.sft_checkpoint, digits=cfg.digits, device=device)
    trained_on = task_config(ckpt["run_config"])["easy_digits"]  # the same kinds; the mix may differ
    require(trained_on == getattr(cfg, "easy_digits", None),
            f"checkpoint {cfg.sft_checkpoint} was trained with --easy_digits {trained_on}")
    return model.eval()


# ----------------------------------------------------------------------------------------------
# The metric log, the console line and the end of a run
# ----------------------------------------------------------------------------------------------
class MetricLog:
    """One row per step; metrics.csv is rewritten atomically, so a crash never leaves half a file."""

    def __init__(self):
        self.rows: list[dict] = []

    def append(self, row: dict) -> None:
        self.rows.append(row)

    def write_csv(self, path: str) -> None:
        keys = list(dict.fromkeys(k for row in self.rows for k in row))

        def write(f):
            text = open(f.fileno(), "w", newline="", closefd=False)
            writer = csv.DictWriter(text, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
            text.flush()
        atomic_write(path, write)

    def plot(self, path: str, panels: list[tuple[str, list[str]]], title: str = "") -> None:
        """One subplot per (title, keys); steps on x; missing values (eval every N steps) skipped."""
        fig, axes = new_figure(len(panels), title)
        for ax, (name, keys) in zip(axes, panels):
            for key, style in zip(keys, ("-", "--", ":", "-.")):  # a series on another shows
                pts = [(r["step"], r[key]) for r in self.rows if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=key,
                            linestyle=style)
            ax.set_title(textwrap.fill(name, 30))
            ax.set_xlabel("step")
        save_figure(fig, path)


# Figures are FIGURE_WIDTH inches wide at FIGURE_DPI: 800 px, the width a page shows them at, so
# that their 9-point text stays 9 points on the page.
FIGURE_WIDTH, FIGURE_DPI = 8.0, 100
FIGURE_FONTS = {"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "xtick.labelsize": 9,
                "ytick.labelsize": 9, "legend.fontsize": 9, "figure.titlesize": 10.5}


def new_figure(n_panels: int, title: str, panel_height: float = 2.4):
    """A figure of n_panels, at most 3 a row (2 a row for 2 or 4), FIGURE_WIDTH wide; returns
    (fig, the n_panels axes)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update(FIGURE_FONTS)
    cols = 2 if n_panels in (2, 4) else min(3, n_panels)
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(FIGURE_WIDTH, panel_height * rows + 0.9),
                             squeeze=False, layout="constrained")
    if title:
        fig.suptitle(textwrap.fill(title, 80))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n_panels:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n_panels]


def save_figure(fig, path: str, footer: str | None = None) -> None:
    """finish_figure, then write the PNG atomically."""
    import matplotlib.pyplot as plt
    finish_figure(fig, footer)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=FIGURE_DPI))
    plt.close(fig)


def finish_figure(fig, footer: str | None = None) -> None:
    """What every figure gets: each legend moved under its panel (off the data) and, at the foot,
    the command, code and machine that drew it (provenance(), unless a footer is given). The
    figure grows by the room the tallest legend needs, so that the panels keep their height."""
    entries = [len(ax.get_legend_handles_labels()[1]) for ax in fig.axes]
    legend_room = 0.17 * max(entries, default=0) + 0.2  # inches: the legend lines, a margin
    footer_room = 0.4  # inches: two lines of 9-point text
    height = fig.get_figheight() + legend_room
    fig.set_figheight(height)
    bottom = footer_room / height  # panels, their legends included, are laid out above this
    if fig.get_layout_engine() is not None:  # new_figure's constrained layout
        fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
    for ax in fig.axes:
        if ax.get_legend() is not None or len(ax.get_legend_handles_labels()[0]) > 1:
            handles, labels = ax.get_legend_handles_labels()
            ax.legend(handles, labels, loc="upper center", frameon=False, ncol=1,
                      bbox_to_anchor=(0.5, 0), bbox_transform=ax.transAxes,
                      borderaxespad=4.2)  # under the tick labels and the axis label
    fig.text(0.5, 0.01, textwrap.fill(footer or provenance(), 100), ha="center", va="bottom",
             fontsize=9, color="dimgray")


def format_value(v) -> str:
    """Numbers for the console: 4 decimals below 10, 2 decimals up to 10,000, else exponents."""
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 10:
            return f"{v:.4f}"
        return f"{v:.2f}" if 10 <= abs(v) < 1e4 else f"{v:.1e}"
    return f"{v}"


class RunLog(MetricLog):
    """The metric log of one run, with its clock and its console: a step-0 row holding the
    starting evaluation, one row per step, a console line every cfg.log_every steps (and on
    every evaluation), the final evaluation of an interrupted run, and the end of the run."""

    def __init__(self, cfg, header: str, t0: float | None = None, total_steps: int | None = None):
        super().__init__()
        self.cfg, self.t0, self.was_interrupted = cfg, t0 or time.time(), False
        self.total = total_steps or cfg.steps
        self.resumable: Resumable | None = None  # saved at every evaluation, if set
        print(header)

    def start(self, eval_metrics: dict, samples: list[dict]) -> list[dict]:
        """Log the starting evaluation as step 0 and start the clock; returns its samples."""
        self.start_metrics = self.eval_metrics = eval_metrics
        self.append({"step": 0, **{f"eval_{k}": v for k, v in eval_metrics.items()}})
        print(f"step 0 | eval_accuracy {eval_metrics['accuracy']:.4f}")
        self.t_start = time.time()
        return samples

    def step(self, row: dict, shown: list[str], eval_metrics: dict | None = None) -> None:
        """Append the step's row (with eval_* columns when evaluated); print the shown columns."""
        if eval_metrics is not None:
            self.eval_metrics = eval_metrics
            row.update({f"eval_{k}": v for k, v in eval_metrics.items()})
        row["seconds"] = time.time() - self.t_start
        self.append(row)
        if eval_metrics is not None and self.resumable is not None:
            self.resumable.save(row["step"])
        step, total = row["step"], self.total
        if step % self.cfg.log_every == 0 or eval_metrics is not None or step == total:
            names = shown + (["eval_accuracy", "eval_format_rate"] if eval_metrics else [])
            per_step = row["seconds"] / step
            left = per_step * (total - step)
            print(" | ".join([f"step {step:>{len(str(total))}}/{total}"]
                             + [f"{k} {format_value(row[k])}" for k in names
                                if row.get(k) is not None]
                             + [f"{per_step:5.2f} s/step",
                                f"{int(left // 60)}m{int(left % 60):02d}s left"]))

    def interrupted(self, model, tokenizer, task, max_new_tokens: int | None = None) -> list[dict]:
        """Ctrl-C: evaluate the model as it is (with the run's response budget, by default the
        task's) and put that evaluation on the last logged row."""
        self.was_interrupted = True
        done = self.rows[-1]["step"]
        print(f"\ninterrupted at step {done}: evaluating and saving what we have")
        self.eval_metrics, samples = evaluate(model, tokenizer, task.test,
                                              max_new_tokens or task.max_new_tokens)
        self.rows[-1].update({f"eval_{k}": v for k, v in self.eval_metrics.items()})
        return samples

    def finish(self, model, samples: list[dict], algorithm: str, panels: list, title: str,
               extra: dict | None = None, task: AdditionTask | None = None) -> dict:
        """The end of every run: final samples, checkpoint, metrics.csv, curves.png, summary.json
        and the last console line. Returns the summary."""
        cfg, wall, steps = self.cfg, time.time() - self.t0, self.rows[-1]["step"]
        summary = {"algorithm": algorithm, "start_accuracy": self.start_metrics["accuracy"],
                   "final_accuracy": self.eval_metrics["accuracy"],
                   "final_format_rate": self.eval_metrics["format_rate"],
                   "final_eos_rate": self.eval_metrics["eos_rate"],
                   **{f"{when}_{k}": v for when, metrics in (("start", self.start_metrics),
                                                              ("final", self.eval_metrics))
                      for k, v in metrics.items() if k not in ("accuracy", "format_rate",
                                                               "eos_rate")},
                   "steps": steps,
                   "wall_seconds": round(wall, 2),
                   "seconds_per_step": round((time.time() - self.t_start) / max(1, steps), 3),
                   "peak_rss_mib": round(peak_rss_mib()), **(extra or {}),
                   "interrupted": self.was_interrupted,
                   "interrupted_at_step": steps if self.was_interrupted else None,
                   "device": str(next(model.parameters()).device),
                   "machine": machine_description(),
                   "config": dataclasses.asdict(cfg)}
        log_generations(samples, title="final held-out samples (greedy)")
        save_checkpoint(os.path.join(cfg.out_dir, "model.pt"), model, cfg.digits,
                        dataclasses.asdict(cfg), task)
        self.write_csv(os.path.join(cfg.out_dir, "metrics.csv"))
        self.plot(os.path.join(cfg.out_dir, "curves.png"), panels, title=title)
        write_json(os.path.join(cfg.out_dir, "summary.json"), summary)
        status = f"interrupted at step {steps}" if self.was_interrupted else f"{steps} steps"
        print(f"done ({status}) in {wall:.0f} s: held-out accuracy "
              f"{summary['start_accuracy']:.3f} -> {summary['final_accuracy']:.3f}, format "
              f"{self.eval_metrics['format_rate']:.3f}; wrote {cfg.out_dir}/")
        return summary


class Resumable:
    """What a run needs to go on after a stop (--resume): the modules and optimizers given as
    keywords, the step, every random generator, the metric rows so far and any `extra` values.
    Saved atomically to out_dir/state.pt at each evaluation, so that a run killed by anything,
    even SIGKILL, loses at most the steps since its last evaluation."""

    def __init__(self, cfg, log: RunLog, rng: np.random.Generator, **parts):
        self.cfg, self.log, self.rng, self.parts = cfg, log, rng, parts
        self.path = os.path.join(cfg.out_dir, "state.pt")
        self.extra: dict = {}  # a script's own values to keep (saved as they are at each save)
        log.resumable = self

    def save(self, step: int) -> None:
        state = {"step": step, "config": dataclasses.asdict(self.cfg), "extra": self.extra,
                 "parts": {name: part.state_dict() for name, part in self.parts.items()},
                 # which parameters hold a gradient (zeros after zero_grad(set_to_none=False)):
                 # an optimizer steps only those, so a resumed run must hold the same ones
                 "has_grad": {name: [p.grad is not None for p in part.parameters()]
                              for name, part in self.parts.items()
                              if isinstance(part, torch.nn.Module)},
                 "rng": {"numpy": self.rng.bit_generator.state, "python": random.getstate(),
                         "torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                         else None},
                 "rows": self.log.rows, "eval_metrics": self.log.eval_metrics,
                 "seconds": time.time() - self.log.t_start, "wall": time.time() - self.log.t0}
        atomic_write(self.path, lambda f: torch.save(state, f))
        self.log.write_csv(os.path.join(self.cfg.out_dir, "metrics.csv"))

    def restore(self) -> int:
        """The first step to run: 1, or with --resume the step after the last saved evaluation,
        everything put back as it was then (the run goes on to the same numbers)."""
        if not self.cfg.resume:
            return 1
        require(os.path.exists(self.path), f"--resume: {self.path} not found (a run saves it at "
                                           f"its first evaluation)")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise UserError(f"--resume: {self.path} is corrupt ({type(e).__name__})") from None
        ignored = ("resume", "overwrite", "device")
        changed = [k for k, v in dataclasses.asdict(self.cfg).items()
                   if k not in ignored and state["config"].get(k) != v]
        require(not changed, f"--resume: {self.path} was saved by a run with other flags: "
                             f"{', '.join('--' + k for k in changed)}")
        require(state["step"] < self.log.total, f"--resume: the run in {self.cfg.out_dir} "
                                                f"already finished ({state['step']} steps)")
        for name, part in self.parts.items():
            part.load_state_dict(state["parts"][name])
        for name, flags in state["has_grad"].items():
            for p, had_grad in zip(self.parts[name].parameters(), flags):
                p.grad = torch.zeros_like(p) if had_grad else None
        self.rng.bit_generator.state = state["rng"]["numpy"]
        random.setstate(state["rng"]["python"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.log.rows, self.log.eval_metrics = state["rows"], state["eval_metrics"]
        self.log.t_start, self.log.t0 = (time.time() - state["seconds"],
                                         time.time() - state["wall"])
        self.extra = state["extra"]
        print(f"resuming at step {state['step'] + 1} from {self.path}")
        return state["step"] + 1


class Run:
    """What a script's train() does besides the algorithm, in the order it happens:

        run = Run(cfg, sft.train_if_missing)    # checks, the start model if missing, seeds, task
        policy = run.load_policy()              # the start checkpoint, in eval mode
        run.start(header, evaluate(...), policy=policy, optimizer=optimizer)   # step 0
        for step in run.steps():                # 1 .. total; Ctrl-C ends it after a whole step
            ...
            run.log(row, shown, evaluation)     # metrics.csv row, console line; saves at evaluations
        return run.finish(policy, ...)          # model.pt, metrics.csv, curves.png, summary.json
    """

    def __init__(self, cfg, make_start=None, task: AdditionTask | None = None,
                 total_steps: int | None = None):
        self.t0, self.cfg, self.total = time.time(), cfg, total_steps or cfg.steps
        require(not (cfg.resume and cfg.overwrite), "--resume and --overwrite exclude each other")
        check_out_dir(cfg.out_dir, cfg.overwrite or cfg.resume)
        self.device = pick_device(cfg.device)
        if make_start is not None:  # before seeding: the numbers do not depend on where it was made
            make_start(cfg)
        knobs = task_config(dataclasses.asdict(cfg))  # sft.py: its own flags
        self.start_checkpoint = getattr(cfg, "sft_checkpoint", None)
        if self.start_checkpoint is not None:  # an RL run: the task its start model learnt
            knobs = checkpoint_task(load_checkpoint(self.start_checkpoint, digits=cfg.digits)[1])
        if task is not None:  # an experiment's own task: the same kinds and budget, any mix
            require((task.easy_digits, task.verbose_max) == (knobs["easy_digits"],
                                                              knobs["verbose_max"]),
                    f"checkpoint {self.start_checkpoint} was trained on another task ({knobs})")
        self.rng = set_seed(cfg.seed)  # the generator that draws the training problems
        self.task = task or AdditionTask(cfg.digits, cfg.n_test, **knobs)
        self.tokenizer, self.max_new_tokens = Tokenizer(), self.task.max_new_tokens

    def load_policy(self) -> GPT:
        """The start checkpoint, loaded afresh, in eval mode (no dropout: on-policy, the ratio
        pi_theta / pi_old is exactly 1)."""
        return load_checkpoint(self.start_checkpoint, self.cfg.digits, self.device)[0].eval()

    def response_budget(self, max_new_tokens: int | None, model: GPT) -> int:
        """The task's response budget unless given; checked to hold an answer and fit the model."""
        self.max_new_tokens = check_response_budget(max_new_tokens, self.task, model)
        return self.max_new_tokens

    def start(self, header: str, evaluation: tuple[dict, list[dict]], **parts) -> None:
        """Print the header, log the starting evaluation as step 0, and name the `parts` (modules
        and optimizers) that state.pt saves at each evaluation; with --resume, restore them, the
        random generators and the rows from the last save."""
        self.run_log = RunLog(self.cfg, header, self.t0, self.total)
        self.samples = self.run_log.start(*evaluation)
        self.state = Resumable(self.cfg, self.run_log, self.rng, **parts)
        self.first_step = self.state.restore()  # 1, or with --resume where the saved run stopped
        self.saved = self.state.extra  # a script's own values, saved and restored with the rest
        self.stopped = False

    @property
    def rows(self) -> list[dict]:
        """metrics.csv's rows so far: step 0 (the start), then one per step."""
        return self.run_log.rows

    def steps(self):
        """1, 2, ..., total; with --resume, from the step after the last saved evaluation. Ctrl-C
        or SIGTERM ends the loop once the step it arrives in is done (a second one stops at once,
        unsaved); finish() then evaluates and saves."""
        previous = {}

        def request_stop(signum, frame):
            _stopped_by[0], self.stopped = signum, True
            print(f"\n{signal.Signals(signum).name}: stopping after this step "
                  f"(again: stop at once, unsaved)", flush=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, request_stop)
        try:
            for step in range(self.first_step, self.total + 1):
                yield step
                if self.stopped:
                    break
        finally:
            for sig, handler in previous.items():
                if signal.getsignal(sig) is request_stop:
                    signal.signal(sig, handler)

    def log(self, row: dict, shown: list[str], evaluation: tuple[dict, list[dict]] | None = None):
        """Append the step's row (with the held-out evaluation's eval_* columns, if one was run)
        to metrics.csv's rows, print the console line; at an evaluation, save state.pt."""
        eval_metrics = None
        if evaluation is not None:
            eval_metrics, self.samples = evaluation
        self.run_log.step(row, shown, eval_metrics)

    def finish(self, model: GPT, algorithm: str, panels: list, title: str, extra: dict | None = None,
               evaluate_now=None) -> dict:
        """The end of the run: if it was stopped, evaluate the model as it is (evaluate_now() ->
        (metrics, samples); by default evaluation.evaluate on the held-out set) onto the last row;
        then the checkpoint, metrics.csv, curves.png and summary.json. Returns the summary."""
        if self.stopped:
            self.run_log.was_interrupted = True
            print(f"interrupted at step {self.run_log.rows[-1]['step']}: evaluating and saving "
                  f"what we have")
            self.run_log.eval_metrics, self.samples = (evaluate_now or (lambda: evaluate(
                model, self.tokenizer, self.task.test, self.max_new_tokens)))()
            self.run_log.rows[-1].update({f"eval_{k}": v
                                          for k, v in self.run_log.eval_metrics.items()})
        return self.run_log.finish(model, self.samples, algorithm, panels, title, extra,
                                   task=self.task)


def log_generations(samples: list[dict], n: int = 4, title: str = "samples") -> None:
    """Print a few completions with their rewards (CS336's log_generations, in the console)."""
    print(f"  -- {title} --")
    for s in samples[:n]:
        print(f"  {s['prompt']}{s['response']}  [answer {s['answer']}, "
              f"format {s['format_reward']:.0f}, reward {s['reward']:.3g}]")


def task_config(run_config: dict | None) -> dict:
    """The task knobs a run was made with, from its config (absent: the defaults)."""
    run_config = run_config or {}
    return {"easy_digits": run_config.get("easy_digits"),
            "hard_fraction": run_config.get("hard_fraction", 0.5),
            "verbose_max": run_config.get("verbose_max", 0)}


def task_knobs(task: AdditionTask) -> dict:
    """The knobs that rebuild `task` beside its digits and held-out size."""
    return {"easy_digits": task.easy_digits, "hard_fraction": task.hard_fraction,
            "verbose_max": task.verbose_max}


def checkpoint_task(ckpt: dict) -> dict:
    """The task knobs a checkpoint's model was trained on: saved with it, or (older checkpoints)
    read from its run's config."""
    return ckpt.get("task") or task_config(ckpt.get("run_config"))


def mean_or_none(x: torch.Tensor) -> float | None:
    """The mean of a tensor, or None when it is empty (a blank cell in metrics.csv)."""
    return x.float().mean().item() if x.numel() else None


# ----------------------------------------------------------------------------------------------
# Checks made before the first step
# ----------------------------------------------------------------------------------------------
def check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Fail now, not after training, if out_dir cannot take the outputs; never replace a finished
    run's outputs unless asked. Creates nothing."""
    path = os.path.abspath(out_dir)
    if os.path.exists(path):
        require(os.path.isdir(path), f"--out_dir {out_dir} is a file, not a directory")
        require(os.access(path, os.W_OK | os.X_OK), f"--out_dir {out_dir} is not writable")
        require(overwrite or not os.path.exists(os.path.join(path, "summary.json")),
                f"--out_dir {out_dir} already holds a run (summary.json): pass --overwrite to "
                f"replace it, or choose another --out_dir")
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    require(os.path.isdir(parent), f"--out_dir {out_dir}: {parent} is a file, not a directory")
    require(os.access(parent, os.W_OK | os.X_OK),
            f"--out_dir {out_dir} cannot be created: {parent} is not writable")


def check_response_budget(max_new_tokens: int | None, task, model: GPT) -> int:
    """The response budget: the task's unless given; it must hold the shortest formatted answer
    and fit the model's positions."""
    budget = max_new_tokens or task.max_new_tokens
    answer = "9" * (task.digits + 1)  # the longest sum, answered directly with no scratchpad
    shortest = len(Tokenizer().encode(f"<think></think><answer>{answer}</answer>{EOS}"))
    require(budget >= shortest, f"--max_new_tokens {budget} cannot hold every answer "
                                f"(a direct {len(answer)}-digit answer takes {shortest} tokens)")
    require(task.prompt_len + budget <= model.cfg.max_seq_len,
            f"--max_new_tokens {budget} does not fit the model's {model.cfg.max_seq_len} positions")
    return budget
