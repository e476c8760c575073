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


def load(kind, name):
    path = RESULTS / kind / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def render_defaults(missing):
    rows, machines = [], set()
    for name in DEFAULTS:
        d = load("defaults", name)
        if d is None:
            missing.append(f"defaults/{name}.json")
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
               "ei_vs_grpo", "reward_model", "dpo_nll", "abstain", "length_growth", "r1_pipeline"]


def verdict(results):
    """The experiment's own claim_holds, else every boolean check it reports must be true."""
    if "claim_holds" in results:
        return bool(results["claim_holds"])
    flags = [v for k, v in results.items() if isinstance(v, bool) and k != "quick"]
    return bool(flags) and all(flags)


def render_experiments(missing):
    rows, machines = [], set()
    for name in EXPERIMENTS:
        d = load("experiments", name)
        if d is None:
            missing.append(f"experiments/{name}.json")
            rows.append(f"| `{name}` | missing | missing |")
            continue
        r = d["results"]
        machines.add(d["machine"])
        held = "held" if verdict(r) else "did not hold"
        rows.append(f"| [`{d['command']}`](docs/experiments.md) | {held} |"
                    f" {r['seconds']:.0f} s |")
    machine = "; ".join(sorted(machines)) or "missing"
    head = [f"Measured on one machine: {machine}.", "",
            "| command | claim | wall time |", "|---|---|---|"]
    return "\n".join(head + rows) + "\n"


RENDERERS = {"defaults": render_defaults, "experiments": render_experiments}


def main(argv):
    check = "--check" in argv
    missing, stale = [], []
    pages = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    for page in pages:
        text = page.read_text()

        def sub(m):
            new = RENDERERS[m.group(2)](missing)
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
