#!/usr/bin/env bash
# Reruns every default run and every experiment on this machine, and rewrites what the docs quote:
# the figures under docs/ and the JSON under docs/results/ that every number in the README and
# docs/ comes from. Then `python docs/render.py` rewrites the generated tables from that JSON.
#   bash docs/regenerate.sh            everything (about an hour and a half on a 2-core CPU)
#   bash docs/regenerate.sh defaults   the default runs and bench.py only
#   bash docs/regenerate.sh gpu        the default runs with --device cuda, into docs/results/gpu
#   bash docs/regenerate.sh NAME...    these experiments only
# Run it with nothing else on the machine: the wall times are part of the results.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/results/defaults docs/results/experiments

# save SOURCE_JSON DEST_JSON COMMAND: wrap a run's JSON with the command and machine behind it
save() {
    python - "$@" <<'PY'
import json, sys
from runs import machine_description, write_json
source, dest, command = sys.argv[1:4]
with open(source) as f:
    body = json.load(f)
key = "results" if "/experiments/" in dest else "summary"
write_json(dest, {"command": command, "machine": machine_description(), key: body})
PY
}

default_run() {  # default_run NAME SCRIPT [FLAGS...]: python SCRIPT.py FLAGS, into out/NAME
    local name=$1 script=$2; shift 2
    python "$script.py" --overwrite --out_dir "out/$name" "$@"
    local shown="python $script.py"; [ $# -gt 0 ] && shown="$shown $*"
    save "out/$name/summary.json" "docs/results/defaults/$name.json" "$shown"
    [ "$name" = "$script" ] && cp "out/$name/curves.png" "docs/${name}_curves.png"
    return 0
}

if [ $# -eq 0 ] || [ "$1" = defaults ]; then
    default_run sft sft
    default_run grpo grpo
    default_run expert_iteration expert_iteration
    default_run dpo dpo
    default_run ppo ppo
    default_run ppo_reward_model ppo --reward model
    default_run grpo_cs336 grpo --preset cs336
    default_run expert_iteration_cs336 expert_iteration --preset cs336
    python bench.py --out out/bench/bench.json
    save out/bench/bench.json docs/results/defaults/bench.json "python bench.py"
fi
if [ "${1:-}" = gpu ]; then
    mkdir -p docs/results/gpu
    for name in sft grpo expert_iteration dpo ppo grpo_cs336 expert_iteration_cs336; do
        script=${name%_cs336}; flags=(--device cuda)
        [ "$name" != "$script" ] && flags+=(--preset cs336)
        python "$script.py" --overwrite --out_dir "out/gpu/$name" "${flags[@]}" \
            $([ "$script" != sft ] && echo --sft_checkpoint out/gpu/sft/model.pt)
        save "out/gpu/$name/summary.json" "docs/results/gpu/$name.json" \
            "python $script.py ${flags[*]}"
    done
    python docs/render.py
    exit 0
fi
if [ "${1:-}" != defaults ]; then
    names=("$@"); [ $# -eq 0 ] && names=($(python -m experiments --list | cut -d' ' -f1))
    for name in "${names[@]}"; do
        python -m experiments "$name"  # writes docs/exp_$name.png
        save "out/experiments/$name/results.json" "docs/results/experiments/$name.json" \
            "python -m experiments $name"
    done
fi
[ -f docs/render.py ] && python docs/render.py
