"""Rewrite the generated blocks of README.md and docs/*.md from docs/results/**.json.

    python docs/render.py          # rewrite the blocks in place
    python docs/render.py --check  # exit 1 if a block is out of date or a result file is missing

A block sits between `<!-- results:NAME -->` and `<!-- /results -->`; NAME picks its renderer.
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DEFAULTS = ["sft", "grpo", "expert_iteration", "dpo", "ppo", "ppo_reward_model", "distill"]
BLOCK = re.compile(r"(<!-- results:([\w-]+) -->\n)(.*?)(<!-- /results -->)", re.S)


def load(kind, name, missing=None):
    """docs/results/KIND/NAME.json, or None (noted in `missing`, if given) when it is absent. A
    result kept from earlier code (docs/results/earlier/KIND/NAME.json: its settings are no longer
    what the command runs, and it has not been rerun yet) comes with its machine marked so."""
    path = RESULTS / kind / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    earlier = RESULTS / "earlier" / kind / f"{name}.json"
    if earlier.exists():
        d = json.loads(earlier.read_text())
        d["earlier"] = (f"**{d.get('note', 'measured on earlier code')}**: rerun `bash "
                        f"docs/regenerate.sh {name if kind == 'experiments' else kind}` to update")
        return d
    if missing is not None:
        missing.append(f"{kind}/{name}.json")
    return None


SEEDS = ("", "_seed1", "_seed2")  # the default runs' three seeds (docs/regenerate.sh defaults)


def seed_results(name):
    """The summaries of NAME's seeds that exist (seed 0 first)."""
    return [d["summary"] for d in (load("defaults", name + seed) for seed in SEEDS) if d]


def spread(values, digits=3):
    """"0.924 (0.91-0.93 over 3 seeds)", or the one value."""
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return (f"{values[0]:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f} over "
            f"{len(values)} seeds)")


def render_defaults(missing):
    rows, machines = [], set()
    for name in DEFAULTS:
        d = load("defaults", name, missing)
        if d is None:
            rows.append(f"| `{name}` | missing | missing | missing |")
            continue
        s = d["summary"]
        machines.add(d["machine"])
        start = s.get("start_accuracy")
        start = "0" if name == "sft" else (f"{start:.3f}" if start is not None else "-")
        finals = [r["final_accuracy"] for r in seed_results(name)]
        rows.append(f"| `{d['command']}` | {s['wall_seconds']:.0f} s | {start} |"
                    f" {spread(finals)} |")
    machine = "; ".join(sorted(machines)) or "missing"
    head = [f"Measured on one machine: {machine}, `--device cpu`, 2 threads. Seed 0 is the"
            " default; the range is over `--seed 0`, `1` and `2` (the RL runs all from the seed-0"
            " SFT model).", "",
            "| command | wall time | start accuracy | final held-out accuracy |",
            "|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


sys.path.insert(0, str(ROOT))
from experiments import EXPERIMENTS  # noqa: E402  every experiment, in the order of its page


def verdict_word(results):
    """The experiment's own claim_holds; else "held" if every check it reports is true,
    "partly held" if some are, "did not hold" if none is."""
    if "claim_holds" in results:
        if results["claim_holds"] is None:
            return "not tested by this setup"
        return "held" if results["claim_holds"] else "did not hold"
    flags = [v for k, v in results.items() if isinstance(v, bool) and k != "quick"]
    return "held" if flags and all(flags) else "partly held" if any(flags) else "did not hold"


def render_experiments(missing):
    rows, machines = [], set()
    for name in EXPERIMENTS:
        d = load("experiments", name, missing)
        if d is None:
            rows.append(f"| `{name}` | missing | missing | |")
            continue
        r = d["results"]
        machines.add(d["machine"])
        held = verdict_word(r)
        code = "earlier code" if d.get("earlier") else "today's code"
        rows.append(f"| [`{d['command']}`](docs/experiments.md) | {held} |"
                    f" {r['seconds']:.0f} s | {code} |")
    machine = "; ".join(sorted(machines)) or "missing"
    head = [f"Measured on: {machine}. A result of earlier code is its experiment's earlier version,"
            " not yet rerun (`bash docs/regenerate.sh NAME`).", "",
            "| command | claim | wall time | code |", "|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


def render_default(name, missing, kind="defaults"):
    """One run's result (kind "defaults": CPU, or "gpu"), for its algorithm page."""
    d = load(kind, name, missing)
    if d is None:
        return "missing\n"
    s = d["summary"]
    start = "0" if name == "sft" else f"{s['start_accuracy']:.3f}"
    return "\n".join([
        f"| command | steps | wall time ({d['machine']}) | held-out accuracy, start -> end |",
        "|---|---|---|---|",
        f"| `{d['command']}` | {s['steps']} | {s['wall_seconds']:.0f} s"
        f" ({s['seconds_per_step']:.2f} s/step) | {start} -> {s['final_accuracy']:.3f} |"]) + "\n"


def render_experiment(name, missing):
    """An experiment's verdict and every scalar it reports, for docs/experiments.md."""
    d = load("experiments", name, missing)
    if d is None:
        return "missing\n"
    r = d["results"]
    lines = [f"Verdict: **{verdict_word(r)}**. `{d['command']}` on {d['machine']}:", ""]
    if d.get("earlier"):
        lines[0:0] = [d["earlier"] + ".", ""]
    for key, value in r.items():
        if key not in ("experiment", "quick", "script_runs"):
            lines += result_lines(key, value)
    return "\n".join(lines) + "\n"


def result_lines(label, value):
    """One bullet per run, stage or row: its scalars on one line, nested runs on their own."""
    if isinstance(value, list):
        out = []
        for row in value:
            if isinstance(row, dict):
                out += result_lines(" ".join(fmt(v) for v in list(row.values())[:2]),
                                    dict(list(row.items())[2:]))
        return out
    if not isinstance(value, dict):
        return [f"- {label}: {fmt(value)}"]
    cells = [f"{k} {fmt(v)}" for k, v in value.items()
             if not isinstance(v, (list, dict)) or short_list(v)]
    out = [f"- {label}: " + ", ".join(cells)] if cells else []
    for k, v in value.items():
        if isinstance(v, dict):
            out += result_lines(f"{label}, {k}", v)
    return out


def short_list(value):
    """A few numbers (a best-of-n curve), shown inline; longer lists stay in the JSON."""
    return (isinstance(value, list) and 0 < len(value) <= 8
            and all(isinstance(v, (int, float)) for v in value))


def fmt(value):
    if short_list(value):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def render_bench(missing):
    """bench.py's step table, for docs/performance.md."""
    d = load("defaults", "bench", missing)
    if d is None:
        return "missing\n"
    b = d["summary"]
    gen, rows = b["generation"], []
    rows.append(f"| generation, KV cache | {gen['cached']['s'] * 1e3:.0f} ms |"
                f" {gen['cached']['tokens_per_s']:,.0f} tokens/s | "
                f"{gen['cached']['peak_fraction']:.0%} | |")
    rows.append(f"| generation, no cache | {gen['uncached']['s'] * 1e3:.0f} ms |"
                f" {gen['uncached']['tokens_per_s']:,.0f} tokens/s |"
                f" {gen['uncached']['peak_fraction']:.0%} | |")
    for key, label in (("sft_step", "SFT step"), ("grpo_step", "GRPO step"),
                       ("ppo_step", "PPO step (with the critic)")):
        s = b[key]
        rows.append(f"| {label} | {s['s_per_step'] * 1e3:.0f} ms | {s['tokens_per_s']:,.0f}"
                    f" tokens/s | {s['peak_fraction']:.0%} | {s['peak_rss_mib']:.0f} MiB |")
    split = ", ".join(f"{k.replace('_', ' ')} {v * 1e3:.0f} ms"
                      for k, v in b["grpo_step"]["split_s"].items())
    scripts = ", ".join(f"`{k}` {v['model_fraction']:.0%}" for k, v in b["scripts"].items())
    return "\n".join([
        f"`{d['command']}` on {d['machine']}, {b['threads']} threads; the measured matmul peak"
        f" was {b['peak_gflops']:.0f} GFLOP/s and cached generation was"
        f" {gen['cache_speedup']:.1f} times faster than uncached.", "",
        "| | time | throughput | of the measured peak | peak RSS of the process |",
        "|---|---|---|---|---|", *rows, "",
        f"The GRPO step splits into {split}. A tenth of each default run spent this share of its"
        f" wall time in the model (forward, backward, optimizer): {scripts}."]) + "\n"


def render_gpu(missing):
    """Every default run on a GPU (docs/results/gpu), for docs/performance.md."""
    rows, machines = [], set()
    for name in DEFAULTS + ["grpo_cs336", "expert_iteration_cs336"]:
        d = load("gpu", name)
        if d is None:
            continue
        s = d["summary"]
        machines.add(d["machine"])
        rows.append(f"| `{d['command']}` | {s['wall_seconds']:.0f} s |"
                    f" {s['start_accuracy']:.3f} -> {s['final_accuracy']:.3f} |")
    if not rows:
        missing.append("gpu/*.json")
        return "missing\n"
    return "\n".join([f"Measured on {'; '.join(sorted(machines))}, one run each, each RL run from"
                      " the SFT model trained there.", "",
                      "| command | wall time | held-out accuracy, start -> end |", "|---|---|---|",
                      *rows]) + "\n"


def render_console(name, missing):
    """The last console line of a default run, as the script prints it."""
    d = load("defaults", name, missing)
    if d is None:
        return "missing\n"
    s = d["summary"]
    return "\n".join([f"`{d['command']}` ends, on {d['machine']}, with", "", "```",
                      f"done ({s['steps']} steps) in {s['wall_seconds']:.0f} s: held-out accuracy "
                      f"{s['start_accuracy']:.3f} -> {s['final_accuracy']:.3f}, format "
                      f"{s['final_format_rate']:.3f}; wrote out/{name}/", "```"]) + "\n"


def read_metrics(name):
    """docs/results/defaults/NAME.metrics.csv as rows of numbers (None where blank), or None."""
    import csv
    path = RESULTS / "defaults" / f"{name}.metrics.csv"
    if not path.exists():
        return None
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()}
                for row in csv.DictReader(f)]


def render_metrics(name, missing):
    """What each column of a default run's metrics.csv showed: its first logged value, its median
    and its last, in seed 0's run; the last value's range over the seeds."""
    rows = read_metrics(name)
    if rows is None:
        missing.append(f"defaults/{name}.metrics.csv")
        return "missing\n"
    seeds = [r for r in (read_metrics(name + seed) for seed in SEEDS[1:]) if r]
    d = load("defaults", name, missing)
    lines = [f"In `{d['command'] if d else name}` (seed 0; the last value's range over"
             f" {1 + len(seeds)} seeds):", "",
             "| column | first | median | last | last, over the seeds |", "|---|---|---|---|---|"]
    for key in rows[0]:
        if key in ("step", "seconds", "tokens_per_second"):
            continue
        values = [r[key] for r in rows if r.get(key) is not None]
        if not values:
            continue
        lasts = [values[-1]] + [[r[key] for r in s if r.get(key) is not None][-1] for s in seeds
                                if any(r.get(key) is not None for r in s)]
        ordered = sorted(values)
        median = ordered[len(ordered) // 2]
        lines.append(f"| `{key}` | {fmt(values[0])} | {fmt(median)} | {fmt(values[-1])} |"
                     f" {fmt(min(lasts))} to {fmt(max(lasts))} |")
    return "\n".join(lines) + "\n"


SAMPLED_PER_STEP = {  # responses sampled per step, from a run's config
    "sft": lambda c: f"none ({c['batch_size']} demonstrations)",
    "grpo": lambda c: f"{c['rollout_batch_size']:,}",
    "expert_iteration": lambda c: f"{c['questions_per_step'] * c['group_size']:,}",
    "dpo": lambda c: f"{c['n_prompts'] * c['samples_per_prompt']:,} once, up front",
    "ppo": lambda c: f"{c['prompts_per_step'] * c['samples_per_prompt']:,}",
    "distill": lambda c: f"{c['rollout_batch_size']:,}"}


def render_algorithm_costs(missing):
    """Per default run: steps, seconds per step, responses sampled per step, wall time."""
    lines = ["| command | steps | seconds per step | responses sampled per step | wall time |",
             "|---|---|---|---|---|"]
    machines = set()
    for name in ("sft", "expert_iteration", "dpo", "grpo", "ppo", "distill"):
        d = load("defaults", name, missing)
        if d is None:
            continue
        s = d["summary"]
        machines.add(d["machine"])
        sampled = SAMPLED_PER_STEP[name](s["config"])
        lines.append(f"| `{d['command']}` | {s['steps']} | {s['seconds_per_step']:.2f} |"
                     f" {sampled} | {s['wall_seconds']:.0f} s |")
    return "\n".join([f"On {'; '.join(sorted(machines))}, 2 threads:", ""] + lines) + "\n"


RENDERERS = {"defaults": render_defaults, "experiments": render_experiments,
             "bench": render_bench, "gpu": render_gpu, "algorithm-costs": render_algorithm_costs}


def renderer(name):
    kind, _, arg = name.partition("-")
    if kind == "default" and arg:
        return lambda missing: render_default(arg, missing)
    if kind == "gpu" and arg:
        return lambda missing: render_default(arg, missing, "gpu")
    if kind == "experiment" and arg:
        return lambda missing: render_experiment(arg, missing)
    if kind == "console" and arg:
        return lambda missing: render_console(arg, missing)
    if kind == "metrics" and arg:
        return lambda missing: render_metrics(arg, missing)
    return RENDERERS[name]


def main(argv):
    check = "--check" in argv
    missing, stale = [], []
    pages = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    for page in pages:
        text = page.read_text()

        def sub(m):
            new = renderer(m.group(2))(missing)
            return m.group(1) + new + m.group(4)

        new_text = BLOCK.sub(sub, text)
        if new_text != text:
            stale.append(page.relative_to(ROOT))
            if not check:
                page.write_text(new_text)
    for f in sorted(set(missing)):
        print(f"missing: docs/results/{f}")
    if check:
        for p in stale:
            print(f"out of date: {p} (run python docs/render.py)")
        return 1 if (stale or missing) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
