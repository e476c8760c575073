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
DEFAULTS = ["sft", "grpo", "expert_iteration", "dpo", "ppo", "ppo_reward_model"]
BLOCK = re.compile(r"(<!-- results:([\w-]+) -->\n)(.*?)(<!-- /results -->)", re.S)


def load(kind, name, missing=None):
    """docs/results/KIND/NAME.json, or None (noted in `missing`, if given) when it is absent."""
    path = RESULTS / kind / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    if missing is not None:
        missing.append(f"{kind}/{name}.json")
    return None


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
        rows.append(f"| `{d['command']}` | {s['wall_seconds']:.0f} s | {start} |"
                    f" {s['final_accuracy']:.3f} |")
    machine = "; ".join(sorted(machines)) or "missing"
    head = [f"Measured on one machine: {machine}, `--device cpu`, 2 threads.", "",
            "| command | wall time | start accuracy | final held-out accuracy |",
            "|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


EXPERIMENTS = ["gae_lambda", "length_bias", "std_baseline", "kl_beta", "off_policy",
               "ei_vs_grpo", "reward_hacking", "dpo_nll", "abstain", "length_growth", "r1_pipeline"]


def verdict_word(results):
    """The experiment's own claim_holds; else "held" if every check it reports is true,
    "partly held" if some are, "did not hold" if none is."""
    if "claim_holds" in results:
        return "held" if results["claim_holds"] else "did not hold"
    flags = [v for k, v in results.items() if isinstance(v, bool) and k != "quick"]
    return "held" if flags and all(flags) else "partly held" if any(flags) else "did not hold"


def render_experiments(missing):
    rows, machines = [], set()
    for name in EXPERIMENTS:
        d = load("experiments", name, missing)
        if d is None:
            rows.append(f"| `{name}` | missing | missing |")
            continue
        r = d["results"]
        machines.add(d["machine"])
        held = verdict_word(r)
        rows.append(f"| [`{d['command']}`](docs/experiments.md) | {held} |"
                    f" {r['seconds']:.0f} s |")
    machine = "; ".join(sorted(machines)) or "missing"
    head = [f"Measured on one machine: {machine}.", "",
            "| command | claim | wall time |", "|---|---|---|"]
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
    for key, value in r.items():
        if key not in ("experiment", "quick"):
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


RENDERERS = {"defaults": render_defaults, "experiments": render_experiments,
             "bench": render_bench, "gpu": render_gpu}


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
